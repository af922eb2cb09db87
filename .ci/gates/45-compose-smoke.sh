#!/usr/bin/env bash
# The compose smoke run: images built (from Debian packages, no registry needed), the production
# stack up on a private dockerd in canary mode, flipped to production, joined by a fleet agent on a
# second private dockerd (deploy/smoke/fleet.sh), backed up, restored, and taken down
# (make compose-smoke, deploy/smoke/compose-smoke.sh). Installs what it needs from
# Debian when it is missing. Debian root filesystems and the wheelhouse are cached between runs in
# AUTOHEAL_IMAGE_CACHE (default ~/.cache/autoheal/images); without the cache the run builds them.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for pair in mmdebstrap:mmdebstrap dockerd:docker.io docker-compose:docker-compose jq:jq curl:curl unshare:util-linux ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# The wheelhouse is resolved by Debian's own Python (the images' version), which needs its pip.
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "compose-smoke: installing ${need[*]}"
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi

make --no-print-directory compose-smoke
