#!/bin/sh
# Where the lock + unlock pair's time goes, one guarantee at a time: a
# ladder of statement pairs from the minimal durable lock (a phobos-shaped
# table, INSERT + DELETE) up to the library's own statements (BENCH_SQL_LOCK
# / BENCH_SQL_UNLOCK in examples/dss_bench.c, kept equal to the library's by
# tests/bench_sql.rs). Each rung adds one thing to the rung above it.
#
#   scripts/pair_ladder.sh [PAIRS] [RUNS] [SECONDS]   (defaults 15000, 3, 4)
#
# Per rung: backend CPU microseconds per pair (utime + stime of the serving
# backend from /proc/self/stat, read by the backend itself at the first and
# the last pair; 1 client, PAIRS pairs, the least of RUNS runs: CPU time is
# far steadier than throughput on a noisy machine), then pairs/s at 8
# clients (pgbench -M prepared, SECONDS each, median of RUNS, rounds
# alternating) and both as ratios to minimal (CPU: minimal / rung).
# A private cluster from scripts/pgtmp.sh (default settings, fsync on),
# destroyed at the end.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pairs=${1:-15000}
runs=${2:-3}
secs=${3:-4}
. "$here/pair_cluster.sh"
export PGOPTIONS="-c enable_seqscan=off"
psql -X -q -v ON_ERROR_STOP=1 "$ci" <<'EOF'
CREATE SEQUENCE public.tok;
CREATE TABLE public.tlock (id text COLLATE "C" PRIMARY KEY, owner text COLLATE "C" NOT NULL,
    token bigint NOT NULL, ts timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.hist (at timestamptz NOT NULL DEFAULT now(), event text NOT NULL,
    id text COLLATE "C" NOT NULL, owner text COLLATE "C" NOT NULL, token bigint NOT NULL, actor text);
CREATE TABLE public.cpu (tag text, stat text);
EOF

hist() { # $1 event, $2 table, $3 CTE name
    echo "INSERT INTO $2 (event, id, owner, token) SELECT '$1', $id, 'o', token FROM $3"
}
w=$dir/w
mkdir -p "$w"
rung() { # name, lock statement, unlock statement
    echo "$1" >>"$w/rungs"
    printf '%s\n' '\set n random(1, 2000000000)' "$2;" "$3;" >"$w/$1.sql"
}
ins_dss="INSERT INTO dss.locks (id, owner, token) VALUES ($id, 'o', nextval('dss.lock_token_seq'))"
del_dss="DELETE FROM dss.locks l WHERE l.id = $id AND l.owner = 'o'"
unlock_dss="WITH del AS ($del_dss RETURNING token) $(hist release dss.lock_history del)"

rung minimal "INSERT INTO public.minimal_lock (id, owner) VALUES ($id, 'o')" \
    "DELETE FROM public.minimal_lock WHERE id = $id AND owner = 'o'"
rung +token+history \
    "WITH ins AS (INSERT INTO public.tlock (id, owner, token) VALUES ($id, 'o', nextval('public.tok')) RETURNING token) $(hist acquire public.hist ins)" \
    "WITH del AS (DELETE FROM public.tlock WHERE id = $id AND owner = 'o' RETURNING token) $(hist release public.hist del)"
rung +dss_tables "WITH ins AS ($ins_dss RETURNING token) $(hist acquire dss.lock_history ins)" "$unlock_dss"
rung +on_conflict "WITH ins AS ($ins_dss ON CONFLICT (id) DO NOTHING RETURNING token) $(hist acquire dss.lock_history ins)" \
    "$unlock_dss"
rung +bucket+lease "$(bench_sql LOCK)" "$unlock_dss"
rung +waiter_wakeup "$(bench_sql LOCK)" \
    "WITH del AS ($del_dss RETURNING l.token, CASE WHEN EXISTS (SELECT 1 FROM dss.lock_waiters w WHERE w.id = l.id) THEN pg_notify('dss_' || md5(l.id), '') END) $(hist release dss.lock_history del)"
rung library "$(bench_sql LOCK)" "$(bench_sql UNLOCK)"

cpu() { # rung, run: the serving backend's CPU ticks at the first and the last pair
    t="$1.$2"
    {
        printf '%s\n' '\set i :i + 1' '\if :i = 1' \
            "INSERT INTO public.cpu SELECT '$t.a', pg_read_file('/proc/self/stat');" '\endif'
        cat "$w/$1.sql"
        printf '%s\n' "\\if :i = $pairs" \
            "INSERT INTO public.cpu SELECT '$t.b', pg_read_file('/proc/self/stat');" '\endif'
    } >"$w/cpu.sql"
    pgbench -n -M prepared -c 1 -t "$pairs" -D i=0 -f "$w/cpu.sql" "$ci" >"$w/pgbench.log" 2>&1 ||
        { cat "$w/pgbench.log" >&2; exit 1; }
}
for r in $(seq "$runs"); do
    while read -r s; do
        cpu "$s" "$r"
        pgbench -n -M prepared -c 8 -j 8 -T "$secs" -f "$w/$s.sql" "$ci" 2>&1 |
            awk -v s="$s" '/^tps/ {print s, $3}' >>"$w/tps"
    done <"$w/rungs"
done
# fields 14 and 15 of /proc/PID/stat: utime, stime, in clock ticks
psql -X -At -F' ' "$ci" -c "SELECT split_part(a.tag, '.', 1), ((split_part(b.stat, ' ', 14)::int + split_part(b.stat, ' ', 15)::int) - (split_part(a.stat, ' ', 14)::int + split_part(a.stat, ' ', 15)::int)) * 1e6 / $(getconf CLK_TCK) / ($pairs - 1) FROM public.cpu a JOIN public.cpu b ON b.tag = left(a.tag, -1) || 'b' WHERE a.tag LIKE '%.a'" >"$w/cpu"
python3 - "$w" <<'EOF'
import sys, statistics, collections
w = sys.argv[1]
cpu, tps = collections.defaultdict(list), collections.defaultdict(list)
for line in open(w + "/cpu"):
    s, v = line.split()
    cpu[s].append(float(v))
for line in open(w + "/tps"):
    s, v = line.split()
    tps[s].append(float(v))
rungs = [l.strip() for l in open(w + "/rungs")]
c0, t0 = min(cpu["minimal"]), statistics.median(tps["minimal"])
print(f"{'rung':16} {'CPU us/pair':>11} {'minimal/rung':>12} {'8 clients/s':>11} {'ratio':>6}")
for s in rungs:
    c, t = min(cpu[s]), statistics.median(tps[s])
    print(f"{s:16} {c:11.1f} {c0 / c:12.2f} {t:11.0f} {t / t0:6.2f}")
EOF
