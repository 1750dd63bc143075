/* Shared helpers of the libdss C integration tests (see common.h). */
#include "common.h"

#include <sys/mman.h>

#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <errno.h>
#include <time.h>

atomic_int ct_soft_failures;

static const char *test_name = "ctest";
static atomic_uint id_counter;

const char *ct_errname(int rc)
{
    switch (rc < 0 ? -rc : rc) {
    case 0: return "OK";
    case EINVAL: return "EINVAL";
    case EALREADY: return "EALREADY";
    case ENOTCONN: return "ENOTCONN";
    case EUSERS: return "EUSERS";
    case EPROTO: return "EPROTO";
    case ENOMEM: return "ENOMEM";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    case EEXIST: return "EEXIST";
    case ENOLCK: return "ENOLCK";
    case EACCES: return "EACCES";
    case ECOMM: return "ECOMM";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOSPC: return "ENOSPC";
    case EIO: return "EIO";
    case ETIME: return "ETIME";
    case ESTALE: return "ESTALE";
    case ERANGE: return "ERANGE";
    case ENOENT: return "ENOENT";
    case EAGAIN: return "EAGAIN";
    case EFBIG: return "EFBIG";
    default: return "?";
    }
}

const char *ct_conninfo(void)
{
    const char *c = getenv("DSS_TEST_CONNINFO");
    return c ? c : "";
}

int ct_setup(const char *name, int need_db)
{
    test_name = name;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!need_db)
        return 0;
    const char *c = getenv("DSS_TEST_CONNINFO");
    if (c == NULL || *c == '\0') {
        fprintf(stderr, "FAIL: DSS_TEST_CONNINFO is not set (run this test through ctest: "
                        "it needs the 'db' fixture)\n");
        return 1;
    }
    struct dss_handle h = {0};
    int rc = dss_init_conninfo(&h, c);
    if (rc != 0) {
        fprintf(stderr, "FAIL: cannot open the test database '%s': %d (%s): %s\n", c, rc,
                ct_errname(rc), dss_last_error());
        return 1;
    }
    dss_fini(&h);
    return 0;
}

void ct_id(char *buf, size_t size, const char *tag)
{
    unsigned n = atomic_fetch_add(&id_counter, 1);
    int len = snprintf(buf, size, "%s.%ld.%u.%s", test_name, (long)getpid(), n, tag);
    if (len < 0 || (size_t)len >= size) {
        fprintf(stderr, "ct_id: buffer too small for tag '%s'\n", tag);
        abort();
    }
}

double ct_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int64_t ct_tv_us(const struct timeval *tv)
{
    return (int64_t)tv->tv_sec * 1000000 + (int64_t)tv->tv_usec;
}

int64_t ct_wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return ct_tv_us(&tv);
}

int ct_wait_child(pid_t pid, double timeout_s)
{
    double deadline = ct_now_ms() + timeout_s * 1e3;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (ct_now_ms() > deadline) {
            fprintf(stderr, "child %ld still running after %.0f s: killed\n", (long)pid,
                    timeout_s);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec nap = {0, 2 * 1000 * 1000}; /* polling a deadline, not syncing */
        nanosleep(&nap, NULL);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "child %ld killed by signal %d\n", (long)pid, WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return -1;
}

int ct_run(char *const argv[], double timeout_s, char *out, size_t outsize)
{
    int fds[2] = {-1, -1};
    if (out != NULL) {
        if (outsize == 0 || pipe(fds) != 0)
            return -1;
        out[0] = '\0';
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (out != NULL) {
            dup2(fds[1], 1);
            close(fds[0]);
            close(fds[1]);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (out != NULL) {
        close(fds[1]);
        size_t used = 0;
        double deadline = ct_now_ms() + timeout_s * 1e3;
        for (;;) {
            struct pollfd p = {fds[0], POLLIN, 0};
            int wait_ms = (int)(deadline - ct_now_ms());
            if (wait_ms <= 0)
                break;
            int n = poll(&p, 1, wait_ms);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            char tmp[4096];
            ssize_t got = read(fds[0], tmp, sizeof tmp);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            size_t take = (size_t)got;
            if (take > outsize - 1 - used)
                take = outsize - 1 - used;
            memcpy(out + used, tmp, take);
            used += take;
        }
        out[used] = '\0';
        while (used > 0 && out[used - 1] == '\n')
            out[--used] = '\0';
        close(fds[0]);
    }
    return ct_wait_child(pid, timeout_s);
}

int ct_psql(const char *conninfo, const char *sql, char *out, size_t outsize)
{
    char *argv[] = {(char *)PSQL_PROGRAM, (char *)"-X", (char *)"-q", (char *)"-t",
                    (char *)"-A", (char *)"-v", (char *)"ON_ERROR_STOP=1",
                    (char *)"-d", (char *)conninfo, (char *)"-c", (char *)sql, NULL};
    int rc = ct_run(argv, 60, out, outsize);
    if (rc != 0)
        fprintf(stderr, "psql failed (%d) on: %s\n", rc, sql);
    return rc;
}

int ct_sessions(const char *conninfo, const char *app)
{
    char sql[256], out[32];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", app);
    if (ct_psql(conninfo, sql, out, sizeof out) != 0)
        return -1;
    return atoi(out);
}

void ct_open_with(struct dss_handle *h, const char *conninfo)
{
    memset(h, 0, sizeof *h);
    int rc = dss_init_conninfo(h, conninfo);
    if (rc != 0)
        fail_msg("dss_init_conninfo(%s) = %d (%s): %s", conninfo, rc, ct_errname(rc),
                 dss_last_error());
    assert_non_null(h->dh_conn);
}

void ct_open(struct dss_handle *h)
{
    ct_open_with(h, ct_conninfo());
}

int ct_check_rc(const char *file, int line, const char *what, int rc, int expected)
{
    if (rc == expected)
        return 1;
    fprintf(stderr, "%s:%d: [pid %ld] %s = %d (%s), expected %d (%s); dss_last_error: %s\n",
            file, line, (long)getpid(), what, rc, ct_errname(rc), expected,
            ct_errname(expected), dss_last_error());
    atomic_fetch_add(&ct_soft_failures, 1);
    return 0;
}

struct timeval ct_assert_held(struct dss_handle *h, const char *id, const char *owner)
{
    char *o = NULL;
    struct timeval tv = {-1, -1};
    assert_rc(dss_lock_status(h, id, &o, &tv), 0);
    assert_non_null(o);
    if (strcmp(o, owner) != 0) {
        char got[600];
        snprintf(got, sizeof got, "%s", o);
        free(o);
        fail_msg("lock '%s' is held by '%s', expected '%s'", id, got, owner);
    }
    free(o);
    assert_true(tv.tv_usec >= 0 && tv.tv_usec < 1000000);
    return tv;
}

void ct_assert_absent(struct dss_handle *h, const char *id)
{
    assert_rc(dss_lock_status(h, id, NULL, NULL), -ENOLCK);
}

int ct_contains(const char *s, const char *needle)
{
    return s != NULL && strstr(s, needle) != NULL;
}

/* ---- helpers for leases, waiting and batches ---- */

int ct_psql_ll(const char *conninfo, const char *sql, long long *value)
{
    char out[128];
    if (ct_psql(conninfo, sql, out, sizeof out) != 0)
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(out, &end, 10);
    if (errno != 0 || end == out || *end != '\0') {
        fprintf(stderr, "ct_psql_ll: not an integer: '%s' (from: %s)\n", out, sql);
        return -1;
    }
    *value = v;
    return 0;
}

void ct_sql_literal(char *buf, size_t size, const char *s)
{
    size_t used = 0;
    if (size < 3)
        abort();
    buf[used++] = '\'';
    for (; *s != '\0'; s++) {
        size_t need = *s == '\'' ? 2 : 1;
        if (used + need + 2 > size) {
            fprintf(stderr, "ct_sql_literal: buffer too small\n");
            abort();
        }
        buf[used++] = *s;
        if (*s == '\'')
            buf[used++] = '\'';
    }
    buf[used++] = '\'';
    buf[used] = '\0';
}

int ct_expire(const char *id)
{
    char lit[2 * DSS_MAX_LOCK_ID_LEN + 8], sql[2 * DSS_MAX_LOCK_ID_LEN + 256];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql,
             "WITH u AS (UPDATE dss.locks SET expires_at = now() - interval '1 millisecond' "
             "WHERE id = %s RETURNING 1) SELECT count(*) FROM u",
             lit);
    long long n;
    if (ct_psql_ll(ct_conninfo(), sql, &n) != 0)
        return -1;
    return (int)n;
}

void ct_nap_ms(double ms)
{
    time_t s = (time_t)(ms / 1e3);
    struct timespec ts = {s, (long)((ms - (double)s * 1e3) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        continue;
}

int ct_await_waiters(const char *id, long long n, double timeout_s)
{
    char lit[512], sql[700];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM dss.lock_waiters WHERE id = %s", lit);
    long long last = -1;
    if (ct_poll_at_least(ct_conninfo(), sql, n, timeout_s, &last) != 0) {
        fprintf(stderr, "[pid %ld] %lld requests queued on %s after %.0f s, expected %lld\n",
                (long)getpid(), last, id, timeout_s, n);
        return -1;
    }
    return 0;
}

int ct_poll_at_least(const char *conninfo, const char *sql, long long min, double timeout_s,
                     long long *last)
{
    double deadline = ct_now_ms() + timeout_s * 1e3;
    for (;;) {
        long long v;
        if (ct_psql_ll(conninfo, sql, &v) != 0)
            return -1;
        if (last != NULL)
            *last = v;
        if (v >= min)
            return 0;
        if (ct_now_ms() > deadline)
            return -1;
        struct timespec nap = {0, 2 * 1000 * 1000}; /* polling a state, with a deadline */
        nanosleep(&nap, NULL);
    }
}

long long ct_waiters(const char *id)
{
    char lit[2 * DSS_MAX_LOCK_ID_LEN + 8], sql[2 * DSS_MAX_LOCK_ID_LEN + 128];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM dss.lock_waiters WHERE id = %s", lit);
    long long n;
    if (ct_psql_ll(ct_conninfo(), sql, &n) != 0)
        return -1;
    return n;
}

void *ct_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 0, size);
    return p;
}

void ct_shared_barrier(pthread_barrier_t *b, unsigned count)
{
    pthread_barrierattr_t attr;
    assert_int_equal(pthread_barrierattr_init(&attr), 0);
    assert_int_equal(pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED), 0);
    assert_int_equal(pthread_barrier_init(b, &attr, count), 0);
    pthread_barrierattr_destroy(&attr);
}

void ct_run_two_children(int (*child)(void *arg, int k), void *arg, double timeout_s)
{
    pid_t pids[2];
    for (int k = 0; k < 2; k++) {
        fflush(NULL);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0)
            _exit(child(arg, k));
    }
    int rc0 = ct_wait_child(pids[0], timeout_s);
    if (rc0 != 0)
        kill(pids[1], SIGKILL); /* the other one may wait at a barrier */
    int rc1 = ct_wait_child(pids[1], timeout_s);
    assert_int_equal(rc0, 0);
    assert_int_equal(rc1, 0);
}

long long ct_lease_runs_from_refresh(const char *id)
{
    char lit[256], sql[512];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM dss.locks WHERE id = %s "
             "AND expires_at = ts + ttl_ms * interval '1 millisecond' AND ts > locked_at",
             lit);
    long long n = -1;
    return ct_psql_ll(ct_conninfo(), sql, &n) == 0 ? n : -1;
}

/* ---- private databases and snapshots ---- */

void ct_conninfo_for_db(char *buf, size_t size, const char *dbname)
{
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", ct_conninfo());
    size_t used = 0;
    buf[0] = '\0';
    /* Every keyword but dbname, then the new dbname. */
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok != NULL;
         tok = strtok_r(NULL, " ", &save)) {
        if (strncmp(tok, "dbname=", 7) == 0)
            continue;
        int n = snprintf(buf + used, size - used, "%s ", tok);
        if (n < 0 || (size_t)n >= size - used)
            abort();
        used += (size_t)n;
    }
    int n = snprintf(buf + used, size - used, "dbname=%s", dbname);
    if (n < 0 || (size_t)n >= size - used)
        abort();
}

int ct_create_db(const char *dbname, const char *sql_dir, char *conninfo, size_t size)
{
    char sql[256];
    ct_conninfo_for_db(conninfo, size, dbname);
    if (ct_drop_db(dbname) != 0)
        return -1;
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
    if (ct_psql(ct_conninfo(), sql, NULL, 0) != 0)
        return -1;
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s/[0-9]*.sql", sql_dir);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        fprintf(stderr, "ct_create_db: no migrations %s\n", pattern);
        return -1;
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char *argv[] = {(char *)PSQL_PROGRAM, (char *)"-X", (char *)"-q", (char *)"-v",
                        (char *)"ON_ERROR_STOP=1", (char *)"-d", conninfo, (char *)"-f",
                        g.gl_pathv[i], NULL};
        if (ct_run(argv, 60, NULL, 0) != 0) {
            fprintf(stderr, "ct_create_db: cannot apply %s to %s\n", g.gl_pathv[i], dbname);
            globfree(&g);
            return -1;
        }
    }
    globfree(&g);
    return 0;
}

int ct_drop_db(const char *dbname)
{
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    return ct_psql(ct_conninfo(), sql, NULL, 0) == 0 ? 0 : -1;
}

int ct_db_allow_connections(const char *dbname, int allow)
{
    char sql[512];
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS %s", dbname,
             allow ? "true" : "false");
    if (ct_psql(ct_conninfo(), sql, NULL, 0) != 0)
        return -1;
    if (allow)
        return 0;
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
             "WHERE datname = '%s' AND pid <> pg_backend_pid()",
             dbname);
    if (ct_psql(ct_conninfo(), sql, NULL, 0) != 0)
        return -1;
    snprintf(sql, sizeof sql,
             "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM pg_stat_activity "
             "WHERE datname = '%s'",
             dbname);
    return ct_poll_at_least(ct_conninfo(), sql, 1, 30, NULL);
}

int ct_db_snapshot(const char *conninfo, char *out, size_t size)
{
    /* One query: for each table, its row count and the md5 of its rows in
     * text form, sorted; for each sequence, its state (query_to_xml runs
     * the per-relation query built with format()). */
    static const char sql[] =
        "SELECT string_agg(c.relname || '=' || (xpath('/row/v/text()', query_to_xml("
        "  CASE WHEN c.relkind = 'S' THEN"
        "    format('SELECT last_value || '','' || is_called AS v FROM %I.%I',"
        "           n.nspname, c.relname)"
        "  ELSE"
        "    format('SELECT count(*) || '':'' || coalesce(md5(string_agg(t::text, "
        "            chr(10) ORDER BY t::text)), ''-'') AS v FROM %I.%I t',"
        "           n.nspname, c.relname)"
        "  END, false, true, '')))[1]::text, ' ' ORDER BY c.relname) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'dss' AND c.relkind IN ('r', 'p', 'S')";
    return ct_psql(conninfo, sql, out, size);
}
