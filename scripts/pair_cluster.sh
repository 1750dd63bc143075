# Sourced (with $here set to scripts/) by wal_per_pair.sh and pair_ladder.sh:
# a private cluster from pgtmp.sh in $dir, destroyed on exit, its conninfo
# in $ci; public.minimal_lock, the minimal durable lock (a phobos-shaped
# table); $id, a pgbench expression for a fresh lock id of each pair; and
# `bench_sql NAME`, the library's statement NAME (BENCH_SQL_NAME in
# examples/dss_bench.c, kept equal to the library's by tests/bench_sql.rs)
# with $1 = $id, $2 = owner 'o', $3 = 0 (no lease).
dir=$(mktemp -d /tmp/dss-pair.XXXXXX)
rmdir "$dir"
trap 'sh "$here/pgtmp.sh" destroy "$dir" >/dev/null 2>&1 || true' EXIT
sh "$here/pgtmp.sh" start "$dir" >/dev/null
ci=$(cat "$dir/conninfo")
psql -X -q -v ON_ERROR_STOP=1 "$ci" -c \
    "CREATE TABLE public.minimal_lock (id text PRIMARY KEY, owner text, ts timestamptz DEFAULT now())"
id="('k' || :client_id || '.' || :n)"
bench_sql() {
    sed -n "s/^#define BENCH_SQL_$1 \"\(.*\)\"\$/\1/p" "$here/../examples/dss_bench.c" |
        sed -e "s/\\\$1/$id/g" -e "s/\\\$2/'o'::text/g" -e "s/\\\$3/0::int8/g"
}
