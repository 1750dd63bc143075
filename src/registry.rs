//! The set of live handles, so that a garbage, finalised or copied
//! `dh_conn` is reported as `-EINVAL` instead of being dereferenced.
//!
//! Lock-free (an open-addressing table of atomics): a `fork()` in the middle
//! of a lookup in another thread cannot leave a lock held in the child.

use std::sync::atomic::{AtomicUsize, Ordering};

const SLOTS: usize = 1 << 14;
const EMPTY: usize = 0;
const TOMBSTONE: usize = 1;

static TABLE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(EMPTY) }; SLOTS];

fn start(addr: usize) -> usize {
    // Fibonacci hashing of the address (allocations are 16-byte aligned).
    (addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 14)
}

/// Registers `addr`. False if the table is full (16384 live handles).
pub fn insert(addr: usize) -> bool {
    debug_assert!(addr > TOMBSTONE);
    let s = start(addr);
    for i in 0..SLOTS {
        let slot = &TABLE[(s + i) % SLOTS];
        let cur = slot.load(Ordering::Acquire);
        if (cur == EMPTY || cur == TOMBSTONE)
            && slot
                .compare_exchange(cur, addr, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return true;
        }
    }
    false
}

fn find(addr: usize) -> Option<&'static AtomicUsize> {
    if addr <= TOMBSTONE {
        return None;
    }
    let s = start(addr);
    for i in 0..SLOTS {
        let slot = &TABLE[(s + i) % SLOTS];
        match slot.load(Ordering::Acquire) {
            EMPTY => return None,
            v if v == addr => return Some(slot),
            _ => {}
        }
    }
    None
}

/// True if `addr` is a live handle.
pub fn contains(addr: usize) -> bool {
    find(addr).is_some()
}

/// Unregisters `addr`; true if it was registered (and this call removed it).
pub fn remove(addr: usize) -> bool {
    match find(addr) {
        Some(slot) => slot
            .compare_exchange(addr, TOMBSTONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove() {
        let boxes: Vec<Box<u128>> = (0..1000).map(Box::new).collect();
        for b in &boxes {
            let a = &**b as *const u128 as usize;
            assert!(!contains(a));
            assert!(insert(a));
            assert!(contains(a));
        }
        for b in &boxes {
            let a = &**b as *const u128 as usize;
            assert!(remove(a));
            assert!(!contains(a));
            assert!(!remove(a));
        }
        assert!(!contains(0));
        assert!(!contains(1));
        assert!(!contains(0xdead_beef));
    }
}
