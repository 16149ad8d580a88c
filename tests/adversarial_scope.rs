//! Adversarial review of the scopes (`Registry::scope`, `scope_fn`,
//! `scope_send`, `scope_sync`, their callbacks' `with`, `call`,
//! `with_ref`, free and method forms) and of `Registry::lend` with the
//! `restore` / `restore_with` / `restore_ref` it serves. Public API only,
//! safe Rust plus `extern "C"` trampolines written as C would call them.
//! Each test names the promise it attacks and says whether it held.
//!
//! Attacked:
//!
//! * Forged and foreign handles in `with` / `call` / `with_ref`: NULL, 1,
//!   a real pointer, a handle of another type, a private registry's scope
//!   handle given to the global free functions (and the other way round),
//!   a dead registry's handle; inside an active scope too, so the lend
//!   stack is searched.
//! * Re-entrancy: `with` in `with`, `call` in `call`, `with_ref` in
//!   `with_ref`; a scope of the `&mut S` a callback got; three nested
//!   scopes reaching each other's handles from bodies and callbacks; a
//!   `lend` inside a scope callback and a scope inside a lend; a `Handle`
//!   made in a callback and used after the scope.
//! * What the rest of the API does to a scope's handle: typed removals
//!   (`take`, `restore*`, `lend`, `Handle::from_ptr`), `retain` (then the
//!   scope ends with references "out"), `unref` / `c_unref` from inside a
//!   callback and from another thread.
//! * Threads: a scope's handle leaked to threads that keep calling across
//!   the scope's end (parked borrows included): every `Ok` is counted
//!   against the state, every late call must be `Stale`; `WrongThread`
//!   while the scope's thread is inside a callback; `scope_send` callbacks
//!   on the scope's own thread long enough to park, then the end, an
//!   `unref` of the parked borrow, and slot reuse.
//! * Panics: the body panics while threads call back; a thread's callback
//!   panics and the body returns; payloads whose `Drop` panics, with the
//!   body unwinding too; two `with_ref` callbacks panicking at once; all
//!   through `extern "C"` trampolines in a child process (an unwind into C
//!   aborts).
//! * Thread-local teardown: every scope form and a lend started from a
//!   thread-local destructor, registered before and after the thread's
//!   first use of the registry.
//! * `lend`: `take` / `unref` / `restore_with` / `Handle::into_inner` of
//!   the lent handle inside it; a body that unwinds after an `unref` of a
//!   value whose `Drop` panics; `mem::forget` of a lent guard; early exits
//!   by `?` and panic from nested lends; a lend of a parked borrow, with a
//!   guard that escapes it (its own thread must stay excluded).
//! * Locks and user code: a saved value whose `Drop` runs every scope form
//!   and a lend on its own registry, dropped by `unref`, a lend's end, an
//!   escaped guard, a scope callback, a worker inside a `scope_send`
//!   callback. `retain` / `unref` racing a scope's end. Sixty-four nested
//!   scopes, and as many `with_ref`s held at once.
//! * The refusal log: every refused `with` / `call` / `with_ref` counted
//!   exactly once, whichever path refused it.
//!
//! Outcome: every promise attacked held; no test here is ignored. Doc
//! findings, each at its test (README and `with_ref`'s rustdoc now say
//! these; no code changed): `with_ref` inside
//! `with_ref` is served, not `Busy` as "Errors as for `with`" suggests;
//! on a pinned scope's own thread `take`, `restore_ref` and `with_ref`
//! of its handle answer `Busy` rather than `WrongType` (the thread's
//! borrow is checked before the type; `with` and `call` of the wrong type
//! do answer `WrongType`, from the lend record); and a
//! thread that shares the scope's owner id at thread-local teardown gets
//! `Busy`, not `WrongThread` (never the state). Silent too: a callback
//! closure that owns a value whose `Drop` panics, and itself panics,
//! aborts the process (Rust's panic during the closure's own unwind,
//! before `with` can catch anything); "no panic crosses into C" holds only
//! for closures whose captures do not panic when dropped by an unwind
//! (`refused_closures_owning_panicking_values_through_c` avoids it).
//!
//! Under Miri (`-Zmiri-strict-provenance`): 29 passed, 86 s.

mod common;

use common::{
    drain, in_child, payload_text, ptr, rounds, watchdog, Counted, NestedPanic, PanicOnDrop,
    PANIC_ON_DROP,
};
use handle_registry::{Error, Handle, Registry};
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier};

/// Levels of a panicking payload (each is a panic: Miri pays for them).
const DEEP: u32 = if cfg!(miri) { 2 } else { 6 };

// ---------------------------------------------------------------------
// Forged and foreign handles
// ---------------------------------------------------------------------

/// Promise (README "Errors": `Null`, `Invalid` "forged integers, real
/// pointers, garbage", `WrongRegistry` "the handle's registry bits name
/// another Registry", `WrongType`; README "Synchronous C calls": "the
/// callbacks' free functions reach the global registry's scopes only"):
/// `with`, `call`, `with_ref` (free and method forms) given NULL, 1, a
/// real pointer, a saved value of another kind, a private registry's
/// scope handle, a global scope handle on a private registry, a dead
/// registry's handle; each from inside an active scope of each registry
/// so the lend stack is searched. Held.
#[test]
fn forged_and_foreign_handles_are_errors_everywhere() {
    let g = Registry::global();
    let private = Registry::new();
    let dead = {
        let d = Registry::new();
        let mut x = 0u32;
        // A live handle of `d`, made stale by `d`'s end below.
        let p = d.save(0u32);
        d.scope(&mut x, |_| ()).unwrap();
        p as usize
    };
    let local = 5u64;
    let real = &local as *const u64 as *mut c_void;
    let plain = g.save(7u32);
    let mut gs = 1u32;
    let mut ps = 2u32;
    g.scope(&mut gs, |gp| {
        private
            .scope(&mut ps, |pp| {
                // The free functions and the global registry's methods.
                assert_eq!(
                    handle_registry::with(std::ptr::null_mut(), |_: &mut u32| ()),
                    Err(Error::Null)
                );
                assert_eq!(
                    handle_registry::call::<u8, u8>(std::ptr::null_mut(), 1),
                    Err(Error::Null)
                );
                assert_eq!(
                    handle_registry::with_ref(std::ptr::null_mut(), |_: &u32| ()),
                    Err(Error::Null)
                );
                assert_eq!(
                    handle_registry::with(ptr(1), |_: &mut u32| ()),
                    Err(Error::Invalid)
                );
                assert_eq!(
                    handle_registry::call::<u8, u8>(ptr(1), 1),
                    Err(Error::Invalid)
                );
                assert_eq!(
                    handle_registry::with_ref(ptr(1), |_: &u32| ()),
                    Err(Error::Invalid)
                );
                assert!(handle_registry::with(real, |_: &mut u64| ()).is_err());
                assert!(handle_registry::call::<u8, u8>(real, 1).is_err());
                assert!(handle_registry::with_ref(real, |_: &u64| ()).is_err());
                assert!(matches!(
                    handle_registry::with(plain, |_: &mut u32| ()),
                    Err(Error::WrongType { .. })
                ));
                assert!(matches!(
                    handle_registry::call::<u8, u8>(plain, 1),
                    Err(Error::WrongType { .. })
                ));
                assert!(matches!(
                    handle_registry::with_ref(plain, |_: &u32| ()),
                    Err(Error::WrongType { .. })
                ));
                // A private registry's scope handle, of the right type.
                assert_eq!(
                    handle_registry::with(pp, |_: &mut u32| ()),
                    Err(Error::WrongRegistry)
                );
                assert_eq!(
                    handle_registry::with_ref(pp, |_: &u32| ()),
                    Err(Error::WrongRegistry)
                );
                assert_eq!(g.call::<u8, u8>(pp, 1), Err(Error::WrongRegistry));
                // The global scope handle on the private registry.
                assert_eq!(
                    private.with(gp, |_: &mut u32| ()),
                    Err(Error::WrongRegistry)
                );
                assert_eq!(
                    private.with_ref(gp, |_: &u32| ()),
                    Err(Error::WrongRegistry)
                );
                // A dead registry's handle (its id may have been reused by
                // another test's registry meanwhile: any error, never a hit).
                assert!(private.with(ptr(dead), |_: &mut u32| ()).is_err());
                assert!(g.with(ptr(dead), |_: &mut u32| ()).is_err());
                assert!(handle_registry::call::<u8, u8>(ptr(dead), 1).is_err());
                // Each registry still serves its own handle, of the right type.
                assert_eq!(private.with(pp, |s: &mut u32| *s), Ok(2));
                assert_eq!(g.with(gp, |s: &mut u32| *s), Ok(1));
                assert!(matches!(
                    g.with(gp, |_: &mut u64| ()),
                    Err(Error::WrongType { .. })
                ));
                // The exclusive record on its own thread: `Busy` (the
                // borrow is checked before the type).
                assert_eq!(private.with_ref(pp, |_: &u32| ()), Err(Error::Busy));
            })
            .unwrap();
    })
    .unwrap();
    assert_eq!(handle_registry::take::<u32>(plain), Ok(7));
}

// ---------------------------------------------------------------------
// Re-entrancy
// ---------------------------------------------------------------------

/// Promise (`Registry::with`: "`Error::Busy` when called inside itself";
/// `with_ref`: "Errors as for `with`"): the same handle's callback inside
/// its own callback, for every form. `with`, `call` and `with` on a
/// `scope_send`: `Busy`. Held. `with_ref` inside `with_ref` of a
/// `scope_sync` on one thread is *served* (two shared borrows), not
/// `Busy`: the rustdoc's "Errors as for with" is silent on it (doc
/// finding; the behaviour is sound, both are `&S`).
#[test]
fn a_callback_inside_itself() {
    let r = Registry::global();
    let mut a = 0u32;
    r.scope(&mut a, |p| {
        r.with(p, |a: &mut u32| {
            *a += 1;
            assert_eq!(r.with(p, |_: &mut u32| ()), Err(Error::Busy));
            // Served again once the inner refusal returned.
        })
        .unwrap();
        r.with(p, |a: &mut u32| *a += 1).unwrap();
    })
    .unwrap();
    assert_eq!(a, 2);

    let mut calls = 0;
    let p_cell = std::cell::Cell::new(std::ptr::null_mut());
    let mut f = |x: u8| {
        calls += 1;
        let inner = Registry::global().call::<u8, u8>(p_cell.get(), x);
        assert_eq!(inner, Err(Error::Busy));
        x
    };
    let out = r
        .scope_fn(&mut f, |p| {
            p_cell.set(p);
            r.call::<u8, u8>(p, 3)
        })
        .unwrap();
    assert_eq!(out, Ok(3));
    assert_eq!(calls, 1);

    let mut b = 0u32;
    r.scope_send(&mut b, |p| {
        r.with(p, |b: &mut u32| {
            *b += 1;
            assert_eq!(r.with(p, |_: &mut u32| ()), Err(Error::Busy));
        })
        .unwrap();
    })
    .unwrap();
    assert_eq!(b, 1);

    let c = AtomicU64::new(0);
    r.scope_sync(&c, |p| {
        let nested = r.with_ref(p, |c: &AtomicU64| {
            c.fetch_add(1, SeqCst);
            r.with_ref(p, |c: &AtomicU64| c.fetch_add(10, SeqCst))
        });
        assert_eq!(nested, Ok(Ok(1)), "with_ref in with_ref: served");
        // A `with` (exclusive) of the shared form's handle: the wrong record.
        assert!(matches!(
            r.with(p, |_: &mut AtomicU64| ()),
            Err(Error::WrongType { .. })
        ));
    })
    .unwrap();
    assert_eq!(c.into_inner(), 11);
}

/// Promise (README "Threads and re-entrancy": "Inside a callback, code may
/// ... start a nested C call or scope"; scope module: the claim of a
/// record that is not the innermost goes to the slow path): a callback
/// scopes the `&mut S` it was given again; three nested scopes reach each
/// other's handles from their bodies and callbacks; the outer handle
/// inside its own callback stays `Busy` however deep; every inner handle
/// is `Stale` after its scope. Held.
#[test]
fn nested_scopes_reach_each_other() {
    let r = Registry::global();
    let mut s = vec![0u32];
    let inner_p = r
        .scope(&mut s, |outer| {
            r.with(outer, |v: &mut Vec<u32>| {
                v.push(1);
                // Re-scope the `&mut` the callback holds.
                let q = r
                    .scope(&mut *v, |inner| {
                        r.with(inner, |v: &mut Vec<u32>| v.push(2)).unwrap();
                        assert_eq!(r.with(outer, |_: &mut Vec<u32>| ()), Err(Error::Busy));
                        inner as usize
                    })
                    .unwrap();
                assert_eq!(r.with(ptr(q), |_: &mut Vec<u32>| ()), Err(Error::Stale));
                v.push(3);
                q
            })
            .unwrap()
        })
        .unwrap();
    assert_eq!(
        r.with(ptr(inner_p), |_: &mut Vec<u32>| ()),
        Err(Error::Stale)
    );
    assert_eq!(s, [0, 1, 2, 3]);

    let (mut a, mut b, mut c) = (0u8, 0u16, 0u32);
    r.scope(&mut a, |pa| {
        r.scope(&mut b, |pb| {
            r.scope(&mut c, |pc| {
                // From the innermost body, every level.
                r.with(pa, |a: &mut u8| *a += 1).unwrap();
                r.with(pb, |b: &mut u16| *b += 1).unwrap();
                r.with(pc, |c: &mut u32| *c += 1).unwrap();
                // From inside the outermost's callback: the others served,
                // itself Busy.
                r.with(pa, |a: &mut u8| {
                    *a += 1;
                    r.with(pc, |c: &mut u32| *c += 1).unwrap();
                    r.with(pb, |b: &mut u16| {
                        *b += 1;
                        assert_eq!(r.with(pa, |_: &mut u8| ()), Err(Error::Busy));
                        assert_eq!(r.with(pb, |_: &mut u16| ()), Err(Error::Busy));
                        r.with(pc, |c: &mut u32| *c += 1).unwrap();
                    })
                    .unwrap();
                })
                .unwrap();
                // Types are checked per record, also off the innermost.
                assert!(matches!(
                    r.with(pa, |_: &mut u16| ()),
                    Err(Error::WrongType { .. })
                ));
            })
            .unwrap();
            // `pc` is gone; the outer two still served.
            r.with(pa, |a: &mut u8| *a += 1).unwrap();
        })
        .unwrap();
    })
    .unwrap();
    assert_eq!((a, b, c), (3, 2, 3));
}

/// Promise (lend module: "Lending a handle ... re-lends"; a lent restore
/// "is served"; README: "Inside a callback, code may save, restore, take
/// and unref other handles, or start a nested C call or scope"): a `lend`
/// inside a scope callback, a scope inside a lend's body whose callbacks
/// `restore_with` the lent value, and an owning `Handle` made inside a
/// callback, returned out of the scope and used after it. Held.
#[test]
fn lends_and_scopes_interleave() {
    let r = Registry::new();
    let q = r.save(0u64);
    let mut state = 0u32;
    let h = r
        .scope(&mut state, |p| {
            r.with(p, |s: &mut u32| {
                *s += 1;
                r.lend::<u64, _>(q, || {
                    *r.restore::<u64>(q).unwrap() += 1;
                    // The scope's record is reachable too, only not itself.
                    assert_eq!(r.with(p, |_: &mut u32| ()), Err(Error::Busy));
                    let mut inner = 0u8;
                    r.scope(&mut inner, |ip| {
                        r.with(ip, |i: &mut u8| {
                            *i += 1;
                            r.restore_with(q, |v: &mut u64| *v += 10).unwrap();
                        })
                        .unwrap();
                    })
                    .unwrap();
                    assert_eq!(inner, 1);
                })
                .unwrap();
                r.handle(String::from("made in a callback"))
            })
            .unwrap()
        })
        .unwrap();
    assert_eq!(state, 1);
    assert_eq!(h.restore().unwrap().as_str(), "made in a callback");
    assert_eq!(h.into_inner().unwrap(), "made in a callback");
    assert_eq!(r.take::<u64>(q), Ok(11));
    assert!(r.is_empty());
}

// ---------------------------------------------------------------------
// The rest of the API on a scope's handle
// ---------------------------------------------------------------------

/// Promise (scope module: "another thread ... never reaches a value that
/// is not `Send`"; "When the scope returns, no callback can reach the
/// state"): a scope's handle given to the typed calls that would move or
/// borrow a saved value (`take`, `restore`, `restore_with`,
/// `restore_ref`, `lend`, `Handle::from_ptr_in`) under the state's type:
/// each is an error, in the body and inside a callback, for all four
/// forms, and the state is intact. Held. (On a pinned scope's own thread
/// `take` and `restore_ref` answer `Busy`, not `WrongType`: the rustdoc
/// of `with` promises `WrongType` "for another `S`"; README's `Busy`
/// row now names these.)
#[test]
fn typed_calls_never_take_a_scopes_record() {
    let r = Registry::new();
    fn poke(r: &Registry, p: *mut c_void) {
        // `WrongType`, or `Busy` on a pinned scope's own thread (which
        // holds the record's borrow: checked before the type).
        assert!(matches!(
            r.take::<u32>(p),
            Err(Error::WrongType { .. } | Error::Busy)
        ));
        assert!(r.restore::<u32>(p).is_err());
        assert!(r.restore_ref::<u32>(p).is_err());
        assert!(r.restore_with(p, |_: &mut u32| ()).is_err());
        assert!(r.lend::<u32, _>(p, || ()).is_err());
        assert!(Handle::<u32>::from_ptr_in(r, p).is_err());
    }
    let mut a = 1u32;
    r.scope(&mut a, |p| {
        poke(&r, p);
        r.with(p, |a: &mut u32| {
            poke(&r, p);
            *a += 1;
        })
        .unwrap();
    })
    .unwrap();
    let mut b = 1u32;
    r.scope_send(&mut b, |p| {
        poke(&r, p);
        r.with(p, |b: &mut u32| {
            poke(&r, p);
            *b += 1;
        })
        .unwrap();
    })
    .unwrap();
    let c = 1u32;
    r.scope_sync(&c, |p| {
        poke(&r, p);
        r.with_ref(p, |_: &u32| poke(&r, p)).unwrap();
    })
    .unwrap();
    let mut f = |x: u32| x + 1;
    r.scope_fn(&mut f, |p| {
        poke(&r, p);
        assert_eq!(r.call::<u32, u32>(p, 1), Ok(2));
    })
    .unwrap();
    assert_eq!((a, b), (2, 2));
    assert!(r.is_empty());
}

/// Promise (`Registry::retain`: "works on a borrowed value too"; scope
/// module: "When the scope returns, no callback can reach the state";
/// README "Errors", `Stale`: "by the end of its scope"): `retain` of a
/// scope's handle (twice, once from inside a callback), then more
/// callbacks, then the scope ends with "references out". After: `with`,
/// `unref`, `retain` and `ref_count` are all `Stale`, nothing is left in
/// the registry, and a new value in the freed slot counts 1. Held, all
/// four forms.
#[test]
fn retained_scope_handles_end_with_the_scope() {
    let r = Registry::new();
    let mut ends = Vec::new();
    let mut a = 0u32;
    ends.push(
        r.scope(&mut a, |p| {
            r.retain(p).unwrap();
            r.with(p, |a: &mut u32| {
                r.retain(p).unwrap();
                *a += 1;
            })
            .unwrap();
            assert_eq!(r.ref_count(p), Ok(3));
            r.unref(p).unwrap();
            r.with(p, |a: &mut u32| *a += 1).unwrap();
            p as usize
        })
        .unwrap(),
    );
    let mut b = 0u32;
    ends.push(
        r.scope_send(&mut b, |p| {
            r.retain(p).unwrap();
            r.with(p, |b: &mut u32| {
                r.retain(p).unwrap();
                *b += 1;
            })
            .unwrap();
            r.with(p, |b: &mut u32| *b += 1).unwrap();
            p as usize
        })
        .unwrap(),
    );
    let c = AtomicU64::new(0);
    ends.push(
        r.scope_sync(&c, |p| {
            r.with_ref(p, |c: &AtomicU64| {
                r.retain(p).unwrap();
                c.fetch_add(1, SeqCst);
            })
            .unwrap();
            r.with_ref(p, |c: &AtomicU64| c.fetch_add(1, SeqCst))
                .unwrap();
            p as usize
        })
        .unwrap(),
    );
    let mut n = 0;
    let mut f = |x: u32| n += x;
    ends.push(
        r.scope_fn(&mut f, |p| {
            r.retain(p).unwrap();
            r.call::<u32, ()>(p, 1).unwrap();
            p as usize
        })
        .unwrap(),
    );
    let _ = f;
    assert_eq!((a, b, c.load(SeqCst), n), (2, 2, 2, 1));
    for p in ends {
        assert_eq!(r.with(ptr(p), |_: &mut u32| ()), Err(Error::Stale));
        assert_eq!(r.unref(ptr(p)), Err(Error::Stale));
        assert_eq!(r.retain(ptr(p)), Err(Error::Stale));
        assert_eq!(r.ref_count(ptr(p)), Err(Error::Stale));
    }
    assert!(r.is_empty());
    let q = r.save(0u8);
    assert_eq!(r.ref_count(q), Ok(1));
    assert_eq!(r.take::<u8>(q), Ok(0));
}

/// Promise (scope module: "if C removed it first (an unref as
/// destroy-notify), the record is dropped by its last borrower instead";
/// `run_lent`: "an unref meanwhile only orphans it"): `unref` and
/// `c_unref` of a scope's handle from inside its own callback, which then
/// goes on writing the state; every later callback is `Stale`, the scope
/// returns normally with the writes, for all four forms; a pinned scope's
/// handle unreffed from another thread mid-callback likewise. Held.
#[test]
fn unref_inside_a_callback_orphans_the_record() {
    let r = Registry::global();
    let mut a: Vec<u8> = Vec::new();
    r.scope(&mut a, |p| {
        r.with(p, |a: &mut Vec<u8>| {
            a.push(1);
            assert_eq!(r.unref(p), Ok(()));
            handle_registry::c_unref(p); // again: ignored
            a.push(2);
        })
        .unwrap();
        assert_eq!(r.with(p, |a: &mut Vec<u8>| a.push(3)), Err(Error::Stale));
    })
    .unwrap();
    assert_eq!(a, [1, 2]);

    let mut b: Vec<u8> = Vec::new();
    r.scope_send(&mut b, |p| {
        r.with(p, |b: &mut Vec<u8>| {
            b.push(1);
            handle_registry::c_unref(p);
            b.push(2);
        })
        .unwrap();
        assert_eq!(r.with(p, |b: &mut Vec<u8>| b.push(3)), Err(Error::Stale));
    })
    .unwrap();
    assert_eq!(b, [1, 2]);

    let c = AtomicU64::new(0);
    r.scope_sync(&c, |p| {
        r.with_ref(p, |c: &AtomicU64| {
            c.fetch_add(1, SeqCst);
            handle_registry::c_unref(p);
            c.fetch_add(1, SeqCst);
        })
        .unwrap();
        assert_eq!(
            r.with_ref(p, |c: &AtomicU64| c.fetch_add(1, SeqCst)),
            Err(Error::Stale)
        );
    })
    .unwrap();
    assert_eq!(c.into_inner(), 2);

    // A pinned scope, unreffed from another thread while its own thread is
    // inside a callback: WrongThread for that thread's `call`, the unref
    // succeeds, and the callback in progress finishes on the state.
    let mut log: Vec<u8> = Vec::new();
    let mut f = |x: u8| {
        log.push(x);
        x
    };
    r.scope_fn(&mut f, |p| {
        let q = p as usize;
        let first = r.call::<u8, u8>(p, 1);
        let inside = r.with(p, |_: &mut u8| ());
        assert!(matches!(inside, Err(Error::WrongType { .. })));
        let there = std::thread::spawn(move || {
            (
                handle_registry::call::<u8, u8>(ptr(q), 2),
                handle_registry::unref(ptr(q)),
                handle_registry::call::<u8, u8>(ptr(q), 3),
            )
        })
        .join()
        .unwrap();
        assert_eq!(first, Ok(1));
        assert_eq!(there, (Err(Error::WrongThread), Ok(()), Err(Error::Stale)));
        assert_eq!(r.call::<u8, u8>(p, 4), Err(Error::Stale));
    })
    .unwrap();
    let _ = f;
    assert_eq!(log, [1]);
}

// ---------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------

/// Promise (scope module: "When the scope returns, no callback can reach
/// the state any more: a late call answers `Error::Stale`. For the forms
/// that admit other threads, the scope first waits for callbacks still
/// running there"; `scope`: "A callback from another thread gets
/// `WrongThread`"): a scope's handle leaks to threads that call back in a
/// loop across the scope's end (long enough to park their borrows on
/// Linux). Every `Ok` a thread counted must show in the state, and the
/// first call made after the thread saw the scope's end must be `Stale`
/// (never a hang, never a hit). `scope_send`, `scope_sync`, and `scope`
/// (where every call is `WrongThread`, then `Stale`). Held.
#[test]
fn leaked_handles_called_across_the_scopes_end() {
    let _w = watchdog("leaked_handles_called_across_the_scopes_end");
    let r = Registry::global();
    let threads = 2;
    for _ in 0..rounds(4, 1) {
        let mut total = 0u64;
        let served = served_across_the_end(
            threads,
            |q| handle_registry::with(q, |t: &mut u64| *t += 1),
            |body| r.scope_send(&mut total, body).unwrap(),
        );
        assert_eq!(total, served);

        let hits = AtomicU64::new(0);
        let served = served_across_the_end(
            threads,
            |q| {
                handle_registry::with_ref(q, |h: &AtomicU64| {
                    h.fetch_add(1, SeqCst);
                })
            },
            |body| r.scope_sync(&hits, body).unwrap(),
        );
        assert_eq!(hits.into_inner(), served);

        // scope (pinned): WrongThread while it runs, Stale after.
        let ended = AtomicBool::new(false);
        let mut pinned = 0u64;
        let warm = Barrier::new(2);
        std::thread::scope(|s| {
            let (ended, warm) = (&ended, &warm);
            let (tx, rx) = mpsc::channel::<usize>();
            let worker = s.spawn(move || {
                let q = rx.recv().unwrap();
                let mut i = 0usize;
                loop {
                    if i == rounds(1500, 20) {
                        warm.wait();
                    }
                    i += 1;
                    let seen_end = ended.load(SeqCst);
                    match handle_registry::with(ptr(q), |t: &mut u64| *t += 1) {
                        Err(Error::WrongThread) => assert!(!seen_end),
                        Err(Error::Stale) if seen_end => return,
                        Err(Error::Stale) => {}
                        other => panic!("pinned scope reached from another thread: {other:?}"),
                    }
                }
            });
            r.scope(&mut pinned, |p| {
                tx.send(p as usize).unwrap();
                // Inside a callback of our own while the worker hammers.
                r.with(p, |t: &mut u64| {
                    *t += 1;
                    warm.wait();
                })
                .unwrap();
            })
            .unwrap();
            ended.store(true, SeqCst);
            worker.join().unwrap();
        });
        assert_eq!(pinned, 1);
    }
}

/// Runs a scope through `lend` (which hands the body it is given the
/// scope's handle) while `threads` threads, given that handle, `call` it
/// back in a loop across the scope's end, long enough to park their
/// borrows first. No call a thread made after it saw the end may be
/// served, and a refused call must be `Stale`, for good. Returns how many
/// calls were served.
fn served_across_the_end(
    threads: usize,
    call: impl Fn(*mut c_void) -> Result<(), Error> + Sync,
    lend: impl FnOnce(&dyn Fn(*mut c_void)),
) -> u64 {
    let ended = AtomicBool::new(false);
    let warm = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let (ended, warm, call) = (&ended, &warm, &call);
        let (tx, rx) = mpsc::channel::<usize>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || {
                    let q = ptr(rx.lock().unwrap().recv().unwrap());
                    let mut ok = 0u64;
                    let mut i = 0usize;
                    loop {
                        if i == rounds(1500, 20) {
                            warm.wait();
                        }
                        i += 1;
                        let seen_end = ended.load(SeqCst);
                        match call(q) {
                            Ok(()) => {
                                assert!(!seen_end, "a call after the scope's end was served");
                                ok += 1;
                            }
                            Err(e) => {
                                assert_eq!(e, Error::Stale);
                                assert_eq!(call(q), Err(Error::Stale));
                                if seen_end {
                                    return ok;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        lend(&|p| {
            for _ in 0..threads {
                tx.send(p as usize).unwrap();
            }
            warm.wait();
        });
        ended.store(true, SeqCst);
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

/// Promise (`scope_send`: "Callbacks on this thread pay a plain
/// `restore`", and a plain restore parks after 1024 in a row on Linux;
/// README: a parked borrow changes "nothing ... in what you can do"):
/// `scope_send` callbacks on the scope's own thread long enough to park,
/// then (1) the scope ends, (2) the body `unref`s the parked handle
/// first, (3) the same, from a worker thread that parked it and then
/// stays idle. Each scope returns (no wait for itself), late calls are
/// `Stale`, and a later scope that reuses the slot is served while the old
/// handle stays `Stale`. Held.
#[test]
fn scope_send_parked_borrows_end_cleanly() {
    let _w = watchdog("scope_send_parked_borrows_end_cleanly");
    let r = Registry::new();
    let n = rounds(2000, 30) as u64;
    for unref_first in [false, true] {
        let mut s = 0u64;
        let old = r
            .scope_send(&mut s, |p| {
                for _ in 0..n {
                    r.with(p, |s: &mut u64| *s += 1).unwrap();
                }
                if unref_first {
                    r.unref(p).unwrap();
                    assert_eq!(r.with(p, |s: &mut u64| *s += 1), Err(Error::Stale));
                }
                p as usize
            })
            .unwrap();
        assert_eq!(s, n);
        assert_eq!(r.with(ptr(old), |s: &mut u64| *s += 1), Err(Error::Stale));
        let mut t = 0u64;
        let new = r
            .scope_send(&mut t, |p| {
                assert_eq!(r.with(ptr(old), |s: &mut u64| *s += 1), Err(Error::Stale));
                r.with(p, |t: &mut u64| *t += 1).unwrap();
                p as usize
            })
            .unwrap();
        assert_ne!(new, old);
        assert_eq!(t, 1);
        assert!(r.is_empty());
    }
    // A worker parks the handle, then idles (alive) while the body unrefs
    // it and the scope ends.
    let mut s = 0u64;
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (late_tx, late_rx) = mpsc::channel::<()>();
    std::thread::scope(|sc| {
        let r = &r;
        let worker = sc.spawn(move || {
            let q = go_rx.recv().unwrap();
            for _ in 0..n {
                r.with(ptr(q), |s: &mut u64| *s += 1).unwrap();
            }
            done_tx.send(()).unwrap();
            late_rx.recv().unwrap();
            r.with(ptr(q), |s: &mut u64| *s += 1)
        });
        r.scope_send(&mut s, |p| {
            go_tx.send(p as usize).unwrap();
            done_rx.recv().unwrap();
            r.unref(p).unwrap();
        })
        .unwrap();
        late_tx.send(()).unwrap();
        assert_eq!(worker.join().unwrap(), Err(Error::Stale));
    });
    assert_eq!(s, n);
    assert!(r.is_empty());
}

/// Promise (scope module: "A panic in `with`, `with_ref` or `call` is
/// caught ...; later callbacks of the same scope are skipped with
/// `Panicked`, and the scope resumes the panic when it returns"): a
/// worker's callback of a `scope_send` / `scope_sync` panics; later
/// callbacks from any thread are `Panicked`; the body returns a `Counted`
/// value, which is dropped once, and the scope resumes the worker's
/// payload. Held.
#[test]
fn a_workers_panic_comes_out_of_the_scope() {
    let r = Registry::global();
    let drops = Arc::new(AtomicUsize::new(0));
    let mut s = 0u32;
    let out = catch_unwind(AssertUnwindSafe(|| {
        r.scope_send(&mut s, |p| {
            let q = p as usize;
            let got = std::thread::spawn(move || {
                let first = handle_registry::with(ptr(q), |_: &mut u32| panic_any("worker"));
                let later = handle_registry::with(ptr(q), |s: &mut u32| *s += 1);
                (first, later)
            })
            .join()
            .unwrap();
            assert_eq!(got, (Err(Error::Panicked), Err(Error::Panicked)));
            assert_eq!(r.with(p, |s: &mut u32| *s += 1), Err(Error::Panicked));
            Counted(drops.clone())
        })
    }));
    let payload = out.expect_err("the worker's panic resumed");
    assert_eq!(payload_text(&*payload), "worker");
    assert_eq!(drops.load(SeqCst), 1);
    assert_eq!(s, 0);

    let hits = AtomicU64::new(0);
    let out = catch_unwind(AssertUnwindSafe(|| {
        r.scope_sync(&hits, |p| {
            let q = p as usize;
            std::thread::scope(|sc| {
                sc.spawn(move || {
                    let first =
                        handle_registry::with_ref(ptr(q), |_: &AtomicU64| panic_any("reader"));
                    assert_eq!(first, Err(Error::Panicked));
                });
            });
            let later = r.with_ref(p, |h: &AtomicU64| h.fetch_add(1, SeqCst));
            assert_eq!(later, Err(Error::Panicked));
            Counted(drops.clone())
        })
    }));
    let payload = out.expect_err("the reader's panic resumed");
    assert_eq!(payload_text(&*payload), "reader");
    assert_eq!(drops.load(SeqCst), 2);
    assert_eq!(hits.into_inner(), 0);
}

/// Promise (`scope_send`: "Before returning, the scope waits for callbacks
/// still running on other threads", also when the body unwinds: its
/// `Finish` guard): the body panics while a worker is inside a callback
/// (it entered before the panic and leaves after a short handshake) and
/// while others keep calling; the scope's unwind waits for it, the
/// body's payload comes out, and the late calls are `Stale`. Held.
#[test]
fn the_body_panics_while_workers_call_back() {
    let _w = watchdog("the_body_panics_while_workers_call_back");
    let r = Registry::global();
    let mut v: Vec<u32> = Vec::new();
    let (inside_tx, inside_rx) = mpsc::channel::<()>();
    let (stuck_tx, stuck_rx) = mpsc::channel::<()>();
    let worker = std::sync::Mutex::new(None);
    let out = catch_unwind(AssertUnwindSafe(|| {
        r.scope_send(&mut v, |p| {
            let q = p as usize;
            *worker.lock().unwrap() = Some(std::thread::spawn(move || {
                handle_registry::with(ptr(q), |v: &mut Vec<u32>| {
                    inside_tx.send(()).unwrap();
                    // Returns once the body is gone (its sender dropped).
                    let _ = stuck_rx.recv();
                    v.push(1);
                })
                .unwrap();
                handle_registry::with(ptr(q), |v: &mut Vec<u32>| v.push(2))
            }));
            inside_rx.recv().unwrap();
            let _stuck = stuck_tx; // dropped by the unwind
            panic_any("body");
        })
    }));
    assert_eq!(payload_text(&*out.err().unwrap()), "body");
    // The scope's unwind waited for the callback's write; the worker's
    // second call raced the scope's end: served before it, or `Stale`.
    let late = worker.lock().unwrap().take().unwrap().join().unwrap();
    match late {
        Ok(()) => assert_eq!(v, [1, 2]),
        Err(e) => {
            assert_eq!(e, Error::Stale);
            assert_eq!(v, [1]);
        }
    }
}

// ---------------------------------------------------------------------
// Panics through C
// ---------------------------------------------------------------------

unsafe extern "C" fn on_u32(user_data: *mut c_void, i: c_int) -> c_int {
    handle_registry::with(user_data, |s: &mut u32| {
        if i == 1 {
            panic_any(NestedPanic(DEEP));
        }
        *s += 1;
        0
    })
    .unwrap_or(-1)
}

unsafe extern "C" fn on_fn(user_data: *mut c_void, i: c_int) -> c_int {
    handle_registry::call(user_data, i).unwrap_or(-1)
}

/// Stands for a C function calling `cb` synchronously `n` times.
unsafe extern "C" fn c_for_each(
    cb: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    user_data: *mut c_void,
    n: c_int,
) -> c_int {
    let mut sum = 0;
    for i in 0..n {
        sum += unsafe { cb(user_data, i) };
    }
    sum
}

/// Promise (README "Panics": "No panic crosses into C"; scope module:
/// later callbacks "skipped with `Panicked`", the panic resumed when the
/// scope returns; README: a payload left in a carrier "is dropped with
/// it, and a panic from the payload's own `Drop` is caught there"):
/// callbacks through `extern "C"` trampolines; the second one panics with
/// a payload whose `Drop` panics `DEEP` levels; the rest are skipped (a
/// skipped `with`'s closure, and a `call` refused for its type, drop a
/// value whose `Drop` panics); then (1) the body
/// returns and the payload is resumed, (2) the body panics too, and its
/// own payload wins. `scope` and `scope_fn`. In a child process. Held.
#[test]
fn panics_through_extern_c_never_unwind_into_c() {
    if !in_child("panics_through_extern_c_never_unwind_into_c") {
        return;
    }
    let r = Registry::global();
    for body_panics in [false, true] {
        let mut s = 0u32;
        let drops = Arc::new(AtomicUsize::new(0));
        let out = catch_unwind(AssertUnwindSafe(|| {
            r.scope(&mut s, |p| {
                // SAFETY: `c_for_each` calls `on_u32` with our handle.
                let sum = unsafe { c_for_each(on_u32, p, 4) };
                assert_eq!(sum, -3);
                let bomb = PanicOnDrop(drops.clone());
                let skipped = r.with(p, move |_: &mut u32| drop(bomb));
                assert_eq!(skipped, Err(Error::Panicked));
                if body_panics {
                    panic_any("body");
                }
            })
        }));
        let payload = out.expect_err("a panic comes out");
        if body_panics {
            assert_eq!(payload_text(&*payload), "body");
        } else {
            assert!(payload.is::<NestedPanic>());
            assert_eq!(drain(payload), DEEP);
        }
        assert_eq!(s, 1);
        assert_eq!(drops.load(SeqCst), 1);

        let mut seen = Vec::new();
        let bomb_drops = drops.clone();
        let mut f = move |i: c_int| {
            seen.push(i);
            if i == 1 {
                panic_any(NestedPanic(DEEP));
            }
            i
        };
        let out = catch_unwind(AssertUnwindSafe(|| {
            r.scope_fn(&mut f, |p| {
                // SAFETY: as above.
                let sum = unsafe { c_for_each(on_fn, p, 3) };
                assert_eq!(sum, -2);
                // A call refused for its type, whose argument panics when
                // dropped.
                let refused = r.call::<PanicOnDrop, ()>(p, PanicOnDrop(bomb_drops.clone()));
                assert!(matches!(refused, Err(Error::WrongType { .. })));
                if body_panics {
                    panic_any("body");
                }
            })
        }));
        let payload = out.expect_err("a panic comes out");
        if body_panics {
            assert_eq!(payload_text(&*payload), "body");
        } else {
            assert_eq!(drain(payload), DEEP);
        }
        assert_eq!(drops.load(SeqCst), 2);
    }
}

unsafe extern "C" fn on_shared(user_data: *mut c_void, _i: c_int) -> c_int {
    handle_registry::with_ref(user_data, |b: &Barrier| {
        b.wait();
        panic_any(NestedPanic(DEEP))
    })
    .unwrap_or(-1)
}

/// Promise (README "Panics": "No panic crosses into C"; `PanicCarrier`:
/// the first panic wins, the second payload is discarded, and a panic
/// from a payload's `Drop` is caught): two `scope_sync` callbacks,
/// through an `extern "C"` trampoline on two threads, are inside
/// `with_ref` at once and both panic with payloads whose `Drop` panics;
/// the loser's payload is dropped on its C thread. No abort; the scope
/// resumes one payload. Then again with a body that panics too, so the
/// winner's payload is dropped with the carrier during the unwind. In a
/// child process. Held.
#[test]
fn concurrent_panics_in_with_ref_through_c() {
    if !in_child("concurrent_panics_in_with_ref_through_c") {
        return;
    }
    let _w = watchdog("concurrent_panics_in_with_ref_through_c");
    let r = Registry::global();
    for body_panics in [false, true] {
        let b = Barrier::new(2);
        let out = catch_unwind(AssertUnwindSafe(|| {
            r.scope_sync(&b, |p| {
                let q = p as usize;
                std::thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(move || {
                            // SAFETY: `c_for_each` calls `on_shared` with our handle.
                            let sum = unsafe { c_for_each(on_shared, ptr(q), 2) };
                            assert_eq!(sum, -2);
                        });
                    }
                });
                if body_panics {
                    panic_any("body");
                }
            })
        }));
        let payload = out.expect_err("a panic comes out");
        if body_panics {
            assert_eq!(payload_text(&*payload), "body");
        } else {
            assert_eq!(drain(payload), DEEP);
        }
    }
}

// ---------------------------------------------------------------------
// Thread-local teardown
// ---------------------------------------------------------------------

/// Every scope form and a lend, with callbacks, from where `run` is
/// called; returns what each answered (`Ok` or the error).
fn every_scope_once() -> Vec<Result<u32, Error>> {
    let r = Registry::global();
    let mut out = Vec::new();
    let mut a = 0u32;
    out.push(
        r.scope(&mut a, |p| r.with(p, |a: &mut u32| *a += 1).map(|_| 1))
            .and_then(|x| x),
    );
    let mut f = |x: u32| x + 1;
    out.push(
        r.scope_fn(&mut f, |p| r.call::<u32, u32>(p, 1))
            .and_then(|x| x),
    );
    let mut b = 0u32;
    out.push(
        r.scope_send(&mut b, |p| r.with(p, |b: &mut u32| *b += 3).map(|_| 3))
            .and_then(|x| x),
    );
    let c = 4u32;
    out.push(
        r.scope_sync(&c, |p| r.with_ref(p, |c: &u32| *c))
            .and_then(|x| x),
    );
    let q = r.save(4u32);
    out.push(
        r.lend::<u32, _>(q, || r.restore_with(q, |v: &mut u32| *v + 1))
            .and_then(|x| x),
    );
    // Whatever the lend answered, `q` is ours to remove.
    let _ = r.unref(q);
    for (i, got) in out.iter().enumerate() {
        assert!(
            matches!(got, Ok(_) | Err(Error::Busy)),
            "form {i} answered {got:?}"
        );
    }
    if out[0].is_ok() {
        assert_eq!(a, 1);
    }
    out
}

type Body = std::cell::RefCell<Option<common::OnDrop>>;

thread_local! {
    static EARLY: Body = const { std::cell::RefCell::new(None) };
    static LATE: Body = const { std::cell::RefCell::new(None) };
}

/// Runs `f` when this thread destroys `key`'s value. Destructors run in
/// reverse order of first use: registered before the thread's first
/// registry call, `f` runs after the crate's own thread-locals (the owner
/// id's lease among them) are gone; registered after it, before them.
fn at_destruction(key: &'static std::thread::LocalKey<Body>, f: impl FnOnce() + 'static) {
    key.with(|b| *b.borrow_mut() = Some(common::OnDrop(Some(Box::new(f)))));
}

/// A registry call that takes this thread's owner id (and creates the
/// crate's thread-locals).
fn use_the_registry() {
    let h = handle_registry::save(1u8);
    drop(handle_registry::restore::<u8>(h).unwrap());
    handle_registry::unref(h).unwrap();
}

/// Promise (`scope`: "Fails without running `body` only when the registry
/// is full, or with `Busy` on a thread without an owner id"; README
/// "Thread-local teardown": every promise kept): all four scopes and a
/// lend, with their callbacks, run from two thread-local destructors: one
/// registered before the thread first used the registry, one after; on a
/// thread that ran every form before. Each answers `Ok` with the right
/// value or `Busy`; no panic, no abort. In a child process. Held.
#[test]
fn scopes_from_thread_local_destructors() {
    if !in_child("scopes_from_thread_local_destructors") {
        return;
    }
    let _w = watchdog("scopes_from_thread_local_destructors");
    type Report = (&'static str, Vec<Result<u32, Error>>);
    let (tx, rx) = mpsc::channel::<Report>();
    std::thread::spawn(move || {
        let (early, late) = (tx.clone(), tx);
        at_destruction(&EARLY, move || {
            let _ = early.send(("early", every_scope_once()));
        });
        assert_eq!(every_scope_once(), [Ok(1), Ok(2), Ok(3), Ok(4), Ok(5)]);
        at_destruction(&LATE, move || {
            let _ = late.send(("late", every_scope_once()));
        });
    })
    .join()
    .unwrap();
    let got: Vec<Report> = rx.iter().collect();
    assert_eq!(got.len(), 2, "{got:?}");
    for (_, out) in &got {
        for (i, v) in out.iter().enumerate() {
            if let Ok(v) = v {
                assert_eq!(*v, [1, 2, 3, 4, 5][i], "{got:?}");
            }
        }
    }
    // Visible with --nocapture: which forms ran and which were refused.
    println!("{got:?}");
}

// ---------------------------------------------------------------------
// lend
// ---------------------------------------------------------------------

/// Promise (lend module: "`unref` inside the call marks the slot
/// orphaned; the lend notices it ... and answers `Stale`, and the value is
/// dropped when the lend ends"; README: "`take` ... is `Busy` on the
/// borrowing thread"): inside a lend, `take` of the lent handle is `Busy`
/// and changes nothing; `restore_with` is served; `unref` makes
/// `restore`, `restore_with`, `restore_ref` and an inner `lend` `Stale`,
/// the value stays until the lend ends, and is dropped exactly once
/// there. Held.
#[test]
fn take_and_unref_of_the_lent_handle() {
    let r = Registry::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let p = r.save(Counted(drops.clone()));
    r.lend::<Counted, _>(p, || {
        assert_eq!(r.take::<Counted>(p).err(), Some(Error::Busy));
        assert_eq!(r.restore_with(p, |_: &mut Counted| 1), Ok(1));
        r.unref(p).unwrap();
        assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Stale));
        assert_eq!(r.restore_with(p, |_: &mut Counted| 1), Err(Error::Stale));
        assert_eq!(r.lend::<Counted, _>(p, || ()).err(), Some(Error::Stale));
        assert_eq!(r.take::<Counted>(p).err(), Some(Error::Stale));
        assert_eq!(drops.load(SeqCst), 0, "dropped inside the lend");
    })
    .unwrap();
    assert_eq!(drops.load(SeqCst), 1);
    assert!(r.is_empty());

    // An owning `Handle` of the lent value, consumed inside the lend:
    // `into_inner` is `Busy` and unrefs (its doc: "as on drop").
    let h = r.handle(Counted(drops.clone()));
    let p = h.as_ptr();
    r.lend::<Counted, _>(p, || {
        assert_eq!(
            h.into_inner().err().map(|e| e.to_string()),
            Some(Error::Busy.to_string())
        );
        assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Stale));
        assert_eq!(drops.load(SeqCst), 1);
    })
    .unwrap();
    assert_eq!(drops.load(SeqCst), 2);
    assert!(r.is_empty());
}

/// Promise (README "Threads and re-entrancy": "A value dropped while its
/// thread unwinds (the last guard of an unreffed value released by the
/// unwind ...) has its panic caught and dropped: never a double-panic
/// abort"; "`unref` re-raises the panic to its caller (or ... the call
/// that did the drop re-raises it)"): the lent value, whose `Drop`
/// panics, is unreffed inside the lend; then (1) the body panics: the
/// lend's end drops the value during the unwind, and the body's payload
/// comes out; (2) the body returns: the drop's panic comes out of `lend`;
/// (3) a lent guard escapes the lend and is dropped by an unwind. In a
/// child process. Held.
#[test]
fn lend_ending_drops_an_unreffed_panicking_value() {
    if !in_child("lend_ending_drops_an_unreffed_panicking_value") {
        return;
    }
    let r = Registry::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let p = r.save(PanicOnDrop(drops.clone()));
    let out = catch_unwind(AssertUnwindSafe(|| {
        r.lend::<PanicOnDrop, _>(p, || {
            r.unref(p).unwrap();
            panic_any("body");
        })
    }));
    assert_eq!(payload_text(&*out.err().unwrap()), "body");
    assert_eq!(drops.load(SeqCst), 1);

    let p = r.save(PanicOnDrop(drops.clone()));
    let out = catch_unwind(AssertUnwindSafe(|| {
        r.lend::<PanicOnDrop, _>(p, || {
            r.unref(p).unwrap();
            7
        })
    }));
    assert_eq!(payload_text(&*out.err().unwrap()), PANIC_ON_DROP);
    assert_eq!(drops.load(SeqCst), 2);

    let p = r.save(PanicOnDrop(drops.clone()));
    let out = catch_unwind(AssertUnwindSafe(|| {
        let kept = r
            .lend::<PanicOnDrop, _>(p, || r.restore::<PanicOnDrop>(p).unwrap())
            .unwrap();
        r.unref(p).unwrap();
        let _kept = kept;
        panic_any("after");
    }));
    assert_eq!(payload_text(&*out.err().unwrap()), "after");
    assert_eq!(drops.load(SeqCst), 3);
    assert!(r.is_empty());
}

/// Promise (README "Threads and re-entrancy": "`mem::forget` of a guard
/// leaks its borrow: the value stays borrowed for good (... this thread
/// gets `Busy`) and is dropped only with its registry. It never changes
/// the answer for another handle"): a lent guard forgotten inside a lend
/// (and one inside a nested re-lend); after the lend: `restore`, `take`,
/// `lend` are `Busy`; `unref` orphans; another handle of the registry is
/// served; the value is dropped once, with the registry. Held.
#[test]
fn a_forgotten_lent_guard_leaks_the_borrow() {
    let drops = Arc::new(AtomicUsize::new(0));
    for nested in [false, true] {
        let r = Registry::new();
        let p = r.save(Counted(drops.clone()));
        let other = r.save(1u8);
        r.lend::<Counted, _>(p, || {
            if nested {
                r.lend::<Counted, _>(p, || std::mem::forget(r.restore::<Counted>(p).unwrap()))
                    .unwrap();
            } else {
                std::mem::forget(r.restore::<Counted>(p).unwrap());
            }
            assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Busy));
            assert_eq!(r.restore_with(other, |o: &mut u8| *o), Ok(1));
        })
        .unwrap();
        assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Busy));
        assert_eq!(r.take::<Counted>(p).err(), Some(Error::Busy));
        assert_eq!(r.lend::<Counted, _>(p, || ()).err(), Some(Error::Busy));
        assert_eq!(r.take::<u8>(other), Ok(1));
        assert_eq!(r.unref(p), Ok(()));
        assert_eq!(r.restore::<Counted>(p).err(), Some(Error::Stale));
        let before = drops.load(SeqCst);
        drop(r);
        assert_eq!(drops.load(SeqCst), before + 1);
    }
}

/// Promise (lend module: the record "is popped before that frame ends,
/// also on unwind"; `lend` "returns what its closure returns"): nested
/// lends of two handles (and of one handle twice) left by `?` and by a
/// panic from the innermost body, with a lent guard alive at that
/// moment; afterwards, no lend is left on the thread: both values are
/// taken with their writes, and a new lend of each works. Held.
#[test]
fn early_exits_from_nested_lends() {
    let r = Registry::new();
    let (a, b) = (r.save(0u32), r.save(0u64));
    fn inner(r: &Registry, a: *mut c_void, b: *mut c_void) -> Result<(), Error> {
        r.lend::<u64, _>(b, || -> Result<(), Error> {
            *r.restore::<u32>(a)? += 1;
            let _g = r.restore::<u64>(b)?;
            r.restore::<u64>(b)?; // Busy: leaves by `?` with `_g` alive
            unreachable!()
        })?
    }
    let out = r.lend::<u32, _>(a, || inner(&r, a, b)).unwrap();
    assert_eq!(out, Err(Error::Busy));
    let out = catch_unwind(AssertUnwindSafe(|| {
        r.lend::<u32, _>(a, || {
            r.lend::<u32, _>(a, || {
                r.lend::<u64, _>(b, || {
                    *r.restore::<u64>(b).unwrap() += 1;
                    let _g = r.restore::<u32>(a).unwrap();
                    panic_any("inner");
                })
            })
        })
    }));
    assert_eq!(payload_text(&*out.err().unwrap()), "inner");
    // Outside every lend: ordinary borrows again.
    r.lend::<u64, _>(b, || *r.restore::<u64>(b).unwrap() += 10)
        .unwrap();
    assert_eq!(r.take::<u32>(a), Ok(1));
    assert_eq!(r.take::<u64>(b), Ok(11));
}

// ---------------------------------------------------------------------
// Parked borrows under scopes and lends
// ---------------------------------------------------------------------

/// Promise (README, parked borrows: "Nothing changes in what you can do";
/// lend module: "A guard that escapes the lend ... inherits the real
/// borrow"; "Other threads see an ordinary exclusive borrow held for the
/// whole call, and wait"): a value this thread restored long enough to
/// park is lent; lent `restore_with`s and a guard that escapes the lend;
/// a worker's `take` waits for that guard and gets every write. Then the
/// same with a worker that waits for the whole lend. Held.
#[test]
fn lend_of_a_parked_borrow() {
    let _w = watchdog("lend_of_a_parked_borrow");
    let r = Registry::new();
    let n = rounds(2000, 30) as u64;
    let p = r.save(0u64);
    for _ in 0..n {
        r.restore_with(p, |v: &mut u64| *v += 1).unwrap();
    }
    let mut kept = r
        .lend::<u64, _>(p, || {
            for _ in 0..10 {
                r.restore_with(p, |v: &mut u64| *v += 1).unwrap();
            }
            r.restore::<u64>(p).unwrap()
        })
        .unwrap();
    assert_eq!(r.restore::<u64>(p).err(), Some(Error::Busy));
    *kept += 1;
    let q = p as usize;
    std::thread::scope(|s| {
        let r = &r;
        let (tx, rx) = mpsc::channel::<()>();
        let taker = s.spawn(move || {
            tx.send(()).unwrap();
            r.take::<u64>(ptr(q))
        });
        rx.recv().unwrap();
        drop(kept);
        assert_eq!(taker.join().unwrap(), Ok(n + 11));
    });

    let p = r.save(0u64);
    for _ in 0..n {
        r.restore_with(p, |v: &mut u64| *v += 1).unwrap();
    }
    let q = p as usize;
    std::thread::scope(|s| {
        let r = &r;
        let waiter = r
            .lend::<u64, _>(p, || {
                let (tx, rx) = mpsc::channel::<()>();
                let waiter = s.spawn(move || {
                    tx.send(()).unwrap();
                    r.restore_with(ptr(q), |v: &mut u64| *v)
                });
                rx.recv().unwrap();
                r.restore_with(p, |v: &mut u64| *v += 5).unwrap();
                waiter
            })
            .unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(n + 5));
    });
    assert_eq!(r.take::<u64>(p), Ok(n + 5));

    // The global registry (its hot handle is a separate path).
    let g = Registry::global();
    let p = g.save(0u64);
    for _ in 0..n {
        handle_registry::restore_with(p, |v: &mut u64| *v += 1).unwrap();
    }
    g.lend::<u64, _>(p, || {
        for _ in 0..10 {
            handle_registry::restore_with(p, |v: &mut u64| *v += 1).unwrap();
        }
        let guard = handle_registry::restore::<u64>(p).unwrap();
        assert_eq!(
            handle_registry::restore_with(p, |v: &mut u64| *v),
            Err(Error::Busy)
        );
        drop(guard);
    })
    .unwrap();
    let q = p as usize;
    let taken = std::thread::spawn(move || handle_registry::take::<u64>(ptr(q)))
        .join()
        .unwrap();
    assert_eq!(taken, Ok(n + 10));
}

/// Promise (scope module: "When the scope returns ... a late call answers
/// `Stale`"; README "Errors", `Stale`: "never resolves again, not even to
/// a later value in the same slot"): a worker parks its borrow of a
/// `scope_send` handle (or reads a `scope_sync` one long enough), then
/// idles, alive, across (1) the scope's end and (2) an `unref` of the
/// handle by the body; the slot is reused by a pinned `scope` and by a
/// new `scope_send`: the worker's old handle stays `Stale`, the pinned
/// one is `WrongThread`, the new shared one is served. Also a worker that
/// exits while parked. No scope waits forever. Held.
#[test]
fn idle_parked_workers_across_scope_ends_and_slot_reuse() {
    let _w = watchdog("idle_parked_workers_across_scope_ends_and_slot_reuse");
    let r = Registry::new();
    let n = rounds(2000, 30) as u64;
    for (unref_first, exits) in [(false, false), (true, false), (false, true)] {
        let (go_tx, go_rx) = mpsc::channel::<usize>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (next_tx, next_rx) = mpsc::channel::<(usize, usize)>();
        let (late_tx, late_rx) = mpsc::channel::<[Result<u64, Error>; 3]>();
        let mut s = 0u64;
        std::thread::scope(|sc| {
            let r = &r;
            sc.spawn(move || {
                let old = go_rx.recv().unwrap();
                for _ in 0..n {
                    r.with(ptr(old), |s: &mut u64| *s += 1).unwrap();
                }
                done_tx.send(()).unwrap();
                if exits {
                    return;
                }
                let (pinned, shared) = next_rx.recv().unwrap();
                late_tx
                    .send([
                        r.with(ptr(old), |s: &mut u64| *s),
                        r.with(ptr(pinned), |s: &mut u64| *s),
                        r.with(ptr(shared), |s: &mut u64| *s),
                    ])
                    .unwrap();
            });
            let old = r
                .scope_send(&mut s, |p| {
                    go_tx.send(p as usize).unwrap();
                    done_rx.recv().unwrap();
                    if unref_first {
                        r.unref(p).unwrap();
                    }
                    p as usize
                })
                .unwrap();
            assert_eq!(r.with(ptr(old), |s: &mut u64| *s), Err(Error::Stale));
            if exits {
                return;
            }
            let mut pinned_state = 7u64;
            r.scope(&mut pinned_state, |pinned| {
                let mut shared_state = 9u64;
                r.scope_send(&mut shared_state, |shared| {
                    next_tx.send((pinned as usize, shared as usize)).unwrap();
                    let late = late_rx.recv().unwrap();
                    assert_eq!(
                        late,
                        [Err(Error::Stale), Err(Error::WrongThread), Ok(9)],
                        "unref_first {unref_first}"
                    );
                })
                .unwrap();
            })
            .unwrap();
        });
        assert_eq!(s, n);
        assert!(r.is_empty());
    }

    // scope_sync: a reader that read long enough idles; the body unrefs,
    // or a reader is inside a callback when the body unrefs.
    for inside in [false, true] {
        let hits = AtomicU64::new(0);
        let (go_tx, go_rx) = mpsc::channel::<usize>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let late = std::thread::scope(|sc| {
            let r = &r;
            let reader = sc.spawn(move || {
                let q = go_rx.recv().unwrap();
                for _ in 0..n {
                    r.with_ref(ptr(q), |h: &AtomicU64| h.fetch_add(1, SeqCst))
                        .unwrap();
                }
                if inside {
                    r.with_ref(ptr(q), |h: &AtomicU64| {
                        done_tx.send(()).unwrap();
                        let _ = release_rx.recv();
                        h.fetch_add(1, SeqCst)
                    })
                    .unwrap();
                } else {
                    done_tx.send(()).unwrap();
                    let _ = release_rx.recv();
                }
                r.with_ref(ptr(q), |h: &AtomicU64| h.fetch_add(1, SeqCst))
            });
            r.scope_sync(&hits, |p| {
                go_tx.send(p as usize).unwrap();
                done_rx.recv().unwrap();
                handle_registry::Registry::unref(r, p).unwrap();
                drop(release_tx);
            })
            .unwrap();
            reader.join().unwrap()
        });
        assert_eq!(late, Err(Error::Stale));
        assert_eq!(hits.into_inner(), n + u64::from(inside));
        assert!(r.is_empty());
    }
}

/// Promise (README "Errors", `Busy`: "this thread already borrows the
/// value in a conflicting way"; lend module: an escaped guard "inherits
/// the real borrow"): the lent value's borrow is a parked one (this
/// thread restored it long enough first); a lent guard escapes the lend,
/// so the thread is still inside that parked borrow; then `restore`,
/// `restore_with`, `lend`, `take` of the same handle on this thread must
/// all be `Busy` (never a second `&mut`), and after the guard drops the
/// value is served again with every write. Held.
#[test]
fn an_escaped_guard_of_a_parked_lend_excludes_its_own_thread() {
    let r = Registry::new();
    let n = rounds(2000, 30) as u64;
    let p = r.save(0u64);
    for _ in 0..n {
        r.restore_with(p, |v: &mut u64| *v += 1).unwrap();
    }
    for _ in 0..3 {
        let mut kept = r
            .lend::<u64, _>(p, || r.restore::<u64>(p).unwrap())
            .unwrap();
        *kept += 1;
        assert_eq!(r.restore::<u64>(p).err(), Some(Error::Busy));
        assert_eq!(r.restore_with(p, |v: &mut u64| *v += 100), Err(Error::Busy));
        assert_eq!(r.lend::<u64, _>(p, || ()).err(), Some(Error::Busy));
        assert_eq!(r.take::<u64>(p).err(), Some(Error::Busy));
        assert_eq!(r.restore_ref::<u64>(p).err(), Some(Error::Busy));
        drop(kept);
        for _ in 0..n {
            r.restore_with(p, |v: &mut u64| *v += 1).unwrap();
        }
    }
    assert_eq!(r.take::<u64>(p), Ok(n + 3 * (n + 1)));
}

/// Promise (`Registry::with`: "Every error is counted in `failures`";
/// `with_ref`, `call`: "Errors as for `with`"): on a private registry,
/// every refused `with`, `call` and `with_ref`, whatever path refused it
/// (the lend record's claim, its slow walk, the registry's lookup, another
/// thread), adds exactly one to `failures().total()` and to the count of
/// the error it answered. Held.
#[test]
fn every_refused_callback_is_counted_once() {
    let r = Registry::new();
    let g = Registry::global();
    let expect = |e: Error, f: &dyn Fn() -> Result<(), Error>| {
        let (total, of) = (r.failures().total(), r.failures().count(&e));
        let got = f();
        assert_eq!(
            got.map_err(|x| std::mem::discriminant(&x)),
            Err(std::mem::discriminant(&e))
        );
        assert_eq!(r.failures().total(), total + 1, "{e:?}");
        assert_eq!(r.failures().count(&e), of + 1, "{e:?}");
    };
    let plain = r.save(1u32);
    let mut gs = 0u32;
    let mut a = 0u32;
    let stale = g
        .scope(&mut gs, |gp| {
            r.scope(&mut a, |p| {
                expect(Error::Null, &|| {
                    r.with(std::ptr::null_mut(), |_: &mut u32| ())
                });
                expect(Error::Invalid, &|| r.call::<u8, ()>(ptr(1), 1));
                expect(Error::WrongRegistry, &|| r.with(gp, |_: &mut u32| ()));
                let wt = Error::WrongType {
                    expected: "",
                    found: "",
                };
                expect(wt, &|| r.with(plain, |_: &mut u32| ()));
                expect(wt, &|| r.with(p, |_: &mut u8| ()));
                expect(wt, &|| r.call::<u8, ()>(p, 1));
                expect(Error::Busy, &|| r.with_ref(p, |_: &u32| ()));
                r.with(p, |_: &mut u32| {
                    expect(Error::Busy, &|| r.with(p, |_: &mut u32| ()));
                })
                .unwrap();
                let q = p as usize;
                std::thread::scope(|s| {
                    s.spawn(|| {
                        expect(Error::WrongThread, &|| r.with(ptr(q), |_: &mut u32| ()));
                    });
                });
                p as usize
            })
            .unwrap()
        })
        .unwrap();
    expect(Error::Stale, &|| r.with(ptr(stale), |_: &mut u32| ()));
    expect(Error::Stale, &|| r.with_ref(ptr(stale), |_: &u32| ()));
    let mut b = 0u32;
    r.scope_send(&mut b, |p| {
        r.with(p, |_: &mut u32| {
            expect(Error::Busy, &|| r.with(p, |_: &mut u32| ()));
        })
        .unwrap();
    })
    .unwrap();
    assert_eq!(r.take::<u32>(plain), Ok(1));
}

/// Promise (scope module: "another thread, even one that guessed the
/// integer, never reaches a value that is not `Send`"), at the limit the
/// README names ("Thread-local teardown": a thread that gave its owner id
/// back may share it with a thread created meanwhile): a pinned `scope`
/// (of an `Rc`) and a `scope_fn` run from a thread-local destructor that
/// runs after the thread's id was given back; inside, a new thread (which
/// takes the first free id, likely that one) calls back with the handle,
/// while the scope's thread is in its body and while it is inside a
/// callback. Every call is refused (`WrongThread`, or `Busy` where the
/// ids collide), never served. In a child process. Held.
#[test]
fn a_thread_sharing_the_scopes_owner_id_never_reaches_it() {
    if !in_child("a_thread_sharing_the_scopes_owner_id_never_reaches_it") {
        return;
    }
    let _w = watchdog("a_thread_sharing_the_scopes_owner_id_never_reaches_it");
    fn from_there(q: usize, twice: bool) -> Vec<Result<(), Error>> {
        std::thread::spawn(move || {
            let mut out = vec![
                handle_registry::with(ptr(q), |rc: &mut std::rc::Rc<u32>| {
                    let _ = std::rc::Rc::strong_count(rc);
                }),
                handle_registry::call::<u32, u32>(ptr(q), 1).map(|_| ()),
            ];
            if twice {
                // Take an id for sure, then try again.
                use_the_registry();
                out.push(handle_registry::with(ptr(q), |_: &mut std::rc::Rc<u32>| ()));
            }
            out
        })
        .join()
        .unwrap()
    }
    let (tx, rx) = mpsc::channel::<Vec<Result<(), Error>>>();
    std::thread::spawn(move || {
        // Registered before the thread's first registry call: destroyed
        // after the owner id's lease.
        at_destruction(&EARLY, move || {
            let r = Registry::global();
            let mut rc = std::rc::Rc::new(5u32);
            let mut seen = Vec::new();
            r.scope(&mut rc, |p| {
                let q = p as usize;
                seen.extend(from_there(q, true));
                r.with(p, |_: &mut std::rc::Rc<u32>| {
                    seen.extend(from_there(q, false))
                })
                .unwrap();
            })
            .unwrap();
            let mut f = |x: u32| x;
            r.scope_fn(&mut f, |p| {
                let q = p as usize;
                seen.extend(from_there(q, true));
                r.call::<u32, u32>(p, 1).unwrap();
            })
            .unwrap();
            let _ = tx.send(seen);
        });
        use_the_registry();
    })
    .join()
    .unwrap();
    let seen = rx.recv().unwrap();
    assert_eq!(seen.len(), 3 + 2 + 3);
    for got in &seen {
        assert!(
            matches!(
                got,
                Err(Error::WrongThread | Error::Busy | Error::WrongType { .. })
            ),
            "{seen:?}"
        );
    }
    println!("{seen:?}");
}

unsafe extern "C" fn on_send_with_bomb(user_data: *mut c_void, i: c_int) -> c_int {
    // Not for the call that panics: a `PanicOnDrop` dropped by that unwind would
    // be the closure's own double panic, before any catch.
    let bomb = (i != 0).then(bomb);
    handle_registry::with(user_data, move |s: &mut u32| {
        let _keep = &bomb;
        if i == 0 {
            panic_any(NestedPanic(DEEP));
        }
        *s += 1;
        0
    })
    .unwrap_or(-1)
}

unsafe extern "C" fn on_sync_with_bomb(user_data: *mut c_void, _i: c_int) -> c_int {
    let bomb = bomb();
    handle_registry::with_ref(user_data, move |_: &u32| {
        let _keep = &bomb;
        0
    })
    .unwrap_or(-1)
}

unsafe extern "C" fn on_fn_with_bomb(user_data: *mut c_void, _i: c_int) -> c_int {
    let bomb = bomb();
    handle_registry::call::<PanicOnDrop, c_int>(user_data, bomb).unwrap_or(-1)
}

/// Drops of the trampolines' `PanicOnDrop` values (a static, not a thread-local: Miri
/// reports a leak for a thread-local `Arc` of a thread whose destructors
/// do not run). Only `refused_closures_owning_panicking_values_through_c`
/// uses it.
static BOMB_DROPS: std::sync::LazyLock<Arc<AtomicUsize>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicUsize::new(0)));

fn bomb() -> PanicOnDrop {
    PanicOnDrop(Arc::clone(&BOMB_DROPS))
}

fn bomb_drops() -> usize {
    BOMB_DROPS.load(SeqCst)
}

/// Promise (README "Panics": "No panic crosses into C"; `refuse`: a
/// refused callback's closure "(and what it captured, such as `call`'s
/// arguments)" is dropped "without letting a panic in that drop unwind
/// into C"): trampolines whose closures (or `call` arguments) own a value
/// whose `Drop` panics, called from C on worker threads of a
/// `scope_send` (first call panics, the rest are skipped), after a
/// `scope_sync` ended (`Stale`), and for a `scope_fn` refused as `Busy`
/// (from inside its own closure) and as `WrongType`. Every closure is
/// dropped once, no abort. In a child process. Held.
#[test]
fn refused_closures_owning_panicking_values_through_c() {
    if !in_child("refused_closures_owning_panicking_values_through_c") {
        return;
    }
    let r = Registry::global();
    let mut s = 0u32;
    let out = catch_unwind(AssertUnwindSafe(|| {
        r.scope_send(&mut s, |p| {
            let q = p as usize;
            let got = std::thread::spawn(move || {
                // SAFETY: `c_for_each` calls the trampoline with our handle.
                let sum = unsafe { c_for_each(on_send_with_bomb, ptr(q), 3) };
                let drops = bomb_drops();
                (sum, drops)
            })
            .join()
            .unwrap();
            assert_eq!(got, (-3, 2));
        })
    }));
    let payload = out.expect_err("the callback's panic resumed");
    assert_eq!(drain(payload), DEEP);
    assert_eq!(s, 0);
    assert_eq!(bomb_drops(), 2);

    let v = 1u32;
    let stale = r.scope_sync(&v, |p| p as usize).unwrap();
    let (sum, drops) = std::thread::spawn(move || {
        // SAFETY: as above; the handle is stale.
        let sum = unsafe { c_for_each(on_sync_with_bomb, ptr(stale), 2) };
        (sum, bomb_drops())
    })
    .join()
    .unwrap();
    assert_eq!((sum, drops), (-2, 4));

    let mut runs = 0;
    let cell = std::cell::Cell::new(std::ptr::null_mut());
    let mut f = |b: PanicOnDrop| {
        runs += 1;
        std::mem::forget(b);
        // SAFETY: as above; inside our own closure: `Busy`.
        unsafe { on_fn_with_bomb(cell.get(), 0) }
    };
    let got = r
        .scope_fn(&mut f, |p| {
            cell.set(p);
            // SAFETY: as above.
            let sum = unsafe { c_for_each(on_fn_with_bomb, p, 2) };
            // `c_int` result inferred, closure returns `c_int`: served.
            // A wrong argument type: refused, its argument dropped.
            let wrong = r.call::<(PanicOnDrop, u8), c_int>(p, (bomb(), 0));
            (sum, wrong.map_err(|e| std::mem::discriminant(&e)))
        })
        .unwrap();
    let _ = f;
    assert_eq!(runs, 2);
    assert_eq!(got.0, -2, "each run's inner call was Busy: -1 each");
    assert!(got.1.is_err());
    // Two inner `Busy` refusals and one `WrongType`.
    assert_eq!(bomb_drops(), 7);
}

/// Promise (`scope_sync`: callbacks "read it with `with_ref` without
/// waiting for each other"; lend module: an escaped guard "inherits the
/// real borrow"): (1) the scope's thread, inside a `with_ref` callback,
/// joins a worker whose `with_ref` of the same handle must be served, not
/// wait for it; (2) a guard of a saved value, restored inside a lend
/// inside a scope callback, escapes the lend, the callback and the scope,
/// and is used and dropped after all three ended. Held.
#[test]
fn shared_callbacks_do_not_wait_for_each_other_and_guards_escape() {
    let _w = watchdog("shared_callbacks_do_not_wait_for_each_other_and_guards_escape");
    let r = Registry::global();
    let hits = AtomicU64::new(0);
    r.scope_sync(&hits, |p| {
        let q = p as usize;
        r.with_ref(p, |h: &AtomicU64| {
            h.fetch_add(1, SeqCst);
            let there = std::thread::spawn(move || {
                handle_registry::with_ref(ptr(q), |h: &AtomicU64| h.fetch_add(1, SeqCst))
            })
            .join()
            .unwrap();
            assert_eq!(there, Ok(1));
        })
        .unwrap();
    })
    .unwrap();
    assert_eq!(hits.into_inner(), 2);

    let v = r.save(vec![1u8]);
    let mut state = 0u32;
    let mut kept = r
        .scope(&mut state, |p| {
            r.with(p, |s: &mut u32| {
                *s += 1;
                r.lend::<Vec<u8>, _>(v, || {
                    let g = r.restore::<Vec<u8>>(v).unwrap();
                    assert_eq!(r.restore::<Vec<u8>>(v).err(), Some(Error::Busy));
                    g
                })
                .unwrap()
            })
            .unwrap()
        })
        .unwrap();
    kept.push(2);
    assert_eq!(
        handle_registry::restore::<Vec<u8>>(v).err(),
        Some(Error::Busy)
    );
    drop(kept);
    assert_eq!(state, 1);
    assert_eq!(handle_registry::take::<Vec<u8>>(v), Ok(vec![1, 2]));
}

/// Runs every scope form and a lend on `r` when dropped.
struct ScopesInDrop(&'static Registry, Arc<AtomicUsize>);

impl Drop for ScopesInDrop {
    fn drop(&mut self) {
        let r = self.0;
        let mut a = 0u32;
        r.scope(&mut a, |p| r.with(p, |a: &mut u32| *a += 1).unwrap())
            .unwrap();
        let mut b = 0u32;
        r.scope_send(&mut b, |p| r.with(p, |b: &mut u32| *b += 1).unwrap())
            .unwrap();
        let c = 0u32;
        r.scope_sync(&c, |p| r.with_ref(p, |_: &u32| ()).unwrap())
            .unwrap();
        let mut f = |x: u32| x;
        r.scope_fn(&mut f, |p| r.call::<u32, u32>(p, 1).unwrap())
            .unwrap();
        let q = r.save(0u32);
        r.lend::<u32, _>(q, || r.restore_with(q, |v: &mut u32| *v += 1).unwrap())
            .unwrap();
        assert_eq!(r.take::<u32>(q), Ok(1));
        assert_eq!((a, b), (1, 1));
        self.1.fetch_add(1, SeqCst);
    }
}

/// Promise (README "Threads and re-entrancy": "the few locks the registry
/// has ... are never held while user code runs (code holding a guard, or
/// a value's `Drop`)"): a saved value whose `Drop` runs every scope form
/// and a lend on the same registry is dropped by the registry: by
/// `unref`; by a lend's end after an `unref` inside it; by a lent guard
/// that escaped and is released after an `unref`; by `unref` from inside
/// a scope callback on that registry; by a worker's release inside a
/// `scope_send` callback. No deadlock, each dropped once. Held.
#[test]
fn a_dropped_value_runs_scopes_on_its_own_registry() {
    let _w = watchdog("a_dropped_value_runs_scopes_on_its_own_registry");
    static OWN: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::new);
    let r: &'static Registry = &OWN;
    let drops = Arc::new(AtomicUsize::new(0));
    let make = || r.save(ScopesInDrop(r, drops.clone()));

    let p = make();
    r.unref(p).unwrap();
    assert_eq!(drops.load(SeqCst), 1);

    let p = make();
    r.lend::<ScopesInDrop, _>(p, || r.unref(p).unwrap())
        .unwrap();
    assert_eq!(drops.load(SeqCst), 2);

    let p = make();
    let kept = r
        .lend::<ScopesInDrop, _>(p, || r.restore::<ScopesInDrop>(p).unwrap())
        .unwrap();
    r.unref(p).unwrap();
    drop(kept);
    assert_eq!(drops.load(SeqCst), 3);

    let p = make();
    let mut s = 0u8;
    r.scope(&mut s, |sp| {
        r.with(sp, |_: &mut u8| r.unref(p).unwrap()).unwrap();
    })
    .unwrap();
    assert_eq!(drops.load(SeqCst), 4);

    let p = make() as usize;
    let mut s = 0u8;
    r.scope_send(&mut s, |sp| {
        let q = sp as usize;
        std::thread::spawn(move || {
            r.with(ptr(q), |_: &mut u8| {
                let g = r.restore::<ScopesInDrop>(ptr(p)).unwrap();
                r.unref(ptr(p)).unwrap();
                drop(g);
            })
            .unwrap();
        })
        .join()
        .unwrap();
    })
    .unwrap();
    assert_eq!(drops.load(SeqCst), 5);
    assert!(r.is_empty());
}

/// Promise (scope module: "Ending a scope removes the record ...; if C
/// removed it first (an `unref` as destroy-notify), the record is dropped
/// by its last borrower instead, and the scope waits for that flag";
/// `unref`: "Never waits"): a worker `retain`s and `unref`s (twice) a
/// scope's handle at whatever moment it gets it, racing the body's
/// callbacks and the scope's end, for `scope`, `scope_send` and
/// `scope_sync`, many times. Every answer is `Ok` or `Stale` (`Ok` for
/// the first `retain`-`unref` pair unless the scope ended first), the
/// state counts exactly the served callbacks, every scope returns. Held.
#[test]
fn unref_races_the_scopes_end() {
    let _w = watchdog("unref_races_the_scopes_end");
    let r = Registry::global();
    let ok_or_stale = |e: &Result<(), Error>| matches!(e, Ok(()) | Err(Error::Stale));
    for round in 0..rounds(300, 6) {
        let (tx, rx) = mpsc::channel::<usize>();
        let worker = std::thread::spawn(move || {
            let q = rx.recv().unwrap();
            let r = Registry::global();
            [r.retain(ptr(q)), r.unref(ptr(q)), r.unref(ptr(q))]
        });
        let mut served = 0u32;
        let mut s = 0u32;
        let mut body = |p: *mut c_void| {
            tx.send(p as usize).unwrap();
            for _ in 0..3 {
                match r.with(p, |s: &mut u32| *s += 1) {
                    Ok(()) => served += 1,
                    Err(e) => assert_eq!(e, Error::Stale),
                }
            }
        };
        match round % 3 {
            0 => r.scope(&mut s, &mut body).unwrap(),
            1 => r.scope_send(&mut s, &mut body).unwrap(),
            _ => {
                let hits = AtomicU64::new(0);
                r.scope_sync(&hits, |p| {
                    tx.send(p as usize).unwrap();
                    for _ in 0..3 {
                        match r.with_ref(p, |h: &AtomicU64| h.fetch_add(1, SeqCst)) {
                            Ok(_) => served += 1,
                            Err(e) => assert_eq!(e, Error::Stale),
                        }
                    }
                })
                .unwrap();
                s = hits.into_inner() as u32;
            }
        }
        let got = worker.join().unwrap();
        assert!(got.iter().all(ok_or_stale), "{got:?}");
        // A `retain` that was served makes the first `unref` one of two.
        if got[0].is_ok() {
            assert!(got[1].is_ok() || got[1] == Err(Error::Stale));
        }
        assert_eq!(s, served);
    }
}

/// Nests `depth` `scope_sync`s, then reads every handle inside a
/// `with_ref` of every outer one; returns the sum read.
fn nested_reads(depth: usize, handles: &mut Vec<usize>) -> u64 {
    let r = Registry::global();
    if depth == 0 {
        fn read_all(handles: &[usize]) -> u64 {
            match handles.split_first() {
                None => 0,
                Some((&h, rest)) => {
                    handle_registry::with_ref(ptr(h), |v: &u64| *v + read_all(rest)).unwrap()
                }
            }
        }
        return read_all(handles);
    }
    let v = depth as u64;
    r.scope_sync(&v, |p| {
        handles.push(p as usize);
        let sum = nested_reads(depth - 1, handles);
        handles.pop();
        sum
    })
    .unwrap()
}

/// Nests `depth` pinned scopes; the innermost body and a callback of the
/// outermost reach every level.
fn nested_pinned(depth: usize, handles: &mut Vec<usize>) -> u64 {
    let r = Registry::global();
    if depth == 0 {
        let first = handles[0];
        let rest: u64 = handles
            .iter()
            .map(|&h| r.with(ptr(h), |v: &mut u64| *v).unwrap())
            .sum();
        let inside = r
            .with(ptr(first), |_: &mut u64| {
                handles[1..]
                    .iter()
                    .map(|&h| r.with(ptr(h), |v: &mut u64| *v).unwrap())
                    .sum::<u64>()
            })
            .unwrap();
        return rest + inside;
    }
    let mut v = depth as u64;
    r.scope(&mut v, |p| {
        handles.push(p as usize);
        let sum = nested_pinned(depth - 1, handles);
        handles.pop();
        sum
    })
    .unwrap()
}

/// Promise (README "Threads and re-entrancy": "Inside a callback, code may
/// ... start a nested C call or scope"; readers: each thread "publishes
/// what it reads in a small record of its own"): deep nesting: 64
/// `scope_sync`s whose innermost body holds 64 nested `with_ref`s at once
/// (more shared borrows than any small inline record), and 64 pinned
/// scopes whose innermost body reaches every level directly and from
/// inside the outermost's callback (the slow walk of the lend stack).
/// Everything served, nothing `Busy`. Held.
#[test]
fn deep_nesting_of_scopes_and_shared_reads() {
    let depth = rounds(64, 12);
    let sum = (1..=depth as u64).sum::<u64>();
    assert_eq!(nested_reads(depth, &mut Vec::new()), sum);
    assert_eq!(
        nested_pinned(depth, &mut Vec::new()),
        2 * sum - depth as u64
    );
}

/// Promise (README "Thread-local teardown": a shared owner id "can only
/// get `Busy` where one should have waited, never a wait for themselves";
/// `scope_send`: "the scope waits for callbacks still running on other
/// threads"; `run_shared`'s end turns any error but `Stale` into an
/// abort): a `scope_send` runs in a thread-local destructor after its
/// thread gave its owner id back; a worker created inside (so likely
/// handed that same id) calls back long enough to park its borrow, then
/// is inside a callback (the parked borrow entered) when the body
/// returns. The scope must wait for it and return (no `Busy` turned into
/// an abort, no wait for itself); the worker's late call is `Stale`. In a
/// child process. Held.
#[test]
fn scope_send_at_teardown_waits_for_a_parked_worker_sharing_its_id() {
    if !in_child("scope_send_at_teardown_waits_for_a_parked_worker_sharing_its_id") {
        return;
    }
    let _w = watchdog("scope_send_at_teardown_waits_for_a_parked_worker_sharing_its_id");
    let n = rounds(2000, 30) as u64;
    let (tx, rx) = mpsc::channel::<(Result<(), Error>, u64, Result<(), Error>)>();
    std::thread::spawn(move || {
        at_destruction(&EARLY, move || {
            let r = Registry::global();
            let mut s = 0u64;
            let (inside_tx, inside_rx) = mpsc::channel::<()>();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let mut worker = None;
            let got = r.scope_send(&mut s, |p| {
                let q = p as usize;
                worker = Some(std::thread::spawn(move || {
                    let r = Registry::global();
                    for _ in 0..n {
                        r.with(ptr(q), |s: &mut u64| *s += 1).unwrap();
                    }
                    r.with(ptr(q), |s: &mut u64| {
                        inside_tx.send(()).unwrap();
                        // Returns when the body has returned.
                        let _ = release_rx.recv();
                        *s += 1;
                    })
                    .unwrap();
                    r.with(ptr(q), |s: &mut u64| *s += 1)
                }));
                inside_rx.recv().unwrap();
                drop(release_tx);
            });
            let late = worker.unwrap().join().unwrap();
            let _ = tx.send((got, s, late));
        });
        use_the_registry();
    })
    .join()
    .unwrap();
    let (got, s, late) = rx.recv().unwrap();
    assert_eq!(got, Ok(()));
    // The worker's last call raced the scope's end: served or `Stale`.
    match late {
        Ok(()) => assert_eq!(s, n + 2),
        Err(e) => {
            assert_eq!(e, Error::Stale);
            assert_eq!(s, n + 1);
        }
    }
}
