//! The benchmark's libpq baseline (examples/dss_bench.c) must run the very
//! statements the library runs, or its ratios mean nothing: every
//! `#define BENCH_SQL_<NAME> "..."` there must equal the library's query of
//! that name (whitespace aside).

use dss::sql::{Query, kv, lock, shared};

fn library_query(name: &str) -> Option<&'static Query> {
    Some(match name {
        "LOCK" => &lock::LOCK,
        "WAIT_TRY" => &lock::WAIT_TRY,
        "WAIT_LEAVE" => &lock::WAIT_LEAVE,
        "REFRESH" => &lock::REFRESH,
        "UNLOCK" => &lock::UNLOCK,
        "UNLOCK_FORCE" => &lock::UNLOCK_FORCE,
        "STATUS" => &lock::STATUS,
        "INFO" => &lock::INFO,
        "CHECK" => &lock::CHECK,
        "LOCK_MANY" => &lock::LOCK_MANY,
        "REFRESH_MANY" => &lock::REFRESH_MANY,
        "UNLOCK_MANY" => &lock::UNLOCK_MANY,
        "KV_SET" => &kv::SET,
        "KV_GET" => &kv::GET,
        "KV_DELETE" => &kv::DELETE,
        "KV_INCREMENT" => &kv::INCREMENT,
        "KV_CAS" => &kv::CAS,
        "SHARED_TRY" => &shared::SHARED_TRY,
        "SHARED_RELEASE" => &shared::SHARED_RELEASE,
        "SEM_TRY" => &shared::SEM_TRY,
        "SEM_RELEASE" => &shared::SEM_RELEASE,
        _ => return None,
    })
}

fn normalise(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The C string literal starting at `s` (after the opening quote).
fn c_literal(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    panic!("unterminated C string: {s}");
}

/// `DSS_BENCH_SQL_UPDATE=1 cargo test --test bench_sql` rewrites the
/// `BENCH_SQL_*` lines from the library's statements instead of checking
/// them (then review the diff of examples/dss_bench.c).
#[test]
fn benchmark_baseline_runs_the_library_statements() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dss_bench.c");
    let source = std::fs::read_to_string(path).unwrap();
    let update = std::env::var_os("DSS_BENCH_SQL_UPDATE").is_some();
    let mut rewritten = Vec::new();
    let mut checked = 0;
    for line in source.lines() {
        let Some(rest) = line.trim().strip_prefix("#define BENCH_SQL_") else {
            rewritten.push(line.to_string());
            continue;
        };
        let (name, value) = rest.split_once(char::is_whitespace).unwrap();
        let value = value.trim_start();
        let text = c_literal(value.strip_prefix('"').expect("a string literal"));
        let query = library_query(name)
            .unwrap_or_else(|| panic!("BENCH_SQL_{name}: the library has no such statement"));
        if update {
            let c = normalise(query.text)
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            rewritten.push(format!("#define BENCH_SQL_{name} \"{c}\""));
        } else {
            assert_eq!(
                normalise(&text),
                normalise(query.text),
                "BENCH_SQL_{name} differs from the library's statement \
                 (DSS_BENCH_SQL_UPDATE=1 rewrites them)"
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} statements found in {path}");
    if update {
        std::fs::write(path, rewritten.join("\n") + "\n").unwrap();
    }
}

#[test]
fn benchmark_baseline_sessions_have_the_library_settings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dss_bench.c");
    let source = std::fs::read_to_string(path).unwrap();
    let line = source
        .lines()
        .find_map(|l| l.trim().strip_prefix("#define BENCH_SESSION "))
        .expect("#define BENCH_SESSION in dss_bench.c");
    let text = c_literal(line.trim().strip_prefix('"').expect("a string literal"));
    let expected = dss::sql::SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("SET {name} = {value}"))
        .collect::<Vec<_>>()
        .join("; ");
    assert!(!expected.is_empty());
    assert_eq!(normalise(&text), normalise(&expected));
}
