/* One handle shared by many threads; a counter protected only by the dss
 * lock; -ETIMEDOUT when the pool has no free connection. */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#define N_THREADS 8
#define N_CYCLES 300
#define N_INCREMENTS 100

static struct dss_handle h;
CT_GROUP_WITH_HANDLE(h)

struct worker {
    int k;
    pthread_barrier_t *start;
    const char *contended;
    volatile long *counter; /* protected by the dss lock only */
    long retries;
};

static void *cycles(void *arg)
{
    struct worker *w = arg;
    char owner[32];
    snprintf(owner, sizeof owner, "thread-%d", w->k);
    pthread_barrier_wait(w->start);
    for (int i = 0; i < N_CYCLES; i++) {
        char id[128];
        snprintf(id, sizeof id, "test_threads.%ld.t%d.%d", (long)getpid(), w->k, i % 7);
        CHECK_RC(dss_lock(&h, id, owner), 0);
        CHECK_RC(dss_lock_refresh(&h, id, owner), 0);
        char *o = NULL;
        struct timeval tv;
        if (CHECK_RC(dss_lock_status(&h, id, &o, &tv), 0)) {
            CHECK(o != NULL && strcmp(o, owner) == 0);
            free(o);
        }
        CHECK_RC(dss_unlock(&h, id, owner), 0);
        if (atomic_load(&ct_soft_failures) > 20)
            break;
    }
    return NULL;
}

static void *increments(void *arg)
{
    struct worker *w = arg;
    char owner[32];
    snprintf(owner, sizeof owner, "inc-%d", w->k);
    pthread_barrier_wait(w->start);
    for (int i = 0; i < N_INCREMENTS; i++) {
        int rc;
        while ((rc = dss_lock(&h, w->contended, owner)) == -EEXIST) {
            w->retries++;
            sched_yield();
        }
        if (!CHECK_RC(rc, 0))
            break;
        long v = *w->counter;
        sched_yield(); /* widen the window a lost update would need */
        *w->counter = v + 1;
        if (!CHECK_RC(dss_unlock(&h, w->contended, owner), 0))
            break;
    }
    return NULL;
}

static void test_cycles_on_own_ids(void **state)
{
    (void)state;
    pthread_t t[N_THREADS];
    struct worker w[N_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    atomic_store(&ct_soft_failures, 0);
    for (int k = 0; k < N_THREADS; k++) {
        w[k] = (struct worker){.k = k, .start = &start};
        assert_int_equal(pthread_create(&t[k], NULL, cycles, &w[k]), 0);
    }
    for (int k = 0; k < N_THREADS; k++)
        pthread_join(t[k], NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(atomic_load(&ct_soft_failures), 0);
}

static void test_contended_counter(void **state)
{
    (void)state;
    pthread_t t[N_THREADS];
    struct worker w[N_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    char id[128];
    ct_id(id, sizeof id, "contended");
    volatile long counter = 0;
    atomic_store(&ct_soft_failures, 0);
    for (int k = 0; k < N_THREADS; k++) {
        w[k] = (struct worker){.k = k, .start = &start, .contended = id, .counter = &counter};
        assert_int_equal(pthread_create(&t[k], NULL, increments, &w[k]), 0);
    }
    long retries = 0;
    for (int k = 0; k < N_THREADS; k++) {
        pthread_join(t[k], NULL);
        retries += w[k].retries;
    }
    pthread_barrier_destroy(&start);
    fprintf(stderr, "contended counter: %ld retries on -EEXIST\n", retries);
    assert_int_equal(atomic_load(&ct_soft_failures), 0);
    assert_int_equal(counter, N_THREADS * N_INCREMENTS);
    ct_assert_absent(&h, id);
}

/* --- racing release and refresh by the same owner ------------------------
 * Two threads release (or one refreshes while the other releases) the same
 * lock at the same moment, N_RACE_ROUNDS times: exactly one release wins,
 * the other call says -ENOLCK; never -EACCES (there is only one owner). */
#define N_RACE_ROUNDS 150

struct racer {
    pthread_barrier_t *go, *done;
    const char *id;
    char what; /* 'u'nlock, 'f'orce unlock, 'r'efresh */
    int rc[N_RACE_ROUNDS];
    int *mode; /* per round: which pair of calls races */
};

static void *racer(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < N_RACE_ROUNDS; i++) {
        pthread_barrier_wait(r->go);
        int mode = r->mode[i];
        char what = r->what == 'u' ? "ufr"[mode] : 'u';
        switch (what) {
        case 'u': r->rc[i] = dss_unlock(&h, r->id, "owner"); break;
        case 'f': r->rc[i] = dss_unlock(&h, r->id, NULL); break;
        default: r->rc[i] = dss_lock_refresh(&h, r->id, "owner"); break;
        }
        pthread_barrier_wait(r->done);
    }
    return NULL;
}

static void test_racing_release(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "release-race");
    pthread_barrier_t go, done;
    pthread_barrier_init(&go, NULL, 3);
    pthread_barrier_init(&done, NULL, 3);
    int mode[N_RACE_ROUNDS];
    for (int i = 0; i < N_RACE_ROUNDS; i++)
        mode[i] = i % 3; /* 0: unlock vs unlock, 1: force vs unlock, 2: refresh vs unlock */
    struct racer a = {&go, &done, id, 'u', {0}, mode};
    struct racer b = {&go, &done, id, 'x', {0}, mode};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, racer, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, racer, &b), 0);
    int refresh_won = 0, lock_failures = 0, bad_rounds = 0;
    for (int i = 0; i < N_RACE_ROUNDS; i++) {
        int rc = dss_lock(&h, id, "owner");
        pthread_barrier_wait(&go);
        pthread_barrier_wait(&done);
        if (rc != 0) {
            fprintf(stderr, "round %d: dss_lock = %d (%s)\n", i, rc, ct_errname(rc));
            lock_failures++;
            continue;
        }
        int x = a.rc[i], y = b.rc[i];
        if (mode[i] == 2) {
            /* b unlocks; a refreshes: 0 if it came first, else -ENOLCK. */
            if (y != 0 || (x != 0 && x != -ENOLCK)) {
                fprintf(stderr, "round %d: refresh = %d (%s), unlock = %d (%s)\n", i, x,
                        ct_errname(x), y, ct_errname(y));
                bad_rounds++;
            }
            refresh_won += x == 0;
        } else if (!((x == 0 && y == -ENOLCK) || (x == -ENOLCK && y == 0))) {
            fprintf(stderr, "round %d (%s): %d (%s) and %d (%s)\n", i,
                    mode[i] == 0 ? "unlock vs unlock" : "force unlock vs unlock", x,
                    ct_errname(x), y, ct_errname(y));
            bad_rounds++;
        }
        if (bad_rounds > 0)
            dss_unlock(&h, id, NULL); /* leave a clean state for the next round */
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);
    assert_int_equal(lock_failures, 0);
    assert_int_equal(bad_rounds, 0);
    fprintf(stderr, "release race: refresh came first in %d of %d rounds\n", refresh_won,
            N_RACE_ROUNDS / 3);
    ct_assert_absent(&h, id);
}

/* --- pool timeout --------------------------------------------------------
 * A psql session inserts the id in an open transaction; a dss_lock() of the
 * same id then waits in the server (ON CONFLICT waits for the other
 * inserter), holding the only connection of a pool_size=1 handle. Another
 * call on that handle must give -ETIMEDOUT after pool_timeout_ms. Every step
 * is observed in pg_stat_activity (no sleep stands in for synchronisation). */

struct blocker {
    pid_t pid;
    int in; /* psql's stdin */
};

static void blocker_start(struct blocker *b, const char *conninfo)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    b->pid = fork();
    assert_true(b->pid >= 0);
    if (b->pid == 0) {
        dup2(fds[0], 0);
        close(fds[0]);
        close(fds[1]);
        execlp(PSQL_PROGRAM, PSQL_PROGRAM, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo,
               (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    b->in = fds[1];
}

static void blocker_send(struct blocker *b, const char *sql)
{
    size_t n = strlen(sql);
    assert_int_equal(write(b->in, sql, n), (ssize_t)n);
}

static int blocker_finish(struct blocker *b)
{
    close(b->in);
    return ct_wait_child(b->pid, 30);
}

/* Polls a count(*) query until it returns `want`, for at most 20 s. */
static void wait_for_count(const char *sql, const char *want)
{
    double deadline = ct_now_ms() + 20000;
    char out[64] = "";
    while (ct_now_ms() < deadline) {
        assert_int_equal(ct_psql(ct_conninfo(), sql, out, sizeof out), 0);
        if (strcmp(out, want) == 0)
            return;
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    fail_msg("'%s' still gives '%s' after 20 s, expected %s", sql, out, want);
}

struct waiter {
    struct dss_handle *h;
    const char *id;
    int rc;
};

static void *blocked_lock(void *arg)
{
    struct waiter *w = arg;
    w->rc = dss_lock(w->h, w->id, "waiter");
    return NULL;
}

static void test_pool_timeout(void **state)
{
    (void)state;
    long pid = (long)getpid();
    char app_pool[64], app_blocker[64], conninfo[1024], bconninfo[1024], sql[1024];
    snprintf(app_pool, sizeof app_pool, "ct_pool_%ld", pid);
    snprintf(app_blocker, sizeof app_blocker, "ct_blocker_%ld", pid);
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", ct_conninfo(), app_pool);
    snprintf(bconninfo, sizeof bconninfo, "%s application_name=%s", ct_conninfo(), app_blocker);

    setenv("PHOBOS_DSS_pool_size", "1", 1);
    setenv("PHOBOS_DSS_pool_timeout_ms", "200", 1);
    struct dss_handle hp;
    ct_open_with(&hp, conninfo);
    unsetenv("PHOBOS_DSS_pool_size");
    unsetenv("PHOBOS_DSS_pool_timeout_ms");
    char other[128];
    ct_id(other, sizeof other, "other");
    assert_rc(dss_lock_status(&hp, other, NULL, NULL), -ENOLCK); /* pool warm */

    for (int round = 0; round < 2; round++) {
        char id[128];
        ct_id(id, sizeof id, round == 0 ? "blocked-rollback" : "blocked-commit");
        struct blocker b;
        blocker_start(&b, bconninfo);
        snprintf(sql, sizeof sql,
                 "BEGIN;\nINSERT INTO dss.locks (id, owner) VALUES ('%s', 'blocker');\n", id);
        blocker_send(&b, sql);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' "
                 "AND state = 'idle in transaction' AND query LIKE 'INSERT%%'",
                 app_blocker);
        wait_for_count(sql, "1");

        struct waiter w = {&hp, id, 12345};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, blocked_lock, &w), 0);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' "
                 "AND wait_event_type = 'Lock'",
                 app_pool);
        wait_for_count(sql, "1");

        /* The only connection is busy: the other calls time out. */
        if (round == 0) {
            double t0 = ct_now_ms();
            assert_rc(dss_lock_status(&hp, other, NULL, NULL), -ETIMEDOUT);
            double ms = ct_now_ms() - t0;
            assert_true(ct_contains(dss_last_error(), "200 ms"));
            if (ms < 190 || ms > 3000)
                fail_msg("-ETIMEDOUT after %.0f ms, pool_timeout_ms is 200", ms);
            t0 = ct_now_ms();
            assert_rc(dss_lock(&hp, other, "o"), -ETIMEDOUT);
            assert_rc(dss_lock_refresh(&hp, other, "o"), -ETIMEDOUT);
            assert_rc(dss_unlock(&hp, other, "o"), -ETIMEDOUT);
            assert_rc(dss_unlock(&hp, other, NULL), -ETIMEDOUT);
            ms = ct_now_ms() - t0;
            assert_true(ms >= 4 * 190 && ms < 4 * 3000);
            /* Nothing was done: the lock call never ran. */
            struct dss_handle h2;
            ct_open(&h2);
            ct_assert_absent(&h2, other);
            dss_fini(&h2);
        }
        /* The waiter is still waiting. */
        wait_for_count(sql, "1");

        /* Rollback: the waiter gets the lock. Commit: -EEXIST. */
        blocker_send(&b, round == 0 ? "ROLLBACK;\n" : "COMMIT;\n");
        assert_int_equal(blocker_finish(&b), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        if (round == 0) {
            assert_rc(w.rc, 0);
            ct_assert_held(&hp, id, "waiter");
            assert_rc(dss_unlock(&hp, id, "waiter"), 0);
        } else {
            assert_rc(w.rc, -EEXIST);
            ct_assert_held(&hp, id, "blocker");
            assert_rc(dss_unlock(&hp, id, "blocker"), 0);
        }
    }
    /* The pool works normally again. */
    assert_rc(dss_lock(&hp, other, "o"), 0);
    assert_rc(dss_unlock(&hp, other, "o"), 0);
    dss_fini(&hp);
}

int main(void)
{
    if (ct_setup("test_threads", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cycles_on_own_ids),
        cmocka_unit_test(test_contended_counter),
        cmocka_unit_test(test_racing_release),
        cmocka_unit_test(test_pool_timeout),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
