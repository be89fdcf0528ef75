# The spike demo (issue 4): demo/ and envoy/demo/. Included by the Makefile.
#
#   make demo         the Hunt-001 spike three ways (about 5 minutes): demo-out/report.md
#   make demo-smoke   a short version (runs b and c) checking the report's invariants
#   make walkthrough  the quick start shown with curl (scripts/walkthrough.sh)
.PHONY: demo demo-smoke walkthrough

DEMO_OUT ?= demo-out

# Release builds: the load is real and the report's latencies should not measure debug code.
demo: tools wasm
	cargo build --release -p huntgate-demo -p huntgate-governor
	$(WITH_TOOLS) HUNTGATE_GOVERNOR=$(CURDIR)/target/release/huntgate-governor \
		target/release/huntgate-demo run --preset full --out $(DEMO_OUT)

# Debug builds (the suite already builds the governor's): the smoke test asserts only what
# the design guarantees, so it does not depend on the speed of the build or the machine.
demo-smoke: wasm | $(ENV_SH)
	scripts/install-governor-tools.sh
	cargo build -p huntgate-demo -p huntgate-governor
	$(WITH_TOOLS) HUNTGATE_GOVERNOR=$(CURDIR)/target/debug/huntgate-governor \
		target/debug/huntgate-demo run --preset smoke --out $(DEMO_OUT)/smoke --check

walkthrough: wasm | $(ENV_SH)
	$(WITH_TOOLS) scripts/walkthrough.sh
