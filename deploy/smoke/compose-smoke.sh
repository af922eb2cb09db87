#!/usr/bin/env bash
# The compose smoke run (`make compose-smoke`): the production stack as the deployment guide runs
# it, on a private Docker Engine, checked end to end.
#
#   1. a private dockerd in its own network namespace (own socket, data-root, exec-root, pidfile;
#      its published ports are in that namespace, which only loopback and the fleet's agent host
#      reach, so nothing collides with the host's)
#   2. `make images` into it (Debian bases: the engine has no network beyond that)
#   3. docker-compose.yml + docker-compose.prod.yml + docker-compose.local.yml (+ this directory's
#      smoke target) `up -d` in canary mode, then checks:
#      GET :9009/ says dry_run true; Prometheus scrapes Autoheal (with the metrics token);
#      Alertmanager delivers to the webhook through the compose network; an opted-in container that
#      turns unhealthy gets action_dry_run; after AUTOHEAL_DRY_RUN=false + up -d, dry_run is false
#      and the container is restarted through the socket proxy; docker inspect shows the limits and
#      unless-stopped; a forced logrotate run rotates the mirror while Autoheal writes, losing
#      nothing; autoheal_backup from the running stack, restored into a fresh stack, gives the same
#      audit count and passes audit_verify; down -v leaves no container, network or volume.
#   4. the deployment guide's "Running a fleet" on a second private dockerd, the agent host, linked
#      to the first one's network namespace (deploy/smoke/fleet.sh): a token created on the
#      central, the agent's compose file up, GET /api/agents lists it connected with its container,
#      an opted-in container there that turns unhealthy is restarted by the agent (audited with
#      data.host), the agent stops on SIGTERM with status 0, down -v leaves nothing
#   5. stops everything it started (by PID), also on failure.
#
# Environment: AUTOHEAL_SMOKE_DIR (default var/compose-smoke: the engines' data, kept between runs as
# a cache of built layers, and the run's secrets and backup, removed at the end), AUTOHEAL_IMAGE_CACHE (see
# deploy/images/build.sh). Needs root (dockerd, unshare, nsenter), docker.io, docker-compose, iproute2,
# mmdebstrap, curl and jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
SMOKE=${AUTOHEAL_SMOKE_DIR:-$ROOT/var/compose-smoke}
D=$SMOKE/docker
RUN=$SMOKE/run
PROJECT=autoheal-smoke

export DOCKER_HOST=unix://$D/docker.sock
export COMPOSE_PROJECT_NAME=$PROJECT
export COMPOSE_HTTP_TIMEOUT=300
export AUTOHEAL_IMAGE_BASES=debian
export AUTOHEAL_TAG=smoke
export AUTOHEAL_HOSTNAME=autoheal.smoke.invalid
export AUTOHEAL_SECRETS_DIR=$RUN/secrets
export AUTOHEAL_DOCKER_SOCKET=$D/docker.sock
export AUTOHEAL_DRY_RUN=true
# The engine's network namespace holds only loopback and the link to the fleet's agent host
# (deploy/smoke/fleet.sh), which reaches the central's entrance on its published :9009.
export AUTOHEAL_PUBLISH_ADDR=0.0.0.0
FILES=(-f deploy/docker-compose.yml -f deploy/docker-compose.prod.yml -f deploy/docker-compose.local.yml
  -f deploy/smoke/docker-compose.smoke.yml)
AUTOHEAL_SERVICES=(autoheal-web autoheal-stream autoheal-worker autoheal-watcher)

started=$SECONDS
checks=0
log() { printf 'compose-smoke [%4ds]: %s\n' "$((SECONDS - started))" "$*" >&2; }
pass() { checks=$((checks + 1)); log "PASS $*"; }
fail() { log "FAIL $*"; exit 1; }
dc() { docker-compose "${FILES[@]}" "$@"; }
# The engine's network namespace is where its published ports are.
innet() { nsenter --net="/proc/$(cat "$D/docker.pid")/ns/net" "$@"; }
http() { innet curl -fsS --max-time 10 "$@"; }

for tool in dockerd docker docker-compose mmdebstrap unshare nsenter ip curl jq; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done

engine_up() { # engine_up DIR [DOCKERD ARGUMENTS...]: a private dockerd with its socket and data in DIR
  local dir=$1
  shift
  mkdir -p "$dir"
  rm -f "$dir/docker.sock" "$dir/docker.pid"
  log "starting a private dockerd ($dir)"
  # unshare: a network namespace of its own, with only loopback; dockerd's bridges live in it.
  unshare --net --fork sh -c 'ip link set lo up && exec "$@"' sh \
    dockerd --host="unix://$dir/docker.sock" --data-root="$dir/data" --exec-root="$dir/exec" \
    --pidfile="$dir/docker.pid" --iptables=false --ip-masq=false --bridge=none "$@" >"$dir/dockerd.log" 2>&1 &
  echo $! >"$dir/unshare.pid"
  for _ in $(seq 1 60); do
    docker -H "unix://$dir/docker.sock" version >/dev/null 2>&1 && [ -s "$dir/docker.pid" ] && return 0
    sleep 0.5
  done
  fail "dockerd did not start (see $dir/dockerd.log)"
}

engine_down() { # engine_down DIR: remove what runs in the engine of DIR, then stop it
  local dir=$1 pid
  [ -f "$dir/unshare.pid" ] || return 0
  if docker -H "unix://$dir/docker.sock" version >/dev/null 2>&1; then
    # Keep the built images as a cache for the next run, without the superseded layers.
    DOCKER_HOST=unix://$dir/docker.sock sh -c 'docker ps -aq | xargs -r docker rm -f
      docker volume ls -q | xargs -r docker volume rm
      docker network prune -f
      docker image prune -f' >/dev/null 2>&1 || true
  fi
  pid=$(cat "$dir/docker.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  kill "$(cat "$dir/unshare.pid")" 2>/dev/null || true
  umount "$dir/exec/netns/default" 2>/dev/null || true
  rm -f "$dir/unshare.pid" "$dir/docker.pid" "$dir/docker.sock"
}

central_down() {
  [ -f "$D/unshare.pid" ] || return 0
  if docker version >/dev/null 2>&1; then
    dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  fi
  engine_down "$D"
}

cleanup() {
  local status=$?
  if [ "$status" -ne 0 ] && docker version >/dev/null 2>&1; then
    log "logs of the failed run (last lines of each service):"
    dc ps >&2 || true
    dc logs --no-color --tail 30 >&2 || true
    if d2 version >/dev/null 2>&1; then
      log "the agent host's containers and logs (last lines):"
      d2 ps -a >&2 || true
      dca logs --no-color --tail 30 >&2 || true
    fi
  fi
  fleet_down
  central_down
  # The run's secrets and backup are of no use afterwards.
  rm -rf "$RUN"
  log "stopped everything it started"
  exit "$status"
}
# shellcheck source=deploy/smoke/fleet.sh
. deploy/smoke/fleet.sh
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS WHAT COMMAND...: retry COMMAND until it succeeds
  local limit=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what (not within ${limit}s)"
    sleep 2
  done
  pass "$what"
}

# One Django query in a running container of the stack; prints its result.
q() { dc exec -T autoheal-web python manage.py shell --verbosity 0 --command "$1" | tr -d '\r'; }
audit_count() { # audit_count KIND [TARGET]
  q "from audit.models import AuditEvent as E; print(E.objects.filter(kind='$1'${2:+, target='$2'}).count())"
}
at_least() { # at_least N COMMAND...: COMMAND prints a number >= N
  local n=$1 got
  shift
  got=$("$@") || return 1
  [ "${got:-0}" -ge "$n" ]
}
dry_run_is() { http http://127.0.0.1:9009/ | jq -e --argjson want "$1" '.dry_run == $want'; }
service_healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$1")")" = healthy ]; }
scraped() {
  http -G http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=up{job="autoheal"}' \
    | jq -e '.data.result[0].value[1] == "1"'
}
logged_start() {
  docker logs "$(dc ps -q autoheal-watcher)" 2>&1 | grep 'watching Docker health events' >/dev/null \
    && docker logs "$(dc ps -q autoheal-worker)" 2>&1 | grep ' started ' >/dev/null
}
health_of() { docker inspect -f '{{.State.Health.Status}}' "$target"; }
health_is() { [ "$(health_of)" = "$1" ]; }
started_at() { docker inspect -f '{{.State.StartedAt}}' "$target"; }
started_changed() { [ "$(started_at)" != "$1" ]; }
# grep reads all its input (never -q in a pipeline: under pipefail, the writer killed by SIGPIPE
# after an early match would turn the match into a failure).
nothing_left() {
  [ -z "$(docker ps -aq)" ] || { docker ps -a >&2; return 1; }
  [ -z "$(docker volume ls -q)" ] || { docker volume ls >&2; return 1; }
  # The engine's own networks (host, none) are all that may remain.
  [ -z "$(docker network ls --format '{{.Name}}' | grep -v -x -e host -e none -e bridge)" ] \
    || { docker network ls >&2; return 1; }
}

# --- the engine and the images ---------------------------------------------------------------
[ ! -f "$D/unshare.pid" ] || central_down
engine_up "$D"
log "make images"
make --no-print-directory images
rm -rf "$RUN"
mkdir -p "$RUN/backup"
deploy/secrets/init.sh "$AUTOHEAL_SECRETS_DIR" >/dev/null
# The backup is written by the image's user (uid 10001).
chown 10001:10001 "$RUN/backup"

# --- canary --------------------------------------------------------------------------------
log "up -d (production file, canary)"
dc up -d --quiet-pull 2>&1 | sed 's/^/  /' >&2
wait_for 240 "GET :9009/ answers dry_run: true (canary)" dry_run_is true
for service in "${AUTOHEAL_SERVICES[@]}" postgres redis prometheus alertmanager docker-socket-proxy autoheal-gateway; do
  wait_for 180 "$service is healthy" service_healthy "$service"
done

wait_for 120 "Prometheus scrapes Autoheal (up{job=\"autoheal\"} == 1, with the metrics token)" scraped
code=$(dc exec -T autoheal-web python -c 'import urllib.error, urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:9009/metrics", timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)' | tr -d '\r')
[ "$code" = 401 ] || fail "/metrics without the token answered $code, not 401"
pass "/metrics without the token answers 401: the scrape above used it"

http -X POST -H 'Content-Type: application/json' http://127.0.0.1:9093/api/v2/alerts \
  -d '[{"labels": {"alertname": "ComposeSmokeDelivery", "remediate": "true", "project": "autoheal", "env": "smoke", "container": "no-such-container"}, "annotations": {"summary": "compose smoke: Alertmanager to Autoheal"}}]' >/dev/null
wait_for 90 "Alertmanager delivers to Autoheal's webhook through the compose network" \
  at_least 1 q "from remediation.models import Alert; print(Alert.objects.filter(alertname='ComposeSmokeDelivery').count())"

dc exec -T autoheal-web python manage.py autoheal_policies import - <deploy/smoke/policies.yaml >/dev/null
target=$(docker inspect -f '{{.Name}}' "$(dc ps -q smoke-target)")
target=${target#/}
wait_for 60 "$target is healthy" health_is healthy
before=$(started_at)
docker exec "$target" rm -f /tmp/healthy
wait_for 60 "$target turns unhealthy" health_is unhealthy
wait_for 120 "the unhealthy $target gets action_dry_run" at_least 1 audit_count action_dry_run "$target"
[ "$(started_at)" = "$before" ] || fail "the dry run restarted $target"
[ "$(audit_count action_started)" = 0 ] || fail "an action started in canary mode"
pass "nothing ran for real in canary mode ($target not restarted, no action_started)"

# --- the flip to production ----------------------------------------------------------------
docker exec "$target" touch /tmp/healthy
wait_for 60 "$target is healthy again" health_is healthy
log "AUTOHEAL_DRY_RUN=false up -d"
AUTOHEAL_DRY_RUN=false dc up -d 2>&1 | sed 's/^/  /' >&2
export AUTOHEAL_DRY_RUN=false
wait_for 180 "GET :9009/ answers dry_run: false (production)" dry_run_is false
# The recreated worker and watcher are at work once they say so (their health checks run a minute apart).
wait_for 120 "the recreated worker and watcher are running" logged_start
before=$(started_at)
# Unhealthy, restarted and healthy again take about two seconds: the restart is what to wait for.
docker exec "$target" rm -f /tmp/healthy
wait_for 120 "$target is restarted (State.StartedAt changed)" started_changed "$before"
wait_for 60 "the restart is audited as action_ok" at_least 1 audit_count action_ok "$target"
proxy=$(dc ps -q docker-socket-proxy)
target_id=$(docker inspect -f '{{.Id}}' "$target")
docker logs "$proxy" 2>&1 | grep -E >/dev/null "\"POST /(v[0-9.]+/)?containers/($target|$target_id)/restart[? ].* 204 |^[^\"]* 204 .*\"POST /(v[0-9.]+/)?containers/($target|$target_id)/restart[? ]" \
  || fail "the socket proxy did not pass the restart"
pass "the restart went through the socket proxy (its log has POST /containers/ID/restart answered 204)"

# --- limits and restart policy -------------------------------------------------------------
for service in "${AUTOHEAL_SERVICES[@]}"; do
  id=$(dc ps -q "$service")
  got=$(docker inspect -f '{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.ReadonlyRootfs}} {{.Config.User}}' "$id")
  [ "$got" = "1000000000 536870912 unless-stopped true autoheal" ] \
    || fail "$service: docker inspect says '$got', want 1 CPU, 512 MB, unless-stopped, read-only, user autoheal"
done
pass "docker inspect: Autoheal's processes have 1 CPU, 512 MB, unless-stopped, a read-only root, user autoheal"
for service in postgres redis prometheus alertmanager docker-socket-proxy autoheal-gateway audit-logrotate; do
  [ "$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$(dc ps -q "$service")")" = unless-stopped ] \
    || fail "$service does not restart unless-stopped"
done
pass "docker inspect: every other service restarts unless-stopped"

# --- a fleet: an agent on a second Docker host (deploy/smoke/fleet.sh) ----------------------
fleet_run

# --- log rotation while Autoheal writes ----------------------------------------------------
token=$(head -n1 "$AUTOHEAL_SECRETS_DIR/alertmanager_webhook_token")
post_alerts() {
  local i
  for i in $(seq 1 "$1"); do
    http -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      http://127.0.0.1:9009/alert -d "{\"version\": \"4\", \"status\": \"firing\", \"receiver\": \"autoheal-webhook\", \"groupLabels\": {}, \"commonLabels\": {}, \"commonAnnotations\": {}, \"externalURL\": \"http://alertmanager:9093\", \"groupKey\": \"smoke-$2-$i\", \"alerts\": [{\"status\": \"firing\", \"labels\": {\"alertname\": \"ComposeSmokeRotation\", \"batch\": \"$2\", \"n\": \"$i\"}, \"annotations\": {}, \"startsAt\": \"$(date -u +%Y-%m-%dT%H:%M:%S.000Z)\", \"endsAt\": \"0001-01-01T00:00:00Z\", \"generatorURL\": \"\", \"fingerprint\": \"$(printf '%s-%s' "$2" "$i" | sha256sum | cut -c1-16)\"}]}" >/dev/null
  done
}
mirror=/var/lib/autoheal/audit/audit.jsonl
post_alerts 20 before
post_alerts 40 during &
writer=$!
sleep 2
docker exec "$(dc ps -q audit-logrotate)" logrotate --force --state /var/lib/autoheal/audit/.logrotate.state \
  /etc/autoheal/logrotate/audit.conf
wait "$writer" || fail "posting alerts to the webhook failed during the rotation"
post_alerts 10 after
dc exec -T autoheal-web test -s "$mirror.1" || fail "logrotate did not rotate $mirror"
dc exec -T autoheal-web test -s "$mirror" || fail "Autoheal did not go on writing $mirror after the rotation"
mirror_ids() {
  dc exec -T autoheal-web sh -c "cat $mirror.1 $mirror" | jq -r '.id' | sort -u | wc -l
}
mirror_complete() { [ "$(mirror_ids)" = "$(q 'from audit.models import AuditEvent; print(AuditEvent.objects.count())')" ]; }
wait_for 60 "a forced logrotate rotated the mirror while Autoheal wrote, and every audit event is in it once" mirror_complete

# --- backup, then restore into a fresh stack -----------------------------------------------
log "autoheal_backup from the running stack"
dc run --rm --no-deps -v "$RUN/backup:/var/backups/autoheal" autoheal-web \
  python manage.py autoheal_backup --output /var/backups/autoheal/smoke --prometheus '' >&2
audit_rows=$(jq -r '.database.counts["audit.auditevent"]' "$RUN/backup/smoke/manifest.json")
[ "$audit_rows" -gt 0 ] || fail "the backup holds no audit events"
pass "autoheal_backup: $audit_rows audit events"

log "down -v"
dc down -v --timeout 10 2>&1 | sed 's/^/  /' >&2
wait_for 30 "down -v leaves no container, network or volume behind" nothing_left

log "a fresh stack: up -d postgres redis, autoheal_restore, then up -d"
dc up -d postgres redis 2>&1 | sed 's/^/  /' >&2
wait_for 120 "the fresh database is healthy" service_healthy postgres
dc run --rm --no-deps -v "$RUN/backup:/var/backups/autoheal" autoheal-web \
  python manage.py autoheal_restore --input /var/backups/autoheal/smoke >&2
restored=$(dc run --rm --no-deps autoheal-web python manage.py shell --verbosity 0 \
  --command 'from audit.models import AuditEvent; print(AuditEvent.objects.count())' | tr -d '\r')
[ "$restored" = "$audit_rows" ] || fail "the restored stack has $restored audit events, the backup $audit_rows"
pass "the restored stack has the backup's $audit_rows audit events"
dc run --rm --no-deps autoheal-web python manage.py audit_verify >&2 || fail "audit_verify failed on the restored stack"
pass "audit_verify passes on the restored stack"
dc up -d 2>&1 | sed 's/^/  /' >&2
wait_for 240 "the restored stack answers GET :9009/" dry_run_is false
dc exec -T autoheal-web python manage.py audit_verify >&2 || fail "audit_verify failed on the running restored stack"
pass "audit_verify passes on the running restored stack"

log "down -v"
dc down -v --timeout 10 2>&1 | sed 's/^/  /' >&2
wait_for 30 "down -v leaves no container, network or volume behind (fresh stack)" nothing_left

log "all $checks checks passed in $((SECONDS - started))s"
