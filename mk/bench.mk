# The benchmark (issue 5). Included by the Makefile.
#
#   make bench        instructions per request under cachegrind (bare Envoy, huntgate
#                     hot/join/non-hunt paths, local_ratelimit, an empty wasm filter,
#                     scale points), control-path speed, footprint, throughput and
#                     latency; prints a table, writes bench-out/results.{json,md}
#   make bench-smoke  the instruction-count gates on a tiny setting (run by make test):
#                     fails if the hot path adds more than BENCH_HOT_GATE (46k) instructions,
#                     an admitted join (10 active) more than BENCH_JOIN_GATE (148k), or the
#                     join at 3,000 active costs more than BENCH_SCALE_GATE (130) per cent
#                     of the join at 10, or a function of the module is over
#                     BENCH_FUNCTION_GATE (8192) bytes
#   make bench-paths  only the instruction counts of one hunt's paths (bare, hot, joins,
#                     non-hunt, non-hunt on the asset route, empty wasm, local_ratelimit,
#                     bare sent each path's own requests), printed; BENCH_CASES=hot,non-hunt
#                     keeps only those (with their baselines), and may name the full bench's scale
#                     points (<path>@<hunts>x<hunters>: hot@10000x10, join-admit@100x10)
#   make bench-load   only the wall-clock figures (wrk throughput in interleaved rounds,
#                     h2load latency at half of bare's rate) for bare, huntgate, the empty
#                     filter and local_ratelimit, answering directly and proxying to an
#                     upstream Envoy; printed as JSON (about 6 minutes)
#   make bench-scale  only the scale points (join admitted/refused at 10 and 50,000 active,
#                     BENCH_SCALE_ACTIVE; the sweeper's idle cost with 1 vs BENCH_SWEEPER_HUNTS
#                     (1,000) listed hunts), printed
#   make bench-crossings only the host calls and bytes per request of each path (hot,
#                     non-hunt, asset route, joins at 10 and 50,000 active), counted by
#                     Envoy's own trace of the Wasm boundary; printed (about 1 minute)
#   make bench-footprint only the footprint (module sizes, Envoy RSS bare and with
#                     huntgate at 1 and 2 workers, RSS per hunter), printed as JSON
#   make bench-control only the control-path items (policy edit → every worker, polling
#                     and long-poll, BENCH_CONTROL_SAMPLES (20) each; Redis crossing,
#                     BENCH_REDIS_SAMPLES (5)); merged into bench-out/results.{json,md}
#   make bench-fleet  only the fleet-lease items (issue 10; also part of make bench):
#                     the governor under 1,000 proxies × 100 hunts of lease reports,
#                     burst → raised share in force, a join's instructions under a
#                     lease vs today's join; merged into bench-out/results.{json,md}
#                     (about 15 minutes; BENCH_FLEET_ONLY=governor,burst,join picks)
#
# BENCH_JOBS (default 2) cachegrind runs at a time; BENCH_N1/BENCH_N2 request counts.
#   make flood        1,000,000 distinct hunt ids, then 1,000,000 distinct hunters, at one
#                     Envoy (2 workers): RSS and answers (BENCH_FLOOD_N sets the count;
#                     about 8 minutes); bench-out/flood.{json,md}
#   make soak         steady joins and expiries for SOAK_MINUTES (30) at SOAK_RATE (100)
#                     joins/s: RSS per minute, the count back at zero; bench-out/soak.{json,md}
.PHONY: bench bench-smoke bench-paths bench-crossings bench-load bench-scale bench-footprint bench-fleet bench-control bench-build flood soak

BENCH_BIN := target/release/huntgate-bench

bench-build:
	cargo build --release -p huntgate-bench
	cargo build --release --target wasm32-wasip1 -p huntgate-bench-empty-filter

bench: tools wasm bench-build
	cargo build --release -p huntgate-governor
	$(WITH_TOOLS) HUNTGATE_GOVERNOR=$(CURDIR)/target/release/huntgate-governor $(BENCH_BIN) full

bench-fleet: tools wasm bench-build
	cargo build --release -p huntgate-governor
	$(WITH_TOOLS) HUNTGATE_GOVERNOR=$(CURDIR)/target/release/huntgate-governor $(BENCH_BIN) fleet

bench-control: tools wasm bench-build
	cargo build --release -p huntgate-governor
	$(WITH_TOOLS) HUNTGATE_GOVERNOR=$(CURDIR)/target/release/huntgate-governor $(BENCH_BIN) control

# The smoke run uses the debug governor (the e2e suite builds it anyway).
# Gate: a regression gate at today's hot path (38.5k added in make bench-paths and
# 37.8k in this smoke's own setting, 2026-12-03, since the filter binds the ABI
# without the proxy-wasm SDK; + 20 %), not the issue's goal (30k; ≤ 36k as a gate),
# which the filter still misses (README, Performance). Lower it as the hot path
# gets cheaper.
BENCH_HOT_GATE ?= 46000
# Join gate: an admitted join at 10 active hunters, over bare Envoy sent the same
# join requests (since 2026-12-07; over bare sent hot-path requests, as before, it
# reads ~5.7k lower), measured 121.6k in this smoke's setting and 123.0k in make
# bench-paths (2026-12-07), + 20 % → 148k; the goal (60k) is still missed.
BENCH_JOIN_GATE ?= 148000
# Scale gate (the issue's): the join at 3,000 active ≤ 1.3 × the join at 10 (1.0× measured).
BENCH_SCALE_GATE ?= 130
# Function gate: the module's largest function body in bytes (6.7 KB on 2026-12-04).
# V8 compiles every function when Envoy loads the module and Envoy keeps that
# peak as RSS, which follows the largest function (README, "Memory").
BENCH_FUNCTION_GATE ?= 8192
bench-smoke: tools wasm bench-build
	cargo build -p huntgate-governor
	$(WITH_TOOLS) BENCH_HOT_GATE=$(BENCH_HOT_GATE) BENCH_JOIN_GATE=$(BENCH_JOIN_GATE) \
		BENCH_SCALE_GATE=$(BENCH_SCALE_GATE) BENCH_FUNCTION_GATE=$(BENCH_FUNCTION_GATE) HUNTGATE_GOVERNOR=$(CURDIR)/target/debug/huntgate-governor $(BENCH_BIN) smoke

bench-paths: tools wasm bench-build
	$(WITH_TOOLS) $(BENCH_BIN) paths
bench-load: tools wasm bench-build
	$(WITH_TOOLS) $(BENCH_BIN) load
bench-scale: tools wasm bench-build
	$(WITH_TOOLS) $(BENCH_BIN) scale

bench-footprint: tools wasm bench-build
	$(WITH_TOOLS) $(BENCH_BIN) footprint

bench-crossings: tools wasm bench-build
	$(WITH_TOOLS) $(BENCH_BIN) crossings

flood: tools wasm bench-build
	$(WITH_TOOLS) $(BENCH_BIN) flood

soak: tools wasm bench-build
	$(WITH_TOOLS) $(BENCH_BIN) soak
