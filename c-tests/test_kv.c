/* The key-value store (dss_kv_*): every call and its documented return
 * codes; binary, empty and 64 MiB values; TTL expiry (made to happen by
 * moving expires_at into the past, as time would, never by sleeping);
 * compare-and-swap and increment races between processes; paging under
 * concurrent inserts; fenced writes; bad input, which must change nothing;
 * a lost connection (-ECOMM) and an exhausted pool (-ETIMEDOUT). */
#include "common.h"

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#define LIT_SIZE (2 * DSS_MAX_LOCK_ID_LEN + 16)

#define CAS_PROCS 6
#define CAS_ATTEMPTS 250
#define INC_PROCS 8
#define INC_ITERS 1000
#define PAGE_KEYS 300
#define PAGE_LIMIT 50
#define PAGE_SPREAD 7    /* a handshake round inserts before every 7th original key */
#define PAGE_FREE_MAX 400 /* most keys the child inserts on its own */

static struct dss_handle h;
CT_GROUP_WITH_HANDLE(h)

/* ---- helpers (test thread only: they use cmocka asserts) ---------------- */

/* SQL string literal of s (valid UTF-8 only), in a rotating static buffer so
 * that a few can appear in one statement. */
static const char *lit(const char *s)
{
    static char bufs[4][LIT_SIZE];
    static int next;
    char *b = bufs[next++ % 4];
    ct_sql_literal(b, LIT_SIZE, s);
    return b;
}

/* Runs a printf-style SQL query returning one integer. */
static long long sql_ll(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static long long sql_ll(const char *fmt, ...)
{
    char sql[4 * LIT_SIZE];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof sql)
        fail_msg("sql_ll: query too long");
    long long v = 0;
    if (ct_psql_ll(ct_conninfo(), sql, &v) != 0)
        fail_msg("sql_ll failed: %s", sql);
    return v;
}

/* Rows of dss.kv for (bucket, key), live or expired. */
static long long row_count(const char *b, const char *k)
{
    return sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND key = %s", lit(b), lit(k));
}

/* 1 if the row of (bucket, key) has an expiry, 0 if not (or no row). */
static long long has_expiry(const char *b, const char *k)
{
    return sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND key = %s "
                  "AND expires_at IS NOT NULL",
                  lit(b), lit(k));
}

/* What time would do: the key's expiry moves just into the past. */
static void expire_key(const char *b, const char *k)
{
    long long n = sql_ll("WITH u AS (UPDATE dss.kv SET expires_at = now() - interval "
                         "'1 millisecond' WHERE bucket = %s AND key = %s RETURNING 1) "
                         "SELECT count(*) FROM u",
                         lit(b), lit(k));
    assert_int_equal(n, 1);
}

/* Asserts that the key holds exactly (data, len), through dss_kv_get and
 * dss_kv_get_version, and that it exists; returns its version. */
static uint64_t kv_expect(const char *b, const char *k, const void *data, size_t len)
{
    void *v = NULL;
    size_t n = 987654;
    assert_rc(dss_kv_get(&h, b, k, &v, &n), 0);
    assert_non_null(v); /* a valid pointer even for an empty value */
    int same = n == len && (len == 0 || memcmp(v, data, len) == 0);
    free(v);
    if (!same)
        fail_msg("key '%.80s' of '%.80s': %zu bytes, expected %zu (or different content)", k,
                 b, n, len);
    uint64_t version = 0;
    v = NULL;
    assert_rc(dss_kv_get_version(&h, b, k, &v, &n, &version), 0);
    assert_non_null(v);
    same = n == len && (len == 0 || memcmp(v, data, len) == 0);
    free(v);
    assert_true(same);
    assert_true(version > 0);
    assert_rc(dss_kv_exists(&h, b, k), 1);
    return version;
}

static void kv_expect_str(const char *b, const char *k, const char *s)
{
    kv_expect(b, k, s, strlen(s));
}

/* Asserts that the key reads as absent: -ENOENT (outputs untouched), and
 * dss_kv_exists() 0. */
static void kv_expect_absent(const char *b, const char *k)
{
    char sentinel;
    void *v = &sentinel;
    size_t n = 4242;
    uint64_t version = 4343;
    assert_rc(dss_kv_get(&h, b, k, &v, &n), -ENOENT);
    assert_ptr_equal(v, &sentinel);
    assert_int_equal(n, 4242);
    assert_rc(dss_kv_get_version(&h, b, k, &v, &n, &version), -ENOENT);
    assert_ptr_equal(v, &sentinel);
    assert_int_equal(n, 4242);
    assert_int_equal(version, 4343);
    assert_rc(dss_kv_exists(&h, b, k), 0);
}

static void assert_sorted_unique(char **keys, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (strcmp(keys[i - 1], keys[i]) >= 0)
            fail_msg("keys out of byte order or repeated at %zu: '%s' then '%s'", i,
                     keys[i - 1], keys[i]);
}

/* Lists every key of the bucket (with prefix) in pages of `limit`, checking
 * each page; returns a malloc()ed array of malloc()ed keys (free with
 * dss_kv_free_keys) and the number of pages. */
static char **list_all(const char *b, const char *prefix, size_t limit, size_t *count,
                       size_t *pages)
{
    char **all = NULL;
    size_t used = 0, np = 0;
    char *cursor = NULL;
    char sentinel;
    for (;;) {
        char **keys = (char **)&sentinel;
        size_t n = 77777;
        char *next = &sentinel;
        assert_rc(dss_kv_list_keys(&h, b, prefix, cursor, limit, &keys, &n, &next), 0);
        np++;
        assert_true(n <= limit);
        assert_true(next != &sentinel);
        if (n == 0)
            assert_null(keys);
        else
            assert_non_null(keys);
        if (next != NULL)
            assert_true(n > 0);
        all = realloc(all, (used + n + 1) * sizeof *all);
        assert_non_null(all);
        for (size_t i = 0; i < n; i++) {
            all[used] = strdup(keys[i]);
            assert_non_null(all[used]);
            used++;
        }
        dss_kv_free_keys(keys, n);
        free(cursor);
        cursor = next;
        if (cursor == NULL)
            break;
        assert_true(np < 1000000);
    }
    assert_sorted_unique(all, used);
    *count = used;
    if (pages != NULL)
        *pages = np;
    return all;
}

/* Asserts that the listing of (bucket, prefix) is exactly `expected`, with
 * page sizes 1, 2, 3 and a large one. */
static void kv_expect_listing(const char *b, const char *prefix, const char *const *expected,
                              size_t n_expected)
{
    static const size_t limits[] = {1, 2, 3, 1000};
    for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
        size_t n = 0, pages = 0;
        char **got = list_all(b, prefix, limits[l], &n, &pages);
        if (n != n_expected)
            fail_msg("prefix '%s', limit %zu: %zu keys, expected %zu", prefix ? prefix : "(null)",
                     limits[l], n, n_expected);
        for (size_t i = 0; i < n; i++)
            if (strcmp(got[i], expected[i]) != 0)
                fail_msg("prefix '%s', limit %zu: key %zu is '%s', expected '%s'",
                         prefix ? prefix : "(null)", limits[l], i, got[i], expected[i]);
        /* ceil(n / limit) pages, plus an empty one only when there are no keys */
        size_t want_pages = n == 0 ? 1 : (n + limits[l] - 1) / limits[l];
        assert_int_equal(pages, want_pages);
        dss_kv_free_keys(got, n);
    }
}

/* Polls until dss_kv_exists() gives `want`, for at most timeout_s. */
static int poll_exists(const char *b, const char *k, int want, double timeout_s)
{
    double deadline = ct_now_ms() + timeout_s * 1e3;
    for (;;) {
        int rc = dss_kv_exists(&h, b, k);
        if (rc == want)
            return 0;
        if (rc < 0 || ct_now_ms() > deadline)
            return -1;
        struct timespec nap = {0, 2 * 1000 * 1000}; /* polling a state, with a deadline */
        nanosleep(&nap, NULL);
    }
}

/* A lock id / bucket of exactly `len` bytes: a unique prefix padded. */
static char *padded_name(const char *tag, size_t len, char pad)
{
    char *s = malloc(len + 2);
    assert_non_null(s);
    ct_id(s, len + 1, tag);
    size_t used = strlen(s);
    memset(s + used, pad, len - used);
    s[len] = '\0';
    return s;
}


/* ---- set / get / get_version / delete / exists --------------------------- */

static void test_set_get_delete(void **state)
{
    (void)state;
    char b[128], b2[128];
    ct_id(b, sizeof b, "basic");
    ct_id(b2, sizeof b2, "basic-other");

    kv_expect_absent(b, "k");
    assert_rc(dss_kv_get(&h, b, "gone-key", &(void *){NULL}, &(size_t){0}), -ENOENT);
    assert_true(ct_contains(dss_last_error(), "dss_kv_get"));
    assert_true(ct_contains(dss_last_error(), "gone-key"));

    assert_rc(dss_kv_set(&h, b, "k", "one", 3), 0);
    uint64_t v1 = kv_expect(b, "k", "one", 3);
    assert_int_equal(row_count(b, "k"), 1);
    assert_int_equal(has_expiry(b, "k"), 0);
    kv_expect_absent(b2, "k"); /* buckets are independent */

    /* Overwrite: new value, greater version; same content: still a new one. */
    assert_rc(dss_kv_set(&h, b, "k", "two!", 4), 0);
    uint64_t v2 = kv_expect(b, "k", "two!", 4);
    assert_true(v2 > v1);
    assert_rc(dss_kv_set(&h, b, "k", "two!", 4), 0);
    uint64_t v3 = kv_expect(b, "k", "two!", 4);
    assert_true(v3 > v2);
    assert_int_equal(row_count(b, "k"), 1);

    /* The version output is optional. */
    void *val = NULL;
    size_t len = 0;
    assert_rc(dss_kv_get_version(&h, b, "k", &val, &len, NULL), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(val, "two!", 4);
    free(val);

    /* Same key in another bucket: separate. */
    assert_rc(dss_kv_set(&h, b2, "k", "other", 5), 0);
    kv_expect_str(b, "k", "two!");
    kv_expect_str(b2, "k", "other");

    /* Delete: gone (the row too); the other bucket keeps its key; deleting
     * an absent key is no error. */
    assert_rc(dss_kv_delete(&h, b, "k"), 0);
    kv_expect_absent(b, "k");
    assert_int_equal(row_count(b, "k"), 0);
    kv_expect_str(b2, "k", "other");
    assert_rc(dss_kv_delete(&h, b, "k"), 0);
    assert_rc(dss_kv_delete(&h, b, "never-existed"), 0);

    /* Re-created: a version never used for the key before. */
    assert_rc(dss_kv_set(&h, b, "k", "one", 3), 0);
    uint64_t v4 = kv_expect(b, "k", "one", 3);
    assert_true(v4 > v3);

    /* Odd but valid keys and buckets, each its own row. */
    char *k1024 = padded_name("k1024", DSS_KV_MAX_KEY_LEN - 2, 'a');
    k1024 = realloc(k1024, DSS_KV_MAX_KEY_LEN + 1);
    assert_non_null(k1024);
    strcat(k1024, "\xc3\xa9"); /* 1024 bytes ending in a 2-byte character */
    assert_int_equal(strlen(k1024), DSS_KV_MAX_KEY_LEN);
    char *b1024 = padded_name("b1024", DSS_KV_MAX_KEY_LEN, 'b');
    const char *odd[] = {"with space", "quote'\"\\", "\xc3\xa9/\xc3\xbc", "\t", "%_*",
                         "\xf0\x9f\x94\x92", "k\n", "K", k1024};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        char value[32];
        int vl = snprintf(value, sizeof value, "odd-%zu", i);
        assert_rc(dss_kv_set(&h, b, odd[i], value, (size_t)vl), 0);
    }
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        char value[32];
        int vl = snprintf(value, sizeof value, "odd-%zu", i);
        kv_expect(b, odd[i], value, (size_t)vl);
    }
    kv_expect_str(b, "k", "one"); /* "K" is another key */
    assert_rc(dss_kv_set(&h, b1024, k1024, "max", 3), 0);
    kv_expect_str(b1024, k1024, "max");
    assert_int_equal(row_count(b1024, k1024), 1);
    assert_rc(dss_kv_delete(&h, b1024, k1024), 0);
    kv_expect_absent(b1024, k1024);
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        assert_rc(dss_kv_delete(&h, b, odd[i]), 0);
        kv_expect_absent(b, odd[i]);
    }
    assert_rc(dss_kv_delete(&h, b, "k"), 0);
    assert_rc(dss_kv_delete(&h, b2, "k"), 0);
    free(k1024);
    free(b1024);
}

/* ---- values: binary, empty, 64 MiB --------------------------------------- */

static void test_binary_and_empty_values(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "binary");

    unsigned char bin[512];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (unsigned char)(i * 7 + 3);
    bin[0] = bin[100] = bin[101] = bin[511] = 0; /* NULs at the start, inside, at the end */
    assert_rc(dss_kv_set(&h, b, "bin", bin, sizeof bin), 0);
    kv_expect(b, "bin", bin, sizeof bin);
    assert_int_equal(sql_ll("SELECT octet_length(value) FROM dss.kv WHERE bucket = %s AND "
                            "key = 'bin'", lit(b)),
                     (long long)sizeof bin);
    /* Every byte value, stored as is (not as text). */
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    assert_rc(dss_kv_set(&h, b, "all-bytes", all, sizeof all), 0);
    kv_expect(b, "all-bytes", all, sizeof all);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND key = "
                            "'all-bytes' AND value = (SELECT string_agg(set_byte('\\x00'::bytea, "
                            "0, i), ''::bytea ORDER BY i) FROM generate_series(0, 255) i)",
                            lit(b)),
                     1);
    const char nuls[4] = {0, 0, 0, 0};
    assert_rc(dss_kv_set(&h, b, "nuls", nuls, sizeof nuls), 0);
    kv_expect(b, "nuls", nuls, sizeof nuls);

    /* Empty values, with a valid pointer and with NULL: a valid pointer back. */
    assert_rc(dss_kv_set(&h, b, "empty", "x", 0), 0);
    kv_expect(b, "empty", "", 0);
    assert_rc(dss_kv_set(&h, b, "empty-null", NULL, 0), 0);
    kv_expect(b, "empty-null", "", 0);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND key IN "
                            "('empty', 'empty-null') AND octet_length(value) = 0",
                            lit(b)),
                     2);
    /* An empty value replaces a non-empty one, and back. */
    assert_rc(dss_kv_set(&h, b, "bin", NULL, 0), 0);
    kv_expect(b, "bin", "", 0);
    assert_rc(dss_kv_set(&h, b, "bin", bin, sizeof bin), 0);
    kv_expect(b, "bin", bin, sizeof bin);
    /* The other writers take binary and empty values too. */
    assert_rc(dss_kv_set_ttl(&h, b, "ttl-bin", bin, sizeof bin, 60000), 0);
    kv_expect(b, "ttl-bin", bin, sizeof bin);
    assert_rc(dss_kv_set_ttl(&h, b, "ttl-empty", NULL, 0, 60000), 0);
    kv_expect(b, "ttl-empty", "", 0);
    assert_rc(dss_kv_cas(&h, b, "cas-bin", 0, bin, sizeof bin, NULL), 0);
    kv_expect(b, "cas-bin", bin, sizeof bin);
    assert_rc(dss_kv_cas(&h, b, "cas-empty", 0, NULL, 0, NULL), 0);
    kv_expect(b, "cas-empty", "", 0);

    const char *keys[] = {"bin", "all-bytes", "nuls", "empty", "empty-null", "ttl-bin",
                          "ttl-empty", "cas-bin", "cas-empty"};
    assert_rc(dss_kv_delete_many(&h, b, keys, sizeof keys / sizeof keys[0]), 0);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)), 0);
}

static void test_max_value(void **state)
{
    (void)state;
    char b[128], id[128];
    ct_id(b, sizeof b, "big");
    ct_id(id, sizeof id, "big-lock");
    const size_t big = DSS_KV_MAX_VALUE_LEN;
    unsigned char *buf = malloc(big + 1);
    assert_non_null(buf);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < big + 1; i++) { /* xorshift: every byte value, NULs included */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)(x >> 24);
    }

    double t0 = ct_now_ms();
    assert_rc(dss_kv_set(&h, b, "big", buf, big), 0);
    double t1 = ct_now_ms();
    void *got = NULL;
    size_t len = 0;
    uint64_t version = 0;
    assert_rc(dss_kv_get_version(&h, b, "big", &got, &len, &version), 0);
    double t2 = ct_now_ms();
    assert_int_equal(len, big);
    assert_int_equal(memcmp(got, buf, big), 0);
    free(got);
    assert_int_equal(sql_ll("SELECT octet_length(value) FROM dss.kv WHERE bucket = %s AND "
                            "key = 'big'",
                            lit(b)),
                     (long long)big);
    fprintf(stderr, "64 MiB value: set %.0f ms, get %.0f ms\n", t1 - t0, t2 - t1);

    /* One byte more: -EFBIG from every writer, nothing sent, old value kept. */
    buf[0] ^= 0xff;
    uint64_t token = 0;
    /* An hour: under valgrind the 64 MiB writes below take minutes, and an
     * expired lease would turn the fenced write into -ESTALE. */
    assert_rc(dss_lock_lease(&h, id, "big-writer", 3600000, &token), 0);
    assert_rc(dss_kv_set(&h, b, "big", buf, big + 1), -EFBIG);
    assert_true(ct_contains(dss_last_error(), "dss_kv_set"));
    assert_rc(dss_kv_set_ttl(&h, b, "big", buf, big + 1, 60000), -EFBIG);
    assert_rc(dss_kv_cas(&h, b, "big", version, buf, big + 1, NULL), -EFBIG);
    assert_rc(dss_kv_set_fenced(&h, b, "big", buf, big + 1, id, token), -EFBIG);
    const char *keys[] = {"big", "big-other"};
    const void *values[] = {buf, "x"};
    size_t lens[] = {big + 1, 1};
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, 2), -EFBIG);
    lens[0] = 1;
    lens[1] = big + 1;
    values[1] = buf;
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, 2), -EFBIG);
    /* ... and no new key either. */
    assert_rc(dss_kv_set(&h, b, "big-new", buf, big + 1), -EFBIG);
    assert_rc(dss_kv_cas(&h, b, "big-new", 0, buf, big + 1, NULL), -EFBIG);
    kv_expect_absent(b, "big-new");
    kv_expect_absent(b, "big-other");
    assert_int_equal(has_expiry(b, "big"), 0);
    buf[0] ^= 0xff;
    got = NULL;
    uint64_t version2 = 0;
    assert_rc(dss_kv_get_version(&h, b, "big", &got, &len, &version2), 0);
    assert_int_equal(version2, version);
    assert_int_equal(len, big);
    assert_int_equal(memcmp(got, buf, big), 0);
    free(got);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)), 1);

    /* The largest value through the other writers, too. */
    assert_rc(dss_kv_set_fenced(&h, b, "big", buf + 1, big, id, token), 0);
    assert_rc(dss_kv_cas(&h, b, "big2", 0, buf + 1, big, NULL), 0);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND "
                            "octet_length(value) = %zu",
                            lit(b), big),
                     2);
    got = NULL;
    assert_rc(dss_kv_get(&h, b, "big2", &got, &len), 0);
    assert_int_equal(len, big);
    assert_int_equal(memcmp(got, buf + 1, big), 0);
    free(got);

    assert_rc(dss_unlock(&h, id, "big-writer"), 0);
    assert_rc(dss_kv_delete(&h, b, "big"), 0);
    assert_rc(dss_kv_delete(&h, b, "big2"), 0);
    kv_expect_absent(b, "big");
    free(buf);
}

/* ---- TTL ------------------------------------------------------------------ */

static void test_ttl_expiry(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "ttl");

    assert_rc(dss_kv_set(&h, b, "stay", "s", 1), 0);
    assert_rc(dss_kv_set_ttl(&h, b, "t", "live", 4, 60000), 0);
    uint64_t v = kv_expect(b, "t", "live", 4);
    /* The expiry is on the database clock, ttl_ms from now. */
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND key = 't' AND "
                            "expires_at > now() + interval '50 seconds' AND "
                            "expires_at <= now() + interval '60 seconds'",
                            lit(b)),
                     1);
    static const char *const both[] = {"stay", "t"};
    kv_expect_listing(b, NULL, both, 2);

    expire_key(b, "t");
    /* Absent everywhere: get, get_version, exists, list, get_many, cas. */
    kv_expect_absent(b, "t");
    static const char *const only_stay[] = {"stay"};
    kv_expect_listing(b, NULL, only_stay, 1);
    kv_expect_listing(b, "t", NULL, 0);
    const char *keys[] = {"t", "stay"};
    void *values[2] = {NULL, NULL};
    size_t lens[2] = {99, 99};
    assert_rc(dss_kv_get_many(&h, b, keys, 2, values, lens), 0);
    assert_null(values[0]);
    assert_int_equal(lens[0], 0);
    assert_non_null(values[1]);
    assert_int_equal(lens[1], 1);
    free(values[1]);
    uint64_t nv = 5555;
    assert_rc(dss_kv_cas(&h, b, "t", v, "cas-old", 7, &nv), -EAGAIN);
    assert_int_equal(nv, 5555);
    /* Nothing written: the expired row is as it was. */
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND key = 't' AND "
                            "version = %" PRIu64 " AND value = 'live'::bytea AND "
                            "expires_at < now()",
                            lit(b), v),
                     1);
    kv_expect_absent(b, "t");
    /* "Must not exist" holds for an expired key: written, without expiry. */
    assert_rc(dss_kv_cas(&h, b, "t", 0, "cas-new", 7, &nv), 0);
    assert_true(nv > v);
    assert_int_equal(kv_expect(b, "t", "cas-new", 7), nv);
    assert_int_equal(has_expiry(b, "t"), 0);
    assert_int_equal(row_count(b, "t"), 1);
    kv_expect_listing(b, NULL, both, 2);

    /* set replaces the expiry; set_ttl adds one. */
    assert_rc(dss_kv_set_ttl(&h, b, "t", "again", 5, 60000), 0);
    assert_int_equal(has_expiry(b, "t"), 1);
    assert_rc(dss_kv_set(&h, b, "t", "plain", 5), 0);
    assert_int_equal(has_expiry(b, "t"), 0);
    kv_expect_str(b, "t", "plain");

    /* A plain set overwrites an expired row: a new key, a greater version. */
    assert_rc(dss_kv_set_ttl(&h, b, "t2", "x", 1, 60000), 0);
    uint64_t v2 = kv_expect(b, "t2", "x", 1);
    expire_key(b, "t2");
    kv_expect_absent(b, "t2");
    assert_rc(dss_kv_set(&h, b, "t2", "y", 1), 0);
    assert_true(kv_expect(b, "t2", "y", 1) > v2);

    /* increment: an expired counter counts as 0 (and loses its expiry);
     * a live one keeps its expiry. */
    assert_rc(dss_kv_set_ttl(&h, b, "ctr", "41", 2, 60000), 0);
    expire_key(b, "ctr");
    int64_t r = 0;
    assert_rc(dss_kv_increment(&h, b, "ctr", 1, &r), 0);
    assert_int_equal(r, 1);
    kv_expect_str(b, "ctr", "1");
    assert_int_equal(has_expiry(b, "ctr"), 0);
    assert_rc(dss_kv_set_ttl(&h, b, "ctr", "5", 1, 60000), 0);
    assert_rc(dss_kv_increment(&h, b, "ctr", 2, &r), 0);
    assert_int_equal(r, 7);
    kv_expect_str(b, "ctr", "7");
    assert_int_equal(has_expiry(b, "ctr"), 1);
    /* An expired value that is not a number counts as 0 too. */
    assert_rc(dss_kv_set_ttl(&h, b, "ctr", "junk", 4, 60000), 0);
    expire_key(b, "ctr");
    assert_rc(dss_kv_increment(&h, b, "ctr", 3, &r), 0);
    assert_int_equal(r, 3);

    /* delete removes an expired row. */
    assert_rc(dss_kv_set_ttl(&h, b, "gone", "g", 1, 60000), 0);
    expire_key(b, "gone");
    assert_int_equal(row_count(b, "gone"), 1);
    assert_rc(dss_kv_delete(&h, b, "gone"), 0);
    assert_int_equal(row_count(b, "gone"), 0);

    /* Bounds of ttl_ms: 1 and DSS_MAX_TTL_MS are accepted; the 1 ms one
     * expires by itself (polled with a deadline). */
    assert_rc(dss_kv_set_ttl(&h, b, "max", "m", 1, DSS_MAX_TTL_MS), 0);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s AND key = 'max' "
                            "AND expires_at > now() + interval '9 years'",
                            lit(b)),
                     1);
    assert_rc(dss_kv_set_ttl(&h, b, "short", "s", 1, 1), 0);
    assert_int_equal(poll_exists(b, "short", 0, 30), 0);
    kv_expect_absent(b, "short");
    /* Out of bounds: -EINVAL, nothing changed. */
    uint64_t vmax = kv_expect(b, "max", "m", 1);
    assert_rc(dss_kv_set_ttl(&h, b, "max", "z", 1, 0), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "ttl"));
    assert_rc(dss_kv_set_ttl(&h, b, "max", "z", 1, (uint64_t)DSS_MAX_TTL_MS + 1), -EINVAL);
    assert_rc(dss_kv_set_ttl(&h, b, "max", "z", 1, UINT64_MAX), -EINVAL);
    assert_rc(dss_kv_set_ttl(&h, b, "new-bad-ttl", "z", 1, 0), -EINVAL);
    assert_int_equal(kv_expect(b, "max", "m", 1), vmax);
    assert_int_equal(row_count(b, "new-bad-ttl"), 0);

    assert_rc(dss_kv_delete(&h, b, "max"), 0);
    const char *all[] = {"stay", "t", "t2", "ctr", "short"};
    assert_rc(dss_kv_delete_many(&h, b, all, 5), 0);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)), 0);
}

/* ---- list_keys ------------------------------------------------------------ */

#define MAXCHAR "\xf4\x8f\xbf\xbf" /* U+10FFFF, the last code point */

static void test_list_keys(void **state)
{
    (void)state;
    char b[128], empty[128];
    ct_id(b, sizeof b, "list");
    ct_id(empty, sizeof empty, "list-empty");

    /* In byte order (so "Z" < "a" < "~" < "é" < U+10FFFF). */
    static const char *const sorted[] = {
        "Z", "a", "a%b", "a/1", "a/10", "a/2", "a_b", "ab", "axb", "b", "~",
        "\xc3\xa9", "\xc3\xa9t\xc3\xa9", MAXCHAR, MAXCHAR "x", MAXCHAR MAXCHAR,
    };
    const size_t n_sorted = sizeof sorted / sizeof sorted[0];
    /* Written in another order, one batch. */
    const char *keys[sizeof sorted / sizeof sorted[0]];
    const void *values[sizeof sorted / sizeof sorted[0]];
    size_t lens[sizeof sorted / sizeof sorted[0]];
    for (size_t i = 0; i < n_sorted; i++) {
        keys[i] = sorted[(i * 5) % n_sorted]; /* 5 is prime to 16: a permutation */
        values[i] = NULL;
        lens[i] = 0;
    }
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, n_sorted), 0);

    kv_expect_listing(b, NULL, sorted, n_sorted);
    kv_expect_listing(b, "", sorted, n_sorted);
    static const char *const pa[] = {"a", "a%b", "a/1", "a/10", "a/2", "a_b", "ab", "axb"};
    kv_expect_listing(b, "a", pa, 8);
    static const char *const pslash[] = {"a/1", "a/10", "a/2"};
    kv_expect_listing(b, "a/", pslash, 3);
    kv_expect_listing(b, "a/1", pslash, 2);
    /* Prefixes are bytes, not LIKE patterns. */
    static const char *const ppct[] = {"a%b"};
    kv_expect_listing(b, "a%", ppct, 1);
    static const char *const punder[] = {"a_b"};
    kv_expect_listing(b, "a_", punder, 1);
    static const char *const peacute[] = {"\xc3\xa9", "\xc3\xa9t\xc3\xa9"};
    kv_expect_listing(b, "\xc3\xa9", peacute, 2);
    static const char *const pz[] = {"Z"};
    kv_expect_listing(b, "Z", pz, 1);
    kv_expect_listing(b, "zzz", NULL, 0);
    kv_expect_listing(b, "a/3", NULL, 0);
    kv_expect_listing(empty, NULL, NULL, 0);

    /* A cursor resumes after it: "" is the start; a cursor past the end
     * gives an empty last page; a cursor need not be an existing key. */
    char **page = NULL;
    size_t n = 0;
    char *next = NULL;
    assert_rc(dss_kv_list_keys(&h, b, NULL, "", 2, &page, &n, &next), 0);
    assert_int_equal(n, 2);
    assert_string_equal(page[0], "Z");
    assert_string_equal(page[1], "a");
    assert_non_null(next);
    dss_kv_free_keys(page, n);
    free(next);
    assert_rc(dss_kv_list_keys(&h, b, NULL, "a/15", 2, &page, &n, &next), 0);
    assert_int_equal(n, 2);
    assert_string_equal(page[0], "a/2");
    assert_string_equal(page[1], "a_b");
    dss_kv_free_keys(page, n);
    free(next);
    assert_rc(dss_kv_list_keys(&h, b, "a", "a/10", 100, &page, &n, &next), 0);
    assert_int_equal(n, 4);
    assert_string_equal(page[0], "a/2");
    assert_string_equal(page[3], "axb");
    assert_null(next);
    dss_kv_free_keys(page, n);
    assert_rc(dss_kv_list_keys(&h, b, NULL, MAXCHAR MAXCHAR, 10, &page, &n, &next), 0);
    assert_int_equal(n, 0);
    assert_null(page);
    assert_null(next);
    /* Exactly `limit` keys left: no next page. */
    assert_rc(dss_kv_list_keys(&h, b, NULL, NULL, n_sorted, &page, &n, &next), 0);
    assert_int_equal(n, n_sorted);
    assert_null(next);
    dss_kv_free_keys(page, n);
    assert_rc(dss_kv_list_keys(&h, b, NULL, NULL, n_sorted - 1, &page, &n, &next), 0);
    assert_int_equal(n, n_sorted - 1);
    assert_non_null(next);
    dss_kv_free_keys(page, n);
    char **page2 = NULL;
    char *next2 = (char *)"sentinel";
    assert_rc(dss_kv_list_keys(&h, b, NULL, next, n_sorted, &page2, &n, &next2), 0);
    assert_int_equal(n, 1);
    assert_string_equal(page2[0], sorted[n_sorted - 1]);
    assert_null(next2);
    dss_kv_free_keys(page2, n);
    free(next);
    /* next_cursor is optional. */
    assert_rc(dss_kv_list_keys(&h, b, NULL, NULL, 3, &page, &n, NULL), 0);
    assert_int_equal(n, 3);
    dss_kv_free_keys(page, n);
    /* dss_kv_free_keys is safe on NULL. */
    dss_kv_free_keys(NULL, 0);
    dss_kv_free_keys(NULL, 5);

    /* Deleted keys are not listed. */
    assert_rc(dss_kv_delete(&h, b, "a/10"), 0);
    static const char *const pslash2[] = {"a/1", "a/2"};
    kv_expect_listing(b, "a/", pslash2, 2);

    assert_rc(dss_kv_delete_many(&h, b, sorted, n_sorted), 0);
    kv_expect_listing(b, NULL, NULL, 0);
}

/* A prefix made of the last code point only: no string is above every key
 * starting with it, a special case of the prefix search. */
static void test_list_prefix_last_code_point(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "list-max");
    const char *keys[] = {"a", "\xef\xbf\xbf", MAXCHAR, MAXCHAR "x", MAXCHAR MAXCHAR};
    const void *values[] = {"1", "2", "3", "4", "5"};
    size_t lens[] = {1, 1, 1, 1, 1};
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, 5), 0);
    kv_expect_listing(b, NULL, keys, 5);
    /* Each key starts with itself: the key equal to the prefix is listed. */
    static const char *const pmax2[] = {MAXCHAR MAXCHAR};
    kv_expect_listing(b, MAXCHAR MAXCHAR, pmax2, 1);
    static const char *const pmax[] = {MAXCHAR, MAXCHAR "x", MAXCHAR MAXCHAR};
    kv_expect_listing(b, MAXCHAR, pmax, 3);
    assert_rc(dss_kv_delete_many(&h, b, keys, 5), 0);
}

/* Paging while a child process inserts keys everywhere: on request between
 * pages (a "round", before and after the cursor, acknowledged), and on its
 * own the rest of the time (racing with the list calls). */
static void page_key_original(char *buf, size_t size, int i)
{
    snprintf(buf, size, "k%03d.0", i);
}

static void page_key_round(char *buf, size_t size, int i, int round)
{
    snprintf(buf, size, "k%03d.5.%02d", i, round);
}

static int paging_child(const char *b, int req_fd, int ack_fd)
{
    struct dss_handle hc = {0};
    if (!CHECK_RC(dss_init_conninfo(&hc, ct_conninfo()), 0))
        return 1;
    int free_inserts = 0, round = 0;
    for (;;) {
        struct pollfd p = {req_fd, POLLIN, 0};
        int timeout = free_inserts < PAGE_FREE_MAX ? 0 : -1;
        int ready = poll(&p, 1, timeout);
        if (ready < 0 && errno == EINTR)
            continue;
        if (!CHECK(ready >= 0))
            return 1;
        if (ready == 0) {
            /* On its own: one key somewhere, racing with the parent's list. */
            char key[64];
            snprintf(key, sizeof key, "k%03d.7.%04d", (free_inserts * 37) % PAGE_KEYS,
                     free_inserts);
            if (!CHECK_RC(dss_kv_set(&hc, b, key, "f", 1), 0))
                return 1;
            free_inserts++;
            continue;
        }
        char cmd;
        if (!CHECK(read(req_fd, &cmd, 1) == 1))
            return 1;
        if (cmd == 'q')
            break;
        /* A round: one key before every PAGE_SPREAD-th original key, in
         * one batch, committed before the acknowledgement. */
        const char *keys[PAGE_KEYS];
        char names[PAGE_KEYS][32];
        const void *values[PAGE_KEYS];
        size_t lens[PAGE_KEYS];
        size_t n = 0;
        for (int i = round % PAGE_SPREAD; i < PAGE_KEYS; i += PAGE_SPREAD) {
            page_key_round(names[n], sizeof names[n], i, round);
            keys[n] = names[n];
            values[n] = "r";
            lens[n] = 1;
            n++;
        }
        if (!CHECK_RC(dss_kv_set_many(&hc, b, keys, values, lens, n), 0))
            return 1;
        round++;
        if (!CHECK(write(ack_fd, "a", 1) == 1))
            return 1;
    }
    dss_fini(&hc);
    if (!CHECK(write(ack_fd, &free_inserts, sizeof free_inserts) == sizeof free_inserts))
        return 1;
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static int find_key(char **keys, size_t n, const char *k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(keys[mid], k);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static void test_list_paging_concurrent_inserts(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "paging");
    static char names[PAGE_KEYS][32];
    const char *keys[PAGE_KEYS];
    const void *values[PAGE_KEYS];
    size_t lens[PAGE_KEYS];
    for (int i = 0; i < PAGE_KEYS; i++) {
        page_key_original(names[i], sizeof names[i], i);
        keys[i] = names[i];
        values[i] = "o";
        lens[i] = 1;
    }
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, PAGE_KEYS), 0);

    int req[2], ack[2];
    assert_int_equal(pipe(req), 0);
    assert_int_equal(pipe(ack), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(req[1]);
        close(ack[0]);
        _exit(paging_child(b, req[0], ack[1]));
    }
    close(req[0]);
    close(ack[1]);

    /* Page through; after each page but the last, ask for a round and wait
     * for it; remember the cursor it was inserted against. */
    char **listed = NULL;
    size_t n_listed = 0, pages = 0, full_pages = 0;
    char *cursor = NULL;
    char *round_cursor[64];
    int rounds = 0;
    for (;;) {
        char **page = NULL;
        size_t n = 0;
        char *next = NULL;
        assert_rc(dss_kv_list_keys(&h, b, NULL, cursor, PAGE_LIMIT, &page, &n, &next), 0);
        pages++;
        assert_true(n <= PAGE_LIMIT);
        if (n == PAGE_LIMIT)
            full_pages++;
        listed = realloc(listed, (n_listed + n + 1) * sizeof *listed);
        assert_non_null(listed);
        for (size_t i = 0; i < n; i++)
            listed[n_listed++] = strdup(page[i]);
        dss_kv_free_keys(page, n);
        free(cursor);
        cursor = next;
        if (cursor == NULL)
            break;
        assert_true(n > 0);
        assert_true(rounds < 64);
        round_cursor[rounds] = strdup(cursor);
        assert_int_equal(write(req[1], "r", 1), 1);
        char a = 0;
        assert_int_equal(read(ack[0], &a, 1), 1);
        assert_int_equal(a, 'a');
        rounds++;
    }
    assert_int_equal(write(req[1], "q", 1), 1);
    int free_inserts = -1;
    assert_int_equal(read(ack[0], &free_inserts, sizeof free_inserts), sizeof free_inserts);
    assert_int_equal(ct_wait_child(pid, 120), 0);
    close(req[1]);
    close(ack[0]);

    /* Byte order, no key twice. */
    assert_sorted_unique(listed, n_listed);
    /* Every original key exactly once. */
    for (int i = 0; i < PAGE_KEYS; i++)
        if (!find_key(listed, n_listed, names[i]))
            fail_msg("original key '%s' not listed", names[i]);
    /* A key inserted (and committed) after the cursor before the next page
     * was read is listed; one inserted before the cursor is not. */
    int before = 0, after = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = r % PAGE_SPREAD; i < PAGE_KEYS; i += PAGE_SPREAD) {
            char k[32];
            page_key_round(k, sizeof k, i, r);
            int is_listed = find_key(listed, n_listed, k);
            if (strcmp(k, round_cursor[r]) > 0) {
                after++;
                if (!is_listed)
                    fail_msg("key '%s' inserted after cursor '%s' was not listed", k,
                             round_cursor[r]);
            } else {
                before++;
                if (is_listed)
                    fail_msg("key '%s' inserted before cursor '%s' was listed", k,
                             round_cursor[r]);
            }
        }
        free(round_cursor[r]);
    }
    assert_true(before > 0);
    assert_true(after > 0);
    /* Nothing but the keys written. */
    int listed_free = 0;
    for (size_t i = 0; i < n_listed; i++) {
        int idx = -1, r = -1, nchars = 0;
        char tag = 0;
        if (sscanf(listed[i], "k%3d.%c%n", &idx, &tag, &nchars) != 2 || idx < 0 ||
            idx >= PAGE_KEYS)
            fail_msg("unexpected key '%s' listed", listed[i]);
        if (tag == '7')
            listed_free++;
        else if (tag == '5')
            assert_true(sscanf(listed[i] + nchars, ".%d", &r) == 1 && r >= 0 && r < rounds);
        else
            assert_int_equal(tag, '0');
    }
    assert_true(listed_free <= free_inserts);
    assert_true(pages >= PAGE_KEYS / PAGE_LIMIT + 1);
    long long total = sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b));
    /* The bucket holds the originals, the rounds' keys and the child's own. */
    assert_int_equal(total, PAGE_KEYS + before + after + free_inserts);
    assert_true((size_t)total >= n_listed);
    fprintf(stderr,
            "paging: %zu pages (%zu full), %zu keys listed of %lld; %d rounds inserted %d keys "
            "before and %d after the cursor; the child inserted %d keys on its own (%d "
            "listed)\n",
            pages, full_pages, n_listed, total, rounds, before, after, free_inserts,
            listed_free);
    /* A quiet listing now gives every key of the bucket. */
    size_t n_all = 0;
    char **all = list_all(b, NULL, PAGE_LIMIT, &n_all, NULL);
    assert_int_equal(n_all, total);
    dss_kv_free_keys(all, n_all);
    dss_kv_free_keys(listed, n_listed);
    assert_int_equal(sql_ll("WITH d AS (DELETE FROM dss.kv WHERE bucket = %s RETURNING 1) "
                            "SELECT count(*) FROM d",
                            lit(b)),
                     total);
}

/* ---- increment ------------------------------------------------------------ */

static void test_increment(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "incr");
    int64_t r = 0;

    /* Absent counts as 0; the value is decimal text. */
    assert_rc(dss_kv_increment(&h, b, "c", 5, &r), 0);
    assert_int_equal(r, 5);
    uint64_t v1 = kv_expect(b, "c", "5", 1);
    assert_rc(dss_kv_increment(&h, b, "c", -7, &r), 0);
    assert_int_equal(r, -2);
    uint64_t v2 = kv_expect(b, "c", "-2", 2);
    assert_true(v2 > v1);
    assert_rc(dss_kv_increment(&h, b, "c", 0, &r), 0);
    assert_int_equal(r, -2);
    assert_rc(dss_kv_increment(&h, b, "c", 10, NULL), 0); /* result is optional */
    kv_expect_str(b, "c", "8");
    assert_int_equal(has_expiry(b, "c"), 0);
    /* A value written by set counts. */
    assert_rc(dss_kv_set(&h, b, "c", "-100", 4), 0);
    assert_rc(dss_kv_increment(&h, b, "c", 1, &r), 0);
    assert_int_equal(r, -99);
    kv_expect_str(b, "c", "-99");

    /* 64-bit bounds; an overflow is -EINVAL and changes nothing. */
    assert_rc(dss_kv_set(&h, b, "c", "9223372036854775806", 19), 0);
    assert_rc(dss_kv_increment(&h, b, "c", 1, &r), 0);
    assert_true(r == INT64_MAX);
    uint64_t vmax = kv_expect(b, "c", "9223372036854775807", 19);
    r = 1234;
    assert_rc(dss_kv_increment(&h, b, "c", 1, &r), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "dss_kv_increment"));
    assert_int_equal(r, 1234);
    assert_rc(dss_kv_increment(&h, b, "c", INT64_MAX, &r), -EINVAL);
    assert_int_equal(kv_expect(b, "c", "9223372036854775807", 19), vmax);
    assert_rc(dss_kv_increment(&h, b, "c", INT64_MIN, &r), 0);
    assert_int_equal(r, -1);
    assert_rc(dss_kv_delete(&h, b, "c"), 0);
    assert_rc(dss_kv_increment(&h, b, "c", INT64_MIN, &r), 0);
    assert_true(r == INT64_MIN);
    uint64_t vmin = kv_expect(b, "c", "-9223372036854775808", 20);
    assert_rc(dss_kv_increment(&h, b, "c", -1, &r), -EINVAL);
    assert_rc(dss_kv_increment(&h, b, "c", INT64_MIN, &r), -EINVAL);
    assert_int_equal(kv_expect(b, "c", "-9223372036854775808", 20), vmin);

    /* Not a decimal integer: -EINVAL, value and version unchanged. */
    static const struct {
        const char *data;
        size_t len;
    } junk[] = {
        {"abc", 3}, {"", 0}, {"1.5", 3}, {"12abc", 5}, {"0x10", 4}, {"\0", 1},
        {"1\0" "2", 3}, {"\xff\xfe", 2}, {"9223372036854775808", 19}, {"1e3", 3}, {"--1", 3},
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        assert_rc(dss_kv_set(&h, b, "j", junk[i].data, junk[i].len), 0);
        uint64_t v = kv_expect(b, "j", junk[i].data, junk[i].len);
        r = 777;
        int rc = dss_kv_increment(&h, b, "j", 1, &r);
        if (rc != -EINVAL)
            fail_msg("increment of junk value #%zu = %d (%s), expected -EINVAL; %s", i, rc,
                     ct_errname(rc), dss_last_error());
        assert_int_equal(r, 777);
        assert_int_equal(kv_expect(b, "j", junk[i].data, junk[i].len), v);
    }
    /* ... with a TTL: it keeps it. */
    assert_rc(dss_kv_set_ttl(&h, b, "j", "nope", 4, 60000), 0);
    assert_rc(dss_kv_increment(&h, b, "j", 1, NULL), -EINVAL);
    assert_int_equal(has_expiry(b, "j"), 1);
    kv_expect_str(b, "j", "nope");

    const char *all[] = {"c", "j"};
    assert_rc(dss_kv_delete_many(&h, b, all, 2), 0);
}

/* 8 processes x 1000 increments of one counter: none lost; every result
 * from 1 to 8000 handed out exactly once. */
struct inc_shared {
    pthread_barrier_t barrier;
    double end_ms[INC_PROCS];
    int64_t results[INC_PROCS * INC_ITERS];
};

static int inc_child(struct inc_shared *s, const char *b, int k)
{
    struct dss_handle hc = {0};
    if (!CHECK_RC(dss_init_conninfo(&hc, ct_conninfo()), 0)) {
        pthread_barrier_wait(&s->barrier);
        return 1;
    }
    CHECK_RC(dss_kv_exists(&hc, b, "warm-up"), 0); /* connect outside the timing */
    pthread_barrier_wait(&s->barrier);
    int64_t prev = 0;
    for (int i = 0; i < INC_ITERS; i++) {
        int64_t r = -1;
        if (!CHECK_RC(dss_kv_increment(&hc, b, "counter", 1, &r), 0))
            break;
        CHECK(r > prev); /* each process sees its counter grow */
        prev = r;
        s->results[k * INC_ITERS + i] = r;
    }
    s->end_ms[k] = ct_now_ms();
    dss_fini(&hc);
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static void test_increment_8_processes(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "incr8");
    struct inc_shared *s = ct_shared(sizeof *s);
    ct_shared_barrier(&s->barrier, INC_PROCS + 1);
    pid_t pids[INC_PROCS];
    for (int k = 0; k < INC_PROCS; k++) {
        fflush(NULL);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0)
            _exit(inc_child(s, b, k));
    }
    pthread_barrier_wait(&s->barrier);
    double t0 = ct_now_ms();
    int failed = 0;
    for (int k = 0; k < INC_PROCS; k++) {
        int rc = ct_wait_child(pids[k], 150);
        if (rc != 0) {
            fprintf(stderr, "increment child %d exited with %d\n", k, rc);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
    double t1 = t0;
    for (int k = 0; k < INC_PROCS; k++)
        if (s->end_ms[k] > t1)
            t1 = s->end_ms[k];
    const int total = INC_PROCS * INC_ITERS;
    fprintf(stderr, "increment: %d processes x %d = %d increments in %.0f ms (%.0f/s)\n",
            INC_PROCS, INC_ITERS, total, t1 - t0, total / ((t1 - t0) / 1e3));
    printf("FIGURE kv_increment_8x1000_ms=%.0f\n", t1 - t0);

    /* The final value, as text. */
    kv_expect_str(b, "counter", "8000");
    /* Each result exactly once. */
    unsigned char *seen = calloc((size_t)total + 1, 1);
    assert_non_null(seen);
    for (int i = 0; i < total; i++) {
        int64_t r = s->results[i];
        if (r < 1 || r > total || seen[r])
            fail_msg("increment result %" PRId64 " (slot %d) out of range or repeated", r, i);
        seen[r] = 1;
    }
    free(seen);
    pthread_barrier_destroy(&s->barrier);
    munmap(s, sizeof *s);
    assert_rc(dss_kv_delete(&h, b, "counter"), 0);
}

/* ---- compare-and-swap ----------------------------------------------------- */

static void test_cas(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "cas");
    uint64_t nv = 5555;

    /* Absent: a non-zero version fails, and creates nothing. */
    assert_rc(dss_kv_cas(&h, b, "k", 5, "x", 1, &nv), -EAGAIN);
    assert_true(ct_contains(dss_last_error(), "dss_kv_cas"));
    assert_int_equal(nv, 5555);
    assert_int_equal(row_count(b, "k"), 0);
    /* 0: must not exist. */
    assert_rc(dss_kv_cas(&h, b, "k", 0, "a", 1, &nv), 0);
    assert_true(nv > 0 && nv != 5555);
    assert_int_equal(kv_expect(b, "k", "a", 1), nv);
    uint64_t v1 = nv;
    assert_rc(dss_kv_cas(&h, b, "k", 0, "b", 1, &nv), -EAGAIN);
    assert_int_equal(nv, v1);
    /* Wrong versions: nothing written. */
    const uint64_t wrong[] = {v1 - 1, v1 + 1, v1 + 1000000, (uint64_t)INT64_MAX,
                              (uint64_t)INT64_MAX + 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        uint64_t out = 4242;
        assert_rc(dss_kv_cas(&h, b, "k", wrong[i], "b", 1, &out), -EAGAIN);
        assert_int_equal(out, 4242);
    }
    assert_int_equal(kv_expect(b, "k", "a", 1), v1);
    /* The right version: written, a greater version. */
    assert_rc(dss_kv_cas(&h, b, "k", v1, "b", 1, &nv), 0);
    assert_true(nv > v1);
    uint64_t v2 = nv;
    assert_int_equal(kv_expect(b, "k", "b", 1), v2);
    assert_rc(dss_kv_cas(&h, b, "k", v1, "c", 1, &nv), -EAGAIN); /* used up */
    kv_expect_str(b, "k", "b");
    /* new_version is optional. */
    assert_rc(dss_kv_cas(&h, b, "k", v2, "c", 1, NULL), 0);
    uint64_t v3 = kv_expect(b, "k", "c", 1);
    assert_true(v3 > v2);

    /* ABA: the same content written again is another version. */
    assert_rc(dss_kv_set(&h, b, "k", "c", 1), 0);
    uint64_t v4 = kv_expect(b, "k", "c", 1);
    assert_rc(dss_kv_cas(&h, b, "k", v3, "d", 1, NULL), -EAGAIN);
    kv_expect_str(b, "k", "c");
    /* ... and after a delete and a re-create. */
    assert_rc(dss_kv_delete(&h, b, "k"), 0);
    assert_rc(dss_kv_cas(&h, b, "k", v4, "d", 1, NULL), -EAGAIN);
    kv_expect_absent(b, "k");
    assert_rc(dss_kv_set(&h, b, "k", "c", 1), 0);
    uint64_t v5 = kv_expect(b, "k", "c", 1);
    assert_true(v5 > v4);
    assert_rc(dss_kv_cas(&h, b, "k", v4, "d", 1, NULL), -EAGAIN);
    kv_expect_str(b, "k", "c");

    /* CAS writes without expiry. */
    assert_rc(dss_kv_set_ttl(&h, b, "k", "t", 1, 60000), 0);
    uint64_t v6 = kv_expect(b, "k", "t", 1);
    assert_int_equal(has_expiry(b, "k"), 1);
    assert_rc(dss_kv_cas(&h, b, "k", v6, "u", 1, &nv), 0);
    assert_int_equal(has_expiry(b, "k"), 0);
    assert_int_equal(kv_expect(b, "k", "u", 1), nv);
    /* Versions seen by CAS and by increment are the same sequence. */
    assert_rc(dss_kv_set(&h, b, "n", "1", 1), 0);
    uint64_t vn = kv_expect(b, "n", "1", 1);
    assert_rc(dss_kv_increment(&h, b, "n", 1, NULL), 0);
    assert_rc(dss_kv_cas(&h, b, "n", vn, "9", 1, NULL), -EAGAIN);
    kv_expect_str(b, "n", "2");

    const char *all[] = {"k", "n"};
    assert_rc(dss_kv_delete_many(&h, b, all, 2), 0);
}

/* 6 processes each make CAS_ATTEMPTS read(get_version)-increment-cas
 * attempts on one key (a failed one, -EAGAIN, is retried as the next
 * attempt), counting successes and reporting them through a pipe: the
 * final value is the total number of successful CAS calls. */
struct cas_report {
    int child;
    long ok;
    long again;
};

struct cas_shared {
    pthread_barrier_t barrier;
    uint64_t versions[CAS_PROCS * CAS_ATTEMPTS];
};

static int cas_child(struct cas_shared *s, const char *b, int k, int wfd)
{
    struct cas_report rep;
    memset(&rep, 0, sizeof rep); /* padding too: it is written to a pipe */
    rep.child = k;
    struct dss_handle hc = {0};
    if (!CHECK_RC(dss_init_conninfo(&hc, ct_conninfo()), 0)) {
        pthread_barrier_wait(&s->barrier);
        return 1;
    }
    CHECK_RC(dss_kv_exists(&hc, b, "warm-up"), 0);
    pthread_barrier_wait(&s->barrier);
    for (int a = 0; a < CAS_ATTEMPTS; a++) {
        void *v = NULL;
        size_t len = 0;
        uint64_t version = 0;
        if (!CHECK_RC(dss_kv_get_version(&hc, b, "n", &v, &len, &version), 0))
            break;
        char text[32] = {0};
        int ok = CHECK(len > 0 && len < sizeof text);
        if (ok)
            memcpy(text, v, len);
        free(v);
        if (!ok)
            break;
        char *end = NULL;
        long cur = strtol(text, &end, 10);
        if (!CHECK(*end == '\0'))
            break;
        char next[32];
        int n = snprintf(next, sizeof next, "%ld", cur + 1);
        uint64_t nv = 0;
        int rc = dss_kv_cas(&hc, b, "n", version, next, (size_t)n, &nv);
        if (rc == 0) {
            CHECK(nv > version);
            s->versions[k * CAS_ATTEMPTS + rep.ok] = nv;
            rep.ok++;
        } else if (rc == -EAGAIN) {
            rep.again++;
        } else {
            CHECK_RC(rc, 0);
            break;
        }
    }
    dss_fini(&hc);
    CHECK(write(wfd, &rep, sizeof rep) == sizeof rep); /* < PIPE_BUF: atomic */
    return atomic_load(&ct_soft_failures) == 0 ? 0 : 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void test_cas_race_6_processes(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "cas6");
    uint64_t v0 = 0;
    assert_rc(dss_kv_cas(&h, b, "n", 0, "0", 1, &v0), 0);
    struct cas_shared *s = ct_shared(sizeof *s);
    ct_shared_barrier(&s->barrier, CAS_PROCS + 1);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pids[CAS_PROCS];
    for (int k = 0; k < CAS_PROCS; k++) {
        fflush(NULL);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0) {
            close(fds[0]);
            _exit(cas_child(s, b, k, fds[1]));
        }
    }
    close(fds[1]);
    pthread_barrier_wait(&s->barrier);
    double t0 = ct_now_ms();
    int failed = 0;
    for (int k = 0; k < CAS_PROCS; k++) {
        int rc = ct_wait_child(pids[k], 150);
        if (rc != 0) {
            fprintf(stderr, "cas child %d exited with %d\n", k, rc);
            failed++;
        }
    }
    double t1 = ct_now_ms();
    assert_int_equal(failed, 0);
    long total_ok = 0, total_again = 0;
    int reports = 0, got[CAS_PROCS] = {0};
    struct cas_report rep;
    ssize_t r;
    while ((r = read(fds[0], &rep, sizeof rep)) == (ssize_t)sizeof rep) {
        assert_true(rep.child >= 0 && rep.child < CAS_PROCS && !got[rep.child]);
        got[rep.child] = 1;
        assert_int_equal(rep.ok + rep.again, CAS_ATTEMPTS);
        total_ok += rep.ok;
        total_again += rep.again;
        reports++;
    }
    assert_int_equal(r, 0);
    close(fds[0]);
    assert_int_equal(reports, CAS_PROCS);
    fprintf(stderr, "cas race: %d processes x %d attempts in %.0f ms: %ld succeeded, %ld got "
                    "-EAGAIN\n",
            CAS_PROCS, CAS_ATTEMPTS, t1 - t0, total_ok, total_again);
    assert_true(total_ok > 0);

    /* The final value is the number of successful CAS calls. */
    char want[32];
    snprintf(want, sizeof want, "%ld", total_ok);
    uint64_t vend = kv_expect(b, "n", want, strlen(want));
    /* Every successful CAS wrote its own version, all distinct. */
    uint64_t *vs = malloc((size_t)total_ok * sizeof *vs);
    assert_non_null(vs);
    size_t m = 0;
    for (int k = 0; k < CAS_PROCS; k++)
        for (int i = 0; i < CAS_ATTEMPTS && s->versions[k * CAS_ATTEMPTS + i] != 0; i++)
            vs[m++] = s->versions[k * CAS_ATTEMPTS + i];
    assert_int_equal(m, total_ok);
    qsort(vs, m, sizeof *vs, cmp_u64);
    for (size_t i = 1; i < m; i++)
        assert_true(vs[i] > vs[i - 1]);
    assert_true(vs[0] > v0);
    assert_int_equal(vs[m - 1], vend); /* the last write is the one stored */
    free(vs);
    pthread_barrier_destroy(&s->barrier);
    munmap(s, sizeof *s);
    assert_rc(dss_kv_delete(&h, b, "n"), 0);
}

/* ---- batches ------------------------------------------------------------- */

static void test_get_many(void **state)
{
    (void)state;
    char b[128], other[128];
    ct_id(b, sizeof b, "getmany");
    ct_id(other, sizeof other, "getmany-other");
    const char bin[] = {'x', 0, 'y', 0};
    assert_rc(dss_kv_set(&h, b, "a", "A", 1), 0);
    assert_rc(dss_kv_set(&h, b, "bin", bin, sizeof bin), 0);
    assert_rc(dss_kv_set(&h, b, "empty", NULL, 0), 0);
    assert_rc(dss_kv_set_ttl(&h, b, "exp", "E", 1, 60000), 0);
    expire_key(b, "exp");
    assert_rc(dss_kv_set(&h, other, "missing", "other bucket", 12), 0);

    const char *keys[] = {"a", "missing", "bin", "empty", "a", "exp"};
    char sentinel;
    void *values[6];
    size_t lens[6];
    for (int i = 0; i < 6; i++) {
        values[i] = &sentinel;
        lens[i] = 999;
    }
    assert_rc(dss_kv_get_many(&h, b, keys, 6, values, lens), 0);
    assert_int_equal(lens[0], 1);
    assert_memory_equal(values[0], "A", 1);
    assert_null(values[1]); /* absent (present in another bucket only) */
    assert_int_equal(lens[1], 0);
    assert_int_equal(lens[2], sizeof bin);
    assert_memory_equal(values[2], bin, sizeof bin);
    assert_non_null(values[3]); /* empty, not absent */
    assert_true(values[3] != &sentinel);
    assert_int_equal(lens[3], 0);
    assert_int_equal(lens[4], 1); /* duplicates allowed: a copy each */
    assert_memory_equal(values[4], "A", 1);
    assert_true(values[4] != values[0]);
    assert_null(values[5]); /* expired */
    assert_int_equal(lens[5], 0);
    for (int i = 0; i < 6; i++)
        free(values[i]);

    /* n = 0: nothing to do, arrays may be NULL. */
    assert_rc(dss_kv_get_many(&h, b, NULL, 0, NULL, NULL), 0);
    values[0] = &sentinel;
    lens[0] = 999;
    assert_rc(dss_kv_get_many(&h, b, keys, 0, values, lens), 0);
    assert_ptr_equal(values[0], &sentinel);
    assert_int_equal(lens[0], 999);
    /* A bucket with nothing. */
    char none[128];
    ct_id(none, sizeof none, "getmany-none");
    assert_rc(dss_kv_get_many(&h, none, keys, 3, values, lens), 0);
    for (int i = 0; i < 3; i++) {
        assert_null(values[i]);
        assert_int_equal(lens[i], 0);
    }
    /* A bad key: -EINVAL naming its index, outputs untouched. */
    const char *bad[] = {"a", "bin", "\xff"};
    values[0] = &sentinel;
    lens[0] = 999;
    assert_rc(dss_kv_get_many(&h, b, bad, 3, values, lens), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "keys[2]"));
    assert_ptr_equal(values[0], &sentinel);
    assert_int_equal(lens[0], 999);

    const char *all[] = {"a", "bin", "empty", "exp"};
    assert_rc(dss_kv_delete_many(&h, b, all, 4), 0);
    assert_rc(dss_kv_delete(&h, other, "missing"), 0);
}

static void test_set_many_delete_many(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "setmany");
    const char bin[] = {0, 1, 0, 2, 0};
    const char *k3[] = {"k1", "k2", "k3"};
    const void *v3[] = {"v1", bin, NULL};
    size_t l3[] = {2, sizeof bin, 0};
    assert_rc(dss_kv_set_many(&h, b, k3, v3, l3, 3), 0);
    uint64_t v1 = kv_expect(b, "k1", "v1", 2);
    kv_expect(b, "k2", bin, sizeof bin);
    kv_expect(b, "k3", "", 0);

    /* Overwrite and create in one batch; set_many writes without expiry. */
    assert_rc(dss_kv_set_ttl(&h, b, "k2", "ttl", 3, 60000), 0);
    const char *k2[] = {"k4", "k1", "k2"};
    const void *v2[] = {"v4", "v1b", "v2b"};
    size_t l2[] = {2, 3, 3};
    assert_rc(dss_kv_set_many(&h, b, k2, v2, l2, 3), 0);
    assert_true(kv_expect(b, "k1", "v1b", 3) > v1);
    kv_expect_str(b, "k2", "v2b");
    kv_expect_str(b, "k4", "v4");
    assert_int_equal(has_expiry(b, "k2"), 0);
    uint64_t v1b = kv_expect(b, "k1", "v1b", 3);
    /* Overwriting an expired key: the new value. */
    assert_rc(dss_kv_set_ttl(&h, b, "k5", "old", 3, 60000), 0);
    expire_key(b, "k5");
    const char *k5[] = {"k5"};
    const void *v5[] = {"new"};
    size_t l5[] = {3};
    assert_rc(dss_kv_set_many(&h, b, k5, v5, l5, 1), 0);
    kv_expect_str(b, "k5", "new");
    assert_int_equal(has_expiry(b, "k5"), 0);

    /* All or nothing (checked before anything is sent): a bad key, a
     * duplicate, a NULL value with a length, a too large value. */
    const char *kbad[] = {"k1", "k6", "k\xff"};
    const void *vbad[] = {"X", "X", "X"};
    size_t lbad[] = {1, 1, 1};
    assert_rc(dss_kv_set_many(&h, b, kbad, vbad, lbad, 3), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "keys[2]"));
    const char *kdup[] = {"k1", "k6", "k1"};
    assert_rc(dss_kv_set_many(&h, b, kdup, vbad, lbad, 3), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "k1"));
    const char *kok[] = {"k1", "k6", "k7"};
    const void *vnull[] = {"X", NULL, "X"};
    assert_rc(dss_kv_set_many(&h, b, kok, vnull, lbad, 3), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "values[1]"));
    size_t lbig[] = {1, 1, (size_t)DSS_KV_MAX_VALUE_LEN + 1};
    char *big = malloc((size_t)DSS_KV_MAX_VALUE_LEN + 1); /* never touched: not committed */
    assert_non_null(big);
    const void *vbig[] = {"X", "X", big};
    assert_rc(dss_kv_set_many(&h, b, kok, vbig, lbig, 3), -EFBIG);
    free(big);
    assert_int_equal(kv_expect(b, "k1", "v1b", 3), v1b);
    kv_expect_absent(b, "k6");
    kv_expect_absent(b, "k7");
    /* n = 0: nothing, NULL arrays allowed. */
    assert_rc(dss_kv_set_many(&h, b, NULL, NULL, NULL, 0), 0);

    /* delete_many: present and absent keys; an expired one loses its row. */
    assert_rc(dss_kv_set_ttl(&h, b, "k8", "x", 1, 60000), 0);
    expire_key(b, "k8");
    const char *kd[] = {"k1", "missing", "k2", "k8"};
    assert_rc(dss_kv_delete_many(&h, b, kd, 4), 0);
    kv_expect_absent(b, "k1");
    kv_expect_absent(b, "k2");
    assert_int_equal(row_count(b, "k8"), 0);
    kv_expect(b, "k3", "", 0);
    kv_expect_str(b, "k4", "v4");
    /* Duplicates or a bad key: -EINVAL, nothing deleted. */
    const char *kdd[] = {"k3", "k4", "k3"};
    assert_rc(dss_kv_delete_many(&h, b, kdd, 3), -EINVAL);
    const char *kdb[] = {"k3", "k4", ""};
    assert_rc(dss_kv_delete_many(&h, b, kdb, 3), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "keys[2]"));
    kv_expect(b, "k3", "", 0);
    kv_expect_str(b, "k4", "v4");
    assert_rc(dss_kv_delete_many(&h, b, NULL, 0), 0);
    const char *krest[] = {"k3", "k4", "k5"};
    assert_rc(dss_kv_delete_many(&h, b, krest, 3), 0);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)), 0);
}

/* get_many and delete_many of N keys just written must take time about
 * linear in N, as set_many does. The table is analyzed first (what
 * autovacuum does on a live table), with rows in another bucket: the
 * planner then knows the table but not the new bucket, the usual state of
 * a production table. Expected: tens of ms for 10000 keys, less than
 * set_many; a plan comparing every row of the bucket with every key of the
 * batch takes seconds (minutes for DSS_MAX_BATCH keys). */
#define SCALE_KEYS 10000
#define SCALE_FILLER 2000
static int get_many_scales, delete_many_scales; /* set by test_batch_calls_scale */

static void test_batch_calls_scale(void **state)
{
    (void)state;
    char b[128], filler[128];
    ct_id(b, sizeof b, "scale");
    ct_id(filler, sizeof filler, "scale-filler");
    static char names[SCALE_KEYS][16];
    static const char *keys[SCALE_KEYS];
    static const void *values[SCALE_KEYS];
    static size_t lens[SCALE_KEYS];
    static void *out[SCALE_KEYS];
    static size_t out_lens[SCALE_KEYS];
    for (size_t i = 0; i < SCALE_KEYS; i++) {
        snprintf(names[i], sizeof names[i], "s%06zu", i);
        keys[i] = names[i];
        values[i] = names[i];
        lens[i] = strlen(names[i]);
    }
    assert_rc(dss_kv_set_many(&h, filler, keys, values, lens, SCALE_FILLER), 0);
    assert_int_equal(ct_psql(ct_conninfo(), "ANALYZE dss.kv", NULL, 0), 0);

    double t0 = ct_now_ms();
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, SCALE_KEYS), 0);
    double t1 = ct_now_ms();
    assert_rc(dss_kv_get_many(&h, b, keys, SCALE_KEYS, out, out_lens), 0);
    double t2 = ct_now_ms();
    for (size_t i = 0; i < SCALE_KEYS; i++) {
        if (out_lens[i] != lens[i] || memcmp(out[i], names[i], lens[i]) != 0)
            fail_msg("get_many of %d keys: key %zu wrong", SCALE_KEYS, i);
        free(out[i]);
    }
    double t3 = ct_now_ms();
    assert_rc(dss_kv_delete_many(&h, b, keys, SCALE_KEYS), 0);
    double t4 = ct_now_ms();
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)), 0);
    assert_int_equal(sql_ll("WITH d AS (DELETE FROM dss.kv WHERE bucket = %s RETURNING 1) "
                            "SELECT count(*) FROM d",
                            lit(filler)),
                     SCALE_FILLER);
    double set_ms = t1 - t0, get_ms = t2 - t1, del_ms = t4 - t3;
    /* Linear plans need tens of ms for 10000 keys (less than set_many). */
    double bound = 5 * set_ms > 1000 ? 5 * set_ms : 1000;
    fprintf(stderr, "%d keys (analyzed table): set_many %.0f ms, get_many %.0f ms, "
                    "delete_many %.0f ms (bound %.0f ms)\n",
            SCALE_KEYS, set_ms, get_ms, del_ms, bound);
    get_many_scales = get_ms <= bound;
    delete_many_scales = del_ms <= bound;
    if (!get_many_scales || !delete_many_scales)
        fail_msg("batch calls of %d keys just written: get_many %.0f ms, delete_many %.0f ms, "
                 "while set_many took %.0f ms; expected each under %.0f ms",
                 SCALE_KEYS, get_ms, del_ms, set_ms, bound);
}

/* Batches of exactly DSS_MAX_BATCH keys work; one more is -EINVAL and
 * changes nothing. */
static void test_batch_limits(void **state)
{
    (void)state;
    char b[128];
    ct_id(b, sizeof b, "maxbatch");
    const size_t n = DSS_MAX_BATCH + 1;
    char (*names)[16] = malloc(n * sizeof *names);
    const char **keys = malloc(n * sizeof *keys);
    const void **values = malloc(n * sizeof *values);
    size_t *lens = malloc(n * sizeof *lens);
    void **out = malloc(n * sizeof *out);
    size_t *out_lens = malloc(n * sizeof *out_lens);
    assert_true(names && keys && values && lens && out && out_lens);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "m%06zu", i);
        keys[i] = names[i];
        values[i] = names[i];
        lens[i] = strlen(names[i]);
    }
    char sentinel;
    out[0] = &sentinel;
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, n), -EINVAL);
    assert_rc(dss_kv_get_many(&h, b, keys, n, out, out_lens), -EINVAL);
    assert_ptr_equal(out[0], &sentinel);
    assert_rc(dss_kv_delete_many(&h, b, keys, n), -EINVAL);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)), 0);

    double t0 = ct_now_ms();
    assert_rc(dss_kv_set_many(&h, b, keys, values, lens, n - 1), 0);
    double t1 = ct_now_ms();
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)),
                     DSS_MAX_BATCH);
    if (get_many_scales) {
        assert_rc(dss_kv_get_many(&h, b, keys, n - 1, out, out_lens), 0);
        for (size_t i = 0; i < n - 1; i++) {
            if (out_lens[i] != lens[i] || memcmp(out[i], names[i], lens[i]) != 0)
                fail_msg("get_many of %zu keys: key %zu wrong", n - 1, i);
            free(out[i]);
        }
    } else {
        /* It could take minutes (see test_batch_calls_scale, which failed). */
        fprintf(stderr, "get_many of %d keys skipped: it does not scale\n", DSS_MAX_BATCH);
    }
    double t2 = ct_now_ms();
    /* A page of DSS_MAX_BATCH keys. */
    char **page = NULL;
    size_t np = 0;
    char *next = NULL;
    assert_rc(dss_kv_list_keys(&h, b, NULL, NULL, DSS_MAX_BATCH, &page, &np, &next), 0);
    assert_int_equal(np, DSS_MAX_BATCH);
    assert_null(next);
    assert_string_equal(page[0], names[0]);
    assert_string_equal(page[np - 1], names[n - 2]);
    assert_sorted_unique(page, np);
    dss_kv_free_keys(page, np);
    assert_rc(dss_kv_list_keys(&h, b, NULL, NULL, DSS_MAX_BATCH + 1, &page, &np, &next),
              -EINVAL);
    double t3 = ct_now_ms();
    if (delete_many_scales) {
        assert_rc(dss_kv_delete_many(&h, b, keys, n - 1), 0);
    } else {
        /* It would take minutes (see test_batch_calls_scale, which failed). */
        fprintf(stderr, "delete_many of %d keys skipped: it does not scale\n", DSS_MAX_BATCH);
        assert_int_equal(sql_ll("WITH d AS (DELETE FROM dss.kv WHERE bucket = %s RETURNING 1) "
                                "SELECT count(*) FROM d",
                                lit(b)),
                         DSS_MAX_BATCH);
    }
    double t4 = ct_now_ms();
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(b)), 0);
    fprintf(stderr, "%d keys: set_many %.0f ms, get_many %.0f ms%s, delete_many %.0f ms%s\n",
            DSS_MAX_BATCH, t1 - t0, t2 - t1, get_many_scales ? "" : " (skipped)", t4 - t3,
            delete_many_scales ? "" : " (SQL instead)");
    free(names);
    free(keys);
    free(values);
    free(lens);
    free(out);
    free(out_lens);
}

/* ---- fenced writes -------------------------------------------------------- */

static uint64_t token_of(const char *id)
{
    struct dss_lock_info info;
    memset(&info, 0, sizeof info);
    assert_rc(dss_lock_info(&h, id, &info), 0);
    uint64_t t = info.token;
    dss_lock_info_clear(&info);
    return t;
}

static void test_fenced_writes(void **state)
{
    (void)state;
    char b[128], id[128], other_id[128], plain_id[128];
    ct_id(b, sizeof b, "fenced");
    ct_id(id, sizeof id, "fence-lock");
    ct_id(other_id, sizeof other_id, "fence-other");
    ct_id(plain_id, sizeof plain_id, "fence-plain");

    /* A live lease: written, without expiry. */
    uint64_t t1 = 0;
    assert_rc(dss_lock_lease(&h, id, "alice", 60000, &t1), 0);
    assert_int_equal(token_of(id), t1);
    assert_rc(dss_kv_set_ttl(&h, b, "data", "pre", 3, 60000), 0);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "alice-1", 7, id, t1), 0);
    uint64_t va = kv_expect(b, "data", "alice-1", 7);
    assert_int_equal(has_expiry(b, "data"), 0);
    assert_rc(dss_kv_set_fenced(&h, b, "alice-new", NULL, 0, id, t1), 0);
    kv_expect(b, "alice-new", "", 0);

    /* Tokens that do not hold the lock, and a lock nobody holds. */
    const uint64_t wrong[] = {0, t1 - 1, t1 + 1, t1 + 1000000, (uint64_t)INT64_MAX + 1,
                              UINT64_MAX};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++)
        assert_rc(dss_kv_set_fenced(&h, b, "data", "wrong", 5, id, wrong[i]), -ESTALE);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "wrong", 5, other_id, t1), -ESTALE);
    assert_true(ct_contains(dss_last_error(), "dss_kv_set_fenced"));
    assert_int_equal(kv_expect(b, "data", "alice-1", 7), va);

    /* The lease expires, nobody took it over yet: -ESTALE, nothing written,
     * not even a new key. */
    assert_int_equal(ct_expire(id), 1);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "alice-late", 10, id, t1), -ESTALE);
    assert_rc(dss_kv_set_fenced(&h, b, "fresh-expired", "x", 1, id, t1), -ESTALE);
    assert_int_equal(kv_expect(b, "data", "alice-1", 7), va);
    kv_expect_absent(b, "fresh-expired");
    assert_int_equal(row_count(b, "fresh-expired"), 0);

    /* Bob takes it over: Alice's token is stale, Bob's works. */
    uint64_t t2 = 0;
    assert_rc(dss_lock_lease(&h, id, "bob", 60000, &t2), 0);
    assert_true(t2 > t1);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "alice-stale", 11, id, t1), -ESTALE);
    assert_true(ct_contains(dss_last_error(), id));
    assert_int_equal(kv_expect(b, "data", "alice-1", 7), va);
    assert_rc(dss_kv_set_fenced(&h, b, "fresh", "alice-stale", 11, id, t1), -ESTALE);
    kv_expect_absent(b, "fresh");
    assert_int_equal(row_count(b, "fresh"), 0);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "bob-1", 5, id, t2), 0);
    uint64_t vb = kv_expect(b, "data", "bob-1", 5);
    assert_true(vb > va);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "alice-stale", 11, id, t1), -ESTALE);
    kv_expect_str(b, "data", "bob-1");
    /* Bob refreshes: same token, still good. */
    assert_rc(dss_lock_refresh(&h, id, "bob"), 0);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "bob-2", 5, id, t2), 0);
    kv_expect_str(b, "data", "bob-2");
    /* Released: Bob's token is stale too. */
    assert_rc(dss_unlock(&h, id, "bob"), 0);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "bob-late", 8, id, t2), -ESTALE);
    kv_expect_str(b, "data", "bob-2");

    /* A lock without lease (dss_lock): its token from dss_lock_info. */
    assert_rc(dss_lock(&h, plain_id, "carol"), 0);
    uint64_t t3 = token_of(plain_id);
    assert_true(t3 > t2);
    assert_rc(dss_kv_set_fenced(&h, b, "data", "carol", 5, plain_id, t3), 0);
    kv_expect_str(b, "data", "carol");
    assert_rc(dss_kv_set_fenced(&h, b, "data", "carol-x", 7, plain_id, t2), -ESTALE);
    assert_rc(dss_unlock(&h, plain_id, "carol"), 0);
    kv_expect_str(b, "data", "carol");

    const char *all[] = {"data", "alice-new"};
    assert_rc(dss_kv_delete_many(&h, b, all, 2), 0);
}

/* ---- bad input: -EINVAL, nothing changed ---------------------------------- */

/* Fingerprint of the whole table and of the version sequence: any write, or
 * any statement taking a version, changes it. */
static void kv_fingerprint(char *out, size_t size)
{
    assert_int_equal(ct_psql(ct_conninfo(),
                             "SELECT coalesce(md5(string_agg(md5(bucket) || md5(key) || "
                             "md5(value) || version || coalesce(expires_at::text, '-'), ',' "
                             "ORDER BY bucket, key)), '') || ' ' || (SELECT last_value || "
                             "'/' || is_called FROM dss.kv_version_seq) FROM dss.kv",
                             out, size),
                     0);
    assert_true(strlen(out) > 10);
}

static void bad_call_set(struct dss_handle *hh, const char *bk, const char *k, uint64_t ver,
                         const char *lock_id, uint64_t token, const char *what)
{
    char sentinel;
    void *v = &sentinel;
    size_t n = 4242;
    uint64_t version = 4343, nv = 4444;
    int64_t r = 4545;
    char **keys = (char **)&sentinel;
    size_t nk = 4646;
    char *next = &sentinel;
    const char *batch[] = {"k2", k};
    const void *values[] = {"evil", "evil"};
    size_t lens[] = {4, 4};
    void *outs[2] = {&sentinel, &sentinel};
    size_t outl[2] = {4747, 4747};

    assert_rc(dss_kv_set(hh, bk, k, "evil", 4), -EINVAL);
    assert_true(ct_contains(dss_last_error(), what));
    assert_rc(dss_kv_set_ttl(hh, bk, k, "evil", 4, 60000), -EINVAL);
    assert_true(ct_contains(dss_last_error(), what));
    assert_rc(dss_kv_get(hh, bk, k, &v, &n), -EINVAL);
    assert_rc(dss_kv_get_version(hh, bk, k, &v, &n, &version), -EINVAL);
    assert_true(ct_contains(dss_last_error(), what));
    assert_rc(dss_kv_delete(hh, bk, k), -EINVAL);
    assert_rc(dss_kv_exists(hh, bk, k), -EINVAL);
    assert_rc(dss_kv_increment(hh, bk, k, 1, &r), -EINVAL);
    assert_rc(dss_kv_cas(hh, bk, k, 0, "evil", 4, &nv), -EINVAL);
    assert_rc(dss_kv_cas(hh, bk, k, ver, "evil", 4, &nv), -EINVAL);
    assert_true(ct_contains(dss_last_error(), what));
    assert_rc(dss_kv_set_fenced(hh, bk, k, "evil", 4, lock_id, token), -EINVAL);
    assert_true(ct_contains(dss_last_error(), what));
    assert_rc(dss_kv_get_many(hh, bk, batch, 2, outs, outl), -EINVAL);
    assert_rc(dss_kv_set_many(hh, bk, batch, values, lens, 2), -EINVAL);
    assert_rc(dss_kv_delete_many(hh, bk, batch, 2), -EINVAL);
    if (strcmp(what, "key") != 0) { /* the key plays no part in a listing */
        assert_rc(dss_kv_list_keys(hh, bk, NULL, NULL, 10, &keys, &nk, &next), -EINVAL);
        assert_true(ct_contains(dss_last_error(), what));
    }
    /* Outputs untouched. */
    assert_ptr_equal(v, &sentinel);
    assert_int_equal(n, 4242);
    assert_int_equal(version, 4343);
    assert_int_equal(nv, 4444);
    assert_int_equal(r, 4545);
    assert_ptr_equal(keys, (char **)&sentinel);
    assert_int_equal(nk, 4646);
    assert_ptr_equal(next, &sentinel);
    assert_ptr_equal(outs[0], &sentinel);
    assert_ptr_equal(outs[1], &sentinel);
    assert_int_equal(outl[0], 4747);
}

static void test_bad_input(void **state)
{
    (void)state;
    /* Sentinels whose names are the 1024-byte prefixes of 1025-byte bad
     * names: a truncating library would hit them. */
    char *B = padded_name("badin-bucket", DSS_KV_MAX_KEY_LEN, 'y');
    char *K = padded_name("badin-key", DSS_KV_MAX_KEY_LEN, 'x');
    char *Blong = malloc(DSS_KV_MAX_KEY_LEN + 2), *Klong = malloc(DSS_KV_MAX_KEY_LEN + 2);
    assert_true(Blong && Klong);
    snprintf(Blong, DSS_KV_MAX_KEY_LEN + 2, "%sy", B);
    snprintf(Klong, DSS_KV_MAX_KEY_LEN + 2, "%sx", K);
    assert_int_equal(strlen(Blong), DSS_KV_MAX_KEY_LEN + 1);
    /* A lock id of the maximum length, held, for the fenced writes. */
    char *lock_id = padded_name("badin-lock", DSS_MAX_LOCK_ID_LEN, 'l');
    char *lock_long = malloc(DSS_MAX_LOCK_ID_LEN + 2);
    assert_non_null(lock_long);
    snprintf(lock_long, DSS_MAX_LOCK_ID_LEN + 2, "%sl", lock_id);
    uint64_t token = 0;
    assert_rc(dss_lock_lease(&h, lock_id, "badin", 600000, &token), 0);

    assert_rc(dss_kv_set(&h, B, K, "sentinel-1", 10), 0);
    assert_rc(dss_kv_set(&h, B, "k2", "sentinel-2", 10), 0);
    uint64_t v1 = kv_expect(B, K, "sentinel-1", 10);
    uint64_t v2 = kv_expect(B, "k2", "sentinel-2", 10);
    char before[128], after[128];
    kv_fingerprint(before, sizeof before);

    /* Bad bucket names and keys, in every call. */
    const char *bad[] = {NULL, "", NULL /* 1025 bytes */, "\xff", "ab\xc3", "\xc0\xaf",
                         "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xfe" "b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *as_bucket = i == 2 ? Blong : bad[i];
        const char *as_key = i == 2 ? Klong : bad[i];
        bad_call_set(&h, as_bucket, K, v1, lock_id, token, "bucket");
        bad_call_set(&h, B, as_key, v1, lock_id, token, "key");
    }

    /* Bad handles: NULL, zeroed, finalised, a pointer that is no handle. */
    struct dss_handle zero = {0}, fini_h, copy, bogus;
    int not_a_handle = 0;
    bogus.dh_conn = &not_a_handle;
    ct_open(&fini_h);
    copy = fini_h;
    dss_fini(&fini_h);
    assert_null(fini_h.dh_conn);
    struct dss_handle *handles[] = {NULL, &zero, &fini_h, &copy, &bogus};
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++)
        bad_call_set(handles[i], B, K, v1, lock_id, token, "handle");

    /* A NULL value with a length. */
    assert_rc(dss_kv_set(&h, B, K, NULL, 1), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "value"));
    assert_rc(dss_kv_set_ttl(&h, B, K, NULL, 1, 60000), -EINVAL);
    assert_rc(dss_kv_cas(&h, B, K, v1, NULL, 1, NULL), -EINVAL);
    assert_rc(dss_kv_cas(&h, B, "new", 0, NULL, 1, NULL), -EINVAL);
    assert_rc(dss_kv_set_fenced(&h, B, K, NULL, 1, lock_id, token), -EINVAL);
    /* TTL out of range. */
    assert_rc(dss_kv_set_ttl(&h, B, K, "evil", 4, 0), -EINVAL);
    assert_rc(dss_kv_set_ttl(&h, B, K, "evil", 4, (uint64_t)DSS_MAX_TTL_MS + 1), -EINVAL);

    /* NULL outputs of get. */
    void *v = NULL;
    size_t n = 0;
    uint64_t version = 0;
    assert_rc(dss_kv_get(&h, B, K, NULL, &n), -EINVAL);
    assert_rc(dss_kv_get(&h, B, K, &v, NULL), -EINVAL);
    assert_rc(dss_kv_get(&h, B, K, NULL, NULL), -EINVAL);
    assert_rc(dss_kv_get_version(&h, B, K, NULL, &n, &version), -EINVAL);
    assert_rc(dss_kv_get_version(&h, B, K, &v, NULL, &version), -EINVAL);
    assert_null(v);
    assert_int_equal(version, 0);

    /* list_keys: limit, NULL outputs, bad prefix or cursor. */
    char sentinel;
    char **keys = (char **)&sentinel;
    char *next = &sentinel;
    n = 4242;
    assert_rc(dss_kv_list_keys(&h, B, NULL, NULL, 0, &keys, &n, &next), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "limit"));
    assert_rc(dss_kv_list_keys(&h, B, NULL, NULL, DSS_MAX_BATCH + 1, &keys, &n, &next),
              -EINVAL);
    assert_rc(dss_kv_list_keys(&h, B, NULL, NULL, SIZE_MAX, &keys, &n, &next), -EINVAL);
    assert_rc(dss_kv_list_keys(&h, B, NULL, NULL, 10, NULL, &n, &next), -EINVAL);
    assert_rc(dss_kv_list_keys(&h, B, NULL, NULL, 10, &keys, NULL, &next), -EINVAL);
    for (size_t i = 2; i < sizeof bad / sizeof bad[0]; i++) { /* NULL and "" are valid */
        const char *s = i == 2 ? Klong : bad[i];
        assert_rc(dss_kv_list_keys(&h, B, s, NULL, 10, &keys, &n, &next), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "prefix"));
        assert_rc(dss_kv_list_keys(&h, B, NULL, s, 10, &keys, &n, &next), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "cursor"));
    }
    assert_ptr_equal(keys, (char **)&sentinel);
    assert_ptr_equal(next, &sentinel);
    assert_int_equal(n, 4242);

    /* Batches: NULL arrays with n > 0, a NULL key, duplicates, a NULL
     * value with a length. */
    const char *pair[] = {K, "k2"};
    const char *with_null[] = {K, NULL};
    const char *dup[] = {K, "k2", K};
    const void *values[] = {"evil", "evil", "evil"};
    const void *null_value[] = {"evil", NULL};
    size_t lens[] = {4, 4, 4};
    void *outs[3] = {&sentinel, &sentinel, &sentinel};
    size_t outl[3] = {1, 1, 1};
    assert_rc(dss_kv_get_many(&h, B, NULL, 2, outs, outl), -EINVAL);
    assert_rc(dss_kv_get_many(&h, B, pair, 2, NULL, outl), -EINVAL);
    assert_rc(dss_kv_get_many(&h, B, pair, 2, outs, NULL), -EINVAL);
    assert_rc(dss_kv_get_many(&h, B, with_null, 2, outs, outl), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "keys[1]"));
    assert_ptr_equal(outs[0], &sentinel);
    assert_rc(dss_kv_set_many(&h, B, NULL, values, lens, 2), -EINVAL);
    assert_rc(dss_kv_set_many(&h, B, pair, NULL, lens, 2), -EINVAL);
    assert_rc(dss_kv_set_many(&h, B, pair, values, NULL, 2), -EINVAL);
    assert_rc(dss_kv_set_many(&h, B, with_null, values, lens, 2), -EINVAL);
    assert_rc(dss_kv_set_many(&h, B, dup, values, lens, 3), -EINVAL);
    assert_rc(dss_kv_set_many(&h, B, pair, null_value, lens, 2), -EINVAL);
    assert_rc(dss_kv_delete_many(&h, B, NULL, 2), -EINVAL);
    assert_rc(dss_kv_delete_many(&h, B, with_null, 2), -EINVAL);
    assert_rc(dss_kv_delete_many(&h, B, dup, 3), -EINVAL);

    /* Fenced writes with a bad lock id (the 2049-byte one extends the held
     * id: truncated, it would pass the fence). */
    const char *bad_ids[] = {NULL, "", lock_long, "\xff", "id\xc3"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        assert_rc(dss_kv_set_fenced(&h, B, K, "evil", 4, bad_ids[i], token), -EINVAL);
        assert_rc(dss_kv_set_fenced(&h, B, "new", "evil", 4, bad_ids[i], token), -EINVAL);
    }

    /* Nothing changed anywhere. */
    kv_fingerprint(after, sizeof after);
    assert_string_equal(after, before);
    assert_int_equal(kv_expect(B, K, "sentinel-1", 10), v1);
    assert_int_equal(kv_expect(B, "k2", "sentinel-2", 10), v2);
    kv_expect_absent(B, "new");

    /* The fence itself works with the good id: the calls above failed for
     * their bad argument only. */
    assert_rc(dss_kv_set_fenced(&h, B, K, "fenced", 6, lock_id, token), 0);
    kv_expect_str(B, K, "fenced");
    assert_rc(dss_unlock(&h, lock_id, "badin"), 0);
    const char *all[] = {K, "k2"};
    assert_rc(dss_kv_delete_many(&h, B, all, 2), 0);
    assert_int_equal(sql_ll("SELECT count(*) FROM dss.kv WHERE bucket = %s", lit(B)), 0);
    free(B);
    free(K);
    free(Blong);
    free(Klong);
    free(lock_id);
    free(lock_long);
}

/* ---- -ETIMEDOUT and -ECOMM -------------------------------------------------
 * A psql session row-locks a key (SELECT ... FOR UPDATE, transaction left
 * open); a dss_kv_set of that key, on a handle with a pool of one, waits
 * for the row. Meanwhile that handle has no free connection (-ETIMEDOUT
 * after pool_timeout_ms), while other handles work; then the waiting
 * session is terminated by the server: the set returns -ECOMM (outcome
 * unknown) and wrote nothing, and the handle recovers. */

struct blocked_set {
    struct dss_handle *h;
    const char *b, *k;
    int rc;
    atomic_int done;
};

static void *blocked_set_thread(void *arg)
{
    struct blocked_set *c = arg;
    c->rc = dss_kv_set(c->h, c->b, c->k, "lost", 4);
    atomic_store(&c->done, 1);
    return NULL;
}

static void test_pool_timeout_and_lost_connection(void **state)
{
    (void)state;
    char b[128], app[64];
    ct_id(b, sizeof b, "blocked");
    snprintf(app, sizeof app, "kvblock%ld", (long)getpid());
    assert_rc(dss_kv_set(&h, b, "row", "old", 3), 0);
    uint64_t v = kv_expect(b, "row", "old", 3);

    /* The blocker: psql reading its statements from a pipe. */
    char conn[512];
    snprintf(conn, sizeof conn, "%s application_name=%s", ct_conninfo(), app);
    int in[2];
    assert_int_equal(pipe(in), 0);
    fflush(NULL);
    pid_t psql = fork();
    assert_true(psql >= 0);
    if (psql == 0) {
        dup2(in[0], 0);
        close(in[0]);
        close(in[1]);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 1);
        execlp(PSQL_PROGRAM, PSQL_PROGRAM, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conn,
               (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    char sql[2048];
    int len = snprintf(sql, sizeof sql,
                       "BEGIN;\nSELECT 1 FROM dss.kv WHERE bucket = %s AND key = 'row' "
                       "FOR UPDATE;\n",
                       lit(b));
    assert_int_equal(write(in[1], sql, (size_t)len), len);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' AND "
             "state = 'idle in transaction' AND query LIKE '%%FOR UPDATE%%'",
             app);
    assert_int_equal(ct_poll_at_least(ct_conninfo(), sql, 1, 30, NULL), 0);

    setenv("PHOBOS_DSS_pool_size", "1", 1);
    setenv("PHOBOS_DSS_pool_timeout_ms", "300", 1);
    struct dss_handle hp;
    ct_open(&hp);
    unsetenv("PHOBOS_DSS_pool_size");
    unsetenv("PHOBOS_DSS_pool_timeout_ms");
    assert_rc(dss_kv_exists(&hp, b, "row"), 1); /* its one connection, opened */

    struct blocked_set call = {&hp, b, "row", 12345, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, blocked_set_thread, &call), 0);
    char waiter_sql[1024];
    snprintf(waiter_sql, sizeof waiter_sql,
             "FROM pg_stat_activity WHERE application_name = 'libdss' AND "
             "wait_event_type = 'Lock' AND pg_blocking_pids(pid) && ARRAY(SELECT pid FROM "
             "pg_stat_activity WHERE application_name = '%s')",
             app);
    snprintf(sql, sizeof sql, "SELECT count(*) %s", waiter_sql);
    assert_int_equal(ct_poll_at_least(ct_conninfo(), sql, 1, 30, NULL), 0);
    assert_int_equal(atomic_load(&call.done), 0);

    /* The handle's only connection is busy: -ETIMEDOUT after ~300 ms. */
    void *val = NULL;
    size_t n = 0;
    double t0 = ct_now_ms();
    int rc = dss_kv_get(&hp, b, "row", &val, &n);
    double ms = ct_now_ms() - t0;
    assert_rc(rc, -ETIMEDOUT);
    assert_true(ms >= 250 && ms < 10000);
    assert_rc(dss_kv_increment(&hp, b, "ctr", 1, NULL), -ETIMEDOUT);
    assert_rc(dss_kv_exists(&hp, b, "row"), -ETIMEDOUT);
    /* Other handles are not affected; the row still holds the old value. */
    assert_int_equal(kv_expect(b, "row", "old", 3), v);
    assert_int_equal(atomic_load(&call.done), 0);

    /* The server ends the waiting session. The library may run the statement
     * again on a new connection (the ended transaction was rolled back): it
     * then waits for the row again, and is ended again, until the call gives
     * up with -ECOMM; nothing is written. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM (SELECT pid "
             "%s OFFSET 0) s",
             waiter_sql);
    int kills = 0;
    double deadline = ct_now_ms() + 60000;
    while (!atomic_load(&call.done) && ct_now_ms() < deadline && kills < 20) {
        long long k = sql_ll("%s", sql);
        kills += (int)k;
        if (k == 0) {
            struct timespec nap = {0, 2 * 1000 * 1000}; /* polling a state, with a deadline */
            nanosleep(&nap, NULL);
        }
    }
    int finished = atomic_load(&call.done);
    /* Let the blocker go in any case, so that the thread can end. */
    assert_int_equal(write(in[1], "COMMIT;\n", 8), 8);
    close(in[1]);
    assert_int_equal(ct_wait_child(psql, 30), 0);
    pthread_join(t, NULL);
    fprintf(stderr, "lost connection: %d session(s) of the blocked dss_kv_set terminated; it "
                    "returned %d (%s)\n",
            kills, call.rc, ct_errname(call.rc));
    assert_true(finished);
    assert_true(kills >= 1);
    if (call.rc != -ECOMM)
        fail_msg("dss_kv_set whose session was terminated = %d (%s), expected -ECOMM",
                 call.rc, ct_errname(call.rc));
    assert_int_equal(kv_expect(b, "row", "old", 3), v);

    /* The handle recovers. */
    assert_rc(dss_kv_set(&hp, b, "row", "after", 5), 0);
    kv_expect_str(b, "row", "after");
    void *got = NULL;
    assert_rc(dss_kv_get(&hp, b, "row", &got, &n), 0);
    assert_int_equal(n, 5);
    free(got);
    dss_fini(&hp);
    assert_rc(dss_kv_delete(&h, b, "row"), 0);
    assert_rc(dss_kv_delete(&h, b, "ctr"), 0);
}

int main(void)
{
    if (ct_setup("test_kv", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_delete),
        cmocka_unit_test(test_binary_and_empty_values),
        cmocka_unit_test(test_max_value),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_list_keys),
        cmocka_unit_test(test_list_prefix_last_code_point),
        cmocka_unit_test(test_list_paging_concurrent_inserts),
        cmocka_unit_test(test_increment),
        cmocka_unit_test(test_increment_8_processes),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_cas_race_6_processes),
        cmocka_unit_test(test_get_many),
        cmocka_unit_test(test_set_many_delete_many),
        cmocka_unit_test(test_batch_calls_scale),
        cmocka_unit_test(test_batch_limits),
        cmocka_unit_test(test_fenced_writes),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_pool_timeout_and_lost_connection),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
