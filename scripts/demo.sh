#!/usr/bin/env bash
# The wharf demo, end to end on loopback, without Docker:
#
#   1. build wharf (release);
#   2. start a real registry (Debian's docker-registry, distribution 2.8) with temp storage;
#   3. start wharf in front of it, with a generated config and admin password;
#   4. build a small OCI image layout (3 random tar.gz layers, config, manifest, index.json);
#   5. push it through wharf with skopeo, pull it back, compare the manifest digests;
#   6. before the push: start a webhook receiver (examples/webhook_receiver.rs) and create a
#      webhook policy for project "demo" through wharf's Harbor-compatible API;
#   7. print the PUSH_ARTIFACT and PULL_ARTIFACT webhooks the receiver got, the delivery
#      history, and wharf's access log for the manifest PUT/GET; stop everything.
#
#   8. print the address of the admin UI (${WHARF_URL}/ui/, user admin, the generated password).
#
# Run it through `make demo` (which installs what is missing first).
# KEEP=1 keeps the temp dir (logs, layouts) and leaves wharf, the registry and the receiver
# running, so a person can click through the UI; the last lines say how to stop them.
set -Eeuo pipefail
trap 'printf "demo: ERROR: line %s: %s failed\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$ROOT/.tools/bin:$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

REPO=demo/hello # project "demo", repository "hello"
TAG=v1

WORK=""                  # temp dir: configs, storage, logs, layouts
PIDS=()                  # background processes to stop, in start order
REGISTRY_URL=""          # http://127.0.0.1:PORT of docker-registry
WHARF_ADDR=""            # 127.0.0.1:PORT of wharf
WHARF_URL=""             # http://$WHARF_ADDR
ADMIN_PASSWORD=""        # wharf's generated admin password (user "admin")
WHARF_LOG=""             # wharf's log: JSON lines
WHARF_BIN=""
RECEIVER_BIN=""
RECEIVER_URL=""
RECEIVER_LOG=""
POLICY_ID=""
WHARF_PID=""
REGISTRY_PID=""

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf 'demo: ERROR: %s\n' "$*" >&2
    exit 1
}

# Is PID running (and not a zombie waiting to be reaped)?
alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Stop every background process (TERM, then KILL after 10 s), show logs if we failed, remove
# the temp dir. Runs on every exit, including errors and Ctrl-C.
cleanup() {
    local status=$? i pid n
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for ((n = 0; n < 100; n++)); do
            alive "$pid" || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ] && [ -n "$WORK" ] && [ -d "$WORK" ]; then
        for f in "$WORK"/*.log; do
            [ -f "$f" ] || continue
            printf '\n--- last lines of %s ---\n' "$(basename "$f")" >&2
            tail -n 20 "$f" >&2
        done
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${KEEP:-0}" = 1 ]; then
            printf '\ndemo: kept %s\n' "$WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg LOG CMD...: run CMD in the background, output to LOG, remember its pid.
start_bg() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    PIDS+=("$!")
}

# wait_for DESCRIPTION PID SECONDS CMD...: poll CMD until it succeeds; fail if PID died.
wait_for() {
    local what=$1 pid=$2 secs=$3 n
    shift 3
    for ((n = 0; n < secs * 10; n++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        alive "$pid" || die "$what exited before it was ready"
        sleep 0.1
    done
    die "$what not ready after ${secs}s"
}

# A free loopback port (bind, read, release). Only for wharf, whose external_url must name its
# port before it starts; the registry binds port 0 and says which port it got.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# skopeo with a private blob-info cache: skopeo remembers blobs it has seen (as root in
# /var/lib/containers/cache) and would then mount or skip uploads instead of pushing them.
skopeo_isolated() {
    local cache="$WORK/skopeo-cache"
    mkdir -p "$cache"
    if [ "$(id -u)" -eq 0 ]; then
        mkdir -p /var/lib/containers/cache
        # shellcheck disable=SC2016 # $1 and $@ are expanded by the inner sh
        unshare --mount -- sh -c 'mount --bind "$1" /var/lib/containers/cache && shift && exec skopeo "$@"' \
            sh "$cache" --policy "$WORK/policy.json" "$@"
    else
        # rootless skopeo keeps the cache under $XDG_DATA_HOME/containers/cache
        XDG_DATA_HOME="$cache" skopeo --policy "$WORK/policy.json" "$@"
    fi
}

build_wharf() {
    step "building wharf and the demo webhook receiver (cargo build --release)"
    cargo build --release --quiet --bin wharf --example webhook_receiver
    local target
    target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
    WHARF_BIN="$target/release/wharf"
    RECEIVER_BIN="$target/release/examples/webhook_receiver"
    [ -x "$WHARF_BIN" ] || die "no binary at $WHARF_BIN"
    [ -x "$RECEIVER_BIN" ] || die "no binary at $RECEIVER_BIN"
    info "$("$WHARF_BIN" --version) at $WHARF_BIN"
}

start_registry() {
    step "starting docker-registry (distribution) with storage in a temp dir"
    mkdir -p "$WORK/registry-data"
    cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
  secret: demo-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
EOF
    start_bg "$WORK/registry.log" docker-registry serve "$WORK/registry.yml"
    REGISTRY_PID=${PIDS[-1]}
    local pid=$REGISTRY_PID addr=""
    wait_for docker-registry "$pid" 20 grep -q 'listening on 127.0.0.1:' "$WORK/registry.log"
    addr=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$WORK/registry.log" | head -n 1)
    REGISTRY_URL="http://${addr#listening on }"
    wait_for docker-registry "$pid" 20 curl -fsS "$REGISTRY_URL/v2/"
    info "registry at $REGISTRY_URL (pid $pid)"
}

start_wharf() {
    step "starting wharf in front of it"
    WHARF_ADDR="127.0.0.1:$(free_port)"
    WHARF_URL="http://$WHARF_ADDR"
    ADMIN_PASSWORD="demo-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
    mkdir -p "$WORK/wharf-data"
    # admin_password is not in the file: it comes from WHARF_ADMIN_PASSWORD (an env override).
    cat >"$WORK/wharf.yaml" <<EOF
listen: "$WHARF_ADDR"
external_url: "$WHARF_URL"
upstream:
  registry: "$REGISTRY_URL"
data_dir: "$WORK/wharf-data"
log:
  format: json
  level: info
shutdown_grace: 5s
projects:
  demo:
    public: true
notification:
  # the demo receiver listens on loopback, which the SSRF guard refuses unless allowed
  allowed_target_networks: ["127.0.0.0/8"]
EOF
    export WHARF_ADMIN_PASSWORD="$ADMIN_PASSWORD"
    "$WHARF_BIN" check-config --config "$WORK/wharf.yaml" >"$WORK/effective.yaml" 2>"$WORK/check-config.log"
    start_bg "$WORK/wharf.log" "$WHARF_BIN" serve --config "$WORK/wharf.yaml"
    WHARF_LOG="$WORK/wharf.log"
    WHARF_PID=${PIDS[-1]}
    local pid=$WHARF_PID
    wait_for wharf "$pid" 20 curl -fsS "$WHARF_URL/readyz"
    info "wharf at $WHARF_URL (pid $pid), /readyz: $(curl -fsS "$WHARF_URL/readyz")"
    info "admin password generated (user admin); config: $WORK/wharf.yaml"
}

# A small OCI image layout in $1, tagged $TAG: three tar.gz layers of random files, an image
# config with their diff_ids, a manifest, index.json and oci-layout. Prints the manifest digest.
build_image() {
    python3 - "$1" "$TAG" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile

out, tag = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)

def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest

layers, diff_ids = [], []
for i in range(3):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, size in ((f"layer{i}/", 0), (f"layer{i}/random.bin", 4096 * (i + 1)),
                           (f"layer{i}/hello.txt", None)):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            data = os.urandom(size) if size else f"hello from layer {i}\n".encode()
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = raw.getvalue()
    gz = gzip.compress(raw, mtime=0)
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": put(gz), "size": len(gz)})

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/bin/true"], "Labels": {"org.example.demo": "wharf"}},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
    "history": [{"created_by": f"wharf demo layer {i}"} for i in range(3)],
}, separators=(",", ":")).encode()
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": put(config), "size": len(config)},
    "layers": layers,
}, separators=(",", ":")).encode()
mdigest = put(manifest)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": mdigest, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(mdigest)
PY
}

# The manifest digest that an OCI layout's index.json names for $TAG.
layout_digest() {
    jq -r --arg tag "$TAG" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest' \
        "$1/index.json"
}

push_and_pull() {
    step "building an OCI image layout (3 random layers) without Docker"
    local pushed pulled
    pushed=$(build_image "$WORK/image")
    info "$(find "$WORK/image/blobs" -type f | wc -l) blobs, $(du -sh "$WORK/image" | cut -f1), manifest $pushed"

    step "skopeo copy oci:image:$TAG -> docker://$WHARF_ADDR/$REPO:$TAG (through wharf)"
    skopeo_isolated copy --quiet --dest-tls-verify=false \
        "oci:$WORK/image:$TAG" "docker://$WHARF_ADDR/$REPO:$TAG"
    info "pushed"

    step "skopeo copy docker://$WHARF_ADDR/$REPO:$TAG -> oci:pulled:$TAG (through wharf)"
    skopeo_isolated copy --quiet --src-tls-verify=false \
        "docker://$WHARF_ADDR/$REPO:$TAG" "oci:$WORK/pulled:$TAG"
    pulled=$(layout_digest "$WORK/pulled")
    [ "$pulled" = "$pushed" ] || die "pulled manifest $pulled, pushed $pushed"
    info "pulled; manifest digest matches: $pulled"
    info "tags in the registry: $(curl -fsS "$WHARF_URL/v2/$REPO/tags/list" | jq -c .tags)"
}

# api METHOD PATH [JSON]: call wharf's API as admin.
api() {
    local method=$1 path=$2
    shift 2
    curl -fsS -u "admin:$ADMIN_PASSWORD" -H 'Content-Type: application/json' -X "$method" \
        "$WHARF_URL$path" "$@"
}

# Webhooks. "setup" (before the push): start the receiver, create a policy for project demo
# through the Harbor-compatible API. "report" (after the pull): print what was delivered.
demo_webhook() {
    local phase=$1
    case "$phase" in
    setup)
        step "starting a webhook receiver and creating a webhook policy through wharf's API"
        RECEIVER_LOG="$WORK/receiver.log"
        start_bg "$RECEIVER_LOG" "$RECEIVER_BIN" --listen 127.0.0.1:0 --print
        local pid=${PIDS[-1]}
        wait_for "webhook receiver" "$pid" 10 grep -q '^listening on ' "$RECEIVER_LOG"
        RECEIVER_URL="http://$(sed -n 's/^listening on //p' "$RECEIVER_LOG" | head -n 1)/hooks/demo"
        info "receiver at $RECEIVER_URL"
        local policy
        policy=$(jq -nc --arg url "$RECEIVER_URL" '{
            name: "demo-hook", description: "every push and pull in project demo",
            enabled: true, event_types: ["PUSH_ARTIFACT", "PULL_ARTIFACT"],
            targets: [{type: "http", address: $url, payload_format: "Default",
                       auth_header: "Bearer demo-token", secret: "whsec_ZGVtby1zaWduaW5nLXNlY3JldA=="}]}')
        info "POST /api/v2.0/projects/demo/webhook/policies $(jq -c '.targets[0].auth_header = "…" | .targets[0].secret = "…"' <<<"$policy")"
        local created
        created=$(api POST /api/v2.0/projects/demo/webhook/policies -d "$policy")
        POLICY_ID=$(jq -r .id <<<"$created")
        info "created policy $POLICY_ID; as the API shows it (secrets masked):"
        jq -c '{id, name, event_types, targets}' <<<"$created" | sed 's/^/    /'
        info "test endpoint: $(api POST /api/v2.0/projects/demo/webhook/policies/test -d "$policy" | jq -c .)"
        ;;
    report)
        step "webhooks delivered to the receiver"
        local n
        for ((n = 0; n < 100; n++)); do
            [ "$(grep -c '^--- webhook received ---' "$RECEIVER_LOG")" -ge 3 ] && break
            sleep 0.1
        done
        [ "$(grep -c '^--- webhook received ---' "$RECEIVER_LOG")" -ge 3 ] ||
            die "the receiver did not get the test, push and pull webhooks: $(cat "$RECEIVER_LOG")"
        # the receiver prints headers, then the JSON body; show the events compactly
        python3 - "$RECEIVER_LOG" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
for block in text.split("--- webhook received ---")[1:]:
    head, _, body = block.strip("\n").partition("\n\n")
    try:
        event = json.loads(body)
    except ValueError:
        continue
    headers = dict(re.findall(r"^([a-z0-9-]+): (.*)$", head, re.M))
    res = event.get("event_data", {}).get("resources", [{}])[0]
    if "test" in event.get("event_data", {}).get("custom_attributes", {}):
        print(f"    {event.get('type')}  (the test endpoint's notification)  operator {event.get('operator')}")
    else:
        print(f"    {event.get('type')}  {res.get('resource_url')}  digest {str(res.get('digest'))[:19]}…  "
              f"operator {event.get('operator')}  size {res.get('size')}")
    print(f"        webhook-id {headers.get('webhook-id')}  signature {headers.get('webhook-signature', '')[:24]}…  "
          f"authorization {headers.get('authorization', '')[:12]}…")
PY
        step "the whole PUSH_ARTIFACT payload (Harbor 2.x Default format)"
        python3 - "$RECEIVER_LOG" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
for block in text.split("--- webhook received ---")[1:]:
    body = block.strip("\n").partition("\n\n")[2]
    try:
        event = json.loads(body)
    except ValueError:
        continue
    if event.get("type") == "PUSH_ARTIFACT" and "test" not in event["event_data"].get("custom_attributes", {}):
        print("\n".join("    " + l for l in json.dumps(event, indent=2).splitlines()))
        break
PY
        step "delivery history (GET …/webhook/policies/$POLICY_ID/executions)"
        api GET "/api/v2.0/projects/demo/webhook/policies/$POLICY_ID/executions" |
            jq -c '.[] | {id, status, event_type: .extra_attrs.event_type, attempts: .extra_attrs.attempts}' | sed 's/^/    /'
        step "last trigger per event type (GET …/webhook/lasttrigger)"
        api GET /api/v2.0/projects/demo/webhook/lasttrigger | jq -c '.[]' | sed 's/^/    /'
        ;;
    *) die "demo_webhook: unknown phase $phase" ;;
    esac
}

report() {
    step "what wharf saw (access log, target wharf::access)"
    jq -r 'select(.target == "wharf::access") | .op' "$WHARF_LOG" | sort | uniq -c |
        awk '{printf "    %-16s x%s\n", $2, $1}'
    step "manifest PUT / GET (access log lines)"
    jq -c 'select(.target == "wharf::access" and (.op == "manifest_put" or .op == "manifest_get"))
           | {op, method, path, status, bytes_in, bytes_out, duration_ms: ((.duration_ms * 100 | round) / 100), request_id}' "$WHARF_LOG" |
        sed 's/^/    /'
}

stop_wharf() {
    step "stopping wharf (SIGTERM, graceful shutdown)"
    local status=0 pid
    kill -TERM "$WHARF_PID"
    wait "$WHARF_PID" || status=$?
    local rest=()
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$WHARF_PID" ] || rest+=("$pid")
    done
    PIDS=("${rest[@]}")
    [ "$status" -eq 0 ] || die "wharf exited with status $status on SIGTERM"
    info "wharf exited 0; its last words: $(jq -r 'select(.target == "wharf" or .target == "wharf::server") | .message' "$WHARF_LOG" | tail -n 3 | paste -sd '|' - | sed 's/|/; /g')"
}

main() {
    command -v docker-registry >/dev/null || die "docker-registry is missing: run make deps"
    command -v skopeo >/dev/null || die "skopeo is missing: run make deps"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-demo.XXXXXX")
    cat >"$WORK/policy.json" <<'EOF'
{"default": [{"type": "insecureAcceptAnything"}]}
EOF
    build_wharf
    start_registry
    start_wharf
    demo_webhook setup
    push_and_pull
    demo_webhook report
    report
    step "the admin UI"
    info "open $WHARF_URL/ui/ and sign in as admin / $ADMIN_PASSWORD"
    info "(project demo has the webhook policy of this demo: $WHARF_URL/ui/projects/demo/webhooks)"
    if [ "${KEEP:-0}" = 1 ]; then
        step "KEEP=1: wharf, the registry and the receiver keep running"
        info "stop them with: kill ${PIDS[*]} && rm -rf $WORK"
        PIDS=() # the exit trap stops nothing now
        return 0
    fi
    info "(KEEP=1 make demo leaves it running to click through)"
    stop_wharf
    step "done: stopping the registry and removing $WORK"
}

main "$@"
