#!/bin/sh
# Where a lock + unlock pair spends the database's work: WAL records, bytes
# and full-page images per pair (pg_stat_wal), and pairs/s with pgbench, for
# the library's own statements (BENCH_SQL_LOCK / BENCH_SQL_UNLOCK in
# examples/dss_bench.c, which tests/bench_sql.rs keeps equal to the
# library's) next to the minimal durable lock (a phobos-shaped table, a
# prepared INSERT and DELETE). A private cluster from scripts/pgtmp.sh,
# default settings (fsync on), destroyed at the end.
#
#   scripts/wal_per_pair.sh [PAIRS] [SECONDS]     (defaults 3000, 5)
#
# Each line: name, WAL records / bytes / FPIs per pair (1 client, PAIRS
# pairs), then pairs/s at 1 and 8 clients (rounds alternating, median of 3)
# and the ratio to minimal. Synchronous commit off as well, with
# SYNC=off.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pairs=${1:-3000}
secs=${2:-5}
. "$here/pair_cluster.sh"
export PGOPTIONS="-c enable_seqscan=off -c synchronous_commit=${SYNC:-on}"
w=$dir/scripts
mkdir -p "$w"
printf '%s\n' '\set n random(1, 2000000000)' \
    "INSERT INTO public.minimal_lock (id, owner) VALUES ($id, 'o');" \
    "DELETE FROM public.minimal_lock WHERE id = $id AND owner = 'o';" >"$w/minimal.sql"
printf '%s\n' '\set n random(1, 2000000000)' "$(bench_sql LOCK);" "$(bench_sql UNLOCK);" >"$w/library.sql"

wal() { psql -X -At -F' ' "$ci" -c "SELECT wal_records, wal_bytes, wal_fpi FROM pg_stat_wal"; }
tps() { pgbench -n -M prepared -c "$1" -j "$1" -T "$secs" -f "$w/$2.sql" "$ci" 2>&1 | awk '/^tps/ {print $3}'; }

for s in minimal library; do
    psql -X -q "$ci" -c "CHECKPOINT"
    set -- $(wal)
    pgbench -n -M prepared -c 1 -t "$pairs" -f "$w/$s.sql" "$ci" >/dev/null
    # pg_stat_wal counts a backend's WAL when it reports its statistics, at
    # the latest when it exits: wait until the totals stop moving.
    prev=""
    cur=$(wal)
    while [ "$cur" != "$prev" ]; do prev=$cur; sleep 1; cur=$(wal); done
    set -- "$@" $cur
    echo "$s $(( $4 - $1 )) $(( $5 - $2 )) $(( $6 - $3 ))" >>"$w/wal"
done
for r in 1 2 3; do
    for c in 1 8; do
        for s in minimal library; do echo "$s $c $(tps "$c" "$s")" >>"$w/tps"; done
    done
done
python3 - "$w" "$pairs" <<'EOF'
import sys, statistics, collections
w, pairs = sys.argv[1], int(sys.argv[2])
t = collections.defaultdict(list)
for line in open(w + "/tps"):
    s, c, v = line.split()
    t[(s, c)].append(float(v))
print(f"{'':10} {'WAL rec':>8} {'bytes':>7} {'FPI':>6} {'1 client':>9} {'ratio':>6} {'8 clients':>10} {'ratio':>6}")
for line in open(w + "/wal"):
    s, rec, b, fpi = line.split()
    row = f"{s:10} {int(rec)/pairs:8.1f} {int(b)/pairs:7.0f} {int(fpi)/pairs:6.2f}"
    for c in ("1", "8"):
        m, base = statistics.median(t[(s, c)]), statistics.median(t[("minimal", c)])
        row += f" {m:9.0f} {m/base:6.3f}" if c == "1" else f" {m:10.0f} {m/base:6.3f}"
    print(row)
EOF
