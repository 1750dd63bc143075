#!/bin/sh
# A throwaway PostgreSQL cluster for tests, the demo and benchmarks.
#
#   pgtmp.sh start DIR     initdb + start in DIR (must not exist, or be empty),
#                          create database "dss", apply sql/*.sql; writes the
#                          conninfo to DIR/conninfo and prints it
#   pgtmp.sh stop DIR      stop the server (data kept; "start" again resumes it)
#   pgtmp.sh destroy DIR   stop the server and remove DIR
#
# The server listens on a Unix socket in DIR only (listen_addresses=''), so
# it never conflicts with another server's port. PostgreSQL refuses to run as
# root: as root, the server runs as the "postgres" user.
# PG_BIN overrides the directory of initdb/pg_ctl (default: newest
# /usr/lib/postgresql/*/bin). Extra server settings: PGTMP_OPTS="-c k=v ...".
set -eu

here=$(cd "$(dirname "$0")" && pwd)
sqldir=${DSS_SQL_DIR:-$here/../sql}

if [ -z "${PG_BIN:-}" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -x "$PG_BIN/initdb" ] || { echo "pgtmp: no initdb in '${PG_BIN}' (apt-get install postgresql)" >&2; exit 2; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|destroy DIR" >&2; exit 2; }

conninfo() { echo "host=$dir port=5432 dbname=dss user=postgres"; }

start_server() {
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c port=5432 \
            -c max_connections=300 ${PGTMP_OPTS:-}" start >/dev/null
}

case $cmd in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/data/PG_VERSION" ]; then
        start_server
    else
        [ "$(id -u)" = 0 ] && chown postgres "$dir"
        as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
        start_server
        psql -X -q -h "$dir" -p 5432 -U postgres -d postgres -c "CREATE DATABASE dss" >/dev/null
        for f in "$sqldir"/[0-9]*.sql; do
            psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p 5432 -U postgres -d dss -f "$f" >/dev/null
        done
    fi
    conninfo >"$dir/conninfo"
    conninfo
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    fi
    ;;
destroy)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop|destroy DIR" >&2; exit 2 ;;
esac
