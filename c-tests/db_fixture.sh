#!/bin/sh
# ctest fixture for the shared test cluster.
#   db_fixture.sh start PGTMP DIR   (re)create the cluster in DIR
#   db_fixture.sh stop  PGTMP DIR   destroy it
set -eu
cmd=$1 pgtmp=$2 dir=$3
case $cmd in
start)
    # A leftover of an interrupted run with the same name: start afresh.
    sh "$pgtmp" destroy "$dir"
    sh "$pgtmp" start "$dir"
    ;;
stop)
    sh "$pgtmp" destroy "$dir"
    ;;
*)
    echo "usage: $0 start|stop PGTMP DIR" >&2; exit 2 ;;
esac
