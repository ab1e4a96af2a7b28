#!/usr/bin/env bash
# The Debian container `make test-systemd` boots with systemd as PID 1 (tests/tests/systemd.rs
# drives it; tests/src/container.rs boots and enters it).
#
#   container.sh check   exit 0 if the test can run here; otherwise print why not, exit 3
#   container.sh root    print the path of the container's root tree, bootstrapping it first
#                        when it is not cached (debootstrap, about a minute, ≈ 250 MB)
#
# The root is cached under .sluice-dev/systemd/<key>/root, <key> naming the suite and the
# package list, so a change to either bootstraps a new one. The test boots it read-only with a
# throwaway overlay (systemd-nspawn --volatile=overlay): the cached tree never changes.
# Needs root, Linux, systemd-nspawn and debootstrap (installed with apt-get when missing) and,
# for a root not yet cached, Debian's package archive ($SLUICE_DEBIAN_MIRROR).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/../.." && pwd)"
SUITE=bookworm
# systemd as PID 1, dbus for systemctl, libnss-systemd for DynamicUser's names, procps for the
# unit's /bin/kill (ExecReload); ca-certificates, which the README installs (so its step finds
# it installed, without downloading).
PACKAGES=systemd,dbus,libnss-systemd,procps,ca-certificates
MIRROR="${SLUICE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
key="$(printf '%s %s minbase\n' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)"
cache="$root_dir/.sluice-dev/systemd/$SUITE-$key"

skip() { echo "make test-systemd: SKIPPED: $*" >&2; exit 3; }

archive_reachable() {
    local url="$MIRROR/dists/$SUITE/Release"
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 15 -o /dev/null -I "$url" 2>/dev/null
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' "$url" 2>/dev/null
    fi
}

cmd_check() {
    [[ "$(uname -s)" == Linux ]] || skip "not Linux"
    [[ "$(id -u)" -eq 0 ]] || skip "not root (systemd-nspawn and debootstrap need root); run: sudo make test-systemd"
    if ! command -v systemd-nspawn >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || skip "systemd-nspawn or debootstrap missing and no apt-get to install them"
        echo "container.sh: installing systemd-container and debootstrap" >&2
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y systemd-container debootstrap; } >&2 \
            || skip "could not install systemd-container and debootstrap with apt-get"
    fi
    command -v nsenter >/dev/null 2>&1 || skip "nsenter missing (apt-get install util-linux)"
    if [[ ! -f "$cache/ok" ]] && ! archive_reachable; then
        skip "Debian's package archive ($MIRROR) is not reachable and no container root is cached in $cache"
    fi
}

cmd_root() {
    if [[ ! -f "$cache/ok" ]]; then
        # A root of another package list (or a half-made one) is not used again.
        local old
        for old in "$root_dir/.sluice-dev/systemd/"*; do
            [[ -d "$old" && "$old" != "$cache" ]] && rm -rf -- "$old"
        done
        rm -rf -- "$cache"
        mkdir -p "$cache"
        echo "container.sh: debootstrap $SUITE into $cache/root (about a minute)" >&2
        debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$cache/root" "$MIRROR" \
            >"$cache/debootstrap.log" 2>&1 \
            || { tail -n 20 "$cache/debootstrap.log" >&2; echo "container.sh: debootstrap failed (log: $cache/debootstrap.log)" >&2; exit 1; }
        touch "$cache/ok"
    fi
    echo "$cache/root"
}

case "${1:-}" in
    check) cmd_check ;;
    root) cmd_check; cmd_root ;;
    *) echo "usage: $0 check | root" >&2; exit 2 ;;
esac
