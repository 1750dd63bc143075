//! C entry points of the key-value store: argument checks and conversions
//! only; the work is in `kv.rs`.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use super::{
    dss_handle, guard, handle_arg, id_arg, malloc_bytes, malloc_str, put, str_arg, str_array_arg,
};
use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::kv;

/// Longest bucket name or key accepted, in bytes, not counting the NUL.
pub const DSS_KV_MAX_KEY_LEN: usize = 1024;
/// Largest value accepted, in bytes (64 MiB); larger ones get -EFBIG.
pub const DSS_KV_MAX_VALUE_LEN: usize = 67_108_864;

const _: () = assert!(DSS_KV_MAX_KEY_LEN == kv::MAX_KEY_LEN);
const _: () = assert!(DSS_KV_MAX_VALUE_LEN == kv::MAX_VALUE_LEN);

/// A bucket name or key: non-empty UTF-8, at most 1024 bytes.
///
/// # Safety
/// As `str_arg`.
unsafe fn key_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    // SAFETY: forwarded.
    let s = unsafe { str_arg(p, name, DSS_KV_MAX_KEY_LEN) }?;
    if s.is_empty() {
        return Err(Error::invalid(format!("{name} is empty")));
    }
    Ok(s)
}

/// The handle, bucket and key arguments every single-key call takes.
///
/// # Safety
/// As `handle_arg` and `str_arg`.
unsafe fn target<'a>(
    handle: *const dss_handle,
    bucket: *const c_char,
    key: *const c_char,
) -> Result<(&'a Handle, &'a str, &'a str)> {
    // SAFETY: forwarded.
    unsafe {
        Ok((
            handle_arg(handle)?,
            key_arg(bucket, "bucket")?,
            key_arg(key, "key")?,
        ))
    }
}

/// A value: `len` bytes at `p` (NULL allowed when `len` is 0).
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes.
unsafe fn value_arg<'a>(p: *const c_void, len: usize, name: &str) -> Result<&'a [u8]> {
    if len > DSS_KV_MAX_VALUE_LEN {
        return Err(Error::new(
            Kind::TooBig,
            format!("{name} is {len} bytes: at most {DSS_KV_MAX_VALUE_LEN} (64 MiB)"),
        ));
    }
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::invalid(format!(
            "{name} is NULL but its length is {len}"
        )));
    }
    // SAFETY: caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// The handle, bucket and `n` keys every batch call takes; each key is
/// checked as for a single call.
///
/// # Safety
/// As `handle_arg` and `str_array_arg`.
unsafe fn batch_target<'a>(
    handle: *const dss_handle,
    bucket: *const c_char,
    keys: *const *const c_char,
    n: usize,
) -> Result<(&'a Handle, &'a str, Vec<&'a str>)> {
    // SAFETY: forwarded.
    unsafe {
        Ok((
            handle_arg(handle)?,
            key_arg(bucket, "bucket")?,
            str_array_arg(keys, n, "keys", |p, name| key_arg(p, name))?,
        ))
    }
}

/// Stores a value under a key of a bucket, replacing any previous value
/// (and its expiry). Buckets need no creation.
///
/// Consistency (every dss_kv_* call): PostgreSQL's, on a single primary.
/// Each call is one transaction, atomic and durable when it returns; a read
/// sees every write committed before it started (read committed); a batch
/// call is all or nothing. There are no transactions across calls: use
/// dss_kv_cas() or dss_kv_set_fenced() to make a read-modify-write safe.
///
/// @param[in] handle  initialised handle.
/// @param[in] bucket  bucket name: non-empty UTF-8, at most
///                    DSS_KV_MAX_KEY_LEN bytes.
/// @param[in] key     key: non-empty UTF-8, at most DSS_KV_MAX_KEY_LEN bytes.
/// @param[in] value   `len` bytes, any content (NUL bytes included); may be
///                    NULL if `len` is 0. Copied; not kept.
/// @param[in] len     value length, at most DSS_KV_MAX_VALUE_LEN (64 MiB).
/// @return 0 on success;
///         -EFBIG if `len` is above DSS_KV_MAX_VALUE_LEN (nothing sent);
///         -EINVAL for a NULL or uninitialised handle, a NULL, empty, too
///                 long or non-UTF-8 bucket or key, a NULL value with `len`
///                 > 0 (nothing sent);
///         -ECOMM if the connection failed or was lost, or no reply came
///                within call_timeout_ms (outcome unknown);
///         -ETIMEDOUT if no pooled connection was free within
///                    pool_timeout_ms, or call_timeout_ms passed before the
///                    statement was sent (nothing was written);
///         -EROFS if the server is read-only (a hot standby, or
///                default_transaction_read_only) and, with
///                target_session_attrs=read-write, no writable server was
///                found either; nothing was written;
///         -ENOSPC, -ENOMEM, -EUSERS, -EIO for the server's resource errors;
///         -ENOTRECOVERABLE on an internal error.
///         dss_last_error() describes any failure.
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_set(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    value: *const c_void,
    len: usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_set", || unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        let value = value_arg(value, len, "value")?;
        kv::set(h, bucket, key, value, 0).map(|_| 0)
    })
}

/// As dss_kv_set(), with a time to live: the key reads as absent
/// everywhere (get, exists, list, cas) once `ttl_ms` milliseconds have
/// passed on the database clock. Expired rows are overwritten by the next
/// write of the key; see the README for the statement that purges them.
///
/// @param[in] ttl_ms  1 to DSS_MAX_TTL_MS.
/// @return as dss_kv_set(); -EINVAL also if `ttl_ms` is 0 or too large.
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_set_ttl(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    value: *const c_void,
    len: usize,
    ttl_ms: u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_set_ttl", || unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        let value = value_arg(value, len, "value")?;
        if ttl_ms == 0 {
            return Err(Error::invalid("ttl_ms is 0 (use dss_kv_set for no expiry)"));
        }
        kv::set(h, bucket, key, value, ttl_ms).map(|_| 0)
    })
}

/// Common part of dss_kv_get() and dss_kv_get_version().
///
/// # Safety
/// Pointers NULL or valid.
unsafe fn get(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    value: *mut *mut c_void,
    len: *mut usize,
    version: *mut u64,
) -> Result<c_int> {
    // SAFETY: caller's contract.
    unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        if value.is_null() || len.is_null() {
            return Err(Error::invalid("value and len must not be NULL"));
        }
        let (bytes, v) = kv::get(h, bucket, key)?;
        *value = malloc_bytes(&bytes)?;
        *len = bytes.len();
        put(version, v);
        Ok(0)
    }
}

/// Reads the value of a key.
///
/// @param[in]  handle  initialised handle.
/// @param[in]  bucket  bucket name (as dss_kv_set()).
/// @param[in]  key     key (as dss_kv_set()).
/// @param[out] value   receives a malloc()ed copy of the value (a valid
///                     pointer even for an empty value); the caller
///                     releases it with free(). Not NULL.
/// @param[out] len     receives the value's length. Not NULL.
/// Outputs are written only on success.
/// @return 0 on success;
///         -ENOENT if the key does not exist or has expired;
///         -ENOMEM if the copy cannot be allocated;
///         -EINVAL (also if `value` or `len` is NULL), -ECOMM, -ETIMEDOUT,
///         -ENOSPC, -EUSERS, -EIO, -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_get(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    value: *mut *mut c_void,
    len: *mut usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_get", || unsafe {
        get(handle, bucket, key, value, len, ptr::null_mut())
    })
}

/// As dss_kv_get(), also giving the value's version, for dss_kv_cas().
///
/// @param[out] version  if not NULL, receives the version: it increases
///                      with every write of the key and is never reused
///                      for it, even after a delete.
/// @return as dss_kv_get().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_get_version(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    value: *mut *mut c_void,
    len: *mut usize,
    version: *mut u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_get_version", || unsafe {
        get(handle, bucket, key, value, len, version)
    })
}

/// Removes a key.
///
/// @return 0 whether or not the key existed;
///         -EINVAL, -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_delete(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_delete", || unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        kv::delete(h, bucket, key).map(|()| 0)
    })
}

/// Tells whether a key exists (and has not expired).
///
/// @return 1 if it exists, 0 if not;
///         -EINVAL, -ECOMM, -ETIMEDOUT, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_exists(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_exists", || unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        kv::exists(h, bucket, key).map(c_int::from)
    })
}

/// Lists the keys of a bucket, a page at a time, in byte order.
///
/// Pages are found by key (keyset pagination), not by position: nothing is
/// held open between calls, a key inserted meanwhile after the cursor shows
/// up in a later page, and no key is listed twice or skipped because of
/// concurrent inserts or deletes of other keys.
///
/// @param[in]  handle       initialised handle.
/// @param[in]  bucket       bucket name (as dss_kv_set()).
/// @param[in]  prefix       only keys starting with it (byte-wise); NULL or
///                          "" for all.
/// @param[in]  cursor       NULL for the first page, else the `next_cursor`
///                          of the previous page.
/// @param[in]  limit        most keys in this page, 1 to DSS_MAX_BATCH.
/// @param[out] keys         receives a malloc()ed array of `*n` malloc()ed
///                          strings (NULL if `*n` is 0); release with
///                          dss_kv_free_keys(). Not NULL.
/// @param[out] n            receives the number of keys. Not NULL.
/// @param[out] next_cursor  if not NULL, receives a malloc()ed cursor for
///                          the next page (release with free()), or NULL if
///                          this was the last page.
/// Outputs are written only on success.
/// @return 0 on success;
///         -EINVAL for a bad bucket, prefix or cursor (as keys; the prefix
///                 and cursor may be empty), `limit` 0 or too large, NULL
///                 `keys` or `n`, and as dss_kv_set();
///         -ENOMEM if the copies cannot be allocated;
///         -ECOMM, -ETIMEDOUT, -ENOSPC, -EUSERS, -EIO, -ENOTRECOVERABLE as
///         for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_list_keys(
    handle: *mut dss_handle,
    bucket: *const c_char,
    prefix: *const c_char,
    cursor: *const c_char,
    limit: usize,
    keys: *mut *mut *mut c_char,
    n: *mut usize,
    next_cursor: *mut *mut c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_list_keys", || unsafe {
        let h = handle_arg(handle)?;
        let bucket = key_arg(bucket, "bucket")?;
        let prefix = if prefix.is_null() {
            ""
        } else {
            str_arg(prefix, "prefix", DSS_KV_MAX_KEY_LEN)?
        };
        let cursor = if cursor.is_null() {
            None
        } else {
            Some(str_arg(cursor, "cursor", DSS_KV_MAX_KEY_LEN)?)
        };
        if keys.is_null() || n.is_null() {
            return Err(Error::invalid("keys and n must not be NULL"));
        }
        let (page, next) = kv::list(h, bucket, prefix, cursor, limit)?;
        let array = copy_keys(&page)?;
        let next_copy = match (&next, next_cursor.is_null()) {
            (Some(c), false) => match malloc_str(c) {
                Ok(p) => p,
                Err(e) => {
                    dss_kv_free_keys(array, page.len());
                    return Err(e);
                }
            },
            _ => ptr::null_mut(),
        };
        *keys = array;
        *n = page.len();
        put(next_cursor, next_copy);
        Ok(0)
    })
}

/// A malloc()ed array of malloc()ed copies (NULL for none); all or nothing.
fn copy_keys(page: &[String]) -> Result<*mut *mut c_char> {
    if page.is_empty() {
        return Ok(ptr::null_mut());
    }
    // SAFETY: plain allocation.
    let array = unsafe { libc::calloc(page.len(), size_of::<*mut c_char>()) }.cast::<*mut c_char>();
    if array.is_null() {
        return Err(Error::new(
            Kind::OutOfMemory,
            "cannot allocate the key array",
        ));
    }
    for (i, k) in page.iter().enumerate() {
        match malloc_str(k) {
            // SAFETY: i < page.len(), the array's length.
            Ok(p) => unsafe { *array.add(i) = p },
            Err(e) => {
                dss_kv_free_keys(array, i);
                return Err(e);
            }
        }
    }
    Ok(array)
}

/// Frees an array returned by dss_kv_list_keys(). Safe on NULL.
///
/// @param[in] keys  the array, or NULL.
/// @param[in] n     its length, as returned.
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_free_keys(keys: *mut *mut c_char, n: usize) {
    guard("dss_kv_free_keys", || {
        if !keys.is_null() {
            for i in 0..n {
                // SAFETY: the array and its n strings were malloc()ed by us.
                unsafe { libc::free((*keys.add(i)).cast()) };
            }
            // SAFETY: as above.
            unsafe { libc::free(keys.cast()) };
        }
        Ok(0)
    });
}

/// Adds `delta` to an integer counter, atomically: concurrent increments
/// from any number of processes are never lost. The counter is stored as a
/// decimal ASCII integer ("42"), so dss_kv_get() returns readable text; an
/// absent or expired key counts as 0. A live key keeps its expiry.
///
/// @param[in]  delta   amount to add (may be negative).
/// @param[out] result  if not NULL, receives the new value.
/// @return 0 on success;
///         -EINVAL if the stored value is not a decimal integer, or the sum
///                 overflows 64 bits (nothing changes), and as dss_kv_set();
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_increment(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    delta: i64,
    result: *mut i64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_increment", || unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        let v = kv::increment(h, bucket, key, delta)?;
        put(result, v);
        Ok(0)
    })
}

/// Compare-and-swap: writes the value (without expiry) only if the key is
/// at `expected_version`, in one statement.
///
/// @param[in]  expected_version  version from dss_kv_get_version(), or 0
///                               for "the key must not exist" (absent or
///                               expired).
/// @param[in]  value, len        as dss_kv_set().
/// @param[out] new_version       if not NULL, receives the version written.
/// @return 0 if written;
///         -EAGAIN if the key is at another version (or exists, for 0, or
///                 is absent, for a non-zero version): nothing written;
///         -EFBIG, -EINVAL, -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS,
///         -EIO, -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_cas(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    expected_version: u64,
    value: *const c_void,
    len: usize,
    new_version: *mut u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_cas", || unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        let value = value_arg(value, len, "value")?;
        let v = kv::cas(h, bucket, key, expected_version, value)?;
        put(new_version, v);
        Ok(0)
    })
}

/// Reads several keys of a bucket in one transaction and one round trip.
///
/// @param[in]  keys    array of `n` keys (each as for dss_kv_set());
///                     duplicates allowed; may be NULL if `n` is 0.
/// @param[in]  n       number of keys, at most DSS_MAX_BATCH.
/// @param[out] values  array of `n` pointers: receives for each key a
///                     malloc()ed copy of its value (free() each), or NULL
///                     if the key is absent or expired. Not NULL if n > 0.
/// @param[out] lens    array of `n` lengths (0 for absent keys). Not NULL
///                     if n > 0.
/// Outputs are written only on success.
/// @return 0 on success (absent keys are not an error);
///         -ENOMEM if the copies cannot be allocated (nothing written);
///         -EINVAL for a bad key (dss_last_error() gives its index), `n`
///                 too large, NULL arrays, and as dss_kv_set();
///         -ECOMM, -ETIMEDOUT, -ENOSPC, -EUSERS, -EIO, -ENOTRECOVERABLE as
///         for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_get_many(
    handle: *mut dss_handle,
    bucket: *const c_char,
    keys: *const *const c_char,
    n: usize,
    values: *mut *mut c_void,
    lens: *mut usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_get_many", || unsafe {
        let (h, bucket, keys) = batch_target(handle, bucket, keys, n)?;
        if n > 0 && (values.is_null() || lens.is_null()) {
            return Err(Error::invalid("values and lens must not be NULL"));
        }
        let got = kv::get_many(h, bucket, &keys)?;
        let mut copies: Vec<*mut c_void> = Vec::with_capacity(got.len());
        for v in &got {
            match v.as_deref().map(malloc_bytes).transpose() {
                Ok(p) => copies.push(p.unwrap_or(ptr::null_mut())),
                Err(e) => {
                    copies.iter().for_each(|&p| libc::free(p));
                    return Err(e);
                }
            }
        }
        for (i, (p, v)) in copies.into_iter().zip(&got).enumerate() {
            *values.add(i) = p;
            *lens.add(i) = v.as_ref().map_or(0, Vec::len);
        }
        Ok(0)
    })
}

/// Writes several keys of a bucket (without expiry), all or nothing, in one
/// transaction and one round trip.
///
/// @param[in] keys    array of `n` distinct keys; may be NULL if `n` is 0.
/// @param[in] values  array of `n` value pointers (each may be NULL if its
///                    length is 0).
/// @param[in] lens    array of `n` lengths, each at most
///                    DSS_KV_MAX_VALUE_LEN.
/// @param[in] n       number of keys, at most DSS_MAX_BATCH.
/// @return 0 on success;
///         -EINVAL for a duplicate or bad key, NULL arrays with `n` > 0, and
///                 as dss_kv_set(); -EFBIG for a too large value (nothing
///                 sent);
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_set_many(
    handle: *mut dss_handle,
    bucket: *const c_char,
    keys: *const *const c_char,
    values: *const *const c_void,
    lens: *const usize,
    n: usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_set_many", || unsafe {
        let (h, bucket, keys) = batch_target(handle, bucket, keys, n)?;
        if n > 0 && (values.is_null() || lens.is_null()) {
            return Err(Error::invalid("values and lens must not be NULL"));
        }
        let vals = (0..n)
            .map(|i| value_arg(*values.add(i), *lens.add(i), &format!("values[{i}]")))
            .collect::<Result<Vec<&[u8]>>>()?;
        kv::set_many(h, bucket, &keys, &vals).map(|()| 0)
    })
}

/// Removes several keys of a bucket in one transaction and one round trip;
/// absent keys are no error.
///
/// @param[in] keys  array of `n` distinct keys; may be NULL if `n` is 0.
/// @param[in] n     number of keys, at most DSS_MAX_BATCH.
/// @return 0 on success; -EINVAL (duplicate or bad key, NULL array),
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
pub extern "C" fn dss_kv_delete_many(
    handle: *mut dss_handle,
    bucket: *const c_char,
    keys: *const *const c_char,
    n: usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_delete_many", || unsafe {
        let (h, bucket, keys) = batch_target(handle, bucket, keys, n)?;
        kv::delete_many(h, bucket, &keys).map(|()| 0)
    })
}

/// Writes a value (without expiry) only if a lock is held with a given
/// fencing token, checked in the same transaction as the write: a holder
/// that lost its lock (released, expired, taken over) cannot overwrite the
/// data of the next holder. The lock cannot change hands between the check
/// and the write.
///
/// @param[in] value, len  as dss_kv_set().
/// @param[in] lock_id     the lock guarding the key (as dss_lock()).
/// @param[in] token       the token from dss_lock_lease(), dss_lock_wait()
///                        or dss_lock_info().
/// @return 0 if written;
///         -ESTALE if the lock is not held with that token (nothing written);
///         -EFBIG, -EINVAL, -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS,
///         -EIO, -ENOTRECOVERABLE as for dss_kv_set().
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn dss_kv_set_fenced(
    handle: *mut dss_handle,
    bucket: *const c_char,
    key: *const c_char,
    value: *const c_void,
    len: usize,
    lock_id: *const c_char,
    token: u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_kv_set_fenced", || unsafe {
        let (h, bucket, key) = target(handle, bucket, key)?;
        let value = value_arg(value, len, "value")?;
        let lock_id = id_arg(lock_id)?;
        kv::set_fenced(h, bucket, key, value, lock_id, token).map(|_| 0)
    })
}
