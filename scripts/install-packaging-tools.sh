#!/usr/bin/env bash
# Installs what the packaging checks (`make packaging`, mk/packaging.mk) need,
# idempotently, cached outside the checkout like scripts/install-tools.sh:
#
#   Debian:  skopeo           copies the OCI layout to and from a registry
#            umoci            reads the layout back (unpack, stat) as a second opinion
#            docker-registry  the CNCF distribution server, run on loopback by the test
#            musl-tools       musl-gcc, for the static governor (`make oci-governor` only)
#   cache:   ${HUNTGATE_CACHE:-$HOME/.cache/huntgate}
#            venv-k8s/        Python venv with kubernetes-validate (pinned below), whose
#                             wheel carries Kubernetes' JSON schemas: validation is offline
#            bin/kubernetes-validate  link into that venv
#
# kubectl (for `kubectl kustomize`) is on every machine here and is not installed.
# apt-get update runs once, only when a Debian package is missing. Takes the
# same lock as install-tools.sh, so the two never run apt-get at once.
set -euo pipefail

# One compound command: parsed whole before it runs (safe to edit while running).
{
CACHE=${HUNTGATE_CACHE:-$HOME/.cache/huntgate}
K8S_VALIDATE_VERSION=1.37.0

mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.install.lock"
flock 9

say() { printf '%-26s %s\n' "$1" "$2"; }
# shellcheck source=scripts/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

SUDO=()
if [ "$(id -u)" != 0 ]; then
    SUDO=(sudo)
fi

# --- Debian packages (only the missing ones; one apt-get update) -------------
apt_packages=()
command -v skopeo >/dev/null || apt_packages+=(skopeo)
command -v umoci >/dev/null || apt_packages+=(umoci)
command -v docker-registry >/dev/null || apt_packages+=(docker-registry)
command -v musl-gcc >/dev/null || apt_packages+=(musl-tools)
command -v python3 >/dev/null || apt_packages+=(python3)
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_packages+=(python3-venv)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
    echo "installing from Debian: ${apt_packages[*]}"
    apt_install "${apt_packages[@]}"
fi
# Debian's docker-registry package starts a system registry on :5000. The tests
# start their own on a free loopback port; stop the system one so that nothing
# listens that no test asked for (ignored where there is no systemd).
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    "${SUDO[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# --- kubernetes-validate (PyPI), in a venv of its own ------------------------
VENV=$CACHE/venv-k8s
k8s_ok() {
    [ -x "$VENV/bin/kubernetes-validate" ] &&
        [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" = "$K8S_VALIDATE_VERSION" ]
}
if ! k8s_ok; then
    echo "installing kubernetes-validate==$K8S_VALIDATE_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$K8S_VALIDATE_VERSION"
    k8s_ok || { echo "kubernetes-validate $K8S_VALIDATE_VERSION did not install into $VENV" >&2; exit 1; }
fi
ln -sfn "$VENV/bin/kubernetes-validate" "$CACHE/bin/kubernetes-validate"

# --- report ------------------------------------------------------------------
say skopeo "$(command -v skopeo) ($(skopeo --version | awk '{print $3}'))"
say umoci "$(command -v umoci) ($(umoci --version | awk '{print $3}'))"
say docker-registry "$(command -v docker-registry) ($(docker-registry --version | awk '{print $3}'))"
say musl-gcc "$(command -v musl-gcc)"
say kubernetes-validate "$CACHE/bin/kubernetes-validate ($K8S_VALIDATE_VERSION)"
say kubectl "$(command -v kubectl || echo 'missing: kubectl kustomize is needed') ($(kubectl version --client 2>/dev/null | awk '/Kustomize/ {print "kustomize " $3}'))"
exit 0
}
