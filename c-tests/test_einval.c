/* Every -EINVAL case of dss.h, each checking that nothing was written. */
#include "common.h"

#include <stdlib.h>

static struct dss_handle h;     /* a good handle, to look at the database */
static char held[128];          /* a lock held by "keeper" during the tests */
static struct timeval held_ts;  /* its timestamp */

static int group_setup(void **state)
{
    (void)state;
    ct_open(&h);
    ct_id(held, sizeof held, "held");
    assert_rc(dss_lock(&h, held, "keeper"), 0);
    held_ts = ct_assert_held(&h, held, "keeper");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dss_unlock(&h, held, NULL);
    dss_fini(&h);
    return 0;
}

/* The held lock is still there, same owner and same timestamp. */
static void assert_held_unchanged(void)
{
    struct timeval ts = ct_assert_held(&h, held, "keeper");
    assert_int_equal(ts.tv_sec, held_ts.tv_sec);
    assert_int_equal(ts.tv_usec, held_ts.tv_usec);
}

/* All four calls on a bad handle: -EINVAL, nothing written, no output. */
static void all_calls_einval(struct dss_handle *bad, const char *why)
{
    char fresh[128];
    ct_id(fresh, sizeof fresh, "fresh");
    assert_rc(dss_lock(bad, fresh, "o"), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "handle"));
    ct_assert_absent(&h, fresh);
    assert_rc(dss_lock(bad, held, "o"), -EINVAL);
    assert_rc(dss_lock_refresh(bad, held, "keeper"), -EINVAL);
    assert_rc(dss_unlock(bad, held, "keeper"), -EINVAL);
    assert_rc(dss_unlock(bad, held, NULL), -EINVAL);
    char sentinel;
    char *owner = &sentinel;
    struct timeval tv = {777, 888};
    assert_rc(dss_lock_status(bad, held, &owner, &tv), -EINVAL);
    assert_ptr_equal(owner, &sentinel);
    assert_int_equal(tv.tv_sec, 777);
    assert_int_equal(tv.tv_usec, 888);
    assert_held_unchanged();
    (void)why;
}

static void test_null_handle(void **state)
{
    (void)state;
    all_calls_einval(NULL, "NULL");
    assert_true(ct_contains(dss_last_error(), "NULL"));
}

static void test_zeroed_handle(void **state)
{
    (void)state;
    struct dss_handle zero = {0};
    all_calls_einval(&zero, "zeroed");
    assert_true(ct_contains(dss_last_error(), "not initialised"));
    assert_null(zero.dh_conn);
}

static void test_garbage_handle(void **state)
{
    (void)state;
    struct dss_handle garbage = {(void *)0x1234};
    all_calls_einval(&garbage, "0x1234");
    assert_ptr_equal(garbage.dh_conn, (void *)0x1234);
    /* Pointing to readable memory that is not a handle. */
    static char not_a_handle[256] = "not a handle";
    struct dss_handle fake = {not_a_handle};
    all_calls_einval(&fake, "fake");
    struct dss_handle odd = {(void *)((uintptr_t)h.dh_conn + 8)}; /* inside a real one */
    all_calls_einval(&odd, "odd");
    struct dss_handle one = {(void *)1};
    all_calls_einval(&one, "1");
    struct dss_handle high = {(void *)~(uintptr_t)0};
    all_calls_einval(&high, "~0");
    /* dss_fini ignores them (and clears dh_conn). */
    dss_fini(&garbage);
    assert_null(garbage.dh_conn);
    dss_fini(&fake);
    dss_fini(&odd);
    dss_fini(&one);
    dss_fini(&high);
    assert_held_unchanged(); /* the real handle still works */
}

static void test_after_fini(void **state)
{
    (void)state;
    struct dss_handle h2 = {0};
    ct_open(&h2);
    char id[128];
    ct_id(id, sizeof id, "fini");
    assert_rc(dss_lock(&h2, id, "o"), 0);
    assert_rc(dss_unlock(&h2, id, "o"), 0);
    struct dss_handle copy = h2; /* a stale copy of the pointer */
    dss_fini(&h2);
    assert_null(h2.dh_conn);
    all_calls_einval(&h2, "finalised");
    all_calls_einval(&copy, "stale copy");
    assert_true(ct_contains(dss_last_error(), "finalised"));
    /* dss_fini again, on NULL, on a zeroed handle: harmless. */
    dss_fini(&h2);
    dss_fini(&h2);
    dss_fini(NULL);
    struct dss_handle zero = {0};
    dss_fini(&zero);
    assert_null(zero.dh_conn);
    /* A finalised handle can be initialised again. */
    ct_open(&h2);
    assert_rc(dss_lock(&h2, id, "o"), 0);
    assert_rc(dss_unlock(&h2, id, "o"), 0);
    dss_fini(&h2);
    assert_held_unchanged();
}

/* lock_id NULL, empty, too long: -EINVAL for the four calls. */
static void bad_id_all_calls(const char *bad_id, const char *msg_part)
{
    assert_rc(dss_lock(&h, bad_id, "keeper"), -EINVAL);
    if (msg_part)
        assert_true(ct_contains(dss_last_error(), msg_part));
    assert_true(ct_contains(dss_last_error(), "lock_id"));
    assert_rc(dss_lock_refresh(&h, bad_id, "keeper"), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "lock_id"));
    assert_rc(dss_unlock(&h, bad_id, "keeper"), -EINVAL);
    assert_rc(dss_unlock(&h, bad_id, NULL), -EINVAL);
    char sentinel;
    char *owner = &sentinel;
    struct timeval tv = {777, 888};
    assert_rc(dss_lock_status(&h, bad_id, &owner, &tv), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "lock_id"));
    assert_ptr_equal(owner, &sentinel);
    assert_int_equal(tv.tv_sec, 777);
    assert_int_equal(tv.tv_usec, 888);
    assert_held_unchanged();
}

static void test_null_and_empty_id(void **state)
{
    (void)state;
    bad_id_all_calls(NULL, "NULL");
    bad_id_all_calls("", "empty");
}

static void test_id_too_long(void **state)
{
    (void)state;
    char *id = malloc(DSS_MAX_LOCK_ID_LEN + 2);
    assert_non_null(id);
    /* held + padding: if it were truncated to 2048 bytes instead of refused,
     * the prefix would be locked. */
    memset(id, 'x', DSS_MAX_LOCK_ID_LEN + 1);
    memcpy(id, held, strlen(held));
    id[DSS_MAX_LOCK_ID_LEN + 1] = '\0';
    bad_id_all_calls(id, "longer");
    id[DSS_MAX_LOCK_ID_LEN] = '\0';
    ct_assert_absent(&h, id); /* nothing stored under the truncated id */
    free(id);

    /* A huge one too (the library must not read it all). */
    size_t big = 1 << 20;
    id = malloc(big + 1);
    assert_non_null(id);
    memset(id, 'y', big);
    id[big] = '\0';
    bad_id_all_calls(id, "longer");
    free(id);
}

/* The owner argument: NULL (lock, refresh), too long, not UTF-8. */
static void test_null_owner(void **state)
{
    (void)state;
    char id[128];
    ct_id(id, sizeof id, "nullowner");
    assert_rc(dss_lock(&h, id, NULL), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "lock_owner"));
    ct_assert_absent(&h, id);
    assert_rc(dss_lock_refresh(&h, held, NULL), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "lock_owner"));
    assert_held_unchanged();
}

static void bad_owner_all_calls(const char *bad_owner, const char *msg_part)
{
    char id[128];
    ct_id(id, sizeof id, "badowner");
    assert_rc(dss_lock(&h, id, bad_owner), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "lock_owner"));
    assert_true(ct_contains(dss_last_error(), msg_part));
    ct_assert_absent(&h, id);
    assert_rc(dss_lock_refresh(&h, held, bad_owner), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "lock_owner"));
    assert_rc(dss_unlock(&h, held, bad_owner), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "lock_owner"));
    /* Also when the lock does not exist (not -ENOLCK: checked first). */
    assert_rc(dss_lock_refresh(&h, id, bad_owner), -EINVAL);
    assert_rc(dss_unlock(&h, id, bad_owner), -EINVAL);
    assert_held_unchanged();
}

static void test_owner_too_long(void **state)
{
    (void)state;
    char owner[DSS_MAX_LOCK_OWNER_LEN + 2];
    memset(owner, 'k', sizeof owner - 1);
    memcpy(owner, "keeper", 6); /* truncation would make it "keeper" + k's */
    owner[DSS_MAX_LOCK_OWNER_LEN + 1] = '\0';
    bad_owner_all_calls(owner, "longer");
}

/* Invalid UTF-8 sequences, alone and after a valid prefix. */
static const char *const bad_utf8[] = {
    "\xff\xfe",             /* never valid bytes */
    "\xc0\xaf",             /* overlong "/" */
    "\xe0\x80\xaf",         /* overlong "/", 3 bytes */
    "\x80",                 /* lone continuation byte */
    "a\xbf" "b",            /* continuation byte in the middle */
    "\xe2\x82",             /* truncated sequence */
    "\xc3",                 /* truncated at the end */
    "\xed\xa0\x80",         /* UTF-16 surrogate D800 */
    "\xf4\x90\x80\x80",     /* beyond U+10FFFF */
    "\xf8\x88\x80\x80\x80", /* 5-byte form */
    "\xfe",
};
#define N_BAD_UTF8 (sizeof bad_utf8 / sizeof bad_utf8[0])

static void test_invalid_utf8_id(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_BAD_UTF8; i++) {
        bad_id_all_calls(bad_utf8[i], "UTF-8");
        /* With a valid prefix; a lossy conversion (U+FFFD) or truncation at
         * the first bad byte would create a lock under another id. */
        char id[256], lossy[300];
        ct_id(id, 128, "utf8id:");
        snprintf(lossy, sizeof lossy, "%s\xef\xbf\xbd", id);
        char truncated[256];
        snprintf(truncated, sizeof truncated, "%s", id);
        strcat(id, bad_utf8[i]);
        bad_id_all_calls(id, "UTF-8");
        ct_assert_absent(&h, lossy);
        ct_assert_absent(&h, truncated);
        /* A held lock whose id is the lossy version: refresh / unlock by the
         * invalid id must not reach it. */
        assert_rc(dss_lock(&h, lossy, "keeper"), 0);
        assert_rc(dss_lock_refresh(&h, id, "keeper"), -EINVAL);
        assert_rc(dss_unlock(&h, id, "keeper"), -EINVAL);
        assert_rc(dss_unlock(&h, id, NULL), -EINVAL);
        ct_assert_held(&h, lossy, "keeper");
        assert_rc(dss_unlock(&h, lossy, "keeper"), 0);
    }
}

static void test_invalid_utf8_owner(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_BAD_UTF8; i++) {
        bad_owner_all_calls(bad_utf8[i], "UTF-8");
        char owner[64];
        snprintf(owner, sizeof owner, "keeper%s", bad_utf8[i]);
        bad_owner_all_calls(owner, "UTF-8");
        /* A lock held by the lossy version of that owner is not refreshed
         * or released by the invalid one. */
        char id[128], lossy[64];
        ct_id(id, sizeof id, "utf8owner");
        snprintf(lossy, sizeof lossy, "keeper\xef\xbf\xbd");
        assert_rc(dss_lock(&h, id, lossy), 0);
        struct timeval t0 = ct_assert_held(&h, id, lossy);
        assert_rc(dss_lock_refresh(&h, id, owner), -EINVAL);
        assert_rc(dss_unlock(&h, id, owner), -EINVAL);
        struct timeval t1 = ct_assert_held(&h, id, lossy);
        assert_int_equal(ct_tv_us(&t0), ct_tv_us(&t1));
        assert_rc(dss_unlock(&h, id, lossy), 0);
    }
}

static void test_init_einval(void **state)
{
    (void)state;
    assert_rc(dss_init(NULL), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "NULL"));
    assert_rc(dss_init_conninfo(NULL, ct_conninfo()), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "NULL"));

    struct dss_handle h2 = {0};
    assert_rc(dss_init_conninfo(&h2, NULL), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "conninfo"));
    assert_null(h2.dh_conn);
    assert_rc(dss_lock(&h2, held, "x"), -EINVAL); /* still not usable */

    /* A conninfo that is not UTF-8. */
    char bad[512];
    snprintf(bad, sizeof bad, "%s application_name=\xff\xfe", ct_conninfo());
    assert_rc(dss_init_conninfo(&h2, bad), -EINVAL);
    assert_true(ct_contains(dss_last_error(), "UTF-8"));
    assert_null(h2.dh_conn);
    assert_held_unchanged();
}

/* "filled on success, dh_conn set to NULL on failure": also when the
 * failure is a NULL or non-UTF-8 conninfo (every case is tried, then all
 * that failed are reported together). */
static void test_init_einval_clears_handle(void **state)
{
    (void)state;
    struct {
        const char *what;
        const char *conninfo;
    } cases[] = {
        {"NULL conninfo", NULL},
        {"non-UTF-8 conninfo", "host=/tmp \xff"},
        {"bad conninfo syntax", "nosuchkey=1"},
        {"unreachable server", "host=/nonexistent/dir port=5432 dbname=dss"},
    };
    char report[1024] = "";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dss_handle h2 = {(void *)0x1234};
        int rc = dss_init_conninfo(&h2, cases[i].conninfo);
        assert_true(rc < 0);
        if (h2.dh_conn != NULL) {
            size_t len = strlen(report);
            snprintf(report + len, sizeof report - len,
                     "%s: dss_init_conninfo = %d (%s) left dh_conn = %p; ", cases[i].what, rc,
                     ct_errname(rc), h2.dh_conn);
        }
    }
    if (report[0] != '\0')
        fail_msg("dh_conn not set to NULL on failure: %s", report);
}

static void test_ealready(void **state)
{
    (void)state;
    struct dss_handle h2 = {0};
    ct_open(&h2);
    void *before = h2.dh_conn;
    assert_rc(dss_init_conninfo(&h2, ct_conninfo()), -EALREADY);
    assert_true(ct_contains(dss_last_error(), "already"));
    assert_ptr_equal(h2.dh_conn, before);
    /* dss_init (connection string from the environment) too, even if none
     * is configured: the handle is checked first. */
    setenv("PHOBOS_DSS_connect_string", ct_conninfo(), 1);
    assert_rc(dss_init(&h2), -EALREADY);
    unsetenv("PHOBOS_DSS_connect_string");
    setenv("PHOBOS_CFG_FILE", "/nonexistent/phobos.conf", 1);
    assert_rc(dss_init(&h2), -EALREADY);
    unsetenv("PHOBOS_CFG_FILE");
    assert_ptr_equal(h2.dh_conn, before);
    /* Even with a bad conninfo. */
    assert_rc(dss_init_conninfo(&h2, "host=/nonexistent/dir"), -EALREADY);
    assert_ptr_equal(h2.dh_conn, before);
    /* The handle still works. */
    char id[128];
    ct_id(id, sizeof id, "ealready");
    assert_rc(dss_lock(&h2, id, "o"), 0);
    ct_assert_held(&h, id, "o");
    assert_rc(dss_unlock(&h2, id, "o"), 0);
    /* The shared handle too, for good measure. */
    assert_rc(dss_init_conninfo(&h, ct_conninfo()), -EALREADY);
    assert_held_unchanged();
    dss_fini(&h2);
    assert_null(h2.dh_conn);
}

int main(void)
{
    if (ct_setup("test_einval", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_handle),
        cmocka_unit_test(test_zeroed_handle),
        cmocka_unit_test(test_garbage_handle),
        cmocka_unit_test(test_after_fini),
        cmocka_unit_test(test_null_and_empty_id),
        cmocka_unit_test(test_id_too_long),
        cmocka_unit_test(test_null_owner),
        cmocka_unit_test(test_owner_too_long),
        cmocka_unit_test(test_invalid_utf8_id),
        cmocka_unit_test(test_invalid_utf8_owner),
        cmocka_unit_test(test_init_einval),
        cmocka_unit_test(test_init_einval_clears_handle),
        cmocka_unit_test(test_ealready),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
