/* fork() after dss_init, while other threads use the handle: the child
 * (and a grandchild) use the inherited handle and fresh ones; the parent's
 * sessions survive every child's dss_fini and exit. */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#define N_FORKS 100
#define CHILD_TIMEOUT_S 20

static struct dss_handle h;
static char app_name[64];
static char conninfo[1024];
static atomic_int stop_threads;
static atomic_long background_calls;
static atomic_long init_fini_cycles;

static int group_setup(void **state)
{
    (void)state;
    snprintf(app_name, sizeof app_name, "ct_fork_%ld", (long)getpid());
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", ct_conninfo(), app_name);
    ct_open_with(&h, conninfo);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dss_fini(&h);
    return 0;
}

static void *background(void *arg)
{
    long k = (long)(intptr_t)arg;
    char id[128], owner[32];
    snprintf(owner, sizeof owner, "bg%ld", k);
    long i = 0;
    while (!atomic_load(&stop_threads)) {
        snprintf(id, sizeof id, "test_fork.%ld.bg%ld.%ld", (long)getpid(), k, i++ % 5);
        CHECK_RC(dss_lock(&h, id, owner), 0);
        CHECK_RC(dss_lock_status(&h, id, NULL, NULL), 0);
        CHECK_RC(dss_lock_refresh(&h, id, owner), 0);
        CHECK_RC(dss_unlock(&h, id, owner), 0);
        atomic_fetch_add(&background_calls, 4);
        if (atomic_load(&ct_soft_failures) > 20)
            break;
    }
    return NULL;
}

/* Opens, uses and closes handles in a loop, so that forks also happen in
 * the middle of dss_init / dss_fini in another thread. */
static void *init_fini_loop(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_threads)) {
        struct dss_handle other = {0};
        if (!CHECK_RC(dss_init_conninfo(&other, ct_conninfo()), 0))
            break;
        char id[128];
        snprintf(id, sizeof id, "test_fork.%ld.initfini", (long)getpid());
        CHECK_RC(dss_lock(&other, id, "o"), 0);
        CHECK_RC(dss_unlock(&other, id, "o"), 0);
        dss_fini(&other);
        atomic_fetch_add(&init_fini_cycles, 1);
        if (atomic_load(&ct_soft_failures) > 20)
            break;
    }
    return NULL;
}

/* lock / status / refresh / unlock on a handle; soft checks (child side). */
static int use_handle(struct dss_handle *hh, const char *tag)
{
    char id[160], owner[64];
    ct_id(id, sizeof id, tag);
    snprintf(owner, sizeof owner, "%s-%ld", tag, (long)getpid());
    int ok = CHECK_RC(dss_lock(hh, id, owner), 0);
    char *o = NULL;
    if (CHECK_RC(dss_lock_status(hh, id, &o, NULL), 0)) {
        ok &= CHECK(o != NULL && strcmp(o, owner) == 0);
        free(o);
    } else {
        ok = 0;
    }
    ok &= CHECK_RC(dss_lock_refresh(hh, id, owner), 0);
    ok &= CHECK_RC(dss_lock(hh, id, "someone else"), -EEXIST);
    ok &= CHECK_RC(dss_unlock(hh, id, owner), 0);
    ok &= CHECK_RC(dss_lock_status(hh, id, NULL, NULL), -ENOLCK);
    return ok;
}

static int grandchild(struct dss_handle *childs)
{
    int ok = use_handle(&h, "grandchild-inherited");
    /* The child's own handle, inherited in turn. */
    ok &= use_handle(childs, "grandchild-inherited-from-child");
    dss_fini(childs);
    struct dss_handle fresh = {0};
    if (CHECK_RC(dss_init_conninfo(&fresh, ct_conninfo()), 0)) {
        ok &= use_handle(&fresh, "grandchild-fresh");
        dss_fini(&fresh);
    } else {
        ok = 0;
    }
    dss_fini(&h);
    return ok ? 0 : 1;
}

static pthread_barrier_t child_barrier;

static void *child_thread(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&child_barrier);
    return (void *)(intptr_t)use_handle(&h, "child-thread");
}

static int child(int iteration)
{
    int ok = 1;
    if (iteration % 2 == 0) {
        /* First use of the inherited handle from two threads at once. */
        pthread_t t[2];
        pthread_barrier_init(&child_barrier, NULL, 2);
        for (int k = 0; k < 2; k++)
            ok &= CHECK(pthread_create(&t[k], NULL, child_thread, NULL) == 0);
        for (int k = 0; k < 2; k++) {
            void *r = NULL;
            pthread_join(t[k], &r);
            ok &= CHECK(r == (void *)1);
        }
    }
    ok &= use_handle(&h, "child-inherited");
    struct dss_handle fresh = {0};
    if (CHECK_RC(dss_init_conninfo(&fresh, ct_conninfo()), 0)) {
        ok &= use_handle(&fresh, "child-fresh");
    } else {
        ok = 0;
    }
    /* dss_init on the inherited handle is allowed (it is not this
     * process's), and must not disturb the parent. */
    if (iteration % 4 == 1) {
        ok &= CHECK(h.dh_conn != NULL);
        ok &= CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0);
        ok &= use_handle(&h, "child-reinit");
        ok &= CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), -EALREADY); /* now it is */
    }
    if (iteration % 5 == 0) {
        fflush(NULL);
        pid_t g = fork();
        if (g == 0)
            _exit(grandchild(&fresh));
        ok &= CHECK(g > 0);
        if (g > 0)
            ok &= CHECK(ct_wait_child(g, CHILD_TIMEOUT_S / 2) == 0);
        ok &= use_handle(&h, "child-after-grandchild");
        ok &= use_handle(&fresh, "child-fresh-after-grandchild");
    }
    dss_fini(&fresh);
    dss_fini(&h);
    ok &= CHECK(h.dh_conn == NULL);
    ok &= CHECK_RC(dss_lock(&h, "x", "y"), -EINVAL);
    return ok && atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

/* Backend pids of this process's sessions (application_name), sorted. */
static void parent_backends(char *out, size_t size)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity "
             "WHERE application_name = '%s' AND backend_type = 'client backend' "
             "AND client_port = -1",
             app_name);
    assert_int_equal(ct_psql(ct_conninfo(), sql, out, size), 0);
}

/* Every pid of `before` is still in `after` (comma-separated lists). */
static void assert_subset(const char *before, const char *after)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", before);
    char padded_after[4200];
    snprintf(padded_after, sizeof padded_after, ",%s,", after);
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char needle[32];
        snprintf(needle, sizeof needle, ",%s,", p);
        if (strstr(padded_after, needle) == NULL)
            fail_msg("the parent's session (backend pid %s) was closed: before [%s], after [%s]",
                     p, before, after);
    }
}

static void parent_check(void)
{
    char id[128];
    ct_id(id, sizeof id, "parent");
    assert_rc(dss_lock(&h, id, "parent"), 0);
    ct_assert_held(&h, id, "parent");
    assert_rc(dss_unlock(&h, id, "parent"), 0);
}

static void test_fork_while_threads_run(void **state)
{
    (void)state;
    parent_check();
    atomic_store(&ct_soft_failures, 0);
    atomic_store(&stop_threads, 0);
    pthread_t t[3];
    for (long k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&t[k], NULL, background, (void *)(intptr_t)k), 0);
    assert_int_equal(pthread_create(&t[2], NULL, init_fini_loop, NULL), 0);
    /* Let the background threads get going (their pooled connections). */
    while (atomic_load(&background_calls) < 40 && atomic_load(&ct_soft_failures) == 0)
        sched_yield();

    char before[4096], after[4096];
    parent_backends(before, sizeof before);
    assert_true(strlen(before) > 0);

    int failures = 0;
    for (int i = 0; i < N_FORKS; i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* No cmocka in the child: plain checks and an exit code. */
            atomic_store(&stop_threads, 1); /* the threads did not follow */
            _exit(child(i));
        }
        int rc = ct_wait_child(pid, CHILD_TIMEOUT_S);
        if (rc != 0) {
            fprintf(stderr, "fork %d: child exited with %d\n", i, rc);
            failures++;
        }
        parent_check();
    }
    atomic_store(&stop_threads, 1);
    for (int k = 0; k < 3; k++)
        pthread_join(t[k], NULL);
    fprintf(stderr, "%ld background calls and %ld handle init/fini during %d forks\n",
            atomic_load(&background_calls), atomic_load(&init_fini_cycles), N_FORKS);
    assert_int_equal(failures, 0);
    assert_int_equal(atomic_load(&ct_soft_failures), 0);

    /* No session of the parent was closed by a child. */
    parent_backends(after, sizeof after);
    fprintf(stderr, "parent's backends before [%s], after [%s]\n", before, after);
    assert_subset(before, after);
    parent_check();
}

int main(void)
{
    if (ct_setup("test_fork", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_while_threads_run),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
