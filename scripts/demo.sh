#!/bin/sh
# The libdss demo: two processes contending for one lock.
#
#   sh scripts/demo.sh STAGE_PREFIX [LOCK_ID]
#
# Runs STAGE_PREFIX/libexec/dss/contend (installed by `make install
# PREFIX=STAGE_PREFIX`; `make demo` does both). If a connection string is
# configured, as for any phobos program (PHOBOS_DSS_connect_string, else
# `connect_string` in section [dss] of $PHOBOS_CFG_FILE, default
# /etc/phobos.conf), the demo uses that database, which must hold the schema
# of sql/. Otherwise it brings up a private PostgreSQL with pgtmp.sh, and
# destroys it at the end whatever happens. Exits with the demo's status.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] && [ -n "$1" ] || { echo "usage: $0 STAGE_PREFIX [LOCK_ID]" >&2; exit 2; }
stage=$1
shift
contend=$stage/libexec/dss/contend
[ -x "$contend" ] || {
    echo "demo: no $contend: run 'make install PREFIX=$stage' first (or 'make demo')" >&2
    exit 2
}

# Prints the value of connect_string in section [dss] of file $1, read the
# way libdss reads it (whole-line # or ; comments, trimmed names and values,
# case-sensitive, last occurrence wins); nothing if there is none.
ini_connect_string() {
    tr -d '\r' <"$1" | awk '
        { sub(/^[ \t]+/, ""); sub(/[ \t]+$/, "") }
        $0 == "" || /^[#;]/ { next }
        /^\[/ {
            s = substr($0, 2)
            in_dss = 0
            if (sub(/\]$/, "", s)) {
                gsub(/^[ \t]+|[ \t]+$/, "", s)
                in_dss = (s == "dss")
            }
            next
        }
        in_dss && index($0, "=") {
            k = substr($0, 1, index($0, "=") - 1)
            v = substr($0, index($0, "=") + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", k)
            gsub(/^[ \t]+|[ \t]+$/, "", v)
            if (k == "connect_string") { found = 1; val = v }
        }
        END { if (found) print val }'
}

cfg=${PHOBOS_CFG_FILE:-}
[ -n "$cfg" ] || cfg=/etc/phobos.conf
# libdss takes the variable even when empty (and refuses it): an empty one
# means "not set" here, so that the config file or a private server is used.
[ -n "${PHOBOS_DSS_connect_string:-}" ] || unset PHOBOS_DSS_connect_string
source=""
if [ -n "${PHOBOS_DSS_connect_string:-}" ]; then
    source="PHOBOS_DSS_connect_string"
elif [ -f "$cfg" ] && [ -r "$cfg" ] && [ -n "$(ini_connect_string "$cfg")" ]; then
    source="connect_string in section [dss] of $cfg"
fi

if [ -n "$source" ]; then
    # The string itself is not shown: it may hold a password.
    echo "demo: using the configured database ($source)"
    status=0
    "$contend" "$@" || status=$?
    exit "$status"
fi

# No database configured: a private one, removed on exit.
dir=$(mktemp -d /tmp/dss-demo.XXXXXX)
cleanup() {
    echo "demo: removing the private PostgreSQL in $dir"
    sh "$here/pgtmp.sh" destroy "$dir" 2>/dev/null && return
    # pgtmp.sh could not run (no PostgreSQL binaries?): no server can be
    # running either, unless its pid file says so.
    if [ -f "$dir/data/postmaster.pid" ]; then
        echo "demo: could not stop the server of $dir: remove it by hand" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The migrations installed with the library, when there are.
if [ -z "${DSS_SQL_DIR:-}" ] && [ -d "$stage/share/dss/sql" ]; then
    DSS_SQL_DIR=$stage/share/dss/sql
    export DSS_SQL_DIR
fi
echo "demo: no connection string configured (PHOBOS_DSS_connect_string, or [dss] connect_string in $cfg)"
echo "demo: starting a private PostgreSQL in $dir"
PHOBOS_DSS_connect_string=$(sh "$here/pgtmp.sh" start "$dir")
export PHOBOS_DSS_connect_string
echo "demo: PHOBOS_DSS_connect_string='$PHOBOS_DSS_connect_string'"
echo

status=0
"$contend" "$@" || status=$?
echo
exit "$status"
