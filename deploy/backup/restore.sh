#!/usr/bin/env bash
# Restore a backup made by backup.sh, then verify the audit trail's hash chain.
#   deploy/backup/restore.sh DIR [--force] [--prometheus-data DIR]
# Stop the web and worker processes first (docker-compose stop autoheal-web autoheal-stream
# autoheal-worker autoheal-watcher), restore, then start them again.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ $# -lt 1 ]; then
  echo "usage: $0 BACKUP_DIR [--force] [--prometheus-data DIR]" >&2
  exit 2
fi
source_dir=$1
shift
"$PY" manage.py autoheal_restore --input "$source_dir" "$@"
"$PY" manage.py audit_verify
