#!/usr/bin/env bash
# Checks deploy/prometheus/sluice-alerts.yml: `promtool check rules` and its unit tests
# (sluice-alerts.test.yml, `promtool test rules`) when promtool is installed (Debian:
# apt-get install prometheus), else a YAML parse with the expected shape (python3 + PyYAML). Skips, saying so,
# when neither is available. `make test` runs it. (That every metric named in the rules
# exists is a unit test of the agent: `cargo test -p sluice-agent alert`.)
set -euo pipefail
rules="$(cd "$(dirname "$0")" && pwd)/sluice-alerts.yml"

if command -v promtool >/dev/null 2>&1; then
  echo "== promtool check rules $rules"
  promtool check rules "$rules"
  echo "== promtool test rules sluice-alerts.test.yml"
  (cd "$(dirname "$rules")" && promtool test rules sluice-alerts.test.yml)
  exit
fi
if command -v python3 >/dev/null 2>&1 && python3 -c 'import yaml' 2>/dev/null; then
  echo "== YAML check of $rules (promtool not installed)"
  python3 - "$rules" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
problems = []
groups = doc.get("groups") if isinstance(doc, dict) else None
if not groups:
    problems.append("no groups")
for g in groups or []:
    for r in g.get("rules", []):
        name = r.get("alert", "?")
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                problems.append(f"{name}: missing {key}")
        if "severity" not in r.get("labels", {}):
            problems.append(f"{name}: no severity label")
        if "for" in r and not str(r["for"])[-1:] in "smhd":
            problems.append(f"{name}: bad duration {r['for']!r}")
if problems:
    print("\n".join(problems)); sys.exit(1)
print(f"ok: {sum(len(g.get('rules', [])) for g in groups)} rules")
PY
  exit
fi
echo "deploy/prometheus/check.sh: SKIPPED: neither promtool nor python3 with PyYAML is installed; the rules were not checked."
