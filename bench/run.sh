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
#   WHARF_EXTRA_YAML=F   file appended to wharf's config (top-level keys other than listen, upstream,
#                        data_dir, admin_password, log; WHARF_<KEY> env overrides reach wharf too)
#   EXTRA_WHARFS="wharf-x=F.yaml ..."  more wharf instances, each with its own extra YAML; compared and
#                        checked like "wharf" (e.g. events on vs off)
#   ACCESS_LOGS=1        wharf at log level info (one access-log line per request) and nginx with an
#                        access log; default: wharf at warn, nginx access_log off
#   SCENARIOS="blob skopeo manifest"   which scenario_* functions run, in order
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
SCENARIOS=${SCENARIOS:-blob skopeo manifest}
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
# record_cpu SCENARIO METRIC TARGET RUN CPU_MS_BEFORE PER: proxy CPU per unit (PER units of work).
record_cpu() {
	[ -n "$5" ] || return 0
	record "$1" "$2" "$3" "$4" "$(calc "($(cpu_ms "$3") - $5) / $6")"
}

vm_hwm_mib() { # PID -> peak RSS in MiB
	awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo ""
}

# ---------------------------------------------------------------------------------------------
# preflight

check_tools() {
	local missing=() t
	for t in docker-registry skopeo wrk curl python3 sha256sum awk timeout; do
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
		log "install them with:  apt-get install -y docker-registry skopeo nginx-light wrk curl python3"
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
	fi
	[ -x "$WHARF_BIN" ] || die "no wharf binary at $WHARF_BIN (run without SKIP_BUILD=1, or set WHARF_BIN)"
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
	[ "$ACCESS_LOGS" = 1 ] && access_log="$dir/access.log"
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
start_wharf() {
	local name=$1 extra=${2:-} port cfg level=warn data=$WORK/$1-data
	port=$(free_port)
	cfg=$WORK/$name.yaml
	[ "$ACCESS_LOGS" = 1 ] && level=info
	[ "$DATA_ON_TMPFS" = 1 ] && data=$FAST/$name-data
	mkdir -p "$data"
	cat >"$cfg" <<EOF
listen: "127.0.0.1:$port"
upstream: {registry: "http://127.0.0.1:${PORT[direct]}"}
data_dir: "$data"
admin_password: "x"
log: {level: $level}
EOF
	if [ -n "$extra" ]; then
		printf '\n# from %s\n' "$extra" >>"$cfg"
		cat "$extra" >>"$cfg"
	fi
	# The bench's own WHARF_* knobs are not wharf config overrides (wharf rejects unknown keys).
	env -u WHARF_BIN -u WHARF_EXTRA_YAML "$WHARF_BIN" serve --config "$cfg" >"$WORK/$name.log" 2>&1 &
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
	code=$(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null -w '%{http_code}' -X PUT \
		-H 'Content-Type: application/octet-stream' --data-binary @"$f" "$loc")
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
	local t=$1 run=$2 out code size speed c0
	c0=$(cpu_ms "$t")
	out=$(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' \
		"$(url "$t" "$BLOB_PATH")") || die "blob GET through $t failed"
	read -r code size speed <<<"$out"
	[ "$code" = 200 ] || die "blob GET through $t answered $code"
	[ "$size" = "$BLOB_BYTES" ] || die "blob GET through $t returned $size bytes, not $BLOB_BYTES"
	record blob blob_get "$t" "$run" "$(calc "$speed / 1048576")"
	record_cpu blob blob_cpu "$t" "$run" "$c0" "$(calc "$BLOB_BYTES / 1073741824")"
}
scenario_blob() {
	log "scenario blob: GET $BLOB_MIB MiB with curl"
	for_each_run_target measure_blob_get
}

measure_push() {
	local t=$1 run=$2 t0 t1 repo=bench/push-$1-r$2 c0
	c0=$(cpu_ms "$t")
	t0=$(now)
	skopeo_copy "$WORK/skopeo-push-$t-$run.log" "oci:$FAST/image:$IMAGE_TAG" \
		"docker://127.0.0.1:${PORT[$t]}/$repo:$IMAGE_TAG" ||
		die "skopeo push through $t failed: $(tail -5 "$WORK/skopeo-push-$t-$run.log")"
	t1=$(now)
	record skopeo push "$t" "$run" "$(calc "$IMAGE_BYTES / 1048576 / ($t1 - $t0)")"
	record_cpu skopeo push_cpu "$t" "$run" "$c0" "$(calc "$IMAGE_BYTES / 1073741824")"
}
measure_pull() {
	local t=$1 run=$2 t0 t1 dir=$FAST/pulls/$1-r$2 got c0
	c0=$(cpu_ms "$t")
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
}
scenario_skopeo() {
	log "scenario skopeo: push and pull a $IMAGE_MIB MiB image (fresh repository / fresh oci dir each time)"
	for_each_run_target measure_push
	for_each_run_target measure_pull
}

# wrk_run OUTFILE TARGET DURATION
wrk_run() {
	wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$3" --latency -H "Accept: $OCI_MANIFEST" \
		"$(url "$2" "$MANIFEST_PATH")" >"$1" 2>&1 || die "wrk against $2 failed: $(tail -5 "$1")"
}
measure_manifest() {
	local t=$1 run=$2 out=$WORK/wrk-$1-$2.txt rps p99 bad c0 n
	c0=$(cpu_ms "$t")
	wrk_run "$out" "$t" "$WRK_DURATION"
	n=$(awk '/ requests in / { print $1 }' "$out")
	rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
	# "99%  28.90ms" -> milliseconds
	p99=$(awk '$1 == "99%" {
		v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
		m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1
		printf "%.3f", v * m }' "$out")
	if [ -z "$rps" ] || [ -z "$p99" ]; then die "cannot read wrk output $out"; fi
	bad=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
	[ "$bad" = 0 ] || note "manifest GET through $t run $run: $bad non-2xx responses or socket errors ($(grep -E 'Non-2xx|Socket errors' "$out" | tr '\n' ' '))"
	record manifest manifest_rps "$t" "$run" "$rps"
	record manifest manifest_p99 "$t" "$run" "$p99"
	# ms per request * 1000 = microseconds per request
	record_cpu manifest manifest_cpu "$t" "$run" "$c0" "$(calc "${n:-1} / 1000")"
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
}

# ---------------------------------------------------------------------------------------------

main() {
	LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
	check_tools
	build_wharf
	setup_dirs
	machine_facts
	start_services
	prepare_blob
	prepare_image
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
