# The benchmark (issue 5). Included by the Makefile.
.PHONY: bench bench-smoke

bench:
	@echo "bench: not written yet"

# The instruction-count harness on a tiny setting, run by `make test`.
bench-smoke:
	@echo "bench-smoke: not written yet"
