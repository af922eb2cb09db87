#!/usr/bin/env bash
# Back up Autoheal into a new timestamped directory and keep the newest BACKUP_KEEP (14) backups.
#   deploy/backup/backup.sh [ROOT] [autoheal_backup options...]
#   ROOT defaults to $AUTOHEAL_BACKUP_ROOT or var/backups; e.g. --prometheus-data /srv/prometheus
# The work is done by manage.py autoheal_backup (database, JSONL mirror, Prometheus snapshot,
# manifest); this only names the directory and prunes old ones. Cron: 17 3 * * * .../backup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
root=${1:-${AUTOHEAL_BACKUP_ROOT:-var/backups}}
[ $# -gt 0 ] && shift
keep=${BACKUP_KEEP:-14}
target="$root/autoheal-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$root"
"$PY" manage.py autoheal_backup --output "$target" "$@"

# Only complete backups (with a manifest) count; the newest $keep stay.
mapfile -t complete < <(find "$root" -mindepth 2 -maxdepth 2 -name manifest.json -path "$root/autoheal-*" -printf '%h\n' | sort -r)
for old in "${complete[@]:$keep}"; do
  rm -rf -- "$old"
  echo "removed old backup $old"
done
