/* Shared helpers of the libdss C integration tests. */
#ifndef DSS_CTEST_COMMON_H
#define DSS_CTEST_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>
#include <dss.h>

/* Name of an errno value ("EEXIST"), or "?"; accepts negative values. */
const char *ct_errname(int rc);

/* Call once from main(): records the test name (used in lock ids), and
 * checks that DSS_TEST_CONNINFO is set and the database reachable when
 * need_db is true. Returns 0, or prints why and returns 1 (the test then
 * fails: main returns it). */
int ct_setup(const char *test_name, int need_db);

/* DSS_TEST_CONNINFO (ct_setup made sure it is set). */
const char *ct_conninfo(void);

/* Writes a lock id unique to this test, process and call into buf:
 * "<test>.<pid>.<n>.<tag>". */
void ct_id(char *buf, size_t size, const char *tag);

/* Monotonic clock, in ms / s. */
double ct_now_ms(void);

/* Wall clock as microseconds since the epoch. */
int64_t ct_tv_us(const struct timeval *tv);
int64_t ct_wall_us(void);

/* Runs psql on conninfo with one SQL string (-X -q -v ON_ERROR_STOP=1,
 * unaligned tuples only). If out is not NULL, stores stdout (trailing
 * newline removed) there. Returns psql's exit status (0 = success), or -1. */
int ct_psql(const char *conninfo, const char *sql, char *out, size_t outsize);

/* Number of server sessions named `app` (application_name), -1 on error. */
int ct_sessions(const char *conninfo, const char *app);

/* Waits for a child for at most timeout_s seconds; SIGKILLs it on timeout.
 * Returns its exit code (0..255), 128+signal if killed by a signal, or -1
 * on timeout or error. */
int ct_wait_child(pid_t pid, double timeout_s);

/* Runs a command (argv[0] found in PATH) and waits; returns its exit code as
 * ct_wait_child. Its stdout goes to out when not NULL. */
int ct_run(char *const argv[], double timeout_s, char *out, size_t outsize);

/* Opens a handle on DSS_TEST_CONNINFO (or the given conninfo); cmocka
 * failure if that fails. */
void ct_open(struct dss_handle *h);
void ct_open_with(struct dss_handle *h, const char *conninfo);

/* group_setup / group_teardown for a test file whose tests share one
 * handle `h`, opened on DSS_TEST_CONNINFO. */
#define CT_GROUP_WITH_HANDLE(h)                                                                    \
    static int group_setup(void **state)                                                           \
    {                                                                                              \
        (void)state;                                                                               \
        ct_open(&(h));                                                                             \
        return 0;                                                                                  \
    }                                                                                              \
    static int group_teardown(void **state)                                                        \
    {                                                                                              \
        (void)state;                                                                               \
        dss_fini(&(h));                                                                            \
        return 0;                                                                                  \
    }

/* The same with two handles `a` and `b`: two clients of one database. */
#define CT_GROUP_WITH_TWO_HANDLES(a, b)                                                            \
    static int group_setup(void **state)                                                           \
    {                                                                                              \
        (void)state;                                                                               \
        ct_open(&(a));                                                                             \
        ct_open(&(b));                                                                             \
        return 0;                                                                                  \
    }                                                                                              \
    static int group_teardown(void **state)                                                        \
    {                                                                                              \
        (void)state;                                                                               \
        dss_fini(&(a));                                                                            \
        dss_fini(&(b));                                                                            \
        return 0;                                                                                  \
    }

/* Asserts that a libdss call returned exactly `expected`, printing both
 * errno names and dss_last_error() otherwise. For the test's main thread
 * only (cmocka's longjmp). */
#define assert_rc(call, expected)                                                        \
    do {                                                                                 \
        int ct_rc_ = (call);                                                             \
        int ct_exp_ = (expected);                                                        \
        if (ct_rc_ != ct_exp_)                                                           \
            fail_msg("%s = %d (%s), expected %d (%s); dss_last_error: %s", #call, ct_rc_,  \
                     ct_errname(ct_rc_), ct_exp_, ct_errname(ct_exp_), dss_last_error());  \
    } while (0)

/* For threads and forked children, where cmocka asserts must not be used:
 * counts and prints a failure, evaluates to the condition. */
extern atomic_int ct_soft_failures;
#define CHECK(cond)                                                                      \
    ((cond) ? 1                                                                          \
            : (fprintf(stderr, "%s:%d: [pid %ld] CHECK failed: %s (dss_last_error: %s)\n", \
                       __FILE__, __LINE__, (long)getpid(), #cond, dss_last_error()),       \
               atomic_fetch_add(&ct_soft_failures, 1), 0))
#define CHECK_RC(call, expected)                                                         \
    ct_check_rc(__FILE__, __LINE__, #call, (call), (expected))
int ct_check_rc(const char *file, int line, const char *what, int rc, int expected);

/* Asserts that the lock exists with this owner; returns its timestamp. */
struct timeval ct_assert_held(struct dss_handle *h, const char *id, const char *owner);

/* Asserts dss_lock_status() == -ENOLCK for id. */
void ct_assert_absent(struct dss_handle *h, const char *id);

/* Does s contain needle? */
int ct_contains(const char *s, const char *needle);

/* ---- helpers for leases, waiting and batches (test_lease, test_wait,
 * test_batch) ---- */

/* Runs an SQL query returning one integer through ct_psql on conninfo;
 * stores it in *value. Returns 0, or -1 (psql failed or no integer). */
int ct_psql_ll(const char *conninfo, const char *sql, long long *value);

/* Writes s into buf as an SQL string literal ('...' with quotes doubled).
 * Aborts if buf is too small. */
void ct_sql_literal(char *buf, size_t size, const char *s);

/* Makes the lease of lock `id` expire now, as time would:
 *   UPDATE dss.locks SET expires_at = now() - interval '1 millisecond'
 * Returns the number of rows updated (1 if the lock exists), -1 on error. */
int ct_expire(const char *id);

/* Polls (psql, every few ms) until the integer query `sql` gives a value
 * >= min, for at most timeout_s seconds. Returns 0 when reached, -1 on
 * timeout or error; the last value seen goes to *last if not NULL. */
int ct_poll_at_least(const char *conninfo, const char *sql, long long min, double timeout_s,
                     long long *last);

/* Number of dss_lock_wait() callers queued on `id` (rows of
 * dss.lock_waiters), -1 on error. */
long long ct_waiters(const char *id);

/* Sleeps ms milliseconds (restarted after a signal): the time a scenario
 * needs to pass, or the pause between two polls; never a synchronisation. */
void ct_nap_ms(double ms);

/* Polls until at least n requests are queued on `id` (dss.lock_waiters),
 * for at most timeout_s seconds: 0, or -1 (with a message) on timeout. */
int ct_await_waiters(const char *id, long long n, double timeout_s);

/* Zeroed memory shared with forked children (cmocka failure if mmap fails). */
void *ct_shared(size_t size);

/* Initialises a barrier usable across processes (in ct_shared memory). */
void ct_shared_barrier(pthread_barrier_t *b, unsigned count);

/* Forks two children running child(arg, k) for k = 0 and 1 (its return
 * value is the exit code), waits at most timeout_s for each (SIGKILLing the
 * other if one fails, as it may wait at a shared barrier), and asserts both
 * exited with 0. */
void ct_run_two_children(int (*child)(void *arg, int k), void *arg, double timeout_s);

/* 1 if the lease of lock `id` runs from its last refresh (expires_at = ts +
 * ttl and ts > locked_at), 0 if not, -1 on error. */
long long ct_lease_runs_from_refresh(const char *id);

/* ---- private databases and snapshots (test_badinput) ---- */

/* Writes into buf the conninfo of DSS_TEST_CONNINFO's server with database
 * dbname instead (aborts if buf is too small). */
void ct_conninfo_for_db(char *buf, size_t size, const char *dbname);

/* (Re)creates database dbname on the test server with the schema of the
 * migrations sql_dir/[0-9]*.sql, and writes its conninfo into conninfo.
 * Returns 0, or -1 with a message. */
int ct_create_db(const char *dbname, const char *sql_dir, char *conninfo, size_t size);

/* Drops database dbname (WITH (FORCE): its sessions are ended). 0 or -1. */
int ct_drop_db(const char *dbname);

/* Allows (allow = 1) or refuses (0) new sessions to database dbname; when
 * refusing, also ends its current sessions and waits until they are gone,
 * so that any later attempt to talk to that database fails. 0 or -1. */
int ct_db_allow_connections(const char *dbname, int allow);

/* A fingerprint of everything in schema dss of the database at conninfo:
 * "table=rows:md5 ... sequence=last_value,is_called ...", ordered by name.
 * Two equal fingerprints mean equal contents. Returns 0, or psql's failure
 * status. */
int ct_db_snapshot(const char *conninfo, char *out, size_t size);

#endif
