//! Lending borrowed state to the callbacks of one synchronous C call.
//!
//! Most C APIs with `user_data` call back before the registering call
//! returns (`qsort_r`, `sqlite3_exec`, expat's `XML_Parse`). There the
//! state need not be moved into the registry at all: a scope saves a
//! *pointer* to the caller's state for the duration of the call, and the
//! handle is stale the moment the call returns. So the state may borrow
//! locals, and need not be `Send` when every callback comes on the calling
//! thread.
//!
//! | form | state | callbacks reach it with | from |
//! |---|---|---|---|
//! | [`Registry::scope`] | `&mut S`, `S: Any` (not `Send`) | [`with`](Registry::with) | the calling thread; others get [`Error::WrongThread`] |
//! | [`Registry::scope_fn`] | a closure `FnMut(A) -> O`, may borrow locals | [`call`](Registry::call) | the calling thread; others get `WrongThread` |
//! | [`Registry::scope_send`] | `&mut S`, `S: Any + Send` | `with` (exclusive, waits) | any thread |
//! | [`Registry::scope_sync`] | `&S`, `S: Any + Sync` | [`with_ref`](Registry::with_ref) (shared) | any thread |
//!
//! # Guarantees
//!
//! * When the scope returns, no callback can reach the state any more: a
//!   late call answers [`Error::Stale`]. For the forms that admit other
//!   threads, the scope first waits for callbacks still running there.
//! * A panic in `with`, `with_ref` or `call` is caught before it can unwind
//!   into C (the callback gets [`Error::Panicked`] and should return a
//!   neutral value); later callbacks of the same scope are skipped with
//!   `Panicked`, and the scope resumes the panic when it returns.
//! * The calling-thread forms keep their handle borrowed for the whole
//!   call, like [`Registry::lend`], so a callback is served from that
//!   borrow, as a lent `restore` is, with no atomic read-modify-write. The
//!   handle is published already borrowed and marked pinned: another
//!   thread, even one that guessed the integer, never reaches a value that
//!   is not `Send`.
//!
//! # How
//!
//! The registry holds a small record: the state's pointer and an `Arc` to
//! the scope's end (the panic carrier, and a flag the record's `Drop`
//! raises). Ending a scope removes the record (waiting for other threads'
//! borrows where they are admitted); if C removed it first (an `unref` as
//! destroy-notify), the record is dropped by its last borrower instead, and
//! the scope waits for that flag. Either way the state's borrow ends only
//! after the registry dropped its last pointer to it.
//!
//! The calling-thread forms push a lend record (see [`lend`](crate::lend))
//! for their handle, whose type check was made once, when the record was
//! saved. A callback on the calling thread claims that record (when it is
//! the innermost one: a thread-local read, a few comparisons and one plain
//! load of the slot's state word, which must be exactly the word the
//! scope's borrow set: generation, `LIVE`, `EXCL`, `PINNED` and this
//! thread's owner id), runs `f` under `catch_unwind`, and gives the claim
//! back: no atomic read-modify-write, no guard. A callback that panics
//! *poisons* the record instead, so the callbacks after it answer
//! `Panicked` from the record's flag without reading the panic carrier;
//! the carrier still gets the payload, and the scope resumes it. Only the
//! calling thread ever touches the record (other threads are refused by
//! `PINNED` before they could look for one), so its flag is a plain `Cell`.

use std::any::{Any, TypeId};
use std::ffi::c_void;
use std::sync::Arc;
use std::thread::Thread;

use crate::lend::Frame;
use crate::panic::PanicCarrier;
use crate::sync::atomic::Ordering;
use crate::sync::unmodelled::AtomicBool;
use crate::{Error, Registry};

/// What a scope's handle holds for exclusive access.
struct Scoped<S: ?Sized> {
    state: *mut S,
    end: Arc<End>,
}

/// What a scope's handle holds for shared access.
struct SharedScoped<S: ?Sized> {
    state: *const S,
    end: Arc<End>,
}

// SAFETY: a `Scoped<S>` is reached on another thread only when `S: Send`
// (`scope_send`); the calling-thread forms pin their handle to the calling
// thread (see the module notes), and their record is dropped there too.
// The record's own fields besides the pointer are `Send`.
unsafe impl<S: ?Sized> Send for Scoped<S> {}
// SAFETY: it hands out `&S` to several threads, which `S: Sync` permits.
unsafe impl<S: ?Sized + Sync> Send for SharedScoped<S> {}
// SAFETY: as above.
unsafe impl<S: ?Sized + Sync> Sync for SharedScoped<S> {}

/// The part of a scope that outlives the record.
struct End {
    carrier: PanicCarrier,
    dropped: AtomicBool,
    owner: Thread,
}

impl End {
    fn new() -> Arc<End> {
        Arc::new(End {
            carrier: PanicCarrier::new(),
            dropped: AtomicBool::new(false),
            owner: std::thread::current(),
        })
    }

    /// The record holding `end` is gone: tell the scope.
    fn signal(end: &End) {
        let owner = end.owner.clone();
        end.dropped.store(true, Ordering::Release);
        if owner.id() != std::thread::current().id() {
            owner.unpark();
        }
    }

    /// Waits until the registry dropped the record.
    fn wait(&self) {
        while !self.dropped.load(Ordering::Acquire) {
            std::thread::park();
        }
    }
}

impl<S: ?Sized> Drop for Scoped<S> {
    fn drop(&mut self) {
        End::signal(&self.end);
    }
}

impl<S: ?Sized> Drop for SharedScoped<S> {
    fn drop(&mut self) {
        End::signal(&self.end);
    }
}

/// A scope's handle must never outlive it. Reaching this means a borrow
/// of the record escaped its callback, which the API does not allow; the
/// state's borrow is about to end, so nothing safe is left to do.
#[cold]
fn escaped() -> ! {
    // Not `eprintln!`: it panics when stderr cannot be written, and an
    // unwind from here would end the scope with the borrow still out.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"handle_registry: a scope's handle is still borrowed when the scope ends\n",
    );
    std::process::abort()
}

impl Registry {
    /// Runs `body` with a handle to `state`, for a synchronous C call whose
    /// callbacks come on this thread; they reach the state with
    /// [`with`](Registry::with).
    ///
    /// `state` may be any `'static` type, `Send` or not (an `Rc`, a
    /// `RefCell`); for closures that borrow locals use
    /// [`scope_fn`](Registry::scope_fn). A callback from another thread
    /// gets [`Error::WrongThread`], a call after the scope
    /// [`Error::Stale`]. A panic caught by `with` is resumed here. Fails
    /// without running `body` only when the registry is full, or with
    /// [`Error::Busy`] on a thread without an owner id (see `Busy`).
    ///
    /// ```
    /// use std::rc::Rc;
    /// use handle_registry::Registry;
    ///
    /// let mut seen: Vec<i32> = Vec::new(); // a local, borrowed for the call
    /// let r = Registry::global();
    /// // `c_call` stands for a C function that calls back synchronously.
    /// let c_call = |user_data| {
    ///     for i in 0..3 {
    ///         r.with(user_data, |seen: &mut Vec<i32>| seen.push(i)).unwrap();
    ///     }
    /// };
    /// let user_data = r.scope(&mut seen, |user_data| {
    ///     c_call(user_data);
    ///     user_data
    /// }).unwrap();
    /// assert_eq!(seen, [0, 1, 2]);
    /// // The handle is stale once the scope returned.
    /// assert!(r.with(user_data, |_: &mut Vec<i32>| ()).is_err());
    ///
    /// // Not `Send` is fine too.
    /// let mut shared = Rc::new(5);
    /// r.scope(&mut shared, |p| r.with(p, |rc: &mut Rc<i32>| **rc + 1)).unwrap().unwrap();
    /// ```
    #[track_caller]
    pub fn scope<S: Any, R>(
        &self,
        state: &mut S,
        body: impl FnOnce(*mut c_void) -> R,
    ) -> Result<R, Error> {
        let end = End::new();
        let record = Scoped {
            state: state as *mut S,
            end: end.clone(),
        };
        self.run_pinned(record, end, body)
    }

    /// Runs `body` with a handle to the closure `f`, for a synchronous C
    /// call whose callbacks come on this thread; they run it with
    /// [`call`](Registry::call).
    ///
    /// `f` may borrow locals and need not be `Send`: the closure takes one
    /// argument (a tuple when C passes several) and its argument and result
    /// types must be `'static` (C values: numbers, raw pointers). The rest
    /// is as for [`scope`](Registry::scope).
    ///
    /// ```
    /// use std::ffi::{c_int, c_void};
    /// use handle_registry::Registry;
    ///
    /// // What a C library would call, with `user_data` last.
    /// unsafe extern "C" fn trampoline(a: c_int, b: c_int, user_data: *mut c_void) -> c_int {
    ///     Registry::global().call(user_data, (a, b)).unwrap_or(0)
    /// }
    ///
    /// let mut calls = Vec::new(); // borrowed by the closure
    /// let mut add = |(a, b): (c_int, c_int)| {
    ///     calls.push((a, b));
    ///     a + b
    /// };
    /// let sum = Registry::global()
    ///     // SAFETY: stands for passing `trampoline` and `user_data` to C.
    ///     .scope_fn(&mut add, |user_data| unsafe { trampoline(2, 3, user_data) })
    ///     .unwrap();
    /// assert_eq!(sum, 5);
    /// assert_eq!(calls, [(2, 3)]);
    /// ```
    #[track_caller]
    pub fn scope_fn<A: 'static, O: 'static, R>(
        &self,
        f: &mut impl FnMut(A) -> O,
        body: impl FnOnce(*mut c_void) -> R,
    ) -> Result<R, Error> {
        let f: &mut (dyn FnMut(A) -> O + '_) = f;
        let f: *mut (dyn FnMut(A) -> O + '_) = f;
        // SAFETY: only the trait object's lifetime bound changes; the
        // layout of the fat pointer is the same. The registry reaches `f`
        // only through `call` on this thread while this scope runs (the
        // record is pinned, and removed before this function returns), and
        // `call` neither stores `f` nor lets any borrowed data out (its
        // argument and result types are `'static`).
        let f: *mut (dyn FnMut(A) -> O + 'static) = unsafe { std::mem::transmute(f) };
        let end = End::new();
        let record = Scoped {
            state: f,
            end: end.clone(),
        };
        self.run_pinned(record, end, body)
    }

    /// Runs `body` with a handle to `state`, for a C call whose callbacks
    /// may come on any thread while it runs; they reach the state with
    /// [`with`](Registry::with), one at a time (another thread's call waits,
    /// as for [`restore`](Registry::restore)).
    ///
    /// Before returning, the scope waits for callbacks still running on
    /// other threads. Callbacks on this thread pay a plain `restore`.
    ///
    /// ```
    /// use handle_registry::Registry;
    ///
    /// let r = Registry::global();
    /// let mut total = 0u64;
    /// r.scope_send(&mut total, |user_data| {
    ///     let user_data = user_data as usize; // a `void*` is not `Send`
    ///     std::thread::scope(|s| {
    ///         for i in 1..=4 {
    ///             s.spawn(move || {
    ///                 let p = std::ptr::without_provenance_mut(user_data);
    ///                 r.with(p, |t: &mut u64| *t += i).unwrap();
    ///             });
    ///         }
    ///     });
    /// })
    /// .unwrap();
    /// assert_eq!(total, 10);
    /// ```
    #[track_caller]
    pub fn scope_send<S: Any + Send, R>(
        &self,
        state: &mut S,
        body: impl FnOnce(*mut c_void) -> R,
    ) -> Result<R, Error> {
        let end = End::new();
        let record = Scoped {
            state: state as *mut S,
            end: end.clone(),
        };
        self.run_shared(record, end, body)
    }

    /// Runs `body` with a handle to `state`, for a C call whose callbacks
    /// may come from several threads at once; they read it with
    /// [`with_ref`](Registry::with_ref) without waiting for each other.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use handle_registry::Registry;
    ///
    /// let r = Registry::global();
    /// let hits = AtomicU32::new(0);
    /// r.scope_sync(&hits, |user_data| {
    ///     let user_data = user_data as usize;
    ///     std::thread::scope(|s| {
    ///         for _ in 0..4 {
    ///             s.spawn(move || {
    ///                 let p = std::ptr::without_provenance_mut(user_data);
    ///                 r.with_ref(p, |h: &AtomicU32| h.fetch_add(1, Ordering::Relaxed)).unwrap();
    ///             });
    ///         }
    ///     });
    /// })
    /// .unwrap();
    /// assert_eq!(hits.into_inner(), 4);
    /// ```
    #[track_caller]
    pub fn scope_sync<S: Any + Sync, R>(
        &self,
        state: &S,
        body: impl FnOnce(*mut c_void) -> R,
    ) -> Result<R, Error> {
        let end = End::new();
        let record = SharedScoped {
            state: state as *const S,
            end: end.clone(),
        };
        self.run_shared(record, end, body)
    }

    /// Runs `f` on the state lent by [`scope`](Registry::scope) or
    /// [`scope_send`](Registry::scope_send), from a callback.
    ///
    /// Errors: the usual handle errors ([`Error::Stale`] after the scope,
    /// [`Error::WrongType`] for another `S`, [`Error::Busy`] when called
    /// inside itself), [`Error::WrongThread`] from another thread of a
    /// `scope`, and [`Error::Panicked`] when `f` panicked (now or in an
    /// earlier callback of the scope). `f` never unwinds out of `with`.
    /// Every error is counted in [`failures`](Registry::failures). A scope's
    /// handle holds a record of the crate's, so `WrongType` names it as
    /// `Scoped<S>` (or `SharedScoped<S>`) for the `S` that was lent.
    ///
    /// ```
    /// let r = handle_registry::Registry::global();
    /// let mut n = 1;
    /// r.scope(&mut n, |p| r.with(p, |n: &mut i32| *n *= 7)).unwrap().unwrap();
    /// assert_eq!(n, 7);
    /// ```
    pub fn with<S: Any, O>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce(&mut S) -> O,
    ) -> Result<O, Error> {
        self.reach(ptr, f)
    }

    /// [`with`](Registry::with) for sized and unsized state alike.
    ///
    /// A pinned scope's callback on its own thread is served by the
    /// scope's lend record (see [`lend`](crate::lend)): when that record
    /// is the innermost one, a thread-local read, a few comparisons, one
    /// plain load of the slot's state word and a flag set. The panic
    /// check costs nothing more: a callback that panics *poisons* the
    /// record, and the claims that follow answer `Panicked`.
    #[inline(always)]
    fn reach<S: ?Sized + 'static, O>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce(&mut S) -> O,
    ) -> Result<O, Error> {
        match crate::lend::claim_innermost::<Scoped<S>>(self, ptr) {
            // SAFETY: just claimed on this thread.
            Some(Ok(claim)) => unsafe { self.run_lent(&claim, ptr, f) },
            _ => self.reach_cold(ptr, f),
        }
    }

    /// `reach` when the innermost lend does not serve `ptr`: everything
    /// but the common case, out of line and in one call. Being the last
    /// thing `reach` does, that call leaves the inlined fast path nothing
    /// to keep in callee-saved registers, so a trampoline pushes none
    /// (41 → 36 instructions per `scope` callback through C,
    /// `benches/instructions.sh`).
    #[cold]
    #[inline(never)]
    fn reach_cold<S: ?Sized + 'static, O>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce(&mut S) -> O,
    ) -> Result<O, Error> {
        match crate::lend::claim_slow::<Scoped<S>>(self, ptr) {
            // SAFETY: just claimed on this thread.
            Some(Ok(claim)) => unsafe { self.run_lent(&claim, ptr, f) },
            Some(Err(Error::Panicked)) => {
                Err(refuse(self.panicked(ptr, std::any::type_name::<S>()), f))
            }
            Some(Err(e)) => Err(refuse(
                self.refused(ptr, e, std::any::type_name::<Scoped<S>>()),
                f,
            )),
            None => self.reach_unlent(ptr, f),
        }
    }

    /// Runs a callback on the state of a scope whose record the caller
    /// claimed from its lend.
    ///
    /// # Safety
    /// `claim` was made on this thread, for a `Scoped<S>`, and not given
    /// back; it is given back (or poisoned) here.
    #[inline(always)]
    unsafe fn run_lent<S: ?Sized + 'static, O>(
        &self,
        claim: &crate::lend::Claim<'_>,
        ptr: *mut c_void,
        f: impl FnOnce(&mut S) -> O,
    ) -> Result<O, Error> {
        // SAFETY: the lend holds the exclusive borrow of a slot holding a
        // `Scoped<S>` (the claim checked the type), and the claim makes us
        // its only user on this thread; other threads never reach a
        // borrowed slot's value. The record stays in the slot until the
        // scope ends, which is after we return (an `unref` meanwhile only
        // orphans it).
        let record = unsafe { &*claim.slot.value_ptr::<Scoped<S>>() };
        let state = record.state;
        // SAFETY: the scope keeps `state` borrowed while its record is in
        // the registry, and our claim on the record's borrow makes this the
        // only access (on this thread: the record is pinned, or `S: Send`).
        let run = || f(unsafe { &mut *state });
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(out) => {
                // SAFETY: per the caller; `f` has returned, and every lend
                // it made has ended, so ours is active still.
                unsafe { claim.give_back() };
                Ok(out)
            }
            Err(payload) => {
                record.end.carrier.keep(payload);
                // SAFETY: as above.
                unsafe { claim.poison() };
                Err(self.panicked(ptr, std::any::type_name::<S>()))
            }
        }
    }

    /// `reach` of a handle no lend on this thread serves: a scope of
    /// another thread (`WrongThread`), a `scope_send`, a stale handle.
    #[inline(never)]
    fn reach_unlent<S: ?Sized + 'static, O>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce(&mut S) -> O,
    ) -> Result<O, Error> {
        let record = match self.restore::<Scoped<S>>(ptr) {
            Ok(record) => record,
            Err(e) => return Err(refuse(e, f)),
        };
        let state = record.state;
        // SAFETY: the scope keeps `state` borrowed while its record is in
        // the registry, and our exclusive borrow of the record makes this
        // the only access (on another thread only for `scope_send`, where
        // `S: Send`).
        let run = || f(unsafe { &mut *state });
        match record.end.carrier.catch(run) {
            Some(out) => Ok(out),
            None => Err(self.panicked(ptr, std::any::type_name::<S>())),
        }
    }

    /// Runs `f` on the state lent by [`scope_sync`](Registry::scope_sync),
    /// from a callback on any thread, alongside other readers.
    ///
    /// Errors as for [`with`](Registry::with), with two differences: a
    /// `with_ref` inside another `with_ref` of the same handle is served,
    /// not [`Error::Busy`], since both borrows are shared; and on the
    /// thread of a [`scope`](Registry::scope) or
    /// [`scope_fn`](Registry::scope_fn), whose borrow is exclusive,
    /// `with_ref` of its handle is `Busy` whatever `S` is (this thread's
    /// borrow is checked before the type).
    ///
    /// ```
    /// let r = handle_registry::Registry::global();
    /// let name = String::from("config");
    /// let len = r.scope_sync(&name, |p| r.with_ref(p, |s: &String| s.len())).unwrap();
    /// assert_eq!(len, Ok(6));
    /// ```
    pub fn with_ref<S: Any + Sync, O>(
        &self,
        ptr: *mut c_void,
        f: impl FnOnce(&S) -> O,
    ) -> Result<O, Error> {
        let record = match self.restore_ref::<SharedScoped<S>>(ptr) {
            Ok(record) => record,
            Err(e) => return Err(refuse(e, f)),
        };
        let state = record.state;
        // SAFETY: the scope keeps `state` borrowed while its record is in
        // the registry; every access through it is shared and `S: Sync`.
        let run = || f(unsafe { &*state });
        match record.end.carrier.catch(run) {
            Some(out) => Ok(out),
            None => Err(self.panicked(ptr, std::any::type_name::<S>())),
        }
    }

    /// Calls the closure lent by [`scope_fn`](Registry::scope_fn) with
    /// `args`, from a callback on the scope's thread.
    ///
    /// Errors as for [`with`](Registry::with). The closure's argument and
    /// result types are part of the type check, and `A` and `O` are
    /// usually inferred here: a trampoline whose `call` infers `c_int`
    /// for a closure that returns `i64` compiles, and every call answers
    /// `WrongType` (counted in [`failures`](Registry::failures)). Name them
    /// (`call::<(c_int, c_int), c_int>`) when in doubt.
    ///
    /// ```
    /// let r = handle_registry::Registry::global();
    /// let mut double = |x: i32| x * 2;
    /// let out = r.scope_fn(&mut double, |p| r.call::<i32, i32>(p, 21)).unwrap();
    /// assert_eq!(out, Ok(42));
    /// ```
    pub fn call<A: 'static, O: 'static>(&self, ptr: *mut c_void, args: A) -> Result<O, Error> {
        self.reach(ptr, |f: &mut (dyn FnMut(A) -> O + 'static)| f(args))
    }

    /// Counts a callback refused because the scope's callbacks panicked.
    #[cold]
    fn panicked(&self, ptr: *mut c_void, expected: &'static str) -> Error {
        self.failure_log().note(ptr, Error::Panicked, expected);
        Error::Panicked
    }

    /// Saves `record` pinned and borrowed, lends it to this thread for
    /// `body`, then removes it.
    #[track_caller]
    fn run_pinned<S: ?Sized + 'static, R>(
        &self,
        record: Scoped<S>,
        end: Arc<End>,
        body: impl FnOnce(*mut c_void) -> R,
    ) -> Result<R, Error> {
        let (ptr, slot, locked) = self.save_borrowed(record, true)?;
        let frame = Frame::new(self, ptr, slot, locked, TypeId::of::<Scoped<S>>());
        /// Ends the scope however `body` ends.
        struct Finish<'a> {
            registry: &'a Registry,
            frame: &'a Frame,
            end: &'a End,
        }
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.frame.pop();
                if self.frame.in_use() {
                    escaped();
                }
                let (ptr, slot, locked) = self.frame.borrow();
                // SAFETY: the frame holds the exclusive borrow that
                // `save_borrowed` took, and no guard from it is alive.
                unsafe { self.registry.vacate(ptr, slot, locked) };
                self.end.wait();
            }
        }
        frame.push();
        let finish = Finish {
            registry: self,
            frame: &frame,
            end: &end,
        };
        let out = body(ptr);
        drop(finish);
        Ok(out_or_resume(&end, out))
    }

    /// Saves `record` unborrowed for `body`, then waits for other threads'
    /// borrows and removes it.
    #[track_caller]
    fn run_shared<V: Any + Send, R>(
        &self,
        record: V,
        end: Arc<End>,
        body: impl FnOnce(*mut c_void) -> R,
    ) -> Result<R, Error> {
        let ptr = self.try_save(record).map_err(|(e, _)| e)?;
        /// Ends the scope however `body` ends.
        struct Finish<'a, V: Any + Send> {
            registry: &'a Registry,
            ptr: *mut c_void,
            end: &'a End,
            _record: std::marker::PhantomData<V>,
        }
        impl<V: Any + Send> Drop for Finish<'_, V> {
            fn drop(&mut self) {
                // The body has returned, so this thread holds no borrow of
                // the record (callbacks borrow it only while they run):
                // every borrow left is another thread's, and we wait for it.
                match self.registry.reclaim::<V>(self.ptr) {
                    Ok(record) => drop(record),
                    // C removed it (destroy-notify): its last borrower drops it.
                    Err(Error::Stale) => {}
                    Err(_) => escaped(),
                }
                self.end.wait();
            }
        }
        let finish = Finish::<V> {
            registry: self,
            ptr,
            end: &end,
            _record: std::marker::PhantomData,
        };
        let out = body(ptr);
        drop(finish);
        Ok(out_or_resume(&end, out))
    }
}

/// Drops a callback's closure (and what it captured, such as `call`'s
/// arguments) that will not run, without letting a panic in that drop
/// unwind into C.
#[cold]
fn refuse<F>(error: Error, f: F) -> Error {
    crate::panic::catch_quietly(|| drop(f));
    error
}

/// The body's result, or, when a callback of the scope that just ended
/// panicked, that panic resumed (the result dropped first).
fn out_or_resume<R>(end: &End, out: R) -> R {
    if let Some(payload) = end.carrier.take() {
        crate::panic::resume_dropping(payload, out);
    }
    out
}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod tests;
