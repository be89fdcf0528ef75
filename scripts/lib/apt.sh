# Sourced by the install scripts: `apt_install PACKAGE...` installs Debian
# packages without recommends, as root or through sudo. Another apt-get (an
# install script run in parallel, or the system's) may hold apt's locks: the
# update is retried every 5 s for up to 5 minutes, and both steps wait up to
# 5 minutes for dpkg's lock.
apt_install() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        sudo=(sudo)
    fi
    local attempt
    for attempt in $(seq 60); do
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq && break
        if [ "$attempt" = 60 ]; then
            echo "apt-get update kept failing: cannot install $*" >&2
            return 1
        fi
        sleep 5
    done
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}
