#!/bin/sh
# Benchmarks libdss against its own SQL sent straight through libpq, and
# against peers (other ways of keeping a lock in PostgreSQL: a minimal
# table, phobos's own SQL, advisory locks), and dssd (the HTTP server)
# against the library called directly, on a private PostgreSQL, and writes
# a Markdown report.
#
#   scripts/bench.sh [OUTFILE]          (default: BENCHMARKS.md at the top)
#
# Builds and installs the library and examples/dss_bench.c into build/stage
# (make install PREFIX=...), starts a throwaway cluster with pgtmp.sh
# (default settings), runs every workload of dss_bench with --json, removes
# the cluster whatever happens, and turns the JSON into OUTFILE with the
# machine, the versions, the command, the library ÷ peer ratios, one table
# per workload and every target marked PASS or FAIL (kv-set / kv-get,
# shared / sem, library ÷ phobos / advisory and dssd ÷ library have no
# target: their ratios are reported). The dssd rows come from
# dssd/examples/http_bench.rs (built with cargo), run on the same cluster
# after dss_bench, against the installed $BENCH_STAGE/bin/dssd.
#
# Knobs (environment):
#   BENCH_DURATION     seconds per round (default 5)
#   BENCH_ROUNDS       rounds per side (3); the sides' order rotates every
#                      round, so with k sides (library, baseline, peers) each
#                      goes first equally often when this is a multiple of k
#   BENCH_THREADS      thread counts of pair, refresh, status, kv-set, kv-get,
#                      shared, sem, scale (1,8)
#   BENCH_WORKLOADS    comma list (default all; see dss_bench --help)
#   BENCH_CONTENDERS   threads of contended / contended-wait (8)
#   BENCH_HOLD_US      how long a contender holds the lock (100)
#   BENCH_BATCH_SIZES  ids per batch (1000,10000)
#   BENCH_SCALE_FILL   other locks held during scale (0,100000,1000000)
#   BENCH_WARMUP       untimed warm-up per side, seconds (1)
#   BENCH_PEERS        peers measured in the same run, comma list or none
#                      (minimal,phobos,advisory; dss_bench --peers): minimal
#                      in pair, refresh, status (and "bare", its one INSERT ...
#                      unnest, in batch), phobos and advisory in pair
#   BENCH_SHARED_BASELINE=1  the baseline threads share their connections
#                      (dss_bench --shared-baseline), as a pool behind one handle does
#   SOAK_MINUTES       soak length (5); SOAK_WINDOW seconds per window (30);
#   SOAK_THREADS       soak threads (8)
#   BENCH_PG_OPTS      extra server settings, e.g. "-c synchronous_commit=off"
#                      (passed to pgtmp.sh as PGTMP_OPTS; shown in the report)
#   BENCH_STAGE        install prefix (default build/stage)
#   BENCH_JSON         also keep dss_bench's JSON in this file
#   BENCH_STRICT=1     exit 3 if any target fails
#   BENCH_DSSD=0       skip the dssd rows (POST + DELETE through dssd vs the
#                      library at BENCH_THREADS clients; same BENCH_DURATION,
#                      BENCH_ROUNDS, BENCH_WARMUP)
# Quick run: BENCH_DURATION=2 SOAK_MINUTES=1 scripts/bench.sh /tmp/BENCH.md
#
# Exit status: 0 report written; 1 build or benchmark failed (no report);
# 2 usage; 3 report written but a target failed (BENCH_STRICT=1 only).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
[ $# -le 1 ] || { echo "usage: $0 [OUTFILE]" >&2; exit 2; }
out=${1:-$root/BENCHMARKS.md}
case $out in /*) ;; *) out=$PWD/$out ;; esac

# The command line, as run: knobs set in the environment, then the script.
command_line=""
for v in BENCH_DURATION BENCH_ROUNDS BENCH_THREADS BENCH_WORKLOADS BENCH_CONTENDERS \
         BENCH_HOLD_US BENCH_BATCH_SIZES BENCH_SCALE_FILL BENCH_WARMUP BENCH_PEERS BENCH_SHARED_BASELINE SOAK_MINUTES \
         SOAK_WINDOW SOAK_THREADS BENCH_PG_OPTS BENCH_STAGE BENCH_JSON BENCH_STRICT BENCH_DSSD; do
    eval "val=\${$v:-}"
    [ -z "$val" ] || command_line="$command_line$v='$val' "
done
command_line="${command_line}scripts/bench.sh${1:+ $1}"

stage=${BENCH_STAGE:-$root/build/stage}
case $stage in /*) ;; *) stage=$root/$stage ;; esac

command -v python3 >/dev/null 2>&1 || { echo "bench: python3 is required for the report" >&2; exit 1; }
cd "$root"
sh "$here/deps.sh"

echo "bench: building and installing into $stage"
log=$(mktemp /tmp/dss-bench-build.XXXXXX)
if ! make install PREFIX="$stage" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "bench: make install failed" >&2
    exit 1
fi
rm -f "$log"
bench=$stage/libexec/dss/dss_bench
[ -x "$bench" ] || { echo "bench: no $bench after make install" >&2; exit 1; }
http_bench=""
if [ "${BENCH_DSSD:-1}" != 0 ]; then
    [ -x "$stage/bin/dssd" ] || { echo "bench: no $stage/bin/dssd after make install" >&2; exit 1; }
    log=$(mktemp /tmp/dss-bench-build.XXXXXX)
    if ! cargo build --release -p dssd --example http_bench >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "bench: building dssd/examples/http_bench.rs failed" >&2
        exit 1
    fi
    rm -f "$log"
    http_bench=${CARGO_TARGET_DIR:-$root/target}/release/examples/http_bench
    [ -x "$http_bench" ] || { echo "bench: no $http_bench" >&2; exit 1; }
fi

dir=$(mktemp -d /tmp/dss-bench.XXXXXX)
json=$(mktemp /tmp/dss-bench-json.XXXXXX)
dssd_json=$(mktemp /tmp/dss-bench-dssd-json.XXXXXX)
cleanup() {
    sh "$here/pgtmp.sh" destroy "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir" "$json" "$dssd_json"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
export PG_BIN
DSS_SQL_DIR=$stage/share/dss/sql
export DSS_SQL_DIR
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${loadavg%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    echo "bench: warning: load average $loadavg on $(nproc) CPUs: the figures will be noisy" >&2
fi
echo "bench: starting a private PostgreSQL in $dir"
conninfo=$(PGTMP_OPTS="${BENCH_PG_OPTS:-}" sh "$here/pgtmp.sh" start "$dir")

set -- --conninfo "$conninfo" --json \
    --duration "${BENCH_DURATION:-5}" --rounds "${BENCH_ROUNDS:-3}" \
    --threads "${BENCH_THREADS:-1,8}" --workload "${BENCH_WORKLOADS:-all}" \
    --contenders "${BENCH_CONTENDERS:-8}" --hold-us "${BENCH_HOLD_US:-100}" \
    --batch-sizes "${BENCH_BATCH_SIZES:-1000,10000}" \
    --scale-fill "${BENCH_SCALE_FILL:-0,100000,1000000}" \
    --soak-minutes "${SOAK_MINUTES:-5}" --soak-window "${SOAK_WINDOW:-30}" \
    --soak-threads "${SOAK_THREADS:-8}" --warmup "${BENCH_WARMUP:-1}" \
    --peers "${BENCH_PEERS:-minimal,phobos,advisory}"
[ -z "${BENCH_SHARED_BASELINE:-}" ] || set -- "$@" --shared-baseline
bench_line="dss_bench $*"
echo "bench: $bench_line"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
status=0
"$bench" "$@" >"$json" || status=$?
if [ "$status" != 0 ]; then
    echo "bench: dss_bench failed (exit $status): no report written" >&2
    exit 1
fi
[ -z "${BENCH_JSON:-}" ] || cp "$json" "$BENCH_JSON"
http_line=""
if [ -n "$http_bench" ]; then
    # On the same cluster, after dss_bench: its own dssd (started and killed
    # by http_bench) and a library handle, rounds alternating.
    set -- --dssd "$stage/bin/dssd" --conninfo "$conninfo" --json \
        --duration "${BENCH_DURATION:-5}" --rounds "${BENCH_ROUNDS:-3}" \
        --threads "${BENCH_THREADS:-1,8}" --warmup "${BENCH_WARMUP:-1}"
    http_line="http_bench $*"
    echo "bench: $http_line"
    status=0
    "$http_bench" "$@" >"$dssd_json" || status=$?
    if [ "$status" != 0 ]; then
        echo "bench: http_bench failed (exit $status): no report written" >&2
        exit 1
    fi
else
    : >"$dssd_json"
fi

report=0
BENCH_META_DATE="$started" \
BENCH_META_COMMAND="$command_line" \
BENCH_META_BENCH="$bench_line" \
BENCH_META_NPROC="$(nproc)" \
BENCH_META_CPU="$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)" \
BENCH_META_MEM_KB="$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' /proc/meminfo)" \
BENCH_META_KERNEL="$(uname -srm)" \
BENCH_META_PG_BIN="$PG_BIN" \
BENCH_META_PG_OPTS="${BENCH_PG_OPTS:-}" \
BENCH_META_LOADAVG="$loadavg" \
BENCH_META_HTTP_BENCH="$http_line" \
BENCH_META_LOADAVG_END="$(cut -d' ' -f1-3 /proc/loadavg)" \
python3 - "$json" "$out" "$dssd_json" <<'PYTHON' || report=$?
"""Turns dss_bench --json into the Markdown report, with PASS/FAIL targets."""
import json, os, sys

src, out, dssd_src = sys.argv[1], sys.argv[2], sys.argv[3]
doc = json.load(open(src))
dssd_text = open(dssd_src).read().strip()
dssd_doc = json.loads(dssd_text) if dssd_text else None
meta = {k[len("BENCH_META_"):].lower(): v for k, v in os.environ.items()
        if k.startswith("BENCH_META_")}
res = doc["results"]
st = doc["settings"]
targets = []          # (what, measured, ok or None)
lines = []
w = lines.append


def target(what, measured, ok, noisy=False):
    targets.append((what, measured, ok, noisy))
    return verdict(ok, noisy)


def verdict(ok, noisy=False):
    v = "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")
    return v + " (noisy)" if noisy else v


def noisy(*sides):
    """Rounds of one side differ by more than 1.5x: the machine's load changed."""
    for s in sides:
        r = [x for x in s["round_ops_per_s"] if x > 0]
        if len(r) > 1 and max(r) > 1.5 * min(r):
            return True
    return False


def f(x, nd=1):
    return "–" if x is None else f"{x:,.{nd}f}"


def by(name):
    return [r for r in res if r["workload"] == name]


def lat(s):
    return f"{f(s['p50_us'])} / {f(s['p99_us'])} / {f(s['max_us'])}"


def cpu(lib, base):
    return f"{lib['cpu_us_per_op']:.1f} / {base['cpu_us_per_op']:.1f}"


def rounds(s):
    return " ".join(f"{x:.0f}" for x in s["round_ops_per_s"])


mem_gib = int(meta.get("mem_kb") or 0) / 1024 / 1024
w("# libdss benchmarks")
w("")
w("Generated by `scripts/bench.sh` ("
  + ("programs: `examples/dss_bench.c`, `dssd/examples/http_bench.rs`" if dssd_doc
     else "program: `examples/dss_bench.c`") + f") on {meta['date']}.")
w("")
w("| | |")
w("|---|---|")
w(f"| Machine | {meta['nproc']} × {meta['cpu']}, {mem_gib:.1f} GiB RAM |")
w(f"| Kernel | {meta['kernel']} |")
pg_opts = meta.get("pg_opts") or ""
w(f"| PostgreSQL | {doc['server_version']} (`{meta['pg_bin']}`), private cluster from "
  f"`scripts/pgtmp.sh`, Unix socket, default settings"
  + (f" plus `{pg_opts}`" if pg_opts else "") + " |")
lv = doc["libpq_version"]
w(f"| libdss / libpq | {doc['libdss_version']} / {lv // 10000}.{lv % 10000} |")
busy = float(meta["loadavg"].split()[0]) > 0.5 * int(meta["nproc"]) or \
    float(meta["loadavg_end"].split()[0]) > 1.5 * int(meta["nproc"])
w(f"| Load average | {meta['loadavg']} at start, {meta['loadavg_end']} at the end (client and "
  f"server share the machine{'; **the machine was busy with other work: figures are noisy**' if busy else ''}) |")
w(f"| Command | `{meta['command']}` |")
w(f"| Benchmark | `{meta['bench']}` |")
if dssd_doc:
    w(f"| dssd benchmark | `{meta['http_bench']}` |")
peer_list = st.get("peers", [])
w(f"| Rounds | {st['rounds']} per side of {st['duration_s']:g} s, library"
  + (", baseline and peers (" + ", ".join(peer_list) + ")" if peer_list else " and baseline")
  + " alternating, the order rotating every round so that the side going first changes "
  f"every round (ABBA… with two sides); library pool_size {st['pool_size']} |")
w("")
w("**Library**: libdss, one `dss_handle` shared by all threads (as a daemon uses it). "
  "**Baseline**: the same SQL statements (`BENCH_SQL_*` in `dss_bench.c`, identical to the "
  "library's), sent through libpq by the same program: "
  + ("the threads share the baseline's connections (taken from and given back to a "
     "mutex-protected stack around each call, the least a pool behind one shared handle "
     "does), " if st.get("shared_baseline") else "one connection per thread, ")
  + "each "
  "statement prepared once per connection, binary parameters and results, read the way the "
  "library reads them. Latencies are per call (µs, p50 / p99 / max); throughput ratio = "
  "library ops/s ÷ baseline ops/s over all rounds; *same-round* = median over rounds of that "
  "ratio within one round, which resists load that comes and goes on the machine; *client "
  "CPU µs/op* = the benchmark process's own CPU time (user + system, all threads) per "
  "operation, which does not depend on the load.")
w("")

body = []
b = body.append

# pair / refresh / status
names = {"pair": "pair: `dss_lock` + `dss_unlock`, distinct ids per thread (pairs/s)",
         "refresh": "refresh: `dss_lock_refresh` of a lock each thread holds (calls/s)",
         "status": "status: `dss_lock_status` (owner + timestamp) of a held lock (calls/s)"}
for name, title in names.items():
    rows = by(name)
    if not rows:
        continue
    b(f"## {title}")
    b("")
    b("| threads | library ops/s | baseline ops/s | ratio (≥ 0.95) | same-round | "
      "library p50 / p99 / max | baseline p50 / p99 / max | p99 ratio (≤ 1.2) | "
      "client CPU µs/op library / baseline | per round: library ; baseline |")
    b("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        t = r["threads"]
        lib, base = r["library"], r["baseline"]
        nz = noisy(lib, base)
        tr = target(f"{name}, {t} thread{'s' if t > 1 else ''}: throughput ≥ 0.95× baseline",
                    f"{r['throughput_ratio']:.3f}", r["throughput_ratio"] >= 0.95, nz)
        pr = target(f"{name}, {t} thread{'s' if t > 1 else ''}: p99 ≤ 1.2× baseline",
                    f"{r['p99_ratio']:.3f}", r["p99_ratio"] <= 1.2, nz)
        b(f"| {t} | {f(lib['ops_per_s'])} | {f(base['ops_per_s'])} | "
          f"{r['throughput_ratio']:.3f} {tr} | {r['paired_ratio_median']:.3f} | {lat(lib)} | "
          f"{lat(base)} | {r['p99_ratio']:.3f} {pr} | {cpu(lib, base)} | "
          f"{rounds(lib)} ; {rounds(base)} |")
    b("")

# dssd: POST + DELETE over HTTP vs the same calls made by the library
# directly (http_bench); no target in the issue, ratios reported
if dssd_doc:
    d0 = dssd_doc
    b("## dssd: `POST` + `DELETE` over HTTP vs the library called directly (pairs/s)")
    b("")
    b("`dssd/examples/http_bench.rs`, on the same cluster after the rows above. **dssd**: the "
      "installed `dssd --listen 127.0.0.1:<port> --conninfo …` (default settings: library pool "
      f"{d0['pool_size']}, one request-log line per request to a file), each client thread "
      "with one keep-alive HTTP/1.1 connection of its own (ureq) sending `POST /<name>?"
      "lock_timeout=0&lease_timeout=10s` then `DELETE /<name>?id=<id>`, a new name per pair, "
      "every answer checked (200, the id, `{}`). **library**: what dssd calls for those two "
      "requests, called directly through one handle (same pool size) in the benchmark "
      "process: `dss::wait::acquire(Exclusive, name, owner, 10 000 ms, 0)` + "
      "`dss::token::release(Lock, name, token)`, a new name per pair. "
      f"{d0['rounds']} rounds of {d0['duration_s']:g} s per side, the side going first "
      "changing every round (ABBA…). Latency is per pair (µs); ratio = dssd pairs/s ÷ "
      "library pairs/s over all rounds; *same-round*: median over rounds of that ratio within "
      "one round; *dssd CPU*: the dssd process's CPU time (user + system, `/proc/<pid>/stat`) "
      "per pair; *client CPU*: the benchmark process's, per pair (for dssd: the HTTP "
      "clients; for the library: the library itself). No target: ratios only; *(noisy)*: the "
      "rounds of one side differ by more than 1.5×.")
    b("")
    b("| clients | dssd pairs/s | library pairs/s | dssd ÷ library | same-round | "
      "dssd p50 / p99 / max | library p50 / p99 / max | dssd CPU µs/pair | "
      "client CPU µs/pair dssd / library | per round: dssd ; library |")
    b("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def dnoisy(*sides):
        for s in sides:
            r = [x for x in s["round_pairs_per_s"] if x > 0]
            if len(r) > 1 and max(r) > 1.5 * min(r):
                return True
        return False

    def drounds(s):
        return " ".join(f"{x:.0f}" for x in s["round_pairs_per_s"])

    for r in d0["results"]:
        ds, ls = r["dssd"], r["library"]
        nz = " (noisy)" if dnoisy(ds, ls) else ""
        b(f"| {r['threads']} | {f(ds['pairs_per_s'])} | {f(ls['pairs_per_s'])} | "
          f"{r['ratio']:.3f}{nz} | {r['paired_ratio_median']:.3f} | "
          f"{f(ds['p50_us'], 0)} / {f(ds['p99_us'], 0)} / {ds['max_us']:,} | "
          f"{f(ls['p50_us'], 0)} / {f(ls['p99_us'], 0)} / {ls['max_us']:,} | "
          f"{ds['dssd_cpu_us_per_pair']:.1f} | "
          f"{ds['client_cpu_us_per_pair']:.1f} / {ls['client_cpu_us_per_pair']:.1f} | "
          f"{drounds(ds)} ; {drounds(ls)} |")
    b("")

# kv-set / kv-get: no target in the issue, ratios reported
kv_names = {"kv-set": "`dss_kv_set` of a 64-byte value (ttl 0)",
            "kv-get": "`dss_kv_get` of a 64-byte value (the copy freed)"}
kv_rows = [r for name in kv_names for r in by(name)]
if kv_rows:
    r0 = kv_rows[0]
    b("## kv-set / kv-get: key-value calls (calls/s)")
    b("")
    b(f"Each thread cycles over {r0['keys_per_thread']} keys of its own in bucket "
      f"`{r0['bucket']}`, values of {r0['value_bytes']} bytes; the keys are written untimed "
      "before each round, so every timed `dss_kv_set` updates a live row and every "
      "`dss_kv_get` finds its key (both sides check the value's length). The baseline runs "
      "`BENCH_SQL_KV_SET` / `BENCH_SQL_KV_GET` (parameters text, text, bytea, int8 / text, "
      "text; binary results, the returned version read as an int8). No target: ratios only; "
      "*(noisy)*: the rounds of one side differ by more than 1.5×.")
    b("")
    b("| workload | threads | library ops/s | baseline ops/s | ratio | same-round | "
      "library p50 / p99 / max | baseline p50 / p99 / max | p99 ratio | "
      "client CPU µs/op library / baseline | per round: library ; baseline |")
    b("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, what in kv_names.items():
        for r in by(name):
            lib, base = r["library"], r["baseline"]
            nz = " (noisy)" if noisy(lib, base) else ""
            b(f"| {name}: {what} | {r['threads']} | {f(lib['ops_per_s'])} | "
              f"{f(base['ops_per_s'])} | {r['throughput_ratio']:.3f}{nz} | "
              f"{r['paired_ratio_median']:.3f} | {lat(lib)} | {lat(base)} | "
              f"{r['p99_ratio']:.3f} | {cpu(lib, base)} | {rounds(lib)} ; {rounds(base)} |")
    b("")

# shared / sem: no target in the issue, ratios reported (no peers)
sh_names = {"shared": "`dss_lock_shared` (ttl 0, timeout 0) + `dss_unlock_shared`",
            "sem": "`dss_sem_acquire` (1 permit, capacity 1, ttl 60 000 ms, timeout 0) + "
                   "`dss_sem_release`"}
sh_rows = [r for name in sh_names for r in by(name)]
if sh_rows:
    b("## shared / sem: shared locks and semaphores, a new id per iteration (pairs/s)")
    b("")
    b("Each thread takes and releases a new id (shared) or a new semaphore (sem) per "
      "iteration, never in conflict: the cost of the calls themselves, which are PL/pgSQL "
      "functions (`sql/0006_shared.sql`) locking the id's row first. The baseline runs "
      "`BENCH_SQL_SHARED_TRY` (ttl 0, ticket 0, queue 0; the token read) + "
      "`BENCH_SQL_SHARED_RELEASE` and `BENCH_SQL_SEM_TRY` (permits 1, capacity 1, ttl 60 000, "
      "ticket 0, queue 0) + `BENCH_SQL_SEM_RELEASE` ('done' expected; actor the library's "
      "empty string), binary parameters (int4 / int8) and results. No peers; no target: "
      "ratios only; *(noisy)*: the rounds of one side differ by more than 1.5×.")
    b("")
    b("| workload | threads | library ops/s | baseline ops/s | ratio | same-round | "
      "library p50 / p99 / max | baseline p50 / p99 / max | p99 ratio | "
      "client CPU µs/op library / baseline | per round: library ; baseline |")
    b("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, what in sh_names.items():
        for r in by(name):
            lib, base = r["library"], r["baseline"]
            nz = " (noisy)" if noisy(lib, base) else ""
            b(f"| {name}: {what} | {r['threads']} | {f(lib['ops_per_s'])} | "
              f"{f(base['ops_per_s'])} | {r['throughput_ratio']:.3f}{nz} | "
              f"{r['paired_ratio_median']:.3f} | {lat(lib)} | {lat(base)} | "
              f"{r['p99_ratio']:.3f} | {cpu(lib, base)} | {rounds(lib)} ; {rounds(base)} |")
    b("")

# contended / contended-wait
for name in ("contended", "contended-wait"):
    rows = by(name)
    if not rows:
        continue
    r = rows[0]
    if name == "contended":
        b(f"## contended: {r['threads']} threads on one id, `dss_lock` until taken "
          f"(`sched_yield` between tries), hold {r['hold_us']} µs, `dss_unlock`")
    else:
        b(f"## contended-wait: {r['threads']} threads on one id with `dss_lock_wait`, hold "
          f"{r['hold_us']} µs, `dss_unlock`")
        b("")
        b("The baseline is the `contended` retry loop through libpq (the library's waiting "
          "protocol has no single-statement equivalent). Library call latency here is the "
          "whole `dss_lock_wait` call, i.e. the wait.")
    b("")
    b("| side | acquisitions/s | handoffs/s | call p50 / p99 / max µs | wait p50 / p99 µs | "
      "longest wait µs | thread-rounds without the lock | exclusion violations |")
    b("|---|---:|---:|---:|---:|---:|---:|---:|")
    for side in ("library", "baseline"):
        s = r[side]
        b(f"| {side} | {f(s['ops_per_s'])} | {f(s['handoffs_per_s'])} | {lat(s)} | "
          f"{f(s['wait_p50_us'])} / {f(s['wait_p99_us'])} | {f(s['max_wait_us'])} | "
          f"{s['idle_thread_rounds']} | {s['violations']} |")
    v = r["library"]["violations"] + r["baseline"]["violations"]
    b("")
    b(f"Library/baseline acquisitions: {r['throughput_ratio']:.3f} (same-round "
      f"{r['paired_ratio_median']:.3f}). Mutual exclusion: "
      + target(f"{name}: no two holders at once", str(v), v == 0) + ".")
    b("")

# batch
rows = by("batch")
if rows:
    b("## batch: one `dss_lock_many` / `dss_unlock_many` call vs single calls (ms, median of rounds)")
    b("")
    b("| ids | side | lock_many | unlock_many | n × dss_lock | n × dss_unlock | µs per dss_lock |")
    b("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for side in ("library", "baseline"):
            s = r[side]
            b(f"| {r['ids']:,} | {side} | {f(s['lock_many_ms'], 2)} | {f(s['unlock_many_ms'], 2)} | "
              f"{f(s['single_lock_ms'])} | {f(s['single_unlock_ms'])} | "
              f"{f(s['single_lock_us_per_call'])} |")
    b("")
    for r in rows:
        line = (f"- {r['ids']:,} ids: one `dss_lock_many` = {r['library']['lock_many_ms']:.2f} ms "
                f"= {r['lock_many_over_hundred_singles']:.2f}× the time of 100 single `dss_lock` "
                f"calls ({r['hundred_single_locks_ms']:.2f} ms), "
                f"{r['lock_many_over_singles']:.3f}× that of {r['ids']:,}; library/baseline "
                f"throughput: lock_many {r['lock_many_ratio']:.3f}, unlock_many "
                f"{r['unlock_many_ratio']:.3f}, single calls {r['singles_ratio']:.3f}.")
        if r["ids"] == 10000:
            line += " Target " + target(
                "batch: 10 000 ids in one dss_lock_many faster than 100 single dss_lock",
                f"{r['library']['lock_many_ms']:.1f} ms vs {r['hundred_single_locks_ms']:.1f} ms",
                r["library"]["lock_many_ms"] < r["hundred_single_locks_ms"])
            speedup = r["library"]["single_lock_ms"] / r["library"]["lock_many_ms"] \
                if r["library"]["lock_many_ms"] > 0 else 0
            line += "; " + target(
                "batch 10 000: lock_many ≥ 10× faster than 10 000 single dss_lock",
                f"{speedup:.1f}× ({r['library']['lock_many_ms']:.1f} ms vs "
                f"{r['library']['single_lock_ms']:.1f} ms)", speedup >= 10)
        b(line)
    if not any(r["ids"] == 10000 for r in rows):
        target("batch: 10 000 ids in one dss_lock_many faster than 100 single dss_lock",
               "not run (no batch of 10 000)", None)
        target("batch 10 000: lock_many ≥ 10× faster than 10 000 single dss_lock",
               "not run (no batch of 10 000)", None)
    b("")

# soak
rows = by("soak")
if rows:
    r = rows[0]
    b(f"## soak: pair, {r['threads']} threads, {r['minutes']:g} min, library only")
    b("")
    b("| t (s) | pairs/s | RSS KiB | peak RSS KiB | dss.locks bytes | dead rows | live rows | "
      "autovacuums (total) | dss.lock_history bytes |")
    b("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in r["windows"]:
        hist = "–" if x["history_bytes"] < 0 else f"{x['history_bytes']:,}"
        b(f"| {x['t_s']:.0f} | {f(x['ops_per_s'])} | {x['rss_kib']:,} | {x['maxrss_kib']:,} | "
          f"{x['table_bytes']:,} | {x['n_dead_tup']:,} | {x['n_live_tup']:,} | "
          f"{x['autovacuum_count']} | {hist} |")
    b("")
    lib = r["library"]
    b(f"Overall {f(lib['ops_per_s'])} pairs/s, latency p50 / p99 / max {lat(lib)} µs.")
    b("")
    mom = r["min_over_median"]
    b("- Throughput: slowest window / median window = "
      f"{mom:.3f} " + target("soak: no window below 0.8× the median", f"{mom:.3f}", mom >= 0.8))
    first, end = r["maxrss_first_window_kib"], r["maxrss_end_kib"]
    slack = max(1024, 0.02 * first)
    b(f"- Peak RSS: {first:,} KiB after the first window, {end:,} KiB at the end "
      f"(flat: at most +{slack:,.0f} KiB; before the soak {r['maxrss_before_kib']:,} KiB) "
      + target("soak: peak RSS flat (end ≤ first window + max(1 MiB, 2 %))",
               f"{first:,} → {end:,} KiB", end - first <= slack))
    mid, tend = r["table_bytes_mid"], r["table_bytes_end"]
    bound = 1.25 * mid + 1024 * 1024
    b(f"- dss.locks (`pg_total_relation_size`): {r['table_bytes_before']:,} bytes before, "
      f"{mid:,} at mid-soak, {tend:,} at the end; {r['n_dead_tup_end']:,} dead rows at the "
      f"end (`pg_stat_user_tables.n_dead_tup`), {r['autovacuums']} autovacuums during the soak. "
      "Bounded = end ≤ 1.25 × mid-soak + 1 MiB (linear growth would double it; meaningful "
      "once the soak spans a few autovacuum cycles, i.e. ≥ 5 min) "
      + target("soak: dss.locks size bounded (end ≤ 1.25× mid-soak + 1 MiB)",
               f"{mid:,} → {tend:,} bytes", tend <= bound))
    if r["history_bytes_end"] >= 0:
        b(f"- dss.lock_history is {r['history_bytes_end']:,} bytes at the end: append-only by "
          "design (one row per acquisition and release), pruned by the operator; not a target.")
    b("")

# scale
rows = by("scale")
if rows:
    b("## scale: pair with other locks already held (pairs/s)")
    b("")
    b("| other locks | threads | library | vs none | baseline | vs none | ratio | same-round | "
      "library p50 / p99 / max | baseline p50 / p99 / max | client CPU µs/op |")
    b("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    top = max(r["fill"] for r in rows)
    for r in rows:
        vl = r.get("library_vs_empty")
        vb = r.get("baseline_vs_empty")
        cell = "–" if vl is None else f"{vl:.3f}"
        if vl is not None and r["fill"] == top:
            empty = [e for e in rows if e["fill"] == 0 and e["threads"] == r["threads"]]
            nz = noisy(r["library"], *(e["library"] for e in empty))
            cell += " " + target(f"scale, {r['threads']} thread{'s' if r['threads'] > 1 else ''}: "
                                 f"{top:,} other locks ≥ 0.8× none", f"{vl:.3f}", vl >= 0.8, nz)
        b(f"| {r['fill']:,} | {r['threads']} | {f(r['library']['ops_per_s'])} | {cell} | "
          f"{f(r['baseline']['ops_per_s'])} | {'–' if vb is None else f'{vb:.3f}'} | "
          f"{r['throughput_ratio']:.3f} | {r['paired_ratio_median']:.3f} | "
          f"{lat(r['library'])} | {lat(r['baseline'])} | {cpu(r['library'], r['baseline'])} |")
    if top != 1000000:
        target("scale: 1 000 000 other locks ≥ 0.8× none", f"not run (largest fill {top:,})", None)
    b("")

# peers: library ÷ each peer, same run (built after the body so that its
# targets follow the others in the table; printed before the body)
peer_sec = []
p = peer_sec.append
peer_min = {"pair": 0.8, "refresh": 0.9, "status": 0.9}
units = {"pair": "pairs", "refresh": "calls", "status": "calls"}
prows = [r for name in peer_min for r in by(name)]
brows = by("batch")
if prows or brows:
    p("## Peers: the library ÷ other ways of keeping a lock in PostgreSQL")
    p("")
    p("Measured in the same run as the library, their rounds rotating with the library's and "
      "the baseline's, each through libpq with one connection per thread and the library's "
      "session settings. **minimal**: a phobos-shaped table `dss_bench.minimal_lock (id text "
      "PRIMARY KEY, owner text, ts timestamptz)`, prepared statements, binary results: pair = "
      "`INSERT` + `DELETE … WHERE id = $1 AND owner = $2`, refresh = `UPDATE … SET ts = now()`, "
      "status = `SELECT owner, ts`; in batch, **bare** = one `INSERT … SELECT "
      "unnest($1::text[]), $2` of the N ids. **phobos**: phobos's own SQL (pair), text "
      "statements built with the values escaped by `PQescapeStringConn`, sent with `PQexec`: "
      "`INSERT` into `dss_bench.phobos_lock`, then phobos's check-then-delete `DO` block. "
      "**advisory**: `pg_try_advisory_lock` / `pg_advisory_unlock` of a 64-bit hash of the id "
      "(pair), prepared. Every result is checked (one row affected, true returned), as the "
      "library's return codes are. Ratio = library ops/s ÷ the side's ops/s over all rounds "
      "(above 1: the library is faster); *same-round*: median over rounds of that ratio within "
      "one round; *(noisy)*: the rounds of one side differ by more than 1.5×.")
    p("")
    p("What each peer gives up, i.e. what the library's extra cost pays for:")
    p("")
    p("- **minimal**: no fencing token, no lease (expiry), no history, no waiting queue, no "
      "check of the owner beyond the `DELETE`'s `WHERE`, and no distinction between a lock "
      "that is absent, held by another owner or expired: the caller only learns \"0 rows\".")
    p("- **phobos**: text SQL built with string formatting (one parse and plan per call, and "
      "SQL injection whenever a value is not escaped; inside the `DO` block's dollar quotes a "
      "value containing `$$` ends the block, escaped or not), a check-then-act `DO` block that "
      "races with a concurrent unlock (the `SELECT` and the `DELETE` are separate steps), no "
      "token, no lease, no history.")
    p("- **advisory**: not durable: the lock is gone when the session ends, on a server "
      "restart and on a failover; it is held per session, so a connection pool cannot share "
      "it between threads; it is not a row, so other tools (phobos's `dss` tables, `psql`) "
      "cannot see who holds what.")
    p("")
    for name, floor in peer_min.items():
        rows = by(name)
        if not rows:
            continue
        p(f"### {name} ({units[name]}/s)")
        p("")
        p("| threads | side | ops/s | p50 / p99 / max µs | client CPU µs/op | library ÷ side | "
          "same-round | per round |")
        p("|---:|---|---:|---:|---:|---:|---:|---|")
        for r in rows:
            t = r["threads"]
            ts = f"{t} thread{'s' if t > 1 else ''}"
            lib, base = r["library"], r["baseline"]
            p(f"| {t} | library | {f(lib['ops_per_s'])} | {lat(lib)} | "
              f"{lib['cpu_us_per_op']:.1f} | – | – | {rounds(lib)} |")
            p(f"| {t} | baseline (same SQL) | {f(base['ops_per_s'])} | {lat(base)} | "
              f"{base['cpu_us_per_op']:.1f} | {r['throughput_ratio']:.3f} | "
              f"{r['paired_ratio_median']:.3f} | {rounds(base)} |")
            peers = r.get("peers", {})
            for peer, ps in peers.items():
                pr = r["peer_ratio"][peer]
                cell = f"{pr:.3f}"
                if peer == "minimal":
                    cell += " " + target(f"{name}, {ts}: ≥ {floor:g}× minimal", f"{pr:.3f}",
                                         pr >= floor, noisy(lib, ps))
                elif noisy(lib, ps):
                    cell += " (noisy)"
                same = r.get("peer_paired_ratio_median", {}).get(peer)
                p(f"| {t} | {peer} | {f(ps['ops_per_s'])} | {lat(ps)} | "
                  f"{ps['cpu_us_per_op']:.1f} | {cell} | {'–' if same is None else f'{same:.3f}'} | "
                  f"{rounds(ps)} |")
            if "minimal" not in peers:
                target(f"{name}, {ts}: ≥ {floor:g}× minimal", "not measured (--peers)", None)
        p("")
    if brows:
        p("### batch: one `dss_lock_many` vs one bare `INSERT … SELECT unnest($1::text[]), $2` "
          "(ms, median of rounds)")
        p("")
        p("| ids | dss_lock_many | bare INSERT … unnest | lock_many ÷ bare (≤ 2 at 10 000) | "
          "n × dss_lock | n × dss_lock ÷ lock_many |")
        p("|---:|---:|---:|---:|---:|---:|")
        for r in brows:
            bare = r.get("peers", {}).get("bare")
            lm, sl = r["library"]["lock_many_ms"], r["library"]["single_lock_ms"]
            cell = "–"
            if bare:
                x = r["peer_ratio"]["bare"]
                cell = f"{x:.2f}"
                if r["ids"] == 10000:
                    cell += " " + target("batch 10 000: lock_many ≤ 2× bare INSERT … unnest",
                                         f"{x:.2f}× ({lm:.1f} ms vs {bare['insert_ms']:.1f} ms)",
                                         x <= 2)
            p(f"| {r['ids']:,} | {f(lm, 2)} | {f(bare['insert_ms'], 2) if bare else '–'} | "
              f"{cell} | {f(sl)} | {f(sl / lm if lm > 0 else None)} |")
        if not any(r["ids"] == 10000 and r.get("peers", {}).get("bare") for r in brows):
            target("batch 10 000: lock_many ≤ 2× bare INSERT … unnest",
                   "not run (no batch of 10 000 with the bare peer)", None)
        p("")

passed = sum(1 for t in targets if t[2] is True)
failed = sum(1 for t in targets if t[2] is False)
noisy_n = sum(1 for t in targets if t[3])
w(f"## Targets: {passed} pass, {failed} fail")
w("")
if noisy_n:
    w(f"{noisy_n} verdicts are marked *(noisy)*: the rounds of one side differed by more than "
      "1.5× (max / min), i.e. the load on the machine changed during the measurement; rerun "
      "them on an idle machine before trusting them.")
    w("")
w("| target | measured | result |")
w("|---|---:|---|")
for what, measured, ok, nz in targets:
    w(f"| {what} | {measured} | {verdict(ok, nz)} |")
w("")
if peer_list:   # --peers none: no section (the peers' targets say "not measured")
    lines.extend(peer_sec)
lines.extend(body)
w(f"Peak RSS of the benchmark process over the whole run: {doc['maxrss_kib']:,} KiB.")
with open(out, "w") as fh:
    fh.write("\n".join(lines) + "\n")
print(f"bench: wrote {out}: {passed} targets pass, {failed} fail"
      + (f" ({noisy_n} noisy)" if noisy_n else ""))
sys.exit(3 if failed else 0)
PYTHON
case $report in
0) ;;
3) [ "${BENCH_STRICT:-}" != 1 ] || exit 3 ;;
*) echo "bench: could not write the report" >&2; exit 1 ;;
esac
