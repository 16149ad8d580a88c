//! The pool: slot words, the trampolines' dispatch, and the guard.

use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::fmt;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use once_cell::sync::OnceCell;

use super::signature::{SafeSignature, Signature};
use crate::panic::PanicCarrier;
use crate::sync::atomic::Ordering;
use crate::sync::unmodelled::AtomicUsize;
use crate::Registry;

/// The largest pool [`static_callbacks!`](crate::static_callbacks) accepts.
///
/// Every slot is a distinct function in the binary, so pools stay small;
/// a program that needs more concurrent users of one C signature should
/// declare a second pool.
///
/// ```
/// assert_eq!(handle_registry::static_trampoline::MAX_POOL_SIZE, 64);
/// ```
pub const MAX_POOL_SIZE: usize = 64;

/// The pool size [`static_callbacks!`](crate::static_callbacks) uses when
/// the declaration says `_`.
///
/// ```
/// use handle_registry::static_trampoline::{pools, DEFAULT_POOL_SIZE};
///
/// assert_eq!(pools::QSORT_COMPARE.capacity(), DEFAULT_POOL_SIZE);
/// ```
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Slot word: nobody owns the slot.
const FREE: usize = 0;
/// Slot word: an acquirer owns the slot and is saving its entry. Never a
/// handle: registry id 0 is never issued (see [`handle`](crate::handle)).
const RESERVED: usize = 1;

/// Every pool's entries. Private, so that nothing outside this module can
/// take or unref them: [`Pool::scope`]'s soundness rests on it.
///
/// Created by the first acquire. Not a `Lazy`: its creation fails while
/// 254 other registries are alive, and a `Lazy` whose initialiser
/// panicked stays poisoned, which would make every pool panic for the
/// rest of the process. A failed creation panics in that one acquire and
/// is tried again by the next.
static REGISTRY: OnceCell<Registry> = OnceCell::new();

/// The pools' registry, created if this is the first acquire.
#[track_caller]
fn registry() -> &'static Registry {
    match REGISTRY.get_or_try_init(Registry::try_new) {
        Ok(registry) => registry,
        Err(e) => panic!("handle_registry::static_trampoline: cannot create its registry: {e}"),
    }
}

/// The pools' registry, which exists once a slot word names a handle:
/// only [`registry`] saves handles, after creating it.
///
/// `#[inline]`, as the two below: they are on every call's path, which is
/// generic and so compiled in the user's crate, where a function of this
/// crate not marked inline stays a call.
#[inline]
fn created() -> Option<&'static Registry> {
    REGISTRY.get()
}

/// What a slot's handle names: the closure and the panic slot of its calls.
struct Entry<F: Signature> {
    /// `None` only once [`Pool::release`] took it out.
    callback: Option<Box<F::Closure<'static>>>,
    carrier: PanicCarrier,
}

/// An entry is dropped by [`Pool::release`] after taking its parts out,
/// or, when the closure released its own slot, by the registry at the end
/// of the trampoline's call: a panic from the closure's `Drop` must not
/// unwind into C there, and has no Rust caller to reach. Catching here
/// keeps that off the per-call path. (The carrier drops a payload left in
/// it the same way.)
impl<F: Signature> Drop for Entry<F> {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            crate::panic::catch_quietly(|| drop(callback));
        }
    }
}

/// One call of a closure in progress on this thread: a node of a linked
/// stack that lives in [`Pool::call`]'s frame.
struct InCall {
    handle: usize,
    prev: *const InCall,
}

std::thread_local! {
    /// The innermost call in progress on this thread. No destructor, so it
    /// is readable at any point of the thread's life, thread-local
    /// teardown included: [`Pool::release`] must tell "this thread is
    /// inside a call" from "another thread is", and the owner ids cannot
    /// (a thread in teardown may share one with another thread).
    static CALLS: Cell<*const InCall> = const { Cell::new(std::ptr::null()) };
}

/// Pushes a call on this thread's stack for as long as it lives.
struct Calling<'a>(&'a InCall);

impl<'a> Calling<'a> {
    #[inline]
    fn push(frame: &'a InCall) -> Self {
        CALLS.with(|top| top.set(frame));
        Calling(frame)
    }
}

impl Drop for Calling<'_> {
    #[inline]
    fn drop(&mut self) {
        CALLS.with(|top| top.set(self.0.prev));
    }
}

/// Whether this thread is inside a call of the entry `handle`.
fn in_call(handle: usize) -> bool {
    let mut at = CALLS.with(Cell::get);
    while !at.is_null() {
        // SAFETY: every pointer on the stack is an `InCall` in a live frame
        // of `Pool::call` on this thread: `Calling` pops it before the
        // frame ends (it is dropped on return and on unwind), and the
        // stack is thread-local.
        let frame = unsafe { &*at };
        if frame.handle == handle {
            return true;
        }
        at = frame.prev;
    }
    false
}

/// A handle as the slot word stores it, and back.
fn handle_ptr(word: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(word)
}

/// A fixed set of distinct C function pointers of type `F`, each bound to
/// one slot that a Rust closure can occupy.
///
/// Declare pools with [`static_callbacks!`](crate::static_callbacks); the
/// ready-made ones are in [`pools`](super::pools). See the
/// [module docs](super) for the protocol and its guarantees.
///
/// ```
/// use handle_registry::static_callbacks;
///
/// static_callbacks! {
///     /// Called with a number.
///     static ON_NUMBER: [extern "C" fn(n: i32) -> i32; 2] else -1;
/// }
///
/// let double = ON_NUMBER.acquire(Box::new(|n| n * 2)).unwrap();
/// let f = double.fn_ptr(); // what C gets
/// assert_eq!(f(21), 42);
/// drop(double);
/// assert_eq!(f(21), -1); // the slot is free: the fallback
/// ```
pub struct Pool<F: Signature, const N: usize> {
    name: &'static str,
    /// `FREE`, `RESERVED` or a handle of [`REGISTRY`].
    slots: [AtomicUsize; N],
    /// `fns[i]` is a trampoline that dispatches to slot `i` of this pool.
    fns: [F; N],
    /// Where the next search for a free slot starts.
    cursor: AtomicUsize,
}

impl<F: Signature, const N: usize> Pool<F, N> {
    /// Builds a pool from its trampolines. For
    /// [`static_callbacks!`](crate::static_callbacks) only: `table[i]` must
    /// dispatch to slot `i` of the static being initialised.
    ///
    /// Evaluated at compile time, so its panics are compile errors.
    #[doc(hidden)]
    pub const fn __new(name: &'static str, table: &[F]) -> Self {
        assert!(
            N >= 1 && N <= MAX_POOL_SIZE,
            "a static_callbacks! pool has 1 to 64 slots"
        );
        assert!(table.len() >= N, "the trampoline table is too short");
        let mut fns = [table[0]; N];
        let mut i = 1;
        while i < N {
            fns[i] = table[i];
            i += 1;
        }
        Pool {
            name,
            slots: [const { AtomicUsize::new(FREE) }; N],
            fns,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The name the pool was declared with.
    ///
    /// ```
    /// use handle_registry::static_trampoline::pools::QSORT_COMPARE;
    ///
    /// assert_eq!(QSORT_COMPARE.name(), "QSORT_COMPARE");
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many slots the pool has: at most this many closures can be
    /// bound at once.
    ///
    /// ```
    /// use handle_registry::static_trampoline::pools::NFTW_VISIT;
    ///
    /// assert_eq!(NFTW_VISIT.capacity(), 8);
    /// ```
    pub fn capacity(&self) -> usize {
        N
    }

    /// How many slots are taken right now. Other threads may change it as
    /// soon as it is read: for diagnostics and tests.
    ///
    /// ```
    /// use handle_registry::static_callbacks;
    ///
    /// static_callbacks! {
    ///     /// Ticks.
    ///     static TICK: [extern "C" fn(); 4];
    /// }
    /// let guard = TICK.acquire(Box::new(|| {})).unwrap();
    /// assert_eq!(TICK.in_use(), 1);
    /// drop(guard);
    /// assert_eq!(TICK.in_use(), 0);
    /// ```
    pub fn in_use(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.load(Ordering::Relaxed) != FREE)
            .count()
    }

    /// Binds `callback` to a free slot and returns the guard that owns it;
    /// [`SlotGuard::fn_ptr`] is the plain C function pointer that calls it.
    ///
    /// The closure may be called on any thread C calls from; calls are
    /// serialised (it is borrowed exclusively for each one). Dropping the
    /// guard unbinds it, waiting for calls in flight on other threads; a
    /// panic caught in a call is resumed then. For a closure that borrows
    /// local state, use [`scope`](Pool::scope).
    ///
    /// # Errors
    ///
    /// [`PoolExhausted`] when every slot is taken; `callback` is dropped.
    ///
    /// # Panics
    ///
    /// On the first acquire of the process, if 254 other registries are
    /// alive (see [`Registry::new`]): the pools keep their entries in a
    /// registry of their own. The slot is freed again, and the next
    /// acquire tries once more to create that registry.
    ///
    /// ```
    /// use handle_registry::static_callbacks;
    ///
    /// static_callbacks! {
    ///     /// Exit hooks.
    ///     static AT_EXIT: [extern "C" fn(); 1];
    /// }
    ///
    /// let first = AT_EXIT.acquire(Box::new(|| println!("bye"))).unwrap();
    /// let err = AT_EXIT.acquire(Box::new(|| {})).unwrap_err();
    /// assert_eq!(err.capacity(), 1);
    /// drop(first);
    /// assert!(AT_EXIT.acquire(Box::new(|| {})).is_ok());
    /// ```
    #[track_caller]
    pub fn acquire(
        &'static self,
        callback: Box<F::Closure<'static>>,
    ) -> Result<SlotGuard<F, N>, PoolExhausted> {
        let slot = self.reserve()?;
        // Frees the slot again if `save` panics (registry full).
        struct Unreserve<'a>(&'a AtomicUsize);
        impl Drop for Unreserve<'_> {
            fn drop(&mut self) {
                self.0.store(FREE, Ordering::Release);
            }
        }
        let unreserve = Unreserve(&self.slots[slot]);
        let handle = registry().save(Entry::<F> {
            callback: Some(callback),
            carrier: PanicCarrier::new(),
        }) as usize;
        std::mem::forget(unreserve);
        // Release: a call that reads the handle finds the entry saved.
        self.slots[slot].store(handle, Ordering::Release);
        Ok(SlotGuard {
            pool: self,
            slot,
            handle,
            scoped: false,
        })
    }

    /// Binds `callback`, which may borrow local state, for the duration of
    /// `body`, and gives `body` the C function pointer.
    ///
    /// When `body` returns or unwinds, the closure is unbound, after
    /// waiting for calls in flight on other threads: no call of it runs
    /// after `scope` returns. A panic caught in a call is then resumed
    /// (unless `body` is itself unwinding, whose panic wins).
    ///
    /// # Errors
    ///
    /// [`PoolExhausted`] when every slot is taken; `body` is not run.
    ///
    /// # Panics
    ///
    /// As [`acquire`](Pool::acquire); and resumes the callback's panic.
    ///
    /// ```
    /// use std::ffi::{c_int, c_void};
    /// use handle_registry::static_trampoline::pools::QSORT_COMPARE;
    ///
    /// unsafe extern "C" {
    ///     fn qsort(
    ///         base: *mut c_void,
    ///         n: usize,
    ///         size: usize,
    ///         compare: unsafe extern "C" fn(*const c_void, *const c_void) -> c_int,
    ///     );
    /// }
    ///
    /// let mut v = [3u32, 1, 2];
    /// let mut comparisons = 0;
    /// QSORT_COMPARE
    ///     .scope(
    ///         Box::new(|a, b| {
    ///             comparisons += 1;
    ///             // SAFETY: qsort passes pointers to elements of `v`.
    ///             let (a, b) = unsafe { (*a.cast::<u32>(), *b.cast::<u32>()) };
    ///             a.cmp(&b) as c_int
    ///         }),
    ///         // SAFETY: `v` holds 3 `u32`s, and the comparator is one for them.
    ///         |compare| unsafe { qsort(v.as_mut_ptr().cast(), v.len(), 4, compare) },
    ///     )
    ///     .unwrap();
    /// assert_eq!(v, [1, 2, 3]);
    /// assert!(comparisons >= 2);
    /// ```
    #[track_caller]
    pub fn scope<'a, T>(
        &'static self,
        callback: Box<F::Closure<'a>>,
        body: impl FnOnce(F) -> T,
    ) -> Result<T, PoolExhausted> {
        let callback = ManuallyDrop::new(callback);
        // SAFETY: the two types differ only in a lifetime, so they have the
        // same layout (a fat `Box` with the same vtable). Extending the
        // lifetime is sound because the closure is never used after 'a:
        // the guard below is `scoped`, so releasing it waits for every call
        // in flight and leaves no borrow behind (or aborts), on return and
        // on unwind; the guard never leaves this function, so it cannot be
        // leaked; and the entry sits in the private `REGISTRY`, which only
        // the guard removes. The original is not dropped (ManuallyDrop).
        let callback = unsafe {
            std::mem::transmute_copy::<Box<F::Closure<'a>>, Box<F::Closure<'static>>>(&callback)
        };
        let mut guard = self.acquire(callback)?;
        guard.scoped = true;
        let out = body(guard.fn_ptr());
        if let Err(payload) = guard.try_finish() {
            crate::panic::resume_dropping(payload, out);
        }
        Ok(out)
    }

    /// Calls slot `slot`'s closure with `args`, as trampoline `slot` does
    /// when C calls it: `None` when the slot is free, its closure was
    /// unbound, it is already running on this thread, or a call of it
    /// panicked (now or before).
    ///
    /// ```
    /// use handle_registry::static_callbacks;
    ///
    /// static_callbacks! {
    ///     /// Adds.
    ///     static ADD: [extern "C" fn(a: i32, b: i32) -> i32; 1];
    /// }
    /// assert_eq!(ADD.dispatch(0, (1, 2)), None);
    /// let guard = ADD.acquire(Box::new(|a, b| a + b)).unwrap();
    /// assert_eq!(ADD.dispatch(guard.slot(), (1, 2)), Some(3));
    /// ```
    pub fn dispatch(&self, slot: usize, args: F::Args) -> Option<F::Ret>
    where
        F: SafeSignature,
    {
        self.call(slot, args)
    }

    /// [`dispatch`](Pool::dispatch) for pools of `unsafe extern "C" fn`s.
    ///
    /// # Safety
    ///
    /// `args` must satisfy the contract of the pool's function-pointer
    /// type (what the C library promises its callbacks), which the
    /// closures bound to it rely on.
    ///
    /// ```
    /// use handle_registry::static_callbacks;
    ///
    /// static_callbacks! {
    ///     /// Reads a byte.
    ///     static READ: [unsafe extern "C" fn(p: *const u8) -> u8; 1];
    /// }
    /// // SAFETY: trampolines call it with readable pointers.
    /// let guard = READ.acquire(Box::new(|p| unsafe { *p })).unwrap();
    /// let byte = 7u8;
    /// // SAFETY: `&byte` is readable.
    /// assert_eq!(unsafe { READ.dispatch_unchecked(guard.slot(), (&byte,)) }, Some(7));
    /// ```
    pub unsafe fn dispatch_unchecked(&self, slot: usize, args: F::Args) -> Option<F::Ret> {
        self.call(slot, args)
    }

    /// The C function pointer of slot `slot`, whoever owns it.
    ///
    /// ```
    /// use handle_registry::static_trampoline::pools::QSORT_COMPARE;
    ///
    /// assert!(QSORT_COMPARE.fn_ptr(0).is_some());
    /// assert!(QSORT_COMPARE.fn_ptr(QSORT_COMPARE.capacity()).is_none());
    /// ```
    pub fn fn_ptr(&self, slot: usize) -> Option<F> {
        self.fns.get(slot).copied()
    }

    fn call(&self, slot: usize, args: F::Args) -> Option<F::Ret> {
        let word = self.slots.get(slot)?.load(Ordering::Acquire);
        if word == FREE || word == RESERVED {
            return None;
        }
        // Stale (released meanwhile) or Busy (re-entered on this thread):
        // both are answered with the fallback. The release, which may drop
        // the entry, cannot unwind: see `Entry`'s `Drop`.
        created()?
            .restore_with(handle_ptr(word), |entry: &mut Entry<F>| {
                let frame = InCall {
                    handle: word,
                    prev: CALLS.with(Cell::get),
                };
                // Popped when this closure returns, before the release.
                let _calling = Calling::push(&frame);
                let Entry { callback, carrier } = entry;
                let callback = callback.as_mut()?;
                carrier.catch(|| F::invoke(callback, args))
            })
            .ok()
            .flatten()
    }

    /// Claims a free slot, searching round-robin from the cursor so that a
    /// slot just freed is not systematically the next one handed out.
    fn reserve(&self) -> Result<usize, PoolExhausted> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for k in 0..N {
            let slot = start.wrapping_add(k) % N;
            if self.slots[slot]
                .compare_exchange(FREE, RESERVED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(slot);
            }
        }
        Err(PoolExhausted {
            pool: self.name,
            capacity: N,
        })
    }

    /// Unbinds `slot`'s entry `handle` and frees the slot; returns the
    /// panic caught in its calls, or else the one from the closure's
    /// `Drop`, if any. Waits for calls in flight on other threads. Never
    /// unwinds.
    fn release(&self, slot: usize, handle: usize, scoped: bool) -> Option<Box<dyn Any + Send>> {
        let entry = match created() {
            // Never: a guard's handle was saved in the registry, which
            // therefore exists. The slot is freed all the same.
            None => None,
            Some(registry) if in_call(handle) => {
                // This thread is inside one of the closure's calls (the
                // closure released its own guard): the entry is freed when
                // that call ends. A scoped closure can never get here:
                // `scope` saved the entry after entering, and releases it
                // after `body` ended, so no call of it on this thread can
                // be in progress below either frame. If it did, returning
                // would let a borrow outlive its scope.
                if scoped {
                    std::process::abort();
                }
                let _ = registry.unref(handle_ptr(handle));
                None
            }
            // Every borrow of the entry is another thread's call: wait for
            // it. `reclaim`, not `take`: a thread in thread-local teardown
            // may share this thread's owner id, and `take` would answer
            // `Busy` for its call instead of waiting.
            // `Err` only for a stale handle, and only `release` removes
            // entries, once per guard.
            Some(registry) => registry.reclaim::<Entry<F>>(handle_ptr(handle)).ok(),
        };
        // After the handle went stale: a call that still reads it does
        // nothing, and the next owner's handle differs from it.
        self.slots[slot].store(FREE, Ordering::Release);
        let mut entry = entry?;
        let mut payload = entry.carrier.take();
        let callback = entry.callback.take();
        drop(entry);
        // Outside the entry's catching `Drop`: a panic from the closure's
        // `Drop` reaches the Rust code that released it, as a call's panic
        // does (after it, if both panicked). Caught here rather than let
        // unwind, because the release may run in a guard dropped by an
        // unwind, where a second panic would abort; the guard's `Drop`
        // then drops it as it drops a call's panic.
        if let Err(dropped) = catch_unwind(AssertUnwindSafe(|| drop(callback))) {
            crate::panic::keep_first(&mut payload, dropped);
        }
        payload
    }
}

impl<F: Signature, const N: usize> fmt::Debug for Pool<F, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("capacity", &N)
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// Owns one slot of a [`Pool`] and the closure bound to it.
///
/// [`fn_ptr`](SlotGuard::fn_ptr) is what C gets. Dropping the guard (or
/// [`finish`](SlotGuard::finish)) unbinds the closure, waiting for calls in
/// flight on other threads, frees the slot, and resumes a panic caught in
/// a call, or else one from the closure's `Drop` (unless this thread is
/// already panicking: the panic is then dropped, never a double-panic
/// abort). The closure may drop its own guard during a call: the slot is
/// freed at once and the closure when that call returns, and a panic
/// after that point is dropped, since no guard is left to resume it.
/// A guard passed to `mem::forget` keeps its slot bound for good.
///
/// ```
/// use handle_registry::static_callbacks;
///
/// static_callbacks! {
///     /// Visits a number.
///     static VISIT: [extern "C" fn(n: i32); _];
/// }
///
/// use std::sync::{Arc, Mutex};
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let guard = VISIT.acquire(Box::new(move |n| sink.lock().unwrap().push(n))).unwrap();
/// let visit = guard.fn_ptr();
/// visit(1);
/// visit(2);
/// guard.finish();
/// assert_eq!(*seen.lock().unwrap(), [1, 2]);
/// ```
pub struct SlotGuard<F: Signature, const N: usize> {
    pool: &'static Pool<F, N>,
    slot: usize,
    handle: usize,
    /// Made by [`Pool::scope`]: the closure may borrow, so releasing must
    /// never leave it reachable.
    scoped: bool,
}

impl<F: Signature, const N: usize> SlotGuard<F, N> {
    /// The C function pointer that calls this guard's closure.
    ///
    /// Copy it freely; after the guard is gone a call through it returns
    /// the pool's fallback, or reaches whichever closure owns the slot by
    /// then (see the [module docs](super#what-is-guaranteed)).
    ///
    /// ```
    /// use std::ffi::{c_int, c_void};
    /// use handle_registry::static_trampoline::pools::QSORT_COMPARE;
    ///
    /// let guard = QSORT_COMPARE.acquire(Box::new(|_a, _b| 0)).unwrap();
    /// let compare: unsafe extern "C" fn(*const c_void, *const c_void) -> c_int = guard.fn_ptr();
    /// // SAFETY: the closure reads neither pointer.
    /// assert_eq!(unsafe { compare(std::ptr::null(), std::ptr::null()) }, 0);
    /// ```
    pub fn fn_ptr(&self) -> F {
        self.pool.fns[self.slot]
    }

    /// Which slot of the pool this guard owns.
    ///
    /// ```
    /// use handle_registry::static_trampoline::pools::QSORT_COMPARE;
    ///
    /// let guard = QSORT_COMPARE.acquire(Box::new(|_a, _b| 0)).unwrap();
    /// let slot_fn = QSORT_COMPARE.fn_ptr(guard.slot()).unwrap();
    /// assert_eq!(slot_fn as usize, guard.fn_ptr() as usize);
    /// ```
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The pool the slot belongs to.
    ///
    /// ```
    /// use handle_registry::static_trampoline::pools::QSORT_COMPARE;
    ///
    /// let guard = QSORT_COMPARE.acquire(Box::new(|_a, _b| 0)).unwrap();
    /// assert!(std::ptr::eq(guard.pool(), &QSORT_COMPARE));
    /// ```
    pub fn pool(&self) -> &'static Pool<F, N> {
        self.pool
    }

    /// Unbinds the closure and frees the slot, then resumes the panic
    /// caught in a call, if any. The same as dropping the guard, spelled
    /// out at the point where C is done with the function pointer.
    ///
    /// ```should_panic
    /// use handle_registry::static_callbacks;
    ///
    /// static_callbacks! {
    ///     /// Checks.
    ///     static CHECK: [extern "C" fn(ok: bool); _];
    /// }
    /// let guard = CHECK.acquire(Box::new(|ok| assert!(ok))).unwrap();
    /// (guard.fn_ptr())(false); // caught: C is not unwound through
    /// guard.finish(); // panics with the assertion's message
    /// ```
    pub fn finish(self) {
        if let Err(payload) = self.try_finish() {
            resume_unwind(payload);
        }
    }

    /// Unbinds the closure and frees the slot, and returns the panic caught
    /// in a call as an error, on whatever thread the call ran; or else the
    /// panic from the closure's `Drop`, if it panicked when unbound.
    ///
    /// ```
    /// use handle_registry::{panic::message, static_callbacks};
    ///
    /// static_callbacks! {
    ///     /// Checks.
    ///     static CHECK: [extern "C" fn(ok: bool) -> bool; _] else false;
    /// }
    /// let guard = CHECK.acquire(Box::new(|ok| { assert!(ok, "not ok"); true })).unwrap();
    /// let check = guard.fn_ptr();
    /// assert!(check(true));
    /// std::thread::spawn(move || assert!(!check(false))).join().unwrap();
    /// assert!(!check(true)); // skipped after the panic: the fallback
    /// let payload = guard.try_finish().unwrap_err();
    /// assert_eq!(message(&*payload), Some("not ok"));
    /// ```
    pub fn try_finish(self) -> Result<(), Box<dyn Any + Send>> {
        let this = ManuallyDrop::new(self);
        match this.pool.release(this.slot, this.handle, this.scoped) {
            Some(payload) => Err(payload),
            None => Ok(()),
        }
    }
}

impl<F: Signature, const N: usize> Drop for SlotGuard<F, N> {
    fn drop(&mut self) {
        let payload = self.pool.release(self.slot, self.handle, self.scoped);
        if let Some(payload) = payload {
            crate::panic::resume_unless_unwinding(payload);
        }
    }
}

impl<F: Signature, const N: usize> fmt::Debug for SlotGuard<F, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuard")
            .field("pool", &self.pool.name)
            .field("slot", &self.slot)
            .finish()
    }
}

/// Every slot of a pool is taken: returned by [`Pool::acquire`] and
/// [`Pool::scope`].
///
/// ```
/// use handle_registry::static_callbacks;
///
/// static_callbacks! {
///     /// One at a time.
///     static ONLY: [extern "C" fn(); 1];
/// }
/// let _held = ONLY.acquire(Box::new(|| {})).unwrap();
/// let err = ONLY.acquire(Box::new(|| {})).unwrap_err();
/// assert_eq!(err.pool(), "ONLY");
/// assert_eq!(
///     err.to_string(),
///     "static trampoline pool `ONLY` is exhausted: all 1 slots are in use"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolExhausted {
    pool: &'static str,
    capacity: usize,
}

impl PoolExhausted {
    /// The name of the exhausted pool.
    ///
    /// ```
    /// use handle_registry::static_callbacks;
    ///
    /// static_callbacks! {
    ///     /// One at a time.
    ///     static SOLO: [extern "C" fn(); 1];
    /// }
    /// let _held = SOLO.acquire(Box::new(|| {})).unwrap();
    /// assert_eq!(SOLO.acquire(Box::new(|| {})).unwrap_err().pool(), "SOLO");
    /// ```
    pub fn pool(&self) -> &'static str {
        self.pool
    }

    /// How many slots the pool has, all of them taken.
    ///
    /// ```
    /// use handle_registry::static_callbacks;
    ///
    /// static_callbacks! {
    ///     /// Two at a time.
    ///     static PAIR: [extern "C" fn(); 2];
    /// }
    /// let _a = PAIR.acquire(Box::new(|| {})).unwrap();
    /// let _b = PAIR.acquire(Box::new(|| {})).unwrap();
    /// assert_eq!(PAIR.acquire(Box::new(|| {})).unwrap_err().capacity(), 2);
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Display for PoolExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "static trampoline pool `{}` is exhausted: all {} slots are in use",
            self.pool, self.capacity
        )
    }
}

impl std::error::Error for PoolExhausted {}
