/* Server failures, on a cluster of this test's own (the shared one is left
 * alone):
 * - sessions killed by the server: the pool replaces them, calls succeed;
 * - a stop and start under one handle (and under a forked child using the
 *   inherited handle): every call fails fast with -ECOMM while the server is
 *   down, and the handle recovers by itself afterwards;
 * - a server that hangs (accepts, never answers) must not starve another
 *   handle of the same process whose server is healthy. */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

#define N_THREADS 4
#define DOWN_MAX_MS 5000.0
#define RECOVERY_MAX_MS 30000.0

static char dir[64];
static char conninfo[512];
static int cluster_started;

static int pgtmp(const char *cmd)
{
    const char *script = getenv("DSS_TEST_PGTMP");
    if (script == NULL || *script == '\0') {
        fprintf(stderr, "DSS_TEST_PGTMP is not set\n");
        return -1;
    }
    char out[1024];
    char *argv[] = {(char *)"sh", (char *)script, (char *)cmd, dir, NULL};
    double t0 = ct_now_ms();
    int rc = ct_run(argv, 120, out, sizeof out);
    fprintf(stderr, "pgtmp.sh %s %s: exit %d in %.0f ms%s%s\n", cmd, dir, rc, ct_now_ms() - t0,
            out[0] ? ": " : "", out);
    return rc;
}

static void destroy_cluster(void)
{
    if (cluster_started) {
        cluster_started = 0;
        pgtmp("destroy");
    }
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/dss-ctest-out-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    cluster_started = 1;
    atexit(destroy_cluster);
    if (pgtmp("start") != 0)
        return -1;
    snprintf(conninfo, sizeof conninfo, "host=%s port=5432 dbname=dss user=postgres", dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    destroy_cluster();
    return 0;
}

static struct dss_handle h;

struct burst {
    int k;
    int calls;
    pthread_barrier_t *start;
};

static void *burst(void *arg)
{
    struct burst *b = arg;
    char id[128], owner[32];
    snprintf(owner, sizeof owner, "burst%d", b->k);
    pthread_barrier_wait(b->start);
    for (int i = 0; i < b->calls; i++) {
        snprintf(id, sizeof id, "test_outage.%ld.burst%d.%d", (long)getpid(), b->k, i);
        CHECK_RC(dss_lock(&h, id, owner), 0);
        CHECK_RC(dss_lock_status(&h, id, NULL, NULL), 0);
        CHECK_RC(dss_lock_refresh(&h, id, owner), 0);
        CHECK_RC(dss_unlock(&h, id, owner), 0);
    }
    return NULL;
}

/* All threads at once, so that several pooled connections are in use. */
static void run_burst(int calls)
{
    pthread_t t[N_THREADS];
    struct burst b[N_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    for (int k = 0; k < N_THREADS; k++) {
        b[k] = (struct burst){k, calls, &start};
        assert_int_equal(pthread_create(&t[k], NULL, burst, &b[k]), 0);
    }
    for (int k = 0; k < N_THREADS; k++)
        pthread_join(t[k], NULL);
    pthread_barrier_destroy(&start);
}

enum call { LOCK, REFRESH, UNLOCK, FORCE_UNLOCK, STATUS, N_CALLS };
static const char *const call_names[] = {"lock", "refresh", "unlock", "force unlock", "status"};

static int do_call(enum call c, const char *held, const char *fresh)
{
    switch (c) {
    case LOCK: return dss_lock(&h, fresh, "o");
    case REFRESH: return dss_lock_refresh(&h, held, "keeper");
    case UNLOCK: return dss_unlock(&h, held, "keeper");
    case FORCE_UNLOCK: return dss_unlock(&h, held, NULL);
    case STATUS: {
        char sentinel;
        char *o = &sentinel;
        struct timeval tv = {99, 99};
        int rc = dss_lock_status(&h, held, &o, &tv);
        if (rc != 0 && (o != &sentinel || tv.tv_sec != 99 || tv.tv_usec != 99))
            return 99999; /* outputs written on failure */
        if (rc == 0 && o != &sentinel)
            free(o);
        return rc;
    }
    default: return 0;
    }
}

/* One call, for retry_ecomm(). */
struct op {
    char kind; /* 'l'ock, 'r'efresh, 'u'nlock, 's'tatus */
    const char *id, *owner;
    char **out_owner;
    struct timeval *out_ts;
};

static int run_op(const struct op *op)
{
    switch (op->kind) {
    case 'l': return dss_lock(&h, op->id, op->owner);
    case 'r': return dss_lock_refresh(&h, op->id, op->owner);
    case 'u': return dss_unlock(&h, op->id, op->owner);
    default: return dss_lock_status(&h, op->id, op->out_owner, op->out_ts);
    }
}

/* Runs the call until it returns something else than -ECOMM, for at most
 * RECOVERY_MAX_MS; gives its last result. */
static int retry_ecomm(const char *what, struct op op)
{
    double t0 = ct_now_ms();
    int rc, tries = 0;
    for (;;) {
        rc = run_op(&op);
        tries++;
        if (rc != -ECOMM || ct_now_ms() - t0 > RECOVERY_MAX_MS)
            break;
        struct timespec nap = {0, 20 * 1000 * 1000}; /* retry pacing */
        nanosleep(&nap, NULL);
    }
    fprintf(stderr, "up: %s = %d (%s) after %d tries, %.0f ms\n", what, rc, ct_errname(rc),
            tries, ct_now_ms() - t0);
    return rc;
}

struct down_call {
    enum call c;
    const char *held, *fresh;
    int rc;
    double ms;
};

static void *down_call_thread(void *arg)
{
    struct down_call *d = arg;
    double t0 = ct_now_ms();
    d->rc = do_call(d->c, d->held, d->fresh);
    d->ms = ct_now_ms() - t0;
    return NULL;
}

/* --- a forked child living through the outage ----------------------------
 * Forked before the stop, it uses the inherited handle (its own pool, made
 * in the child) and follows the parent's steps, told over a pipe. */

static int child_calls_ok(const char *tag)
{
    char id[160], owner[64];
    ct_id(id, sizeof id, tag);
    snprintf(owner, sizeof owner, "%s-%ld", tag, (long)getpid());
    int ok = CHECK_RC(dss_lock(&h, id, owner), 0);
    ok &= CHECK_RC(dss_lock_status(&h, id, NULL, NULL), 0);
    ok &= CHECK_RC(dss_lock_refresh(&h, id, owner), 0);
    ok &= CHECK_RC(dss_unlock(&h, id, owner), 0);
    return ok;
}

static void *child_thread(void *arg)
{
    (void)arg;
    int ok = 1;
    for (int i = 0; i < 10; i++)
        ok &= child_calls_ok("child-thread");
    return (void *)(intptr_t)ok;
}

static int child_threads_ok(void)
{
    pthread_t t[3];
    int ok = 1;
    for (int k = 0; k < 3; k++)
        ok &= CHECK(pthread_create(&t[k], NULL, child_thread, NULL) == 0);
    for (int k = 0; k < 3; k++) {
        void *r = NULL;
        pthread_join(t[k], &r);
        ok &= CHECK(r == (void *)1);
    }
    return ok;
}

static char child_wait(int fd)
{
    char c = 0;
    return read(fd, &c, 1) == 1 ? c : 0;
}

static int outage_child(int to_parent, int from_parent, const char *held)
{
    int ok = child_threads_ok(); /* several connections in the child's pool */
    ok &= CHECK(write(to_parent, "R", 1) == 1);
    if (!CHECK(child_wait(from_parent) == 'D'))
        return 1;
    /* Server down: -ECOMM, fast, from every call; no new handle. */
    char fresh[128];
    ct_id(fresh, sizeof fresh, "child-fresh");
    for (int round = 0; round < 2; round++) {
        double t0 = ct_now_ms();
        ok &= CHECK_RC(dss_lock(&h, fresh, "o"), -ECOMM);
        ok &= CHECK_RC(dss_lock_refresh(&h, held, "keeper"), -ECOMM);
        ok &= CHECK_RC(dss_unlock(&h, held, "keeper"), -ECOMM);
        ok &= CHECK_RC(dss_unlock(&h, held, NULL), -ECOMM);
        ok &= CHECK_RC(dss_lock_status(&h, held, NULL, NULL), -ECOMM);
        ok &= CHECK(ct_now_ms() - t0 < 5 * DOWN_MAX_MS);
    }
    struct dss_handle other = {0};
    double t0 = ct_now_ms();
    ok &= CHECK_RC(dss_init_conninfo(&other, conninfo), -ENOTCONN);
    ok &= CHECK(ct_now_ms() - t0 < DOWN_MAX_MS);
    ok &= CHECK(write(to_parent, "d", 1) == 1);
    if (!CHECK(child_wait(from_parent) == 'U'))
        return 1;
    /* Server up: recovers without re-init. */
    int rc;
    t0 = ct_now_ms();
    while ((rc = dss_lock_status(&h, held, NULL, NULL)) == -ECOMM &&
           ct_now_ms() - t0 < RECOVERY_MAX_MS) {
        struct timespec nap = {0, 20 * 1000 * 1000}; /* retry pacing */
        nanosleep(&nap, NULL);
    }
    ok &= CHECK_RC(rc, 0);
    ok &= CHECK_RC(dss_lock_status(&h, fresh, NULL, NULL), -ENOLCK);
    ok &= child_threads_ok(); /* every connection of the child's pool renewed */
    ok &= CHECK_RC(dss_init_conninfo(&other, conninfo), 0);
    dss_fini(&other);
    dss_fini(&h);
    return ok && atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static void test_stop_start(void **state)
{
    (void)state;
    setenv("PHOBOS_DSS_pool_size", "4", 1);
    ct_open_with(&h, conninfo);
    unsetenv("PHOBOS_DSS_pool_size");

    char held[128], fresh_down[128];
    ct_id(held, sizeof held, "held-before");
    ct_id(fresh_down, sizeof fresh_down, "taken-while-down");
    assert_rc(dss_lock(&h, held, "keeper"), 0);
    struct timeval held_ts = ct_assert_held(&h, held, "keeper");
    atomic_store(&ct_soft_failures, 0);
    run_burst(20);
    assert_int_equal(atomic_load(&ct_soft_failures), 0);
    int n = ct_sessions(conninfo, "libdss");
    fprintf(stderr, "pooled connections before the outage: %d\n", n);
    assert_true(n >= 2);

    int to_parent[2], to_child[2];
    assert_int_equal(pipe(to_parent), 0);
    assert_int_equal(pipe(to_child), 0);
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(to_parent[0]);
        close(to_child[1]);
        _exit(outage_child(to_parent[1], to_child[0], held));
    }
    close(to_parent[1]);
    close(to_child[0]);
    assert_int_equal(child_wait(to_parent[0]), 'R');

    /* --- server down ---------------------------------------------------- */
    assert_int_equal(pgtmp("stop"), 0);
    for (int round = 0; round < 3; round++) {
        for (enum call c = 0; c < N_CALLS; c++) {
            double t0 = ct_now_ms();
            int rc = do_call(c, held, fresh_down);
            double ms = ct_now_ms() - t0;
            fprintf(stderr, "down, round %d, %s: %d (%s) in %.0f ms: %s\n", round, call_names[c],
                    rc, ct_errname(rc), ms, dss_last_error());
            if (rc != -ECOMM)
                fail_msg("server down: %s = %d (%s), expected -ECOMM; %s", call_names[c], rc,
                         ct_errname(rc), dss_last_error());
            assert_true(strlen(dss_last_error()) > 0);
            if (ms >= DOWN_MAX_MS)
                fail_msg("server down: %s took %.0f ms", call_names[c], ms);
        }
    }
    /* Concurrent calls while down, one of each. */
    {
        pthread_t t[N_CALLS];
        struct down_call d[N_CALLS];
        for (enum call c = 0; c < N_CALLS; c++) {
            d[c] = (struct down_call){c, held, fresh_down, 12345, 0};
            assert_int_equal(pthread_create(&t[c], NULL, down_call_thread, &d[c]), 0);
        }
        for (enum call c = 0; c < N_CALLS; c++) {
            pthread_join(t[c], NULL);
            if (d[c].rc != -ECOMM || d[c].ms >= DOWN_MAX_MS)
                fail_msg("server down, concurrent %s: %d (%s) in %.0f ms", call_names[c],
                         d[c].rc, ct_errname(d[c].rc), d[c].ms);
        }
    }

    /* The child's turn, same expectations. */
    assert_int_equal(write(to_child[1], "D", 1), 1);
    assert_int_equal(child_wait(to_parent[0]), 'd');

    /* --- server up again ------------------------------------------------ */
    assert_int_equal(pgtmp("start"), 0);
    assert_int_equal(write(to_child[1], "U", 1), 1);
    /* Each call, retried while it says -ECOMM (for at most 30 s), then
     * gives the normal answer: the handle works again without re-init.
     * "held-before" survived, same owner; the lock attempted while the
     * server was down was not taken. */
    struct timeval ts = {0, 0};
    char *o = NULL;
    assert_rc(retry_ecomm("status", (struct op){'s', held, NULL, &o, &ts}), 0);
    assert_string_equal(o, "keeper");
    free(o);
    assert_true(ct_tv_us(&ts) == ct_tv_us(&held_ts));
    assert_rc(retry_ecomm("refresh", (struct op){'r', held, "keeper", NULL, NULL}), 0);
    ts = ct_assert_held(&h, held, "keeper");
    assert_true(ct_tv_us(&ts) > ct_tv_us(&held_ts));
    assert_rc(retry_ecomm("status of the lock taken while down",
                          (struct op){'s', fresh_down, NULL, NULL, NULL}),
              -ENOLCK);
    assert_rc(retry_ecomm("lock", (struct op){'l', fresh_down, "o", NULL, NULL}), 0);
    assert_rc(retry_ecomm("lock again", (struct op){'l', fresh_down, "o", NULL, NULL}), -EEXIST);
    assert_rc(retry_ecomm("unlock", (struct op){'u', fresh_down, "o", NULL, NULL}), 0);

    /* Every pooled connection works again: bursts from all threads, none
     * of which may see -ECOMM. */
    atomic_store(&ct_soft_failures, 0);
    for (int i = 0; i < 3; i++)
        run_burst(25);
    assert_int_equal(atomic_load(&ct_soft_failures), 0);
    n = ct_sessions(conninfo, "libdss");
    fprintf(stderr, "pooled connections after the outage: %d\n", n);
    assert_true(n >= 1 && n <= 4);

    int child_rc = ct_wait_child(child, 60);
    close(to_parent[0]);
    close(to_child[1]);
    if (child_rc != 0)
        fail_msg("the forked child failed through the outage (exit %d)", child_rc);

    ct_assert_held(&h, held, "keeper");
    assert_rc(dss_unlock(&h, held, "keeper"), 0);
    ct_assert_absent(&h, held);
    dss_fini(&h);
}

/* Sessions killed by the server (pg_terminate_backend, waiting for them to
 * be gone) while the server stays up: the pool notices and every later call
 * succeeds. */
static void test_killed_sessions(void **state)
{
    (void)state;
    setenv("PHOBOS_DSS_pool_size", "4", 1);
    ct_open_with(&h, conninfo);
    unsetenv("PHOBOS_DSS_pool_size");
    char held[128];
    ct_id(held, sizeof held, "held-killed");
    assert_rc(dss_lock(&h, held, "keeper"), 0);
    atomic_store(&ct_soft_failures, 0);
    run_burst(10);
    assert_int_equal(atomic_load(&ct_soft_failures), 0);
    for (int round = 0; round < 3; round++) {
        char out[64];
        assert_int_equal(ct_psql(conninfo,
                                 "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) "
                                 "FROM (SELECT pid FROM pg_stat_activity "
                                 "WHERE application_name = 'libdss' OFFSET 0) s",
                                 out, sizeof out),
                         0);
        fprintf(stderr, "killed %s sessions\n", out);
        assert_true(atoi(out) >= 1);
        ct_assert_held(&h, held, "keeper");
        run_burst(10);
        assert_int_equal(atomic_load(&ct_soft_failures), 0);
    }
    assert_rc(dss_unlock(&h, held, "keeper"), 0);
    dss_fini(&h);
}

/* --- a hung server must not starve the other handles ----------------------
 * The server of handle A stops answering (its socket accepts connections
 * but never replies: a network partition, a frozen host), so every new
 * connection of A hangs until connect_timeout. Handle B, on another healthy
 * server, must keep working meanwhile: a process's handles are independent. */

struct a_call {
    int rc;
    double ms;
};

static void *hung_call(void *arg)
{
    struct a_call *c = arg;
    char id[128];
    ct_id(id, sizeof id, "hung");
    double t0 = ct_now_ms();
    c->rc = dss_lock_status(&h, id, NULL, NULL);
    c->ms = ct_now_ms() - t0;
    return NULL;
}

static void test_hung_server_does_not_starve_other_handles(void **state)
{
    (void)state;
    setenv("PHOBOS_DSS_pool_size", "4", 1);
    ct_open_with(&h, conninfo); /* A: this test's cluster */
    unsetenv("PHOBOS_DSS_pool_size");
    atomic_store(&ct_soft_failures, 0);
    run_burst(10);
    assert_int_equal(atomic_load(&ct_soft_failures), 0);

    /* The server goes away; a socket that never answers takes its place. */
    assert_int_equal(pgtmp("stop"), 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.5432", dir);
    unlink(sa.sun_path);
    int lsock = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(lsock >= 0);
    assert_int_equal(bind(lsock, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lsock, 64), 0);
    assert_int_equal(fcntl(lsock, F_SETFL, O_NONBLOCK), 0);

    /* A is used from 4 threads: its dead connections are replaced, and the
     * new ones hang. Wait until both of its helper threads hang in connect. */
    pthread_t t[N_THREADS];
    struct a_call calls[N_THREADS];
    for (int k = 0; k < N_THREADS; k++) {
        calls[k] = (struct a_call){12345, 0};
        assert_int_equal(pthread_create(&t[k], NULL, hung_call, &calls[k]), 0);
    }
    int accepted[64], n_accepted = 0;
    double deadline = ct_now_ms() + 20000;
    while (n_accepted < 2 && ct_now_ms() < deadline) {
        struct pollfd p = {lsock, POLLIN, 0};
        if (poll(&p, 1, 100) > 0) {
            int c = accept(lsock, NULL, NULL);
            if (c >= 0 && n_accepted < 64)
                accepted[n_accepted++] = c;
        }
    }
    fprintf(stderr, "hung server: %d connection attempts hanging\n", n_accepted);

    /* B, on the healthy shared cluster, fresh: its calls must work, fast. */
    struct dss_handle b;
    ct_open(&b);
    char id[128];
    ct_id(id, sizeof id, "healthy");
    double t0 = ct_now_ms();
    int rc_lock = dss_lock(&b, id, "o");
    double ms_lock = ct_now_ms() - t0;
    char err[512];
    snprintf(err, sizeof err, "%s", dss_last_error());
    t0 = ct_now_ms();
    int rc_unlock = dss_unlock(&b, id, "o");
    double ms_unlock = ct_now_ms() - t0;
    fprintf(stderr, "healthy handle B while A's server hangs: lock %d (%s) in %.0f ms%s%s, "
                    "unlock %d (%s) in %.0f ms\n",
            rc_lock, ct_errname(rc_lock), ms_lock, rc_lock ? ": " : "", rc_lock ? err : "",
            rc_unlock, ct_errname(rc_unlock), ms_unlock);

    /* A's own calls fail (-ECOMM: the outcome of a connection that never
     * completes); then clean up whatever the outcome. */
    for (int k = 0; k < N_THREADS; k++)
        pthread_join(t[k], NULL);
    for (int k = 0; k < N_THREADS; k++)
        fprintf(stderr, "A call %d while hung: %d (%s) in %.0f ms\n", k, calls[k].rc,
                ct_errname(calls[k].rc), calls[k].ms);
    for (int i = 0; i < n_accepted; i++)
        close(accepted[i]);
    close(lsock);
    unlink(sa.sun_path);
    dss_fini(&b);
    dss_fini(&h);
    assert_int_equal(pgtmp("start"), 0);

    assert_true(n_accepted >= 1); /* A's helper threads are stuck in connect */
    for (int k = 0; k < N_THREADS; k++)
        if (calls[k].rc != -ECOMM && calls[k].rc != -ETIMEDOUT)
            fail_msg("A's call while its server hangs: %d (%s)", calls[k].rc,
                     ct_errname(calls[k].rc));
    if (rc_lock != 0 || rc_unlock != 0 || ms_lock > 2000 || ms_unlock > 2000)
        fail_msg("handle B (healthy server) failed while handle A's server hangs: "
                 "dss_lock = %d (%s) in %.0f ms (%s), dss_unlock = %d (%s) in %.0f ms",
                 rc_lock, ct_errname(rc_lock), ms_lock, err, rc_unlock, ct_errname(rc_unlock),
                 ms_unlock);
}

int main(void)
{
    if (ct_setup("test_outage", 0) != 0)
        return 1;
    if (getenv("DSS_TEST_PGTMP") == NULL) {
        fprintf(stderr, "FAIL: DSS_TEST_PGTMP is not set (run this test through ctest)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_killed_sessions),
        cmocka_unit_test(test_stop_start),
        cmocka_unit_test(test_hung_server_does_not_starve_other_handles),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
