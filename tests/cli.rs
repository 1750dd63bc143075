//! dssctl, the operator CLI: the real binary against the test cluster.
//! Locks are made through the library; each subcommand's stdout, stderr
//! and exit code are checked, and what it did is checked through the
//! library again. Tests share one database, so each works on ids and owners
//! of its own (common::uid); the ones that need the whole database (migrate,
//! clean --all) get a fresh database.

mod common;

use std::process::Output;

use common::*;
use dss::config::Settings;
use dss::handle::Handle;
use dss::lock;
use dss::shared::{self, MODE_SHARED};
use serde_json::Value;

/// dssctl with `args`, connected through the environment variable (the
/// config file is pointed nowhere so that the host's cannot interfere).
fn dssctl(args: &[&str]) -> Output {
    base().args(args).output().expect("run dssctl")
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
    expire_lease(&c);

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
            "EXPIRES_IN",
            "MODE"
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
    assert_eq!(&ra[5..], ["-", "never", "exclusive"]);
    let rb: Vec<&str> = row(&table, &b).split_whitespace().collect();
    assert_eq!(rb[5], "1m00s");
    assert!(rb[6].ends_with('s') && rb[6] != "expired", "{}", rb[6]);
    assert_eq!(
        row(&table, &c).split_whitespace().nth(6),
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

    expire_lease(&id);
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

// ------------------------------------------- shared locks and semaphores

/// Every row of a table whose first column is `id`, split on whitespace.
fn rows_of<'a>(table: &'a str, id: &str) -> Vec<Vec<&'a str>> {
    table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(id))
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// The header of a table, split on whitespace.
fn header(table: &str) -> Vec<&str> {
    table.lines().next().unwrap().split_whitespace().collect()
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// The keys of a lock object of `list --json` (sorted).
const LOCK_KEYS: [&str; 11] = [
    "expired",
    "expires_in_ms",
    "id",
    "locked_at",
    "locked_at_us",
    "mode",
    "owner",
    "refreshed_at",
    "refreshed_at_us",
    "token",
    "ttl_ms",
];

/// Makes every shared lease of `id` expired, as time would.
fn expire_shares(id: &str) {
    let mut c = client();
    let n = c
        .execute(
            "UPDATE dss.lock_shares SET expires_at = now() - interval '1 ms' \
             WHERE id = $1 AND expires_at IS NOT NULL",
            &[&id],
        )
        .unwrap();
    assert!(n > 0, "{id} has shared leases");
    c.execute(
        "UPDATE dss.locks SET expires_at = now() - interval '1 ms' \
         WHERE id = $1 AND owner IS NULL AND expires_at IS NOT NULL",
        &[&id],
    )
    .unwrap();
}

/// Makes `owner`'s lease on semaphore `id` expired, as time would.
fn expire_permits(id: &str, owner: &str) {
    let n = client()
        .execute(
            "UPDATE dss.sem_holders SET expires_at = now() - interval '1 ms' \
             WHERE id = $1 AND owner = $2",
            &[&id, &owner],
        )
        .unwrap();
    assert_eq!(n, 1, "{owner} holds {id}");
}

/// (owner, mode) of the live holders of lock `id`; empty if none.
fn holders(h: &Handle, id: &str) -> Vec<(String, i32)> {
    match shared::lock_holders(h, id) {
        Ok(hs) => hs.into_iter().map(|x| (x.owner, x.mode)).collect(),
        Err(e) if e.errno() == -libc::ENOLCK => Vec::new(),
        Err(e) => panic!("lock_holders {id}: {e}"),
    }
}

/// (owner, permits) of the live holders of semaphore `id`; empty if none.
fn sem_holders(h: &Handle, id: &str) -> Vec<(String, u32)> {
    match shared::sem_holders(h, id) {
        Ok(hs) => hs.into_iter().map(|x| (x.owner, x.permits)).collect(),
        Err(e) if e.errno() == -libc::ENOLCK => Vec::new(),
        Err(e) => panic!("sem_holders {id}: {e}"),
    }
}

/// The dssctl actor the history records for forced releases in tests.
fn test_actor() -> String {
    let owner_self = lock::owner_self();
    let host = owner_self.rsplit_once(':').unwrap().0;
    format!("dssctl:cli-tester@{host}")
}

#[test]
fn list_shows_the_mode_and_one_row_per_shared_holder() {
    let h = handle();
    let p = uid("cli-list-mode");
    let (s, x, e) = (format!("{p}/s"), format!("{p}/x"), format!("{p}/z"));
    let t1 = shared::lock_shared(&h, &s, "reader:1", 0, 0).unwrap();
    let t2 = shared::lock_shared(&h, &s, "reader:2", 60_000, 0).unwrap();
    let tx = lock::lock(&h, &x, "writer:1", 0).unwrap();
    let te = shared::lock_shared(&h, &e, "reader:3", 60_000, 0).unwrap();
    expire_shares(&e);

    let table = ok(&dssctl(&["list", "--prefix", &p]));
    assert_eq!(header(&table).last(), Some(&"MODE"), "{table}");
    assert_eq!(table.lines().count(), 5, "a header and 4 holds: {table}");
    let rs = rows_of(&table, &s);
    assert_eq!(rs.len(), 2, "one row per shared holder: {table}");
    assert_eq!(
        (rs[0][1], rs[0][2], &rs[0][5..]),
        (
            "reader:1",
            t1.to_string().as_str(),
            &["-", "never", "shared"][..]
        )
    );
    assert_eq!((rs[1][1], rs[1][2]), ("reader:2", t2.to_string().as_str()));
    assert_eq!((rs[1][5], rs[1][7]), ("1m00s", "shared"));
    assert!(rs[1][6].ends_with('s') && rs[1][6] != "expired", "{table}");
    let rx = rows_of(&table, &x);
    assert_eq!(rx.len(), 1);
    assert_eq!((rx[0][1], rx[0][7]), ("writer:1", "exclusive"));
    let re = rows_of(&table, &e);
    assert_eq!(re.len(), 1, "an expired share is listed: {table}");
    assert_eq!(&re[0][6..], ["expired", "shared"]);

    let v = json(&dssctl(&["list", "--prefix", &p, "--json"]));
    let arr = v.as_array().unwrap();
    let seen: Vec<(&str, &str, u64, &str)> = arr
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap(),
                o["owner"].as_str().unwrap(),
                o["token"].as_u64().unwrap(),
                o["mode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (s.as_str(), "reader:1", t1, "shared"),
            (s.as_str(), "reader:2", t2, "shared"),
            (x.as_str(), "writer:1", tx, "exclusive"),
            (e.as_str(), "reader:3", te, "shared"),
        ]
    );
    for o in arr {
        assert_eq!(keys(o), LOCK_KEYS, "the old keys, and mode");
    }
    assert!(arr[0]["expires_in_ms"].is_null());
    assert_eq!(arr[1]["ttl_ms"].as_u64(), Some(60_000));
    let left = arr[1]["expires_in_ms"].as_i64().unwrap();
    assert!((1..=60_000).contains(&left), "{left}");
    assert_eq!(
        (&arr[3]["expired"], &arr[3]["expires_in_ms"]),
        (&true.into(), &0.into())
    );

    // --owner-prefix picks shared holders one by one.
    let v = json(&dssctl(&[
        "list",
        "--prefix",
        &p,
        "--owner-prefix",
        "reader:2",
        "--json",
    ]));
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{v}");
    assert_eq!(
        (&arr[0]["owner"], &arr[0]["mode"]),
        (&"reader:2".into(), &"shared".into())
    );
    // Semaphores are not locks: not in `list`.
    let sem = format!("{p}/sem");
    shared::sem_acquire(&h, &sem, "w:1", 1, 2, 60_000, 0).unwrap();
    let table = ok(&dssctl(&["list", "--prefix", &p]));
    assert!(rows_of(&table, &sem).is_empty(), "{table}");
    shared::sem_release(&h, &sem, None, "test").unwrap();
    shared::unlock_shared(&h, &s, None, "test").unwrap();
}

#[test]
fn status_of_a_shared_lock_lists_its_holders() {
    let h = handle();
    let id = uid("cli-status-shared");
    let t1 = shared::lock_shared(&h, &id, "reader:1", 0, 0).unwrap();
    let t2 = shared::lock_shared(&h, &id, "reader:2", 90_000, 0).unwrap();
    let hs = shared::lock_holders(&h, &id).unwrap();

    let text = ok(&dssctl(&["status", &id]));
    let expected_head = format!("id:           {id}\nmode:         shared\nholders:      2\n");
    assert!(text.starts_with(&expected_head), "{text}");
    let table: Vec<Vec<&str>> = text
        .lines()
        .skip(3)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        table[0],
        ["OWNER", "TOKEN", "LOCKED_AT", "EXPIRES_IN"],
        "{text}"
    );
    assert_eq!(table.len(), 3, "{text}");
    assert_eq!(&table[1][..2], ["reader:1", t1.to_string().as_str()]);
    assert_eq!(table[1][3], "never");
    assert!(table[1][2].ends_with('Z'), "{text}");
    assert_eq!(&table[2][..2], ["reader:2", t2.to_string().as_str()]);
    assert!(
        table[2][3].ends_with('s') && table[2][3] != "never",
        "{text}"
    );
    assert!(!text.contains("no lock"), "{text}");

    let v = json(&dssctl(&["status", &id, "--json"]));
    assert_eq!(keys(&v), ["holders", "id", "mode"]);
    assert_eq!(
        (&v["id"], &v["mode"]),
        (&id.as_str().into(), &"shared".into())
    );
    let jh = v["holders"].as_array().unwrap();
    assert_eq!(jh.len(), 2);
    assert_eq!(
        keys(&jh[0]),
        [
            "expires_in_ms",
            "locked_at",
            "locked_at_us",
            "owner",
            "token"
        ]
    );
    assert_eq!(
        (&jh[0]["owner"], jh[0]["token"].as_u64()),
        (&"reader:1".into(), Some(t1))
    );
    assert!(jh[0]["expires_in_ms"].is_null(), "no lease");
    assert_eq!(
        jh[0]["locked_at_us"].as_i64(),
        Some(epoch_us(hs[0].locked_at))
    );
    assert_eq!(
        (&jh[1]["owner"], jh[1]["token"].as_u64()),
        (&"reader:2".into(), Some(t2))
    );
    let left = jh[1]["expires_in_ms"].as_i64().unwrap();
    assert!((1..=90_000).contains(&left), "{left}");

    // Every share gone: absent (exit 3); expired shares likewise.
    shared::unlock_shared(&h, &id, None, "test").unwrap();
    let err = fails(&dssctl(&["status", &id]), 3);
    assert!(err.contains(&id), "{err}");
    fails(&dssctl(&["status", &id, "--json"]), 3);
    shared::lock_shared(&h, &id, "reader:3", 60_000, 0).unwrap();
    assert!(ok(&dssctl(&["status", &id])).contains("reader:3"));
    expire_shares(&id);
    fails(&dssctl(&["status", &id]), 3);
}

#[test]
fn status_of_an_exclusive_lock_is_unchanged_but_for_the_json_mode() {
    let h = handle();
    let id = uid("cli-status-mode");
    let t = lock::lease(&h, &id, "writer:1", 60_000).unwrap();
    let text = ok(&dssctl(&["status", &id]));
    let keys_seen: Vec<&str> = text.lines().map(|l| l.split_once(':').unwrap().0).collect();
    assert_eq!(
        keys_seen,
        [
            "id",
            "owner",
            "token",
            "locked_at",
            "refreshed_at",
            "ttl",
            "expires_in"
        ],
        "the block of before: {text}"
    );
    let v = json(&dssctl(&["status", &id, "--json"]));
    assert_eq!(keys(&v), LOCK_KEYS);
    assert_eq!(
        (&v["mode"], v["token"].as_u64()),
        (&"exclusive".into(), Some(t))
    );

    // Downgraded: held shared by the same owner, with a new token.
    let t2 = shared::downgrade(&h, &id, "writer:1").unwrap();
    let v = json(&dssctl(&["status", &id, "--json"]));
    assert_eq!(v["mode"], "shared");
    assert_eq!(v["holders"][0]["owner"], "writer:1");
    assert_eq!(v["holders"][0]["token"].as_u64(), Some(t2));
    assert_eq!(v["holders"].as_array().unwrap().len(), 1);
    shared::unlock_shared(&h, &id, Some("writer:1"), "").unwrap();
}

#[test]
fn unlock_shared_needs_force_and_records_the_actor() {
    let h = handle();
    let id = uid("cli-unlock-shared");
    let t1 = shared::lock_shared(&h, &id, "reader:1", 0, 0).unwrap();
    let t2 = shared::lock_shared(&h, &id, "reader:2", 0, 0).unwrap();
    let t3 = shared::lock_shared(&h, &id, "reader:3", 60_000, 0).unwrap();
    let all = |names: &[&str]| -> Vec<(String, i32)> {
        names.iter().map(|n| (n.to_string(), MODE_SHARED)).collect()
    };

    let err = fails(&dssctl(&["unlock-shared", &id]), 2);
    assert!(err.contains("--force"), "{err}");
    let err = fails(&dssctl(&["unlock-shared", &id, "reader:1"]), 2);
    assert!(err.contains("--force") && err.contains("reader:1"), "{err}");
    fails(&dssctl_offline(&["unlock-shared", &id]), 2);
    assert_eq!(holders(&h, &id), all(&["reader:1", "reader:2", "reader:3"]));

    // `unlock --force` releases exclusive holders only, and says where to go.
    let err = fails(&dssctl(&["unlock", "--force", &id]), 3);
    assert!(
        err.contains("held shared") && err.contains("unlock-shared"),
        "{err}"
    );
    assert_eq!(holders(&h, &id).len(), 3, "nothing released");

    // One owner's share: that one only, recorded as its release.
    let out = ok(&dssctl(&["unlock-shared", "--force", &id, "reader:1"]));
    assert!(out.contains("reader:1") && out.contains(&id), "{out}");
    assert_eq!(holders(&h, &id), all(&["reader:2", "reader:3"]));
    let ev = &lock::history(&h, &id, 1).unwrap()[0];
    assert_eq!(
        (ev.event.as_str(), ev.owner.as_str(), ev.token),
        ("shared_release", "reader:1", t1)
    );
    let err = fails(&dssctl(&["unlock-shared", "--force", &id, "reader:1"]), 3);
    assert!(err.contains("reader:1") && err.contains(&id), "{err}");

    // Every holder: forced, with the actor.
    let out = ok(&dssctl(&["unlock-shared", "--force", &id]));
    assert!(out.contains(&id), "{out}");
    assert_eq!(holders(&h, &id), all(&[]));
    let events = lock::history(&h, &id, 10).unwrap();
    let mut forced: Vec<(&str, u64, Option<&str>)> = events[..2]
        .iter()
        .map(|e| {
            assert_eq!(e.event, "shared_force_release");
            (e.owner.as_str(), e.token, e.actor.as_deref())
        })
        .collect();
    forced.sort_unstable();
    let actor = test_actor();
    assert_eq!(
        forced,
        [
            ("reader:2", t2, Some(actor.as_str())),
            ("reader:3", t3, Some(actor.as_str()))
        ]
    );
    // Gone: exit 3, and nothing new in the history.
    let err = fails(&dssctl(&["unlock-shared", "--force", &id]), 3);
    assert!(err.contains(&id), "{err}");
    assert_eq!(lock::history(&h, &id, 10).unwrap().len(), events.len());
    // The id is free for a writer.
    lock::lock(&h, &id, "writer:1", 0).unwrap();

    // Held exclusively: unlock-shared releases nothing, and says where to go.
    let err = fails(&dssctl(&["unlock-shared", "--force", &id]), 3);
    assert!(
        err.contains("held exclusively") && err.contains("unlock --force"),
        "{err}"
    );
    fails(&dssctl(&["unlock-shared", "--force", &id, "writer:1"]), 3);
    assert!(held(&h, &id), "the writer keeps it");
    lock::unlock(&h, &id, Some("writer:1"), "").unwrap();

    // An expired share: removed, but nothing was released (exit 3).
    shared::lock_shared(&h, &id, "reader:4", 60_000, 0).unwrap();
    expire_shares(&id);
    let err = fails(&dssctl(&["unlock-shared", "--force", &id, "reader:4"]), 3);
    assert!(err.contains("expired"), "{err}");
    let left: i64 = client()
        .query_one("SELECT count(*) FROM dss.lock_shares WHERE id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the expired share is removed");
}

#[test]
fn sem_list_table_json_and_prefix() {
    let h = handle();
    let p = uid("cli-sem-list");
    let (a, b) = (format!("{p}/a"), format!("{p}/b"));
    let ta1 = shared::sem_acquire(&h, &a, "w:1", 2, 5, 60_000, 0).unwrap();
    let ta2 = shared::sem_acquire(&h, &a, "w:2", 1, 5, 120_000, 0).unwrap();
    let tb = shared::sem_acquire(&h, &b, "w:3", 1, 1, 60_000, 0).unwrap();
    expire_permits(&b, "w:3");
    // A lock of the same name is another thing: not listed.
    lock::lock(&h, &a, "lock-holder:1", 0).unwrap();

    let table = ok(&dssctl(&["sem", "list", &p]));
    assert_eq!(
        header(&table),
        [
            "ID",
            "CAPACITY",
            "OWNER",
            "PERMITS",
            "TOKEN",
            "LOCKED_AT",
            "REFRESHED_AT",
            "TTL",
            "EXPIRES_IN"
        ]
    );
    assert_eq!(table.lines().count(), 4, "{table}");
    let ra = rows_of(&table, &a);
    assert_eq!(ra.len(), 2, "{table}");
    let ta1_text = ta1.to_string();
    assert_eq!(&ra[0][..5], [a.as_str(), "5", "w:1", "2", &ta1_text]);
    assert_eq!(ra[0][7], "1m00s");
    assert!(ra[0][5].ends_with('Z') && ra[0][5] == ra[0][6], "{table}");
    assert!(ra[0][8].ends_with('s') && ra[0][8] != "expired", "{table}");
    assert_eq!(
        (ra[1][2], ra[1][3], ra[1][4], ra[1][7]),
        ("w:2", "1", ta2.to_string().as_str(), "2m00s")
    );
    let rb = rows_of(&table, &b);
    assert_eq!(rb.len(), 1);
    assert_eq!((rb[0][1], rb[0][2], rb[0][8]), ("1", "w:3", "expired"));

    let v = json(&dssctl(&["sem", "list", &p, "--json"]));
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{v}");
    for o in arr {
        assert_eq!(
            keys(o),
            [
                "capacity",
                "expired",
                "expires_in_ms",
                "id",
                "locked_at",
                "locked_at_us",
                "owner",
                "permits",
                "refreshed_at",
                "refreshed_at_us",
                "token",
                "ttl_ms"
            ]
        );
    }
    let seen: Vec<(&str, u64, &str, u64, u64)> = arr
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap(),
                o["capacity"].as_u64().unwrap(),
                o["owner"].as_str().unwrap(),
                o["permits"].as_u64().unwrap(),
                o["token"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (a.as_str(), 5, "w:1", 2, ta1),
            (a.as_str(), 5, "w:2", 1, ta2),
            (b.as_str(), 1, "w:3", 1, tb)
        ]
    );
    let listed = shared::sem_list(&h, &a).unwrap();
    assert_eq!(
        arr[0]["locked_at_us"].as_i64(),
        Some(epoch_us(listed[0].locked_at))
    );
    assert_eq!(
        arr[0]["refreshed_at_us"].as_i64(),
        Some(epoch_us(listed[0].refreshed_at))
    );
    assert_eq!(arr[1]["ttl_ms"].as_u64(), Some(120_000));
    let left = arr[1]["expires_in_ms"].as_i64().unwrap();
    assert!((60_000..=120_000).contains(&left), "{left}");
    assert_eq!(
        (&arr[0]["expired"], &arr[2]["expired"]),
        (&false.into(), &true.into())
    );
    assert_eq!(arr[2]["expires_in_ms"].as_i64(), Some(0));

    // The prefix is a prefix, not a pattern; without one, everything.
    let v = json(&dssctl(&["sem", "list", &a, "--json"]));
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(
        json(&dssctl(&["sem", "list", &format!("{p}/%"), "--json"])),
        Value::Array(vec![])
    );
    let empty = ok(&dssctl(&["sem", "list", &format!("{p}/none")]));
    assert_eq!(empty.lines().count(), 1, "the header only: {empty}");
    let everything = ok(&dssctl(&["sem", "list"]));
    assert_eq!(rows_of(&everything, &a).len(), 2);
    assert_eq!(rows_of(&everything, &b).len(), 1);

    shared::sem_release(&h, &a, None, "test").unwrap();
    lock::unlock(&h, &a, None, "test").unwrap();
}

#[test]
fn sem_status_sums_the_permits_held() {
    let h = handle();
    let id = uid("cli-sem-status");
    let t1 = shared::sem_acquire(&h, &id, "w:1", 2, 5, 60_000, 0).unwrap();
    let t2 = shared::sem_acquire(&h, &id, "w:2", 1, 5, 120_000, 0).unwrap();
    // Another semaphore whose id starts with this one's: not counted.
    let other = format!("{id}/other");
    shared::sem_acquire(&h, &other, "w:9", 4, 4, 60_000, 0).unwrap();

    let text = ok(&dssctl(&["sem", "status", &id]));
    let head = format!("id:           {id}\npermits:      3 of 5 held\nholders:      2\n");
    assert!(text.starts_with(&head), "{text}");
    let table: Vec<Vec<&str>> = text
        .lines()
        .skip(3)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(table.len(), 3, "{text}");
    assert_eq!(
        table[0],
        ["OWNER", "PERMITS", "TOKEN", "LOCKED_AT", "EXPIRES_IN"]
    );
    assert_eq!(&table[1][..3], ["w:1", "2", t1.to_string().as_str()]);
    assert_eq!(&table[2][..3], ["w:2", "1", t2.to_string().as_str()]);
    assert!(table[2][4].starts_with("1m"), "{text}");

    let v = json(&dssctl(&["sem", "status", &id, "--json"]));
    assert_eq!(keys(&v), ["capacity", "held", "holders", "id"]);
    assert_eq!(
        (&v["id"], v["capacity"].as_u64(), v["held"].as_u64()),
        (&id.as_str().into(), Some(5), Some(3))
    );
    let jh = v["holders"].as_array().unwrap();
    assert_eq!(jh.len(), 2);
    assert_eq!(
        keys(&jh[0]),
        [
            "expires_in_ms",
            "locked_at",
            "locked_at_us",
            "owner",
            "permits",
            "token"
        ]
    );
    let hs = shared::sem_holders(&h, &id).unwrap();
    assert_eq!(
        (
            &jh[0]["owner"],
            jh[0]["permits"].as_u64(),
            jh[0]["token"].as_u64()
        ),
        (&"w:1".into(), Some(2), Some(t1))
    );
    assert_eq!(
        jh[0]["locked_at_us"].as_i64(),
        Some(epoch_us(hs[0].locked_at))
    );
    let left = jh[1]["expires_in_ms"].as_i64().unwrap();
    assert!((60_000..=120_000).contains(&left), "{left}");

    // An expired hold counts as free.
    expire_permits(&id, "w:1");
    let text = ok(&dssctl(&["sem", "status", &id]));
    assert!(
        text.contains("permits:      1 of 5 held\nholders:      1\n"),
        "{text}"
    );
    assert!(!text.contains("w:1"), "{text}");
    assert_eq!(
        json(&dssctl(&["sem", "status", &id, "--json"]))["held"].as_u64(),
        Some(1)
    );

    // No live holder: exit 3.
    expire_permits(&id, "w:2");
    let err = fails(&dssctl(&["sem", "status", &id]), 3);
    assert!(err.contains(&id), "{err}");
    fails(&dssctl(&["sem", "status", &id, "--json"]), 3);
    fails(&dssctl(&["sem", "status", &uid("cli-sem-none")]), 3);
    shared::sem_release(&h, &other, None, "test").unwrap();
}

#[test]
fn sem_release_needs_force_and_records_the_actor() {
    let h = handle();
    let id = uid("cli-sem-release");
    let t1 = shared::sem_acquire(&h, &id, "w:1", 1, 3, 60_000, 0).unwrap();
    let t2 = shared::sem_acquire(&h, &id, "w:2", 1, 3, 60_000, 0).unwrap();
    let t3 = shared::sem_acquire(&h, &id, "w:3", 1, 3, 60_000, 0).unwrap();

    let err = fails(&dssctl(&["sem", "release", &id]), 2);
    assert!(err.contains("--force"), "{err}");
    let err = fails(&dssctl(&["sem", "release", &id, "w:1"]), 2);
    assert!(err.contains("--force") && err.contains("w:1"), "{err}");
    fails(&dssctl_offline(&["sem", "release", &id]), 2);
    assert_eq!(sem_holders(&h, &id).len(), 3, "nothing released");

    let out = ok(&dssctl(&["sem", "release", "--force", &id, "w:1"]));
    assert!(out.contains("w:1") && out.contains(&id), "{out}");
    assert_eq!(
        sem_holders(&h, &id),
        [("w:2".to_string(), 1), ("w:3".to_string(), 1)]
    );
    let ev = &lock::history(&h, &id, 1).unwrap()[0];
    assert_eq!(
        (ev.event.as_str(), ev.owner.as_str(), ev.token),
        ("sem_release", "w:1", t1)
    );
    let err = fails(&dssctl(&["sem", "release", "--force", &id, "w:1"]), 3);
    assert!(err.contains("w:1") && err.contains(&id), "{err}");

    let out = ok(&dssctl(&["sem", "release", "--force", &id]));
    assert!(out.contains(&id), "{out}");
    assert!(sem_holders(&h, &id).is_empty());
    let events = lock::history(&h, &id, 10).unwrap();
    let mut forced: Vec<(&str, u64, Option<&str>)> = events[..2]
        .iter()
        .map(|e| {
            assert_eq!(e.event, "sem_force_release");
            (e.owner.as_str(), e.token, e.actor.as_deref())
        })
        .collect();
    forced.sort_unstable();
    let actor = test_actor();
    assert_eq!(
        forced,
        [
            ("w:2", t2, Some(actor.as_str())),
            ("w:3", t3, Some(actor.as_str()))
        ]
    );
    let err = fails(&dssctl(&["sem", "release", "--force", &id]), 3);
    assert!(err.contains(&id), "{err}");
    assert_eq!(lock::history(&h, &id, 10).unwrap().len(), events.len());
    // Free again: a new capacity is taken.
    shared::sem_acquire(&h, &id, "w:4", 7, 7, 60_000, 0).unwrap();

    // An expired hold: removed, but nothing was released (exit 3).
    expire_permits(&id, "w:4");
    let err = fails(&dssctl(&["sem", "release", "--force", &id, "w:4"]), 3);
    assert!(err.contains("expired"), "{err}");
    assert!(shared::sem_list(&h, &id).unwrap().is_empty(), "removed");
}

#[test]
fn clean_counts_and_lists_shared_holds_and_permits() {
    let h = handle();
    let p = uid("cli-clean-shared");
    let node = format!("{p}-node");
    let (s, sem, x) = (format!("{p}/s"), format!("{p}/sem"), format!("{p}/x"));
    shared::lock_shared(&h, &s, &format!("{node}:1"), 0, 0).unwrap();
    shared::lock_shared(&h, &s, "bystander:1", 0, 0).unwrap();
    shared::sem_acquire(&h, &sem, &format!("{node}:1"), 1, 2, 60_000, 0).unwrap();
    shared::sem_acquire(&h, &sem, "bystander:2", 1, 2, 60_000, 0).unwrap();
    lock::lock(&h, &x, &format!("{node}:2"), 0).unwrap();

    let out = ok(&dssctl(&["clean", "--owner-prefix", &node, "--dry-run"]));
    let modes: Vec<(&str, &str)> = out
        .lines()
        .skip(1)
        .filter(|l| l.starts_with(&p))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0], cols[7])
        })
        .collect();
    assert_eq!(
        modes,
        [
            (s.as_str(), "shared"),
            (x.as_str(), "exclusive"),
            (sem.as_str(), "semaphore")
        ],
        "{out}"
    );
    assert!(!out.contains("bystander"), "{out}");
    assert!(out.contains("3 lock(s) would be released"), "{out}");
    let v = json(&dssctl(&[
        "clean",
        "--owner-prefix",
        &node,
        "--dry-run",
        "--json",
    ]));
    let modes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(keys(o), LOCK_KEYS);
            o["mode"].as_str().unwrap()
        })
        .collect();
    assert_eq!(modes, ["shared", "exclusive", "semaphore"]);
    assert_eq!(holders(&h, &s).len(), 2, "dry run");

    let out = ok(&dssctl(&["clean", "--owner-prefix", &node]));
    assert!(out.starts_with("released 3 lock(s)"), "{out}");
    assert_eq!(holders(&h, &s), [("bystander:1".to_string(), MODE_SHARED)]);
    assert_eq!(sem_holders(&h, &sem), [("bystander:2".to_string(), 1)]);
    assert!(!held(&h, &x));
    shared::unlock_shared(&h, &s, None, "test").unwrap();
    shared::sem_release(&h, &sem, None, "test").unwrap();
}

#[test]
fn clean_all_releases_shared_holders_and_semaphores() {
    let db = fresh_migrated_database("dssctl_clean_all");
    let h = Handle::open(Settings::new(&db).unwrap()).unwrap();
    lock::lock(&h, "x", "w:1", 0).unwrap();
    shared::lock_shared(&h, "s", "r:1", 0, 0).unwrap();
    shared::lock_shared(&h, "s", "r:2", 60_000, 0).unwrap();
    shared::sem_acquire(&h, "sem", "p:1", 1, 3, 60_000, 0).unwrap();
    shared::sem_acquire(&h, "sem", "p:2", 2, 3, 60_000, 0).unwrap();

    let v = json(&dssctl_on(&db, &["clean", "--all", "--dry-run", "--json"]));
    let seen: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("s", "shared"),
            ("s", "shared"),
            ("x", "exclusive"),
            ("sem", "semaphore"),
            ("sem", "semaphore")
        ]
    );
    let out = ok(&dssctl_on(&db, &["clean", "--all", "--dry-run"]));
    assert!(out.contains("5 lock(s) would be released"), "{out}");

    let out = ok(&dssctl_on(&db, &["clean", "--all"]));
    assert_eq!(out, "released 5 lock(s)\n");
    assert!(lock::list(&h, "", "").unwrap().is_empty());
    assert!(shared::sem_list(&h, "").unwrap().is_empty());
    lock::lock(&h, "s", "w:2", 0).expect("s is free for a writer");
    let events: Vec<(String, String, bool)> = ["x", "s", "sem"]
        .iter()
        .flat_map(|id| lock::history(&h, id, 10).unwrap())
        .filter(|e| e.event.contains("force_release"))
        .map(|e| {
            let by_dssctl = e.actor.as_deref().is_some_and(|a| a.starts_with("dssctl:"));
            (e.event, e.owner, by_dssctl)
        })
        .collect();
    let mut events = events;
    events.sort();
    assert_eq!(
        events,
        [
            ("force_release".to_string(), "w:1".to_string(), true),
            ("sem_force_release".to_string(), "p:1".to_string(), true),
            ("sem_force_release".to_string(), "p:2".to_string(), true),
            ("shared_force_release".to_string(), "r:1".to_string(), true),
            ("shared_force_release".to_string(), "r:2".to_string(), true),
        ]
    );
}

#[test]
fn shared_and_sem_usage_and_help() {
    for args in [
        &["sem"][..],
        &["sem", "frobnicate"],
        &["sem", "status"],
        &["sem", "status", ""],
        &["sem", "release"],
        &["sem", "release", "--force", ""],
        &["sem", "release", "--force", "s", ""],
        &["sem", "release", "--force", "s", "o", "extra"],
        &["sem", "list", "a", "b"],
        &["unlock-shared"],
        &["unlock-shared", "--force", ""],
        &["unlock-shared", "--force", "id", ""],
        &["unlock-shared", "id"],
    ] {
        let err = fails(&dssctl_offline(args), 2);
        assert!(!err.contains("no connection string"), "{args:?}: {err}");
    }
    let help = ok(&dssctl(&["--help"]));
    for sub in ["unlock-shared", "sem "] {
        assert!(help.contains(sub), "{sub} in\n{help}");
    }
    let help = ok(&dssctl(&["sem", "--help"]));
    for sub in ["list", "status", "release"] {
        assert!(help.contains(sub), "{help}");
    }
    let help = ok(&dssctl(&["sem", "release", "--help"]));
    assert!(
        help.contains("--force") && help.contains("sem_force_release"),
        "{help}"
    );
    let help = ok(&dssctl(&["unlock-shared", "--help"]));
    assert!(
        help.contains("--force") && help.contains("[OWNER]"),
        "{help}"
    );
    let help = ok(&dssctl(&["status", "--help"]));
    assert!(help.contains("\"holders\""), "{help}");
    let help = ok(&dssctl(&["sem", "list", "--help"]));
    assert!(help.contains("[ID_PREFIX]"), "{help}");
}

// ---------------------------------------------------------------- dssctl kv

/// dssctl with `args` and `input` on its standard input.
fn dssctl_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = base()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dssctl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// dssctl with no way to reach a database (no --conninfo, no variable, no
/// config file): anything but a usage error would exit 1.
fn dssctl_offline(args: &[&str]) -> Output {
    base()
        .env_remove("PHOBOS_DSS_connect_string")
        .args(args)
        .output()
        .expect("run dssctl")
}

/// The version `kv set` printed.
fn version(out: &Output) -> u64 {
    let s = ok(out);
    assert!(s.ends_with('\n') && s.lines().count() == 1, "{s:?}");
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("a version: {s:?}"))
}

/// The value and version in the store, through the library.
fn stored(h: &Handle, bucket: &str, key: &str) -> Option<(Vec<u8>, u64)> {
    match dss::kv::get(h, bucket, key) {
        Ok(v) => Some(v),
        Err(e) if e.errno() == -libc::ENOENT => None,
        Err(e) => panic!("kv get {bucket}/{key}: {e}"),
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn kv_set_get_text_round_trip_and_versions() {
    let h = handle();
    let b = uid("cli-kv-text");

    let v1 = version(&dssctl(&["kv", "set", &b, "greeting", "hello world"]));
    assert_eq!(
        stored(&h, &b, "greeting"),
        Some((b"hello world".to_vec(), v1))
    );
    assert_eq!(
        ok(&dssctl(&["kv", "get", &b, "greeting"])),
        "hello world\n",
        "text, a newline added"
    );

    // A new write: a higher version; text ending in a newline is printed
    // as it is.
    let text = "line 1\n\tline 2 café ☕\n";
    let v2 = version(&dssctl(&["kv", "set", &b, "greeting", text]));
    assert!(v2 > v1, "{v2} > {v1}");
    assert_eq!(ok(&dssctl(&["kv", "get", &b, "greeting"])), text);
    let raw = dssctl(&["kv", "get", &b, "greeting", "--raw"]);
    assert_eq!(code(&raw), 0);
    assert_eq!(raw.stdout, text.as_bytes());
    let v3 = version(&dssctl(&["kv", "set", &b, "greeting", "x"]));
    assert!(v3 > v2, "{v3} > {v2}");
    assert_eq!(stored(&h, &b, "greeting").unwrap().1, v3);

    let v = json(&dssctl(&["kv", "get", &b, "greeting", "--json"]));
    assert_eq!(
        v,
        serde_json::json!({
            "bucket": b, "key": "greeting", "size": 1, "version": v3,
            "value_utf8": "x", "value_base64": "eA==",
        })
    );

    // The empty value.
    let ve = version(&dssctl(&["kv", "set", &b, "empty", ""]));
    assert_eq!(stored(&h, &b, "empty"), Some((Vec::new(), ve)));
    assert_eq!(ok(&dssctl(&["kv", "get", &b, "empty"])), "\n");
    assert_eq!(ok(&dssctl(&["kv", "get", &b, "empty", "--raw"])), "");
    let v = json(&dssctl(&["kv", "get", &b, "empty", "--json"]));
    assert_eq!((&v["size"], &v["value_utf8"]), (&0.into(), &"".into()));
    assert_eq!(v["value_base64"], "");

    // A value that looks like an option goes after `--`.
    version(&dssctl(&["kv", "set", &b, "neg", "--", "-5"]));
    assert_eq!(ok(&dssctl(&["kv", "get", &b, "neg"])), "-5\n");
}

#[test]
fn kv_binary_values_file_stdin_raw_hex_json() {
    use std::os::unix::ffi::OsStrExt;
    let h = handle();
    let b = uid("cli-kv-bin");
    let dir = tempdir("dssctl-kv");
    let bin: Vec<u8> = vec![0, b'a', 0, 0xff, b'\n', 0x1b];
    let path = dir.join("bin");
    std::fs::write(&path, &bin).unwrap();

    let v1 = version(&dssctl(&[
        "kv",
        "set",
        &b,
        "blob",
        "--file",
        path.to_str().unwrap(),
    ]));
    assert_eq!(stored(&h, &b, "blob"), Some((bin.clone(), v1)));

    let raw = dssctl(&["kv", "get", &b, "blob", "--raw"]);
    assert_eq!((code(&raw), stderr(&raw).as_str()), (0, ""));
    assert_eq!(raw.stdout, bin, "the exact bytes, NULs included");

    // Default: hex, and a note on stderr.
    let out = dssctl(&["kv", "get", &b, "blob"]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "006100ff0a1b\n");
    let note = stderr(&out);
    assert!(note.contains("hex") && note.contains("--raw"), "{note}");

    let v = json(&dssctl(&["kv", "get", &b, "blob", "--json"]));
    assert_eq!(
        v,
        serde_json::json!({
            "bucket": b, "key": "blob", "size": 6, "version": v1,
            "value_utf8": null, "value_base64": "AGEA/wob",
        })
    );

    // Valid UTF-8 but with a control character: hex by default, the text
    // in JSON.
    version(&dssctl(&["kv", "set", &b, "cr", "a\rb"]));
    let out = dssctl(&["kv", "get", &b, "cr"]);
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "610d62\n"));
    let v = json(&dssctl(&["kv", "get", &b, "cr", "--json"]));
    assert_eq!(
        (&v["value_utf8"], &v["value_base64"]),
        (&"a\rb".into(), &"YQ1i".into())
    );

    // --stdin.
    let v2 = version(&dssctl_stdin(
        &["kv", "set", &b, "blob", "--stdin"],
        b"\0\0in\xfe",
    ));
    assert!(v2 > v1);
    assert_eq!(stored(&h, &b, "blob"), Some((b"\0\0in\xfe".to_vec(), v2)));

    // A VALUE argument that is not UTF-8 is stored byte for byte.
    let out = base()
        .args(["kv", "set", &b, "latin1"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
        .output()
        .unwrap();
    let vl = version(&out);
    assert_eq!(stored(&h, &b, "latin1"), Some((b"caf\xe9".to_vec(), vl)));
    assert_eq!(stdout(&dssctl(&["kv", "get", &b, "latin1"])), "636166e9\n");

    // The largest value round trips; one byte more is refused with exit 2
    // before connecting, and nothing is written.
    let big: Vec<u8> = (0..dss::kv::MAX_VALUE_LEN)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let big_path = dir.join("big");
    std::fs::write(&big_path, &big).unwrap();
    let big_arg = big_path.to_str().unwrap();
    version(&dssctl(&["kv", "set", &b, "big", "--file", big_arg]));
    let raw = dssctl(&["kv", "get", &b, "big", "--raw"]);
    assert_eq!(code(&raw), 0);
    assert!(raw.stdout == big, "64 MiB value differs");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&big_path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"!").unwrap();
    drop(f);
    let err = fails(&dssctl(&["kv", "set", &b, "blob", "--file", big_arg]), 2);
    assert!(
        err.contains("64 MiB") && err.contains("nothing written"),
        "{err}"
    );
    assert_eq!(stored(&h, &b, "blob").unwrap().1, v2, "unchanged");
    fails(
        &dssctl_offline(&["kv", "set", &b, "blob", "--file", big_arg]),
        2,
    );
    let mut too_big = big;
    too_big.push(0);
    fails(
        &dssctl_stdin(&["kv", "set", &b, "blob", "--stdin"], &too_big),
        2,
    );
    assert_eq!(stored(&h, &b, "blob").unwrap().1, v2, "unchanged");
    dss::kv::delete(&h, &b, "big").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kv_ttl_then_expiry() {
    let h = handle();
    let b = uid("cli-kv-ttl");
    let v1 = version(&dssctl(&[
        "kv",
        "set",
        &b,
        "t",
        "soon gone",
        "--ttl-ms",
        "60000",
    ]));
    let in_window: bool = client()
        .query_one(
            "SELECT expires_at > now() + interval '50 s' \
                AND expires_at <= now() + interval '60 s' \
               FROM dss.kv WHERE bucket = $1 AND key = $2",
            &[&b, &"t"],
        )
        .unwrap()
        .get(0);
    assert!(in_window, "expires about 60 s after the write");
    assert_eq!(ok(&dssctl(&["kv", "get", &b, "t"])), "soon gone\n");
    assert_eq!(lines(&ok(&dssctl(&["kv", "list", &b]))), ["t"]);

    expire_kv(&b, "t");
    let err = fails(&dssctl(&["kv", "get", &b, "t"]), 3);
    assert!(err.contains("'t'") && err.contains(&b), "{err}");
    fails(&dssctl(&["kv", "get", &b, "t", "--json"]), 3);
    fails(&dssctl(&["kv", "get", &b, "t", "--raw"]), 3);
    assert_eq!(
        ok(&dssctl(&["kv", "list", &b])),
        "",
        "expired keys are not listed"
    );

    // Written again without --ttl-ms: never expires, a newer version.
    let v2 = version(&dssctl(&["kv", "set", &b, "t", "back"]));
    assert!(v2 > v1);
    let never: bool = client()
        .query_one(
            "SELECT expires_at IS NULL FROM dss.kv WHERE bucket = $1 AND key = $2",
            &[&b, &"t"],
        )
        .unwrap()
        .get(0);
    assert!(never);

    let max = dss::lock::MAX_TTL_MS.to_string();
    let over = (dss::lock::MAX_TTL_MS + 1).to_string();
    version(&dssctl(&["kv", "set", &b, "long", "v", "--ttl-ms", &max]));
    for bad in [over.as_str(), "-1", "soon", ""] {
        fails(&dssctl(&["kv", "set", &b, "t", "x", "--ttl-ms", bad]), 2);
    }
    assert_eq!(stored(&h, &b, "t"), Some((b"back".to_vec(), v2)));
}

#[test]
fn kv_del_absent_is_fine() {
    let h = handle();
    let b = uid("cli-kv-del");
    version(&dssctl(&["kv", "set", &b, "k", "v"]));
    version(&dssctl(&["kv", "set", &b, "keep", "v"]));
    assert_eq!(ok(&dssctl(&["kv", "del", &b, "k"])), "", "prints nothing");
    assert_eq!(stored(&h, &b, "k"), None);
    fails(&dssctl(&["kv", "get", &b, "k"]), 3);
    assert!(stored(&h, &b, "keep").is_some(), "only that key");
    assert_eq!(ok(&dssctl(&["kv", "del", &b, "k"])), "");
    assert_eq!(ok(&dssctl(&["kv", "del", &b, "never-written"])), "");
    assert_eq!(
        ok(&dssctl(&["kv", "del", &uid("cli-kv-nobucket"), "k"])),
        ""
    );
}

#[test]
fn kv_list_prefix_paging_and_json() {
    let h = handle();
    let b = uid("cli-kv-list");
    let keys = ["p/1", "p/2", "p/3", "p/4", "p/5"];
    // Written out of order: the listing is in key order.
    for k in ["p/4", "q", "p/1", "p/5", "p0", "p/3", "p/2", "p/gone"] {
        dss::kv::set(&h, &b, k, b"v", 0).unwrap();
    }
    expire_kv(&b, "p/gone");

    for extra in [
        &["--limit", "2"][..],
        &["--limit", "1"],
        &[],
        &["--all"],
        &["--limit", "2", "--all"],
    ] {
        let args = [&["kv", "list", &b, "--prefix", "p/"][..], extra].concat();
        assert_eq!(lines(&ok(&dssctl(&args))), keys, "{extra:?}");
        let args = [&args[..], &["--json"]].concat();
        assert_eq!(json(&dssctl(&args)), serde_json::json!(keys), "{extra:?}");
    }
    let all = ok(&dssctl(&["kv", "list", &b, "--limit", "3"]));
    assert_eq!(lines(&all), ["p/1", "p/2", "p/3", "p/4", "p/5", "p0", "q"]);
    // A prefix is a prefix, not a pattern.
    assert_eq!(ok(&dssctl(&["kv", "list", &b, "--prefix", "p%"])), "");
    assert_eq!(
        json(&dssctl(&["kv", "list", &uid("cli-kv-empty"), "--json"])),
        serde_json::json!([])
    );

    // Control characters are escaped in the text, exact in JSON.
    let b2 = uid("cli-kv-list-esc");
    dss::kv::set(&h, &b2, "a\tb\nc", b"v", 0).unwrap();
    dss::kv::set(&h, &b2, "plain", b"v", 0).unwrap();
    assert_eq!(ok(&dssctl(&["kv", "list", &b2])), "a\\tb\\nc\nplain\n");
    assert_eq!(
        json(&dssctl(&["kv", "list", &b2, "--json"])),
        serde_json::json!(["a\tb\nc", "plain"])
    );

    for bad in ["0", "100001", "-1", "many"] {
        fails(&dssctl(&["kv", "list", &b, "--limit", bad]), 2);
    }
}

#[test]
fn kv_usage_errors_exit_2_before_connecting() {
    let long = "k".repeat(1025);
    let wide = "é".repeat(513); // 513 characters, 1026 bytes
    for args in [
        &["kv"][..],
        &["kv", "frobnicate"],
        &["kv", "get", "b"],
        &["kv", "get", "", "k"],
        &["kv", "get", "b", ""],
        &["kv", "get", "b", &long],
        &["kv", "get", &long, "k"],
        &["kv", "set", "b", &wide, "v"],
        &["kv", "del", "", "k"],
        &["kv", "list", ""],
        &["kv", "list", &long],
        &["kv", "get", "b", "k", "--raw", "--json"],
        &["kv", "set", "b", "k"],
        &["kv", "set", "b", "k", "v", "--stdin"],
        &["kv", "set", "b", "k", "v", "--file", "/etc/hostname"],
        &["kv", "set", "b", "k", "--file", "/etc/hostname", "--stdin"],
        &["kv", "set", "b", "k", "v", "extra"],
        &["kv", "set", "b", "k", "--file", "/nonexistent/value"],
        &["kv", "set", "b", "k", "--file", "/"],
    ] {
        let err = fails(&dssctl_offline(args), 2);
        assert!(!err.contains("no connection string"), "{args:?}: {err}");
    }
    let err = fails(&dssctl_offline(&["kv", "get", "", "k"]), 2);
    assert!(err.contains("BUCKET must not be empty"), "{err}");
    let err = fails(&dssctl_offline(&["kv", "get", "b", &wide]), 2);
    assert!(
        err.contains("KEY is 1026 bytes long: at most 1024"),
        "{err}"
    );
    assert!(!err.contains(&wide), "the value is not echoed");
    let err = fails(
        &dssctl_offline(&["kv", "set", "b", "k", "--file", "/nonexistent/value"]),
        2,
    );
    assert!(err.contains("cannot read '/nonexistent/value'"), "{err}");

    // The limits are in bytes and inclusive.
    let h = handle();
    let b = "b".repeat(1024);
    let k = "é".repeat(512);
    let v = version(&dssctl(&["kv", "set", &b, &k, "edge"]));
    assert_eq!(stored(&h, &b, &k), Some((b"edge".to_vec(), v)));
    assert_eq!(lines(&ok(&dssctl(&["kv", "list", &b]))), [k.as_str()]);
    assert_eq!(ok(&dssctl(&["kv", "del", &b, &k])), "");

    // Help documents the group and the JSON shape.
    let help = ok(&dssctl(&["--help"]));
    assert!(help.contains("kv"), "{help}");
    let help = ok(&dssctl(&["kv", "--help"]));
    for sub in ["get", "set", "del", "list"] {
        assert!(help.contains(sub), "{help}");
    }
    let help = ok(&dssctl(&["kv", "get", "--help"]));
    for field in [
        "\"bucket\"",
        "\"key\"",
        "\"size\"",
        "\"value_base64\"",
        "\"value_utf8\"",
        "\"version\"",
    ] {
        assert!(help.contains(field), "{field} in\n{help}");
    }
    assert!(ok(&dssctl(&["kv", "list", "--help"])).contains("page size"));
}

#[test]
fn kv_database_errors_exit_1() {
    let dir = tempdir("dssctl-kv-nosrv");
    let nowhere = format!("host={} port=5432 dbname=dss", dir.display());
    for args in [
        &["kv", "get", "b", "k"][..],
        &["kv", "set", "b", "k", "v"],
        &["kv", "del", "b", "k"],
        &["kv", "list", "b"],
    ] {
        let err = fails(&dssctl_on(&nowhere, args), 1);
        assert!(
            err.starts_with("dssctl: ") && err.contains("connect"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir(&dir).unwrap();
}
