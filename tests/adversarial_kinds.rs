//! Adversarial review of the handle kinds (`src/kinds/`): counted, weak,
//! thread-affine (`local`) handles, groups, and the owning `Handle<'r, T>`.
//! Public API only. Each test names the promise it attacks.
//!
//! One test found a bug, since fixed: `drop_deferred` during an unwind
//! aborted the process.

mod common;

use common::{in_child, ptr, rounds, watchdog, OnDrop};
use handle_registry::kinds::local::drop_deferred;
use handle_registry::{Error, Handle, Registry};
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::ThreadId;

/// Counts its drops and records on which thread it was dropped.
struct Tracked {
    drops: Arc<AtomicUsize>,
    dropped_on: Arc<std::sync::Mutex<Vec<ThreadId>>>,
}

impl Tracked {
    fn new(drops: &Arc<AtomicUsize>, on: &Arc<std::sync::Mutex<Vec<ThreadId>>>) -> Tracked {
        Tracked {
            drops: drops.clone(),
            dropped_on: on.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
        self.dropped_on
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }
}

fn tracking() -> (Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<ThreadId>>>) {
    (Arc::new(AtomicUsize::new(0)), Arc::default())
}

/// Panics when dropped.
struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("PanicsOnDrop");
    }
}

/// The handle layout (README "Handle layout"): index + 1, registry id,
/// generation, low to high. (`handle::Layout` is not public.)
#[cfg(target_pointer_width = "64")]
const INDEX_BITS: (u32, u32) = (24, 8);
#[cfg(not(target_pointer_width = "64"))]
const INDEX_BITS: (u32, u32) = (16, 4);

/// `(index, registry, generation)` of a handle.
fn decode(h: u64) -> (u64, u64, u64) {
    let (i, r) = INDEX_BITS;
    let index = (h & ((1 << i) - 1)).wrapping_sub(1);
    (index, (h >> i) & ((1 << r) - 1), h >> (i + r))
}

fn encode(index: u64, registry: u64, generation: u64) -> u64 {
    let (i, r) = INDEX_BITS;
    (index + 1) | registry << i | generation << (i + r)
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn raw(p: *mut c_void) -> u64 {
    p.addr() as u64
}

/// Runs every kind API on `p`, which names no live value a caller could
/// own; each must be an `Err` (a panic is caught by the caller).
fn every_kind_api_refuses(r: &Registry, p: *mut c_void) {
    let what = format!("{:#x}", p.addr());
    assert!(r.restore::<u32>(p).is_err(), "restore {what}");
    assert!(r.restore_ref::<u32>(p).is_err(), "restore_ref {what}");
    assert!(r.check::<u32>(p).is_err(), "check {what}");
    assert!(r.ref_count(p).is_err(), "ref_count {what}");
    assert!(r.restore_weak::<u32>(p).is_err(), "restore_weak {what}");
    assert!(r.restore_local::<u32>(p).is_err(), "restore_local {what}");
    if let Ok(h) = Handle::<u32>::from_ptr_in(r, p) {
        let _ = h.into_ptr(); // do not unref what it wrongly claimed
        panic!("from_ptr_in accepted {what}");
    }
    assert!(r.retain(p).is_err(), "retain {what}");
    assert!(r.unref(p).is_err(), "unref {what}");
    assert!(r.take::<u32>(p).is_err(), "take {what}");
}

/// Promise (lib.rs, README "Errors"): no integer C hands back causes UB or
/// a panic; forged, bit-flipped, NULL, another registry's handles of every
/// kind are an `Err` from every kind API (`retain`, `ref_count`,
/// `restore_weak`, `restore_local`, `Handle::from_ptr_in`, `unref`,
/// `take`), and the real handles are unharmed. Held.
#[test]
fn forged_integers_are_refused_by_every_kind_api() {
    let r = Registry::new();
    let other = Registry::new();
    let arc = Arc::new(7u32);
    let g = r.group();
    let mut real = vec![
        r.save(1u32),
        r.save(2u32),
        r.save_weak(&arc),
        r.save_local(Cell::new(3u32)),
        g.save(4u32),
    ];
    r.retain(real[1]).unwrap();
    let foreign = [
        other.save(5u32),
        other.save_weak(&arc),
        other.save_local(6u32),
    ];
    // A stale one of each kind.
    for p in [r.save(0u32), r.save_weak(&arc), r.save_local(0u32)] {
        r.unref(p).unwrap();
        real.push(p); // stale: refused like the forged ones below
    }
    let live: Vec<u64> = real[..5].iter().map(|&p| raw(p)).collect();
    let mut forged: Vec<u64> = vec![0, 1, u64::MAX, 0x8000_0000_0000_0000];
    forged.extend(foreign.iter().map(|&p| raw(p)));
    forged.extend(real[5..].iter().map(|&p| raw(p)));
    for &h in &live {
        for bit in 0..64 {
            forged.push(h ^ (1 << bit));
        }
        forged.push(h.wrapping_add(1));
        forged.push(h.wrapping_sub(1));
    }
    let id = decode(live[0]).1;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..rounds(4000, 100) {
        let x = xorshift(&mut seed);
        forged.push(x);
        // Structured: this registry's id, small index and generation.
        forged.push(encode(x % 64, id, (x >> 8) % 4));
    }
    forged.retain(|f| !live.contains(f) && (*f as usize as u64) == *f);
    let result = catch_unwind(AssertUnwindSafe(|| {
        for &f in &forged {
            every_kind_api_refuses(&r, ptr(f as usize));
        }
    }));
    assert!(result.is_ok(), "a forged integer panicked");
    // The real ones are unharmed.
    assert_eq!(*r.restore::<u32>(real[0]).unwrap(), 1);
    assert_eq!(r.ref_count(real[1]), Ok(2));
    assert_eq!(*r.restore_weak::<u32>(real[2]).unwrap(), 7);
    assert_eq!(r.restore_local::<Cell<u32>>(real[3]).unwrap().get(), 3);
    assert_eq!(*r.restore::<u32>(real[4]).unwrap(), 4);
    assert_eq!(g.len(), 1);
    for &p in &foreign {
        other.unref(p).unwrap();
    }
    drop(g);
    for p in [real[0], real[1], real[1], real[2], real[3]] {
        r.unref(p).unwrap();
    }
    assert!(r.is_empty());
}

/// Promise (README "Errors", `Stale`/`Invalid`): a handle of a dropped
/// registry never resolves, of any kind, even when a new registry gets the
/// same registry id and saves the same kinds and types into the same
/// slots. Held.
#[test]
fn a_dead_registrys_kind_handles_never_resolve_in_its_heir() {
    let arc = Arc::new(11u32);
    let a = Registry::new();
    let old = [a.save(1u32), a.save_weak(&arc), a.save_local(2u32), {
        let p = a.save(3u32);
        a.retain(p).unwrap();
        p
    }];
    let id = decode(raw(old[0])).1;
    drop(a);
    // Ids are reused; other tests may grab it first: try a few.
    let mut kept = Vec::new();
    let heir = loop {
        let b = Registry::new();
        let p = b.save(0u8);
        let same = decode(raw(p)).1 == id;
        b.unref(p).unwrap();
        if same || kept.len() > 8 {
            break same.then_some(b);
        }
        kept.push(b);
    };
    let Some(b) = heir else {
        eprintln!("registry id not reused (other tests hold it): skipped");
        return;
    };
    let new = [
        b.save(1u32),
        b.save_weak(&arc),
        b.save_local(2u32),
        b.save(3u32),
    ];
    for &p in &old {
        every_kind_api_refuses(&b, p);
    }
    for p in new {
        b.unref(p).unwrap();
    }
    assert!(b.is_empty());
}

/// Promise (weak.rs module notes, `restore_weak` docs): "a strong handle is
/// never mistaken for a weak one" and vice versa; a weak handle is a
/// `WrongType` to `restore::<Arc<T>>`, `take`, `Handle::from_ptr_in`,
/// `restore_local`; a saved `Arc<T>` is a `WrongType` to `restore_weak`;
/// a local handle is a `WrongType` to `restore_weak` and plain `restore`.
/// Held.
#[test]
fn kinds_and_arc_types_never_mix() {
    let r = Registry::new();
    let a = Arc::new(5u32);
    let weak = r.save_weak(&a);
    let strong = r.save(a.clone());
    let local = r.save_local(a.clone());
    let wrong = |e: Result<(), Error>| matches!(e, Err(Error::WrongType { .. }));
    assert!(wrong(r.restore::<Arc<u32>>(weak).map(drop)));
    assert!(wrong(r.restore_ref::<Arc<u32>>(weak).map(drop)));
    assert!(wrong(r.take::<Arc<u32>>(weak).map(drop)));
    assert!(wrong(r.check::<Arc<u32>>(weak)));
    assert!(wrong(Handle::<Arc<u32>>::from_ptr_in(&r, weak).map(|h| {
        let _ = h.into_ptr();
    })));
    assert!(wrong(r.restore_local::<Arc<u32>>(weak).map(drop)));
    assert!(wrong(r.restore_local::<u32>(weak).map(drop)));
    assert!(wrong(r.restore_weak::<u32>(strong).map(drop)));
    assert!(wrong(r.restore_weak::<Arc<u32>>(strong).map(drop)));
    assert!(wrong(r.restore_local::<Arc<u32>>(strong).map(drop)));
    assert!(wrong(r.restore_weak::<u32>(local).map(drop)));
    assert!(wrong(r.restore_weak::<Arc<u32>>(local).map(drop)));
    assert!(wrong(r.restore::<Arc<u32>>(local).map(drop)));
    assert!(wrong(r.take::<Arc<u32>>(local).map(drop)));
    // Nothing changed.
    assert_eq!(Arc::strong_count(&a), 3);
    assert_eq!(*r.restore_weak::<u32>(weak).unwrap(), 5);
    assert_eq!(**r.restore_local::<Arc<u32>>(local).unwrap(), 5);
    for p in [weak, strong, local] {
        r.unref(p).unwrap();
    }
    assert_eq!(Arc::strong_count(&a), 1);
    assert!(r.is_empty());
}

/// Promise (README "Errors", `Stale`: "never resolves again, not even to
/// a later value in the same slot"): a weak handle unreffed (or swept) and
/// its slot reused by another weak handle of the same type upgrades to
/// `Stale`, never to the new object. Held.
#[test]
fn weak_upgrade_after_index_reuse_is_stale() {
    let r = Registry::new();
    let first = Arc::new(1u32);
    let old = r.save_weak(&first);
    r.unref(old).unwrap();
    let second = Arc::new(2u32);
    let new = r.save_weak(&second);
    let (o, n) = (decode(raw(old)), decode(raw(new)));
    assert_eq!(o.0, n.0, "the slot was reused");
    assert_eq!(r.restore_weak::<u32>(old), Err(Error::Stale));
    assert_eq!(*r.restore_weak::<u32>(new).unwrap(), 2);
    // Through a sweep this time: the object dies, the sweep frees the slot.
    drop(second);
    assert_eq!(r.sweep_weak(), 1);
    let third = Arc::new(3u32);
    let newer = r.save_weak(&third);
    assert_eq!(decode(raw(newer)).0, n.0);
    assert_eq!(r.restore_weak::<u32>(old), Err(Error::Stale));
    assert_eq!(r.restore_weak::<u32>(new), Err(Error::Stale));
    assert_eq!(*r.restore_weak::<u32>(newer).unwrap(), 3);
    // A stale weak handle's retain and unref are refused too.
    assert_eq!(r.retain(new), Err(Error::Stale));
    assert_eq!(r.unref(new), Err(Error::Stale));
    assert_eq!(r.ref_count(newer), Ok(1));
    r.unref(newer).unwrap();
    assert!(r.is_empty());
}

/// Promise (weak.rs): an upgrade racing the last strong `Arc`'s drop
/// either yields a live object (kept alive by the returned `Arc`) or
/// `Stale`; the object is dropped once, and `Stale` for good after. Held.
#[test]
fn weak_upgrade_racing_the_last_arc_drop() {
    let _w = watchdog("weak_upgrade_racing_the_last_arc_drop");
    let r = Registry::new();
    for _ in 0..rounds(200, 3) {
        let (drops, on) = tracking();
        let a = Arc::new(Tracked::new(&drops, &on));
        let h = r.save_weak(&a).addr();
        let start = Barrier::new(3);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    start.wait();
                    let mut was_stale = false;
                    for _ in 0..50 {
                        match r.restore_weak::<Tracked>(ptr(h)) {
                            Ok(t) => {
                                assert!(!was_stale, "revived after Stale");
                                assert_eq!(t.drops.load(SeqCst), 0);
                            }
                            Err(e) => {
                                assert_eq!(e, Error::Stale);
                                was_stale = true;
                            }
                        }
                    }
                });
            }
            start.wait();
            drop(a);
        });
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(r.restore_weak::<Tracked>(ptr(h)).err(), Some(Error::Stale));
    }
    r.sweep_weak();
    assert!(r.is_empty());
}

/// Promise (`sweep_weak` docs): a dead weak handle that C `retain`ed is
/// removed "with all its references"; C's later unrefs are `Stale`, no
/// slot stays live. While the object lives, unrefs drop one reference each.
/// Held.
#[test]
fn a_retained_weak_handle_is_swept_with_all_its_references() {
    let r = Registry::new();
    let a = Arc::new(String::from("weak"));
    let p = r.save_weak(&a);
    r.retain(p).unwrap();
    r.retain(p).unwrap();
    r.unref(p).unwrap();
    assert_eq!(r.ref_count(p), Ok(2));
    assert_eq!(r.restore_weak::<String>(p).unwrap().as_str(), "weak");
    drop(a);
    assert_eq!(r.restore_weak::<String>(p), Err(Error::Stale));
    assert_eq!(r.sweep_weak(), 1);
    assert!(r.is_empty());
    assert_eq!(r.unref(p), Err(Error::Stale));
    assert_eq!(r.sweep_weak(), 0);
}

/// Promise (lib.rs "Threads, re-entrancy"): a value's `Drop` may use the
/// registry freely. A weak handle's object dropped by the callback that
/// upgraded it, whose `Drop` upgrades its own handle (`Stale`), sweeps and
/// saves new weak handles: no deadlock, dropped once. Held.
#[test]
fn a_weak_objects_drop_may_sweep_and_save_weak() {
    let _w = watchdog("a_weak_objects_drop_may_sweep_and_save_weak");
    static R: OnceLock<Registry> = OnceLock::new();
    static OWN: AtomicUsize = AtomicUsize::new(0);
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    struct Reenters;
    impl Drop for Reenters {
        fn drop(&mut self) {
            DROPS.fetch_add(1, SeqCst);
            let r = R.get().unwrap();
            let own = ptr(OWN.load(SeqCst));
            let mut seen = SEEN.lock().unwrap();
            seen.push(format!("{:?}", r.restore_weak::<Reenters>(own).err()));
            seen.push(format!("{}", r.sweep_weak()));
            let fresh = Arc::new(1u8);
            let q = r.save_weak(&fresh);
            seen.push(format!("{}", *r.restore_weak::<u8>(q).unwrap()));
            r.unref(q).unwrap();
        }
    }
    let r = R.get_or_init(Registry::new);
    let a = Arc::new(Reenters);
    let p = r.save_weak(&a);
    OWN.store(p.addr(), SeqCst);
    // Fill the list so that saves sweep too.
    let dead: Vec<_> = (0..20).map(|_| r.save_weak(&Arc::new(0u8))).collect();
    let upgraded = r.restore_weak::<Reenters>(p).unwrap();
    drop(a);
    drop(upgraded); // the callback's Arc is the last: dropped here
    assert_eq!(DROPS.load(SeqCst), 1);
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen[0], "Some(Stale)");
    assert_eq!(seen[2], "1");
    r.sweep_weak();
    for q in dead {
        assert_eq!(r.restore_weak::<u8>(q), Err(Error::Stale));
    }
    assert!(r.is_empty(), "{} left", r.len());
}

/// Promise (counted.rs): `take` "while more than one reference is out
/// answers Retained and changes nothing". So a thread whose `retain`
/// succeeded holds a reference: its `restore` and its matching `unref`
/// must succeed, whatever `take`s race them; the value is returned by
/// exactly one `take` (or dropped once). Held.
#[test]
fn a_successful_retain_is_a_reference_no_racing_take_steals() {
    let _w = watchdog("a_successful_retain_is_a_reference_no_racing_take_steals");
    let r = Registry::new();
    for _ in 0..rounds(60, 2) {
        let (drops, on) = tracking();
        let h = r.save(Tracked::new(&drops, &on)).addr();
        let done = AtomicUsize::new(0);
        let taken = std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..rounds(100, 5) {
                        if r.retain(ptr(h)).is_ok() {
                            assert!(r.restore::<Tracked>(ptr(h)).is_ok(), "retained, not live");
                            assert_eq!(r.unref(ptr(h)), Ok(()), "retained, unref refused");
                        }
                    }
                    done.fetch_add(1, SeqCst);
                });
            }
            let mut taken = None;
            while taken.is_none() && done.load(SeqCst) < 3 {
                match r.take::<Tracked>(ptr(h)) {
                    Ok(v) => taken = Some(v),
                    Err(e) => assert_eq!(e, Error::Retained),
                }
            }
            taken
        });
        let v = match taken {
            Some(v) => v,
            None => r.take::<Tracked>(ptr(h)).unwrap(),
        };
        assert_eq!(drops.load(SeqCst), 0);
        drop(v);
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(r.unref(ptr(h)), Err(Error::Stale));
    }
    assert!(r.is_empty());
}

/// Promise (counted.rs, lib.rs): a counted value released to zero while
/// another thread borrows it is `Stale` at once and dropped once, when the
/// last guard ends, on that guard's thread; exclusive and shared borrows.
/// Held.
#[test]
fn released_to_zero_while_borrowed_elsewhere_drops_on_the_guards_thread() {
    let _w = watchdog("released_to_zero_while_borrowed_elsewhere_drops_on_the_guards_thread");
    let r = Registry::new();
    for shared in [false, true] {
        let (drops, on) = tracking();
        let h = r.save(Tracked::new(&drops, &on)).addr();
        r.retain(ptr(h)).unwrap();
        let (borrowed, released) = (Barrier::new(2), Barrier::new(2));
        let guard_thread = std::thread::scope(|s| {
            let t = s.spawn(|| {
                if shared {
                    let g = r.restore_ref::<Tracked>(ptr(h)).unwrap();
                    borrowed.wait();
                    released.wait();
                    assert_eq!(g.drops.load(SeqCst), 0);
                } else {
                    let g = r.restore::<Tracked>(ptr(h)).unwrap();
                    borrowed.wait();
                    released.wait();
                    assert_eq!(g.drops.load(SeqCst), 0);
                }
                std::thread::current().id()
            });
            borrowed.wait();
            r.unref(ptr(h)).unwrap();
            r.unref(ptr(h)).unwrap(); // the last
            assert_eq!(r.retain(ptr(h)), Err(Error::Stale));
            assert_eq!(r.ref_count(ptr(h)), Err(Error::Stale));
            assert_eq!(drops.load(SeqCst), 0);
            released.wait();
            t.join().unwrap()
        });
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(*on.lock().unwrap(), [guard_thread]);
    }
    assert!(r.is_empty());
}

/// Promise (counted.rs: "a dying value is never revived"; lib.rs: `Drop`
/// may use the registry): a counted value's `Drop`, run by its last
/// `unref`, sees its own handle `Stale` for `retain`, `unref`, `restore`,
/// `ref_count`. Held.
#[test]
fn a_counted_values_drop_cannot_revive_it() {
    static OWN: AtomicUsize = AtomicUsize::new(0);
    static SEEN: std::sync::Mutex<Vec<Error>> = std::sync::Mutex::new(Vec::new());
    struct Reviver;
    impl Drop for Reviver {
        fn drop(&mut self) {
            let r = Registry::global();
            let p = ptr(OWN.load(SeqCst));
            let mut seen = SEEN.lock().unwrap();
            seen.push(r.retain(p).unwrap_err());
            seen.push(r.unref(p).unwrap_err());
            seen.push(r.restore::<Reviver>(p).map(drop).unwrap_err());
            seen.push(r.ref_count(p).unwrap_err());
        }
    }
    let r = Registry::global();
    let p = r.save(Reviver);
    OWN.store(p.addr(), SeqCst);
    r.retain(p).unwrap();
    r.unref(p).unwrap();
    r.unref(p).unwrap();
    assert_eq!(*SEEN.lock().unwrap(), [Error::Stale; 4]);
    assert_eq!(r.retain(p), Err(Error::Stale));
}

/// Promise (owned.rs `into_inner`, `Drop`): a `Handle` dropped while C
/// holds retained references drops only its own; two `Handle`s claiming
/// one pointer (`from_ptr_in` twice) never drop the value twice. Held.
#[test]
fn owning_handles_and_c_references() {
    let r = Registry::new();
    let (drops, on) = tracking();
    let h = r.handle(Tracked::new(&drops, &on));
    let p = h.as_ptr();
    r.retain(p).unwrap();
    drop(h);
    assert_eq!(r.ref_count(p), Ok(1));
    assert_eq!(drops.load(SeqCst), 0);
    let a = Handle::<Tracked>::from_ptr_in(&r, p).unwrap();
    let b = Handle::<Tracked>::from_ptr_in(&r, p).unwrap();
    drop(a);
    assert_eq!(drops.load(SeqCst), 1);
    assert_eq!(b.into_inner().err(), Some(Error::Stale));
    assert_eq!(drops.load(SeqCst), 1);
    assert!(r.is_empty());
}

/// Promise (group.rs module notes): two threads clearing one group at
/// once share the work; each member is removed by exactly one `clear`
/// (the counts they return add up) and dropped once. Held.
#[test]
fn concurrent_clears_remove_each_member_once() {
    let _w = watchdog("concurrent_clears_remove_each_member_once");
    let r = Registry::new();
    let g = r.group();
    let n = rounds(64, 6);
    for _ in 0..rounds(50, 2) {
        let (drops, on) = tracking();
        let ps: Vec<usize> = (0..n)
            .map(|_| g.save(Tracked::new(&drops, &on)).addr())
            .collect();
        r.unref(ptr(ps[0])).unwrap(); // C freed one
        let start = Barrier::new(2);
        let (a, b) = std::thread::scope(|s| {
            let t = s.spawn(|| {
                start.wait();
                g.clear()
            });
            start.wait();
            let a = g.clear();
            (a, t.join().unwrap())
        });
        assert_eq!(a + b, n - 1);
        assert_eq!(drops.load(SeqCst), n);
        assert!(g.is_empty());
        assert!(r.is_empty());
    }
}

/// Promise (group.rs: "a borrowed one when its last guard ends, on that
/// guard's thread"; lib.rs: `Drop` may use the registry): a group cleared
/// while another thread borrows a member; that member's `Drop`, run on the
/// borrowing thread while the first `clear` may still run, clears the
/// group again and saves into it. No deadlock; every value dropped once;
/// the borrowed one on the borrowing thread. Held.
#[test]
fn clear_while_a_member_is_borrowed_elsewhere_and_its_drop_reenters() {
    let _w = watchdog("clear_while_a_member_is_borrowed_elsewhere_and_its_drop_reenters");
    static R: OnceLock<Registry> = OnceLock::new();
    static G: OnceLock<handle_registry::Group<'static>> = OnceLock::new();
    static REENTERED: AtomicUsize = AtomicUsize::new(0);
    struct Reenters(#[allow(dead_code)] Tracked);
    impl Drop for Reenters {
        fn drop(&mut self) {
            let g = G.get().unwrap();
            g.clear();
            let p = g.save(7u64);
            assert!(R.get().unwrap().restore::<u64>(p).is_ok());
            REENTERED.fetch_add(1, SeqCst);
        }
    }
    let r = R.get_or_init(Registry::new);
    let g = G.get_or_init(|| r.group());
    let (drops, on) = tracking();
    let mut ps = Vec::new();
    for _ in 0..10 {
        ps.push(g.save(Tracked::new(&drops, &on)).addr());
    }
    let borrowed = g.save(Reenters(Tracked::new(&drops, &on))).addr();
    for _ in 0..10 {
        ps.push(g.save(Tracked::new(&drops, &on)).addr());
    }
    let (held, release) = (Barrier::new(2), Barrier::new(2));
    let borrower = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let guard = r.restore::<Reenters>(ptr(borrowed)).unwrap();
            held.wait();
            release.wait();
            drop(guard); // the orphan's last borrower: dropped here
            std::thread::current().id()
        });
        held.wait();
        assert_eq!(g.clear(), 21);
        assert_eq!(r.check::<Reenters>(ptr(borrowed)), Err(Error::Stale));
        assert_eq!(drops.load(SeqCst), 20, "the borrowed one not yet");
        release.wait();
        t.join().unwrap()
    });
    assert_eq!(REENTERED.load(SeqCst), 1);
    assert_eq!(drops.load(SeqCst), 21);
    assert_eq!(
        on.lock()
            .unwrap()
            .iter()
            .filter(|&&t| t == borrower)
            .count(),
        1
    );
    // The save made by the `Drop` stays, a member of the group.
    assert_eq!((g.len(), r.len()), (1, 1));
    assert_eq!(g.clear(), 1);
    assert!(r.is_empty());
}

/// Promise (README "Panics": "A value dropped while its thread unwinds
/// ... has its panic caught and dropped: never a double-panic abort";
/// `Group::clear` resumes "unless the thread is already unwinding"): a
/// group dropped by an unwind, whose members' `Drop`s panic, does not
/// abort. Run in a child process. Held.
#[test]
fn a_group_dropped_by_an_unwind_with_panicking_members_does_not_abort() {
    if !in_child("a_group_dropped_by_an_unwind_with_panicking_members_does_not_abort") {
        return;
    }
    let r = Registry::new();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let g = r.group();
        let _ = g.save(PanicsOnDrop);
        let _ = g.save(PanicsOnDrop);
        let _ = g.save(1u8);
        panic!("outer");
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"outer"));
    assert!(r.is_empty());
}

/// Promise (group.rs `with_limit`, `save` docs): a limit of 0 refuses
/// every save: `try_save` gives the value back with `Full`, `save` panics
/// naming the limit and drops the value once first. Held.
#[test]
fn a_group_with_limit_zero() {
    let r = Registry::new();
    let g = r.group().with_limit(0);
    let (drops, on) = tracking();
    let (e, v) = g.try_save(Tracked::new(&drops, &on)).unwrap_err();
    assert_eq!(e, Error::Full);
    assert_eq!(drops.load(SeqCst), 0);
    drop(v);
    let msg = catch_unwind(AssertUnwindSafe(|| g.save(Tracked::new(&drops, &on)))).unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("group is at its limit"), "{msg}");
    assert!(msg.contains("of at most 0"), "{msg}");
    assert_eq!(drops.load(SeqCst), 2);
    assert!(r.is_empty());
}

/// Promise (group.rs: a retained member "goes with all its references",
/// handles C already freed are skipped): one member retained and unreffed
/// once by C, another taken by C, a third retained twice; `clear` removes
/// the two live ones and counts them; C's late unrefs are `Stale`. Held.
#[test]
fn clear_with_members_retained_taken_and_partly_released() {
    let r = Registry::new();
    let g = r.group();
    let (drops, on) = tracking();
    let a = g.save(Tracked::new(&drops, &on));
    let b = g.save(Tracked::new(&drops, &on));
    let c = g.save(Tracked::new(&drops, &on));
    r.retain(a).unwrap();
    r.unref(a).unwrap(); // back to one reference, still counted
    drop(r.take::<Tracked>(b).unwrap());
    r.retain(c).unwrap();
    r.retain(c).unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(g.clear(), 2);
    assert_eq!(drops.load(SeqCst), 3);
    for p in [a, b, c, c, c] {
        assert_eq!(r.unref(p), Err(Error::Stale));
    }
    assert!(r.is_empty());
}

/// Promise (README "Panics": "A value dropped while its thread unwinds
/// ... has its panic caught and dropped: never a double-panic abort"; the
/// same care `Group::clear` takes with `resume_unless_unwinding`):
/// `drop_deferred()` called from a `Drop` that runs during an unwind,
/// with a deferred local value whose `Drop` panics. Run in a child
/// process, since the failure is an abort.
///
/// Found by this review: `drop_deferred` resumed the first panic even when
/// the thread was already unwinding, so the process aborted ("panic in a
/// destructor during cleanup"). It now drops the panic then.
#[test]
fn drop_deferred_in_a_drop_during_an_unwind_does_not_abort() {
    if !in_child("drop_deferred_in_a_drop_during_an_unwind_does_not_abort") {
        return;
    }
    struct CallsDropDeferred;
    impl Drop for CallsDropDeferred {
        fn drop(&mut self) {
            drop_deferred();
        }
    }
    let r = Registry::new();
    let h = r.save_local(PanicsOnDrop).addr();
    std::thread::scope(|s| {
        s.spawn(|| r.unref(ptr(h)).unwrap()); // deferred to this thread
    });
    let caught = catch_unwind(|| {
        let _d = CallsDropDeferred;
        panic!("outer");
    });
    assert_eq!(caught.unwrap_err().downcast_ref::<&str>(), Some(&"outer"));
    assert!(r.is_empty());
}

/// Promise (local.rs: a value "dropped only there", on its thread; a
/// wrong-thread `restore_local` "never touches the value"): the owner
/// holds a guard; one thread unrefs while another hammers `restore_local`
/// (which may end up the record's last borrower and drop the record off
/// the owner). The value is dropped once, on the owner, after the guard;
/// the other threads only ever see `WrongThread` or `Stale`. Held.
#[test]
fn a_remote_unref_racing_remote_restores_still_drops_on_the_owner() {
    let _w = watchdog("a_remote_unref_racing_remote_restores_still_drops_on_the_owner");
    let r = Registry::new();
    let owner = std::thread::current().id();
    for _ in 0..rounds(100, 3) {
        let (drops, on) = tracking();
        let p = r.save_local((Rc::new(()), Tracked::new(&drops, &on)));
        let h = p.addr();
        let guard = r.restore_local::<(Rc<()>, Tracked)>(p).unwrap();
        let start = Barrier::new(3);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                r.unref(ptr(h)).unwrap();
            });
            s.spawn(|| {
                start.wait();
                for _ in 0..20 {
                    match r.restore_local::<(Rc<()>, Tracked)>(ptr(h)) {
                        Err(Error::WrongThread | Error::Stale) => {}
                        other => panic!("{:?}", other.map(|_| ())),
                    }
                }
            });
            start.wait();
        });
        assert_eq!(drops.load(SeqCst), 0);
        drop(guard);
        r.drop_deferred();
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(*on.lock().unwrap(), [owner]);
        assert_eq!(
            r.restore_local::<(Rc<()>, Tracked)>(p).err(),
            Some(Error::Stale)
        );
    }
    assert!(r.is_empty());
}

/// Promise (local.rs module notes, README "Threads and re-entrancy":
/// thread-local teardown keeps every promise "whatever order the
/// thread-locals are destroyed in"; `save_local` panics "from a
/// thread-local destructor of this thread once its table is gone"): in a
/// thread-local destroyed after the owner's table, `restore_local` is
/// `Stale`, `unref` drops nothing twice, `save_local` panics (its value
/// dropped once, on its thread); in one destroyed before, the value is
/// still there. Each value dropped exactly once, on the owner. Held.
#[test]
fn thread_local_teardown_in_both_orders() {
    static R: OnceLock<Registry> = OnceLock::new();
    static LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    thread_local! {
        static FIRST: RefCell<Option<OnDrop>> = const { RefCell::new(None) };
        static LAST: RefCell<Option<OnDrop>> = const { RefCell::new(None) };
    }
    let r = R.get_or_init(Registry::new);
    let (drops, on) = tracking();
    let (d, o) = (drops.clone(), on.clone());
    let owner = std::thread::spawn(move || {
        // Registered before the owner's table: destroyed after it.
        let (d2, o2) = (d.clone(), o.clone());
        LAST.with(|_| {});
        let late = r.save_local(Tracked::new(&d, &o)).addr();
        let early = r.save_local(Tracked::new(&d, &o)).addr();
        LAST.with(|c| {
            *c.borrow_mut() = Some(OnDrop(Some(Box::new(move || {
                let r = R.get().unwrap();
                let mut log = LOG.lock().unwrap();
                log.push(format!(
                    "late restore {:?}",
                    r.restore_local::<Tracked>(ptr(late)).err()
                ));
                log.push(format!("late unref {:?}", r.unref(ptr(late))));
                let saved = catch_unwind(AssertUnwindSafe(|| {
                    r.save_local(Tracked::new(&d2, &o2));
                }));
                log.push(format!("late save_local panicked {}", saved.is_err()));
            }))))
        });
        // Registered after: destroyed before the owner's table.
        FIRST.with(|c| {
            *c.borrow_mut() = Some(OnDrop(Some(Box::new(move || {
                let r = R.get().unwrap();
                let mut log = LOG.lock().unwrap();
                let ok = r.restore_local::<Tracked>(ptr(early)).is_ok();
                log.push(format!("early restore ok {ok}"));
                log.push(format!("early unref {:?}", r.unref(ptr(early))));
            }))))
        });
        std::thread::current().id()
    })
    .join()
    .unwrap();
    let log = LOG.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "early restore ok true",
            "early unref Ok(())",
            "late restore Some(Stale)",
            "late unref Ok(())",
            "late save_local panicked true",
        ]
    );
    assert_eq!(drops.load(SeqCst), 3);
    assert!(on.lock().unwrap().iter().all(|&t| t == owner));
    assert!(r.is_empty());
}

/// Promise (local.rs: at the owner's exit every value is dropped there,
/// once; lib.rs: a value's `Drop` may use the registry): a local value
/// dropped at its thread's exit restores and unrefs a sibling (`Stale` /
/// nothing twice) and saves a new local value (documented panic, caught by
/// the crate; the new value dropped once on the owner). Also for the
/// global registry. Held.
#[test]
fn a_local_values_drop_at_thread_exit_reenters_the_registry() {
    static R: OnceLock<Registry> = OnceLock::new();
    static SIBLING: AtomicUsize = AtomicUsize::new(0);
    static SIBLING_G: AtomicUsize = AtomicUsize::new(0);
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    struct Reenters(#[allow(dead_code)] Tracked, Tracked);
    impl Drop for Reenters {
        fn drop(&mut self) {
            let r = R.get().unwrap();
            let g = Registry::global();
            let (s, sg) = (ptr(SIBLING.load(SeqCst)), ptr(SIBLING_G.load(SeqCst)));
            let mut seen = SEEN.lock().unwrap();
            seen.push(format!("{:?}", r.restore_local::<Tracked>(s).err()));
            seen.push(format!("{:?}", g.restore_local::<Tracked>(sg).err()));
            let _ = r.unref(s);
            let _ = g.unref(sg);
            drop(seen);
            // Documented panic; `self.1` goes to the new value.
            let t = Tracked::new(&self.1.drops, &self.1.dropped_on);
            r.save_local(t);
        }
    }
    let r = R.get_or_init(Registry::new);
    let (drops, on) = tracking();
    let (d, o) = (drops.clone(), on.clone());
    let owner = std::thread::spawn(move || {
        let g = Registry::global();
        let _ = r.save_local(Reenters(Tracked::new(&d, &o), Tracked::new(&d, &o)));
        SIBLING.store(r.save_local(Tracked::new(&d, &o)).addr(), SeqCst);
        SIBLING_G.store(g.save_local(Tracked::new(&d, &o)).addr(), SeqCst);
        std::thread::current().id()
    })
    .join()
    .unwrap();
    // Reenters (2 fields) + sibling + global sibling + the refused new one.
    assert_eq!(drops.load(SeqCst), 5);
    assert!(on.lock().unwrap().iter().all(|&t| t == owner));
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen, ["Some(Stale)", "Some(Stale)"]);
    let sg = ptr(SIBLING_G.load(SeqCst));
    assert_eq!(Registry::global().check::<u8>(sg), Err(Error::Stale));
    // The other registry's records stay until unreffed (documented).
    let _ = r.unref(ptr(SIBLING.load(SeqCst)));
    assert!(r.len() <= 1);
}

/// Promise (local.rs: "an `unref` or `c_unref` from any thread is fine
/// (the drop is deferred)"; counted.rs): a local handle retained by C and
/// released from several threads; each release but the last drops
/// nothing; the last, off the owner, defers; the value is dropped once on
/// the owner. Held.
#[test]
fn a_retained_local_released_from_many_threads() {
    let r = Registry::new();
    let owner = std::thread::current().id();
    let (drops, on) = tracking();
    let p = r.save_local((Rc::new(()), Tracked::new(&drops, &on)));
    let h = p.addr();
    for _ in 0..3 {
        r.retain(p).unwrap();
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| r.unref(ptr(h)).unwrap());
        }
    });
    assert_eq!(r.retain(p), Err(Error::Stale));
    assert_eq!(drops.load(SeqCst), 0);
    assert_eq!(r.drop_deferred(), 1);
    assert_eq!(drops.load(SeqCst), 1);
    assert_eq!(*on.lock().unwrap(), [owner]);
    assert!(r.is_empty());
}

/// Promise (local.rs: `restore_local` "never panics"; `Busy` while a
/// guard is alive; a guard kept alive by `mem::forget` leaks the borrow):
/// after `mem::forget` of a `LocalGuard`, the owner gets `Busy`, other
/// threads `WrongThread`, the handle still unrefs, and afterwards it is
/// `Stale`; the value is never dropped while the registry lives. Held.
#[test]
fn a_forgotten_local_guard() {
    let r = Registry::new();
    let (drops, on) = tracking();
    let p = r.save_local((Rc::new(()), Tracked::new(&drops, &on)));
    let h = p.addr();
    std::mem::forget(r.restore_local::<(Rc<()>, Tracked)>(p).unwrap());
    assert_eq!(
        r.restore_local::<(Rc<()>, Tracked)>(p).err(),
        Some(Error::Busy)
    );
    let there = std::thread::scope(|s| {
        s.spawn(|| r.restore_local::<(Rc<()>, Tracked)>(ptr(h)).err())
            .join()
            .unwrap()
    });
    assert_eq!(there, Some(Error::WrongThread));
    r.unref(p).unwrap();
    assert_eq!(
        r.restore_local::<(Rc<()>, Tracked)>(p).err(),
        Some(Error::Stale)
    );
    r.drop_deferred();
    assert_eq!(drops.load(SeqCst), 0);
    drop(r); // the record goes with its registry (README: mem::forget)
    assert!(drops.load(SeqCst) <= 1);
}

/// Promise (README "Panics": `unref` re-raises a value's panic to its
/// caller, `c_unref` swallows it; local.rs: on the owner the value is
/// dropped at once): a retained value whose `Drop` panics, released by
/// `c_unref` from C, never unwinds into C; a local one unreffed on its
/// owner re-raises out of `unref` and leaves its handle `Stale` and the
/// registry empty. Held.
#[test]
fn panicking_drops_of_counted_and_local_values() {
    let g = Registry::global();
    let p = g.save(PanicsOnDrop);
    g.retain(p).unwrap();
    handle_registry::c_unref(p);
    assert_eq!(g.ref_count(p), Ok(1));
    handle_registry::c_unref(p); // the last: the panic is swallowed
    assert_eq!(g.check::<PanicsOnDrop>(p), Err(Error::Stale));

    let r = Registry::new();
    let q = r.save_local(PanicsOnDrop);
    let caught = catch_unwind(AssertUnwindSafe(|| r.unref(q)));
    assert!(caught.is_err(), "the owner's unref re-raises");
    assert_eq!(r.restore_local::<PanicsOnDrop>(q).err(), Some(Error::Stale));
    assert!(r.is_empty());
    // The global registry's local value, through `c_unref` on its owner.
    let l = g.save_local(PanicsOnDrop);
    handle_registry::c_unref(l);
    assert_eq!(g.restore_local::<PanicsOnDrop>(l).err(), Some(Error::Stale));
}

/// Promise (local.rs module notes: at the owner's exit "Values of the
/// global registry also have their handles unreffed (their slots
/// freed)"; README: "When the owner exits, its values are dropped there
/// and their handles answer Stale"): for a global local handle that C
/// `retain`ed, the exit drops one reference only: the value is dropped and
/// `restore_local` is `Stale`, but the slot stays live (`ref_count` is
/// `Ok(1)`) until C's own unref. No UB, nothing dropped twice; the
/// "slots freed" wording is inaccurate for retained handles. Held (with
/// that nuance).
#[test]
fn a_retained_global_local_handle_outlives_its_owner_as_a_record() {
    let g = Registry::global();
    let (drops, on) = tracking();
    let (d, o) = (drops.clone(), on.clone());
    let h = std::thread::spawn(move || {
        let p = Registry::global().save_local(Tracked::new(&d, &o));
        Registry::global().retain(p).unwrap();
        p.addr()
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(SeqCst), 1);
    assert_eq!(g.restore_local::<Tracked>(ptr(h)).err(), Some(Error::Stale));
    assert_eq!(g.ref_count(ptr(h)), Ok(1), "the slot is still live");
    assert_eq!(g.unref(ptr(h)), Ok(()));
    assert_eq!(g.ref_count(ptr(h)), Err(Error::Stale));
    assert_eq!(drops.load(SeqCst), 1);
}
