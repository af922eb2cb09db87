#!/usr/bin/env bash
# Service health: the README's all-in-one process (manage.py autoheal_run: web + worker) starts on
# the embedded defaults, GET / answers the health JSON and GET /readyz answers 200. Loopback only,
# a free port, its own data directory; the process is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
data=$(mktemp -d)
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATABASE_URL= REDIS_URL= AUTOHEAL_DATA_DIR="$data" AUTOHEAL_WEBHOOK_TOKENS=ci-health-token \
  "$PY" manage.py migrate --noinput >/dev/null
DATABASE_URL= REDIS_URL= AUTOHEAL_DATA_DIR="$data" AUTOHEAL_WEBHOOK_TOKENS=ci-health-token \
  "$PY" manage.py autoheal_run --host 127.0.0.1 --port "$port" >"$data/run.log" 2>&1 &
pid=$!
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap stop EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$data/run.log" >&2; echo "service health: autoheal_run exited" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "$base/readyz" >/dev/null || { cat "$data/run.log" >&2; echo "service health: /readyz never answered 200" >&2; exit 1; }
health=$(curl -fsS "$base/")
"$PY" - "$health" <<'PY'
import json
import sys

body = json.loads(sys.argv[1])
expected = {"service", "version", "enabled", "dry_run", "paused_until", "circuit", "queue_depth", "last_event_at"}
missing = expected - body.keys()
if body.get("service") != "autoheal" or missing:
    sys.exit(f"service health: GET / is not the health JSON (missing {sorted(missing)}): {body}")
print(f"service health: GET / {body['service']} {body['version']} enabled={body['enabled']} circuit={body['circuit']}; /readyz 200")
PY
