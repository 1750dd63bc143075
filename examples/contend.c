/*
 * contend - two processes contending for one libdss lock.
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 *   contend [LOCK_ID]          (default "demo:tape-drive-0")
 *
 * The connection string comes from the configuration, as for any phobos
 * program: PHOBOS_DSS_connect_string, else `connect_string` in section [dss]
 * of the file named by PHOBOS_CFG_FILE (default /etc/phobos.conf).
 *
 * The parent opens a handle, clears a stale lock left by an earlier run of
 * this demo on this host (its owner "host:pid" names a dead process), then
 * forks two workers. Each worker opens a handle of its own and, ROUNDS
 * times: takes the lock (on -EEXIST it asks dss_lock_status() who holds it,
 * waits and retries), works a little, refreshes the lock halfway, and
 * releases it. Worker 2 also tries once to release the lock while worker 1
 * holds it, which must fail with -EACCES. At the end the parent force-
 * releases any leftover lock (dss_unlock() with a NULL owner), which must
 * answer -ENOLCK since both workers released theirs.
 *
 * The workers record in shared memory when they believe they hold the lock;
 * two holders at once would be a violation of mutual exclusion.
 *
 * Exit status: 0 if everything went as expected, 1 if not, 2 if the demo
 * could not run (configuration, database unreachable, lock in use).
 *
 * Build: cc -std=c11 contend.c $(pkg-config --cflags --libs dss)
 */

#define _GNU_SOURCE   /* gethostname, localtime_r, usleep, MAP_ANONYMOUS, ECOMM */

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dss.h>

#define DEFAULT_LOCK_ID "demo:tape-drive-0"
#define NWORKERS        2
#define ROUNDS          3          /* times each worker must get the lock */
#define WORK_US         300000     /* holding time, refreshed halfway */
#define RETRY_US        120000     /* wait after -EEXIST */
#define REST_US         200000     /* pause after a release: > RETRY_US, so
                                      the other worker gets its turn */
#define START_GAP_US    100000     /* worker 2 starts this much later */
#define MAX_ATTEMPTS    100        /* per round, before giving up */

/* What the workers share with each other and with the parent. */
struct shared {
    atomic_int holders;            /* workers that believe they hold the lock */
    atomic_int violations;         /* times a worker found another holder */
    atomic_int acquired[NWORKERS]; /* locks taken, per worker */
    atomic_int eacces_shown;       /* worker 2 got -EACCES on a foreign lock */
};

static const char *lock_id = DEFAULT_LOCK_ID;
static struct shared *shm;

/* ---- output ----------------------------------------------------------- */

/* Symbolic name of the errno values libdss returns. */
static const char *errno_name(int e)
{
    switch (e) {
    case EEXIST: return "EEXIST";
    case EACCES: return "EACCES";
    case ENOLCK: return "ENOLCK";
    case EINVAL: return "EINVAL";
    case EALREADY: return "EALREADY";
    case ENOTCONN: return "ENOTCONN";
    case EPROTO: return "EPROTO";
    case ENOMEM: return "ENOMEM";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOSPC: return "ENOSPC";
    case EIO: return "EIO";
#ifdef EUSERS
    case EUSERS: return "EUSERS";
#endif
#ifdef ECOMM
    case ECOMM: return "ECOMM";
#endif
#ifdef ENOTRECOVERABLE
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
#endif
    default: return "E?";
    }
}

/* "-EACCES (Permission denied)" for rc = -EACCES. */
static const char *rc_str(int rc)
{
    static char buf[128];

    if (rc >= 0)
        snprintf(buf, sizeof(buf), "%d (success)", rc);
    else
        snprintf(buf, sizeof(buf), "-%s (%s)", errno_name(-rc), strerror(-rc));
    return buf;
}

/* A formatted time, returned by value. */
struct tvstr {
    char s[80];
};

/* Local time of a timeval: "19:20:01.123456", or with the date and zone. */
static struct tvstr fmt_tv(const struct timeval *tv, int with_date)
{
    struct tvstr out;
    struct tm tm;
    time_t secs = tv->tv_sec;
    int usec = (int)(tv->tv_usec % 1000000);
    size_t n;

    if (usec < 0)
        usec = 0;
    if (localtime_r(&secs, &tm) == NULL) {
        snprintf(out.s, sizeof(out.s), "@%lld.%06d", (long long)tv->tv_sec, usec);
        return out;
    }
    n = strftime(out.s, 40, with_date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
    snprintf(out.s + n, sizeof(out.s) - n, ".%06d", usec);
    if (with_date) {
        n = strlen(out.s);
        out.s[n++] = ' ';
        if (strftime(out.s + n, sizeof(out.s) - n, "%Z", &tm) == 0)
            out.s[n - 1] = '\0';
    }
    return out;
}

/*
 * Prints "[time] who: message" on fd (1 or 2) with a single write(), so that
 * lines from the two workers never mix, whatever the buffering of stdout.
 */
static void say_fd(int fd, const char *who, const char *fmt, va_list ap)
{
    char line[1024];
    struct timeval now;
    int n, m;

    gettimeofday(&now, NULL);
    n = snprintf(line, sizeof(line), "[%s] %-9s ",
                 fmt_tv(&now, 0).s, who);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    for (const char *p = line; n > 0; ) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (int)w;
    }
}

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

static void say(const char *who, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void say(const char *who, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    say_fd(STDOUT_FILENO, who, fmt, ap);
    va_end(ap);
}

static void complain(const char *who, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void complain(const char *who, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    say_fd(STDERR_FILENO, who, fmt, ap);
    va_end(ap);
}

/* ---- helpers ---------------------------------------------------------- */

static void sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Opens a handle from the configuration, or explains why it cannot. */
static int open_handle(struct dss_handle *h, const char *who)
{
    int rc;

    memset(h, 0, sizeof(*h));
    rc = dss_init(h);
    if (rc == 0)
        return 0;
    complain(who, "dss_init failed: %s", rc_str(rc));
    complain(who, "  %s", dss_last_error());
    if (rc == -EINVAL && strstr(dss_last_error(), "PHOBOS_DSS_connect_string") == NULL)
        complain(who, "  (the connection string comes from PHOBOS_DSS_connect_string, else from "
                 "connect_string in section [dss] of $PHOBOS_CFG_FILE, default /etc/phobos.conf)");
    return rc;
}

/* This host's name, for lock owners. */
static const char *host_name(void)
{
    static char host[256];

    if (host[0] == '\0') {
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
            strcpy(host, "localhost");
        host[sizeof(host) - 1] = '\0';
    }
    return host;
}

/*
 * True if `owner` is "<this host>:<pid>" (the owner format used here, as in
 * phobos) and that process no longer exists: a lock left behind by an
 * earlier, interrupted run.
 */
static int owner_is_dead_local_process(const char *owner)
{
    size_t hlen = strlen(host_name());
    char *end;
    long pid;

    if (strncmp(owner, host_name(), hlen) != 0 || owner[hlen] != ':')
        return 0;
    errno = 0;
    pid = strtol(owner + hlen + 1, &end, 10);
    if (errno != 0 || end == owner + hlen + 1 || *end != '\0' || pid <= 0)
        return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* ---- a worker --------------------------------------------------------- */

/* One worker: returns its exit status (0 if all went as expected). */
static int worker(int idx, int go_fd, int ready_fd)
{
    struct dss_handle h;
    char who[24], owner[DSS_MAX_LOCK_OWNER_LEN + 1];
    int failed = 0, rc;
    ssize_t n;
    char c;

    snprintf(who, sizeof(who), "worker %d", idx + 1);
    snprintf(owner, sizeof(owner), "%s:%ld", host_name(), (long)getpid());

    /* A handle of its own: the parent's is not used in the child. */
    rc = open_handle(&h, who);
    if (rc != 0)
        return 2;
    say(who, "connected, lock owner \"%s\"", owner);

    /* Tell the parent we are ready, then wait until both are. */
    c = 'r';
    if (write(ready_fd, &c, 1) != 1)
        complain(who, "cannot signal readiness: %s", strerror(errno));
    close(ready_fd);
    while ((n = read(go_fd, &c, 1)) < 0 && errno == EINTR)
        ;
    close(go_fd);
    if (n == 1 && c == 'q') {
        dss_fini(&h);
        say(who, "the other worker could not start: giving up");
        return 2;
    }
    if (idx == 1)
        sleep_us(START_GAP_US);   /* let worker 1 take the lock first */

    for (int round = 1; round <= ROUNDS && !failed; round++) {
        int attempts = 0;

        /* Take the lock, waiting for the other worker if needed. */
        for (;;) {
            char *holder = NULL;
            struct timeval since;

            attempts++;
            rc = dss_lock(&h, lock_id, owner);
            if (rc == 0)
                break;
            if (rc != -EEXIST) {
                complain(who, "dss_lock failed: %s: %s", rc_str(rc), dss_last_error());
                failed = 1;
                break;
            }
            rc = dss_lock_status(&h, lock_id, &holder, &since);
            if (rc == -ENOLCK) {
                say(who, "dss_lock: %s, but it was released before I asked who held it",
                    rc_str(-EEXIST));
            } else if (rc != 0) {
                complain(who, "dss_lock_status failed: %s: %s", rc_str(rc), dss_last_error());
                failed = 1;
                break;
            } else {
                say(who, "dss_lock: %s: held by %s since %s", rc_str(-EEXIST), holder,
                    fmt_tv(&since, 0).s);
                if (strcmp(holder, owner) == 0) {
                    complain(who, "  ... but that is me, and I did not take it!");
                    atomic_fetch_add(&shm->violations, 1);
                    failed = 1;
                } else if (idx == 1 && !atomic_load(&shm->eacces_shown)) {
                    /* The error codes, once: releasing someone else's lock. */
                    int urc = dss_unlock(&h, lock_id, owner);

                    if (urc == -EACCES) {
                        say(who, "dss_unlock of a lock I do not own: %s: not the owner, "
                            "nothing changed (as expected)", rc_str(urc));
                        atomic_store(&shm->eacces_shown, 1);
                    } else if (urc == -ENOLCK) {
                        say(who, "dss_unlock of a lock I do not own: %s: it was released "
                            "meanwhile; will try again later", rc_str(urc));
                    } else {
                        complain(who, "dss_unlock of %s's lock answered %s instead of -EACCES: %s",
                                 holder, rc_str(urc), urc ? dss_last_error() : "it released it!");
                        failed = 1;
                    }
                }
                free(holder);
                if (failed)
                    break;
            }
            if (attempts >= MAX_ATTEMPTS) {
                complain(who, "gave up after %d attempts", attempts);
                failed = 1;
                break;
            }
            sleep_us(RETRY_US);
        }
        if (failed)
            break;

        /* Holding the lock. */
        if (atomic_fetch_add(&shm->holders, 1) != 0) {
            complain(who, "MUTUAL EXCLUSION VIOLATED: the other worker holds the lock too");
            atomic_fetch_add(&shm->violations, 1);
            failed = 1;
        }
        atomic_fetch_add(&shm->acquired[idx], 1);
        say(who, "got the lock (round %d/%d, attempt %d), working...", round, ROUNDS, attempts);

        sleep_us(WORK_US / 2);
        rc = dss_lock_refresh(&h, lock_id, owner);
        if (rc != 0) {
            complain(who, "dss_lock_refresh failed: %s: %s", rc_str(rc), dss_last_error());
            failed = 1;
        } else {
            char *holder = NULL;
            struct timeval since;

            rc = dss_lock_status(&h, lock_id, &holder, &since);
            if (rc == 0) {
                say(who, "refreshed the lock: timestamp now %s",
                    fmt_tv(&since, 0).s);
                if (strcmp(holder, owner) != 0) {
                    complain(who, "  ... but the status says %s holds it!", holder);
                    atomic_fetch_add(&shm->violations, 1);
                    failed = 1;
                }
                free(holder);
            } else {
                complain(who, "dss_lock_status failed: %s: %s", rc_str(rc), dss_last_error());
                failed = 1;
            }
        }
        sleep_us(WORK_US / 2);

        /* Leaving: stop counting as a holder before the lock goes. */
        atomic_fetch_sub(&shm->holders, 1);
        rc = dss_unlock(&h, lock_id, owner);
        if (rc != 0) {
            complain(who, "dss_unlock failed: %s: %s", rc_str(rc), dss_last_error());
            failed = 1;
            break;
        }
        say(who, "released the lock");
        if (round < ROUNDS)
            sleep_us(REST_US);
    }

    if (idx == 1 && !failed && !atomic_load(&shm->eacces_shown))
        complain(who, "never saw worker 1 holding the lock: -EACCES not demonstrated");
    dss_fini(&h);
    say(who, "%s", failed ? "done, with errors" : "done");
    return failed;
}

/* ---- the parent ------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct dss_handle h;
    pid_t pids[NWORKERS];
    int ready[2], go[2];
    int ok = 1, started, rc, nready = 0;
    char c;

    if (argc > 2 || (argc == 2 && (argv[1][0] == '\0' || argv[1][0] == '-'))) {
        fprintf(stderr, "usage: %s [LOCK_ID]   (default \"%s\")\n", argv[0], DEFAULT_LOCK_ID);
        return 2;
    }
    if (argc == 2)
        lock_id = argv[1];

    say("main", "libdss %s: %d processes contending for lock \"%s\"",
        dss_version(), NWORKERS, lock_id);

    rc = open_handle(&h, "main");
    if (rc != 0)
        return 2;

    /* A lock still held by an earlier, interrupted run of this demo? */
    {
        char *holder = NULL;
        struct tvstr when;
        struct timeval since;

        rc = dss_lock_status(&h, lock_id, &holder, &since);
        if (rc == 0) {
            when = fmt_tv(&since, 1);
            if (!owner_is_dead_local_process(holder)) {
                complain("main", "lock \"%s\" is in use: held by %s since %s",
                         lock_id, holder, when.s);
                complain("main", "  not touching it; pick another lock id, or release it "
                         "when it is no longer needed");
                free(holder);
                dss_fini(&h);
                return 2;
            }
            say("main", "stale lock held by %s (a process that no longer exists) since %s",
                holder, when.s);
            free(holder);
            rc = dss_unlock(&h, lock_id, NULL);
            say("main", "forced its release: dss_unlock(owner=NULL) -> %s", rc_str(rc));
            if (rc != 0 && rc != -ENOLCK) {
                complain("main", "  %s", dss_last_error());
                dss_fini(&h);
                return 2;
            }
        } else if (rc != -ENOLCK) {
            complain("main", "dss_lock_status failed: %s: %s", rc_str(rc), dss_last_error());
            dss_fini(&h);
            return 2;
        }
    }

    shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        complain("main", "mmap: %s", strerror(errno));
        return 2;
    }
    atomic_init(&shm->holders, 0);
    atomic_init(&shm->violations, 0);
    atomic_init(&shm->eacces_shown, 0);
    for (int i = 0; i < NWORKERS; i++)
        atomic_init(&shm->acquired[i], 0);

    if (pipe(ready) != 0 || pipe(go) != 0) {
        complain("main", "pipe: %s", strerror(errno));
        return 2;
    }

    for (int i = 0; i < NWORKERS; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            complain("main", "fork: %s", strerror(errno));
            ok = 0;
            break;
        }
        if (pids[i] == 0) {
            close(ready[0]);
            close(go[1]);
            exit(worker(i, go[0], ready[1]));
        }
    }
    close(ready[1]);
    close(go[0]);

    /* Start both workers together, once both are connected (or gone). */
    while (nready < NWORKERS) {
        ssize_t n = read(ready[0], &c, 1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        nready++;
    }
    close(ready[0]);
    started = nready == NWORKERS;
    if (started) {
        say("main", "both workers connected: go!");
    } else {
        /* One could not start: tell the other one to stop (if alive). */
        signal(SIGPIPE, SIG_IGN);
        for (int i = 0; i < NWORKERS; i++)
            if (write(go[1], "q", 1) != 1)
                break;
    }
    close(go[1]);

    for (int i = 0; i < NWORKERS; i++) {
        int status = 0;
        pid_t w;

        if (pids[i] <= 0)
            continue;
        while ((w = waitpid(pids[i], &status, 0)) < 0 && errno == EINTR)
            ;
        if (w < 0) {
            complain("main", "waitpid: %s", strerror(errno));
            ok = 0;
            continue;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            continue;
        ok = 0;
        if (WIFEXITED(status))
            complain("main", "worker %d exited with status %d", i + 1, WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            complain("main", "worker %d was killed by signal %d (%s)", i + 1,
                     WTERMSIG(status), strsignal(WTERMSIG(status)));
    }

    /* Clean up: force the release of whatever was left (nothing, normally). */
    rc = dss_unlock(&h, lock_id, NULL);
    if (rc == -ENOLCK) {
        say("main", "force release, dss_unlock(owner=NULL): %s: nothing left over", rc_str(rc));
    } else if (rc == 0) {
        say("main", "force release, dss_unlock(owner=NULL): released a leftover lock");
        ok = 0;   /* a worker did not release its lock */
    } else {
        complain("main", "force release failed: %s: %s", rc_str(rc), dss_last_error());
        ok = 0;
    }
    dss_fini(&h);
    if (!started) {
        complain("main", "the demo could not run: a worker could not start");
        return 2;
    }

    /* The verdict. */
    for (int i = 0; i < NWORKERS; i++) {
        int got = atomic_load(&shm->acquired[i]);

        say("main", "worker %d got the lock %d time%s (expected %d)", i + 1, got,
            got == 1 ? "" : "s", ROUNDS);
        if (got != ROUNDS)
            ok = 0;
    }
    if (atomic_load(&shm->violations) != 0) {
        complain("main", "mutual exclusion was violated %d time(s)",
                 atomic_load(&shm->violations));
        ok = 0;
    } else {
        say("main", "the lock never had two holders at once");
    }
    if (!atomic_load(&shm->eacces_shown)) {
        complain("main", "worker 2 never got -EACCES for worker 1's lock");
        ok = 0;
    }
    say("main", "%s", ok ? "all as expected" : "FAILED: see above");
    return ok ? 0 : 1;
}
