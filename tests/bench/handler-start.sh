#!/usr/bin/env bash
# Cold and warm start of a handler pulled from an OCI registry (BENCHMARKS.md).
# Needs: docker-registry, hyperfine, curl (Debian packages), a release build
# (`cargo build --release`), and the example handler built by it.
# Usage: tests/bench/handler-start.sh [path/to/devsieve] [handler.wasm]
# With DEVSIEVE_BENCH_JSON_DIR set, hyperfine's results also go there as
# cold.json, warm.json and registry-down.json (tests/bench/run reads them).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin=${1:-$target/release/devsieve}
wasm=${2:-${DEVSIEVE_GUESTS_TARGET_DIR:-$target/guests}/wasm32-wasip2/release/zigbee_coordinator.wasm}
work=$(mktemp -d)
trap 'kill "$registry_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: $reg}
YAML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 & registry_pid=$!
for _ in $(seq 100); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.05; done

# Push as `wkg oci push` does: config application/vnd.wasm.config.v0+json, one application/wasm layer.
upload() {
  local digest="sha256:$(sha256sum "$1" | cut -d' ' -f1)" location
  location=$(curl -sf -X POST -D - -o /dev/null "http://$reg/v2/handlers/zigbee/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$location" in http*) ;; *) location="http://$reg$location";; esac
  case "$location" in *\?*) location="$location&";; *) location="$location?";; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" "${location}digest=$digest" >/dev/null
  echo "$digest"
}
printf '{"type":"component"}' > "$work/config.json"
config=$(upload "$work/config.json"); layer=$(upload "$wasm")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.wasm.config.v0+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/wasm","digest":"%s","size":%d}]}' \
  "$config" "$(stat -c%s "$work/config.json")" "$layer" "$(stat -c%s "$wasm")" > "$work/manifest.json"
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$work/manifest.json" \
  "http://$reg/v2/handlers/zigbee/manifests/1.0.0" >/dev/null
ref="$reg/handlers/zigbee:1.0.0@sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"
printf 'resources:\n  - name: zigbee\n    handler: %s\n' "$ref" > "$work/devsieve.yaml"
flags="--insecure-registry $reg"
export_json() { if [ -n "${DEVSIEVE_BENCH_JSON_DIR:-}" ]; then echo "--export-json $DEVSIEVE_BENCH_JSON_DIR/$1.json"; fi; }

"$bin" --cache-dir "$work/warm" $flags discover --config "$work/devsieve.yaml" >/dev/null
hyperfine -N $(export_json cold) --warmup 2 --runs 15 --prepare "rm -rf $work/cold" \
  -n "cold: handler inspect REF (pull + compile)" "$bin --cache-dir $work/cold $flags handler inspect $ref" \
  -n "cold: discover --config (pull + compile + run)" "$bin --cache-dir $work/cold $flags discover --config $work/devsieve.yaml" \
  -n "compile only (blobs cached)" "$bin --cache-dir $work/cold --blob-cache-dir $work/warm/blobs $flags handler inspect $ref"
hyperfine -N $(export_json warm) --warmup 3 --runs 40 \
  -n "warm: handler inspect REF" "$bin --cache-dir $work/warm $flags handler inspect $ref" \
  -n "warm: discover --config" "$bin --cache-dir $work/warm $flags discover --config $work/devsieve.yaml"
kill "$registry_pid"; wait "$registry_pid" 2>/dev/null || true
hyperfine -N $(export_json registry-down) --warmup 3 --runs 40 \
  -n "warm, registry down: handler inspect REF" "$bin --cache-dir $work/warm $flags handler inspect $ref" \
  -n "warm, registry down: discover --config" "$bin --cache-dir $work/warm $flags discover --config $work/devsieve.yaml"
