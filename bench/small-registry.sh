# Shared by bench/profile.sh and bench/syscalls.sh (sourced, not run): a registry on loopback
# with one small image, bench/app:v1 (a config blob, a 4 KiB layer, an OCI manifest), and the
# helpers around it. The caller defines `log`, `die`, `WORK` and `KEEP_TMP` first.
# shellcheck shell=bash

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "$KEEP_TMP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {
	local i
	for i in $(seq 400); do
		curl -s -o /dev/null "$1" && return 0
		sleep 0.05
	done
	die "$1 did not answer"
}

# Start the registry (its port in RPORT) and push bench/app:v1; the manifest's bytes are left in
# $WORK/manifest.json.
start_small_registry() {
	RPORT=$(free_port)
	cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$RPORT, secret: bench}
EOF
	docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
	PIDS+=($!)
	wait_http "http://127.0.0.1:$RPORT/v2/"
	python3 - "$RPORT" "$WORK/manifest.json" <<'EOF'
import hashlib, json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}/v2/bench/app"
def blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(base + "/blobs/uploads/", method="POST"))
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else f"http://127.0.0.1:{sys.argv[1]}{loc}"
    sep = "&" if "?" in loc else "?"
    # a typed body: without one urllib sends a form type, and the registry (Go) reads the body
    # as a form looking for `digest`, then finds the upload empty
    urllib.request.urlopen(urllib.request.Request(f"{loc}{sep}digest={d}", data=data, method="PUT",
        headers={"Content-Type": "application/octet-stream"}))
    return d, len(data)
cd, cs = blob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
ld, ls = blob(b"x" * 4096)
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]}).encode()
urllib.request.urlopen(urllib.request.Request(base + "/manifests/v1", data=m, method="PUT",
    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
open(sys.argv[2], "wb").write(m)
EOF
}
