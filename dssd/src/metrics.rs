//! The counters behind `GET /metrics`, rendered in the Prometheus text
//! exposition format (version 0.0.4). Every name starts with `dss_`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the wait-time histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The three kinds of requests, as labels.
pub const MODES: [&str; 3] = ["exclusive", "shared", "semaphore"];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts, one per bucket (+Inf is `count`).
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// (route, method, status) → count.
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    grants: [AtomicU64; 3],
    waits: [AtomicU64; 3],
    timeouts: [AtomicU64; 3],
    wait_time: Mutex<Histogram>,
    pub database_errors: AtomicU64,
    pub rejected_waiters: AtomicU64,
    pub released_abandoned: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &'static str, method: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route, method.to_string(), status)).or_insert(0) += 1;
    }

    /// A POST was granted after `waited` (mode: an index of [`MODES`]).
    pub fn grant(&self, mode: usize, waited: Duration) {
        self.grants[mode].fetch_add(1, Ordering::Relaxed);
        let secs = waited.as_secs_f64();
        let mut h = self.wait_time.lock().unwrap_or_else(|e| e.into_inner());
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// A POST was queued behind holders.
    pub fn wait(&self, mode: usize) {
        self.waits[mode].fetch_add(1, Ordering::Relaxed);
    }

    /// A POST answered 408.
    pub fn timeout(&self, mode: usize) {
        self.timeouts[mode].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text. `held`: (lock holds, semaphore holds), None if
    /// the database did not answer; `waiting` / `max_waiters`: the POSTs
    /// waiting now and their bound.
    pub fn render(&self, held: Option<(u64, u64)>, waiting: usize, max_waiters: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP dss_http_requests_total HTTP requests answered, by route, method and status \
             (499: the client went away first).\n# TYPE dss_http_requests_total counter"
        );
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((route, method, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "dss_http_requests_total{{route=\"{route}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(method)
            );
        }
        drop(requests);
        for (name, help, counters) in [
            (
                "dss_lock_grants_total",
                "POSTs granted, by mode.",
                &self.grants,
            ),
            (
                "dss_lock_waits_total",
                "POSTs that were queued behind holders, by mode.",
                &self.waits,
            ),
            (
                "dss_lock_timeouts_total",
                "POSTs not granted within lock_timeout (408), by mode.",
                &self.timeouts,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (mode, c) in MODES.iter().zip(counters.iter()) {
                let _ = writeln!(
                    out,
                    "{name}{{mode=\"{mode}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        {
            let name = "dss_lock_wait_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Time from a POST's arrival to its grant, granted POSTs only.\n\
                 # TYPE {name} histogram"
            );
            let h = self.wait_time.lock().unwrap_or_else(|e| e.into_inner());
            for (bound, n) in BUCKETS.iter().zip(h.buckets.iter()) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        for (name, help, value) in [
            (
                "dss_database_errors_total",
                "Library calls that failed because the database was unreachable, \
                 refused or too slow (answered 503).",
                &self.database_errors,
            ),
            (
                "dss_waiters_rejected_total",
                "POSTs refused with 503 because --max-waiters POSTs were waiting.",
                &self.rejected_waiters,
            ),
            (
                "dss_abandoned_releases_total",
                "Locks granted to a POST whose client had gone away, released at once.",
                &self.released_abandoned,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP dss_waiting_requests POSTs with a lock_timeout in progress now.\n\
             # TYPE dss_waiting_requests gauge\ndss_waiting_requests {waiting}\n\
             # HELP dss_max_waiters The --max-waiters bound.\n\
             # TYPE dss_max_waiters gauge\ndss_max_waiters {max_waiters}"
        );
        if let Some((locks, sems)) = held {
            let _ = writeln!(
                out,
                "# HELP dss_held_locks Live holds in the database (every client, not only this dssd), \
                 by kind: lock (exclusive and shared) or semaphore.\n\
                 # TYPE dss_held_locks gauge\n\
                 dss_held_locks{{kind=\"lock\"}} {locks}\n\
                 dss_held_locks{{kind=\"semaphore\"}} {sems}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP dss_database_up 1 if the database answered this scrape.\n\
             # TYPE dss_database_up gauge\ndss_database_up {}",
            u8::from(held.is_some())
        );
        out
    }
}

/// A label value, escaped as the text format wants.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once() {
        let m = Metrics::default();
        m.request("lock", "POST", 200);
        m.request("lock", "POST", 200);
        m.grant(0, Duration::from_millis(3));
        m.wait(1);
        let text = m.render(Some((2, 1)), 1, 7);
        assert!(text.contains(
            "dss_http_requests_total{route=\"lock\",method=\"POST\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("dss_lock_grants_total{mode=\"exclusive\"} 1\n"));
        assert!(text.contains("dss_lock_waits_total{mode=\"shared\"} 1\n"));
        assert!(text.contains("dss_lock_wait_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("dss_lock_wait_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("dss_lock_wait_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("dss_held_locks{kind=\"lock\"} 2\n"));
        assert!(text.contains("dss_database_up 1\n"));
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(types, helps);
        assert!(!m.render(None, 0, 7).contains("dss_held_locks"));
    }
}
