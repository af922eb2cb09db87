#!/usr/bin/env bash
# Known-vulnerability scan of the installed Python dependencies (pip-audit over .venv).
#
# Exit codes, so CI can tell the cases apart and nothing passes silently:
#   0  every dependency was checked, none has a known vulnerability (skips are listed)
#   1  known vulnerabilities found (listed with their fix versions)
#   3  COULD NOT CHECK: no vulnerability database answered (offline, or an index without the
#      vulnerability API); a loud warning, and a failure when AUTOHEAL_PIP_AUDIT_REQUIRED=1
# Options: SERVICE=osv (default pypi) picks pip-audit's vulnerability service.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SERVICE=${SERVICE:-pypi}
report=$(mktemp)
errors=$(mktemp)
trap 'rm -f "$report" "$errors"' EXIT

"$VENV/bin/pip-audit" --progress-spinner off --skip-editable --vulnerability-service "$SERVICE" \
  --format json --output "$report" 2>"$errors"
status=$?

"$VENV/bin/python" - "$report" "$errors" "$status" "${AUTOHEAL_PIP_AUDIT_REQUIRED:-0}" <<'PY'
import json
import sys

report, errors, status, required = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] in ("1", "true", "yes")


def could_not_check(why: str) -> None:
    print(f"pip-audit: WARNING: COULD NOT CHECK for known vulnerabilities: {why}")
    if required:
        print("pip-audit: AUTOHEAL_PIP_AUDIT_REQUIRED is set: failing")
    sys.exit(3)


try:
    with open(report, encoding="utf-8") as handle:
        data = json.load(handle)
except (OSError, ValueError):
    with open(errors, encoding="utf-8", errors="replace") as handle:
        tail = handle.read().strip().splitlines()[-1:] or [f"pip-audit exited {status} without a report"]
    could_not_check(tail[0][:300])

deps = data.get("dependencies", [])
skipped = [d for d in deps if "skip_reason" in d]
checked = [d for d in deps if "skip_reason" not in d]
vulnerable = [d for d in checked if d.get("vulns")]
if vulnerable:
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix released"
            print(f"pip-audit: VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})")
    print(f"pip-audit: {len(vulnerable)} of {len(checked)} checked dependencies have known vulnerabilities")
    sys.exit(1)
if not checked:
    could_not_check(f"the vulnerability service answered for none of the {len(deps)} dependencies")
for dep in skipped:
    print(f"pip-audit: not checked: {dep['skip_reason']}")
print(f"pip-audit: {len(checked)} dependencies checked, no known vulnerabilities; {len(skipped)} not checked")
PY
