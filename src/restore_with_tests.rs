//! `restore_with` answers as `restore` then the closure would, on each of
//! its paths: the innermost lend, the hot handle, and the rest.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::parked::tests::{counted, parks, Counted};
use crate::{Error, Registry};

/// `restore_with(p, add one)`, and the value after it.
fn bump(r: &Registry, p: *mut c_void) -> Result<u64, Error> {
    r.restore_with(p, |c: &mut Counted| {
        c.0 += 1;
        c.0
    })
}

/// A `Counted` in the global registry restored until it is this thread's
/// hot handle; `None` (nothing saved) where nothing parks.
fn hot_value() -> Option<(*mut c_void, Arc<AtomicUsize>)> {
    if !parks() {
        return None;
    }
    let (p, drops) = counted(Registry::global());
    for _ in 0..=crate::parked::STREAK {
        bump(Registry::global(), p).unwrap();
    }
    assert!(crate::parked::hot(p.addr()).is_some(), "not hot");
    Some((p, drops))
}

#[test]
fn answers_as_restore_for_every_misuse() {
    let r = Registry::new();
    let (p, drops) = counted(&r);
    assert_eq!(bump(&r, p), Ok(1));
    assert_eq!(
        r.restore_with(std::ptr::null_mut(), |_: &mut Counted| ()),
        Err(Error::Null)
    );
    let forged = std::ptr::without_provenance_mut(p.addr() ^ 1 << (usize::BITS - 2));
    assert_eq!(
        r.restore_with(forged, |_: &mut Counted| ()).err(),
        r.restore::<Counted>(forged).err()
    );
    assert!(matches!(
        r.restore_with(p, |_: &mut u8| ()),
        Err(Error::WrongType { .. })
    ));
    assert_eq!(
        Registry::new().restore_with(p, |_: &mut Counted| ()).err(),
        Some(Error::WrongRegistry)
    );
    let guard = r.restore::<Counted>(p).unwrap();
    assert_eq!(bump(&r, p), Err(Error::Busy));
    drop(guard);
    assert_eq!(
        r.restore_with(p, |_: &mut Counted| bump(&r, p)),
        Ok(Err(Error::Busy))
    );
    r.unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(bump(&r, p), Err(Error::Stale));
}

#[test]
fn inside_a_lend_it_is_served_by_the_lend() {
    let r = Registry::new();
    let (p, _) = counted(&r);
    r.lend::<Counted, _>(p, || {
        assert_eq!(bump(&r, p), Ok(1));
        assert_eq!(bump(&r, p), Ok(2));
        let nested = r.restore_with(p, |_: &mut Counted| bump(&r, p));
        assert_eq!(nested, Ok(Err(Error::Busy)));
        assert!(matches!(
            r.restore_with(p, |_: &mut u8| ()),
            Err(Error::WrongType { .. })
        ));
    })
    .unwrap();
    assert_eq!(r.take::<Counted>(p).unwrap().0, 2);
}

#[test]
fn an_unref_from_inside_drops_the_value_once_after_the_closure() {
    let r = Registry::new();
    let (p, drops) = counted(&r);
    let seen = r.restore_with(p, |c: &mut Counted| {
        r.unref(p).unwrap();
        c.0 = 5;
        drops.load(Ordering::SeqCst)
    });
    assert_eq!(seen, Ok(0));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(bump(&r, p), Err(Error::Stale));
}

#[test]
fn a_panic_in_the_closure_releases_the_borrow_on_every_path() {
    let r = Registry::new();
    let (p, _) = counted(&r);
    let panics = |r: &Registry, p| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.restore_with(p, |_: &mut Counted| panic!("in the closure"))
        }))
        .is_err()
    };
    assert!(panics(&r, p));
    assert_eq!(bump(&r, p), Ok(1));
    r.lend::<Counted, _>(p, || {
        assert!(panics(&r, p));
        assert_eq!(bump(&r, p), Ok(2));
    })
    .unwrap();
    if let Some((h, drops)) = hot_value() {
        assert!(panics(Registry::global(), h));
        assert!(bump(Registry::global(), h).is_ok());
        crate::unref(h).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
    assert_eq!(r.take::<Counted>(p).unwrap().0, 2);
}

#[test]
fn the_hot_handle_is_entered_inline_and_keeps_every_check() {
    let Some((p, drops)) = hot_value() else {
        return;
    };
    let global = Registry::global();
    let word = global.word(p);
    for _ in 0..10 {
        bump(global, p).unwrap();
    }
    assert_eq!(global.word(p), word, "entered without a read-modify-write");
    let hot = || crate::parked::hot(p.addr()).is_some();
    assert!(hot());
    // The inner call's refused nested enter forgets the hot handle; the
    // next restore makes it hot again.
    assert_eq!(
        global.restore_with(p, |_: &mut Counted| bump(global, p)),
        Ok(Err(Error::Busy))
    );
    assert_eq!(global.word(p), word);
    assert_eq!(bump(global, p), Ok(u64::from(crate::parked::STREAK) + 12));
    assert!(hot());
    assert!(matches!(
        global.restore_with(p, |_: &mut u8| ()),
        Err(Error::WrongType { .. })
    ));
    assert!(!hot());
    assert_eq!(bump(global, p), Ok(u64::from(crate::parked::STREAK) + 13));
    crate::unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(bump(global, p), Err(Error::Stale));
}

#[test]
fn a_hot_handle_taken_by_another_thread_is_served_by_the_slow_path() {
    let Some((p, drops)) = hot_value() else {
        return;
    };
    let h = p.addr();
    std::thread::spawn(move || {
        let p = std::ptr::without_provenance_mut(h);
        crate::restore_with(p, |c: &mut Counted| c.0 += 100).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        bump(Registry::global(), p),
        Ok(u64::from(crate::parked::STREAK) + 102)
    );
    crate::unref(p).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn the_hot_handle_nests_inside_another_parked_borrow() {
    let Some((p, _)) = hot_value() else {
        return;
    };
    let Some((q, _)) = hot_value() else {
        return;
    };
    // q is hot now; p is parked. Inside q, p's restore_with nests.
    let global = Registry::global();
    let inner = global.restore_with(q, |_: &mut Counted| (bump(global, p), bump(global, q)));
    assert_eq!(
        inner,
        Ok((Ok(u64::from(crate::parked::STREAK) + 2), Err(Error::Busy)))
    );
    crate::unref(p).unwrap();
    crate::unref(q).unwrap();
}

#[test]
fn null_and_forged_handles_never_take_the_hot_path() {
    let Some((p, _)) = hot_value() else {
        return;
    };
    assert_eq!(
        bump(Registry::global(), std::ptr::null_mut()),
        Err(Error::Null)
    );
    for forged in [p.addr() + 1, p.addr() ^ 1 << (usize::BITS - 1)] {
        assert!(bump(Registry::global(), std::ptr::without_provenance_mut(forged)).is_err());
    }
    crate::unref(p).unwrap();
}
