{{/*
Deliberately plain: the templates use only `{{ .Values.x }}`, `| quote`,
`if`/`else`/`end`, `include` of these helpers and `toYaml ... | nindent N`,
so that tests/deploy renders them without Helm (none installs on the CI
machines) and checks them object by object against the plain manifests.
Object names are fixed (`devsieve`, as in deploy/): one agent per node.
*/}}
{{- define "devsieve.selectorLabels" -}}
app.kubernetes.io/name: devsieve
{{- end }}

{{- define "devsieve.labels" -}}
app.kubernetes.io/name: devsieve
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: devsieve-{{ .Chart.Version }}
{{- end }}
