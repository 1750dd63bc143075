/*
 * leader_election - leader election with a libdss lease.
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 *   leader_election [-n PROCS] [-t TAKEOVERS] [-l TTL_MS] [-k LEAD_MS] [-i NAME]
 *
 *   -n PROCS      candidate processes (default 3, at least 2)
 *   -t TAKEOVERS  leaders to kill before stopping (default 2)
 *   -l TTL_MS     lease of the leader (default 2000)
 *   -k LEAD_MS    how long each leader leads before it is killed (default 3000)
 *   -i NAME       election name: the lock is "leader/NAME" (default "demo")
 *
 * The connection string comes from the configuration, as for any phobos
 * program: PHOBOS_DSS_connect_string, else `connect_string` in section [dss]
 * of the file named by PHOBOS_CFG_FILE (default /etc/phobos.conf).
 *
 * How the election works (the pattern to copy):
 *
 *  - Leadership is one lock, "leader/NAME", held with a LEASE: a lock that
 *    expires TTL_MS after it was taken or last refreshed, on the database
 *    clock. A leader that dies (crash, SIGKILL, power loss, network cut)
 *    cannot release its lock, but stops refreshing it: the lease runs out,
 *    and the lock is free again. Nobody has to clean up after it.
 *
 *  - Every candidate blocks in dss_lock_wait(), which sleeps without polling
 *    the database: it is woken when the lock is released, or when the
 *    holder's lease runs out. The first candidate in line then takes the
 *    lock, with a new lease: it is the new leader.
 *
 *  - The leader refreshes its lease every TTL_MS/3 with dss_lock_refresh(),
 *    so that two refreshes can be missed (a slow database, a paused
 *    process) before the lease expires. A refresh that fails means the
 *    leader is no longer the leader (-ETIME: its lease ran out; -EACCES:
 *    someone else took the lock over since): it must stop acting as leader
 *    at once and go back to being a candidate.
 *
 *  - Each acquisition gets a FENCING TOKEN, greater than every token handed
 *    out before. A process can be paused (GC, swap, SIGSTOP) for longer
 *    than its lease and wake up believing it still leads: before acting,
 *    the leader checks its token with dss_lock_check() (-ESTALE: it lost
 *    the lock). Better still, storage that accepts writes from leaders can
 *    reject a write made with a token older than the newest it has seen,
 *    or check the token in the same transaction as the write with the SQL
 *    function dss_lock_is_held(lock_id, token).
 *
 * What this program does: the parent forks PROCS candidates, which run the
 * election above. Every new leader prints "child N (pid P) leads with token
 * T" and tells the parent through a pipe. The parent lets each leader lead
 * for LEAD_MS, then kills it with SIGKILL (no chance to release anything)
 * and measures how long it takes until the next "leads" message. After
 * TAKEOVERS takeovers it stops the candidates with SIGTERM (the leader then
 * releases the lock with dss_unlock(), which wakes the waiters at once).
 *
 * Exit status: 0 if every takeover happened within TTL_MS + 1 s with a
 * greater token; 1 if not (or a candidate failed); 2 if the program could
 * not run (bad option, no configuration, database unreachable).
 *
 * Build: cc -std=c11 leader_election.c $(pkg-config --cflags --libs dss)
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* kill, sigaction, getopt, clock_gettime with -std=c11 */
#endif

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dss.h>

/* Settings (command-line options). */
static int nprocs = 3;
static int ntakeovers = 2;
static uint64_t ttl_ms = 2000;
static uint64_t lead_ms = 3000;
static const char *name = "demo";

/* Set by SIGTERM in a candidate: stop at the next opportunity. */
static volatile sig_atomic_t stop_requested;

static void on_sigterm(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Milliseconds on a monotonic clock (for measuring delays). */
static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Sleeps ms milliseconds, or less if a signal (SIGTERM) arrives. */
static void nap_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL); /* EINTR on SIGTERM: the caller checks the flag */
}

/* Writes one line to fd in a single write() (atomic on a pipe for lines
 * shorter than PIPE_BUF), so that lines of several processes never mix. */
#if defined(__GNUC__)
static void put_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#endif
static void put_line(int fd, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    while (write(fd, line, (size_t)n) < 0 && errno == EINTR)
        ;
}

/* ---- a candidate ------------------------------------------------------ */

/*
 * Leads until the lock is lost or a stop is requested. Returns 1 if the
 * leadership was lost (go back to waiting), 0 on a requested stop (the lock
 * was released).
 */
static int lead(struct dss_handle *h, const char *lock_id, const char *owner, int me,
                uint64_t token)
{
    for (;;) {
        /* Sleep a third of the lease: two refreshes may fail or be late
         * before the lease runs out. */
        nap_ms(ttl_ms / 3);

        if (stop_requested) {
            /* A clean exit: release, so that a successor is woken at once
             * instead of after the lease runs out. */
            int rc = dss_unlock(h, lock_id, owner);
            if (rc != 0)
                fprintf(stderr, "child %d: dss_unlock: %d: %s\n", me, rc, dss_last_error());
            else
                printf("child %d (pid %ld) stepped down\n", me, (long)getpid());
            return 0;
        }

        /* Extend the lease. The token does not change. */
        int rc = dss_lock_refresh(h, lock_id, owner);
        if (rc != 0) {
            /* -ETIME: our lease expired before we refreshed it (we were
             * too slow: paused, or the database was unreachable);
             * -EACCES: someone else took the lock over since;
             * -ENOLCK: it was removed (an operator's forced release);
             * -ECOMM and the like: we cannot tell, and must assume the
             * worst. In every case: stop acting as leader now. */
            printf("child %d (pid %ld) lost the lead: dss_lock_refresh: %d (%s)\n", me,
                   (long)getpid(), rc, dss_last_error());
            return 1;
        }

        /* Before doing leader's work, make sure our token still holds the
         * lock (it could have been lost while we were paused, right
         * after the refresh above). Real work would pass the token on to
         * the storage it writes to: see dss_lock_is_held() in the README. */
        rc = dss_lock_check(h, lock_id, token);
        if (rc != 0) {
            printf("child %d (pid %ld) lost the lead: dss_lock_check: %d\n", me,
                   (long)getpid(), rc);
            return 1;
        }
        /* ... the leader's work, fenced by `token`, goes here ... */
    }
}

/* The candidate's life: wait for the lock, lead, repeat. Reports to the
 * parent on report_fd. Returns the exit status. */
static int candidate(int me, int report_fd)
{
    struct dss_handle h = {0};
    char owner[DSS_MAX_LOCK_OWNER_LEN + 1];
    char lock_id[DSS_MAX_LOCK_ID_LEN + 1];
    struct sigaction sa;

    /* SIGTERM asks for a clean stop; no SA_RESTART, so that it interrupts
     * the nap between refreshes. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);

    /* Each process opens its own handle (the configuration gives the
     * connection string), and names itself "host:pid": unique, and tells
     * an operator where the leader runs. */
    int rc = dss_init(&h);
    if (rc != 0) {
        fprintf(stderr, "child %d: dss_init: %d: %s\n", me, rc, dss_last_error());
        put_line(report_fd, "FAIL %d %ld %d\n", me, (long)getpid(), rc);
        return 2;
    }
    dss_owner_self(owner, sizeof(owner));
    snprintf(lock_id, sizeof(lock_id), "leader/%s", name);

    while (!stop_requested) {
        uint64_t token = 0;

        /* Wait for the lock, and take it with a lease of ttl_ms. The wait
         * is bounded (1 s) only so that a stop request is noticed: each
         * call sleeps in the database until the lock is released or the
         * leader's lease expires, without polling. */
        rc = dss_lock_wait(&h, lock_id, owner, ttl_ms, 1000, &token);
        if (rc == -ETIMEDOUT)
            continue; /* still somebody else's: wait again */
        if (rc != 0) {
            fprintf(stderr, "child %d: dss_lock_wait: %d: %s\n", me, rc, dss_last_error());
            put_line(report_fd, "FAIL %d %ld %d\n", me, (long)getpid(), rc);
            dss_fini(&h);
            return 1;
        }

        if (stop_requested) { /* won just as we were told to stop */
            dss_unlock(&h, lock_id, owner);
            break;
        }

        /* We lead. */
        printf("child %d (pid %ld) leads with token %" PRIu64 "\n", me, (long)getpid(), token);
        put_line(report_fd, "LEAD %d %ld %" PRIu64 "\n", me, (long)getpid(), token);
        if (lead(&h, lock_id, owner, me, token) == 0)
            break;
        put_line(report_fd, "LOST %d %ld\n", me, (long)getpid());
    }
    dss_fini(&h);
    return 0;
}

/* ---- the parent: starts candidates, kills leaders, measures ------------ */

/* Reads the next line of the candidates' reports into line, waiting at
 * most timeout_ms. Returns 1 with a line, 0 on timeout or end of input. */
static int next_report(int fd, char *line, size_t size, double timeout_ms)
{
    static char buf[4096];
    static size_t used;
    double deadline = now_ms() + timeout_ms;

    for (;;) {
        char *nl = memchr(buf, '\n', used);
        if (nl != NULL) {
            size_t len = (size_t)(nl - buf);
            if (len >= size)
                len = size - 1;
            memcpy(line, buf, len);
            line[len] = '\0';
            used -= (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, used);
            return 1;
        }
        double left = deadline - now_ms();
        if (left <= 0 || used == sizeof(buf))
            return 0;
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, (int)left + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        ssize_t r = read(fd, buf + used, sizeof(buf) - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        used += (size_t)r;
    }
}

/* A "LEAD n pid token" report. */
struct lead_report {
    int child;
    long pid;
    uint64_t token;
};

/* Waits for the next LEAD report; complains about anything else. */
static int next_leader(int fd, double timeout_ms, struct lead_report *out, int *failures)
{
    double deadline = now_ms() + timeout_ms;
    char line[256];

    while (next_report(fd, line, sizeof(line), deadline - now_ms())) {
        if (sscanf(line, "LEAD %d %ld %" SCNu64, &out->child, &out->pid, &out->token) == 3)
            return 1;
        fprintf(stderr, "parent: unexpected report: %s\n", line);
        (*failures)++;
    }
    return 0;
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [-n PROCS] [-t TAKEOVERS] [-l TTL_MS] [-k LEAD_MS] [-i NAME]\n", prog);
    exit(2);
}

static uint64_t parse_u64(const char *s, const char *prog)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        usage(prog);
    return (uint64_t)v;
}

int main(int argc, char **argv)
{
    int opt;

    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, from every process */
    while ((opt = getopt(argc, argv, "n:t:l:k:i:h")) != -1) {
        switch (opt) {
        case 'n': nprocs = (int)parse_u64(optarg, argv[0]); break;
        case 't': ntakeovers = (int)parse_u64(optarg, argv[0]); break;
        case 'l': ttl_ms = parse_u64(optarg, argv[0]); break;
        case 'k': lead_ms = parse_u64(optarg, argv[0]); break;
        case 'i': name = optarg; break;
        default: usage(argv[0]);
        }
    }
    if (optind != argc || nprocs < 2 || nprocs > 64 || ntakeovers < 0 || ttl_ms < 3 ||
        ttl_ms > DSS_MAX_TTL_MS)
        usage(argv[0]);

    /* Check the configuration once, with a clear message, before forking. */
    struct dss_handle h = {0};
    int rc = dss_init(&h);
    if (rc != 0) {
        fprintf(stderr, "dss_init: %d: %s\n", rc, dss_last_error());
        fprintf(stderr, "(set PHOBOS_DSS_connect_string, or connect_string in section [dss] "
                        "of $PHOBOS_CFG_FILE)\n");
        return 2;
    }
    dss_fini(&h);

    printf("%d candidates for \"leader/%s\", lease %" PRIu64 " ms; each leader is killed "
           "after %" PRIu64 " ms, %d times\n",
           nprocs, name, ttl_ms, lead_ms, ntakeovers);

    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return 2;
    }
    pid_t *pids = calloc((size_t)nprocs, sizeof(*pids));
    if (pids == NULL)
        return 2;
    for (int i = 0; i < nprocs; i++) {
        fflush(NULL);
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("fork");
            return 2;
        }
        if (pids[i] == 0) {
            close(fds[0]);
            _exit(candidate(i, fds[1]));
        }
    }
    close(fds[1]);

    int failures = 0;
    struct lead_report cur;
    /* The first election: a free lock, or a leftover lease of an earlier
     * run that must first expire. */
    if (!next_leader(fds[0], 10000.0 + (double)ttl_ms, &cur, &failures)) {
        fprintf(stderr, "parent: nobody became leader\n");
        failures++;
    }
    for (int t = 0; t < ntakeovers && failures == 0; t++) {
        /* Let it lead a while: no other leader may appear meanwhile. */
        struct lead_report other;
        if (next_leader(fds[0], (double)lead_ms, &other, &failures)) {
            fprintf(stderr, "parent: child %d took over from live leader %d\n", other.child,
                    cur.child);
            failures++;
            break;
        }

        /* Kill the leader without warning: it cannot release its lock. */
        double t_kill = now_ms();
        kill((pid_t)cur.pid, SIGKILL);
        printf("parent: killed leader child %d (pid %ld, token %" PRIu64 ")\n", cur.child,
               cur.pid, cur.token);

        /* Its lease runs out at most ttl_ms after its last refresh; a
         * waiter is woken then and takes over. */
        struct lead_report next;
        if (!next_leader(fds[0], (double)ttl_ms + 10000.0, &next, &failures)) {
            fprintf(stderr, "parent: no new leader after the kill\n");
            failures++;
            break;
        }
        double delay = now_ms() - t_kill;
        printf("parent: takeover %d: child %d leads %.0f ms after the kill (lease %" PRIu64
               " ms), token %" PRIu64 " -> %" PRIu64 "\n",
               t + 1, next.child, delay, ttl_ms, cur.token, next.token);
        if (delay > (double)ttl_ms + 1000.0) {
            fprintf(stderr, "parent: takeover took %.0f ms, more than the lease + 1 s\n", delay);
            failures++;
        }
        if (next.token <= cur.token) {
            fprintf(stderr, "parent: the new token %" PRIu64 " is not above the old %" PRIu64
                            "\n", next.token, cur.token);
            failures++;
        }
        if (next.pid == cur.pid) {
            fprintf(stderr, "parent: the killed leader leads again?\n");
            failures++;
        }
        waitpid((pid_t)cur.pid, NULL, 0);
        for (int i = 0; i < nprocs; i++)
            if (pids[i] == (pid_t)cur.pid)
                pids[i] = 0;
        cur = next;
    }

    /* Stop the others: SIGTERM, then wait (the leader releases its lock). */
    for (int i = 0; i < nprocs; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    double deadline = now_ms() + (double)ttl_ms + 5000.0;
    for (int i = 0; i < nprocs; i++) {
        if (pids[i] <= 0)
            continue;
        int status = 0;
        for (;;) {
            pid_t r = waitpid(pids[i], &status, WNOHANG);
            if (r == pids[i] || (r < 0 && errno != EINTR))
                break;
            if (now_ms() > deadline) {
                fprintf(stderr, "parent: child %d does not stop: killed\n", i);
                kill(pids[i], SIGKILL);
                waitpid(pids[i], &status, 0);
                failures++;
                break;
            }
            nap_ms(10);
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
            fprintf(stderr, "parent: child %d exited with %d\n", i, WEXITSTATUS(status));
            failures++;
        }
    }
    /* Reports written while stopping (e.g. a last takeover) do not matter. */
    close(fds[0]);
    free(pids);
    printf("%s\n", failures == 0 ? "OK" : "FAILED");
    return failures == 0 ? 0 : 1;
}
