#!/usr/bin/env bash
# Installs what the governor's tests need, idempotently:
#   - redis-server (Debian)       real Redis for the Redis-signal integration tests
#   - cmake, libcurl headers      build the vendored librdkafka of the `rdkafka` crate
#   - prometheus (Debian)         provides `promtool check metrics` for the /metrics test
#   - tansu 0.6 (crates.io)       a real Kafka-protocol broker, cached per machine under
#                                 ~/.cache/huntgate/tansu (about 13 minutes to build once)
#   - grpcio, grpcio-tools (PyPI) an independent gRPC client of the governor's API, in the
#                                 venv ~/.cache/huntgate/venv-grpc
# Safe to run repeatedly: each step is skipped when its tool is already present.
set -euo pipefail

TANSU_ROOT="${HUNTGATE_TANSU_ROOT:-$HOME/.cache/huntgate/tansu}"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# librdkafka's vendored build needs a C/C++ toolchain and make.
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# librdkafka 2.12 includes <curl/curl.h> even when built without curl (an `#ifdef` on a
# macro that its CMake config always defines, as 0): the header must exist, nothing links it.
compgen -G '/usr/include/*/curl/curl.h' >/dev/null || [[ -e /usr/include/curl/curl.h ]] \
    || need_apt+=(libcurl4-openssl-dev)

if ((${#need_apt[@]})); then
    echo "install-governor-tools: apt-get install ${need_apt[*]}"
    # shellcheck source=scripts/lib/apt.sh
    . "$(dirname "$0")/lib/apt.sh"
    apt_install "${need_apt[@]}"
fi

# Debian's redis-server package starts a system instance on :6379; the tests start their own
# on free ports and do not need it, but it does no harm either.

if [[ -x "$TANSU_ROOT/bin/tansu" ]]; then
    echo "install-governor-tools: tansu present at $TANSU_ROOT/bin/tansu"
else
    echo "install-governor-tools: building tansu 0.6 into $TANSU_ROOT (one-off, ~13 min on 2 cores)"
    mkdir -p "$TANSU_ROOT"
    cargo install tansu --version '^0.6' --features libsql --locked --root "$TANSU_ROOT"
fi

# env.sh (written by scripts/install-tools.sh) puts $CACHE/bin on PATH: link tansu there so
# `source ~/.cache/huntgate/env.sh` finds it too (the tests also look at $TANSU_ROOT).
CACHE_BIN="${HUNTGATE_CACHE:-$HOME/.cache/huntgate}/bin"
mkdir -p "$CACHE_BIN"
ln -sfn "$TANSU_ROOT/bin/tansu" "$CACHE_BIN/tansu"
echo "install-governor-tools: tansu linked at $CACHE_BIN/tansu (on PATH after sourcing env.sh)"

# An independent gRPC client for the API tests (governor/tests/grpc_client.py).
GRPC_VENV="${HUNTGATE_CACHE:-$HOME/.cache/huntgate}/venv-grpc"
GRPC_PINS=(grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1)
if "$GRPC_VENV/bin/python" -c 'import grpc_tools, grpc_health, grpc_reflection' 2>/dev/null; then
    echo "install-governor-tools: grpcio present in $GRPC_VENV"
else
    echo "install-governor-tools: installing ${GRPC_PINS[*]} into $GRPC_VENV"
    python3 -m venv "$GRPC_VENV"
    "$GRPC_VENV/bin/pip" install -q --disable-pip-version-check "${GRPC_PINS[@]}"
fi
