#!/usr/bin/env bash
# Builds the ingest Lambda: sluice-ingest for arm64 (Graviton) Amazon Linux 2023, packaged as
# target/lambda/sluice-ingest/bootstrap.zip (the CodeUri of deploy/aws/template.yaml).
#
# Cross-compiles with cargo-zigbuild and zig from PyPI (the same approach as cargo-lambda):
# zig links against glibc 2.34, AL2023's, whatever this machine's glibc is, and compiles the
# C in aws-lc-sys and zstd-sys for aarch64. Installs what is missing (idempotent):
#   rustup target add aarch64-unknown-linux-gnu
#   python3 -m pip install ziglang          (or into .sluice-dev/venv under PEP 668)
#   cargo install cargo-zigbuild --locked
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="${SLUICE_VENV:-$REPO_ROOT/.sluice-dev/venv}"
PYTHON="${PYTHON:-python3}"
TARGET=aarch64-unknown-linux-gnu
GLIBC=2.34   # Amazon Linux 2023 (provided.al2023)

log() { echo "lambda: $*" >&2; }
die() { log "$*"; exit 1; }

cd "$REPO_ROOT"

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    log "adding the Rust standard library for $TARGET: rustup target add $TARGET"
    rustup target add "$TARGET" >&2 || die "could not add $TARGET; run: rustup target add $TARGET"
fi

# zig, from PyPI. cargo-zigbuild finds `zig` on PATH or runs `python3 -m ziglang`.
if ! command -v zig >/dev/null 2>&1 && ! "$PYTHON" -c 'import ziglang' >/dev/null 2>&1; then
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import ziglang' >/dev/null 2>&1; then
        :
    elif "$PYTHON" -m pip install --quiet ziglang >&2 && "$PYTHON" -c 'import ziglang' 2>/dev/null; then
        :
    else
        [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" \
            || die "cannot create $VENV; run: sudo apt-get install -y python3-venv"
        "$VENV/bin/python" -m pip install --quiet ziglang >&2 \
            || die "run: $VENV/bin/python -m pip install ziglang"
    fi
fi
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import ziglang' >/dev/null 2>&1 \
    && ! "$PYTHON" -c 'import ziglang' >/dev/null 2>&1; then
    # A `zig` on PATH that runs the venv's zig.
    mkdir -p "$REPO_ROOT/.sluice-dev/bin"
    printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$VENV/bin/python" >"$REPO_ROOT/.sluice-dev/bin/zig"
    chmod +x "$REPO_ROOT/.sluice-dev/bin/zig"
    export PATH="$REPO_ROOT/.sluice-dev/bin:$PATH"
fi

if ! cargo zigbuild --help >/dev/null 2>&1; then
    log "installing cargo-zigbuild: cargo install cargo-zigbuild --locked"
    cargo install cargo-zigbuild --locked >&2 || die "run: cargo install cargo-zigbuild --locked"
fi

log "building sluice-ingest for $TARGET (glibc $GLIBC), release"
cargo zigbuild --release --target "$TARGET.$GLIBC" -p sluice-cloud --bin sluice-ingest >&2

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/$TARGET/release/sluice-ingest"
OUT_DIR="$TARGET_DIR/lambda/sluice-ingest"
mkdir -p "$OUT_DIR"
cp "$BIN" "$OUT_DIR/bootstrap"
# Lambda runs the file named bootstrap at the root of the zip; it must be executable.
"$PYTHON" - "$OUT_DIR/bootstrap" "$OUT_DIR/bootstrap.zip" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16
info.compress_type = zipfile.ZIP_DEFLATED
with open(src, "rb") as f, zipfile.ZipFile(dst, "w") as z:
    z.writestr(info, f.read())
PY
log "$(file -b "$OUT_DIR/bootstrap" 2>/dev/null || echo 'aarch64 ELF')"
log "zip: $(du -h "$OUT_DIR/bootstrap.zip" | cut -f1)"
echo "$OUT_DIR/bootstrap.zip"
