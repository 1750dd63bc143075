//! sql/ migrations: applied with psql in name order they build the schema;
//! applied again (or by several psql at once) they change nothing.

mod common;

use std::process::Command;

fn migration_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".sql") && name.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn apply_all(conninfo: &str) -> std::process::Child {
    let mut script = String::new();
    for f in migration_files() {
        script.push_str(&format!(
            "psql -X -q -v ON_ERROR_STOP=1 \"$1\" -f '{}' || exit 1\n",
            f.display()
        ));
    }
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(conninfo)
        .spawn()
        .unwrap()
}

fn schema_dump(conninfo: &str) -> String {
    let out = Command::new("pg_dump")
        .arg("--schema-only")
        .arg("--schema=dss")
        .arg(format!("--dbname={conninfo}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pg_dump ≥ 15.14 brackets its output with random \restrict keys.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn applying_twice_changes_nothing() {
    let conninfo = common::fresh_database("mig_twice");
    assert!(apply_all(&conninfo).wait().unwrap().success());
    let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
    c.execute(
        "INSERT INTO dss.locks (id, owner) VALUES ('kept', 'me')",
        &[],
    )
    .unwrap();
    let before = schema_dump(&conninfo);
    let versions_before: Vec<i32> = c
        .query("SELECT version FROM dss.schema_info ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    assert!(apply_all(&conninfo).wait().unwrap().success());
    assert_eq!(schema_dump(&conninfo), before);
    let versions_after: Vec<i32> = c
        .query("SELECT version FROM dss.schema_info ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions_after, versions_before);
    assert_eq!(
        *versions_after.last().unwrap(),
        dss::sql::SCHEMA_VERSION,
        "sql/ reaches the version the library expects"
    );
    let owner: String = c
        .query_one("SELECT owner FROM dss.locks WHERE id = 'kept'", &[])
        .unwrap()
        .get(0);
    assert_eq!(owner, "me", "held locks survive a re-run");
}

#[test]
fn concurrent_runs_do_not_race() {
    let conninfo = common::fresh_database("mig_conc");
    let runs: Vec<_> = (0..4).map(|_| apply_all(&conninfo)).collect();
    for mut r in runs {
        assert!(r.wait().unwrap().success(), "a concurrent run failed");
    }
    let h = dss::handle::Handle::open(dss::config::Settings::new(&conninfo).unwrap()).unwrap();
    dss::lock::lock(&h, "x", "o", 0).unwrap();
}
