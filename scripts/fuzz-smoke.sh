#!/usr/bin/env bash
# Fuzz smoke: run every cargo-fuzz target of fuzz/ for a short while, so a parser regression
# (a panic, an overflow, a broken oracle) is caught by `make test`.
#
#   bash scripts/fuzz-smoke.sh                 # every target, FUZZ_SECONDS (30) each
#   FUZZ_SECONDS=600 bash scripts/fuzz-smoke.sh chart_upload jwt
#
# Needs cargo-fuzz (scripts/deps.sh installs it). Runs on the stable toolchain through
# RUSTC_BOOTSTRAP=1, without a sanitizer (wharf forbids unsafe code; `cargo fuzz run TARGET`
# from fuzz/ on nightly runs with AddressSanitizer for the dependencies' unsafe code), in the
# dev profile: debug assertions (an integer overflow panics) and a build several times faster
# than release, which matters more than speed for a short run. Each target starts from its seeds
# (fuzz/seeds/<target>) plus what earlier runs found (fuzz/corpus/<target>, not committed); a
# crash is saved under fuzz/artifacts/<target>/ and fails the script. Prints the inputs run
# per target, then one closing line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${FUZZ_SECONDS:-30}
export RUSTC_BOOTSTRAP=1
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) PATH="$PATH:$CARGO_BIN" ;; esac

cd "$ROOT/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] cargo-fuzz is missing: run bash scripts/deps.sh" >&2
    exit 1
fi
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
echo "[fuzz] building ${#targets[@]} targets (dev profile: debug assertions; no sanitizer)"
cargo fuzz build -s none --dev

passed=0
failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    log=$(mktemp)
    echo "[fuzz] $t: ${SECONDS_EACH}s"
    if cargo fuzz run -s none --dev "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        summary+=("$t: ${runs:-?} inputs in ${SECONDS_EACH}s, no failure")
        passed=$((passed + 1))
    else
        tail -n 60 "$log" >&2
        summary+=("$t: FAILED (see fuzz/artifacts/$t/)")
        failed=$((failed + 1))
    fi
    rm -f "$log"
done
for line in "${summary[@]}"; do
    echo "[fuzz] $line"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
