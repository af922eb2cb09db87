#!/usr/bin/env bash
# Build every image the compose files use, into the Docker Engine at DOCKER_HOST (`make images`).
#
#   deploy/images/build.sh            auto: upstream bases when a registry answers, else Debian's
#   AUTOHEAL_IMAGE_BASES=registry     official python:3.11-slim-bookworm and the upstream images
#   AUTOHEAL_IMAGE_BASES=debian       equivalents built from Debian packages, no registry needed
#
# The Debian path: mmdebstrap builds a bookworm root filesystem on this machine with every package
# an image needs (downloads use this machine's network, never the engine's), `docker import` turns
# it into a base image, and a small Dockerfile per image (deploy/images/<name>/) adds the entry
# point, the user and the directories the compose files expect. Python packages come from a
# wheelhouse built on this machine (pip wheel -r requirements.txt) that the Autoheal build
# installs with --no-index. Use the result with deploy/docker-compose.local.yml (docs/deployment.md,
# "Images without a registry").
#
# Root filesystems and the wheelhouse are cached in AUTOHEAL_IMAGE_CACHE (default
# ~/.cache/autoheal/images), keyed by their package lists and requirements.txt, and rebuilt after
# AUTOHEAL_IMAGE_CACHE_DAYS days (7) so security updates arrive. Without the cache everything is
# built from scratch. AUTOHEAL_DEBIAN_MIRROR (space-separated mmdebstrap mirror arguments) replaces
# Debian's default mirrors. Needs: docker, mmdebstrap (Debian package), and for the wheelhouse a
# Python of the image's version with pip (AUTOHEAL_WHEEL_PYTHON, default Debian's /usr/bin/python3: on Debian 12 the same 3.11.2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=${AUTOHEAL_IMAGE_BASES:-auto}
TAG=${AUTOHEAL_TAG:-latest}
CACHE=${AUTOHEAL_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autoheal/images}
CACHE_DAYS=${AUTOHEAL_IMAGE_CACHE_DAYS:-7}
PYTHON=${AUTOHEAL_WHEEL_PYTHON:-/usr/bin/python3}
SUITE=bookworm
# Bump when the way a root filesystem is made changes, so cached ones are not reused.
RECIPE=1
UPSTREAM_PYTHON=python:3.11-slim-bookworm
LOCAL=autoheal-local

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker (the client) is not installed"
docker version >/dev/null 2>&1 || die "no Docker Engine answers at ${DOCKER_HOST:-the default socket}"

# One line per image: name, then the Debian packages of its root filesystem.
debian_images() {
  cat <<'LIST'
python python3 python3-venv python-is-python3 postgresql-client-15 passwd ca-certificates
postgres postgresql-15 passwd
redis redis-server redis-tools
prometheus prometheus wget ca-certificates
alertmanager prometheus-alertmanager wget ca-certificates
haproxy haproxy wget
logrotate logrotate
LIST
}

fresh() { # fresh FILE: exists and is younger than the cache's age limit
  [ -e "$1" ] && [ -z "$(find "$1" -maxdepth 0 -mtime +"$CACHE_DAYS" 2>/dev/null)" ]
}

wheelhouse() { # wheelhouse IMAGE: wheels for the Python of IMAGE, into .wheels/
  # Environment markers (python_full_version < "3.11.3" and the like) are decided by the Python
  # that resolves, so the wheelhouse is resolved by the same Python version as the image's.
  local want have key dir
  want=$(docker run --rm --network none "$1" python3 -c 'import platform; print(platform.python_version())')
  have=$("$PYTHON" -c 'import platform; print(platform.python_version())')
  [ "$want" = "$have" ] || die "the image has Python $want, $PYTHON is $have: set AUTOHEAL_WHEEL_PYTHON to a Python $want with pip"
  key=$(printf '%s %s' "$want" "$(sha256sum requirements.txt)" | sha256sum | cut -c1-16)
  dir=$CACHE/wheels-$key
  if ! fresh "$dir/.complete"; then
    log "wheelhouse: pip wheel -r requirements.txt (Python $have)"
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check -r requirements.txt -w "$dir.tmp"
    touch "$dir.tmp/.complete"
    mv "$dir.tmp" "$dir"
  fi
  # The build context is the checkout: the wheels go to .wheels/ (ignored by git), replacing
  # whatever an earlier build left there.
  rm -rf .wheels
  mkdir -p .wheels
  cp "$dir"/*.whl .wheels/
}

rootfs_tar() { # rootfs_tar NAME PACKAGES...: the cached root filesystem, made when missing or old
  local name=$1; shift
  local packages key tar
  packages=$(printf '%s\n' "$@" | sort | paste -sd, -)
  key=$(printf '%s %s %s %s %s' "$RECIPE" "$SUITE" "$name" "$packages" "${AUTOHEAL_DEBIAN_MIRROR:-}" | sha256sum | cut -c1-16)
  tar=$CACHE/rootfs-$name-$key.tar
  if ! fresh "$tar"; then
    log "$name: mmdebstrap $SUITE with $packages"
    rm -f "$tar" "$tar.tmp"
    # shellcheck disable=SC2086 # the mirror arguments are a list
    mmdebstrap --quiet --variant=minbase --format=tar --include="$packages" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$SUITE" "$tar.tmp" ${AUTOHEAL_DEBIAN_MIRROR:-}
    mv "$tar.tmp" "$tar"
  fi
  echo "$tar"
}

rootfs_image() { # rootfs_image NAME PACKAGES...: the root filesystem as an image (imported once)
  local tar key image
  tar=$(rootfs_tar "$@")
  key=${tar##*-}
  key=${key%.tar}
  image=$LOCAL/rootfs-$1:$key
  # A root filesystem made again (older than the cache's age limit) is imported again.
  if [ "$(docker image inspect -f '{{index .Config.Labels "org.autoheal.rootfs-mtime"}}' "$image" 2>/dev/null)" != "$(stat -c %Y "$tar")" ]; then
    log "$1: docker import"
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c "LABEL org.autoheal.rootfs-mtime=$(stat -c %Y "$tar")" -c 'CMD ["/bin/bash"]' "$tar" "$image" >/dev/null
  fi
  echo "$image"
}

build() { # build TAG CONTEXT [docker build arguments...]
  local tag=$1 context=$2; shift 2
  log "build $tag"
  local out
  # The classic builder works with every engine (BuildKit needs the buildx plugin on newer
  # clients); its output is shown only when the build fails.
  if ! out=$(DOCKER_BUILDKIT=0 docker build "$@" -t "$tag" "$context" 2>&1); then
    printf '%s\n' "$out" >&2
    die "building $tag failed"
  fi
}

build_debian() {
  command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is not installed (apt-get install mmdebstrap)"
  mkdir -p "$CACHE"
  local name packages base pid failed=0
  local -a pids=()
  # The root filesystems are made side by side (mostly downloads and unpacking), then imported
  # and finished one by one.
  while read -r name packages; do
    # shellcheck disable=SC2086
    rootfs_tar "$name" $packages >/dev/null &
    pids+=($!)
  done < <(debian_images)
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "mmdebstrap failed (see above)"
  while read -r name packages; do
    # shellcheck disable=SC2086
    base=$(rootfs_image "$name" $packages)
    case $name in
      python)
        docker tag "$base" "$LOCAL/python:3.11-$SUITE"
        wheelhouse "$base"
        build "autoheal:$TAG" . -f deploy/Dockerfile --build-arg "BASE=$LOCAL/python:3.11-$SUITE"
        ;;
      logrotate)
        build "autoheal-logrotate:$TAG" deploy/logrotate --build-arg "BASE=$base"
        ;;
      *)
        build "$LOCAL/$name:$SUITE" "deploy/images/$name" --build-arg "ROOTFS=$base"
        ;;
    esac
  done < <(debian_images)
  log "done: autoheal:$TAG, autoheal-logrotate:$TAG and $LOCAL/*:$SUITE (use deploy/docker-compose.local.yml)"
  log "Grafana is not packaged in Debian: there is no Grafana image, and with deploy/docker-compose.local.yml the stack runs without it"
}

build_registry() {
  local image
  # The upstream images of the compose files, as written there.
  for image in $(sed -n 's/^ *image: *\([^$ ]*\) *$/\1/p' deploy/docker-compose.yml deploy/docker-compose.prod.yml | sort -u); do
    log "pull $image"
    docker pull --quiet "$image" >/dev/null
  done
  rm -rf .wheels
  build "autoheal:$TAG" . -f deploy/Dockerfile --build-arg "BASE=$UPSTREAM_PYTHON"
  build "autoheal-logrotate:$TAG" deploy/logrotate
  log "done: autoheal:$TAG, autoheal-logrotate:$TAG and the upstream images"
}

case $MODE in
  registry) build_registry ;;
  debian) build_debian ;;
  auto)
    if timeout 60 docker pull --quiet "$UPSTREAM_PYTHON" >/dev/null 2>&1; then
      build_registry
    else
      log "no registry answers: building the bases from Debian packages"
      build_debian
    fi
    ;;
  *) die "AUTOHEAL_IMAGE_BASES must be auto, registry or debian (not $MODE)" ;;
esac
