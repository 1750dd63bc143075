/* Bad input for every function of dss.h: each call returns -EINVAL (or the
 * code dss.h documents for that input), never crashes, writes no output,
 * and changes nothing in the database.
 *
 * Everything runs on a private database (made from sql/), whose schema dss
 * is fingerprinted (ct_db_snapshot: every table's rows, every sequence)
 * before and after each part:
 *  1. fuzz: seeded random calls of every function, each with at least one
 *     bad argument (NULLs, lengths around each limit, invalid UTF-8, huge
 *     counts, garbage handles, random bytes); the others are random valid
 *     values, at the limits too;
 *  2. the same calls while the database refuses connections: the same
 *     codes, so none of them was sent;
 *  3. valid input naming absent objects, then refused requests on existing
 *     ones: their documented codes (-ENOLCK, -ESTALE, -EEXIST, ...);
 *  4. lengths and numbers exactly at the limits succeed (changes allowed).
 * The seed is printed; DSS_FUZZ_SEED=<n> replays a run and
 * DSS_FUZZ_ITERATIONS=<n> sets the random calls per function (default 120).
 *
 * By design, not tested: a `struct dss_handle *` that points to unreadable
 * memory, arrays shorter than their count, unterminated strings below their
 * limit, and dss_lock_info_clear() / dss_*_free() on memory the library did
 * not allocate: that is the caller's undefined behaviour (dss.h). A handle
 * struct holding any bytes is fine: the library looks its pointer up in a
 * table of live handles before using it (src/registry.rs).
 */
#include "common.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifndef DSS_SQL_DIR
#error "DSS_SQL_DIR (the sql/ migrations of the source tree) must be defined"
#endif
#ifndef NM_PROGRAM
#error "NM_PROGRAM and DSS_LIBRARY must be defined"
#endif

static char db_name[64];
static char db_conninfo[1200];
static struct dss_handle h;     /* the live handle, on the private database */
static struct dss_handle stale; /* a copy of a handle since finalised */
static uint64_t seed;
static unsigned long iterations = 120;

/* ---- seeded PRNG (splitmix64) ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* 0 .. n-1 (0 if n is 0). */
static size_t rnd_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(rnd() % n);
}

static int one_in(unsigned n)
{
    return rnd_below(n) == 0;
}

/* ---- the call being made: its bad arguments and what it may return ---- */

#define C_EINVAL 1u
#define C_EFBIG 2u
#define C_ERANGE 4u

static struct {
    const char *fn;   /* function called */
    unsigned nslots;  /* its arguments that get a bad value or a good one */
    unsigned next;    /* the next of them */
    unsigned bad;     /* bit i: argument slot i is bad */
    unsigned codes;   /* C_*: what the bad values give on their own */
    char what[600];   /* the bad values, for the failure message */
    int offline;      /* part 2: the database refuses connections */
    unsigned long calls;
} F;

/* Appends a description of a bad value to F.what. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    size_t used = strlen(F.what);
    if (used + 4 >= sizeof F.what)
        return;
    if (used > 0)
        used += (size_t)snprintf(F.what + used, sizeof F.what - used, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(F.what + used, sizeof F.what - used, fmt, ap);
    va_end(ap);
}

/* Output sentinels: every output pointer given points to one of these; a
 * failing call must leave them all as they were. */
#define N_OUTS 8
#define OUT_SIZE 320
#define OUT_BYTE 0xA5
static unsigned char outs[N_OUTS][OUT_SIZE];
static unsigned n_outs;

static void *out_slot(void)
{
    assert_true(n_outs < N_OUTS);
    return outs[n_outs++];
}

/* Strings of the current call (none longer than a lock id + a few bytes;
 * longer ones are static). */
#define N_STRS 32
#define STR_SIZE (DSS_MAX_LOCK_ID_LEN + 16)
static char strs[N_STRS][STR_SIZE];
static unsigned n_strs;

static char *str_slot(void)
{
    assert_true(n_strs < N_STRS);
    return strs[n_strs++];
}

/* Starts a call of fn with nslots arguments that can be bad: picks which
 * (at least one; none if nslots is 0, for the calls that take anything). */
static void fz_begin(const char *fn, unsigned nslots)
{
    F.fn = fn;
    F.nslots = nslots;
    F.next = 0;
    F.codes = 0;
    F.what[0] = '\0';
    F.bad = 0;
    if (nslots > 0) {
        F.bad = 1u << rnd_below(nslots);
        for (unsigned i = 0; i < nslots; i++)
            if (one_in(4))
                F.bad |= 1u << i;
    }
    memset(outs, OUT_BYTE, sizeof outs);
    n_outs = 0;
    n_strs = 0;
    F.calls++;
}

/* Is the next argument slot a bad one? */
static int fz_take(void)
{
    assert_true(F.next < F.nslots);
    return (F.bad >> F.next++) & 1u;
}

static void assert_outputs_untouched(int rc)
{
    for (size_t i = 0; i < N_OUTS; i++)
        for (size_t j = 0; j < OUT_SIZE; j++)
            if (outs[i][j] != OUT_BYTE)
                fail_msg("seed %" PRIu64 ", call %lu: %s = %d wrote output %zu (byte %zu) "
                         "although it failed; bad: %s",
                         seed, F.calls, F.fn, rc, i, j, F.what);
}

/* Checks the result of the call: one of the codes its bad arguments give,
 * nothing written, and dss_last_error() names the function. */
static void fz_end(int rc)
{
    assert_int_equal(F.next, F.nslots); /* every slot was generated */
    int ok = (rc == -EINVAL && (F.codes & C_EINVAL)) || (rc == -EFBIG && (F.codes & C_EFBIG)) ||
             (rc == -ERANGE && (F.codes & C_ERANGE));
    if (!ok)
        fail_msg("seed %" PRIu64 ", call %lu%s: %s = %d (%s), expected %s%s%s; bad: %s; "
                 "dss_last_error: %s (replay with DSS_FUZZ_SEED=%" PRIu64 ")",
                 seed, F.calls, F.offline ? " (database offline)" : "", F.fn, rc,
                 ct_errname(rc), (F.codes & C_EINVAL) ? "-EINVAL " : "",
                 (F.codes & C_EFBIG) ? "-EFBIG " : "", (F.codes & C_ERANGE) ? "-ERANGE" : "",
                 F.what, dss_last_error(), seed);
    assert_outputs_untouched(rc);
    const char *e = dss_last_error();
    size_t n = strlen(F.fn);
    if (strncmp(e, F.fn, n) != 0 || e[n] != ':')
        fail_msg("%s = %d: dss_last_error() is '%s'", F.fn, rc, e);
}

/* ---- strings ---- */

struct skind {
    size_t max;   /* longest valid, in bytes */
    int empty_ok; /* "" is valid */
    int null_ok;  /* NULL is valid (no prefix, no cursor, a forced release) */
};
static const struct skind ID = {DSS_MAX_LOCK_ID_LEN, 0, 0};
static const struct skind OWNER = {DSS_MAX_LOCK_OWNER_LEN, 1, 0};
static const struct skind OWNER_OR_NULL = {DSS_MAX_LOCK_OWNER_LEN, 1, 1};
static const struct skind KEY = {DSS_KV_MAX_KEY_LEN, 0, 0};
static const struct skind KEY_OR_NULL = {DSS_KV_MAX_KEY_LEN, 1, 1}; /* prefix, cursor */
static const struct skind CLEAN_PREFIX = {DSS_MAX_LOCK_OWNER_LEN, 0, 0};

/* Invalid UTF-8: overlong forms, lone continuation bytes, surrogates,
 * beyond U+10FFFF, truncated sequences, bytes never valid. Each is invalid
 * wherever it is put in valid text. */
static const char *const bad_utf8[] = {
    "\xff", "\xfe", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xe0\x9f\xbf",
    "\xf0\x80\x80\xaf", "\xf0\x8f\xbf\xbf", "\x80", "\xbf", "\x80\x80",
    "\xed\xa0\x80", "\xed\xbf\xbf", "\xed\xa0\x80\xed\xb0\x80", "\xf4\x90\x80\x80",
    "\xf7\xbf\xbf\xbf", "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xc3",
    "\xe2\x82", "\xf0\x9f\x98", "\xc3\x28", "\xe2\x28\xa1",
};
#define N_BAD_UTF8 (sizeof bad_utf8 / sizeof bad_utf8[0])

/* Valid but awkward: quotes, SQL and LIKE metacharacters, control bytes,
 * BOM, U+FFFD, the last code points before/after the surrogates, U+10FFFF. */
static const char *const weird_utf8[] = {
    "'", "''", "\"", "\\", "%", "_", "%_%", "x' OR '1'='1", "'); DELETE FROM dss.locks; --",
    "\x01\x02\x1f\x7f", "\t\n\r", "\xef\xbb\xbf", "\xef\xbf\xbd", "\xed\x9f\xbf",
    "\xee\x80\x80", "\xf4\x8f\xbf\xbf", "$1", "NULL", ":", "\xc2\x80", "\xe2\x80\xae",
};
#define N_WEIRD (sizeof weird_utf8 / sizeof weird_utf8[0])

static char *huge_str;          /* 1 MiB of 'h' */
static char *guard_end;         /* just before an unmapped page */
#define HUGE_LEN ((size_t)1 << 20)

static size_t put_utf8(char *p, uint32_t cp)
{
    if (cp < 0x80) {
        p[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        p[0] = (char)(0xC0 | (cp >> 6));
        p[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        p[0] = (char)(0xE0 | (cp >> 12));
        p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        p[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    p[0] = (char)(0xF0 | (cp >> 18));
    p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A random code point whose UTF-8 form has `len` bytes (1 to 4), never NUL
 * nor a surrogate. */
static uint32_t cp_of_len(size_t len)
{
    switch (len) {
    case 1: return 1 + (uint32_t)rnd_below(0x7F);
    case 2: return 0x80 + (uint32_t)rnd_below(0x800 - 0x80);
    case 3: {
        uint32_t cp = 0x800 + (uint32_t)rnd_below(0x10000 - 0x800 - 0x800);
        return cp >= 0xD800 ? cp + 0x800 : cp; /* skip D800..DFFF */
    }
    default: return 0x10000 + (uint32_t)rnd_below(0x110000 - 0x10000);
    }
}

/* Writes exactly len bytes of random valid UTF-8 (no NUL) at p. */
static void fill_utf8(char *p, size_t len)
{
    size_t used = 0;
    while (used < len) {
        size_t want = one_in(2) ? 1 : 1 + rnd_below(4);
        if (want > len - used)
            want = 1;
        used += put_utf8(p + used, cp_of_len(want));
    }
}

/* A valid string of length len at p (NUL-terminated), sometimes holding
 * one of weird_utf8. */
static void valid_str(char *p, size_t len)
{
    const char *w = weird_utf8[rnd_below(N_WEIRD)];
    size_t wl = strlen(w);
    if (one_in(3) && wl <= len) {
        size_t at = rnd_below(len - wl + 1);
        fill_utf8(p, at);
        memcpy(p + at, w, wl);
        fill_utf8(p + at + wl, len - at - wl);
    } else {
        fill_utf8(p, len);
    }
    p[len] = '\0';
}

/* A valid length for kind k: the limit, one below, 1 (or 0), or short. */
static size_t good_len(const struct skind *k)
{
    switch (rnd_below(6)) {
    case 0: return k->max;
    case 1: return k->max - 1;
    case 2: return k->empty_ok && one_in(2) ? 0 : 1;
    default: return 1 + rnd_below(48);
    }
}

static const char *good_str(const struct skind *k)
{
    if (k->null_ok && one_in(6))
        return NULL;
    char *p = str_slot();
    valid_str(p, good_len(k));
    return p;
}

/* A string that kind k refuses (-EINVAL); its description goes to F.what. */
static const char *bad_str(const struct skind *k, const char *name)
{
    F.codes |= C_EINVAL;
    for (;;) {
        switch (rnd_below(9)) {
        case 0:
            if (k->null_ok)
                continue;
            note("%s NULL", name);
            return NULL;
        case 1:
            if (k->empty_ok)
                continue;
            note("%s empty", name);
            return "";
        case 2: { /* just too long */
            size_t len = k->max + 1 + rnd_below(3);
            char *p = str_slot();
            valid_str(p, len);
            note("%s of %zu bytes", name, len);
            return p;
        }
        case 3: { /* valid UTF-8 whose last character crosses the limit */
            size_t cl = 2 + rnd_below(3);
            size_t before = k->max - 1 - rnd_below(cl - 1);
            char *p = str_slot();
            fill_utf8(p, before);
            size_t len = before + put_utf8(p + before, cp_of_len(cl));
            p[len] = '\0';
            note("%s of %zu bytes, its last character (%zu bytes) across the limit", name, len,
                 cl);
            return p;
        }
        case 4:
            note("%s of 1 MiB", name);
            return huge_str;
        case 5: /* max + 1 bytes, no NUL: nothing may be read after them */
            note("%s of %zu bytes without a NUL before an unmapped page", name, k->max + 1);
            return guard_end - (k->max + 1);
        case 6:
        case 7: { /* an invalid sequence in valid text, at the limit or not */
            size_t i = rnd_below(N_BAD_UTF8);
            size_t sl = strlen(bad_utf8[i]);
            size_t len = one_in(3) ? k->max : sl + rnd_below(40);
            size_t at = one_in(4) ? len - sl : rnd_below(len - sl + 1);
            char *p = str_slot();
            fill_utf8(p, at);
            memcpy(p + at, bad_utf8[i], sl);
            fill_utf8(p + at + sl, len - at - sl);
            p[len] = '\0';
            note("%s of %zu bytes, invalid UTF-8 (bad_utf8[%zu]) at %zu", name, len, i, at);
            return p;
        }
        default: { /* random bytes, one of them never valid in UTF-8 */
            static const unsigned char never[] = {0xC0, 0xC1, 0xF5, 0xF8, 0xFE, 0xFF};
            size_t len = 1 + rnd_below(one_in(2) ? k->max : 32);
            char *p = str_slot();
            for (size_t j = 0; j < len; j++)
                p[j] = (char)(1 + rnd_below(255));
            size_t at = rnd_below(len);
            p[at] = (char)never[rnd_below(sizeof never)];
            p[len] = '\0';
            note("%s: %zu random bytes (0x%02x at %zu)", name, len, (unsigned char)p[at], at);
            return p;
        }
        }
    }
}

static const char *str_arg(const struct skind *k, const char *name)
{
    return fz_take() ? bad_str(k, name) : good_str(k);
}

/* ---- handles ---- */

/* A handle that is not a live one: NULL, zeroed, finalised, random bytes,
 * pointing into the live one, to other memory, or to odd addresses. */
static struct dss_handle *bad_handle(void)
{
    static struct dss_handle slots[4];
    static unsigned next;
    struct dss_handle *g = &slots[next++ % 4];
    F.codes |= C_EINVAL;
    switch (rnd_below(7)) {
    case 0:
        note("handle NULL");
        return NULL;
    case 1:
        memset(g, 0, sizeof *g);
        note("handle zeroed");
        return g;
    case 2:
        if (stale.dh_conn != h.dh_conn) {
            note("handle finalised (stale copy %p)", stale.dh_conn);
            return &stale;
        }
        /* fall through */
    case 3:
        do {
            uint64_t bytes = rnd();
            memcpy(g, &bytes, sizeof *g < sizeof bytes ? sizeof *g : sizeof bytes);
        } while (g->dh_conn == h.dh_conn);
        note("handle of random bytes %p", g->dh_conn);
        return g;
    case 4:
        g->dh_conn = (char *)h.dh_conn + 1 + rnd_below(64);
        note("handle inside the live one (%p)", g->dh_conn);
        return g;
    case 5:
        g->dh_conn = one_in(2) ? (void *)outs : (void *)strs;
        note("handle pointing to other memory");
        return g;
    default: {
        static const uintptr_t odd[] = {1, 8, 16, UINTPTR_MAX, UINTPTR_MAX - 15,
                                        (uintptr_t)1 << 47};
        g->dh_conn = (void *)odd[rnd_below(sizeof odd / sizeof odd[0])];
        note("handle %p", g->dh_conn);
        return g;
    }
    }
}

static struct dss_handle *handle_arg(void)
{
    return fz_take() ? bad_handle() : &h;
}

/* ---- numbers, values, outputs, arrays ---- */

static unsigned char value_buf[64];

/* A length above DSS_KV_MAX_VALUE_LEN. */
static size_t huge_len(void)
{
    static const size_t lens[] = {(size_t)DSS_KV_MAX_VALUE_LEN + 1, SIZE_MAX, SIZE_MAX / 2,
                                  SIZE_MAX - 15, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 32};
    return one_in(4) ? (size_t)DSS_KV_MAX_VALUE_LEN + 1 + rnd_below((size_t)1 << 30)
                     : lens[rnd_below(sizeof lens / sizeof lens[0])];
}

/* A value and its length (one slot). */
static void value_arg(const void **p, size_t *len)
{
    if (!fz_take()) {
        *p = one_in(3) ? NULL : value_buf;
        *len = *p == NULL ? 0 : rnd_below(sizeof value_buf + 1);
        return;
    }
    switch (rnd_below(3)) {
    case 0:
        *p = NULL;
        *len = 1 + rnd_below(sizeof value_buf);
        F.codes |= C_EINVAL;
        note("value NULL, len %zu", *len);
        break;
    case 1:
        *p = value_buf;
        *len = huge_len();
        F.codes |= C_EFBIG;
        note("value of %zu bytes", *len);
        break;
    default: /* both: either code is documented */
        *p = NULL;
        *len = huge_len();
        F.codes |= C_EINVAL | C_EFBIG;
        note("value NULL, len %zu", *len);
    }
}

/* A ttl: required (1 to DSS_MAX_TTL_MS) or optional (0 allowed). */
static uint64_t ttl_arg(int required)
{
    if (!fz_take()) {
        switch (rnd_below(4)) {
        case 0: return required ? 1 : 0;
        case 1: return DSS_MAX_TTL_MS;
        case 2: return 1;
        default: return 1 + rnd() % DSS_MAX_TTL_MS;
        }
    }
    static const uint64_t bad[] = {DSS_MAX_TTL_MS + 1, UINT64_MAX, (uint64_t)INT64_MAX,
                                   (uint64_t)INT64_MIN, (uint64_t)-1000};
    uint64_t v = required && one_in(3)  ? 0
                 : one_in(3)            ? DSS_MAX_TTL_MS + 1 + rnd() % ((uint64_t)1 << 40)
                                        : bad[rnd_below(sizeof bad / sizeof bad[0])];
    F.codes |= C_EINVAL;
    note("ttl_ms %" PRIu64 " (%" PRId64 ")", v, (int64_t)v);
    return v;
}

/* Any 64-bit number: timeouts, tokens, versions, deltas (never bad). */
static uint64_t any64(void)
{
    static const uint64_t edge[] = {0, 1, UINT64_MAX, UINT64_MAX - 1, (uint64_t)INT64_MAX,
                                    (uint64_t)INT64_MIN};
    return one_in(2) ? edge[rnd_below(sizeof edge / sizeof edge[0])] : rnd();
}

/* Semaphore permits and capacity (one slot). */
static void sem_nums(uint32_t *permits, uint32_t *capacity)
{
    static const uint32_t caps[] = {1, 2, 100, INT32_MAX};
    uint32_t cap = caps[rnd_below(4)];
    if (!fz_take()) {
        *capacity = cap;
        *permits = one_in(3) ? cap : 1 + (uint32_t)rnd_below(cap);
        return;
    }
    F.codes |= C_EINVAL;
    switch (rnd_below(5)) {
    case 0: *capacity = 0; *permits = (uint32_t)rnd(); break;
    case 1: *capacity = (uint32_t)INT32_MAX + 1 + (uint32_t)rnd_below(INT32_MAX); *permits = 1; break;
    case 2: *capacity = cap; *permits = 0; break;
    case 3: *capacity = cap; *permits = cap + 1 + (uint32_t)rnd_below(UINT32_MAX - cap); break;
    default: *capacity = UINT32_MAX; *permits = UINT32_MAX;
    }
    note("permits %" PRIu32 ", capacity %" PRIu32, *permits, *capacity);
}

/* A page size limit for dss_kv_list_keys(). */
static size_t limit_arg(void)
{
    if (!fz_take())
        return one_in(3) ? DSS_MAX_BATCH : 1 + rnd_below(100);
    static const size_t bad[] = {0, (size_t)DSS_MAX_BATCH + 1, SIZE_MAX, SIZE_MAX / 2};
    size_t v = one_in(4) ? (size_t)DSS_MAX_BATCH + 1 + rnd_below((size_t)1 << 20)
                         : bad[rnd_below(4)];
    F.codes |= C_EINVAL;
    note("limit %zu", v);
    return v;
}

/* A required output pointer: NULL is bad. */
static void *req_out(const char *name)
{
    if (!fz_take())
        return out_slot();
    F.codes |= C_EINVAL;
    note("%s NULL", name);
    return NULL;
}

/* An optional output pointer (NULL allowed). */
static void *opt_out(void)
{
    return one_in(3) ? NULL : out_slot();
}

/* A count above DSS_MAX_BATCH. */
static size_t huge_count(void)
{
    static const size_t n[] = {(size_t)DSS_MAX_BATCH + 1, SIZE_MAX, SIZE_MAX / 2,
                               SIZE_MAX / sizeof(char *) + 1};
    return one_in(3) ? (size_t)DSS_MAX_BATCH + 1 + rnd_below((size_t)1 << 24) : n[rnd_below(4)];
}

/* An array of ids or keys of kind k and its count (one slot); `distinct`:
 * a duplicate is bad. Good arrays have 1 to 4 strings. */
static const char **array_arg(const struct skind *k, int distinct, size_t *n, const char *name)
{
    static const char *arrays[2][8];
    static unsigned next;
    const char **a = arrays[next++ % 2];
    size_t len = 1 + rnd_below(4);
    for (size_t i = 0; i < 4; i++) {
        int dup;
        do {
            a[i] = good_str(k);
            dup = 0;
            for (size_t j = 0; j < i; j++)
                dup |= strcmp(a[i], a[j]) == 0;
        } while (dup); /* distinct in any case: only a bad one has duplicates */
    }
    *n = len;
    if (!fz_take())
        return a;
    F.codes |= C_EINVAL;
    switch (rnd_below(distinct ? 4 : 3)) {
    case 0: {
        static const size_t counts[] = {1, 2, DSS_MAX_BATCH, (size_t)DSS_MAX_BATCH + 1, SIZE_MAX,
                                        SIZE_MAX / 2};
        *n = counts[rnd_below(6)];
        note("%s NULL, n %zu", name, *n);
        return NULL;
    }
    case 1: /* the count must be refused before the array is read */
        *n = huge_count();
        note("%s of %zu, n %zu", name, len, *n);
        return a;
    case 2: {
        size_t i = rnd_below(len);
        char elem[32];
        snprintf(elem, sizeof elem, "%s[%zu]", name, i);
        a[i] = bad_str(k, elem);
        return a;
    }
    default: {
        if (len == 1)
            *n = len = 2;
        size_t i = rnd_below(len), j = (i + 1 + rnd_below(len - 1)) % len;
        if (one_in(2)) {
            a[j] = a[i]; /* the same pointer */
        } else {
            char *copy = str_slot(); /* the same bytes */
            strcpy(copy, a[i]);
            a[j] = copy;
        }
        note("%s[%zu] == %s[%zu]", name, j, name, i);
        return a;
    }
    }
}

/* dss_kv_set_many()'s values and lens for n keys (one slot). */
static void values_arg(size_t n, const void *const **values, const size_t **lens)
{
    static const void *v[8];
    static size_t l[8];
    size_t m = n < 8 ? n : 8;
    for (size_t i = 0; i < m; i++) {
        v[i] = one_in(3) ? NULL : value_buf;
        l[i] = v[i] == NULL ? 0 : rnd_below(sizeof value_buf + 1);
    }
    *values = v;
    *lens = l;
    if (!fz_take())
        return;
    size_t i = rnd_below(m);
    switch (rnd_below(4)) {
    case 0:
        *values = NULL;
        F.codes |= C_EINVAL;
        note("values NULL");
        break;
    case 1:
        *lens = NULL;
        F.codes |= C_EINVAL;
        note("lens NULL");
        break;
    case 2:
        v[i] = NULL;
        l[i] = 1 + rnd_below(64);
        F.codes |= C_EINVAL;
        note("values[%zu] NULL, lens[%zu] %zu", i, i, l[i]);
        break;
    default:
        v[i] = value_buf;
        l[i] = huge_len();
        F.codes |= C_EFBIG;
        note("lens[%zu] %zu", i, l[i]);
    }
}

/* ---- one random call of each function ---- */

/* dss_init: only its handle can be bad (the connection string comes from
 * the environment; see test_init_environment). */
static void fz_init(void)
{
    fz_begin("dss_init", 1);
    assert_true(fz_take());
    F.codes |= C_EINVAL;
    note("handle NULL");
    fz_end(dss_init(NULL));
}

static const char *const bad_conninfos[] = {
    "nosuchkey=1", "=", "abc", "host='unterminated", "port=notanumber", "port=0",
    "port=99999999", "sslmode=bogus", "connect_timeout=abc", "target_session_attrs=bogus",
    "postgresql://[::1", "postgresql://%zz/", "keepalives=x", "channel_binding=x",
};
#define N_BAD_CONNINFOS (sizeof bad_conninfos / sizeof bad_conninfos[0])

static void fz_init_conninfo(void)
{
    fz_begin("dss_init_conninfo", 2);
    /* A good handle for init: zeroed, or any bytes (never registered). */
    struct dss_handle target = {0}, *hd = &target;
    if (fz_take()) {
        hd = NULL;
        F.codes |= C_EINVAL;
        note("handle NULL");
    } else if (one_in(2)) {
        uint64_t bytes = rnd();
        memcpy(&target, &bytes, sizeof target < sizeof bytes ? sizeof target : sizeof bytes);
    }
    const char *conninfo = db_conninfo;
    if (fz_take()) {
        F.codes |= C_EINVAL;
        char *p = str_slot();
        switch (rnd_below(4)) {
        case 0:
            conninfo = NULL;
            note("conninfo NULL");
            break;
        case 1: {
            size_t i = rnd_below(N_BAD_UTF8);
            snprintf(p, STR_SIZE, "%s application_name=a%sb", db_conninfo, bad_utf8[i]);
            conninfo = p;
            note("conninfo with bad_utf8[%zu]", i);
            break;
        }
        case 2: {
            const char *bc = bad_conninfos[rnd_below(N_BAD_CONNINFOS)];
            if (strncmp(bc, "postgresql:", 11) == 0 || one_in(2))
                snprintf(p, STR_SIZE, "%s", bc); /* alone (a URI always) */
            else
                snprintf(p, STR_SIZE, "%s %s", db_conninfo, bc);
            conninfo = p;
            note("conninfo '%s'", p);
            break;
        }
        default: {
            size_t len = 1 + rnd_below(200);
            for (size_t j = 0; j < len; j++)
                p[j] = (char)(1 + rnd_below(255));
            p[rnd_below(len)] = (char)0xFF;
            p[len] = '\0';
            conninfo = p;
            note("conninfo of %zu random bytes", len);
        }
        }
    }
    fz_end(dss_init_conninfo(hd, conninfo));
    if (hd != NULL && hd->dh_conn != NULL)
        fail_msg("dss_init_conninfo failed but left dh_conn = %p (%s)", hd->dh_conn, F.what);
}

static void fz_fini(void)
{
    fz_begin("dss_fini", 1);
    assert_true(fz_take());
    struct dss_handle *bad = bad_handle();
    if (bad == NULL) {
        dss_fini(NULL);
    } else {
        struct dss_handle copy = *bad; /* dss_fini clears it */
        dss_fini(&copy);
        if (copy.dh_conn != NULL)
            fail_msg("dss_fini(%s) left dh_conn = %p", F.what, copy.dh_conn);
    }
    assert_outputs_untouched(0);
}

/* The calls that take nothing, or anything: never a failure. */
static void fz_no_args(void)
{
    fz_begin("dss_last_error", 0);
    const char *e = dss_last_error();
    assert_non_null(e);
    assert_true(strlen(e) < 100000);
    fz_begin("dss_version", 0);
    assert_string_equal(dss_version(), DSS_PC_VERSION);
    fz_begin("dss_kv_free_keys", 0);
    dss_kv_free_keys(NULL, (size_t)any64());
    fz_begin("dss_holders_free", 0);
    dss_holders_free(NULL, (size_t)any64());
    fz_begin("dss_lock_info_clear", 0);
    dss_lock_info_clear(NULL);
    struct dss_lock_info zero, info;
    memset(&zero, 0, sizeof zero);
    memset(&info, 0, sizeof info);
    dss_lock_info_clear(&info);
    dss_lock_info_clear(&info);
    assert_memory_equal(&info, &zero, sizeof info);
    assert_outputs_untouched(0);
}

static void fz_kv_set(void)
{
    fz_begin("dss_kv_set", 4);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    const void *v;
    size_t len;
    value_arg(&v, &len);
    fz_end(dss_kv_set(hd, b, k, v, len));
}

static void fz_kv_set_ttl(void)
{
    fz_begin("dss_kv_set_ttl", 5);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    const void *v;
    size_t len;
    value_arg(&v, &len);
    uint64_t ttl = ttl_arg(1);
    fz_end(dss_kv_set_ttl(hd, b, k, v, len, ttl));
}

static void fz_kv_get(void)
{
    fz_begin("dss_kv_get", 5);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    void **v = req_out("value");
    size_t *len = req_out("len");
    fz_end(dss_kv_get(hd, b, k, v, len));
}

static void fz_kv_get_version(void)
{
    fz_begin("dss_kv_get_version", 5);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    void **v = req_out("value");
    size_t *len = req_out("len");
    fz_end(dss_kv_get_version(hd, b, k, v, len, opt_out()));
}

static void fz_kv_delete(void)
{
    fz_begin("dss_kv_delete", 3);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    fz_end(dss_kv_delete(hd, b, k));
}

static void fz_kv_exists(void)
{
    fz_begin("dss_kv_exists", 3);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    fz_end(dss_kv_exists(hd, b, k));
}

static void fz_kv_list_keys(void)
{
    fz_begin("dss_kv_list_keys", 7);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket");
    const char *prefix = str_arg(&KEY_OR_NULL, "prefix");
    const char *cursor = str_arg(&KEY_OR_NULL, "cursor");
    size_t limit = limit_arg();
    char ***keys = req_out("keys");
    size_t *n = req_out("n");
    fz_end(dss_kv_list_keys(hd, b, prefix, cursor, limit, keys, n, opt_out()));
}

static void fz_kv_increment(void)
{
    fz_begin("dss_kv_increment", 3);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    fz_end(dss_kv_increment(hd, b, k, (int64_t)any64(), opt_out()));
}

static void fz_kv_cas(void)
{
    fz_begin("dss_kv_cas", 4);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    const void *v;
    size_t len;
    value_arg(&v, &len);
    fz_end(dss_kv_cas(hd, b, k, any64(), v, len, opt_out()));
}

static void fz_kv_get_many(void)
{
    fz_begin("dss_kv_get_many", 4);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket");
    size_t n;
    const char **keys = array_arg(&KEY, 0, &n, "keys");
    void **values = out_slot();
    size_t *lens = out_slot();
    if (fz_take()) {
        F.codes |= C_EINVAL;
        switch (rnd_below(3)) {
        case 0: values = NULL; note("values NULL"); break;
        case 1: lens = NULL; note("lens NULL"); break;
        default: values = NULL; lens = NULL; note("values and lens NULL");
        }
    }
    fz_end(dss_kv_get_many(hd, b, keys, n, values, lens));
}

static void fz_kv_set_many(void)
{
    fz_begin("dss_kv_set_many", 4);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket");
    size_t n;
    const char **keys = array_arg(&KEY, 1, &n, "keys");
    const void *const *values;
    const size_t *lens;
    values_arg(n, &values, &lens);
    fz_end(dss_kv_set_many(hd, b, keys, values, lens, n));
}

static void fz_kv_delete_many(void)
{
    fz_begin("dss_kv_delete_many", 3);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket");
    size_t n;
    const char **keys = array_arg(&KEY, 1, &n, "keys");
    fz_end(dss_kv_delete_many(hd, b, keys, n));
}

static void fz_kv_set_fenced(void)
{
    fz_begin("dss_kv_set_fenced", 5);
    struct dss_handle *hd = handle_arg();
    const char *b = str_arg(&KEY, "bucket"), *k = str_arg(&KEY, "key");
    const void *v;
    size_t len;
    value_arg(&v, &len);
    const char *id = str_arg(&ID, "lock_id");
    fz_end(dss_kv_set_fenced(hd, b, k, v, len, id, any64()));
}

static void fz_lock(void)
{
    fz_begin("dss_lock", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER, "lock_owner");
    fz_end(dss_lock(hd, id, owner));
}

static void fz_lock_lease(void)
{
    fz_begin("dss_lock_lease", 4);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER, "lock_owner");
    uint64_t ttl = ttl_arg(1);
    fz_end(dss_lock_lease(hd, id, owner, ttl, opt_out()));
}

static void fz_lock_wait(void)
{
    fz_begin("dss_lock_wait", 4);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER, "lock_owner");
    uint64_t ttl = ttl_arg(0);
    fz_end(dss_lock_wait(hd, id, owner, ttl, any64(), opt_out()));
}

static void fz_lock_refresh(void)
{
    fz_begin("dss_lock_refresh", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER, "lock_owner");
    fz_end(dss_lock_refresh(hd, id, owner));
}

static void fz_unlock(void)
{
    fz_begin("dss_unlock", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER_OR_NULL, "lock_owner");
    fz_end(dss_unlock(hd, id, owner));
}

static void fz_lock_status(void)
{
    fz_begin("dss_lock_status", 2);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id");
    fz_end(dss_lock_status(hd, id, opt_out(), opt_out()));
}

static void fz_lock_info(void)
{
    fz_begin("dss_lock_info", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id");
    fz_end(dss_lock_info(hd, id, req_out("info")));
}

static void fz_lock_check(void)
{
    fz_begin("dss_lock_check", 2);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id");
    fz_end(dss_lock_check(hd, id, any64()));
}

static void fz_lock_many(void)
{
    fz_begin("dss_lock_many", 4);
    struct dss_handle *hd = handle_arg();
    size_t n;
    const char **ids = array_arg(&ID, 1, &n, "lock_ids");
    const char *owner = str_arg(&OWNER, "lock_owner");
    uint64_t ttl = ttl_arg(0);
    fz_end(dss_lock_many(hd, ids, n, owner, ttl, opt_out()));
}

static void fz_unlock_many(void)
{
    fz_begin("dss_unlock_many", 3);
    struct dss_handle *hd = handle_arg();
    size_t n;
    const char **ids = array_arg(&ID, 1, &n, "lock_ids");
    fz_end(dss_unlock_many(hd, ids, n, str_arg(&OWNER, "lock_owner")));
}

static void fz_lock_refresh_many(void)
{
    fz_begin("dss_lock_refresh_many", 3);
    struct dss_handle *hd = handle_arg();
    size_t n;
    const char **ids = array_arg(&ID, 1, &n, "lock_ids");
    fz_end(dss_lock_refresh_many(hd, ids, n, str_arg(&OWNER, "lock_owner")));
}

static void fz_owner_self(void)
{
    char self[DSS_MAX_LOCK_OWNER_LEN + 1];
    assert_rc(dss_owner_self(self, sizeof self), 0);
    size_t need = strlen(self) + 1;
    fz_begin("dss_owner_self", 2);
    char *buf = out_slot();
    if (fz_take()) {
        buf = NULL;
        F.codes |= C_EINVAL;
        note("buf NULL");
    }
    size_t len;
    if (fz_take()) {
        len = rnd_below(need); /* 0 .. need - 1 */
        F.codes |= C_ERANGE;
        note("len %zu, %zu needed", len, need);
    } else {
        len = one_in(2) ? need : one_in(2) ? OUT_SIZE : SIZE_MAX;
    }
    fz_end(dss_owner_self(buf, len));
}

static void fz_lock_clean(void)
{
    fz_begin("dss_lock_clean", 2);
    struct dss_handle *hd = handle_arg();
    const char *prefix = str_arg(&CLEAN_PREFIX, "owner_prefix");
    fz_end(dss_lock_clean(hd, prefix, opt_out()));
}

static void fz_lock_shared(void)
{
    fz_begin("dss_lock_shared", 4);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER, "lock_owner");
    uint64_t ttl = ttl_arg(0);
    fz_end(dss_lock_shared(hd, id, owner, ttl, any64(), opt_out()));
}

static void fz_lock_shared_refresh(void)
{
    fz_begin("dss_lock_shared_refresh", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER, "lock_owner");
    fz_end(dss_lock_shared_refresh(hd, id, owner));
}

static void fz_unlock_shared(void)
{
    fz_begin("dss_unlock_shared", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER_OR_NULL, "lock_owner");
    fz_end(dss_unlock_shared(hd, id, owner));
}

static void fz_lock_downgrade(void)
{
    fz_begin("dss_lock_downgrade", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id"), *owner = str_arg(&OWNER, "lock_owner");
    fz_end(dss_lock_downgrade(hd, id, owner, opt_out()));
}

static void fz_sem_acquire(void)
{
    fz_begin("dss_sem_acquire", 5);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "sem_id"), *owner = str_arg(&OWNER, "owner");
    uint32_t permits, capacity;
    sem_nums(&permits, &capacity);
    uint64_t ttl = ttl_arg(1);
    fz_end(dss_sem_acquire(hd, id, owner, permits, capacity, ttl, any64(), opt_out()));
}

static void fz_sem_refresh(void)
{
    fz_begin("dss_sem_refresh", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "sem_id"), *owner = str_arg(&OWNER, "owner");
    fz_end(dss_sem_refresh(hd, id, owner));
}

static void fz_sem_release(void)
{
    fz_begin("dss_sem_release", 3);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "sem_id"), *owner = str_arg(&OWNER_OR_NULL, "owner");
    fz_end(dss_sem_release(hd, id, owner));
}

static void fz_lock_holders(void)
{
    fz_begin("dss_lock_holders", 4);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "lock_id");
    struct dss_holder **holders = req_out("holders");
    size_t *n = req_out("n");
    fz_end(dss_lock_holders(hd, id, holders, n));
}

static void fz_sem_holders(void)
{
    fz_begin("dss_sem_holders", 4);
    struct dss_handle *hd = handle_arg();
    const char *id = str_arg(&ID, "sem_id");
    struct dss_holder **holders = req_out("holders");
    size_t *n = req_out("n");
    fz_end(dss_sem_holders(hd, id, holders, n));
}

/* Every exported function, with what fuzzes it. */
static const struct target {
    const char *name;
    void (*fuzz)(void);
} targets[] = {
    {"dss_init", fz_init},
    {"dss_init_conninfo", fz_init_conninfo},
    {"dss_fini", fz_fini},
    {"dss_last_error", fz_no_args},
    {"dss_version", fz_no_args},
    {"dss_kv_set", fz_kv_set},
    {"dss_kv_set_ttl", fz_kv_set_ttl},
    {"dss_kv_get", fz_kv_get},
    {"dss_kv_get_version", fz_kv_get_version},
    {"dss_kv_delete", fz_kv_delete},
    {"dss_kv_exists", fz_kv_exists},
    {"dss_kv_list_keys", fz_kv_list_keys},
    {"dss_kv_free_keys", fz_no_args},
    {"dss_kv_increment", fz_kv_increment},
    {"dss_kv_cas", fz_kv_cas},
    {"dss_kv_get_many", fz_kv_get_many},
    {"dss_kv_set_many", fz_kv_set_many},
    {"dss_kv_delete_many", fz_kv_delete_many},
    {"dss_kv_set_fenced", fz_kv_set_fenced},
    {"dss_lock", fz_lock},
    {"dss_lock_lease", fz_lock_lease},
    {"dss_lock_wait", fz_lock_wait},
    {"dss_lock_refresh", fz_lock_refresh},
    {"dss_unlock", fz_unlock},
    {"dss_lock_status", fz_lock_status},
    {"dss_lock_info", fz_lock_info},
    {"dss_lock_info_clear", fz_no_args},
    {"dss_lock_check", fz_lock_check},
    {"dss_lock_many", fz_lock_many},
    {"dss_unlock_many", fz_unlock_many},
    {"dss_lock_refresh_many", fz_lock_refresh_many},
    {"dss_owner_self", fz_owner_self},
    {"dss_lock_clean", fz_lock_clean},
    {"dss_lock_shared", fz_lock_shared},
    {"dss_lock_shared_refresh", fz_lock_shared_refresh},
    {"dss_unlock_shared", fz_unlock_shared},
    {"dss_lock_downgrade", fz_lock_downgrade},
    {"dss_sem_acquire", fz_sem_acquire},
    {"dss_sem_refresh", fz_sem_refresh},
    {"dss_sem_release", fz_sem_release},
    {"dss_lock_holders", fz_lock_holders},
    {"dss_sem_holders", fz_sem_holders},
    {"dss_holders_free", fz_no_args},
};
#define N_TARGETS (sizeof targets / sizeof targets[0])

/* ---- the database fingerprint ---- */

#define SNAP_SIZE 8192

static void snapshot(char *out)
{
    assert_int_equal(ct_db_snapshot(db_conninfo, out, SNAP_SIZE), 0);
    assert_true(strlen(out) > 0);
}

static void assert_same_snapshot(const char *before, const char *what)
{
    char after[SNAP_SIZE];
    snapshot(after);
    if (strcmp(before, after) != 0)
        fail_msg("%s changed the database (seed %" PRIu64 "):\n  before: %s\n  after:  %s", what,
                 seed, before, after);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    const char *s = getenv("DSS_FUZZ_SEED");
    seed = s != NULL && *s != '\0' ? strtoull(s, NULL, 0)
                                   : (uint64_t)ct_wall_us() ^ ((uint64_t)getpid() << 32);
    const char *it = getenv("DSS_FUZZ_ITERATIONS");
    if (it != NULL && *it != '\0')
        iterations = strtoul(it, NULL, 0);
    printf("fuzz seed %" PRIu64 " (replay: DSS_FUZZ_SEED=%" PRIu64 "), %lu calls per function\n",
           seed, seed, iterations);

    snprintf(db_name, sizeof db_name, "dss_ctest_badinput_%ld", (long)getpid());
    if (ct_create_db(db_name, DSS_SQL_DIR, db_conninfo, sizeof db_conninfo) != 0)
        return -1;
    ct_open_with(&h, db_conninfo);
    /* A handle finalised after h was opened: its address is not h's. */
    struct dss_handle gone;
    ct_open_with(&gone, db_conninfo);
    stale = gone;
    dss_fini(&gone);

    huge_str = malloc(HUGE_LEN + 1);
    assert_non_null(huge_str);
    memset(huge_str, 'h', HUGE_LEN);
    huge_str[HUGE_LEN] = '\0';
    long page = sysconf(_SC_PAGESIZE);
    size_t span = ((STR_SIZE + (size_t)page - 1) / (size_t)page + 1) * (size_t)page;
    char *region = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(region != MAP_FAILED);
    memset(region, 'g', span);
    guard_end = region + span - (size_t)page;
    assert_int_equal(mprotect(guard_end, (size_t)page, PROT_NONE), 0);
    memset(value_buf, 'v', sizeof value_buf);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dss_fini(&h);
    free(huge_str);
    return ct_drop_db(db_name);
}

/* ---- the tests ---- */

/* The targets are exactly the functions libdss.so exports. */
static void test_covers_every_export(void **state)
{
    (void)state;
    char out[65536];
    char *argv[] = {(char *)NM_PROGRAM, (char *)"-D", (char *)"--defined-only",
                    (char *)DSS_LIBRARY, NULL};
    assert_int_equal(ct_run(argv, 60, out, sizeof out), 0);
    size_t exported = 0;
    char missing[4096] = "";
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char addr[64], type[8], name[256];
        if (sscanf(line, "%63s %7s %255s", addr, type, name) != 3 || strcmp(type, "T") != 0)
            continue;
        exported++;
        int found = 0;
        for (size_t i = 0; i < N_TARGETS; i++)
            found |= strcmp(targets[i].name, name) == 0;
        if (!found)
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %s", name);
    }
    if (missing[0] != '\0')
        fail_msg("exported by %s but not fuzzed here:%s", DSS_LIBRARY, missing);
    assert_int_equal(exported, N_TARGETS); /* and the names in targets are distinct */
    printf("%zu exported functions, all covered\n", exported);
}

/* Runs iterations random calls of every function; the database must be
 * the same afterwards. */
static void run_fuzz(const char *part)
{
    char before[SNAP_SIZE];
    snapshot(before);
    rng_state = seed;
    unsigned long first = F.calls;
    double t0 = ct_now_ms();
    for (unsigned long i = 0; i < iterations; i++)
        for (size_t t = 0; t < N_TARGETS; t++)
            targets[t].fuzz();
    printf("%s: %lu bad calls in %.0f ms\n", part, F.calls - first, ct_now_ms() - t0);
    assert_same_snapshot(before, part);
    /* The live handle was never harmed. */
    assert_rc(dss_kv_exists(&h, "b", "k"), 0);
}

static void test_fuzz(void **state)
{
    (void)state;
    run_fuzz("fuzz");
}

/* The same calls while the database refuses connections: any call that
 * reached the database would get -ECOMM instead. */
static void test_fuzz_offline(void **state)
{
    (void)state;
    assert_rc(dss_kv_exists(&h, "b", "k"), 0); /* a pooled session */
    assert_int_equal(ct_db_allow_connections(db_name, 0), 0);
    F.offline = 1;
    rng_state = seed;
    unsigned long first = F.calls;
    for (unsigned long i = 0; i < iterations; i++)
        for (size_t t = 0; t < N_TARGETS; t++)
            targets[t].fuzz();
    F.offline = 0;
    printf("offline: %lu bad calls, none sent\n", F.calls - first);
    /* The check itself works: a good call now fails. */
    assert_rc(dss_kv_exists(&h, "b", "k"), -ECOMM);
    assert_int_equal(ct_db_allow_connections(db_name, 1), 0);
    /* The pool, which saw the server refuse, reconnects in the background
     * (after up to half its pool_timeout): the handle comes back by itself. */
    int rc = -ECOMM;
    for (double t0 = ct_now_ms(); rc == -ECOMM && ct_now_ms() - t0 < 30000; ct_nap_ms(20))
        rc = dss_kv_exists(&h, "b", "k");
    assert_rc(rc, 0);
}

/* Bad knobs and connection strings from the environment and the config
 * file: -EINVAL, the handle left NULL. */
static void test_init_environment(void **state)
{
    (void)state;
    static const struct {
        const char *var, *value;
    } bad[] = {
        {"PHOBOS_DSS_pool_size", "0"},          {"PHOBOS_DSS_pool_size", "1025"},
        {"PHOBOS_DSS_pool_size", "-1"},         {"PHOBOS_DSS_pool_size", "abc"},
        {"PHOBOS_DSS_pool_size", "4294967297"}, {"PHOBOS_DSS_pool_size", "1e3"},
        {"PHOBOS_DSS_pool_size", "8\xff"},      {"PHOBOS_DSS_pool_timeout_ms", "0"},
        {"PHOBOS_DSS_pool_timeout_ms", "-5"},   {"PHOBOS_DSS_pool_timeout_ms", "x"},
        {"PHOBOS_DSS_call_timeout_ms", "0"},    {"PHOBOS_DSS_call_timeout_ms", "18446744073709551616"},
        {"PHOBOS_DSS_call_timeout_ms", "\xed\xa0\x80"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i].var, bad[i].value, 1);
        struct dss_handle x = {(void *)0x1234};
        int rc = dss_init_conninfo(&x, db_conninfo);
        unsetenv(bad[i].var);
        if (rc != -EINVAL || x.dh_conn != NULL)
            fail_msg("%s='%s': dss_init_conninfo = %d (%s), dh_conn %p; %s", bad[i].var,
                     bad[i].value, rc, ct_errname(rc), x.dh_conn, dss_last_error());
    }
    /* Huge but valid timeouts are accepted (or refused), nothing else. */
    static const char *const huge[] = {"18446744073709551615", "9223372036854775807"};
    for (size_t i = 0; i < 2; i++) {
        for (int k = 0; k < 2; k++) {
            const char *var = k ? "PHOBOS_DSS_call_timeout_ms" : "PHOBOS_DSS_pool_timeout_ms";
            setenv(var, huge[i], 1);
            struct dss_handle x = {0};
            int rc = dss_init_conninfo(&x, db_conninfo);
            unsetenv(var);
            if (rc != 0 && rc != -EINVAL)
                fail_msg("%s=%s: dss_init_conninfo = %d (%s): %s", var, huge[i], rc,
                         ct_errname(rc), dss_last_error());
            if (rc == 0)
                assert_rc(dss_kv_exists(&x, "b", "k"), 0);
            dss_fini(&x);
        }
    }

    /* dss_init: no string configured, a bad one, config files of garbage. */
    char cfg[128];
    snprintf(cfg, sizeof cfg, "/tmp/dss-badinput-%ld.conf", (long)getpid());
    unsetenv("PHOBOS_DSS_connect_string");
    rng_state = seed ^ 0xC0FFEE;
    for (int i = 0; i < 40; i++) {
        FILE *f = fopen(cfg, "wb");
        assert_non_null(f);
        if (i == 0) {
            /* missing: nothing written */
        } else if (i % 3 == 0) {
            fprintf(f, "[dss]\nconnect_string = %s application_name=\xff\xfe\n", db_conninfo);
        } else if (i % 3 == 1) {
            fprintf(f, "[dss]\nconnect_string = nosuchkey=%d\n", i);
        } else {
            size_t len = rnd_below(4096);
            for (size_t j = 0; j < len; j++)
                fputc((int)rnd_below(256), f);
        }
        fclose(f);
        setenv("PHOBOS_CFG_FILE", i == 0 ? "/nonexistent/phobos.conf" : cfg, 1);
        struct dss_handle x = {0};
        int rc = dss_init(&x);
        if (rc != -EINVAL || x.dh_conn != NULL)
            fail_msg("config file %d: dss_init = %d (%s), dh_conn %p; %s", i, rc,
                     ct_errname(rc), x.dh_conn, dss_last_error());
    }
    unlink(cfg);
    static const char *const bad_strings[] = {"nosuchkey=1", "host='x", "port=abc",
                                              "\xff\xfe", "sslmode=\xc0\xaf"};
    for (size_t i = 0; i < sizeof bad_strings / sizeof bad_strings[0]; i++) {
        setenv("PHOBOS_DSS_connect_string", bad_strings[i], 1);
        struct dss_handle x = {0};
        int rc = dss_init(&x);
        if (rc != -EINVAL || x.dh_conn != NULL)
            fail_msg("PHOBOS_DSS_connect_string '%s': dss_init = %d (%s); %s", bad_strings[i],
                     rc, ct_errname(rc), dss_last_error());
    }
    unsetenv("PHOBOS_DSS_connect_string");
    unsetenv("PHOBOS_CFG_FILE");
}

/* A random valid id, owner or key (never NULL). */
static const char *valid(const struct skind *k)
{
    char *p = str_slot();
    size_t len = good_len(k);
    valid_str(p, len == 0 && !k->empty_ok ? 1 : len);
    return p;
}

/* Valid input naming objects that do not exist (the database is empty of
 * them): the documented code, outputs untouched, nothing changed. */
static void test_absent_objects(void **state)
{
    (void)state;
    char before[SNAP_SIZE];
    snapshot(before);
    rng_state = seed ^ 0xAB5E17;
    unsigned long calls = 0;
    for (unsigned long it = 0; it < iterations; it++) {
        fz_begin("absent", 0);
        const char *id = valid(&ID), *owner = valid(&OWNER), *b = valid(&KEY), *k = valid(&KEY);
        const char *maybe_owner = one_in(2) ? owner : NULL;
        const char *ids[3] = {valid(&ID), valid(&ID), valid(&ID)};
        size_t nids = 1 + rnd_below(3);
        if ((nids > 1 && strcmp(ids[0], ids[1]) == 0) ||
            (nids > 2 && (strcmp(ids[0], ids[2]) == 0 || strcmp(ids[1], ids[2]) == 0)))
            nids = 1;
        char *o = NULL;
        struct timeval tv;
        struct dss_lock_info info;
        struct dss_holder *holders;
        void *value;
        size_t len, n;
        uint64_t version;
        assert_rc(dss_lock_refresh(&h, id, owner), -ENOLCK);
        assert_rc(dss_unlock(&h, id, maybe_owner), -ENOLCK);
        assert_rc(dss_lock_status(&h, id, &o, &tv), -ENOLCK);
        assert_null(o);
        assert_rc(dss_lock_info(&h, id, &info), -ENOLCK);
        assert_rc(dss_lock_check(&h, id, any64()), -ESTALE);
        assert_rc(dss_unlock_many(&h, ids, nids, owner), -ENOLCK);
        assert_rc(dss_lock_refresh_many(&h, ids, nids, owner), -ENOLCK);
        assert_rc(dss_lock_shared_refresh(&h, id, owner), -ENOLCK);
        assert_rc(dss_unlock_shared(&h, id, maybe_owner), -ENOLCK);
        assert_rc(dss_lock_downgrade(&h, id, owner, NULL), -ENOLCK);
        assert_rc(dss_sem_refresh(&h, id, owner), -ENOLCK);
        assert_rc(dss_sem_release(&h, id, maybe_owner), -ENOLCK);
        assert_rc(dss_lock_holders(&h, id, &holders, &n), -ENOLCK);
        assert_rc(dss_sem_holders(&h, id, &holders, &n), -ENOLCK);
        size_t released = 77;
        assert_rc(dss_lock_clean(&h, owner[0] ? owner : "x", &released), 0);
        assert_int_equal(released, 0);
        assert_rc(dss_kv_get(&h, b, k, &value, &len), -ENOENT);
        assert_rc(dss_kv_get_version(&h, b, k, &value, &len, &version), -ENOENT);
        assert_rc(dss_kv_exists(&h, b, k), 0);
        assert_rc(dss_kv_delete(&h, b, k), 0);
        const char *keys[2] = {k, valid(&KEY)};
        size_t nkeys = strcmp(keys[0], keys[1]) == 0 ? 1 : 2;
        assert_rc(dss_kv_delete_many(&h, b, keys, nkeys), 0);
        void *values[2] = {value_buf, value_buf};
        size_t lens[2] = {5, 5};
        assert_rc(dss_kv_get_many(&h, b, keys, nkeys, values, lens), 0);
        assert_null(values[0]);
        assert_int_equal(lens[0], 0);
        char **page = (char **)value_buf, *next = (char *)value_buf;
        assert_rc(dss_kv_list_keys(&h, b, one_in(2) ? NULL : valid(&KEY_OR_NULL),
                                   one_in(2) ? NULL : valid(&KEY_OR_NULL), 1 + rnd_below(100),
                                   &page, &n, &next),
                  0);
        assert_int_equal(n, 0);
        assert_null(page);
        assert_null(next);
        assert_rc(dss_kv_cas(&h, b, k, 1 + rnd() % UINT64_MAX, value_buf, 3, NULL), -EAGAIN);
        assert_rc(dss_kv_set_fenced(&h, b, k, value_buf, 3, id, any64()), -ESTALE);
        /* Empty batches: nothing to do. */
        size_t conflict = 99;
        assert_rc(dss_lock_many(&h, one_in(2) ? NULL : ids, 0, owner, 0, &conflict), 0);
        assert_int_equal(conflict, 99);
        assert_rc(dss_unlock_many(&h, NULL, 0, owner), 0);
        assert_rc(dss_lock_refresh_many(&h, NULL, 0, owner), 0);
        assert_rc(dss_kv_set_many(&h, b, NULL, NULL, NULL, 0), 0);
        assert_rc(dss_kv_get_many(&h, b, NULL, 0, NULL, NULL), 0);
        assert_rc(dss_kv_delete_many(&h, b, NULL, 0), 0);
        calls += 37;
    }
    printf("absent objects: %lu calls\n", calls);
    assert_same_snapshot(before, "calls on absent objects");
}

/* Requests refused because of what exists: documented codes, and the
 * refused call changes nothing. */
static void test_refused_on_existing(void **state)
{
    (void)state;
    uint64_t tl, ts1, tsem, v;
    assert_rc(dss_lock(&h, "X", "keeper"), 0);
    assert_rc(dss_lock_lease(&h, "L", "keeper", 3600000, &tl), 0);
    assert_rc(dss_lock_shared(&h, "S", "r1", 3600000, 0, &ts1), 0);
    assert_rc(dss_lock_shared(&h, "S", "r2", 0, 0, NULL), 0);
    assert_rc(dss_sem_acquire(&h, "M", "keeper", 2, 3, 3600000, 0, &tsem), 0);
    assert_rc(dss_kv_set(&h, "B", "max", "9223372036854775807", 19), 0);
    assert_rc(dss_kv_set(&h, "B", "min", "-9223372036854775808", 20), 0);
    assert_rc(dss_kv_set(&h, "B", "text", "12abc", 5), 0);
    assert_rc(dss_kv_set(&h, "B", "%", "percent", 7), 0);
    assert_rc(dss_kv_cas(&h, "B", "v", 0, "1", 1, &v), 0);
    /* Sequences (tokens, versions) may advance on a refused call: nextval()
     * is not transactional. Rows may not change. */
    char before[SNAP_SIZE];
    snapshot(before);

    size_t conflict = 99;
    const char *pair[] = {"fresh", "X"};
    assert_rc(dss_lock(&h, "X", "other"), -EEXIST);
    assert_rc(dss_lock(&h, "X", "keeper"), -EEXIST);
    assert_rc(dss_lock_lease(&h, "X", "other", 1000, NULL), -EEXIST);
    assert_rc(dss_lock_lease(&h, "L", "keeper", 1000, NULL), -EEXIST);
    assert_rc(dss_lock_shared(&h, "X", "other", 0, 0, NULL), -EEXIST);
    assert_rc(dss_lock_many(&h, pair, 2, "other", 0, &conflict), -EEXIST);
    assert_int_equal(conflict, 1);
    assert_rc(dss_lock_refresh(&h, "X", "other"), -EACCES);
    assert_rc(dss_unlock(&h, "X", "other"), -EACCES);
    assert_rc(dss_lock_downgrade(&h, "X", "other", NULL), -EACCES);
    assert_rc(dss_unlock_many(&h, pair + 1, 1, "other"), -EACCES);
    assert_rc(dss_lock_refresh_many(&h, pair + 1, 1, "other"), -EACCES);
    assert_rc(dss_lock_check(&h, "L", tl + 1), -ESTALE);
    assert_rc(dss_lock_check(&h, "L", UINT64_MAX), -ESTALE);
    assert_rc(dss_lock_check(&h, "L", 0), -ESTALE);
    assert_rc(dss_lock(&h, "S", "other"), -EEXIST);
    assert_rc(dss_lock_shared(&h, "S", "r1", 0, 0, NULL), -EALREADY);
    assert_rc(dss_unlock(&h, "S", "r1"), -ENOLCK);
    assert_rc(dss_lock_refresh(&h, "S", "r1"), -ENOLCK);
    assert_rc(dss_lock_downgrade(&h, "S", "r1", NULL), -ENOLCK);
    assert_rc(dss_unlock_shared(&h, "S", "nobody"), -ENOLCK);
    assert_rc(dss_sem_acquire(&h, "M", "other", 2, 3, 1000, 0, NULL), -EEXIST);
    assert_rc(dss_sem_acquire(&h, "M", "other", 1, 4, 1000, 0, NULL), -EINVAL);
    assert_rc(dss_sem_acquire(&h, "M", "keeper", 1, 3, 1000, 0, NULL), -EALREADY);
    assert_rc(dss_sem_refresh(&h, "M", "other"), -ENOLCK);
    assert_rc(dss_sem_release(&h, "M", "other"), -ENOLCK);
    int64_t result = 5;
    assert_rc(dss_kv_increment(&h, "B", "max", 1, &result), -EINVAL);
    assert_rc(dss_kv_increment(&h, "B", "max", INT64_MAX, &result), -EINVAL);
    assert_rc(dss_kv_increment(&h, "B", "min", -1, &result), -EINVAL);
    assert_rc(dss_kv_increment(&h, "B", "min", INT64_MIN, &result), -EINVAL);
    assert_rc(dss_kv_increment(&h, "B", "text", 1, &result), -EINVAL);
    assert_int_equal(result, 5);
    assert_rc(dss_kv_cas(&h, "B", "v", v + 1, "2", 1, NULL), -EAGAIN);
    assert_rc(dss_kv_cas(&h, "B", "v", 0, "2", 1, NULL), -EAGAIN);
    assert_rc(dss_kv_cas(&h, "B", "v", UINT64_MAX, "2", 1, NULL), -EAGAIN);
    assert_rc(dss_kv_set_fenced(&h, "B", "f", "x", 1, "L", tl + 1), -ESTALE);
    assert_rc(dss_kv_set_fenced(&h, "B", "f", "x", 1, "L", 0), -ESTALE);
    assert_rc(dss_kv_set_fenced(&h, "B", "f", "x", 1, "S", tl), -ESTALE);
    const char *dup[] = {"max", "max"};
    const void *vals[] = {"a", "b"};
    size_t lens[] = {1, 1};
    assert_rc(dss_kv_set_many(&h, "B", dup, vals, lens, 2), -EINVAL);
    assert_rc(dss_kv_delete_many(&h, "B", dup, 2), -EINVAL);
    /* LIKE metacharacters are bytes like any other. */
    static const char *const like[] = {"%", "_", "keepe_", "k%", "\\", "r_", ".*"};
    for (size_t i = 0; i < sizeof like / sizeof like[0]; i++) {
        size_t released = 99;
        assert_rc(dss_lock_clean(&h, like[i], &released), 0);
        assert_int_equal(released, 0);
    }
    char **page = NULL, *next = NULL;
    size_t n = 99;
    assert_rc(dss_kv_list_keys(&h, "B", "_", NULL, 10, &page, &n, &next), 0);
    assert_int_equal(n, 0);
    assert_rc(dss_kv_list_keys(&h, "B", "%", NULL, 10, &page, &n, &next), 0);
    assert_int_equal(n, 1); /* the key "%" only */
    assert_string_equal(page[0], "%");
    dss_kv_free_keys(page, n);
    void *old = h.dh_conn;
    assert_rc(dss_init_conninfo(&h, db_conninfo), -EALREADY);
    assert_rc(dss_init_conninfo(&h, NULL), -EALREADY);
    assert_ptr_equal(h.dh_conn, old);

    /* The rows, without the sequences. */
    char after[SNAP_SIZE], b2[SNAP_SIZE], a2[SNAP_SIZE];
    snapshot(after);
    size_t nb = 0, na = 0;
    for (char *save = NULL, *t = strtok_r(before, " ", &save); t != NULL;
         t = strtok_r(NULL, " ", &save))
        if (!ct_contains(t, "_seq="))
            nb += (size_t)snprintf(b2 + nb, sizeof b2 - nb, "%s ", t);
    for (char *save = NULL, *t = strtok_r(after, " ", &save); t != NULL;
         t = strtok_r(NULL, " ", &save))
        if (!ct_contains(t, "_seq="))
            na += (size_t)snprintf(a2 + na, sizeof a2 - na, "%s ", t);
    if (strcmp(b2, a2) != 0)
        fail_msg("refused calls changed the database:\n  before: %s\n  after:  %s", b2, a2);

    /* Clean up. */
    assert_rc(dss_unlock(&h, "X", "keeper"), 0);
    assert_rc(dss_unlock(&h, "L", "keeper"), 0);
    assert_rc(dss_unlock_shared(&h, "S", NULL), 0);
    assert_rc(dss_sem_release(&h, "M", "keeper"), 0);
    const char *keys[] = {"max", "min", "text", "%", "v"};
    assert_rc(dss_kv_delete_many(&h, "B", keys, 5), 0);
}

/* A string of exactly len bytes made of characters of cl bytes (then
 * ASCII to fill), in a malloc()ed buffer. */
static char *string_of(size_t len, size_t cl, char ascii)
{
    char *p = malloc(len + 1);
    assert_non_null(p);
    size_t used = 0;
    static const char *const chars[] = {"", "a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    while (used + cl <= len) {
        memcpy(p + used, cl == 1 ? &ascii : chars[cl], cl);
        used += cl;
    }
    memset(p + used, ascii, len - used);
    p[len] = '\0';
    return p;
}

/* Exactly at the limits: accepted, stored and read back intact; one more
 * byte: -EINVAL, and nothing stored under a truncated name. */
static void test_at_limits(void **state)
{
    (void)state;
    for (size_t cl = 1; cl <= 4; cl++) {
        for (size_t d = 0; d <= 1; d++) {
            char *id = string_of(DSS_MAX_LOCK_ID_LEN - d, cl, 'i');
            char *owner = string_of(DSS_MAX_LOCK_OWNER_LEN - d, cl, 'o');
            assert_rc(dss_lock(&h, id, owner), 0);
            ct_assert_held(&h, id, owner);
            struct dss_holder *holders = NULL;
            size_t n = 0;
            assert_rc(dss_lock_holders(&h, id, &holders, &n), 0);
            assert_int_equal(n, 1);
            assert_string_equal(holders[0].owner, owner);
            dss_holders_free(holders, n);
            assert_rc(dss_unlock(&h, id, owner), 0);
            free(id);
            free(owner);
        }
        /* One byte over, by a last character across the limit or not. */
        char *id = string_of(DSS_MAX_LOCK_ID_LEN + 1, cl, 'j');
        char *owner = string_of(DSS_MAX_LOCK_OWNER_LEN + 1, cl, 'p');
        assert_rc(dss_lock(&h, id, "o"), -EINVAL);
        assert_rc(dss_lock(&h, "fine", owner), -EINVAL);
        assert_rc(dss_sem_acquire(&h, id, "o", 1, 1, 1000, 0, NULL), -EINVAL);
        assert_rc(dss_sem_acquire(&h, "fine", owner, 1, 1, 1000, 0, NULL), -EINVAL);
        assert_rc(dss_lock_clean(&h, owner, NULL), -EINVAL);
        id[DSS_MAX_LOCK_ID_LEN - (DSS_MAX_LOCK_ID_LEN % cl)] = '\0'; /* what truncation gives */
        ct_assert_absent(&h, id);
        free(id);
        free(owner);
    }
    assert_rc(dss_lock(&h, "empty owner", ""), 0);
    ct_assert_held(&h, "empty owner", "");
    assert_rc(dss_unlock(&h, "empty owner", ""), 0);

    /* Numbers: the longest lease, the largest semaphore. */
    char *sem = string_of(DSS_MAX_LOCK_ID_LEN, 3, 's');
    char *owner = string_of(DSS_MAX_LOCK_OWNER_LEN, 4, 'o');
    uint64_t token = 0;
    assert_rc(dss_lock_lease(&h, sem, owner, DSS_MAX_TTL_MS, &token), 0);
    struct dss_lock_info info;
    assert_rc(dss_lock_info(&h, sem, &info), 0);
    assert_int_equal(info.ttl_ms, DSS_MAX_TTL_MS);
    assert_int_equal(info.token, token);
    assert_true(info.expires_in_ms > (int64_t)DSS_MAX_TTL_MS - 60000);
    dss_lock_info_clear(&info);
    assert_rc(dss_lock_refresh(&h, sem, owner), 0);
    assert_rc(dss_unlock(&h, sem, owner), 0);
    assert_rc(dss_lock_lease(&h, sem, owner, DSS_MAX_TTL_MS + 1, NULL), -EINVAL);
    assert_rc(dss_sem_acquire(&h, sem, owner, INT32_MAX, INT32_MAX, DSS_MAX_TTL_MS, 0, NULL), 0);
    struct dss_holder *holders = NULL;
    size_t n = 0;
    assert_rc(dss_sem_holders(&h, sem, &holders, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(holders[0].permits, INT32_MAX);
    assert_int_equal(holders[0].mode, DSS_MODE_SEMAPHORE);
    assert_string_equal(holders[0].owner, owner);
    dss_holders_free(holders, n);
    assert_rc(dss_sem_refresh(&h, sem, owner), 0);
    assert_rc(dss_sem_release(&h, sem, owner), 0);
    assert_rc(dss_sem_acquire(&h, sem, owner, 1, (uint32_t)INT32_MAX + 1, 1000, 0, NULL),
              -EINVAL);
    assert_rc(dss_sem_acquire(&h, sem, owner, 1, 1, DSS_MAX_TTL_MS + 1, 0, NULL), -EINVAL);
    free(sem);
    free(owner);

    /* Keys: the longest bucket and key, as prefix and cursor too. */
    char snap0[SNAP_SIZE];
    snapshot(snap0);
    for (size_t cl = 1; cl <= 4; cl++) {
        char *b = string_of(DSS_KV_MAX_KEY_LEN, cl, 'b');
        char *k = string_of(DSS_KV_MAX_KEY_LEN - (cl == 1), cl, 'k');
        assert_rc(dss_kv_set_ttl(&h, b, k, "value", 5, DSS_MAX_TTL_MS), 0);
        void *value = NULL;
        size_t len = 0;
        assert_rc(dss_kv_get(&h, b, k, &value, &len), 0);
        assert_int_equal(len, 5);
        assert_memory_equal(value, "value", 5);
        free(value);
        assert_rc(dss_kv_exists(&h, b, k), 1);
        char **page = NULL, *next = NULL;
        assert_rc(dss_kv_list_keys(&h, b, k, NULL, DSS_MAX_BATCH, &page, &n, &next), 0);
        assert_int_equal(n, 1);
        assert_string_equal(page[0], k);
        assert_null(next);
        dss_kv_free_keys(page, n);
        assert_rc(dss_kv_list_keys(&h, b, NULL, k, 1, &page, &n, &next), 0);
        assert_int_equal(n, 0); /* nothing after the cursor */
        assert_rc(dss_kv_set_ttl(&h, b, k, "v", 1, DSS_MAX_TTL_MS + 1), -EINVAL);
        assert_rc(dss_kv_delete(&h, b, k), 0);
        free(b);
        free(k);
        char *over = string_of(DSS_KV_MAX_KEY_LEN + 1, cl, 'o');
        assert_rc(dss_kv_set(&h, over, "k", "v", 1), -EINVAL);
        assert_rc(dss_kv_set(&h, "b", over, "v", 1), -EINVAL);
        assert_rc(dss_kv_list_keys(&h, "b", over, NULL, 1, &page, &n, &next), -EINVAL);
        assert_rc(dss_kv_list_keys(&h, "b", NULL, over, 1, &page, &n, &next), -EINVAL);
        free(over);
    }
    /* Counters at the ends of int64. */
    int64_t r = 0;
    assert_rc(dss_kv_increment(&h, "B", "c", INT64_MIN, &r), 0);
    assert_true(r == INT64_MIN);
    assert_rc(dss_kv_increment(&h, "B", "c", -1, &r), -EINVAL);
    assert_rc(dss_kv_increment(&h, "B", "c", INT64_MAX, &r), 0);
    assert_int_equal(r, -1);
    assert_rc(dss_kv_increment(&h, "B", "c", INT64_MAX, &r), 0);
    assert_true(r == INT64_MAX - 1);
    assert_rc(dss_kv_increment(&h, "B", "c", 2, &r), -EINVAL);
    assert_rc(dss_kv_delete(&h, "B", "c"), 0);
    /* The fingerprint sees changes: a write. */
    char snap1[SNAP_SIZE];
    snapshot(snap1);
    assert_string_not_equal(snap0, snap1); /* the versions and history moved */
    assert_rc(dss_kv_set(&h, "B", "seen", "1", 1), 0);
    char snap2[SNAP_SIZE];
    snapshot(snap2);
    assert_string_not_equal(snap1, snap2);
    assert_rc(dss_kv_delete(&h, "B", "seen"), 0);

    /* dss_owner_self: exactly enough room, one byte less. */
    char self[DSS_MAX_LOCK_OWNER_LEN + 1], buf[DSS_MAX_LOCK_OWNER_LEN + 1];
    assert_rc(dss_owner_self(self, sizeof self), 0);
    size_t need = strlen(self) + 1;
    memset(buf, 'z', sizeof buf);
    assert_rc(dss_owner_self(buf, need - 1), -ERANGE);
    assert_int_equal(buf[0], 'z');
    assert_rc(dss_owner_self(buf, need), 0);
    assert_string_equal(buf, self);
}

int main(void)
{
    if (ct_setup("test_badinput", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_covers_every_export),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_fuzz_offline),
        cmocka_unit_test(test_init_environment),
        cmocka_unit_test(test_absent_objects),
        cmocka_unit_test(test_refused_on_existing),
        cmocka_unit_test(test_at_limits),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
