/*
 * dss_bench - libdss throughput and latency, measured against the library's
 * own SQL sent straight through libpq.
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 *   dss_bench [--conninfo STR] [--workload LIST]... [--threads LIST]
 *             [--duration SECONDS] [--rounds N] [--json] ...   (--help)
 *
 * Two sides run the same workload on the same database:
 *
 *   library   libdss: one dss_handle shared by every thread, as a daemon
 *             uses it (its pool is sized to the thread count through
 *             PHOBOS_DSS_pool_size when that variable is unset);
 *   baseline  the very statements the library runs (the BENCH_SQL_* block
 *             below), through libpq: one connection per thread, each
 *             statement prepared once per connection (PQprepare) with the
 *             library's parameter types, parameters and results in binary
 *             (as the library's driver sends and reads them), results read
 *             the way the library reads them (the returned rows/columns,
 *             judged by the same rules).
 *
 * and, for pair, refresh, status and batch, peers (--peers): other ways of
 * keeping a lock in PostgreSQL, through libpq on the baseline's connections
 * (one per thread, the same session settings BENCH_SESSION), each call's
 * result checked like the library's return codes:
 *
 *   minimal   the least a durable lock can cost: a phobos-shaped table
 *             dss_bench.minimal_lock (id, owner, ts), prepared INSERT /
 *             DELETE (pair), UPDATE ts (refresh), SELECT owner, ts (status),
 *             binary results; in batch, "bare": one INSERT ... unnest($1) of
 *             the N ids;
 *   phobos    phobos's own SQL (pair): text statements built with the
 *             values escaped by PQescapeStringConn, sent with PQexec, the
 *             unlock being phobos's check-then-delete DO block, on
 *             dss_bench.phobos_lock;
 *   advisory  pg_try_advisory_lock / pg_advisory_unlock of a 64-bit hash
 *             of the id (pair), prepared: not durable, for scale.
 *
 * The schema dss_bench is created at start (its tables fresh) and dropped at
 * the end, also when interrupted with SIGINT or SIGTERM.
 *
 * Rounds alternate between the sides, the order rotating every round (the
 * side going first changes every round: ABBA... with two sides; with k
 * sides each goes first once every k rounds), and the program prints,
 * per workload: operations per second, per-call latency p50/p99/max (µs),
 * the process's CPU time per operation, the library/baseline throughput and
 * p99 ratios, the library/peer throughput ratios, and the process's peak
 * RSS (getrusage ru_maxrss). Latencies go to per-thread log-linear
 * histograms allocated before the clock starts.
 * scripts/bench.sh runs everything against a private PostgreSQL and turns
 * the --json output into BENCHMARKS.md.
 *
 * Every call's return code is checked: anything unexpected stops the run
 * with the call, the code and dss_last_error() (or libpq's message) on
 * stderr, and exit status 1.
 *
 * Lock ids start with "bench:<pid>:", and so do the ids of the shared locks
 * (shared) and semaphores (sem); key-value workloads write bucket "bench",
 * keys starting with the same prefix. A run removes them all.
 *
 * Build: cc -std=c11 -O2 dss_bench.c $(pkg-config --cflags --libs dss libpq) -pthread
 */

#define _GNU_SOURCE   /* ECOMM, clock_nanosleep, getopt_long, pthread_barrier */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include <dss.h>

/* ==== BENCH_SQL: the library's statements, verbatim ====================
 * Each BENCH_SQL_<NAME> is the exact text of the library's statement <NAME>
 * (`pub static NAME: Query` in src/sql/lock.rs, src/sql/kv.rs for the KV_
 * ones, src/sql/shared.rs for SHARED_TRY, SHARED_RELEASE, SEM_TRY and
 * SEM_RELEASE: its `text`, with concat!() and the Rust line continuations
 * resolved; one line each). A cargo test (tests/bench_sql.rs) compares them:
 * change them only together with the library. Nothing else goes here.
 */
#define BENCH_SQL_LOCK "WITH bucket AS MATERIALIZED ( SELECT pg_advisory_xact_lock(7235443, hashtext($1) & 4095) WHERE true), ins AS ( INSERT INTO dss.locks (id, owner, token, ttl_ms, waited, expires_at) SELECT $1, $2, nextval('dss.lock_token_seq'), $3, false, CASE WHEN $3 > 0 THEN now() + $3 * interval '1 millisecond' END FROM bucket WHERE true ON CONFLICT (id) DO NOTHING RETURNING token), hist AS ( INSERT INTO dss.lock_history (event, id, owner, token) SELECT 'acquire', $1, $2, token FROM ins) SELECT token FROM ins"
#define BENCH_SQL_REFRESH "UPDATE dss.locks SET ts = now(), expires_at = CASE WHEN ttl_ms > 0 THEN now() + ttl_ms * interval '1 millisecond' END WHERE id = $1 AND owner = $2 AND (expires_at IS NULL OR expires_at > now()) RETURNING false AS expired"
#define BENCH_SQL_UNLOCK "WITH del AS ( DELETE FROM dss.locks l WHERE l.id = $1 AND l.owner = $2 RETURNING l.token, coalesce(l.expires_at <= now(), false) AS expired, CASE WHEN l.waited THEN pg_notify('dss_' || md5(l.id), '') END), hist AS ( INSERT INTO dss.lock_history (event, id, owner, token) SELECT 'release', $1, $2, token FROM del) SELECT expired FROM del"
#define BENCH_SQL_STATUS "SELECT owner, ts FROM dss.locks WHERE id = $1 AND owner IS NOT NULL AND (expires_at IS NULL OR expires_at > now())"
#define BENCH_SQL_LOCK_MANY "SELECT conflict_ord, holder FROM dss.lock_many($1, $2, $3)"
#define BENCH_SQL_KV_SET "INSERT INTO dss.kv AS kv (bucket, key, value, version, expires_at) SELECT $1, $2, $3, nextval('dss.kv_version_seq'), CASE WHEN $4 > 0 THEN now() + $4 * interval '1 millisecond' END WHERE true ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value, version = greatest(excluded.version, kv.version + 1), expires_at = excluded.expires_at, updated_at = now(), created_at = CASE WHEN (kv.expires_at IS NULL OR kv.expires_at > now()) THEN kv.created_at ELSE now() END RETURNING version"
#define BENCH_SQL_KV_GET "SELECT value, version FROM dss.kv AS kv WHERE bucket = $1 AND key = $2 AND (kv.expires_at IS NULL OR kv.expires_at > now())"
#define BENCH_SQL_SHARED_TRY "SELECT * FROM dss.lock_shared_try($1, $2, $3, $4, $5)"
#define BENCH_SQL_SHARED_RELEASE "SELECT dss.lock_shared_release($1, $2, $3)"
#define BENCH_SQL_SEM_TRY "SELECT * FROM dss.sem_try($1, $2, $3, $4, $5, $6, $7)"
#define BENCH_SQL_SEM_RELEASE "SELECT dss.sem_release($1, $2, $3)"
#define BENCH_SQL_UNLOCK_MANY "WITH req AS ( SELECT r.id, r.ord FROM unnest($1::text[]) WITH ORDINALITY AS r(id, ord)), cur AS ( SELECT l.id, l.owner, coalesce(l.expires_at <= now(), false) AS expired FROM dss.locks l WHERE l.id = ANY ($1) ORDER BY l.id FOR UPDATE), del AS ( DELETE FROM dss.locks l WHERE l.id = ANY (ARRAY(SELECT cur.id FROM cur WHERE cur.owner = $2)) RETURNING l.id, l.token, coalesce(l.expires_at <= now(), false) AS expired, CASE WHEN l.waited THEN pg_notify('dss_' || md5(l.id), '') END), hist AS ( INSERT INTO dss.lock_history (event, id, owner, token) SELECT 'release', id, $2, token FROM del), bad AS ( SELECT req.ord, req.id FROM req WHERE req.id NOT IN (SELECT id FROM del WHERE NOT expired) ORDER BY req.ord LIMIT 1) SELECT bad.ord, del.id IS NOT NULL, coalesce(del.expired, false), cur.owner, coalesce(cur.expired, false) FROM bad LEFT JOIN cur ON cur.id = bad.id LEFT JOIN del ON del.id = bad.id"
/* ==== end of BENCH_SQL ================================================= */

/* The session settings the library sends when it connects
 * (dss::sql::SESSION_SETTINGS); the baseline sessions get the same
 * (checked by tests/bench_sql.rs too). */
#define BENCH_SESSION "SET enable_seqscan = off"

/* The benchmark's own housekeeping (admin connection, never timed). */
#define ADMIN_SQL_COUNT "SELECT count(*) FROM dss.locks WHERE id >= $1 AND id < $2"
#define ADMIN_SQL_DELETE "DELETE FROM dss.locks WHERE id >= $1 AND id < $2"
#define ADMIN_SQL_FILL \
    "INSERT INTO dss.locks (id, owner) SELECT $1 || g, $2 FROM generate_series($3::bigint, $4::bigint) AS g"
#define ADMIN_SQL_STATS \
    "SELECT pg_total_relation_size('dss.locks'::regclass), s.n_dead_tup, s.n_live_tup, " \
    "s.autovacuum_count, coalesce(pg_total_relation_size(to_regclass('dss.lock_history')), -1) " \
    "FROM pg_stat_user_tables AS s WHERE s.relid = 'dss.locks'::regclass"
/* This run's keys: bucket $1, keys in [$2, $3) (the run's prefix; the
 * primary key (bucket, key) is COLLATE "C", so this is a range of it). */
#define ADMIN_SQL_KV_COUNT "SELECT count(*) FROM dss.kv WHERE bucket = $1 AND key >= $2 AND key < $3"
#define ADMIN_SQL_KV_DELETE "DELETE FROM dss.kv WHERE bucket = $1 AND key >= $2 AND key < $3"
/* shared, sem: this run's rows of the shared holders and the semaphores,
 * ids in [$1, $2) (a shared id's dss.locks row, owner NULL, is one of
 * ADMIN_SQL_COUNT's); how many, or removed. */
#define ADMIN_SQL_SHARED_COUNT \
    "SELECT (SELECT count(*) FROM dss.lock_shares WHERE id >= $1 AND id < $2) " \
    "+ (SELECT count(*) FROM dss.sem_holders WHERE id >= $1 AND id < $2) " \
    "+ (SELECT count(*) FROM dss.sems WHERE id >= $1 AND id < $2)"
#define ADMIN_SQL_SHARED_DELETE \
    "WITH s AS (DELETE FROM dss.lock_shares WHERE id >= $1 AND id < $2 RETURNING 1), " \
    "h AS (DELETE FROM dss.sem_holders WHERE id >= $1 AND id < $2 RETURNING 1), " \
    "m AS (DELETE FROM dss.sems WHERE id >= $1 AND id < $2 RETURNING 1) " \
    "SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM h) + (SELECT count(*) FROM m)"

/* The peers' tables and statements (not the library's: see --peers). The
 * schema is the benchmark's own: created at start, dropped at the end. */
#define PEER_SQL_SCHEMA "CREATE SCHEMA IF NOT EXISTS dss_bench"
#define PEER_SQL_DROP_TABLES "DROP TABLE IF EXISTS dss_bench.minimal_lock, dss_bench.phobos_lock"
#define PEER_SQL_DROP_SCHEMA "DROP SCHEMA IF EXISTS dss_bench CASCADE"
#define PEER_SQL_MINIMAL_TABLE \
    "CREATE TABLE dss_bench.minimal_lock (id text PRIMARY KEY, owner text, ts timestamptz DEFAULT now())"
#define PEER_SQL_PHOBOS_TABLE \
    "CREATE TABLE dss_bench.phobos_lock (id varchar(2048) PRIMARY KEY, owner varchar(256) NOT NULL, " \
    "\"timestamp\" timestamp DEFAULT now())"
/* minimal: prepared, (id text, owner text) / (id text), binary results. */
#define PEER_SQL_MINIMAL_LOCK "INSERT INTO dss_bench.minimal_lock (id, owner) VALUES ($1, $2)"
#define PEER_SQL_MINIMAL_UNLOCK "DELETE FROM dss_bench.minimal_lock WHERE id = $1 AND owner = $2"
#define PEER_SQL_MINIMAL_REFRESH "UPDATE dss_bench.minimal_lock SET ts = now() WHERE id = $1 AND owner = $2"
#define PEER_SQL_MINIMAL_STATUS "SELECT owner, ts FROM dss_bench.minimal_lock WHERE id = $1"
/* bare (batch): the N ids in one statement ($1 text[], $2 owner); the
 * delete runs untimed. */
#define PEER_SQL_BARE_INSERT "INSERT INTO dss_bench.minimal_lock (id, owner) SELECT unnest($1::text[]), $2"
#define PEER_SQL_BARE_DELETE "DELETE FROM dss_bench.minimal_lock WHERE id = ANY ($1) AND owner = $2"
/* phobos: text SQL through PQexec, the values escaped with
 * PQescapeStringConn; the unlock is the DO block phobos ships (the values
 * sit inside its dollar quotes: the ids and owners of this program never
 * contain a '$', which escaping would not protect). */
#define PHOBOS_SQL_LOCK "INSERT INTO dss_bench.phobos_lock (id, owner) VALUES ('%s', '%s');"
#define PHOBOS_SQL_UNLOCK \
    "DO $$ DECLARE o text; BEGIN SELECT owner INTO o FROM dss_bench.phobos_lock WHERE id = '%s'; " \
    "IF NOT FOUND THEN RAISE USING errcode = 'PHLK1'; END IF; IF o <> '%s' THEN RAISE USING " \
    "errcode = 'PHLK2'; END IF; DELETE FROM dss_bench.phobos_lock WHERE id = '%s' AND owner = '%s'; " \
    "END $$;"
/* advisory: $1 int8, the 64-bit FNV-1a hash of the id. */
#define PEER_SQL_ADVISORY_LOCK "SELECT pg_try_advisory_lock($1)"
#define PEER_SQL_ADVISORY_UNLOCK "SELECT pg_advisory_unlock($1)"
/* Housekeeping of the peers (admin connection, never timed). */
#define ADMIN_SQL_PEER_ROWS \
    "SELECT (SELECT count(*) FROM dss_bench.minimal_lock) + (SELECT count(*) FROM dss_bench.phobos_lock)"
#define ADMIN_SQL_ADVISORY_HELD \
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY ($1::int[])"

/* Parameter types, as the library declares them (prepare_typed). */
#define BYTEAOID     ((Oid)17)
#define INT8OID      ((Oid)20)
#define INT4OID      ((Oid)23)
#define TEXTOID      ((Oid)25)
#define TEXTARRAYOID ((Oid)1009)

#define MAX_THREADS 256
#define MAX_ROUNDS  100
#define MAX_LIST    16

/* kv-set, kv-get: each thread cycles over KV_KEYS keys of its own, values of
 * KV_VALUE_LEN bytes, in bucket KV_BUCKET. */
#define KV_BUCKET    "bench"
#define KV_KEYS      100
#define KV_VALUE_LEN 64
#define KV_KEY_LEN   96

/* sem: each iteration takes SEM_PERMITS of a new semaphore of capacity
 * SEM_CAPACITY, with a lease of SEM_TTL_MS (a permit needs one). shared:
 * no lease (ttl 0), as dss_lock in pair. Both try once (timeout 0). */
#define SEM_PERMITS  1
#define SEM_CAPACITY 1
#define SEM_TTL_MS   60000

/* ---- workloads and options -------------------------------------------- */

/* In the order they run. soak comes before scale: it watches dss.locks grow,
 * and scale leaves the table (not its rows) as large as its filler. */
enum wl { W_PAIR, W_REFRESH, W_STATUS, W_KV_SET, W_KV_GET, W_SHARED, W_SEM, W_CONTENDED,
          W_CONTENDED_WAIT, W_BATCH, W_SOAK, W_SCALE, W_N, W_WARMUP = W_N };
static const char *const wl_name[W_N + 1] = {
    "pair", "refresh", "status", "kv-set", "kv-get", "shared", "sem", "contended",
    "contended-wait", "batch", "soak", "scale", "warmup",
};
/* First letter of the lock ids (kv: keys; sem: semaphore ids) of each
 * workload, after the run's prefix ('f': scale's filler). */
static const char wl_tag[W_N + 1] = { 'p', 'r', 's', 'v', 'g', 'h', 'm', 'c', 'w', 'b', 'k',
                                      'x', 'u' };

static inline bool is_kv(enum wl wl)
{
    return wl == W_KV_SET || wl == W_KV_GET;
}

/* The sides: the library, the baseline, then the peers (--peers). */
enum side { LIB, BASE, MINIMAL, PHOBOS, ADVISORY, SIDE_N };
static const char *const side_name[SIDE_N] = { "library", "baseline", "minimal", "phobos",
                                               "advisory" };
static const char side_letter[SIDE_N] = { 'L', 'B', 'M', 'P', 'A' };   /* in lock ids */

/* --peers: a bit per peer side, and one for bare (batch, on minimal's table). */
#define PEER_BIT(s) (1u << (s))
#define PEER_BARE   (1u << SIDE_N)
#define PEERS_DEFAULT (PEER_BIT(MINIMAL) | PEER_BARE | PEER_BIT(PHOBOS) | PEER_BIT(ADVISORY))
static unsigned g_peers = PEERS_DEFAULT;
static bool g_peer_tables;      /* dss_bench's tables exist (created by this run) */

static inline bool peer_on(enum side s)
{
    return (g_peers & PEER_BIT(s)) != 0;
}

/* The sides of a workload, in the order of the first round; returns how many. */
static int sides_of(enum wl wl, enum side *out)
{
    int n = 0;
    out[n++] = LIB;
    out[n++] = BASE;
    if (wl == W_PAIR || wl == W_WARMUP) {
        if (peer_on(MINIMAL))
            out[n++] = MINIMAL;
        if (peer_on(PHOBOS))
            out[n++] = PHOBOS;
        if (peer_on(ADVISORY))
            out[n++] = ADVISORY;
    } else if ((wl == W_REFRESH || wl == W_STATUS) && peer_on(MINIMAL)) {
        out[n++] = MINIMAL;
    }
    return n;
}

static struct options {
    const char *conninfo;
    long threads[MAX_LIST];
    int nthreads;
    double duration;
    long rounds;
    bool want[W_N];
    long contenders;
    long hold_us;
    long batch[MAX_LIST];
    int nbatch;
    long fill[MAX_LIST];
    int nfill;
    double soak_minutes;
    double soak_window;
    long soak_threads;
    long ttl_ms;
    double warmup;
    bool shared_baseline;
    bool json;
    bool quiet;
} opt = {
    .duration = 5, .rounds = 3, .contenders = 8, .hold_us = 100, .soak_minutes = 5,
    .soak_window = 30, .soak_threads = 8, .ttl_ms = 0, .warmup = 1,
};

static void usage(FILE *f)
{
    fputs(
"usage: dss_bench [OPTION]...\n"
"Measures libdss (one dss_handle shared by all threads) against a baseline that\n"
"sends the library's own SQL statements through libpq (one connection per\n"
"thread, each statement prepared once, binary results), and against peers:\n"
"other ways of keeping locks in PostgreSQL (--peers). The sides' rounds\n"
"alternate on the same database, the order rotating every round (ABBA... with\n"
"two sides: the side going first changes every round).\n"
"\n"
"  --conninfo STR         libpq conninfo or URI (default: $PHOBOS_DSS_connect_string)\n"
"  --workload LIST        workloads to run, comma list, repeatable (default: all):\n"
"      pair               dss_lock + dss_unlock of distinct ids per thread\n"
"      refresh            dss_lock_refresh of a lock each thread holds\n"
"      status             dss_lock_status of a lock each thread holds\n"
"      kv-set             dss_kv_set of a 64-byte value, each thread over 100 keys of its own\n"
"      kv-get             dss_kv_get of such a key (written untimed before each round)\n"
"      shared             dss_lock_shared (ttl 0, timeout 0) + dss_unlock_shared of distinct\n"
"                         ids per thread (no peers)\n"
"      sem                dss_sem_acquire (1 permit, capacity 1, ttl 60000 ms, timeout 0) +\n"
"                         dss_sem_release of distinct semaphores per thread (no peers)\n"
"      contended          --contenders threads on one id, retrying on -EEXIST\n"
"      contended-wait     the same with dss_lock_wait (baseline: the contended loop)\n"
"      batch              one dss_lock_many / dss_unlock_many of N ids vs N single calls\n"
"      soak               pair for --soak-minutes, library only\n"
"      scale              pair with --scale-fill other locks held\n", f);
    /* Two strings: each within the 4095 bytes a C99 compiler must accept. */
    fputs(
"  --threads LIST         thread counts of pair, refresh, status, kv-set, kv-get, shared,\n"
"                         sem, scale (default 1,8)\n"
"  --duration SECONDS     length of one round (default 5)\n"
"  --rounds N             rounds per side (default 3)\n"
"  --contenders N         threads of contended and contended-wait (default 8)\n"
"  --hold-us N            how long a contender holds the lock, in µs (default 100)\n"
"  --batch-sizes LIST     ids per batch (default 1000,10000)\n"
"  --scale-fill LIST      other locks held during scale (default 0,100000,1000000)\n"
"  --soak-minutes M       soak length (default 5)\n"
"  --soak-window SECONDS  soak throughput window (default 30)\n"
"  --soak-threads N       soak threads (default 8)\n"
"  --ttl-ms N             lease of dss_lock_wait and dss_lock_many, 0: none (default 0,\n"
"                         as dss_lock)\n"
"  --warmup SECONDS       untimed pair run of each side before the first workload (default 1)\n"
"  --peers LIST           peers measured with the library, comma list, or none (default\n"
"                         minimal,phobos,advisory), each through libpq, one connection per\n"
"                         thread (the baseline's), the library's session settings:\n"
"      minimal            table dss_bench.minimal_lock (id, owner, ts), prepared INSERT +\n"
"                         DELETE (pair), UPDATE ts (refresh), SELECT owner, ts (status);\n"
"                         in batch, bare: one INSERT ... SELECT unnest($1::text[]) of the\n"
"                         N ids (bare alone: --peers bare)\n"
"      phobos             phobos's SQL (pair): text INSERT, then its check-then-delete DO\n"
"                         block, values escaped with PQescapeStringConn, through PQexec\n"
"      advisory           pg_try_advisory_lock + pg_advisory_unlock of a 64-bit hash of\n"
"                         the id (pair), prepared\n"
"  --shared-baseline      the baseline threads share their connections (a mutex-protected\n"
"                         stack, the least a pool behind one shared handle does) instead\n"
"                         of one connection each (the peers keep one per thread)\n"
"  --json                 print one JSON document on stdout instead of tables\n"
"  --quiet                no progress lines on stderr\n"
"  --help                 this text\n"
"\n"
"PHOBOS_DSS_pool_size is set to the largest thread count when it is unset.\n"
"Lock ids start with \"bench:<pid>:\", and so do the semaphore ids of sem and the\n"
"keys kv-set and kv-get write in bucket \"bench\"; a run removes its rows from\n"
"dss.locks (the scale filler included), dss.lock_shares, dss.sems,\n"
"dss.sem_holders and dss.kv, also when interrupted with SIGINT or SIGTERM (not\n"
"when the server went away). The peers' schema dss_bench is created at start (its\n"
"tables fresh) and dropped at the end, also when interrupted. Lock events stay in\n"
"dss.lock_history (append-only); remove them with:\n"
"DELETE FROM dss.lock_history WHERE id LIKE 'bench:%';\n"
"Exit status: 0 done; 1 a call returned an unexpected code (details on stderr),\n"
"a check failed or the run was interrupted; 2 usage or setup error.\n", f);
}

/* ---- small helpers ------------------------------------------------------ */

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *errno_name(int rc)
{
    switch (-rc) {
    case 0: return "0";
    case ENOENT: return "-ENOENT";
    case EFBIG: return "-EFBIG";
    case EEXIST: return "-EEXIST";
    case EACCES: return "-EACCES";
    case ENOLCK: return "-ENOLCK";
    case EINVAL: return "-EINVAL";
    case EALREADY: return "-EALREADY";
    case ENOTCONN: return "-ENOTCONN";
    case ECOMM: return "-ECOMM";
    case ETIMEDOUT: return "-ETIMEDOUT";
    case ENOSPC: return "-ENOSPC";
    case ENOMEM: return "-ENOMEM";
    case EUSERS: return "-EUSERS";
    case EIO: return "-EIO";
    case EPROTO: return "-EPROTO";
    case ETIME: return "-ETIME";
    case ESTALE: return "-ESTALE";
    case ERANGE: return "-ERANGE";
    case ENOTRECOVERABLE: return "-ENOTRECOVERABLE";
    default: return "(other)";
    }
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
    if (opt.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("dss_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "dss_bench: out of memory\n");
        exit(2);
    }
    return p;
}

/* CPU time (user + system) of the whole process so far, in ns. */
static int64_t process_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000
           + ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static long maxrss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Current resident set size, from /proc/self/statm; -1 if unknown. */
static long rss_kib(void)
{
    long pages_total, pages_rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    int n = fscanf(f, "%ld %ld", &pages_total, &pages_rss);
    fclose(f);
    return n == 2 ? pages_rss * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

/* ---- stop flag: a failure or a signal ends every loop ------------------- */

enum { RUNNING, STOP_FAILED, STOP_SIGNAL };
static atomic_int g_stop;

static inline bool stopped(void)
{
    return atomic_load_explicit(&g_stop, memory_order_relaxed) != RUNNING;
}

static void on_signal(int sig)
{
    (void)sig;
    int expected = RUNNING;
    atomic_compare_exchange_strong(&g_stop, &expected, STOP_SIGNAL);
}

/* ---- latency histogram: log-linear, no allocation when recording -------- */

#define H_LINEAR  128   /* values below this many ns are exact */
#define H_SUB      64   /* buckets per power of two above (≤ 1.6 % wide) */
#define H_OCTAVES  36   /* up to 2^42 ns, about 73 minutes */
#define H_BUCKETS (H_LINEAR + H_SUB * H_OCTAVES)

struct hist {
    uint64_t n, sum_ns, max_ns;
    uint64_t b[H_BUCKETS];
};

static inline unsigned h_index(uint64_t v)
{
    if (v < H_LINEAR)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);   /* >= 7 */
    unsigned shift = msb - 6;                            /* v >> shift in [64, 128) */
    unsigned i = H_LINEAR + (shift - 1) * H_SUB + (unsigned)((v >> shift) - H_SUB);
    return i < H_BUCKETS ? i : H_BUCKETS - 1;
}

static inline void h_add(struct hist *h, int64_t ns)
{
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    h->n++;
    h->sum_ns += v;
    if (v > h->max_ns)
        h->max_ns = v;
    h->b[h_index(v)]++;
}

static void h_merge(struct hist *dst, const struct hist *src)
{
    dst->n += src->n;
    dst->sum_ns += src->sum_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
    for (unsigned i = 0; i < H_BUCKETS; i++)
        dst->b[i] += src->b[i];
}

/* The p-quantile (0 < p <= 1) in µs: the middle of its bucket, at most max. */
static double h_pct_us(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    double want = p * (double)h->n;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want || rank == 0)
        rank++;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen < rank)
            continue;
        double mid;
        if (i < H_LINEAR) {
            mid = i;
        } else {
            unsigned k = i - H_LINEAR, shift = k / H_SUB + 1;
            uint64_t lo = (uint64_t)(k % H_SUB + H_SUB) << shift;
            mid = (double)lo + (double)((uint64_t)1 << shift) / 2;
        }
        if (mid > (double)h->max_ns)
            mid = (double)h->max_ns;
        return mid / 1000;
    }
    return (double)h->max_ns / 1000;
}

static double h_mean_us(const struct hist *h)
{
    return h->n ? (double)h->sum_ns / (double)h->n / 1000 : 0;
}

/* ---- connections -------------------------------------------------------- */

static struct dss_handle g_h;           /* the library side: one shared handle */
static PGconn *g_base[MAX_THREADS];     /* the baseline side: one per thread */
static PGconn *g_admin;                 /* setup, filler, statistics; never timed */
static char g_prefix[64];               /* "bench:<pid>:" starts every lock id */
static char g_prefix_end[64];           /* first string after all of them */
static char g_server_version[64] = "";

/* The baseline's statements, prepared once on every baseline connection. */
static const struct {
    const char *name, *sql;
    int nparams;
    Oid types[7];
} base_stmt[] = {
    { "lock", BENCH_SQL_LOCK, 3, { TEXTOID, TEXTOID, INT8OID } },
    { "refresh", BENCH_SQL_REFRESH, 2, { TEXTOID, TEXTOID } },
    { "unlock", BENCH_SQL_UNLOCK, 2, { TEXTOID, TEXTOID } },
    { "status", BENCH_SQL_STATUS, 1, { TEXTOID } },
    { "lock_many", BENCH_SQL_LOCK_MANY, 3, { TEXTARRAYOID, TEXTOID, INT8OID } },
    { "unlock_many", BENCH_SQL_UNLOCK_MANY, 2, { TEXTARRAYOID, TEXTOID } },
    { "kv_set", BENCH_SQL_KV_SET, 4, { TEXTOID, TEXTOID, BYTEAOID, INT8OID } },
    { "kv_get", BENCH_SQL_KV_GET, 2, { TEXTOID, TEXTOID } },
    { "shared_try", BENCH_SQL_SHARED_TRY, 5, { TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID } },
    { "shared_release", BENCH_SQL_SHARED_RELEASE, 3, { TEXTOID, TEXTOID, TEXTOID } },
    { "sem_try", BENCH_SQL_SEM_TRY, 7,
      { TEXTOID, TEXTOID, INT4OID, INT4OID, INT8OID, INT8OID, INT8OID } },
    { "sem_release", BENCH_SQL_SEM_RELEASE, 3, { TEXTOID, TEXTOID, TEXTOID } },
};

/* The peers' prepared statements, on the same connections; `need` is the
 * --peers bit that needs them. */
static const struct {
    const char *name, *sql;
    int nparams;
    Oid types[2];
    unsigned need;
} peer_stmt[] = {
    { "m_lock", PEER_SQL_MINIMAL_LOCK, 2, { TEXTOID, TEXTOID }, PEER_BIT(MINIMAL) },
    { "m_unlock", PEER_SQL_MINIMAL_UNLOCK, 2, { TEXTOID, TEXTOID }, PEER_BIT(MINIMAL) },
    { "m_refresh", PEER_SQL_MINIMAL_REFRESH, 2, { TEXTOID, TEXTOID }, PEER_BIT(MINIMAL) },
    { "m_status", PEER_SQL_MINIMAL_STATUS, 1, { TEXTOID }, PEER_BIT(MINIMAL) },
    { "bare_insert", PEER_SQL_BARE_INSERT, 2, { TEXTARRAYOID, TEXTOID }, PEER_BARE },
    { "bare_delete", PEER_SQL_BARE_DELETE, 2, { TEXTARRAYOID, TEXTOID }, PEER_BARE },
    { "a_lock", PEER_SQL_ADVISORY_LOCK, 1, { INT8OID }, PEER_BIT(ADVISORY) },
    { "a_unlock", PEER_SQL_ADVISORY_UNLOCK, 1, { INT8OID }, PEER_BIT(ADVISORY) },
};

static void drop_peer_tables(void);

/* A setup error once running: the peers' schema goes, then exit status 2. */
static void die_setup(void)
{
    drop_peer_tables();
    exit(2);
}

static PGconn *connect_or_die(const char *what)
{
    PGconn *c = PQconnectdb(opt.conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "dss_bench: %s: cannot connect: %s", what, PQerrorMessage(c));
        PQfinish(c);
        die_setup();
    }
    return c;
}

/* Opens (once) and prepares the baseline connections of slots [0, n). */
static void ensure_base(int n)
{
    for (int i = 0; i < n; i++) {
        if (g_base[i])
            continue;
        PGconn *c = connect_or_die("baseline");
        PGresult *set = PQexec(c, BENCH_SESSION);
        if (PQresultStatus(set) != PGRES_COMMAND_OK) {
            fprintf(stderr, "dss_bench: baseline: %s: %s", BENCH_SESSION,
                    PQresultErrorMessage(set));
            die_setup();
        }
        PQclear(set);
        for (size_t s = 0; s < sizeof base_stmt / sizeof base_stmt[0]; s++) {
            PGresult *r = PQprepare(c, base_stmt[s].name, base_stmt[s].sql,
                                    base_stmt[s].nparams, base_stmt[s].types);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                fprintf(stderr, "dss_bench: baseline: cannot prepare %s: %s",
                        base_stmt[s].name, PQresultErrorMessage(r));
                die_setup();
            }
            PQclear(r);
        }
        for (size_t s = 0; s < sizeof peer_stmt / sizeof peer_stmt[0]; s++) {
            if (!(g_peers & peer_stmt[s].need))
                continue;
            PGresult *r = PQprepare(c, peer_stmt[s].name, peer_stmt[s].sql,
                                    peer_stmt[s].nparams, peer_stmt[s].types);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                fprintf(stderr, "dss_bench: peers: cannot prepare %s: %s",
                        peer_stmt[s].name, PQresultErrorMessage(r));
                die_setup();
            }
            PQclear(r);
        }
        g_base[i] = c;
    }
}

/* The admin connection's notices ("table ... does not exist, skipping",
 * "drop cascades to ...") are expected: only warnings reach stderr. */
static void admin_notice(void *arg, const PGresult *r)
{
    (void)arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "NOTICE") == 0 || strcmp(sev, "INFO") == 0
                || strcmp(sev, "DEBUG") == 0 || strcmp(sev, "LOG") == 0))
        return;
    fprintf(stderr, "dss_bench: admin: %s", PQresultErrorMessage(r));
}

/* Runs an admin statement with text parameters; NULL (message printed) on
 * failure. */
static PGresult *admin(const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(g_admin, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    fprintf(stderr, "dss_bench: admin statement failed: %s  (%s)\n",
            PQresultErrorMessage(r), sql);
    PQclear(r);
    return NULL;
}

static bool admin_cmd(const char *sql)
{
    PGresult *r = admin(sql, 0, NULL);
    PQclear(r);
    return r != NULL;
}

/* Rows in [lo, hi), or -1. */
static long long admin_count(const char *lo, const char *hi)
{
    const char *p[2] = { lo, hi };
    PGresult *r = admin(ADMIN_SQL_COUNT, 2, p);
    long long n = r ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

static long long admin_delete(const char *lo, const char *hi)
{
    const char *p[2] = { lo, hi };
    PGresult *r = admin(ADMIN_SQL_DELETE, 2, p);
    long long n = r ? atoll(PQcmdTuples(r)) : -1;
    PQclear(r);
    return n;
}

/* This run's keys in dss.kv: how many, or removed; -1 on failure. */
static long long admin_kv_count(void)
{
    const char *p[3] = { KV_BUCKET, g_prefix, g_prefix_end };
    PGresult *r = admin(ADMIN_SQL_KV_COUNT, 3, p);
    long long n = r ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

static long long admin_kv_delete(void)
{
    const char *p[3] = { KV_BUCKET, g_prefix, g_prefix_end };
    PGresult *r = admin(ADMIN_SQL_KV_DELETE, 3, p);
    long long n = r ? atoll(PQcmdTuples(r)) : -1;
    PQclear(r);
    return n;
}

/* This run's shared holders and semaphores (shared, sem): how many, or
 * removed; -1 on failure. Only when one of those workloads runs (the
 * tables are schema 6's). */
static inline bool shared_tables_used(void)
{
    return opt.want[W_SHARED] || opt.want[W_SEM];
}

static long long admin_shared_count(void)
{
    if (!shared_tables_used())
        return 0;
    const char *p[2] = { g_prefix, g_prefix_end };
    PGresult *r = admin(ADMIN_SQL_SHARED_COUNT, 2, p);
    long long n = r ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

static long long admin_shared_delete(void)
{
    if (!shared_tables_used())
        return 0;
    const char *p[2] = { g_prefix, g_prefix_end };
    PGresult *r = admin(ADMIN_SQL_SHARED_DELETE, 2, p);
    long long n = r ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

/* The peers' schema: created at start (tables fresh), dropped at the end. */
static bool create_peer_tables(void)
{
    if (!admin_cmd(PEER_SQL_SCHEMA) || !admin_cmd(PEER_SQL_DROP_TABLES))
        return false;
    g_peer_tables = true;   /* from here on, the end drops the schema */
    return admin_cmd(PEER_SQL_MINIMAL_TABLE) && admin_cmd(PEER_SQL_PHOBOS_TABLE);
}

static void drop_peer_tables(void)
{
    if (!g_admin || !g_peer_tables)
        return;
    if (admin_cmd(PEER_SQL_DROP_SCHEMA)) {
        g_peer_tables = false;
        progress("dropped schema dss_bench");
    }
}

/* Rows in the peers' tables (0 when there are none), or -1. */
static long long admin_peer_rows(void)
{
    if (!g_peer_tables)
        return 0;
    PGresult *r = admin(ADMIN_SQL_PEER_ROWS, 0, NULL);
    long long n = r ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

/* Advisory locks held by the baseline's (and peers') sessions, or -1. */
static long long admin_advisory_held(void)
{
    if (!peer_on(ADVISORY))
        return 0;
    char pids[MAX_THREADS * 12 + 3];
    int len = snprintf(pids, sizeof pids, "{");
    for (int i = 0; i < MAX_THREADS; i++)
        if (g_base[i])
            len += snprintf(pids + len, sizeof pids - (size_t)len, "%s%d", len > 1 ? "," : "",
                            PQbackendPID(g_base[i]));
    if (len == 1)
        return 0;
    snprintf(pids + len, sizeof pids - (size_t)len, "}");
    const char *p[1] = { pids };
    PGresult *r = admin(ADMIN_SQL_ADVISORY_HELD, 1, p);
    long long n = r ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

struct table_stats {
    long long bytes, dead, live, autovacuums, history_bytes;
};

static bool table_stats(struct table_stats *ts)
{
    PGresult *r = admin(ADMIN_SQL_STATS, 0, NULL);
    if (!r || PQntuples(r) != 1) {
        PQclear(r);
        return false;
    }
    ts->bytes = atoll(PQgetvalue(r, 0, 0));
    ts->dead = atoll(PQgetvalue(r, 0, 1));
    ts->live = atoll(PQgetvalue(r, 0, 2));
    ts->autovacuums = atoll(PQgetvalue(r, 0, 3));
    ts->history_bytes = atoll(PQgetvalue(r, 0, 4));
    PQclear(r);
    return true;
}

/* ---- the baseline's calls: same statements, same reading --------------- */

static _Thread_local char tl_base_error[512];

static int base_error(PGconn *c, PGresult *r, const char *what)
{
    const char *msg = r ? PQresultErrorMessage(r) : "";
    if (!*msg)
        msg = PQerrorMessage(c);
    if (!*msg && r)
        msg = PQresStatus(PQresultStatus(r));
    snprintf(tl_base_error, sizeof tl_base_error, "%s: %s", what, msg);
    size_t len = strlen(tl_base_error);
    if (len && tl_base_error[len - 1] == '\n')
        tl_base_error[len - 1] = 0;
    return -ECOMM;
}

static inline uint64_t be64(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | u[i];
    return v;
}

/* Parameters go in binary, as the library sends them (for text and bytea
 * the bytes themselves; int8 is 8 bytes big-endian, int4 4); results come
 * back in binary. */
static const int bin[7] = { 1, 1, 1, 1, 1, 1, 1 };

static inline void put_be64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}

static inline void put_be32(char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}

/* The (done, done_on_expired_lease, holder, holder_expired) columns of
 * REFRESH and UNLOCK (and UNLOCK_MANY from column `at`), judged as the
 * library's lock::Seen::outcome does. */
static int seen_outcome(const PGresult *r, int at, const char *owner)
{
    bool done = PQgetvalue(r, 0, at)[0] != 0;
    bool done_expired = PQgetvalue(r, 0, at + 1)[0] != 0;
    bool has_holder = !PQgetisnull(r, 0, at + 2);
    bool holder_expired = PQgetvalue(r, 0, at + 3)[0] != 0;
    bool is_owner = has_holder && (size_t)PQgetlength(r, 0, at + 2) == strlen(owner)
                    && memcmp(PQgetvalue(r, 0, at + 2), owner, strlen(owner)) == 0;
    if (done)
        return done_expired ? -ETIME : 0;
    if (is_owner && holder_expired)
        return -ETIME;
    if (has_holder && !is_owner && !holder_expired)
        return -EACCES;
    return -ENOLCK;
}

static bool seen_shape(const PGresult *r, int at)
{
    for (int i = 0; i < 4; i++)
        if (i != 2 && (PQgetisnull(r, 0, at + i) || PQgetlength(r, 0, at + i) != 1))
            return false;
    return true;
}

/* LOCK ($3 ttl 0, as dss_lock): one row, the new token, if taken; no row if
 * held (-EEXIST here: the library then reads HOLDER, a path the pair never
 * takes). */
static int base_lock(PGconn *c, const char *id, const char *owner, uint64_t *token)
{
    char ttl[8];
    put_be64(ttl, 0);
    const char *p[3] = { id, owner, ttl };
    int len[3] = { (int)strlen(id), (int)strlen(owner), 8 };
    PGresult *r = PQexecPrepared(c, "lock", 3, p, len, bin, 1);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 1 || PQntuples(r) > 1)
        rc = base_error(c, r, "lock");
    else if (PQntuples(r) == 0)
        rc = -EEXIST;
    else if (PQgetisnull(r, 0, 0) || PQgetlength(r, 0, 0) != 8)
        rc = base_error(c, r, "lock (unexpected row)");
    else {
        *token = be64(PQgetvalue(r, 0, 0));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

/* REFRESH / UNLOCK: one row (expired: the lease had run out, -ETIME) if done;
 * no row if not (-ENOLCK here: the library then reads why with HOLDER, a
 * path the pair never takes). */
static int base_done(PGconn *c, const char *stmt, const char *id, const char *owner)
{
    const char *p[2] = { id, owner };
    int len[2] = { (int)strlen(id), (int)strlen(owner) };
    PGresult *r = PQexecPrepared(c, stmt, 2, p, len, bin, 1);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 1 || PQntuples(r) > 1)
        rc = base_error(c, r, stmt);
    else if (PQntuples(r) == 0)
        rc = -ENOLCK;
    else if (PQgetisnull(r, 0, 0) || PQgetlength(r, 0, 0) != 1)
        rc = base_error(c, r, stmt);
    else
        rc = PQgetvalue(r, 0, 0)[0] != 0 ? -ETIME : 0;
    PQclear(r);
    return rc;
}

/* The binary text[] parameter of LOCK_MANY / UNLOCK_MANY: its size, then
 * filling a buffer of that size (allocated before the clock starts). */
static size_t text_array_size(char **ids, long n)
{
    size_t size = 20;
    for (long i = 0; i < n; i++)
        size += 4 + strlen(ids[i]);
    return size;
}

static int text_array_fill(char *buf, char **ids, long n)
{
    char *p = buf;
    put_be32(p, 1);                 /* dimensions */
    put_be32(p + 4, 0);             /* no NULLs */
    put_be32(p + 8, TEXTOID);       /* element type */
    put_be32(p + 12, (uint32_t)n);  /* length */
    put_be32(p + 16, 1);            /* lower bound */
    p += 20;
    for (long i = 0; i < n; i++) {
        size_t len = strlen(ids[i]);
        put_be32(p, (uint32_t)len);
        memcpy(p + 4, ids[i], len);
        p += 4 + len;
    }
    return (int)(p - buf);
}

/* LOCK_MANY: no row if all were taken, else (position, holder): -EEXIST. */
static int base_lock_many(PGconn *c, char **ids, long n, const char *owner, char *arraybuf,
                          long *conflict)
{
    char ttl[8];
    put_be64(ttl, (uint64_t)opt.ttl_ms);
    const char *p[3] = { arraybuf, owner, ttl };
    int len[3] = { text_array_fill(arraybuf, ids, n), (int)strlen(owner), 8 };
    PGresult *r = PQexecPrepared(c, "lock_many", 3, p, len, bin, 1);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 2 || PQntuples(r) > 1)
        rc = base_error(c, r, "lock_many");
    else if (PQntuples(r) == 0)
        rc = 0;
    else {
        *conflict = PQgetlength(r, 0, 0) == 8 ? (long)be64(PQgetvalue(r, 0, 0)) - 1 : -1;
        rc = -EEXIST;
    }
    PQclear(r);
    return rc;
}

/* UNLOCK_MANY: no row if all were released, else the first failure:
 * (position, then the four columns of UNLOCK). */
static int base_unlock_many(PGconn *c, char **ids, long n, const char *owner, char *arraybuf,
                            long *failed)
{
    const char *p[2] = { arraybuf, owner };
    int len[2] = { text_array_fill(arraybuf, ids, n), (int)strlen(owner) };
    PGresult *r = PQexecPrepared(c, "unlock_many", 2, p, len, bin, 1);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 5 || PQntuples(r) > 1)
        rc = base_error(c, r, "unlock_many");
    else if (PQntuples(r) == 0)
        rc = 0;
    else if (PQgetlength(r, 0, 0) != 8 || !seen_shape(r, 1))
        rc = base_error(c, r, "unlock_many (unexpected row)");
    else {
        *failed = (long)be64(PQgetvalue(r, 0, 0)) - 1;
        rc = seen_outcome(r, 1, owner);
        if (rc == 0)   /* a reported row is a failure, whatever it says */
            rc = base_error(c, r, "unlock_many (row for a released id)");
    }
    PQclear(r);
    return rc;
}

/* STATUS: no row is -ENOLCK; else owner (text) and ts (binary timestamptz:
 * µs since 2000-01-01 UTC). *owner_ok tells whether the owner is `owner`. */
static int base_status(PGconn *c, const char *stmt, const char *id, const char *owner,
                       bool *owner_ok, struct timeval *tv)
{
    const char *p[1] = { id };
    int len[1] = { (int)strlen(id) };
    PGresult *r = PQexecPrepared(c, stmt, 1, p, len, bin, 1);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 2 || PQntuples(r) > 1) {
        rc = base_error(c, r, stmt);
    } else if (PQntuples(r) == 0) {
        rc = -ENOLCK;
        snprintf(tl_base_error, sizeof tl_base_error, "%s: no row", stmt);
    } else if (PQgetisnull(r, 0, 0) || PQgetisnull(r, 0, 1) || PQgetlength(r, 0, 1) != 8) {
        rc = base_error(c, r, "status (unexpected row)");
    } else {
        int64_t us = (int64_t)be64(PQgetvalue(r, 0, 1)) + INT64_C(946684800000000);
        int64_t sec = us / 1000000, rem = us % 1000000;
        if (rem < 0) {
            rem += 1000000;
            sec--;
        }
        tv->tv_sec = (time_t)sec;
        tv->tv_usec = (suseconds_t)rem;
        *owner_ok = (size_t)PQgetlength(r, 0, 0) == strlen(owner)
                    && memcmp(PQgetvalue(r, 0, 0), owner, strlen(owner)) == 0;
    }
    PQclear(r);
    return rc;
}

/* KV_SET ($4 ttl 0, as dss_kv_set): one row, the version written (int8, read
 * as dss::kv::set reads it, though dss_kv_set then drops it). */
static int base_kv_set(PGconn *c, const char *bucket, const char *key, const char *value,
                       int vlen, uint64_t *version)
{
    char ttl[8];
    put_be64(ttl, 0);
    const char *p[4] = { bucket, key, value, ttl };
    int len[4] = { (int)strlen(bucket), (int)strlen(key), vlen, 8 };
    PGresult *r = PQexecPrepared(c, "kv_set", 4, p, len, bin, 1);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 1 || PQntuples(r) != 1)
        rc = base_error(c, r, "kv_set");
    else if (PQgetisnull(r, 0, 0) || PQgetlength(r, 0, 0) != 8)
        rc = base_error(c, r, "kv_set (unexpected row)");
    else {
        *version = be64(PQgetvalue(r, 0, 0));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

/* KV_GET: no row is -ENOENT; else value (bytea: in binary, the bytes
 * themselves) and version (int8). Gives the value's length and the version;
 * the value stays in the result (no copy). */
static int base_kv_get(PGconn *c, const char *bucket, const char *key, size_t *vlen,
                       uint64_t *version)
{
    const char *p[2] = { bucket, key };
    int len[2] = { (int)strlen(bucket), (int)strlen(key) };
    PGresult *r = PQexecPrepared(c, "kv_get", 2, p, len, bin, 1);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 2 || PQntuples(r) > 1) {
        rc = base_error(c, r, "kv_get");
    } else if (PQntuples(r) == 0) {
        rc = -ENOENT;
    } else if (PQgetisnull(r, 0, 0) || PQgetisnull(r, 0, 1) || PQgetlength(r, 0, 1) != 8) {
        rc = base_error(c, r, "kv_get (unexpected row)");
    } else {
        *vlen = (size_t)PQgetlength(r, 0, 0);
        *version = be64(PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return rc;
}

/* SHARED_TRY / SEM_TRY, one attempt, not queued (ticket 0, queue 0): the
 * columns of WAIT_TRY (token, ticket, channel, ms left, armed), then a
 * status, read as the library's wait::Waiter::attempt reads them: a token
 * is the hold (0); else status 'already' is -EALREADY, 'capacity' (sem)
 * -EINVAL, none -EEXIST (blocked: a path these workloads never take). */
static int base_try(PGconn *c, const char *stmt, int n, const char *const *p, const int *len,
                    uint64_t *token)
{
    PGresult *r = PQexecPrepared(c, stmt, n, p, len, bin, 1);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 6 || PQntuples(r) != 1)
        rc = base_error(c, r, stmt);
    else if (PQgetisnull(r, 0, 2)
             || (!PQgetisnull(r, 0, 1) && PQgetlength(r, 0, 1) != 8))
        rc = base_error(c, r, "try (unexpected row)");
    else if (!PQgetisnull(r, 0, 0)) {
        if (PQgetlength(r, 0, 0) != 8)
            rc = base_error(c, r, "try (unexpected token)");
        else {
            *token = be64(PQgetvalue(r, 0, 0));
            rc = 0;
        }
    } else if (PQgetisnull(r, 0, 5)) {
        rc = -EEXIST;
        snprintf(tl_base_error, sizeof tl_base_error, "%s: not granted", stmt);
    } else {
        const char *st = PQgetvalue(r, 0, 5);
        int stlen = PQgetlength(r, 0, 5);
        snprintf(tl_base_error, sizeof tl_base_error, "%s: status '%.*s'", stmt, stlen, st);
        rc = stlen == 7 && memcmp(st, "already", 7) == 0 ? -EALREADY
             : stlen == 8 && memcmp(st, "capacity", 8) == 0 ? -EINVAL : -ECOMM;
    }
    PQclear(r);
    return rc;
}

/* SHARED_TRY (ttl 0, ticket 0, queue 0: dss_lock_shared with ttl and
 * timeout 0). */
static int base_lock_shared(PGconn *c, const char *id, const char *owner, uint64_t *token)
{
    char ttl[8], ticket[8], queue[8];
    put_be64(ttl, 0);
    put_be64(ticket, 0);
    put_be64(queue, 0);
    const char *p[5] = { id, owner, ttl, ticket, queue };
    int len[5] = { (int)strlen(id), (int)strlen(owner), 8, 8, 8 };
    return base_try(c, "shared_try", 5, p, len, token);
}

/* SEM_TRY (permits SEM_PERMITS, capacity SEM_CAPACITY, ttl SEM_TTL_MS,
 * ticket 0, queue 0: dss_sem_acquire with timeout 0). */
static int base_sem_acquire(PGconn *c, const char *id, const char *owner, uint64_t *token)
{
    char permits[4], capacity[4], ttl[8], ticket[8], queue[8];
    put_be32(permits, SEM_PERMITS);
    put_be32(capacity, SEM_CAPACITY);
    put_be64(ttl, SEM_TTL_MS);
    put_be64(ticket, 0);
    put_be64(queue, 0);
    const char *p[7] = { id, owner, permits, capacity, ttl, ticket, queue };
    int len[7] = { (int)strlen(id), (int)strlen(owner), 4, 4, 8, 8, 8 };
    return base_try(c, "sem_try", 7, p, len, token);
}

/* SHARED_RELEASE / SEM_RELEASE of the owner's hold: one text, 'done' (0),
 * 'expired' (-ETIME), 'nolock' (-ENOLCK), as the library's shared::status.
 * The actor ($3) is the library's for a release that is not forced: an
 * empty string. */
static int base_release(PGconn *c, const char *stmt, const char *id, const char *owner)
{
    const char *p[3] = { id, owner, "" };
    int len[3] = { (int)strlen(id), (int)strlen(owner), 0 };
    PGresult *r = PQexecPrepared(c, stmt, 3, p, len, bin, 1);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 1 || PQntuples(r) != 1
        || PQgetisnull(r, 0, 0)) {
        rc = base_error(c, r, stmt);
    } else {
        const char *st = PQgetvalue(r, 0, 0);
        int stlen = PQgetlength(r, 0, 0);
        snprintf(tl_base_error, sizeof tl_base_error, "%s: '%.*s'", stmt, stlen, st);
        rc = stlen == 4 && memcmp(st, "done", 4) == 0 ? 0
             : stlen == 7 && memcmp(st, "expired", 7) == 0 ? -ETIME
             : stlen == 6 && memcmp(st, "nolock", 6) == 0 ? -ENOLCK : -ECOMM;
    }
    PQclear(r);
    return rc;
}

/* ---- the peers' calls ---------------------------------------------------- */

/* A statement that must change `want` rows: 0; a unique violation -EEXIST
 * (the row is there), no row -ENOLCK, anything else -ECOMM or -EPROTO;
 * tl_base_error says what happened. */
static int rows_changed(PGconn *c, PGresult *r, const char *what, long want)
{
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        base_error(c, r, what);
        return state && strcmp(state, "23505") == 0 ? -EEXIST : -ECOMM;
    }
    long n = strtol(PQcmdTuples(r), NULL, 10);
    if (n == want)
        return 0;
    snprintf(tl_base_error, sizeof tl_base_error, "%s: %ld rows affected, expected %ld", what, n,
             want);
    return n == 0 ? -ENOLCK : -EPROTO;
}

/* minimal: m_lock (INSERT), m_unlock (DELETE), m_refresh (UPDATE): one row. */
static int minimal_change(PGconn *c, const char *stmt, const char *id, const char *owner)
{
    const char *p[2] = { id, owner };
    int len[2] = { (int)strlen(id), (int)strlen(owner) };
    PGresult *r = PQexecPrepared(c, stmt, 2, p, len, bin, 1);
    int rc = rows_changed(c, r, stmt, 1);
    PQclear(r);
    return rc;
}

/* phobos: the statement built as phobos builds it, the values escaped. */
#define PHOBOS_VALUE_MAX 128   /* ids (struct worker, batch) and owners are shorter */

static bool phobos_escape(PGconn *c, char *out, const char *value)
{
    size_t len = strlen(value);
    int err = 0;
    if (len >= PHOBOS_VALUE_MAX) {
        snprintf(tl_base_error, sizeof tl_base_error, "phobos: value too long (%zu bytes)", len);
        return false;
    }
    PQescapeStringConn(c, out, value, len, &err);
    if (err) {
        base_error(c, NULL, "PQescapeStringConn");
        return false;
    }
    return true;
}

static int phobos_lock(PGconn *c, const char *id, const char *owner)
{
    char eid[2 * PHOBOS_VALUE_MAX + 1], eowner[2 * PHOBOS_VALUE_MAX + 1];
    char sql[sizeof PHOBOS_SQL_LOCK + 2 * sizeof eid];
    if (!phobos_escape(c, eid, id) || !phobos_escape(c, eowner, owner))
        return -EINVAL;
    snprintf(sql, sizeof sql, PHOBOS_SQL_LOCK, eid, eowner);
    PGresult *r = PQexec(c, sql);
    int rc = rows_changed(c, r, "phobos lock (INSERT)", 1);
    PQclear(r);
    return rc;
}

/* The DO block: errcode PHLK1 (no such lock) -ENOLCK, PHLK2 (another
 * owner's) -EACCES. */
static int phobos_unlock(PGconn *c, const char *id, const char *owner)
{
    char eid[2 * PHOBOS_VALUE_MAX + 1], eowner[2 * PHOBOS_VALUE_MAX + 1];
    char sql[sizeof PHOBOS_SQL_UNLOCK + 4 * sizeof eid];
    if (!phobos_escape(c, eid, id) || !phobos_escape(c, eowner, owner))
        return -EINVAL;
    snprintf(sql, sizeof sql, PHOBOS_SQL_UNLOCK, eid, eowner, eid, eowner);
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        base_error(c, r, "phobos unlock (DO block)");
        rc = !state ? -ECOMM : strcmp(state, "PHLK1") == 0 ? -ENOLCK
             : strcmp(state, "PHLK2") == 0 ? -EACCES : -ECOMM;
    }
    PQclear(r);
    return rc;
}

/* advisory: the key of an id, 64-bit FNV-1a. */
static inline uint64_t fnv1a64(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* a_lock / a_unlock: one boolean, true: 0, false: `if_false`. */
static int advisory_call(PGconn *c, const char *stmt, const char *id, int if_false)
{
    char key[8];
    put_be64(key, fnv1a64(id));
    const char *p[1] = { key };
    int len[1] = { 8 };
    PGresult *r = PQexecPrepared(c, stmt, 1, p, len, bin, 1);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 1 || PQntuples(r) != 1
        || PQgetisnull(r, 0, 0) || PQgetlength(r, 0, 0) != 1)
        rc = base_error(c, r, stmt);
    else if (PQgetvalue(r, 0, 0)[0] == 0) {
        snprintf(tl_base_error, sizeof tl_base_error, "%s: returned false", stmt);
        rc = if_false;
    }
    PQclear(r);
    return rc;
}

/* bare (batch): bare_insert (timed) / bare_delete (untimed) of the n ids. */
static int bare_call(PGconn *c, const char *stmt, char **ids, long n, const char *owner,
                     char *arraybuf)
{
    const char *p[2] = { arraybuf, owner };
    int len[2] = { text_array_fill(arraybuf, ids, n), (int)strlen(owner) };
    PGresult *r = PQexecPrepared(c, stmt, 2, p, len, bin, 1);
    int rc = rows_changed(c, r, stmt, n);
    PQclear(r);
    return rc;
}

/* ---- one round: threads, barriers, a deadline --------------------------- */

struct round;

struct worker {
    pthread_t tid;
    struct round *rd;
    int slot;                      /* thread index: baseline connection, ids */
    struct hist *lat;              /* every timed call */
    struct hist *wait;             /* contended: first attempt to acquisition */
    uint64_t ops;                  /* operations that ended before the deadline */
    uint64_t handoffs;             /* contended: acquisitions from another holder */
    int64_t open_wait_ns;          /* contended: wait still unfinished at the deadline */
    long sink;                     /* keeps results "used" */
    _Atomic uint64_t progress;     /* ops so far, read by the soak monitor */
    char owner[64];
    char id[128];
};

struct round {
    enum wl wl;
    enum side side;
    int nthreads;
    int round;
    char tag[32];                  /* workload letter, round, side: "p2L" */
    char shared_id[96];            /* contended */
    int64_t start, deadline;       /* CLOCK_MONOTONIC ns, set between the barriers */
    pthread_barrier_t ready, go;
    atomic_int holders;            /* contended: mutual exclusion check */
    atomic_int last_holder;
    atomic_int violations;
};

/* Everything one side measured, over its rounds. */
struct acc {
    uint64_t ops, handoffs, starved, violations;
    int64_t ns;
    int64_t cpu_ns;                /* process CPU (user + system) during the rounds */
    int64_t open_wait_ns;
    int nrounds;
    double rate[MAX_ROUNDS];
    struct hist *lat, *wait;
};

static void acc_init(struct acc *a)
{
    memset(a, 0, sizeof *a);
    a->lat = xcalloc(1, sizeof *a->lat);
    a->wait = xcalloc(1, sizeof *a->wait);
}

static void acc_free(struct acc *a)
{
    free(a->lat);
    free(a->wait);
    a->lat = a->wait = NULL;
}

static double acc_rate(const struct acc *a)
{
    return a->ns > 0 ? (double)a->ops * 1e9 / (double)a->ns : 0;
}

/* Client CPU per operation (all of the process's threads), in µs. */
static double cpu_per_op_us(const struct acc *a)
{
    return a->ops ? (double)a->cpu_ns / (double)a->ops / 1000 : 0;
}

/* A side as the messages call it: in batch, minimal's table is bare's. */
static const char *side_label(const struct round *rd)
{
    return rd->wl == W_BATCH && rd->side == MINIMAL ? "bare" : side_name[rd->side];
}

static void fail(const struct worker *w, const char *call, const char *id, int rc)
{
    const char *detail = w->rd->side == LIB ? dss_last_error() : tl_base_error;
    fprintf(stderr, "dss_bench: %s, %s, thread %d: %s(\"%s\") returned %d (%s): %s\n",
            wl_name[w->rd->wl], side_label(w->rd), w->slot, call, id, rc,
            errno_name(rc), detail);
    atomic_store(&g_stop, STOP_FAILED);
}

static void fail_msg(const struct worker *w, const char *msg, const char *id)
{
    fprintf(stderr, "dss_bench: %s, %s, thread %d: %s (\"%s\")\n",
            wl_name[w->rd->wl], side_label(w->rd), w->slot, msg, id);
    atomic_store(&g_stop, STOP_FAILED);
}

/* --shared-baseline: the baseline's connections on a stack that every
 * baseline thread takes one from and gives it back to, under a mutex. */
static pthread_mutex_t g_shared_mu = PTHREAD_MUTEX_INITIALIZER;
static PGconn *g_shared[MAX_THREADS];
static int g_nshared = -1;

/* The connection a baseline call of `w` uses. */
static PGconn *base_take(struct worker *w)
{
    if (!opt.shared_baseline)
        return g_base[w->slot];
    pthread_mutex_lock(&g_shared_mu);
    if (g_nshared < 0) {
        g_nshared = 0;
        for (int i = 0; i < MAX_THREADS; i++)
            if (g_base[i])
                g_shared[g_nshared++] = g_base[i];
    }
    PGconn *c = g_shared[--g_nshared];
    pthread_mutex_unlock(&g_shared_mu);
    return c;
}

static void base_give(PGconn *c)
{
    if (!opt.shared_baseline)
        return;
    pthread_mutex_lock(&g_shared_mu);
    g_shared[g_nshared++] = c;
    pthread_mutex_unlock(&g_shared_mu);
}

/* The calls of pair, refresh, status (and batch's single calls) on every
 * side, and of shared and sem (library and baseline only); the peers use
 * their thread's connection (never shared). */
enum op { OP_LOCK, OP_UNLOCK, OP_REFRESH, OP_STATUS, OP_LOCK_SHARED, OP_UNLOCK_SHARED,
          OP_SEM_ACQUIRE, OP_SEM_RELEASE, OP_N };

/* What a failed call is called in the messages, per side. */
static const char *const op_call[SIDE_N][OP_N] = {
    [LIB] = { "dss_lock", "dss_unlock", "dss_lock_refresh", "dss_lock_status",
              "dss_lock_shared", "dss_unlock_shared", "dss_sem_acquire", "dss_sem_release" },
    [BASE] = { "dss_lock", "dss_unlock", "dss_lock_refresh", "dss_lock_status",
               "dss_lock_shared", "dss_unlock_shared", "dss_sem_acquire", "dss_sem_release" },
    [MINIMAL] = { "minimal INSERT", "minimal DELETE", "minimal UPDATE", "minimal SELECT" },
    [PHOBOS] = { "phobos INSERT", "phobos DO block", "-", "-" },
    [ADVISORY] = { "pg_try_advisory_lock", "pg_advisory_unlock", "-", "-" },
};

static inline const char *call_name(const struct worker *w, enum op op)
{
    return op_call[w->rd->side][op];
}

static inline int op_lock(struct worker *w, const char *id)
{
    switch (w->rd->side) {
    case LIB:
        return dss_lock(&g_h, id, w->owner);
    case MINIMAL:
        return minimal_change(g_base[w->slot], "m_lock", id, w->owner);
    case PHOBOS:
        return phobos_lock(g_base[w->slot], id, w->owner);
    case ADVISORY:
        return advisory_call(g_base[w->slot], "a_lock", id, -EEXIST);
    default:
        break;
    }
    uint64_t token = 0;
    PGconn *c = base_take(w);
    int rc = base_lock(c, id, w->owner, &token);
    base_give(c);
    w->sink += (long)token;
    return rc;
}

static inline int op_unlock(struct worker *w, const char *id)
{
    switch (w->rd->side) {
    case LIB:
        return dss_unlock(&g_h, id, w->owner);
    case MINIMAL:
        return minimal_change(g_base[w->slot], "m_unlock", id, w->owner);
    case PHOBOS:
        return phobos_unlock(g_base[w->slot], id, w->owner);
    case ADVISORY:
        return advisory_call(g_base[w->slot], "a_unlock", id, -ENOLCK);
    default:
        break;
    }
    PGconn *c = base_take(w);
    int rc = base_done(c, "unlock", id, w->owner);
    base_give(c);
    return rc;
}

static inline int op_refresh(struct worker *w, const char *id)
{
    switch (w->rd->side) {
    case LIB:
        return dss_lock_refresh(&g_h, id, w->owner);
    case MINIMAL:
        return minimal_change(g_base[w->slot], "m_refresh", id, w->owner);
    default:
        break;
    }
    PGconn *c = base_take(w);
    int rc = base_done(c, "refresh", id, w->owner);
    base_give(c);
    return rc;
}

/* Status with both outputs; the owner must be ours. */
static inline int op_status(struct worker *w, const char *id, bool *owner_ok)
{
    struct timeval tv;
    int rc;
    if (w->rd->side == LIB) {
        char *owner = NULL;
        rc = dss_lock_status(&g_h, id, &owner, &tv);
        if (rc == 0) {
            *owner_ok = owner && strcmp(owner, w->owner) == 0;
            free(owner);
        }
    } else if (w->rd->side == MINIMAL) {
        rc = base_status(g_base[w->slot], "m_status", id, w->owner, owner_ok, &tv);
    } else {
        PGconn *c = base_take(w);
        rc = base_status(c, "status", id, w->owner, owner_ok, &tv);
        base_give(c);
    }
    if (rc == 0)
        w->sink += (long)tv.tv_usec;
    return rc;
}

/* shared: dss_lock_shared (ttl 0, timeout 0), dss_unlock_shared. */
static inline int op_lock_shared(struct worker *w, const char *id)
{
    uint64_t token = 0;
    int rc;
    if (w->rd->side == LIB) {
        rc = dss_lock_shared(&g_h, id, w->owner, 0, 0, &token);
    } else {
        PGconn *c = base_take(w);
        rc = base_lock_shared(c, id, w->owner, &token);
        base_give(c);
    }
    w->sink += (long)token;
    return rc;
}

static inline int op_unlock_shared(struct worker *w, const char *id)
{
    if (w->rd->side == LIB)
        return dss_unlock_shared(&g_h, id, w->owner);
    PGconn *c = base_take(w);
    int rc = base_release(c, "shared_release", id, w->owner);
    base_give(c);
    return rc;
}

/* sem: dss_sem_acquire (SEM_PERMITS of capacity SEM_CAPACITY, lease
 * SEM_TTL_MS, timeout 0), dss_sem_release. */
static inline int op_sem_acquire(struct worker *w, const char *id)
{
    uint64_t token = 0;
    int rc;
    if (w->rd->side == LIB) {
        rc = dss_sem_acquire(&g_h, id, w->owner, SEM_PERMITS, SEM_CAPACITY, SEM_TTL_MS, 0, &token);
    } else {
        PGconn *c = base_take(w);
        rc = base_sem_acquire(c, id, w->owner, &token);
        base_give(c);
    }
    w->sink += (long)token;
    return rc;
}

static inline int op_sem_release(struct worker *w, const char *id)
{
    if (w->rd->side == LIB)
        return dss_sem_release(&g_h, id, w->owner);
    PGconn *c = base_take(w);
    int rc = base_release(c, "sem_release", id, w->owner);
    base_give(c);
    return rc;
}

/* The acquiring and releasing calls of pair (scale, soak, warmup), shared
 * and sem. */
static inline enum op acquire_op(enum wl wl)
{
    return wl == W_SHARED ? OP_LOCK_SHARED : wl == W_SEM ? OP_SEM_ACQUIRE : OP_LOCK;
}

static inline enum op release_op(enum wl wl)
{
    return wl == W_SHARED ? OP_UNLOCK_SHARED : wl == W_SEM ? OP_SEM_RELEASE : OP_UNLOCK;
}

static inline int op_pair(struct worker *w, enum op op, const char *id)
{
    switch (op) {
    case OP_LOCK_SHARED: return op_lock_shared(w, id);
    case OP_UNLOCK_SHARED: return op_unlock_shared(w, id);
    case OP_SEM_ACQUIRE: return op_sem_acquire(w, id);
    case OP_SEM_RELEASE: return op_sem_release(w, id);
    case OP_UNLOCK: return op_unlock(w, id);
    default: return op_lock(w, id);
    }
}

/* kv-set: `value` is KV_VALUE_LEN bytes, ttl 0. */
static inline int op_kv_set(struct worker *w, const char *key, const char *value)
{
    if (w->rd->side == LIB)
        return dss_kv_set(&g_h, KV_BUCKET, key, value, KV_VALUE_LEN);
    uint64_t version = 0;
    PGconn *c = base_take(w);
    int rc = base_kv_set(c, KV_BUCKET, key, value, KV_VALUE_LEN, &version);
    base_give(c);
    w->sink += (long)version;
    return rc;
}

/* kv-get: the library's copy of the value is freed; *len is its length. */
static inline int op_kv_get(struct worker *w, const char *key, size_t *len)
{
    if (w->rd->side == LIB) {
        void *value = NULL;
        int rc = dss_kv_get(&g_h, KV_BUCKET, key, &value, len);
        if (rc == 0)
            free(value);
        return rc;
    }
    uint64_t version = 0;
    PGconn *c = base_take(w);
    int rc = base_kv_get(c, KV_BUCKET, key, len, &version);
    base_give(c);
    w->sink += (long)version;
    return rc;
}

/* Both barriers: threads ready, then the main thread sets the deadline. */
static void wait_start(struct round *rd)
{
    pthread_barrier_wait(&rd->ready);
    pthread_barrier_wait(&rd->go);
}

/* pair, scale, soak, warmup: lock + unlock of a new id per iteration;
 * shared: lock_shared + unlock_shared, sem: sem_acquire + sem_release, the
 * same way. */
static void *pair_thread(void *arg)
{
    struct worker *w = arg;
    struct round *rd = w->rd;
    enum op acquire = acquire_op(rd->wl), release = release_op(rd->wl);
    uint64_t i = 0;
    wait_start(rd);
    while (!stopped()) {
        snprintf(w->id, sizeof w->id, "%s%s%d:%" PRIu64, g_prefix, rd->tag, w->slot, i++);
        int64_t t0 = now_ns();
        int rc = op_pair(w, acquire, w->id);
        int64_t t1 = now_ns();
        if (rc != 0) {
            fail(w, call_name(w, acquire), w->id, rc);
            break;
        }
        rc = op_pair(w, release, w->id);
        int64_t t2 = now_ns();
        if (rc != 0) {
            fail(w, call_name(w, release), w->id, rc);
            break;
        }
        if (t2 > rd->deadline)
            break;
        h_add(w->lat, t1 - t0);
        h_add(w->lat, t2 - t1);
        w->ops++;
        atomic_store_explicit(&w->progress, w->ops, memory_order_relaxed);
    }
    return NULL;
}

/* refresh, status: each thread holds its own lock and works on it. */
static void *held_thread(void *arg)
{
    struct worker *w = arg;
    struct round *rd = w->rd;
    snprintf(w->id, sizeof w->id, "%s%s%d", g_prefix, rd->tag, w->slot);
    int rc = op_lock(w, w->id);
    bool held = rc == 0;
    if (!held)
        fail(w, call_name(w, OP_LOCK), w->id, rc);
    wait_start(rd);
    while (held && !stopped()) {
        bool owner_ok = true;
        int64_t t0 = now_ns();
        if (rd->wl == W_REFRESH)
            rc = op_refresh(w, w->id);
        else
            rc = op_status(w, w->id, &owner_ok);
        int64_t t1 = now_ns();
        if (rc != 0) {
            fail(w, call_name(w, rd->wl == W_REFRESH ? OP_REFRESH : OP_STATUS), w->id, rc);
            break;
        }
        if (!owner_ok) {
            fail_msg(w, w->rd->side == MINIMAL ? "minimal SELECT returned another owner"
                                               : "dss_lock_status returned another owner", w->id);
            break;
        }
        if (t1 > rd->deadline)
            break;
        h_add(w->lat, t1 - t0);
        w->ops++;
    }
    if (held && (rc = op_unlock(w, w->id)) != 0)
        fail(w, call_name(w, OP_UNLOCK), w->id, rc);
    return NULL;
}

/* kv-set, kv-get: each thread writes its KV_KEYS keys untimed (so that
 * every timed write is an update of a live row and every read finds its
 * key; the keys are the same in every round of both sides), then cycles
 * over them. */
static void *kv_thread(void *arg)
{
    struct worker *w = arg;
    struct round *rd = w->rd;
    bool set = rd->wl == W_KV_SET;
    char (*keys)[KV_KEY_LEN] = xcalloc(KV_KEYS, sizeof *keys);
    char value[KV_VALUE_LEN];
    for (int i = 0; i < KV_VALUE_LEN; i++)
        value[i] = (char)('a' + (w->slot + i) % 26);
    bool ready = true;
    for (int n = 0; n < KV_KEYS && ready && !stopped(); n++) {
        snprintf(keys[n], KV_KEY_LEN, "%s%c%d:%d", g_prefix, wl_tag[rd->wl], w->slot, n);
        int rc = op_kv_set(w, keys[n], value);
        if (rc != 0) {
            fail(w, "dss_kv_set", keys[n], rc);
            ready = false;
        }
    }
    wait_start(rd);
    for (uint64_t i = 0; ready && !stopped(); i++) {
        const char *key = keys[i % KV_KEYS];
        size_t len = KV_VALUE_LEN;
        int rc;
        if (set)
            put_be64(value, i);   /* every write changes the value */
        int64_t t0 = now_ns();
        if (set)
            rc = op_kv_set(w, key, value);
        else
            rc = op_kv_get(w, key, &len);
        int64_t t1 = now_ns();
        if (rc != 0) {
            fail(w, set ? "dss_kv_set" : "dss_kv_get", key, rc);
            break;
        }
        if (len != KV_VALUE_LEN) {
            fail_msg(w, "dss_kv_get returned a value of the wrong length", key);
            break;
        }
        if (t1 > rd->deadline)
            break;
        h_add(w->lat, t1 - t0);
        w->ops++;
    }
    free(keys);
    return NULL;
}

static void hold_briefly(void)
{
    if (opt.hold_us > 0) {
        struct timespec ts = { 0, opt.hold_us * 1000 };
        nanosleep(&ts, NULL);
    }
}

/* Called by a contender that just got the lock at `got` after waiting since
 * `since`: checks mutual exclusion, holds, releases. False on failure. */
static bool hold_and_release(struct worker *w, int64_t since, int64_t got)
{
    struct round *rd = w->rd;
    if (atomic_fetch_add(&rd->holders, 1) != 0)
        atomic_fetch_add(&rd->violations, 1);
    int prev = atomic_exchange(&rd->last_holder, w->slot);
    hold_briefly();
    atomic_fetch_sub(&rd->holders, 1);
    int64_t u0 = now_ns();
    int rc = op_unlock(w, rd->shared_id);
    int64_t u1 = now_ns();
    if (rc != 0) {
        fail(w, "dss_unlock", rd->shared_id, rc);
        return false;
    }
    if (got <= rd->deadline) {
        w->ops++;
        if (prev != w->slot)
            w->handoffs++;
        h_add(w->wait, got - since);
        h_add(w->lat, u1 - u0);
    }
    return true;
}

/* contended: loop on dss_lock until it is ours (sched_yield between tries). */
static void *contended_thread(void *arg)
{
    struct worker *w = arg;
    struct round *rd = w->rd;
    wait_start(rd);
    while (!stopped()) {
        int64_t since = now_ns(), t1;
        int rc;
        for (;;) {
            int64_t t0 = now_ns();
            rc = op_lock(w, rd->shared_id);
            t1 = now_ns();
            if (t1 <= rd->deadline)
                h_add(w->lat, t1 - t0);
            if (rc != -EEXIST || t1 > rd->deadline || stopped())
                break;
            sched_yield();
        }
        if (rc == -EEXIST) {   /* the deadline came first */
            w->open_wait_ns = rd->deadline - since;
            break;
        }
        if (rc != 0) {
            fail(w, "dss_lock", rd->shared_id, rc);
            break;
        }
        if (!hold_and_release(w, since, t1) || t1 > rd->deadline)
            break;
    }
    return NULL;
}

/* contended-wait: dss_lock_wait until it is ours, with the time left as the
 * timeout; -ETIMEDOUT at the deadline ends the round. */
static void *wait_thread(void *arg)
{
    struct worker *w = arg;
    struct round *rd = w->rd;
    wait_start(rd);
    while (!stopped()) {
        int64_t since = now_ns();
        int64_t left_ms = (rd->deadline - since) / 1000000;
        uint64_t token = 0;
        int rc = dss_lock_wait(&g_h, rd->shared_id, w->owner, (uint64_t)opt.ttl_ms,
                               (uint64_t)(left_ms > 1 ? left_ms : 1), &token);
        int64_t t1 = now_ns();
        if (rc == -ETIMEDOUT && t1 >= rd->deadline - 2000000) {
            w->open_wait_ns = rd->deadline - since;
            break;
        }
        if (rc != 0) {
            fail(w, "dss_lock_wait", rd->shared_id, rc);
            break;
        }
        if (t1 <= rd->deadline)
            h_add(w->lat, t1 - since);
        w->sink += (long)token;
        if (!hold_and_release(w, since, t1) || t1 > rd->deadline)
            break;
    }
    return NULL;
}

typedef void (*monitor_fn)(struct round *rd, struct worker *w);

/* One timed round of `wl` on `side`; adds its figures to `a`. */
static void run_round(enum wl wl, enum side side, int nthreads, int round, double seconds,
                      struct acc *a, monitor_fn monitor)
{
    struct round rd;
    memset(&rd, 0, sizeof rd);
    rd.wl = wl;
    rd.side = side;
    rd.nthreads = nthreads;
    rd.round = round;
    atomic_init(&rd.holders, 0);
    atomic_init(&rd.last_holder, -1);
    atomic_init(&rd.violations, 0);
    snprintf(rd.tag, sizeof rd.tag, "%c%d%c", wl_tag[wl], round, side_letter[side]);
    snprintf(rd.shared_id, sizeof rd.shared_id, "%s%s", g_prefix, rd.tag);
    if (side != LIB)
        ensure_base(nthreads);   /* the peers use the baseline's connections too */

    void *(*fn)(void *) = pair_thread;
    if (wl == W_REFRESH || wl == W_STATUS)
        fn = held_thread;
    else if (is_kv(wl))
        fn = kv_thread;
    else if (wl == W_CONTENDED || (wl == W_CONTENDED_WAIT && side == BASE))
        fn = contended_thread;
    else if (wl == W_CONTENDED_WAIT)
        fn = wait_thread;

    struct worker *w = xcalloc((size_t)nthreads, sizeof *w);
    pthread_barrier_init(&rd.ready, NULL, (unsigned)nthreads + 1);
    pthread_barrier_init(&rd.go, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        w[i].rd = &rd;
        w[i].slot = i;
        w[i].lat = xcalloc(1, sizeof *w[i].lat);
        w[i].wait = xcalloc(1, sizeof *w[i].wait);
        atomic_init(&w[i].progress, 0);
        snprintf(w[i].owner, sizeof w[i].owner, "bench:%ld:%d", (long)getpid(), i);
        int err = pthread_create(&w[i].tid, NULL, fn, &w[i]);
        if (err) {
            fprintf(stderr, "dss_bench: pthread_create: %s\n", strerror(err));
            die_setup();   /* the barriers cannot be released any more */
        }
    }
    pthread_barrier_wait(&rd.ready);
    int64_t cpu0 = process_cpu_ns();
    rd.start = now_ns();
    rd.deadline = rd.start + (int64_t)(seconds * 1e9);
    pthread_barrier_wait(&rd.go);
    if (monitor)
        monitor(&rd, w);
    for (int i = 0; i < nthreads; i++)
        pthread_join(w[i].tid, NULL);
    a->cpu_ns += process_cpu_ns() - cpu0;

    uint64_t ops = 0;
    for (int i = 0; i < nthreads; i++) {
        ops += w[i].ops;
        a->handoffs += w[i].handoffs;
        if (w[i].ops == 0)
            a->starved++;
        if (w[i].open_wait_ns > a->open_wait_ns)
            a->open_wait_ns = w[i].open_wait_ns;
        h_merge(a->lat, w[i].lat);
        h_merge(a->wait, w[i].wait);
        free(w[i].lat);
        free(w[i].wait);
    }
    a->ops += ops;
    a->ns += rd.deadline - rd.start;
    a->violations += (uint64_t)atomic_load(&rd.violations);
    if (a->nrounds < MAX_ROUNDS)
        a->rate[a->nrounds++] = (double)ops * 1e9 / (double)(rd.deadline - rd.start);
    pthread_barrier_destroy(&rd.ready);
    pthread_barrier_destroy(&rd.go);
    free(w);
}

/* ---- output: text tables or one JSON document --------------------------- */

static int g_results;   /* results printed so far (JSON commas) */

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over rounds of library/baseline throughput of the same round: the
 * two halves of a round run back to back, so this resists load that comes
 * and goes on the machine better than the ratio of the totals. */
static double paired_ratio(const struct acc *lib, const struct acc *base)
{
    double r[MAX_ROUNDS];
    int n = lib->nrounds < base->nrounds ? lib->nrounds : base->nrounds;
    for (int i = 0; i < n; i++)
        r[i] = ratio(lib->rate[i], base->rate[i]);
    if (n == 0)
        return 0;
    qsort(r, (size_t)n, sizeof r[0], cmp_double);
    return n % 2 ? r[n / 2] : (r[n / 2 - 1] + r[n / 2]) / 2;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_result_begin(const char *workload)
{
    printf("%s\n    {\"workload\":", g_results++ ? "," : "");
    json_str(workload);
}

/* `"key":{...}`, after `sep` (a comma, or nothing first in an object). */
static void json_side_sep(const char *sep, const char *key, const struct acc *a)
{
    printf("%s\"%s\":{\"ops\":%" PRIu64 ",\"seconds\":%.3f,\"ops_per_s\":%.1f,\"round_ops_per_s\":[",
           sep, key, a->ops, (double)a->ns / 1e9, acc_rate(a));
    for (int i = 0; i < a->nrounds; i++)
        printf("%s%.1f", i ? "," : "", a->rate[i]);
    printf("],\"calls\":%" PRIu64 ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f,"
           "\"cpu_us_per_op\":%.2f",
           a->lat->n, h_pct_us(a->lat, 0.5), h_pct_us(a->lat, 0.99),
           (double)a->lat->max_ns / 1000, h_mean_us(a->lat), cpu_per_op_us(a));
    if (a->wait->n || a->open_wait_ns) {
        double max_wait = (double)(a->wait->max_ns > (uint64_t)a->open_wait_ns
                                   ? a->wait->max_ns : (uint64_t)a->open_wait_ns) / 1000;
        printf(",\"handoffs\":%" PRIu64 ",\"handoffs_per_s\":%.1f,\"wait_p50_us\":%.1f,"
               "\"wait_p99_us\":%.1f,\"max_wait_us\":%.1f,\"unfinished_wait_us\":%.1f,"
               "\"idle_thread_rounds\":%" PRIu64 ",\"violations\":%" PRIu64,
               a->handoffs, a->ns ? (double)a->handoffs * 1e9 / (double)a->ns : 0,
               h_pct_us(a->wait, 0.5), h_pct_us(a->wait, 0.99), max_wait,
               (double)a->open_wait_ns / 1000, a->starved, a->violations);
    }
    putchar('}');
}

static void json_side(const char *key, const struct acc *a)
{
    json_side_sep(",", key, a);
}

/* The peers of a result: `"peers":{"minimal":{...},...}`, then their
 * library/peer ratios (throughput over all rounds, median of same-round
 * throughput ratios, p99). */
static void json_peers(const struct acc *acc, const enum side *sides, int nsides)
{
    const struct acc *lib = &acc[LIB];
    printf(",\"peers\":{");
    for (int i = 0, n = 0; i < nsides; i++)
        if (sides[i] >= MINIMAL)
            json_side_sep(n++ ? "," : "", side_name[sides[i]], &acc[sides[i]]);
    static const char *const what[3] = { "peer_ratio", "peer_paired_ratio_median",
                                         "peer_p99_ratio" };
    for (int k = 0; k < 3; k++) {
        printf("},\"%s\":{", what[k]);
        for (int i = 0, n = 0; i < nsides; i++) {
            const struct acc *p = &acc[sides[i]];
            if (sides[i] < MINIMAL)
                continue;
            double v = k == 0 ? ratio(acc_rate(lib), acc_rate(p))
                       : k == 1 ? paired_ratio(lib, p)
                       : ratio(h_pct_us(lib->lat, 0.99), h_pct_us(p->lat, 0.99));
            printf("%s\"%s\":%.4f", n++ ? "," : "", side_name[sides[i]], v);
        }
    }
    putchar('}');
}

static void text_side(const char *name, const struct acc *a)
{
    printf("  %-9s %14.1f %9.1f %9.1f %10.1f %9.1f   ", name, acc_rate(a), h_pct_us(a->lat, 0.5),
           h_pct_us(a->lat, 0.99), (double)a->lat->max_ns / 1000, cpu_per_op_us(a));
    for (int i = 0; i < a->nrounds; i++)
        printf("%s%.0f", i ? " " : "", a->rate[i]);
    putchar('\n');
}


static const char *unit_of(enum wl wl)
{
    switch (wl) {
    case W_PAIR: case W_SHARED: case W_SEM: case W_SCALE: case W_SOAK: return "pairs";
    case W_CONTENDED: case W_CONTENDED_WAIT: return "acquisitions";
    default: return "calls";
    }
}

static const char *what_of(enum wl wl)
{
    switch (wl) {
    case W_PAIR: return "dss_lock + dss_unlock, a new id per iteration, no conflicts";
    case W_REFRESH: return "dss_lock_refresh of a lock the thread holds";
    case W_STATUS: return "dss_lock_status (owner + timestamp) of a lock the thread holds";
    case W_KV_SET: return "dss_kv_set of a 64-byte value (ttl 0), each thread over 100 live keys "
                          "of its own";
    case W_KV_GET: return "dss_kv_get of a 64-byte value, each thread over 100 keys it wrote";
    case W_SHARED: return "dss_lock_shared (ttl 0, timeout 0) + dss_unlock_shared, a new id per "
                          "iteration, no conflicts";
    case W_SEM: return "dss_sem_acquire (1 permit, capacity 1, ttl 60000 ms, timeout 0) + "
                       "dss_sem_release, a new semaphore per iteration, no conflicts";
    case W_SCALE: return "pair, with other locks held";
    case W_CONTENDED: return "all threads on one id: dss_lock until taken (sched_yield), hold, dss_unlock";
    case W_CONTENDED_WAIT: return "all threads on one id: dss_lock_wait, hold, dss_unlock "
                                  "(baseline: the contended loop)";
    default: return "";
    }
}

/* Library/baseline (and library/peer) comparison of one workload at one
 * thread count; acc[] is indexed by side, sides[] lists those that ran. */
static void emit_compare(enum wl wl, int nthreads, long fill, double vs_empty_lib,
                         double vs_empty_base, const struct acc *acc, const enum side *sides,
                         int nsides)
{
    const struct acc *lib = &acc[LIB], *base = &acc[BASE];
    double tr = ratio(acc_rate(lib), acc_rate(base));
    double pr = ratio(h_pct_us(lib->lat, 0.99), h_pct_us(base->lat, 0.99));
    long rss = maxrss_kib();
    if (opt.json) {
        json_result_begin(wl_name[wl]);
        printf(",\"threads\":%d,\"unit\":\"%s\"", nthreads, unit_of(wl));
        if (wl == W_SCALE)
            printf(",\"fill\":%ld", fill);
        if (wl == W_CONTENDED || wl == W_CONTENDED_WAIT)
            printf(",\"hold_us\":%ld", opt.hold_us);
        if (is_kv(wl))
            printf(",\"bucket\":\"%s\",\"keys_per_thread\":%d,\"value_bytes\":%d", KV_BUCKET,
                   KV_KEYS, KV_VALUE_LEN);
        json_side("library", lib);
        json_side("baseline", base);
        printf(",\"throughput_ratio\":%.4f,\"paired_ratio_median\":%.4f,\"p99_ratio\":%.4f",
               tr, paired_ratio(lib, base), pr);
        if (vs_empty_lib > 0)
            printf(",\"library_vs_empty\":%.4f,\"baseline_vs_empty\":%.4f", vs_empty_lib,
                   vs_empty_base);
        json_peers(acc, sides, nsides);
        printf(",\"maxrss_kib\":%ld}", rss);
        fflush(stdout);
        return;
    }
    printf("\n%s, %d thread%s", wl_name[wl], nthreads, nthreads == 1 ? "" : "s");
    if (wl == W_SCALE)
        printf(", %ld other locks held", fill);
    if (wl == W_CONTENDED || wl == W_CONTENDED_WAIT)
        printf(", hold %ld µs", opt.hold_us);
    printf(": %s\n", what_of(wl));
    char rate_hdr[32];
    snprintf(rate_hdr, sizeof rate_hdr, "%s/s", unit_of(wl));
    printf("  %-9s %14s %9s %9s %10s %9s   %s/s per round\n", "", rate_hdr, "p50 µs", "p99 µs",
           "max µs", "CPU µs/op", unit_of(wl));
    for (int i = 0; i < nsides; i++)
        text_side(side_name[sides[i]], &acc[sides[i]]);
    printf("  library/baseline: throughput %.3f (median of same-round ratios %.3f), p99 %.3f", tr,
           paired_ratio(lib, base), pr);
    if (vs_empty_lib > 0)
        printf("; vs no other locks: library %.3f, baseline %.3f", vs_empty_lib, vs_empty_base);
    printf("; peak RSS %ld KiB\n", rss);
    for (int i = 0; i < nsides; i++) {
        const struct acc *p = &acc[sides[i]];
        if (sides[i] < MINIMAL)
            continue;
        printf("  library/%s: throughput %.3f (median of same-round ratios %.3f), p99 %.3f\n",
               side_name[sides[i]], ratio(acc_rate(lib), acc_rate(p)), paired_ratio(lib, p),
               ratio(h_pct_us(lib->lat, 0.99), h_pct_us(p->lat, 0.99)));
    }
    if (wl == W_CONTENDED || wl == W_CONTENDED_WAIT) {
        const struct acc *s[2] = { lib, base };
        for (int i = 0; i < 2; i++) {
            uint64_t mw = s[i]->wait->max_ns > (uint64_t)s[i]->open_wait_ns
                          ? s[i]->wait->max_ns : (uint64_t)s[i]->open_wait_ns;
            printf("  %-9s handoffs/s %.1f, wait p50 %.1f µs, p99 %.1f µs, longest %.1f µs, "
                   "idle thread-rounds %" PRIu64 ", exclusion violations %" PRIu64 "\n",
                   side_name[i], s[i]->ns ? (double)s[i]->handoffs * 1e9 / (double)s[i]->ns : 0,
                   h_pct_us(s[i]->wait, 0.5), h_pct_us(s[i]->wait, 0.99), (double)mw / 1000,
                   s[i]->starved, s[i]->violations);
        }
    }
    fflush(stdout);
}

/* ---- checks between workloads ------------------------------------------- */

/* No lock (nor key) of this run may be left once a workload is over. */
static void check_no_leftovers(const char *after)
{
    if (stopped())
        return;
    long long n = admin_count(g_prefix, g_prefix_end);
    if (n != 0) {
        fprintf(stderr, "dss_bench: after %s: %lld lock rows of this run left in dss.locks\n",
                after, n);
        atomic_store(&g_stop, STOP_FAILED);
    }
    n = admin_kv_count();
    if (n != 0) {
        fprintf(stderr, "dss_bench: after %s: %lld keys of this run left in dss.kv (bucket '%s')\n",
                after, n, KV_BUCKET);
        atomic_store(&g_stop, STOP_FAILED);
    }
    n = admin_shared_count();
    if (n != 0) {
        fprintf(stderr, "dss_bench: after %s: %lld rows of this run left in dss.lock_shares, "
                "dss.sem_holders and dss.sems\n", after, n);
        atomic_store(&g_stop, STOP_FAILED);
    }
    n = admin_peer_rows();
    if (n != 0) {
        fprintf(stderr, "dss_bench: after %s: %lld rows left in dss_bench.minimal_lock and "
                "dss_bench.phobos_lock\n", after, n);
        atomic_store(&g_stop, STOP_FAILED);
    }
    n = admin_advisory_held();
    if (n != 0) {
        fprintf(stderr, "dss_bench: after %s: %lld advisory locks still held by the peers' "
                "sessions\n", after, n);
        atomic_store(&g_stop, STOP_FAILED);
    }
}

/* kv-set, kv-get: remove the keys the workload wrote. */
static void remove_kv(const char *after)
{
    long long n = admin_kv_delete();
    if (n < 0)
        atomic_store(&g_stop, STOP_FAILED);
    else if (n > 0)
        progress("%s: removed %lld keys from dss.kv", after, n);
}

static bool check_violations(enum wl wl, const struct acc *a, enum side side)
{
    if (a->violations == 0)
        return true;
    fprintf(stderr, "dss_bench: %s, %s: %" PRIu64 " times two threads held the lock at once\n",
            wl_name[wl], side_name[side], a->violations);
    atomic_store(&g_stop, STOP_FAILED);
    return false;
}

/* ---- the workloads ------------------------------------------------------ */

/* Rounds of the library, the baseline and the workload's peers, the order
 * rotating every round (with two sides ABBA...: the side that goes first
 * changes every round; with k sides each goes first once every k rounds),
 * so a drift of the machine, e.g. an autovacuum or a checkpoint winding
 * down, weighs on every side alike; returns the library's and the
 * baseline's throughputs. */
static void compare(enum wl wl, int nthreads, long fill, double *lib_rate, double *base_rate,
                    double lib_empty, double base_empty)
{
    struct acc acc[SIDE_N];
    enum side sides[SIDE_N];
    int nsides = sides_of(wl, sides);
    for (int i = 0; i < SIDE_N; i++)
        acc_init(&acc[i]);
    for (int r = 0; r < opt.rounds && !stopped(); r++) {
        /* The order rotates: round r starts with side r mod nsides. */
        for (int k = 0; k < nsides && !stopped(); k++) {
            enum side s = sides[(r + k) % nsides];
            run_round(wl, s, nthreads, r, opt.duration, &acc[s], NULL);
        }
        if (stopped())
            break;
        char extra[48] = "", rates[256] = "";
        if (wl == W_SCALE)
            snprintf(extra, sizeof extra, ", %ld other locks", fill);
        for (int i = 0, len = 0; i < nsides && len < (int)sizeof rates; i++)
            len += snprintf(rates + len, sizeof rates - (size_t)len, "%s%s %.0f", i ? ", " : "",
                            side_name[sides[i]], acc[sides[i]].rate[acc[sides[i]].nrounds - 1]);
        progress("%s, %d thread%s%s: round %d/%ld: %s %s/s", wl_name[wl], nthreads,
                 nthreads == 1 ? "" : "s", extra, r + 1, opt.rounds, rates, unit_of(wl));
    }
    if (!stopped())
        for (int i = 0; i < nsides; i++)
            check_violations(wl, &acc[sides[i]], sides[i]);
    if (!stopped())
        emit_compare(wl, nthreads, fill, ratio(acc_rate(&acc[LIB]), lib_empty),
                     ratio(acc_rate(&acc[BASE]), base_empty), acc, sides, nsides);
    if (lib_rate)
        *lib_rate = acc_rate(&acc[LIB]);
    if (base_rate)
        *base_rate = acc_rate(&acc[BASE]);
    for (int i = 0; i < SIDE_N; i++)
        acc_free(&acc[i]);
    if (is_kv(wl))
        remove_kv(wl_name[wl]);
    if (wl != W_SCALE)   /* scale's filler is still there: checked once removed */
        check_no_leftovers(wl_name[wl]);
}

static void wl_rates(enum wl wl)
{
    for (int t = 0; t < opt.nthreads && !stopped(); t++)
        compare(wl, (int)opt.threads[t], 0, NULL, NULL, 0, 0);
}

static void wl_contended(enum wl wl)
{
    compare(wl, (int)opt.contenders, 0, NULL, NULL, 0, 0);
}

/* scale: pair with filler rows ("bench:<pid>:f<n>", owner "bench-filler",
 * the other columns left to their defaults as dss_lock leaves them). */
static char g_fill_lo[80], g_fill_hi[80];
static long long g_filled;

static void remove_filler(void)
{
    if (!g_admin || g_filled == 0)
        return;
    progress("scale: removing %lld filler locks", g_filled);
    if (admin_delete(g_fill_lo, g_fill_hi) >= 0) {
        g_filled = 0;
        admin_cmd("VACUUM ANALYZE dss.locks");
    }
}

static void wl_scale(void)
{
    double lib_empty[MAX_LIST] = { 0 }, base_empty[MAX_LIST] = { 0 };
    snprintf(g_fill_lo, sizeof g_fill_lo, "%sf", g_prefix);
    snprintf(g_fill_hi, sizeof g_fill_hi, "%sg", g_prefix);
    for (int f = 0; f < opt.nfill && !stopped(); f++) {
        long target = opt.fill[f];
        if (target > g_filled) {
            char from[32], to[32];
            snprintf(from, sizeof from, "%lld", g_filled + 1);
            snprintf(to, sizeof to, "%ld", target);
            const char *p[4] = { g_fill_lo, "bench-filler", from, to };
            progress("scale: filling dss.locks to %ld other locks", target);
            int64_t t0 = now_ns();
            PGresult *r = admin(ADMIN_SQL_FILL, 4, p);
            if (!r) {
                atomic_store(&g_stop, STOP_FAILED);
                break;
            }
            PQclear(r);
            g_filled = target;
            if (!admin_cmd("VACUUM ANALYZE dss.locks")) {
                atomic_store(&g_stop, STOP_FAILED);
                break;
            }
            progress("scale: filled in %.1f s (with VACUUM ANALYZE)", (double)(now_ns() - t0) / 1e9);
        } else if (target < g_filled) {
            remove_filler();   /* levels are expected in increasing order */
            f--;
            continue;
        }
        for (int t = 0; t < opt.nthreads && !stopped(); t++) {
            double lr, br;
            compare(W_SCALE, (int)opt.threads[t], target, &lr, &br,
                    target == 0 ? 0 : lib_empty[t], target == 0 ? 0 : base_empty[t]);
            if (target == 0) {
                lib_empty[t] = lr;
                base_empty[t] = br;
            }
        }
    }
    remove_filler();
    check_no_leftovers("scale");
}

/* batch: one dss_lock_many / dss_unlock_many of N ids versus N single calls
 * of each side. Medians over the rounds. */
static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double median_ms(int64_t *v, int n)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    double m = n % 2 ? (double)v[n / 2] : ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2;
    return m / 1e6;
}

/* N single calls of one side, timed; false on failure. */
static bool batch_singles(struct worker *w, char **ids, long n, int64_t *lock_ns, int64_t *unlock_ns)
{
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int rc = op_lock(w, ids[i]);
        if (rc != 0) {
            fail(w, call_name(w, OP_LOCK), ids[i], rc);
            return false;
        }
    }
    int64_t t1 = now_ns();
    for (long i = 0; i < n; i++) {
        int rc = op_unlock(w, ids[i]);
        if (rc != 0) {
            fail(w, call_name(w, OP_UNLOCK), ids[i], rc);
            return false;
        }
    }
    *lock_ns = t1 - t0;
    *unlock_ns = now_ns() - t1;
    return true;
}

#define BATCH_ID_LEN 96

struct batch_times {
    int64_t many_lock, many_unlock, single_lock, single_unlock;
};

static void fail_batch(struct worker *w, const char *call, char **ids, long n, long where, int rc)
{
    char what[160];
    if (where < 0)
        snprintf(what, sizeof what, "%ld ids", n);
    else
        snprintf(what, sizeof what, "%ld ids, at index %ld: %s", n, where,
                 where < n ? ids[where] : "?");
    fail(w, call, what, rc);
}

/* One side of one batch round: lock-many + unlock-many of the n ids in one
 * call each, then n single locks and n single unlocks. */
static bool batch_side(struct worker *w, char **ids, long n, char *arraybuf, struct batch_times *t)
{
    bool lib = w->rd->side == LIB;
    long where = -1;
    int rc;
    int64_t t0 = now_ns();
    if (lib) {
        size_t conflict = SIZE_MAX;
        rc = dss_lock_many(&g_h, (const char *const *)ids, (size_t)n, w->owner,
                           (uint64_t)opt.ttl_ms, &conflict);
        where = conflict == SIZE_MAX ? -1 : (long)conflict;
    } else {
        rc = base_lock_many(g_base[0], ids, n, w->owner, arraybuf, &where);
    }
    int64_t t1 = now_ns();
    if (rc != 0) {
        fail_batch(w, "dss_lock_many", ids, n, where, rc);
        return false;
    }
    if (lib)
        rc = dss_unlock_many(&g_h, (const char *const *)ids, (size_t)n, w->owner);
    else
        rc = base_unlock_many(g_base[0], ids, n, w->owner, arraybuf, &where);
    int64_t t2 = now_ns();
    if (rc != 0) {
        fail_batch(w, "dss_unlock_many", ids, n, where, rc);
        return false;
    }
    t->many_lock = t1 - t0;
    t->many_unlock = t2 - t1;
    return batch_singles(w, ids, n, &t->single_lock, &t->single_unlock);
}

/* bare (peer of batch): one INSERT ... unnest of the n ids into
 * dss_bench.minimal_lock, timed as dss_lock_many is; the DELETE of the rows
 * is untimed (both must touch n rows). */
static bool bare_side(struct worker *w, char **ids, long n, char *arraybuf, int64_t *ns)
{
    int64_t t0 = now_ns();
    int rc = bare_call(g_base[0], "bare_insert", ids, n, w->owner, arraybuf);
    int64_t t1 = now_ns();
    if (rc != 0) {
        fail_batch(w, "bare INSERT ... unnest", ids, n, -1, rc);
        return false;
    }
    rc = bare_call(g_base[0], "bare_delete", ids, n, w->owner, arraybuf);
    if (rc != 0) {
        fail_batch(w, "bare DELETE (untimed)", ids, n, -1, rc);
        return false;
    }
    *ns = t1 - t0;
    return true;
}

/* Medians over rounds, in ms. */
struct batch_medians {
    double many_lock, many_unlock, single_lock, single_unlock;
};

static struct batch_medians batch_medians(const struct batch_times *t, int n)
{
    int64_t v[4][MAX_ROUNDS];
    for (int i = 0; i < n; i++) {
        v[0][i] = t[i].many_lock;
        v[1][i] = t[i].many_unlock;
        v[2][i] = t[i].single_lock;
        v[3][i] = t[i].single_unlock;
    }
    struct batch_medians m = { median_ms(v[0], n), median_ms(v[1], n), median_ms(v[2], n),
                               median_ms(v[3], n) };
    return m;
}

static void json_batch_side(const char *key, const struct batch_medians *m, long n)
{
    printf(",\"%s\":{\"lock_many_ms\":%.3f,\"unlock_many_ms\":%.3f,\"single_lock_ms\":%.3f,"
           "\"single_unlock_ms\":%.3f,\"single_lock_us_per_call\":%.2f}",
           key, m->many_lock, m->many_unlock, m->single_lock, m->single_unlock,
           m->single_lock * 1000 / (double)n);
}

/* batch: one dss_lock_many / dss_unlock_many of N ids versus N single calls,
 * each side, library and baseline alternating. Medians over the rounds. */
static void wl_batch(void)
{
    ensure_base(1);
    for (int s = 0; s < opt.nbatch && !stopped(); s++) {
        long n = opt.batch[s];
        char **ids = xcalloc((size_t)n, sizeof *ids);
        char *buf = xcalloc((size_t)n, BATCH_ID_LEN);
        for (long i = 0; i < n; i++) {
            ids[i] = buf + i * BATCH_ID_LEN;
            snprintf(ids[i], BATCH_ID_LEN, "%.63sb%ld:%ld", g_prefix, n % 100000000, i % 100000000);
        }
        char *arraybuf = xcalloc(1, text_array_size(ids, n));
        struct batch_times lib_t[MAX_ROUNDS], base_t[MAX_ROUNDS];
        int64_t bare_t[MAX_ROUNDS];
        bool bare = (g_peers & PEER_BARE) != 0;
        int nsides = bare ? 3 : 2;   /* library, baseline, bare: rotating */
        struct round rd;
        memset(&rd, 0, sizeof rd);
        rd.wl = W_BATCH;
        struct worker w;
        memset(&w, 0, sizeof w);
        w.rd = &rd;
        snprintf(w.owner, sizeof w.owner, "bench:%ld:batch", (long)getpid());
        int r;
        for (r = 0; r < opt.rounds && !stopped(); r++) {
            bool ok = true;
            for (int k = 0; k < nsides && ok; k++) {
                int which = (r + k) % nsides;
                if (which == 2) {
                    rd.side = MINIMAL;
                    ok = bare_side(&w, ids, n, arraybuf, &bare_t[r]);
                } else {
                    rd.side = which == 0 ? LIB : BASE;
                    ok = batch_side(&w, ids, n, arraybuf, which == 0 ? &lib_t[r] : &base_t[r]);
                }
            }
            if (!ok)
                break;
            char bare_ms[48] = "";
            if (bare)
                snprintf(bare_ms, sizeof bare_ms, ", bare INSERT %.1f", (double)bare_t[r] / 1e6);
            progress("batch %ld: round %d/%ld: lock_many %.1f ms (baseline %.1f%s), %ld dss_lock "
                     "%.1f ms (baseline %.1f)", n, r + 1, opt.rounds,
                     (double)lib_t[r].many_lock / 1e6, (double)base_t[r].many_lock / 1e6, bare_ms,
                     n, (double)lib_t[r].single_lock / 1e6, (double)base_t[r].single_lock / 1e6);
        }
        if (!stopped()) {
            struct batch_medians lm = batch_medians(lib_t, r), bm = batch_medians(base_t, r);
            double per_call_us = lm.single_lock * 1000 / (double)n;
            double hundred_ms = per_call_us * 100 / 1000;
            int64_t sorted[MAX_ROUNDS];
            if (bare)
                memcpy(sorted, bare_t, sizeof sorted[0] * (size_t)r);
            double bare_ms = bare ? median_ms(sorted, r) : 0;
            if (opt.json) {
                json_result_begin("batch");
                printf(",\"ids\":%ld,\"rounds\":%d", n, r);
                json_batch_side("library", &lm, n);
                json_batch_side("baseline", &bm, n);
                printf(",\"hundred_single_locks_ms\":%.3f,\"lock_many_over_hundred_singles\":%.4f,"
                       "\"lock_many_over_singles\":%.4f,\"lock_many_ratio\":%.4f,"
                       "\"unlock_many_ratio\":%.4f,\"singles_ratio\":%.4f",
                       hundred_ms, ratio(lm.many_lock, hundred_ms),
                       ratio(lm.many_lock, lm.single_lock), ratio(bm.many_lock, lm.many_lock),
                       ratio(bm.many_unlock, lm.many_unlock),
                       ratio(bm.single_lock + bm.single_unlock, lm.single_lock + lm.single_unlock));
                printf(",\"singles_over_lock_many\":%.4f,\"peers\":{",
                       ratio(lm.single_lock, lm.many_lock));
                if (bare) {
                    printf("\"bare\":{\"insert_ms\":%.3f,\"insert_us_per_id\":%.3f,"
                           "\"round_insert_ms\":[", bare_ms, bare_ms * 1000 / (double)n);
                    for (int i = 0; i < r; i++)
                        printf("%s%.3f", i ? "," : "", (double)bare_t[i] / 1e6);
                    printf("]}");
                }
                printf("},\"peer_ratio\":{");
                if (bare)
                    printf("\"bare\":%.4f", ratio(lm.many_lock, bare_ms));
                printf("},\"maxrss_kib\":%ld}", maxrss_kib());
            } else {
                printf("\nbatch, %ld ids, median of %d rounds (ms)\n", n, r);
                printf("  %-9s %13s %15s %12s %14s\n", "", "dss_lock_many", "dss_unlock_many",
                       "n dss_lock", "n dss_unlock");
                printf("  %-9s %13.2f %15.2f %12.1f %14.1f\n", "library", lm.many_lock,
                       lm.many_unlock, lm.single_lock, lm.single_unlock);
                printf("  %-9s %13.2f %15.2f %12.1f %14.1f\n", "baseline", bm.many_lock,
                       bm.many_unlock, bm.single_lock, bm.single_unlock);
                if (bare)
                    printf("  %-9s %13.2f   (one INSERT ... SELECT unnest($1::text[]), $2 into "
                           "dss_bench.minimal_lock)\n", "bare", bare_ms);
                printf("  one dss_lock_many of %ld ids: %.2f ms = %.2fx the time of 100 single "
                       "dss_lock calls (%.2f ms), %.3fx that of %ld (%.1fx faster)\n", n,
                       lm.many_lock, ratio(lm.many_lock, hundred_ms), hundred_ms,
                       ratio(lm.many_lock, lm.single_lock), n, ratio(lm.single_lock, lm.many_lock));
                printf("  library/baseline throughput: lock_many %.3f, unlock_many %.3f, "
                       "single calls %.3f\n", ratio(bm.many_lock, lm.many_lock),
                       ratio(bm.many_unlock, lm.many_unlock),
                       ratio(bm.single_lock + bm.single_unlock, lm.single_lock + lm.single_unlock));
                if (bare)
                    printf("  library/bare: lock_many ms / bare INSERT ms %.3f\n",
                           ratio(lm.many_lock, bare_ms));
            }
            fflush(stdout);
        }
        free(arraybuf);
        free(buf);
        free(ids);
        check_no_leftovers("batch");
    }
}

/* soak: pair on the library for SOAK_MINUTES; windows sampled by the main
 * thread while the workers run. */
struct window {
    double t_s, ops_per_s;
    long rss_kib, maxrss_kib;
    struct table_stats ts;
};

static struct {
    int nwin;
    double win_s;
    struct window *win;
    int done;
} g_soak;

static void soak_monitor(struct round *rd, struct worker *w)
{
    uint64_t prev = 0;
    int64_t prev_t = rd->start;
    for (int k = 0; k < g_soak.nwin; k++) {
        int64_t until = rd->start + (int64_t)((double)(k + 1) * g_soak.win_s * 1e9);
        if (until > rd->deadline)
            until = rd->deadline;
        struct timespec ts = { until / 1000000000, until % 1000000000 };
        while (!stopped() && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        if (stopped())
            return;
        uint64_t total = 0;
        for (int i = 0; i < rd->nthreads; i++)
            total += atomic_load_explicit(&w[i].progress, memory_order_relaxed);
        int64_t now = now_ns();
        struct window *x = &g_soak.win[k];
        x->t_s = (double)(now - rd->start) / 1e9;
        x->ops_per_s = (double)(total - prev) * 1e9 / (double)(now - prev_t);
        x->rss_kib = rss_kib();
        x->maxrss_kib = maxrss_kib();
        if (!table_stats(&x->ts))
            x->ts.bytes = -1;
        prev = total;
        prev_t = now;
        g_soak.done = k + 1;
        progress("soak: %5.0f s: %.0f pairs/s, RSS %ld KiB (peak %ld), dss.locks %lld bytes, "
                 "%lld dead rows", x->t_s, x->ops_per_s, x->rss_kib, x->maxrss_kib, x->ts.bytes,
                 x->ts.dead);
    }
}

static void wl_soak(void)
{
    double total_s = opt.soak_minutes * 60;
    g_soak.nwin = (int)(total_s / opt.soak_window + 0.5);
    if (g_soak.nwin < 1)
        g_soak.nwin = 1;
    g_soak.win_s = total_s / g_soak.nwin;
    g_soak.win = xcalloc((size_t)g_soak.nwin, sizeof *g_soak.win);
    g_soak.done = 0;
    struct table_stats before = { -1, -1, -1, -1, -1 };
    table_stats(&before);
    long maxrss_before = maxrss_kib(), rss_before = rss_kib();
    struct acc a;
    acc_init(&a);
    progress("soak: %d threads, %.1f min, %d windows of %.0f s", (int)opt.soak_threads,
             opt.soak_minutes, g_soak.nwin, g_soak.win_s);
    run_round(W_SOAK, LIB, (int)opt.soak_threads, 0, total_s, &a, soak_monitor);
    if (!stopped() && g_soak.done == g_soak.nwin) {
        double *rates = xcalloc((size_t)g_soak.nwin, sizeof *rates);
        for (int k = 0; k < g_soak.nwin; k++)
            rates[k] = g_soak.win[k].ops_per_s;
        qsort(rates, (size_t)g_soak.nwin, sizeof *rates, cmp_double);
        double min = rates[0];
        double med = g_soak.nwin % 2 ? rates[g_soak.nwin / 2]
                                     : (rates[g_soak.nwin / 2 - 1] + rates[g_soak.nwin / 2]) / 2;
        free(rates);
        const struct window *first = &g_soak.win[0], *last = &g_soak.win[g_soak.nwin - 1];
        const struct window *mid = &g_soak.win[(g_soak.nwin - 1) / 2];
        if (opt.json) {
            json_result_begin("soak");
            printf(",\"threads\":%ld,\"minutes\":%.2f,\"window_s\":%.1f,\"side\":\"library\"",
                   opt.soak_threads, opt.soak_minutes, g_soak.win_s);
            json_side("library", &a);
            printf(",\"windows\":[");
            for (int k = 0; k < g_soak.nwin; k++) {
                const struct window *x = &g_soak.win[k];
                printf("%s\n      {\"t_s\":%.1f,\"ops_per_s\":%.1f,\"rss_kib\":%ld,"
                       "\"maxrss_kib\":%ld,\"table_bytes\":%lld,\"n_dead_tup\":%lld,"
                       "\"n_live_tup\":%lld,\"autovacuum_count\":%lld,\"history_bytes\":%lld}",
                       k ? "," : "", x->t_s, x->ops_per_s, x->rss_kib, x->maxrss_kib, x->ts.bytes,
                       x->ts.dead, x->ts.live, x->ts.autovacuums, x->ts.history_bytes);
            }
            printf("],\n     \"min_window_ops_per_s\":%.1f,\"median_window_ops_per_s\":%.1f,"
                   "\"min_over_median\":%.4f,\"rss_before_kib\":%ld,\"maxrss_before_kib\":%ld,"
                   "\"maxrss_first_window_kib\":%ld,\"maxrss_end_kib\":%ld,"
                   "\"rss_first_window_kib\":%ld,\"rss_end_kib\":%ld,"
                   "\"table_bytes_before\":%lld,\"table_bytes_mid\":%lld,\"table_bytes_end\":%lld,"
                   "\"n_dead_tup_end\":%lld,\"autovacuums\":%lld,\"history_bytes_end\":%lld,"
                   "\"peers\":{},\"peer_ratio\":{}}",
                   min, med, ratio(min, med), rss_before, maxrss_before, first->maxrss_kib,
                   last->maxrss_kib, first->rss_kib, last->rss_kib, before.bytes, mid->ts.bytes,
                   last->ts.bytes, last->ts.dead, last->ts.autovacuums - before.autovacuums,
                   last->ts.history_bytes);
        } else {
            printf("\nsoak, %ld threads, %.1f min, library only: pair\n", opt.soak_threads,
                   opt.soak_minutes);
            printf("  %8s %11s %10s %10s %14s %10s\n", "t (s)", "pairs/s", "RSS KiB",
                   "peak KiB", "dss.locks B", "dead rows");
            for (int k = 0; k < g_soak.nwin; k++) {
                const struct window *x = &g_soak.win[k];
                printf("  %8.0f %11.1f %10ld %10ld %14lld %10lld\n", x->t_s, x->ops_per_s,
                       x->rss_kib, x->maxrss_kib, x->ts.bytes, x->ts.dead);
            }
            printf("  overall %.1f pairs/s, p50 %.1f µs, p99 %.1f µs, max %.1f µs\n",
                   acc_rate(&a), h_pct_us(a.lat, 0.5), h_pct_us(a.lat, 0.99),
                   (double)a.lat->max_ns / 1000);
            printf("  min window / median window: %.3f; peak RSS after the first window %ld KiB, "
                   "at the end %ld KiB; dss.locks %lld bytes before, %lld at the end, "
                   "%lld dead rows, %lld autovacuums\n",
                   ratio(min, med), first->maxrss_kib, last->maxrss_kib, before.bytes,
                   last->ts.bytes, last->ts.dead, last->ts.autovacuums - before.autovacuums);
        }
        fflush(stdout);
    }
    acc_free(&a);
    free(g_soak.win);
    g_soak.win = NULL;
    check_no_leftovers("soak");
}

/* ---- main --------------------------------------------------------------- */

static int parse_list(const char *s, long *out, int max, long lo, long hi)
{
    int n = 0;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < lo || v > hi || n == max)
            return -1;
        out[n++] = v;
        if (*end == 0)
            return n;
        if (*end != ',')
            return -1;
        s = end + 1;
    }
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e6)
        return false;
    *out = v;
    return true;
}

static bool parse_workloads(const char *s)
{
    char buf[256];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "all") == 0) {
            for (int i = 0; i < W_N; i++)
                opt.want[i] = true;
            continue;
        }
        int i;
        for (i = 0; i < W_N && strcmp(tok, wl_name[i]) != 0; i++)
            ;
        if (i == W_N)
            return false;
        opt.want[i] = true;
    }
    return true;
}

/* --peers: minimal (with bare, its batch form), bare, phobos, advisory,
 * all, none. */
static bool parse_peers(const char *s)
{
    char buf[256];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    g_peers = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "none") == 0)
            continue;
        else if (strcmp(tok, "all") == 0)
            g_peers |= PEERS_DEFAULT;
        else if (strcmp(tok, "minimal") == 0)
            g_peers |= PEER_BIT(MINIMAL) | PEER_BARE;
        else if (strcmp(tok, "bare") == 0)
            g_peers |= PEER_BARE;
        else if (strcmp(tok, "phobos") == 0)
            g_peers |= PEER_BIT(PHOBOS);
        else if (strcmp(tok, "advisory") == 0)
            g_peers |= PEER_BIT(ADVISORY);
        else
            return false;
    }
    return true;
}

static void bad_option(const char *name, const char *value)
{
    fprintf(stderr, "dss_bench: invalid %s '%s' (try --help)\n", name, value);
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    enum { O_CONNINFO = 256, O_THREADS, O_DURATION, O_ROUNDS, O_WORKLOAD, O_CONTENDERS, O_HOLD,
           O_BATCH, O_FILL, O_SOAK_MIN, O_SOAK_WIN, O_SOAK_THREADS, O_TTL, O_WARMUP, O_JSON,
           O_QUIET, O_SHARED, O_PEERS };
    static const struct option longopts[] = {
        { "conninfo", required_argument, NULL, O_CONNINFO },
        { "threads", required_argument, NULL, O_THREADS },
        { "duration", required_argument, NULL, O_DURATION },
        { "rounds", required_argument, NULL, O_ROUNDS },
        { "workload", required_argument, NULL, O_WORKLOAD },
        { "contenders", required_argument, NULL, O_CONTENDERS },
        { "hold-us", required_argument, NULL, O_HOLD },
        { "batch-sizes", required_argument, NULL, O_BATCH },
        { "scale-fill", required_argument, NULL, O_FILL },
        { "soak-minutes", required_argument, NULL, O_SOAK_MIN },
        { "soak-window", required_argument, NULL, O_SOAK_WIN },
        { "soak-threads", required_argument, NULL, O_SOAK_THREADS },
        { "ttl-ms", required_argument, NULL, O_TTL },
        { "warmup", required_argument, NULL, O_WARMUP },
        { "json", no_argument, NULL, O_JSON },
        { "quiet", no_argument, NULL, O_QUIET },
        { "shared-baseline", no_argument, NULL, O_SHARED },
        { "peers", required_argument, NULL, O_PEERS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool any_workload = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_CONNINFO: opt.conninfo = optarg; break;
        case O_THREADS:
            if ((opt.nthreads = parse_list(optarg, opt.threads, MAX_LIST, 1, MAX_THREADS)) < 0)
                bad_option("--threads", optarg);
            break;
        case O_DURATION:
            if (!parse_seconds(optarg, &opt.duration))
                bad_option("--duration", optarg);
            break;
        case O_ROUNDS:
            if (parse_list(optarg, &opt.rounds, 1, 1, MAX_ROUNDS) != 1)
                bad_option("--rounds", optarg);
            break;
        case O_WORKLOAD:
            if (!parse_workloads(optarg))
                bad_option("--workload", optarg);
            any_workload = true;
            break;
        case O_CONTENDERS:
            if (parse_list(optarg, &opt.contenders, 1, 2, MAX_THREADS) != 1)
                bad_option("--contenders", optarg);
            break;
        case O_HOLD:
            if (parse_list(optarg, &opt.hold_us, 1, 0, 999999) != 1)
                bad_option("--hold-us", optarg);
            break;
        case O_BATCH:
            if ((opt.nbatch = parse_list(optarg, opt.batch, MAX_LIST, 1, 10000000)) < 0)
                bad_option("--batch-sizes", optarg);
            break;
        case O_FILL:
            if ((opt.nfill = parse_list(optarg, opt.fill, MAX_LIST, 0, 1000000000)) < 0)
                bad_option("--scale-fill", optarg);
            break;
        case O_SOAK_MIN:
            if (!parse_seconds(optarg, &opt.soak_minutes))
                bad_option("--soak-minutes", optarg);
            break;
        case O_SOAK_WIN:
            if (!parse_seconds(optarg, &opt.soak_window))
                bad_option("--soak-window", optarg);
            break;
        case O_SOAK_THREADS:
            if (parse_list(optarg, &opt.soak_threads, 1, 1, MAX_THREADS) != 1)
                bad_option("--soak-threads", optarg);
            break;
        case O_TTL:
            if (parse_list(optarg, &opt.ttl_ms, 1, 0, LONG_MAX) != 1)
                bad_option("--ttl-ms", optarg);
            break;
        case O_WARMUP:
            if (strcmp(optarg, "0") == 0)
                opt.warmup = 0;
            else if (!parse_seconds(optarg, &opt.warmup))
                bad_option("--warmup", optarg);
            break;
        case O_JSON: opt.json = true; break;
        case O_SHARED: opt.shared_baseline = true; break;
        case O_PEERS:
            if (!parse_peers(optarg))
                bad_option("--peers", optarg);
            break;
        case O_QUIET: opt.quiet = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dss_bench: unexpected argument '%s' (try --help)\n", argv[optind]);
        exit(2);
    }
    if (!any_workload)
        parse_workloads("all");
    /* Peers only where they have a workload: minimal in pair, refresh,
     * status; phobos and advisory in pair; bare in batch. */
    if (!opt.want[W_PAIR] && !opt.want[W_REFRESH] && !opt.want[W_STATUS])
        g_peers &= ~PEER_BIT(MINIMAL);
    if (!opt.want[W_PAIR])
        g_peers &= ~(PEER_BIT(PHOBOS) | PEER_BIT(ADVISORY));
    if (!opt.want[W_BATCH])
        g_peers &= ~PEER_BARE;
    if (opt.nthreads == 0) {
        opt.threads[0] = 1;
        opt.threads[1] = 8;
        opt.nthreads = 2;
    }
    if (opt.nbatch == 0) {
        opt.batch[0] = 1000;
        opt.batch[1] = 10000;
        opt.nbatch = 2;
    }
    if (opt.nfill == 0) {
        opt.fill[0] = 0;
        opt.fill[1] = 100000;
        opt.fill[2] = 1000000;
        opt.nfill = 3;
    }
    if (!opt.conninfo) {
        const char *env = getenv("PHOBOS_DSS_connect_string");
        if (env && *env)
            opt.conninfo = env;
    }
    if (!opt.conninfo) {
        fprintf(stderr, "dss_bench: no database: give --conninfo or set "
                        "PHOBOS_DSS_connect_string (try --help)\n");
        exit(2);
    }
}

/* The library's pool must not be the bottleneck: one connection per thread. */
static void size_pool(void)
{
    long need = 1;
    for (int i = 0; i < opt.nthreads; i++)
        if (opt.threads[i] > need)
            need = opt.threads[i];
    if ((opt.want[W_CONTENDED] || opt.want[W_CONTENDED_WAIT]) && opt.contenders > need)
        need = opt.contenders;
    if (opt.want[W_SOAK] && opt.soak_threads > need)
        need = opt.soak_threads;
    const char *set = getenv("PHOBOS_DSS_pool_size");
    if (set && *set) {
        if (atol(set) < need)
            fprintf(stderr, "dss_bench: warning: PHOBOS_DSS_pool_size=%s is below the %ld "
                            "threads: library calls will queue for connections\n", set, need);
        return;
    }
    char buf[24];
    snprintf(buf, sizeof buf, "%ld", need > 8 ? need : 8);
    setenv("PHOBOS_DSS_pool_size", buf, 1);
}

static void print_header(void)
{
    const char *pool = getenv("PHOBOS_DSS_pool_size");
    if (opt.json) {
        printf("{\n  \"program\":\"dss_bench\",\"libdss_version\":");
        json_str(dss_version());
        printf(",\"libpq_version\":%d,\"server_version\":", PQlibVersion());
        json_str(g_server_version);
        printf(",\n  \"settings\":{\"threads\":[");
        for (int i = 0; i < opt.nthreads; i++)
            printf("%s%ld", i ? "," : "", opt.threads[i]);
        printf("],\"duration_s\":%g,\"rounds\":%ld,\"contenders\":%ld,\"hold_us\":%ld,"
               "\"batch_sizes\":[", opt.duration, opt.rounds, opt.contenders, opt.hold_us);
        for (int i = 0; i < opt.nbatch; i++)
            printf("%s%ld", i ? "," : "", opt.batch[i]);
        printf("],\"scale_fill\":[");
        for (int i = 0; i < opt.nfill; i++)
            printf("%s%ld", i ? "," : "", opt.fill[i]);
        printf("],\"soak_minutes\":%g,\"soak_window_s\":%g,\"soak_threads\":%ld,\"ttl_ms\":%ld,"
               "\"warmup_s\":%g,\"shared_baseline\":%s,\"pool_size\":",
               opt.soak_minutes, opt.soak_window, opt.soak_threads, opt.ttl_ms, opt.warmup,
               opt.shared_baseline ? "true" : "false");
        json_str(pool ? pool : "");
        printf(",\"workloads\":[");
        for (int i = 0, n = 0; i < W_N; i++)
            if (opt.want[i]) {
                printf("%s", n++ ? "," : "");
                json_str(wl_name[i]);
            }
        printf("],\"peers\":[");
        for (int i = MINIMAL, n = 0; i < SIDE_N; i++)
            if (peer_on((enum side)i))
                printf("%s\"%s\"", n++ ? "," : "", side_name[i]);
        if (g_peers & PEER_BARE)
            printf("%s\"bare\"", g_peers & ~PEER_BARE ? "," : "");
        printf("]},\n  \"results\":[");
    } else {
        printf("dss_bench: libdss %s, libpq %d, PostgreSQL %s; %g s rounds, %ld per side, "
               "library pool_size %s\n", dss_version(), PQlibVersion(), g_server_version,
               opt.duration, opt.rounds, pool ? pool : "(default)");
        printf("ops/s; latency per call (µs, log-linear histogram, ±1.6 %%); CPU µs/op: the\n"
               "benchmark process's own CPU time (user + system, all threads) per operation\n");
        printf("peers:");
        for (int i = MINIMAL; i < SIDE_N; i++)
            if (peer_on((enum side)i))
                printf(" %s", side_name[i]);
        if (g_peers & PEER_BARE)
            printf(" bare");
        printf("%s\n", g_peers ? "" : " none");
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    size_pool();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    snprintf(g_prefix, sizeof g_prefix, "bench:%ld:", (long)getpid());
    snprintf(g_prefix_end, sizeof g_prefix_end, "bench:%ld;", (long)getpid());   /* ';' follows ':' */

    g_admin = connect_or_die("admin");
    PQsetNoticeReceiver(g_admin, admin_notice, NULL);
    const char *sv = PQparameterStatus(g_admin, "server_version");
    snprintf(g_server_version, sizeof g_server_version, "%s", sv ? sv : "?");

    int rc = dss_init_conninfo(&g_h, opt.conninfo);
    if (rc != 0) {
        fprintf(stderr, "dss_bench: dss_init_conninfo returned %d (%s): %s\n", rc,
                errno_name(rc), dss_last_error());
        PQfinish(g_admin);
        return 2;
    }

    if ((g_peers & (PEER_BIT(MINIMAL) | PEER_BIT(PHOBOS) | PEER_BARE)) && !create_peer_tables()) {
        drop_peer_tables();
        dss_fini(&g_h);
        PQfinish(g_admin);
        return 2;
    }

    print_header();

    if (opt.warmup > 0) {
        int n = 1;
        for (int i = 0; i < opt.nthreads; i++)
            if (opt.threads[i] > n)
                n = (int)opt.threads[i];
        enum side sides[SIDE_N];
        int nsides = sides_of(W_WARMUP, sides);
        progress("warm-up: pair, %d threads, %g s per side (%d sides)", n, opt.warmup, nsides);
        struct acc a;
        acc_init(&a);
        for (int i = 0; i < nsides && !stopped(); i++)
            run_round(W_WARMUP, sides[i], n, 0, opt.warmup, &a, NULL);
        acc_free(&a);
        check_no_leftovers("warm-up");
    }

    for (int i = 0; i < W_N && !stopped(); i++) {
        if (!opt.want[i])
            continue;
        switch ((enum wl)i) {
        case W_PAIR: case W_REFRESH: case W_STATUS: case W_KV_SET: case W_KV_GET:
        case W_SHARED: case W_SEM:
            wl_rates((enum wl)i);
            break;
        case W_CONTENDED: case W_CONTENDED_WAIT: wl_contended((enum wl)i); break;
        case W_BATCH: wl_batch(); break;
        case W_SCALE: wl_scale(); break;
        case W_SOAK: wl_soak(); break;
        default: break;
        }
    }

    /* Whatever happened: remove this run's rows (the filler included). */
    remove_filler();
    if (stopped()) {
        long long n = admin_delete(g_prefix, g_prefix_end);
        if (n > 0)
            progress("removed %lld lock rows left by the interrupted run", n);
        n = admin_kv_delete();
        if (n > 0)
            progress("removed %lld keys left by the interrupted run", n);
        n = admin_shared_delete();
        if (n > 0)
            progress("removed %lld shared holder and semaphore rows left by the interrupted run",
                     n);
    }
    drop_peer_tables();

    int status = atomic_load(&g_stop) == RUNNING ? 0 : 1;
    if (opt.json) {
        printf("\n  ],\n  \"maxrss_kib\":%ld,\"status\":\"%s\"\n}\n", maxrss_kib(),
               status == 0 ? "ok" : atomic_load(&g_stop) == STOP_SIGNAL ? "interrupted" : "failed");
    } else {
        printf("\npeak RSS %ld KiB%s\n", maxrss_kib(),
               status == 0 ? "" : atomic_load(&g_stop) == STOP_SIGNAL ? " (interrupted)"
                                                                       : " (FAILED)");
    }
    dss_fini(&g_h);
    for (int i = 0; i < MAX_THREADS; i++)
        if (g_base[i])
            PQfinish(g_base[i]);
    PQfinish(g_admin);
    return status;
}
