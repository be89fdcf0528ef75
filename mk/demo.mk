# The spike demo (issue 4). Included by the Makefile.
.PHONY: demo demo-smoke

demo: tools wasm
	$(WITH_TOOLS) scripts/demo.sh

# A short version of the demo, run by `make test`.
demo-smoke:
	@echo "demo-smoke: not written yet"
