#!/bin/sh
# Where one dss_lock_many of N free ids spends the database's time, next to
# the least the same rows cost: backend CPU (/proc/self/schedstat, read by
# the backend itself with pg_read_file before and after the statement) and
# wall time of each statement, median of RUNS, each run in its own
# autocommit transaction, the rows deleted again between runs (as
# dss_bench's batch workload does; VACUUM=1 vacuums them away too).
#
#   scripts/batch_floor.sh [N] [RUNS]     (defaults 10000, 10)
#
# Lines: bare (one INSERT ... SELECT unnest of the ids into a phobos-shaped
# table, dss_bench's "bare"), lock rows (dss.locks with a token from the
# sequence), lock + history rows (the same plus their history rows in one
# statement: the floor of what dss_lock_many writes, without any token
# ordering), and dss.lock_many itself; each with its ratio to bare. A
# private cluster from scripts/pgtmp.sh (default settings, fsync on), with
# every sql/ migration, destroyed at the end. Runs as a superuser (reads
# /proc through pg_read_file).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
n=${1:-10000}
runs=${2:-10}
dir=$(mktemp -d /tmp/dss-batch.XXXXXX)
rmdir "$dir"
trap 'sh "$here/pgtmp.sh" destroy "$dir" >/dev/null 2>&1 || true' EXIT
sh "$here/pgtmp.sh" start "$dir" >/dev/null
ci=$(cat "$dir/conninfo")
for f in "$here"/../sql/[0-9]*.sql; do
    psql -X -q -v ON_ERROR_STOP=1 "$ci" -f "$f"
done
psql -X -q -v ON_ERROR_STOP=1 "$ci" <<EOF
CREATE SCHEMA floor;
CREATE TABLE floor.minimal (id text PRIMARY KEY, owner text, ts timestamptz DEFAULT now());
CREATE TABLE floor.ids AS SELECT array_agg('batch-' || g) AS ids FROM generate_series(1, $n) AS g;
CREATE TABLE floor.res (what text, ns bigint, ms float8);
CREATE FUNCTION floor.cpu() RETURNS bigint LANGUAGE sql
    AS \$\$ SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint \$\$;
EOF

vac() { [ "${VACUUM:-0}" = 1 ] && echo "VACUUM $1;" || true; }
one() { # name, statement, table to empty afterwards
    cat <<EOF
SELECT floor.cpu() AS c0, clock_timestamp() AS t0 \gset
$2;
SELECT floor.cpu() AS c1, clock_timestamp() AS t1 \gset
INSERT INTO floor.res VALUES ('$1', :c1 - :c0,
    extract(epoch FROM (:'t1'::timestamptz - :'t0'::timestamptz)) * 1000);
DELETE FROM $3;
$(vac "$3")
EOF
}
locks="INSERT INTO dss.locks (id, owner, token, ttl_ms, expires_at)
    SELECT unnest(ids), 'o', nextval('dss.lock_token_seq'), 0, NULL FROM floor.ids"
{
    echo '\o /dev/null'
    i=0
    while [ "$i" -lt "$runs" ]; do
        one "1 bare" "INSERT INTO floor.minimal (id, owner) SELECT unnest(ids), 'o' FROM floor.ids" floor.minimal
        one "2 lock rows" "$locks" dss.locks
        one "3 lock + history rows" "WITH ins AS ($locks RETURNING id, token)
            INSERT INTO dss.lock_history (event, id, owner, token)
            SELECT 'acquire', id, 'o', token FROM ins" dss.locks
        one "4 dss.lock_many" "SELECT count(*) FROM floor.ids, dss.lock_many(ids, 'o', 0)" dss.locks
        i=$((i + 1))
    done
    echo '\o'
    cat <<'EOF'
WITH m AS (
    SELECT what, percentile_cont(0.5) WITHIN GROUP (ORDER BY ns) / 1e6 AS cpu,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS wall
      FROM floor.res GROUP BY what)
SELECT substr(m.what, 3) AS statement, round(m.cpu::numeric, 1) AS cpu_ms,
       round(m.wall::numeric, 1) AS wall_ms,
       round((m.cpu / b.cpu)::numeric, 2) AS cpu_ratio,
       round((m.wall / b.wall)::numeric, 2) AS wall_ratio
  FROM m, m AS b WHERE b.what = '1 bare' ORDER BY m.what;
EOF
} >"$dir/run.sql"
echo "$n ids, median of $runs runs${VACUUM:+ (vacuumed between runs)}:"
psql -X -q -v ON_ERROR_STOP=1 "$ci" -f "$dir/run.sql"
