#!/usr/bin/env bash
# Known vulnerabilities in the installed dependencies (scripts/pip_audit.sh). Found ones fail the
# gate. When no vulnerability database answers, the script prints COULD NOT CHECK and this gate
# goes on, unless AUTOHEAL_PIP_AUDIT_REQUIRED=1 (set where the database is reachable).
set -uo pipefail
cd "$(dirname "$0")/../.."
scripts/pip_audit.sh
status=$?
if [ "$status" -eq 3 ] && [ "${AUTOHEAL_PIP_AUDIT_REQUIRED:-0}" != "1" ]; then
  echo "pip-audit gate: NOT CHECKED (see the warning above); set AUTOHEAL_PIP_AUDIT_REQUIRED=1 to make this fatal"
  exit 0
fi
exit "$status"
