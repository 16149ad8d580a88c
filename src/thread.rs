//! Per-thread bookkeeping that lets a thread recognise its own borrows.
//!
//! Waiting for a borrow held by another thread is correct; waiting for one
//! held by the *same* thread never ends. Exclusive borrows record their
//! owner in the cell (see [`cell`](crate::cell)); shared borrows cannot, as
//! there may be many, so each thread keeps the short list of cells it reads.

use std::cell::{Cell, RefCell};

/// Only its address matters: unique among live threads, and 8-aligned on
/// every target (a `u64` is only 4-aligned on 32-bit x86), so the low bits
/// of the borrow word stay free for flags. Not zero-sized, so that each
/// thread's has an address of its own; no destructor, so it stays usable
/// while other thread-locals are destroyed.
#[repr(align(8))]
struct Token(#[allow(dead_code)] u8);

thread_local! {
    static TOKEN: Token = const { Token(0) };
    static SHARED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static SHARD_CURSOR: Cell<usize> = const { Cell::new(0) };
}

/// This thread's owner token: a non-zero multiple of 8.
#[inline]
pub(crate) fn token() -> usize {
    let token = TOKEN.with(|t| t as *const Token as usize);
    debug_assert_eq!(token % 8, 0);
    token
}

/// The shard this thread's next `save` tries first: successive saves go
/// round the shards, and threads start at different places.
#[inline]
pub(crate) fn next_shard() -> usize {
    SHARD_CURSOR.with(|c| {
        let n = c.get();
        c.set(n.wrapping_add(1));
        // Fibonacci hashing of the token spreads threads' starting shards.
        (token().wrapping_mul(0x9E37_79B9) >> 7).wrapping_add(n)
    })
}

/// Whether this thread can still record shared borrows: not once its
/// thread-locals are being destroyed (a `restore_ref` from another
/// thread-local's destructor). Once false, it stays false.
pub(crate) fn can_track_shared() -> bool {
    SHARED.try_with(|_| ()).is_ok()
}

/// Records a shared borrow of the cell at `addr`. The caller checked
/// [`can_track_shared`] first, on this thread.
pub(crate) fn push_shared(addr: usize) {
    let _ = SHARED.try_with(|s| s.borrow_mut().push(addr));
}

/// Forgets one shared borrow of the cell at `addr`.
pub(crate) fn pop_shared(addr: usize) {
    // `try_with`: a guard dropped during thread-local destruction must not
    // panic; there is nothing left to forget then.
    let _ = SHARED.try_with(|s| {
        let mut s = s.borrow_mut();
        if let Some(i) = s.iter().rposition(|&a| a == addr) {
            s.swap_remove(i);
        }
    });
}

/// Whether this thread holds a shared borrow of the cell at `addr`.
pub(crate) fn holds_shared(addr: usize) -> bool {
    SHARED
        .try_with(|s| s.borrow().contains(&addr))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_aligned_and_distinct_per_thread() {
        let here = token();
        assert_ne!(here, 0);
        assert_eq!(here % 8, 0);
        assert_eq!(here, token());
        let there = std::thread::spawn(token).join().unwrap();
        // The other thread has exited, so its address may be reused later,
        // but while both are alive they differ.
        let _ = there;
        let barrier = std::sync::Barrier::new(2);
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let t = token();
                barrier.wait();
                t
            });
            let mine = token();
            barrier.wait();
            (mine, h.join().unwrap())
        });
        assert_ne!(a, b);
    }

    #[test]
    fn shared_list_tracks_borrows() {
        push_shared(40);
        push_shared(40);
        assert!(holds_shared(40));
        pop_shared(40);
        assert!(holds_shared(40));
        pop_shared(40);
        assert!(!holds_shared(40));
    }
}
