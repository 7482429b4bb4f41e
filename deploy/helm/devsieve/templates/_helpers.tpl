{{/* The chart's name, or nameOverride. */}}
{{- define "devsieve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: fullnameOverride, else the release name (with the chart's name when it lacks it). */}}
{{- define "devsieve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "devsieve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "devsieve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "devsieve.labels" -}}
{{ include "devsieve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "devsieve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "devsieve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Whether listen.host is a loopback address ("true" or ""). */}}
{{- define "devsieve.loopback" -}}
{{- $host := toString .Values.listen.host }}
{{- if or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost") }}true{{ end }}
{{- end }}

{{/* The value of --listen: HOST:PORT, with $(POD_IP) for podIP and brackets for IPv6. */}}
{{- define "devsieve.listen" -}}
{{- $host := toString .Values.listen.host }}
{{- if eq $host "podIP" }}
{{- printf "$(POD_IP):%v" .Values.listen.port }}
{{- else if contains ":" $host }}
{{- printf "[%s]:%v" $host .Values.listen.port }}
{{- else }}
{{- printf "%s:%v" $host .Values.listen.port }}
{{- end }}
{{- end }}

{{/*
The probes' host: the listen address when it is a single address the
kubelet can reach on the node; nothing (the pod IP, which is the node's)
for podIP and the wildcards.
*/}}
{{- define "devsieve.probeHost" -}}
{{- $host := toString .Values.listen.host }}
{{- if not (has $host (list "podIP" "0.0.0.0" "::")) }}{{ $host }}{{ end }}
{{- end }}
