//! Weak handles: C holds a handle that does not keep the value alive.
//!
//! # Why
//!
//! Rust owns an object (an `Arc<T>`: a connection, a window model) and
//! registers a callback with C that should fire only while the object
//! lives. A strong handle would keep it alive until C's destroy-notify,
//! which may never come. A weak handle stores a [`Weak<T>`] in an ordinary
//! slot: [`Registry::restore_weak`] upgrades it for the duration of the
//! callback (a live object yields an `Arc<T>`; a dead one, or a removed
//! handle, answers [`Error::Stale`]).
//!
//! # Nothing leaked when C never calls back
//!
//! The slot's `Weak<T>` keeps the `Arc`'s allocation (not the value) and
//! the slot itself. So the registry keeps a list of its weak handles, each
//! with a type-erased `Weak` copy, and *sweeps* it: every handle whose
//! object is dead is unreffed. A sweep is invisible to C (a dead entry
//! answers `Stale` either way, swept or not). [`Registry::save_weak`]
//! sweeps whenever the list has doubled since the last sweep (amortised
//! constant cost per save); [`Registry::sweep_weak`] sweeps on demand.
//! Handles unreffed by C leave the list at the next sweep.
//!
//! The record's type is private, so `restore::<Weak<T>>` on a weak handle
//! is a `WrongType`, and a strong handle is never mistaken for a weak one.

use std::any::Any;
use std::ffi::c_void;
use std::sync::{Arc, Weak};

use crate::{handle, Error, Registry};

/// What a weak handle's slot holds.
struct WeakRecord<T>(Weak<T>);

/// A registry's weak handles not yet known dead.
pub(crate) struct WeakList {
    entries: Vec<(u64, Weak<dyn Any + Send + Sync>)>,
    /// Sweep when `entries` reaches this length.
    next_sweep: usize,
}

impl WeakList {
    pub(crate) const fn new() -> WeakList {
        WeakList {
            entries: Vec::new(),
            next_sweep: 8,
        }
    }
}

impl Registry {
    /// Saves a weak reference to `value` and returns its handle, never
    /// NULL: the handle does not keep the object alive. Restore it with
    /// [`restore_weak`](Registry::restore_weak).
    ///
    /// The slot is freed by [`unref`](Registry::unref) (a destroy-notify),
    /// or, once the object is dead, by a sweep (see
    /// [`sweep_weak`](Registry::sweep_weak)); this call sweeps whenever
    /// the registry's list of weak handles has doubled since the last one.
    ///
    /// # Panics
    ///
    /// When the registry is full, as [`save`](Registry::save).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use handle_registry::{Error, Registry};
    ///
    /// let r = Registry::new();
    /// let window = Arc::new(String::from("window"));
    /// let p = r.save_weak(&window);
    /// assert_eq!(*r.restore_weak::<String>(p).unwrap(), "window");
    /// drop(window); // the last strong reference
    /// assert_eq!(r.restore_weak::<String>(p).err(), Some(Error::Stale));
    /// ```
    #[track_caller]
    pub fn save_weak<T: Any + Send + Sync>(&self, value: &Arc<T>) -> *mut c_void {
        let weak = Arc::downgrade(value);
        let erased: Weak<dyn Any + Send + Sync> = weak.clone();
        let ptr = self.save(WeakRecord(weak));
        let sweep = {
            let mut list = self.weak.lock();
            list.entries.push((handle::from_ptr(ptr), erased));
            list.entries.len() >= list.next_sweep
        };
        if sweep {
            self.sweep_weak();
        }
        ptr
    }

    /// Upgrades the weak handle `ptr`: the object, kept alive by the
    /// returned `Arc` for as long as the callback holds it.
    ///
    /// [`Error::Stale`] when the object is dead (its last strong reference
    /// is gone) or the handle was removed; the other errors as for
    /// [`restore_ref`](Registry::restore_ref) (a handle saved with plain
    /// `save` is a [`Error::WrongType`]).
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let r = handle_registry::Registry::new();
    /// let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
    /// let p = r.save_weak(&counter);
    /// r.restore_weak::<std::sync::atomic::AtomicU32>(p)
    ///     .unwrap()
    ///     .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    /// assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 1);
    /// r.unref(p).unwrap();
    /// assert!(r.restore_weak::<std::sync::atomic::AtomicU32>(p).is_err());
    /// ```
    pub fn restore_weak<T: Any + Send + Sync>(&self, ptr: *mut c_void) -> Result<Arc<T>, Error> {
        let record = self.restore_ref::<WeakRecord<T>>(ptr)?;
        let strong = record.0.upgrade();
        drop(record);
        strong.ok_or_else(|| {
            self.failure_log()
                .note(ptr, Error::Stale, std::any::type_name::<T>());
            Error::Stale
        })
    }

    /// Removes every weak handle of this registry whose object is dead
    /// (with all its references, if it was [`retain`](Registry::retain)ed:
    /// they could only ever answer `Stale`), and forgets the ones already
    /// removed. Returns how many handles it
    /// unreffed. Invisible to C: a dead weak handle answers
    /// [`Error::Stale`] whether it was swept or not.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let r = handle_registry::Registry::new();
    /// let a = Arc::new(1u8);
    /// let p = r.save_weak(&a);
    /// assert_eq!(r.len(), 1);
    /// drop(a);
    /// assert_eq!(r.sweep_weak(), 1);
    /// assert!(r.is_empty());
    /// assert!(r.restore_weak::<u8>(p).is_err());
    /// ```
    pub fn sweep_weak(&self) -> usize {
        let dead: Vec<u64> = {
            let mut list = self.weak.lock();
            let mut dead = Vec::new();
            // An entry goes when its object is dead (unreffed below) or its
            // handle is (C unreffed it: only forgotten). Checking the object
            // alone kept every handle C freed in the list for as long as the
            // object lived: with one long-lived `Arc` and C freeing what it
            // is given, a list that grew without bound.
            list.entries.retain(|&(p, ref w)| {
                if !self.is_live(handle::to_ptr(p)) {
                    false
                } else if w.strong_count() == 0 {
                    dead.push(p);
                    false
                } else {
                    true
                }
            });
            list.next_sweep = (list.entries.len() * 2).max(8);
            dead
        };
        // Remove outside the lock: dropping a record frees memory and may
        // take other locks. Handles C already unreffed answer `Stale`,
        // quietly: they are not refusals of C's calls.
        dead.into_iter()
            .filter(|&p| self.unref_with(handle::to_ptr(p), true).is_ok())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn upgrade_while_alive_stale_after() {
        let r = Registry::new();
        let a = Arc::new(5u32);
        let p = r.save_weak(&a);
        let b = r.restore_weak::<u32>(p).unwrap();
        assert_eq!(*b, 5);
        drop(a);
        // The upgraded Arc keeps it alive for the callback.
        assert_eq!(*r.restore_weak::<u32>(p).unwrap(), 5);
        drop(b);
        assert_eq!(r.restore_weak::<u32>(p), Err(Error::Stale));
        assert_eq!(r.failures().count(&Error::Stale), 1);
    }

    #[test]
    fn kinds_do_not_mix() {
        let r = Registry::new();
        let a = Arc::new(5u32);
        let p = r.save_weak(&a);
        assert!(matches!(r.restore::<u32>(p), Err(Error::WrongType { .. })));
        assert!(matches!(
            r.restore_weak::<u64>(p),
            Err(Error::WrongType { .. })
        ));
        let q = r.save(5u32);
        assert!(matches!(
            r.restore_weak::<u32>(q),
            Err(Error::WrongType { .. })
        ));
        assert_eq!(
            r.restore_weak::<u32>(std::ptr::null_mut()),
            Err(Error::Null)
        );
        r.unref(q).unwrap();
        r.unref(p).unwrap();
        assert_eq!(r.restore_weak::<u32>(p), Err(Error::Stale));
    }

    #[test]
    fn saves_sweep_dead_entries() {
        let r = Registry::new();
        for _ in 0..100 {
            let a = Arc::new(0u8);
            let _ = r.save_weak(&a);
        }
        // Never more than twice the live list, plus the sweep threshold.
        assert!(r.len() <= 16, "{}", r.len());
        r.sweep_weak();
        assert!(r.is_empty());
        assert!(r.weak.lock().entries.is_empty());
    }

    #[test]
    fn sweep_forgets_unreffed_and_keeps_live() {
        let r = Registry::new();
        let live = Arc::new(1u8);
        let p = r.save_weak(&live);
        let dead = Arc::new(2u8);
        let q = r.save_weak(&dead);
        r.unref(q).unwrap();
        drop(dead);
        assert_eq!(r.sweep_weak(), 0);
        assert_eq!(r.weak.lock().entries.len(), 1);
        assert_eq!(*r.restore_weak::<u8>(p).unwrap(), 1);
        assert_eq!(r.failures().total(), 0);
        r.unref(p).unwrap();
    }

    #[test]
    fn handles_c_frees_leave_the_list_while_the_object_lives() {
        let r = Registry::new();
        let a = Arc::new(7u32);
        let n = if cfg!(miri) { 40 } else { 10_000 };
        for _ in 0..n {
            let p = r.save_weak(&a);
            r.unref(p).unwrap(); // C's destroy-notify
        }
        // Saves sweep as the list doubles: it stays small, and so does
        // what it keeps alive (each entry holds a `Weak` of the `Arc`).
        assert!(r.weak.lock().entries.len() <= 16);
        assert!(Arc::weak_count(&a) <= 16, "{}", Arc::weak_count(&a));
        r.sweep_weak();
        assert_eq!((r.weak.lock().entries.len(), Arc::weak_count(&a)), (0, 0));
        assert!(r.is_empty());
    }

    #[test]
    fn the_object_drops_once_whoever_holds_it_last() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct D;
        impl Drop for D {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let r = Registry::new();
        let a = Arc::new(D);
        let p = r.save_weak(&a);
        let h = handle::from_ptr(p);
        let t = {
            let r = &r;
            std::thread::scope(|s| {
                s.spawn(move || r.restore_weak::<D>(handle::to_ptr(h)).map(|_| ()))
                    .join()
                    .unwrap()
            })
        };
        assert_eq!(t, Ok(()));
        drop(a);
        assert_eq!(DROPS.load(Ordering::Relaxed), 1);
        assert_eq!(r.restore_weak::<D>(p).err(), Some(Error::Stale));
        drop(r);
        assert_eq!(DROPS.load(Ordering::Relaxed), 1);
    }
}
