#!/usr/bin/env bash
# Installs what the waiting page's browser test needs, idempotently:
#
#   Debian:  chromium   run headless by the waiting-page test (tests/tests/e2e/waiting_room.rs)
#                       (`chromium --headless --dump-dom --virtual-time-budget`)
#
# The test finds it as `$HUNTGATE_CHROMIUM`, else `chromium` on PATH, and fails
# naming this script when neither is there. apt-get update runs once, only
# when the package is missing. Takes the same lock as install-tools.sh, so the
# two never run apt-get at once.
set -euo pipefail

# One compound command: parsed whole before it runs (safe to edit while running).
{
CACHE=${HUNTGATE_CACHE:-$HOME/.cache/huntgate}
mkdir -p "$CACHE"
exec 9>"$CACHE/.install.lock"
flock 9

# shellcheck source=scripts/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

if ! command -v chromium >/dev/null; then
    echo "installing from Debian: chromium"
    apt_install chromium
fi
printf '%-26s %s\n' chromium "$(command -v chromium) ($(chromium --version 2>/dev/null | head -1))"
exit 0
}
