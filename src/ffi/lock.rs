//! C entry points of the lock calls: argument checks and conversions only;
//! the work is in `lock.rs`, `wait.rs` and `batch.rs`.

use std::ffi::{c_char, c_int};
use std::ptr;

use super::{
    actor_of, dss_handle, guard, handle_arg, id_arg, malloc_str, optional_owner, owner_arg, put,
    str_arg, str_array_arg, timeval_of,
};
use crate::batch;
use crate::error::{Error, Kind, Result};
use crate::lock::{self, Info};
use crate::wait;

/// Longest lease accepted, in milliseconds (ten years).
pub const DSS_MAX_TTL_MS: u64 = 315_360_000_000;

const _: () = assert!(DSS_MAX_TTL_MS == lock::MAX_TTL_MS);

/// Everything about a held lock, filled by dss_lock_info().
#[repr(C)]
pub struct dss_lock_info {
    /// Owner name, malloc()ed; release with dss_lock_info_clear().
    pub owner: *mut c_char,
    /// When the current holder acquired it (database clock, Unix epoch).
    pub locked_at: libc::timeval,
    /// Last refresh; equal to `locked_at` if never refreshed.
    pub refreshed_at: libc::timeval,
    /// Lease length; 0 if the lock never expires.
    pub ttl_ms: u64,
    /// Time left on the lease, on the database clock; -1 if it never expires.
    pub expires_in_ms: i64,
    /// Fencing token of the current holder.
    pub token: u64,
}

/// The `n` ids of a batch, each checked as a lock id.
///
/// # Safety
/// As `str_array_arg`.
unsafe fn ids_arg<'a>(ids: *const *const c_char, n: usize) -> Result<Vec<&'a str>> {
    // SAFETY: forwarded; each element is NULL or a string.
    unsafe {
        str_array_arg(ids, n, "lock_ids", |p, name| {
            id_arg(p).map_err(|e| Error::invalid(format!("{name}: {}", e.message)))
        })
    }
}

/// Takes a lock, atomically: of two concurrent callers for the same id,
/// exactly one succeeds. A lock taken with dss_lock() never expires. A lock
/// whose lease (dss_lock_lease()) expired is free, and is taken over.
///
/// @param[in] handle      initialised handle.
/// @param[in] lock_id     lock identifier: non-empty UTF-8, at most
///                        DSS_MAX_LOCK_ID_LEN bytes; opaque (any characters).
/// @param[in] lock_owner  owner name: UTF-8, at most DSS_MAX_LOCK_OWNER_LEN
///                        bytes (e.g. from dss_owner_self()); not NULL.
/// @return 0 if the lock was taken;
///         -EEXIST if it is already held by anyone, `lock_owner` included,
///                 exclusively or shared (dss_lock_shared());
///         -EINVAL for a NULL or uninitialised handle, NULL `lock_id` or
///                 `lock_owner`, an empty or too long id, a too long owner,
///                 or a string that is not UTF-8 (nothing is sent);
///         -ECOMM if the database connection failed or was lost, or no
///                reply came within call_timeout_ms (the outcome is then
///                unknown: check with dss_lock_status() on the same handle,
///                whose next call first ends the abandoned session on the
///                server, so that its answer is final);
///         -ETIMEDOUT if no pooled connection was free within
///                    pool_timeout_ms, or call_timeout_ms passed before the
///                    statement was sent (nothing was done);
///         -EROFS if the server is read-only (a hot standby, or
///                default_transaction_read_only) and, with
///                target_session_attrs=read-write, no writable server was
///                found either; nothing was written;
///         -ENOSPC, -ENOMEM, -EUSERS, -EIO for the server's resource errors
///                (SQLSTATE 53100, 53200, 53300, other 53);
///         -ENOTRECOVERABLE on an internal error.
///         dss_last_error() describes any failure.
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = owner_arg(lock_owner)?;
        lock::lock(h, id, owner, 0).map(|_| 0)
    })
}

/// Takes a lock with a lease: it expires `ttl_ms` milliseconds after it was
/// taken or last refreshed, as measured by the database clock (the
/// client's clock plays no part). Once expired it counts as free: any
/// dss_lock(), dss_lock_lease() or dss_lock_wait() takes it over, exactly
/// one of several concurrent callers succeeding; dss_lock_status() reports
/// it as absent; its former holder gets -ETIME from dss_lock_refresh() and
/// dss_unlock().
///
/// @param[in]  handle      initialised handle.
/// @param[in]  lock_id     lock identifier (as dss_lock()).
/// @param[in]  lock_owner  owner name (as dss_lock()).
/// @param[in]  ttl_ms      lease length, 1 to DSS_MAX_TTL_MS.
/// @param[out] token       if not NULL, receives the fencing token of this
///                         acquisition: greater than every token handed out
///                         before, for any lock. Written only on success.
/// @return 0 if the lock was taken;
///         -EEXIST if a live lock is held by anyone, `lock_owner` included;
///         -EINVAL if `ttl_ms` is 0 or above DSS_MAX_TTL_MS, and as dss_lock();
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_lease(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
    ttl_ms: u64,
    token: *mut u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_lease", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = owner_arg(lock_owner)?;
        let t = lock::lease(h, id, owner, ttl_ms)?;
        put(token, t);
        Ok(0)
    })
}

/// Waits until a lock is free and takes it, or until `timeout_ms` passes.
///
/// The caller sleeps without polling the lock: it is woken by the database
/// (LISTEN/NOTIFY) when the lock is released (dss_unlock(), forced or not,
/// dss_unlock_many(), dss_lock_clean()), and by a timer when the holder's
/// lease runs out; a fallback timer (after 200 ms, then doubling up to 5 s)
/// covers a missed notification.
///
/// Fairness: callers of dss_lock_wait() on one id are served in arrival
/// order (first come, first served), together with dss_lock_shared()
/// callers: each release lets exactly the oldest live waiter in, and no
/// waiter is overtaken by a later one (an id held shared is held). A waiter
/// whose process dies, or that times out, leaves the queue. dss_lock(),
/// dss_lock_lease() and dss_lock_many() do not queue: they take a lock that
/// is free at that instant even while others wait.
///
/// Each waiting call occupies one of the handle's pooled connections for
/// its whole duration: size `pool_size` for the number of concurrent
/// waiters plus other calls.
///
/// @param[in]  handle      initialised handle.
/// @param[in]  lock_id     lock identifier (as dss_lock()).
/// @param[in]  lock_owner  owner name (as dss_lock()).
/// @param[in]  ttl_ms      lease of the acquired lock (as dss_lock_lease()),
///                         or 0 for a lock that never expires.
/// @param[in]  timeout_ms  longest wait; 0 tries once; UINT64_MAX waits
///                         without limit.
/// @param[out] token       if not NULL, receives the fencing token.
///                         Written only on success.
/// @return 0 if the lock was taken;
///         -ETIMEDOUT if it was not free within `timeout_ms` (or as for
///                    dss_lock(); call_timeout_ms bounds each round trip of
///                    the wait, not the wait itself);
///         -ECANCELED if its queued request was cancelled meanwhile (by dssd,
///                    for the DELETE of a waiter's id);
///         -EINVAL if `ttl_ms` is above DSS_MAX_TTL_MS, and as dss_lock();
///         -ECOMM, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO, -ENOTRECOVERABLE as for
///         dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_wait(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
    ttl_ms: u64,
    timeout_ms: u64,
    token: *mut u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_wait", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = owner_arg(lock_owner)?;
        let t = wait::wait(h, id, owner, ttl_ms, timeout_ms)?;
        put(token, t);
        Ok(0)
    })
}

/// Sets the lock's timestamp to now (the database clock) and, for a lease,
/// extends it by its ttl from now. The token does not change.
///
/// @param[in] handle      initialised handle.
/// @param[in] lock_id     lock identifier (as dss_lock()).
/// @param[in] lock_owner  the caller's owner name; not NULL.
/// @return 0 on success;
///         -ENOLCK if the lock does not exist (or is another owner's
///                 expired lease, or is held only shared: see
///                 dss_lock_shared_refresh());
///         -EACCES if it belongs to another owner (nothing changes);
///         -ETIME if it is the caller's lease and it expired (nobody took
///                it over yet; it is not extended: take it again);
///         -EINVAL, -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_refresh(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_refresh", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = owner_arg(lock_owner)?;
        lock::refresh(h, id, owner).map(|()| 0)
    })
}

/// Releases a lock held by `lock_owner`, or by anyone if `lock_owner` is
/// NULL (forced release, for operators and cleanup; recorded in the history
/// with this process's dss_owner_self() as actor). Waiters in
/// dss_lock_wait() are woken.
///
/// @param[in] handle      initialised handle.
/// @param[in] lock_id     lock identifier (as dss_lock()).
/// @param[in] lock_owner  the caller's owner name, or NULL to force.
/// @return 0 on success;
///         -ENOLCK if the lock does not exist (a forced release of an
///                 expired lease removes it and returns -ENOLCK too), or is
///                 held only shared (see dss_unlock_shared(); a forced
///                 release leaves shared holders alone);
///         -EACCES if it belongs to another owner (nothing changes);
///         -ETIME if it is the caller's lease and it had expired (the stale
///                entry is removed; anything done under it since expiry was
///                unprotected);
///         -EINVAL, -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_unlock(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_unlock", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = optional_owner(lock_owner)?;
        lock::unlock(h, id, owner, &actor_of(owner)).map(|()| 0)
    })
}

/// Tells who holds a lock exclusively and since when. An id held only
/// shared (dss_lock_shared()) has no such holder: -ENOLCK, although
/// dss_lock() would get -EEXIST; dss_lock_holders() lists its holders.
///
/// Outputs are written only on success.
///
/// @param[in]  handle          initialised handle.
/// @param[in]  lock_id         lock identifier (as dss_lock()).
/// @param[out] lock_owner      if not NULL, receives a malloc()ed copy of the
///                             owner name; the caller releases it with free().
/// @param[out] lock_timestamp  if not NULL, receives the time the lock was
///                             taken or last refreshed, in seconds and
///                             microseconds since the Unix epoch (UTC), as
///                             measured by the database clock; unaffected by
///                             the client's or server's time zone and DST.
/// @return 0 on success;
///         -ENOLCK if the lock does not exist, its lease expired, or it is
///                 held only shared;
///         -ENOMEM if the owner copy cannot be allocated (nothing written);
///         -EINVAL, -ECOMM, -ETIMEDOUT, -ENOSPC, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_status(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *mut *mut c_char,
    lock_timestamp: *mut libc::timeval,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_status", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let status = lock::status(h, id)?;
        let owner_copy = if lock_owner.is_null() {
            None
        } else {
            Some(malloc_str(&status.owner)?)
        };
        put(lock_timestamp, timeval_of(status.timestamp));
        if let Some(copy) = owner_copy {
            *lock_owner = copy;
        }
        Ok(0)
    })
}

/// Tells everything about a live lock: owner, acquisition and refresh
/// times, lease, time left and fencing token.
///
/// @param[in]  handle   initialised handle.
/// @param[in]  lock_id  lock identifier (as dss_lock()).
/// @param[out] info     filled on success only; `info->owner` is malloc()ed:
///                      release it with dss_lock_info_clear() (also before
///                      reusing `info` for another call).
/// @return 0 on success;
///         -ENOLCK if the lock does not exist, its lease expired, or it is
///                 held only shared;
///         -EINVAL if `info` is NULL, and as dss_lock();
///         -ENOMEM if the owner copy cannot be allocated (nothing written);
///         -ECOMM, -ETIMEDOUT, -ENOSPC, -EUSERS, -EIO, -ENOTRECOVERABLE as
///         for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_info(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    info: *mut dss_lock_info,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_info", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let Some(out) = info.as_mut() else {
            return Err(Error::invalid("info is NULL"));
        };
        let Info {
            owner,
            locked_at,
            refreshed_at,
            ttl_ms,
            expires_in_ms,
            token,
        } = lock::info(h, id)?;
        *out = dss_lock_info {
            owner: malloc_str(&owner)?,
            locked_at: timeval_of(locked_at),
            refreshed_at: timeval_of(refreshed_at),
            ttl_ms,
            expires_in_ms,
            token,
        };
        Ok(0)
    })
}

/// Frees what dss_lock_info() allocated and zeroes `info`. Safe on NULL,
/// on a zeroed struct, and when called twice.
///
/// @param[in,out] info  struct filled by dss_lock_info(), or NULL.
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_info_clear(info: *mut dss_lock_info) {
    guard("dss_lock_info_clear", || {
        // SAFETY: the C caller passes NULL or a valid struct.
        if let Some(info) = unsafe { info.as_mut() } {
            // SAFETY: `owner` is NULL or was malloc()ed by dss_lock_info().
            unsafe { libc::free(info.owner.cast()) };
            info.owner = ptr::null_mut();
            info.locked_at = timeval_of(std::time::UNIX_EPOCH);
            info.refreshed_at = info.locked_at;
            info.ttl_ms = 0;
            info.expires_in_ms = 0;
            info.token = 0;
        }
        Ok(0)
    });
}

/// Tells whether a fencing token still holds a lock: the lock exists, is
/// live, and was acquired with this token (exclusive, or one live shared
/// holder's). Storage can reject a write from
/// a holder that lost its lock; to do it inside the same transaction as the
/// write, use the SQL function `dss_lock_is_held(lock_id, token)` instead
/// (see the README).
///
/// @param[in] handle   initialised handle.
/// @param[in] lock_id  lock identifier (as dss_lock()).
/// @param[in] token    token from dss_lock_lease(), dss_lock_wait(),
///                     dss_lock_info(), dss_lock_shared() or
///                     dss_lock_downgrade().
/// @return 0 if `token` is the live holder's;
///         -ESTALE otherwise (released, expired, or taken over since);
///         -EINVAL, -ECOMM, -ETIMEDOUT, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_check(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    token: u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_check", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        lock::check(h, id, token).map(|()| 0)
    })
}

/// Takes several locks, all or none, in one transaction and one round trip.
/// Overlapping batches from concurrent callers never deadlock (rows are
/// taken in id order) and never both succeed. Expired leases among them
/// are taken over.
///
/// @param[in]  handle      initialised handle.
/// @param[in]  lock_ids    array of `n` lock identifiers (each as for
///                         dss_lock()), all distinct; may be NULL if `n` is 0.
/// @param[in]  n           number of ids, at most DSS_MAX_BATCH; 0 does
///                         nothing and returns 0.
/// @param[in]  lock_owner  owner name (as dss_lock()).
/// @param[in]  ttl_ms      lease of every lock taken, or 0 for none.
/// @param[out] conflict    if not NULL, receives on -EEXIST the index in
///                         `lock_ids` of the first id found held
///                         (dss_last_error() names it and its holder).
/// @return 0 if every lock was taken;
///         -EEXIST if any is held (by anyone): none was taken;
///         -EINVAL for a duplicate id, `n` above DSS_MAX_BATCH, a NULL
///                 array with `n` > 0, a bad id (dss_last_error() gives its
///                 index), `ttl_ms` above DSS_MAX_TTL_MS, and as dss_lock();
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_many(
    handle: *mut dss_handle,
    lock_ids: *const *const c_char,
    n: usize,
    lock_owner: *const c_char,
    ttl_ms: u64,
    conflict: *mut usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_many", || unsafe {
        let h = handle_arg(handle)?;
        let ids = ids_arg(lock_ids, n)?;
        let owner = owner_arg(lock_owner)?;
        match batch::lock_many(h, &ids, owner, ttl_ms)? {
            None => Ok(0),
            Some(c) => {
                put(conflict, c.index);
                Err(c.error())
            }
        }
    })
}

/// Releases several locks of `lock_owner` in one transaction and one round
/// trip, as many as possible: every id the owner holds is released even if
/// others fail, and the first failure (in array order) is returned.
///
/// @param[in] handle      initialised handle.
/// @param[in] lock_ids    array of `n` distinct lock identifiers; may be
///                        NULL if `n` is 0.
/// @param[in] n           number of ids, at most DSS_MAX_BATCH.
/// @param[in] lock_owner  the caller's owner name; not NULL.
/// @return 0 if all were released; otherwise the code dss_unlock() would
///         give for the first failing id (-ENOLCK, -EACCES, -ETIME), whose
///         index dss_last_error() gives;
///         -EINVAL (nothing done) as for dss_lock_many();
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_unlock_many(
    handle: *mut dss_handle,
    lock_ids: *const *const c_char,
    n: usize,
    lock_owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_unlock_many", || unsafe {
        let h = handle_arg(handle)?;
        let ids = ids_arg(lock_ids, n)?;
        let owner = owner_arg(lock_owner)?;
        batch::unlock_many(h, &ids, owner).map(|()| 0)
    })
}

/// Refreshes several locks of `lock_owner` (as dss_lock_refresh()) in one
/// transaction and one round trip, as many as possible, returning the
/// first failure (in array order).
///
/// @param[in] handle      initialised handle.
/// @param[in] lock_ids    array of `n` distinct lock identifiers; may be
///                        NULL if `n` is 0.
/// @param[in] n           number of ids, at most DSS_MAX_BATCH.
/// @param[in] lock_owner  the caller's owner name; not NULL.
/// @return 0 if all were refreshed; otherwise the code dss_lock_refresh()
///         would give for the first failing id (-ENOLCK, -EACCES, -ETIME),
///         whose index dss_last_error() gives;
///         -EINVAL (nothing done) as for dss_lock_many();
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_refresh_many(
    handle: *mut dss_handle,
    lock_ids: *const *const c_char,
    n: usize,
    lock_owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_refresh_many", || unsafe {
        let h = handle_arg(handle)?;
        let ids = ids_arg(lock_ids, n)?;
        let owner = owner_arg(lock_owner)?;
        batch::refresh_many(h, &ids, owner).map(|()| 0)
    })
}

/// Writes this process's conventional owner name, `"<hostname>:<pid>"`,
/// for use as `lock_owner` (and as the prefix `"<hostname>:"` of
/// dss_lock_clean() after a restart). Needs no handle.
///
/// @param[out] buf  buffer receiving the NUL-terminated name.
/// @param[in]  len  size of `buf` in bytes (DSS_MAX_LOCK_OWNER_LEN + 1 is
///                  always enough).
/// @return 0 on success;
///         -ERANGE if the name and its NUL do not fit in `len` bytes
///                 (nothing written);
///         -EINVAL if `buf` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn dss_owner_self(buf: *mut c_char, len: usize) -> c_int {
    guard("dss_owner_self", || {
        if buf.is_null() {
            return Err(Error::invalid("buf is NULL"));
        }
        let name = lock::owner_self();
        if name.len() + 1 > len {
            return Err(Error::new(
                Kind::Range,
                format!(
                    "owner name '{name}' needs {} bytes, buf has {len}",
                    name.len() + 1
                ),
            ));
        }
        // SAFETY: buf has room for len >= name.len() + 1 bytes.
        unsafe {
            ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), buf, name.len());
            *buf.add(name.len()) = 0;
        }
        Ok(0)
    })
}

/// Force-releases every lock whose owner starts with `owner_prefix`, e.g.
/// `"node12:"` when the daemon of node12 starts after a crash: its
/// exclusive locks in one statement, then its shared holds and semaphore
/// permits in a second one. Expired leases of those owners are removed
/// too. Each release is recorded in the history (events "clean" and
/// "sem_force_release", actor dss_owner_self()), and waiters are woken.
///
/// @param[in]  handle        initialised handle.
/// @param[in]  owner_prefix  non-empty UTF-8, at most DSS_MAX_LOCK_OWNER_LEN
///                           bytes, compared byte for byte.
/// @param[out] released      if not NULL, receives how many live holds
///                           (locks, shared holds, semaphore holds) were
///                           released. Written only on success.
/// @return 0 on success (also when nothing matched);
///         -EINVAL if `owner_prefix` is NULL or empty (to wipe every lock,
///                 use `dssctl`), and as dss_lock();
///         -ECOMM, -ETIMEDOUT, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO,
///         -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_clean(
    handle: *mut dss_handle,
    owner_prefix: *const c_char,
    released: *mut usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_clean", || unsafe {
        let h = handle_arg(handle)?;
        let prefix = str_arg(owner_prefix, "owner_prefix", super::DSS_MAX_LOCK_OWNER_LEN)?;
        let n = lock::clean(h, prefix, &lock::owner_self())?;
        put(released, n as usize);
        Ok(0)
    })
}
