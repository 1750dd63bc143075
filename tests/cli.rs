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
