#!/usr/bin/env bash
# Checks deploy/systemd/sluice-agent.service the way systemd reads it:
#   - `systemd-analyze verify`: the unit parses and every command is executable;
#   - `systemd-analyze security --offline=yes --threshold=20`: exposure ≤ 2.0.
# Both need systemd ≥ 250 (`--offline`); without systemd-analyze it says so and skips (exit 0).
# `make test` runs it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
unit_src="$root/deploy/systemd/sluice-agent.service"
# Exposure is reported in tenths: 20 = 2.0.
threshold=20

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "deploy/systemd/check.sh: SKIPPED: systemd-analyze not found (apt-get install systemd); the unit was not checked."
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The unit names its binary at /usr/local/bin (where the README installs it). verify checks
# that it is executable, so point it at the one built here (or any executable when unbuilt).
bin="$root/target/debug/sluice-agent"
[[ -x "$bin" ]] || bin="$(command -v true)"
unit="$work/sluice-agent.service"
sed "s#/usr/local/bin/sluice-agent#$bin#g" "$unit_src" >"$unit"

status=0
echo "== systemd-analyze verify sluice-agent.service"
if ! out="$(cd "$work" && systemd-analyze verify "$unit" 2>&1)"; then
  echo "$out"
  echo "FAILED: systemd-analyze verify"
  status=1
else
  [[ -n "$out" ]] && echo "$out"
  echo "ok"
fi

echo "== systemd-analyze security --offline=yes sluice-agent.service (threshold 2.0)"
if ! out="$(cd "$work" && systemd-analyze security --offline=yes --threshold="$threshold" --no-pager "$unit" 2>&1)"; then
  echo "$out" | grep -E '✗|Overall' || echo "$out"
  echo "FAILED: exposure above 2.0"
  status=1
else
  echo "$out" | grep -E 'Overall'
fi
exit "$status"
