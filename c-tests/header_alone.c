/* dss.h compiles on its own, without warnings, as C11 and as C++
 * (see the header_* tests), and declares what the C API promises. */
#include <dss.h>
#include <dss.h> /* the include guard works */

#ifdef __cplusplus
#define DSS_STATIC_ASSERT static_assert
#else
#define DSS_STATIC_ASSERT _Static_assert
#endif

DSS_STATIC_ASSERT(DSS_MAX_LOCK_ID_LEN == 2048, "DSS_MAX_LOCK_ID_LEN");
DSS_STATIC_ASSERT(DSS_MAX_LOCK_OWNER_LEN == 256, "DSS_MAX_LOCK_OWNER_LEN");
DSS_STATIC_ASSERT(sizeof(struct dss_handle) == sizeof(void *), "dss_handle is one pointer");

/* The exact prototypes (a mismatch is a compile error). */
static int (*p_init)(struct dss_handle *) = dss_init;
static int (*p_init_conninfo)(struct dss_handle *, const char *) = dss_init_conninfo;
static void (*p_fini)(struct dss_handle *) = dss_fini;
static int (*p_lock)(struct dss_handle *, const char *, const char *) = dss_lock;
static int (*p_refresh)(struct dss_handle *, const char *, const char *) = dss_lock_refresh;
static int (*p_unlock)(struct dss_handle *, const char *, const char *) = dss_unlock;
static int (*p_status)(struct dss_handle *, const char *, char **, struct timeval *) =
    dss_lock_status;
static const char *(*p_last_error)(void) = dss_last_error;
static const char *(*p_version)(void) = dss_version;

int dss_header_alone_used(void);
int dss_header_alone_used(void)
{
    struct dss_handle h = {0};
    struct timeval tv = {0, 0}; /* struct timeval comes with dss.h */
    return (p_init != 0) + (p_init_conninfo != 0) + (p_fini != 0) + (p_lock != 0) +
           (p_refresh != 0) + (p_unlock != 0) + (p_status != 0) + (p_last_error != 0) +
           (p_version != 0) + (h.dh_conn == 0) + (int)tv.tv_sec;
}
