#!/usr/bin/env bash
# Checks every Envoy config under envoy/ with the Envoy the tests use.
#
# - Every bootstrap (any envoy/**/*.yaml outside `lds/`, `istio/` and `bench/`,
#   a template the bench harness renders and runs in bench-smoke):
#   `envoy --mode validate -c FILE`, from the repository root (the configs
#   load dist/huntgate.wasm relative to it, so build it first: `make wasm`).
# - Listener files served by file-based LDS (envoy/**/lds/*.yaml): validate
#   mode does not read them, so each bootstrap with a `path_config_source`
#   is started for real (admin and listener on free ports, 127.0.0.1) until
#   Envoy is ready, and must have accepted its listener file.
#
# Uses $HUNTGATE_ENVOY, else `envoy` on PATH.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ENVOY=${HUNTGATE_ENVOY:-$(command -v envoy || true)}
READY_TIMEOUT_S=30

if [ -z "$ENVOY" ] || [ ! -x "$ENVOY" ]; then
    echo "validate-envoy: no Envoy (set HUNTGATE_ENVOY or run \`make tools\`)" >&2
    exit 1
fi
if [ ! -f dist/huntgate.wasm ]; then
    echo "validate-envoy: dist/huntgate.wasm missing (run \`make wasm\`)" >&2
    exit 1
fi

mapfile -t bootstraps < <(find envoy -name '*.yaml' -not -path '*/lds/*' -not -path '*/istio/*' -not -path '*/bench/*' | sort)
failed=0

for config in "${bootstraps[@]}"; do
    if out=$("$ENVOY" --mode validate -c "$config" --disable-hot-restart 2>&1); then
        echo "ok       $config (validate)"
    else
        echo "FAILED   $config (validate)"
        tail -n 20 <<<"$out" | sed 's/^/    /'
        failed=1
    fi
done

# Starts bootstrap $1 from a copy of the tree and checks that its file-based
# LDS resources were accepted.
check_lds() {
    local config=$1 tmp pid admin="" stats deadline
    tmp=$(mktemp -d)
    cp -r envoy "$tmp/envoy"
    ln -s "$ROOT/dist" "$tmp/dist"
    # Any free port instead of the committed one, which may be in use.
    find "$tmp/envoy" -path '*/lds/*.yaml' -exec \
        sed -i -E 's/^([[:space:]]*port_value: )[0-9]+([[:space:]]*# e2e:listener_port)$/\10\2/' {} +
    (cd "$tmp" && exec "$ENVOY" -c "$config" --disable-hot-restart --concurrency 1 \
        --admin-address-path admin-address --log-level warning >envoy.log 2>&1) &
    pid=$!
    deadline=$((SECONDS + READY_TIMEOUT_S))
    while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do
        admin=$(cat "$tmp/admin-address" 2>/dev/null || true)
        if [ -n "$admin" ] && [ "$(curl -s "http://$admin/ready" || true)" = "LIVE" ]; then
            break
        fi
        sleep 0.1
    done
    stats=""
    if [ -n "$admin" ] && kill -0 "$pid" 2>/dev/null; then
        stats=$(curl -s "http://$admin/stats?filter=^listener_manager" || true)
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local success rejected active
    success=$(sed -n 's/^listener_manager\.lds\.update_success: //p' <<<"$stats")
    rejected=$(sed -n 's/^listener_manager\.lds\.update_rejected: //p' <<<"$stats")
    active=$(sed -n 's/^listener_manager\.total_listeners_active: //p' <<<"$stats")
    if [ "${success:-0}" -ge 1 ] && [ "${rejected:-1}" -eq 0 ] && [ "${active:-0}" -ge 1 ]; then
        echo "ok       $config (started; LDS listener accepted)"
    else
        echo "FAILED   $config (started; lds update_success=${success:-?} update_rejected=${rejected:-?} listeners_active=${active:-?})"
        tail -n 20 "$tmp/envoy.log" | sed 's/^/    /'
        failed=1
    fi
    rm -rf "$tmp"
}

for config in "${bootstraps[@]}"; do
    if grep -q 'path_config_source' "$config"; then
        check_lds "$config"
    fi
done

exit "$failed"
