#!/usr/bin/env bash
# Deployment files: both compose files resolve, production refuses to resolve without its public
# host name, the logrotate and haproxy configs parse. Installs haproxy (Debian) for these checks
# and for the socket-proxy test when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v haproxy >/dev/null 2>&1; then
  echo "deploy: installing haproxy"
  apt-get install -y -q --no-install-recommends haproxy >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends haproxy >/dev/null; }
fi

base=deploy/docker-compose.yml
prod=deploy/docker-compose.prod.yml
docker-compose -f "$base" config --quiet
echo "deploy: $base resolves"
AUTOHEAL_HOSTNAME=autoheal.example docker-compose -f "$base" -f "$prod" config --quiet
echo "deploy: $base + $prod resolve"
local_images=deploy/docker-compose.local.yml
AUTOHEAL_HOSTNAME=autoheal.example docker-compose -f "$base" -f "$prod" -f "$local_images" config --quiet
echo "deploy: $base + $prod + $local_images resolve"
if env -u AUTOHEAL_HOSTNAME docker-compose -f "$base" -f "$prod" config --quiet >/dev/null 2>&1; then
  echo "deploy: production must refuse to resolve without AUTOHEAL_HOSTNAME" >&2
  exit 1
fi
echo "deploy: production without AUTOHEAL_HOSTNAME is refused"

state=$(mktemp)
trap 'rm -f "$state"' EXIT
if ! out=$(logrotate -d -s "$state" deploy/logrotate/audit.conf 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "deploy: logrotate -d deploy/logrotate/audit.conf passes"

# -c parses the file; the gateway's service names only resolve inside the compose network.
(cd /tmp && haproxy -c -q -f "$OLDPWD/deploy/socket-proxy/haproxy.cfg")
(cd /tmp && haproxy -c -q -f "$OLDPWD/deploy/gateway/haproxy.cfg" 2>/dev/null)
echo "deploy: haproxy configs (socket proxy, gateway) parse"
