//! A server stop and start under one handle, on a cluster of this test's own.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dss::config::Settings;
use dss::handle::Handle;
use dss::lock;

type Call<'a> = Box<dyn Fn() -> i32 + 'a>;

struct Destroy<'a>(&'a Path);
impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        common::pgtmp_destroy(self.0);
    }
}

#[test]
fn stop_and_start_under_one_handle() {
    let dir = common::tempdir("dss-out");
    let _cleanup = Destroy(&dir);
    let conninfo = common::pgtmp("start", &dir);
    let h = Arc::new(Handle::open(Settings::new(&conninfo).unwrap()).unwrap());

    lock::lock(&h, "held-before", "keeper", 0).unwrap();
    // Several pooled connections in use.
    std::thread::scope(|s| {
        for t in 0..4 {
            let h = h.clone();
            s.spawn(move || {
                let id = format!("warm{t}");
                for _ in 0..20 {
                    lock::lock(&h, &id, "w", 0).unwrap();
                    lock::unlock(&h, &id, Some("w"), "test").unwrap();
                }
            });
        }
    });

    common::pgtmp("stop", &dir);
    for round in 0..3 {
        let calls: [(&str, Call); 5] = [
            (
                "lock",
                Box::new(|| common::errno(lock::lock(&h, "x", "o", 0))),
            ),
            (
                "refresh",
                Box::new(|| common::errno(lock::refresh(&h, "held-before", "keeper"))),
            ),
            (
                "unlock",
                Box::new(|| common::errno(lock::unlock(&h, "held-before", Some("keeper"), "test"))),
            ),
            (
                "force unlock",
                Box::new(|| common::errno(lock::unlock(&h, "held-before", None, "test"))),
            ),
            (
                "status",
                Box::new(|| common::errno(lock::status(&h, "held-before"))),
            ),
        ];
        for (name, call) in calls {
            let t = Instant::now();
            let rc = call();
            assert_eq!(rc, -libc::ECOMM, "{name} while down (round {round})");
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{name} took {:?}",
                t.elapsed()
            );
            eprintln!("down: {name} -> -ECOMM in {:?}", t.elapsed());
        }
    }

    common::pgtmp("start", &dir);
    let restarted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lock::status(&h, "held-before") {
            Ok(st) => {
                assert_eq!(st.owner, "keeper", "locks survive the restart");
                eprintln!(
                    "up again: first success {:?} after the restart",
                    restarted.elapsed()
                );
                break;
            }
            Err(e) if e.errno() == -libc::ECOMM && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("handle did not recover: {e}"),
        }
    }
    // Every pooled connection works again.
    std::thread::scope(|s| {
        for t in 0..8 {
            let h = h.clone();
            s.spawn(move || {
                let id = format!("after{t}");
                for _ in 0..20 {
                    lock::lock(&h, &id, "a", 0).unwrap();
                    lock::refresh(&h, &id, "a").unwrap();
                    lock::unlock(&h, &id, Some("a"), "test").unwrap();
                }
            });
        }
    });
    lock::unlock(&h, "held-before", Some("keeper"), "test").unwrap();
}
