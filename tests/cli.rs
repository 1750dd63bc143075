//! dssctl, the operator CLI: the real binary against the test cluster.
//! Locks are made through the library; each subcommand's stdout, stderr
//! and exit code are checked, and what it did is checked through the
//! library again. Tests share one database, so each works on ids and owners
//! of its own (common::uid); the ones that need the whole database (migrate,
//! clean --all) get a fresh database.

mod common;

use std::process::{Command, Output};

use common::*;
use dss::config::Settings;
use dss::handle::Handle;
use dss::lock;
use serde_json::Value;

/// dssctl with `args`, connected through the environment variable (the
/// config file is pointed nowhere so that the host's cannot interfere).
fn dssctl(args: &[&str]) -> Output {
    base().args(args).output().expect("run dssctl")
}

/// dssctl connected with --conninfo only.
fn dssctl_on(conninfo: &str, args: &[&str]) -> Output {
    let mut cmd = base();
    cmd.env_remove("PHOBOS_DSS_connect_string")
        .arg("--conninfo")
        .arg(conninfo)
        .args(args);
    cmd.output().expect("run dssctl")
}

fn base() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dssctl"));
    cmd.env("PHOBOS_DSS_connect_string", conninfo())
        .env("PHOBOS_CFG_FILE", "/nonexistent/phobos.conf")
        .env("USER", "cli-tester");
    cmd
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("dssctl exited normally")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Asserts exit 0 and an empty stderr; returns stdout.
fn ok(out: &Output) -> String {
    assert_eq!(code(out), 0, "stderr: {}", stderr(out));
    assert_eq!(stderr(out), "", "nothing on stderr on success");
    stdout(out)
}

/// Asserts exit `expected`, nothing on stdout and a dssctl message on
/// stderr; returns stderr.
fn fails(out: &Output, expected: i32) -> String {
    assert_eq!(
        code(out),
        expected,
        "stdout: {} stderr: {}",
        stdout(out),
        stderr(out)
    );
    assert_eq!(stdout(out), "", "no data on failure");
    let err = stderr(out);
    assert!(!err.trim().is_empty(), "a message on stderr");
    err
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("--json output parses")
}

/// The line of a table whose first column is `id`.
fn row<'a>(table: &'a str, id: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{table}"))
}

/// Makes the lease of `id` expired, as time would.
fn expire(id: &str) {
    let n = client()
        .execute(
            "UPDATE dss.locks SET expires_at = now() - interval '1 millisecond' \
             WHERE id = $1 AND expires_at IS NOT NULL",
            &[&id],
        )
        .unwrap();
    assert_eq!(n, 1, "{id} is a lease");
}

fn epoch_us(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn held(h: &Handle, id: &str) -> bool {
    match lock::status(h, id) {
        Ok(_) => true,
        Err(e) if e.errno() == -libc::ENOLCK => false,
        Err(e) => panic!("status {id}: {e}"),
    }
}

#[test]
fn list_table_json_and_filters() {
    let h = handle();
    let p = uid("cli-list");
    let (a, b, c) = (format!("{p}/a"), format!("{p}/b"), format!("{p}/c"));
    let own = format!("{p}-owner");
    let ta = lock::lock(&h, &a, &format!("{own}:1"), 0).unwrap();
    let tb = lock::lease(&h, &b, "someone-else:2", 60_000).unwrap();
    let tc = lock::lease(&h, &c, &format!("{own}:3"), 60_000).unwrap();
    expire(&c);

    let table = ok(&dssctl(&["list", "--prefix", &p]));
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "OWNER",
            "TOKEN",
            "LOCKED_AT",
            "REFRESHED_AT",
            "TTL",
            "EXPIRES_IN"
        ]
    );
    assert_eq!(lines.count(), 3, "{table}");
    let ra: Vec<&str> = row(&table, &a).split_whitespace().collect();
    assert_eq!(ra[1], format!("{own}:1"));
    assert_eq!(ra[2], ta.to_string());
    let info = lock::info(&h, &a).unwrap();
    assert!(
        ra[3].ends_with('Z') && ra[3].len() == "2026-01-01T00:00:00.000Z".len(),
        "{}",
        ra[3]
    );
    assert_eq!(ra[3], ra[4], "taken, never refreshed");
    assert_eq!(&ra[5..], ["-", "never"]);
    let rb: Vec<&str> = row(&table, &b).split_whitespace().collect();
    assert_eq!(rb[5], "1m00s");
    assert!(rb[6].ends_with('s') && rb[6] != "expired", "{}", rb[6]);
    assert_eq!(
        row(&table, &c).split_whitespace().last(),
        Some("expired"),
        "expired leases are listed, marked"
    );

    let v = json(&dssctl(&["list", "--prefix", &p, "--json"]));
    let arr = v.as_array().unwrap();
    let ids: Vec<&str> = arr.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str(), c.as_str()]);
    let ja = &arr[0];
    assert_eq!(ja["owner"], format!("{own}:1").as_str());
    assert_eq!(ja["token"].as_u64(), Some(ta));
    assert_eq!(ja["ttl_ms"].as_u64(), Some(0));
    assert!(ja["expires_in_ms"].is_null(), "never expires");
    assert_eq!(ja["expired"], false);
    assert_eq!(
        ja["locked_at_us"].as_i64(),
        Some(epoch_us(info.locked_at)),
        "exact database timestamp"
    );
    assert_eq!(
        ja["refreshed_at_us"].as_i64(),
        Some(epoch_us(info.refreshed_at))
    );
    let at = ja["locked_at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('T'), "{at}");
    assert!(
        at.starts_with(&ra[3][..23]),
        "same instant as the table: {at} {}",
        ra[3]
    );
    assert_eq!(arr[1]["owner"], "someone-else:2");
    assert_eq!(arr[1]["token"].as_u64(), Some(tb));
    assert_eq!(arr[1]["ttl_ms"].as_u64(), Some(60_000));
    let left = arr[1]["expires_in_ms"].as_i64().unwrap();
    assert!((1..=60_000).contains(&left), "{left}");
    assert_eq!(arr[2]["token"].as_u64(), Some(tc));
    assert_eq!(arr[2]["expired"], true);
    assert_eq!(arr[2]["expires_in_ms"].as_i64(), Some(0));

    // --owner-prefix filters on the owner, together with --prefix.
    let v = json(&dssctl(&[
        "list",
        "--prefix",
        &p,
        "--owner-prefix",
        &own,
        "--json",
    ]));
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), c.as_str()]);
    // The prefix is a prefix, not a pattern.
    let v = json(&dssctl(&["list", "--prefix", &format!("{p}/%"), "--json"]));
    assert_eq!(v, Value::Array(vec![]));
    let table = ok(&dssctl(&["list", "--prefix", &format!("{p}/b")]));
    assert_eq!(table.lines().count(), 2, "header and b only: {table}");
    // Without filters, everything: ours included.
    let all = ok(&dssctl(&["list"]));
    for id in [&a, &b, &c] {
        row(&all, id);
    }
}

#[test]
fn status_live_and_absent() {
    let h = handle();
    let id = uid("cli-status");
    let owner = format!("{id}-owner");
    let t = lock::lease(&h, &id, &owner, 120_000).unwrap();
    let info = lock::info(&h, &id).unwrap();

    let text = ok(&dssctl(&["status", &id]));
    assert!(text.contains(&format!("owner:        {owner}\n")), "{text}");
    assert!(text.contains(&format!("token:        {t}\n")), "{text}");
    assert!(text.contains("ttl:          2m00s (120000 ms)\n"), "{text}");

    let v = json(&dssctl(&["status", &id, "--json"]));
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["owner"], owner.as_str());
    assert_eq!(v["token"].as_u64(), Some(t));
    assert_eq!(v["ttl_ms"].as_u64(), Some(120_000));
    assert_eq!(v["locked_at_us"].as_i64(), Some(epoch_us(info.locked_at)));
    assert_eq!(v["expired"], false);

    let missing = uid("cli-status-missing");
    let err = fails(&dssctl(&["status", &missing]), 3);
    assert!(err.contains(&missing), "{err}");
    assert_eq!(code(&dssctl(&["status", &missing, "--json"])), 3);

    expire(&id);
    fails(&dssctl(&["status", &id]), 3);
}

#[test]
fn unlock_needs_force_and_records_the_actor() {
    let h = handle();
    let id = uid("cli-unlock");
    let t = lock::lock(&h, &id, "holder:1", 0).unwrap();

    let err = fails(&dssctl(&["unlock", &id]), 2);
    assert!(err.contains("--force"), "{err}");
    assert!(held(&h, &id), "nothing released without --force");

    let out = ok(&dssctl(&["unlock", "--force", &id]));
    assert!(out.contains(&id), "{out}");
    assert!(!held(&h, &id), "released");

    let events = lock::history(&h, &id, 10).unwrap();
    let last = &events[0];
    assert_eq!(last.event, "force_release");
    assert_eq!((last.owner.as_str(), last.token), ("holder:1", t));
    let owner_self = lock::owner_self();
    let host = owner_self.rsplit_once(':').unwrap().0;
    assert_eq!(
        last.actor.as_deref(),
        Some(format!("dssctl:cli-tester@{host}").as_str())
    );

    // Gone: exit 3, and nothing new in the history.
    let err = fails(&dssctl(&["unlock", "--force", &id]), 3);
    assert!(err.contains(&id), "{err}");
    assert_eq!(lock::history(&h, &id, 10).unwrap().len(), events.len());

    // Without $USER the user comes from the uid.
    lock::lock(&h, &id, "holder:2", 0).unwrap();
    let out = base()
        .env_remove("USER")
        .args(["unlock", "--force", &id])
        .output()
        .unwrap();
    ok(&out);
    let actor = lock::history(&h, &id, 1).unwrap()[0].actor.clone().unwrap();
    assert!(
        actor.starts_with("dssctl:") && actor.ends_with(&format!("@{host}")),
        "{actor}"
    );
    assert!(actor.len() > "dssctl:@".len() + host.len(), "{actor}");
}

#[test]
fn clean_dry_run_then_for_real() {
    let h = handle();
    let p = uid("cli-clean");
    let ids: Vec<String> = (0..3).map(|i| format!("{p}/{i}")).collect();
    lock::lock(&h, &ids[0], &format!("{p}-node:1"), 0).unwrap();
    lock::lease(&h, &ids[1], &format!("{p}-node:2"), 60_000).unwrap();
    lock::lock(&h, &ids[2], "bystander:3", 0).unwrap();
    let prefix = format!("{p}-node");

    let out = ok(&dssctl(&["clean", "--owner-prefix", &prefix, "--dry-run"]));
    row(&out, &ids[0]);
    row(&out, &ids[1]);
    assert!(!out.contains(&ids[2]), "{out}");
    assert!(out.contains("2 lock(s) would be released"), "{out}");
    let v = json(&dssctl(&[
        "clean",
        "--owner-prefix",
        &prefix,
        "--dry-run",
        "--json",
    ]));
    let listed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[0].as_str(), ids[1].as_str()]);
    assert!(
        ids.iter().all(|id| held(&h, id)),
        "dry run releases nothing"
    );

    let out = ok(&dssctl(&["clean", "--owner-prefix", &prefix]));
    assert!(out.starts_with("released 2 lock(s)"), "{out}");
    assert!(!held(&h, &ids[0]) && !held(&h, &ids[1]));
    assert!(held(&h, &ids[2]), "other owners keep theirs");
    let ev = &lock::history(&h, &ids[0], 1).unwrap()[0];
    assert_eq!(ev.event, "clean");
    assert!(ev.actor.as_deref().unwrap().starts_with("dssctl:"));

    let v = json(&dssctl(&["clean", "--owner-prefix", &prefix, "--json"]));
    assert_eq!(v, serde_json::json!({ "released": 0 }));
}

#[test]
fn clean_refuses_ambiguous_requests() {
    let h = handle();
    let id = uid("cli-clean-usage");
    lock::lock(&h, &id, "keep:1", 0).unwrap();

    let err = fails(&dssctl(&["clean", "--owner-prefix", ""]), 2);
    assert!(err.contains("--all"), "names the explicit flag: {err}");
    fails(&dssctl(&["clean"]), 2);
    fails(&dssctl(&["clean", "--all", "--owner-prefix", "keep"]), 2);
    fails(&dssctl(&["clean", "--owner-prefix", "", "--dry-run"]), 2);
    assert!(held(&h, &id), "nothing released");
}

#[test]
fn history_newest_first() {
    let h = handle();
    let id = uid("cli-history");
    let t1 = lock::lock(&h, &id, "first:1", 0).unwrap();
    lock::unlock(&h, &id, Some("first:1"), "x").unwrap();
    let t2 = lock::lease(&h, &id, "second:2", 60_000).unwrap();

    let v = json(&dssctl(&["history", &id, "--json"]));
    let ev = v.as_array().unwrap();
    let seen: Vec<(&str, &str, u64)> = ev
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["owner"].as_str().unwrap(),
                e["token"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("acquire", "second:2", t2),
            ("release", "first:1", t1),
            ("acquire", "first:1", t1)
        ]
    );
    let seqs: Vec<i64> = ev.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let ats: Vec<i64> = ev.iter().map(|e| e["at_us"].as_i64().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "{ats:?}");
    assert!(ev.iter().all(|e| e["actor"].is_null()), "owners acted");
    assert!(ev[0]["at"].as_str().unwrap().ends_with('Z'));

    let table = ok(&dssctl(&["history", &id]));
    let events: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(events, ["acquire", "release", "acquire"], "{table}");
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["SEQ", "AT", "EVENT", "OWNER", "TOKEN", "ACTOR"]
    );

    let v = json(&dssctl(&["history", &id, "--limit", "1", "--json"]));
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["token"].as_u64(), Some(t2));
    fails(&dssctl(&["history", &id, "--limit", "0"]), 2);
}

#[test]
fn migrate_a_fresh_database_then_wipe_it() {
    let db = fresh_database("dssctl_migrate");

    // No schema yet: the library refuses, migrate --dry-run changes nothing.
    let err = fails(&dssctl_on(&db, &["list"]), 1);
    assert!(err.contains("migrate"), "{err}");
    let out = ok(&dssctl_on(&db, &["migrate", "--dry-run"]));
    assert!(out.starts_with("schema version: none"), "{out}");
    for (name, _) in dss::sql::MIGRATIONS {
        assert!(out.contains(&format!("{name}: pending")), "{out}");
    }
    fails(&dssctl_on(&db, &["list"]), 1);

    let expected: Vec<String> = dss::sql::MIGRATIONS
        .iter()
        .map(|(name, _)| format!("applied {name}"))
        .chain([format!("schema version: {}", dss::sql::SCHEMA_VERSION)])
        .collect();
    for run in 0..2 {
        let out = ok(&dssctl_on(&db, &["migrate"]));
        assert_eq!(out.lines().collect::<Vec<_>>(), expected, "run {run}");
    }
    let version: Option<i32> = postgres::Client::connect(&db, postgres::NoTls)
        .unwrap()
        .query_one(dss::sql::SCHEMA_VERSION_QUERY, &[])
        .unwrap()
        .get(0);
    assert_eq!(version, Some(dss::sql::SCHEMA_VERSION));
    let out = ok(&dssctl_on(&db, &["migrate", "--dry-run"]));
    assert!(!out.contains("pending"), "{out}");

    // The database is ours alone: clean --all.
    let h = Handle::open(Settings::new(&db).unwrap()).expect("migrated");
    lock::lock(&h, "a", "n1:1", 0).unwrap();
    lock::lease(&h, "b", "n2:2", 60_000).unwrap();
    lock::lease(&h, "c", "n3:3", 60_000).unwrap();
    client_expire(&db, "c");
    let v = json(&dssctl_on(&db, &["clean", "--all", "--dry-run", "--json"]));
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(lock::list(&h, "", "").unwrap().len(), 3, "dry run");
    let out = ok(&dssctl_on(&db, &["clean", "--all"]));
    assert_eq!(out, "released 3 lock(s)\n");
    assert!(lock::list(&h, "", "").unwrap().is_empty());
    let ev = &lock::history(&h, "a", 1).unwrap()[0];
    assert_eq!(ev.event, "force_release");
    assert!(ev.actor.as_deref().unwrap().starts_with("dssctl:"));
    let v = json(&dssctl_on(&db, &["list", "--json"]));
    assert_eq!(v, Value::Array(vec![]));
}

fn client_expire(db: &str, id: &str) {
    let n = postgres::Client::connect(db, postgres::NoTls)
        .unwrap()
        .execute(
            "UPDATE dss.locks SET expires_at = now() - interval '1 millisecond' WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn connection_errors_exit_1() {
    let dir = tempdir("dssctl-nosrv");
    let nowhere = format!("host={} port=5432 dbname=dss", dir.display());
    let err = fails(&dssctl_on(&nowhere, &["list"]), 1);
    assert!(
        err.starts_with("dssctl: ") && err.contains("connect"),
        "{err}"
    );
    let err = fails(&dssctl_on(&nowhere, &["migrate"]), 1);
    assert!(err.contains("connect"), "{err}");
    std::fs::remove_dir(&dir).unwrap();

    let err = fails(
        &dssctl_on("host=/tmp port=bad password=s3cr3t", &["status", "x"]),
        1,
    );
    assert!(err.contains("port"), "{err}");
    assert!(!err.contains("s3cr3t"), "never the password: {err}");

    // No --conninfo, no variable, no config file.
    let out = base()
        .env_remove("PHOBOS_DSS_connect_string")
        .arg("list")
        .output()
        .unwrap();
    let err = fails(&out, 1);
    assert!(err.contains("no connection string"), "{err}");

    // A database that does not exist.
    let err = fails(
        &dssctl_on(
            &format!("{} dbname=no_such_db_{}", conninfo(), std::process::id()),
            &["list"],
        ),
        1,
    );
    assert!(err.contains("no_such_db"), "{err}");
}

#[test]
fn connection_string_sources() {
    let h = handle();
    let id = uid("cli-config");
    lock::lock(&h, &id, "cfg:1", 0).unwrap();

    // The [dss] section of $PHOBOS_CFG_FILE.
    let dir = tempdir("dssctl-cfg");
    let cfg = dir.join("phobos.conf");
    std::fs::write(
        &cfg,
        format!(
            "[other]\nconnect_string = host=/nonexistent\n[dss]\nconnect_string = {}\n",
            conninfo()
        ),
    )
    .unwrap();
    let out = base()
        .env_remove("PHOBOS_DSS_connect_string")
        .env("PHOBOS_CFG_FILE", &cfg)
        .args(["status", &id])
        .output()
        .unwrap();
    assert!(ok(&out).contains("cfg:1"));

    // The environment wins over the file, --conninfo over both.
    let bad = "host=/nonexistent/socket/dir port=5432";
    let out = base()
        .env("PHOBOS_DSS_connect_string", bad)
        .env("PHOBOS_CFG_FILE", &cfg)
        .args(["status", &id])
        .output()
        .unwrap();
    fails(&out, 1);
    let out = base()
        .env("PHOBOS_DSS_connect_string", bad)
        .args(["--conninfo", &conninfo(), "status", &id])
        .output()
        .unwrap();
    assert!(ok(&out).contains("cfg:1"));
    // --conninfo is global: accepted after the subcommand too.
    let out = base()
        .env("PHOBOS_DSS_connect_string", bad)
        .args(["status", &id, "--conninfo", &conninfo()])
        .output()
        .unwrap();
    assert!(ok(&out).contains("cfg:1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &[][..],
        &["status"][..],
        &["status", ""][..],
        &["list", "--bogus"][..],
        &["history", "x", "--limit", "lots"][..],
    ] {
        fails(&dssctl(args), 2);
    }
    let help = ok(&dssctl(&["--help"]));
    for sub in ["list", "status", "unlock", "clean", "history", "migrate"] {
        assert!(help.contains(sub), "{help}");
    }
}
