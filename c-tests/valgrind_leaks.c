/* Linked into the valgrind_* tests (CMakeLists.txt, DSS_VALGRIND=ON): the
 * leak check of the test process itself, when it exits. Valgrind runs with
 * --leak-check=no, so that forked children, which exit with a copy of
 * their parent's heap (inherited handles among it), are not leak-checked;
 * their memory errors still count. */
#include <unistd.h>
#include <valgrind/memcheck.h>

static pid_t main_pid;

__attribute__((constructor)) static void remember_main_pid(void)
{
    main_pid = getpid();
}

__attribute__((destructor)) static void leak_check_main_process(void)
{
    if (RUNNING_ON_VALGRIND && getpid() == main_pid)
        VALGRIND_DO_LEAK_CHECK;
}
