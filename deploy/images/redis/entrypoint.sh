#!/bin/sh
# Without a configuration file redis-server runs in protected mode and refuses every client but
# loopback. Inside the compose network the other containers are its clients, as with the
# upstream image, so protected mode is turned off when redis-server runs without a config file.
set -eu
if [ "${1:-}" = redis-server ]; then
  case "${2:-}" in
    *.conf) ;;
    *) shift; exec redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
