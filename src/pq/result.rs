//! What a statement gives back: a libpq result and its rows, and the error
//! type of the connection layer.

use std::ffi::{CStr, c_int};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use postgres_types::{FromSql, Type};
use pq_sys as ffi;

pub type Result<T> = std::result::Result<T, Error>;

/// An error reported by the server (an ErrorResponse, with a SQLSTATE).
#[derive(Debug, Clone)]
pub struct DbError {
    /// ERROR, FATAL, PANIC (never translated).
    pub severity: String,
    /// SQLSTATE, five characters.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

/// Why a call on a [`super::Connection`] failed.
#[derive(Debug)]
pub enum Error {
    /// The server answered with an error; the session is still usable
    /// unless the severity is FATAL or PANIC.
    Db(Box<DbError>),
    /// The connection failed or was lost, with libpq's message (there is
    /// no SQLSTATE). `sent`: the statement may have reached the server.
    Lost { message: String, sent: bool },
    /// The call's deadline passed. `sent` as for `Lost`: false means the
    /// statement surely was not sent.
    TimedOut { sent: bool },
    /// Opening a session failed: libpq's message, and the SQLSTATE the
    /// server gave, if it gave one (e.g. 53300, too many connections).
    Connect {
        message: String,
        code: Option<String>,
    },
    /// A reply of an unexpected shape, or a value that cannot be encoded.
    Protocol(String),
}

impl Error {
    /// The SQLSTATE, for errors reported by the server.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Db(db) => Some(&db.code),
            Error::Connect { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn as_db(&self) -> Option<&DbError> {
        match self {
            Error::Db(db) => Some(db),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Db(db) => write!(f, "{}: {} (SQLSTATE {})", db.severity, db.message, db.code),
            Error::Lost { message, .. } => f.write_str(message),
            Error::TimedOut { sent: false } => f.write_str("the deadline passed before sending"),
            Error::TimedOut { sent: true } => f.write_str("no reply before the deadline"),
            Error::Connect { message, .. } => f.write_str(message),
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// libpq's text of an error: its lines joined, trailing newline gone.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A `PGresult`, freed on drop. Read-only, so shareable between threads
/// (libpq's threading rules).
pub struct PgResult(NonNull<ffi::PGresult>);

// SAFETY: a PGresult is never modified after libpq hands it over; libpq
// documents results as safe to read from several threads.
unsafe impl Send for PgResult {}
// SAFETY: as above.
unsafe impl Sync for PgResult {}

impl Drop for PgResult {
    fn drop(&mut self) {
        // SAFETY: ours, freed once.
        unsafe { ffi::PQclear(self.0.as_ptr()) }
    }
}

impl PgResult {
    /// Takes ownership of `raw` (None if NULL).
    pub(crate) fn from_raw(raw: *mut ffi::PGresult) -> Option<PgResult> {
        NonNull::new(raw).map(PgResult)
    }

    fn raw(&self) -> *mut ffi::PGresult {
        self.0.as_ptr()
    }

    pub(crate) fn status(&self) -> ffi::ExecStatusType {
        // SAFETY: a live result.
        unsafe { ffi::PQresultStatus(self.raw()) }
    }

    pub fn rows(&self) -> usize {
        // SAFETY: a live result.
        unsafe { ffi::PQntuples(self.raw()) }.max(0) as usize
    }

    pub fn columns(&self) -> usize {
        // SAFETY: a live result.
        unsafe { ffi::PQnfields(self.raw()) }.max(0) as usize
    }

    /// The raw value at (`row`, `col`), None for NULL; both in range.
    fn value(&self, row: usize, col: usize) -> Option<&[u8]> {
        let (r, c) = (row as c_int, col as c_int);
        // SAFETY: in range (checked by the callers); the bytes live as long
        // as the result, which `&self` borrows.
        unsafe {
            if ffi::PQgetisnull(self.raw(), r, c) != 0 {
                return None;
            }
            let p = ffi::PQgetvalue(self.raw(), r, c);
            let n = ffi::PQgetlength(self.raw(), r, c).max(0) as usize;
            Some(std::slice::from_raw_parts(p.cast::<u8>(), n))
        }
    }

    /// The type of parameter `i` of a described statement (0 if none).
    pub(crate) fn param_type(&self, i: usize) -> ffi::Oid {
        // SAFETY: a live result; an out-of-range index gives 0.
        unsafe { ffi::PQparamtype(self.raw(), i as c_int) }
    }

    fn column_type(&self, col: usize) -> Option<Type> {
        // SAFETY: a live result; an out-of-range column gives InvalidOid.
        Type::from_oid(unsafe { ffi::PQftype(self.raw(), col as c_int) })
    }

    fn field(&self, code: u8) -> Option<String> {
        // SAFETY: a live result; the field is NULL or a NUL-terminated
        // string owned by the result.
        let p = unsafe { ffi::PQresultErrorField(self.raw(), c_int::from(code)) };
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// The error this result carries. With a SQLSTATE it is the server's
    /// (`Db`); without one libpq made it (the connection is gone).
    pub(crate) fn error(&self, sent: bool) -> Error {
        match self.field(ffi::PG_DIAG_SQLSTATE) {
            Some(code) => Error::Db(Box::new(DbError {
                severity: self
                    .field(ffi::PG_DIAG_SEVERITY_NONLOCALIZED)
                    .or_else(|| self.field(ffi::PG_DIAG_SEVERITY))
                    .unwrap_or_default(),
                code,
                message: self.field(ffi::PG_DIAG_MESSAGE_PRIMARY).unwrap_or_default(),
                detail: self.field(ffi::PG_DIAG_MESSAGE_DETAIL),
            })),
            None => {
                // SAFETY: a live result; the message is owned by it.
                let text = unsafe { CStr::from_ptr(ffi::PQresultErrorMessage(self.raw())) };
                Error::Lost {
                    message: one_line(&text.to_string_lossy()),
                    sent,
                }
            }
        }
    }

    /// Every row, each sharing the result.
    pub fn into_rows(self) -> Vec<Row> {
        let n = self.rows();
        let res = Arc::new(self);
        (0..n)
            .map(|row| Row {
                res: Rows::Shared(res.clone()),
                row,
            })
            .collect()
    }

    /// The row of a result of one row or none (no allocation); an error
    /// for more.
    pub fn into_row(self) -> Result<Option<Row>> {
        match self.rows() {
            0 => Ok(None),
            1 => Ok(Some(Row {
                res: Rows::Own(self),
                row: 0,
            })),
            n => Err(Error::Protocol(format!(
                "the statement returned {n} rows, at most 1 expected"
            ))),
        }
    }
}

/// The result a row belongs to: its own, or shared with the other rows.
enum Rows {
    Own(PgResult),
    Shared(Arc<PgResult>),
}

impl std::ops::Deref for Rows {
    type Target = PgResult;
    fn deref(&self) -> &PgResult {
        match self {
            Rows::Own(r) => r,
            Rows::Shared(r) => r,
        }
    }
}

/// One row of a result (binary format).
pub struct Row {
    res: Rows,
    row: usize,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Row({} of {})", self.row, self.res.rows())
    }
}

impl Row {
    /// Column `idx` as a `T`. Panics if the column does not exist or its
    /// type cannot be read as `T`: the statements are fixed, so that is a
    /// bug in the library, caught at the C boundary like any panic.
    pub fn get<'a, T: FromSql<'a>>(&'a self, idx: usize) -> T {
        match self.try_get(idx) {
            Ok(v) => v,
            Err(e) => panic!("column {idx}: {e}"),
        }
    }

    pub fn try_get<'a, T: FromSql<'a>>(
        &'a self,
        idx: usize,
    ) -> std::result::Result<T, Box<dyn std::error::Error + Sync + Send>> {
        if idx >= self.res.columns() {
            return Err("no such column".into());
        }
        let ty = self
            .res
            .column_type(idx)
            .ok_or("a column of a type this library does not know")?;
        if !T::accepts(&ty) {
            return Err(format!(
                "a {ty} column cannot be read as {}",
                std::any::type_name::<T>()
            )
            .into());
        }
        T::from_sql_nullable(&ty, self.res.value(self.row, idx))
    }
}
