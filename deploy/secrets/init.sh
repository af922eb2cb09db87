#!/usr/bin/env bash
# Create the secret files the compose files read, with fresh random values.
#   deploy/secrets/init.sh [DIR]     DIR defaults to this directory (docker-compose.yml);
#                                    production uses /etc/autoheal/secrets (AUTOHEAL_SECRETS_DIR)
# Existing files are kept, so running it again never changes a secret in use. The directory is
# root-only (0700); the files are world-readable (0444) because each service reads its file as
# its own user inside its container, where the bind mount is the only way to reach it.
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)}
mkdir -p "$dir"
chmod 0700 "$dir"

random() { head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "$1"; }

put() {
  local name=$1 value=$2
  if [ -e "$dir/$name" ]; then
    echo "kept    $dir/$name"
  else
    (umask 077 && printf '%s\n' "$value" >"$dir/$name")
    chmod 0444 "$dir/$name"
    echo "created $dir/$name"
  fi
}

put secret_key "$(random 64)"
put postgres_password "$(random 32)"
put database_url "postgres://autoheal:$(tr -d '\n' <"$dir/postgres_password")@postgres:5432/autoheal"
put grafana_admin_password "$(random 24)"
token=$(random 48)
# Autoheal accepts every token in its list (one a line, for rotation); Alertmanager sends one.
put autoheal_webhook_tokens "$token"
put alertmanager_webhook_token "$token"
# Prometheus sends it to Autoheal's /metrics (Bearer), Autoheal compares (AUTOHEAL_METRICS_TOKEN_FILE).
put autoheal_metrics_token "$(random 48)"
