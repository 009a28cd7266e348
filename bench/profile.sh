#!/usr/bin/env bash
# Instructions wharf executes per manifest GET, counted by callgrind: repeatable to a fraction of
# a percent whatever else the machine is doing, so a change to the hot path can be judged
# without wall-clock noise (docs/benchmarks.md, "Instruction counts").
#
#   bench/profile.sh                  # 2,000 GETs, every configuration
#   N=5000 CONFIGS="off log" bench/profile.sh
#
# Configurations (CONFIGS):
#   off      events off, access log off (log level warn): the proxy alone
#   log      events off, a JSON access-log line per request (log level info)
#   record   JSON access log, pull events recorded (no policy: nothing to deliver) — the bench's
#            manifest scenario
#   events   JSON access log, pull events recorded (a policy wants them, its target a closed
#            port: each delivery fails once and is dead; no retry)
#   deliver  JSON access log, every pull delivered to a local receiver (examples/webhook_receiver)
#   push     JSON access log, events recorded (no policy): the manifest PUT under a new tag each
#            time (a retag: the layers are there already); prints Ir per PUT
#   nginx    the reference: nginx (bench/nginx.conf.tmpl, one process: `master_process off`) with
#            its buffered JSON access log, the same GETs — compare with `log` and `record`
#
# Prints Ir (instructions) per GET for each configuration and keeps the callgrind files (with
# KEEP_TMP=1) for `callgrind_annotate`. Needs valgrind, docker-registry, python3 (Debian).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-2000}
WARMUP=${WARMUP:-200}
CONFIGS=${CONFIGS:-off log record events deliver}
KEEP_TMP=${KEEP_TMP:-0}
PROFILE_BIN=${PROFILE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/profiling/wharf}
RECEIVER_BIN=${RECEIVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/profiling/examples/webhook_receiver}

log() { printf '[profile %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
for t in valgrind callgrind_control docker-registry python3 curl; do
	command -v "$t" >/dev/null 2>&1 || die "$t is missing (apt-get install -y valgrind docker-registry python3 curl)"
done
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
case " $CONFIGS " in *" nginx "*) [ -x "$NGINX" ] || die "nginx is missing (apt-get install -y nginx-light)" ;; esac

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	log "cargo build --profile profiling (release code with line tables)"
	(cd "$ROOT" && cargo build -q --profile profiling --bin wharf --example webhook_receiver)
fi

WORK=$(mktemp -d /tmp/wharf-profile.XXXXXX)
# shellcheck source=bench/small-registry.sh
. "$ROOT/bench/small-registry.sh"
start_small_registry

# GET the manifest N times on one keep-alive connection
get_n() { # PORT COUNT
	python3 - "$1" "$2" <<'EOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    c.request("GET", "/v2/bench/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
EOF
}
# put_n PORT COUNT FIRST: the manifest pushed again under the tags pFIRST … (a retag, as CI does)
put_n() {
	python3 - "$1" "$2" "$3" "$WORK/manifest.json" <<'EOF'
import http.client, sys
body = open(sys.argv[4], "rb").read()
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
first = int(sys.argv[3])
for i in range(first, first + int(sys.argv[2])):
    c.request("PUT", f"/v2/bench/app/manifests/p{i}", body=body,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
EOF
}
open_deliveries() { # PORT
	curl -s "http://127.0.0.1:$1/metrics" | awk '$1 ~ /^wharf_deliveries\{state="(pending|running)"\}/ { n += $2 } END { print n + 0 }'
}

measure() { # CONFIG
	local name=$1 port level=warn extra="" hook out
	port=$(free_port)
	case "$name" in
	off) extra="events: {enabled: false}" ;;
	log) level=info extra="events: {enabled: false}" ;;
	record | push) level=info ;;
	events | deliver) level=info extra='notification: {allowed_target_networks: ["127.0.0.0/8"], webhook_job_max_retry: 0, breaker_failures: 100000000}' ;;
	nginx) ;;
	*) die "unknown configuration $name" ;;
	esac
	mkdir -p "$WORK/$name"
	out=$WORK/$name/callgrind.out
	local vpid
	if [ "$name" = nginx ]; then
		local user_line="master_process off;"
		[ "$(id -u)" = 0 ] && user_line="$user_line user root;"
		sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORKERS@|1|" -e "s|@DIR@|$WORK/$name|g" \
			-e "s|@ACCESS_LOG@|$WORK/$name/access.log wharf_json buffer=64k flush=1s|" \
			-e "s|@REGISTRY_PORT@|$RPORT|" -e "s|@PORT@|$port|" \
			"$ROOT/bench/nginx.conf.tmpl" >"$WORK/$name/nginx.conf"
		valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
			"$NGINX" -p "$WORK/$name" -c "$WORK/$name/nginx.conf" -e "$WORK/$name/error.log" \
			>"$WORK/$name/nginx.log" 2>"$WORK/$name/valgrind.log" &
		vpid=$!
		PIDS+=($vpid)
		wait_http "http://127.0.0.1:$port/v2/"
	else
		cat >"$WORK/$name/wharf.yaml" <<EOF
listen: "127.0.0.1:$port"
upstream: {registry: "http://127.0.0.1:$RPORT"}
data_dir: "$WORK/$name/data"
admin_password: "profile-admin-password"
log: {level: $level, format: json}
$extra
EOF
		valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
			"$PROFILE_BIN" serve --config "$WORK/$name/wharf.yaml" >"$WORK/$name/wharf.log" 2>"$WORK/$name/valgrind.log" &
		vpid=$!
		PIDS+=($vpid)
		wait_http "http://127.0.0.1:$port/healthz"
	fi
	if [ "$name" = events ] || [ "$name" = deliver ]; then
		hook=$(free_port)
		if [ "$name" = deliver ]; then
			"$RECEIVER_BIN" --listen "127.0.0.1:$hook" >"$WORK/$name/receiver.log" 2>&1 &
			PIDS+=($!)
			sleep 0.5
		fi
		curl -sf -o /dev/null -u admin:profile-admin-password -H 'Content-Type: application/json' \
			"http://127.0.0.1:$port/api/v2.0/projects/bench/webhook/policies" \
			-d "{\"name\":\"pulls\",\"event_types\":[\"PULL_ARTIFACT\"],\"targets\":[{\"type\":\"http\",\"address\":\"http://127.0.0.1:$hook/\"}]}" ||
			die "creating the policy failed"
	fi
	# wharf's deliveries of the GETs so far (nginx has none)
	settle() { [ "$name" = nginx ] || while [ "$(open_deliveries "$port")" != 0 ]; do sleep 0.2; done; }
	if [ "$name" = push ]; then
		put_n "$port" "$WARMUP" 0
		callgrind_control -i on "$vpid" >/dev/null
		put_n "$port" "$N" "$WARMUP"
	else
		get_n "$port" "$WARMUP"
		settle
		callgrind_control -i on "$vpid" >/dev/null
		get_n "$port" "$N"
	fi
	# the events and deliveries of these GETs are part of their cost
	[ "$name" = nginx ] || sleep 1
	settle
	callgrind_control -i off "$vpid" >/dev/null
	callgrind_control -d "$vpid" >/dev/null
	kill -TERM "$vpid"
	wait "$vpid" 2>/dev/null || true
	local unit=GET
	[ "$name" = push ] && unit=PUT
	report "$name" "$unit"
}

report() { # CONFIG UNIT: the total of the callgrind files of CONFIG, per request
	local total
	total=$(cat "$WORK/$1/callgrind.out"* 2>/dev/null | awk '/^summary:/ { s += $2 } /^totals:/ { t += $2 } END { print (s > 0 ? s : t) }')
	printf '%-8s %12s Ir in all, %10.0f Ir per %s (N=%s)\n' "$1" "$total" "$(awk -v t="$total" -v n="$N" 'BEGIN { print t / n }')" "$2" "$N"
}

for c in $CONFIGS; do measure "$c"; done
