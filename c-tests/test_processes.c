/* Mutual exclusion across processes: a counter in a file protected only by
 * a dss lock, and two processes racing for fresh ids. */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define N_PROCS 6
#define N_ITERS 200
#define N_RACES 200

/* Takes the lock, spinning on -EEXIST. Returns 0 or the unexpected rc. */
static int spin_lock(struct dss_handle *h, const char *id, const char *owner, long *spins)
{
    for (;;) {
        int rc = dss_lock(h, id, owner);
        if (rc != -EEXIST)
            return rc;
        (*spins)++;
        sched_yield();
    }
}

static int read_counter(int fd, long *v)
{
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    *v = strtol(buf, NULL, 10);
    return 0;
}

static int write_counter(int fd, long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%020ld\n", v);
    return pwrite(fd, buf, (size_t)n, 0) == n ? 0 : -1;
}

static int counter_child(const char *id, const char *path, int k)
{
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    int fd = open(path, O_RDWR);
    if (!CHECK(fd >= 0))
        return 1;
    char owner[64];
    snprintf(owner, sizeof owner, "counter-child-%d-%ld", k, (long)getpid());
    long spins = 0;
    for (int i = 0; i < N_ITERS; i++) {
        if (!CHECK_RC(spin_lock(&h, id, owner, &spins), 0))
            return 1;
        long v;
        if (!CHECK(read_counter(fd, &v) == 0))
            return 1;
        sched_yield(); /* widen the window a lost update would need */
        if (!CHECK(write_counter(fd, v + 1) == 0))
            return 1;
        if (!CHECK_RC(dss_unlock(&h, id, owner), 0))
            return 1;
    }
    close(fd);
    dss_fini(&h);
    fprintf(stderr, "child %d: %d increments, %ld retries on -EEXIST\n", k, N_ITERS, spins);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static void test_shared_counter(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "counter");
    char path[] = "/tmp/dss-ctest-counter-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write_counter(fd, 0), 0);

    pid_t pids[N_PROCS];
    for (int k = 0; k < N_PROCS; k++) {
        fflush(NULL);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0)
            _exit(counter_child(id, path, k));
    }
    int failed = 0;
    for (int k = 0; k < N_PROCS; k++) {
        int rc = ct_wait_child(pids[k], 150);
        if (rc != 0) {
            fprintf(stderr, "counter child %d exited with %d\n", k, rc);
            failed++;
        }
    }
    long v = -1;
    assert_int_equal(read_counter(fd, &v), 0);
    close(fd);
    unlink(path);
    assert_int_equal(failed, 0);
    assert_int_equal(v, N_PROCS * N_ITERS); /* no lost update */

    struct dss_handle h;
    ct_open(&h);
    ct_assert_absent(&h, id); /* everybody released it */
    dss_fini(&h);
}

/* Two processes, N_RACES rounds; in each round both call dss_lock on the
 * same fresh id right after a shared barrier. */
struct race {
    pthread_barrier_t barrier;
    char prefix[128];
    int rc[N_RACES][2];
};

static int race_child(void *arg, int me)
{
    struct race *r = arg;
    const char *prefix = r->prefix;
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    char owner[32], id[192];
    snprintf(owner, sizeof owner, "racer-%d", me);
    /* Warm up the connection outside the race. */
    snprintf(id, sizeof id, "%s.warm%d", prefix, me);
    CHECK_RC(dss_lock_status(&h, id, NULL, NULL), -ENOLCK);
    for (int i = 0; i < N_RACES; i++) {
        snprintf(id, sizeof id, "%s.%d", prefix, i);
        pthread_barrier_wait(&r->barrier);
        r->rc[i][me] = dss_lock(&h, id, owner);
    }
    dss_fini(&h);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static void test_two_process_race(void **state)
{
    (void)state;
    struct race *r = ct_shared(sizeof *r);
    ct_shared_barrier(&r->barrier, 2);
    for (int i = 0; i < N_RACES; i++)
        r->rc[i][0] = r->rc[i][1] = 12345;
    ct_id(r->prefix, sizeof r->prefix, "race");
    ct_run_two_children(race_child, r, 120);

    struct dss_handle h;
    ct_open(&h);
    int wins[2] = {0, 0};
    for (int i = 0; i < N_RACES; i++) {
        int a = r->rc[i][0], b = r->rc[i][1];
        int ok = (a == 0 && b == -EEXIST) || (a == -EEXIST && b == 0);
        if (!ok)
            fail_msg("round %d: racer 0 got %d (%s), racer 1 got %d (%s)", i, a, ct_errname(a),
                     b, ct_errname(b));
        int winner = a == 0 ? 0 : 1;
        wins[winner]++;
        char id[192], owner[32];
        snprintf(id, sizeof id, "%s.%d", r->prefix, i);
        snprintf(owner, sizeof owner, "racer-%d", winner);
        ct_assert_held(&h, id, owner); /* the winner's lock is the one stored */
        assert_rc(dss_unlock(&h, id, owner), 0);
    }
    fprintf(stderr, "race: racer 0 won %d rounds, racer 1 won %d\n", wins[0], wins[1]);
    dss_fini(&h);
    pthread_barrier_destroy(&r->barrier);
    munmap(r, sizeof *r);
}

int main(void)
{
    if (ct_setup("test_processes", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_counter),
        cmocka_unit_test(test_two_process_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
