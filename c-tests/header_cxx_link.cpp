// A C++ program includes dss.h and links with libdss: the declarations are
// extern "C" (otherwise the mangled names would not resolve).
#include <dss.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main()
{
    const char *v = dss_version();
    std::printf("dss %s\n", v);
    if (std::strcmp(v, DSS_PC_VERSION) != 0) {
        std::printf("FAIL: dss_version() = '%s', dss.pc says '%s'\n", v, DSS_PC_VERSION);
        return 1;
    }
    // Arguments are checked before anything else: no database needed.
    dss_handle h = dss_handle();
    if (dss_lock(&h, "id", "owner") != -EINVAL || dss_lock_status(nullptr, "id", nullptr, nullptr) != -EINVAL) {
        std::printf("FAIL: calls on an uninitialised handle are not -EINVAL\n");
        return 1;
    }
    dss_fini(&h);
    if (std::strlen(dss_last_error()) == 0) {
        std::printf("FAIL: dss_last_error() is empty after a failure\n");
        return 1;
    }
    return 0;
}
