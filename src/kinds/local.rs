//! Thread-affine values that are not `Send`: saved on their thread,
//! reached only there, dropped only there.
//!
//! # Why
//!
//! `Rc`s, GUI objects and thread-bound C handles must never be touched off
//! their thread, yet C hands their `user_data` to callbacks that may come
//! from any thread, and may call a destroy-notify from any thread. gtk-rs's
//! `ThreadGuard` aborts the process on a wrong-thread access; here a
//! wrong-thread [`Registry::restore_local`] is [`Error::WrongThread`], and
//! a wrong-thread `unref` / `c_unref` defers the drop to the owning thread.
//!
//! # How
//!
//! The value never lives in the registry's slot. It is boxed and kept in a
//! table owned by its thread (the *owner*); the slot holds a small `Send +
//! Sync` record: an `Arc` to the owner's table and the value's key. So a
//! thread other than the owner can borrow, unref and drop the *record*
//! freely; it never dereferences, moves or drops the value:
//!
//! * **restore** takes a shared borrow of the record, then, under the
//!   owner's table lock: a dead owner is `Stale`, another thread is
//!   `WrongThread` (the borrow is released; a shared borrow never waits
//!   behind another reader, so a wrong-thread call never waits for the
//!   owner's callback), a value already in use by a [`LocalGuard`] is
//!   `Busy`. Otherwise the entry is marked in use and the guard derefs the
//!   box. The guard is neither `Send` nor `Sync`, and it keeps the record's
//!   borrow: an `unref` meanwhile orphans the record, and the guard's own
//!   release (on the owner thread) drops it.
//! * **dropping a record** (the last reference went, on whatever thread)
//!   removes the entry from the owner's table. On the owner the value is
//!   dropped at once; elsewhere it is queued on the owner, which drops the
//!   queue at its next [`Registry::save_local`] or
//!   [`Registry::restore_local`], at [`drop_deferred`], or when it exits.
//! * **the owner's exit** (a thread-local destructor) marks the table dead
//!   and drops every value still in it and every queued one, on the owner
//!   thread; every handle of that thread then answers `Stale`. Values of
//!   the global registry also have their handles unreffed once (their
//!   slots freed, unless C [`retain`](crate::Registry::retain)ed the
//!   handle: the record then stays until C's last `unref`, and the handle
//!   is `Stale` to `restore_local` meanwhile); a record in another
//!   registry keeps its slot (a few words)
//!   until it is unreffed or the registry is dropped, since a thread cannot
//!   name a registry that may be gone by its exit. A record borrowed by
//!   another thread at that moment is harmless: that thread never touches
//!   the value, and the record's later drop finds the table dead.
//! * A value still **in use** when its thread exits (a `LocalGuard` kept in
//!   a thread-local destroyed later) cannot be dropped on its thread
//!   without pulling it from under that guard, and must not be dropped on
//!   another: it is leaked, and counted ([`leaked_locals`]).

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::sync::atomic::Ordering;
use crate::sync::unmodelled::AtomicUsize;
use crate::sync::{thread_locals, Mutex};
use crate::{handle, Error, Registry, SharedGuard};

/// A value of the owner's, type-erased: its box and its drop.
struct Erased {
    ptr: *mut (),
    drop: unsafe fn(*mut ()),
    in_use: bool,
}

// SAFETY: the pointer is only carried by other threads (in the owner's
// table, behind its lock); it is dereferenced and dropped only on the
// owner thread (see the module notes).
unsafe impl Send for Erased {}

impl Erased {
    fn new<T>(value: T) -> Erased {
        unsafe fn drop_box<T>(ptr: *mut ()) {
            // SAFETY: per `Erased::drop_now`'s caller: `ptr` came from
            // `Box::into_raw` of a `T` below and is dropped once.
            drop(unsafe { Box::from_raw(ptr.cast::<T>()) })
        }
        Erased {
            ptr: Box::into_raw(Box::new(value)).cast(),
            drop: drop_box::<T>,
            in_use: false,
        }
    }

    /// Drops the value. Called on the owner thread only, once.
    fn drop_now(self) {
        // SAFETY: `ptr` and `drop` were made together by `new`, and every
        // caller runs on the owner thread and owns this `Erased` (removed
        // from the table), so it is dropped once, on its thread.
        unsafe { (self.drop)(self.ptr) }
    }
}

struct Table {
    alive: bool,
    next_key: u64,
    values: BTreeMap<u64, Erased>,
    deferred: Vec<Erased>,
    /// Handles of the global registry saved here, unreffed at exit.
    global: Vec<u64>,
    /// Forget the ones already freed when `global` reaches this length
    /// (so the list stays within twice the live count, at an amortised
    /// constant cost per save).
    next_prune: usize,
}

/// One thread's table of local values.
struct Owner {
    table: Mutex<Table>,
}

/// The owner's end: its exit runs when the thread's thread-locals go.
struct OwnerSlot(Arc<Owner>);

thread_locals! {
    static OWNER: RefCell<Option<OwnerSlot>> = const { RefCell::new(None) };
}

static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// How many local values were leaked because they were still in use (a
/// [`LocalGuard`] alive) when their thread exited: never dropped on
/// another thread, so never dropped. Zero in a correct program.
///
/// ```
/// assert_eq!(handle_registry::kinds::local::leaked_locals(), 0);
/// ```
pub fn leaked_locals() -> usize {
    LEAKED.load(Ordering::Relaxed)
}

impl Drop for OwnerSlot {
    fn drop(&mut self) {
        let (values, deferred, global) = {
            let mut table = self.0.table.lock();
            table.alive = false;
            (
                std::mem::take(&mut table.values),
                std::mem::take(&mut table.deferred),
                std::mem::take(&mut table.global),
            )
        };
        for erased in values.into_values().chain(deferred) {
            if erased.in_use {
                // Leaked: `Erased` has no `Drop`, so letting it go frees
                // nothing; the box stays for the guard that still uses it.
                LEAKED.fetch_add(1, Ordering::Relaxed);
            } else {
                // A panic must not escape a thread-local destructor, nor
                // its payload's `Drop`.
                crate::panic::catch_quietly(|| erased.drop_now());
            }
        }
        for h in global {
            // Stale if it was unreffed already; a record's drop now finds
            // the table dead and drops nothing.
            crate::panic::catch_quietly(|| {
                let _ = Registry::global().try_unref(handle::to_ptr(h));
            });
        }
    }
}

/// This thread's owner, made on first use; `None` during teardown.
fn this_owner() -> Option<Arc<Owner>> {
    OWNER
        .try_with(|cell| {
            let mut cell = cell.try_borrow_mut().ok()?;
            let slot = cell.get_or_insert_with(|| {
                OwnerSlot(Arc::new(Owner {
                    table: Mutex::new(Table {
                        alive: true,
                        next_key: 0,
                        values: BTreeMap::new(),
                        deferred: Vec::new(),
                        global: Vec::new(),
                        next_prune: 16,
                    }),
                }))
            });
            Some(slot.0.clone())
        })
        .ok()
        .flatten()
}

fn is_owner(owner: &Arc<Owner>) -> bool {
    OWNER
        .try_with(|cell| {
            cell.try_borrow()
                .is_ok_and(|c| c.as_ref().is_some_and(|s| Arc::ptr_eq(&s.0, owner)))
        })
        .unwrap_or(false)
}

/// Drops the values other threads queued for this thread (unreffed
/// there), here on their thread. Returns how many.
///
/// # Panics
///
/// If a value's `Drop` panics: after every queued value was dropped, the
/// first such panic is resumed, unless this thread is already unwinding
/// (a `Drop` that calls this during an unwind): it is then dropped, never
/// a double-panic abort.
///
/// ```
/// assert_eq!(handle_registry::kinds::local::drop_deferred(), 0);
/// ```
pub fn drop_deferred() -> usize {
    let Some(owner) = OWNER
        .try_with(|cell| cell.try_borrow().ok()?.as_ref().map(|s| s.0.clone()))
        .ok()
        .flatten()
    else {
        return 0;
    };
    let deferred = std::mem::take(&mut owner.table.lock().deferred);
    let n = deferred.len();
    // Every value is dropped even if one's `Drop` panics (an `Erased` left
    // behind would leak); the first panic is resumed after, unless an
    // unwind is in progress (resuming then would abort the process).
    let mut panic = None;
    for erased in deferred {
        if let Err(payload) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| erased.drop_now()))
        {
            crate::panic::keep_first(&mut panic, payload);
        }
    }
    if let Some(payload) = panic {
        crate::panic::resume_unless_unwinding(payload);
    }
    n
}

/// What a local handle's slot holds.
struct LocalRecord<T> {
    owner: Arc<Owner>,
    key: u64,
    _value: PhantomData<fn() -> T>,
}

impl<T> Drop for LocalRecord<T> {
    fn drop(&mut self) {
        let mine = is_owner(&self.owner);
        let erased = {
            let mut table = self.owner.table.lock();
            let Some(erased) = table.values.remove(&self.key) else {
                return; // dropped at the owner's exit already
            };
            if !mine {
                // Never dropped here: queued for the owner.
                table.deferred.push(erased);
                return;
            }
            erased
        };
        erased.drop_now();
    }
}

/// A borrow of a local value, on its thread: derefs to the value. Neither
/// `Send` nor `Sync`.
///
/// ```
/// use std::rc::Rc;
///
/// let r = handle_registry::Registry::new();
/// let p = r.save_local(Rc::new(5));
/// let g = r.restore_local::<Rc<i32>>(p).unwrap();
/// assert_eq!(**g, 5);
/// # drop(g); r.unref(p).unwrap();
/// ```
pub struct LocalGuard<'r, T: Any> {
    record: SharedGuard<'r, LocalRecord<T>>,
    value: *mut T,
    _not_send: PhantomData<*mut T>,
}

impl<T: Any> Deref for LocalGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the entry is marked in use by this guard (no other guard
        // reaches it), we are on the owner thread (the guard is not
        // `Send`), and the value lives while the record does, which our
        // borrow keeps.
        unsafe { &*self.value }
    }
}

impl<T: Any> DerefMut for LocalGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes it unique.
        unsafe { &mut *self.value }
    }
}

impl<T: Any> Drop for LocalGuard<'_, T> {
    fn drop(&mut self) {
        if let Some(e) = self
            .record
            .owner
            .table
            .lock()
            .values
            .get_mut(&self.record.key)
        {
            e.in_use = false;
        }
        // `record` drops next: if it was unreffed meanwhile, its release
        // drops the record here, on the owner thread, and the value with it.
    }
}

// SAFETY: the record holds an `Arc` to a lock-guarded table and a key; it
// never touches the value off the owner thread (see `Drop`).
unsafe impl<T> Send for LocalRecord<T> {}
// SAFETY: shared access reads only `owner` and `key`.
unsafe impl<T> Sync for LocalRecord<T> {}

impl Registry {
    /// Saves a value that need not be `Send`, bound to this thread, and
    /// returns its handle, never NULL. Only this thread can reach it
    /// ([`restore_local`](Registry::restore_local)); an `unref` or
    /// `c_unref` from any thread is fine (the drop is deferred to this
    /// thread); when this thread exits the value is dropped and the handle
    /// answers `Stale`. See the [module notes](crate::kinds::local).
    ///
    /// Also drops values other threads queued for this thread; a panic
    /// from one of their `Drop`s is discarded, as in
    /// [`restore_local`](Registry::restore_local) (it is not this call's).
    ///
    /// # Panics
    ///
    /// When the registry is full, or from a thread-local destructor of
    /// this thread once its table is gone.
    ///
    /// ```
    /// use std::rc::Rc;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save_local(Rc::new(String::from("not Send")));
    /// assert_eq!(r.restore_local::<Rc<String>>(p).unwrap().as_str(), "not Send");
    /// r.unref(p).unwrap();
    /// ```
    #[track_caller]
    pub fn save_local<T: Any>(&self, value: T) -> *mut c_void {
        crate::panic::catch_quietly(|| {
            drop_deferred();
        });
        let owner = this_owner().expect("save_local: this thread's local table is gone");
        let key = {
            let mut table = owner.table.lock();
            let key = table.next_key;
            table.next_key += 1;
            table.values.insert(key, Erased::new(value));
            key
        };
        let record = LocalRecord::<T> {
            owner: owner.clone(),
            key,
            _value: PhantomData,
        };
        let ptr = self.save(record);
        if std::ptr::eq(self, Registry::global()) {
            let mut table = owner.table.lock();
            if table.global.len() >= table.next_prune {
                table
                    .global
                    .retain(|&h| Registry::global().is_live(handle::to_ptr(h)));
                table.next_prune = (table.global.len() * 2).max(16);
            }
            table.global.push(handle::from_ptr(ptr));
        }
        ptr
    }

    /// Borrows a local value, on its thread. [`Error::WrongThread`] from
    /// any other thread (which never touches the value), `Stale` once the
    /// value was unreffed or its thread exited, `Busy` while a
    /// [`LocalGuard`] of it is alive, and the usual errors for bad handles.
    /// Never panics: it first drops the values other threads queued for
    /// this thread, and a panic from one of their `Drop`s is discarded.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save_local(Cell::new(1));
    /// r.restore_local::<Cell<i32>>(p).unwrap().set(2);
    /// let h = p.addr(); // the integer, to hand to another thread
    /// let there = std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let p = std::ptr::without_provenance_mut(h);
    ///         r.restore_local::<Cell<i32>>(p).map(|_| ()).err()
    ///     })
    ///     .join()
    ///     .unwrap()
    /// });
    /// assert_eq!(there, Some(Error::WrongThread));
    /// assert_eq!(r.restore_local::<Cell<i32>>(p).unwrap().get(), 2);
    /// # r.unref(p).unwrap();
    /// ```
    pub fn restore_local<T: Any>(&self, ptr: *mut c_void) -> Result<LocalGuard<'_, T>, Error> {
        // A callback must not unwind into C: a deferred value's panicking
        // `Drop` is caught and discarded here, as `c_unref` does.
        crate::panic::catch_quietly(|| {
            drop_deferred();
        });
        let record = self.restore_ref::<LocalRecord<T>>(ptr)?;
        let value = {
            let mut table = record.owner.table.lock();
            if !table.alive {
                Err(Error::Stale)
            } else if !is_owner(&record.owner) {
                Err(Error::WrongThread)
            } else {
                match table.values.get_mut(&record.key) {
                    None => Err(Error::Stale),
                    Some(e) if e.in_use => Err(Error::Busy),
                    Some(e) => {
                        e.in_use = true;
                        Ok(e.ptr.cast::<T>())
                    }
                }
            }
        };
        match value {
            Ok(value) => Ok(LocalGuard {
                record,
                value,
                _not_send: PhantomData,
            }),
            Err(e) => {
                drop(record);
                self.failure_log().note(ptr, e, std::any::type_name::<T>());
                Err(e)
            }
        }
    }

    /// [`drop_deferred`] for this thread, as a registry method: drops the
    /// local values other threads unreffed, here on their thread.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// assert_eq!(r.drop_deferred(), 0);
    /// ```
    pub fn drop_deferred(&self) -> usize {
        drop_deferred()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::sync::atomic::AtomicBool;
    use std::thread::ThreadId;

    /// Not `Send`; its drop asserts it runs on its own thread.
    struct Bound {
        thread: ThreadId,
        drops: Arc<AtomicUsize>,
        _not_send: Rc<()>,
    }

    impl Bound {
        fn new(drops: &Arc<AtomicUsize>) -> Bound {
            Bound {
                thread: std::thread::current().id(),
                drops: drops.clone(),
                _not_send: Rc::new(()),
            }
        }
    }

    impl Drop for Bound {
        fn drop(&mut self) {
            assert_eq!(
                std::thread::current().id(),
                self.thread,
                "dropped off its thread"
            );
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn send(p: *mut c_void) -> usize {
        p.addr()
    }

    fn back(h: usize) -> *mut c_void {
        std::ptr::without_provenance_mut(h)
    }

    #[test]
    fn restore_on_the_owner_wrong_thread_elsewhere() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save_local(Bound::new(&drops));
        assert!(r.restore_local::<Bound>(p).is_ok());
        let g = r.restore_local::<Bound>(p).unwrap();
        assert_eq!(r.restore_local::<Bound>(p).err(), Some(Error::Busy));
        let h = send(p);
        let there = std::thread::scope(|s| {
            s.spawn(|| r.restore_local::<Bound>(back(h)).map(|_| ()).err())
                .join()
                .unwrap()
        });
        assert_eq!(there, Some(Error::WrongThread));
        assert_eq!(r.failures().count(&Error::WrongThread), 1);
        assert!(matches!(
            r.restore_local::<u8>(p),
            Err(Error::WrongType { .. })
        ));
        drop(g);
        r.unref(p).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(r.restore_local::<Bound>(p).err(), Some(Error::Stale));
    }

    #[test]
    fn unref_elsewhere_defers_the_drop_to_the_owner() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let (to_owner, owner_rx) = std::sync::mpsc::channel::<()>();
        let (to_main, main_rx) = std::sync::mpsc::channel::<usize>();
        std::thread::scope(|s| {
            let r = &r;
            let drops2 = drops.clone();
            s.spawn(move || {
                let p = r.save_local(Bound::new(&drops2));
                let q = r.save_local(Bound::new(&drops2));
                to_main.send(send(p)).unwrap();
                to_main.send(send(q)).unwrap();
                owner_rx.recv().unwrap(); // main unreffed both
                assert_eq!(drops2.load(Ordering::SeqCst), 0);
                assert_eq!(r.drop_deferred(), 1);
                assert_eq!(drops2.load(Ordering::SeqCst), 1);
                to_main.send(0).unwrap();
                owner_rx.recv().unwrap();
                // the second goes at the next restore_local
                assert_eq!(
                    r.restore_local::<Bound>(back(send(q))).err(),
                    Some(Error::Stale)
                );
                assert_eq!(drops2.load(Ordering::SeqCst), 2);
            });
            let p = back(main_rx.recv().unwrap());
            let q = back(main_rx.recv().unwrap());
            r.unref(p).unwrap();
            to_owner.send(()).unwrap();
            main_rx.recv().unwrap();
            r.unref(q).unwrap();
            to_owner.send(()).unwrap();
        });
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert!(r.is_empty());
    }

    #[test]
    fn the_list_of_global_handles_stays_within_twice_the_live_count() {
        // Each `save_local` in the global registry used to scan this
        // thread's whole list: quadratic in the number of live values.
        std::thread::spawn(|| {
            let g = Registry::global();
            let n = if cfg!(miri) { 40 } else { 1000 };
            let kept: Vec<_> = (0..4).map(|i| g.save_local(Rc::new(i))).collect();
            for i in 0..n {
                let p = g.save_local(Rc::new(i));
                g.unref(p).unwrap();
            }
            let owner = this_owner().unwrap();
            let listed = owner.table.lock().global.len();
            assert!(listed <= 2 * 4 + 16, "{listed} listed for 4 live");
            for p in kept {
                g.unref(p).unwrap();
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_owners_exit_drops_its_values_there_and_handles_go_stale() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let (p, q, g) = std::thread::scope(|s| {
            let r = &r;
            let drops = &drops;
            s.spawn(move || {
                let p = r.save_local(Bound::new(drops));
                let q = r.save_local(Bound::new(drops));
                let g = Registry::global().save_local(Bound::new(drops));
                (send(p), send(q), send(g))
            })
            .join()
            .unwrap()
        });
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert_eq!(r.restore_local::<Bound>(back(p)).err(), Some(Error::Stale));
        // The global registry's handles were unreffed at the exit.
        assert_eq!(Registry::global().unref(back(g)), Err(Error::Stale));
        // Another registry's records stay until unreffed; nothing drops twice.
        assert_eq!(r.len(), 2);
        r.unref(back(p)).unwrap();
        drop(r);
        let _ = q;
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn unref_during_a_guard_drops_with_the_guard_on_the_owner() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save_local(Bound::new(&drops));
        let g = r.restore_local::<Bound>(p).unwrap();
        let h = send(p);
        std::thread::scope(|s| {
            s.spawn(|| r.unref(back(h)).unwrap());
        });
        assert_eq!(r.restore_local::<Bound>(p).err(), Some(Error::Stale));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(g);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn a_guard_alive_at_exit_leaks_the_value_rather_than_drop_it_elsewhere() {
        static DROPPED: AtomicBool = AtomicBool::new(false);
        struct Flag;
        impl Drop for Flag {
            fn drop(&mut self) {
                DROPPED.store(true, Ordering::SeqCst);
            }
        }
        let r = Registry::new();
        let before = leaked_locals();
        let p = std::thread::scope(|s| {
            s.spawn(|| {
                let p = r.save_local(Flag);
                std::mem::forget(r.restore_local::<Flag>(p).unwrap());
                send(p)
            })
            .join()
            .unwrap()
        });
        assert!(leaked_locals() > before);
        assert!(!DROPPED.load(Ordering::SeqCst));
        assert_eq!(r.restore_local::<Flag>(back(p)).err(), Some(Error::Stale));
        drop(r); // the record goes; the value stays leaked
        assert!(!DROPPED.load(Ordering::SeqCst));
    }

    #[test]
    fn many_threads_unref_each_others_locals() {
        let n = if cfg!(miri) { 2 } else { 8 };
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let barrier = std::sync::Barrier::new(n);
        let handles: Mutex<Vec<usize>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..n {
                s.spawn(|| {
                    for _ in 0..3 {
                        let p = r.save_local(Bound::new(&drops));
                        handles.lock().push(send(p));
                    }
                    barrier.wait();
                    // Unref someone's (maybe our own).
                    for _ in 0..3 {
                        let h = handles.lock().pop().unwrap();
                        let _ = r.restore_local::<Bound>(back(h));
                        r.unref(back(h)).unwrap();
                    }
                    barrier.wait();
                    r.drop_deferred();
                });
            }
        });
        assert_eq!(drops.load(Ordering::SeqCst), 3 * n);
        assert!(r.is_empty());
    }

    /// Counts its drops, then panics.
    struct Boom(Arc<AtomicUsize>);

    impl Drop for Boom {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("deferred boom");
        }
    }

    #[test]
    fn a_panicking_deferred_drop_never_escapes_restore_local() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save_local(Boom(drops.clone()));
        let q = r.save_local(Boom(drops.clone()));
        let (hp, hq) = (send(p), send(q));
        std::thread::scope(|s| {
            s.spawn(|| {
                r.unref(back(hp)).unwrap();
                r.unref(back(hq)).unwrap();
            });
        });
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        // Both dropped here, both panics swallowed.
        assert_eq!(r.restore_local::<Boom>(p).err(), Some(Error::Stale));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn deferred_payloads_that_panic_when_dropped_never_abort() {
        use crate::panic::tests::NestedPanic;
        let r = Registry::new();
        let handles = [0; 3].map(|_| send(r.save_local(NestedPanic(2))));
        std::thread::scope(|s| {
            s.spawn(|| handles.map(|h| r.unref(back(h)).unwrap()));
        });
        // All three dropped here; the first panic is resumed by
        // `drop_deferred`, then discarded by `restore_local`.
        let keep = r.save_local(5u8);
        assert_eq!(*r.restore_local::<u8>(keep).unwrap(), 5);
        r.unref(keep).unwrap();
    }

    #[test]
    fn a_value_dropped_at_thread_exit_never_aborts() {
        use crate::panic::tests::NestedPanic;
        let r = Registry::global();
        let h = std::thread::spawn(|| send(Registry::global().save_local(NestedPanic(2))))
            .join()
            .unwrap();
        assert_eq!(
            r.restore_local::<NestedPanic>(back(h)).err(),
            Some(Error::Stale)
        );
    }

    #[test]
    fn a_panicking_deferred_drop_never_escapes_save_local() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let p = r.save_local(Boom(drops.clone()));
        let hp = send(p);
        std::thread::scope(|s| {
            s.spawn(|| r.unref(back(hp)).unwrap());
        });
        // Dropped here, its panic swallowed: not this call's to report.
        let q = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.save_local(Rc::new(1))))
            .expect("save_local unwound with another value's panic");
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(**r.restore_local::<Rc<i32>>(q).unwrap(), 1);
        r.unref(q).unwrap();
    }
}
