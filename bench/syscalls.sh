#!/usr/bin/env bash
# System calls per manifest GET, wharf against nginx, counted by `strace -f -c` while wrk sends
# manifest GETs through each in front of the same registry (docs/benchmarks.md, "System calls
# per request"). Instructions (bench/profile.sh) leave out the kernel: this is the other half of
# a small request's CPU, and the half where wharf's worker threads wake each other.
#
#   bench/syscalls.sh                         # wharf with a worker per CPU, then with one
#   WORKERS="2" DURATION=10s bench/syscalls.sh
#
# Both write a JSON access-log line per request (wharf at `info`, nginx with the buffered
# `access_log` of bench/nginx.conf.tmpl) and record no events. strace slows both: the counts per
# request are the figure, not the rates. Needs strace, wrk, nginx, docker-registry, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
WORKERS=${WORKERS:-auto 1}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
TOP=${TOP:-8}
KEEP_TMP=${KEEP_TMP:-0}
WHARF_BIN=${WHARF_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/wharf}

log() { printf '[syscalls %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
for t in strace wrk docker-registry python3 curl "$NGINX"; do
	command -v "$t" >/dev/null 2>&1 || die "$t is missing (apt-get install -y strace wrk nginx-light docker-registry python3 curl)"
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
	log "cargo build --release"
	(cd "$ROOT" && cargo build -q --release --bin wharf)
fi
[ -x "$WHARF_BIN" ] || die "no wharf binary at $WHARF_BIN (WHARF_BIN=…)"

WORK=$(mktemp -d /tmp/wharf-syscalls.XXXXXX)
# shellcheck source=bench/small-registry.sh
. "$ROOT/bench/small-registry.sh"
start_small_registry

# wrk against PORT, writing NAME's request count; strace's table is in $WORK/NAME.strace
load() { # NAME PORT
	wrk -c"$CONNECTIONS" -t2 -d"$DURATION" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://127.0.0.1:$2/v2/bench/app/manifests/v1" >"$WORK/$1.wrk"
	awk '/requests in/ { print $1 }' "$WORK/$1.wrk" >"$WORK/$1.requests"
}

# stop the traced process (by its command line: strace does not pass signals on) and wait for
# strace to write its table
stop_traced() { # STRACE_PID PATTERN
	pkill -INT -f "$2" 2>/dev/null || true
	local i
	for i in $(seq 100); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	pkill -KILL -f "$2" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

measure_wharf() { # WORKERS
	local name=wharf-$1 port
	port=$(free_port)
	mkdir -p "$WORK/$name"
	cat >"$WORK/$name/wharf.yaml" <<EOF
listen: "127.0.0.1:$port"
upstream: {registry: "http://127.0.0.1:$RPORT"}
data_dir: "$WORK/$name/data"
admin_password: "syscalls-admin-password"
log: {level: info, format: json}
events: {enabled: false}
server: {worker_threads: $1}
EOF
	# (a WHARF_ variable is a config override to wharf: this script's own are not passed on)
	strace -f -c -o "$WORK/$name.strace" env -u WHARF_BIN "$WHARF_BIN" serve --config "$WORK/$name/wharf.yaml" \
		>"$WORK/$name/wharf.log" 2>&1 &
	local spid=$!
	PIDS+=($spid)
	wait_http "http://127.0.0.1:$port/healthz"
	load "$name" "$port"
	stop_traced "$spid" "serve --config $WORK/$name/wharf.yaml"
}

measure_nginx() {
	local port dir=$WORK/nginx user_line=""
	port=$(free_port)
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && user_line="user root;"
	sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORKERS@|$NGINX_WORKERS|" -e "s|@DIR@|$dir|g" \
		-e "s|@ACCESS_LOG@|$dir/access.log wharf_json buffer=64k flush=1s|" \
		-e "s|@REGISTRY_PORT@|$RPORT|" -e "s|@PORT@|$port|" \
		"$ROOT/bench/nginx.conf.tmpl" >"$dir/nginx.conf"
	strace -f -c -o "$WORK/nginx.strace" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
		>"$dir/nginx.log" 2>&1 &
	local spid=$!
	PIDS+=($spid)
	wait_http "http://127.0.0.1:$port/v2/"
	load nginx "$port"
	stop_traced "$spid" "$NGINX -p $dir"
}

# the calls of NAME per request, most frequent first
report() { # NAME
	local requests
	requests=$(cat "$WORK/$1.requests")
	printf '\n%s: %s requests\n' "$1" "$requests"
	awk -v r="$requests" '
		$NF == "total" { printf "  %-16s %8.2f\n", "all", $4 / r; next }
		$4 ~ /^[0-9]+$/ { printf "  %-16s %8.2f\n", $NF, $4 / r }
	' "$WORK/$1.strace" | sort -k2 -rn | head -n $((TOP + 1))
}

for w in $WORKERS; do
	log "wharf, worker_threads: $w"
	measure_wharf "$w"
done
log "nginx, worker_processes $NGINX_WORKERS"
measure_nginx
printf '\nsystem calls per manifest GET (wrk -c%s, %s, under strace -f -c)\n' "$CONNECTIONS" "$DURATION"
for w in $WORKERS; do report "wharf-$w"; done
report nginx
