//! Counted handles: one `user_data`, several destroy-notifies.
//!
//! # Why
//!
//! C often keeps one `user_data` in several places, each with its own
//! destroy-notify: `sqlite3_create_function_v2(db, "f", .., p, .., xDestroy)`
//! for three functions sharing one state, one closure connected to several
//! GLib signals, a context shared by several libuv handles. With plain
//! handles the first destroy-notify frees the value and the others meet
//! `Stale`. [`Registry::retain`](crate::Registry::retain) adds one
//! reference per extra place; every `unref` / `c_unref` drops one, and the
//! value is dropped at the last.
//!
//! # How
//!
//! The counts live in a side table of the registry, keyed by handle, and
//! the slot's state word carries a `COUNTED` flag once a handle was
//! retained (transitions 8 and 9 in `src/slot.rs`). The plain fast
//! paths build their expected words without the flag, so a never-retained
//! handle pays nothing: neither `restore` nor `unref` reads the table. A
//! retained handle's borrows fail their first exchange and take the slow
//! path, which keeps the flag; its `unref` and `take` take the table lock.
//!
//! * `take` (and [`Handle::into_inner`](crate::Handle::into_inner)) while
//!   more than one reference is out answers
//!   [`Error::Retained`](crate::Error::Retained) and changes nothing.
//! * A retain of a removed handle is `Stale`, even when it races with the
//!   removal: both go through the lock, so a dying value is never revived.
//! * A [`scope`](crate::Registry::scope)'s handle may be retained, but the
//!   scope's end removes its record whatever the count: every copy
//!   answers `Stale` after, as for any scope handle.
//!
//! The code is in [`registry`](crate::Registry) (the removal paths must
//! see the flag); this module holds its tests.

#[cfg(test)]
mod tests {
    use crate::{Error, Registry};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn dropped_at_the_last_unref_exactly_once() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save(Counted(drops.clone()));
        for _ in 0..3 {
            r.retain(p).unwrap();
        }
        assert_eq!(r.ref_count(p), Ok(4));
        for left in (1..4).rev() {
            r.unref(p).unwrap();
            assert_eq!(drops.load(Ordering::Relaxed), 0);
            assert_eq!(r.ref_count(p), Ok(left));
            assert!(r.restore::<Counted>(p).is_ok());
        }
        r.unref(p).unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert_eq!(r.unref(p), Err(Error::Stale));
        assert_eq!(r.retain(p), Err(Error::Stale));
        assert_eq!(r.ref_count(p), Err(Error::Stale));
        assert!(r.counts_is_empty());
    }

    #[test]
    fn take_refused_while_retained_then_allowed() {
        let r = Registry::new();
        let p = r.save(String::from("x"));
        r.retain(p).unwrap();
        assert_eq!(r.take::<String>(p), Err(Error::Retained));
        assert_eq!(r.failures().count(&Error::Retained), 1);
        // The crate's own quiet variant (a retained one-shot completion
        // falls back to a shared borrow): the same answer, not logged.
        assert_eq!(r.take_unless_retained::<String>(p), Err(Error::Retained));
        assert_eq!(r.failures().count(&Error::Retained), 1);
        // Changed nothing: still live, still two references.
        assert_eq!(r.ref_count(p), Ok(2));
        assert_eq!(*r.restore::<String>(p).unwrap(), "x");
        r.unref(p).unwrap();
        assert_eq!(r.take::<String>(p).as_deref(), Ok("x"));
        assert_eq!(r.take::<String>(p), Err(Error::Stale));
        assert!(r.counts_is_empty());
    }

    #[test]
    fn retain_and_unref_while_borrowed() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save(Counted(drops.clone()));
        {
            let g = r.restore::<Counted>(p).unwrap();
            r.retain(p).unwrap();
            r.unref(p).unwrap();
            assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Busy));
            drop(g);
        }
        // The flag survives the borrow's release; borrowing takes the slow
        // path and keeps it.
        assert_eq!(r.ref_count(p), Ok(1));
        r.retain(p).unwrap();
        let g = r.restore_ref::<Counted>(p).unwrap();
        r.unref(p).unwrap();
        r.unref(p).unwrap(); // the last: orphaned, dropped with the guard
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        assert_eq!(r.restore_ref::<Counted>(p).err(), Some(Error::Stale));
        drop(g);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert!(r.is_empty());
        assert!(r.counts_is_empty());
    }

    #[test]
    fn bad_handles_are_refused_precisely() {
        let r = Registry::new();
        let other = Registry::new();
        assert_eq!(r.retain(std::ptr::null_mut()), Err(Error::Null));
        let q = other.save(1u8);
        assert_eq!(r.retain(q), Err(Error::WrongRegistry));
        let p = r.save(1u8);
        // The next generation, never issued (on either layout).
        let layout = crate::handle::Layout::NATIVE;
        let next = 1u64 << (layout.index_bits + layout.registry_bits);
        let forged = crate::handle::to_ptr(crate::handle::from_ptr(p) + next);
        assert!(r.retain(forged).is_err());
        r.unref(p).unwrap();
        assert_eq!(r.retain(p), Err(Error::Stale));
        other.unref(q).unwrap();
    }

    #[test]
    fn into_inner_while_retained_drops_its_own_reference() {
        let r = Registry::new();
        let h = r.handle(7u8);
        let p = h.as_ptr();
        r.retain(p).unwrap();
        assert_eq!(h.into_inner(), Err(Error::Retained));
        assert_eq!(r.ref_count(p), Ok(1));
        assert_eq!(r.take::<u8>(p), Ok(7));
    }

    #[test]
    fn scope_end_removes_a_retained_record() {
        let r = Registry::new();
        let mut state = 0u8;
        let mut kept = std::ptr::null_mut();
        r.scope(&mut state, |p| {
            r.retain(p).unwrap();
            kept = p;
        })
        .unwrap();
        assert_eq!(r.with::<u8, _>(kept, |_| ()), Err(Error::Stale));
        assert_eq!(r.unref(kept), Err(Error::Stale));
        assert!(r.counts_is_empty());
        let mut sent = 0u8;
        r.scope_send(&mut sent, |p| {
            r.retain(p).unwrap();
            kept = p;
        })
        .unwrap();
        assert_eq!(r.unref(kept), Err(Error::Stale));
        assert!(r.counts_is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn racing_retains_and_unrefs_drop_once() {
        let rounds = if cfg!(miri) { 3 } else { 200 };
        for _ in 0..rounds {
            let r = Registry::new();
            let drops = Arc::new(AtomicUsize::new(0));
            let p = r.save(Counted(drops.clone()));
            r.retain(p).unwrap();
            let h = crate::handle::from_ptr(p);
            let p_ = move || crate::handle::to_ptr(h);
            let retained = std::thread::scope(|s| {
                let a = s.spawn(|| r.unref(p_()));
                let b = s.spawn(|| r.retain(p_()));
                let c = s.spawn(|| r.restore::<Counted>(p_()).map(drop));
                let _ = c.join().unwrap();
                let _ = a.join().unwrap();
                b.join().unwrap()
            });
            // The retain either landed (two references left) or did not
            // (one left); the value is alive either way.
            let left = r.ref_count(p).unwrap();
            assert_eq!(left, if retained.is_ok() { 2 } else { 1 });
            for _ in 0..left {
                r.unref(p).unwrap();
            }
            assert_eq!(drops.load(Ordering::Relaxed), 1);
            assert!(r.counts_is_empty());
        }
    }

    #[test]
    fn retain_racing_the_last_unref_never_revives() {
        let rounds = if cfg!(miri) { 3 } else { 200 };
        for _ in 0..rounds {
            let r = Registry::new();
            let drops = Arc::new(AtomicUsize::new(0));
            let p = r.save(Counted(drops.clone()));
            let h = crate::handle::from_ptr(p);
            let p_ = move || crate::handle::to_ptr(h);
            let (u, k) = std::thread::scope(|s| {
                let a = s.spawn(|| r.unref(p_()));
                let b = s.spawn(|| r.retain(p_()));
                (a.join().unwrap(), b.join().unwrap())
            });
            assert_eq!(u, Ok(()));
            match k {
                // Retained first: one reference is left.
                Ok(()) => {
                    assert_eq!(drops.load(Ordering::Relaxed), 0);
                    r.unref(p).unwrap();
                }
                Err(e) => assert_eq!(e, Error::Stale),
            }
            assert_eq!(drops.load(Ordering::Relaxed), 1);
            assert!(r.counts_is_empty());
            assert!(r.is_empty());
        }
    }
}
