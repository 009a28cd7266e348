# wharf: the project's commands.
#
#   make test    THE command that runs every test: installs what is missing (scripts/deps.sh),
#                then rustfmt check, clippy and rustdoc (warnings are errors: a broken
#                intra-doc link fails), the fuzz smoke (every
#                cargo-fuzz target for FUZZ_SECONDS=20 s) and all cargo tests (among
#                them helm lint --strict / helm template of deploy/helm/wharf, every rendered
#                object validated against the Kubernetes JSON schemas by .tools/venv, and the
#                Harbor API client harborapi from .tools/venv-harborapi driving wharf, every
#                Teams card parsed by the npm adaptivecards from tests/adaptivecards, and the
#                admin UI's flows in headless Chromium via tests/ui's playwright-core).
#   make fuzz    the fuzz targets for longer: FUZZ_SECONDS=600 make fuzz, or
#                FUZZ_TARGETS="jwt glob" FUZZ_SECONDS=3600 make fuzz (scripts/fuzz-smoke.sh).
#   make demo    THE command that runs the main job end to end: docker-registry behind wharf,
#                an image pushed and pulled with skopeo (scripts/demo.sh); prints the admin
#                UI's address (KEEP=1 make demo leaves wharf running to click through it).
#   make bench   the benchmarks (bench/run.sh).
#   make build   release build: target/release/wharf.
#   make manifests  re-render deploy/kubernetes/ from the Helm chart (after changing it).
#   make deps    only install what is missing (Debian 12; idempotent, ~1 s when all is there).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# rustup installs cargo into ~/.cargo/bin, which a fresh shell may not have on PATH yet.
# Appended, so a cargo already on PATH wins.
export PATH := $(PATH):$(or $(CARGO_HOME),$(HOME)/.cargo)/bin
# helm (installed by scripts/deps.sh) for the tests that drive a real helm client.
TOOLS_BIN := $(CURDIR)/.tools/bin

.PHONY: help deps test fuzz demo bench build manifests

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

deps:
	bash scripts/deps.sh

test: deps
	cargo fmt --all -- --check
	cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
	cargo clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items
	FUZZ_SECONDS=$${FUZZ_SECONDS:-20} bash scripts/fuzz-smoke.sh
	PATH="$(TOOLS_BIN):$$PATH" cargo test --all-targets

fuzz: deps
	bash scripts/fuzz-smoke.sh $(FUZZ_TARGETS)

demo: deps
	bash scripts/demo.sh

bench:
	bash scripts/deps.sh --bench
	bash bench/run.sh

build:
	cargo build --release

manifests: deps
	bash scripts/render-manifests.sh
