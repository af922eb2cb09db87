#!/usr/bin/env bash
# Start or stop the real services the tests use, on loopback and private sockets only.
#   scripts/services.sh up     start what is missing (PostgreSQL, Redis, a private dockerd) and
#                              load the busybox test image; prints nothing but progress
#   scripts/services.sh env    print the environment for the tests (eval "$(scripts/services.sh env)"):
#                              it sets DATABASE_URL too, so do not eval it before `make run`
#   scripts/services.sh docker-env
#                              print only DOCKER_HOST for the private dockerd, for trying Docker
#                              remediation with `make run` (the app keeps its own database)
#   scripts/services.sh down   stop only what "up" started
# Everything lives under $AUTOHEAL_SERVICES_DIR (default: .services in the checkout).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${AUTOHEAL_SERVICES_DIR:-$ROOT/.services}
D=$DIR/docker
IMAGE=${AUTOHEAL_TEST_IMAGE:-autoheal-test-busybox:latest}
PG_URL=${AUTOHEAL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/autoheal}
REDIS=${AUTOHEAL_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}

log() { printf 'services: %s\n' "$*" >&2; }

pg_up() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return 0; fi
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    local ver
    ver=$(ls /etc/postgresql 2>/dev/null | head -n1)
    if [ -n "$ver" ]; then
      log "starting PostgreSQL $ver"
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
      echo "$ver" > "$DIR/pg.started"
    fi
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && return 0; sleep 0.5; done
  log "PostgreSQL is not available"; return 1
}

pg_db() {
  local name=${PG_URL##*/}
  if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$name'" postgres | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE \"$name\"" postgres >/dev/null
  fi
}

redis_up() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  if command -v redis-server >/dev/null 2>&1; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
    touch "$DIR/redis.started"
    for _ in $(seq 1 20); do redis-cli ping >/dev/null 2>&1 && return 0; sleep 0.25; done
  fi
  log "Redis is not available"; return 1
}

docker_up() {
  command -v dockerd >/dev/null 2>&1 || { log "dockerd is not installed"; return 1; }
  mkdir -p "$D"
  if [ -S "$D/docker.sock" ] && docker -H "unix://$D/docker.sock" version >/dev/null 2>&1; then
    :
  else
    log "starting a private dockerd"
    rm -f "$D/docker.sock" "$D/docker.pid"
    nohup dockerd --host="unix://$D/docker.sock" --data-root="$D/data" --exec-root="$D/exec" \
      --pidfile="$D/docker.pid" --iptables=false --ip-masq=false --bridge=none \
      >"$D/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
      docker -H "unix://$D/docker.sock" version >/dev/null 2>&1 && break
      sleep 0.5
    done
    docker -H "unix://$D/docker.sock" version >/dev/null 2>&1 || { log "dockerd did not start (see $D/dockerd.log)"; return 1; }
  fi
  if ! docker -H "unix://$D/docker.sock" image inspect "$IMAGE" >/dev/null 2>&1; then
    build_image
  fi
}

build_image() {
  local bb root
  bb=$(command -v busybox || true)
  [ -n "$bb" ] || { log "busybox-static is not installed"; return 1; }
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/www"
  cp "$bb" "$root/bin/busybox"
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | docker -H "unix://$D/docker.sock" import \
    -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
  rm -rf "$root"
  log "test image $IMAGE imported"
}

docker_down() {
  [ -f "$D/docker.pid" ] || return 0
  local sock="unix://$D/docker.sock" pid
  pid=$(cat "$D/docker.pid")
  docker -H "$sock" ps -aq 2>/dev/null | xargs -r docker -H "$sock" rm -f >/dev/null 2>&1 || true
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  umount "$D/exec/netns/default" 2>/dev/null || true
  rm -f "$D/docker.pid"
}

env_out() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then echo "export DATABASE_URL=$PG_URL"; fi
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then echo "export AUTOHEAL_TEST_REDIS_URL=$REDIS"; fi
  if [ -S "$D/docker.sock" ]; then echo "export AUTOHEAL_TEST_DOCKER_HOST=unix://$D/docker.sock"; fi
  echo "export AUTOHEAL_TEST_IMAGE=$IMAGE"
}

mkdir -p "$DIR"
case "${1:-}" in
  up)
    status=0
    pg_up && pg_db || status=1
    redis_up || status=1
    docker_up || status=1
    exit $status
    ;;
  env) env_out ;;
  docker-env)
    [ -S "$D/docker.sock" ] || { log "no private dockerd: run scripts/services.sh up first"; exit 1; }
    echo "export DOCKER_HOST=unix://$D/docker.sock"
    ;;
  down)
    docker_down
    if [ -f "$DIR/redis.started" ] && [ -f "$DIR/redis.pid" ]; then kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true; rm -f "$DIR/redis.started"; fi
    if [ -f "$DIR/pg.started" ]; then pg_ctlcluster --skip-systemctl-redirect "$(cat "$DIR/pg.started")" main stop || true; rm -f "$DIR/pg.started"; fi
    ;;
  *) echo "usage: $0 up|env|docker-env|down" >&2; exit 2 ;;
esac
