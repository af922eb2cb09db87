# shellcheck shell=bash
# The fleet part of the compose smoke run: docs/deployment.md, "Running a fleet", on a second Docker
# host. Sourced by compose-smoke.sh, whose helpers it uses (log, pass, fail, wait_for, dc, q, http,
# engine_up, engine_down, nothing_left); fleet_run runs it against the central stack that script
# started, fleet_down stops what it started (also on failure).
#
#   1. the agent host: a second private dockerd in a network namespace of its own, linked to the
#      central's namespace by a veth pair (the central 10.231.255.1, the host 10.231.255.2). The
#      host's containers get addresses from 10.232.0.0/16, which the host forwards to the central
#      and the central routes back: no NAT, and no other address is reachable. The central's
#      entrance is its published :9009 (AUTOHEAL_PUBLISH_ADDR=0.0.0.0 in the central's namespace).
#   2. the images the host needs (autoheal:$AUTOHEAL_TAG, the socket proxy's), copied from the
#      central's engine with docker save | docker load when they differ; the host engine's data is
#      kept between runs like the central's
#   3. as the guide says: autoheal_agent_token create on the central; the token in
#      AUTOHEAL_SECRETS_DIR/agent_token (0444 in a 0700 directory); the agent's compose file up with
#      AUTOHEAL_SERVER=http://$AUTOHEAL_HOSTNAME:9009 and AUTOHEAL_AGENT_HOST (the host has no DNS
#      for the central's name: deploy/smoke/docker-compose.agent.smoke.yml adds a hosts entry)
#   4. checks: the agent's log says it connected and sent its inventory; GET /api/agents (an ops
#      API key) lists it connected with its one opted-in container; its state directory is a
#      writable volume; an opted-in container on the host that turns unhealthy is restarted by the
#      agent (StartedAt changes, the host's socket proxy passed POST /containers/NAME/restart, the
#      central audited action_started and action_ok with data.host = the agent's host); neither
#      side logged the token; `stop` ends the agent with SIGTERM, exit status 0, well within its
#      grace period; down -v leaves nothing on the host.

FLEET_D=$SMOKE/docker2
FLEET_HOST=smoke-host-2
FLEET_PROJECT=autoheal-smoke-agent
FLEET_SECRETS=$RUN/agent-secrets
FLEET_TARGET=smoke-fleet-target
FLEET_CENTRAL_ADDR=10.231.255.1
FLEET_HOST_ADDR=10.231.255.2
FLEET_POOL=10.232.0.0/16
FLEET_FILES=(-f deploy/docker-compose.agent.yml -f deploy/docker-compose.agent.local.yml
  -f deploy/smoke/docker-compose.agent.smoke.yml)
FLEET_GRACE=60

# docker and docker-compose on the agent host.
d2() { DOCKER_HOST=unix://$FLEET_D/docker.sock docker "$@"; }
dca() {
  DOCKER_HOST=unix://$FLEET_D/docker.sock COMPOSE_PROJECT_NAME=$FLEET_PROJECT \
    AUTOHEAL_DOCKER_SOCKET=$FLEET_D/docker.sock AUTOHEAL_SECRETS_DIR=$FLEET_SECRETS \
    AUTOHEAL_SERVER=http://$AUTOHEAL_HOSTNAME:9009 AUTOHEAL_AGENT_HOST=$FLEET_HOST \
    AUTOHEAL_SMOKE_CENTRAL_ADDR=$FLEET_CENTRAL_ADDR docker-compose "${FLEET_FILES[@]}" "$@"
}
ops() { http -H @"$RUN/ops-header" "$@"; }

fleet_link() { # the veth pair between the central's namespace and the host's, and the routes
  local central host
  central=/proc/$(cat "$D/docker.pid")/ns/net
  host=$(cat "$FLEET_D/docker.pid")
  nsenter --net="$central" ip link add ahfleet0 type veth peer name ahfleet1 netns "$host"
  nsenter --net="$central" ip addr add "$FLEET_CENTRAL_ADDR/30" dev ahfleet0
  nsenter --net="$central" ip link set ahfleet0 up
  nsenter --net="$central" ip route add "$FLEET_POOL" via "$FLEET_HOST_ADDR"
  nsenter --net="/proc/$host/ns/net" ip addr add "$FLEET_HOST_ADDR/30" dev ahfleet1
  nsenter --net="/proc/$host/ns/net" ip link set ahfleet1 up
  nsenter --net="/proc/$host/ns/net" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
}

fleet_images() { # copy the host's images from the central's engine when they differ
  local image
  for image in "autoheal:$AUTOHEAL_TAG" autoheal-local/haproxy:bookworm; do
    if [ "$(docker image inspect -f '{{.Id}}' "$image")" != "$(d2 image inspect -f '{{.Id}}' "$image" 2>/dev/null)" ]; then
      log "docker save $image | docker load (the agent host)"
      docker save "$image" | d2 load -q >/dev/null
    fi
  done
}

agent_listed() { # GET /api/agents: the agent connected, with its one opted-in container
  ops http://127.0.0.1:9009/api/agents \
    | jq -e --arg host "$FLEET_HOST" '[.agents[] | select(.host == $host and .connected and .containers == 1)] | length == 1'
}
agent_logged() { dca logs --no-color autoheal-agent 2>&1 | grep -F -- "$1" >/dev/null; }
fleet_started_at() { d2 inspect -f '{{.State.StartedAt}}' "$FLEET_TARGET"; }
fleet_started_changed() { [ "$(fleet_started_at)" != "$1" ]; }
fleet_health_is() { [ "$(d2 inspect -f '{{.State.Health.Status}}' "$FLEET_TARGET")" = "$1" ]; }
audited_on_host() { # audited_on_host KIND: events of KIND for the target with data.host = the agent's host
  q "from audit.models import AuditEvent as E; print(E.objects.filter(kind='$1', target='$FLEET_TARGET', data__host='$FLEET_HOST').count())"
}
nothing_left_on_host() { DOCKER_HOST=unix://$FLEET_D/docker.sock nothing_left; }

fleet_run() {
  log "fleet: a second Docker host ($FLEET_D) linked to the central's network namespace"
  [ ! -f "$FLEET_D/unshare.pid" ] || engine_down "$FLEET_D"
  engine_up "$FLEET_D" --default-address-pool "base=$FLEET_POOL,size=24"
  fleet_link
  fleet_images
  # An opted-in container on the agent host, with a health check the run turns unhealthy.
  d2 run -d --name "$FLEET_TARGET" --label autoheal.enable=true --init --network none \
    --health-cmd 'test -f /tmp/healthy' --health-interval 1s --health-timeout 2s --health-retries 1 \
    "autoheal:$AUTOHEAL_TAG" sh -c 'touch /tmp/healthy && exec sleep infinity' >/dev/null

  # 1. A token per host, on the central (printed once).
  local token key agent before proxy target_id took logs stop_at agent_ms
  token=$(dc exec -T autoheal-web python manage.py autoheal_agent_token create --host "$FLEET_HOST" 2>/dev/null | tr -d '\r')
  [[ $token == ahag_* ]] || fail "autoheal_agent_token create printed no token"
  # 2. The token as a file on the host, then the agent's compose file.
  install -d -m 700 "$FLEET_SECRETS"
  printf '%s\n' "$token" >"$FLEET_SECRETS/agent_token" && chmod 444 "$FLEET_SECRETS/agent_token"
  log "fleet: AUTOHEAL_SERVER=http://$AUTOHEAL_HOSTNAME:9009 AUTOHEAL_AGENT_HOST=$FLEET_HOST up -d (the agent's compose file)"
  dca up -d 2>&1 | sed 's/^/  /' >&2
  agent=$(dca ps -q autoheal-agent)
  [ -n "$agent" ] || fail "the agent's container was not created"

  wait_for 90 "the agent logs: connected to http://$AUTOHEAL_HOSTNAME:9009 as host $FLEET_HOST" \
    agent_logged "connected to http://$AUTOHEAL_HOSTNAME:9009 as host $FLEET_HOST"
  wait_for 30 "the agent logs: inventory sent: 1 opted-in container(s)" agent_logged "inventory sent: 1 opted-in container(s)"
  key=$(dc exec -T autoheal-web python manage.py autoheal_apikey create --name smoke-fleet-ops --role ops 2>/dev/null | tr -d '\r')
  [ -n "$key" ] || fail "autoheal_apikey create printed no key"
  (umask 077 && printf 'Authorization: Bearer %s\n' "$key" >"$RUN/ops-header")
  wait_for 30 "GET /api/agents (ops key) lists $FLEET_HOST connected with its 1 container" agent_listed
  [ "$(d2 inspect -f '{{range .Mounts}}{{if eq .Destination "/var/lib/autoheal-agent"}}{{.Type}}{{end}}{{end}}' "$agent")" = volume ] \
    || fail "the agent's /var/lib/autoheal-agent is not a volume"
  d2 exec "$agent" sh -c 'test "$AUTOHEAL_AGENT_STATE_DIR" = /var/lib/autoheal-agent && touch "$AUTOHEAL_AGENT_STATE_DIR/.w" && rm "$AUTOHEAL_AGENT_STATE_DIR/.w"' \
    || fail "the agent's state directory (AUTOHEAL_AGENT_STATE_DIR) is not writable by its user"
  pass "the agent's state directory AUTOHEAL_AGENT_STATE_DIR=/var/lib/autoheal-agent is a volume its user can write"

  # An opted-in container on the agent host turns unhealthy: the agent restarts it.
  wait_for 30 "$FLEET_TARGET (on $FLEET_HOST) is healthy" fleet_health_is healthy
  before=$(fleet_started_at)
  d2 exec "$FLEET_TARGET" rm -f /tmp/healthy
  wait_for 120 "$FLEET_TARGET is restarted on $FLEET_HOST (State.StartedAt changed)" fleet_started_changed "$before"
  wait_for 60 "the central audited action_started for $FLEET_TARGET with data.host=$FLEET_HOST" \
    at_least 1 audited_on_host action_started
  wait_for 60 "the central audited action_ok for $FLEET_TARGET with data.host=$FLEET_HOST" \
    at_least 1 audited_on_host action_ok
  proxy=$(dca ps -q docker-socket-proxy)
  target_id=$(d2 inspect -f '{{.Id}}' "$FLEET_TARGET")
  d2 logs "$proxy" 2>&1 | grep -E >/dev/null "\"POST /(v[0-9.]+/)?containers/($FLEET_TARGET|$target_id)/restart[? ].* 204 |^[^\"]* 204 .*\"POST /(v[0-9.]+/)?containers/($FLEET_TARGET|$target_id)/restart[? ]" \
    || fail "the agent host's socket proxy did not pass the restart"
  pass "the restart went through the agent host's socket proxy (POST /containers/ID/restart answered 204)"
  [ "$(q "from remediation.models import Job; print(Job.objects.filter(target='$FLEET_TARGET').exclude(host='$FLEET_HOST').count())")" = 0 ] \
    || fail "a job for $FLEET_TARGET was placed elsewhere than $FLEET_HOST"
  pass "every job for $FLEET_TARGET was placed on $FLEET_HOST (found in its inventory)"

  logs=$(dca logs --no-color 2>&1 && dc logs --no-color 2>&1) || fail "the logs could not be read"
  [ -n "$logs" ] || fail "the logs are empty"
  if grep -F -- "$token" >/dev/null <<<"$logs"; then
    fail "the agent's token appears in a log"
  fi
  pass "the agent's token is in no log (agent host, central)"

  # Stopping is SIGTERM: the agent exits by itself, long before its grace period; then the proxy
  # (compose stops the agent first, as it depends on the proxy).
  log "fleet: stop (the agent's compose file)"
  took=$SECONDS
  stop_at=$(date +%s%N)
  dca stop 2>&1 | sed 's/^/  /' >&2
  took=$((SECONDS - took))
  # How long the agent itself took, from the stop to its exit (milliseconds).
  agent_ms=$((($(date -d "$(d2 inspect -f '{{.State.FinishedAt}}' "$agent")" +%s%N) - stop_at) / 1000000))
  [ "$(d2 inspect -f '{{.State.ExitCode}}' "$agent")" = 0 ] \
    || fail "the agent exited with status $(d2 inspect -f '{{.State.ExitCode}}' "$agent") on stop (137: killed after the grace period)"
  agent_logged "agent of host $FLEET_HOST stopped" || fail "the agent did not log its stop"
  [ "$(d2 inspect -f '{{.State.ExitCode}}' "$proxy")" = 0 ] \
    || fail "the agent host's socket proxy exited with status $(d2 inspect -f '{{.State.ExitCode}}' "$proxy") on stop"
  [ "$took" -lt 20 ] || fail "stop took ${took}s (the agent's grace period is ${FLEET_GRACE}s, the proxy's stop 5s)"
  pass "stop: the agent exited on SIGTERM with status 0 after ${agent_ms} ms (grace period ${FLEET_GRACE}s), the proxy with 0, ${took}s together"
  dca down -v --timeout 10 2>&1 | sed 's/^/  /' >&2
  d2 rm -f "$FLEET_TARGET" >/dev/null
  wait_for 30 "down -v leaves no container, network or volume on the agent host" nothing_left_on_host
  rm -rf "$FLEET_SECRETS" "$RUN/ops-header"
  engine_down "$FLEET_D"
}

fleet_down() {
  [ -f "$FLEET_D/unshare.pid" ] || return 0
  if d2 version >/dev/null 2>&1; then
    dca down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  fi
  engine_down "$FLEET_D"
}
