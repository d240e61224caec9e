#!/usr/bin/env bash
# A private, throw-away PostgreSQL instance for the tests, so the test
# command never changes or restarts the PostgreSQL server of the machine it
# runs on: initdb in a temporary directory, its own port, wal_level=logical
# (for the CDC relay), trust authentication on 127.0.0.1, a database "test".
#
#   scripts/pgtemp.sh start DIR PORT   # prints the URL on stdout
#   scripts/pgtemp.sh stop DIR
#   scripts/pgtemp.sh restart DIR      # used by the server-restart test
set -euo pipefail

bindir() {
  local pgc
  if pgc=$(command -v pg_config 2>/dev/null) && [ -x "$("$pgc" --bindir)/initdb" ]; then
    "$pgc" --bindir; return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

# initdb and postgres refuse to run as root: run them as the postgres user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:?usage: pgtemp.sh start DIR PORT | stop DIR | restart DIR}
dir=${2:?directory}
bin=$(bindir)
[ -x "$bin/initdb" ] || { echo "pgtemp: no initdb found (install the postgresql package)" >&2; exit 1; }

case "$cmd" in
start)
  port=${3:?port}
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
  as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -qc "CREATE DATABASE test" >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/test?sslmode=disable"
  ;;
restart)
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -m fast restart >/dev/null
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 60 -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*) echo "pgtemp: unknown command $cmd" >&2; exit 2 ;;
esac
