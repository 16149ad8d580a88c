//! Per-thread bookkeeping that lets a thread recognise its own borrows.
//!
//! Waiting for a borrow held by another thread is correct; waiting for one
//! held by the *same* thread never ends. Exclusive borrows record their
//! owner in the cell (see [`cell`](crate::cell)); shared borrows cannot, as
//! there may be many, so each thread keeps the short list of cells it reads.

use std::cell::{Cell, RefCell};

thread_local! {
    /// Only its address matters: unique among live threads, 8-aligned so
    /// the low bits of the borrow word stay free for flags.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
    static SHARED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static SHARD_CURSOR: Cell<usize> = const { Cell::new(0) };
}

/// This thread's owner token: a non-zero multiple of 8.
#[inline]
pub(crate) fn token() -> usize {
    TOKEN.with(|t| t as *const Cell<u64> as usize)
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

/// Records a shared borrow of the cell at `addr`.
pub(crate) fn push_shared(addr: usize) {
    SHARED.with(|s| s.borrow_mut().push(addr));
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
