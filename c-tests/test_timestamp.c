/* dss_lock_status() timestamps are Unix epoch time, whatever the client's
 * and the server session's time zones and DST. */
#include "common.h"

#include <stdlib.h>
#include <time.h>

/* Server session time zones to try (odd offsets, DST and not). */
static const char *const server_zones[] = {
    "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Australia/Lord_Howe", "UTC",
};

/* Reads extract(epoch from ts) of a lock with psql, exactly, as sec/usec. */
static void db_epoch(const char *id, int64_t *sec, int64_t *usec)
{
    char sql[512], out[128];
    /* ids here are plain ASCII made by ct_id: no quoting issue. */
    snprintf(sql, sizeof sql,
             "SELECT to_char(extract(epoch from ts), 'FM99999999999990.000000') "
             "FROM dss.locks WHERE id = '%s'",
             id);
    assert_int_equal(ct_psql(ct_conninfo(), sql, out, sizeof out), 0);
    char *dot = strchr(out, '.');
    if (dot == NULL)
        fail_msg("unexpected epoch '%s'", out);
    *dot = '\0';
    *sec = strtoll(out, NULL, 10);
    *usec = strtoll(dot + 1, NULL, 10);
    assert_true(*usec >= 0 && *usec < 1000000);
    if (out[0] == '-' && *usec != 0) { /* -1.5 is -2 s + 500000 us */
        *sec -= 1;
        *usec = 1000000 - *usec;
    }
}

static void open_in_zone(struct dss_handle *h, const char *zone)
{
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo, "%s options='-c TimeZone=%s'", ct_conninfo(), zone);
    ct_open_with(h, conninfo);
}

static void test_lock_time_is_epoch(void **state)
{
    (void)state;
    for (size_t z = 0; z < sizeof server_zones / sizeof server_zones[0]; z++) {
        struct dss_handle h;
        open_in_zone(&h, server_zones[z]);
        char id[128];
        ct_id(id, sizeof id, "now");
        int64_t before = ct_wall_us();
        assert_rc(dss_lock(&h, id, "o"), 0);
        int64_t after = ct_wall_us();
        struct timeval tv = ct_assert_held(&h, id, "o");
        assert_true(tv.tv_usec >= 0 && tv.tv_usec < 1000000);
        int64_t ts = ct_tv_us(&tv);
        /* Same machine, same clock: the database's now() lies between our
         * two readings (1 s of slack for clock granularity). */
        if (ts < before - 1000000 || ts > after + 1000000)
            fail_msg("server zone %s: lock time %lld.%06ld outside [%lld, %lld] us", server_zones[z],
                     (long long)tv.tv_sec, (long)tv.tv_usec, (long long)before, (long long)after);
        /* And exactly what the database stored. */
        int64_t sec, usec;
        db_epoch(id, &sec, &usec);
        assert_int_equal(tv.tv_sec, sec);
        assert_int_equal(tv.tv_usec, usec);

        /* A refresh, same checks. */
        usleep(20000);
        before = ct_wall_us();
        assert_rc(dss_lock_refresh(&h, id, "o"), 0);
        after = ct_wall_us();
        struct timeval tv2 = ct_assert_held(&h, id, "o");
        assert_true(ct_tv_us(&tv2) > ts);
        assert_true(ct_tv_us(&tv2) >= before - 1000000 && ct_tv_us(&tv2) <= after + 1000000);
        db_epoch(id, &sec, &usec);
        assert_int_equal(tv2.tv_sec, sec);
        assert_int_equal(tv2.tv_usec, usec);
        assert_rc(dss_unlock(&h, id, "o"), 0);
        dss_fini(&h);
    }
}

/* Fixed timestamps written directly in the table, read back exactly. */
struct fixed {
    const char *session_zone; /* TimeZone of the psql session that inserts */
    const char *literal;      /* timestamptz literal */
    int64_t sec, usec;        /* expected epoch */
};

static const struct fixed fixed[] = {
    /* Summer (CEST, DST) and winter (CET) with explicit offsets. */
    {"UTC", "2021-07-01 12:00:00.123456+02", 1625133600, 123456},
    {"UTC", "2021-01-01 12:00:00+01", 1609498800, 0},
    /* The same instants, written as local Paris time. */
    {"Europe/Paris", "2021-07-01 12:00:00.123456", 1625133600, 123456},
    {"Europe/Paris", "2021-01-01 12:00:00", 1609498800, 0},
    /* Around the 2021 DST switches in Paris (28 March 01:00 UTC, 31 October
     * 01:00 UTC). */
    {"UTC", "2021-03-28 00:59:59.999999+00", 1616893199, 999999},
    {"UTC", "2021-03-28 01:00:00+00", 1616893200, 0},
    {"UTC", "2021-10-31 02:30:00+02", 1635640200, 0}, /* first 02:30 */
    {"UTC", "2021-10-31 02:30:00+01", 1635643800, 0}, /* second 02:30 */
    /* Epoch, before it, after 2038, microsecond extremes. */
    {"UTC", "1970-01-01 00:00:00+00", 0, 0},
    {"UTC", "1969-12-31 23:59:58.5+00", -2, 500000},
    {"UTC", "1960-06-15 08:00:00.000001+00", -301248000, 1},
    {"America/New_York", "2038-01-19 03:14:08+00", 2147483648LL, 0},
    {"UTC", "2100-02-28 23:59:59.999999+00", 4107542399LL, 999999},
    {"Asia/Kolkata", "2000-01-01 05:30:00", 946684800, 0},
};

static void test_fixed_timestamps(void **state)
{
    (void)state;
    size_t n = sizeof fixed / sizeof fixed[0];
    char ids[sizeof fixed / sizeof fixed[0]][128];
    char sql[4096];
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "fixed%zu", i);
        ct_id(ids[i], sizeof ids[i], tag);
        len += (size_t)snprintf(sql + len, sizeof sql - len,
                                "SET TimeZone = '%s'; INSERT INTO dss.locks (id, owner, ts) "
                                "VALUES ('%s', 'fixed', '%s'); ",
                                fixed[i].session_zone, ids[i], fixed[i].literal);
        assert_true(len < sizeof sql);
    }
    assert_int_equal(ct_psql(ct_conninfo(), sql, NULL, 0), 0);

    for (size_t z = 0; z < sizeof server_zones / sizeof server_zones[0]; z++) {
        struct dss_handle h;
        open_in_zone(&h, server_zones[z]);
        for (size_t i = 0; i < n; i++) {
            struct timeval tv = ct_assert_held(&h, ids[i], "fixed");
            if (tv.tv_sec != fixed[i].sec || tv.tv_usec != fixed[i].usec)
                fail_msg("'%s' (inserted in %s) read in server zone %s, client TZ %s: "
                         "%lld.%06ld, expected %lld.%06lld",
                         fixed[i].literal, fixed[i].session_zone, server_zones[z],
                         getenv("TZ"), (long long)tv.tv_sec, (long)tv.tv_usec,
                         (long long)fixed[i].sec, (long long)fixed[i].usec);
            /* The database agrees with the expected values. */
            if (z == 0) {
                int64_t sec, usec;
                db_epoch(ids[i], &sec, &usec);
                assert_int_equal(sec, fixed[i].sec);
                assert_int_equal(usec, fixed[i].usec);
            }
        }
        dss_fini(&h);
    }
    struct dss_handle h;
    ct_open(&h);
    for (size_t i = 0; i < n; i++) {
        /* A refresh brings an old lock to now. */
        if (i == 0) {
            int64_t before = ct_wall_us();
            assert_rc(dss_lock_refresh(&h, ids[i], "fixed"), 0);
            struct timeval tv = ct_assert_held(&h, ids[i], "fixed");
            assert_true(ct_tv_us(&tv) >= before - 1000000);
        }
        assert_rc(dss_unlock(&h, ids[i], "fixed"), 0);
    }
    dss_fini(&h);
}

/* The client's TZ does not matter either: change it between calls. */
static void test_client_zone_irrelevant(void **state)
{
    (void)state;
    struct dss_handle h;
    ct_open(&h);
    char id[128];
    ct_id(id, sizeof id, "clientzone");
    assert_rc(dss_lock(&h, id, "o"), 0);
    const char *zones[] = {"Europe/Paris", "America/Los_Angeles", "Asia/Tokyo", "UTC"};
    struct timeval first = ct_assert_held(&h, id, "o");
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        setenv("TZ", zones[i], 1);
        tzset();
        struct timeval tv = ct_assert_held(&h, id, "o");
        assert_int_equal(tv.tv_sec, first.tv_sec);
        assert_int_equal(tv.tv_usec, first.tv_usec);
    }
    setenv("TZ", "Europe/Paris", 1);
    tzset();
    assert_rc(dss_unlock(&h, id, "o"), 0);
    dss_fini(&h);
}

int main(void)
{
    /* The client in Paris (DST in summer). */
    setenv("TZ", "Europe/Paris", 1);
    tzset();
    if (ct_setup("test_timestamp", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_time_is_epoch),
        cmocka_unit_test(test_fixed_timestamps),
        cmocka_unit_test(test_client_zone_irrelevant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
