/*
 * One process of the fault-injection suite (tests/faults.rs): contends for
 * a few lock ids and one semaphore through the INSTALLED library (built
 * with `pkg-config --cflags --libs dss`), and writes every operation to a
 * history file for the checker. The server is crashed, killed, frozen,
 * cut off or failed over meanwhile; this program never looks behind the
 * library (no SQL of its own): it does what a careful C daemon does.
 *
 * Usage: fault_worker INDEX HISTORY DURATION_MS SEED
 *   The connection string comes from the usual configuration
 *   (PHOBOS_DSS_connect_string), with PHOBOS_DSS_call_timeout_ms etc.
 *   An unknown outcome (-ECOMM) is resolved by asking the same handle
 *   until it answers: its next call first ends the session that was given
 *   up, so a statement stuck in a frozen server cannot take effect after
 *   the answer (README, "Faults and failover").
 *
 * History lines (times: CLOCK_MONOTONIC, ns; rc: the call's return):
 *   acq KIND ID T0 T1 RC TOKEN TTL_MS     an acquisition (RC 0: granted)
 *   res ID T HELD TOKEN                   -ECOMM acquisition resolved
 *   chk ID T0 T1 RC                       the hold checked before release
 *   rel KIND ID T0 T1 RC                  a release
 *   relres ID T HELD                      -ECOMM release resolved
 *   unres ID T                            an unknown outcome not resolved
 * KIND: X dss_lock, L dss_lock_lease, W dss_lock_wait, S dss_lock_shared,
 * M dss_sem_acquire (1 permit of SEM_CAPACITY).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dss.h>

#define LOCK_IDS 2
#define SEM_ID "fault-sem"
#define SEM_CAPACITY 2
#define LEASE_MS 3000
/* How long an unknown outcome may stay unresolved. */
#define RESOLVE_LIMIT_NS (90LL * 1000000000LL)

static FILE *history;
static char owner[64];
static struct dss_handle handle;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void nap_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(history, fmt, ap);
    va_end(ap);
    fputc('\n', history);
    fflush(history);
}

/* Errors after which a call surely did nothing, or a probe may be retried. */
static bool transient(int rc)
{
    return rc == -ECOMM || rc == -ETIMEDOUT || rc == -ENOTCONN || rc == -EROFS ||
           rc == -EUSERS || rc == -EIO;
}

/*
 * Who holds `id` for KIND, as seen now: 1 and *token if this process does,
 * 0 if not, a negative errno if the question could not be answered.
 */
static int holds(char kind, const char *id, uint64_t *token)
{
    if (kind == 'S' || kind == 'M') {
        struct dss_holder *hs = NULL;
        size_t n = 0;
        int rc = kind == 'S' ? dss_lock_holders(&handle, id, &hs, &n)
                             : dss_sem_holders(&handle, id, &hs, &n);
        if (rc == -ENOLCK)
            return 0;
        if (rc != 0)
            return rc;
        int mine = 0;
        for (size_t i = 0; i < n; i++) {
            int m = kind == 'S' ? DSS_MODE_SHARED : DSS_MODE_SEMAPHORE;
            if (strcmp(hs[i].owner, owner) == 0 && hs[i].mode == m) {
                *token = hs[i].token;
                mine = 1;
            }
        }
        dss_holders_free(hs, n);
        return mine;
    }
    struct dss_lock_info info = { 0 };
    int rc = dss_lock_info(&handle, id, &info);
    if (rc == -ENOLCK)
        return 0;
    if (rc != 0)
        return rc;
    int mine = strcmp(info.owner, owner) == 0;
    if (mine)
        *token = info.token;
    dss_lock_info_clear(&info);
    return mine;
}

/* holds(), asked until it answers; -1 (and an `unres` line) at the limit. */
static int resolve(char kind, const char *id, uint64_t *token, int64_t *at)
{
    int64_t deadline = now_ns() + RESOLVE_LIMIT_NS;
    for (;;) {
        int h = holds(kind, id, token);
        *at = now_ns();
        if (h >= 0)
            return h;
        if (*at > deadline) {
            fprintf(stderr, "worker %s: %s unresolved: %d %s\n", owner, id, h, dss_last_error());
            say("unres %s %" PRId64, id, *at);
            return -1;
        }
        nap_ms(10);
    }
}

static int acquire(char kind, const char *id, uint64_t ttl, uint64_t *token)
{
    switch (kind) {
    case 'X': {
        int rc = dss_lock(&handle, id, owner);
        *token = 0;
        return rc;
    }
    case 'L':
        return dss_lock_lease(&handle, id, owner, ttl, token);
    case 'W':
        return dss_lock_wait(&handle, id, owner, ttl, 300, token);
    case 'S':
        return dss_lock_shared(&handle, id, owner, ttl, (rand() & 1) ? 300 : 0, token);
    default:
        return dss_sem_acquire(&handle, id, owner, 1, SEM_CAPACITY, ttl, (rand() & 1) ? 300 : 0,
                               token);
    }
}

static int release(char kind, const char *id)
{
    switch (kind) {
    case 'S':
        return dss_unlock_shared(&handle, id, owner);
    case 'M':
        return dss_sem_release(&handle, id, owner);
    default:
        return dss_unlock(&handle, id, owner);
    }
}

/* Is the hold (kind, id, token) still there? 0 yes, -ESTALE no, or an errno. */
static int check(char kind, const char *id, uint64_t token)
{
    if (kind == 'X' || kind == 'L' || kind == 'W') {
        if (token != 0)
            return dss_lock_check(&handle, id, token);
    }
    uint64_t seen = 0;
    int h = holds(kind, id, &seen);
    if (h < 0)
        return h;
    return h == 1 && (token == 0 || seen == token) ? 0 : -ESTALE;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s INDEX HISTORY DURATION_MS SEED\n", argv[0]);
        return 2;
    }
    int index = atoi(argv[1]);
    int64_t end = now_ns() + atoll(argv[3]) * 1000000LL;
    srand((unsigned)strtoul(argv[4], NULL, 10));
    history = fopen(argv[2], "w");
    if (!history) {
        perror(argv[2]);
        return 2;
    }
    snprintf(owner, sizeof owner, "fault-%d-%d", index, (int)getpid());

    int rc = dss_init(&handle);
    if (rc != 0) {
        fprintf(stderr, "worker %d: dss_init: %d %s\n", index, rc, dss_last_error());
        return 3;
    }
    long grants = 0, unknown = 0;
    while (now_ns() < end) {
        static const char kinds[] = "XLWSM";
        char kind = kinds[rand() % 5];
        char id[32];
        if (kind == 'M')
            snprintf(id, sizeof id, SEM_ID);
        else
            snprintf(id, sizeof id, "fault-lock-%d", rand() % LOCK_IDS);
        /* X has no lease; W and S have one half of the time; L and M always. */
        uint64_t ttl = kind == 'X' ? 0
                       : (kind == 'W' || kind == 'S') && (rand() & 1) ? 0
                                                                      : LEASE_MS;
        uint64_t token = 0;
        int64_t t0 = now_ns();
        rc = acquire(kind, id, ttl, &token);
        int64_t t1 = now_ns();
        int lookup = 1;
        if (rc == 0 && kind == 'X') {
            /* dss_lock() gives no token: read it (this process holds it). */
            while ((lookup = holds(kind, id, &token)) < 0 && transient(lookup))
                nap_ms(10);
        }
        say("acq %c %s %" PRId64 " %" PRId64 " %d %" PRIu64 " %" PRIu64, kind, id, t0, t1, rc,
            token, ttl);
        if (rc == -ECOMM) {
            unknown++;
            int64_t at = 0;
            int h = resolve(kind, id, &token, &at);
            if (h < 0)
                return 4;
            say("res %s %" PRId64 " %d %" PRIu64, id, at, h, token);
            rc = h ? 0 : -ENOLCK;
        }
        if (lookup != 1)
            say("chk %s %" PRId64 " %" PRId64 " %d", id, t1, now_ns(), lookup < 0 ? lookup : -ESTALE);
        if (rc != 0) {
            /* Not granted (held, timed out, server down): try again soon. */
            nap_ms(rand() % 5);
            continue;
        }
        grants++;
        nap_ms(5 + rand() % 95);

        /* Still held? Asked until answered, while the lease surely runs. */
        for (;;) {
            int64_t c0 = now_ns();
            if (ttl && c0 > t0 + (int64_t)(ttl - 200) * 1000000LL)
                break;
            int c = check(kind, id, token);
            int64_t c1 = now_ns();
            if (!transient(c)) {
                say("chk %s %" PRId64 " %" PRId64 " %d", id, c0, c1, c);
                break;
            }
            nap_ms(10);
        }

        /* Released, or known to be gone. */
        for (;;) {
            int64_t r0 = now_ns();
            rc = release(kind, id);
            int64_t r1 = now_ns();
            say("rel %c %s %" PRId64 " %" PRId64 " %d", kind, id, r0, r1, rc);
            if (rc == -ECOMM) {
                unknown++;
                uint64_t seen = 0;
                int64_t at = 0;
                int h = resolve(kind, id, &seen, &at);
                if (h < 0)
                    return 4;
                h = h && seen == token;
                say("relres %s %" PRId64 " %d", id, at, h);
                if (h)
                    continue; /* still ours: release again */
                break;
            }
            if (transient(rc)) {
                nap_ms(10);
                continue; /* nothing was done */
            }
            break;
        }
    }
    fprintf(stderr, "worker %d (%s): %ld grants, %ld unknown outcomes\n", index, owner, grants,
            unknown);
    dss_fini(&handle);
    fclose(history);
    return 0;
}
