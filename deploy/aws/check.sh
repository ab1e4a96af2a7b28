#!/usr/bin/env bash
# Lints deploy/aws/template.yaml with cfn-lint (from PyPI), installing it when missing: into the
# system Python if pip may, else into .sluice-dev/venv (PEP 668 systems). Part of `make test`.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="${SLUICE_VENV:-$REPO_ROOT/.sluice-dev/venv}"
PYTHON="${PYTHON:-python3}"

# cfnlint has no __main__: call its console entry point.
cfn_lint() { local py="$1"; shift; "$py" -c 'import sys; from cfnlint.runner import main; sys.argv[0] = "cfn-lint"; sys.exit(main())' "$@"; }

if "$PYTHON" -c 'import cfnlint' >/dev/null 2>&1; then
    py="$PYTHON"
elif [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import cfnlint' >/dev/null 2>&1; then
    py="$VENV/bin/python"
else
    echo "check-aws: cfn-lint not found; installing: $PYTHON -m pip install cfn-lint" >&2
    if "$PYTHON" -m pip install --quiet cfn-lint >&2 && "$PYTHON" -c 'import cfnlint' 2>/dev/null; then
        py="$PYTHON"
    else
        [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" \
            || { echo "check-aws: cannot create $VENV; run: sudo apt-get install -y python3-venv" >&2; exit 1; }
        "$VENV/bin/python" -m pip install --quiet cfn-lint >&2 \
            || { echo "check-aws: run: $VENV/bin/python -m pip install cfn-lint" >&2; exit 1; }
        py="$VENV/bin/python"
    fi
fi
cfn_lint "$py" "$SCRIPT_DIR/template.yaml"
echo "check-aws: deploy/aws/template.yaml passes $(cfn_lint "$py" --version 2>&1)"
