/* dss_lock_wait: immediate success, timeouts, wake-up on release (plain,
 * forced, dss_lock_clean) and at lease expiry, wake-up latency, FIFO
 * fairness, one waiter let in per release, no busy polling (queries
 * counted on a private database), leases, bad input.
 *
 * Holders and waiters are separate processes with handles of their own.
 * Whether a waiter is queued is read from dss.lock_waiters (polled, with a
 * deadline); leases expire by moving expires_at, never by sleeping. */
#include "common.h"

#include <glob.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#ifndef DSS_SQL_DIR
#error "DSS_SQL_DIR (the sql/ migrations of the source tree) must be defined"
#endif

#define SENTINEL       0x5eadbeefcafef00dULL
#define LATENCY_ROUNDS 20
#define MAX_WAITERS    8
#define QUEUE_TIMEOUT  30.0 /* s, to see a waiter queued */

static struct dss_handle h1, h2;

CT_GROUP_WITH_TWO_HANDLES(h1, h2)

static void nap_ms(double ms)
{
    ct_nap_ms(ms);
}

static int await_waiters(const char *id, long long n)
{
    return ct_await_waiters(id, n, QUEUE_TIMEOUT);
}

/* Polls an atomic counter until it reaches target. */
static int await_counter(atomic_int *c, int target, double timeout_s)
{
    double deadline = ct_now_ms() + timeout_s * 1e3;
    while (atomic_load(c) < target) {
        if (ct_now_ms() > deadline)
            return -1;
        nap_ms(1); /* polling a state, with a deadline */
    }
    return 0;
}

static uint64_t token_of(struct dss_handle *h, const char *id)
{
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(h, id, &info), 0);
    uint64_t t = info.token;
    dss_lock_info_clear(&info);
    return t;
}

/* ---- simple cases ------------------------------------------------------ */

static void test_wait_free(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "free");
    uint64_t tok = SENTINEL;
    double t0 = ct_now_ms();
    assert_rc(dss_lock_wait(&h1, id, "alice", 0, 10000, &tok), 0);
    double elapsed = ct_now_ms() - t0;
    assert_true(elapsed < 1000);
    assert_true(tok != SENTINEL && tok > 0);
    ct_assert_held(&h2, id, "alice");
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(&h2, id, &info), 0);
    assert_int_equal(info.token, tok);
    assert_int_equal(info.ttl_ms, 0); /* ttl 0: never expires */
    assert_int_equal(info.expires_in_ms, -1);
    dss_lock_info_clear(&info);
    assert_int_equal(ct_waiters(id), 0);
    assert_rc(dss_unlock(&h1, id, "alice"), 0);

    /* Timeout 0 on a free lock: taken; NULL token allowed; UINT64_MAX too. */
    assert_rc(dss_lock_wait(&h1, id, "bob", 0, 0, NULL), 0);
    uint64_t t2 = token_of(&h2, id);
    assert_true(t2 > tok);
    assert_rc(dss_unlock(&h1, id, "bob"), 0);
    uint64_t t3 = SENTINEL;
    assert_rc(dss_lock_wait(&h1, id, "carol", 0, UINT64_MAX, &t3), 0);
    assert_true(t3 != SENTINEL && t3 > t2);
    assert_rc(dss_unlock(&h1, id, "carol"), 0);
}

static void test_wait_timeout(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "timeout");
    assert_rc(dss_lock(&h2, id, "holder"), 0);
    uint64_t held_tok = token_of(&h2, id);

    const uint64_t timeout = 700;
    uint64_t tok = SENTINEL;
    double t0 = ct_now_ms();
    assert_rc(dss_lock_wait(&h1, id, "waiter", 0, timeout, &tok), -ETIMEDOUT);
    double elapsed = ct_now_ms() - t0;
    printf("timeout %" PRIu64 " ms: returned after %.1f ms\n", timeout, elapsed);
    assert_true(ct_contains(dss_last_error(), id));
    assert_int_equal(tok, SENTINEL);
    if (elapsed < (double)timeout || elapsed >= (double)timeout + 1000)
        fail_msg("dss_lock_wait(timeout %" PRIu64 ") returned after %.1f ms", timeout, elapsed);
    /* It left the queue; the holder is untouched. */
    assert_int_equal(ct_waiters(id), 0);
    ct_assert_held(&h1, id, "holder");
    assert_int_equal(token_of(&h1, id), held_tok);

    /* Timeout 0: a single try. */
    t0 = ct_now_ms();
    assert_rc(dss_lock_wait(&h1, id, "waiter", 0, 0, &tok), -ETIMEDOUT);
    elapsed = ct_now_ms() - t0;
    assert_true(elapsed < 500);
    assert_int_equal(tok, SENTINEL);
    assert_int_equal(ct_waiters(id), 0);
    /* The holder itself waits like anybody else. */
    assert_rc(dss_lock_wait(&h2, id, "holder", 0, 0, &tok), -ETIMEDOUT);
    assert_int_equal(tok, SENTINEL);
    ct_assert_held(&h1, id, "holder");
    assert_rc(dss_unlock(&h2, id, "holder"), 0);
}

static void test_wait_lease(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "lease");
    uint64_t tok = SENTINEL;
    assert_rc(dss_lock_wait(&h1, id, "alice", 5000, 10000, &tok), 0);
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(&h2, id, &info), 0);
    assert_string_equal(info.owner, "alice");
    assert_int_equal(info.ttl_ms, 5000);
    assert_true(info.expires_in_ms > 0 && info.expires_in_ms <= 5000);
    assert_int_equal(info.token, tok);
    dss_lock_info_clear(&info);
    /* A lease like any other: it expires, and its holder learns it. */
    assert_int_equal(ct_expire(id), 1);
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -ETIME);
    /* The expired lease is free for a waiter: taken at once. */
    uint64_t tok2 = SENTINEL;
    assert_rc(dss_lock_wait(&h2, id, "bob", DSS_MAX_TTL_MS, 0, &tok2), 0);
    assert_true(tok2 != SENTINEL && tok2 > tok);
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(&h1, id, &info), 0);
    assert_string_equal(info.owner, "bob");
    assert_int_equal(info.ttl_ms, DSS_MAX_TTL_MS);
    dss_lock_info_clear(&info);
    assert_rc(dss_lock_check(&h1, id, tok), -ESTALE);
    assert_rc(dss_unlock(&h2, id, "bob"), 0);
}

static void test_wait_einval(void **state)
{
    (void)state;
    char held[128], freeid[128];
    ct_id(held, sizeof held, "einval-held");
    ct_id(freeid, sizeof freeid, "einval-free");
    assert_rc(dss_lock(&h2, held, "holder"), 0);
    uint64_t held_tok = token_of(&h2, held);
    struct dss_handle zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    char long_id[DSS_MAX_LOCK_ID_LEN + 2];
    memset(long_id, 'w', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    char long_owner[DSS_MAX_LOCK_OWNER_LEN + 2];
    memset(long_owner, 'o', sizeof long_owner - 1);
    long_owner[sizeof long_owner - 1] = '\0';

    double t0 = ct_now_ms();
    const char *ids[] = {held, freeid};
    for (int k = 0; k < 2; k++) {
        const char *id = ids[k];
        uint64_t t = SENTINEL;
        /* Rejected at once, even with an unlimited timeout. */
        assert_rc(dss_lock_wait(&h1, id, "w", DSS_MAX_TTL_MS + 1, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "ttl"));
        assert_rc(dss_lock_wait(&h1, id, "w", UINT64_MAX, 1000, &t), -EINVAL);
        assert_rc(dss_lock_wait(NULL, id, "w", 0, UINT64_MAX, &t), -EINVAL);
        assert_rc(dss_lock_wait(&zeroed, id, "w", 0, UINT64_MAX, &t), -EINVAL);
        assert_rc(dss_lock_wait(&h1, id, NULL, 0, UINT64_MAX, &t), -EINVAL);
        assert_rc(dss_lock_wait(&h1, id, long_owner, 0, UINT64_MAX, &t), -EINVAL);
        assert_rc(dss_lock_wait(&h1, id, "bad\xff", 0, UINT64_MAX, &t), -EINVAL);
        assert_int_equal(t, SENTINEL);
    }
    uint64_t t = SENTINEL;
    assert_rc(dss_lock_wait(&h1, NULL, "w", 0, UINT64_MAX, &t), -EINVAL);
    assert_rc(dss_lock_wait(&h1, "", "w", 0, UINT64_MAX, &t), -EINVAL);
    assert_rc(dss_lock_wait(&h1, long_id, "w", 0, UINT64_MAX, &t), -EINVAL);
    assert_rc(dss_lock_wait(&h1, "bad\xfe", "w", 0, UINT64_MAX, &t), -EINVAL);
    assert_int_equal(t, SENTINEL);
    assert_true(ct_now_ms() - t0 < 2000); /* nothing waited */

    /* Nothing changed, nobody queued. */
    ct_assert_absent(&h1, freeid);
    ct_assert_held(&h1, held, "holder");
    assert_int_equal(token_of(&h1, held), held_tok);
    assert_int_equal(ct_waiters(held), 0);
    assert_int_equal(ct_waiters(freeid), 0);
    assert_rc(dss_unlock(&h2, held, "holder"), 0);
}

/* ---- a holder process, releasing once a waiter is queued --------------- */

enum release_how { REL_UNLOCK, REL_FORCE, REL_CLEAN };

struct holder_shm {
    double t_queued;   /* when the holder saw the waiter queued */
    double t_released; /* when the release call returned */
    int rc;
    size_t cleaned;
};

/* Forks a holder: it takes `id` for `owner`, then once a waiter is queued
 * on it holds it `hold_ms` more and releases it as told. Returns once the
 * lock is held. */
static pid_t start_holder(const char *id, const char *owner, enum release_how how,
                          double hold_ms, struct holder_shm *shm)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    shm->t_queued = shm->t_released = 0;
    shm->rc = 12345;
    shm->cleaned = 12345;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct dss_handle h = {0};
        if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
            _exit(1);
        char ok = CHECK_RC(dss_lock(&h, id, owner), 0) ? 'L' : 'E';
        if (write(fds[1], &ok, 1) != 1 || ok != 'L')
            _exit(1);
        close(fds[1]);
        if (!CHECK(await_waiters(id, 1) == 0))
            _exit(1);
        shm->t_queued = ct_now_ms();
        if (hold_ms > 0)
            nap_ms(hold_ms); /* the scenario: a holder that keeps the lock a while */
        int rc = -1;
        switch (how) {
        case REL_UNLOCK: rc = dss_unlock(&h, id, owner); break;
        case REL_FORCE: rc = dss_unlock(&h, id, NULL); break;
        case REL_CLEAN: rc = dss_lock_clean(&h, owner, &shm->cleaned); break;
        }
        shm->t_released = ct_now_ms();
        shm->rc = rc;
        dss_fini(&h);
        _exit(atomic_load(&ct_soft_failures) == 0 ? 0 : 1);
    }
    close(fds[1]);
    char c = 0;
    ssize_t r;
    do
        r = read(fds[0], &c, 1);
    while (r < 0 && errno == EINTR);
    close(fds[0]);
    if (r != 1 || c != 'L') {
        ct_wait_child(pid, 30);
        fail_msg("the holder could not take %s", id);
    }
    return pid;
}

/* One round: a holder takes a fresh lock, we wait for it; returns the
 * latency from the release's return to our wait's return (ms, 0 if we were
 * woken before the releasing call returned). */
static double wake_round(const char *tag, enum release_how how, double hold_ms)
{
    struct holder_shm *shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shm != MAP_FAILED);
    char id[128], owner[128];
    ct_id(id, sizeof id, tag);
    ct_id(owner, sizeof owner, "holder:"); /* unique: also a prefix for dss_lock_clean */
    pid_t pid = start_holder(id, owner, how, hold_ms, shm);

    uint64_t tok = SENTINEL;
    int rc = dss_lock_wait(&h1, id, "waiter", 0, 60000, &tok);
    double t_ret = ct_now_ms();
    int child = ct_wait_child(pid, 60);
    assert_rc(rc, 0);
    assert_int_equal(child, 0);
    assert_int_equal(shm->rc, 0);
    if (how == REL_CLEAN)
        assert_int_equal(shm->cleaned, 1);
    assert_true(tok != SENTINEL);
    assert_int_equal(token_of(&h2, id), tok);
    ct_assert_held(&h2, id, "waiter");
    /* We could not have had it before it was released. */
    assert_true(t_ret >= shm->t_queued + hold_ms);
    assert_rc(dss_unlock(&h1, id, "waiter"), 0);
    double latency = t_ret - shm->t_released;
    munmap(shm, sizeof *shm);
    return latency < 0 ? 0 : latency;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_wake_latency(void **state)
{
    (void)state;
    double lat[LATENCY_ROUNDS];
    for (int i = 0; i < LATENCY_ROUNDS; i++)
        lat[i] = wake_round("latency", REL_UNLOCK, 0);
    qsort(lat, LATENCY_ROUNDS, sizeof lat[0], cmp_double);
    double median = (lat[LATENCY_ROUNDS / 2 - 1] + lat[LATENCY_ROUNDS / 2]) / 2;
    double max = lat[LATENCY_ROUNDS - 1];
    printf("wake-up latency: median %.1f ms, max %.1f ms (%d rounds, min %.1f ms)\n", median,
           max, LATENCY_ROUNDS, lat[0]);
    if (median >= 500)
        fail_msg("median wake-up latency %.1f ms: waiters are not woken by the release", median);
}

/* A waiter that has been asleep for a while: its fallback timer is then
 * far away (200 ms, doubled at each expiry: next at ~3 s), so a wake-up
 * within 500 ms of the release can only come from the notification. */
#define DEEP_HOLD_MS 1500.0

static void test_wake_deep_sleep(void **state)
{
    (void)state;
    const struct {
        enum release_how how;
        const char *what;
    } cases[] = {
        {REL_UNLOCK, "dss_unlock"},
        {REL_FORCE, "forced dss_unlock (owner NULL)"},
        {REL_CLEAN, "dss_lock_clean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double lat = wake_round("deep", cases[i].how, DEEP_HOLD_MS);
        printf("wake-up after %s, waiter asleep %.0f ms: %.1f ms\n", cases[i].what,
               DEEP_HOLD_MS, lat);
        if (lat >= 500)
            fail_msg("a waiter woke %.1f ms after a %s: not woken by it", lat, cases[i].what);
    }
}

/* ---- lease expiry ------------------------------------------------------ */

static void test_wake_at_expiry(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "expiry");
    const uint64_t ttl = 300;
    uint64_t held = 0, tok = SENTINEL;
    double t_before = ct_now_ms();
    assert_rc(dss_lock_lease(&h2, id, "holder", ttl, &held), 0);
    double t_after = ct_now_ms();
    /* The holder never refreshes. */
    assert_rc(dss_lock_wait(&h1, id, "waiter", 0, 10000, &tok), 0);
    double t_ret = ct_now_ms();
    printf("lease of %" PRIu64 " ms: waiter got it %.1f ms after it was taken\n", ttl,
           t_ret - t_after);
    assert_true(tok != SENTINEL && tok > held);
    ct_assert_held(&h2, id, "waiter");
    /* Not before the lease ran out (10 ms for the two clocks' rates)... */
    assert_true(t_ret - t_before >= (double)ttl - 10);
    /* ... and soon after. */
    if (t_ret - t_after >= (double)ttl + 1000)
        fail_msg("waiter got an expired lease %.1f ms after it was taken (ttl %" PRIu64 ")",
                 t_ret - t_after, ttl);
    assert_rc(dss_lock_refresh(&h2, id, "holder"), -EACCES);
    assert_rc(dss_unlock(&h1, id, "waiter"), 0);
}

/* ---- waiter processes -------------------------------------------------- */

struct waiters_shm {
    atomic_int seq;  /* acquisitions so far */
    atomic_int got;  /* waiters holding or done */
    int order[MAX_WAITERS];
    int rc[MAX_WAITERS];
    uint64_t tok[MAX_WAITERS];
    atomic_int release[MAX_WAITERS]; /* set by the parent: release now */
    int hold;                        /* keep the lock until release[k] */
};

static pid_t start_waiter(const char *id, int k, struct waiters_shm *s)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid != 0)
        return pid;
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        _exit(1);
    char owner[32];
    snprintf(owner, sizeof owner, "waiter-%d", k);
    uint64_t tok = 0;
    int rc = dss_lock_wait(&h, id, owner, 0, 120000, &tok);
    s->rc[k] = rc;
    if (CHECK_RC(rc, 0)) {
        s->tok[k] = tok;
        s->order[k] = atomic_fetch_add(&s->seq, 1);
        atomic_fetch_add(&s->got, 1);
        if (s->hold)
            CHECK(await_counter(&s->release[k], 1, 120) == 0);
        CHECK_RC(dss_unlock(&h, id, owner), 0);
    }
    dss_fini(&h);
    _exit(atomic_load(&ct_soft_failures) == 0 ? 0 : 1);
}

static struct waiters_shm *new_waiters_shm(int hold)
{
    struct waiters_shm *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(s != MAP_FAILED);
    memset(s, 0, sizeof *s);
    for (int k = 0; k < MAX_WAITERS; k++)
        s->order[k] = s->rc[k] = -1;
    s->hold = hold;
    return s;
}

/* Starts n waiters on id one after the other, each queued before the next
 * starts. */
static void start_queued_waiters(const char *id, int n, struct waiters_shm *s, pid_t *pids)
{
    for (int k = 0; k < n; k++) {
        pids[k] = start_waiter(id, k, s);
        if (await_waiters(id, k + 1) != 0) {
            for (int j = 0; j <= k; j++)
                kill(pids[j], SIGKILL);
            for (int j = 0; j <= k; j++)
                ct_wait_child(pids[j], 10);
            fail_msg("waiter %d did not queue on %s", k, id);
        }
    }
}

static void test_fifo(void **state)
{
    (void)state;
    enum { N = 3, ROUNDS = 3 };
    for (int round = 0; round < ROUNDS; round++) {
        char id[128];
        ct_id(id, sizeof id, "fifo");
        struct waiters_shm *s = new_waiters_shm(0);
        assert_rc(dss_lock(&h1, id, "H"), 0);
        pid_t pids[N];
        start_queued_waiters(id, N, s, pids);
        assert_int_equal(atomic_load(&s->got), 0); /* all still waiting */
        ct_assert_held(&h2, id, "H");
        assert_rc(dss_unlock(&h1, id, "H"), 0);
        int failed = 0;
        for (int k = 0; k < N; k++)
            if (ct_wait_child(pids[k], 60) != 0)
                failed++;
        assert_int_equal(failed, 0);
        int served[N] = {-1, -1, -1};
        for (int k = 0; k < N; k++)
            if (s->order[k] >= 0 && s->order[k] < N)
                served[s->order[k]] = k + 1;
        printf("fifo round %d: queued W1 W2 W3, served W%d W%d W%d\n", round, served[0],
               served[1], served[2]);
        for (int k = 0; k < N; k++) {
            assert_int_equal(s->rc[k], 0);
            if (s->order[k] != k)
                fail_msg("round %d: W%d (queued in position %d) was served in position %d",
                         round, k + 1, k + 1, s->order[k] + 1);
        }
        assert_true(s->tok[0] < s->tok[1] && s->tok[1] < s->tok[2]);
        ct_assert_absent(&h1, id);
        assert_int_equal(ct_waiters(id), 0);
        munmap(s, sizeof *s);
    }
}

static void test_one_per_release(void **state)
{
    (void)state;
    enum { N = 4 };
    char id[128];
    ct_id(id, sizeof id, "one-per-release");
    struct waiters_shm *s = new_waiters_shm(1);
    assert_rc(dss_lock(&h1, id, "H"), 0);
    pid_t pids[N];
    start_queued_waiters(id, N, s, pids);
    assert_int_equal(atomic_load(&s->got), 0);
    assert_rc(dss_unlock(&h1, id, "H"), 0); /* one release */

    int ok = 1;
    for (int j = 0; j < N && ok; j++) {
        /* Exactly one more waiter gets it. */
        if (await_counter(&s->got, j + 1, 30) != 0) {
            fprintf(stderr, "release %d: no waiter got the lock within 30 s\n", j);
            ok = 0;
            break;
        }
        int holder = -1;
        for (int k = 0; k < N; k++)
            if (s->order[k] == j)
                holder = k;
        char owner[32];
        snprintf(owner, sizeof owner, "waiter-%d", holder);
        char *o = NULL;
        int rc = dss_lock_status(&h2, id, &o, NULL);
        if (rc != 0 || o == NULL || strcmp(o, owner) != 0) {
            fprintf(stderr, "release %d: status %d, owner %s, expected %s\n", j, rc,
                    o ? o : "(none)", owner);
            ok = 0;
        }
        free(o);
        /* The others still wait: alive, queued, without the lock. */
        long long queued = ct_waiters(id);
        if (queued != N - 1 - j) {
            fprintf(stderr, "release %d: %lld waiters queued, expected %d\n", j, queued,
                    N - 1 - j);
            ok = 0;
        }
        for (int k = 0; k < N; k++) {
            if (s->order[k] >= 0 && s->order[k] < j)
                continue; /* served and gone */
            if (k != holder && waitpid(pids[k], NULL, WNOHANG) != 0) {
                fprintf(stderr, "release %d: waiter %d is no longer waiting\n", j, k);
                ok = 0;
            }
        }
        if (atomic_load(&s->got) != j + 1) {
            fprintf(stderr, "release %d: %d waiters got the lock, expected %d\n", j,
                    atomic_load(&s->got), j + 1);
            ok = 0;
        }
        if (holder != j) {
            fprintf(stderr, "release %d: waiter %d got it, expected %d (FIFO)\n", j, holder, j);
            ok = 0;
        }
        if (holder >= 0)
            atomic_store(&s->release[holder], 1); /* the next release */
    }
    if (!ok)
        for (int k = 0; k < N; k++)
            kill(pids[k], SIGKILL);
    int failed = 0;
    for (int k = 0; k < N; k++)
        if (ct_wait_child(pids[k], 60) != 0)
            failed++;
    assert_true(ok);
    assert_int_equal(failed, 0);
    ct_assert_absent(&h1, id);
    munmap(s, sizeof *s);
}

/* A waiter whose process dies leaves the queue: the next one is served. */
static void test_dead_waiter(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "dead-waiter");
    struct waiters_shm *s = new_waiters_shm(0);
    assert_rc(dss_lock(&h1, id, "H"), 0);
    pid_t pids[2];
    start_queued_waiters(id, 2, s, pids);
    kill(pids[0], SIGKILL);
    assert_int_equal(ct_wait_child(pids[0], 30), 128 + SIGKILL);
    double t0 = ct_now_ms();
    assert_rc(dss_unlock(&h1, id, "H"), 0);
    assert_int_equal(ct_wait_child(pids[1], 30), 0);
    printf("dead first waiter: the second got the lock %.0f ms after the release\n",
           ct_now_ms() - t0);
    assert_int_equal(s->rc[1], 0);
    assert_int_equal(s->order[1], 0);
    assert_int_equal(s->order[0], -1);
    ct_assert_absent(&h1, id);
    munmap(s, sizeof *s);
}

/* ---- no busy loop ------------------------------------------------------ */

/* conninfo with its dbname replaced. */
static void conninfo_for_db(char *buf, size_t size, const char *dbname)
{
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", ct_conninfo());
    buf[0] = '\0';
    size_t used = 0;
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok != NULL;
         tok = strtok_r(NULL, " ", &save)) {
        if (strncmp(tok, "dbname=", 7) == 0)
            continue;
        used += (size_t)snprintf(buf + used, size - used, "%s ", tok);
        assert_true(used < size);
    }
    used += (size_t)snprintf(buf + used, size - used, "dbname=%s", dbname);
    assert_true(used < size);
}

static long long commits_of(const char *dbname)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT xact_commit FROM pg_stat_database WHERE datname = '%s'",
             dbname);
    long long v = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &v), 0);
    return v;
}

/* Waits until no session is connected to dbname (its statistics are
 * flushed when it ends, before it leaves pg_stat_activity). */
static void await_no_sessions(const char *dbname)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM pg_stat_activity "
             "WHERE datname = '%s'",
             dbname);
    assert_int_equal(ct_poll_at_least(ct_conninfo(), sql, 1, 30, NULL), 0);
}

static void test_no_busy_loop(void **state)
{
    (void)state;
    char db[64], conninfo[1100], sql[256];
    snprintf(db, sizeof db, "dss_ctest_quiet_%ld", (long)getpid());
    conninfo_for_db(conninfo, sizeof conninfo, db);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
    assert_int_equal(ct_psql(ct_conninfo(), sql, NULL, 0), 0);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    assert_int_equal(ct_psql(ct_conninfo(), sql, NULL, 0), 0);

    /* The schema, from the source tree's migrations. */
    glob_t g;
    assert_int_equal(glob(DSS_SQL_DIR "/[0-9]*.sql", 0, NULL, &g), 0);
    assert_true(g.gl_pathc >= 2);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char *argv[] = {(char *)PSQL_PROGRAM, (char *)"-X", (char *)"-q", (char *)"-v",
                        (char *)"ON_ERROR_STOP=1", (char *)"-d", conninfo, (char *)"-f",
                        g.gl_pathv[i], NULL};
        if (ct_run(argv, 60, NULL, 0) != 0)
            fail_msg("cannot apply %s to %s", g.gl_pathv[i], db);
    }
    globfree(&g);
    /* A lock held by somebody else, for good. */
    assert_int_equal(ct_psql(conninfo,
                             "INSERT INTO dss.locks (id, owner) VALUES ('quiet', 'holder')",
                             NULL, 0),
                     0);

    await_no_sessions(db);
    long long before = commits_of(db);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct dss_handle h = {0};
        if (!CHECK_RC(dss_init_conninfo(&h, conninfo), 0))
            _exit(1);
        double t0 = ct_now_ms();
        CHECK_RC(dss_lock_wait(&h, "quiet", "waiter", 0, 3000, NULL), -ETIMEDOUT);
        double elapsed = ct_now_ms() - t0;
        CHECK(elapsed >= 3000 && elapsed < 4000);
        dss_fini(&h);
        _exit(atomic_load(&ct_soft_failures) == 0 ? 0 : 1);
    }
    assert_int_equal(ct_wait_child(pid, 60), 0);
    await_no_sessions(db);
    long long after = commits_of(db);
    printf("a 3 s dss_lock_wait (with dss_init and dss_fini): %lld transactions\n",
           after - before);

    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", db);
    assert_int_equal(ct_psql(ct_conninfo(), sql, NULL, 0), 0);
    assert_true(after - before > 0); /* the count works */
    if (after - before >= 30)
        fail_msg("a 3 s wait committed %lld transactions: it polls", after - before);
}

int main(void)
{
    if (ct_setup("test_wait", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_free),
        cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_wait_lease),
        cmocka_unit_test(test_wait_einval),
        cmocka_unit_test(test_wake_latency),
        cmocka_unit_test(test_wake_deep_sleep),
        cmocka_unit_test(test_wake_at_expiry),
        cmocka_unit_test(test_fifo),
        cmocka_unit_test(test_one_per_release),
        cmocka_unit_test(test_dead_waiter),
        cmocka_unit_test(test_no_busy_loop),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
