//! Freezing a test cluster: its postmaster and every child stopped with
//! SIGSTOP, as a server that stops answering while the kernel still
//! accepts and acknowledges (tests/frozen.rs, tests/faults.rs). Only the
//! cluster's own processes are stopped, by pid (the postmaster from
//! `postmaster.pid`, its children from `/proc/*/stat`), and the guard
//! ([`Frozen`]) always sends SIGCONT again, also when a test fails.

use std::time::{Duration, Instant};

use super::server::Pg;

/// State letter and parent pid of process `pid` (from /proc/PID/stat; the
/// command name, in parentheses, may hold spaces and parentheses).
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if process `pid` has `signal` pending, sent to the process (the
/// `ShdPnd` mask of /proc/PID/status): a stopped process keeps it until it
/// is continued.
pub fn signal_pending(pid: i32, signal: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        (proc_stat(pid)?.1 == parent).then_some(pid)
    })
    .collect()
}

/// The cluster's postmaster and children, stopped with SIGSTOP; SIGCONT is
/// sent to all of them (and to any new child) when this is dropped,
/// whatever happened in between.
pub struct Frozen {
    postmaster: i32,
    stopped: Vec<i32>,
    pub at: Instant,
}

impl Frozen {
    pub fn freeze(pg: &Pg) -> Frozen {
        let pidfile = std::fs::read_to_string(pg.dir.join("data/postmaster.pid"))
            .expect("the cluster runs (postmaster.pid)");
        let postmaster: i32 = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid on the first line of postmaster.pid");
        assert!(
            proc_stat(postmaster).is_some(),
            "postmaster {postmaster} runs"
        );
        // The guard exists before the first SIGSTOP.
        let mut frozen = Frozen {
            postmaster,
            stopped: Vec::new(),
            at: Instant::now(),
        };
        // The postmaster first: stopped, it forks no new child.
        frozen.stop(postmaster);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for child in children_of(postmaster) {
                if !frozen.stopped.contains(&child) {
                    frozen.stop(child);
                }
            }
            // Stopped (T), or already ended (zombie, gone).
            let running: Vec<i32> = frozen
                .stopped
                .iter()
                .copied()
                .filter(|&p| matches!(proc_stat(p), Some((s, _)) if !matches!(s, 'T' | 'Z' | 'X')))
                .collect();
            let unseen = children_of(postmaster)
                .into_iter()
                .any(|c| !frozen.stopped.contains(&c));
            if running.is_empty() && !unseen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "processes {running:?} of the cluster did not stop"
            );
            std::thread::yield_now();
        }
        assert!(
            frozen.stopped.len() >= 3,
            "the postmaster and its children were stopped: {:?}",
            frozen.stopped
        );
        eprintln!(
            "frozen: postmaster {postmaster} and {} children",
            frozen.stopped.len() - 1
        );
        frozen.at = Instant::now();
        frozen
    }

    fn stop(&mut self, pid: i32) {
        self.stopped.push(pid);
        // SAFETY: kill has no memory preconditions.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
            let e = std::io::Error::last_os_error();
            // A child may end between the listing and the signal.
            assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "SIGSTOP {pid}: {e}");
        }
    }
}

impl Frozen {
    /// Sends SIGCONT to every stopped process but `keep`, which stays
    /// stopped until the guard is dropped.
    pub fn resume_except(&mut self, keep: i32) {
        assert!(self.stopped.contains(&keep), "{keep} was not stopped");
        for &pid in self.stopped.iter().filter(|&&p| p != keep) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        self.stopped = vec![keep];
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let mut pids = self.stopped.clone();
        pids.extend(children_of(self.postmaster));
        for pid in pids {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        eprintln!("resumed after {:?} frozen", self.at.elapsed());
    }
}
