/* dss_init / dss_init_conninfo: configuration sources and every init error.
 * Cases run one after another in this process (setenv / unsetenv). */
#include <glob.h>

#include "common.h"

#include <stdlib.h>
#include <sys/stat.h>

static char tmpdir[64];      /* config files */
static char cfg_path[128];   /* $tmpdir/phobos.conf */
static char missing_cfg[128];
static char admin_conninfo[512]; /* the test cluster, database "postgres" */
static char db_empty[64], db_v0[64], db_noversion[64], db_v2[64], role_limited[64];

static void write_cfg(const char *text)
{
    FILE *f = fopen(cfg_path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* A clean configuration: no variable, a config file that does not exist. */
static void clean_env(void)
{
    unsetenv("PHOBOS_DSS_connect_string");
    unsetenv("PHOBOS_DSS_pool_size");
    unsetenv("PHOBOS_DSS_pool_timeout_ms");
    setenv("PHOBOS_CFG_FILE", missing_cfg, 1);
    unlink(cfg_path);
}

/* A conninfo on the test cluster with another dbname / user (the last
 * occurrence of a keyword wins). */
static void conninfo_with(char *buf, size_t size, const char *extra)
{
    snprintf(buf, size, "%s %s", ct_conninfo(), extra);
}

static void assert_handle_works(struct dss_handle *h)
{
    char id[128];
    ct_id(id, sizeof id, "works");
    assert_rc(dss_lock(h, id, "o"), 0);
    ct_assert_held(h, id, "o");
    assert_rc(dss_unlock(h, id, "o"), 0);
}

/* Expects dss_init to fail with `expected`, leaving dh_conn NULL. */
static void expect_init(int expected)
{
    struct dss_handle h = {(void *)0x1234};
    assert_rc(dss_init(&h), expected);
    assert_null(h.dh_conn);
}

static void expect_init_conninfo(const char *conninfo, int expected, double max_ms)
{
    struct dss_handle h = {(void *)0x1234};
    double t0 = ct_now_ms();
    int rc = dss_init_conninfo(&h, conninfo);
    double ms = ct_now_ms() - t0;
    if (rc != expected)
        fail_msg("dss_init_conninfo(\"%s\") = %d (%s), expected %d (%s): %s", conninfo, rc,
                 ct_errname(rc), expected, ct_errname(expected), dss_last_error());
    assert_true(strlen(dss_last_error()) > 0);
    assert_null(h.dh_conn);
    if (ms > max_ms)
        fail_msg("dss_init_conninfo(\"%s\") took %.0f ms (max %.0f)", conninfo, ms, max_ms);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dss-ctest-init-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    snprintf(cfg_path, sizeof cfg_path, "%s/phobos.conf", tmpdir);
    snprintf(missing_cfg, sizeof missing_cfg, "%s/missing.conf", tmpdir);
    conninfo_with(admin_conninfo, sizeof admin_conninfo, "dbname=postgres");
    long pid = (long)getpid();
    snprintf(db_empty, sizeof db_empty, "dss_ct_empty_%ld", pid);
    snprintf(db_v0, sizeof db_v0, "dss_ct_v0_%ld", pid);
    snprintf(db_noversion, sizeof db_noversion, "dss_ct_nover_%ld", pid);
    snprintf(db_v2, sizeof db_v2, "dss_ct_v2_%ld", pid);
    snprintf(role_limited, sizeof role_limited, "dss_ct_limited_%ld", pid);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char sql[512];
    const char *dbs[] = {db_empty, db_v0, db_noversion, db_v2};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbs[i]);
        ct_psql(admin_conninfo, sql, NULL, 0);
    }
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", role_limited);
    ct_psql(admin_conninfo, sql, NULL, 0);
    unlink(cfg_path);
    rmdir(tmpdir);
    return 0;
}

static void test_no_connection_string(void **state)
{
    (void)state;
    clean_env();
    expect_init(-EINVAL);
    assert_true(ct_contains(dss_last_error(), "connect_string"));
    assert_true(ct_contains(dss_last_error(), missing_cfg)); /* names the file */

    /* An empty PHOBOS_CFG_FILE means the default, /etc/phobos.conf. */
    if (access("/etc/phobos.conf", F_OK) != 0) {
        unsetenv("PHOBOS_CFG_FILE");
        expect_init(-EINVAL);
        assert_true(ct_contains(dss_last_error(), "/etc/phobos.conf"));
        setenv("PHOBOS_CFG_FILE", "", 1);
        expect_init(-EINVAL);
        assert_true(ct_contains(dss_last_error(), "/etc/phobos.conf"));
    }

    /* A file without connect_string in [dss]: in another section, commented
     * out, or in a section whose name only looks like dss. */
    clean_env();
    char text[2048];
    snprintf(text, sizeof text,
             "# connect_string = %s\n"
             "[other]\nconnect_string = %s\n"
             "[dss]\npool_size = 2\n; connect_string = %s\n"
             "[dss2]\nconnect_string = %s\n"
             "[DSS]\nconnect_string = %s\n",
             ct_conninfo(), ct_conninfo(), ct_conninfo(), ct_conninfo(), ct_conninfo());
    write_cfg(text);
    setenv("PHOBOS_CFG_FILE", cfg_path, 1);
    expect_init(-EINVAL);
    assert_true(ct_contains(dss_last_error(), "connect_string"));
    write_cfg("");
    expect_init(-EINVAL);
    clean_env();
}

static void test_config_file(void **state)
{
    (void)state;
    clean_env();
    char text[1024];
    snprintf(text, sizeof text,
             "# phobos configuration\n[lrs]\nmount_prefix = /mnt/phobos\n\n"
             "[dss]\nconnect_string = %s\n\n[tail]\nx = y\n",
             ct_conninfo());
    write_cfg(text);
    setenv("PHOBOS_CFG_FILE", cfg_path, 1);
    struct dss_handle h = {0};
    assert_rc(dss_init(&h), 0);
    assert_non_null(h.dh_conn);
    assert_handle_works(&h);
    dss_fini(&h);
    assert_null(h.dh_conn);

    /* The last occurrence wins; spaces around '=' and the value are trimmed. */
    snprintf(text, sizeof text,
             "[dss]\nconnect_string = host=/nonexistent/dir\n"
             "[dss]\n   connect_string=   %s   \n",
             ct_conninfo());
    write_cfg(text);
    assert_rc(dss_init(&h), 0);
    assert_handle_works(&h);
    dss_fini(&h);
    clean_env();
}

static void test_env_wins_over_file(void **state)
{
    (void)state;
    clean_env();
    char text[1024];
    /* File wrong, variable right: works. */
    write_cfg("[dss]\nconnect_string = host=/nonexistent/dir port=5432 dbname=dss\n");
    setenv("PHOBOS_CFG_FILE", cfg_path, 1);
    expect_init(-ENOTCONN);
    setenv("PHOBOS_DSS_connect_string", ct_conninfo(), 1);
    struct dss_handle h = {0};
    assert_rc(dss_init(&h), 0);
    assert_handle_works(&h);
    dss_fini(&h);

    /* File right, variable wrong: fails (the file is not a fallback). */
    snprintf(text, sizeof text, "[dss]\nconnect_string = %s\n", ct_conninfo());
    write_cfg(text);
    setenv("PHOBOS_DSS_connect_string", "host=/nonexistent/dir port=5432 dbname=dss", 1);
    expect_init(-ENOTCONN);

    /* An empty variable counts as unset: the file's string applies. */
    setenv("PHOBOS_DSS_connect_string", "", 1);
    struct dss_handle h3 = {0};
    assert_rc(dss_init(&h3), 0);
    assert_handle_works(&h3);
    dss_fini(&h3);
    setenv("PHOBOS_CFG_FILE", missing_cfg, 1);
    expect_init(-EINVAL);
    setenv("PHOBOS_CFG_FILE", cfg_path, 1);
    setenv("PHOBOS_DSS_connect_string", "host=/nonexistent/dir port=5432 dbname=dss", 1);

    /* dss_init_conninfo ignores both. */
    struct dss_handle h2 = {0};
    assert_rc(dss_init_conninfo(&h2, ct_conninfo()), 0);
    assert_handle_works(&h2);
    dss_fini(&h2);
    clean_env();
}

static void test_unreachable(void **state)
{
    (void)state;
    clean_env();
    expect_init_conninfo("host=/nonexistent/dir port=5432 dbname=dss user=postgres",
                         -ENOTCONN, 3000);
    assert_true(ct_contains(dss_last_error(), "connect"));
    expect_init_conninfo("host=127.0.0.1 port=1 dbname=dss user=postgres", -ENOTCONN, 3000);
    /* The test cluster's directory, wrong port: no socket there. */
    char buf[512];
    conninfo_with(buf, sizeof buf, "port=1");
    expect_init_conninfo(buf, -ENOTCONN, 3000);
    /* Through dss_init as well. */
    setenv("PHOBOS_DSS_connect_string", "host=127.0.0.1 port=1 dbname=dss", 1);
    double t0 = ct_now_ms();
    expect_init(-ENOTCONN);
    assert_true(ct_now_ms() - t0 < 3000);
    clean_env();
}

static void test_login_refused(void **state)
{
    (void)state;
    clean_env();
    char buf[512], extra[128];
    snprintf(extra, sizeof extra, "user=dss_ct_nosuchrole_%ld", (long)getpid());
    conninfo_with(buf, sizeof buf, extra);
    expect_init_conninfo(buf, -ENOTCONN, 3000);
    assert_true(ct_contains(dss_last_error(), "28000")); /* the SQLSTATE */
    snprintf(extra, sizeof extra, "dbname=dss_ct_nosuchdb_%ld", (long)getpid());
    conninfo_with(buf, sizeof buf, extra);
    expect_init_conninfo(buf, -ENOTCONN, 3000);
    assert_true(ct_contains(dss_last_error(), "3D000"));
}

static void test_too_many_connections(void **state)
{
    (void)state;
    clean_env();
    /* A role allowed no connection at all: the server answers 53300. */
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN CONNECTION LIMIT 0", role_limited);
    assert_int_equal(ct_psql(admin_conninfo, sql, NULL, 0), 0);
    char buf[512], extra[128];
    snprintf(extra, sizeof extra, "user=%s", role_limited);
    conninfo_with(buf, sizeof buf, extra);
    expect_init_conninfo(buf, -EUSERS, 3000);
    assert_true(ct_contains(dss_last_error(), "53300"));
}

static void test_bad_conninfo(void **state)
{
    (void)state;
    clean_env();
    char buf[512];
    const char *extras[] = {
        "port=notanumber",
        "nosuchkey=1",
        "host='unterminated",
        "connect_timeout=soon",
        "sslmode=nonsense",
        "target_session_attrs=whatever",
    };
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++) {
        conninfo_with(buf, sizeof buf, extras[i]);
        expect_init_conninfo(buf, -EINVAL, 1000);
    }
    conninfo_with(buf, sizeof buf, "sslmode=sometimes");
    expect_init_conninfo(buf, -EINVAL, 1000);
    assert_true(ct_contains(dss_last_error(), "sslmode"));
    /* Plain nonsense. */
    expect_init_conninfo("this is not a conninfo", -EINVAL, 1000);
    expect_init_conninfo("postgresql://[::1", -EINVAL, 1000);
    /* Through dss_init too. */
    setenv("PHOBOS_DSS_connect_string", "host=/tmp port=notanumber", 1);
    expect_init(-EINVAL);
    setenv("PHOBOS_DSS_connect_string", "host=/tmp sslmode=nonsense", 1);
    expect_init(-EINVAL);
    clean_env();
}

/* Documented forms that must work: a URI, several hosts. */
static void test_good_conninfo_forms(void **state)
{
    (void)state;
    clean_env();
    const char *c = ct_conninfo();
    const char *host = strstr(c, "host=");
    assert_non_null(host);
    char dir[256];
    assert_int_equal(sscanf(host, "host=%255s", dir), 1);

    char uri[1024];
    snprintf(uri, sizeof uri, "postgresql://postgres@localhost:5432/dss?host=%s", dir);
    struct dss_handle h = {0};
    int rc = dss_init_conninfo(&h, uri);
    if (rc != 0)
        fail_msg("URI %s: %d (%s): %s", uri, rc, ct_errname(rc), dss_last_error());
    assert_handle_works(&h);
    dss_fini(&h);

    /* Several hosts: the first cannot be reached, the second is the server. */
    char multi[1024];
    snprintf(multi, sizeof multi,
             "host=/nonexistent/dir,%s port=5432,5432 dbname=dss user=postgres "
             "target_session_attrs=read-write",
             dir);
    rc = dss_init_conninfo(&h, multi);
    if (rc != 0)
        fail_msg("%s: %d (%s): %s", multi, rc, ct_errname(rc), dss_last_error());
    assert_handle_works(&h);
    dss_fini(&h);

    /* Explicit settings of ours are accepted. */
    char buf[1024];
    conninfo_with(buf, sizeof buf,
                  "connect_timeout=2 application_name='dss c test' sslmode=disable");
    assert_rc(dss_init_conninfo(&h, buf), 0);
    assert_handle_works(&h);
    dss_fini(&h);
    conninfo_with(buf, sizeof buf, "sslmode=prefer");
    assert_rc(dss_init_conninfo(&h, buf), 0);
    assert_handle_works(&h);
    dss_fini(&h);
}

/* Creates database `db` on the test cluster, writes its conninfo to buf and,
 * if `setup` is not NULL, runs that SQL in it. */
static void make_database(const char *db, const char *setup, char *buf, size_t size)
{
    char sql[256], extra[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    assert_int_equal(ct_psql(admin_conninfo, sql, NULL, 0), 0);
    snprintf(extra, sizeof extra, "dbname=%s", db);
    conninfo_with(buf, size, extra);
    if (setup)
        assert_int_equal(ct_psql(buf, setup, NULL, 0), 0);
}

static void test_schema_checks(void **state)
{
    (void)state;
    clean_env();
    char buf[512];

    /* An empty database: no dss schema at all. */
    make_database(db_empty, NULL, buf, sizeof buf);
    expect_init_conninfo(buf, -EPROTO, 5000);
    assert_true(ct_contains(dss_last_error(), "version 0"));
    assert_true(ct_contains(dss_last_error(), "version 8 expected"));

    /* dss.schema_info says version 0 only. */
    make_database(db_v0,
                  "CREATE SCHEMA dss; "
                  "CREATE TABLE dss.schema_info (version integer PRIMARY KEY, "
                  "description text NOT NULL, applied_at timestamptz NOT NULL "
                  "DEFAULT now()); "
                  "INSERT INTO dss.schema_info (version, description) VALUES (0, 'older')",
                  buf, sizeof buf);
    expect_init_conninfo(buf, -EPROTO, 5000);
    assert_true(ct_contains(dss_last_error(), "version 0"));
    assert_true(ct_contains(dss_last_error(), "version 8 expected"));

    /* The table exists but is empty. */
    make_database(db_noversion,
                  "CREATE SCHEMA dss; "
                  "CREATE TABLE dss.schema_info (version integer PRIMARY KEY, "
                  "description text NOT NULL)",
                  buf, sizeof buf);
    expect_init_conninfo(buf, -EPROTO, 5000);
    assert_true(ct_contains(dss_last_error(), "version 8 expected"));

    /* A newer schema (version 99 on top of every migration) is accepted. */
    make_database(db_v2, NULL, buf, sizeof buf);
    const char *pgtmp = getenv("DSS_TEST_PGTMP");
    assert_non_null(pgtmp);
    /* <source>/scripts/pgtmp.sh -> <source>/sql/[0-9]*.sql */
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s", pgtmp);
    char *slash = strrchr(pattern, '/');
    assert_non_null(slash);
    *slash = '\0';
    slash = strrchr(pattern, '/');
    assert_non_null(slash);
    snprintf(slash, sizeof pattern - (size_t)(slash - pattern), "/sql/[0-9]*.sql");
    glob_t files;
    assert_int_equal(glob(pattern, 0, NULL, &files), 0);
    assert_true(files.gl_pathc >= 3);
    for (size_t i = 0; i < files.gl_pathc; i++) {
        char *argv[] = {(char *)PSQL_PROGRAM, (char *)"-X", (char *)"-q", (char *)"-v",
                        (char *)"ON_ERROR_STOP=1", (char *)"-d", buf, (char *)"-f",
                        files.gl_pathv[i], NULL};
        char out[256]; /* psql's output, not needed */
        assert_int_equal(ct_run(argv, 60, out, sizeof out), 0);
    }
    globfree(&files);
    assert_int_equal(ct_psql(buf,
                             "INSERT INTO dss.schema_info (version, description) "
                             "VALUES (99, 'newer')",
                             NULL, 0),
                     0);
    struct dss_handle h = {0};
    assert_rc(dss_init_conninfo(&h, buf), 0);
    assert_handle_works(&h);
    dss_fini(&h);
}

static void test_password_never_shown(void **state)
{
    (void)state;
    clean_env();
    const char *pw = "s3cr3tpw";
    expect_init_conninfo("host=/nonexistent/dir port=5432 dbname=dss user=postgres "
                         "password=s3cr3tpw",
                         -ENOTCONN, 3000);
    assert_false(ct_contains(dss_last_error(), pw));
    expect_init_conninfo("host=127.0.0.1 port=1 user=postgres password=s3cr3tpw", -ENOTCONN,
                         3000);
    assert_false(ct_contains(dss_last_error(), pw));
    expect_init_conninfo("postgresql://postgres:s3cr3tpw@127.0.0.1:1/dss", -ENOTCONN, 3000);
    assert_false(ct_contains(dss_last_error(), pw));
    /* Syntax errors near the password. */
    expect_init_conninfo("host=/tmp password=s3cr3tpw port=bad", -EINVAL, 1000);
    assert_false(ct_contains(dss_last_error(), pw));
    expect_init_conninfo("host=/tmp password='s3cr3tpw", -EINVAL, 1000);
    assert_false(ct_contains(dss_last_error(), pw));
    expect_init_conninfo("host=/tmp password=s3cr3tpw sslmode=sometimes", -EINVAL, 1000);
    assert_false(ct_contains(dss_last_error(), pw));
    expect_init_conninfo("host=/tmp password=s3cr3tpw x=y", -EINVAL, 1000);
    assert_false(ct_contains(dss_last_error(), pw));
    expect_init_conninfo("postgresql://postgres:s3cr3tpw@127.0.0.1:notaport/dss", -EINVAL, 1000);
    assert_false(ct_contains(dss_last_error(), pw));
    /* From the environment and from the file. */
    setenv("PHOBOS_DSS_connect_string", "host=/nonexistent/dir password=s3cr3tpw", 1);
    expect_init(-ENOTCONN);
    assert_false(ct_contains(dss_last_error(), pw));
    unsetenv("PHOBOS_DSS_connect_string");
    write_cfg("[dss]\nconnect_string = host=/tmp password=s3cr3tpw nosuchkey=1\n");
    setenv("PHOBOS_CFG_FILE", cfg_path, 1);
    expect_init(-EINVAL);
    assert_false(ct_contains(dss_last_error(), pw));
    clean_env();
}

static void test_pool_settings(void **state)
{
    (void)state;
    clean_env();
    struct dss_handle h = {0};
    setenv("PHOBOS_DSS_connect_string", ct_conninfo(), 1);

    const char *bad_size[] = {"0", "abc", "-1", "1025", " ", "2x", "99999999999"};
    for (size_t i = 0; i < sizeof bad_size / sizeof bad_size[0]; i++) {
        setenv("PHOBOS_DSS_pool_size", bad_size[i], 1);
        expect_init(-EINVAL);
        assert_true(ct_contains(dss_last_error(), "pool_size"));
        expect_init_conninfo(ct_conninfo(), -EINVAL, 1000); /* knobs apply there too */
    }
    unsetenv("PHOBOS_DSS_pool_size");
    const char *bad_timeout[] = {"0", "abc", "-5", " ", "1.5"};
    for (size_t i = 0; i < sizeof bad_timeout / sizeof bad_timeout[0]; i++) {
        setenv("PHOBOS_DSS_pool_timeout_ms", bad_timeout[i], 1);
        expect_init(-EINVAL);
        assert_true(ct_contains(dss_last_error(), "pool_timeout_ms"));
        expect_init_conninfo(ct_conninfo(), -EINVAL, 1000);
    }
    unsetenv("PHOBOS_DSS_pool_timeout_ms");

    /* Valid bounds. (With a 1 ms timeout the first call may well fail:
     * making a connection takes longer; only init is checked.) */
    setenv("PHOBOS_DSS_pool_size", "1", 1);
    setenv("PHOBOS_DSS_pool_timeout_ms", "1", 1);
    assert_rc(dss_init(&h), 0);
    dss_fini(&h);
    setenv("PHOBOS_DSS_pool_timeout_ms", "3000", 1);
    assert_rc(dss_init(&h), 0);
    assert_handle_works(&h);
    dss_fini(&h);
    setenv("PHOBOS_DSS_pool_size", "1024", 1);
    setenv("PHOBOS_DSS_pool_timeout_ms", "600000", 1);
    assert_rc(dss_init(&h), 0);
    assert_handle_works(&h);
    dss_fini(&h);
    unsetenv("PHOBOS_DSS_pool_size");
    unsetenv("PHOBOS_DSS_pool_timeout_ms");

    /* From the file, and the variable wins over it. */
    write_cfg("[dss]\npool_size = 0\npool_timeout_ms = 100\n");
    setenv("PHOBOS_CFG_FILE", cfg_path, 1);
    expect_init(-EINVAL);
    assert_true(ct_contains(dss_last_error(), "pool_size"));
    setenv("PHOBOS_DSS_pool_size", "2", 1);
    assert_rc(dss_init(&h), 0);
    assert_handle_works(&h);
    dss_fini(&h);
    write_cfg("[dss]\npool_size = 3\npool_timeout_ms = zero\n");
    expect_init(-EINVAL);
    assert_true(ct_contains(dss_last_error(), "pool_timeout_ms"));
    setenv("PHOBOS_DSS_pool_timeout_ms", "250", 1);
    assert_rc(dss_init(&h), 0);
    dss_fini(&h);

    /* An empty variable counts as unset: the file's value applies. */
    write_cfg("[dss]\npool_size = 0\n");
    setenv("PHOBOS_DSS_pool_size", "", 1);
    setenv("PHOBOS_DSS_pool_timeout_ms", "", 1);
    expect_init(-EINVAL);
    assert_true(ct_contains(dss_last_error(), "pool_size"));
    write_cfg("[dss]\npool_size = 2\n");
    assert_rc(dss_init(&h), 0); /* and the defaults without the file */
    dss_fini(&h);
    setenv("PHOBOS_CFG_FILE", missing_cfg, 1);
    assert_rc(dss_init(&h), 0);
    dss_fini(&h);
    clean_env();
}

static void test_unreadable_config(void **state)
{
    (void)state;
    clean_env();
    /* A directory where the file should be, and a file that is not UTF-8:
     * errors, not silent defaults. */
    setenv("PHOBOS_CFG_FILE", tmpdir, 1);
    expect_init(-EINVAL);
    write_cfg("[dss]\nconnect_string = host=/tmp \xff\n");
    setenv("PHOBOS_CFG_FILE", cfg_path, 1);
    expect_init(-EINVAL);
    setenv("PHOBOS_DSS_connect_string", "host=/tmp \xff\xfe", 1);
    expect_init(-EINVAL);
    clean_env();
}

int main(void)
{
    if (ct_setup("test_init", 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_connection_string),
        cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_env_wins_over_file),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_login_refused),
        cmocka_unit_test(test_too_many_connections),
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_good_conninfo_forms),
        cmocka_unit_test(test_schema_checks),
        cmocka_unit_test(test_password_never_shown),
        cmocka_unit_test(test_pool_settings),
        cmocka_unit_test(test_unreadable_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
