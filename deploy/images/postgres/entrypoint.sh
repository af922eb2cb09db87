#!/bin/sh
# First start on an empty data directory: initdb with POSTGRES_USER as the superuser and the
# password from POSTGRES_PASSWORD_FILE, network clients with scram-sha-256 only, POSTGRES_DB
# created. Then PostgreSQL runs in the foreground on every interface of the container.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -r "$POSTGRES_PASSWORD_FILE" ] \
    || { echo "postgres: POSTGRES_PASSWORD_FILE must name a readable file" >&2; exit 1; }
  pwfile=$(mktemp)
  tr -d '\n' <"$POSTGRES_PASSWORD_FILE" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    createdb --username="$POSTGRES_USER" --owner="$POSTGRES_USER" "$POSTGRES_DB"
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres: initialised $PGDATA for $POSTGRES_USER/$POSTGRES_DB"
fi
if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
