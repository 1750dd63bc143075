//! The key-value store against a real PostgreSQL.

mod common;

use std::sync::Arc;

use common::*;
use dss::{kv, lock};

#[test]
fn set_get_delete_exists_and_versions() {
    let h = handle();
    let b = uid("bucket");
    let bin: Vec<u8> = vec![0, 1, 2, 0, 255, 0];
    let v1 = kv::set(&h, &b, "k", &bin, 0).unwrap();
    assert_eq!(kv::get(&h, &b, "k").unwrap(), (bin.clone(), v1));
    assert!(kv::exists(&h, &b, "k").unwrap());
    let v2 = kv::set(&h, &b, "k", b"", 0).unwrap();
    assert!(v2 > v1, "every write increases the version");
    assert_eq!(kv::get(&h, &b, "k").unwrap(), (Vec::new(), v2));
    assert_eq!(errno(kv::get(&h, &b, "other")), -libc::ENOENT);
    assert_eq!(errno(kv::get(&h, "other bucket", "k")), -libc::ENOENT);
    kv::delete(&h, &b, "k").unwrap();
    kv::delete(&h, &b, "k").unwrap();
    assert!(!kv::exists(&h, &b, "k").unwrap());
    // A re-created key never reuses an old version.
    let v3 = kv::set(&h, &b, "k", b"again", 0).unwrap();
    assert!(v3 > v2);
    let too_big = vec![0u8; kv::MAX_VALUE_LEN + 1];
    assert_eq!(errno(kv::set(&h, &b, "k", &too_big, 0)), -libc::EFBIG);
    assert_eq!(
        kv::get(&h, &b, "k").unwrap().0,
        b"again",
        "EFBIG wrote nothing"
    );
}

#[test]
fn a_64_mib_value_round_trips() {
    let h = handle();
    let b = uid("big");
    let value: Vec<u8> = (0..kv::MAX_VALUE_LEN)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    kv::set(&h, &b, "blob", &value, 0).unwrap();
    let (got, _) = kv::get(&h, &b, "blob").unwrap();
    assert!(got == value, "64 MiB value differs");
    kv::delete(&h, &b, "blob").unwrap();
}

#[test]
fn ttl_keys_read_as_absent_everywhere() {
    let h = handle();
    let b = uid("ttl");
    kv::set(&h, &b, "t", b"soon gone", 60_000).unwrap();
    assert!(kv::exists(&h, &b, "t").unwrap());
    expire_kv(&b, "t");
    assert_eq!(errno(kv::get(&h, &b, "t")), -libc::ENOENT);
    assert!(!kv::exists(&h, &b, "t").unwrap());
    assert!(kv::list(&h, &b, "", None, 10).unwrap().0.is_empty());
    assert_eq!(errno(kv::cas(&h, &b, "t", 1, b"x")), -libc::EAGAIN);
    assert_eq!(kv::get_many(&h, &b, &["t"]).unwrap(), vec![None]);
    // An expired key counts as absent for "must not exist" and increment.
    kv::cas(&h, &b, "t", 0, b"41").unwrap();
    assert_eq!(kv::increment(&h, &b, "t", 1).unwrap(), 42);
    kv::set(&h, &b, "n", b"5", 60_000).unwrap();
    expire_kv(&b, "n");
    assert_eq!(kv::increment(&h, &b, "n", 1).unwrap(), 1);
    // The documented purge statement removes expired rows.
    kv::set(&h, &b, "p", b"x", 60_000).unwrap();
    expire_kv(&b, "p");
    let purged = client()
        .execute("DELETE FROM dss.kv WHERE expires_at < now()", &[])
        .unwrap();
    assert!(purged >= 1);
}

#[test]
fn increment_is_decimal_text_and_refuses_other_values() {
    let h = handle();
    let b = uid("inc");
    assert_eq!(kv::increment(&h, &b, "c", 5).unwrap(), 5);
    assert_eq!(kv::increment(&h, &b, "c", -7).unwrap(), -2);
    assert_eq!(kv::get(&h, &b, "c").unwrap().0, b"-2");
    kv::set(&h, &b, "c", b"not a number", 0).unwrap();
    assert_eq!(errno(kv::increment(&h, &b, "c", 1)), -libc::EINVAL);
    kv::set(&h, &b, "c", &[0xff, 0xfe], 0).unwrap();
    assert_eq!(errno(kv::increment(&h, &b, "c", 1)), -libc::EINVAL);
    for lenient in [" 42", "+42", "42 ", "4_2", "", "-"] {
        kv::set(&h, &b, "c", lenient.as_bytes(), 0).unwrap();
        assert_eq!(
            errno(kv::increment(&h, &b, "c", 1)),
            -libc::EINVAL,
            "{lenient:?} is not a decimal integer"
        );
    }
    kv::set(&h, &b, "c", i64::MAX.to_string().as_bytes(), 0).unwrap();
    assert_eq!(errno(kv::increment(&h, &b, "c", 1)), -libc::EINVAL);
    assert_eq!(
        kv::get(&h, &b, "c").unwrap().0,
        i64::MAX.to_string().as_bytes()
    );
}

#[test]
fn concurrent_increments_are_never_lost() {
    let h = Arc::new(handle());
    let b = uid("incr");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (h, b) = (h.clone(), b.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    kv::increment(&h, &b, "n", 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(kv::get(&h, &b, "n").unwrap().0, b"1600");
}

#[test]
fn cas_races_count_exactly_the_successes() {
    let h = Arc::new(handle());
    let b = uid("cas");
    kv::cas(&h, &b, "n", 0, b"0").unwrap();
    assert_eq!(errno(kv::cas(&h, &b, "n", 0, b"0")), -libc::EAGAIN);
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (h, b) = (h.clone(), b.clone());
            std::thread::spawn(move || {
                let mut wins = 0;
                for _ in 0..60 {
                    let (value, version) = kv::get(&h, &b, "n").unwrap();
                    let n: u64 = std::str::from_utf8(&value).unwrap().parse().unwrap();
                    match kv::cas(&h, &b, "n", version, (n + 1).to_string().as_bytes()) {
                        Ok(_) => wins += 1,
                        Err(e) => assert_eq!(e.errno(), -libc::EAGAIN, "{}", e.message),
                    }
                }
                wins
            })
        })
        .collect();
    let wins: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let (value, _) = kv::get(&h, &b, "n").unwrap();
    assert_eq!(std::str::from_utf8(&value).unwrap(), wins.to_string());
    assert!(wins > 0);
}

#[test]
fn list_keys_pages_by_key_under_concurrent_inserts() {
    let h = handle();
    let b = uid("list");
    let keys: Vec<String> = (0..250).map(|i| format!("k{i:04}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let vals: Vec<&[u8]> = refs.iter().map(|k| k.as_bytes()).collect();
    kv::set_many(&h, &b, &refs, &vals).unwrap();
    kv::set(&h, &b, "other", b"x", 0).unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut inserted = 0;
    loop {
        let (page, next) = kv::list(&h, &b, "k", cursor.as_deref(), 40).unwrap();
        assert!(page.len() <= 40);
        seen.extend(page);
        // Concurrent inserts: behind the cursor (never listed) and ahead
        // of it (listed later).
        if inserted < 3 {
            kv::set(&h, &b, &format!("k{:04}a", inserted * 10), b"behind", 0).unwrap();
            kv::set(&h, &b, &format!("k{:04}a", 240 + inserted), b"ahead", 0).unwrap();
            inserted += 1;
        }
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in order, no key twice");
    for k in &keys {
        assert!(seen.contains(k), "{k} skipped");
    }
    for i in 0..3 {
        assert!(seen.contains(&format!("k{:04}a", 240 + i)));
    }
    assert!(!seen.contains(&"other".to_string()), "prefix respected");
    assert_eq!(errno(kv::list(&h, &b, "", None, 0)), -libc::EINVAL);
    let (all, next) = kv::list(&h, &b, "", None, 1000).unwrap();
    assert_eq!(all.len(), 250 + 6 + 1);
    assert!(next.is_none());
}

#[test]
fn batches_are_one_transaction() {
    let h = handle();
    let b = uid("batch");
    let big = vec![7u8; 1000];
    kv::set_many(&h, &b, &["a", "b", "c"], &[b"1", b"", &big]).unwrap();
    assert_eq!(
        kv::get_many(&h, &b, &["c", "x", "a", "b"]).unwrap(),
        vec![
            Some(big.clone()),
            None,
            Some(b"1".to_vec()),
            Some(Vec::new())
        ]
    );
    assert_eq!(
        errno(kv::set_many(&h, &b, &["a", "a"], &[b"1", b"2"])),
        -libc::EINVAL
    );
    assert_eq!(kv::get(&h, &b, "a").unwrap().0, b"1", "nothing written");
    kv::delete_many(&h, &b, &["a", "c", "nope"]).unwrap();
    assert_eq!(
        kv::get_many(&h, &b, &["a", "b", "c"]).unwrap(),
        vec![None, Some(Vec::new()), None]
    );
}

#[test]
fn fenced_writes_need_the_live_token() {
    let h = handle();
    let b = uid("fenced");
    let id = uid("guard");
    let t1 = lock::lease(&h, &id, "w1", 60_000).unwrap();
    kv::set_fenced(&h, &b, "k", b"by w1", &id, t1).unwrap();
    // Expired lease: refused.
    expire_lease(&id);
    assert_eq!(
        errno(kv::set_fenced(&h, &b, "k", b"late", &id, t1)),
        -libc::ESTALE
    );
    // Taken over: the old token is stale, the new one writes.
    let t2 = lock::lease(&h, &id, "w2", 60_000).unwrap();
    assert_eq!(
        errno(kv::set_fenced(&h, &b, "k", b"stale", &id, t1)),
        -libc::ESTALE
    );
    assert_eq!(
        errno(kv::set_fenced(&h, &b, "new key", b"stale", &id, t1)),
        -libc::ESTALE
    );
    assert!(!kv::exists(&h, &b, "new key").unwrap(), "nothing inserted");
    kv::set_fenced(&h, &b, "k", b"by w2", &id, t2).unwrap();
    assert_eq!(kv::get(&h, &b, "k").unwrap().0, b"by w2");
    lock::unlock(&h, &id, Some("w2"), "t").unwrap();
    assert_eq!(
        errno(kv::set_fenced(&h, &b, "k", b"released", &id, t2)),
        -libc::ESTALE
    );
}

#[test]
fn no_call_scans_the_table() {
    // Statistics of a table with a big bucket, queried about a bucket the
    // statistics never saw (so it looks tiny: the case where a join plan
    // would scan the whole bucket once per key). Every scan of dss.kv must
    // look keys up in the primary key, on both columns.
    let h = handle();
    let big = uid("planbig");
    let b = uid("plan");
    let keys: Vec<String> = (0..5000).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let vals: Vec<&[u8]> = refs.iter().map(|_| b"v".as_slice()).collect();
    kv::set_many(&h, &big, &refs, &vals).unwrap();
    let mut c = client();
    c.batch_execute("ANALYZE dss.kv").unwrap();
    use dss::sql::kv as q;
    let cases: Vec<(&dss::sql::Query, String)> = vec![
        (&q::SET, format!("'{b}', 'k', 'v'::bytea, 0")),
        (&q::GET, format!("'{b}', 'k'")),
        (&q::EXISTS, format!("'{b}', 'k'")),
        (&q::DELETE, format!("'{b}', 'k'")),
        (&q::LIST, format!("'{b}', '', 100")),
        (&q::LIST_PREFIX, format!("'{b}', '', 100, 'p1', 'p2'")),
        (&q::INCREMENT, format!("'{b}', 'n', 1")),
        (&q::CAS, format!("'{b}', 'k', 3, 'v'::bytea")),
        (&q::GET_MANY, format!("'{b}', ARRAY['p1','p2']")),
        (
            &q::SET_MANY,
            format!("'{b}', ARRAY['p1'], ARRAY['v'::bytea]"),
        ),
        (&q::DELETE_MANY, format!("'{b}', ARRAY['zz']")),
        (&q::SET_FENCED, format!("'{b}', 'k', 'v'::bytea, 'lock', 1")),
    ];
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .unwrap();
    for (i, (query, args)) in cases.iter().enumerate() {
        let types: Vec<&str> = query.params.iter().map(|t| t.name()).collect();
        tx.batch_execute(&format!(
            "PREPARE kvplan{i} ({}) AS {}",
            types.join(", "),
            query.text
        ))
        .unwrap();
        let plan: Vec<String> = tx
            .query(&format!("EXPLAIN EXECUTE kvplan{i}({args})"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let text = plan.join("\n");
        assert!(
            !text.contains("Seq Scan on kv"),
            "statement {i} scans dss.kv:\n{text}"
        );
        assert!(
            !text.contains("Bitmap Heap Scan on kv"),
            "statement {i}:\n{text}"
        );
        for (n, line) in plan.iter().enumerate() {
            if line.contains("Scan using kv_pkey on kv") {
                let cond = plan[n + 1..]
                    .iter()
                    .find(|l| l.contains("Index Cond:"))
                    .unwrap_or_else(|| panic!("statement {i}: no index condition:\n{text}"));
                assert!(
                    cond.contains("bucket =") && (cond.contains("key =") || cond.contains("key >")),
                    "statement {i} looks up the bucket only:\n{text}"
                );
            }
        }
    }
    tx.rollback().unwrap();
}
