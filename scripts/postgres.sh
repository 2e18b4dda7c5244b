#!/usr/bin/env bash
# Provision and run a private PostgreSQL cluster from Debian's `postgresql` package.
#   scripts/postgres.sh install|start|stop|status|createdb NAME
# Env: AXON_RUN_DIR (default .run), PG_PORT (55432), PG_DIR ($AXON_RUN_DIR/postgres: data, socket, log;
#   as root it must be reachable by the `postgres` user). Trust auth on 127.0.0.1 only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${AXON_RUN_DIR:-$ROOT/.run}
PORT=${PG_PORT:-55432}
choose_dir() {
  if [ -n "${PG_DIR:-}" ]; then DIR=$PG_DIR; DATA=$DIR/data; return; fi
  DIR=$RUN/postgres
  # As root the server runs as the `postgres` user, which must be able to reach DIR;
  # a checkout under a private directory (mode 700) is not, so fall back to /tmp.
  if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    mkdir -p "$RUN"
    if ! runuser -u postgres -- test -x "$RUN"; then DIR=/tmp/axon-postgres-$PORT; fi
  fi
  DATA=$DIR/data
}
choose_dir

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

install() {
  if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  fi
}

# PostgreSQL refuses to run as root: run it as the package's `postgres` user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ready() { as_pg "$(bindir)/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

start() {
  install
  choose_dir
  BIN=$(bindir)
  mkdir -p "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DIR"; chmod 755 "$RUN" 2>/dev/null || true; fi
  if ready 2>/dev/null; then echo "postgres: already running on 127.0.0.1:$PORT"; return 0; fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on -c shared_buffers=128MB" start >/dev/null
  ready && echo "postgres: ready on 127.0.0.1:$PORT"
}

stop() {
  BIN=$(bindir)
  [ -f "$DATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true
}

createdb() {
  local name=$1
  as_pg "$(bindir)/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$name'" | grep -q 1 \
    || as_pg "$(bindir)/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE \"$name\""
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) ready && echo running || { echo stopped; exit 1; } ;;
  createdb) createdb "$2" ;;
  *) echo "usage: $0 install|start|stop|status|createdb NAME"; exit 2 ;;
esac
