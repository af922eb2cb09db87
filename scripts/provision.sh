#!/usr/bin/env bash
# Install what the project's commands need, and nothing when it is already there.
#   scripts/provision.sh python   the virtualenv (.venv, or $VENV) with requirements-dev.txt
#   scripts/provision.sh test     Debian packages for the real services the tests use, the
#                                 virtualenv, the OpenID provider's node_modules (npm ci)
#   scripts/provision.sh bench    the virtualenv and wrk
# `make venv`, `make test`, `make bench` and .ci/run call it. Debian packages are installed as
# root, or with sudo when it is present; otherwise it prints the one command to run and stops.
# apt-get update runs only when a package is missing, so a provisioned machine pays a few
# dpkg-query calls and one hash comparison.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# --- Debian packages: the one list. Add a package here, with what needs it. -------------------
TEST_PACKAGES=(
  postgresql redis-server       # the database and the event bus the tests talk to
  docker.io busybox-static      # a private dockerd and the busybox test image (scripts/services.sh)
  prometheus prometheus-alertmanager  # alert rules, end-to-end alert delivery, canary checks
  chromium                      # browser tests (Playwright drives /usr/bin/chromium)
  docker-compose                # compose file checks
  logrotate haproxy             # deployment gate: log rotation, gateway and socket proxy
  git                           # .ci/run tests a fresh clone of HEAD
  mmdebstrap iproute2 curl jq python3-pip  # compose smoke run: images from Debian packages, its own netns
  util-linux                    # the fault campaign: runuser, mount of a small tmpfs
)
BENCH_PACKAGES=(
  wrk                           # HTTP load generator used by bench/
)
# --------------------------------------------------------------------------------------------

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

log() { printf 'provision: %s\n' "$*" >&2; }

missing_packages() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || printf '%s\n' "$pkg"
  done
}

apt_install() {
  local missing=()
  command -v dpkg-query >/dev/null 2>&1 || {
    log "not a Debian/Ubuntu machine: install these packages yourself: $*"
    return 0
  }
  mapfile -t missing < <(missing_packages "$@")
  # Node.js may come from elsewhere (with its own npm): Debian's only when none is on PATH.
  if [ "${NEED_NODE:-0}" = 1 ] && ! { command -v node && command -v npm; } >/dev/null 2>&1; then
    missing+=(nodejs npm)
  fi
  if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  [ ${#missing[@]} -gt 0 ] || return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "provision: missing Debian packages; as root run: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
  fi
  log "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if printf '%s\n' "${missing[@]}" | grep -qx postgresql; then
    postgres_for_tests "${sudo[@]}"
  fi
}

postgres_for_tests() {
  # Only for a PostgreSQL this script has just installed (an empty cluster): the tests connect as
  # the postgres role over 127.0.0.1 without a password (AUTOHEAL_TEST_DATABASE_URL's default),
  # which Debian's default pg_hba.conf refuses. Loopback only; an existing cluster is never touched.
  local hba
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    [ -f "$hba" ] || continue
    if ! "$@" grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
      log "letting the postgres role in over 127.0.0.1 without a password ($hba)"
      "$@" sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    fi
  done
}

python_env() {
  # The stamp holds a hash of the requirement files, so a fresh clone that reuses a virtualenv
  # (.ci/run) does not reinstall, and a changed requirement file does.
  local want
  want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.installed" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  log "installing requirements-dev.txt into $VENV"
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
  echo "$want" > "$VENV/.installed"
}

oidc_modules() {
  # npm ci only when node_modules is missing or older than the lock file.
  local dir=scripts/oidc
  [ -f "$dir/package-lock.json" ] || return 0
  if [ -d "$dir/node_modules/oidc-provider" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    return 0
  fi
  log "npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --silent)
}

case "${1:-}" in
  python)
    python_env
    ;;
  test)
    NEED_NODE=1 apt_install "${TEST_PACKAGES[@]}"
    python_env
    oidc_modules
    ;;
  bench)
    apt_install "${BENCH_PACKAGES[@]}"
    python_env
    ;;
  *)
    echo "usage: $0 python|test|bench" >&2
    exit 2
    ;;
esac
