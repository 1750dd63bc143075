/* Handle life cycle: dss_fini releases everything (connections, threads),
 * and calls keep working while signals interrupt the calling thread. */
#include "common.h"

#include <signal.h>
#include <stdlib.h>
#include <time.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define N_HANDLES 150

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* The sessions of a finalised handle go away (the server notices at once
 * when the socket is closed; allow it 10 s). */
static void wait_sessions(const char *app, int want_max)
{
    double deadline = ct_now_ms() + 10000;
    int n;
    while ((n = ct_sessions(ct_conninfo(), app)) > want_max && ct_now_ms() < deadline) {
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    if (n < 0 || n > want_max)
        fail_msg("%d sessions named %s remain, expected at most %d", n, app, want_max);
}

static void test_fini_releases_everything(void **state)
{
    (void)state;
    char app[64], conninfo[1024];
    snprintf(app, sizeof app, "ct_life_%ld", (long)getpid());
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", ct_conninfo(), app);

    /* A first handle, so that one-time threads exist before counting. */
    struct dss_handle first;
    ct_open_with(&first, conninfo);
    char id[128];
    ct_id(id, sizeof id, "first");
    assert_rc(dss_lock(&first, id, "o"), 0);
    assert_rc(dss_unlock(&first, id, "o"), 0);
    dss_fini(&first);
    wait_sessions(app, 0);
    int threads_before = thread_count();
    assert_true(threads_before >= 1);

    for (int i = 0; i < N_HANDLES; i++) {
        struct dss_handle h = {0};
        int rc = dss_init_conninfo(&h, conninfo);
        if (rc != 0)
            fail_msg("handle %d: dss_init_conninfo = %d (%s): %s", i, rc, ct_errname(rc),
                     dss_last_error());
        ct_id(id, sizeof id, "cycle");
        assert_rc(dss_lock(&h, id, "o"), 0);
        assert_rc(dss_unlock(&h, id, "o"), 0);
        dss_fini(&h);
        assert_null(h.dh_conn);
    }
    int threads_after = thread_count();
    fprintf(stderr, "threads: %d before, %d after %d handles\n", threads_before, threads_after,
            N_HANDLES);
    /* No thread per handle left behind. */
    assert_true(threads_after <= threads_before + 8);
    /* No session left behind. */
    wait_sessions(app, 0);

    /* Many handles open at once, then all closed. */
    struct dss_handle many[20];
    for (int i = 0; i < 20; i++) {
        ct_open_with(&many[i], conninfo);
        ct_id(id, sizeof id, "many");
        assert_rc(dss_lock(&many[i], id, "o"), 0);
        assert_rc(dss_unlock(&many[i], id, "o"), 0);
    }
    assert_true(ct_sessions(ct_conninfo(), app) >= 20);
    for (int i = 0; i < 20; i++)
        dss_fini(&many[i]);
    wait_sessions(app, 0);
}

static volatile sig_atomic_t signals_seen;

static void on_signal(int sig)
{
    (void)sig;
    signals_seen++;
}

static void test_calls_interrupted_by_signals(void **state)
{
    (void)state;
    /* A handler without SA_RESTART: blocking system calls of this thread
     * fail with EINTR whenever the timer fires. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    struct sigaction old;
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);

    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGALRM;
    sev.sigev_notify_thread_id = gettid(); /* this thread only */
    timer_t timer;
    assert_int_equal(timer_create(CLOCK_MONOTONIC, &sev, &timer), 0);
    struct itimerspec its = {{0, 300 * 1000}, {0, 300 * 1000}}; /* every 0.3 ms */
    assert_int_equal(timer_settime(timer, 0, &its, NULL), 0);

    int bad = 0, calls = 0;
    struct dss_handle h = {0};
    for (int k = 0; k < 5 && bad == 0; k++) {
        int rc = dss_init_conninfo(&h, ct_conninfo());
        calls++;
        if (rc != 0) {
            fprintf(stderr, "dss_init_conninfo = %d (%s): %s\n", rc, ct_errname(rc),
                    dss_last_error());
            bad++;
            break;
        }
        for (int i = 0; i < 100; i++) {
            char id[128];
            ct_id(id, sizeof id, "signals");
            int r[5];
            char *o = NULL;
            r[0] = dss_lock(&h, id, "o");
            r[1] = dss_lock_refresh(&h, id, "o");
            r[2] = dss_lock_status(&h, id, &o, NULL);
            r[3] = dss_unlock(&h, id, "o");
            r[4] = dss_lock_status(&h, id, NULL, NULL);
            free(o);
            calls += 5;
            const int want[5] = {0, 0, 0, 0, -ENOLCK};
            for (int j = 0; j < 5; j++) {
                if (r[j] != want[j]) {
                    fprintf(stderr, "call %d of cycle %d: %d (%s), expected %d: %s\n", j, i,
                            r[j], ct_errname(r[j]), want[j], dss_last_error());
                    bad++;
                }
            }
            if (bad)
                break;
        }
        dss_fini(&h);
    }
    struct itimerspec off = {{0, 0}, {0, 0}};
    timer_settime(timer, 0, &off, NULL);
    timer_delete(timer);
    sigaction(SIGALRM, &old, NULL);
    fprintf(stderr, "%d calls, %d signals received\n", calls, (int)signals_seen);
    dss_fini(&h);
    assert_int_equal(bad, 0);
    assert_true(signals_seen > 10); /* the calls really were interrupted */
}

int main(void)
{
    if (ct_setup("test_lifecycle", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fini_releases_everything),
        cmocka_unit_test(test_calls_interrupted_by_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
