/* dss_lock_status() returns -ENOMEM, writing nothing, when the owner copy
 * cannot be allocated. malloc is interposed by this executable (exported
 * with ENABLE_EXPORTS, so libdss's malloc calls resolve here); it fails
 * only for one size, only in the armed thread. */
#include "common.h"

#include <stdlib.h>

#define OWNER_LEN 211 /* unusual: malloc(212) is the owner copy only */

extern void *__libc_malloc(size_t n);

static _Thread_local int armed;          /* only the test's thread fails */
static volatile size_t fail_size;        /* 0: never fail */
static atomic_int failed_allocations;
static atomic_long seen_allocations;

void *malloc(size_t n)
{
    if (armed) {
        atomic_fetch_add(&seen_allocations, 1);
        if (n == fail_size && n != 0) {
            atomic_fetch_add(&failed_allocations, 1);
            errno = ENOMEM;
            return NULL;
        }
    }
    return __libc_malloc(n);
}

static struct dss_handle h;
CT_GROUP_WITH_HANDLE(h)

static void test_interposition_works(void **state)
{
    (void)state;
    /* Our own malloc is the one called, and the library's calls arrive here
     * too (a status call allocates). */
    armed = 1;
    atomic_store(&seen_allocations, 0);
    fail_size = 12345;
    void *p = malloc(12345);
    fail_size = 0;
    armed = 0;
    assert_null(p);
    assert_int_equal(atomic_load(&failed_allocations), 1);
    atomic_store(&failed_allocations, 0);

    char id[128], owner[OWNER_LEN + 1];
    ct_id(id, sizeof id, "interpose");
    memset(owner, 'o', OWNER_LEN);
    owner[OWNER_LEN] = '\0';
    assert_rc(dss_lock(&h, id, owner), 0);
    atomic_store(&seen_allocations, 0);
    armed = 1;
    char *o = NULL;
    int rc = dss_lock_status(&h, id, &o, NULL);
    armed = 0;
    assert_rc(rc, 0);
    assert_true(atomic_load(&seen_allocations) >= 1);
    assert_string_equal(o, owner);
    free(o);
    assert_rc(dss_unlock(&h, id, owner), 0);
}

static void test_status_enomem(void **state)
{
    (void)state;
    char id[128], owner[OWNER_LEN + 1];
    ct_id(id, sizeof id, "nomem");
    memset(owner, 'w', OWNER_LEN);
    memcpy(owner, "owner:", 6);
    owner[OWNER_LEN] = '\0';
    assert_rc(dss_lock(&h, id, owner), 0);
    struct timeval real_ts = ct_assert_held(&h, id, owner);

    char sentinel;
    char *o = &sentinel;
    struct timeval tv = {4242, 4343};
    atomic_store(&failed_allocations, 0);
    fail_size = OWNER_LEN + 1;
    armed = 1;
    int rc = dss_lock_status(&h, id, &o, &tv);
    armed = 0;
    fail_size = 0;
    assert_rc(rc, -ENOMEM);
    assert_int_equal(atomic_load(&failed_allocations), 1);
    assert_true(ct_contains(dss_last_error(), "dss_lock_status"));
    assert_true(ct_contains(dss_last_error(), "212"));
    /* Nothing written. */
    assert_ptr_equal(o, &sentinel);
    assert_int_equal(tv.tv_sec, 4242);
    assert_int_equal(tv.tv_usec, 4343);

    /* Without an owner output, no copy is needed: success. */
    atomic_store(&failed_allocations, 0);
    fail_size = OWNER_LEN + 1;
    armed = 1;
    rc = dss_lock_status(&h, id, NULL, &tv);
    armed = 0;
    fail_size = 0;
    assert_rc(rc, 0);
    assert_int_equal(atomic_load(&failed_allocations), 0);
    assert_int_equal(ct_tv_us(&tv), ct_tv_us(&real_ts));

    /* Nothing broke: the lock is intact and status works again. */
    struct timeval ts2 = ct_assert_held(&h, id, owner);
    assert_int_equal(ct_tv_us(&ts2), ct_tv_us(&real_ts));
    assert_rc(dss_unlock(&h, id, owner), 0);
    ct_assert_absent(&h, id);
}

int main(void)
{
    if (ct_setup("test_nomem", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interposition_works),
        cmocka_unit_test(test_status_enomem),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
