#!/usr/bin/env bash
# The optional tools some tests need, found or installed: `tools.sh prometheus` and
# `tools.sh chromium` print the binary's path (promtool comes with prometheus). Missing, they
# are installed from Debian's archive when running as root on Debian/Ubuntu (apt-get; set
# SLUICE_NO_INSTALL=1 never to install); otherwise the script exits 3 saying why and the
# command to run, and the tests that need them skip, printing that reason. Idempotent.
set -euo pipefail

tool="${1:-}"
case "$tool" in
    prometheus) bins=(prometheus promtool); package=prometheus ;;
    chromium) bins=(chromium chromium-browser); package=chromium ;;
    *) echo "usage: tools.sh prometheus|chromium" >&2; exit 2 ;;
esac

found() {
    local b
    for b in "${bins[@]}"; do
        if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
    done
    return 1
}

if found; then exit 0; fi
if [[ -n "${SLUICE_NO_INSTALL:-}" ]]; then
    echo "$tool not installed (SLUICE_NO_INSTALL is set); run: sudo apt-get install -y $package" >&2
    exit 3
fi
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "$tool not installed and cannot be installed here (needs root and apt-get); run: sudo apt-get install -y $package" >&2
    exit 3
fi
echo "tools: installing $package (apt-get install -y $package)" >&2
# One install at a time: tests run in parallel.
exec 9>/tmp/sluice-tools.lock
flock 9
if ! found >/dev/null; then
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$package"; } >&2 || {
        echo "$tool: apt-get install -y $package failed" >&2
        exit 3
    }
fi
found || { echo "$tool still not found after installing $package" >&2; exit 3; }
