//! Adversarial review through the public API: the global registry's
//! per-thread cache of free indices (`src/free.rs`), `Handle<T>`
//! (`src/owned.rs`) with counted values, and groups (`src/kinds/group.rs`)
//! cleared while other threads use their handles.
//!
//! The free-index cache is invisible through the API: an index handed out
//! twice shows as two live handles with the same slot index (or a handle
//! restoring to another's value); a value dropped twice or never shows in
//! drop counters and in the leak report, filtered by a type private to
//! each test (other tests of this binary share the global registry).
mod common;

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use common::{in_child, ptr, rounds, watchdog, Counted, OnDrop, PanicOnDrop, INDEX_MASK};
use handle_registry::{Error, Group, Handle, Registry};

/// How many live values of the type named `name` the global registry holds.
fn live_of(name: &str) -> usize {
    Registry::global()
        .leak_report()
        .entries()
        .iter()
        .filter(|e| e.type_name() == name)
        .count()
}

/// Asserts that every `(handle, value)` restores to its own value and that
/// no two share a slot index.
fn assert_distinct(live: &[(usize, u64)]) {
    let mut idx = HashSet::new();
    for &(h, v) in live {
        assert_eq!(*handle_registry::restore_ref::<u64>(ptr(h)).unwrap(), v);
        assert!(
            idx.insert(h & INDEX_MASK),
            "two live handles share a slot index"
        );
    }
}

/// A node whose `Drop` saves children (nodes one level shallower), fills
/// and overflows this thread's cache with probes, then unrefs or takes
/// the children: the drop runs inside `dispose`, before the node's own
/// index is freed.
struct Node {
    depth: u32,
    made: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

impl Node {
    fn new(depth: u32, made: &Arc<AtomicUsize>, drops: &Arc<AtomicUsize>) -> Node {
        made.fetch_add(1, Ordering::SeqCst);
        Node {
            depth,
            made: made.clone(),
            drops: drops.clone(),
        }
    }
}

static PROBE: AtomicU64 = AtomicU64::new(1 << 40);

/// How deep a tree of [`Node`]s is (each level is 80 saves per node, which
/// Miri pays for dearly).
const DEPTH: u32 = if cfg!(miri) { 1 } else { 3 };
/// The number of nodes in a tree: 3⁰ + 3¹ + … + 3^DEPTH.
const NODES: usize = (3usize.pow(DEPTH + 1) - 1) / 2;

impl Drop for Node {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.depth == 0 {
            return;
        }
        let children: Vec<usize> = (0..3)
            .map(|_| {
                handle_registry::save(Node::new(self.depth - 1, &self.made, &self.drops)) as usize
            })
            .collect();
        // More than the cache holds (64), saved and freed in two waves.
        let probes: Vec<(usize, u64)> = (0..80)
            .map(|_| {
                let v = PROBE.fetch_add(1, Ordering::Relaxed);
                (handle_registry::save(v) as usize, v)
            })
            .collect();
        let mut all = probes.clone();
        assert_distinct(&all);
        for (i, &c) in children.iter().enumerate() {
            if i == 0 {
                // Taken, then dropped here: its own drop recurses.
                drop(handle_registry::take::<Node>(ptr(c)).unwrap());
            } else {
                assert_eq!(handle_registry::unref(ptr(c)), Ok(()));
            }
            assert_eq!(handle_registry::unref(ptr(c)), Err(Error::Stale));
        }
        // The probes survived the children's recursive churn.
        all.truncate(40);
        assert_distinct(&all);
        for (i, (h, v)) in probes.into_iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
            } else {
                assert_eq!(handle_registry::unref(ptr(h)), Ok(()));
            }
        }
    }
}

// Promise (src/free.rs, module notes): "An index is in exactly one place at
// a time ... so a save made re-entrantly sees a consistent cache"; README
// "Threads and re-entrancy": "Inside a callback, code may save, restore,
// take and unref other handles", and values are dropped exactly once.
// Attack: values whose `Drop` saves and unrefs other such values
// recursively (a tree of drops), each overflowing the cache, on two
// threads at once, while a third churns plain saves and checks them.
#[test]
fn recursive_drops_that_save_and_unref_never_share_an_index() {
    let _w = watchdog("recursive_drops_that_save_and_unref_never_share_an_index");
    let made = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..rounds(4, 1) {
                    let root = handle_registry::save(Node::new(DEPTH, &made, &drops)) as usize;
                    assert_eq!(handle_registry::unref(ptr(root)), Ok(()));
                }
            });
        }
        s.spawn(|| {
            for _ in 0..rounds(30, 2) {
                let live: Vec<(usize, u64)> = (0..100)
                    .map(|_| {
                        let v = PROBE.fetch_add(1, Ordering::Relaxed);
                        (handle_registry::save(v) as usize, v)
                    })
                    .collect();
                assert_distinct(&live);
                for (h, v) in live {
                    assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
                }
            }
        });
    });
    assert_eq!(made.load(Ordering::SeqCst), drops.load(Ordering::SeqCst));
    assert_eq!(made.load(Ordering::SeqCst), rounds(4, 1) * 2 * NODES);
    assert_eq!(live_of(std::any::type_name::<Node>()), 0);
}

thread_local! {
    static FIRST_USE: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// A value type private to `first_use_of_the_cache_in_a_tls_destructor`.
struct Late(u64);

// Promise (src/free.rs): "A thread that first refills while its
// thread-locals are already being destroyed finds `Flush` gone and closes
// its cache at once (FRESH → CLOSED)", and otherwise the cache opens and its
// `Flush` gives the indices back. Attack: threads whose *only* use of the
// registry is in a thread-local destructor (the cache is FRESH at
// teardown), which saves more than a batch, frees some into the cache
// (past CAP, so half goes back), and keeps some alive past the thread;
// meanwhile the main thread saves. No index may be handed out twice.
#[test]
fn first_use_of_the_cache_in_a_tls_destructor() {
    let _w = watchdog("first_use_of_the_cache_in_a_tls_destructor");
    let (tx, rx) = mpsc::channel::<Vec<(usize, u64)>>();
    let mut kept: Vec<(usize, u64)> = Vec::new();
    for wave in 0..rounds(10, 1) {
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    FIRST_USE.with(|c| {
                        c.borrow_mut().0 = Some(Box::new(move || {
                            let base = ((wave * 3 + t as usize) << 20) as u64;
                            let mut mine: Vec<(usize, u64)> = (0..rounds(150, 100) as u64)
                                .map(|i| (handle_registry::save(Late(base + i)) as usize, base + i))
                                .collect();
                            // 100 freed (70 under Miri): the cache fills past CAP.
                            for (h, v) in mine.drain(..rounds(100, 70)) {
                                if v % 2 == 0 {
                                    assert_eq!(handle_registry::unref(ptr(h)), Ok(()));
                                } else {
                                    assert_eq!(
                                        handle_registry::take::<Late>(ptr(h)).map(|l| l.0),
                                        Ok(v)
                                    );
                                }
                            }
                            // Reused from the cache while the kept ones live.
                            let again: Vec<(usize, u64)> = (0..rounds(70, 20) as u64)
                                .map(|i| {
                                    let v = base + 1000 + i;
                                    (handle_registry::save(Late(v)) as usize, v)
                                })
                                .collect();
                            mine.extend(again);
                            tx.send(mine).unwrap();
                        }))
                    });
                })
            })
            .collect();
        // Meanwhile, saves here.
        let here: Vec<(usize, u64)> = (0..100u64)
            .map(|i| {
                let v = (1 << 50) + i;
                (handle_registry::save(Late(v)) as usize, v)
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        kept.extend(here);
        for _ in 0..3 {
            kept.extend(rx.recv().unwrap());
        }
        let mut idx = HashSet::new();
        for &(h, v) in &kept {
            assert_eq!(handle_registry::restore::<Late>(ptr(h)).map(|l| l.0), Ok(v));
            assert!(idx.insert(h & INDEX_MASK), "two live handles share a slot");
        }
        // Free half, so that later waves reuse indices through caches.
        let drop_now = kept.len() / 2;
        for (h, v) in kept.drain(..drop_now) {
            assert_eq!(handle_registry::take::<Late>(ptr(h)).map(|l| l.0), Ok(v));
        }
    }
    for (h, v) in kept {
        assert_eq!(handle_registry::take::<Late>(ptr(h)).map(|l| l.0), Ok(v));
    }
    assert_eq!(live_of(std::any::type_name::<Late>()), 0);
}

thread_local! {
    static BEFORE_CACHE: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
    static AFTER_CACHE: RefCell<OnDrop> = const { RefCell::new(OnDrop(None)) };
}

/// A value private to `tls_destructors_around_flush_drop_values_that_save`:
/// its `Drop` saves, frees and keeps values, recursively one level.
struct Saver {
    depth: u32,
    out: mpsc::Sender<(usize, u64)>,
    drops: Arc<AtomicUsize>,
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        let base = PROBE.fetch_add(200, Ordering::Relaxed);
        let mine: Vec<(usize, u64)> = (0..rounds(90, 70) as u64)
            .map(|i| (handle_registry::save(base + i) as usize, base + i))
            .collect();
        assert_distinct(&mine);
        if self.depth > 0 {
            let child = handle_registry::save(Saver {
                depth: self.depth - 1,
                out: self.out.clone(),
                drops: self.drops.clone(),
            });
            assert_eq!(handle_registry::unref(child), Ok(()));
        }
        for (i, (h, v)) in mine.into_iter().enumerate() {
            if i % 3 == 0 {
                self.out.send((h, v)).unwrap();
            } else {
                assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
            }
        }
    }
}

// Promise (src/free.rs): "a save or unref from a later thread-local
// destructor takes the lock instead" (after `Flush`), and before `Flush`
// the cache serves and `Flush` gives it back; README "Thread-local
// teardown": "a value's `Drop` run from a thread-local destructor, keep[s]
// every promise above". Attack: destructors registered before the cache's
// first use (run after `Flush`) and after (run before it) unref values
// whose `Drop` saves, unrefs and keeps values, while the thread ends with
// a full cache, an empty one, or one with a few indices.
#[test]
fn tls_destructors_around_flush_drop_values_that_save() {
    let _w = watchdog("tls_destructors_around_flush_drop_values_that_save");
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<(usize, u64)>();
    let mut made = 0;
    for wave in 0..rounds(8, 1) {
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (tx, drops) = (tx.clone(), drops.clone());
                std::thread::spawn(move || {
                    let saver = |depth| Saver {
                        depth,
                        out: tx.clone(),
                        drops: drops.clone(),
                    };
                    // Registered before the cache's first use (a
                    // thread-local's destructor is registered at its first
                    // access), so it runs after `Flush` (glibc runs them in
                    // the reverse order; elsewhere either order is a case
                    // the promise covers).
                    BEFORE_CACHE.with(|_| ());
                    let early = handle_registry::save(saver(1)) as usize;
                    BEFORE_CACHE.with(|c| {
                        c.borrow_mut().0 = Some(Box::new(move || {
                            assert_eq!(handle_registry::unref(ptr(early)), Ok(()));
                        }))
                    });
                    let late = handle_registry::save(saver(1)) as usize;
                    AFTER_CACHE.with(|c| {
                        c.borrow_mut().0 = Some(Box::new(move || {
                            assert_eq!(handle_registry::unref(ptr(late)), Ok(()));
                        }))
                    });
                    // End with a cache full, empty after a refill, or in
                    // between: free 200 (70 under Miri), then keep some alive past the end.
                    let tmp: Vec<_> = (0..rounds(200, 70) as u64)
                        .map(handle_registry::save)
                        .collect();
                    for p in tmp {
                        assert_eq!(handle_registry::unref(p), Ok(()));
                    }
                    let keep = [0u64, 70, 20][(t + wave) % 3];
                    for i in 0..keep {
                        let v = PROBE.fetch_add(1, Ordering::Relaxed) + i;
                        tx.send((handle_registry::save(v) as usize, v)).unwrap();
                    }
                })
            })
            .collect();
        made += 3 * 2 * 2;
        for t in threads {
            t.join().unwrap();
        }
    }
    drop(tx);
    let kept: Vec<(usize, u64)> = rx.iter().collect();
    assert_distinct(&kept);
    for (h, v) in kept {
        assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
    }
    assert_eq!(drops.load(Ordering::SeqCst), made);
    assert_eq!(live_of(std::any::type_name::<Saver>()), 0);
}

/// A value private to the `Handle` tests.
struct Owned(#[allow(dead_code)] Counted); // read by its drop only

// Promise (src/owned.rs, `into_inner`): "Fails with `Error::Retained` if
// the handle was retained and other references are still out ... this
// handle's own reference is dropped (as on drop)"; README Errors table:
// values dropped exactly once. Attack: one `retain`ed value, given to C
// with `into_ptr`, then taken back as several `Handle`s on several
// threads (`from_ptr`, one per reference), each dropped or `into_inner`ed
// at once, while a fourth thread restores it. Exactly one drop, at most
// one `Ok` from `into_inner`, and every handle stale after.
#[test]
fn retained_handle_owned_back_on_many_threads_drops_once() {
    let _w = watchdog("retained_handle_owned_back_on_many_threads_drops_once");
    for round in 0..rounds(200, 5) {
        let drops = Arc::new(AtomicUsize::new(0));
        let p = Handle::new(Owned(Counted(drops.clone()))).into_ptr() as usize;
        handle_registry::retain(ptr(p)).unwrap();
        handle_registry::retain(ptr(p)).unwrap();
        // Three references: three owners.
        let owners: Vec<Handle<'static, Owned>> = (0..3)
            .map(|_| Handle::<Owned>::from_ptr(ptr(p)).unwrap())
            .collect();
        let oks = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for (i, h) in owners.into_iter().enumerate() {
                let oks = &oks;
                s.spawn(move || {
                    if (i + round) % 2 == 0 {
                        match h.into_inner() {
                            Ok(v) => {
                                oks.fetch_add(1, Ordering::SeqCst);
                                drop(v);
                            }
                            Err(e) => assert!(
                                matches!(e, Error::Retained | Error::Stale | Error::Busy),
                                "{e:?}"
                            ),
                        }
                    } else {
                        drop(h);
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..20 {
                    match handle_registry::restore::<Owned>(ptr(p)) {
                        Ok(g) => drop(g),
                        Err(e) => assert_eq!(e, Error::Stale),
                    }
                }
            });
        });
        assert!(oks.load(Ordering::SeqCst) <= 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(handle_registry::unref(ptr(p)), Err(Error::Stale));
        assert!(Handle::<Owned>::from_ptr(ptr(p)).is_err());
    }
    assert_eq!(live_of(std::any::type_name::<Owned>()), 0);
}

/// A value private to `forgotten_and_stale_handles_never_touch_a_reused_slot`.
struct Reused(usize);

// Promise (README Errors, `Stale`): "never resolves again, not even to a
// later value in the same slot"; src/owned.rs `Handle::drop`: "Stale means
// C already freed it: nothing to do". Attack: a `Handle` whose value C
// freed (`c_unref`) and whose slot this thread's cache handed straight to
// a new value (same index, next generation) is dropped, `into_inner`ed
// and `from_ptr`ed; and a `mem::forget`ten `Handle` leaks its value (in
// the leak report) until its pointer is taken. The new value is never
// touched.
#[test]
fn forgotten_and_stale_handles_never_touch_a_reused_slot() {
    for i in 0..rounds(100, 5) {
        let old = Handle::new(Reused(i));
        handle_registry::c_unref(old.as_ptr()); // C's destroy-notify
        let new = Handle::new(Reused(i + 1000));
        // This thread's cache hands the freed index straight back.
        assert_eq!(
            old.as_ptr() as usize & INDEX_MASK,
            new.as_ptr() as usize & INDEX_MASK
        );
        assert!(Handle::<Reused>::from_ptr(old.as_ptr()).is_err());
        if i % 2 == 0 {
            assert_eq!(old.into_inner().map(|r| r.0), Err(Error::Stale));
        } else {
            drop(old);
        }
        assert_eq!(new.restore().unwrap().0, i + 1000);
        let p = new.into_ptr();
        let leaked = Handle::<Reused>::from_ptr(p).unwrap();
        std::mem::forget(leaked);
        assert!(Registry::global()
            .leak_report()
            .entries()
            .iter()
            .any(|e| e.handle() == p));
        assert_eq!(
            handle_registry::take::<Reused>(p).map(|r| r.0),
            Ok(i + 1000)
        );
    }
    assert_eq!(live_of(std::any::type_name::<Reused>()), 0);
}

/// A value private to the group tests.
struct Member(#[allow(dead_code)] Counted); // read by its drop only

// Promise (src/kinds/group.rs, module notes): `clear` removes every live
// handle "with `unref` semantics: each answers `Error::Stale` from then
// on, its value is dropped exactly once (a borrowed one when its last
// guard ends, on that guard's thread), and a `retain`ed one goes with all
// its references. Handles C already freed are skipped quietly." Attack: a
// group of the global registry cleared (and dropped) while two threads
// restore, retain and unref its handles, and C frees some of them.
#[test]
fn group_cleared_while_other_threads_restore_retain_and_unref() {
    let _w = watchdog("group_cleared_while_other_threads_restore_retain_and_unref");
    for round in 0..rounds(40, 2) {
        let drops = Arc::new(AtomicUsize::new(0));
        let group = Registry::global().group();
        let n = 40;
        let handles: Vec<usize> = (0..n)
            .map(|_| group.save(Member(Counted(drops.clone()))) as usize)
            .collect();
        let unreffed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for &h in &handles {
                    if let Ok(g) = handle_registry::restore::<Member>(ptr(h)) {
                        std::hint::black_box(&g);
                    }
                }
            });
            s.spawn(|| {
                for (i, &h) in handles.iter().enumerate() {
                    match i % 4 {
                        0 => {
                            let _ = handle_registry::retain(ptr(h));
                        }
                        1 => {
                            if handle_registry::unref(ptr(h)).is_ok() {
                                unreffed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        _ => {
                            if let Ok(g) = handle_registry::restore_ref::<Member>(ptr(h)) {
                                std::hint::black_box(&g);
                            }
                        }
                    }
                }
            });
            if round % 2 == 0 {
                group.clear();
            }
        });
        drop(group);
        assert_eq!(drops.load(Ordering::SeqCst), n);
        for &h in &handles {
            assert_eq!(handle_registry::unref(ptr(h)), Err(Error::Stale));
            assert_eq!(handle_registry::retain(ptr(h)), Err(Error::Stale));
        }
    }
    assert_eq!(live_of(std::any::type_name::<Member>()), 0);
}

// Promise (src/kinds/group.rs): "a borrowed one [is dropped] when its last
// guard ends, on that guard's thread". Attack: the group is dropped on the
// main thread while another thread holds a guard of a member (exclusive,
// then shared through its reader record); the value
// must survive until that guard ends and be dropped on that thread.
#[test]
fn group_dropped_while_another_thread_holds_a_guard() {
    for shared in [false, true] {
        dropped_while_held(shared);
    }
}

fn dropped_while_held(shared: bool) {
    let _w = watchdog("group_dropped_while_another_thread_holds_a_guard");
    struct Where(Arc<Mutex<Option<std::thread::ThreadId>>>);
    impl Drop for Where {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
        }
    }
    let dropped_on = Arc::new(Mutex::new(None));
    let group = Registry::global().group();
    let p = group.save(Where(dropped_on.clone())) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        if shared {
            // Through this thread's reader record.
            let g = handle_registry::restore_ref::<Where>(ptr(p)).unwrap();
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            assert!(g.0.lock().unwrap().is_none());
            drop(g);
        } else {
            let g = handle_registry::restore::<Where>(ptr(p)).unwrap();
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            assert!(g.0.lock().unwrap().is_none());
            drop(g);
        }
        std::thread::current().id()
    });
    held_rx.recv().unwrap();
    drop(group); // `unref` semantics: never waits
    assert_eq!(
        handle_registry::restore::<Where>(ptr(p)).err(),
        Some(Error::Stale)
    );
    assert!(dropped_on.lock().unwrap().is_none());
    go_tx.send(()).unwrap();
    let id = holder.join().unwrap();
    assert_eq!(*dropped_on.lock().unwrap(), Some(id));
}

/// A member whose `Drop` saves into its own group (and clears it, once):
/// the values of `group_member_drops_that_save_into_and_clear_the_group`.
struct Reentrant {
    group: &'static Group<'static>,
    depth: u32,
    drops: Arc<AtomicUsize>,
    made: Arc<AtomicUsize>,
    full: Arc<AtomicUsize>,
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        // Under the limit while `clear` runs: members being cleared still
        // count until removed.
        assert!(self.group.len() <= LIMIT);
        if self.depth == 0 {
            return;
        }
        for _ in 0..2 {
            let child = Reentrant {
                group: self.group,
                depth: self.depth - 1,
                drops: self.drops.clone(),
                made: self.made.clone(),
                full: self.full.clone(),
            };
            self.made.fetch_add(1, Ordering::SeqCst);
            match self.group.try_save(child) {
                Ok(_) => {}
                Err((e, child)) => {
                    assert_eq!(e, Error::Full);
                    self.full.fetch_add(1, Ordering::SeqCst);
                    // Dropped here: its own drop recurses.
                    drop(child);
                }
            }
        }
        if self.depth == 2 {
            // A clear started from a member's `Drop` shares the work.
            self.group.clear();
        }
    }
}

const LIMIT: usize = 6;

// Promise (src/kinds/group.rs, module notes): "Until `clear` has made it
// stale, a handle is still a member: it counts in `Group::len` and against
// the limit, also for a value's `Drop` that saves into the group while
// `clear` runs. A `clear` started meanwhile (from such a `Drop`, or
// another thread) shares the remaining work"; values dropped exactly
// once, never a deadlock. Attack: members whose `Drop` saves new members
// into the same limited group and clears it re-entrantly, while a second
// thread clears it too; every value made is dropped exactly once, and
// the group is empty after a final clear.
#[test]
fn group_member_drops_that_save_into_and_clear_the_group() {
    let _w = watchdog("group_member_drops_that_save_into_and_clear_the_group");
    // In a static, not leaked: Miri reports leaked memory, not what a
    // static reaches.
    static GROUP: OnceLock<Group<'static>> = OnceLock::new();
    let group: &'static Group<'static> =
        GROUP.get_or_init(|| Registry::global().group().with_limit(LIMIT));
    let drops = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let full = Arc::new(AtomicUsize::new(0));
    for _ in 0..rounds(30, 2) {
        for _ in 0..LIMIT {
            made.fetch_add(1, Ordering::SeqCst);
            let value = Reentrant {
                group,
                depth: if cfg!(miri) { 2 } else { 3 },
                drops: drops.clone(),
                made: made.clone(),
                full: full.clone(),
            };
            if let Err((e, v)) = group.try_save(value) {
                assert_eq!(e, Error::Full);
                drop(v);
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| group.clear());
            group.clear();
        });
        // Members saved by drops after a clear took its list: cleared
        // by later ones, until none is left.
        while !group.is_empty() {
            group.clear();
        }
    }
    assert_eq!(made.load(Ordering::SeqCst), drops.load(Ordering::SeqCst));
    assert_eq!(live_of(std::any::type_name::<Reentrant>()), 0);
}

/// A value private to `concurrent_try_saves_never_pass_the_limit`.
struct Capped(u64);

// Promise (src/kinds/group.rs): "`Group::with_limit` bounds how many
// handles of the group may be live at once: past it, `try_save` gives the
// value back with `Error::Full`". Attack: four threads fill one limited
// group at once, while a fifth frees members (C's destroy-notify), so that
// pruning runs during the race; the live members never exceed the limit
// (checked when each round settles), and every refused value comes back.
#[test]
fn concurrent_try_saves_never_pass_the_limit() {
    let _w = watchdog("concurrent_try_saves_never_pass_the_limit");
    let limit = 20;
    for _ in 0..rounds(30, 1) {
        let group = Registry::global().group().with_limit(limit);
        let saved = Mutex::new(Vec::<usize>::new());
        let freed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (group, saved) = (&group, &saved);
                s.spawn(move || {
                    for i in 0..30 {
                        match group.try_save(Capped(t * 100 + i)) {
                            Ok(p) => saved.lock().unwrap().push(p as usize),
                            Err((e, v)) => {
                                assert_eq!(e, Error::Full);
                                assert_eq!(v.0, t * 100 + i);
                            }
                        }
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..10 {
                    let p = saved.lock().unwrap().pop();
                    if let Some(p) = p {
                        handle_registry::c_unref(ptr(p)); // a destroy-notify
                        freed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        });
        let saved = saved.into_inner().unwrap();
        let live = saved
            .iter()
            .filter(|&&p| handle_registry::unref(ptr(p)).is_ok())
            .count();
        assert!(live <= limit, "{live} live members, limit {limit}");
        assert_eq!(group.len(), 0);
    }
    assert_eq!(live_of(std::any::type_name::<Capped>()), 0);
}

// Promise (src/kinds/group.rs, `clear`): "If values' `Drop` panic, every
// handle is still removed, and the first panic is resumed after"; README
// Panics / "A value dropped while its thread unwinds ... has its panic
// caught and dropped: never a double-panic abort". Attack: a group of
// values whose `Drop` panics, dropped (1) normally, where the first panic
// comes out of the drop, and (2) by an unwind, where it must not abort;
// and (3) one member borrowed on another thread when the group is
// dropped, whose guard's release then drops it.
#[test]
fn group_of_panicking_drops_dropped_normally_and_by_an_unwind() {
    if !in_child("group_of_panicking_drops_dropped_normally_and_by_an_unwind") {
        return;
    }
    let _w = watchdog("group_of_panicking_drops_dropped_normally_and_by_an_unwind");
    let drops = Arc::new(AtomicUsize::new(0));
    let group = Registry::global().group();
    let ps: Vec<usize> = (0..3)
        .map(|_| group.save(PanicOnDrop(drops.clone())) as usize)
        .collect();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(group)));
    assert!(out.is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    for p in ps {
        assert_eq!(handle_registry::unref(ptr(p)), Err(Error::Stale));
    }
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let group = Registry::global().group();
        for _ in 0..3 {
            let _ = group.save(PanicOnDrop(drops.clone()));
        }
        panic!("the plugin's own panic");
    }));
    assert!(out.is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 6);
    let group = Registry::global().group();
    let p = group.save(PanicOnDrop(drops.clone())) as usize;
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let g = handle_registry::restore::<PanicOnDrop>(ptr(p)).unwrap();
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(g))).is_err()
    });
    held_rx.recv().unwrap();
    drop(group); // no panic here: the value is borrowed
    assert_eq!(drops.load(Ordering::SeqCst), 6);
    go_tx.send(()).unwrap();
    assert!(holder.join().unwrap(), "the guard's release re-raises");
    assert_eq!(drops.load(Ordering::SeqCst), 7);
}

// Promise (README Errors, `Stale`): "issued, then removed ... The
// generation moved on: never resolves again, not even to a later value in
// the same slot". Attack: one thread saves and frees through its cache as
// fast as it can, so that one index is reused at every step (the cache is
// last in, first out), while two others restore, take and unref handles
// it published a moment before (exclusive, shared, `restore_with`). A
// handle that answers `Ok` must hold the value saved under that very
// handle; each value is dropped once.
#[test]
fn stale_handles_racing_a_slot_reused_through_the_cache() {
    let _w = watchdog("stale_handles_racing_a_slot_reused_through_the_cache");
    let published = Mutex::new(Vec::<(usize, u64)>::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    let drops = Arc::new(AtomicUsize::new(0));
    struct Val(u64, #[allow(dead_code)] Counted);
    // The racers' attempts the producer runs for.
    let target = rounds(30_000, 60);
    let attempts = AtomicUsize::new(0);
    let made = AtomicUsize::new(0);
    let start = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            // Four live at a time: each step frees the oldest, and the
            // save right after gets its index back at the next generation.
            let mut ring = std::collections::VecDeque::new();
            for v in 0.. {
                if attempts.load(Ordering::Relaxed) >= target {
                    break;
                }
                made.fetch_add(1, Ordering::SeqCst);
                if ring.len() == 4 {
                    let old: usize = ring.pop_front().unwrap();
                    match handle_registry::unref(ptr(old)) {
                        Ok(()) => {}
                        // Another thread took it first.
                        Err(e) => assert_eq!(e, Error::Stale),
                    }
                }
                let p = handle_registry::save(Val(v, Counted(drops.clone()))) as usize;
                ring.push_back(p);
                let mut pubs = published.lock().unwrap();
                pubs.push((p, v));
                if pubs.len() > 12 {
                    pubs.remove(0);
                }
                drop(pubs);
                if v % 16 == 0 {
                    std::thread::yield_now();
                }
            }
            for p in ring {
                let _ = handle_registry::unref(ptr(p));
            }
            done.store(true, Ordering::SeqCst);
        });
        for t in 0..2 {
            let (published, done, start, attempts) = (&published, &done, &start, &attempts);
            s.spawn(move || {
                start.wait();
                let mut i = 0usize;
                while !done.load(Ordering::SeqCst) {
                    let pubs = published.lock().unwrap().clone();
                    for (p, v) in pubs {
                        i += 1;
                        attempts.fetch_add(1, Ordering::Relaxed);
                        match (i + t) % 4 {
                            0 => {
                                if let Ok(g) = handle_registry::restore::<Val>(ptr(p)) {
                                    assert_eq!(g.0, v, "a stale handle reached a new value");
                                }
                            }
                            3 => {
                                // Shared, through this thread's reader record.
                                if let Ok(g) = handle_registry::restore_ref::<Val>(ptr(p)) {
                                    assert_eq!(g.0, v, "a stale handle reached a new value");
                                }
                            }
                            1 => {
                                let got = handle_registry::restore_with(ptr(p), |x: &mut Val| x.0);
                                if let Ok(got) = got {
                                    assert_eq!(got, v, "a stale handle reached a new value");
                                }
                            }
                            _ => {
                                if i % 7 == 0 {
                                    if let Ok(x) = handle_registry::take::<Val>(ptr(p)) {
                                        assert_eq!(x.0, v, "a stale handle took a new value");
                                    }
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    assert_eq!(drops.load(Ordering::SeqCst), made.load(Ordering::SeqCst));
    assert_eq!(live_of(std::any::type_name::<Val>()), 0);
}

// Promise (src/owned.rs, `into_inner`): "[`Error::Busy`] if this thread
// still borrows it through a guard obtained from the raw pointer; in that
// case the handle is unreffed when the borrow ends, as on drop". Attack:
// `into_inner` under this thread's own guard, of a plain and of a
// retained value: never a wait for itself, the value dropped exactly once
// and only when the guard ends. (Observed: the handle is unreffed at
// once, `Stale` while the guard lives; the *value* goes with the guard.)
#[test]
fn into_inner_under_this_threads_own_guard() {
    let _w = watchdog("into_inner_under_this_threads_own_guard");
    let drops = Arc::new(AtomicUsize::new(0));
    let h = Handle::new(Owned(Counted(drops.clone())));
    let p = h.as_ptr() as usize;
    let g = handle_registry::restore::<Owned>(ptr(p)).unwrap();
    assert_eq!(h.into_inner().err(), Some(Error::Busy));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(handle_registry::unref(ptr(p)), Err(Error::Stale));
    drop(g);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    // Retained: `Busy` comes before the count; the handle's own reference
    // goes, C's stays.
    let h = Handle::new(Owned(Counted(drops.clone())));
    let p = h.as_ptr() as usize;
    handle_registry::retain(ptr(p)).unwrap();
    let g = handle_registry::restore::<Owned>(ptr(p)).unwrap();
    assert_eq!(h.into_inner().err(), Some(Error::Busy));
    drop(g);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(Registry::global().ref_count(ptr(p)), Ok(1));
    assert_eq!(handle_registry::unref(ptr(p)), Ok(()));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

/// A member whose `Drop` saves one more member into its group.
struct Respawn(&'static Group<'static>, bool);

impl Drop for Respawn {
    fn drop(&mut self) {
        if self.1 {
            let _ = self.0.save(Respawn(self.0, false));
        }
    }
}

// Promise (src/kinds/group.rs, `clear`): "Removes every handle that was a
// live member when it started"; a handle saved into the group meanwhile
// "stays a member until the next `clear`". (The review found the first
// wording, "every live handle", wrong for this case; the docs now say
// this.) Attack: a member whose `Drop` (run by `clear`) saves a new
// member: it is live after `clear` returns, and a second `clear` removes
// it.
#[test]
fn clear_leaves_members_saved_by_the_drops_it_ran() {
    // In statics, as above.
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    static GROUP: OnceLock<Group<'static>> = OnceLock::new();
    let r: &'static Registry = REGISTRY.get_or_init(Registry::new);
    let group: &'static Group<'static> = GROUP.get_or_init(|| r.group());
    let _ = group.save(Respawn(group, true));
    assert_eq!(group.clear(), 1);
    assert_eq!(group.len(), 1, "saved during the clear, still a member");
    assert_eq!(r.len(), 1);
    assert_eq!(group.clear(), 1);
    assert!(r.is_empty());
}

/// Restores of one handle in a row after which a thread has surely parked
/// its borrow (the crate parks after 1024 restores in a row, after 4 under
/// Miri).
const PARK: usize = if cfg!(miri) { 8 } else { 1100 };

/// A value private to the parked-borrow tests: its number and a drop count.
struct Hot(u64, #[allow(dead_code)] Counted);

/// Restores `p` often enough that this thread parks its borrow (README:
/// "after 1024 restores of one handle in a row"; 4 under Miri), checking
/// the value.
fn park(p: usize, v: u64) {
    for _ in 0..PARK {
        assert_eq!(handle_registry::restore::<Hot>(ptr(p)).unwrap().0, v);
    }
}

// Promise (README Errors, `Stale`: "never resolves again, not even to a
// later value in the same slot"; "Parked borrows": "Nothing changes in
// what you can do"). Attack: a thread parks its borrow of a handle (which
// becomes its hot handle), the handle is unreffed (here, then on another
// thread), and the freed index comes straight back from the cache for a
// new value of the same type, which is parked in turn. The old handle,
// through every entry point, must answer `Stale`; each value is dropped
// once.
#[test]
fn a_parked_hot_handle_whose_slot_the_cache_reuses() {
    let _w = watchdog("a_parked_hot_handle_whose_slot_the_cache_reuses");
    let drops = Arc::new(AtomicUsize::new(0));
    let mut made = 0;
    let stale = |p: usize| {
        assert_eq!(
            handle_registry::restore::<Hot>(ptr(p)).err(),
            Some(Error::Stale)
        );
        assert_eq!(
            handle_registry::restore_with(ptr(p), |h: &mut Hot| h.0),
            Err(Error::Stale)
        );
        assert_eq!(
            handle_registry::take::<Hot>(ptr(p)).err(),
            Some(Error::Stale)
        );
        assert_eq!(handle_registry::unref(ptr(p)), Err(Error::Stale));
    };
    for round in 0..rounds(20, 1) as u64 {
        // On this thread.
        let p = handle_registry::save(Hot(round, Counted(drops.clone()))) as usize;
        park(p, round);
        assert_eq!(handle_registry::unref(ptr(p)), Ok(()));
        made += 1;
        assert_eq!(drops.load(Ordering::SeqCst), made);
        let q = handle_registry::save(Hot(round + 1000, Counted(drops.clone()))) as usize;
        assert_eq!(p & INDEX_MASK, q & INDEX_MASK, "the cache hands it back");
        stale(p);
        park(q, round + 1000);
        stale(p);
        // Across threads: `t` parks `q`, this thread unrefs it and saves
        // `s` into its slot, `t` meets the old handle, then parks `s`.
        let (tx, rx) = mpsc::channel::<usize>();
        let (back_tx, back_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            park(q, round + 1000);
            back_tx.send(()).unwrap();
            let s = rx.recv().unwrap();
            // `q`'s value may be dropped here, by this stale answer.
            assert_eq!(
                handle_registry::restore::<Hot>(ptr(q)).err(),
                Some(Error::Stale)
            );
            park(s, round + 2000);
            back_tx.send(()).unwrap();
            rx.recv().unwrap();
            assert_eq!(
                handle_registry::restore_with(ptr(s), |h: &mut Hot| h.0),
                Err(Error::Stale)
            );
            assert_eq!(
                handle_registry::restore::<Hot>(ptr(q)).err(),
                Some(Error::Stale)
            );
        });
        back_rx.recv().unwrap();
        assert_eq!(handle_registry::unref(ptr(q)), Ok(()));
        made += 1;
        let s = handle_registry::save(Hot(round + 2000, Counted(drops.clone()))) as usize;
        assert_eq!(q & INDEX_MASK, s & INDEX_MASK, "the cache hands it back");
        tx.send(s).unwrap();
        back_rx.recv().unwrap();
        // Takes it from the parked owner (membarrier), then unrefs.
        assert_eq!(
            handle_registry::restore::<Hot>(ptr(s)).unwrap().0,
            round + 2000
        );
        assert_eq!(handle_registry::unref(ptr(s)), Ok(()));
        made += 1;
        tx.send(0).unwrap();
        t.join().unwrap();
        stale(q);
        stale(s);
        assert_eq!(drops.load(Ordering::SeqCst), made);
    }
    assert_eq!(live_of(std::any::type_name::<Hot>()), 0);
}

// Promise (README "Threads and re-entrancy": "`unref` of a borrowed value
// makes the handle `Stale` at once; the value is dropped when the last
// guard is released ... a call that raced it may do the drop instead ...
// that thread's `restore` or `restore_with` that answered `Stale` (of
// that handle, or of an older handle of the same slot whose value is
// gone)"; values dropped exactly once; `Stale` never resolves to a later
// value). Attack: one thread keeps restoring the newest handle of one slot
// (parking it) and some older ones, while another unrefs the newest from
// under it and saves the next value into the same index through its
// cache, again and again.
#[test]
fn parked_owner_racing_unrefs_and_reuse_of_its_slot() {
    let _w = watchdog("parked_owner_racing_unrefs_and_reuse_of_its_slot");
    let drops = Arc::new(AtomicUsize::new(0));
    let newest = Mutex::new((0usize, 0u64));
    let done = std::sync::atomic::AtomicBool::new(false);
    // The newest value the restorer has restored `PARK` times (parked).
    let parked_v = AtomicUsize::new(usize::MAX);
    let mut made = 1usize;
    let first = handle_registry::save(Hot(0, Counted(drops.clone()))) as usize;
    *newest.lock().unwrap() = (first, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut older: Vec<(usize, u64)> = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let (p, v) = *newest.lock().unwrap();
                for i in 0..PARK {
                    let r = if i % 2 == 0 {
                        handle_registry::restore::<Hot>(ptr(p)).map(|g| g.0)
                    } else {
                        handle_registry::restore_with(ptr(p), |h: &mut Hot| h.0)
                    };
                    match r {
                        Ok(got) => assert_eq!(got, v, "a handle reached another value"),
                        Err(e) => {
                            assert_eq!(e, Error::Stale);
                            break;
                        }
                    }
                    if i == PARK - 1 {
                        parked_v.store(v as usize, Ordering::SeqCst);
                    }
                }
                for &(q, w) in older.iter().rev().take(3) {
                    if let Ok(got) = handle_registry::restore_with(ptr(q), |h: &mut Hot| h.0) {
                        assert_eq!(got, w, "a stale handle reached a later value");
                    }
                }
                older.push((p, v));
            }
        });
        for v in 1..=rounds(300, 5) as u64 {
            // Mostly from under a parked borrow; every third, mid-streak.
            if v % 3 != 0 {
                while parked_v.load(Ordering::SeqCst) != (v - 1) as usize {
                    std::thread::yield_now();
                }
            }
            let (p, _) = *newest.lock().unwrap();
            assert_eq!(handle_registry::unref(ptr(p)), Ok(()));
            let q = handle_registry::save(Hot(v, Counted(drops.clone()))) as usize;
            made += 1;
            *newest.lock().unwrap() = (q, v);
        }
        done.store(true, Ordering::SeqCst);
    });
    let (p, _) = *newest.lock().unwrap();
    assert_eq!(handle_registry::unref(ptr(p)), Ok(()));
    assert_eq!(drops.load(Ordering::SeqCst), made);
}

// Promise (README "Panics" / "Threads and re-entrancy": "A value dropped
// while its thread unwinds (... an `unref` in a `Drop`) has its panic
// caught and dropped: never a double-panic abort"). Attack: a thread
// panics while it owns `Handle`s and a group of values whose `Drop`
// panics, and while its free-index cache holds indices: the unwind drops
// them (freeing indices into the cache), then the thread's `Flush` gives
// the cache back. No abort; every value dropped once; later saves on
// other threads never share a slot with a live handle.
#[test]
fn a_thread_unwinding_through_handles_and_groups_of_panicking_drops() {
    if !in_child("a_thread_unwinding_through_handles_and_groups_of_panicking_drops") {
        return;
    }
    let _w = watchdog("a_thread_unwinding_through_handles_and_groups_of_panicking_drops");
    let drops = Arc::new(AtomicUsize::new(0));
    let mut kept: Vec<(usize, u64)> = Vec::new();
    for round in 0..rounds(10, 1) {
        let d = drops.clone();
        let (tx, rx) = mpsc::channel::<(usize, u64)>();
        let out = std::thread::spawn(move || {
            let _handles: Vec<Handle<'static, PanicOnDrop>> = (0..3)
                .map(|_| Handle::new(PanicOnDrop(d.clone())))
                .collect();
            let group = Registry::global().group();
            for _ in 0..3 {
                let _ = group.save(PanicOnDrop(d.clone()));
            }
            // Warm the cache, and keep some values alive past the thread.
            let tmp: Vec<_> = (0..rounds(100, 40) as u64)
                .map(handle_registry::save)
                .collect();
            for (i, p) in tmp.into_iter().enumerate() {
                if i % 4 == 0 {
                    tx.send((p as usize, i as u64)).unwrap();
                } else {
                    assert_eq!(handle_registry::unref(p), Ok(()));
                }
            }
            panic!("the callback's own panic");
        })
        .join();
        assert!(out.is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 6 * (round + 1));
        kept.extend(rx.iter());
        let here: Vec<(usize, u64)> = (0..rounds(100, 40) as u64)
            .map(|i| (handle_registry::save(i + 1000) as usize, i + 1000))
            .collect();
        let mut all = kept.clone();
        all.extend(here.iter().copied());
        assert_distinct(&all);
        for (h, v) in here {
            assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
        }
    }
    for (h, v) in kept {
        assert_eq!(handle_registry::take::<u64>(ptr(h)), Ok(v));
    }
}

// Promise (README table: "leak report: each live value with its type and
// save site"; "`mem::forget` of a guard leaks its borrow: ... dropped only
// with its registry"). Probe: a value unreffed under a forgotten guard is
// never dropped while its registry lives, yet the leak report (which
// lists live values only) does not show it, and `len` does not count it.
// Not a broken promise: the review found it undocumented, and
// `leak_report`'s rustdoc and README's `mem::forget` note now say so.
#[test]
fn a_forgotten_guards_orphan_is_not_in_the_leak_report() {
    let r = Registry::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let p = r.save(Counted(drops.clone()));
    std::mem::forget(r.restore::<Counted>(p).unwrap());
    assert_eq!(r.unref(p), Ok(()));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "kept for the forgotten guard"
    );
    assert!(r.leak_report().entries().is_empty());
    assert_eq!(r.len(), 0);
    drop(r);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped with its registry");
}
