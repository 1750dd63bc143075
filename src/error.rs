//! The one error type of the library and its mapping to errno.
//!
//! Every failure is an [`Error`]: a [`Kind`] (which decides the errno the C
//! caller sees, in [`Kind::errno`], the only place where that mapping lives)
//! and a human-readable message, which the C boundary stores for
//! `dss_last_error()`. Messages never contain the connection string, so they
//! never contain a password.

use std::fmt;

/// What went wrong, as far as the caller's errno is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad argument, bad configuration, SQLSTATE class 22 or 42: `-EINVAL`.
    InvalidArgument,
    /// `dss_init` on a handle this process already initialised, or an owner
    /// asking again for a lock or semaphore it holds: `-EALREADY`.
    Already,
    /// The lock does not exist: `-ENOLCK`.
    NoLock,
    /// The lock belongs to another owner: `-EACCES`.
    NotOwner,
    /// The lock is already held, SQLSTATE class 23: `-EEXIST`.
    Exists,
    /// The caller's own lease expired before it refreshed or released it:
    /// `-ETIME`.
    LeaseExpired,
    /// A fencing token is no longer the live holder's: `-ESTALE`.
    Stale,
    /// An output buffer is too small: `-ERANGE`.
    Range,
    /// A key does not exist: `-ENOENT`.
    NotFound,
    /// A compare-and-swap found another version: `-EAGAIN`.
    Again,
    /// A value is larger than the store accepts: `-EFBIG`.
    TooBig,
    /// SQLSTATE 53100 (disk full): `-ENOSPC`.
    NoSpace,
    /// SQLSTATE 53200, or a failed allocation: `-ENOMEM`.
    OutOfMemory,
    /// SQLSTATE 53300 (too many connections): `-EUSERS`.
    TooManyUsers,
    /// Other SQLSTATE class 53 (insufficient resources): `-EIO`.
    Io,
    /// SQLSTATE 25006: a write reached a read-only server (a hot standby,
    /// or `default_transaction_read_only`); nothing was written: `-EROFS`.
    ReadOnly,
    /// Lost or refused connection, any other database error: `-ECOMM`.
    Communication,
    /// No pooled connection became free in time, or `dss_lock_wait` did
    /// not get the lock in time: `-ETIMEDOUT`.
    TimedOut,
    /// `dss_init`: the server could not be reached: `-ENOTCONN`.
    NotConnected,
    /// `dss_init`: the schema is missing or older than the library: `-EPROTO`.
    Protocol,
    /// `dss_init`: the login role lacks a privilege the library needs
    /// (it is not a member of `dss_client`); `dssctl history prune` or
    /// `migrate` by a role that is not the schema owner: `-EPERM`.
    PermissionDenied,
    /// A queued request was cancelled (`token::cancel`, dssd's DELETE of
    /// a waiter): `-ECANCELED`.
    Cancelled,
    /// A panic was caught at the C boundary: `-ENOTRECOVERABLE`.
    Panic,
}

impl Kind {
    /// The negative errno a C caller gets for this kind of failure.
    pub fn errno(self) -> i32 {
        let e = match self {
            Kind::InvalidArgument => libc::EINVAL,
            Kind::Already => libc::EALREADY,
            Kind::NoLock => libc::ENOLCK,
            Kind::NotOwner => libc::EACCES,
            Kind::Exists => libc::EEXIST,
            Kind::LeaseExpired => libc::ETIME,
            Kind::Stale => libc::ESTALE,
            Kind::Range => libc::ERANGE,
            Kind::NotFound => libc::ENOENT,
            Kind::Again => libc::EAGAIN,
            Kind::TooBig => libc::EFBIG,
            Kind::NoSpace => libc::ENOSPC,
            Kind::OutOfMemory => libc::ENOMEM,
            Kind::TooManyUsers => libc::EUSERS,
            Kind::Io => libc::EIO,
            Kind::ReadOnly => libc::EROFS,
            Kind::Communication => libc::ECOMM,
            Kind::TimedOut => libc::ETIMEDOUT,
            Kind::NotConnected => libc::ENOTCONN,
            Kind::Protocol => libc::EPROTO,
            Kind::PermissionDenied => libc::EPERM,
            Kind::Cancelled => libc::ECANCELED,
            Kind::Panic => libc::ENOTRECOVERABLE,
        };
        -e
    }

    /// Maps a SQLSTATE to a kind, following phobos's `psql_state2errno`
    /// table: class 22 and 42 → EINVAL, 23 → EEXIST, 53100 → ENOSPC,
    /// 53200 → ENOMEM, 53300 → EUSERS, other 53 → EIO, anything else → ECOMM.
    /// Two deliberate refinements: 23514 (a CHECK constraint, i.e. our length
    /// limits) is EINVAL, as phobos's varchar limits gave EINVAL (22001);
    /// 25006 (a write on a read-only server) is EROFS, not ECOMM, so that
    /// a daemon pointed at a standby can tell it from a network failure.
    pub fn from_sqlstate(code: &str) -> Kind {
        if code == "23514" {
            return Kind::InvalidArgument;
        }
        match code {
            "53100" => return Kind::NoSpace,
            "53200" => return Kind::OutOfMemory,
            "53300" => return Kind::TooManyUsers,
            READ_ONLY_SQLSTATE => return Kind::ReadOnly,
            _ => {}
        }
        match code.get(..2) {
            Some("22") | Some("42") => Kind::InvalidArgument,
            Some("23") => Kind::Exists,
            Some("53") => Kind::Io,
            _ => Kind::Communication,
        }
    }
}

/// An error: its kind and a message for `dss_last_error()`.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// `e` as [`Kind::PermissionDenied`] if the server refused it for want
    /// of a privilege (SQLSTATE 42501), saying that `what` needs the schema
    /// owner; otherwise `e`.
    pub fn needs_owner(e: Error, what: &str) -> Error {
        if e.message.contains("(SQLSTATE 42501)") {
            Error::new(
                Kind::PermissionDenied,
                format!("{}: {what} needs the dss schema's owner", e.message),
            )
        } else {
            e
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Kind::InvalidArgument, message)
    }

    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// A database error from a statement. An error without a SQLSTATE (the
    /// connection closed or timed out) is `Communication`, never success,
    /// unless the statement surely was not sent before the call's deadline
    /// (`TimedOut`).
    pub fn from_pg(context: &str, e: &crate::pq::Error) -> Error {
        use crate::pq::Error as E;
        match e {
            E::Db(db) => {
                let mut message = format!("{context}: {} (SQLSTATE {})", db.message, db.code);
                if let Some(detail) = &db.detail {
                    message.push_str(": ");
                    message.push_str(detail);
                }
                Error::new(Kind::from_sqlstate(&db.code), message)
            }
            E::TimedOut { sent: false } => Error::new(
                Kind::TimedOut,
                format!(
                    "{context}: call_timeout_ms passed before the statement was sent (nothing was done)"
                ),
            ),
            E::TimedOut { sent: true } => Error::new(
                Kind::Communication,
                format!(
                    "{context}: no reply from the database within call_timeout_ms: \
                     the statement may have run (outcome unknown)"
                ),
            ),
            E::Connect { code, message } => Error::new(
                match code.as_deref() {
                    Some("53300") => Kind::TooManyUsers,
                    _ => Kind::NotConnected,
                },
                format!("{context}: cannot connect to PostgreSQL: {message}"),
            ),
            E::Lost { .. } | E::Protocol(_) => Error::new(
                Kind::Communication,
                format!("{context}: connection to the database failed: {e}"),
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.message, -self.errno())
    }
}

impl std::error::Error for Error {}

/// True when the statement surely did not run because the session was
/// gone, so that it is safe to run it again on another connection:
/// * the server said so (SQLSTATE 08xxx, 57Pxx: admin shutdown, crash,
///   connection exception);
/// * libpq could not even queue it (the session was already gone), or the
///   session was lost while preparing it or setting it up.
///
/// Any other error without SQLSTATE (end of file, reset, timeout after
/// sending) is never "safe": the statement may have committed before the
/// link broke.
pub fn statement_did_not_run(e: &crate::pq::Error) -> bool {
    match e {
        crate::pq::Error::Db(db) => db.code.starts_with("08") || db.code.starts_with("57P"),
        crate::pq::Error::Lost { sent, .. } => !sent,
        _ => false,
    }
}

/// SQLSTATE read_only_sql_transaction: a write reached a read-only server.
const READ_ONLY_SQLSTATE: &str = "25006";

/// True when a read-only server refused the statement (SQLSTATE 25006):
/// it did not run either, but a new session may land on the same server,
/// so `Handle::run` retries it only when the conninfo accepts writable
/// servers alone.
pub fn refused_as_read_only(e: &crate::pq::Error) -> bool {
    e.code() == Some(READ_ONLY_SQLSTATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table_matches_phobos() {
        let cases = [
            ("22001", libc::EINVAL),
            ("22P02", libc::EINVAL),
            ("42601", libc::EINVAL),
            ("42P01", libc::EINVAL),
            ("23505", libc::EEXIST),
            ("23502", libc::EEXIST),
            ("23514", libc::EINVAL),
            ("53100", libc::ENOSPC),
            ("53200", libc::ENOMEM),
            ("53300", libc::EUSERS),
            ("53400", libc::EIO),
            ("57P01", libc::ECOMM),
            ("08006", libc::ECOMM),
            ("25P02", libc::ECOMM),
            ("25006", libc::EROFS),
            ("XX000", libc::ECOMM),
            ("", libc::ECOMM),
        ];
        for (code, errno) in cases {
            assert_eq!(Kind::from_sqlstate(code).errno(), -errno, "SQLSTATE {code}");
        }
    }

    #[test]
    fn every_kind_is_a_distinct_negative_errno() {
        let kinds = [
            Kind::InvalidArgument,
            Kind::Already,
            Kind::NoLock,
            Kind::NotOwner,
            Kind::Exists,
            Kind::NoSpace,
            Kind::OutOfMemory,
            Kind::TooManyUsers,
            Kind::Io,
            Kind::ReadOnly,
            Kind::Communication,
            Kind::TimedOut,
            Kind::NotConnected,
            Kind::Protocol,
            Kind::Cancelled,
            Kind::Panic,
        ];
        let mut seen = std::collections::HashSet::new();
        for k in kinds {
            assert!(k.errno() < 0, "{k:?}");
            assert!(seen.insert(k.errno()), "{k:?} shares its errno");
        }
    }
}
