//! C entry points of shared locks, downgrade, semaphores and holders lists:
//! argument checks and conversions only; the work is in `shared.rs`.

use std::ffi::{c_char, c_int};

use super::{
    DSS_MAX_LOCK_ID_LEN, DSS_MAX_LOCK_OWNER_LEN, actor_of, dss_handle, guard, handle_arg, id_arg,
    malloc_str, optional_owner, owner_arg, put, str_arg, timeval_of,
};
use crate::error::{Error, Kind, Result};
use crate::shared::{self, Holder};

/// dss_holder.mode of an exclusive lock (dss_lock() and the like).
pub const DSS_MODE_EXCLUSIVE: c_int = 1;
/// dss_holder.mode of a shared lock (dss_lock_shared()).
pub const DSS_MODE_SHARED: c_int = 2;
/// dss_holder.mode of a semaphore hold (dss_sem_acquire()).
pub const DSS_MODE_SEMAPHORE: c_int = 3;

const _: () = assert!(DSS_MODE_EXCLUSIVE == shared::MODE_EXCLUSIVE);
const _: () = assert!(DSS_MODE_SHARED == shared::MODE_SHARED);
const _: () = assert!(DSS_MODE_SEMAPHORE == shared::MODE_SEMAPHORE);

/// One live hold, in the arrays of dss_lock_holders() and dss_sem_holders().
#[repr(C)]
pub struct dss_holder {
    /// Owner name, malloc()ed; freed by dss_holders_free().
    pub owner: *mut c_char,
    /// DSS_MODE_EXCLUSIVE, DSS_MODE_SHARED or DSS_MODE_SEMAPHORE.
    pub mode: c_int,
    /// Permits held: 1 for locks.
    pub permits: u32,
    /// Fencing token of this hold.
    pub token: u64,
    /// When this hold began (database clock, Unix epoch).
    pub locked_at: libc::timeval,
    /// Time left on its lease, on the database clock; -1 if it has none.
    pub expires_in_ms: i64,
}

/// A semaphore id: a non-empty string of at most DSS_MAX_LOCK_ID_LEN bytes.
///
/// # Safety
/// As `str_arg`.
unsafe fn sem_id_arg<'a>(p: *const c_char) -> Result<&'a str> {
    // SAFETY: forwarded.
    let id = unsafe { str_arg(p, "sem_id", DSS_MAX_LOCK_ID_LEN) }?;
    if id.is_empty() {
        return Err(Error::invalid("sem_id is empty"));
    }
    Ok(id)
}

/// A semaphore owner, or None for NULL when `nullable`.
///
/// # Safety
/// As `str_arg`.
unsafe fn sem_owner_arg<'a>(p: *const c_char, nullable: bool) -> Result<Option<&'a str>> {
    if p.is_null() && nullable {
        return Ok(None);
    }
    // SAFETY: forwarded.
    unsafe { str_arg(p, "owner", DSS_MAX_LOCK_OWNER_LEN) }.map(Some)
}

/// Both outputs of a holders list must be given.
fn holders_out(holders: *mut *mut dss_holder, n: *mut usize) -> Result<()> {
    if holders.is_null() || n.is_null() {
        return Err(Error::invalid("holders and n must not be NULL"));
    }
    Ok(())
}

/// Writes `list` to the caller as a malloc()ed array (all or nothing).
///
/// # Safety
/// `holders` and `n` are writable.
unsafe fn put_holders(list: &[Holder], holders: *mut *mut dss_holder, n: *mut usize) -> Result<()> {
    let size = std::mem::size_of::<dss_holder>();
    // SAFETY: plain allocation of list.len() zeroed structs.
    let array = unsafe { libc::calloc(list.len().max(1), size) }.cast::<dss_holder>();
    if array.is_null() {
        return Err(Error::new(
            Kind::OutOfMemory,
            format!("cannot allocate {} holders", list.len()),
        ));
    }
    for (i, h) in list.iter().enumerate() {
        let owner = match malloc_str(&h.owner) {
            Ok(p) => p,
            Err(e) => {
                // The first i entries are filled, the others zeroed.
                dss_holders_free(array, i);
                return Err(e);
            }
        };
        // SAFETY: `array` has room for list.len() entries.
        unsafe {
            array.add(i).write(dss_holder {
                owner,
                mode: h.mode,
                permits: h.permits,
                token: h.token,
                locked_at: timeval_of(h.locked_at),
                expires_in_ms: h.expires_in_ms,
            })
        };
    }
    // SAFETY: caller's contract.
    unsafe {
        *holders = array;
        *n = list.len();
    }
    Ok(())
}

/// Holds a lock shared: any number of owners may hold one id shared at
/// once, while nobody holds it exclusively.
///
/// Shared and exclusive locks live on the same ids: while an id is held
/// shared, dss_lock(), dss_lock_lease(), dss_lock_wait() and dss_lock_many()
/// treat it as held (-EEXIST, or wait), and dss_lock_shared() cannot get in
/// while an exclusive holder is live.
///
/// Fairness: requests of one id are served first come, first served across
/// modes. A shared request that finds an earlier exclusive request queued
/// (dss_lock_wait()) does not overtake it, so a stream of readers cannot
/// starve a writer; readers queued behind a writer enter together after
/// it. Waiting is by notification, as dss_lock_wait(). dss_lock() itself
/// does not queue (phobos semantics) and takes a free id at once.
///
/// @param[in]  handle      initialised handle.
/// @param[in]  lock_id     lock identifier (as dss_lock()).
/// @param[in]  lock_owner  owner name (as dss_lock()).
/// @param[in]  ttl_ms      lease of this shared hold, on the database clock
///                         (refreshed by dss_lock_shared_refresh()), or 0 for
///                         none; at most DSS_MAX_TTL_MS.
/// @param[in]  timeout_ms  longest wait; 0 tries once; UINT64_MAX waits
///                         without limit.
/// @param[out] token       if not NULL, receives this hold's fencing token
///                         (accepted by dss_lock_check() and
///                         dss_lock_is_held()). Written only on success.
/// @return 0 if the id is now held shared by `lock_owner`;
///         -EEXIST if `timeout_ms` is 0 and an exclusive holder is live or
///                 an exclusive request is queued first;
///         -ETIMEDOUT if it was not granted within `timeout_ms`;
///         -EALREADY if `lock_owner` already holds the id, shared or
///                   exclusive (no reentrancy; nothing changes);
///         -ECANCELED if its queued request was cancelled (as dss_lock_wait());
///         -EINVAL if `ttl_ms` is above DSS_MAX_TTL_MS, and as dss_lock();
///         -ECOMM, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO, -ENOTRECOVERABLE
///         as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_shared(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
    ttl_ms: u64,
    timeout_ms: u64,
    token: *mut u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_shared", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = owner_arg(lock_owner)?;
        let t = shared::lock_shared(h, id, owner, ttl_ms, timeout_ms)?;
        put(token, t);
        Ok(0)
    })
}

/// Extends the caller's shared lease by its ttl from now (a hold without a
/// lease only gets a new timestamp). The token does not change.
///
/// @param[in] handle      initialised handle.
/// @param[in] lock_id     lock identifier (as dss_lock()).
/// @param[in] lock_owner  the caller's owner name; not NULL.
/// @return 0 on success;
///         -ENOLCK if `lock_owner` holds no shared lock on `lock_id`;
///         -ETIME if its shared lease expired (nothing changes; it is no
///                longer a holder);
///         -EINVAL, -ECOMM, -EROFS, -ETIMEDOUT, -ENOSPC, -ENOMEM, -EUSERS,
///         -EIO, -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_shared_refresh(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_shared_refresh", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = owner_arg(lock_owner)?;
        shared::refresh_shared(h, id, owner).map(|()| 0)
    })
}

/// Releases a shared hold; the last one out frees the id and wakes its
/// waiters.
///
/// @param[in] handle      initialised handle.
/// @param[in] lock_id     lock identifier (as dss_lock()).
/// @param[in] lock_owner  the holder's owner name, or NULL to force-release
///                        every shared holder of the id (recorded in the
///                        history with this process's "host:pid" as actor).
/// @return 0 on success (with NULL: if any shared holder was live);
///         -ENOLCK if there is no such shared hold;
///         -ETIME if the caller's shared lease had expired (its row is
///                removed all the same);
///         -EINVAL, -ECOMM, -EROFS, -ETIMEDOUT, -ENOSPC, -ENOMEM, -EUSERS,
///         -EIO, -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_unlock_shared(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_unlock_shared", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = optional_owner(lock_owner)?;
        shared::unlock_shared(h, id, owner, &actor_of(owner)).map(|()| 0)
    })
}

/// Turns the caller's exclusive lock into a shared hold, in one
/// transaction: nobody can take the id in between, and queued readers may
/// join at once (an exclusive request queued earlier still goes first). The
/// hold keeps its lease and gets a new token; the old token no longer
/// holds. There is no upgrade (two upgrading readers would deadlock):
/// release the shared hold and take the lock again.
///
/// @param[in]  handle      initialised handle.
/// @param[in]  lock_id     lock identifier (as dss_lock()).
/// @param[in]  lock_owner  the exclusive holder's owner name; not NULL.
/// @param[out] token       if not NULL, receives the shared hold's token.
///                         Written only on success.
/// @return 0 on success;
///         -ENOLCK if the id is not held exclusively (free, held shared, or
///                 the lease expired);
///         -EACCES if another owner holds it;
///         -EINVAL, -ECOMM, -EROFS, -ETIMEDOUT, -ENOSPC, -ENOMEM, -EUSERS,
///         -EIO, -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_downgrade(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    lock_owner: *const c_char,
    token: *mut u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_downgrade", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        let owner = owner_arg(lock_owner)?;
        let t = shared::downgrade(h, id, owner)?;
        put(token, t);
        Ok(0)
    })
}

/// Takes permits of a counting semaphore: at most `capacity` permits of
/// `sem_id` are held at once, and an owner holds its `permits` in one hold.
///
/// Semaphore ids are their own namespace: semaphore "x" and lock "x" are
/// unrelated. A semaphore is created by its first acquisition, with that
/// call's `capacity`; while it has holders every call must pass the same
/// capacity; once it has none, the next acquisition sets it anew.
/// Every hold has a lease (`ttl_ms` > 0, on the database clock): a holder
/// that dies gives its permits back when its lease ends. Requests are
/// served first come, first served: a large request is not overtaken by
/// later small ones.
///
/// @param[in]  handle      initialised handle.
/// @param[in]  sem_id      semaphore identifier: non-empty UTF-8, at most
///                         DSS_MAX_LOCK_ID_LEN bytes.
/// @param[in]  owner       owner name: UTF-8, at most DSS_MAX_LOCK_OWNER_LEN
///                         bytes.
/// @param[in]  permits     permits to hold, 1 to `capacity`.
/// @param[in]  capacity    the semaphore's capacity, 1 to INT32_MAX.
/// @param[in]  ttl_ms      lease, 1 to DSS_MAX_TTL_MS (renewed by
///                         dss_sem_refresh()).
/// @param[in]  timeout_ms  longest wait; 0 tries once; UINT64_MAX waits
///                         without limit.
/// @param[out] token       if not NULL, receives this hold's fencing token.
///                         Written only on success.
/// @return 0 if the permits are held;
///         -EEXIST if `timeout_ms` is 0 and they do not fit now (or earlier
///                 requests wait);
///         -ETIMEDOUT if they were not granted within `timeout_ms`;
///         -EALREADY if `owner` already holds permits of `sem_id` (nothing
///                   changes);
///         -ECANCELED if its queued request was cancelled (as dss_lock_wait());
///         -EINVAL for a NULL or uninitialised handle, a NULL, empty, too
///                 long or non-UTF-8 id or owner, `permits` 0 or above
///                 `capacity`, `capacity` 0 or above INT32_MAX, `ttl_ms` 0 or
///                 above DSS_MAX_TTL_MS, or a `capacity` other than the
///                 semaphore's while it has holders (nothing is sent, or
///                 nothing changes);
///         -ECOMM, -EROFS, -ENOSPC, -ENOMEM, -EUSERS, -EIO, -ENOTRECOVERABLE
///         as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_sem_acquire(
    handle: *mut dss_handle,
    sem_id: *const c_char,
    owner: *const c_char,
    permits: u32,
    capacity: u32,
    ttl_ms: u64,
    timeout_ms: u64,
    token: *mut u64,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_sem_acquire", || unsafe {
        let h = handle_arg(handle)?;
        let id = sem_id_arg(sem_id)?;
        let owner = sem_owner_arg(owner, false)?.unwrap_or_default();
        let t = shared::sem_acquire(h, id, owner, permits, capacity, ttl_ms, timeout_ms)?;
        put(token, t);
        Ok(0)
    })
}

/// Renews the caller's semaphore lease by its ttl from now.
///
/// @param[in] handle  initialised handle.
/// @param[in] sem_id  semaphore identifier (as dss_sem_acquire()).
/// @param[in] owner   the holder's owner name; not NULL.
/// @return 0 on success;
///         -ENOLCK if `owner` holds no permits of `sem_id`;
///         -ETIME if its lease expired (nothing changes; the permits may be
///                someone else's by now);
///         -EINVAL, -ECOMM, -EROFS, -ETIMEDOUT, -ENOSPC, -ENOMEM, -EUSERS,
///         -EIO, -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_sem_refresh(
    handle: *mut dss_handle,
    sem_id: *const c_char,
    owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_sem_refresh", || unsafe {
        let h = handle_arg(handle)?;
        let id = sem_id_arg(sem_id)?;
        let owner = sem_owner_arg(owner, false)?.unwrap_or_default();
        shared::sem_refresh(h, id, owner).map(|()| 0)
    })
}

/// Gives permits back and wakes the waiters of the semaphore.
///
/// @param[in] handle  initialised handle.
/// @param[in] sem_id  semaphore identifier (as dss_sem_acquire()).
/// @param[in] owner   the holder's owner name, or NULL to force-release
///                    every holder's permits (recorded in the history with
///                    this process's "host:pid" as actor).
/// @return 0 on success (with NULL: if any holder was live);
///         -ENOLCK if there is no such hold;
///         -ETIME if the caller's lease had expired (its row is removed all
///                the same);
///         -EINVAL, -ECOMM, -EROFS, -ETIMEDOUT, -ENOSPC, -ENOMEM, -EUSERS,
///         -EIO, -ENOTRECOVERABLE as for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_sem_release(
    handle: *mut dss_handle,
    sem_id: *const c_char,
    owner: *const c_char,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_sem_release", || unsafe {
        let h = handle_arg(handle)?;
        let id = sem_id_arg(sem_id)?;
        let owner = sem_owner_arg(owner, true)?;
        shared::sem_release(h, id, owner, &actor_of(owner)).map(|()| 0)
    })
}

/// Lists the live holders of a lock: its exclusive holder, or its shared
/// holders, in token order.
///
/// @param[in]  handle   initialised handle.
/// @param[in]  lock_id  lock identifier (as dss_lock()).
/// @param[out] holders  receives a malloc()ed array of `*n` holders; free it
///                      with dss_holders_free(*holders, *n). Not NULL.
/// @param[out] n        receives the number of holders. Not NULL.
///                      Both are written only on success.
/// @return 0 on success (`*n` >= 1);
///         -ENOLCK if nobody holds the lock (or every lease expired);
///         -EINVAL if `holders` or `n` is NULL, and as dss_lock();
///         -ENOMEM if the copies cannot be allocated (nothing written);
///         -ECOMM, -ETIMEDOUT, -ENOSPC, -EUSERS, -EIO, -ENOTRECOVERABLE as
///         for dss_lock().
#[unsafe(no_mangle)]
pub extern "C" fn dss_lock_holders(
    handle: *mut dss_handle,
    lock_id: *const c_char,
    holders: *mut *mut dss_holder,
    n: *mut usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_lock_holders", || unsafe {
        let h = handle_arg(handle)?;
        let id = id_arg(lock_id)?;
        holders_out(holders, n)?;
        let list = shared::lock_holders(h, id)?;
        put_holders(&list, holders, n)?;
        Ok(0)
    })
}

/// Lists the live holders of a semaphore, in token order.
///
/// @param[in]  handle   initialised handle.
/// @param[in]  sem_id   semaphore identifier (as dss_sem_acquire()).
/// @param[out] holders  as for dss_lock_holders().
/// @param[out] n        as for dss_lock_holders().
/// @return 0 on success (`*n` >= 1);
///         -ENOLCK if the semaphore has no live holder;
///         other codes as for dss_lock_holders().
#[unsafe(no_mangle)]
pub extern "C" fn dss_sem_holders(
    handle: *mut dss_handle,
    sem_id: *const c_char,
    holders: *mut *mut dss_holder,
    n: *mut usize,
) -> c_int {
    // SAFETY: the C caller passes valid or NULL pointers.
    guard("dss_sem_holders", || unsafe {
        let h = handle_arg(handle)?;
        let id = sem_id_arg(sem_id)?;
        holders_out(holders, n)?;
        let list = shared::sem_holders(h, id)?;
        put_holders(&list, holders, n)?;
        Ok(0)
    })
}

/// Frees an array from dss_lock_holders() or dss_sem_holders(), with its
/// owner strings.
///
/// @param[in] holders  the array, or NULL (then nothing happens).
/// @param[in] n        its length, as returned with it.
#[unsafe(no_mangle)]
pub extern "C" fn dss_holders_free(holders: *mut dss_holder, n: usize) {
    guard("dss_holders_free", || {
        if holders.is_null() {
            return Ok(0);
        }
        for i in 0..n {
            // SAFETY: the caller passes an array of `n` entries from this
            // library, each owner malloc()ed by it.
            unsafe { libc::free((*holders.add(i)).owner.cast()) };
        }
        // SAFETY: the array was calloc()ed by this library.
        unsafe { libc::free(holders.cast()) };
        Ok(0)
    });
}
