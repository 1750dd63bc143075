/* Shared (reader) locks, downgrade, counting semaphores and holders lists:
 * dss_lock_shared, dss_lock_shared_refresh, dss_unlock_shared,
 * dss_lock_downgrade, dss_sem_acquire, dss_sem_refresh, dss_sem_release,
 * dss_lock_holders, dss_sem_holders, dss_holders_free.
 *
 * Every return code of each call; the exclusive calls on an id held only
 * shared; readers and a writer in separate processes; no writer
 * starvation under a stream of readers; readers queued behind a writer
 * entering together; downgrade with a queued reader joining at once; a
 * capacity-2 semaphore under 8 processes; a SIGKILLed holder's permit
 * coming back when its lease ends; dss_lock_is_held() with shared tokens
 * inside a real transaction (psql); bad input.
 *
 * Waiting processes have handles of their own. Whether a request is queued
 * is read from dss.lock_waiters (polled, with a deadline); leases expire by
 * moving expires_at into the past, never by sleeping (except the killed
 * holder's, whose real expiry is the point of that test). */
#include "common.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#define SENTINEL      0x5eadbeefcafef00dULL
#define LONG_TTL      600000ULL /* 10 min: never runs out during a test */
#define WAIT_MS       60000ULL  /* how long queued requests may wait */
#define QUEUE_TIMEOUT 30.0      /* s, to see a request queued */
#define HOLD_TIMEOUT  120.0     /* s, longest a child waits for the parent */
#define CLOCK_SLACK   10.0      /* ms, between the database and local clocks */

static struct dss_handle h1, h2; /* two clients of the same database */

CT_GROUP_WITH_TWO_HANDLES(h1, h2)

/* ---- small helpers ------------------------------------------------------ */

static void nap_ms(double ms)
{
    ct_nap_ms(ms);
}

/* Polls an atomic until it is >= target; 0, or -1 after timeout_s. */
static int await_at_least(atomic_int *v, int target, double timeout_s)
{
    double deadline = ct_now_ms() + timeout_s * 1e3;
    while (atomic_load(v) < target) {
        if (ct_now_ms() > deadline)
            return -1;
        nap_ms(1); /* polling a state, with a deadline */
    }
    return 0;
}

/* Strings of exactly len bytes (malloc()ed). */
static char *str_of_len(size_t len, char c)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, c, len);
    s[len] = '\0';
    return s;
}

/* An integer SQL query with one string literal (the id) put in at %s. */
static long long sql_ll(const char *fmt, const char *id)
{
    char lit[2 * DSS_MAX_LOCK_ID_LEN + 8], sql[2 * DSS_MAX_LOCK_ID_LEN + 512];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql, fmt, lit);
    long long n = -1;
    if (ct_psql_ll(ct_conninfo(), sql, &n) != 0)
        fail_msg("query failed: %s", sql);
    return n;
}

/* Rows of any table about this id: what a call left in the database. */
static long long rows_about(const char *id)
{
    char lit[2 * DSS_MAX_LOCK_ID_LEN + 8], sql[10 * DSS_MAX_LOCK_ID_LEN + 1024];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM dss.locks WHERE id = %s) "
             "+ (SELECT count(*) FROM dss.lock_shares WHERE id = %s) "
             "+ (SELECT count(*) FROM dss.lock_waiters WHERE id = %s) "
             "+ (SELECT count(*) FROM dss.sems WHERE id = %s) "
             "+ (SELECT count(*) FROM dss.sem_holders WHERE id = %s)",
             lit, lit, lit, lit, lit);
    long long n = -1;
    if (ct_psql_ll(ct_conninfo(), sql, &n) != 0)
        fail_msg("query failed: %s", sql);
    return n;
}

/* History events of `id` of this kind. */
static long long history_count(const char *id, const char *event)
{
    char fmt[256];
    snprintf(fmt, sizeof fmt,
             "SELECT count(*) FROM dss.lock_history WHERE id = %%s AND event = '%s'", event);
    return sql_ll(fmt, id);
}

static int await_waiters(const char *id, long long n)
{
    return ct_await_waiters(id, n, QUEUE_TIMEOUT);
}

/* Makes the shared lease of `owner` on `id` expire now, as time would (all
 * shared leases of id if owner is NULL, and then the id's row too, as the
 * library keeps its expiry at the end of the last lease). */
static void expire_share(const char *id, const char *owner)
{
    char lit[512], olit[600], sql[1500];
    ct_sql_literal(lit, sizeof lit, id);
    if (owner != NULL) {
        ct_sql_literal(olit, sizeof olit, owner);
        snprintf(sql, sizeof sql,
                 "UPDATE dss.lock_shares SET expires_at = now() - interval '1 millisecond' "
                 "WHERE id = %s AND owner = %s AND expires_at IS NOT NULL",
                 lit, olit);
    } else {
        snprintf(sql, sizeof sql,
                 "UPDATE dss.lock_shares SET expires_at = now() - interval '1 millisecond' "
                 "WHERE id = %s AND expires_at IS NOT NULL; "
                 "UPDATE dss.locks SET expires_at = now() - interval '1 millisecond' "
                 "WHERE id = %s AND owner IS NULL AND expires_at IS NOT NULL",
                 lit, lit);
    }
    assert_int_equal(ct_psql(ct_conninfo(), sql, NULL, 0), 0);
}

/* Makes the semaphore lease of `owner` on `id` expire now. */
static void expire_permit(const char *id, const char *owner)
{
    char lit[512], olit[600], sql[1500];
    ct_sql_literal(lit, sizeof lit, id);
    ct_sql_literal(olit, sizeof olit, owner);
    snprintf(sql, sizeof sql,
             "WITH u AS (UPDATE dss.sem_holders SET expires_at = now() - interval '1 millisecond' "
             "WHERE id = %s AND owner = %s RETURNING 1) SELECT count(*) FROM u",
             lit, olit);
    long long n = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &n), 0);
    assert_int_equal(n, 1);
}

/* dss_lock_is_held(id, token) in SQL, in a transaction of its own: 1 or 0. */
static long long is_held_sql(const char *id, uint64_t token)
{
    char fmt[128];
    snprintf(fmt, sizeof fmt, "SELECT dss_lock_is_held(%%s, %" PRIu64 ")::int", token);
    return sql_ll(fmt, id);
}

/* dss_lock_holders() / dss_sem_holders() of an id that must have holders. */
static size_t holders_of(struct dss_handle *h, const char *id, int sem, struct dss_holder **out)
{
    size_t n = 12345;
    *out = NULL;
    if (sem)
        assert_rc(dss_sem_holders(h, id, out, &n), 0);
    else
        assert_rc(dss_lock_holders(h, id, out, &n), 0);
    assert_non_null(*out);
    assert_true(n >= 1 && n != 12345);
    return n;
}

static const struct dss_holder *find_holder(const struct dss_holder *hs, size_t n,
                                            const char *owner)
{
    for (size_t i = 0; i < n; i++)
        if (hs[i].owner != NULL && strcmp(hs[i].owner, owner) == 0)
            return &hs[i];
    return NULL;
}

/* Asserts the lock's holders are exactly `owners` (in any order: the list
 * itself must be in token order), all in `mode`, 1 permit each. */
static void assert_lock_holders(struct dss_handle *h, const char *id, int mode,
                                const char *const *owners, size_t n_owners)
{
    struct dss_holder *hs;
    size_t n = holders_of(h, id, 0, &hs);
    char got[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof got; i++)
        used += (size_t)snprintf(got + used, sizeof got - used, "%s%s/%d", i ? " " : "",
                                 hs[i].owner ? hs[i].owner : "(null)", hs[i].mode);
    int ok = n == n_owners;
    for (size_t i = 0; ok && i < n; i++) {
        ok = hs[i].owner != NULL && hs[i].mode == mode && hs[i].permits == 1;
        if (ok && i > 0)
            ok = hs[i].token > hs[i - 1].token;
    }
    for (size_t j = 0; ok && j < n_owners; j++)
        ok = find_holder(hs, n, owners[j]) != NULL;
    dss_holders_free(hs, n);
    if (!ok)
        fail_msg("holders of %s: %s; expected %zu holders of mode %d", id, got, n_owners, mode);
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

/* ---- child processes ------------------------------------------------------ */

/* Children still to reap: killed by the teardown of a failed test, so that
 * none outlives it. */
#define MAX_CHILDREN 64
static pid_t children[MAX_CHILDREN];

static void child_add(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
    kill(pid, SIGKILL);
    fail_msg("too many children");
}

/* Waits for a child (SIGKILLed after timeout_s); its exit code as
 * ct_wait_child. */
static int child_join(pid_t pid, double timeout_s)
{
    int rc = ct_wait_child(pid, timeout_s);
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
    return rc;
}

static int kill_children(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] != 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    return 0;
}

static pid_t spawn(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(arg));
    child_add(pid);
    return pid;
}

/* An actor: a child process that makes one request, holds what it got
 * until the parent says release, then releases it. */
enum act_kind { ACT_WAIT, ACT_SHARED, ACT_SEM };
enum act_state { ST_FORKED, ST_CALLING, ST_RETURNED, ST_DONE };

struct actor {
    int kind;
    char id[160];
    char owner[64];
    uint64_t ttl_ms, timeout_ms;
    uint32_t permits, capacity;
    atomic_int state;     /* enum act_state */
    atomic_int release;   /* set by the parent: release now */
    atomic_int releasing; /* set by the actor right before its release call */
    int rc, release_rc;
    uint64_t token;
    double t_call, t_ret, t_release, t_released; /* ct_now_ms() */
    pid_t pid;
};

static int actor_main(void *arg)
{
    struct actor *a = arg;
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0)) {
        a->rc = -99999;
        atomic_store(&a->state, ST_DONE);
        return 1;
    }
    uint64_t tok = SENTINEL;
    a->t_call = ct_now_ms();
    atomic_store(&a->state, ST_CALLING);
    int rc = -99999;
    switch (a->kind) {
    case ACT_WAIT: rc = dss_lock_wait(&h, a->id, a->owner, a->ttl_ms, a->timeout_ms, &tok); break;
    case ACT_SHARED:
        rc = dss_lock_shared(&h, a->id, a->owner, a->ttl_ms, a->timeout_ms, &tok);
        break;
    case ACT_SEM:
        rc = dss_sem_acquire(&h, a->id, a->owner, a->permits, a->capacity, a->ttl_ms,
                             a->timeout_ms, &tok);
        break;
    }
    a->t_ret = ct_now_ms();
    a->rc = rc;
    a->token = tok;
    atomic_store(&a->state, ST_RETURNED);
    if (rc == 0) {
        if (!CHECK(await_at_least(&a->release, 1, HOLD_TIMEOUT) == 0))
            _exit(1);
        a->t_release = ct_now_ms();
        atomic_store(&a->releasing, 1);
        int r = -99999;
        switch (a->kind) {
        case ACT_WAIT: r = dss_unlock(&h, a->id, a->owner); break;
        case ACT_SHARED: r = dss_unlock_shared(&h, a->id, a->owner); break;
        case ACT_SEM: r = dss_sem_release(&h, a->id, a->owner); break;
        }
        a->release_rc = r;
        a->t_released = ct_now_ms();
    }
    atomic_store(&a->state, ST_DONE);
    dss_fini(&h);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

/* n actors in shared memory, zeroed. */
static struct actor *actors_new(int n)
{
    return ct_shared(sizeof(struct actor) * (size_t)n);
}

static void actor_start(struct actor *a, int kind, const char *id, const char *owner,
                        uint64_t ttl_ms, uint64_t timeout_ms)
{
    a->kind = kind;
    snprintf(a->id, sizeof a->id, "%s", id);
    snprintf(a->owner, sizeof a->owner, "%s", owner);
    a->ttl_ms = ttl_ms;
    a->timeout_ms = timeout_ms;
    a->rc = a->release_rc = -99999;
    a->token = SENTINEL;
    atomic_store(&a->state, ST_FORKED);
    atomic_store(&a->release, 0);
    atomic_store(&a->releasing, 0);
    a->pid = spawn(actor_main, a);
}

static void actor_await(struct actor *a, int state)
{
    if (await_at_least(&a->state, state, HOLD_TIMEOUT) != 0)
        fail_msg("actor %s on %s: state %d after %.0f s, expected %d", a->owner, a->id,
                 atomic_load(&a->state), HOLD_TIMEOUT, state);
}

/* Tells the actor to release, waits until it did and exited, and checks it
 * released successfully. */
static void actor_release(struct actor *a)
{
    atomic_store(&a->release, 1);
    actor_await(a, ST_DONE);
    assert_int_equal(child_join(a->pid, 60), 0);
    if (a->release_rc != 0)
        fail_msg("actor %s released %s: %d (%s)", a->owner, a->id, a->release_rc,
                 ct_errname(a->release_rc));
}

/* ---- 1. return codes of the shared-lock calls ----------------------------- */

static void test_shared_codes(void **state)
{
    (void)state;
    char id[128], other[128];
    ct_id(id, sizeof id, "codes");
    ct_id(other, sizeof other, "codes-other");

    uint64_t t1 = SENTINEL, t2 = SENTINEL, t = SENTINEL;
    assert_rc(dss_lock_shared(&h1, id, "r1", 0, 0, &t1), 0);
    assert_true(t1 != SENTINEL && t1 > 0);
    assert_rc(dss_lock_shared(&h2, id, "r2", LONG_TTL, UINT64_MAX, &t2), 0);
    assert_true(t2 != SENTINEL && t2 > t1);
    assert_int_equal(history_count(id, "shared_acquire"), 2);

    /* No reentrancy, whatever the timeout: -EALREADY at once. */
    double t0 = ct_now_ms();
    assert_rc(dss_lock_shared(&h1, id, "r1", 0, 0, &t), -EALREADY);
    assert_rc(dss_lock_shared(&h2, id, "r1", LONG_TTL, 5000, &t), -EALREADY);
    assert_true(ct_now_ms() - t0 < 4000);
    assert_true(ct_contains(dss_last_error(), "dss_lock_shared"));
    assert_int_equal(t, SENTINEL);

    /* The exclusive calls see the id as held. */
    assert_rc(dss_lock(&h2, id, "w"), -EEXIST);
    assert_rc(dss_lock(&h2, id, "r1"), -EEXIST);
    assert_rc(dss_lock_lease(&h2, id, "w", 1000, &t), -EEXIST);
    t0 = ct_now_ms();
    assert_rc(dss_lock_wait(&h2, id, "w", 0, 300, &t), -ETIMEDOUT);
    assert_true(ct_now_ms() - t0 >= 300);
    assert_int_equal(t, SENTINEL);
    const char *ids[] = {other, id};
    size_t conflict = 12345;
    assert_rc(dss_lock_many(&h2, ids, 2, "w", 0, &conflict), -EEXIST);
    assert_int_equal(conflict, 1);
    ct_assert_absent(&h1, other); /* all or nothing */

    /* The exclusive-only calls: there is no exclusive hold (-ENOLCK). */
    char sentinel_c;
    char *o = &sentinel_c;
    struct timeval tv = {777, 888};
    assert_rc(dss_lock_status(&h1, id, &o, &tv), -ENOLCK);
    assert_ptr_equal(o, &sentinel_c);
    assert_int_equal(tv.tv_sec, 777);
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(&h1, id, &info), -ENOLCK);
    assert_null(info.owner);
    assert_rc(dss_lock_refresh(&h1, id, "r1"), -ENOLCK);
    assert_rc(dss_lock_refresh(&h1, id, "w"), -ENOLCK);
    assert_rc(dss_unlock(&h1, id, "r1"), -ENOLCK);
    assert_rc(dss_unlock(&h1, id, "r2"), -ENOLCK);
    assert_rc(dss_unlock(&h1, id, NULL), -ENOLCK); /* leaves shared holders alone */
    const char *both[] = {"r1", "r2"};
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, both, 2);

    /* Holders: owner, mode, permits, token, start and lease of each. */
    struct dss_holder *hs;
    size_t n = holders_of(&h2, id, 0, &hs);
    assert_int_equal(n, 2);
    assert_string_equal(hs[0].owner, "r1");
    assert_int_equal(hs[0].mode, DSS_MODE_SHARED);
    assert_int_equal(hs[0].permits, 1);
    assert_int_equal(hs[0].token, t1);
    assert_int_equal(hs[0].expires_in_ms, -1); /* no lease */
    assert_string_equal(hs[1].owner, "r2");
    assert_int_equal(hs[1].token, t2);
    assert_true(hs[1].expires_in_ms > 0 && hs[1].expires_in_ms <= (int64_t)LONG_TTL);
    for (size_t i = 0; i < n; i++) {
        int64_t skew = ct_tv_us(&hs[i].locked_at) - ct_wall_us();
        assert_true(hs[i].locked_at.tv_usec >= 0 && hs[i].locked_at.tv_usec < 1000000);
        assert_true(skew > -60 * 1000000LL && skew < 60 * 1000000LL);
    }
    dss_holders_free(hs, n);

    /* Shared tokens are live tokens. */
    assert_rc(dss_lock_check(&h1, id, t1), 0);
    assert_rc(dss_lock_check(&h1, id, t2), 0);
    assert_rc(dss_lock_check(&h1, id, 0), -ESTALE);
    assert_int_equal(is_held_sql(id, t1), 1);
    assert_int_equal(is_held_sql(id, t2), 1);

    /* Refresh: the lease is extended, the token kept. */
    assert_rc(dss_lock_shared_refresh(&h1, id, "r2"), 0);
    assert_rc(dss_lock_shared_refresh(&h1, id, "r1"), 0); /* no lease: timestamp only */
    assert_rc(dss_lock_shared_refresh(&h1, id, "nobody"), -ENOLCK);
    assert_rc(dss_lock_shared_refresh(&h1, other, "r1"), -ENOLCK);
    assert_rc(dss_lock_check(&h1, id, t2), 0);

    /* Release, one by one; the last one out frees the id. */
    assert_rc(dss_unlock_shared(&h1, id, "nobody"), -ENOLCK);
    assert_rc(dss_unlock_shared(&h1, other, "r1"), -ENOLCK);
    assert_rc(dss_unlock_shared(&h1, id, "r1"), 0);
    assert_rc(dss_lock_check(&h1, id, t1), -ESTALE);
    assert_int_equal(is_held_sql(id, t1), 0);
    assert_rc(dss_unlock_shared(&h1, id, "r1"), -ENOLCK);
    assert_rc(dss_lock_shared_refresh(&h1, id, "r1"), -ENOLCK);
    assert_rc(dss_lock(&h2, id, "w"), -EEXIST); /* r2 still holds it */
    assert_rc(dss_unlock_shared(&h2, id, "r2"), 0);
    assert_int_equal(history_count(id, "shared_release"), 2);
    size_t n0 = 777;
    hs = (struct dss_holder *)&sentinel_c;
    assert_rc(dss_lock_holders(&h1, id, &hs, &n0), -ENOLCK);
    assert_ptr_equal(hs, (struct dss_holder *)&sentinel_c);
    assert_int_equal(n0, 777);
    assert_int_equal(rows_about(id), 0);

    /* Held exclusively: shared requests are refused. */
    uint64_t tw = SENTINEL;
    assert_rc(dss_lock_lease(&h1, id, "w", LONG_TTL, &tw), 0);
    assert_true(tw > t2);
    const char *w[] = {"w"};
    assert_lock_holders(&h2, id, DSS_MODE_EXCLUSIVE, w, 1);
    n = holders_of(&h2, id, 0, &hs);
    assert_int_equal(hs[0].token, tw);
    assert_true(hs[0].expires_in_ms > 0 && hs[0].expires_in_ms <= (int64_t)LONG_TTL);
    dss_holders_free(hs, n);
    t = SENTINEL;
    assert_rc(dss_lock_shared(&h2, id, "r3", 0, 0, &t), -EEXIST);
    assert_true(ct_contains(dss_last_error(), id));
    assert_rc(dss_lock_shared(&h2, id, "w", 0, 0, &t), -EALREADY); /* holds it exclusively */
    assert_rc(dss_lock_shared(&h2, id, "w", 0, 5000, &t), -EALREADY);
    t0 = ct_now_ms();
    assert_rc(dss_lock_shared(&h2, id, "r3", LONG_TTL, 300, &t), -ETIMEDOUT);
    double elapsed = ct_now_ms() - t0;
    if (elapsed < 300 || elapsed >= 1300)
        fail_msg("dss_lock_shared(timeout 300) returned after %.1f ms", elapsed);
    assert_int_equal(t, SENTINEL);
    assert_int_equal(ct_waiters(id), 0); /* it left the queue */
    assert_rc(dss_unlock_shared(&h2, id, "w"), -ENOLCK);       /* not a shared hold */
    assert_rc(dss_lock_shared_refresh(&h2, id, "w"), -ENOLCK); /* idem */
    assert_int_equal(token_of(&h1, id), tw);                   /* untouched */
    assert_rc(dss_unlock(&h1, id, "w"), 0);

    /* Forced release of every shared holder. */
    assert_rc(dss_unlock_shared(&h1, id, NULL), -ENOLCK); /* nobody */
    assert_rc(dss_lock_shared(&h1, id, "r4", 0, 0, NULL), 0);
    assert_rc(dss_lock_shared(&h2, id, "r5", LONG_TTL, 0, NULL), 0);
    assert_rc(dss_unlock_shared(&h2, id, NULL), 0);
    assert_rc(dss_lock_holders(&h1, id, &hs, &n0), -ENOLCK);
    assert_rc(dss_unlock_shared(&h2, id, NULL), -ENOLCK);
    assert_int_equal(history_count(id, "shared_force_release"), 2);
    assert_rc(dss_lock(&h1, id, "w"), 0); /* free */
    assert_rc(dss_unlock(&h1, id, "w"), 0);
    assert_int_equal(rows_about(id), 0);
}

/* Shared leases end: -ETIME, takeovers, a hold without a lease. */
static void test_shared_expiry(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "expiry");
    uint64_t t1 = 0, t2 = 0;
    assert_rc(dss_lock_shared(&h1, id, "r1", LONG_TTL, 0, &t1), 0);
    assert_rc(dss_lock_shared(&h1, id, "r2", LONG_TTL, 0, &t2), 0);

    /* One share ends: it is no longer a holder; the other one is. */
    expire_share(id, "r1");
    assert_rc(dss_lock_check(&h1, id, t1), -ESTALE);
    assert_int_equal(is_held_sql(id, t1), 0);
    assert_rc(dss_lock_check(&h1, id, t2), 0);
    const char *r2[] = {"r2"};
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, r2, 1);
    assert_rc(dss_lock_shared_refresh(&h1, id, "r1"), -ETIME);
    assert_rc(dss_lock_shared_refresh(&h1, id, "r1"), -ETIME); /* nothing changed */
    assert_rc(dss_lock_check(&h1, id, t1), -ESTALE);
    assert_rc(dss_unlock_shared(&h1, id, "r1"), -ETIME); /* removed all the same */
    assert_rc(dss_unlock_shared(&h1, id, "r1"), -ENOLCK);
    assert_rc(dss_lock_shared_refresh(&h1, id, "r1"), -ENOLCK);

    /* Every share ends: the id is free for the exclusive path. */
    expire_share(id, NULL);
    assert_rc(dss_lock_check(&h1, id, t2), -ESTALE);
    size_t n = 0;
    struct dss_holder *hs = NULL;
    assert_rc(dss_lock_holders(&h2, id, &hs, &n), -ENOLCK);
    uint64_t tw = 0;
    assert_rc(dss_lock_lease(&h2, id, "w", LONG_TTL, &tw), 0);
    assert_true(tw > t2);
    assert_rc(dss_lock_shared_refresh(&h1, id, "r2"), -ETIME);
    assert_rc(dss_unlock_shared(&h1, id, "r2"), -ETIME); /* its old row, removed */
    assert_rc(dss_unlock_shared(&h1, id, "r2"), -ENOLCK);
    ct_assert_held(&h1, id, "w");

    /* An expired exclusive lease is taken over by a shared request, its
     * former holder's included (it holds nothing: no -EALREADY). */
    assert_int_equal(ct_expire(id), 1);
    uint64_t ts = 0;
    assert_rc(dss_lock_shared(&h1, id, "w", 0, 0, &ts), 0);
    assert_true(ts > tw);
    assert_rc(dss_lock_check(&h1, id, tw), -ESTALE);
    assert_int_equal(history_count(id, "shared_takeover"), 1);
    const char *w[] = {"w"};
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, w, 1);
    assert_rc(dss_unlock_shared(&h1, id, "w"), 0);

    /* A share without a lease keeps the id held, whatever the others do. */
    assert_rc(dss_lock_shared(&h1, id, "forever", 0, 0, NULL), 0);
    assert_rc(dss_lock_shared(&h1, id, "brief", LONG_TTL, 0, NULL), 0);
    expire_share(id, NULL);
    assert_rc(dss_lock(&h2, id, "x"), -EEXIST);
    const char *forever[] = {"forever"};
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, forever, 1);
    assert_rc(dss_unlock_shared(&h1, id, NULL), 0);
    assert_rc(dss_unlock_shared(&h1, id, NULL), -ENOLCK);
    assert_rc(dss_lock(&h2, id, "x"), 0);
    assert_rc(dss_unlock(&h2, id, "x"), 0);
}

/* A queued exclusive request blocks later shared ones (-EEXIST with
 * timeout 0, -ETIMEDOUT with one) although the id is only held shared. */
static void test_shared_behind_queued_writer(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "queued-writer");
    uint64_t t0_tok = 0;
    assert_rc(dss_lock_shared(&h1, id, "r0", 0, 0, &t0_tok), 0);
    struct actor *a = actors_new(1);
    actor_start(&a[0], ACT_WAIT, id, "W", 0, WAIT_MS);
    assert_int_equal(await_waiters(id, 1), 0);
    assert_int_equal(atomic_load(&a[0].state), ST_CALLING); /* waiting */

    uint64_t t = SENTINEL;
    assert_rc(dss_lock_shared(&h2, id, "late", 0, 0, &t), -EEXIST);
    double t0 = ct_now_ms();
    assert_rc(dss_lock_shared(&h2, id, "late", 0, 300, &t), -ETIMEDOUT);
    assert_true(ct_now_ms() - t0 >= 300);
    assert_int_equal(t, SENTINEL);
    assert_int_equal(ct_waiters(id), 1); /* "late" left the queue, W did not */
    /* r0 holds it: -EALREADY, not -EEXIST. */
    assert_rc(dss_lock_shared(&h2, id, "r0", 0, 0, &t), -EALREADY);
    const char *r0[] = {"r0"};
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, r0, 1);

    assert_rc(dss_unlock_shared(&h1, id, "r0"), 0);
    actor_await(&a[0], ST_RETURNED);
    assert_rc(a[0].rc, 0);
    assert_true(a[0].token > t0_tok);
    const char *w[] = {"W"};
    assert_lock_holders(&h2, id, DSS_MODE_EXCLUSIVE, w, 1);
    actor_release(&a[0]);
    assert_int_equal(rows_about(id), 0);
    munmap(a, sizeof *a);
}

/* ---- downgrade ------------------------------------------------------------ */

static void test_downgrade_codes(void **state)
{
    (void)state;
    char id[128], id2[128];
    ct_id(id, sizeof id, "down");
    ct_id(id2, sizeof id2, "down-nolease");
    uint64_t t = SENTINEL;
    assert_rc(dss_lock_downgrade(&h1, id, "w", &t), -ENOLCK); /* free */
    assert_int_equal(t, SENTINEL);
    assert_int_equal(rows_about(id), 0);

    uint64_t tw = 0;
    assert_rc(dss_lock_lease(&h1, id, "w", LONG_TTL, &tw), 0);
    assert_rc(dss_lock_downgrade(&h2, id, "x", &t), -EACCES);
    assert_true(ct_contains(dss_last_error(), "dss_lock_downgrade"));
    assert_int_equal(t, SENTINEL);
    ct_assert_held(&h2, id, "w");
    assert_int_equal(token_of(&h2, id), tw);

    uint64_t td = SENTINEL;
    assert_rc(dss_lock_downgrade(&h1, id, "w", &td), 0);
    assert_true(td != SENTINEL && td > tw); /* a new token */
    assert_rc(dss_lock_check(&h2, id, tw), -ESTALE);
    assert_rc(dss_lock_check(&h2, id, td), 0);
    assert_int_equal(is_held_sql(id, td), 1);
    assert_int_equal(is_held_sql(id, tw), 0);
    assert_int_equal(history_count(id, "downgrade"), 1);
    struct dss_holder *hs;
    size_t n = holders_of(&h2, id, 0, &hs);
    assert_int_equal(n, 1);
    assert_string_equal(hs[0].owner, "w");
    assert_int_equal(hs[0].mode, DSS_MODE_SHARED);
    assert_int_equal(hs[0].token, td);
    /* The lease is kept. */
    assert_true(hs[0].expires_in_ms > 0 && hs[0].expires_in_ms <= (int64_t)LONG_TTL);
    dss_holders_free(hs, n);
    ct_assert_absent(&h2, id); /* no exclusive holder any more */
    assert_rc(dss_lock(&h2, id, "x"), -EEXIST);
    assert_rc(dss_lock_shared(&h2, id, "r", 0, 0, NULL), 0); /* readers get in */
    assert_rc(dss_lock_shared(&h2, id, "w", 0, 0, NULL), -EALREADY);
    /* Held shared: not exclusively, so -ENOLCK, for anyone. */
    assert_rc(dss_lock_downgrade(&h1, id, "w", &t), -ENOLCK);
    assert_rc(dss_lock_downgrade(&h1, id, "x", &t), -ENOLCK);
    assert_rc(dss_lock_downgrade(&h1, id, "r", &t), -ENOLCK);
    assert_int_equal(t, SENTINEL);
    assert_rc(dss_lock_shared_refresh(&h1, id, "w"), 0);
    assert_rc(dss_unlock_shared(&h1, id, "w"), 0);
    assert_rc(dss_unlock_shared(&h1, id, "r"), 0);
    assert_int_equal(rows_about(id), 0);

    /* An expired lease cannot be downgraded. */
    assert_rc(dss_lock_lease(&h1, id, "w", LONG_TTL, NULL), 0);
    assert_int_equal(ct_expire(id), 1);
    size_t n0 = 0;
    assert_rc(dss_lock_holders(&h2, id, &hs, &n0), -ENOLCK);
    assert_rc(dss_lock_downgrade(&h1, id, "w", &t), -ENOLCK);
    assert_int_equal(t, SENTINEL);
    assert_rc(dss_lock(&h2, id, "x"), 0); /* it was free, not held shared */
    assert_rc(dss_unlock(&h2, id, "x"), 0);

    /* A lock without a lease; NULL token. */
    assert_rc(dss_lock(&h1, id2, "p"), 0);
    assert_rc(dss_lock_downgrade(&h1, id2, "p", NULL), 0);
    n = holders_of(&h1, id2, 0, &hs);
    assert_int_equal(n, 1);
    assert_string_equal(hs[0].owner, "p");
    assert_int_equal(hs[0].mode, DSS_MODE_SHARED);
    assert_int_equal(hs[0].expires_in_ms, -1);
    dss_holders_free(hs, n);
    assert_rc(dss_unlock_shared(&h1, id2, "p"), 0);
    assert_int_equal(rows_about(id2), 0);
}

/* ---- semaphores ----------------------------------------------------------- */

static void test_sem_codes(void **state)
{
    (void)state;
    char id[128], big[128];
    ct_id(id, sizeof id, "sem");
    ct_id(big, sizeof big, "sem-big");
    const struct {
        uint32_t permits, capacity;
        uint64_t ttl;
        const char *why;
    } bad[] = {
        {0, 2, 1000, "permits"},
        {3, 2, 1000, "permits"},
        {1, 0, 1000, "capacity"},
        {1, (uint32_t)INT32_MAX + 1, 1000, "capacity"},
        {1, 2, 0, "ttl"},
        {1, 2, DSS_MAX_TTL_MS + 1, "ttl"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t t = SENTINEL;
        int rc = dss_sem_acquire(&h1, id, "a", bad[i].permits, bad[i].capacity, bad[i].ttl, 0,
                                 &t);
        if (rc != -EINVAL || !ct_contains(dss_last_error(), bad[i].why))
            fail_msg("dss_sem_acquire(permits %" PRIu32 ", capacity %" PRIu32 ", ttl %" PRIu64
                     ") = %d (%s): %s",
                     bad[i].permits, bad[i].capacity, bad[i].ttl, rc, ct_errname(rc),
                     dss_last_error());
        assert_int_equal(t, SENTINEL);
    }
    assert_int_equal(rows_about(id), 0);

    uint64_t ta = SENTINEL, tb = SENTINEL, t = SENTINEL;
    assert_rc(dss_sem_acquire(&h1, id, "a", 1, 3, LONG_TTL, 0, &ta), 0);
    assert_rc(dss_sem_acquire(&h2, id, "b", 2, 3, LONG_TTL, UINT64_MAX, &tb), 0);
    assert_true(ta != SENTINEL && tb > ta);
    /* Full. */
    assert_rc(dss_sem_acquire(&h2, id, "c", 1, 3, LONG_TTL, 0, &t), -EEXIST);
    double t0 = ct_now_ms();
    assert_rc(dss_sem_acquire(&h2, id, "c", 1, 3, LONG_TTL, 300, &t), -ETIMEDOUT);
    double elapsed = ct_now_ms() - t0;
    if (elapsed < 300 || elapsed >= 1300)
        fail_msg("dss_sem_acquire(timeout 300) returned after %.1f ms", elapsed);
    assert_int_equal(ct_waiters(id), 0);
    /* No reentrancy. */
    t0 = ct_now_ms();
    assert_rc(dss_sem_acquire(&h2, id, "a", 1, 3, LONG_TTL, 0, &t), -EALREADY);
    assert_rc(dss_sem_acquire(&h2, id, "a", 1, 3, LONG_TTL, 5000, &t), -EALREADY);
    assert_true(ct_now_ms() - t0 < 4000);
    /* Another capacity while it has holders. */
    assert_rc(dss_sem_acquire(&h2, id, "c", 1, 4, LONG_TTL, 0, &t), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "capacity"));
    assert_rc(dss_sem_acquire(&h2, id, "c", 1, 2, LONG_TTL, 5000, &t), -EINVAL);
    assert_int_equal(t, SENTINEL);

    struct dss_holder *hs;
    size_t n = holders_of(&h2, id, 1, &hs);
    assert_int_equal(n, 2);
    assert_string_equal(hs[0].owner, "a");
    assert_int_equal(hs[0].mode, DSS_MODE_SEMAPHORE);
    assert_int_equal(hs[0].permits, 1);
    assert_int_equal(hs[0].token, ta);
    assert_string_equal(hs[1].owner, "b");
    assert_int_equal(hs[1].permits, 2);
    assert_int_equal(hs[1].token, tb);
    for (size_t i = 0; i < n; i++)
        assert_true(hs[i].expires_in_ms > 0 && hs[i].expires_in_ms <= (int64_t)LONG_TTL);
    dss_holders_free(hs, n);
    assert_int_equal(sql_ll("SELECT capacity FROM dss.sems WHERE id = %s", id), 3);

    /* A lock of the same name is another thing. */
    size_t n0 = 0;
    assert_rc(dss_lock_holders(&h1, id, &hs, &n0), -ENOLCK);
    assert_rc(dss_lock(&h1, id, "x"), 0);
    const char *x[] = {"x"};
    assert_lock_holders(&h1, id, DSS_MODE_EXCLUSIVE, x, 1);
    assert_rc(dss_unlock(&h1, id, "x"), 0);
    assert_rc(dss_sem_holders(&h1, big, &hs, &n0), -ENOLCK);

    /* Refresh and release. */
    assert_rc(dss_sem_refresh(&h1, id, "a"), 0);
    assert_rc(dss_sem_refresh(&h1, id, "z"), -ENOLCK);
    assert_rc(dss_sem_refresh(&h1, big, "a"), -ENOLCK);
    assert_rc(dss_sem_release(&h1, id, "b"), 0);
    assert_rc(dss_sem_release(&h1, id, "b"), -ENOLCK);
    assert_rc(dss_sem_release(&h1, big, "b"), -ENOLCK);
    assert_rc(dss_sem_acquire(&h2, id, "c", 2, 3, LONG_TTL, 0, NULL), 0);

    /* An ended lease gives the permits back. */
    expire_permit(id, "a");
    assert_rc(dss_sem_refresh(&h1, id, "a"), -ETIME);
    assert_rc(dss_sem_refresh(&h1, id, "a"), -ETIME); /* nothing changed */
    n = holders_of(&h1, id, 1, &hs);
    assert_int_equal(n, 1);
    assert_string_equal(hs[0].owner, "c");
    dss_holders_free(hs, n);
    assert_rc(dss_sem_release(&h1, id, "a"), -ETIME); /* removed all the same */
    assert_rc(dss_sem_release(&h1, id, "a"), -ENOLCK);
    assert_rc(dss_sem_acquire(&h1, id, "a", 1, 3, LONG_TTL, 0, NULL), 0); /* back */
    expire_permit(id, "a");
    /* Its own expired hold does not make the owner a holder (-EALREADY). */
    assert_rc(dss_sem_acquire(&h1, id, "a", 1, 3, LONG_TTL, 0, NULL), 0);
    assert_rc(dss_sem_acquire(&h1, id, "d", 1, 3, LONG_TTL, 0, NULL), -EEXIST);

    /* Forced release of every holder. */
    assert_rc(dss_sem_release(&h2, id, NULL), 0);
    assert_rc(dss_sem_holders(&h2, id, &hs, &n0), -ENOLCK);
    assert_rc(dss_sem_release(&h2, id, NULL), -ENOLCK);
    assert_rc(dss_sem_release(&h2, big, NULL), -ENOLCK);
    assert_true(history_count(id, "sem_force_release") >= 2);

    /* No holders: the next acquisition sets the capacity anew. */
    assert_rc(dss_sem_acquire(&h1, id, "e", 5, 5, LONG_TTL, 0, NULL), 0);
    n = holders_of(&h1, id, 1, &hs);
    assert_int_equal(hs[0].permits, 5);
    dss_holders_free(hs, n);
    assert_rc(dss_sem_release(&h1, id, "e"), 0);
    assert_int_equal(rows_about(id), 0);

    /* The largest capacity and hold; the longest lease. */
    uint64_t tbig = SENTINEL;
    assert_rc(dss_sem_acquire(&h1, big, "huge", INT32_MAX, INT32_MAX, DSS_MAX_TTL_MS, 0, &tbig),
              0);
    n = holders_of(&h1, big, 1, &hs);
    assert_int_equal(hs[0].permits, (uint32_t)INT32_MAX);
    assert_int_equal(hs[0].token, tbig);
    assert_true(hs[0].expires_in_ms > (int64_t)DSS_MAX_TTL_MS - 60000);
    dss_holders_free(hs, n);
    assert_rc(dss_sem_acquire(&h1, big, "more", 1, INT32_MAX, 1000, 0, NULL), -EEXIST);
    assert_rc(dss_sem_release(&h1, big, "huge"), 0);
    assert_int_equal(rows_about(big), 0);
}

/* First come, first served: a request for 2 permits queued first is not
 * overtaken by a later request for 1, although 1 would fit. */
static void test_sem_fifo(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "sem-fifo");
    assert_rc(dss_sem_acquire(&h1, id, "a", 1, 2, LONG_TTL, 0, NULL), 0);
    struct actor *a = actors_new(1);
    a[0].permits = 2;
    a[0].capacity = 2;
    actor_start(&a[0], ACT_SEM, id, "big", LONG_TTL, WAIT_MS);
    assert_int_equal(await_waiters(id, 1), 0);
    uint64_t t = SENTINEL;
    assert_rc(dss_sem_acquire(&h2, id, "small", 1, 2, LONG_TTL, 0, &t), -EEXIST);
    assert_rc(dss_sem_acquire(&h2, id, "small", 1, 2, LONG_TTL, 300, &t), -ETIMEDOUT);
    assert_int_equal(t, SENTINEL);
    assert_int_equal(atomic_load(&a[0].state), ST_CALLING);
    double t_rel = ct_now_ms();
    assert_rc(dss_sem_release(&h1, id, "a"), 0);
    actor_await(&a[0], ST_RETURNED);
    assert_rc(a[0].rc, 0);
    assert_true(a[0].t_ret >= t_rel);
    struct dss_holder *hs;
    size_t n = holders_of(&h2, id, 1, &hs);
    assert_int_equal(n, 1);
    assert_string_equal(hs[0].owner, "big");
    assert_int_equal(hs[0].permits, 2);
    assert_int_equal(hs[0].token, a[0].token);
    dss_holders_free(hs, n);
    actor_release(&a[0]);
    assert_int_equal(rows_about(id), 0);
    munmap(a, sizeof *a);
}

static void test_holders_free(void **state)
{
    (void)state;
    dss_holders_free(NULL, 0);
    dss_holders_free(NULL, 5);
    /* An empty-looking but real array. */
    char id[128];
    ct_id(id, sizeof id, "free");
    assert_rc(dss_lock(&h1, id, "o"), 0);
    struct dss_holder *hs;
    size_t n = holders_of(&h1, id, 0, &hs);
    assert_int_equal(n, 1);
    assert_int_equal(hs[0].mode, DSS_MODE_EXCLUSIVE);
    assert_int_equal(hs[0].expires_in_ms, -1);
    dss_holders_free(hs, n);
    assert_rc(dss_unlock(&h1, id, "o"), 0);
}

/* ---- 2. several readers and a writer, across processes -------------------- */

static void test_readers_then_writer(void **state)
{
    (void)state;
    enum { R = 3 };
    char id[128];
    ct_id(id, sizeof id, "rw");
    struct actor *a = actors_new(R + 1);
    struct actor *w = &a[R];
    const char *owners[R] = {"reader-0", "reader-1", "reader-2"};
    for (int k = 0; k < R; k++)
        actor_start(&a[k], ACT_SHARED, id, owners[k], k == 0 ? 0 : LONG_TTL, 0);
    for (int k = 0; k < R; k++) {
        actor_await(&a[k], ST_RETURNED);
        assert_rc(a[k].rc, 0);
    }
    /* They hold it together. */
    struct dss_holder *hs;
    size_t n = holders_of(&h1, id, 0, &hs);
    assert_int_equal(n, R);
    for (int k = 0; k < R; k++) {
        const struct dss_holder *x = find_holder(hs, n, owners[k]);
        assert_non_null(x);
        assert_int_equal(x->mode, DSS_MODE_SHARED);
        assert_int_equal(x->token, a[k].token);
    }
    dss_holders_free(hs, n);

    actor_start(w, ACT_WAIT, id, "writer", 0, WAIT_MS);
    assert_int_equal(await_waiters(id, 1), 0);
    for (int k = 0; k < R; k++) {
        assert_int_equal(atomic_load(&w->state), ST_CALLING); /* still waiting */
        actor_release(&a[k]);
        if (k < R - 1) {
            /* Readers left: the writer still waits. */
            struct dss_holder *left;
            size_t m = holders_of(&h1, id, 0, &left);
            assert_int_equal(m, R - 1 - k);
            for (size_t i = 0; i < m; i++)
                assert_int_equal(left[i].mode, DSS_MODE_SHARED);
            dss_holders_free(left, m);
            assert_int_equal(ct_waiters(id), 1);
        }
    }
    actor_await(w, ST_RETURNED);
    assert_rc(w->rc, 0);
    printf("writer got the lock %.1f ms after the last reader began to release it\n",
           w->t_ret - a[R - 1].t_release);
    /* Not before the last reader released it. */
    assert_true(w->t_ret >= a[R - 1].t_release);
    for (int k = 0; k < R; k++)
        assert_true(w->token > a[k].token);
    const char *wo[] = {"writer"};
    assert_lock_holders(&h1, id, DSS_MODE_EXCLUSIVE, wo, 1);
    ct_assert_held(&h2, id, "writer");
    assert_rc(dss_lock_shared(&h2, id, "reader-0", 0, 0, NULL), -EEXIST);
    actor_release(w);
    assert_int_equal(rows_about(id), 0);
    munmap(a, sizeof *a * (R + 1));
}

/* ---- 3. no writer starvation under a stream of readers -------------------- */

struct stream {
    char id[160];
    atomic_int stop;
    atomic_int attempts;
    atomic_int refused;
    atomic_int other; /* any other result: a reader overtook the writer */
};

/* New readers, one after the other, each trying once (timeout 0). */
static int stream_main(void *arg)
{
    struct stream *s = arg;
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    for (int i = 0; !atomic_load(&s->stop); i++) {
        char owner[64];
        snprintf(owner, sizeof owner, "stream-%d", i);
        uint64_t t = SENTINEL;
        int rc = dss_lock_shared(&h, s->id, owner, 0, 0, &t);
        if (rc == -EEXIST) {
            atomic_fetch_add(&s->refused, 1);
            CHECK(t == SENTINEL);
        } else {
            atomic_fetch_add(&s->other, 1);
            fprintf(stderr, "stream reader %s: %d (%s), expected -EEXIST: %s\n", owner, rc,
                    ct_errname(rc), dss_last_error());
            if (rc == 0)
                dss_unlock_shared(&h, s->id, owner);
        }
        atomic_fetch_add(&s->attempts, 1);
    }
    dss_fini(&h);
    return 0;
}

static void test_no_writer_starvation(void **state)
{
    (void)state;
    enum { T = 3 };
    char id[128];
    ct_id(id, sizeof id, "starve");
    uint64_t t0_tok = 0;
    assert_rc(dss_lock_shared(&h1, id, "r0", 0, 0, &t0_tok), 0);

    struct actor *a = actors_new(T + 1);
    struct actor *w = &a[T];
    actor_start(w, ACT_WAIT, id, "writer", 0, WAIT_MS);
    assert_int_equal(await_waiters(id, 1), 0);

    /* Readers keep coming: once, with timeout 0, from a stream... */
    struct stream *s = ct_shared(sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", id);
    pid_t stream_pid = spawn(stream_main, s);
    assert_int_equal(await_at_least(&s->attempts, 10, QUEUE_TIMEOUT), 0);
    /* ... and with a timeout: they queue behind the writer. */
    const char *towners[T] = {"timed-0", "timed-1", "timed-2"};
    for (int k = 0; k < T; k++) {
        actor_start(&a[k], ACT_SHARED, id, towners[k], 0, WAIT_MS);
        assert_int_equal(await_waiters(id, 2 + k), 0);
    }
    for (int k = 0; k < T; k++)
        assert_int_equal(atomic_load(&a[k].state), ST_CALLING);
    const char *r0[] = {"r0"};
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, r0, 1); /* nobody joined r0 */

    /* The reader present when the writer queued leaves: the writer gets in. */
    int before = atomic_load(&s->attempts);
    assert_rc(dss_unlock_shared(&h1, id, "r0"), 0);
    actor_await(w, ST_RETURNED);
    assert_rc(w->rc, 0);
    assert_true(w->token > t0_tok);
    const char *wo[] = {"writer"};
    assert_lock_holders(&h2, id, DSS_MODE_EXCLUSIVE, wo, 1);
    /* The stream goes on while the writer holds it; the timed readers wait. */
    assert_int_equal(await_at_least(&s->attempts, atomic_load(&s->attempts) + 10, QUEUE_TIMEOUT),
                     0);
    assert_int_equal(ct_waiters(id), T);
    for (int k = 0; k < T; k++)
        assert_int_equal(atomic_load(&a[k].state), ST_CALLING);
    atomic_store(&s->stop, 1);
    assert_int_equal(child_join(stream_pid, 60), 0);
    printf("stream: %d readers tried (%d while r0 held it, then the writer), %d refused, "
           "%d otherwise\n",
           atomic_load(&s->attempts), before, atomic_load(&s->refused),
           atomic_load(&s->other));
    assert_int_equal(atomic_load(&s->other), 0);
    assert_int_equal(atomic_load(&s->refused), atomic_load(&s->attempts));
    assert_true(before >= 10);

    /* The writer leaves: the timed readers enter, together. */
    actor_release(w);
    for (int k = 0; k < T; k++) {
        actor_await(&a[k], ST_RETURNED);
        assert_rc(a[k].rc, 0);
        assert_true(a[k].token > w->token);
        assert_true(a[k].t_ret >= w->t_release);
    }
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, towners, T);
    for (int k = 0; k < T; k++)
        actor_release(&a[k]);
    assert_int_equal(rows_about(id), 0);
    munmap(s, sizeof *s);
    munmap(a, sizeof *a * (T + 1));
}

/* ---- 4. readers queued behind a writer enter together --------------------- */

static void test_readers_enter_together(void **state)
{
    (void)state;
    enum { R = 4 };
    char id[128];
    ct_id(id, sizeof id, "together");
    assert_rc(dss_lock(&h1, id, "holder"), 0);
    struct actor *a = actors_new(R + 1);
    struct actor *w = &a[R];
    actor_start(w, ACT_WAIT, id, "writer", 0, WAIT_MS);
    assert_int_equal(await_waiters(id, 1), 0);
    const char *owners[R] = {"reader-0", "reader-1", "reader-2", "reader-3"};
    for (int k = 0; k < R; k++) {
        actor_start(&a[k], ACT_SHARED, id, owners[k], k % 2 ? LONG_TTL : 0, WAIT_MS);
        assert_int_equal(await_waiters(id, 2 + k), 0);
    }
    /* The holder leaves: only the writer, first in line, gets in. */
    assert_rc(dss_unlock(&h1, id, "holder"), 0);
    actor_await(w, ST_RETURNED);
    assert_rc(w->rc, 0);
    const char *wo[] = {"writer"};
    assert_lock_holders(&h2, id, DSS_MODE_EXCLUSIVE, wo, 1);
    assert_int_equal(ct_waiters(id), R);
    for (int k = 0; k < R; k++)
        assert_int_equal(atomic_load(&a[k].state), ST_CALLING);

    /* The writer leaves: every reader gets in, and all hold it at once. */
    actor_release(w);
    for (int k = 0; k < R; k++) {
        actor_await(&a[k], ST_RETURNED);
        assert_rc(a[k].rc, 0);
        assert_true(a[k].token > w->token);
        assert_true(a[k].t_ret >= w->t_release);
    }
    double first = a[0].t_ret, last = a[0].t_ret;
    for (int k = 1; k < R; k++) {
        first = a[k].t_ret < first ? a[k].t_ret : first;
        last = a[k].t_ret > last ? a[k].t_ret : last;
    }
    printf("%d readers got in within %.1f ms of each other, %.1f ms after the writer's "
           "release\n",
           R, last - first, first - w->t_released);
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, owners, R);
    assert_int_equal(ct_waiters(id), 0);
    assert_rc(dss_lock(&h2, id, "x"), -EEXIST);
    for (int k = 0; k < R; k++)
        assert_rc(dss_lock_check(&h2, id, a[k].token), 0);
    for (int k = 0; k < R; k++)
        actor_release(&a[k]);
    assert_int_equal(rows_about(id), 0);
    munmap(a, sizeof *a * (R + 1));
}

/* ---- 5. downgrade lets a waiting reader in at once ------------------------ */

#define DEEP_HOLD_MS 1500.0

static void test_downgrade_reader_joins(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "down-join");
    uint64_t tw = 0;
    assert_rc(dss_lock_lease(&h1, id, "w", LONG_TTL, &tw), 0);
    struct actor *a = actors_new(1);
    /* Its wait is far shorter than the writer's lease: only the downgrade
     * can let it in. */
    actor_start(&a[0], ACT_SHARED, id, "r", 0, 30000);
    assert_int_equal(await_waiters(id, 1), 0);
    /* The writer keeps it a while: the reader's fallback timer (200 ms,
     * doubling) is then far away, so a grant within a second of the
     * downgrade comes from the downgrade's wake-up. */
    nap_ms(DEEP_HOLD_MS); /* the scenario: a writer that holds the lock a while */
    assert_int_equal(atomic_load(&a[0].state), ST_CALLING);
    const char *wo[] = {"w"};
    assert_lock_holders(&h2, id, DSS_MODE_EXCLUSIVE, wo, 1);

    double t_down = ct_now_ms();
    uint64_t td = SENTINEL;
    assert_rc(dss_lock_downgrade(&h1, id, "w", &td), 0);
    actor_await(&a[0], ST_RETURNED);
    assert_rc(a[0].rc, 0);
    double lat = a[0].t_ret - t_down;
    printf("reader granted %.1f ms after the downgrade began\n", lat);
    assert_true(a[0].t_ret >= t_down);
    if (lat >= 1000)
        fail_msg("the reader got in %.1f ms after the downgrade: not at once", lat);
    assert_true(td > tw && a[0].token > td);
    /* The downgraded owner still holds it shared, with its lease. */
    struct dss_holder *hs;
    size_t n = holders_of(&h2, id, 0, &hs);
    assert_int_equal(n, 2);
    assert_string_equal(hs[0].owner, "w");
    assert_int_equal(hs[0].mode, DSS_MODE_SHARED);
    assert_int_equal(hs[0].token, td);
    assert_true(hs[0].expires_in_ms > 0);
    assert_string_equal(hs[1].owner, "r");
    assert_int_equal(hs[1].mode, DSS_MODE_SHARED);
    assert_int_equal(hs[1].token, a[0].token);
    dss_holders_free(hs, n);
    assert_rc(dss_lock_check(&h2, id, tw), -ESTALE);
    assert_rc(dss_lock_check(&h2, id, td), 0);
    assert_rc(dss_lock_check(&h2, id, a[0].token), 0);
    assert_rc(dss_lock(&h2, id, "x"), -EEXIST);
    assert_rc(dss_unlock_shared(&h1, id, "w"), 0);
    actor_release(&a[0]);
    assert_int_equal(rows_about(id), 0);
    munmap(a, sizeof *a);
}

/* ---- 6. a semaphore of capacity 2 under 8 processes ------------------------ */

#define SEM_PROCS 8
#define SEM_ITERS 12
#define SEM_CAP   2
#define SEM_HOLD_MS 20.0

struct sem_run {
    pthread_barrier_t barrier;
    char id[160];
    atomic_int inside; /* holders right now */
    atomic_int max;    /* most holders seen at once */
    atomic_int paired; /* someone saw SEM_CAP holders at once */
    atomic_int rounds;
    atomic_int index;
};

static int sem_child(void *arg)
{
    struct sem_run *r = arg;
    int k = atomic_fetch_add(&r->index, 1);
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    char owner[64];
    snprintf(owner, sizeof owner, "sem-child-%d", k);
    pthread_barrier_wait(&r->barrier);
    for (int i = 0; i < SEM_ITERS; i++) {
        uint64_t tok = SENTINEL;
        if (!CHECK_RC(dss_sem_acquire(&h, r->id, owner, 1, SEM_CAP, LONG_TTL, 120000, &tok), 0))
            break;
        int now = atomic_fetch_add(&r->inside, 1) + 1;
        int m = atomic_load(&r->max);
        while (now > m && !atomic_compare_exchange_weak(&r->max, &m, now))
            continue;
        if (now >= SEM_CAP)
            atomic_store(&r->paired, 1);
        /* Until someone has seen a full semaphore, the first holder waits
         * (a few seconds at most) for a second one: with 8 processes
         * contending, a correct capacity of 2 lets one in. */
        double deadline = ct_now_ms() + 5000;
        while (!atomic_load(&r->paired) && atomic_load(&r->inside) < SEM_CAP &&
               ct_now_ms() < deadline)
            nap_ms(1); /* polling a state, with a deadline */
        if (atomic_load(&r->inside) >= SEM_CAP)
            atomic_store(&r->paired, 1);
        /* The scenario: a holder that keeps its permit a while (long enough
         * for the next waiters to come in if they could; a violation shows
         * at once). */
        deadline = ct_now_ms() + SEM_HOLD_MS;
        while (ct_now_ms() < deadline && atomic_load(&r->inside) <= SEM_CAP)
            nap_ms(1);
        atomic_fetch_sub(&r->inside, 1);
        CHECK_RC(dss_sem_release(&h, r->id, owner), 0);
        atomic_fetch_add(&r->rounds, 1);
    }
    dss_fini(&h);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static void test_sem_capacity_processes(void **state)
{
    (void)state;
    struct sem_run *r = ct_shared(sizeof *r);
    ct_shared_barrier(&r->barrier, SEM_PROCS);
    ct_id(r->id, sizeof r->id, "sem-procs");
    pid_t pids[SEM_PROCS];
    double t0 = ct_now_ms();
    for (int k = 0; k < SEM_PROCS; k++)
        pids[k] = spawn(sem_child, r);
    int failed = 0;
    for (int k = 0; k < SEM_PROCS; k++)
        if (child_join(pids[k], 240) != 0)
            failed++;
    printf("%d processes, %d acquisitions of a capacity-%d semaphore in %.0f ms: at most %d "
           "holders at once\n",
           SEM_PROCS, atomic_load(&r->rounds), SEM_CAP, ct_now_ms() - t0,
           atomic_load(&r->max));
    assert_int_equal(failed, 0);
    assert_int_equal(atomic_load(&r->rounds), SEM_PROCS * SEM_ITERS);
    assert_true(atomic_load(&r->max) <= SEM_CAP);
    assert_int_equal(atomic_load(&r->max), SEM_CAP);
    size_t n = 0;
    struct dss_holder *hs = NULL;
    assert_rc(dss_sem_holders(&h1, r->id, &hs, &n), -ENOLCK);
    assert_int_equal(rows_about(r->id), 0);
    assert_int_equal(history_count(r->id, "sem_acquire"), SEM_PROCS * SEM_ITERS);
    pthread_barrier_destroy(&r->barrier);
    munmap(r, sizeof *r);
}

/* ---- 7. a killed holder's permit returns when its lease ends -------------- */

static void test_sem_killed_holder(void **state)
{
    (void)state;
    const uint64_t ttl = 500;
    char id[128];
    ct_id(id, sizeof id, "sem-killed");
    struct actor *a = actors_new(1);
    a[0].permits = 1;
    a[0].capacity = 1;
    actor_start(&a[0], ACT_SEM, id, "doomed", ttl, 0);
    actor_await(&a[0], ST_RETURNED);
    assert_rc(a[0].rc, 0);
    kill(a[0].pid, SIGKILL);
    assert_int_equal(child_join(a[0].pid, 30), 128 + SIGKILL);
    double lease_from = a[0].t_call; /* the lease began after this... */
    double lease_by = a[0].t_ret;    /* ... and before this */

    /* While the lease runs, the permit is the dead holder's. */
    uint64_t t = SENTINEL;
    double c0 = ct_now_ms();
    int rc = dss_sem_acquire(&h1, id, "parent", 1, 1, LONG_TTL, 0, &t);
    double c1 = ct_now_ms();
    if (rc == 0) {
        if (c1 < lease_from + (double)ttl - CLOCK_SLACK)
            fail_msg("permit granted %.1f ms after the holder took it (lease %" PRIu64 " ms)",
                     c1 - lease_from, ttl);
        printf("(slow machine: the lease had ended before the first try)\n");
    } else {
        assert_rc(rc, -EEXIST);
        if (c0 > lease_by + (double)ttl + CLOCK_SLACK)
            fail_msg("permit refused %.1f ms after the holder's lease of %" PRIu64 " ms began",
                     c0 - lease_by, ttl);
        assert_int_equal(t, SENTINEL);
        /* Wait for it. */
        rc = dss_sem_acquire(&h1, id, "parent", 1, 1, LONG_TTL, 20000, &t);
        c1 = ct_now_ms();
        assert_rc(rc, 0);
        printf("permit of a killed holder (lease %" PRIu64 " ms) granted %.1f ms after it "
               "was taken\n",
               ttl, c1 - lease_by);
        /* Not before the lease ended, and soon after. */
        if (c1 < lease_from + (double)ttl - CLOCK_SLACK)
            fail_msg("permit granted %.1f ms after the holder took it (lease %" PRIu64 " ms)",
                     c1 - lease_from, ttl);
        if (c1 - lease_by >= (double)ttl + 3000)
            fail_msg("permit granted %.1f ms after the holder took it: not at the end of its "
                     "%" PRIu64 " ms lease",
                     c1 - lease_by, ttl);
    }
    assert_true(t != SENTINEL && t > a[0].token);
    struct dss_holder *hs;
    size_t n = holders_of(&h2, id, 1, &hs);
    assert_int_equal(n, 1);
    assert_string_equal(hs[0].owner, "parent");
    assert_int_equal(hs[0].token, t);
    dss_holders_free(hs, n);
    assert_rc(dss_sem_refresh(&h1, id, "doomed"), -ENOLCK); /* its hold is gone */
    assert_rc(dss_sem_release(&h1, id, "parent"), 0);
    assert_int_equal(rows_about(id), 0);
    munmap(a, sizeof *a);
}

/* ---- 8. fencing with shared tokens in a real transaction ------------------ */

/* A psql session fed through a pipe, statement by statement. */
struct psql_session {
    pid_t pid;
    int in_fd, out_fd;
};

static void psql_open(struct psql_session *s, const char *app)
{
    char conninfo[1200];
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", ct_conninfo(), app);
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        char *argv[] = {(char *)PSQL_PROGRAM, (char *)"-X", (char *)"-q", (char *)"-t",
                        (char *)"-A", (char *)"-v", (char *)"ON_ERROR_STOP=1",
                        (char *)"-d", conninfo, NULL};
        execvp(argv[0], argv);
        _exit(127);
    }
    child_add(pid);
    close(in[0]);
    close(out[1]);
    s->pid = pid;
    s->in_fd = in[1];
    s->out_fd = out[0];
}

static void psql_send(struct psql_session *s, const char *sql)
{
    size_t len = strlen(sql), done = 0;
    while (done < len) {
        ssize_t w = write(s->in_fd, sql + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        done += (size_t)w;
    }
}

/* Ends the input, collects the output, waits for psql; its exit code. */
static int psql_close(struct psql_session *s, char *out, size_t size)
{
    close(s->in_fd);
    size_t used = 0;
    double deadline = ct_now_ms() + 60000;
    for (;;) {
        int wait_ms = (int)(deadline - ct_now_ms());
        if (wait_ms <= 0)
            break;
        struct pollfd p = {s->out_fd, POLLIN, 0};
        int r = poll(&p, 1, wait_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        char tmp[1024];
        ssize_t got = read(s->out_fd, tmp, sizeof tmp);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        size_t take = (size_t)got < size - 1 - used ? (size_t)got : size - 1 - used;
        memcpy(out + used, tmp, take);
        used += take;
    }
    out[used] = '\0';
    close(s->out_fd);
    return child_join(s->pid, 60);
}

struct unlocker {
    char id[160];
    char owner[64];
    atomic_int started;
    atomic_int done;
    int rc;
    double t_ret;
};

static int unlocker_main(void *arg)
{
    struct unlocker *u = arg;
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    atomic_store(&u->started, 1);
    u->rc = dss_unlock_shared(&h, u->id, u->owner);
    u->t_ret = ct_now_ms();
    atomic_store(&u->done, 1);
    dss_fini(&h);
    return 0;
}

static void test_fencing_shared_tokens(void **state)
{
    (void)state;
    char id[128], app[64], sql[1024], lit[256];
    ct_id(id, sizeof id, "fence");
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(app, sizeof app, "dss_ctest_fence_%ld", (long)getpid());
    uint64_t ta = 0, tb = 0;
    assert_rc(dss_lock_shared(&h1, id, "a", 0, 0, &ta), 0);
    assert_rc(dss_lock_shared(&h1, id, "b", LONG_TTL, 0, &tb), 0);
    assert_int_equal(is_held_sql(id, ta), 1);
    assert_int_equal(is_held_sql(id, tb), 1);
    assert_int_equal(is_held_sql(id, tb + 1000), 0); /* never issued */

    /* BEGIN; SELECT dss_lock_is_held(id, a's token); ... and stay in it. */
    struct psql_session ps;
    psql_open(&ps, app);
    snprintf(sql, sizeof sql,
             "BEGIN;\nSELECT 'held=' || dss_lock_is_held(%s, %" PRIu64 ");\n", lit, ta);
    psql_send(&ps, sql);
    snprintf(sql, sizeof sql,
             "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE application_name = "
             "'%s' AND state = 'idle in transaction' AND query LIKE '%%dss_lock_is_held%%'",
             app);
    long long psql_pid = 0;
    assert_int_equal(ct_poll_at_least(ct_conninfo(), sql, 1, QUEUE_TIMEOUT, &psql_pid), 0);

    /* a's release, meanwhile, waits for that transaction. */
    struct unlocker *u = ct_shared(sizeof *u);
    snprintf(u->id, sizeof u->id, "%s", id);
    snprintf(u->owner, sizeof u->owner, "a");
    u->rc = -99999;
    pid_t upid = spawn(unlocker_main, u);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE %lld = ANY(pg_blocking_pids(pid))",
             psql_pid);
    assert_int_equal(ct_poll_at_least(ct_conninfo(), sql, 1, QUEUE_TIMEOUT, NULL), 0);
    assert_int_equal(atomic_load(&u->done), 0);
    assert_rc(dss_lock_check(&h2, id, ta), 0); /* still a holder */
    const char *ab[] = {"a", "b"};
    assert_lock_holders(&h2, id, DSS_MODE_SHARED, ab, 2);

    /* Still inside: a second check, then COMMIT. */
    snprintf(sql, sizeof sql,
             "SELECT 'again=' || dss_lock_is_held(%s, %" PRIu64 ");\n"
             "SELECT 'other=' || dss_lock_is_held(%s, %" PRIu64 ");\n",
             lit, ta, lit, tb);
    psql_send(&ps, sql);
    double t_commit = ct_now_ms();
    psql_send(&ps, "COMMIT;\n");
    char out[512];
    int prc = psql_close(&ps, out, sizeof out);
    printf("psql said: %s\n", out);
    assert_int_equal(prc, 0);
    assert_true(ct_contains(out, "held=true"));
    assert_true(ct_contains(out, "again=true"));
    assert_true(ct_contains(out, "other=true"));

    assert_int_equal(child_join(upid, 60), 0);
    assert_int_equal(atomic_load(&u->done), 1);
    assert_rc(u->rc, 0);
    printf("dss_unlock_shared returned %.1f ms after COMMIT was sent\n", u->t_ret - t_commit);
    assert_true(u->t_ret >= t_commit);

    /* Released: a's token no longer holds; b's does, until its lease ends. */
    assert_int_equal(is_held_sql(id, ta), 0);
    assert_rc(dss_lock_check(&h2, id, ta), -ESTALE);
    assert_int_equal(is_held_sql(id, tb), 1);
    expire_share(id, NULL);
    assert_int_equal(is_held_sql(id, tb), 0); /* expired */
    uint64_t tw = 0;
    assert_rc(dss_lock_lease(&h2, id, "w", LONG_TTL, &tw), 0);
    assert_int_equal(is_held_sql(id, tb), 0); /* taken over */
    assert_int_equal(is_held_sql(id, tw), 1);
    assert_rc(dss_unlock(&h2, id, "w"), 0);
    assert_int_equal(is_held_sql(id, tw), 0);
    assert_rc(dss_unlock_shared(&h1, id, "b"), -ETIME);
    assert_int_equal(rows_about(id), 0);
    munmap(u, sizeof *u);
}

/* ---- 9. bad input --------------------------------------------------------- */

/* The state the bad calls must leave alone: a lock held shared by
 * "keeper", a semaphore with "keeper" holding 1 of 2 permits, a free id
 * and a free semaphore. */
struct fixture {
    char held[128], sem[128], free_id[128], free_sem[128];
    uint64_t held_tok, sem_tok;
};

static void fixture_make(struct fixture *f)
{
    ct_id(f->held, sizeof f->held, "bad-held");
    ct_id(f->sem, sizeof f->sem, "bad-sem");
    ct_id(f->free_id, sizeof f->free_id, "bad-free");
    ct_id(f->free_sem, sizeof f->free_sem, "bad-free-sem");
    assert_rc(dss_lock_shared(&h1, f->held, "keeper", LONG_TTL, 0, &f->held_tok), 0);
    assert_rc(dss_sem_acquire(&h1, f->sem, "keeper", 1, 2, LONG_TTL, 0, &f->sem_tok), 0);
}

static void fixture_unchanged(const struct fixture *f)
{
    struct dss_holder *hs;
    size_t n = holders_of(&h1, f->held, 0, &hs);
    assert_int_equal(n, 1);
    assert_string_equal(hs[0].owner, "keeper");
    assert_int_equal(hs[0].mode, DSS_MODE_SHARED);
    assert_int_equal(hs[0].token, f->held_tok);
    dss_holders_free(hs, n);
    n = holders_of(&h1, f->sem, 1, &hs);
    assert_int_equal(n, 1);
    assert_string_equal(hs[0].owner, "keeper");
    assert_int_equal(hs[0].permits, 1);
    assert_int_equal(hs[0].token, f->sem_tok);
    dss_holders_free(hs, n);
    assert_int_equal(sql_ll("SELECT capacity FROM dss.sems WHERE id = %s", f->sem), 2);
    assert_int_equal(rows_about(f->free_id), 0);
    assert_int_equal(rows_about(f->free_sem), 0);
    assert_int_equal(ct_waiters(f->held), 0);
    assert_int_equal(ct_waiters(f->sem), 0);
}

static void fixture_drop(const struct fixture *f)
{
    assert_rc(dss_unlock_shared(&h1, f->held, "keeper"), 0);
    assert_rc(dss_sem_release(&h1, f->sem, "keeper"), 0);
    assert_int_equal(rows_about(f->held), 0);
    assert_int_equal(rows_about(f->sem), 0);
}

/* Every new call with handle `bad`: -EINVAL, outputs untouched. */
static void all_calls_bad_handle(struct dss_handle *bad, const struct fixture *f)
{
    const char *ids[] = {f->held, f->free_id};
    const char *sems[] = {f->sem, f->free_sem};
    for (int k = 0; k < 2; k++) {
        uint64_t t = SENTINEL;
        struct dss_holder *hs = (struct dss_holder *)&t;
        size_t n = 777;
        assert_rc(dss_lock_shared(bad, ids[k], "keeper", 0, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "handle"));
        assert_rc(dss_lock_shared(bad, ids[k], "x", 0, 0, &t), -EINVAL);
        assert_rc(dss_lock_shared_refresh(bad, ids[k], "keeper"), -EINVAL);
        assert_rc(dss_unlock_shared(bad, ids[k], "keeper"), -EINVAL);
        assert_rc(dss_unlock_shared(bad, ids[k], NULL), -EINVAL);
        assert_rc(dss_lock_downgrade(bad, ids[k], "keeper", &t), -EINVAL);
        assert_rc(dss_lock_holders(bad, ids[k], &hs, &n), -EINVAL);
        assert_rc(dss_sem_acquire(bad, sems[k], "x", 1, 2, 1000, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "handle"));
        assert_rc(dss_sem_refresh(bad, sems[k], "keeper"), -EINVAL);
        assert_rc(dss_sem_release(bad, sems[k], "keeper"), -EINVAL);
        assert_rc(dss_sem_release(bad, sems[k], NULL), -EINVAL);
        assert_rc(dss_sem_holders(bad, sems[k], &hs, &n), -EINVAL);
        assert_int_equal(t, SENTINEL);
        assert_ptr_equal(hs, (struct dss_holder *)&t);
        assert_int_equal(n, 777);
    }
}

static void test_einval_handles(void **state)
{
    (void)state;
    struct fixture f;
    fixture_make(&f);
    double t0 = ct_now_ms();
    all_calls_bad_handle(NULL, &f);
    assert_true(ct_contains(dss_last_error(), "NULL"));
    struct dss_handle zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    all_calls_bad_handle(&zeroed, &f);
    assert_true(ct_contains(dss_last_error(), "not initialised"));
    struct dss_handle garbage = {(void *)0x1234};
    all_calls_bad_handle(&garbage, &f);
    struct dss_handle finalised;
    ct_open(&finalised);
    dss_fini(&finalised);
    all_calls_bad_handle(&finalised, &f);
    assert_true(ct_now_ms() - t0 < 5000); /* nothing waited */
    fixture_unchanged(&f);
    fixture_drop(&f);
}

static void test_einval_strings(void **state)
{
    (void)state;
    struct fixture f;
    fixture_make(&f);
    char *long_id = str_of_len(DSS_MAX_LOCK_ID_LEN + 1, 'i');
    char *max_id = str_of_len(DSS_MAX_LOCK_ID_LEN, 'm');
    char *long_owner = str_of_len(DSS_MAX_LOCK_OWNER_LEN + 1, 'o');
    const char *bad_ids[] = {NULL, "", long_id, "bad\xff\xfe", "\xc3"};
    const char *bad_owners[] = {long_owner, "bad\xff", "\xe2\x82"};
    double t0 = ct_now_ms();
    uint64_t t = SENTINEL;
    struct dss_holder *hs = (struct dss_holder *)&t;
    size_t n = 777;

    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        const char *id = bad_ids[i];
        assert_rc(dss_lock_shared(&h1, id, "x", 0, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "lock_id"));
        assert_rc(dss_lock_shared_refresh(&h1, id, "keeper"), -EINVAL);
        assert_rc(dss_unlock_shared(&h1, id, "keeper"), -EINVAL);
        assert_rc(dss_unlock_shared(&h1, id, NULL), -EINVAL);
        assert_rc(dss_lock_downgrade(&h1, id, "keeper", &t), -EINVAL);
        assert_rc(dss_lock_holders(&h1, id, &hs, &n), -EINVAL);
        assert_rc(dss_sem_acquire(&h1, id, "x", 1, 2, 1000, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "sem_id"));
        assert_rc(dss_sem_refresh(&h1, id, "keeper"), -EINVAL);
        assert_rc(dss_sem_release(&h1, id, "keeper"), -EINVAL);
        assert_rc(dss_sem_release(&h1, id, NULL), -EINVAL);
        assert_rc(dss_sem_holders(&h1, id, &hs, &n), -EINVAL);
    }
    /* NULL owners, where an owner is required (NULL means "force" for the
     * two release calls, tested elsewhere). */
    const char *ids[] = {f.held, f.free_id};
    const char *sems[] = {f.sem, f.free_sem};
    for (int k = 0; k < 2; k++) {
        assert_rc(dss_lock_shared(&h1, ids[k], NULL, 0, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "owner"));
        assert_rc(dss_lock_shared_refresh(&h1, ids[k], NULL), -EINVAL);
        assert_rc(dss_lock_downgrade(&h1, ids[k], NULL, &t), -EINVAL);
        assert_rc(dss_sem_acquire(&h1, sems[k], NULL, 1, 2, 1000, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "owner"));
        assert_rc(dss_sem_refresh(&h1, sems[k], NULL), -EINVAL);
        for (size_t i = 0; i < sizeof bad_owners / sizeof bad_owners[0]; i++) {
            const char *o = bad_owners[i];
            assert_rc(dss_lock_shared(&h1, ids[k], o, 0, UINT64_MAX, &t), -EINVAL);
            assert_true(ct_contains(dss_last_error(), "owner"));
            assert_rc(dss_lock_shared_refresh(&h1, ids[k], o), -EINVAL);
            assert_rc(dss_unlock_shared(&h1, ids[k], o), -EINVAL);
            assert_rc(dss_lock_downgrade(&h1, ids[k], o, &t), -EINVAL);
            assert_rc(dss_sem_acquire(&h1, sems[k], o, 1, 2, 1000, UINT64_MAX, &t), -EINVAL);
            assert_true(ct_contains(dss_last_error(), "owner"));
            assert_rc(dss_sem_refresh(&h1, sems[k], o), -EINVAL);
            assert_rc(dss_sem_release(&h1, sems[k], o), -EINVAL);
        }
    }
    assert_int_equal(t, SENTINEL);
    assert_ptr_equal(hs, (struct dss_holder *)&t);
    assert_int_equal(n, 777);
    assert_true(ct_now_ms() - t0 < 5000); /* nothing waited */
    fixture_unchanged(&f);
    assert_int_equal(rows_about(long_id), 0);

    /* The limits themselves are accepted: a 2048-byte id, a 256-byte owner. */
    long_owner[DSS_MAX_LOCK_OWNER_LEN] = '\0';
    uint64_t tm = 0;
    assert_rc(dss_lock_shared(&h1, max_id, long_owner, 0, 0, &tm), 0);
    n = holders_of(&h1, max_id, 0, &hs);
    assert_string_equal(hs[0].owner, long_owner);
    dss_holders_free(hs, n);
    assert_rc(dss_unlock_shared(&h1, max_id, long_owner), 0);
    assert_rc(dss_sem_acquire(&h1, max_id, long_owner, 1, 1, 1000, 0, NULL), 0);
    assert_rc(dss_sem_release(&h1, max_id, long_owner), 0);
    assert_int_equal(rows_about(max_id), 0);

    fixture_drop(&f);
    free(long_id);
    free(max_id);
    free(long_owner);
}

static void test_einval_numbers_and_outputs(void **state)
{
    (void)state;
    struct fixture f;
    fixture_make(&f);
    double t0 = ct_now_ms();
    uint64_t t = SENTINEL;
    const char *ids[] = {f.held, f.free_id};
    const char *sems[] = {f.sem, f.free_sem};
    for (int k = 0; k < 2; k++) {
        /* Leases above the limit, even with an unlimited timeout. */
        assert_rc(dss_lock_shared(&h2, ids[k], "x", DSS_MAX_TTL_MS + 1, UINT64_MAX, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "ttl"));
        assert_rc(dss_lock_shared(&h2, ids[k], "x", UINT64_MAX, 0, &t), -EINVAL);
        /* Permits, capacities and leases of semaphores. */
        const struct {
            uint32_t permits, capacity;
            uint64_t ttl;
        } bad[] = {
            {0, 2, 1000},
            {3, 2, 1000},
            {1, 0, 1000},
            {0, 0, 1000},
            {UINT32_MAX, UINT32_MAX, 1000},
            {1, UINT32_MAX, 1000},
            {(uint32_t)INT32_MAX + 1, (uint32_t)INT32_MAX + 1, 1000},
            {UINT32_MAX, 2, 1000},
            {1, 2, 0},
            {1, 2, DSS_MAX_TTL_MS + 1},
            {1, 2, UINT64_MAX},
            {1, 3, 1000}, /* the semaphore's capacity is 2 (when it has holders) */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            if (i == sizeof bad / sizeof bad[0] - 1 && k == 1)
                continue; /* a free semaphore takes any capacity */
            int rc = dss_sem_acquire(&h2, sems[k], "x", bad[i].permits, bad[i].capacity,
                                     bad[i].ttl, UINT64_MAX, &t);
            if (rc != -EINVAL)
                fail_msg("dss_sem_acquire(%s, permits %" PRIu32 ", capacity %" PRIu32
                         ", ttl %" PRIu64 ") = %d (%s), expected -EINVAL",
                         sems[k], bad[i].permits, bad[i].capacity, bad[i].ttl, rc,
                         ct_errname(rc));
        }
        /* Holders lists need both outputs. */
        struct dss_holder *hs = (struct dss_holder *)&t;
        size_t n = 777;
        assert_rc(dss_lock_holders(&h2, ids[k], NULL, &n), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "holders"));
        assert_rc(dss_lock_holders(&h2, ids[k], &hs, NULL), -EINVAL);
        assert_rc(dss_lock_holders(&h2, ids[k], NULL, NULL), -EINVAL);
        assert_rc(dss_sem_holders(&h2, sems[k], NULL, &n), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "holders"));
        assert_rc(dss_sem_holders(&h2, sems[k], &hs, NULL), -EINVAL);
        assert_rc(dss_sem_holders(&h2, sems[k], NULL, NULL), -EINVAL);
        assert_ptr_equal(hs, (struct dss_holder *)&t);
        assert_int_equal(n, 777);
    }
    assert_int_equal(t, SENTINEL);
    assert_true(ct_now_ms() - t0 < 5000); /* nothing waited */
    fixture_unchanged(&f);
    fixture_drop(&f);
}

int main(void)
{
    if (ct_setup("test_shared", 1) != 0)
        return 1;
#define T(f) cmocka_unit_test_teardown(f, kill_children)
    const struct CMUnitTest tests[] = {
        T(test_shared_codes),
        T(test_shared_expiry),
        T(test_shared_behind_queued_writer),
        T(test_downgrade_codes),
        T(test_sem_codes),
        T(test_sem_fifo),
        T(test_holders_free),
        T(test_readers_then_writer),
        T(test_no_writer_starvation),
        T(test_readers_enter_together),
        T(test_downgrade_reader_joins),
        T(test_sem_capacity_processes),
        T(test_sem_killed_holder),
        T(test_fencing_shared_tokens),
        T(test_einval_handles),
        T(test_einval_strings),
        T(test_einval_numbers_and_outputs),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
