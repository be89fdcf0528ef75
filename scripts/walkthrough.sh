#!/usr/bin/env bash
# The quick start, shown: runs Envoy with envoy/envoy.yaml (huntgate on
# 127.0.0.1:10000 in front of a sample upstream on :10001, admin on :9901)
# and walks through admission with curl. Everything it starts is stopped on
# exit. Run `make walkthrough` (builds dist/huntgate.wasm and finds Envoy).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ENVOY=${HUNTGATE_ENVOY:-$(command -v envoy || true)}
PUBLIC=http://127.0.0.1:10000
ADMIN=http://127.0.0.1:9901
HUNTER=x-veltrix-hunter

[ -n "$ENVOY" ] || { echo "walkthrough: no Envoy (run \`make tools\`)" >&2; exit 1; }
[ -f dist/huntgate.wasm ] || { echo "walkthrough: dist/huntgate.wasm missing (run \`make wasm\`)" >&2; exit 1; }
for port in 10000 10001 9901; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "walkthrough: 127.0.0.1:$port is in use; stop whatever listens there first" >&2
        exit 1
    fi
done

log=$(mktemp -t huntgate-walkthrough-envoy.XXXXXX.log)
envoy_pid=""
cleanup() {
    if [ -n "$envoy_pid" ]; then
        kill "$envoy_pid" 2>/dev/null || true
        wait "$envoy_pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT INT TERM

"$ENVOY" -c envoy/envoy.yaml --concurrency 2 --disable-hot-restart --log-level warning >"$log" 2>&1 &
envoy_pid=$!
for _ in $(seq 300); do
    [ "$(curl -s "$ADMIN/ready" || true)" = "LIVE" ] && break
    if ! kill -0 "$envoy_pid" 2>/dev/null; then
        echo "walkthrough: Envoy exited during start-up:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
[ "$(curl -s "$ADMIN/ready" || true)" = "LIVE" ] || { echo "walkthrough: Envoy not ready after 30 s" >&2; cat "$log" >&2; exit 1; }

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
# Prints status, the headers that matter, and the body of one request.
show() {
    local out
    out=$(curl -s -i "$@")
    sed -n '1p' <<<"$out" | tr -d '\r'
    grep -iE '^(x-huntgate-ticket|set-cookie|retry-after|x-upstream-saw-[a-z]+):' <<<"$out" | tr -d '\r' | sed 's/^/  /' || true
    awk 'body { print "  " $0 } /^\r?$/ { body = 1 }' <<<"$out"
}
ticket_of() {
    curl -s -D - -o /dev/null "$@" | tr -d '\r' | sed -n 's/^x-huntgate-ticket: //Ip'
}

echo "Envoy $("$ENVOY" --version | grep -o '/[0-9.]*/' | tr -d /) is up: huntgate enforces max_hunters 3 per hunt;"
echo "hunt-002 runs in shadow mode (see envoy/envoy.yaml)."

step "Three hunters join hunt-001: admitted, each gets a ticket"
alice=$(ticket_of -H "$HUNTER: alice" "$PUBLIC/hunts/hunt-001/join")
echo "alice's ticket: $alice"
show -H "$HUNTER: bob" "$PUBLIC/hunts/hunt-001/join"
show -H "$HUNTER: carol" "$PUBLIC/hunts/hunt-001/join"

step "A fourth hunter: the hunt is full, 429 with retry-after"
show -H "$HUNTER: dave" "$PUBLIC/hunts/hunt-001/join"

step "alice comes back with her ticket: her session passes even though the hunt is full"
show -H "$HUNTER: alice" -H "x-huntgate-ticket: $alice" "$PUBLIC/hunts/hunt-001/map"

step "Path tricks are the same hunt: //HUNTS/hunt-001/x for dave is still 429"
show --path-as-is -H "$HUNTER: dave" "$PUBLIC//HUNTS/hunt-001/x"

step "hunt-002 is in shadow mode: a fourth hunter passes, upstream sees would-reject"
for hunter in erin frank grace; do
    curl -s -o /dev/null -H "$HUNTER: $hunter" "$PUBLIC/hunts/hunt-002/join"
done
show -H "$HUNTER: heidi" "$PUBLIC/hunts/hunt-002/join"

step "Not a hunt: passes untouched"
show "$PUBLIC/about"

step "Metrics (admin /stats/prometheus)"
sleep 1.2 # per-hunt gauges refresh once per second
curl -s "$ADMIN/stats/prometheus" | grep -E '^huntgate_' | sed 's/^/  /'

echo
echo "Done; stopping Envoy."
