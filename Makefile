# huntgate: build, lint and test.
#
#   make test   everything CI runs: tools lint unit governor wasm validate e2e
#               demo-smoke bench-smoke
#   make demo   the spike replayed three ways, with a report (mk/demo.mk)
#   make bench  cost per request and control-path speed (mk/bench.mk)
#
# Tools (Envoy, wasm-bindgen-test-runner, ...) are installed and cached by
# scripts/install-tools.sh in $(CACHE); targets that use them source
# $(CACHE)/env.sh, which that script writes.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

CACHE ?= $(or $(HUNTGATE_CACHE),$(HOME)/.cache/huntgate)
ENV_SH := $(CACHE)/env.sh
WITH_TOOLS := source $(ENV_SH) &&
WASM := dist/huntgate.wasm
WASM_BUILT := target/wasm32-wasip1/release/huntgate.wasm

# Parallel e2e tests: each waits on Envoy, TTLs and sockets more than CPU.
E2E_THREADS ?= 4

.PHONY: test tools wasm lint unit governor validate e2e

test: tools lint unit governor wasm validate e2e demo-smoke bench-smoke packaging fuzz-smoke

tools:
	scripts/install-tools.sh
	scripts/install-governor-tools.sh
	scripts/install-fuzz-tools.sh
	scripts/install-browser-tools.sh

# Written by `tools`; targets that need the tools install them if missing.
$(ENV_SH):
	scripts/install-tools.sh

# cargo's output, then binaryen's wasm-opt -Oz (about 17 % smaller; the
# features are those rustc emits for wasm32-wasip1). Tests run this artifact.
# wasm-opt inlines no function of one caller above 100 of its size units (its
# default inlines every one): with the core's `#[inline(never)]` on the large
# cold functions, that keeps the largest function under 8 KiB, and with it V8's
# compilation peak, which Envoy keeps as RSS (README, "Memory"; bench-smoke gates it).
WASM_OPT_FLAGS := -Oz --one-caller-inline-max-function-size 100 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue

wasm: | $(ENV_SH)
	cargo build --release --target wasm32-wasip1 -p huntgate
	mkdir -p dist
	$(WITH_TOOLS) command -v wasm-opt >/dev/null || { echo "wasm-opt missing: run make tools" >&2; exit 1; }
	$(WITH_TOOLS) wasm-opt $(WASM_OPT_FLAGS) $(WASM_BUILT) -o $(WASM).tmp
	mv $(WASM).tmp $(WASM)
	@ls -l $(WASM)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p huntgate -p huntgate-core --target wasm32-wasip1 -- -D warnings
	cargo clippy -p huntgate --target wasm32-wasip1 --features crash-test -- -D warnings
	cargo clippy -p huntgate-governor --no-default-features --lib -- -D warnings

unit: | $(ENV_SH)
	cargo test -p huntgate-core
	$(WITH_TOOLS) CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
		cargo test -p huntgate-core --target wasm32-unknown-unknown

# The governor against a real redis-server and tansu broker (installed by install-governor-tools.sh).
governor: | $(ENV_SH)
	scripts/install-governor-tools.sh
	$(WITH_TOOLS) cargo test -p huntgate-governor

validate: wasm | $(ENV_SH)
	$(WITH_TOOLS) scripts/validate-envoy.sh

# The crash-test build (cargo feature `crash-test`, src/crash_test.rs) lets the
# FAIL_RELOAD test trap a VM on purpose; it has its own target dir, never dist/.
CRASH_WASM := target/crash-test/wasm32-wasip1/release/huntgate.wasm

# The governor tests of the suite run the real governor binary (debug build).
e2e: wasm | $(ENV_SH)
	scripts/install-browser-tools.sh
	cargo build -p huntgate-governor
	CARGO_TARGET_DIR=target/crash-test cargo build --release --target wasm32-wasip1 -p huntgate --features crash-test
	$(WITH_TOOLS) HUNTGATE_WASM=$(CURDIR)/$(WASM) \
		HUNTGATE_CRASH_WASM=$(CURDIR)/$(CRASH_WASM) \
		HUNTGATE_GOVERNOR=$(CURDIR)/target/debug/huntgate-governor \
		cargo test -p huntgate-e2e -- --test-threads $(E2E_THREADS)

include mk/demo.mk mk/bench.mk mk/packaging.mk mk/fuzz.mk
