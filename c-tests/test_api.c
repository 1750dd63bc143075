/* Lock, refresh, unlock and status semantics; odd but valid ids and owners;
 * length limits; dss_last_error() and dss_version(). */
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

static struct dss_handle h1, h2; /* two clients of the same database */

CT_GROUP_WITH_TWO_HANDLES(h1, h2)

static void test_lock_then_eexist(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "eexist");
    ct_assert_absent(&h1, id);
    assert_rc(dss_lock(&h1, id, "alice"), 0);
    /* Already held: by the same owner, through either handle, and by another. */
    assert_rc(dss_lock(&h1, id, "alice"), -EEXIST);
    assert_true(ct_contains(dss_last_error(), "dss_lock"));
    assert_true(ct_contains(dss_last_error(), id));
    assert_rc(dss_lock(&h2, id, "alice"), -EEXIST);
    assert_rc(dss_lock(&h2, id, "bob"), -EEXIST);
    assert_rc(dss_lock(&h1, id, "bob"), -EEXIST);
    /* The first owner still holds it. */
    ct_assert_held(&h2, id, "alice");
    assert_rc(dss_unlock(&h2, id, "alice"), 0);
    ct_assert_absent(&h1, id);
    /* Free again: anyone may take it. */
    assert_rc(dss_lock(&h2, id, "bob"), 0);
    ct_assert_held(&h1, id, "bob");
    assert_rc(dss_unlock(&h1, id, "bob"), 0);
}

static void test_refresh(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "refresh");
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -ENOLCK);
    assert_true(ct_contains(dss_last_error(), "dss_lock_refresh"));
    assert_true(ct_contains(dss_last_error(), id));
    ct_assert_absent(&h1, id); /* refresh does not create the lock */

    assert_rc(dss_lock(&h1, id, "alice"), 0);
    struct timeval t1 = ct_assert_held(&h1, id, "alice");
    usleep(20000); /* let the database clock move on */
    assert_rc(dss_lock_refresh(&h1, id, "alice"), 0);
    struct timeval t2 = ct_assert_held(&h2, id, "alice");
    assert_true(ct_tv_us(&t2) > ct_tv_us(&t1));
    /* Refresh from the other handle by the right owner works too. */
    usleep(20000);
    assert_rc(dss_lock_refresh(&h2, id, "alice"), 0);
    struct timeval t3 = ct_assert_held(&h1, id, "alice");
    assert_true(ct_tv_us(&t3) > ct_tv_us(&t2));

    /* Another owner: -EACCES, and nothing changes (timestamp included). */
    usleep(20000);
    assert_rc(dss_lock_refresh(&h2, id, "bob"), -EACCES);
    assert_true(ct_contains(dss_last_error(), "dss_lock_refresh"));
    assert_true(ct_contains(dss_last_error(), "alice"));
    assert_rc(dss_lock_refresh(&h1, id, ""), -EACCES);
    assert_rc(dss_lock_refresh(&h1, id, "alice "), -EACCES); /* exact match only */
    assert_rc(dss_lock_refresh(&h1, id, "ALICE"), -EACCES);
    struct timeval t4 = ct_assert_held(&h1, id, "alice");
    assert_int_equal(t4.tv_sec, t3.tv_sec);
    assert_int_equal(t4.tv_usec, t3.tv_usec);

    assert_rc(dss_unlock(&h1, id, "alice"), 0);
    assert_rc(dss_lock_refresh(&h1, id, "alice"), -ENOLCK);
    ct_assert_absent(&h1, id);
}

static void test_unlock(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "unlock");
    assert_rc(dss_unlock(&h1, id, "alice"), -ENOLCK);
    assert_true(ct_contains(dss_last_error(), "dss_unlock"));
    assert_true(ct_contains(dss_last_error(), id));

    assert_rc(dss_lock(&h1, id, "alice"), 0);
    struct timeval t1 = ct_assert_held(&h1, id, "alice");
    assert_rc(dss_unlock(&h2, id, "bob"), -EACCES);
    assert_true(ct_contains(dss_last_error(), "alice"));
    assert_rc(dss_unlock(&h1, id, ""), -EACCES);
    assert_rc(dss_unlock(&h1, id, "alic"), -EACCES);
    struct timeval t2 = ct_assert_held(&h2, id, "alice"); /* still held, unchanged */
    assert_int_equal(ct_tv_us(&t1), ct_tv_us(&t2));
    assert_rc(dss_lock(&h2, id, "bob"), -EEXIST);

    assert_rc(dss_unlock(&h2, id, "alice"), 0);
    ct_assert_absent(&h1, id);
    assert_rc(dss_unlock(&h1, id, "alice"), -ENOLCK);
    assert_rc(dss_unlock(&h1, id, NULL), -ENOLCK);

    /* Forced release (NULL owner) of anybody's lock. */
    assert_rc(dss_lock(&h1, id, "carol"), 0);
    assert_rc(dss_unlock(&h2, id, NULL), 0);
    ct_assert_absent(&h1, id);
    assert_rc(dss_unlock(&h2, id, NULL), -ENOLCK);
    assert_true(ct_contains(dss_last_error(), id));
    /* Empty owner is an owner, not a force. */
    assert_rc(dss_lock(&h1, id, "carol"), 0);
    assert_rc(dss_unlock(&h1, id, ""), -EACCES);
    ct_assert_held(&h1, id, "carol");
    assert_rc(dss_unlock(&h1, id, NULL), 0);
}

static void test_status(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "status");

    /* Absent: -ENOLCK, outputs untouched. */
    char sentinel_obj;
    char *owner = &sentinel_obj;
    struct timeval tv = {4242, 4343};
    assert_rc(dss_lock_status(&h1, id, &owner, &tv), -ENOLCK);
    assert_true(ct_contains(dss_last_error(), "dss_lock_status"));
    assert_true(ct_contains(dss_last_error(), id));
    assert_ptr_equal(owner, &sentinel_obj);
    assert_int_equal(tv.tv_sec, 4242);
    assert_int_equal(tv.tv_usec, 4343);
    assert_rc(dss_lock_status(&h1, id, NULL, NULL), -ENOLCK);

    int64_t before = ct_wall_us();
    assert_rc(dss_lock(&h1, id, "alice"), 0);
    int64_t after = ct_wall_us();

    /* Both outputs optional. */
    assert_rc(dss_lock_status(&h1, id, NULL, NULL), 0);
    tv.tv_sec = 4242;
    assert_rc(dss_lock_status(&h1, id, NULL, &tv), 0);
    assert_true(tv.tv_sec != 4242);
    owner = NULL;
    assert_rc(dss_lock_status(&h1, id, &owner, NULL), 0);
    assert_non_null(owner);
    assert_string_equal(owner, "alice");
    free(owner);

    /* A malloc()ed copy each time: two calls, two distinct writable buffers. */
    char *o1 = NULL, *o2 = NULL;
    struct timeval ta, tb;
    assert_rc(dss_lock_status(&h1, id, &o1, &ta), 0);
    assert_rc(dss_lock_status(&h2, id, &o2, &tb), 0);
    assert_non_null(o1);
    assert_non_null(o2);
    assert_ptr_not_equal(o1, o2);
    assert_string_equal(o1, "alice");
    assert_string_equal(o2, "alice");
    o1[0] = 'A'; /* ours to modify */
    assert_string_equal(o2, "alice");
    o1 = realloc(o1, 1000); /* and a genuine malloc() block */
    assert_non_null(o1);
    assert_string_equal(o1, "Alice");
    free(o1);
    free(o2);
    assert_int_equal(ct_tv_us(&ta), ct_tv_us(&tb));

    /* The timestamp is the database's now(), same machine: within a few
     * seconds of the client's clock around the call; microseconds in range. */
    int64_t ts = ct_tv_us(&ta);
    assert_true(ta.tv_usec >= 0 && ta.tv_usec < 1000000);
    if (ts < before - 3000000 || ts > after + 3000000)
        fail_msg("lock timestamp %lld.%06ld is not within 3 s of [%lld, %lld] us",
                 (long long)ta.tv_sec, (long)ta.tv_usec, (long long)before, (long long)after);

    /* Refresh moves it forward, by at least the time waited. */
    usleep(50000);
    int64_t before_refresh = ct_wall_us();
    assert_rc(dss_lock_refresh(&h1, id, "alice"), 0);
    int64_t after_refresh = ct_wall_us();
    struct timeval t2 = ct_assert_held(&h1, id, "alice");
    assert_true(ct_tv_us(&t2) - ts >= 40000);
    assert_true(ct_tv_us(&t2) >= before_refresh - 3000000);
    assert_true(ct_tv_us(&t2) <= after_refresh + 3000000);

    assert_rc(dss_unlock(&h1, id, "alice"), 0);
    owner = &sentinel_obj;
    tv.tv_sec = 4242;
    tv.tv_usec = 4343;
    assert_rc(dss_lock_status(&h1, id, &owner, &tv), -ENOLCK);
    assert_ptr_equal(owner, &sentinel_obj);
    assert_int_equal(tv.tv_sec, 4242);
    assert_int_equal(tv.tv_usec, 4343);
}

/* Strings that break naive SQL building, quoting or encoding. */
static const char *const weird[] = {
    "it's",
    "''",
    "\"double\"",
    "$$",
    "$tag$ dollar $tag$",
    "back\\slash",
    "\\x41\\000",
    "E'\\n'",
    "with space",
    "  leading and trailing  ",
    "semi;colon",
    "x'); DROP TABLE dss.locks; --",
    "'; DELETE FROM dss.locks; --",
    "x' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "%",
    "_",
    "*",
    "tab\there\nnewline\r",
    "\x7f\x01\x1b[31m",
    "\xf0\x9f\x98\x80 emoji \xf0\x9f\x94\x92",          /* 😀 🔒 */
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",              /* 日本語 */
    "\xc3\xa9t\xc3\xa9 e\xcc\x81t\xc3\xa9",              /* précomposé et décomposé */
    "\xef\xbf\xbf \xf4\x8f\xbf\xbf",                     /* U+FFFF, U+10FFFF */
    "\xe2\x80\x8b\xef\xbb\xbf",                          /* zero width space, BOM */
};

static void test_weird_strings(void **state)
{
    (void)state;
    size_t n = sizeof weird / sizeof weird[0];
    for (size_t i = 0; i < n; i++) {
        char id[512];
        char tag[16];
        snprintf(tag, sizeof tag, "weird%zu:", i);
        ct_id(id, 200, tag);
        strcat(id, weird[i]);
        /* As the id, with a plain owner. */
        assert_rc(dss_lock(&h1, id, "plain"), 0);
        ct_assert_held(&h2, id, "plain");
        assert_rc(dss_lock(&h2, id, "other"), -EEXIST);
        assert_rc(dss_lock_refresh(&h2, id, "plain"), 0);
        assert_rc(dss_unlock(&h2, id, "plain"), 0);
        ct_assert_absent(&h1, id);

        /* As the owner, with a plain id. */
        char id2[128];
        ct_id(id2, sizeof id2, "weird-owner");
        assert_rc(dss_lock(&h1, id2, weird[i]), 0);
        char *o = NULL;
        assert_rc(dss_lock_status(&h2, id2, &o, NULL), 0);
        assert_non_null(o);
        assert_int_equal(strlen(o), strlen(weird[i]));
        assert_memory_equal(o, weird[i], strlen(weird[i]) + 1);
        free(o);
        assert_rc(dss_lock_refresh(&h2, id2, weird[i]), 0);
        assert_rc(dss_unlock(&h1, id2, "plain"), -EACCES);
        assert_rc(dss_unlock(&h1, id2, weird[i]), 0);
        ct_assert_absent(&h2, id2);
    }

    /* The injection attempts did nothing: the table is still there and
     * usable, and ids are compared exactly (no LIKE, no case folding, no
     * trimming, no normalisation). */
    char base[128], other[160];
    ct_id(base, sizeof base, "exact");
    assert_rc(dss_lock(&h1, base, "o"), 0);
    const char *variants[] = {"%", "_", " ", "\t", "\xef\xbf\xbd"};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        snprintf(other, sizeof other, "%s%s", base, variants[i]);
        ct_assert_absent(&h1, other);
    }
    snprintf(other, sizeof other, "%.*s%%", (int)strlen(base) - 1, base);
    ct_assert_absent(&h1, other); /* "prefi%" does not match "prefix" */
    snprintf(other, sizeof other, "%.*s_", (int)strlen(base) - 1, base);
    ct_assert_absent(&h1, other);
    snprintf(other, sizeof other, "%s", base);
    other[0] = (char)(other[0] - 32); /* "Test_api..." */
    ct_assert_absent(&h1, other);
    ct_assert_held(&h2, base, "o");
    assert_rc(dss_unlock(&h1, base, "o"), 0);

    /* Precomposed and decomposed "é" are different ids. */
    char nfc[160], nfd[300];
    ct_id(nfc, 100, "nf:");
    snprintf(nfd, sizeof nfd, "%se\xcc\x81", nfc);
    strcat(nfc, "\xc3\xa9");
    assert_rc(dss_lock(&h1, nfc, "o"), 0);
    ct_assert_absent(&h1, nfd);
    assert_rc(dss_lock(&h1, nfd, "o2"), 0);
    ct_assert_held(&h2, nfc, "o");
    ct_assert_held(&h2, nfd, "o2");
    assert_rc(dss_unlock(&h1, nfc, NULL), 0);
    assert_rc(dss_unlock(&h1, nfd, NULL), 0);
}

/* s of exactly len bytes: prefix then filler (filler is repeated whole;
 * single bytes pad the gap before it). */
static char *make_len(const char *prefix, size_t len, const char *filler)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    size_t pl = strlen(prefix), fl = strlen(filler);
    assert_true(pl <= len);
    memcpy(s, prefix, pl);
    size_t i = pl;
    while ((len - i) % fl != 0)
        s[i++] = 'p';
    while (i < len) {
        memcpy(s + i, filler, fl);
        i += fl;
    }
    s[len] = '\0';
    assert_int_equal(strlen(s), len);
    return s;
}

static void test_length_limits(void **state)
{
    (void)state;
    char prefix[128];
    const char *emoji = "\xf0\x9f\x94\x92"; /* 4 bytes */

    for (int multibyte = 0; multibyte <= 1; multibyte++) {
        const char *fill = multibyte ? emoji : "a";
        ct_id(prefix, sizeof prefix, "maxid:");
        char *id = make_len(prefix, DSS_MAX_LOCK_ID_LEN, fill);
        char *id_long = make_len(prefix, DSS_MAX_LOCK_ID_LEN + (multibyte ? 4 : 1), fill);
        char *owner = make_len("own:", DSS_MAX_LOCK_OWNER_LEN, fill);
        char *owner_long = make_len("own:", DSS_MAX_LOCK_OWNER_LEN + (multibyte ? 4 : 1), fill);

        /* Exactly at the limits: accepted, stored and returned whole. */
        assert_rc(dss_lock(&h1, id, owner), 0);
        char *o = NULL;
        assert_rc(dss_lock_status(&h2, id, &o, NULL), 0);
        assert_non_null(o);
        assert_int_equal(strlen(o), DSS_MAX_LOCK_OWNER_LEN);
        assert_string_equal(o, owner);
        free(o);
        assert_rc(dss_lock_refresh(&h2, id, owner), 0);

        /* One byte (or character) more: -EINVAL, for every call. */
        assert_rc(dss_lock(&h1, id_long, owner), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "lock_id"));
        assert_rc(dss_lock_refresh(&h1, id_long, owner), -EINVAL);
        assert_rc(dss_unlock(&h1, id_long, owner), -EINVAL);
        assert_rc(dss_unlock(&h1, id_long, NULL), -EINVAL);
        assert_rc(dss_lock_status(&h1, id_long, NULL, NULL), -EINVAL);
        assert_rc(dss_lock_refresh(&h1, id, owner_long), -EINVAL);
        assert_true(ct_contains(dss_last_error(), "lock_owner"));
        assert_rc(dss_unlock(&h1, id, owner_long), -EINVAL);
        ct_assert_held(&h2, id, owner); /* untouched */

        char id2[128];
        ct_id(id2, sizeof id2, "maxowner");
        assert_rc(dss_lock(&h1, id2, owner_long), -EINVAL);
        ct_assert_absent(&h2, id2);

        assert_rc(dss_unlock(&h2, id, owner), 0);
        ct_assert_absent(&h1, id);
        free(id);
        free(id_long);
        free(owner);
        free(owner_long);
    }
}

/* Strings that end right before an unmapped page: the library reads up to
 * the terminating NUL and no further (a fixed-size read of
 * DSS_MAX_LOCK_ID_LEN + 1 bytes would crash here). */
static void test_strings_at_page_end(void **state)
{
    (void)state;
    long page = sysconf(_SC_PAGESIZE);
    size_t span = (size_t)page * 2;
    assert_true(span >= DSS_MAX_LOCK_ID_LEN + 2);
    char *mem = mmap(NULL, span + (size_t)page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(mprotect(mem + span, (size_t)page, PROT_NONE), 0);
    char *end = mem + span; /* first unreadable byte */

    char base[128];
    ct_id(base, sizeof base, "pageend");
    /* A short id and a short owner, each ending at the guard page. */
    size_t bl = strlen(base) + 1;
    char *id = end - bl;
    memcpy(id, base, bl);
    const char *ow = "page-owner";
    char *owner = end - bl - strlen(ow) - 1; /* just before the id */
    memcpy(owner, ow, strlen(ow) + 1);
    assert_rc(dss_lock(&h1, id, owner), 0);
    assert_rc(dss_lock_refresh(&h1, id, owner), 0);
    assert_rc(dss_lock_status(&h1, id, NULL, NULL), 0);
    /* Owner at the very end now. */
    char *owner_end = end - strlen(ow) - 1;
    memmove(owner_end, ow, strlen(ow) + 1);
    char idcopy[128];
    snprintf(idcopy, sizeof idcopy, "%s", base);
    assert_rc(dss_unlock(&h1, idcopy, owner_end), 0);

    /* A maximal id ending at the guard page, and a too long one. */
    char *max_id = end - (DSS_MAX_LOCK_ID_LEN + 1);
    memset(max_id, 'm', DSS_MAX_LOCK_ID_LEN);
    memcpy(max_id, base, strlen(base));
    max_id[DSS_MAX_LOCK_ID_LEN] = '\0';
    assert_rc(dss_lock(&h1, max_id, "o"), 0);
    assert_rc(dss_lock_status(&h1, max_id, NULL, NULL), 0);
    assert_rc(dss_unlock(&h1, max_id, "o"), 0);
    char *long_id = end - (DSS_MAX_LOCK_ID_LEN + 2);
    memset(long_id, 'l', DSS_MAX_LOCK_ID_LEN + 1);
    long_id[DSS_MAX_LOCK_ID_LEN + 1] = '\0';
    assert_rc(dss_lock(&h1, long_id, "o"), -EINVAL);
    munmap(mem, span + (size_t)page);
}

static void test_empty_owner(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "emptyowner");
    assert_rc(dss_lock(&h1, id, ""), 0);
    char *o = NULL;
    assert_rc(dss_lock_status(&h2, id, &o, NULL), 0);
    assert_non_null(o);
    assert_string_equal(o, "");
    free(o);
    assert_rc(dss_lock(&h2, id, ""), -EEXIST);
    assert_rc(dss_lock_refresh(&h2, id, ""), 0);
    assert_rc(dss_lock_refresh(&h2, id, "x"), -EACCES);
    assert_rc(dss_unlock(&h2, id, "x"), -EACCES);
    assert_rc(dss_unlock(&h2, id, ""), 0);
    ct_assert_absent(&h1, id);
}

/* dss_last_error() of a thread that never failed is "". */
static void *fresh_thread_error(void *arg)
{
    const char **out = arg;
    *out = strdup(dss_last_error());
    return NULL;
}

/* Fails once in another thread; returns its message. */
static void *failing_thread(void *arg)
{
    char *id = arg;
    int rc = dss_unlock(&h2, id, "nobody");
    char *msg = malloc(strlen(dss_last_error()) + 32);
    sprintf(msg, "%d|%s", rc, dss_last_error());
    return msg;
}

static void test_last_error(void **state)
{
    (void)state;
    const char *fresh = NULL;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fresh_thread_error, &fresh), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_non_null(fresh);
    assert_string_equal(fresh, "");
    free((void *)fresh);

    char id[128];
    ct_id(id, sizeof id, "lasterror");
    assert_rc(dss_lock_status(&h1, id, NULL, NULL), -ENOLCK);
    const char *e = dss_last_error();
    assert_non_null(e);
    assert_true(strlen(e) > 0);
    assert_true(ct_contains(e, "dss_lock_status"));
    assert_true(ct_contains(e, id));
    assert_true(ct_contains(e, "not exist"));
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", e);

    /* A successful call does not overwrite it, nor free it. */
    assert_rc(dss_lock(&h1, id, "me"), 0);
    assert_rc(dss_lock_status(&h1, id, NULL, NULL), 0);
    assert_string_equal(e, saved);
    assert_string_equal(dss_last_error(), saved);

    /* Per thread: another thread's failure does not change ours. */
    char other_id[128];
    ct_id(other_id, sizeof other_id, "otherthread");
    void *ret = NULL;
    assert_int_equal(pthread_create(&t, NULL, failing_thread, other_id), 0);
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_non_null(ret);
    char expect[64];
    snprintf(expect, sizeof expect, "%d|", -ENOLCK);
    assert_true(strncmp(ret, expect, strlen(expect)) == 0);
    assert_true(ct_contains(ret, other_id));
    free(ret);
    assert_string_equal(dss_last_error(), saved);

    /* The next failure replaces it. */
    assert_rc(dss_lock(&h1, id, "you"), -EEXIST);
    assert_true(ct_contains(dss_last_error(), "already held"));
    assert_false(ct_contains(dss_last_error(), "not exist"));
    assert_rc(dss_unlock(&h1, id, "you"), -EACCES);
    assert_true(ct_contains(dss_last_error(), "'me'"));
    assert_rc(dss_lock(&h1, "", "you"), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "empty"));
    assert_rc(dss_unlock(&h1, id, "me"), 0);
}

static void test_version(void **state)
{
    (void)state;
    const char *v = dss_version();
    assert_non_null(v);
    assert_true(strlen(v) > 0);
    assert_string_equal(v, DSS_PC_VERSION); /* the same as dss.pc's */
    assert_ptr_equal(v, dss_version());      /* static */
}

int main(void)
{
    if (ct_setup("test_api", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_then_eexist),
        cmocka_unit_test(test_refresh),
        cmocka_unit_test(test_unlock),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_weird_strings),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_strings_at_page_end),
        cmocka_unit_test(test_empty_owner),
        cmocka_unit_test(test_last_error),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
