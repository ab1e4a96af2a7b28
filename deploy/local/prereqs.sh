#!/usr/bin/env bash
# Checks what `make demo` / `make test` need, installing what it can (as root) or
# stopping with the exact command to run. Idempotent and quiet when all is there.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQUIRED_RUST="1.85"

if ! command -v cargo >/dev/null 2>&1; then
    echo "prereqs: cargo not found; install the Rust toolchain: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    exit 1
fi
have="$(rustc --version | awk '{print $2}')"
if [[ "$(printf '%s\n%s\n' "$REQUIRED_RUST" "$have" | sort -V | head -n1)" != "$REQUIRED_RUST" ]]; then
    echo "prereqs: rustc $have is older than $REQUIRED_RUST; run: rustup update stable" >&2
    exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "prereqs: no C compiler (needed by aws-lc-sys, zstd-sys); installing: apt-get install -y build-essential" >&2
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y build-essential >&2
    else
        echo "prereqs: no C compiler (needed by aws-lc-sys, zstd-sys); run: sudo apt-get install -y build-essential" >&2
        exit 1
    fi
fi
exec bash "$SCRIPT_DIR/stack.sh" prereqs
