//! The object behind `dss_handle.dh_conn`: settings plus pools, fork-aware.
//!
//! Fork rules (C daemons fork after `dss_init`):
//! * The pool (`pool.rs`) is built on `std::sync` only and runs no thread
//!   but its short-lived connecting ones, so nothing a fork copies can be
//!   left locked by a thread that does not exist in the child.
//! * A handle used in a process other than the one that created it (an
//!   inherited handle in a child) never touches its creator's pool: it
//!   lazily builds a pool of its own for the current pid ([`PidPool`]).
//! * Whatever was inherited is never dropped in the child: closing a libpq
//!   session sends Terminate (and a TLS close_notify) on a socket the parent
//!   still uses. Inherited pools are leaked on purpose (a few hundred bytes
//!   per fork generation); a connection dropped in a process that did not
//!   open it is first detached from its socket (`pq/mod.rs`), as a safety net.

use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::error::{Error, Kind, Result, refused_as_read_only, statement_did_not_run};
use crate::pool::{Conn, Pool};
use crate::sql;

/// This process's pid, without a system call on every library call.
///
/// The pid is kept in a page of its own that the kernel zeroes in the
/// child of any fork (`MADV_WIPEONFORK`, Linux 4.14 and later: `fork()`,
/// `_Fork()`, a raw `clone()` without `CLONE_VM`, with or without the C
/// library's fork handlers), so a child reads 0 there, never its parent's
/// pid, and asks the kernel once. Where the page cannot be set up, every
/// call asks the kernel.
pub fn current_pid() -> u32 {
    let Some(cell) = pid_cell() else {
        return std::process::id();
    };
    match cell.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            cell.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// The wipe-on-fork cell behind [`current_pid`], set up on first use.
/// Lock-free (a compare-and-swap, no `OnceLock`): a fork while another
/// thread sets it up cannot leave the child waiting for that thread.
fn pid_cell() -> Option<&'static AtomicU32> {
    const UNSET: usize = 0;
    const UNAVAILABLE: usize = 1;
    static CELL: AtomicUsize = AtomicUsize::new(UNSET);
    let mut addr = CELL.load(Ordering::Acquire);
    if addr == UNSET {
        let mine = wipe_on_fork_page().unwrap_or(UNAVAILABLE);
        addr = match CELL.compare_exchange(UNSET, mine, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => mine,
            Err(winner) => {
                if mine != UNAVAILABLE {
                    // SAFETY: our own mapping, never shared.
                    unsafe { libc::munmap(mine as *mut libc::c_void, page_size()) };
                }
                winner
            }
        };
    }
    // SAFETY: a page-aligned, zero-filled, read-write mapping that is
    // never unmapped once published; AtomicU32 is valid for any bits.
    (addr != UNAVAILABLE).then(|| unsafe { &*(addr as *const AtomicU32) })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// A private anonymous page marked `MADV_WIPEONFORK`; None if the kernel
/// refuses (older than 4.14, or not Linux).
fn wipe_on_fork_page() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let len = page_size();
        // SAFETY: a new anonymous mapping; on failure it is unmapped.
        unsafe {
            let p = libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return None;
            }
            if libc::madvise(p, len, libc::MADV_WIPEONFORK) != 0 {
                libc::munmap(p, len);
                return None;
            }
            Some(p as usize)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// A pool that belongs to one process.
struct PidPool {
    pid: u32,
    pool: Pool,
}

pub struct Handle {
    settings: Settings,
    /// Process that created `primary`.
    creator: u32,
    /// The creator's pool; only dropped by the creator.
    primary: ManuallyDrop<Pool>,
    /// Pool of the process currently using an inherited handle (null until
    /// first use in a child). Replaced, never freed, when the pid changes.
    forked: AtomicPtr<PidPool>,
    /// Backends of sessions given up with a statement maybe in flight
    /// (`Handle::run`), by process; `fenced` is true while there are any.
    fences: Mutex<Vec<Fence>>,
    fenced: AtomicBool,
}

/// A session given up after its statement was sent (no reply by the
/// deadline, or the link broke): its backend may still run the statement,
/// as a frozen server does once it resumes. Until that backend has ended,
/// no answer of the database about the outcome is final.
struct Fence {
    process: u32,
    backend: (i32, i64),
}

/// True if the statement was sent and the session lost without a word
/// from the server: it may run after the caller got its error.
fn may_still_run(e: &crate::pq::Error) -> bool {
    matches!(
        e,
        crate::pq::Error::TimedOut { sent: true } | crate::pq::Error::Lost { sent: true, .. }
    )
}

impl Handle {
    /// Builds the pool and makes its first connection, which checks that
    /// the server is reachable and the schema current.
    pub fn open(settings: Settings) -> Result<Handle> {
        let first = Conn::connect(&settings, None, None)?;
        let primary = Pool::new(&settings, Some(first));
        Ok(Handle {
            settings,
            creator: current_pid(),
            primary: ManuallyDrop::new(primary),
            forked: AtomicPtr::new(ptr::null_mut()),
            fences: Mutex::new(Vec::new()),
            fenced: AtomicBool::new(false),
        })
    }

    /// Ends, on `conn`'s server, the backends of this process's sessions
    /// given up with a statement in flight, and waits until they are gone
    /// (within the call's deadline): after that the outcome of those
    /// statements is final, and what this call reads is the truth. Other
    /// callers wait meanwhile. A backend of another server (after a
    /// failover) is not found there, and needs no fence: its server is no
    /// longer the one written to.
    fn fence(&self, conn: &mut Conn) -> Result<()> {
        let mut fences = self.fences.lock().unwrap_or_else(PoisonError::into_inner);
        let me = current_pid();
        fences.retain(|f| f.process == me);
        let pids: Vec<i32> = fences.iter().map(|f| f.backend.0).collect();
        let starts: Vec<i64> = fences.iter().map(|f| f.backend.1).collect();
        let mut nap = Duration::from_millis(1);
        while !pids.is_empty() {
            let left: i64 = match conn.pg.query_once_until(
                sql::FENCE_QUERY,
                &[&pids, &starts],
                Some(conn.deadline),
            ) {
                Ok(rows) => rows.first().map_or(0, |r| r.get(0)),
                Err(e) => {
                    if e.code().is_none() {
                        conn.broken = true;
                    }
                    return Err(Error::from_pg("ending a session given up earlier", &e));
                }
            };
            if left == 0 {
                break;
            }
            if Instant::now() + nap >= conn.deadline {
                return Err(Error::new(
                    Kind::Communication,
                    format!(
                        "{left} session(s) given up earlier with a statement in flight have \
                         not ended yet: the outcome of that statement is still unknown"
                    ),
                ));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
        fences.clear();
        self.fenced.store(false, Ordering::Release);
        Ok(())
    }

    /// Remembers `conn`'s backend as one to end before the next call.
    fn add_fence(&self, conn: &Conn) {
        let mut fences = self.fences.lock().unwrap_or_else(PoisonError::into_inner);
        fences.push(Fence {
            process: current_pid(),
            backend: conn.backend,
        });
        self.fenced.store(true, Ordering::Release);
    }

    /// True if this process created the handle.
    pub fn is_own(&self) -> bool {
        self.creator == current_pid()
    }

    /// The pool this process must use.
    fn pool(&self) -> &Pool {
        let me = current_pid();
        if me == self.creator {
            return &self.primary;
        }
        let cur = self.forked.load(Ordering::Acquire);
        // SAFETY: `forked` only ever holds null or a pointer from
        // Box::into_raw that is never freed while the handle lives.
        if let Some(p) = unsafe { cur.as_ref() }
            && p.pid == me
        {
            return &p.pool;
        }
        let mine = Box::into_raw(Box::new(PidPool {
            pid: me,
            pool: Pool::new(&self.settings, None),
        }));
        match self
            .forked
            .compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire)
        {
            // The previous value (another process's pool, inherited) is
            // leaked on purpose.
            // SAFETY: just installed; lives as long as the handle.
            Ok(_) => unsafe { &(*mine).pool },
            Err(winner) => {
                // Another thread of this process installed one first.
                // SAFETY: `mine` was never shared; `winner` is a live pool
                // of this process (only this process's threads write here).
                unsafe {
                    drop(Box::from_raw(mine));
                    &(*winner).pool
                }
            }
        }
    }

    /// Runs `f` on a pooled connection. If the server says the statement did
    /// not run because the session was gone (shutdown, restart), it is run
    /// again on another connection, at most `pool_size` more times. So is a
    /// write refused by a read-only server (SQLSTATE 25006: nothing ran)
    /// when the conninfo accepts only writable servers
    /// (`target_session_attrs=read-write` or `primary`): the session's
    /// server stopped being one (fenced with `default_transaction_read_only`
    /// before a switchover), and a new session finds the one that is. Any
    /// other failure is returned as it is: a statement that may have run is
    /// never repeated.
    ///
    /// A call that gave up on a session after sending its statement (no
    /// reply by the deadline, or the link lost) leaves a fence: the next
    /// call of this process on the handle first ends that session's backend
    /// ([`Handle::fence`]), so that nothing it reads can be changed later
    /// by the abandoned statement.
    ///
    /// The whole call, retries included, ends within `call_timeout_ms`: the
    /// deadline travels with the connection (`Conn::deadline`).
    pub fn run<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Conn) -> crate::pq::Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.settings.call_timeout;
        let pool = self.pool();
        let mut retries = 0;
        loop {
            let mut conn = pool.checkout(deadline)?;
            if self.fenced.load(Ordering::Acquire) {
                self.fence(&mut conn)?;
            }
            match f(&mut conn) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if may_still_run(&e) {
                        self.add_fence(&conn);
                    }
                    let not_run = statement_did_not_run(&e)
                        || (conn.pg.writable_only() && refused_as_read_only(&e));
                    // A session that failed without the server's word is
                    // dropped, unless the deadline passed before anything
                    // was sent on it (it is still in step).
                    let unsent = matches!(e, crate::pq::Error::TimedOut { sent: false });
                    if not_run || (e.code().is_none() && !unsent) {
                        conn.broken = true;
                    }
                    if not_run && retries < self.settings.pool_size {
                        retries += 1;
                        continue;
                    }
                    return Err(Error::from_pg(what, &e));
                }
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let me = current_pid();
        let forked = self.forked.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: see `pool`; we own the handle, so no thread uses it now.
        if let Some(p) = unsafe { forked.as_ref() }
            && p.pid == me
        {
            // SAFETY: this process's own pool, made by Box::into_raw.
            drop(unsafe { Box::from_raw(forked) });
        }
        if me == self.creator {
            // SAFETY: dropped once, here; never used again.
            unsafe { ManuallyDrop::drop(&mut self.primary) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `child` in a child made by `spawn` (returning 0 in the child),
    /// which exits 0 if it returned true; returns the child's exit status.
    fn in_child(spawn: impl FnOnce() -> libc::pid_t, child: impl FnOnce() -> bool) -> i32 {
        let pid = spawn();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = child();
            // SAFETY: leave the child at once, running nothing inherited.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn current_pid_is_the_childs_after_any_fork() {
        let parent = current_pid();
        assert_eq!(parent, std::process::id());
        assert!(pid_cell().is_some(), "MADV_WIPEONFORK unavailable");
        // The child's own pid, never the cached parent's: after fork()
        // (the C library's way) and after a raw clone() system call that
        // skips every fork handler; and again in a grandchild.
        // SAFETY: the children only read their pid and exit.
        let via_fork = in_child(
            || unsafe { libc::fork() },
            || {
                let me = current_pid();
                me != parent
                    && me == unsafe { libc::getpid() } as u32
                    && in_child(|| unsafe { libc::fork() }, || current_pid() != me) == 0
            },
        );
        assert_eq!(via_fork, 0);
        let via_clone = in_child(
            || unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) }
                as libc::pid_t,
            || {
                let me = current_pid();
                me != parent && me == unsafe { libc::syscall(libc::SYS_getpid) } as u32
            },
        );
        assert_eq!(via_clone, 0);
        assert_eq!(current_pid(), parent);
    }
}
