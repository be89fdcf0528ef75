#!/usr/bin/env bash
# Installs what `make fuzz-smoke` / `make fuzz` need, idempotently, cached outside
# the checkout like the other tools:
#
#   cache: ${HUNTGATE_CACHE:-$HOME/.cache/huntgate}
#     cargo-fuzz-<version>/bin/cargo-fuzz   cargo-fuzz from crates.io (libFuzzer driver)
#     bin/cargo-fuzz                        link to it (on PATH after `source env.sh`)
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, -Cpasses=sancov-module);
# the machine has stable Rust only, so mk/fuzz.mk runs it with RUSTC_BOOTSTRAP=1.
# The stable toolchain ships the ASan runtime (librustc-stable_rt.asan.a), so
# the targets build with AddressSanitizer.
# Safe to run concurrently (takes the same lock as install-tools.sh).
set -euo pipefail

{
CACHE=${HUNTGATE_CACHE:-$HOME/.cache/huntgate}
CARGO_FUZZ_VERSION=0.13.2
ROOT=$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION

mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.install.lock"
flock 9

if ! "$ROOT/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $ROOT"
    # Its own build dir: never the checkout's target/ nor a caller's CARGO_TARGET_DIR.
    CARGO_TARGET_DIR="$ROOT.build" cargo install --quiet cargo-fuzz \
        --version "=$CARGO_FUZZ_VERSION" --locked --root "$ROOT"
    rm -rf "$ROOT.build"
fi
ln -sfn "$ROOT/bin/cargo-fuzz" "$CACHE/bin/cargo-fuzz"
printf '%-26s %s\n' cargo-fuzz "$CACHE/bin/cargo-fuzz ($("$CACHE/bin/cargo-fuzz" --version))"
exit 0
}
