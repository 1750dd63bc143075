/* Leases and fencing tokens: dss_lock_lease, expiry and takeover,
 * dss_lock_info / dss_lock_info_clear, dss_lock_check, dss_owner_self,
 * dss_lock_clean; a takeover race between processes, token monotonicity
 * under contention, and the SQL fencing function dss_lock_is_held().
 *
 * A lease is made to expire the way time would, by moving its expires_at
 * into the past (ct_expire), never by sleeping. */
#include "common.h"

#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#define LONG_TTL    600000ULL          /* 10 min: never runs out during a test */
#define SENTINEL    0x5eadbeefcafef00dULL
#define RACE_PROCS  8
#define RACE_ROUNDS 20
#define MONO_PROCS  4
#define MONO_ITERS  50

static struct dss_handle h1, h2; /* two clients of the same database */

CT_GROUP_WITH_TWO_HANDLES(h1, h2)

/* dss_lock_info() of a lock that must exist; the caller clears it. */
static struct dss_lock_info info_of(struct dss_handle *h, const char *id)
{
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(h, id, &info), 0);
    assert_non_null(info.owner);
    return info;
}

static uint64_t token_of(struct dss_handle *h, const char *id)
{
    struct dss_lock_info info = info_of(h, id);
    uint64_t t = info.token;
    dss_lock_info_clear(&info);
    return t;
}

/* Rows of dss.locks with this id (expired leases included). */
static long long rows_of(const char *id)
{
    char lit[2 * DSS_MAX_LOCK_ID_LEN + 8], sql[2 * DSS_MAX_LOCK_ID_LEN + 128];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM dss.locks WHERE id = %s", lit);
    long long n = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &n), 0);
    return n;
}

/* History events of `id` of this kind (and this token, unless 0). */
static long long history_count(const char *id, const char *event, uint64_t token)
{
    char lit[512], sql[900];
    ct_sql_literal(lit, sizeof lit, id);
    if (token != 0)
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM dss.lock_history WHERE id = %s AND event = '%s' "
                 "AND token = %" PRIu64,
                 lit, event, token);
    else
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM dss.lock_history WHERE id = %s AND event = '%s'", lit,
                 event);
    long long n = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &n), 0);
    return n;
}

/* ---- dss_lock_lease: success, -EEXIST, tokens ------------------------- */

static void test_lease_acquire(void **state)
{
    (void)state;
    char id[128], id2[128], id3[128], id4[128];
    ct_id(id, sizeof id, "lease");
    ct_id(id2, sizeof id2, "lease-nulltok");
    ct_id(id3, sizeof id3, "lease-plain");
    ct_id(id4, sizeof id4, "lease-max");

    uint64_t tok = SENTINEL;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &tok), 0);
    assert_true(tok != SENTINEL);
    assert_true(tok > 0);
    ct_assert_held(&h2, id, "alice");
    struct dss_lock_info info = info_of(&h2, id);
    assert_string_equal(info.owner, "alice");
    assert_int_equal(info.token, tok);
    assert_int_equal(info.ttl_ms, LONG_TTL);
    assert_true(info.expires_in_ms > 0 && info.expires_in_ms <= (int64_t)LONG_TTL);
    dss_lock_info_clear(&info);
    assert_int_equal(history_count(id, "acquire", tok), 1);

    /* Held: -EEXIST for everyone, the holder included; token untouched. */
    uint64_t t2 = SENTINEL;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &t2), -EEXIST);
    assert_int_equal(t2, SENTINEL);
    assert_true(ct_contains(dss_last_error(), id));
    assert_rc(dss_lock_lease(&h2, id, "bob", 1000, &t2), -EEXIST);
    assert_int_equal(t2, SENTINEL);
    assert_rc(dss_lock(&h2, id, "bob"), -EEXIST);
    assert_rc(dss_lock_lease(&h2, id, "bob", LONG_TTL, NULL), -EEXIST);
    assert_int_equal(token_of(&h1, id), tok); /* unchanged */
    ct_assert_held(&h1, id, "alice");

    /* NULL token is allowed; every acquisition gets a greater token. */
    assert_rc(dss_lock_lease(&h2, id2, "bob", LONG_TTL, NULL), 0);
    uint64_t tok2 = token_of(&h1, id2);
    assert_true(tok2 > tok);

    /* A lock taken with dss_lock() is not a lease, and blocks leases. */
    assert_rc(dss_lock(&h1, id3, "carol"), 0);
    uint64_t tok3 = token_of(&h1, id3);
    assert_true(tok3 > tok2);
    assert_rc(dss_lock_lease(&h2, id3, "dave", LONG_TTL, &t2), -EEXIST);
    assert_int_equal(t2, SENTINEL);
    ct_assert_held(&h1, id3, "carol");

    /* The longest lease is accepted. */
    uint64_t tok4 = SENTINEL;
    assert_rc(dss_lock_lease(&h1, id4, "erin", DSS_MAX_TTL_MS, &tok4), 0);
    assert_true(tok4 > tok3 && tok4 != SENTINEL);
    info = info_of(&h1, id4);
    assert_int_equal(info.ttl_ms, DSS_MAX_TTL_MS);
    assert_true(info.expires_in_ms > (int64_t)DSS_MAX_TTL_MS - 60000);
    assert_true(info.expires_in_ms <= (int64_t)DSS_MAX_TTL_MS);
    dss_lock_info_clear(&info);

    assert_rc(dss_unlock(&h1, id, "alice"), 0);
    assert_rc(dss_unlock(&h1, id2, "bob"), 0);
    assert_rc(dss_unlock(&h1, id3, "carol"), 0);
    assert_rc(dss_unlock(&h1, id4, "erin"), 0);
    /* Released: free again, with a new, greater token. */
    uint64_t tok5 = SENTINEL;
    assert_rc(dss_lock_lease(&h2, id, "bob", LONG_TTL, &tok5), 0);
    assert_true(tok5 > tok4 && tok5 != SENTINEL);
    assert_rc(dss_unlock(&h2, id, "bob"), 0);
}

/* Strings of exactly len bytes. */
static char *str_of_len(size_t len, char c)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, c, len);
    s[len] = '\0';
    return s;
}

static void test_lease_einval(void **state)
{
    (void)state;
    char held[128], freeid[128];
    ct_id(held, sizeof held, "einval-held");
    ct_id(freeid, sizeof freeid, "einval-free");
    uint64_t keep = 0;
    assert_rc(dss_lock_lease(&h1, held, "keeper", LONG_TTL, &keep), 0);

    struct dss_handle zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    char *long_id = str_of_len(DSS_MAX_LOCK_ID_LEN + 1, 'i');
    char *long_owner = str_of_len(DSS_MAX_LOCK_OWNER_LEN + 1, 'o');
    const char *not_utf8 = "bad\xff\xfe";

    const char *ids[] = {held, freeid};
    for (int k = 0; k < 2; k++) {
        const char *id = ids[k];
        uint64_t t = SENTINEL;
        assert_rc(dss_lock_lease(&h2, id, "bob", 0, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "ttl"));
        assert_rc(dss_lock_lease(&h2, id, "bob", DSS_MAX_TTL_MS + 1, &t), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "ttl"));
        assert_rc(dss_lock_lease(&h2, id, "bob", UINT64_MAX, &t), -EINVAL);
        assert_rc(dss_lock_lease(&h2, id, "bob", 0, NULL), -EINVAL);
        assert_rc(dss_lock_lease(NULL, id, "bob", 1000, &t), -EINVAL);
        assert_rc(dss_lock_lease(&zeroed, id, "bob", 1000, &t), -EINVAL);
        assert_rc(dss_lock_lease(&h2, id, NULL, 1000, &t), -EINVAL);
        assert_rc(dss_lock_lease(&h2, id, long_owner, 1000, &t), -EINVAL);
        assert_rc(dss_lock_lease(&h2, id, not_utf8, 1000, &t), -EINVAL);
        assert_int_equal(t, SENTINEL); /* written only on success */
    }
    uint64_t t = SENTINEL;
    assert_rc(dss_lock_lease(&h2, NULL, "bob", 1000, &t), -EINVAL);
    assert_rc(dss_lock_lease(&h2, "", "bob", 1000, &t), -EINVAL);
    assert_rc(dss_lock_lease(&h2, long_id, "bob", 1000, &t), -EINVAL);
    assert_rc(dss_lock_lease(&h2, not_utf8, "bob", 1000, &t), -EINVAL);
    assert_int_equal(t, SENTINEL);

    /* Nothing changed: the free id is still free, the held one as it was. */
    ct_assert_absent(&h1, freeid);
    assert_int_equal(rows_of(freeid), 0);
    assert_int_equal(rows_of(long_id), 0);
    struct dss_lock_info info = info_of(&h1, held);
    assert_string_equal(info.owner, "keeper");
    assert_int_equal(info.token, keep);
    assert_int_equal(info.ttl_ms, LONG_TTL);
    assert_int_equal(ct_tv_us(&info.locked_at), ct_tv_us(&info.refreshed_at));
    dss_lock_info_clear(&info);

    /* The other new calls reject bad ids too. */
    struct dss_lock_info out;
    memset(&out, 0, sizeof out);
    assert_rc(dss_lock_info(&h1, NULL, &out), -EINVAL);
    assert_rc(dss_lock_info(&h1, "", &out), -EINVAL);
    assert_rc(dss_lock_info(NULL, held, &out), -EINVAL);
    assert_rc(dss_lock_info(&zeroed, held, &out), -EINVAL);
    assert_null(out.owner);
    assert_rc(dss_lock_check(&h1, NULL, keep), -EINVAL);
    assert_rc(dss_lock_check(&h1, long_id, keep), -EINVAL);
    assert_rc(dss_lock_check(NULL, held, keep), -EINVAL);
    assert_rc(dss_lock_check(&zeroed, held, keep), -EINVAL);
    assert_rc(dss_lock_check(&h1, held, keep), 0);

    free(long_id);
    free(long_owner);
    assert_rc(dss_unlock(&h1, held, "keeper"), 0);
}

/* ---- expiry ------------------------------------------------------------ */

static void test_expiry(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "expiry");
    uint64_t tok = 0;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &tok), 0);
    assert_rc(dss_lock_refresh(&h1, id, "alice"), 0); /* live: refresh works */
    assert_int_equal(ct_expire(id), 1);

    /* An expired lease counts as free. */
    ct_assert_absent(&h2, id);
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(&h2, id, &info), -ENOLCK);
    assert_null(info.owner);
    assert_rc(dss_lock_check(&h2, id, tok), -ESTALE);

    /* Its holder learns it expired; it is not extended. */
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -ETIME);
    assert_true(ct_contains(dss_last_error(), id));
    ct_assert_absent(&h2, id);
    assert_rc(dss_lock_check(&h2, id, tok), -ESTALE);
    /* Others see no lock, and cannot remove alice's stale entry. */
    assert_rc(dss_lock_refresh(&h2, id, "bob"), -ENOLCK);
    assert_rc(dss_unlock(&h2, id, "bob"), -ENOLCK);
    assert_int_equal(rows_of(id), 1);
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -ETIME);

    /* Unlock of one's own expired lease: -ETIME, the entry is removed. */
    assert_rc(dss_unlock(&h1, id, "alice"), -ETIME);
    assert_int_equal(rows_of(id), 0);
    assert_rc(dss_unlock(&h1, id, "alice"), -ENOLCK);
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -ENOLCK);
    assert_rc(dss_lock_check(&h1, id, tok), -ESTALE);

    /* A forced release of an expired lease removes it and says -ENOLCK. */
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &tok), 0);
    assert_int_equal(ct_expire(id), 1);
    assert_rc(dss_unlock(&h2, id, NULL), -ENOLCK);
    assert_int_equal(rows_of(id), 0);
    assert_rc(dss_unlock(&h1, id, "alice"), -ENOLCK);
}

/* ---- takeover ---------------------------------------------------------- */

static void test_takeover_by_lock(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "takeover-lock");
    uint64_t tok1 = 0;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &tok1), 0);
    assert_int_equal(ct_expire(id), 1);

    assert_rc(dss_lock(&h2, id, "bob"), 0);
    ct_assert_held(&h1, id, "bob");
    struct dss_lock_info info = info_of(&h1, id);
    assert_string_equal(info.owner, "bob");
    assert_true(info.token > tok1);
    assert_int_equal(info.ttl_ms, 0); /* dss_lock(): no lease any more */
    assert_int_equal(info.expires_in_ms, -1);
    uint64_t tok2 = info.token;
    dss_lock_info_clear(&info);
    assert_int_equal(history_count(id, "takeover", tok2), 1);

    /* The former holder has lost it: -EACCES, and nothing changes. */
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -EACCES);
    assert_true(ct_contains(dss_last_error(), "bob"));
    assert_rc(dss_unlock(&h1, id, "alice"), -EACCES);
    assert_rc(dss_lock_check(&h1, id, tok1), -ESTALE);
    assert_rc(dss_lock_check(&h1, id, tok2), 0);
    assert_int_equal(token_of(&h2, id), tok2);
    assert_rc(dss_unlock(&h2, id, "bob"), 0);
}

static void test_takeover_by_lease(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "takeover-lease");
    uint64_t tok1 = 0, tok2 = SENTINEL, tok3 = SENTINEL;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &tok1), 0);
    assert_int_equal(ct_expire(id), 1);

    assert_rc(dss_lock_lease(&h2, id, "bob", 5000, &tok2), 0);
    assert_true(tok2 != SENTINEL && tok2 > tok1);
    ct_assert_held(&h1, id, "bob");
    struct dss_lock_info info = info_of(&h1, id);
    assert_int_equal(info.token, tok2);
    assert_int_equal(info.ttl_ms, 5000);
    assert_true(info.expires_in_ms > 0 && info.expires_in_ms <= 5000);
    dss_lock_info_clear(&info);
    assert_int_equal(history_count(id, "takeover", tok2), 1);

    uint64_t t = SENTINEL;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &t), -EEXIST);
    assert_int_equal(t, SENTINEL);
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -EACCES);
    assert_rc(dss_unlock(&h1, id, "alice"), -EACCES);
    assert_rc(dss_lock_check(&h1, id, tok1), -ESTALE);
    assert_rc(dss_lock_check(&h1, id, tok2), 0);
    ct_assert_held(&h1, id, "bob");

    /* A holder may take its own expired lease again: new token. */
    assert_int_equal(ct_expire(id), 1);
    assert_rc(dss_lock_lease(&h2, id, "bob", LONG_TTL, &tok3), 0);
    assert_true(tok3 != SENTINEL && tok3 > tok2);
    assert_rc(dss_lock_check(&h1, id, tok2), -ESTALE);
    assert_rc(dss_lock_check(&h1, id, tok3), 0);
    assert_rc(dss_lock_refresh(&h2, id, "bob"), 0);
    assert_rc(dss_unlock(&h2, id, "bob"), 0);
    ct_assert_absent(&h1, id);
}

/* ---- dss_lock_info ----------------------------------------------------- */

static void test_info(void **state)
{
    (void)state;
    char id[128], plain[128];
    ct_id(id, sizeof id, "info");
    ct_id(plain, sizeof plain, "info-plain");

    /* Absent: -ENOLCK, info untouched. */
    char sentinel_obj;
    struct dss_lock_info info, copy;
    memset(&info, 0, sizeof info);
    info.owner = &sentinel_obj;
    info.locked_at.tv_sec = 11;
    info.locked_at.tv_usec = 12;
    info.refreshed_at.tv_sec = 13;
    info.refreshed_at.tv_usec = 14;
    info.ttl_ms = 15;
    info.expires_in_ms = 16;
    info.token = 17;
    memcpy(&copy, &info, sizeof info);
    assert_rc(dss_lock_info(&h1, id, &info), -ENOLCK);
    assert_true(ct_contains(dss_last_error(), id));
    assert_memory_equal(&info, &copy, sizeof info);
    assert_rc(dss_lock_info(&h1, id, NULL), -EINVAL);

    /* A plain lock: no lease. */
    int64_t before = ct_wall_us();
    assert_rc(dss_lock(&h1, plain, "carol"), 0);
    int64_t after = ct_wall_us();
    assert_rc(dss_lock_info(&h1, plain, NULL), -EINVAL); /* also when it exists */
    struct dss_lock_info p = info_of(&h2, plain);
    assert_string_equal(p.owner, "carol");
    assert_int_equal(p.ttl_ms, 0);
    assert_int_equal(p.expires_in_ms, -1);
    assert_true(p.token > 0);
    assert_int_equal(ct_tv_us(&p.locked_at), ct_tv_us(&p.refreshed_at));
    assert_true(ct_tv_us(&p.locked_at) > before - 3000000);
    assert_true(ct_tv_us(&p.locked_at) < after + 3000000);
    assert_true(p.locked_at.tv_usec >= 0 && p.locked_at.tv_usec < 1000000);
    /* The same timestamp as dss_lock_status(). */
    struct timeval ts = ct_assert_held(&h1, plain, "carol");
    assert_int_equal(ct_tv_us(&ts), ct_tv_us(&p.refreshed_at));
    assert_rc(dss_lock_refresh(&h1, plain, "carol"), 0);
    struct dss_lock_info p2 = info_of(&h2, plain);
    assert_int_equal(ct_tv_us(&p2.locked_at), ct_tv_us(&p.locked_at));
    assert_true(ct_tv_us(&p2.refreshed_at) > ct_tv_us(&p2.locked_at));
    assert_int_equal(p2.expires_in_ms, -1);
    assert_int_equal(p2.token, p.token);
    dss_lock_info_clear(&p);
    dss_lock_info_clear(&p2);

    /* A lease. */
    const uint64_t ttl = 60000;
    uint64_t tok = 0;
    assert_rc(dss_lock_lease(&h1, id, "alice", ttl, &tok), 0);
    struct dss_lock_info a = info_of(&h2, id);
    assert_string_equal(a.owner, "alice");
    assert_int_equal(a.ttl_ms, ttl);
    assert_true(a.expires_in_ms > 0 && a.expires_in_ms <= (int64_t)ttl);
    assert_int_equal(a.token, tok);
    assert_int_equal(ct_tv_us(&a.locked_at), ct_tv_us(&a.refreshed_at));

    /* Still unchanged by reading it again, from the other handle. */
    struct dss_lock_info b = info_of(&h1, id);
    assert_int_equal(ct_tv_us(&b.locked_at), ct_tv_us(&a.locked_at));
    assert_int_equal(ct_tv_us(&b.refreshed_at), ct_tv_us(&a.refreshed_at));
    assert_int_equal(b.token, tok);
    assert_ptr_not_equal(a.owner, b.owner); /* each its own copy */
    dss_lock_info_clear(&b);

    /* After a refresh: refreshed_at later, locked_at and token unchanged,
     * the lease runs from the refresh. */
    assert_rc(dss_lock_refresh(&h2, id, "alice"), 0);
    struct dss_lock_info c = info_of(&h1, id);
    assert_int_equal(ct_tv_us(&c.locked_at), ct_tv_us(&a.locked_at));
    assert_true(ct_tv_us(&c.refreshed_at) > ct_tv_us(&a.refreshed_at));
    assert_int_equal(c.token, tok);
    assert_int_equal(c.ttl_ms, ttl);
    assert_true(c.expires_in_ms > 0 && c.expires_in_ms <= (int64_t)ttl);
    assert_int_equal(ct_lease_runs_from_refresh(id), 1);
    dss_lock_info_clear(&c);

    /* dss_lock_info_clear: frees, zeroes; safe on NULL, zeroed, twice. */
    dss_lock_info_clear(&a);
    assert_null(a.owner);
    assert_int_equal(a.token, 0);
    assert_int_equal(a.ttl_ms, 0);
    assert_int_equal(a.expires_in_ms, 0);
    assert_int_equal(a.locked_at.tv_sec, 0);
    assert_int_equal(a.locked_at.tv_usec, 0);
    assert_int_equal(a.refreshed_at.tv_sec, 0);
    assert_int_equal(a.refreshed_at.tv_usec, 0);
    dss_lock_info_clear(&a);
    assert_null(a.owner);
    dss_lock_info_clear(NULL);
    struct dss_lock_info z;
    memset(&z, 0, sizeof z);
    dss_lock_info_clear(&z);
    assert_null(z.owner);
    /* A cleared struct can be filled again. */
    assert_rc(dss_lock_info(&h1, id, &a), 0);
    assert_string_equal(a.owner, "alice");
    dss_lock_info_clear(&a);

    /* Expired: -ENOLCK, untouched. */
    assert_int_equal(ct_expire(id), 1);
    memcpy(&info, &copy, sizeof info);
    assert_rc(dss_lock_info(&h1, id, &info), -ENOLCK);
    assert_memory_equal(&info, &copy, sizeof info);

    assert_rc(dss_unlock(&h1, id, "alice"), -ETIME);
    assert_rc(dss_unlock(&h1, plain, "carol"), 0);
    assert_rc(dss_lock_info(&h1, plain, &info), -ENOLCK);
    assert_memory_equal(&info, &copy, sizeof info);
}

/* ---- dss_lock_check ---------------------------------------------------- */

static void test_check(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "check");
    assert_rc(dss_lock_check(&h1, id, 1), -ESTALE); /* absent */
    assert_true(ct_contains(dss_last_error(), id));

    uint64_t tok = 0;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &tok), 0);
    assert_rc(dss_lock_check(&h1, id, tok), 0);
    assert_rc(dss_lock_check(&h2, id, tok), 0);
    assert_rc(dss_lock_check(&h2, id, tok + 1), -ESTALE);
    assert_rc(dss_lock_check(&h2, id, tok - 1), -ESTALE);
    assert_rc(dss_lock_check(&h2, id, 0), -ESTALE);
    assert_rc(dss_lock_check(&h2, id, UINT64_MAX), -ESTALE);
    assert_rc(dss_lock_check(&h2, id, (uint64_t)INT64_MAX + 1), -ESTALE);
    /* A refresh keeps the token. */
    assert_rc(dss_lock_refresh(&h1, id, "alice"), 0);
    assert_rc(dss_lock_check(&h2, id, tok), 0);

    /* After release. */
    assert_rc(dss_unlock(&h1, id, "alice"), 0);
    assert_rc(dss_lock_check(&h2, id, tok), -ESTALE);

    /* A plain lock has a token too. */
    assert_rc(dss_lock(&h1, id, "carol"), 0);
    uint64_t ptok = token_of(&h1, id);
    assert_true(ptok > tok);
    assert_rc(dss_lock_check(&h2, id, ptok), 0);
    assert_rc(dss_lock_check(&h2, id, tok), -ESTALE);
    assert_rc(dss_unlock(&h1, id, "carol"), 0);
    assert_rc(dss_lock_check(&h2, id, ptok), -ESTALE);

    /* After expiry and takeover. */
    uint64_t t1 = 0, t2 = 0;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &t1), 0);
    assert_rc(dss_lock_check(&h2, id, t1), 0);
    assert_int_equal(ct_expire(id), 1);
    assert_rc(dss_lock_check(&h2, id, t1), -ESTALE);
    assert_rc(dss_lock_lease(&h2, id, "bob", LONG_TTL, &t2), 0);
    assert_rc(dss_lock_check(&h1, id, t1), -ESTALE);
    assert_rc(dss_lock_check(&h1, id, t2), 0);
    assert_rc(dss_unlock(&h2, id, "bob"), 0);
    assert_rc(dss_lock_check(&h1, id, t2), -ESTALE);
}

/* ---- dss_owner_self ---------------------------------------------------- */

static void expected_owner(char *buf, size_t size)
{
    char host[300];
    memset(host, 0, sizeof host);
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    snprintf(buf, size, "%s:%ld", host, (long)getpid());
}

static void test_owner_self(void **state)
{
    (void)state;
    char expect[400];
    expected_owner(expect, sizeof expect);
    size_t len = strlen(expect);
    assert_true(len <= DSS_MAX_LOCK_OWNER_LEN);

    char buf[DSS_MAX_LOCK_OWNER_LEN + 1];
    memset(buf, 'X', sizeof buf);
    assert_rc(dss_owner_self(buf, sizeof buf), 0);
    assert_string_equal(buf, expect);

    /* Exactly enough room. */
    memset(buf, 'X', sizeof buf);
    assert_rc(dss_owner_self(buf, len + 1), 0);
    assert_string_equal(buf, expect);
    assert_int_equal(buf[len + 1], 'X'); /* nothing written past len bytes */

    /* One byte short, tiny, zero: -ERANGE, buffer untouched. */
    size_t shorts[] = {len, 1, 0, len / 2};
    for (size_t i = 0; i < sizeof shorts / sizeof shorts[0]; i++) {
        memset(buf, 'X', sizeof buf);
        assert_rc(dss_owner_self(buf, shorts[i]), -ERANGE);
        for (size_t j = 0; j < sizeof buf; j++)
            if (buf[j] != 'X')
                fail_msg("dss_owner_self(buf, %zu) wrote byte %zu on -ERANGE", shorts[i], j);
    }
    assert_rc(dss_owner_self(NULL, sizeof buf), -EINVAL);
    assert_rc(dss_owner_self(NULL, 0), -EINVAL);

    /* Usable as an owner. */
    char id[128];
    ct_id(id, sizeof id, "owner-self");
    assert_rc(dss_owner_self(buf, sizeof buf), 0);
    assert_rc(dss_lock(&h1, id, buf), 0);
    ct_assert_held(&h2, id, expect);
    assert_rc(dss_unlock(&h1, id, buf), 0);

    /* In a child: the child's pid. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        char b[DSS_MAX_LOCK_OWNER_LEN + 1];
        int rc = dss_owner_self(b, sizeof b);
        if (rc != 0)
            snprintf(b, sizeof b, "rc=%d", rc);
        ssize_t w = write(fds[1], b, strlen(b) + 1);
        _exit(w > 0 ? 0 : 1);
    }
    close(fds[1]);
    char got[DSS_MAX_LOCK_OWNER_LEN + 1];
    memset(got, 0, sizeof got);
    size_t used = 0;
    for (;;) {
        ssize_t r = read(fds[0], got + used, sizeof got - 1 - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        used += (size_t)r;
    }
    close(fds[0]);
    assert_int_equal(ct_wait_child(pid, 30), 0);
    char host[300];
    memset(host, 0, sizeof host);
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    char child_expect[400];
    snprintf(child_expect, sizeof child_expect, "%s:%ld", host, (long)pid);
    assert_string_equal(got, child_expect);
}

/* ---- dss_lock_clean ---------------------------------------------------- */

static void test_clean(void **state)
{
    (void)state;
    char base[128];
    ct_id(base, sizeof base, "clean");
    /* Owners, all starting with the unique base. */
    enum { A1, A1b, A2, AX, AB, B1, PCT, NLOCKS };
    const char *suffix[NLOCKS] = {"-A:1", "-A:1", "-A:2", "-A:9", "-AB:3", "-B:1", "-%:7"};
    char owner[NLOCKS][200], id[NLOCKS][200];
    for (int i = 0; i < NLOCKS; i++) {
        snprintf(owner[i], sizeof owner[i], "%s%s", base, suffix[i]);
        char tag[16];
        snprintf(tag, sizeof tag, "clean%d", i);
        ct_id(id[i], sizeof id[i], tag);
    }
    assert_rc(dss_lock(&h1, id[A1], owner[A1]), 0);
    assert_rc(dss_lock_lease(&h1, id[A1b], owner[A1b], LONG_TTL, NULL), 0);
    assert_rc(dss_lock(&h2, id[A2], owner[A2]), 0);
    assert_rc(dss_lock_lease(&h1, id[AX], owner[AX], LONG_TTL, NULL), 0);
    assert_int_equal(ct_expire(id[AX]), 1); /* expired leases are cleaned too */
    assert_rc(dss_lock_lease(&h2, id[AB], owner[AB], LONG_TTL, NULL), 0);
    assert_rc(dss_lock(&h1, id[B1], owner[B1]), 0);
    assert_rc(dss_lock(&h1, id[PCT], owner[PCT]), 0);

    char prefix[256];
    size_t released = 12345;
    /* Bad input: -EINVAL, nothing removed, released untouched. */
    assert_rc(dss_lock_clean(&h1, "", &released), -EINVAL);
    assert_int_equal(released, 12345);
    assert_rc(dss_lock_clean(&h1, NULL, &released), -EINVAL);
    assert_int_equal(released, 12345);
    assert_rc(dss_lock_clean(&h1, NULL, NULL), -EINVAL);
    assert_rc(dss_lock_clean(NULL, base, &released), -EINVAL);
    char *long_prefix = str_of_len(DSS_MAX_LOCK_OWNER_LEN + 1, 'p');
    memcpy(long_prefix, base, strlen(base));
    assert_rc(dss_lock_clean(&h1, long_prefix, &released), -EINVAL);
    free(long_prefix);
    assert_rc(dss_lock_clean(&h1, "bad\xff", &released), -EINVAL);
    assert_int_equal(released, 12345);
    for (int i = 0; i < NLOCKS; i++)
        assert_int_equal(rows_of(id[i]), 1);

    /* LIKE metacharacters are plain bytes: "-_:" matches nothing. */
    snprintf(prefix, sizeof prefix, "%s-_:", base);
    assert_rc(dss_lock_clean(&h1, prefix, &released), 0);
    assert_int_equal(released, 0);
    snprintf(prefix, sizeof prefix, "%s%%", base);
    released = 12345;
    assert_rc(dss_lock_clean(&h1, prefix, &released), 0);
    assert_int_equal(released, 0);
    for (int i = 0; i < NLOCKS; i++)
        assert_int_equal(rows_of(id[i]), 1);

    /* "<base>-A:" removes A1 (two locks), A2 and the expired AX; not AB,
     * whose owner starts with "<base>-A" but not "<base>-A:". */
    snprintf(prefix, sizeof prefix, "%s-A:", base);
    released = 12345;
    assert_rc(dss_lock_clean(&h2, prefix, &released), 0);
    assert_int_equal(released, 4);
    assert_int_equal(rows_of(id[A1]), 0);
    assert_int_equal(rows_of(id[A1b]), 0);
    assert_int_equal(rows_of(id[A2]), 0);
    assert_int_equal(rows_of(id[AX]), 0);
    ct_assert_held(&h1, id[AB], owner[AB]);
    ct_assert_held(&h1, id[B1], owner[B1]);
    ct_assert_held(&h1, id[PCT], owner[PCT]);
    /* Again: nothing left to do. */
    released = 12345;
    assert_rc(dss_lock_clean(&h2, prefix, &released), 0);
    assert_int_equal(released, 0);

    /* A literal "%" in the prefix. */
    snprintf(prefix, sizeof prefix, "%s-%%", base);
    assert_rc(dss_lock_clean(&h1, prefix, &released), 0);
    assert_int_equal(released, 1);
    assert_int_equal(rows_of(id[PCT]), 0);
    ct_assert_held(&h1, id[AB], owner[AB]);
    /* Case matters. */
    char upper[200];
    snprintf(upper, sizeof upper, "%s-ab:", base);
    assert_rc(dss_lock_clean(&h1, upper, &released), 0);
    assert_int_equal(released, 0);
    ct_assert_held(&h1, id[AB], owner[AB]);
    /* released may be NULL. */
    snprintf(prefix, sizeof prefix, "%s-AB:", base);
    assert_rc(dss_lock_clean(&h1, prefix, NULL), 0);
    assert_int_equal(rows_of(id[AB]), 0);
    /* The whole owner is a prefix of itself. */
    assert_rc(dss_lock_clean(&h1, owner[B1], &released), 0);
    assert_int_equal(released, 1);
    assert_int_equal(rows_of(id[B1]), 0);

    /* Recorded in the history, with this process as actor. */
    char self[DSS_MAX_LOCK_OWNER_LEN + 1], lself[600], lbase[300], sql[1200];
    assert_rc(dss_owner_self(self, sizeof self), 0);
    ct_sql_literal(lself, sizeof lself, self);
    ct_sql_literal(lbase, sizeof lbase, base);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM dss.lock_history WHERE event = 'clean' "
             "AND starts_with(owner, %s) AND actor = %s",
             lbase, lself);
    long long n = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &n), 0);
    assert_int_equal(n, NLOCKS);
}

/* ---- takeover race between processes ---------------------------------- */

struct race {
    atomic_int ready;
    atomic_int done;
    int rc[RACE_ROUNDS][RACE_PROCS];
    uint64_t tok[RACE_ROUNDS][RACE_PROCS];
};

/* Blocks until the write end of the pipe is closed by the parent. */
static void await_close(int fd)
{
    char c;
    for (;;) {
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
}

static int race_child(struct race *r, int k, int pipes[][2], const char *prefix)
{
    for (int i = 0; i < RACE_ROUNDS; i++)
        close(pipes[i][1]);
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    char id[192], owner[32];
    snprintf(owner, sizeof owner, "racer-%d", k);
    snprintf(id, sizeof id, "%s.warm%d", prefix, k);
    CHECK_RC(dss_lock_status(&h, id, NULL, NULL), -ENOLCK); /* connect before racing */
    atomic_fetch_add(&r->ready, 1);
    for (int i = 0; i < RACE_ROUNDS; i++) {
        await_close(pipes[i][0]);
        snprintf(id, sizeof id, "%s.%d", prefix, i);
        uint64_t t = 0;
        r->rc[i][k] = dss_lock_lease(&h, id, owner, LONG_TTL, &t);
        r->tok[i][k] = t;
        atomic_fetch_add(&r->done, 1);
    }
    dss_fini(&h);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

/* Polls *counter until it reaches target (deadline timeout_s). */
static int await_counter(atomic_int *counter, int target, double timeout_s)
{
    double deadline = ct_now_ms() + timeout_s * 1e3;
    while (atomic_load(counter) < target) {
        if (ct_now_ms() > deadline)
            return -1;
        struct timespec nap = {0, 1000 * 1000}; /* polling a state, with a deadline */
        nanosleep(&nap, NULL);
    }
    return 0;
}

static void test_takeover_race(void **state)
{
    (void)state;
    struct race *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                          -1, 0);
    assert_true(r != MAP_FAILED);
    memset(r, 0, sizeof *r);
    char prefix[128];
    ct_id(prefix, sizeof prefix, "race");
    int pipes[RACE_ROUNDS][2];
    for (int i = 0; i < RACE_ROUNDS; i++)
        assert_int_equal(pipe(pipes[i]), 0);

    pid_t pids[RACE_PROCS];
    for (int k = 0; k < RACE_PROCS; k++) {
        fflush(NULL);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0)
            _exit(race_child(r, k, pipes, prefix));
    }
    int ok = await_counter(&r->ready, RACE_PROCS, 60) == 0;
    uint64_t orig[RACE_ROUNDS] = {0};
    for (int i = 0; ok && i < RACE_ROUNDS; i++) {
        /* Everybody finished the previous round and now waits for this one. */
        if (await_counter(&r->done, RACE_PROCS * i, 60) != 0) {
            ok = 0;
            break;
        }
        char id[192];
        snprintf(id, sizeof id, "%s.%d", prefix, i);
        orig[i] = 0;
        if (dss_lock_lease(&h1, id, "original", LONG_TTL, &orig[i]) != 0 || ct_expire(id) != 1) {
            fprintf(stderr, "round %d: cannot set up the expired lease: %s\n", i,
                    dss_last_error());
            ok = 0;
            break;
        }
        close(pipes[i][1]); /* go */
        pipes[i][1] = -1;
    }
    if (ok)
        ok = await_counter(&r->done, RACE_PROCS * RACE_ROUNDS, 60) == 0;
    if (!ok)
        for (int k = 0; k < RACE_PROCS; k++)
            kill(pids[k], SIGKILL);
    for (int i = 0; i < RACE_ROUNDS; i++) {
        close(pipes[i][0]);
        if (pipes[i][1] >= 0)
            close(pipes[i][1]);
    }
    int failed = 0;
    for (int k = 0; k < RACE_PROCS; k++)
        if (ct_wait_child(pids[k], 60) != 0)
            failed++;
    assert_true(ok);
    assert_int_equal(failed, 0);

    int wins[RACE_PROCS] = {0};
    for (int i = 0; i < RACE_ROUNDS; i++) {
        int winner = -1, nwin = 0;
        for (int k = 0; k < RACE_PROCS; k++) {
            int rc = r->rc[i][k];
            if (rc == 0) {
                winner = k;
                nwin++;
            } else if (rc != -EEXIST) {
                fail_msg("round %d: racer %d got %d (%s)", i, k, rc, ct_errname(rc));
            } else if (r->tok[i][k] != 0) {
                fail_msg("round %d: racer %d got -EEXIST but its token was written", i, k);
            }
        }
        if (nwin != 1)
            fail_msg("round %d: %d racers took the expired lease, expected exactly 1", i, nwin);
        wins[winner]++;
        uint64_t t = r->tok[i][winner];
        assert_true(t > orig[i]);
        char id[192], owner[32];
        snprintf(id, sizeof id, "%s.%d", prefix, i);
        snprintf(owner, sizeof owner, "racer-%d", winner);
        ct_assert_held(&h1, id, owner);
        assert_int_equal(token_of(&h1, id), t);
        assert_rc(dss_lock_check(&h1, id, orig[i]), -ESTALE);
        assert_int_equal(history_count(id, "takeover", 0), 1);
        assert_int_equal(history_count(id, "takeover", t), 1);
        assert_rc(dss_unlock(&h1, id, owner), 0);
    }
    fprintf(stderr, "takeover race, wins per racer:");
    for (int k = 0; k < RACE_PROCS; k++)
        fprintf(stderr, " %d", wins[k]);
    fprintf(stderr, "\n");
    munmap(r, sizeof *r);
}

/* ---- token monotonicity under contention ------------------------------- */

static int mono_child(int k, const char *id, int start_fd, int out_fd)
{
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    char owner[32];
    snprintf(owner, sizeof owner, "mono-%d", k);
    CHECK_RC(dss_lock_status(&h, "test_lease.warm-up", NULL, NULL), -ENOLCK);
    await_close(start_fd);
    uint64_t toks[MONO_ITERS];
    long spins = 0;
    for (int got = 0; got < MONO_ITERS;) {
        uint64_t t = 0;
        int rc = dss_lock_lease(&h, id, owner, LONG_TTL, &t);
        if (rc == -EEXIST) {
            spins++;
            sched_yield();
            continue;
        }
        if (!CHECK_RC(rc, 0))
            return 1;
        toks[got++] = t;
        if (!CHECK_RC(dss_unlock(&h, id, owner), 0))
            return 1;
    }
    dss_fini(&h);
    ssize_t w = write(out_fd, toks, sizeof toks); /* < PIPE_BUF: one atomic write */
    if (!CHECK(w == (ssize_t)sizeof toks))
        return 1;
    fprintf(stderr, "mono child %d: %d acquisitions, %ld retries on -EEXIST\n", k, MONO_ITERS,
            spins);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_token_monotonic(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "mono");
    int start[2];
    assert_int_equal(pipe(start), 0);
    int out[MONO_PROCS][2];
    pid_t pids[MONO_PROCS];
    for (int k = 0; k < MONO_PROCS; k++) {
        assert_int_equal(pipe(out[k]), 0);
        fflush(NULL);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0) {
            close(start[1]);
            close(out[k][0]);
            _exit(mono_child(k, id, start[0], out[k][1]));
        }
        close(out[k][1]);
    }
    close(start[0]);
    close(start[1]); /* go */

    static uint64_t all[MONO_PROCS * MONO_ITERS];
    int failed = 0;
    for (int k = 0; k < MONO_PROCS; k++) {
        uint64_t *mine = all + k * MONO_ITERS;
        size_t want = sizeof(uint64_t) * MONO_ITERS, used = 0;
        while (used < want) {
            ssize_t r = read(out[k][0], (char *)mine + used, want - used);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            used += (size_t)r;
        }
        close(out[k][0]);
        int rc = ct_wait_child(pids[k], 120);
        if (rc != 0 || used != want) {
            fprintf(stderr, "mono child %d: exit %d, %zu bytes of tokens\n", k, rc, used);
            failed++;
            continue;
        }
        for (int i = 1; i < MONO_ITERS; i++)
            if (mine[i] <= mine[i - 1])
                fail_msg("child %d: token %d (%" PRIu64 ") not above the previous (%" PRIu64 ")",
                         k, i, mine[i], mine[i - 1]);
    }
    assert_int_equal(failed, 0);
    ct_assert_absent(&h1, id);

    /* All distinct. */
    const size_t n = MONO_PROCS * MONO_ITERS;
    static uint64_t sorted[MONO_PROCS * MONO_ITERS];
    memcpy(sorted, all, sizeof all);
    qsort(sorted, n, sizeof sorted[0], cmp_u64);
    for (size_t i = 1; i < n; i++)
        if (sorted[i] == sorted[i - 1])
            fail_msg("token %" PRIu64 " was handed out twice", sorted[i]);

    /* In the order of acquisition (history seq), increasing; and the same
     * tokens as the children saw. */
    char lit[256], sql[600];
    static char hist[64 * 1024];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql,
             "SELECT token FROM dss.lock_history WHERE id = %s "
             "AND event IN ('acquire', 'takeover') ORDER BY seq",
             lit);
    assert_int_equal(ct_psql(ct_conninfo(), sql, hist, sizeof hist), 0);
    static uint64_t seq_order[MONO_PROCS * MONO_ITERS + 1];
    size_t m = 0;
    for (char *p = hist, *end; *p != '\0'; p = end) {
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p)
            break;
        assert_true(m < n);
        seq_order[m++] = v;
        while (*end == '\n')
            end++;
    }
    assert_int_equal(m, n);
    int inversions = 0;
    for (size_t i = 1; i < n; i++)
        if (seq_order[i] <= seq_order[i - 1]) {
            if (inversions++ < 10)
                fprintf(stderr,
                        "history: acquisition %zu has token %" PRIu64
                        ", not above the previous one's %" PRIu64 "\n",
                        i, seq_order[i], seq_order[i - 1]);
        }
    if (inversions > 0)
        fail_msg("%d acquisitions of one lock, in history order, got a token not above the "
                 "previous acquisition's",
                 inversions);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(seq_order[i], sorted[i]); /* increasing, so sorted */
    assert_int_equal(history_count(id, "release", 0), (long long)n);
}

/* ---- fencing in SQL: dss_lock_is_held() in the caller's transaction ---- */

/* Runs the fenced write in a transaction of its own; returns the number of
 * rows it updated. */
static long long fenced_update(const char *table, const char *id, uint64_t token)
{
    char lit[256], sql[1024], out[64];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql,
             "BEGIN; "
             "WITH u AS (UPDATE %s SET v = v + 1 WHERE id = 1 AND dss_lock_is_held(%s, %" PRIu64
             ") RETURNING 1) SELECT count(*) FROM u; "
             "COMMIT;",
             table, lit, token);
    assert_int_equal(ct_psql(ct_conninfo(), sql, out, sizeof out), 0);
    char *end = NULL;
    long long n = strtoll(out, &end, 10);
    if (end == out || *end != '\0')
        fail_msg("unexpected psql output '%s'", out);
    return n;
}

static long long value_of(const char *table)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = 1", table);
    long long v = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &v), 0);
    return v;
}

static void test_sql_fencing(void **state)
{
    (void)state;
    char id[128], table[64], sql[512];
    ct_id(id, sizeof id, "fence");
    snprintf(table, sizeof table, "public.dss_ctest_fence_%ld", (long)getpid());
    snprintf(sql, sizeof sql,
             "DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, v int NOT NULL); "
             "INSERT INTO %s VALUES (1, 0)",
             table, table, table);
    assert_int_equal(ct_psql(ct_conninfo(), sql, NULL, 0), 0);

    uint64_t t1 = 0, t2 = 0, t3 = 0;
    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &t1), 0);
    assert_int_equal(fenced_update(table, id, t1), 1); /* live token */
    assert_int_equal(value_of(table), 1);
    assert_int_equal(fenced_update(table, id, t1 + 1), 0); /* wrong token */
    assert_int_equal(fenced_update(table, id, 0), 0);
    assert_int_equal(value_of(table), 1);

    assert_rc(dss_unlock(&h1, id, "alice"), 0);
    assert_int_equal(fenced_update(table, id, t1), 0); /* released */
    assert_int_equal(value_of(table), 1);

    assert_rc(dss_lock_lease(&h1, id, "alice", LONG_TTL, &t2), 0);
    assert_int_equal(fenced_update(table, id, t1), 0); /* an older acquisition's */
    assert_int_equal(fenced_update(table, id, t2), 1);
    assert_int_equal(value_of(table), 2);

    assert_int_equal(ct_expire(id), 1);
    assert_int_equal(fenced_update(table, id, t2), 0); /* expired */
    assert_rc(dss_lock_lease(&h2, id, "bob", LONG_TTL, &t3), 0);
    assert_int_equal(fenced_update(table, id, t2), 0); /* taken over */
    assert_int_equal(fenced_update(table, id, t3), 1);
    assert_int_equal(value_of(table), 3);
    assert_rc(dss_unlock(&h2, id, "bob"), 0);

    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    assert_int_equal(ct_psql(ct_conninfo(), sql, NULL, 0), 0);
}

int main(void)
{
    if (ct_setup("test_lease", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_acquire),
        cmocka_unit_test(test_lease_einval),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_takeover_by_lock),
        cmocka_unit_test(test_takeover_by_lease),
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_owner_self),
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_takeover_race),
        cmocka_unit_test(test_token_monotonic),
        cmocka_unit_test(test_sql_fencing),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
