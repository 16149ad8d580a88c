//! Adversarial review of `restore_with` (2026-11-27, twelfth session):
//! through the public API only, every probe compares its answers with
//! `restore(ptr).map(|mut g| f(&mut g))`, which it promises to give, on
//! a private registry and on the global one's hot handle (a handle
//! restored `HOT` times in a row on one thread). Each value checks that no
//! two `&mut` to it are alive at once and counts its drops.
//!
//! Pure Rust: these run under Miri too (counts scaled down there). Every
//! test holds `GLOBAL_LOCK`: so that one test's global handles are not
//! another's forged integers, and so that no registry is created or
//! dropped while a test compares two answers for one forged integer
//! (whether its registry id names a live registry decides between
//! `WrongRegistry` and `Invalid`, so a registry coming or going between
//! the two calls made them differ: CI, 2026-11-28).

use handle_registry::{restore, restore_with, save, take, unref, Error, Registry};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

const HOT: usize = if cfg!(miri) { 12 } else { 1100 };
static GLOBAL_LOCK: Mutex<()> = Mutex::new(());

/// `restore`'s answer and `restore_with`'s, for one call each.
type Answers = (Result<(), Error>, Result<(), Error>);
fn lock() -> std::sync::MutexGuard<'static, ()> {
    GLOBAL_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Probe {
    n: u64,
    inside: AtomicBool,
    drops: Arc<AtomicUsize>,
}
impl Drop for Probe {
    fn drop(&mut self) {
        assert!(!self.inside.load(SeqCst), "dropped while borrowed");
        self.drops.fetch_add(1, SeqCst);
    }
}
fn probe() -> (Probe, Arc<AtomicUsize>) {
    let d = Arc::new(AtomicUsize::new(0));
    (
        Probe {
            n: 0,
            inside: AtomicBool::new(false),
            drops: d.clone(),
        },
        d,
    )
}
/// A probe saved in `r`: its handle and its drop count.
fn saved_probe(r: &Registry) -> (*mut c_void, Arc<AtomicUsize>) {
    let (v, d) = probe();
    (r.save(v), d)
}
/// Whether `r` is the global registry, for failure messages.
fn is_global(r: &Registry) -> bool {
    std::ptr::eq(r, Registry::global())
}
/// Runs `f` on a private registry, then on the global one (whose handles
/// alone can become a thread's hot handle).
fn on_both_registries(mut f: impl FnMut(&Registry)) {
    f(&Registry::new());
    f(Registry::global());
}
/// Enter/leave exclusivity check.
fn excl(p: &mut Probe) {
    assert!(!p.inside.swap(true, SeqCst), "two &mut at once");
    p.n += 1;
    std::hint::spin_loop();
    assert!(p.inside.swap(false, SeqCst));
}
fn heat(p: *mut c_void) {
    heat_in(Registry::global(), p);
}
/// Restores `p` `HOT` times in a row: on the global registry, that makes
/// it this thread's hot handle.
fn heat_in(r: &Registry, p: *mut c_void) {
    for _ in 0..HOT {
        r.restore_with(p, |v: &mut Probe| excl(v)).unwrap();
    }
}
fn pp(a: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(a)
}
struct Other(#[allow(dead_code)] u32);

/// `restore`'s answer for `p` as a `T`, once `restore_with`'s answer to
/// the same call was checked to be the same: the promise under review.
#[track_caller]
fn agree<T: std::any::Any + Send>(r: &Registry, p: *mut c_void) -> Result<(), Error> {
    let a = r.restore::<T>(p).map(|_| ());
    let b = r.restore_with(p, |_: &mut T| ());
    assert_eq!(a, b, "restore and restore_with differ for {:#x}", p.addr());
    a
}
fn forged_set(h: usize) -> Vec<usize> {
    let mut v = vec![
        0usize,
        1,
        2,
        3,
        usize::MAX,
        usize::MAX - 1,
        1 << (usize::BITS - 1),
    ];
    for d in 1..64usize {
        v.push(h.wrapping_add(d));
        v.push(h.wrapping_sub(d));
    }
    for b in 0..usize::BITS {
        v.push(h ^ (1 << b));
    }
    v
}

#[test]
fn forged_integers_private_registry() {
    let _l = lock();
    let r = Registry::new();
    let (h, d) = saved_probe(&r);
    let _others: Vec<_> = (0..5).map(|i| r.save(Other(i))).collect();
    let r2 = Registry::new();
    let h2 = r2.save(Other(9));
    let set = if cfg!(miri) {
        forged_set(h.addr()).into_iter().step_by(7).collect()
    } else {
        forged_set(h.addr())
    };
    for f in set.iter().copied().chain([h.addr(), h2.addr()]) {
        let _ = agree::<Probe>(&r, pp(f));
        let _ = agree::<Other>(&r, pp(f));
        let _ = agree::<String>(&r, pp(f));
    }
    assert_eq!(r.restore_with(h, |v: &mut Probe| v.n), Ok(0));
    r.unref(h).unwrap();
    assert_eq!(d.load(SeqCst), 1);
    assert_eq!(agree::<Probe>(&r, h), Err(Error::Stale));
    // slot reuse
    let h3 = r.save(Other(1));
    let _ = agree::<Probe>(&r, h);
    let _ = agree::<Other>(&r, h);
    let _ = h3;
    // wrong registry
    assert_eq!(agree::<Other>(&r, h2), Err(Error::WrongRegistry));
    let _ = agree::<Other>(Registry::global(), h2);
}

#[test]
fn forged_integers_around_hot_handle() {
    let _l = lock();
    let (h, d) = saved_probe(Registry::global());
    heat(h);
    for f in forged_set(h.addr())
        .into_iter()
        .step_by(if cfg!(miri) { 9 } else { 1 })
    {
        let _ = agree::<Probe>(Registry::global(), pp(f));
        let _ = agree::<Other>(Registry::global(), pp(f));
        // hot handle still right after every forged try
        heat_once(h);
    }
    // wrong type on hot
    assert!(matches!(
        agree::<Other>(Registry::global(), h),
        Err(Error::WrongType { .. })
    ));
    heat(h);
    let (a, b) = (
        restore_with(h, |_: &mut Other| ()),
        restore::<Other>(h).map(|_| ()),
    );
    assert_eq!(a, b);
    // private registry with the same integer
    let r = Registry::new();
    let _ = agree::<Probe>(&r, h);
    heat(h);
    unref(h).unwrap();
    assert_eq!(d.load(SeqCst), 1);
    assert_eq!(agree::<Probe>(Registry::global(), h), Err(Error::Stale));
}
fn heat_once(h: *mut c_void) {
    restore_with(h, |v: &mut Probe| excl(v)).unwrap();
}

#[test]
fn nested_same_and_other_private_and_hot() {
    let _l = lock();
    on_both_registries(|r| {
        let (a, da) = saved_probe(r);
        let (b, db) = saved_probe(r);
        heat_in(r, a);
        // nested same
        let out = r
            .restore_with(a, |_: &mut Probe| {
                (
                    r.restore_with(a, |_: &mut Probe| ()),
                    r.restore::<Probe>(a).map(|_| ()),
                    r.restore_with(a, |_: &mut Other| ()),
                    r.restore::<Other>(a).map(|_| ()),
                    r.restore_with(b, |v: &mut Probe| {
                        excl(v);
                        r.restore_with(a, |_: &mut Probe| ())
                    }),
                    r.take::<Probe>(a).map(|_| ()),
                )
            })
            .unwrap();
        assert_eq!(out.0, Err(Error::Busy), "global={}", is_global(r));
        assert_eq!(out.0, out.1);
        assert_eq!(out.2, out.3);
        assert_eq!(out.4, Ok(Err(Error::Busy)));
        // same under a guard
        {
            let g = r.restore::<Probe>(a).unwrap();
            assert_eq!(r.restore_with(a, |_: &mut Probe| ()), Err(Error::Busy));
            assert_eq!(r.restore_with(b, |v: &mut Probe| excl(v)), Ok(()));
            drop(g);
        }
        // take inside f compares with take inside guard
        let t1 = r
            .restore_with(a, |_: &mut Probe| r.take::<Probe>(a).map(|_| ()))
            .unwrap();
        let t2 = {
            let _g = r.restore::<Probe>(a).unwrap();
            r.take::<Probe>(a).map(|_| ())
        };
        assert_eq!(t1, t2);
        assert_eq!(da.load(SeqCst), 0);
        // unref inside f
        heat_in(r, a);
        let u = r.restore_with(a, |v: &mut Probe| {
            let u = r.unref(a);
            assert_eq!(v.drops.load(SeqCst), 0);
            v.n += 1; // still ours
            (
                u,
                r.restore_with(a, |_: &mut Probe| ()),
                r.restore::<Probe>(a).map(|_| ()),
            )
        });
        assert_eq!(u, Ok((Ok(()), Err(Error::Stale), Err(Error::Stale))));
        assert_eq!(da.load(SeqCst), 1);
        assert_eq!(agree::<Probe>(r, a), Err(Error::Stale));
        r.unref(b).unwrap();
        assert_eq!(db.load(SeqCst), 1);
    });
}

#[test]
fn panic_in_f_then_again() {
    let _l = lock();
    on_both_registries(|r| {
        let (a, d) = saved_probe(r);
        for round in 0..3 {
            heat_in(r, a);
            let res = catch_unwind(AssertUnwindSafe(|| {
                r.restore_with(a, |v: &mut Probe| {
                    v.n += 1000;
                    panic!("boom {round}")
                })
            }));
            assert!(res.is_err());
            assert_eq!(
                r.restore_with(a, |v: &mut Probe| v.n),
                Ok((round as u64 + 1) * (HOT as u64 + 1000)),
                "global={}",
                is_global(r)
            );
            assert!(r.restore::<Probe>(a).is_ok());
            // panic with unref inside
            if round == 2 {
                let res = catch_unwind(AssertUnwindSafe(|| {
                    r.restore_with(a, |_: &mut Probe| {
                        r.unref(a).unwrap();
                        panic!("boom2")
                    })
                }));
                assert!(res.is_err());
                assert_eq!(d.load(SeqCst), 1);
                assert_eq!(agree::<Probe>(r, a), Err(Error::Stale));
            }
        }
    });
}

#[test]
fn lend_paths() {
    let _l = lock();
    on_both_registries(|r| {
        let (a, da) = saved_probe(r);
        let (b, _db) = saved_probe(r);
        heat_in(r, a);
        r.lend::<Probe, _>(a, || {
            assert_eq!(
                r.restore_with(a, |v: &mut Probe| {
                    excl(v);
                    r.restore_with(a, |_: &mut Probe| ())
                }),
                Ok(Err(Error::Busy))
            );
            let _ = agree::<Other>(r, a);
            assert_eq!(r.restore_with(b, |v: &mut Probe| excl(v)), Ok(()));
            // inner lend of b, a served by the outer lend
            r.lend::<Probe, _>(b, || {
                assert_eq!(r.restore_with(a, |v: &mut Probe| excl(v)), Ok(()));
                assert_eq!(
                    r.restore_with(b, |v: &mut Probe| {
                        excl(v);
                        r.restore_with(a, |v: &mut Probe| excl(v))
                    }),
                    Ok(Ok(()))
                );
                let g = r.restore::<Probe>(a).unwrap();
                assert_eq!(r.restore_with(a, |_: &mut Probe| ()), Err(Error::Busy));
                drop(g);
                assert_eq!(agree::<Probe>(r, a), Ok(()));
                // relend a inside
                r.lend::<Probe, _>(a, || {
                    assert_eq!(r.restore_with(a, |v: &mut Probe| excl(v)), Ok(()));
                })
                .unwrap();
            })
            .unwrap();
            // escaped-ish: a guard from the lend kept across restore_with
            let g = r.restore::<Probe>(a).unwrap();
            assert_eq!(r.restore_with(a, |_: &mut Probe| ()), Err(Error::Busy));
            drop(g);
            // unref inside lend
            r.unref(a).unwrap();
            assert_eq!(agree::<Probe>(r, a), Err(Error::Stale));
            assert_eq!(da.load(SeqCst), 0);
        })
        .unwrap();
        assert_eq!(da.load(SeqCst), 1);
        assert_eq!(agree::<Probe>(r, a), Err(Error::Stale));
        r.unref(b).unwrap();
    });
}

#[test]
fn escaped_lent_guard_on_hot() {
    let _l = lock();
    let (a, da) = saved_probe(Registry::global());
    heat(a);
    let mut kept = None;
    Registry::global()
        .lend::<Probe, _>(a, || kept = Some(restore::<Probe>(a).unwrap()))
        .unwrap();
    assert_eq!(agree::<Probe>(Registry::global(), a), Err(Error::Busy));
    excl(kept.as_mut().unwrap());
    drop(kept);
    heat(a);
    unref(a).unwrap();
    assert_eq!(da.load(SeqCst), 1);
}

#[test]
fn hot_then_other_thread_unref_take_restore() {
    let _l = lock();
    // unref idle from another thread
    let (a, d) = saved_probe(Registry::global());
    heat(a);
    let aa = a.addr();
    std::thread::spawn(move || unref(pp(aa)).unwrap())
        .join()
        .unwrap();
    assert_eq!(d.load(SeqCst), 1);
    assert_eq!(agree::<Probe>(Registry::global(), a), Err(Error::Stale));
    // take idle from another thread
    let (a, d) = saved_probe(Registry::global());
    heat(a);
    let aa = a.addr();
    let n = std::thread::spawn(move || take::<Probe>(pp(aa)).map(|p| p.n))
        .join()
        .unwrap();
    assert_eq!(n, Ok(HOT as u64));
    assert_eq!(d.load(SeqCst), 1);
    assert_eq!(agree::<Probe>(Registry::global(), a), Err(Error::Stale));
    // unref while inside f on the hot path
    let (a, d) = saved_probe(Registry::global());
    heat(a);
    let aa = a.addr();
    let r = restore_with(a, |v: &mut Probe| {
        assert!(!v.inside.swap(true, SeqCst));
        let u = std::thread::spawn(move || unref(pp(aa))).join().unwrap();
        assert_eq!(d.load(SeqCst), 0);
        v.n += 1;
        assert!(v.inside.swap(false, SeqCst));
        u
    });
    assert_eq!(r, Ok(Ok(())));
    assert_eq!(d.load(SeqCst), 1);
    // another thread restores while owner inside f: must wait
    let (a, d) = saved_probe(Registry::global());
    heat(a);
    let aa = a.addr();
    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    let mut th = None;
    restore_with(a, |v: &mut Probe| {
        assert!(!v.inside.swap(true, SeqCst));
        th = Some(std::thread::spawn(move || {
            s2.store(true, SeqCst);
            restore_with(pp(aa), |v: &mut Probe| excl(v))
        }));
        while !started.load(SeqCst) {}
        std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) {
            1
        } else {
            50
        }));
        assert!(v.inside.swap(false, SeqCst));
    })
    .unwrap();
    assert_eq!(th.unwrap().join().unwrap(), Ok(()));
    heat(a);
    // take from other thread while owner is inside f
    let (tx, rx) = std::sync::mpsc::channel();
    let mut th = None;
    restore_with(a, |v: &mut Probe| {
        assert!(!v.inside.swap(true, SeqCst));
        th = Some(std::thread::spawn(move || {
            tx.send(()).unwrap();
            take::<Probe>(pp(aa)).map(|p| p.n)
        }));
        rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) {
            1
        } else {
            20
        }));
        assert_eq!(d.load(SeqCst), 0);
        assert!(v.inside.swap(false, SeqCst));
    })
    .unwrap();
    let t = th.unwrap().join().unwrap();
    // take waits or fails; either way not while borrowed
    eprintln!("take while hot-borrowed: {:?}", t.as_ref().map(|_| ()));
    if t.is_ok() {
        assert_eq!(d.load(SeqCst), 1);
        assert_eq!(agree::<Probe>(Registry::global(), a), Err(Error::Stale));
    } else {
        unref(a).unwrap();
        assert_eq!(d.load(SeqCst), 1);
    }
}

#[test]
fn forget_guard_of_other_then_hot() {
    let _l = lock();
    let r = Registry::global();
    let (va, _da) = probe();
    let (vb, _db) = probe();
    let a = save(va);
    let b = save(vb);
    heat(b);
    heat(a);
    // forget a parked guard of b (via restore on non-hot parked b)
    std::mem::forget(restore::<Probe>(b).unwrap());
    assert_eq!(agree::<Probe>(r, b), Err(Error::Busy));
    for _ in 0..HOT {
        restore_with(a, |v: &mut Probe| excl(v)).unwrap();
    }
    assert_eq!(
        restore_with(a, |_: &mut Probe| restore_with(a, |_: &mut Probe| ())),
        Ok(Err(Error::Busy))
    );
    assert_eq!(
        restore_with(a, |_: &mut Probe| restore_with(b, |_: &mut Probe| ())),
        Ok(Err(Error::Busy))
    );
    // forget a guard of the hot handle itself
    std::mem::forget(restore::<Probe>(a).unwrap());
    assert_eq!(agree::<Probe>(r, a), Err(Error::Busy));
    // unref both (leaks intended: borrowed forever)
    let _ = unref(a);
    let _ = unref(b);
    assert_eq!(agree::<Probe>(r, a), Err(Error::Stale));
}

#[test]
fn twelve_nested_parked() {
    let _l = lock();
    let n = 12;
    let hs: Vec<_> = (0..n).map(|_| save(probe().0)).collect();
    for &h in &hs {
        heat(h);
    }
    fn nest(hs: &[*mut c_void], i: usize, depth: &mut usize) {
        if i == hs.len() {
            return;
        }
        let r = restore_with(hs[i], |v: &mut Probe| {
            assert!(!v.inside.swap(true, SeqCst));
            // every outer one is busy
            for (j, &outer) in hs[..=i].iter().enumerate() {
                assert_eq!(
                    restore_with(outer, |_: &mut Probe| ()),
                    Err(Error::Busy),
                    "j={j} i={i}"
                );
                assert_eq!(restore::<Probe>(outer).map(|_| ()), Err(Error::Busy));
            }
            *depth += 1;
            nest(hs, i + 1, depth);
            assert!(v.inside.swap(false, SeqCst));
        });
        assert_eq!(r, Ok(()));
    }
    for _ in 0..3 {
        let mut depth = 0;
        nest(&hs, 0, &mut depth);
        assert_eq!(depth, n);
        // reverse order
        let rev: Vec<_> = hs.iter().rev().copied().collect();
        nest(&rev, 0, &mut depth);
        heat(hs[5]);
    }
    // across threads: each handle hot in another thread meanwhile
    let addrs: Vec<usize> = hs.iter().map(|h| h.addr()).collect();
    let a2 = addrs.clone();
    std::thread::spawn(move || {
        let hs: Vec<_> = a2.iter().map(|&a| pp(a)).collect();
        for &h in &hs {
            heat(h);
        }
        let mut d = 0;
        nest(&hs, 0, &mut d);
    })
    .join()
    .unwrap();
    let mut d = 0;
    nest(&hs, 0, &mut d);
    // Heated once here and once on the other thread; `hs[5]` three more
    // times here. Nested entries change nothing.
    for (i, h) in hs.into_iter().enumerate() {
        let p = take::<Probe>(h).unwrap();
        let extra = if i == 5 { 3 * HOT } else { 0 };
        assert_eq!(p.n as usize, 2 * HOT + extra, "handle {i}");
    }
}

#[test]
fn reentry_from_drop() {
    let _l = lock();
    struct Reenter {
        other: usize,
        seen: Arc<Mutex<Vec<Answers>>>,
        me: usize,
    }
    impl Drop for Reenter {
        fn drop(&mut self) {
            let o = pp(self.other);
            let a = restore_with(o, |v: &mut Probe| excl(v));
            let b = restore::<Probe>(o).map(|_| ());
            let m = pp(self.me);
            let c = restore_with(m, |_: &mut Reenter| ());
            let d = restore::<Reenter>(m).map(|_| ());
            let mut s = self.seen.lock().unwrap();
            s.push((a, b));
            s.push((c, d));
        }
    }
    let (o, _do) = saved_probe(Registry::global());
    heat(o);
    let seen = Arc::new(Mutex::new(vec![]));
    // Drop runs at unref time (idle)
    let m = save(Reenter {
        other: o.addr(),
        seen: seen.clone(),
        me: 0,
    });
    restore_with(m, |r: &mut Reenter| r.me = m.addr()).unwrap();
    heat(o);
    unref(m).unwrap();
    // Drop runs when the hot o's borrow is released, inside restore_with of o
    let m2 = save(Reenter {
        other: o.addr(),
        seen: seen.clone(),
        me: 0,
    });
    restore_with(m2, |r: &mut Reenter| r.me = m2.addr()).unwrap();
    heat(o);
    restore_with(o, |_: &mut Probe| {
        // m2 unreffed while borrowed inside f of o; drop happens at release of m2
        restore_with(m2, |_: &mut Reenter| unref(m2).unwrap()).unwrap();
    })
    .unwrap();
    // Drop of a hot-handle value re-entering itself
    let m3 = save(Reenter {
        other: o.addr(),
        seen: seen.clone(),
        me: 0,
    });
    for _ in 0..HOT {
        restore_with(m3, |r: &mut Reenter| r.me = m3.addr()).unwrap();
    }
    restore_with(m3, |_: &mut Reenter| unref(m3).unwrap()).unwrap();
    let s = seen.lock().unwrap();
    for (i, (a, b)) in s.iter().enumerate() {
        assert_eq!(a, b, "entry {i}: {s:?}");
    }
    eprintln!("reentry results: {:?}", *s);
}

#[test]
fn thread_local_teardown() {
    let _l = lock();
    struct Tl(usize, Arc<Mutex<Vec<String>>>);
    impl Drop for Tl {
        fn drop(&mut self) {
            let p = pp(self.0);
            let mut out = vec![];
            for _ in 0..if cfg!(miri) { 6 } else { 1200 } {
                let a = restore_with(p, |v: &mut Probe| {
                    excl(v);
                    restore_with(p, |_: &mut Probe| ())
                });
                out.push(format!("{a:?}"));
            }
            let b = restore::<Probe>(p).map(|mut g| {
                excl(&mut g);
                restore_with(p, |_: &mut Probe| ())
            });
            out.push(format!("{b:?}"));
            let c = restore_with(p, |_: &mut Other| ()) == restore::<Other>(p).map(|_| ());
            out.push(format!("{c}"));
            out.dedup();
            self.1.lock().unwrap().extend(out);
        }
    }
    thread_local! { static TL: std::cell::RefCell<Option<Tl>> = const { std::cell::RefCell::new(None) }; }
    let log = Arc::new(Mutex::new(vec![]));
    let (h, d) = saved_probe(Registry::global());
    let ha = h.addr();
    let l2 = log.clone();
    std::thread::spawn(move || {
        heat(pp(ha));
        TL.with(|t| *t.borrow_mut() = Some(Tl(ha, l2)));
        heat(pp(ha));
    })
    .join()
    .unwrap();
    let log = log.lock().unwrap();
    eprintln!("teardown log: {log:?}");
    assert!(
        log.iter()
            .all(|s| s.contains("Ok(Err(Busy))") || s == "true"),
        "{log:?}"
    );
    // still usable and exclusive
    heat(h);
    let n = take::<Probe>(h).unwrap().n;
    assert!(n > 0);
    assert_eq!(d.load(SeqCst), 1);
}

#[test]
fn stress_two_threads_hot() {
    let _l = lock();
    let (h, d) = saved_probe(Registry::global());
    let ha = h.addr();
    let iters: u64 = if cfg!(miri) { 30 } else { 300_000 };
    let start = std::time::Instant::now();
    let ths: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let p = pp(ha);
                let mut ok = 0u64;
                for i in 0..iters {
                    if start.elapsed().as_secs() > 15 {
                        break;
                    }
                    let r = if i % 97 == 0 && t == 1 {
                        restore::<Probe>(p).map(|mut g| excl(&mut g))
                    } else if i % 101 == 0 {
                        restore_with(p, |_: &mut Other| ())
                            .map(|_| ())
                            .or(Ok::<(), Error>(()))
                            .and(restore_with(p, |v: &mut Probe| excl(v)))
                    } else {
                        restore_with(p, |v: &mut Probe| excl(v))
                    };
                    r.unwrap();
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let total: u64 = ths.into_iter().map(|t| t.join().unwrap()).sum();
    let n = take::<Probe>(h).unwrap().n;
    assert_eq!(n, total);
    assert_eq!(d.load(SeqCst), 1);
    eprintln!("stress total {total} in {:?}", start.elapsed());
}

#[test]
fn stress_unref_race_hot() {
    let _l = lock();
    let rounds = if cfg!(miri) { 2 } else { 300 };
    for _ in 0..rounds {
        let (h, d) = saved_probe(Registry::global());
        heat(h);
        let ha = h.addr();
        let t = std::thread::spawn(move || {
            let p = pp(ha);
            for _ in 0..50 {
                let _ = restore_with(p, |v: &mut Probe| excl(v));
            }
            unref(p)
        });
        loop {
            match restore_with(h, |v: &mut Probe| excl(v)) {
                Ok(()) => {}
                Err(Error::Stale) => break,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(d.load(SeqCst), 1);
    }
}

#[test]
fn local_scope_and_handle_kinds() {
    let _l = lock();
    let r = Registry::new();
    let l = r.save_local(std::rc::Rc::new(5u8));
    let _ = agree::<Probe>(&r, l);
    let _ = agree::<u8>(&r, l);
    let mut st = 5u32;
    let sp = r
        .scope(&mut st, |p| {
            let _ = agree::<u32>(&r, p);
            p
        })
        .unwrap();
    let _ = agree::<u32>(&r, sp);
    let h = r.handle(probe().0);
    assert_eq!(
        r.restore_with(h.as_ptr(), |v: &mut Probe| {
            excl(v);
            v.n
        }),
        Ok(1)
    );
    let g = h.restore().unwrap();
    assert_eq!(
        r.restore_with(h.as_ptr(), |_: &mut Probe| ()),
        Err(Error::Busy)
    );
    drop(g);
    r.retain(h.as_ptr()).unwrap();
    assert_eq!(
        r.restore_with(h.as_ptr(), |v: &mut Probe| {
            excl(v);
            v.n
        }),
        Ok(2)
    );
    let p = h.as_ptr();
    drop(h);
    assert_eq!(agree::<Probe>(&r, p), Ok(()));
    r.unref(p).unwrap();
    assert_eq!(agree::<Probe>(&r, p), Err(Error::Stale));
}

struct Rw {
    inside: AtomicBool,
    readers: AtomicUsize,
    n: u64,
}

#[test]
fn hot_vs_shared_readers_and_retain() {
    let _l = lock();
    let h = save(Rw {
        inside: AtomicBool::new(false),
        readers: AtomicUsize::new(0),
        n: 0,
    });
    let ha = h.addr();
    for _ in 0..HOT {
        restore_with(h, |v: &mut Rw| v.n += 1).unwrap();
    }
    let iters = if cfg!(miri) { 20 } else { 100_000 };
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let reader = std::thread::spawn(move || {
        let p = pp(ha);
        let mut k = 0u64;
        while !st.load(SeqCst) {
            let g = handle_registry::restore_ref::<Rw>(p).unwrap();
            g.readers.fetch_add(1, SeqCst);
            assert!(!g.inside.load(SeqCst), "reader saw writer inside");
            std::hint::spin_loop();
            assert!(!g.inside.load(SeqCst), "reader saw writer inside");
            g.readers.fetch_sub(1, SeqCst);
            k += 1;
            if cfg!(miri) && k > 20 {
                break;
            }
        }
        k
    });
    for i in 0..iters {
        restore_with(h, |v: &mut Rw| {
            assert_eq!(v.readers.load(SeqCst), 0, "writer with readers");
            assert!(!v.inside.swap(true, SeqCst));
            v.n += 1;
            assert_eq!(v.readers.load(SeqCst), 0, "writer with readers");
            assert!(v.inside.swap(false, SeqCst));
        })
        .unwrap();
        if i % 1000 == 0 && !cfg!(miri) {
            // re-heat sometimes
        }
    }
    stop.store(true, SeqCst);
    let k = reader.join().unwrap();
    eprintln!("reader iterations {k}");
    // retain from another thread on hot handle
    for _ in 0..HOT {
        restore_with(h, |v: &mut Rw| v.n += 1).unwrap();
    }
    std::thread::spawn(move || Registry::global().retain(pp(ha)).unwrap())
        .join()
        .unwrap();
    assert_eq!(Registry::global().ref_count(h), Ok(2));
    assert!(restore_with(h, |v: &mut Rw| v.n += 1).is_ok());
    unref(h).unwrap();
    for _ in 0..HOT {
        restore_with(h, |v: &mut Rw| v.n += 1).unwrap();
    }
    std::thread::spawn(move || unref(pp(ha)).unwrap())
        .join()
        .unwrap();
    assert_eq!(restore_with(h, |_: &mut Rw| ()), Err(Error::Stale));
}

#[test]
fn failure_log_counts_match() {
    let _l = lock();
    let r = Registry::new();
    let h = r.save(5u32);
    let r2 = Registry::new();
    let h2 = r2.save(5u32);
    let stale = r.save(1u32);
    r.unref(stale).unwrap();
    let cases: Vec<*mut c_void> = vec![
        std::ptr::null_mut(),
        pp(1),
        pp(h.addr() ^ (1 << (usize::BITS - 2))),
        h2,
        stale,
    ];
    for &c in &cases {
        let before = r.failures().total();
        let a = r.restore::<u32>(c).map(|_| ());
        let mid = r.failures().total();
        let b = r.restore_with(c, |_: &mut u32| ());
        let after = r.failures().total();
        assert_eq!(a, b);
        assert_eq!(mid - before, after - mid, "failure count for {c:?} {a:?}");
    }
    let before = r.failures().total();
    let a = r.restore::<u8>(h).map(|_| ());
    let mid = r.failures().total();
    let b = r.restore_with(h, |_: &mut u8| ());
    assert_eq!(a, b);
    assert_eq!(mid - before, r.failures().total() - mid);
    let g = r.restore::<u32>(h).unwrap();
    let before = r.failures().total();
    let a = r.restore::<u32>(h).map(|_| ());
    let mid = r.failures().total();
    let b = r.restore_with(h, |_: &mut u32| ());
    assert_eq!(a, b);
    assert_eq!(mid - before, r.failures().total() - mid);
    drop(g);
}

#[test]
fn failure_log_counts_match_hot() {
    let _l = lock();
    let g = Registry::global();
    let (h, _d) = saved_probe(Registry::global());
    // One call, after re-heating `h`: its answer, and how many failures
    // it logged.
    let check = |f: &dyn Fn() -> Result<(), Error>| {
        heat(h);
        let before = g.failures().total();
        let answer = f();
        (answer, g.failures().total() - before)
    };
    // The wrong type on the hot handle.
    let x = check(&|| restore::<Other>(h).map(|_| ()));
    let y = check(&|| restore_with(h, |_: &mut Other| ()));
    assert_eq!(x, y);
    // `Busy`, nested inside the hot handle's own borrow.
    let x = check(&|| restore_with(h, |_: &mut Probe| restore::<Probe>(h).map(|_| ())).unwrap());
    let y =
        check(&|| restore_with(h, |_: &mut Probe| restore_with(h, |_: &mut Probe| ())).unwrap());
    assert_eq!(x, y);
    unref(h).unwrap();
}
