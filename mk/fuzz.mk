# Fuzzing: libFuzzer targets over huntgate's parsers, decoders and request
# classification (fuzz/, a cargo-fuzz project with its own workspace).
#
#   make fuzz-smoke                  every target FUZZ_SMOKE_SECONDS (10 s), 0 crashes; in `make test`
#   make fuzz FUZZ_SECONDS=600       long runs, one target after the other, logs in FUZZ_LOG_DIR
#   make fuzz FUZZ=ticket_verify     one target only (also for fuzz-smoke)
#   make fuzz-corpus                 minimizes fuzz/corpus/<target> with what the runs found
#
# cargo-fuzz is installed by scripts/install-fuzz-tools.sh into $(CACHE). It passes
# nightly-only rustc flags; stable rustc accepts them with RUSTC_BOOTSTRAP=1. The
# build (release, debug assertions and overflow checks on, AddressSanitizer) lives in
# FUZZ_TARGET_DIR, outside the checkout, so later runs (CI's fresh clones included)
# rebuild only what changed. The governor target links huntgate-governor without its
# `runtime` feature (only the pure policy compiler), so no librdkafka, tonic or tokio is
# built with the sanitizer.
# Runs read the committed corpus and write what they find to FUZZ_TARGET_DIR/corpus;
# a crash stops the run, fails make and leaves its input in fuzz/artifacts/<target>/.

FUZZ_ALL := config_compile ticket_verify request_classify throttle_document \
	shared_data_records governor_policy
FUZZ ?= $(FUZZ_ALL)
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_SECONDS ?= 600
FUZZ_SANITIZER ?= address
FUZZ_TARGET_DIR ?= $(CACHE)/fuzz-target
FUZZ_LOG_DIR ?= $(FUZZ_TARGET_DIR)/logs
FUZZ_NICE ?= 0
CARGO_FUZZ := env RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) $(CACHE)/bin/cargo-fuzz
FUZZ_OPTS := --fuzz-dir fuzz -s $(FUZZ_SANITIZER) --target-dir $(FUZZ_TARGET_DIR)
# What `fuzz-build` wrote; the runs start these directly (one build for all targets).
FUZZ_BIN := $(FUZZ_TARGET_DIR)/x86_64-unknown-linux-gnu/release

.PHONY: fuzz-tools fuzz-build fuzz-smoke fuzz fuzz-corpus

fuzz-tools:
	scripts/install-fuzz-tools.sh

fuzz-build: fuzz-tools
	$(CARGO_FUZZ) build $(FUZZ_OPTS)

# Each target of $(FUZZ) for $(1) seconds, one after the other (the binaries of
# fuzz-build, so no rebuild happens between targets): its corpus, its
# dictionary if any, a scratch corpus first (new inputs go there, not into the
# checkout); prints libFuzzer's closing figures per target, the log's tail on a crash.
fuzz_loop = mkdir -p $(FUZZ_LOG_DIR); \
	for t in $(FUZZ); do \
		mkdir -p $(FUZZ_TARGET_DIR)/corpus/$$t fuzz/corpus/$$t fuzz/artifacts/$$t; \
		dict=; [ -f fuzz/dicts/$$t.dict ] && dict=-dict=fuzz/dicts/$$t.dict; \
		log=$(FUZZ_LOG_DIR)/$$t.log; \
		if ! nice -n $(FUZZ_NICE) env ASAN_OPTIONS=detect_odr_violation=0 $(FUZZ_BIN)/$$t \
			$(FUZZ_TARGET_DIR)/corpus/$$t fuzz/corpus/$$t \
			-max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=fuzz/artifacts/$$t/ $$dict >$$log 2>&1; then \
			tail -n 60 $$log >&2; echo "fuzz: $$t crashed (input in fuzz/artifacts/$$t/)" >&2; exit 1; \
		fi; \
		printf '%-22s %s\n' $$t "$$(grep -E '^\#[0-9]+[[:space:]]+DONE' $$log | tail -n1)"; \
	done

fuzz-smoke: fuzz-build
	@$(call fuzz_loop,$(FUZZ_SMOKE_SECONDS))
	@echo "fuzz-smoke: $(words $(FUZZ)) targets, $(FUZZ_SMOKE_SECONDS) s each, 0 crashes"

fuzz: fuzz-build
	@$(call fuzz_loop,$(FUZZ_SECONDS))
	@echo "fuzz: $(words $(FUZZ)) targets, $(FUZZ_SECONDS) s each, 0 crashes (logs: $(FUZZ_LOG_DIR))"

# Keeps fuzz/corpus/<target> small: the committed inputs plus the runs' finds, minimized
# to a set cover of their edges (counters and value profiles left out).
fuzz-corpus: fuzz-build
	for t in $(FUZZ); do \
		mkdir -p $(FUZZ_TARGET_DIR)/corpus/$$t && \
		$(CARGO_FUZZ) cmin $(FUZZ_OPTS) $$t fuzz/corpus/$$t -- \
			-set_cover_merge=1 -use_counters=0 $(FUZZ_TARGET_DIR)/corpus/$$t; \
	done
