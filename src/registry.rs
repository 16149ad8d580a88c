//! The registry: a `slab` of cells behind one `parking_lot` lock.
//!
//! # Concurrency protocol
//!
//! Read this before the code; everything below follows from it.
//!
//! 1. **A shard's lock guards lookups, never user code.** A registry is 16
//!    shards, each a slab behind its own `RwLock`; a handle
//!    names its shard. `save`, `take` and `unref` take that lock for
//!    writing, `restore`/`restore_ref` for reading.
//!    It is held only to decode a handle, check its generation and type,
//!    and attempt one compare-exchange on the cell's borrow word (see
//!    [`cell`](crate::cell)). Values are dropped, and guards used, with no
//!    lock held, so code running inside a callback may save, restore, take
//!    and unref other handles, or start a nested traversal.
//! 2. **Borrows live in the cell, not in the table.** A cell is a separate
//!    heap allocation, so its address outlives the lock and survives the
//!    slab growing. A guard releases its borrow with one atomic operation.
//! 3. **Waiting never holds a reference.** When another thread holds a
//!    conflicting borrow, the caller takes the registry's `wait_lock`, sets
//!    the cell's `WAITING` bit (while still under the shard's lock, so the
//!    cell is alive), drops that lock and parks on `wake`. Releasers
//!    that see `WAITING` take `wait_lock` and wake everyone. Woken threads
//!    redo the whole lookup, so a value removed meanwhile answers `Stale`.
//!    Lock order is `wait_lock` → shard; releasers hold no shard lock.
//! 4. **Removal hands the cell over.** `unref` takes the cell out of the
//!    slab and bumps the slot's generation under the write lock, so no new
//!    borrow can find it. Then, lock-free: if nobody borrows it the
//!    remover frees it; otherwise it marks it `ORPHANED` and the last
//!    borrower frees it when its guard drops, on that guard's thread.
//!    `take` needs the value itself, so it waits for other threads'
//!    borrows to end (and refuses with `Busy` when the borrow is its own).
//! 5. **A panicking `Drop` cannot corrupt anything**: by the time a value is
//!    dropped, the table and the borrow word already say it is gone.

use std::any::Any;
use std::ffi::c_void;
use std::fmt;
use std::panic::Location;
use std::ptr::NonNull;

use once_cell::sync::Lazy;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::cell::{self, Blocked, Cell, Header, EXCLUSIVE, ORPHANED, READER, WAITING};
use crate::handle::{self, Layout};
use crate::table::{Place, Shard, Table, SHARDS};
use crate::{thread, Error, Guard, Handle, SharedGuard};

const LAYOUT: Layout = Layout::NATIVE;
const GLOBAL_ID: u32 = 1;

/// A set of saved values, each reachable through an opaque handle.
///
/// Most programs use the process-wide [`Registry::global`] through the free
/// functions ([`save`](crate::save), [`restore`](crate::restore), …). A
/// crate that wraps a C library may want its own registry, so that handles
/// from other libraries are refused with [`Error::WrongRegistry`] and its
/// [`leak_report`](Registry::leak_report) lists only its own values: keep
/// it in a `static`.
///
/// ```
/// use handle_registry::{Error, Registry};
/// use once_cell::sync::Lazy;
///
/// static MY_LIB: Lazy<Registry> = Lazy::new(Registry::new);
///
/// let p = MY_LIB.save(vec![1, 2, 3]);
/// MY_LIB.restore::<Vec<i32>>(p).unwrap().push(4);
/// assert_eq!(MY_LIB.take::<Vec<i32>>(p).unwrap(), [1, 2, 3, 4]);
/// // The global registry does not know this handle.
/// assert_eq!(handle_registry::unref(p), Err(Error::WrongRegistry));
/// ```
pub struct Registry {
    id: u32,
    shards: Box<[Shard]>,
    /// Serialises parking, see protocol step 3.
    wait_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: the registry owns its cells, whose values are all `Send`: moving
// the registry to another thread moves those values, which `Send` permits.
unsafe impl Send for Registry {}
// SAFETY: shared use hands out `&mut T` to one thread at a time (the
// borrow word is the lock; `T: Send` suffices, as for `Mutex<T>`), and
// `&T` to several threads only through `restore_ref`, which requires
// `T: Sync`. Values may be dropped on any thread, which `Send` permits.
unsafe impl Sync for Registry {}

/// Registry ids that may be handed out, with the generation they start at.
struct IdPool {
    free: Vec<(u32, u32)>,
    next: u32,
}

static IDS: Mutex<IdPool> = parking_lot::const_mutex(IdPool {
    free: Vec::new(),
    next: GLOBAL_ID + 1,
});

/// One step of an operation that may have to wait for a borrow to end.
enum Step<R> {
    Done(Result<R, Error>),
    /// Blocked by another thread; `WAITING` is set (or the caller has not
    /// tried to set it yet).
    Park,
    /// The borrow word moved while setting `WAITING`: try again at once.
    Again,
}

impl Registry {
    /// The process-wide registry used by [`save`](crate::save),
    /// [`restore`](crate::restore) and the other free functions.
    ///
    /// ```
    /// use handle_registry::Registry;
    ///
    /// let p = Registry::global().save("hello");
    /// assert_eq!(*handle_registry::restore::<&str>(p).unwrap(), "hello");
    /// Registry::global().unref(p).unwrap();
    /// ```
    #[inline]
    pub fn global() -> &'static Registry {
        static GLOBAL: Lazy<Registry> = Lazy::new(|| Registry::with_id(GLOBAL_ID, 0));
        &GLOBAL
    }

    /// A new, independent registry.
    ///
    /// # Panics
    ///
    /// When 254 registries besides the global one are alive at once (14 on
    /// 32-bit targets); use [`Registry::try_new`] to get an error instead.
    ///
    /// ```
    /// let a = handle_registry::Registry::new();
    /// let b = handle_registry::Registry::new();
    /// let p = a.save(1u8);
    /// assert!(b.restore::<u8>(p).is_err());
    /// assert_eq!(a.take::<u8>(p), Ok(1));
    /// ```
    #[allow(clippy::new_without_default)]
    pub fn new() -> Registry {
        match Registry::try_new() {
            Ok(r) => r,
            Err(e) => panic!("handle_registry::Registry::new: {e}"),
        }
    }

    /// A new registry, or [`Error::TooManyRegistries`] when every registry
    /// id is taken by a live registry.
    ///
    /// ```
    /// let r = handle_registry::Registry::try_new().unwrap();
    /// assert!(r.is_empty());
    /// ```
    pub fn try_new() -> Result<Registry, Error> {
        let (id, base) = {
            let mut pool = IDS.lock();
            if let Some(reused) = pool.free.pop() {
                reused
            } else if pool.next <= LAYOUT.max_registry() {
                pool.next += 1;
                (pool.next - 1, 0)
            } else {
                return Err(Error::TooManyRegistries);
            }
        };
        Ok(Registry::with_id(id, base))
    }

    fn with_id(id: u32, base: u32) -> Registry {
        Registry {
            id,
            shards: (0..SHARDS)
                .map(|_| Shard(RwLock::new(Table::new(base))))
                .collect(),
            wait_lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Moves `value` into the registry and returns its handle, never NULL.
    ///
    /// The caller's source location is recorded for
    /// [`leak_report`](Registry::leak_report).
    ///
    /// # Panics
    ///
    /// When no shard has an index left: about 16.7 million live values in
    /// this registry (65 534 on 32-bit targets); see [`handle`](crate::handle).
    /// The value is dropped first.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(String::from("state"));
    /// assert!(!p.is_null());
    /// assert_eq!(r.len(), 1);
    /// # r.unref(p).unwrap();
    /// ```
    #[track_caller]
    pub fn save<T: Any + Send>(&self, value: T) -> *mut c_void {
        let cell = Cell::allocate(value, Location::caller());
        let first = thread::next_shard();
        for step in 0..SHARDS {
            let shard = (first + step) % SHARDS;
            if let Some((index, generation)) = self.shards[shard].0.write().insert(cell, shard) {
                return handle::to_ptr(LAYOUT.encode(index, self.id, generation));
            }
        }
        // SAFETY: the cell was never published; we own it.
        unsafe { Header::free(cell) };
        panic!("handle_registry: {}", Error::Full)
    }

    /// Borrows the value exclusively, for reading and writing.
    ///
    /// If another thread holds a borrow of the same handle, this waits for
    /// it to end. If this thread does, it fails with [`Error::Busy`].
    /// Inside [`lend`](Registry::lend) on this thread it is served without
    /// locking.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(0u64);
    /// *r.restore::<u64>(p).unwrap() += 1;
    /// assert_eq!(*r.restore::<u64>(p).unwrap(), 1);
    /// # r.unref(p).unwrap();
    /// ```
    #[inline]
    pub fn restore<T: Any + Send>(&self, ptr: *mut c_void) -> Result<Guard<'_, T>, Error> {
        if let Some(lent) = crate::lend::claim::<T>(self, ptr) {
            // SAFETY: the lend holds the borrow and marked itself in use.
            return lent.map(|cell| unsafe { Guard::lent(self, cell) });
        }
        self.restore_locked(ptr)
    }

    /// `restore` outside a lend: through the shard's lock.
    #[inline(never)]
    fn restore_locked<T: Any + Send>(&self, ptr: *mut c_void) -> Result<Guard<'_, T>, Error> {
        let cell = self.borrow::<T>(ptr, Header::try_exclusive)?;
        // SAFETY: we hold the exclusive borrow of a `Cell<T>` (type checked
        // in `find`) of this registry.
        Ok(unsafe { Guard::new(self, cell) })
    }

    /// Borrows the value shared, for reading, alongside other readers.
    ///
    /// Use this for `Sync` values that C calls back from several threads at
    /// once with the same `user_data` (a thread pool, a parallel traversal):
    /// readers never wait for each other, only for an exclusive
    /// [`restore`](Registry::restore). Mutate through atomics or locks in
    /// the value. Use `restore` when the value needs `&mut`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(AtomicUsize::new(0));
    /// let a = r.restore_ref::<AtomicUsize>(p).unwrap();
    /// let b = r.restore_ref::<AtomicUsize>(p).unwrap();
    /// a.fetch_add(1, Ordering::Relaxed);
    /// assert_eq!(b.load(Ordering::Relaxed), 1);
    /// # drop((a, b)); r.unref(p).unwrap();
    /// ```
    pub fn restore_ref<T: Any + Send + Sync>(
        &self,
        ptr: *mut c_void,
    ) -> Result<SharedGuard<'_, T>, Error> {
        if !thread::can_track_shared() {
            // Called from a thread-local destructor after this thread's
            // borrow list is gone: an untracked shared borrow could make a
            // later exclusive request on this thread wait for itself.
            return Err(Error::Busy);
        }
        let cell = self.borrow::<T>(ptr, Header::try_shared)?;
        // SAFETY: we hold a shared borrow of a `Cell<T>` of this registry.
        Ok(unsafe { SharedGuard::new(self, cell) })
    }

    /// Removes the value and returns it. The handle is stale from now on.
    ///
    /// Waits while another thread borrows the value; fails with
    /// [`Error::Busy`] if this thread does (use [`unref`](Registry::unref)
    /// to free a value from inside its own borrow).
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(vec!['a']);
    /// assert_eq!(r.take::<Vec<char>>(p), Ok(vec!['a']));
    /// assert_eq!(r.take::<Vec<char>>(p), Err(Error::Stale));
    /// ```
    pub fn take<T: Any + Send>(&self, ptr: *mut c_void) -> Result<T, Error> {
        let place = self.place(ptr)?;
        let token = thread::token();
        let cell = self.run(|park| {
            let mut table = self.shard(place).write();
            let cell = match table.find::<T>(place) {
                Ok(c) => c,
                Err(e) => return Step::Done(Err(e)),
            };
            // SAFETY: the cell is in the slab and we hold its shard's lock.
            let header = unsafe { cell::header(cell) };
            match header.try_exclusive(token) {
                Ok(()) => {
                    table.remove(place.slot);
                    Step::Done(Ok(cell))
                }
                Err(blocked) => blocked_step(header, blocked, park),
            }
        })?;
        // We hold the only borrow of a cell nobody can find any more.
        // SAFETY: we hold its exclusive borrow.
        let before = unsafe { cell::release_exclusive(cell) };
        if before & WAITING != 0 {
            self.wake_waiters();
        }
        // SAFETY: we own the cell (out of the slab, no borrows), and `find`
        // checked that it holds a `T`.
        Ok(unsafe { Cell::<T>::into_value(cell) })
    }

    /// Removes the value and drops it. The handle is stale from now on.
    ///
    /// Never waits. If the value is borrowed (on any thread, including this
    /// one), new lookups fail with [`Error::Stale`] at once and the value is
    /// dropped when the last guard is released, on that guard's thread.
    ///
    /// If the value's `Drop` panics, the panic propagates to the caller
    /// (after the registry has forgotten the value).
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(42u8);
    /// r.unref(p).unwrap();
    /// assert_eq!(r.unref(p), Err(Error::Stale));
    /// ```
    pub fn unref(&self, ptr: *mut c_void) -> Result<(), Error> {
        let place = self.place(ptr)?;
        let cell = {
            let mut table = self.shard(place).write();
            let cell = table.find_any(place)?;
            table.remove(place.slot);
            cell
        };
        // SAFETY: just removed from the slab by us.
        if unsafe { cell::orphan_or_own(cell) } {
            // No wake-up is owed: whoever parked for this cell's borrowers
            // was woken by the last release, and waiters hold no reference
            // to the cell, so one not yet running finds it gone (Stale).
            // SAFETY: out of the slab and not borrowed: ours alone.
            unsafe { Header::free(cell) };
        }
        Ok(())
    }

    /// Whether `ptr` names a live `T` in this registry, without borrowing
    /// it. The answer can change as soon as it is given (another thread may
    /// unref the handle); use it for diagnostics and early validation.
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(1u8);
    /// assert_eq!(r.check::<u8>(p), Ok(()));
    /// assert!(matches!(r.check::<u16>(p), Err(Error::WrongType { .. })));
    /// r.unref(p).unwrap();
    /// assert_eq!(r.check::<u8>(p), Err(Error::Stale));
    /// ```
    pub fn check<T: Any>(&self, ptr: *mut c_void) -> Result<(), Error> {
        let place = self.place(ptr)?;
        self.shard(place).read().find::<T>(place).map(drop)
    }

    /// How many values are live (saved and not yet taken or unreffed).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(());
    /// assert_eq!(r.len(), 1);
    /// r.unref(p).unwrap();
    /// assert_eq!(r.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().live()).sum()
    }

    /// Whether no value is live.
    ///
    /// ```
    /// assert!(handle_registry::Registry::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An owning [`Handle`] to `value` in this registry.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let h = r.handle(String::from("owned"));
    /// assert_eq!(r.len(), 1);
    /// drop(h);
    /// assert!(r.is_empty());
    /// ```
    #[track_caller]
    pub fn handle<T: Any + Send>(&self, value: T) -> Handle<'_, T> {
        let ptr = self.save(value);
        Handle::from_parts(self, ptr)
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Decodes `ptr` and checks it names this registry.
    #[inline]
    fn place(&self, ptr: *mut c_void) -> Result<Place, Error> {
        let decoded = LAYOUT.decode(handle::from_ptr(ptr))?;
        if decoded.registry != self.id {
            return Err(Error::WrongRegistry);
        }
        Ok(Place::of(decoded))
    }

    #[inline]
    fn shard(&self, place: Place) -> &RwLock<Table> {
        &self.shards[place.shard].0
    }

    /// Finds the `T` that `ptr` names and takes a borrow of it with
    /// `acquire` (exclusive or shared), waiting while another thread holds
    /// a conflicting one.
    #[inline]
    fn borrow<T: Any>(
        &self,
        ptr: *mut c_void,
        acquire: impl Fn(&Header, usize) -> Result<(), Blocked>,
    ) -> Result<NonNull<Header>, Error> {
        let place = self.place(ptr)?;
        let token = thread::token();
        self.run(|park| {
            let table = self.shard(place).read();
            let cell = match table.find::<T>(place) {
                Ok(c) => c,
                Err(e) => return Step::Done(Err(e)),
            };
            // SAFETY: the cell is in the slab and we hold its shard's lock.
            let header = unsafe { cell::header(cell) };
            match acquire(header, token) {
                Ok(()) => Step::Done(Ok(cell)),
                Err(blocked) => blocked_step(header, blocked, park),
            }
        })
    }

    /// Runs `attempt` until it is done, parking between tries when another
    /// thread holds a conflicting borrow (protocol step 3). The first try
    /// takes no wait lock: that is the fast path.
    fn run<R>(&self, mut attempt: impl FnMut(bool) -> Step<R>) -> Result<R, Error> {
        if let Step::Done(result) = attempt(false) {
            return result;
        }
        let mut waiting = self.wait_lock.lock();
        loop {
            match attempt(true) {
                Step::Done(result) => return result,
                Step::Again => {}
                Step::Park => self.wake.wait(&mut waiting),
            }
        }
    }

    #[cold]
    fn wake_waiters(&self) {
        let _waiting = self.wait_lock.lock();
        self.wake.notify_all();
    }

    /// Ends an exclusive borrow taken by [`restore`](Registry::restore).
    ///
    /// # Safety
    /// The caller holds the exclusive borrow of `cell`, a cell of `self`.
    #[inline]
    pub(crate) unsafe fn release_exclusive(&self, cell: NonNull<Header>) {
        // SAFETY: the caller holds the exclusive borrow.
        let before = unsafe { cell::release_exclusive(cell) };
        // From here on the cell may be freed by a remover: only `before` is used.
        if before & WAITING != 0 {
            self.wake_waiters();
        }
        if cell::last_out_of_orphan(before, true) {
            // Our `swap` read the remover's `ORPHANED` write; acquire it
            // (and everything before it) before freeing the memory it wrote.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            // SAFETY: the remover handed the cell over and ours was the
            // last borrow.
            unsafe { Header::free(cell) };
        }
    }

    /// Ends a shared borrow taken by [`restore_ref`](Registry::restore_ref).
    ///
    /// # Safety
    /// The caller holds a shared borrow of `cell`, a cell of `self`.
    #[inline]
    pub(crate) unsafe fn release_shared(&self, cell: NonNull<Header>) {
        thread::pop_shared(cell.as_ptr() as usize);
        // SAFETY: the caller holds a shared borrow.
        let before = unsafe { cell::release_shared(cell) };
        // From here on the cell may be freed by a remover: only `before` is used.
        let last = before & !(EXCLUSIVE | WAITING | ORPHANED) == READER;
        if last && before & WAITING != 0 {
            self.wake_waiters();
        }
        if last && cell::last_out_of_orphan(before, false) {
            // Acquire the remover's `ORPHANED` write and the other readers'
            // releases (one release sequence on the borrow word) before
            // freeing.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            // SAFETY: handed over by the remover; ours was the last borrow.
            unsafe { Header::free(cell) };
        }
    }

    #[cfg(test)]
    pub(crate) fn set_generation(&self, ptr: *mut c_void, generation: u32) -> *mut c_void {
        let place = self.place(ptr).unwrap();
        self.shard(place)
            .write()
            .set_generation(place.slot, generation);
        let index = Place::index(place.shard, place.slot);
        handle::to_ptr(LAYOUT.encode(index, self.id, generation))
    }
}

/// What a blocked attempt should do next.
fn blocked_step<R>(header: &Header, blocked: Blocked, park: bool) -> Step<R> {
    match blocked {
        Blocked::ByThisThread => Step::Done(Err(Error::Busy)),
        Blocked::ByOther(_) if !park => Step::Park,
        Blocked::ByOther(seen) if header.set_waiting(seen) => Step::Park,
        Blocked::ByOther(_) => Step::Again,
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // No guard can outlive `&self`, so every cell is unborrowed and ours.
        let mut panic = None;
        let mut next_base = 0;
        for shard in self.shards.iter_mut() {
            let table = shard.0.get_mut();
            next_base = next_base.max(table.next_base());
            for cell in table.drain() {
                // SAFETY: owned, see above. Keep dropping the rest if one
                // value's `Drop` panics, then resume the first panic.
                let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                    Header::free(cell)
                }));
                if let Err(payload) = dropped {
                    panic.get_or_insert(payload);
                }
            }
        }
        // The id may serve again, with generations past every one issued.
        if self.id != GLOBAL_ID && next_base <= u64::from(LAYOUT.max_generation()) {
            IDS.lock().free.push((self.id, next_base as u32));
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("id", &self.id)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
