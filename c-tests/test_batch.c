/* Batches: dss_lock_many (all or nothing), dss_unlock_many and
 * dss_lock_refresh_many (as much as possible, first failure returned);
 * bad input; 10 000 ids in one call; overlapping batches from two
 * processes neither deadlock nor both succeed. */
#include "common.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#define SENTINEL_IDX ((size_t)0x5eadbeef)
#define BIG_N        10000
#define OVL_ROUNDS   50
#define OVL_IDS      20

static struct dss_handle h1, h2;

CT_GROUP_WITH_TWO_HANDLES(h1, h2)

/* n ids "<unique prefix>.<tag><i>", in ids[] (each char[128]). */
typedef char lockid_buf[128];

static void make_ids(lockid_buf *ids, const char **ptrs, size_t n, const char *tag)
{
    char prefix[96];
    ct_id(prefix, sizeof prefix, tag);
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%s.%zu", prefix, i);
        ptrs[i] = ids[i];
    }
}

/* Rows of dss.locks with this id (expired leases included). */
static long long rows_of(const char *id)
{
    char lit[512], sql[640];
    ct_sql_literal(lit, sizeof lit, id);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM dss.locks WHERE id = %s", lit);
    long long n = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &n), 0);
    return n;
}

/* Rows of dss.locks whose id starts with prefix (and of owner, if set). */
static long long rows_with_prefix(const char *prefix, const char *owner)
{
    char lp[512], lo[512], sql[1200];
    ct_sql_literal(lp, sizeof lp, prefix);
    if (owner != NULL) {
        ct_sql_literal(lo, sizeof lo, owner);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM dss.locks WHERE starts_with(id, %s) AND owner = %s", lp,
                 lo);
    } else {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM dss.locks WHERE starts_with(id, %s)",
                 lp);
    }
    long long n = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &n), 0);
    return n;
}

static struct dss_lock_info info_of(struct dss_handle *h, const char *id)
{
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(h, id, &info), 0);
    return info;
}

static int64_t refreshed_us(const char *id)
{
    struct dss_lock_info info = info_of(&h1, id);
    int64_t t = ct_tv_us(&info.refreshed_at);
    dss_lock_info_clear(&info);
    return t;
}

static void assert_none_held(const char *const *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rows_of(ids[i]) != 0)
            fail_msg("lock %zu (%s) exists", i, ids[i]);
}

/* ---- dss_lock_many ----------------------------------------------------- */

static void test_lock_many_all_or_nothing(void **state)
{
    (void)state;
    enum { N = 5 };
    lockid_buf ids[N];
    const char *p[N];
    make_ids(ids, p, N, "aon");

    /* One id held by another owner: nothing is taken. */
    assert_rc(dss_lock(&h2, p[2], "other"), 0);
    size_t conflict = SENTINEL_IDX;
    assert_rc(dss_lock_many(&h1, p, N, "me", 0, &conflict), -EEXIST);
    assert_int_equal(conflict, 2);
    assert_true(ct_contains(dss_last_error(), p[2]));
    assert_true(ct_contains(dss_last_error(), "other"));
    for (int i = 0; i < N; i++)
        if (i != 2)
            assert_int_equal(rows_of(p[i]), 0);
    ct_assert_held(&h1, p[2], "other");
    assert_rc(dss_lock_many(&h1, p, N, "me", 60000, NULL), -EEXIST); /* conflict optional */
    assert_rc(dss_lock_many(&h1, p, N, "other", 0, &conflict), -EEXIST); /* same owner too */
    assert_int_equal(conflict, 2);
    assert_none_held(p, 2);
    assert_none_held(p + 3, 2);
    assert_rc(dss_unlock(&h2, p[2], "other"), 0);

    /* The conflict is the first held id in the caller's order, not in id
     * order: ids in descending order, held ones at 1 and 3. */
    const char *rev[N];
    for (int i = 0; i < N; i++)
        rev[i] = p[N - 1 - i];
    assert_rc(dss_lock(&h2, rev[1], "other1"), 0);
    assert_rc(dss_lock_lease(&h2, rev[3], "other3", 60000, NULL), 0);
    conflict = SENTINEL_IDX;
    assert_rc(dss_lock_many(&h1, rev, N, "me", 0, &conflict), -EEXIST);
    assert_int_equal(conflict, 1);
    assert_true(ct_contains(dss_last_error(), rev[1]));
    assert_true(ct_contains(dss_last_error(), "other1"));
    assert_int_equal(rows_of(rev[0]), 0);
    assert_int_equal(rows_of(rev[2]), 0);
    assert_int_equal(rows_of(rev[4]), 0);
    ct_assert_held(&h1, rev[1], "other1");
    ct_assert_held(&h1, rev[3], "other3");
    assert_rc(dss_unlock(&h2, rev[1], "other1"), 0);
    assert_rc(dss_lock_many(&h1, rev, N, "me", 0, &conflict), -EEXIST);
    assert_int_equal(conflict, 3);
    assert_true(ct_contains(dss_last_error(), "other3"));
    assert_rc(dss_unlock(&h2, rev[3], "other3"), 0);

    /* All free: all taken, conflict untouched, distinct tokens, no lease. */
    conflict = SENTINEL_IDX;
    assert_rc(dss_lock_many(&h1, p, N, "me", 0, &conflict), 0);
    assert_int_equal(conflict, SENTINEL_IDX);
    uint64_t toks[N];
    for (int i = 0; i < N; i++) {
        struct dss_lock_info info = info_of(&h2, p[i]);
        assert_string_equal(info.owner, "me");
        assert_int_equal(info.ttl_ms, 0);
        assert_int_equal(info.expires_in_ms, -1);
        toks[i] = info.token;
        for (int j = 0; j < i; j++)
            assert_true(toks[j] != toks[i]);
        dss_lock_info_clear(&info);
    }
    /* Held now, by me: a second batch (any owner) gets -EEXIST at 0. */
    assert_rc(dss_lock_many(&h2, p, N, "me", 0, &conflict), -EEXIST);
    assert_int_equal(conflict, 0);
    assert_rc(dss_unlock_many(&h1, p, N, "me"), 0);
    assert_none_held(p, N);
}

static void test_lock_many_einval(void **state)
{
    (void)state;
    enum { N = 4 };
    lockid_buf ids[N];
    const char *p[N];
    make_ids(ids, p, N, "einval");
    struct dss_handle zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    size_t conflict = SENTINEL_IDX;

    /* Duplicates. */
    const char *dup[] = {p[0], p[1], p[2], p[1]};
    assert_rc(dss_lock_many(&h1, dup, 4, "me", 0, &conflict), -EINVAL);
    assert_true(ct_contains(dss_last_error(), p[1]));
    /* An equal string at another address is a duplicate too. */
    char copy[128];
    snprintf(copy, sizeof copy, "%s", p[0]);
    const char *dup2[] = {p[0], copy};
    assert_rc(dss_lock_many(&h1, dup2, 2, "me", 0, &conflict), -EINVAL);
    /* NULL array, NULL element, bad elements. */
    assert_rc(dss_lock_many(&h1, NULL, 3, "me", 0, &conflict), -EINVAL);
    const char *with_null[] = {p[0], NULL, p[2]};
    assert_rc(dss_lock_many(&h1, with_null, 3, "me", 0, &conflict), -EINVAL);
    const char *e = dss_last_error();
    assert_true(ct_contains(e, "[1]") || ct_contains(e, "index 1"));
    const char *with_empty[] = {p[0], p[1], ""};
    assert_rc(dss_lock_many(&h1, with_empty, 3, "me", 0, &conflict), -EINVAL);
    char long_id[DSS_MAX_LOCK_ID_LEN + 2];
    memset(long_id, 'l', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    const char *with_long[] = {long_id, p[0]};
    assert_rc(dss_lock_many(&h1, with_long, 2, "me", 0, &conflict), -EINVAL);
    const char *with_bad_utf8[] = {p[0], "bad\xff"};
    assert_rc(dss_lock_many(&h1, with_bad_utf8, 2, "me", 0, &conflict), -EINVAL);
    /* Bad owner, ttl, handle. */
    assert_rc(dss_lock_many(&h1, p, N, NULL, 0, &conflict), -EINVAL);
    char long_owner[DSS_MAX_LOCK_OWNER_LEN + 2];
    memset(long_owner, 'o', sizeof long_owner - 1);
    long_owner[sizeof long_owner - 1] = '\0';
    assert_rc(dss_lock_many(&h1, p, N, long_owner, 0, &conflict), -EINVAL);
    assert_rc(dss_lock_many(&h1, p, N, "me", DSS_MAX_TTL_MS + 1, &conflict), -EINVAL);
    assert_rc(dss_lock_many(&h1, p, N, "me", UINT64_MAX, &conflict), -EINVAL);
    assert_rc(dss_lock_many(NULL, p, N, "me", 0, &conflict), -EINVAL);
    assert_rc(dss_lock_many(&zeroed, p, N, "me", 0, &conflict), -EINVAL);
    assert_int_equal(conflict, SENTINEL_IDX);
    assert_none_held(p, N);

    /* Too many: DSS_MAX_BATCH + 1 distinct, valid ids. */
    const size_t too_many = (size_t)DSS_MAX_BATCH + 1;
    char prefix[96];
    ct_id(prefix, sizeof prefix, "toomany");
    char *store = malloc(too_many * 128);
    const char **big = malloc(too_many * sizeof *big);
    assert_non_null(store);
    assert_non_null(big);
    for (size_t i = 0; i < too_many; i++) {
        snprintf(store + i * 128, 128, "%s.%zu", prefix, i);
        big[i] = store + i * 128;
    }
    assert_rc(dss_lock_many(&h1, big, too_many, "me", 0, &conflict), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "100000"));
    assert_rc(dss_unlock_many(&h1, big, too_many, "me"), -EINVAL);
    assert_rc(dss_lock_refresh_many(&h1, big, too_many, "me"), -EINVAL);
    assert_int_equal(conflict, SENTINEL_IDX);
    assert_int_equal(rows_with_prefix(prefix, NULL), 0);
    free(big);
    free(store);

    /* n = 0: nothing to do, success (NULL array allowed). */
    assert_rc(dss_lock_many(&h1, NULL, 0, "me", 0, &conflict), 0);
    assert_rc(dss_lock_many(&h1, p, 0, "me", 0, &conflict), 0);
    assert_int_equal(conflict, SENTINEL_IDX);
    assert_none_held(p, N);
    assert_rc(dss_unlock_many(&h1, NULL, 0, "me"), 0);
    assert_rc(dss_lock_refresh_many(&h1, NULL, 0, "me"), 0);

    /* unlock_many / refresh_many: -EINVAL and nothing done. */
    assert_rc(dss_lock_many(&h1, p, 2, "me", 60000, NULL), 0);
    int64_t r0 = refreshed_us(p[0]), r1 = refreshed_us(p[1]);
    const char *dup_held[] = {p[0], p[1], p[0]};
    assert_rc(dss_unlock_many(&h1, dup_held, 3, "me"), -EINVAL);
    assert_rc(dss_lock_refresh_many(&h1, dup_held, 3, "me"), -EINVAL);
    const char *null_held[] = {p[0], p[1], NULL};
    assert_rc(dss_unlock_many(&h1, null_held, 3, "me"), -EINVAL);
    assert_rc(dss_lock_refresh_many(&h1, null_held, 3, "me"), -EINVAL);
    assert_rc(dss_unlock_many(&h1, NULL, 2, "me"), -EINVAL);
    assert_rc(dss_lock_refresh_many(&h1, NULL, 2, "me"), -EINVAL);
    assert_rc(dss_unlock_many(&h1, p, 2, NULL), -EINVAL);
    assert_rc(dss_lock_refresh_many(&h1, p, 2, NULL), -EINVAL);
    assert_rc(dss_unlock_many(NULL, p, 2, "me"), -EINVAL);
    assert_rc(dss_lock_refresh_many(&zeroed, p, 2, "me"), -EINVAL);
    ct_assert_held(&h2, p[0], "me");
    ct_assert_held(&h2, p[1], "me");
    assert_int_equal(refreshed_us(p[0]), r0);
    assert_int_equal(refreshed_us(p[1]), r1);
    assert_rc(dss_unlock_many(&h1, p, 2, "me"), 0);
    assert_none_held(p, N);
}

static void test_lock_many_ttl_and_takeover(void **state)
{
    (void)state;
    enum { N = 3 };
    lockid_buf ids[N];
    const char *p[N];
    make_ids(ids, p, N, "ttl");

    /* ttl applies to every lock of the batch. */
    assert_rc(dss_lock_many(&h1, p, N, "me", 5000, NULL), 0);
    for (int i = 0; i < N; i++) {
        struct dss_lock_info info = info_of(&h2, p[i]);
        assert_string_equal(info.owner, "me");
        assert_int_equal(info.ttl_ms, 5000);
        assert_true(info.expires_in_ms > 0 && info.expires_in_ms <= 5000);
        dss_lock_info_clear(&info);
    }
    assert_rc(dss_unlock_many(&h1, p, N, "me"), 0);

    /* An expired lease in the batch is taken over; a live one is not. */
    uint64_t old = 0;
    assert_rc(dss_lock_lease(&h2, p[1], "other", 60000, &old), 0);
    size_t conflict = SENTINEL_IDX;
    assert_rc(dss_lock_many(&h1, p, N, "me", 0, &conflict), -EEXIST);
    assert_int_equal(conflict, 1);
    assert_int_equal(ct_expire(p[1]), 1);
    assert_rc(dss_lock_many(&h1, p, N, "me", 0, &conflict), 0);
    assert_int_equal(conflict, 1); /* untouched by the success */
    struct dss_lock_info info = info_of(&h2, p[1]);
    assert_string_equal(info.owner, "me");
    assert_true(info.token > old);
    assert_int_equal(info.ttl_ms, 0);
    assert_int_equal(info.expires_in_ms, -1);
    uint64_t newtok = info.token;
    dss_lock_info_clear(&info);
    assert_rc(dss_lock_check(&h2, p[1], old), -ESTALE);
    assert_rc(dss_lock_check(&h2, p[1], newtok), 0);
    assert_rc(dss_lock_refresh(&h2, p[1], "other"), -EACCES);
    char lit[256], sql[512];
    ct_sql_literal(lit, sizeof lit, p[1]);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM dss.lock_history WHERE id = %s AND event = 'takeover' "
             "AND owner = 'me' AND token = %" PRIu64,
             lit, newtok);
    long long n = -1;
    assert_int_equal(ct_psql_ll(ct_conninfo(), sql, &n), 0);
    assert_int_equal(n, 1);
    assert_rc(dss_unlock_many(&h1, p, N, "me"), 0);
    assert_none_held(p, N);
}

/* ---- dss_unlock_many --------------------------------------------------- */

static void test_unlock_many(void **state)
{
    (void)state;
    enum { N = 12 };
    lockid_buf ids[N];
    const char *p[N];
    make_ids(ids, p, N, "unlock");

    /* -ENOLCK first: [mine, absent, other's, mine] */
    assert_rc(dss_lock(&h1, p[0], "me"), 0);
    assert_rc(dss_lock(&h2, p[2], "other"), 0);
    assert_rc(dss_lock_lease(&h1, p[3], "me", 60000, NULL), 0);
    const char *b1[] = {p[0], p[1], p[2], p[3]};
    assert_rc(dss_unlock_many(&h1, b1, 4, "me"), -ENOLCK);
    assert_true(ct_contains(dss_last_error(), p[1]));
    assert_true(ct_contains(dss_last_error(), "index 1"));
    assert_int_equal(rows_of(p[0]), 0); /* the others were done */
    assert_int_equal(rows_of(p[3]), 0);
    ct_assert_held(&h1, p[2], "other"); /* not mine: untouched */

    /* -EACCES first: [mine, other's, absent, mine] */
    assert_rc(dss_lock(&h1, p[4], "me"), 0);
    assert_rc(dss_lock(&h1, p[5], "me"), 0);
    const char *b2[] = {p[4], p[2], p[6], p[5]};
    assert_rc(dss_unlock_many(&h1, b2, 4, "me"), -EACCES);
    assert_true(ct_contains(dss_last_error(), "other"));
    assert_true(ct_contains(dss_last_error(), "index 1"));
    assert_int_equal(rows_of(p[4]), 0);
    assert_int_equal(rows_of(p[5]), 0);
    ct_assert_held(&h1, p[2], "other");

    /* -ETIME first: [mine, my expired lease, other's, absent, mine] */
    assert_rc(dss_lock(&h1, p[7], "me"), 0);
    assert_rc(dss_lock_lease(&h1, p[8], "me", 60000, NULL), 0);
    assert_int_equal(ct_expire(p[8]), 1);
    assert_rc(dss_lock(&h1, p[9], "me"), 0);
    const char *b3[] = {p[7], p[8], p[2], p[10], p[9]};
    assert_rc(dss_unlock_many(&h1, b3, 5, "me"), -ETIME);
    assert_true(ct_contains(dss_last_error(), "index 1"));
    assert_int_equal(rows_of(p[7]), 0);
    assert_int_equal(rows_of(p[8]), 0); /* the stale entry is removed */
    assert_int_equal(rows_of(p[9]), 0);
    ct_assert_held(&h1, p[2], "other");

    /* Another owner's expired lease reads as absent. */
    assert_rc(dss_lock_lease(&h2, p[11], "other", 60000, NULL), 0);
    assert_int_equal(ct_expire(p[11]), 1);
    assert_rc(dss_lock(&h1, p[0], "me"), 0);
    const char *b4[] = {p[0], p[11]};
    assert_rc(dss_unlock_many(&h1, b4, 2, "me"), -ENOLCK);
    assert_int_equal(rows_of(p[0]), 0);
    assert_int_equal(rows_of(p[11]), 1); /* not mine to remove */

    /* All mine: 0. */
    assert_rc(dss_lock_many(&h1, p + 3, 3, "me", 0, NULL), 0);
    assert_rc(dss_unlock_many(&h1, p + 3, 3, "me"), 0);
    assert_none_held(p + 3, 3);
    assert_rc(dss_unlock(&h2, p[2], "other"), 0);
    assert_rc(dss_unlock(&h2, p[11], "other"), -ETIME);
    assert_none_held(p, N);
}

/* ---- dss_lock_refresh_many --------------------------------------------- */

static void test_refresh_many(void **state)
{
    (void)state;
    enum { A, B, OTHER, ABSENT, EXPIRED, N };
    lockid_buf ids[N];
    const char *p[N];
    make_ids(ids, p, N, "refresh");
    assert_rc(dss_lock_lease(&h1, p[A], "me", 60000, NULL), 0);
    assert_rc(dss_lock(&h1, p[B], "me"), 0);
    assert_rc(dss_lock_lease(&h2, p[OTHER], "other", 60000, NULL), 0);
    assert_rc(dss_lock_lease(&h1, p[EXPIRED], "me", 60000, NULL), 0);
    assert_int_equal(ct_expire(p[EXPIRED]), 1);
    int64_t ra = refreshed_us(p[A]), rb = refreshed_us(p[B]), ro = refreshed_us(p[OTHER]);

    /* -ENOLCK first. */
    const char *b1[] = {p[A], p[ABSENT], p[OTHER], p[B]};
    assert_rc(dss_lock_refresh_many(&h1, b1, 4, "me"), -ENOLCK);
    assert_true(ct_contains(dss_last_error(), p[ABSENT]));
    assert_true(ct_contains(dss_last_error(), "index 1"));
    int64_t ra2 = refreshed_us(p[A]), rb2 = refreshed_us(p[B]);
    assert_true(ra2 > ra); /* the others were done */
    assert_true(rb2 > rb);
    assert_int_equal(refreshed_us(p[OTHER]), ro); /* not mine: untouched */
    assert_int_equal(rows_of(p[ABSENT]), 0);      /* refresh creates nothing */

    /* -EACCES first. */
    const char *b2[] = {p[A], p[OTHER], p[ABSENT], p[B]};
    assert_rc(dss_lock_refresh_many(&h1, b2, 4, "me"), -EACCES);
    assert_true(ct_contains(dss_last_error(), "other"));
    assert_true(ct_contains(dss_last_error(), "index 1"));
    int64_t ra3 = refreshed_us(p[A]), rb3 = refreshed_us(p[B]);
    assert_true(ra3 > ra2);
    assert_true(rb3 > rb2);
    assert_int_equal(refreshed_us(p[OTHER]), ro);

    /* -ETIME first: my expired lease is not extended. */
    const char *b3[] = {p[A], p[EXPIRED], p[OTHER], p[B]};
    assert_rc(dss_lock_refresh_many(&h1, b3, 4, "me"), -ETIME);
    assert_true(ct_contains(dss_last_error(), "index 1"));
    assert_true(refreshed_us(p[A]) > ra3);
    assert_true(refreshed_us(p[B]) > rb3);
    ct_assert_absent(&h1, p[EXPIRED]);
    assert_int_equal(rows_of(p[EXPIRED]), 1);
    assert_rc(dss_lock_refresh(&h1, p[EXPIRED], "me"), -ETIME);

    /* The lease runs from the refresh. */
    assert_int_equal(ct_lease_runs_from_refresh(p[A]), 1);

    /* All mine and live: 0. */
    const char *b4[] = {p[B], p[A]};
    assert_rc(dss_lock_refresh_many(&h1, b4, 2, "me"), 0);
    struct dss_lock_info info = info_of(&h2, p[B]);
    assert_int_equal(info.expires_in_ms, -1); /* a plain lock stays plain */
    dss_lock_info_clear(&info);

    assert_rc(dss_unlock_many(&h1, b4, 2, "me"), 0);
    assert_rc(dss_unlock(&h2, p[OTHER], "other"), 0);
    assert_rc(dss_unlock(&h1, p[EXPIRED], "me"), -ETIME);
    assert_none_held(p, N);
}

/* ---- 10 000 ids in one call -------------------------------------------- */

static void test_big_batch(void **state)
{
    (void)state;
    static lockid_buf ids[BIG_N];
    static const char *p[BIG_N];
    make_ids(ids, p, BIG_N, "big");
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s", ids[0]);
    prefix[strlen(prefix) - 1] = '\0'; /* "<prefix>." */

    /* The last one held: nothing taken. */
    assert_rc(dss_lock(&h2, p[BIG_N - 1], "other"), 0);
    size_t conflict = SENTINEL_IDX;
    double t0 = ct_now_ms();
    assert_rc(dss_lock_many(&h1, p, BIG_N, "big-owner", 0, &conflict), -EEXIST);
    double t_conflict = ct_now_ms() - t0;
    assert_int_equal(conflict, BIG_N - 1);
    assert_int_equal(rows_with_prefix(prefix, "big-owner"), 0);
    assert_rc(dss_unlock(&h2, p[BIG_N - 1], "other"), 0);

    t0 = ct_now_ms();
    assert_rc(dss_lock_many(&h1, p, BIG_N, "big-owner", 60000, &conflict), 0);
    double t_lock = ct_now_ms() - t0;
    assert_int_equal(rows_with_prefix(prefix, "big-owner"), BIG_N);
    t0 = ct_now_ms();
    assert_rc(dss_lock_refresh_many(&h1, p, BIG_N, "big-owner"), 0);
    double t_refresh = ct_now_ms() - t0;
    t0 = ct_now_ms();
    assert_rc(dss_unlock_many(&h1, p, BIG_N, "big-owner"), 0);
    double t_unlock = ct_now_ms() - t0;
    assert_int_equal(rows_with_prefix(prefix, NULL), 0);
    printf("%d ids in one call: dss_lock_many %.0f ms (conflict on the last: %.0f ms), "
           "dss_lock_refresh_many %.0f ms, dss_unlock_many %.0f ms\n",
           BIG_N, t_lock, t_conflict, t_refresh, t_unlock);
    /* Sanity bounds: one statement each, so well under a second here. */
    const struct {
        const char *what;
        double ms;
    } calls[] = {{"dss_lock_many", t_lock},
                 {"dss_lock_many (conflict)", t_conflict},
                 {"dss_lock_refresh_many", t_refresh},
                 {"dss_unlock_many", t_unlock}};
    int slow = 0;
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
        if (calls[i].ms >= 5000) {
            fprintf(stderr, "%s of %d ids took %.0f ms (bound: 5000 ms)\n", calls[i].what,
                    BIG_N, calls[i].ms);
            slow++;
        }
    if (slow > 0)
        fail_msg("%d batch call(s) of %d ids took 5 s or more", slow, BIG_N);
}

/* ---- overlapping batches from two processes ---------------------------- */

struct ovl {
    pthread_barrier_t barrier;
    char prefix[128];
    int rc[OVL_ROUNDS][2];
    size_t conflict[OVL_ROUNDS][2];
    double ms[OVL_ROUNDS][2];
};

static int ovl_child(void *arg, int me)
{
    struct ovl *o = arg;
    const char *prefix = o->prefix;
    struct dss_handle h = {0};
    if (!CHECK_RC(dss_init_conninfo(&h, ct_conninfo()), 0))
        return 1;
    char owner[160];
    snprintf(owner, sizeof owner, "%s-owner%d", prefix, me);
    CHECK_RC(dss_lock_status(&h, "test_batch.warm-up", NULL, NULL), -ENOLCK);
    static char ids[OVL_IDS][160];
    const char *p[OVL_IDS];
    for (int r = 0; r < OVL_ROUNDS; r++) {
        for (int i = 0; i < OVL_IDS; i++) {
            /* The same ids, in opposite orders. */
            int k = me == 0 ? i : OVL_IDS - 1 - i;
            snprintf(ids[i], sizeof ids[i], "%s.%d.%02d", prefix, r, k);
            p[i] = ids[i];
        }
        size_t conflict = SENTINEL_IDX;
        pthread_barrier_wait(&o->barrier);
        double t0 = ct_now_ms();
        o->rc[r][me] = dss_lock_many(&h, p, OVL_IDS, owner, 0, &conflict);
        o->ms[r][me] = ct_now_ms() - t0;
        o->conflict[r][me] = conflict;
    }
    dss_fini(&h);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static void test_overlapping_batches(void **state)
{
    (void)state;
    struct ovl *o = ct_shared(sizeof *o);
    ct_shared_barrier(&o->barrier, 2);
    ct_id(o->prefix, sizeof o->prefix, "ovl");
    /* A deadlock would hang a round (or be broken by the server after
     * deadlock_timeout, failing a call): both are failures. */
    ct_run_two_children(ovl_child, o, 120);

    int wins[2] = {0, 0};
    double slowest = 0;
    for (int r = 0; r < OVL_ROUNDS; r++) {
        int a = o->rc[r][0], b = o->rc[r][1];
        if (!((a == 0 && b == -EEXIST) || (a == -EEXIST && b == 0)))
            fail_msg("round %d: ascending batch got %d (%s), descending got %d (%s)", r, a,
                     ct_errname(a), b, ct_errname(b));
        int w = a == 0 ? 0 : 1;
        wins[w]++;
        for (int k = 0; k < 2; k++) {
            if (o->ms[r][k] > slowest)
                slowest = o->ms[r][k];
            if (o->ms[r][k] >= 5000)
                fail_msg("round %d: batch %d took %.0f ms", r, k, o->ms[r][k]);
        }
        assert_true(o->conflict[r][1 - w] < OVL_IDS);
        assert_int_equal(o->conflict[r][w], SENTINEL_IDX);
        /* The winner holds all, the loser none. */
        char rp[160], owner[160];
        snprintf(rp, sizeof rp, "%s.%d.", o->prefix, r);
        snprintf(owner, sizeof owner, "%s-owner%d", o->prefix, w);
        assert_int_equal(rows_with_prefix(rp, owner), OVL_IDS);
        assert_int_equal(rows_with_prefix(rp, NULL), OVL_IDS);
    }
    printf("overlapping batches: ascending won %d rounds, descending %d; slowest call %.1f ms\n",
           wins[0], wins[1], slowest);
    for (int k = 0; k < 2; k++) {
        char owner[160];
        snprintf(owner, sizeof owner, "%s-owner%d", o->prefix, k);
        size_t n = 0;
        assert_rc(dss_lock_clean(&h1, owner, &n), 0);
        assert_int_equal(n, (size_t)wins[k] * OVL_IDS);
    }
    pthread_barrier_destroy(&o->barrier);
    munmap(o, sizeof *o);
}

int main(void)
{
    if (ct_setup("test_batch", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_many_all_or_nothing),
        cmocka_unit_test(test_lock_many_einval),
        cmocka_unit_test(test_lock_many_ttl_and_takeover),
        cmocka_unit_test(test_unlock_many),
        cmocka_unit_test(test_refresh_many),
        cmocka_unit_test(test_big_batch),
        cmocka_unit_test(test_overlapping_batches),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
