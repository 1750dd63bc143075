//! The C boundary, and nothing else: every exported function checks and
//! converts its C arguments, calls the safe Rust code, and turns the result
//! into 0 or a negative errno (the errno of each failure is decided in
//! `error.rs`). Every entry is wrapped in [`guard`], so no panic ever
//! unwinds into C.
//!
//! * this file: the handle, init/fini, errors, and the argument helpers;
//! * `lock.rs`: the lock calls;
//! * `kv.rs`: the key-value store.
//!
//! cbindgen turns these files into `include/dss.h`; the doc comments are
//! the C documentation.

#![allow(non_camel_case_types)]
// The exported functions take raw pointers from C by design; each checks
// them (NULL, registry, lengths) before use, as rustls-ffi does.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{self, Settings};
use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::lock as lock_logic;
use crate::registry;

mod kv;
mod lock;
mod shared;
pub use kv::*;
pub use lock::*;
pub use shared::*;

/// Longest lock id accepted, in bytes, not counting the terminating NUL.
pub const DSS_MAX_LOCK_ID_LEN: usize = 2048;
/// Longest lock owner accepted, in bytes, not counting the terminating NUL.
pub const DSS_MAX_LOCK_OWNER_LEN: usize = 256;

/// Most ids (or keys) accepted in one batch call.
pub const DSS_MAX_BATCH: usize = 100_000;

const _: () = assert!(DSS_MAX_LOCK_ID_LEN == lock_logic::MAX_ID_LEN);
const _: () = assert!(DSS_MAX_BATCH == crate::batch::MAX_BATCH);
const _: () = assert!(DSS_MAX_LOCK_OWNER_LEN == lock_logic::MAX_OWNER_LEN);

/// A connection handle to the Distributed State Service.
///
/// Allocated by the caller (on the stack, in a struct, anywhere), filled by
/// dss_init() or dss_init_conninfo(), released by dss_fini(). `dh_conn` is
/// private to the library; zero-initialise the struct before use so that a
/// never-initialised handle is recognised as such.
///
/// One handle may be used by any number of threads at once. It stays usable
/// in a child after fork(): the child opens its own connections on first
/// use and never touches the parent's.
#[repr(C)]
pub struct dss_handle {
    pub dh_conn: *mut c_void,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs one C entry point: errors become their negative errno (and the
/// thread's last error message), a panic becomes -ENOTRECOVERABLE.
pub(crate) fn guard(name: &str, f: impl FnOnce() -> Result<c_int>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(rc)) => rc,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {}", e.message));
            e.errno()
        }
        Err(payload) => {
            set_last_error(&format!(
                "{name}: internal error (panic: {}); please report it",
                panic_message(&*payload)
            ));
            Kind::Panic.errno()
        }
    }
}

/// A C string argument as `&str`: not NULL, at most `max` bytes (read no
/// further than that), valid UTF-8.
///
/// # Safety
/// `p` is NULL or points to memory readable up to its NUL or `max + 1` bytes.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str, max: usize) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: caller's contract; strnlen never reads past max + 1 bytes.
    let len = unsafe { libc::strnlen(p, max + 1) };
    if len > max {
        return Err(Error::invalid(format!("{name} is longer than {max} bytes")));
    }
    // SAFETY: `len` bytes were just found readable.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    std::str::from_utf8(bytes).map_err(|_| Error::invalid(format!("{name} is not valid UTF-8")))
}

/// A lock id: a non-empty string argument of at most 2048 bytes.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn id_arg<'a>(p: *const c_char) -> Result<&'a str> {
    // SAFETY: forwarded.
    let id = unsafe { str_arg(p, "lock_id", DSS_MAX_LOCK_ID_LEN) }?;
    if id.is_empty() {
        return Err(Error::invalid("lock_id is empty"));
    }
    Ok(id)
}

/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn owner_arg<'a>(p: *const c_char) -> Result<&'a str> {
    // SAFETY: forwarded.
    unsafe { str_arg(p, "lock_owner", DSS_MAX_LOCK_OWNER_LEN) }
}

/// An owner argument that may be NULL (a forced release).
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn optional_owner<'a>(p: *const c_char) -> Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded.
    unsafe { owner_arg(p) }.map(Some)
}

/// The actor recorded in the history for a release by `owner`: this
/// process (dss_owner_self()) when forced (`None`), else nobody.
pub(crate) fn actor_of(owner: Option<&str>) -> String {
    match owner {
        None => lock_logic::owner_self(),
        Some(_) => String::new(),
    }
}

/// The live handle behind `handle`, or `-EINVAL`.
///
/// # Safety
/// `handle` is NULL or points to a readable `dss_handle`.
pub(crate) unsafe fn handle_arg<'a>(handle: *const dss_handle) -> Result<&'a Handle> {
    // SAFETY: caller's contract.
    let Some(h) = (unsafe { handle.as_ref() }) else {
        return Err(Error::invalid("handle is NULL"));
    };
    let p = h.dh_conn as usize;
    if p == 0 {
        return Err(Error::invalid(
            "handle is not initialised (call dss_init first)",
        ));
    }
    if !registry::contains(p) {
        return Err(Error::invalid(
            "handle is not initialised or was finalised (call dss_init first)",
        ));
    }
    // SAFETY: registered pointers come from Box::into_raw in `init` and stay
    // valid until dss_fini unregisters them.
    Ok(unsafe { &*(p as *const Handle) })
}

/// Common part of both init calls.
///
/// # Safety
/// `handle` is NULL or points to a writable `dss_handle`.
unsafe fn init(
    handle: *mut dss_handle,
    conninfo: impl FnOnce() -> Result<String>,
) -> Result<c_int> {
    // SAFETY: caller's contract.
    let Some(h) = (unsafe { handle.as_mut() }) else {
        return Err(Error::invalid("handle is NULL"));
    };
    let current = h.dh_conn as usize;
    if registry::contains(current) {
        // SAFETY: registered, hence a live Handle.
        let existing = unsafe { &*(current as *const Handle) };
        if existing.is_own() {
            return Err(Error::new(
                Kind::Already,
                "handle is already initialised (call dss_fini first)",
            ));
        }
        // Inherited from the parent across fork(): forget it here, never
        // drop it (that would close the parent's sessions).
        registry::remove(current);
        h.dh_conn = ptr::null_mut();
    }
    let result = conninfo()
        .and_then(|c| Settings::new(&c))
        .and_then(Handle::open);
    let opened = match result {
        Ok(opened) => opened,
        Err(e) => {
            h.dh_conn = ptr::null_mut();
            return Err(e);
        }
    };
    let raw = Box::into_raw(Box::new(opened));
    if !registry::insert(raw as usize) {
        // SAFETY: just made, never shared.
        drop(unsafe { Box::from_raw(raw) });
        h.dh_conn = ptr::null_mut();
        return Err(Error::new(
            Kind::OutOfMemory,
            "too many live handles (16384)",
        ));
    }
    h.dh_conn = raw.cast();
    Ok(0)
}

/// Opens a handle with the connection string found in the configuration:
/// the environment variable `PHOBOS_DSS_connect_string` (if set and not
/// empty), else key
/// `connect_string` of section `[dss]` in the ini file named by
/// `PHOBOS_CFG_FILE` (default `/etc/phobos.conf`).
///
/// The string is libpq's (a `host=... dbname=...` conninfo or a
/// `postgresql://` URI) and is handed to the system libpq as it is: every
/// keyword (`sslmode`, `sslrootcert`, `sslcert`/`sslkey`, `service`,
/// `passfile`, several hosts with `target_session_attrs`, ...), every `PG*`
/// environment variable, `~/.pgpass` and `pg_service.conf` work as with
/// `psql`. The library adds only what is set nowhere: `application_name`
/// "libdss", `connect_timeout` 5 s per host, and on TCP `tcp_user_timeout`
/// 5 s; sessions always speak UTF-8. Knobs, looked up the same way
/// (`PHOBOS_DSS_<key>` then `[dss] <key>`): `pool_size` (connections per
/// handle, default 8), `pool_timeout_ms` (longest wait for a free
/// connection, default 5000) and `call_timeout_ms` (longest a call takes,
/// all included, default 10000; see README "Timeouts").
///
/// Connects once and checks the schema version written by the `sql/`
/// migrations. The library never changes the schema itself.
///
/// @param[out] handle  caller-allocated handle, zero-initialised or
///                     finalised; filled on success, `dh_conn` set to NULL
///                     on failure (except -EALREADY, which leaves the
///                     initialised handle as it is).
/// @return 0 on success;
///         -EINVAL if `handle` is NULL, no connection string is configured
///                 (variable unset and file or key missing), or the string
///                 (libpq's parser; bad port, sslmode, connect_timeout...
///                 values) or a knob is invalid;
///         -EALREADY if `handle` is already initialised in this process;
///         -ENOTCONN if the server cannot be reached, refuses the login or
///                   the TLS handshake (certificate, host name), within
///                   connect_timeout per host;
///         -EUSERS if the server has too many connections;
///         -EPROTO if the schema is missing or older than this library
///                 (dss_last_error() names both versions);
///         -EPERM if the login role lacks a privilege the library needs
///                (dss_last_error() names them; the schema owner grants
///                them with `GRANT dss_client TO <role>`, README "Roles");
///         -ENOMEM if too many handles are open (16384);
///         -ENOTRECOVERABLE on an internal error (a bug: please report).
#[unsafe(no_mangle)]
pub extern "C" fn dss_init(handle: *mut dss_handle) -> c_int {
    // SAFETY: the C caller passes NULL or a valid handle.
    guard("dss_init", || unsafe {
        init(handle, config::connect_string_from_environment)
    })
}

/// Opens a handle with the given connection string, ignoring
/// `PHOBOS_DSS_connect_string` and the config file's `connect_string` (the
/// pool knobs are still read from there; see dss_init()).
///
/// @param[out] handle    as for dss_init().
/// @param[in]  conninfo  libpq-style conninfo or URI, NUL-terminated UTF-8;
///                       not kept after the call.
/// @return as dss_init(); -EINVAL also if `conninfo` is NULL or not UTF-8.
#[unsafe(no_mangle)]
pub extern "C" fn dss_init_conninfo(handle: *mut dss_handle, conninfo: *const c_char) -> c_int {
    guard("dss_init_conninfo", || {
        let conninfo = move || {
            if conninfo.is_null() {
                return Err(Error::invalid("conninfo is NULL"));
            }
            // SAFETY: the C caller passes a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(conninfo) }
                .to_str()
                .map(str::to_string)
                .map_err(|_| Error::invalid("conninfo is not valid UTF-8"))
        };
        // SAFETY: as dss_init.
        unsafe { init(handle, conninfo) }
    })
}

/// Closes every connection of the handle and frees it; `dh_conn` becomes
/// NULL. Safe on NULL, on a zeroed or never-initialised handle, and when
/// called twice. In a forked child, only the child's own connections are
/// closed; the parent's sessions are left alone.
///
/// Must not run while another thread still uses the same handle.
///
/// @param[in,out] handle  handle to release, or NULL.
#[unsafe(no_mangle)]
pub extern "C" fn dss_fini(handle: *mut dss_handle) {
    guard("dss_fini", || {
        // SAFETY: the C caller passes NULL or a valid handle struct.
        let Some(h) = (unsafe { handle.as_mut() }) else {
            return Ok(0);
        };
        let p = h.dh_conn as usize;
        h.dh_conn = ptr::null_mut();
        if registry::remove(p) {
            // SAFETY: registered pointers come from Box::into_raw in `init`;
            // removal above makes this the only owner.
            drop(unsafe { Box::from_raw(p as *mut Handle) });
        }
        Ok(0)
    });
}

/// Describes the last failed call made by the calling thread: what failed
/// and why, with the PostgreSQL message and SQLSTATE when the server
/// reported one. Never contains a password.
///
/// @return a NUL-terminated string owned by the library, valid until the
///         next failing call on this thread; "" if no call has failed on
///         this thread yet. Do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn dss_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// The library's version, e.g. "0.1.0".
///
/// @return a static NUL-terminated string; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn dss_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A malloc()ed copy of `bytes`, NUL-terminated if `nul`, to be released by
/// the C caller with free(). At least one byte is allocated, so an empty
/// value is a valid pointer too.
fn malloc_copy(bytes: &[u8], nul: bool) -> Result<*mut u8> {
    let size = bytes.len() + usize::from(nul);
    // SAFETY: plain allocation.
    let p = unsafe { libc::malloc(size.max(1)) }.cast::<u8>();
    if p.is_null() {
        return Err(Error::new(
            Kind::OutOfMemory,
            format!("cannot allocate {size} bytes for a result"),
        ));
    }
    // SAFETY: `p` has room for `size` bytes.
    unsafe {
        ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        if nul {
            *p.add(bytes.len()) = 0;
        }
    }
    Ok(p)
}

/// A malloc()ed NUL-terminated copy of a string (free() it).
pub(crate) fn malloc_str(s: &str) -> Result<*mut c_char> {
    malloc_copy(s.as_bytes(), true).map(|p| p.cast())
}

/// A malloc()ed copy of a value (free() it).
pub(crate) fn malloc_bytes(bytes: &[u8]) -> Result<*mut c_void> {
    malloc_copy(bytes, false).map(|p| p.cast())
}

/// Writes `value` to the optional output `out` if it is not NULL.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn put<T>(out: *mut T, value: T) {
    // SAFETY: caller's contract.
    if let Some(out) = unsafe { out.as_mut() } {
        *out = value;
    }
}

/// The `n` strings of a batch argument `name` (e.g. "lock_ids"), each
/// checked by `each(pointer, "name[i]")`; at most DSS_MAX_BATCH of them.
///
/// # Safety
/// `array` is NULL or points to `n` readable pointers, each NULL or a
/// string readable as `each` requires.
pub(crate) unsafe fn str_array_arg<'a>(
    array: *const *const c_char,
    n: usize,
    name: &str,
    each: impl Fn(*const c_char, &str) -> Result<&'a str>,
) -> Result<Vec<&'a str>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if array.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    if n > DSS_MAX_BATCH {
        return Err(Error::invalid(format!(
            "n is {n}: at most {DSS_MAX_BATCH} per batch"
        )));
    }
    // SAFETY: caller's contract: n readable pointers.
    let ptrs = unsafe { std::slice::from_raw_parts(array, n) };
    ptrs.iter()
        .enumerate()
        .map(|(i, &p)| each(p, &format!("{name}[{i}]")))
        .collect()
}

/// A `struct timeval` for a point in time, correct before 1970 too
/// (`tv_usec` always in 0..1_000_000).
pub(crate) fn timeval_of(t: SystemTime) -> libc::timeval {
    let (sec, usec) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_micros())),
        Err(e) => {
            let d = e.duration();
            let (s, us) = (d.as_secs() as i64, i64::from(d.subsec_micros()));
            if us == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000 - us)
            }
        }
    };
    libc::timeval {
        tv_sec: sec as libc::time_t,
        tv_usec: usec as libc::suseconds_t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn guard_turns_a_panic_into_enotrecoverable() {
        let rc = guard("test", || panic!("boom"));
        assert_eq!(rc, -libc::ENOTRECOVERABLE);
        let msg = unsafe { std::ffi::CStr::from_ptr(dss_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom"), "{msg:?}");
    }

    #[test]
    fn timeval_before_and_after_the_epoch() {
        let tv = timeval_of(UNIX_EPOCH + Duration::from_micros(1_500_000));
        assert_eq!((tv.tv_sec, tv.tv_usec), (1, 500_000));
        let tv = timeval_of(UNIX_EPOCH - Duration::from_micros(1_500_000));
        assert_eq!((tv.tv_sec, tv.tv_usec), (-2, 500_000));
        let tv = timeval_of(UNIX_EPOCH - Duration::from_secs(3));
        assert_eq!((tv.tv_sec, tv.tv_usec), (-3, 0));
    }

    #[test]
    fn string_arguments_are_checked_before_anything_else() {
        let long = CString::new(vec![b'a'; DSS_MAX_LOCK_ID_LEN + 1]).unwrap();
        let max = CString::new(vec![b'a'; DSS_MAX_LOCK_ID_LEN]).unwrap();
        let bad_utf8 = CString::new(vec![0xff, 0xfe]).unwrap();
        let empty = CString::new("").unwrap();
        unsafe {
            assert!(id_arg(ptr::null()).is_err());
            assert!(id_arg(empty.as_ptr()).is_err());
            assert!(id_arg(long.as_ptr()).is_err());
            assert!(id_arg(bad_utf8.as_ptr()).is_err());
            assert_eq!(id_arg(max.as_ptr()).unwrap().len(), DSS_MAX_LOCK_ID_LEN);
            assert_eq!(owner_arg(empty.as_ptr()).unwrap(), "");
        }
    }

    #[test]
    fn calls_on_bad_handles_are_einval() {
        let id = CString::new("x").unwrap();
        let mut zeroed = dss_handle {
            dh_conn: ptr::null_mut(),
        };
        let mut garbage = dss_handle {
            dh_conn: 0x1234_5670 as *mut c_void,
        };
        assert_eq!(
            dss_lock(ptr::null_mut(), id.as_ptr(), id.as_ptr()),
            -libc::EINVAL
        );
        assert_eq!(
            dss_lock(&mut zeroed, id.as_ptr(), id.as_ptr()),
            -libc::EINVAL
        );
        assert_eq!(
            dss_lock(&mut garbage, id.as_ptr(), id.as_ptr()),
            -libc::EINVAL
        );
        dss_fini(ptr::null_mut());
        dss_fini(&mut garbage);
        assert!(garbage.dh_conn.is_null());
        dss_fini(&mut zeroed);
    }
}
