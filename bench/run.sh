#!/usr/bin/env bash
# wharf benchmark: the same registry reached directly, through nginx and through wharf, in one run
# on one machine. See docs/benchmarks.md for the method, the targets and how to read the output.
#
#   bench/run.sh                                   # full run: 1 GiB blob and image, 3 runs, wrk 10 s
#   BLOB_MIB=64 RUNS=1 WRK_DURATION=3s bench/run.sh   # quick smoke run (not a measurement)
#
# Knobs (environment):
#   BLOB_MIB=1024        size of the blob fetched with curl
#   IMAGE_MIB=$BLOB_MIB  size of the image pushed and pulled with skopeo
#   IMAGE_LAYERS=4       number of (uncompressed, random) layers in that image
#   RUNS=3               runs per figure; the median is reported
#   WRK_DURATION=10s     wrk duration per manifest run (WRK_CONNECTIONS=16, WRK_THREADS=2, WRK_WARMUP=2s)
#   SKIP_BUILD=1         do not run `cargo build --release` (WHARF_BIN must exist)
#   WHARF_BIN=...        wharf binary (default target/release/wharf, or $CARGO_TARGET_DIR/release/wharf)
#   WHARF_REV=...        the commit WHARF_BIN was built from, for the report (a binary of another
#                        checkout: a before/after pair); default: this checkout's HEAD
#   WHARF_EXTRA_YAML=F   file appended to wharf's config (top-level keys other than listen, upstream,
#                        data_dir, admin_password, log; WHARF_<KEY> env overrides reach wharf too)
#   EXTRA_WHARFS="wharf-x=F.yaml ..."  more wharf instances, each with its own extra YAML; compared and
#                        checked like "wharf" (e.g. events on vs off)
#   ACCESS_LOGS=1        wharf at log level info (one JSON access-log line per request) and nginx with
#                        a buffered JSON access log (bench/nginx.conf.tmpl); default: wharf at warn,
#                        nginx access_log off
#   SCENARIOS="blob skopeo manifest head tags push_latency deliveries delivery_latency manifest_events target_down store soak"
#                        which scenario_* functions run, in order (the last seven: events, delivery and the store,
#                        see docs/benchmarks.md; they start wharf instances and receivers of their own)
#   PUSH_CONNECTIONS="1 4"   push_latency: wrk connections of the manifest PUT runs
#   DELIVERIES_N=20000   deliveries: events made (and delivered) per run
#   DL_PUSH_RATE=100 DL_PULL_RATE=200 DL_DURATION=10s   delivery_latency: paced event rates
#   TD_CONNECTIONS=4     target_down: wrk connections of the GET and PUT runs
#   STORE_BACKENDS="sqlite pg1 pg2 pg3"  store: the embedded store, and PostgreSQL with 1, 2, 3
#                        replicas on one database (a private cluster the bench starts)
#   STORE_N=10000        store: deliveries drained per run; PG_SYNC=on its synchronous_commit,
#                        PG_NAPTIME=60s its autovacuum_naptime
#   STORE_RECEIVER_DELAY_MS=0   store: the drain's receiver answers each delivery after this many
#                        ms (a target that takes its time: how far replicas add delivery capacity
#                        when the target's latency, not the CPU, bounds the drain)
#   SOAK_DURATION=600s SOAK_SAMPLE=10 SOAK_RUNS=1 SOAK_IDLE=200 SOAK_SCRAPES=100   soak: how long the
#                        pulls run, seconds between RSS/fd/backlog/store samples, runs, seconds of
#                        idleness before the idle RSS, /metrics scrapes timed before and after
#   SOAK_STORE=sqlite    soak: the store measured (sqlite: the embedded one; pg: a private
#                        PostgreSQL, its bytes the sum of the public tables, indexes and TOAST)
#   RECEIVER_BIN=...     webhook receiver (default target/release/examples/webhook_receiver)
#   TARGETS="direct nginx wharf"       which endpoints are measured
#   DATA_ON_TMPFS=1      wharf's data_dir (its SQLite database) on the tmpfs too; default: on disk,
#                        under the work dir, as in production
#   NGINX_WORKERS=auto   nginx worker_processes
#   RESULTS_FILE=bench/results-<date>.md   where the markdown summary goes (also printed)
#   KEEP_TMP=1           keep the work dir (logs, configs, wrk output) instead of removing it
#   STRICT=1             exit 3 when a target is missed
#   SETTLE=3             seconds of quiet before measuring
#
# Adding a scenario: write `scenario_NAME() { for_each_run_target measure_NAME; }` and
# `measure_NAME TARGET RUN` that calls `record NAME METRIC TARGET RUN VALUE`; add NAME to SCENARIOS
# and the metric (and its target, if any) to bench/report.py.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

BLOB_MIB=${BLOB_MIB:-1024}
IMAGE_MIB=${IMAGE_MIB:-$BLOB_MIB}
IMAGE_LAYERS=${IMAGE_LAYERS:-4}
RUNS=${RUNS:-3}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
WRK_THREADS=${WRK_THREADS:-2}
WRK_WARMUP=${WRK_WARMUP:-2s}
SKIP_BUILD=${SKIP_BUILD:-0}
WHARF_BIN=${WHARF_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/wharf}
WHARF_EXTRA_YAML=${WHARF_EXTRA_YAML:-}
EXTRA_WHARFS=${EXTRA_WHARFS:-}
ACCESS_LOGS=${ACCESS_LOGS:-0}
DATA_ON_TMPFS=${DATA_ON_TMPFS:-0}
SCENARIOS=${SCENARIOS:-blob skopeo manifest head tags push_latency deliveries delivery_latency manifest_events target_down store soak}
PUSH_CONNECTIONS=${PUSH_CONNECTIONS:-1 4}
DELIVERIES_N=${DELIVERIES_N:-20000}
DL_PUSH_RATE=${DL_PUSH_RATE:-100}
DL_PULL_RATE=${DL_PULL_RATE:-200}
DL_DURATION=${DL_DURATION:-10s}
TD_CONNECTIONS=${TD_CONNECTIONS:-4}
STORE_BACKENDS=${STORE_BACKENDS:-sqlite pg1 pg2 pg3}
STORE_N=${STORE_N:-10000}
STORE_RECEIVER_DELAY_MS=${STORE_RECEIVER_DELAY_MS:-0}
SOAK_DURATION=${SOAK_DURATION:-600s}
SOAK_SAMPLE=${SOAK_SAMPLE:-10}
SOAK_RUNS=${SOAK_RUNS:-1}
SOAK_IDLE=${SOAK_IDLE:-200}
SOAK_SCRAPES=${SOAK_SCRAPES:-100}
SOAK_STORE=${SOAK_STORE:-sqlite}
PG_SYNC=${PG_SYNC:-on}
PG_NAPTIME=${PG_NAPTIME:-60s}
RECEIVER_BIN=${RECEIVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/webhook_receiver}
TARGETS=${TARGETS:-direct nginx wharf}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
RESULTS_FILE=${RESULTS_FILE:-$BENCH/results-$(date +%Y%m%d-%H%M%S).md}
KEEP_TMP=${KEEP_TMP:-0}
SETTLE=${SETTLE:-3}
# Time limits, so that a hung proxy fails the run instead of stalling it.
CURL_MAX_TIME=${CURL_MAX_TIME:-600}
SKOPEO_TIMEOUT=${SKOPEO_TIMEOUT:-900}

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
IMAGE_TAG=bench
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

# ---------------------------------------------------------------------------------------------
# helpers

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
# Something odd that the report should show (errors, retries, warnings in proxy logs).
note() {
	log "NOTE: $*"
	printf '%s\n' "$*" >>"$WORK/notes.txt"
}
fact() { printf '%s\t%s\n' "$1" "$2" >>"$WORK/facts.tsv"; }
# record SCENARIO METRIC TARGET RUN VALUE
record() {
	printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/results.tsv"
	log "  $1 $2 $3 run $4: $5"
}
# calc EXPR: floating-point arithmetic via awk.
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
now() { date +%s.%N; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# cpu_ms TARGET: CPU time (user+system, all threads) used so far by the proxy of TARGET, in ms;
# nginx: master and workers. Empty for direct (there is no proxy).
cpu_ms() {
	local pids=() p
	case "$1" in
	direct) return 0 ;;
	nginx) read -r -a pids <<<"${PID[nginx]} $(nginx_workers "${PID[nginx]}" | tr '\n' ' ')" ;;
	*) pids=("${PID[$1]}") ;;
	esac
	for p in "${pids[@]}"; do cat "/proc/$p/stat" 2>/dev/null; done |
		awk -v hz="$CLK_TCK" '{ t += $14 + $15 } END { printf "%.0f", t * 1000 / hz }'
}
# children_ms: CPU time (user+system) of this script's reaped children (wrk, curl, skopeo, and
# stopped services), in ms.
children_ms() {
	awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.0f", ($14 + $15) * 1000 / hz }' "/proc/$$/stat"
}
# record_cpu SCENARIO METRIC TARGET RUN CPU_MS_BEFORE PER [WHOSE]: CPU per unit (PER units of
# work) of the proxy of TARGET, or of WHOSE (a service name, or "children" for children_ms).
record_cpu() {
	[ -n "$5" ] || return 0
	local c1
	case "${7:-$3}" in
	children) c1=$(children_ms) ;;
	*) c1=$(cpu_ms "${7:-$3}") ;;
	esac
	record "$1" "$2" "$3" "$4" "$(calc "($c1 - $5) / $6")"
}

vm_status_mib() { # PID FIELD -> a memory figure of /proc/PID/status (VmHWM, VmRSS) in MiB
	awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo ""
}
vm_hwm_mib() { vm_status_mib "$1" VmHWM; } # PID -> peak RSS in MiB
vm_rss_mib() { vm_status_mib "$1" VmRSS; } # PID -> current RSS in MiB

# ---------------------------------------------------------------------------------------------
# preflight

check_tools() {
	local missing=() t
	for t in docker-registry skopeo wrk ab curl python3 sha256sum awk timeout; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	NGINX=$(command -v nginx 2>/dev/null || true)
	[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
	[ -z "$NGINX" ] && missing+=(nginx)
	if [ "$SKIP_BUILD" != 1 ]; then
		command -v cargo >/dev/null 2>&1 || missing+=(cargo)
	fi
	if [ "$IS_ROOT" = 1 ]; then
		for t in unshare mount umount; do
			command -v "$t" >/dev/null 2>&1 || missing+=("$t")
		done
	fi
	if [ "${#missing[@]}" -gt 0 ]; then
		log "missing tools: ${missing[*]}"
		log "install them with:  apt-get install -y docker-registry skopeo nginx-light wrk apache2-utils curl python3"
		log "  (or: make deps, for the tools the project installs anyway)"
		die "cannot run the benchmark without: ${missing[*]}"
	fi
	case " $TARGETS " in *" direct "*) ;; *) die "TARGETS must include direct (the baseline)" ;; esac
	[ "$RUNS" -ge 1 ] 2>/dev/null || die "RUNS must be a number >= 1"
	[ "$BLOB_MIB" -ge 1 ] 2>/dev/null || die "BLOB_MIB must be a number >= 1"
	[ "$IMAGE_MIB" -ge "$IMAGE_LAYERS" ] 2>/dev/null || die "IMAGE_MIB must be >= IMAGE_LAYERS"
	if [ -n "$WHARF_EXTRA_YAML" ] && [ ! -r "$WHARF_EXTRA_YAML" ]; then
		die "WHARF_EXTRA_YAML=$WHARF_EXTRA_YAML is not a readable file"
	fi
	local spec
	for spec in $EXTRA_WHARFS; do
		case "$spec" in wharf-*=*) ;; *) die "EXTRA_WHARFS entries are NAME=FILE with NAME starting 'wharf-': $spec" ;; esac
		[ -r "${spec#*=}" ] || die "EXTRA_WHARFS: ${spec#*=} is not a readable file"
		TARGETS="$TARGETS ${spec%%=*}"
	done
}

build_wharf() {
	if [ "$SKIP_BUILD" = 1 ]; then
		log "SKIP_BUILD=1: using $WHARF_BIN"
	else
		log "building wharf (cargo build --release)"
		(cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed (output above)"
		if event_scenarios; then
			log "building the webhook receiver (cargo build --release --example webhook_receiver)"
			(cd "$ROOT" && cargo build --release --example webhook_receiver) >&2 ||
				die "cargo build --release --example webhook_receiver failed (output above)"
		fi
	fi
	[ -x "$WHARF_BIN" ] || die "no wharf binary at $WHARF_BIN (run without SKIP_BUILD=1, or set WHARF_BIN)"
	if event_scenarios; then
		[ -x "$RECEIVER_BIN" ] || die "no webhook receiver at $RECEIVER_BIN (run without SKIP_BUILD=1, or set RECEIVER_BIN)"
	fi
}

# ---------------------------------------------------------------------------------------------
# work dirs and clean-up

PIDS=()       # every background process started here, in start order
MOUNTED=""    # the tmpfs mounted here, if any
FAST=""       # registry storage, image, pulls: tmpfs
WORK=""       # configs, logs, wharf data: disk

cleanup() {
	local rc=$? pid i
	set +e
	trap - EXIT INT TERM
	[ "$rc" = 0 ] || log "stopped with exit status $rc; cleaning up"
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid=${PIDS[i]}
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	[ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
	if [ -n "$MOUNTED" ]; then
		umount "$MOUNTED" 2>/dev/null || umount -l "$MOUNTED" 2>/dev/null || log "could not unmount $MOUNTED"
		rmdir "$MOUNTED" 2>/dev/null
	elif [ -n "$FAST" ]; then
		rm -rf "$FAST"
	fi
	if [ -n "$WORK" ]; then
		if [ "$KEEP_TMP" = 1 ]; then
			log "work dir kept: $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

setup_dirs() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-bench.XXXXXX")
	: >"$WORK/results.tsv"
	: >"$WORK/facts.tsv"
	: >"$WORK/notes.txt"
	# blob (then deleted) + image source + registry copies of both + one upload in flight + one pull
	local need_mib=$((BLOB_MIB * 2 + IMAGE_MIB * 4 + 512))
	local avail_mib
	avail_mib=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
	[ "$avail_mib" -gt $((need_mib + 1024)) ] ||
		die "need about $need_mib MiB of memory for tmpfs, only $avail_mib MiB available: lower BLOB_MIB"
	if [ "$IS_ROOT" = 1 ]; then
		FAST=$WORK/tmpfs
		mkdir "$FAST"
		mount -t tmpfs -o "size=${need_mib}m,mode=0700" wharf-bench "$FAST"
		MOUNTED=$FAST
		fact fast_storage "tmpfs mounted at $FAST (size ${need_mib}m)"
	else
		FAST=$(mktemp -d /dev/shm/wharf-bench.XXXXXX)
		fact fast_storage "/dev/shm ($FAST)"
	fi
	mkdir -p "$FAST/registry" "$FAST/pulls"
	log "work dir $WORK, fast storage $FAST"
}

# ---------------------------------------------------------------------------------------------
# services

declare -A PORT=() # target -> port
declare -A PID=()  # service -> pid

# wait_http NAME PID URL: until the URL answers 200, or fail with the service's log.
wait_http() {
	local name=$1 pid=$2 url=$3 i
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || {
			tail -20 "$WORK/$name.log" >&2 || true
			die "$name exited during start-up (log above)"
		}
		if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" = 200 ]; then
			return 0
		fi
		sleep 0.1
	done
	tail -20 "$WORK/$name.log" >&2 || true
	die "$name did not answer 200 on $url within 10 s"
}

start_registry() {
	local port
	port=$(free_port)
	cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $FAST/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: wharf-bench-secret
EOF
	docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
	PIDS+=($!)
	PID[registry]=$!
	PORT[direct]=$port
	wait_http registry "${PID[registry]}" "http://127.0.0.1:$port/v2/"
	log "registry on 127.0.0.1:$port (pid ${PID[registry]})"
}

start_nginx() {
	local port dir=$WORK/nginx user_line="" access_log=off
	port=$(free_port)
	mkdir -p "$dir"
	[ "$IS_ROOT" = 1 ] && user_line="user root;" # temp paths live in a root-owned dir
	[ "$ACCESS_LOGS" = 1 ] && access_log="$dir/access.log wharf_json buffer=64k flush=1s"
	sed -e "s|@USER_LINE@|$user_line|" \
		-e "s|@WORKERS@|$NGINX_WORKERS|" \
		-e "s|@DIR@|$dir|g" \
		-e "s|@ACCESS_LOG@|$access_log|" \
		-e "s|@REGISTRY_PORT@|${PORT[direct]}|" \
		-e "s|@PORT@|$port|" \
		"$BENCH/nginx.conf.tmpl" >"$dir/nginx.conf"
	"$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$WORK/nginx.log" 2>&1 ||
		{
			cat "$WORK/nginx.log" >&2
			die "nginx rejected $dir/nginx.conf"
		}
	"$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >>"$WORK/nginx.log" 2>&1 &
	PIDS+=($!)
	PID[nginx]=$!
	PORT[nginx]=$port
	wait_http nginx "${PID[nginx]}" "http://127.0.0.1:$port/v2/"
	log "nginx on 127.0.0.1:$port (master pid ${PID[nginx]})"
}

# start_wharf NAME [EXTRA_YAML_FILE]
# wharf_data_dir NAME: the data_dir of wharf instance NAME.
wharf_data_dir() {
	if [ "$DATA_ON_TMPFS" = 1 ]; then echo "$FAST/$1-data"; else echo "$WORK/$1-data"; fi
}
start_wharf() {
	local name=$1 extra=${2:-} port cfg level=warn data
	port=$(free_port)
	cfg=$WORK/$name.yaml
	[ "$ACCESS_LOGS" = 1 ] && level=info
	data=$(wharf_data_dir "$name")
	mkdir -p "$data"
	cat >"$cfg" <<EOF
listen: "127.0.0.1:$port"
upstream: {registry: "http://127.0.0.1:${PORT[direct]}"}
data_dir: "$data"
admin_password: "bench-admin-password"
log: {level: $level}
EOF
	if [ -n "$extra" ]; then
		printf '\n# from %s\n' "$extra" >>"$cfg"
		cat "$extra" >>"$cfg"
	fi
	# The bench's own WHARF_* knobs are not wharf config overrides (wharf rejects unknown keys).
	env -u WHARF_BIN -u WHARF_REV -u WHARF_EXTRA_YAML "$WHARF_BIN" serve --config "$cfg" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	PID[$name]=$!
	PORT[$name]=$port
	wait_http "$name" "${PID[$name]}" "http://127.0.0.1:$port/v2/"
	log "$name on 127.0.0.1:$port (pid ${PID[$name]}, config $cfg)"
}

start_services() {
	start_registry
	local t spec
	for t in $TARGETS; do
		case "$t" in
		direct) ;;
		nginx) start_nginx ;;
		wharf) start_wharf wharf "$WHARF_EXTRA_YAML" ;;
		wharf-*)
			for spec in $EXTRA_WHARFS; do
				if [ "${spec%%=*}" = "$t" ]; then start_wharf "$t" "${spec#*=}"; fi
			done
			;;
		*) die "unknown target $t" ;;
		esac
	done
}

url() { echo "http://127.0.0.1:${PORT[$1]}$2"; }

# ---------------------------------------------------------------------------------------------
# test data

# A BLOB_MIB random blob uploaded straight to the registry (monolithic PUT), then removed locally.
prepare_blob() {
	local f=$FAST/blob.bin loc code
	log "making a $BLOB_MIB MiB random blob"
	head -c "$((BLOB_MIB << 20))" /dev/urandom >"$f"
	BLOB_DIGEST=sha256:$(sha256sum "$f" | cut -d' ' -f1)
	BLOB_BYTES=$((BLOB_MIB << 20))
	loc=$(curl -sS --max-time 30 -X POST -D - -o /dev/null "$(url direct /v2/bench/blob/blobs/uploads/)" |
		awk 'tolower($1) == "location:" { sub(/\r$/, "", $2); print $2 }')
	[ -n "$loc" ] || die "registry gave no upload Location"
	case "$loc" in /*) loc=$(url direct "$loc") ;; esac
	case "$loc" in *\?*) loc="$loc&digest=$BLOB_DIGEST" ;; *) loc="$loc?digest=$BLOB_DIGEST" ;; esac
	# -T streams the file (a PUT); --data-binary @file would read it into memory first, and curl
	# refuses files of 1 GiB and more that way ("out of memory")
	code=$(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null -w '%{http_code}' \
		-H 'Content-Type: application/octet-stream' -T "$f" "$loc")
	[ "$code" = 201 ] || die "blob upload answered $code, not 201"
	rm -f "$f"
	BLOB_PATH=/v2/bench/blob/blobs/$BLOB_DIGEST
	log "blob $BLOB_DIGEST uploaded"
}

# An IMAGE_MIB OCI image on tmpfs, also pushed once to bench/img:bench (the pull source).
prepare_image() {
	local out
	log "making a $IMAGE_MIB MiB OCI image in $IMAGE_LAYERS layers"
	out=$(python3 "$BENCH/mkimage.py" "$FAST/image" "$IMAGE_TAG" "$IMAGE_MIB" "$IMAGE_LAYERS")
	MANIFEST_DIGEST=${out% *}
	IMAGE_BYTES=${out#* }
	skopeo_copy "$WORK/skopeo-seed.log" "oci:$FAST/image:$IMAGE_TAG" \
		"docker://127.0.0.1:${PORT[direct]}/bench/img:$IMAGE_TAG" ||
		die "seeding the image failed: $(tail -5 "$WORK/skopeo-seed.log")"
	MANIFEST_PATH=/v2/bench/img/manifests/$IMAGE_TAG
	TAGS_PATH=/v2/bench/img/tags/list
	log "image $MANIFEST_DIGEST ($IMAGE_BYTES bytes) in bench/img:$IMAGE_TAG"
}

# Every target serves the same manifest (same digest) and the same blob size: proof that the
# figures compare like with like, and that Host/Location handling works through each proxy.
verify_targets() {
	local t got size
	for t in $TARGETS; do
		got=$(curl -sS --max-time 10 -H "Accept: $OCI_MANIFEST" "$(url "$t" "$MANIFEST_PATH")" | sha256sum | cut -d' ' -f1)
		[ "sha256:$got" = "$MANIFEST_DIGEST" ] || die "$t serves a different manifest (sha256:$got)"
		size=$(curl -sS --max-time 10 -I "$(url "$t" "$BLOB_PATH")" |
			awk 'tolower($1) == "content-length:" { sub(/\r$/, "", $2); print $2 }')
		[ "$size" = "$BLOB_BYTES" ] || die "$t: HEAD of the blob says Content-Length '$size', not $BLOB_BYTES"
	done
	log "all targets serve the same manifest and blob"
}

# ---------------------------------------------------------------------------------------------
# skopeo with an empty blob-info cache every time, so that nothing is skipped or mounted.

# skopeo_copy LOGFILE SRC DEST
skopeo_copy() {
	local logf=$1 src=$2 dst=$3 cache
	cache=$(mktemp -d "$WORK/skopeo-cache.XXXXXX")
	local args=(--insecure-policy copy --retry-times 0 --src-tls-verify=false --dest-tls-verify=false
		--preserve-digests --dest-oci-accept-uncompressed-layers "$src" "$dst")
	local rc=0
	if [ "$IS_ROOT" = 1 ]; then
		# root keeps its cache in /var/lib/containers/cache: hide it behind an empty dir
		# shellcheck disable=SC2016 # $0 and $@ are for the inner sh
		timeout "$SKOPEO_TIMEOUT" unshare --mount sh -c \
			'mkdir -p /var/lib/containers/cache && mount --bind "$0" /var/lib/containers/cache && exec skopeo "$@"' \
			"$cache" "${args[@]}" >"$logf" 2>&1 || rc=$?
	else
		XDG_DATA_HOME=$cache timeout "$SKOPEO_TIMEOUT" skopeo "${args[@]}" >"$logf" 2>&1 || rc=$?
	fi
	rm -rf "$cache"
	if grep -qiE 'skipped|already exists|retrying' "$logf"; then
		note "skopeo $src -> $dst: $(grep -iE 'skipped|already exists|retrying' "$logf" | head -3 | tr '\n' ' ')"
	fi
	return "$rc"
}

# ---------------------------------------------------------------------------------------------
# scenarios: each runs RUNS times over all targets, the target order rotating from run to run

# for_each_run_target FUNC: FUNC TARGET RUN for every run and target.
for_each_run_target() {
	local fn=$1 run i n t
	local -a ts
	read -r -a ts <<<"$TARGETS"
	n=${#ts[@]}
	for ((run = 1; run <= RUNS; run++)); do
		for ((i = 0; i < n; i++)); do
			t=${ts[$(((i + run - 1) % n))]}
			"$fn" "$t" "$run"
		done
	done
}

measure_blob_get() {
	local t=$1 run=$2 out code size speed c0 r0
	c0=$(cpu_ms "$t")
	r0=$(cpu_ms registry)
	out=$(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' \
		"$(url "$t" "$BLOB_PATH")") || die "blob GET through $t failed"
	read -r code size speed <<<"$out"
	[ "$code" = 200 ] || die "blob GET through $t answered $code"
	[ "$size" = "$BLOB_BYTES" ] || die "blob GET through $t returned $size bytes, not $BLOB_BYTES"
	record blob blob_get "$t" "$run" "$(calc "$speed / 1048576")"
	record_cpu blob blob_cpu "$t" "$run" "$c0" "$(calc "$BLOB_BYTES / 1073741824")"
	record_cpu blob blob_registry_cpu "$t" "$run" "$r0" "$(calc "$BLOB_BYTES / 1073741824")" registry
}
scenario_blob() {
	log "scenario blob: GET $BLOB_MIB MiB with curl"
	for_each_run_target measure_blob_get
}

measure_push() {
	local t=$1 run=$2 t0 t1 repo=bench/push-$1-r$2 c0 r0 k0
	c0=$(cpu_ms "$t")
	r0=$(cpu_ms registry)
	k0=$(children_ms)
	t0=$(now)
	skopeo_copy "$WORK/skopeo-push-$t-$run.log" "oci:$FAST/image:$IMAGE_TAG" \
		"docker://127.0.0.1:${PORT[$t]}/$repo:$IMAGE_TAG" ||
		die "skopeo push through $t failed: $(tail -5 "$WORK/skopeo-push-$t-$run.log")"
	t1=$(now)
	record skopeo push "$t" "$run" "$(calc "$IMAGE_BYTES / 1048576 / ($t1 - $t0)")"
	record_cpu skopeo push_cpu "$t" "$run" "$c0" "$(calc "$IMAGE_BYTES / 1073741824")"
	record_cpu skopeo push_registry_cpu "$t" "$run" "$r0" "$(calc "$IMAGE_BYTES / 1073741824")" registry
	record_cpu skopeo push_client_cpu "$t" "$run" "$k0" "$(calc "$IMAGE_BYTES / 1073741824")" children
}
measure_pull() {
	local t=$1 run=$2 t0 t1 dir=$FAST/pulls/$1-r$2 got c0 r0 k0
	c0=$(cpu_ms "$t")
	r0=$(cpu_ms registry)
	k0=$(children_ms)
	t0=$(now)
	skopeo_copy "$WORK/skopeo-pull-$t-$run.log" "docker://127.0.0.1:${PORT[$t]}/bench/img:$IMAGE_TAG" \
		"oci:$dir:$IMAGE_TAG" ||
		die "skopeo pull through $t failed: $(tail -5 "$WORK/skopeo-pull-$t-$run.log")"
	t1=$(now)
	got=$(find "$dir/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
	[ "$got" = "$IMAGE_BYTES" ] || note "pull through $t run $run wrote $got blob bytes, expected $IMAGE_BYTES"
	rm -rf "$dir"
	record skopeo pull "$t" "$run" "$(calc "$IMAGE_BYTES / 1048576 / ($t1 - $t0)")"
	record_cpu skopeo pull_cpu "$t" "$run" "$c0" "$(calc "$IMAGE_BYTES / 1073741824")"
	record_cpu skopeo pull_registry_cpu "$t" "$run" "$r0" "$(calc "$IMAGE_BYTES / 1073741824")" registry
	record_cpu skopeo pull_client_cpu "$t" "$run" "$k0" "$(calc "$IMAGE_BYTES / 1073741824")" children
}
scenario_skopeo() {
	log "scenario skopeo: push and pull a $IMAGE_MIB MiB image (fresh repository / fresh oci dir each time)"
	for_each_run_target measure_push
	for_each_run_target measure_pull
}

# wrk_run OUTFILE TARGET DURATION
# wrk_run OUT TARGET DURATION [PATH [LUA]]: wrk with the bench's connections and threads, a GET of
# PATH (default the manifest) or what the LUA script asks for.
wrk_run() {
	local path=${4:-$MANIFEST_PATH} script=()
	[ -n "${5:-}" ] && script=(-s "$5")
	wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$3" --latency -H "Accept: $OCI_MANIFEST" "${script[@]}" \
		"$(url "$2" "$path")" >"$1" 2>&1 || die "wrk against $2 failed: $(tail -5 "$1")"
}
measure_manifest() { measure_small manifest "$1" "$2" "$MANIFEST_PATH" ""; }
measure_head() { measure_small head "$1" "$2" "$MANIFEST_PATH" ab-head; }
measure_tags() { measure_small tags "$1" "$2" "$TAGS_PATH" ""; }

# ab_head OUT TARGET DURATION PATH: HEAD requests with ApacheBench (wrk cannot: its parser waits
# for the body a HEAD response announces), keep-alive, as many connections as wrk uses.
ab_head() {
	ab -q -k -i -c "$WRK_CONNECTIONS" -t "${3%s}" -n 10000000 -H "Accept: $OCI_MANIFEST" \
		"$(url "$2" "$4")" >"$1" 2>&1 || die "ab against $2 failed: $(tail -5 "$1")"
}

# measure_small NAME TARGET RUN PATH LUA: a small request (manifest GET, HEAD, tag list) as fast as
# the load tool goes (wrk; `LUA=ab-head`: ab's HEAD): NAME_rps, NAME_p99, and CPU per request of
# the proxy, the registry and the load tool.
measure_small() {
	local name=$1 t=$2 run=$3 path=$4 lua=$5 rps p99 bad c0 n r0 k0 out
	out=$WORK/wrk-$name-$t-$run.txt
	[ "$name" = manifest ] && out=$WORK/wrk-$t-$run.txt
	c0=$(cpu_ms "$t")
	r0=$(cpu_ms registry)
	k0=$(children_ms)
	if [ "$lua" = ab-head ]; then
		out=$WORK/ab-$name-$t-$run.txt
		ab_head "$out" "$t" "$WRK_DURATION" "$path"
		n=$(awk '/^Complete requests:/ { print $3 }' "$out")
		rps=$(awk '/^Requests per second:/ { print $4 }' "$out")
		p99=$(awk '$1 == "99%" { printf "%.3f", $2 }' "$out")
		bad=$(awk '/^Failed requests:/ { n += $3 } /^Non-2xx responses:/ { n += $3 } END { print n + 0 }' "$out")
	else
		wrk_run "$out" "$t" "$WRK_DURATION" "$path" "$lua"
		n=$(awk '/ requests in / { print $1 }' "$out")
		rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
		# "99%  28.90ms" -> milliseconds
		p99=$(awk '$1 == "99%" {
			v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
			m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1
			printf "%.3f", v * m }' "$out")
		bad=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
	fi
	if [ -z "$rps" ] || [ -z "$p99" ] || [ -z "$n" ]; then die "cannot read the load tool's output $out"; fi
	record_cpu "$name" "${name}_client_cpu" "$t" "$run" "$k0" "$(calc "$n / 1000")" children
	record_cpu "$name" "${name}_registry_cpu" "$t" "$run" "$r0" "$(calc "$n / 1000")" registry
	[ "$bad" = 0 ] || note "$name through $t run $run: $bad non-2xx responses or socket errors ($(grep -E 'Non-2xx|Socket errors' "$out" | tr '\n' ' '))"
	record "$name" "${name}_rps" "$t" "$run" "$rps"
	record "$name" "${name}_p99" "$t" "$run" "$p99"
	# ms per request * 1000 = microseconds per request
	record_cpu "$name" "${name}_cpu" "$t" "$run" "$c0" "$(calc "${n:-1} / 1000")"
}
scenario_head() {
	log "scenario head: HEAD of the manifest, ab -k -i -c$WRK_CONNECTIONS -t${WRK_DURATION%s} on $MANIFEST_PATH"
	for_each_run_target measure_head
}
scenario_tags() {
	log "scenario tags: tag list, wrk -c$WRK_CONNECTIONS -t$WRK_THREADS -d$WRK_DURATION on $TAGS_PATH"
	for_each_run_target measure_tags
}
scenario_manifest() {
	log "scenario manifest: wrk -c$WRK_CONNECTIONS -t$WRK_THREADS -d$WRK_DURATION on $MANIFEST_PATH"
	local t
	if [ "$WRK_WARMUP" != 0 ]; then
		for t in $TARGETS; do wrk_run "$WORK/wrk-warmup-$t.txt" "$t" "$WRK_WARMUP"; done
	fi
	for_each_run_target measure_manifest
}

# ---------------------------------------------------------------------------------------------
# events and delivery: wharf instances of their own, webhook receivers, targets that are down

EVENT_SCENARIOS="push_latency deliveries delivery_latency manifest_events target_down store soak"
event_scenarios() { # is any event scenario selected?
	local s
	for s in $SCENARIOS; do
		case " $EVENT_SCENARIOS " in *" $s "*) return 0 ;; esac
	done
	return 1
}

declare -A POLICY=() # "instance/policy name" -> policy id
EVENT_INSTANCES=""   # every wharf instance an event scenario started (for RSS and log checks)

# stop_service NAME: SIGTERM, wait for the exit (bash reaps it, so its CPU time joins the
# script's own), forget it.
stop_service() {
	local name=$1 pid=${PID[$1]:-} i p keep=()
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "PID[$name]"
	for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# wait_line NAME PID FILE: until FILE has a line starting with "listening on".
wait_listening() {
	local name=$1 pid=$2 f=$3 i
	for i in $(seq 200); do
		grep -q '^listening on' "$f" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || die "$name exited during start-up: $(tail -3 "$f")"
		sleep 0.05
	done
	die "$name did not say 'listening on' within 10 s"
}

# start_receiver NAME PORT [ARGS...]: examples/webhook_receiver (fresh statistics) on
# 127.0.0.1:PORT, ARGS passed on (--delay-ms N).
start_receiver() {
	local name=$1 port=$2
	shift 2
	: >"$WORK/$name.log"
	"$RECEIVER_BIN" --listen "127.0.0.1:$port" "$@" >>"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	PID[$name]=$!
	RPORT[$name]=$port
	wait_listening "$name" "${PID[$name]}" "$WORK/$name.log"
}
declare -A RPORT=() # receiver -> port

# start_blackhole NAME PORT: accepts connections, never answers (bench/blackhole.py).
start_blackhole() {
	local name=$1 port=$2
	: >"$WORK/$name.log"
	python3 -u "$BENCH/blackhole.py" "$port" >>"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	PID[$name]=$!
	wait_listening "$name" "${PID[$name]}" "$WORK/$name.log"
}

# receiver_stat NAME FIELD: a number from the receiver's /stats (count, per_second, p50, p99,
# max; the last three are its event-to-delivery latencies in ms). Parsed without python: it is
# polled while the deliveries are being timed, and every CPU-millisecond counts on 2 cores.
receiver_stat() {
	curl -sS --max-time 10 "http://127.0.0.1:${RPORT[$1]}/stats" | grep -o "\"$2\":[-0-9.e+]*" | head -1 | cut -d: -f2
}

# metric TARGET NAME{labels}: a value from wharf's /metrics (0 when absent).
metric() {
	curl -sS --max-time 10 "$(url "$1" /metrics)" | awk -v k="$2" '$1 == k { v = $2; f = 1 } END { print f ? v : 0 }'
}
# commit_begin TARGET / commit_mean_ms TARGET: the mean time a request waited for its event's
# commit between the two calls (wharf_event_commit_duration_seconds), in ms.
commit_begin() {
	COMMIT_SUM0=$(metric "$1" wharf_event_commit_duration_seconds_sum)
	COMMIT_N0=$(metric "$1" wharf_event_commit_duration_seconds_count)
}
commit_mean_ms() {
	local s1 n1
	s1=$(metric "$1" wharf_event_commit_duration_seconds_sum)
	n1=$(metric "$1" wharf_event_commit_duration_seconds_count)
	calc "($s1 - $COMMIT_SUM0) * 1000 / (($n1 - $COMMIT_N0) > 0 ? ($n1 - $COMMIT_N0) : 1)"
}
deliveries_open() { # TARGET -> pending + running deliveries
	echo $(($(metric "$1" 'wharf_deliveries{state="pending"}') + $(metric "$1" 'wharf_deliveries{state="running"}')))
}
# wait_drained TARGET TIMEOUT_S: until no delivery is pending or running; prints the seconds it
# took (or dies).
wait_drained() {
	local t=$1 limit=$2 t0 open
	t0=$(now)
	while :; do
		open=$(deliveries_open "$t")
		[ "$open" = 0 ] && break
		if awk -v a="$(now)" -v b="$t0" -v l="$limit" 'BEGIN { exit !(a - b > l) }'; then
			die "$t: $open deliveries still open after ${limit}s"
		fi
		sleep 0.1
	done
	calc "$(now) - $t0"
}

# start_event_wharf NAME YAML_TEXT: a wharf with this extra config (data dir kept across restarts).
start_event_wharf() {
	local name=$1 yaml=$2
	printf '%s\n' "$yaml" >"$WORK/$name.extra.yaml"
	start_wharf "$name" "$WORK/$name.extra.yaml"
	case " $EVENT_INSTANCES " in *" $name "*) ;; *) EVENT_INSTANCES="$EVENT_INSTANCES $name" ;; esac
}
# stop_event_wharf NAME: note its peak RSS, stop it.
stop_event_wharf() {
	[ -n "${PID[$1]:-}" ] || return 0
	record rss rss "$1" 0 "$(vm_hwm_mib "${PID[$1]}")"
	stop_service "$1"
}

# ensure_policy INSTANCE NAME EVENT_TYPES_JSON ADDRESS: create the policy once (project bench).
ensure_policy() {
	local t=$1 name=$2 types=$3 address=$4 out code
	[ -n "${POLICY[$t/$name]:-}" ] && return 0
	out=$(curl -sS --max-time 10 -u admin:bench-admin-password -H 'Content-Type: application/json' -w '\n%{http_code}' \
		"$(url "$t" /api/v2.0/projects/bench/webhook/policies)" \
		-d "{\"name\":\"$name\",\"event_types\":$types,\"targets\":[{\"type\":\"http\",\"address\":\"$address\"}]}")
	code=$(tail -1 <<<"$out")
	[ "$code" = 201 ] || die "creating policy $name on $t answered $code: $(head -1 <<<"$out")"
	POLICY[$t/$name]=$(head -1 <<<"$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
	log "$t: policy $name (${POLICY[$t/$name]}) $types -> $address"
}

# A small image (one 1 MiB layer) whose blobs are uploaded once to every repository that gets
# manifest PUTs; the PUTs then send only its manifest, under a new tag each time.
prepare_small_image() {
	local out
	out=$(python3 "$BENCH/mkimage.py" "$FAST/small" small 1 1)
	SMALL_MANIFEST=$FAST/small/blobs/sha256/${out#sha256:}
	SMALL_MANIFEST=${SMALL_MANIFEST% *}
	[ -s "$SMALL_MANIFEST" ] || die "no small manifest at $SMALL_MANIFEST"
	log "small image ${out% *} ($(wc -c <"$SMALL_MANIFEST") byte manifest) for the PUT scenarios"
}
declare -A SEEDED=()
seed_repo() { # REPO: upload the small image's blobs (and manifest, as :seed) straight to the registry
	[ -n "${SEEDED[$1]:-}" ] && return 0
	skopeo_copy "$WORK/skopeo-seed-${1//\//_}.log" "oci:$FAST/small:small" \
		"docker://127.0.0.1:${PORT[direct]}/$1:seed" || die "seeding $1 failed: $(tail -5 "$WORK/skopeo-seed-${1//\//_}.log")"
	SEEDED[$1]=1
}

# wrk_ev OUTFILE URL THREADS CONNECTIONS DURATION [VAR=VALUE ...]: wrk with bench/wrk-events.lua.
wrk_ev() {
	local out=$1 u=$2 th=$3 c=$4 d=$5
	shift 5
	env BENCH_CONTENT_TYPE="$OCI_MANIFEST" "$@" \
		wrk -t"$th" -c"$c" -d"$d" --latency -s "$BENCH/wrk-events.lua" "$u" >"$out" 2>&1 ||
		die "wrk $u failed: $(tail -5 "$out")"
}
# wrk_put OUTFILE TARGET REPO TAG_PREFIX THREADS CONNECTIONS DURATION [VAR=VALUE ...]
wrk_put() {
	local out=$1 t=$2 repo=$3 prefix=$4 th=$5 c=$6 d=$7
	shift 7
	wrk_ev "$out" "$(url "$t" /v2/)" "$th" "$c" "$d" BENCH_MODE=put BENCH_BODY_FILE="$SMALL_MANIFEST" \
		BENCH_REPO="$repo" BENCH_TAG_PREFIX="$prefix" "$@"
}
# wrk_pct FILE PCT: a latency percentile of wrk --latency output (50, 75, 90, 99), in ms.
wrk_pct() {
	awk -v p="$2%" '$1 == p {
		v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
		m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1
		printf "%.3f", v * m }' "$1"
}
wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
wrk_n() { awk '/ requests in / { print $1 }' "$1"; }
# wrk_status FILE CODE: responses with that status (bench-status lines of wrk-events.lua).
wrk_status() { awk -v c="$2" '$1 == "bench-status" && $2 == c { n += $3 } END { print n + 0 }' "$1"; }
# wrk_check FILE WHAT OK_STATUS: note non-OK responses and socket errors.
wrk_check() {
	local bad
	bad=$(awk -v ok="$3" '$1 == "bench-status" && $2 != ok { n += $3 }
		/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$1")
	[ "$bad" = 0 ] || note "$2: $bad responses other than $3, or socket errors ($(grep -E 'bench-status|Socket errors' "$1" | tr '\n' ' '))"
}

# for_each_run_in "T1 T2 …" FUNC [ARGS]: FUNC TARGET RUN ARGS for every run and target, the
# target order rotating from run to run.
for_each_run_in() {
	local list=$1 fn=$2 run i n t
	shift 2
	local -a ts
	read -r -a ts <<<"$list"
	n=${#ts[@]}
	for ((run = 1; run <= RUNS; run++)); do
		for ((i = 0; i < n; i++)); do
			t=${ts[$(((i + run - 1) % n))]}
			"$fn" "$t" "$run" "$@"
		done
	done
}

HOOK_YAML='notification: {allowed_target_networks: ["127.0.0.0/8"]}'

# --- push_latency: manifest PUT latency, events on vs events off vs direct --------------------

measure_put_latency() {
	local t=$1 run=$2 c=$3 out=$WORK/wrk-put-$1-c$3-r$2.txt th ok n
	th=$((c < WRK_THREADS ? c : WRK_THREADS))
	wrk_put "$out" "$t" "bench/pl-$t" "r$run-c$c" "$th" "$c" "$WRK_DURATION"
	ok=$(wrk_status "$out" 201)
	n=$(wrk_n "$out")
	wrk_check "$out" "manifest PUT through $t (-c$c, run $run)" 201
	[ "$ok" -gt 0 ] || die "no manifest PUT through $t answered 201: $(tail -5 "$out")"
	record push_latency "put_p50_c$c" "$t" "$run" "$(wrk_pct "$out" 50)"
	record push_latency "put_p99_c$c" "$t" "$run" "$(wrk_pct "$out" 99)"
	record push_latency "put_rps_c$c" "$t" "$run" "$(wrk_rps "$out")"
	log "  ($ok of $n PUTs answered 201)"
}
scenario_push_latency() {
	local targets="direct wharf wharf-noevents" t c
	log "scenario push_latency: manifest PUT, a new tag per request, wrk -c$PUSH_CONNECTIONS -d$WRK_DURATION; $targets"
	start_event_wharf wharf-noevents "$(cat "$BENCH/wharf-events-off.yaml")"
	[ -n "${PID[wharf]:-}" ] || start_wharf wharf "$WHARF_EXTRA_YAML"
	for t in $targets; do seed_repo "bench/pl-$t"; done
	if [ "$WRK_WARMUP" != 0 ]; then
		for t in $targets; do wrk_put "$WORK/wrk-put-warmup-$t.txt" "$t" "bench/pl-$t" warmup 1 1 "$WRK_WARMUP"; done
	fi
	for c in $PUSH_CONNECTIONS; do
		for_each_run_in "$targets" measure_put_latency "$c"
	done
	stop_event_wharf wharf-noevents
}

# --- deliveries: how fast the dispatcher drains the outbox to a fast receiver -----------------

measure_deliveries() {
	local t=wharf-deliv run=$2 out=$WORK/wrk-deliv-gen-r$2.txt wpid dead0 dead n e0 e1 t0 t1 ta c0 c1 r0 r1 got tf redelivered cf0 secs
	dead0=$(metric "$t" 'wharf_deliveries{state="dead"}')
	e0=$(metric "$t" 'wharf_events_total{type="PULL_ARTIFACT"}')
	cf0=$(cpu_ms "$t")
	# 1. N pull events, as fast as wharf takes them; each delivery's one attempt fails (closed port)
	tf=$(now)
	env BENCH_CONTENT_TYPE="$OCI_MANIFEST" BENCH_MODE=get BENCH_STOP_AFTER=$((DELIVERIES_N / WRK_THREADS)) \
		wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d600s --latency -s "$BENCH/wrk-events.lua" \
		"$(url "$t" "$MANIFEST_PATH")" >"$out" 2>&1 &
	wpid=$!
	local last=-1 same=0
	while kill -0 "$wpid" 2>/dev/null; do
		e1=$(metric "$t" 'wharf_events_total{type="PULL_ARTIFACT"}')
		[ $((e1 - e0)) -ge "$DELIVERIES_N" ] && break
		# every wrk thread has stopped (and a few pulls were cut short): no more events come
		if [ "$e1" = "$last" ]; then same=$((same + 1)); else same=0; fi
		[ "$same" -ge 5 ] && [ $((e1 - e0)) -gt 0 ] && break
		last=$e1
		sleep 0.2
	done
	kill -INT "$wpid" 2>/dev/null || true
	wait "$wpid" || true
	wrk_check "$out" "deliveries: manifest GETs through $t (run $run)" 200
	secs=$(wait_drained "$t" 600)
	dead=$(metric "$t" 'wharf_deliveries{state="dead"}')
	n=$((dead - dead0))
	[ "$n" -gt 0 ] || die "deliveries: no dead deliveries on $t after the GETs"
	record deliveries deliv_n "$t" "$run" "$n"
	record deliveries deliv_fail_rate "$t" "$run" "$(calc "$n / ($(now) - $tf)")"
	record deliveries deliv_fail_cpu "$t" "$run" "$(calc "($(cpu_ms "$t") - $cf0) * 1000 / $n")"
	log "  $n deliveries dead (target closed); all attempted ${secs}s after the last GET"
	# 2. the receiver comes up on that port; redeliver them all; time until it has them all
	start_receiver recv-deliv "$DELIV_PORT"
	sleep 0.5
	c0=$(cpu_ms "$t")
	r0=$(cpu_ms recv-deliv)
	t0=$(now)
	redelivered=$(curl -sS --max-time 600 -u admin:bench-admin-password -X POST \
		"$(url "$t" "/api/v2.0/projects/bench/webhook/policies/${POLICY[$t/drain]}/redeliver")" |
		grep -o '"redelivered":[0-9]*' | cut -d: -f2) || die "deliveries: redeliver call failed"
	[ -n "$redelivered" ] || die "deliveries: the redeliver call did not say how many"
	ta=$(now)
	while :; do
		got=$(receiver_stat recv-deliv count)
		[ "${got:-0}" -ge "$redelivered" ] && break
		if awk -v a="$(now)" -v b="$t0" 'BEGIN { exit !(a - b > 600) }'; then
			die "deliveries: the receiver got $got of $redelivered in 600 s"
		fi
		sleep 0.1
	done
	t1=$(now)
	c1=$(cpu_ms "$t")
	r1=$(cpu_ms recv-deliv)
	[ "$redelivered" = "$n" ] || note "deliveries run $run: $n dead deliveries but $redelivered redelivered"
	record deliveries deliv_rate "$t" "$run" "$(calc "$redelivered / ($t1 - $t0)")"
	record deliveries deliv_rate_recv "$t" "$run" "$(receiver_stat recv-deliv per_second)"
	record deliveries deliv_redeliver_ms "$t" "$run" "$(calc "($ta - $t0) * 1000")"
	record deliveries deliv_cpu_pct "$t" "$run" "$(calc "($c1 - $c0) / ($t1 - $t0) / 10")"
	record deliveries deliv_cpu_us "$t" "$run" "$(calc "($c1 - $c0) * 1000 / $redelivered")"
	record deliveries deliv_recv_cpu_pct "$t" "$run" "$(calc "($r1 - $r0) / ($t1 - $t0) / 10")"
	wait_drained "$t" 120 >/dev/null
	got=$(receiver_stat recv-deliv count)
	[ "$got" = "$redelivered" ] || note "deliveries run $run: the receiver got $got deliveries for $redelivered redelivered"
	stop_service recv-deliv
}
# one_instance_scenario INSTANCE YAML POLICY EVENT_TYPES_JSON PORT RUNS MEASURE: start the
# instance, its policy (to 127.0.0.1:PORT), MEASURE INSTANCE RUN for each run, stop it.
one_instance_scenario() {
	local run
	start_event_wharf "$1" "$2"
	ensure_policy "$1" "$3" "$4" "http://127.0.0.1:$5/"
	for ((run = 1; run <= $6; run++)); do "$7" "$1" "$run"; done
	stop_event_wharf "$1"
}
scenario_deliveries() {
	log "scenario deliveries: $DELIVERIES_N pull events to a closed port (dead), then the receiver on that port and one redeliver"
	DELIV_PORT=$(free_port)
	one_instance_scenario wharf-deliv 'notification: {webhook_job_max_retry: 0, breaker_failures: 100000000, allowed_target_networks: ["127.0.0.0/8"]}' \
		drain '["PUSH_ARTIFACT","PULL_ARTIFACT"]' "$DELIV_PORT" "$RUNS" measure_deliveries
}

# --- delivery_latency: event-to-delivery latency at a moderate rate, receiver up --------------

start_hook() { # wharf-hook, its two receivers and policies (pushes and pulls go to separate receivers)
	[ -n "${HOOK_PUSH_PORT:-}" ] || HOOK_PUSH_PORT=$(free_port)
	[ -n "${HOOK_PULL_PORT:-}" ] || HOOK_PULL_PORT=$(free_port)
	[ -n "${PID[recv-push]:-}" ] || start_receiver recv-push "$HOOK_PUSH_PORT"
	[ -n "${PID[recv-pull]:-}" ] || start_receiver recv-pull "$HOOK_PULL_PORT"
	[ -n "${PID[wharf-hook]:-}" ] || start_event_wharf wharf-hook "$HOOK_YAML"
	ensure_policy wharf-hook pushes '["PUSH_ARTIFACT"]' "http://127.0.0.1:$HOOK_PUSH_PORT/"
	ensure_policy wharf-hook pulls '["PULL_ARTIFACT"]' "http://127.0.0.1:$HOOK_PULL_PORT/"
}
stop_hook() {
	stop_event_wharf wharf-hook
	stop_service recv-push
	stop_service recv-pull
}

measure_delivery_latency() {
	local t=wharf-hook run=$2 po=$WORK/wrk-dl-push-r$2.txt pu=$WORK/wrk-dl-pull-r$2.txt p1 p2 c0 t0 t1 secs pushes pulls got d
	# fresh receivers: their statistics cover this run only
	stop_service recv-push
	stop_service recv-pull
	start_receiver recv-push "$HOOK_PUSH_PORT"
	start_receiver recv-pull "$HOOK_PULL_PORT"
	c0=$(cpu_ms "$t")
	t0=$(now)
	wrk_put "$po" "$t" bench/pl-wharf-hook "dl-r$run" 1 1 "$DL_DURATION" BENCH_RATE="$DL_PUSH_RATE" &
	p1=$!
	wrk_ev "$pu" "$(url "$t" "$MANIFEST_PATH")" 2 2 "$DL_DURATION" BENCH_MODE=get BENCH_RATE="$(calc "$DL_PULL_RATE / 2")" &
	p2=$!
	wait "$p1" || die "delivery_latency: push wrk failed: $(tail -3 "$po")"
	wait "$p2" || die "delivery_latency: pull wrk failed: $(tail -3 "$pu")"
	t1=$(now)
	secs=$(wait_drained "$t" 120)
	wrk_check "$po" "delivery_latency: PUTs (run $run)" 201
	wrk_check "$pu" "delivery_latency: GETs (run $run)" 200
	pushes=$(wrk_status "$po" 201)
	pulls=$(wrk_status "$pu" 200)
	d=$(awk -v d="$DL_DURATION" 'BEGIN { sub(/s$/, "", d); print d }')
	record delivery_latency dl_push_rate "$t" "$run" "$(calc "$pushes / $d")"
	record delivery_latency dl_pull_rate "$t" "$run" "$(calc "$pulls / $d")"
	# (up to one more per connection is fine: a request wharf had completed, so an event, but whose
	# response wrk had not read yet when its time was up)
	got=$(receiver_stat recv-push count)
	if [ "$got" -lt "$pushes" ] || [ "$got" -gt $((pushes + 1)) ]; then
		note "delivery_latency run $run: $pushes pushes answered 201, the receiver got $got push deliveries"
	fi
	got=$(receiver_stat recv-pull count)
	if [ "$got" -lt "$pulls" ] || [ "$got" -gt $((pulls + 2)) ]; then
		note "delivery_latency run $run: $pulls pulls answered 200, the receiver got $got pull deliveries"
	fi
	record delivery_latency dl_push_p50 "$t" "$run" "$(receiver_stat recv-push p50)"
	record delivery_latency dl_push_p99 "$t" "$run" "$(receiver_stat recv-push p99)"
	record delivery_latency dl_push_max "$t" "$run" "$(receiver_stat recv-push max)"
	record delivery_latency dl_pull_p50 "$t" "$run" "$(receiver_stat recv-pull p50)"
	record delivery_latency dl_pull_p99 "$t" "$run" "$(receiver_stat recv-pull p99)"
	record delivery_latency dl_pull_max "$t" "$run" "$(receiver_stat recv-pull max)"
	record delivery_latency dl_put_p50 "$t" "$run" "$(wrk_pct "$po" 50)"
	record delivery_latency dl_get_p50 "$t" "$run" "$(wrk_pct "$pu" 50)"
	record delivery_latency dl_cpu_pct "$t" "$run" "$(calc "($(cpu_ms "$t") - $c0) / ($t1 - $t0) / 10")"
	log "  outbox drained ${secs}s after the load ended"
}
scenario_delivery_latency() {
	log "scenario delivery_latency: $DL_PUSH_RATE pushes/s and $DL_PULL_RATE pulls/s for $DL_DURATION through wharf-hook, receivers up"
	start_hook
	seed_repo bench/pl-wharf-hook
	local run
	for ((run = 1; run <= RUNS; run++)); do measure_delivery_latency wharf-hook "$run"; done
	stop_hook
}

# --- manifest_events: manifest GET throughput with pull events delivered to a receiver --------

measure_manifest_events() {
	local t=$1 run=$2 out=$WORK/wrk-mev-$1-$2.txt c0 r0 k0 q0 n backlog secs=0 per
	c0=$(cpu_ms "$t")
	r0=$(cpu_ms registry)
	k0=$(children_ms)
	[ "$t" = wharf-hook ] && q0=$(cpu_ms recv-pull)
	wrk_run "$out" "$t" "$WRK_DURATION"
	n=$(wrk_n "$out")
	per=$(calc "$n / 1000")
	if [ "$t" = wharf-hook ]; then
		backlog=$(deliveries_open "$t")
		secs=$(wait_drained "$t" 300)
		record manifest_events mev_backlog "$t" "$run" "$backlog"
		record manifest_events mev_drain_s "$t" "$run" "$secs"
		record_cpu manifest_events mev_recv_cpu "$t" "$run" "$q0" "$per" recv-pull
	fi
	wrk_check "$out" "manifest_events: GETs through $t (run $run)" 200
	record manifest_events mev_rps "$t" "$run" "$(wrk_rps "$out")"
	record manifest_events mev_p99 "$t" "$run" "$(wrk_pct "$out" 99)"
	# CPU per GET; for wharf-hook including the deliveries still sent after wrk ended
	record_cpu manifest_events mev_cpu "$t" "$run" "$c0" "$per"
	record_cpu manifest_events mev_registry_cpu "$t" "$run" "$r0" "$per" registry
	record_cpu manifest_events mev_client_cpu "$t" "$run" "$k0" "$per" children
}
scenario_manifest_events() {
	local targets="direct wharf wharf-hook" t
	log "scenario manifest_events: wrk -c$WRK_CONNECTIONS -t$WRK_THREADS -d$WRK_DURATION on $MANIFEST_PATH; $targets (wharf-hook delivers every pull to a receiver)"
	start_hook
	[ -n "${PID[wharf]:-}" ] || start_wharf wharf "$WHARF_EXTRA_YAML"
	if [ "$WRK_WARMUP" != 0 ]; then
		for t in $targets; do wrk_run "$WORK/wrk-mev-warmup-$t.txt" "$t" "$WRK_WARMUP"; done
		wait_drained wharf-hook 300 >/dev/null
	fi
	for_each_run_in "$targets" measure_manifest_events
	stop_hook
}

# --- target_down: registry latency through wharf while its webhook target is up/down/blackholed

measure_target_down() {
	local t=$1 run=$2 go=$WORK/wrk-td-get-$1-r$2.txt po=$WORK/wrk-td-put-$1-r$2.txt c0 n port
	case "$t" in
	wharf-up) port=$TD_UP_PORT ;;
	wharf-down) port=$TD_DOWN_PORT ;;
	wharf-blackhole) port=$TD_BH_PORT ;;
	esac
	# default notification settings (3 s timeout, 3 retries, breaker on); loopback allowed
	start_event_wharf "$t" "$HOOK_YAML"
	ensure_policy "$t" td '["PUSH_ARTIFACT","PULL_ARTIFACT"]' "http://127.0.0.1:$port/"
	record target_down td_backlog_start "$t" "$run" "$(deliveries_open "$t")"
	[ "$WRK_WARMUP" != 0 ] && wrk_run "$WORK/wrk-td-warmup-$t-r$run.txt" "$t" "$WRK_WARMUP"
	c0=$(cpu_ms "$t")
	wrk_ev "$go" "$(url "$t" "$MANIFEST_PATH")" 2 "$TD_CONNECTIONS" "$WRK_DURATION" BENCH_MODE=get
	wrk_put "$po" "$t" bench/pl-wharf-td "td-$t-r$run" 2 "$TD_CONNECTIONS" "$WRK_DURATION"
	n=$(($(wrk_n "$go") + $(wrk_n "$po")))
	wrk_check "$go" "target_down: GETs through $t (run $run)" 200
	wrk_check "$po" "target_down: PUTs through $t (run $run)" 201
	record target_down td_get_p50 "$t" "$run" "$(wrk_pct "$go" 50)"
	record target_down td_get_p99 "$t" "$run" "$(wrk_pct "$go" 99)"
	record target_down td_get_rps "$t" "$run" "$(wrk_rps "$go")"
	record target_down td_put_p50 "$t" "$run" "$(wrk_pct "$po" 50)"
	record target_down td_put_p99 "$t" "$run" "$(wrk_pct "$po" 99)"
	record target_down td_put_rps "$t" "$run" "$(wrk_rps "$po")"
	record_cpu target_down td_cpu "$t" "$run" "$c0" "$(calc "$n / 1000")"
	record target_down td_backlog_end "$t" "$run" "$(deliveries_open "$t")"
	stop_event_wharf "$t"
}
scenario_target_down() {
	local targets="wharf-up wharf-down wharf-blackhole"
	log "scenario target_down: manifest GET and PUT (wrk -c$TD_CONNECTIONS -d$WRK_DURATION each) through wharf whose webhook target is up / down (closed port) / blackholed"
	TD_UP_PORT=$(free_port)
	TD_DOWN_PORT=$(free_port)
	TD_BH_PORT=$(free_port)
	start_receiver recv-td "$TD_UP_PORT"
	start_blackhole blackhole "$TD_BH_PORT"
	seed_repo bench/pl-wharf-td
	# every instance lives only while it is measured (no background work during the others'
	# runs); its database, and so its backlog of deliveries, carries over to its next run
	for_each_run_in "$targets" measure_target_down
	stop_service recv-td
	stop_service blackhole
}

# --- store: SQLite vs PostgreSQL × 1, 2, 3 replicas ---------------------------------------------

# start_postgres: a private cluster in $WORK/pg (initdb; as the postgres user when root), on a
# free port, durability as shipped (fsync on, synchronous_commit=$PG_SYNC). Never a system
# service: it is stopped with the run.
start_postgres() {
	[ -n "${PID[postgres]:-}" ] && return 0
	local bin dir port as=() i
	bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[ -x "$bin/postgres" ] || die "PostgreSQL not found in /usr/lib/postgresql/*/bin: bash scripts/deps.sh installs it"
	# its own dir (the work dir is private to this user; the server runs as postgres)
	dir=$(mktemp -d /tmp/wharf-bench-pg.XXXXXX)
	PG_DIR=$dir
	chmod 755 "$dir"
	if [ "$IS_ROOT" = 1 ]; then
		chown postgres:postgres "$dir"
		as=(setpriv --reuid=postgres --regid=postgres --init-groups --reset-env)
	fi
	"${as[@]}" "$bin/initdb" -D "$dir/data" -U bench --auth=trust -E UTF8 --locale=C.UTF-8 >"$WORK/pg-initdb.log" 2>&1 ||
		die "initdb failed: $(tail -3 "$WORK/pg-initdb.log")"
	port=$(free_port)
	"${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
		-c max_connections=300 -c shared_buffers=128MB -c synchronous_commit="$PG_SYNC" \
		-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on -c autovacuum_naptime="$PG_NAPTIME" >"$WORK/postgres.log" 2>&1 &
	PIDS+=($!)
	PID[postgres]=$!
	PG_PORT=$port
	PG_BIN=$bin
	for i in $(seq 200); do
		"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
		sleep 0.05
	done
	"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || die "postgres did not start: $(tail -3 "$WORK/postgres.log")"
	fact postgres "$("$bin/postgres" --version) synchronous_commit=$PG_SYNC fsync=on autovacuum_naptime=$PG_NAPTIME"
	log "postgres on 127.0.0.1:$port (pid ${PID[postgres]}, synchronous_commit=$PG_SYNC)"
}
# pg_cpu_ms: CPU of the postmaster and all its backends, in ms; backends that have exited
# (autovacuum workers, closed connections) count through the postmaster's children's time.
pg_cpu_ms() {
	pg_cpu_kinds | awk '{ t += $2 } END { printf "%.0f", t }'
}
# pg_cpu_kinds: "KIND MS" per kind of PostgreSQL process, from its title: client (wharf's
# connections), checkpointer, walwriter, background-writer, autovacuum-launcher,
# autovacuum-worker, postmaster, exited (children gone since start, autovacuum workers above all).
pg_cpu_kinds() {
	local p kind
	{
		awk -v hz="$CLK_TCK" '{ printf "postmaster %.1f\nexited %.1f\n", ($14 + $15) * 1000 / hz, ($16 + $17) * 1000 / hz }' "/proc/${PID[postgres]}/stat" 2>/dev/null
		for p in /proc/[0-9]*; do
			[ "$(awk '{ print $4 }' "$p/stat" 2>/dev/null)" = "${PID[postgres]}" ] || continue
			kind=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | sed -E 's/^postgres: *//; s/ +$//')
			case "$kind" in
			bench\ *) kind=client ;;
			*) kind=${kind// /-} ;;
			esac
			awk -v k="$kind" -v hz="$CLK_TCK" '{ printf "%s %.1f\n", k, ($14 + $15) * 1000 / hz }' "$p/stat" 2>/dev/null
		done
	} | awk '{ t[$1] += $2 } END { for (k in t) printf "%s %.1f\n", k, t[k] }' | sort
}
# pg_stats DB: cumulative WAL and checkpoint counters of the cluster, and the autovacuum runs
# of DB's tables, as "NAME VALUE" lines.
pg_stats() {
	"$PG_BIN/psql" -XAt -F' ' -h 127.0.0.1 -p "$PG_PORT" -U bench -d "$1" -c \
		"SELECT 'wal_records', wal_records FROM pg_stat_wal UNION ALL SELECT 'wal_fpi', wal_fpi FROM pg_stat_wal
		 UNION ALL SELECT 'wal_bytes', wal_bytes FROM pg_stat_wal UNION ALL SELECT 'wal_sync', wal_sync FROM pg_stat_wal
		 UNION ALL SELECT 'wal_write', wal_write FROM pg_stat_wal
		 UNION ALL SELECT 'checkpoints', checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter
		 UNION ALL SELECT 'buffers_checkpoint', buffers_checkpoint FROM pg_stat_bgwriter
		 UNION ALL SELECT 'buffers_backend', buffers_backend FROM pg_stat_bgwriter
		 UNION ALL SELECT 'autovacuums', COALESCE(sum(autovacuum_count + autoanalyze_count), 0) FROM pg_stat_user_tables
		 UNION ALL SELECT 'xact_commit', xact_commit FROM pg_stat_database WHERE datname = current_database()" 2>/dev/null
}
# pg_phase_begin / pg_phase_end DB FILE LABEL N: what PostgreSQL's processes spent (CPU by kind)
# and wrote (WAL records, full-page images, bytes, syncs; checkpoints; autovacuum runs) between
# the two calls, per unit of work (N), appended to FILE.
pg_phase_begin() {
	PG_PHASE_CPU=$(pg_cpu_kinds)
	PG_PHASE_STATS=$(pg_stats "$1")
}
pg_phase_end() {
	local db=$1 file=$2 label=$3 n=$4
	{
		echo "## $label ($n units): per unit (total)"
		join -a2 -e0 -o '0,1.2,2.2' <(echo "$PG_PHASE_CPU") <(pg_cpu_kinds) |
			awk -v n="$n" '{ d = $3 - $2; if (d > 0) printf "cpu_ms %-24s %10.3f (%.0f)\n", $1, d / n, d }'
		join -a2 -e0 -o '0,1.2,2.2' <(echo "$PG_PHASE_STATS" | sort) <(pg_stats "$db" | sort) |
			awk -v n="$n" '{ d = $3 - $2; printf "stat   %-24s %10.3f (%.0f)\n", $1, d / n, d }'
	} >>"$file"
}
# new_pg_db NAME: a fresh database; its store.url.
new_pg_db() {
	"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U bench -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null ||
		die "creating database $1 failed"
	"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U bench -d "$1" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null 2>&1 || true
	echo "postgres://bench@127.0.0.1:$PG_PORT/$1?sslmode=disable"
}

# st_start BACKEND: the instances of one backend (sqlite: st-sqlite on an empty data dir; pgK:
# st-pgK-1 … st-pgK-K on one fresh database); their names in ST_INST.
st_start() {
	local b=$1 k i url yaml='notification: {webhook_job_max_retry: 0, breaker_failures: 100000000, allowed_target_networks: ["127.0.0.0/8"]}'
	ST_INST=()
	case "$b" in
	sqlite)
		# an empty store every run, as PostgreSQL's fresh database (it kept the deliveries of
		# every earlier run: 10,000 more per run)
		rm -rf "$(wharf_data_dir st-sqlite)"
		start_event_wharf st-sqlite "$yaml"
		ST_INST=(st-sqlite)
		;;
	pg*)
		k=${b#pg}
		url=$(new_pg_db "bench_$b")
		for ((i = 1; i <= k; i++)); do
			start_event_wharf "st-$b-$i" "$yaml"$'\n'"store: {url: \"$url\"}"
			ST_INST+=("st-$b-$i")
		done
		;;
	*) die "unknown store backend $b" ;;
	esac
}
st_lost() { # instances -> events lost (sum)
	local t sum=0
	for t in "$@"; do sum=$((sum + $(metric "$t" wharf_events_lost_total))); done
	echo "$sum"
}
st_cpu_ms() { # instances -> their CPU sum
	local t sum=0
	for t in "$@"; do sum=$((sum + $(cpu_ms "$t"))); done
	echo "$sum"
}

measure_store() {
	local b=$1 run=$2 inst=() first out c0 p0 t0 t1 n got redelivered port rport c t
	st_start "$b"
	inst=("${ST_INST[@]}")
	first=${inst[0]}
	port=$(free_port)
	ensure_policy "$first" "drain-r$run" '["PUSH_ARTIFACT","PULL_ARTIFACT"]' "http://127.0.0.1:$port/"
	sleep 1.2 # every replica's policy watch has seen it
	# 1. drain: N pull events through the first instance to a closed port (dead), then the
	# receiver on that port and one redeliver; every instance's dispatcher takes part
	out=$WORK/wrk-st-gen-$b-r$run.txt
	local e0 e1 wpid
	e0=$(metric "$first" 'wharf_events_total{type="PULL_ARTIFACT"}')
	env BENCH_CONTENT_TYPE="$OCI_MANIFEST" BENCH_MODE=get BENCH_STOP_AFTER=$((STORE_N / WRK_THREADS)) \
		wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d600s -s "$BENCH/wrk-events.lua" \
		"$(url "$first" "$MANIFEST_PATH")" >"$out" 2>&1 &
	wpid=$!
	local last=-1 same=0
	while kill -0 "$wpid" 2>/dev/null; do
		e1=$(metric "$first" 'wharf_events_total{type="PULL_ARTIFACT"}')
		[ $((e1 - e0)) -ge "$STORE_N" ] && break
		# every wrk thread has stopped: no more events come
		if [ "$e1" = "$last" ]; then same=$((same + 1)); else same=0; fi
		[ "$same" -ge 5 ] && [ $((e1 - e0)) -gt 0 ] && break
		last=$e1
		sleep 0.2
	done
	kill -INT "$wpid" 2>/dev/null || true
	wait "$wpid" || true
	wait_drained "$first" 600 >/dev/null
	n=$(metric "$first" 'wharf_deliveries{state="dead"}')
	local lost
	lost=$(st_lost "${inst[@]}")
	[ "$lost" = 0 ] || note "store $b run $run: $lost events lost while generating them"
	start_receiver "recv-$b" "$port" --delay-ms "$STORE_RECEIVER_DELAY_MS"
	[ "$b" != sqlite ] && "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U bench -d "bench_$b" -c "SELECT pg_stat_statements_reset()" >/dev/null 2>&1
	c0=$(st_cpu_ms "${inst[@]}")
	p0=0
	[ "$b" != sqlite ] && p0=$(pg_cpu_ms) && pg_phase_begin "bench_$b"
	t0=$(now)
	redelivered=$(curl -sS --max-time 600 -u admin:bench-admin-password -X POST \
		"$(url "$first" "/api/v2.0/projects/bench/webhook/policies/${POLICY[$first/drain-r$run]}/redeliver")" |
		grep -o '"redelivered":[0-9]*' | cut -d: -f2)
	[ -n "$redelivered" ] || die "store $b: the redeliver call failed"
	while :; do
		got=$(receiver_stat "recv-$b" count)
		[ "${got:-0}" -ge "$redelivered" ] && break
		awk -v a="$(now)" -v b="$t0" 'BEGIN { exit !(a - b > 600) }' && die "store $b: $got of $redelivered in 600 s"
		sleep 0.05
	done
	t1=$(now)
	[ "$b" != sqlite ] && pg_phase_end "bench_$b" "$WORK/pg-phases-$b-r$run.txt" "drain" "$redelivered"
	if [ "$b" != sqlite ]; then # what PostgreSQL spent its time on during the drain
		"$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U bench -d "bench_$b" -c \
			"SELECT calls, round(total_exec_time::numeric, 1) AS ms, round((total_exec_time / NULLIF(calls, 0))::numeric, 3) AS ms_per_call, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15" \
			>"$WORK/pg-statements-$b-r$run.txt" 2>&1 || true
	fi
	record store st_drain_n "st-$b" "$run" "$redelivered"
	record store st_drain_rate "st-$b" "$run" "$(calc "$redelivered / ($t1 - $t0)")"
	record store st_drain_cpu "st-$b" "$run" "$(calc "($(st_cpu_ms "${inst[@]}") - $c0) * 1000 / $redelivered")"
	[ "$b" != sqlite ] && record store st_drain_pg_cpu "st-$b" "$run" "$(calc "($(pg_cpu_ms) - $p0) * 1000 / $redelivered")"
	[ "$n" = "$redelivered" ] || note "store $b run $run: $n dead deliveries, $redelivered redelivered"
	stop_service "recv-$b"
	# 2. manifest PUT latency through the first instance (events on, a policy wants pushes)
	if [ "${#inst[@]}" = 1 ]; then
		seed_repo "bench/st-$b"
		[ "$b" != sqlite ] && "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U bench -d "bench_$b" -c "SELECT pg_stat_statements_reset()" >/dev/null 2>&1
		for c in $PUSH_CONNECTIONS; do
			out=$WORK/wrk-st-put-$b-c$c-r$run.txt
			c0=$(st_cpu_ms "${inst[@]}")
			p0=0
			[ "$b" != sqlite ] && p0=$(pg_cpu_ms) && pg_phase_begin "bench_$b"
			commit_begin "$first"
			wrk_put "$out" "$first" "bench/st-$b" "r$run-c$c" "$((c < WRK_THREADS ? c : WRK_THREADS))" "$c" "$WRK_DURATION"
			wrk_check "$out" "store $b: PUTs (-c$c, run $run)" 201
			record store "st_put_commit_c$c" "st-$b" "$run" "$(commit_mean_ms "$first")"
			[ "$b" != sqlite ] && pg_phase_end "bench_$b" "$WORK/pg-phases-$b-r$run.txt" "PUT -c$c, a delivery each" "$(wrk_n "$out")"
			record store "st_put_p50_c$c" "st-$b" "$run" "$(wrk_pct "$out" 50)"
			record store "st_put_p99_c$c" "st-$b" "$run" "$(wrk_pct "$out" 99)"
			# CPU per PUT, its delivery's attempt (to the closed port) included
			record store "st_put_cpu_c$c" "st-$b" "$run" "$(calc "($(st_cpu_ms "${inst[@]}") - $c0) * 1000 / $(wrk_n "$out")")"
			if [ "$b" != sqlite ]; then
				record store "st_put_pg_cpu_c$c" "st-$b" "$run" "$(calc "($(pg_cpu_ms) - $p0) * 1000 / $(wrk_n "$out")")"
			fi
		done
		# the same PUTs with events recorded but no policy wanting them: the store's own write
		# path, without the dispatcher's claims and outcomes on the same two cores
		curl -sS --max-time 10 -o /dev/null -u admin:bench-admin-password -X DELETE \
			"$(url "$first" "/api/v2.0/projects/bench/webhook/policies/${POLICY[$first/drain-r$run]}")" ||
			die "store $b: deleting the drain policy failed"
		sleep 1.2
		for c in $PUSH_CONNECTIONS; do
			out=$WORK/wrk-st-putq-$b-c$c-r$run.txt
			[ "$b" != sqlite ] && pg_phase_begin "bench_$b"
			commit_begin "$first"
			wrk_put "$out" "$first" "bench/st-$b" "q$run-c$c" "$((c < WRK_THREADS ? c : WRK_THREADS))" "$c" "$WRK_DURATION"
			wrk_check "$out" "store $b: PUTs without deliveries (-c$c, run $run)" 201
			record store "st_putq_commit_c$c" "st-$b" "$run" "$(commit_mean_ms "$first")"
			[ "$b" != sqlite ] && pg_phase_end "bench_$b" "$WORK/pg-phases-$b-r$run.txt" "PUT -c$c, no policy" "$(wrk_n "$out")"
			record store "st_putq_p50_c$c" "st-$b" "$run" "$(wrk_pct "$out" 50)"
		done
		if [ "$b" != sqlite ]; then # what PostgreSQL spent its time on during the PUTs
			"$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U bench -d "bench_$b" -c \
				"SELECT calls, round(total_exec_time::numeric, 1) AS ms, round((total_exec_time / NULLIF(calls, 0))::numeric, 3) AS ms_per_call, plans, round(total_plan_time::numeric, 1) AS plan_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query FROM pg_stat_statements ORDER BY calls DESC LIMIT 30" \
				>"$WORK/pg-statements-put-$b-r$run.txt" 2>&1 || true
		fi
	fi
	# 3. event → delivery latency: paced pushes, receiver up
	rport=$(free_port)
	start_receiver "recv-dl-$b" "$rport"
	ensure_policy "$first" "dl-r$run" '["PUSH_ARTIFACT"]' "http://127.0.0.1:$rport/"
	sleep 1.2
	seed_repo "bench/st-$b"
	out=$WORK/wrk-st-dl-$b-r$run.txt
	wrk_put "$out" "$first" "bench/st-$b" "dl-r$run" 1 1 "$DL_DURATION" BENCH_RATE="$DL_PUSH_RATE"
	wait_drained "$first" 120 >/dev/null
	record store st_dl_p50 "st-$b" "$run" "$(receiver_stat "recv-dl-$b" p50)"
	record store st_dl_p99 "st-$b" "$run" "$(receiver_stat "recv-dl-$b" p99)"
	stop_service "recv-dl-$b"
	for t in "${inst[@]}"; do stop_event_wharf "$t"; done
}
scenario_store() {
	log "scenario store: outbox drain ($STORE_N deliveries), manifest PUT latency and event → delivery latency with the store on $STORE_BACKENDS"
	start_postgres
	[ "$STORE_RECEIVER_DELAY_MS" = 0 ] || fact store-drain-receiver "answers every delivery after ${STORE_RECEIVER_DELAY_MS} ms (STORE_RECEIVER_DELAY_MS)"
	local run b
	for ((run = 1; run <= RUNS; run++)); do
		for b in $STORE_BACKENDS; do measure_store "$b" "$run"; done
	done
}

# --- soak: a long run of pulls, every one delivered: what grows with history -----------------

fd_count() { # PID -> open file descriptors
	find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l
}
# soak_store_bytes DIR: bytes of the SQLite database files in DIR (the write-ahead log and its
# index left out: their frames are copies of pages the checkpoints write into the database).
soak_store_bytes() {
	find "$1" -maxdepth 1 -type f ! -name '*-wal' ! -name '*-shm' -printf '%s\n' | awk '{ t += $1 } END { printf "%.0f", t }'
}
# soak_bytes DIR: the soak store's bytes: SQLite's files in DIR (soak_store_bytes), or with
# SOAK_STORE=pg PostgreSQL's public tables with their indexes and TOAST (dead tuples included:
# what the disk holds until a vacuum reuses them).
soak_bytes() {
	if [ "$SOAK_STORE" = pg ]; then
		"$PG_BIN/psql" -qtA -h 127.0.0.1 -p "$PG_PORT" -U bench -d bench_soak -c \
			"SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"
	else
		soak_store_bytes "$1"
	fi
}
# soak_scrape_ms TARGET: wharf CPU per /metrics scrape (ms), over SOAK_SCRAPES scrapes.
soak_scrape_ms() {
	local c0 i
	c0=$(cpu_ms "$1")
	for ((i = 0; i < SOAK_SCRAPES; i++)); do curl -sS --max-time 10 -o /dev/null "$(url "$1" /metrics)"; done
	calc "($(cpu_ms "$1") - $c0) / $SOAK_SCRAPES"
}

measure_soak() {
	local t=wharf-soak run=$2 out=$WORK/wrk-soak-r$2.txt samples=$WORK/soak-samples-r$2.tsv
	local pid data b0 b1 c0 n got spid peak secs delivered backlog
	pid=${PID[$t]}
	data=$(wharf_data_dir "$t")
	stop_service recv-soak
	start_receiver recv-soak "$SOAK_PORT"
	[ "$WRK_WARMUP" != 0 ] && wrk_run "$WORK/wrk-soak-warmup-r$run.txt" "$t" "$WRK_WARMUP"
	wait_drained "$t" 300 >/dev/null
	stop_service recv-soak
	start_receiver recv-soak "$SOAK_PORT"
	record soak soak_scrape_start_ms "$t" "$run" "$(soak_scrape_ms "$t")"
	record soak soak_rss_start "$t" "$run" "$(vm_rss_mib "$pid")"
	record soak soak_fds_start "$t" "$run" "$(fd_count "$pid")"
	b0=$(soak_bytes "$data")
	c0=$(cpu_ms "$t")
	printf 'seconds\trss_mib\tfds\topen_deliveries\tstore_bytes\n' >"$samples"
	(
		s0=$(date +%s)
		while kill -0 "$pid" 2>/dev/null; do
			printf '%s\t%s\t%s\t%s\t%s\n' "$(($(date +%s) - s0))" "$(vm_rss_mib "$pid")" "$(fd_count "$pid")" \
				"$(deliveries_open "$t")" "$(soak_bytes "$data")" >>"$samples"
			sleep "$SOAK_SAMPLE"
		done
	) &
	spid=$!
	wrk_ev "$out" "$(url "$t" "$MANIFEST_PATH")" "$WRK_THREADS" "$WRK_CONNECTIONS" "$SOAK_DURATION" BENCH_MODE=get
	backlog=$(deliveries_open "$t")
	secs=$(wait_drained "$t" 600)
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	wrk_check "$out" "soak: GETs through $t (run $run)" 200
	n=$(wrk_n "$out")
	got=$(wrk_status "$out" 200)
	delivered=$(receiver_stat recv-soak count)
	# (up to one more per connection: a pull wharf completed whose response wrk had not read)
	if [ "${delivered:-0}" -lt "$got" ] || [ "${delivered:-0}" -gt $((got + WRK_CONNECTIONS)) ]; then
		note "soak run $run: $got pulls answered 200, the receiver got $delivered deliveries"
	fi
	record soak soak_gets "$t" "$run" "$got"
	record soak soak_rps "$t" "$run" "$(wrk_rps "$out")"
	record soak soak_delivered "$t" "$run" "${delivered:-0}"
	record soak soak_backlog "$t" "$run" "$backlog"
	record soak soak_drain_s "$t" "$run" "$secs"
	record_cpu soak soak_cpu "$t" "$run" "$c0" "$(calc "$n / 1000")"
	b1=$(soak_bytes "$data")
	if [ "$SOAK_STORE" = pg ]; then
		# where PostgreSQL's bytes are: each table and index, and the dead tuples not yet vacuumed
		"$PG_BIN/psql" -qA -F $'\t' -h 127.0.0.1 -p "$PG_PORT" -U bench -d bench_soak -c \
			"SELECT c.relname, c.relkind, pg_relation_size(c.oid) AS bytes, s.n_live_tup, s.n_dead_tup
			 FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
			 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i', 't')
			 ORDER BY 3 DESC" >"$WORK/soak-pg-relations-r$run.tsv" 2>&1 || true
	fi
	record soak soak_store_mb "$t" "$run" "$(calc "($b1 - $b0) / 1000000")"
	record soak soak_bytes_per_event "$t" "$run" "$(calc "($b1 - $b0) / ${delivered:-1}")"
	peak=$(awk -F'\t' 'NR > 1 && $2 > m { m = $2 } END { print m + 0 }' "$samples")
	record soak soak_rss_peak "$t" "$run" "$peak"
	record soak soak_fds_end "$t" "$run" "$(fd_count "$pid")"
	record soak soak_scrape_end_ms "$t" "$run" "$(soak_scrape_ms "$t")"
	sleep "$SOAK_IDLE"
	record soak soak_rss_idle "$t" "$run" "$(vm_rss_mib "$pid")"
	record soak soak_fds_idle "$t" "$run" "$(fd_count "$pid")"
}
scenario_soak() {
	log "scenario soak: manifest GETs for $SOAK_DURATION (wrk -c$WRK_CONNECTIONS -t$WRK_THREADS) through wharf-soak, every pull delivered to a receiver; samples every ${SOAK_SAMPLE}s"
	SOAK_PORT=$(free_port)
	local yaml=$HOOK_YAML
	case "$SOAK_STORE" in
	sqlite) ;;
	pg)
		start_postgres
		yaml+=$'\n'"store: {url: \"$(new_pg_db bench_soak)\"}"
		fact soak_store "PostgreSQL (a private cluster, database bench_soak)"
		;;
	*) die "SOAK_STORE: unknown store $SOAK_STORE (sqlite or pg)" ;;
	esac
	one_instance_scenario wharf-soak "$yaml" soak '["PULL_ARTIFACT"]' "$SOAK_PORT" "$SOAK_RUNS" measure_soak
	stop_service recv-soak
}

# ---------------------------------------------------------------------------------------------
# memory

nginx_workers() { # master pid -> worker pids
	local p
	for p in /proc/[0-9]*; do
		[ "$(awk '{ print $4 }' "$p/stat" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
	done
	return 0
}

# snapshot_rss LABEL: peak RSS so far of every service (VmHWM), into results.tsv.
snapshot_rss() {
	local label=$1 t w max=0 n=0 v
	record rss "rss$label" registry 0 "$(vm_hwm_mib "${PID[registry]}")"
	for t in $TARGETS; do
		case "$t" in
		direct) ;;
		nginx)
			for w in $(nginx_workers "${PID[nginx]}"); do
				v=$(vm_hwm_mib "$w")
				[ -n "$v" ] || continue
				n=$((n + 1))
				max=$(awk -v a="$max" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
			done
			record rss "rss$label" nginx 0 "$max"
			if [ -z "$label" ]; then
				record rss rss nginx-master 0 "$(vm_hwm_mib "${PID[nginx]}")"
				record rss rss nginx-workers 0 "$n"
			fi
			;;
		*) record rss "rss$label" "$t" 0 "$(vm_hwm_mib "${PID[$t]}")" ;;
		esac
	done
}

# ---------------------------------------------------------------------------------------------
# facts and report

cpu_busy_pct() { # busy share of all CPUs over one second, in percent
	local a b
	a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
		busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%.0f%%", 100 * busy / (busy + idle + 0.0001) }'
}

# CPU ticks used by this script, everything it waited for (curl, skopeo, wrk) and the services it
# started, and the machine's busy ticks (user+nice+system; interrupts are not charged to processes).
own_ticks() {
	local p pids=("$$" "${PID[@]}")
	[ -n "${PID[nginx]:-}" ] && read -r -a p <<<"$(nginx_workers "${PID[nginx]}" | tr '\n' ' ')" && pids+=("${p[@]}")
	# ksoftirqd mostly carries our own loopback traffic when the network is busy
	for p in /proc/[0-9]*; do
		case "$(cat "$p/comm" 2>/dev/null)" in ksoftirqd/*) pids+=("${p#/proc/}") ;; esac
	done
	for p in "${pids[@]}"; do cat "/proc/$p/stat" 2>/dev/null; done |
		awk '{ t += $14 + $15 + $16 + $17 } END { print t + 0 }'
}
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4, $9 }' /proc/stat; }

# After the scenarios: how much CPU did other processes use while we measured? (steal too)
foreign_load_check() {
	local own1 m1 t1 foreign steal
	own1=$(own_ticks)
	m1=$(machine_ticks)
	t1=$(now)
	read -r foreign steal <<<"$(awk -v o0="$OWN0" -v o1="$own1" -v m0="$MACH0" -v m1="$m1" \
		-v t0="$T0" -v t1="$t1" -v hz="$CLK_TCK" -v n="$(nproc)" 'BEGIN {
		split(m0, a, " "); split(m1, b, " "); cap = (t1 - t0) * hz * n
		f = ((b[1] - a[1]) - (o1 - o0)) / cap * 100; if (f < 0) f = 0
		printf "%.0f %.0f", f, (b[2] - a[2]) / cap * 100 }')"
	fact cpu_foreign "${foreign}% of all CPUs used by other processes while measuring, ${steal}% stolen by the hypervisor"
	log "while measuring, other processes used ${foreign}% of the CPUs (steal ${steal}%)"
	if [ "$foreign" -gt 8 ] || [ "$steal" -gt 5 ]; then
		note "other processes used ${foreign}% of the CPUs (steal ${steal}%) while measuring: figures are not reliable"
		SMOKE_REASONS="${SMOKE_REASONS:+$SMOKE_REASONS; }other load ${foreign}%/steal ${steal}% while measuring"
		fact smoke_reasons "$SMOKE_REASONS"
	fi
}

machine_facts() {
	fact date "$(date -u '+%Y-%m-%d %H:%M UTC')"
	fact nproc "$(nproc)"
	fact cpu_model "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	fact kernel "$(uname -srm)"
	fact memory "$(awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { printf "%.1f GiB total, %.1f GiB available", t / 1048576, a / 1048576 }' /proc/meminfo)"
	fact loadavg_start "$LOADAVG_START"
	fact nginx "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
	fact registry "$(docker-registry --version 2>&1 | awk '{ print $NF }')"
	fact skopeo "$(skopeo --version 2>&1 | awk '{ print $NF }')"
	fact wrk "$(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
	fact curl "$(curl --version | head -1 | awk '{ print $2 }')"
	fact rustc "$(rustc --version 2>/dev/null || echo unknown)"
	local rev
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
		rev="$rev + uncommitted changes in src/"
	fi
	# a binary built from another checkout (WHARF_BIN) names its own commit in WHARF_REV
	[ -n "${WHARF_REV:-}" ] && rev="$WHARF_REV (WHARF_REV; this checkout: $rev)"
	fact wharf_rev "$rev ($WHARF_BIN)"
	fact blob_mib "$BLOB_MIB"
	fact image_mib "$IMAGE_MIB"
	fact image_layers "$IMAGE_LAYERS"
	fact runs "$RUNS"
	fact wrk_duration "$WRK_DURATION"
	fact wrk_connections "$WRK_CONNECTIONS"
	fact wrk_threads "$WRK_THREADS"
	fact access_logs "$ACCESS_LOGS"
	fact wharf_data_dir "$([ "$DATA_ON_TMPFS" = 1 ] && echo tmpfs || echo "disk ($(df -P "$WORK" | awk 'NR == 2 { print $1 }'))")"
	fact nginx_workers "$NGINX_WORKERS"
	fact wharf_extra_yaml "${WHARF_EXTRA_YAML}${EXTRA_WHARFS:+ $EXTRA_WHARFS}"
	fact targets "$TARGETS"
	fact scenarios "$SCENARIOS"
	if event_scenarios; then
		fact events_params "PUSH_CONNECTIONS=$PUSH_CONNECTIONS DELIVERIES_N=$DELIVERIES_N DL_PUSH_RATE=$DL_PUSH_RATE DL_PULL_RATE=$DL_PULL_RATE DL_DURATION=$DL_DURATION TD_CONNECTIONS=$TD_CONNECTIONS SOAK_DURATION=$SOAK_DURATION SOAK_IDLE=$SOAK_IDLE"
	fi
}

# speed_probe: CPU milliseconds a fixed, memory-light interpreter loop takes.
speed_probe() {
	python3 -c 'import time
t = time.process_time()
s = 0
for i in range(5_000_000):
    s += i
print(round((time.process_time() - t) * 1000))'
}

# Just before measuring: is the machine quiet? A busy machine makes the figures meaningless.
quiet_check() {
	sleep "$SETTLE"
	local busy load1 reasons=()
	busy=$(cpu_busy_pct)
	load1=$(awk '{ print $1 }' /proc/loadavg)
	fact loadavg_before "$(cut -d' ' -f1-3 /proc/loadavg)"
	fact cpu_busy_before "$busy"
	log "before measuring: load average $(cut -d' ' -f1-3 /proc/loadavg), CPU busy $busy"
	# the machine's speed per unit of work today: steal and load do not show a host that runs
	# this VM slower (the same build's figures moved by 1.5–2 × between hours of one morning)
	fact cpu_reference "$(speed_probe) ms of CPU for a fixed interpreter loop (python3, 5,000,000 additions; lower is faster)"
	[ "$BLOB_MIB" -lt 1024 ] && reasons+=("BLOB_MIB=$BLOB_MIB < 1024")
	[ "$IMAGE_MIB" -lt 1024 ] && reasons+=("IMAGE_MIB=$IMAGE_MIB < 1024")
	[ "$RUNS" -lt 3 ] && reasons+=("RUNS=$RUNS < 3")
	[ "$WRK_DURATION" != 10s ] && reasons+=("WRK_DURATION=$WRK_DURATION, not 10s")
	if [ "${busy%\%}" -gt 15 ]; then
		reasons+=("CPU $busy busy before measuring")
		note "the machine was busy before measuring (CPU $busy, load $load1): figures are not reliable"
	fi
	local r
	SMOKE_REASONS=""
	for r in "${reasons[@]}"; do SMOKE_REASONS="${SMOKE_REASONS:+$SMOKE_REASONS; }$r"; done
	fact smoke_reasons "$SMOKE_REASONS"
	OWN0=$(own_ticks)
	MACH0=$(machine_ticks)
	T0=$(now)
}

# Warnings and errors in the proxies' own logs are part of the result.
scan_logs() {
	local t f n bad
	for t in $TARGETS; do
		case "$t" in
		direct) f=$WORK/registry.log ;;
		nginx) f=$WORK/nginx/error.log ;;
		*) f=$WORK/$t.log ;;
		esac
		[ -f "$f" ] || continue
		# The registry logs every 404 of a HEAD-before-upload as an error: those are expected.
		bad=$(grep -iE 'warn|error|panic|\[crit\]|\[alert\]' "$f" |
			grep -vE 'err\.code="(blob|manifest) unknown"' || true)
		[ -n "$bad" ] || continue
		n=$(printf '%s\n' "$bad" | wc -l)
		note "$t: $n warning/error lines in $(basename "$f"), first: $(printf '%s\n' "$bad" | head -2 | cut -c1-300 | tr '\n' ' ')"
	done
	for t in $TARGETS; do
		case "$t" in direct) continue ;; nginx) n=${PID[nginx]} ;; *) n=${PID[$t]} ;; esac
		kill -0 "$n" 2>/dev/null || note "$t (pid $n) is no longer running at the end of the run"
	done
	# The event scenarios' own instances: failed deliveries (closed or blackholed target) are
	# expected there; anything else is not.
	for t in $EVENT_INSTANCES; do
		f=$WORK/$t.log
		[ -f "$f" ] || continue
		n=$(grep -ciE 'delivery attempt failed|circuit open' "$f" || true)
		[ "$n" = 0 ] || log "$t: $n expected warning lines (failed delivery attempts, circuits opening)"
		bad=$(grep -iE 'warn|error|panic' "$f" | grep -viE 'delivery attempt failed|circuit open' || true)
		[ -n "$bad" ] || continue
		note "$t: $(printf '%s\n' "$bad" | wc -l) unexpected warning/error lines in $t.log, first: $(printf '%s\n' "$bad" | head -2 | cut -c1-300 | tr '\n' ' ')"
	done
}

# ---------------------------------------------------------------------------------------------

main() {
	LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
	check_tools
	build_wharf
	setup_dirs
	machine_facts
	# Run private copies: the target dir may be shared, and instances are started until the end.
	cp "$WHARF_BIN" "$WORK/wharf-bin"
	WHARF_BIN=$WORK/wharf-bin
	fact wharf_sha256 "$(sha256sum "$WHARF_BIN" | cut -c1-16)"
	if event_scenarios; then
		cp "$RECEIVER_BIN" "$WORK/webhook_receiver-bin"
		RECEIVER_BIN=$WORK/webhook_receiver-bin
	fi
	start_services
	prepare_blob
	prepare_image
	event_scenarios && prepare_small_image
	verify_targets
	snapshot_rss _idle
	quiet_check
	local s
	for s in $SCENARIOS; do
		declare -F "scenario_$s" >/dev/null || die "no scenario named $s (no function scenario_$s)"
		"scenario_$s"
		snapshot_rss "_after_$s"
	done
	foreign_load_check
	snapshot_rss ""
	scan_logs
	mkdir -p "$(dirname "$RESULTS_FILE")"
	log "results:"
	python3 "$BENCH/report.py" "$WORK" "$RESULTS_FILE"
	log "markdown written to $RESULTS_FILE"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
main "$@"
