//! Least privilege (sql/0007_roles.sql): the role dss_client holds what the
//! library and dssctl's read commands need, and nothing more. Every other
//! test's handles log in as a member of dss_client only (`handle_named`),
//! so they prove the grant is enough for every call; these prove it is not
//! more than that, and what a role without it is told.

mod common;

use std::collections::BTreeSet;
use std::process::Output;

use common::*;
use dss::{kv, lock, shared};

/// dssctl with `args` as [`CLIENT_ROLE`].
fn dssctl_client(args: &[&str]) -> Output {
    dssctl_on(&client_conninfo(), args)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "dssctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Runs `sql` as [`CLIENT_ROLE`]; returns its SQLSTATE (None: it ran).
fn as_client(sql: &str) -> Option<String> {
    let mut c = postgres::Client::connect(&client_conninfo(), postgres::NoTls).unwrap();
    match c.batch_execute(sql) {
        Ok(()) => None,
        Err(e) => Some(e.code().expect("a server error").code().to_string()),
    }
}

#[test]
fn the_role_holds_exactly_what_the_library_needs() {
    client_conninfo();
    let mut c = client();
    // Table privileges, as the catalog has them.
    let got: BTreeSet<String> = c
        .query(
            "SELECT table_name || ' ' || privilege_type FROM information_schema.role_table_grants \
             WHERE grantee = 'dss_client'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want = BTreeSet::new();
    for t in ["schema_info", "settings"] {
        want.insert(format!("{t} SELECT"));
    }
    for p in ["SELECT", "INSERT"] {
        want.insert(format!("lock_history {p}"));
    }
    for t in [
        "locks",
        "lock_waiters",
        "lock_shares",
        "sems",
        "sem_holders",
        "kv",
    ] {
        for p in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            want.insert(format!("{t} {p}"));
        }
    }
    assert_eq!(got, want);
    // No login, no attributes, nothing owned, no CREATE on any schema or
    // database.
    let row = c
        .query_one(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, \
                    rolbypassrls, \
                    (SELECT count(*) FROM pg_class WHERE relowner = r.oid) \
                  + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid) \
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid), \
                    has_schema_privilege(r.oid, 'dss', 'CREATE'), \
                    has_database_privilege(r.oid, current_database(), 'CREATE'), \
                    (SELECT count(*) FROM pg_auth_members WHERE member = r.oid) \
               FROM pg_roles r WHERE rolname = 'dss_client'",
            &[],
        )
        .unwrap();
    for i in 0..6 {
        assert!(!row.get::<_, bool>(i), "attribute {i} of dss_client");
    }
    assert_eq!(row.get::<_, i64>(6), 0, "dss_client owns nothing");
    assert!(!row.get::<_, bool>(7), "no CREATE on schema dss");
    assert!(!row.get::<_, bool>(8), "no CREATE on the database");
    assert_eq!(row.get::<_, i64>(9), 0, "member of no other role");
    // Sequences: USAGE (nextval) only.
    let seqs: Vec<(String, bool, bool)> = c
        .query(
            "SELECT c.relname, has_sequence_privilege('dss_client', c.oid, 'USAGE'), \
                    has_sequence_privilege('dss_client', c.oid, 'UPDATE') \
               FROM pg_class c WHERE c.relkind = 'S' \
                AND c.relnamespace = 'dss'::regnamespace AND c.relname LIKE '%\\_seq' \
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i') \
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        seqs,
        [
            ("kv_version_seq".to_string(), true, false),
            ("lock_token_seq".to_string(), true, false)
        ]
    );
    // The check dss_init runs finds nothing missing for a member.
    let mut m = postgres::Client::connect(&client_conninfo(), postgres::NoTls).unwrap();
    let missing: Vec<String> = m
        .query_one("SELECT dss.missing_privileges()", &[])
        .unwrap()
        .get(0);
    assert!(missing.is_empty(), "{missing:?}");
}

#[test]
fn a_member_cannot_rewrite_the_audit_trail_or_change_the_schema() {
    // History exists to be rewritten: one lock, taken and released.
    let h = handle();
    let id = uid("roles-audit");
    lock::lock(&h, &id, "a", 0).unwrap();
    lock::unlock(&h, &id, Some("a"), "a").unwrap();
    let lit = id.replace('\'', "''");
    let refused = [
        format!("DELETE FROM dss.lock_history WHERE id = '{lit}'"),
        format!("UPDATE dss.lock_history SET owner = 'x' WHERE id = '{lit}'"),
        "TRUNCATE dss.lock_history".to_string(),
        "UPDATE dss.schema_info SET description = 'x'".to_string(),
        "INSERT INTO dss.schema_info (version, description) VALUES (99, 'x')".to_string(),
        "DELETE FROM dss.schema_info".to_string(),
        "UPDATE dss.settings SET value = 'off' WHERE key = 'history'".to_string(),
        "CREATE TABLE dss.intruder (x int)".to_string(),
        "DROP TABLE dss.kv".to_string(),
        "ALTER TABLE dss.locks ADD COLUMN x int".to_string(),
        "CREATE INDEX ON dss.locks (owner)".to_string(),
        "CREATE FUNCTION dss.f() RETURNS int LANGUAGE sql AS 'SELECT 1'".to_string(),
        "CREATE OR REPLACE FUNCTION dss.wake(text) RETURNS void LANGUAGE sql AS ''".to_string(),
        "DROP FUNCTION dss.missing_privileges()".to_string(),
        "SELECT setval('dss.lock_token_seq', 1)".to_string(),
        "TRUNCATE dss.locks".to_string(),
        "CREATE ROLE roles_intruder".to_string(),
    ];
    for sql in &refused {
        assert_eq!(
            as_client(sql).as_deref(),
            Some("42501"),
            "{sql} must be refused"
        );
    }
    // Nothing changed.
    let mut c = client();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM dss.lock_history WHERE id = $1 AND owner = 'a'",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let v: Option<i32> = c
        .query_one(dss::sql::SCHEMA_VERSION_QUERY, &[])
        .unwrap()
        .get(0);
    assert_eq!(v, Some(dss::sql::SCHEMA_VERSION));
    let off: i64 = c
        .query_one(
            "SELECT count(*) FROM dss.settings WHERE key = 'history' AND value = 'on'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(off, 1);
    // What the library does is allowed, by hand too.
    assert_eq!(
        as_client("SELECT nextval('dss.lock_token_seq')").as_deref(),
        None
    );
}

#[test]
fn dssctl_reads_as_a_member_and_prune_needs_the_owner() {
    let h = handle();
    let id = uid("roles-cli");
    lock::lock(&h, &id, "cli-owner", 0).unwrap();
    let sem = uid("roles-sem");
    shared::sem_acquire(&h, &sem, "s1", 1, 2, 60_000, 0).unwrap();
    let bucket = uid("roles-kv");
    kv::set(&h, &bucket, "k", b"v", 0).unwrap();

    assert!(ok(&dssctl_client(&["list", "--prefix", &id])).contains("cli-owner"));
    assert!(ok(&dssctl_client(&["status", &id])).contains("cli-owner"));
    assert!(ok(&dssctl_client(&["history", &id])).contains("cli-owner"));
    assert!(ok(&dssctl_client(&["sem", "list", &sem])).contains("s1"));
    assert!(ok(&dssctl_client(&["sem", "status", &sem])).contains("s1"));
    assert_eq!(ok(&dssctl_client(&["kv", "get", &bucket, "k"])), "v\n");
    assert!(ok(&dssctl_client(&["kv", "list", &bucket])).contains('k'));
    assert!(
        ok(&dssctl_client(&["migrate", "--dry-run"]))
            .contains(&format!("schema version: {}", dss::sql::SCHEMA_VERSION))
    );
    ok(&dssctl_client(&["history", "prune", "--dry-run"]));
    // Deleting history is the owner's: exit 1, and why.
    let out = dssctl_client(&["history", "prune"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("42501"), "{err}");
    assert!(err.contains("needs the dss schema's owner"), "{err}");
    // ... and so are the migrations.
    let out = dssctl_client(&["migrate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("42501"), "{err}");
    assert!(err.contains("needs the dss schema's owner"), "{err}");

    // Its writes work as a member too.
    ok(&dssctl_client(&["kv", "set", &bucket, "k2", "w"]));
    assert_eq!(kv::get(&h, &bucket, "k2").unwrap().0, b"w");
    ok(&dssctl_client(&["kv", "del", &bucket, "k2"]));
    ok(&dssctl_client(&["kv", "del", &bucket, "k"]));
    assert_eq!(errno(kv::get(&h, &bucket, "k")), -libc::ENOENT);
    ok(&dssctl_client(&["unlock", "--force", &id]));
    assert_eq!(errno(lock::status(&h, &id)), -libc::ENOLCK);
    let owner = uid("roles-clean");
    lock::lock(&h, &id, &owner, 0).unwrap();
    ok(&dssctl_client(&["clean", "--owner-prefix", &owner]));
    assert_eq!(errno(lock::status(&h, &id)), -libc::ENOLCK);
    shared::sem_release(&h, &sem, Some("s1"), "s1").unwrap();
}

#[test]
fn a_role_without_dss_client_is_told_what_to_grant() {
    let mut c = client();
    let role = format!("roles_none_{}", std::process::id());
    let partial = format!("roles_partial_{}", std::process::id());
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role}; DROP ROLE IF EXISTS {partial};
         CREATE ROLE {role} LOGIN; CREATE ROLE {partial} LOGIN;
         GRANT USAGE ON SCHEMA dss TO {partial};
         GRANT SELECT ON ALL TABLES IN SCHEMA dss TO {partial};"
    ))
    .unwrap();
    let (errno, msg) = server::open_err(&format!("{} user={role}", conninfo()));
    assert_eq!(errno, -libc::EPERM, "{msg}");
    assert!(msg.contains("42501"), "{msg}");
    assert!(
        msg.contains(&format!("GRANT dss_client TO {role}")),
        "{msg}"
    );
    // Read-only grants: the missing ones are named.
    let (errno, msg) = server::open_err(&format!("{} user={partial}", conninfo()));
    assert_eq!(errno, -libc::EPERM, "{msg}");
    assert!(msg.contains(&format!("role \"{partial}\" lacks")), "{msg}");
    assert!(msg.contains("INSERT on dss.lock_history"), "{msg}");
    assert!(msg.contains("USAGE on dss.lock_token_seq"), "{msg}");
    assert!(!msg.contains("SELECT on"), "{msg}");
    assert!(
        msg.contains(&format!("GRANT dss_client TO {partial}")),
        "{msg}"
    );
    // The grant fixes it.
    c.batch_execute(&format!("GRANT dss_client TO {partial}"))
        .unwrap();
    let h = server::open(&format!("{} user={partial}", conninfo())).unwrap();
    let id = uid("roles-granted");
    lock::lock(&h, &id, "p", 0).unwrap();
    lock::unlock(&h, &id, Some("p"), "p").unwrap();
    drop(h);
    c.batch_execute(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA dss FROM {partial};
         REVOKE ALL ON SCHEMA dss FROM {partial};
         DROP ROLE {role}; DROP ROLE {partial};"
    ))
    .unwrap();
}
