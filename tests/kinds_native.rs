//! Counted handles against a real C API (`native/kinds.h`, in the shape of
//! `sqlite3_create_function_v2`): one `user_data` registered under several
//! names, each with its own destroy-notify, destroyed one by one in every
//! order; the value is dropped at the last, exactly once.
// Calls into C: compiled out under Miri, which cannot run FFI.
#![cfg(not(miri))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use handle_registry::demo::kinds::{KindsError, Table};
use handle_registry::{Error, Registry};

/// Counts its drops.
struct Tracked(Arc<AtomicUsize>);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn function(drops: &Arc<AtomicUsize>, calls: &Arc<AtomicUsize>) -> impl FnMut(i32) -> i32 + Send {
    let tracked = Tracked(drops.clone());
    let calls = calls.clone();
    move |x| {
        let _keep = &tracked;
        calls.fetch_add(1, Ordering::SeqCst);
        x + 1
    }
}

#[test]
fn three_names_dropped_one_by_one_in_every_order() {
    let names = ["f", "g", "h"];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let drops = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut t = Table::new();
        t.create_function(&names, function(&drops, &calls)).unwrap();
        for (k, &i) in order.iter().enumerate() {
            for n in &names {
                let expect = if order[..k].iter().any(|&j| names[j] == *n) {
                    Err(KindsError::NoFunction)
                } else {
                    Ok(2)
                };
                assert_eq!(t.call(n, 1), expect);
            }
            assert_eq!(drops.load(Ordering::SeqCst), 0, "dropped too early");
            t.drop_function(names[i]).unwrap();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(t.is_empty());
    }
}

#[test]
fn closing_the_table_drops_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut t = Table::new();
    t.create_function(&["a", "b", "c", "d"], function(&drops, &calls))
        .unwrap();
    assert_eq!(t.call("d", 0), Ok(1));
    t.drop_function("b").unwrap();
    drop(t);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn replacing_a_name_drops_only_its_reference() {
    let drops = Arc::new(AtomicUsize::new(0));
    let drops2 = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut t = Table::new();
    t.create_function(&["a", "b"], function(&drops, &calls))
        .unwrap();
    // "a" now names another closure: C destroys the old registration.
    t.create_function(&["a"], function(&drops2, &calls))
        .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(t.call("b", 1), Ok(2));
    t.drop_function("b").unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(drops2.load(Ordering::SeqCst), 0);
    drop(t);
    assert_eq!(drops2.load(Ordering::SeqCst), 1);
}

#[test]
fn a_full_table_drops_the_failed_reference() {
    let drops = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut t = Table::new();
    let names: Vec<String> = (0..17).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        t.create_function(&names, function(&drops, &calls)),
        Err(KindsError::Full)
    );
    assert_eq!(t.len(), 16);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(t);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Registered by hand: `take` while C holds other references is refused
/// and changes nothing; the value survives until C's last destroy-notify.
#[test]
fn take_while_c_holds_references_is_retained() {
    type Function = Box<dyn FnMut(i32) -> i32 + Send>;
    let drops = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let p = handle_registry::save::<Function>(Box::new(function(&drops, &calls)));
    let mut t = Table::new();
    // SAFETY: `c_unref` accepts any value; one reference per registration.
    unsafe {
        t.register_raw("x", p, Some(handle_registry::c_unref))
            .unwrap();
        handle_registry::retain(p).unwrap();
        t.register_raw("y", p, Some(handle_registry::c_unref))
            .unwrap();
    }
    assert!(matches!(
        handle_registry::take::<Function>(p),
        Err(Error::Retained)
    ));
    assert_eq!(Registry::global().ref_count(p), Ok(2));
    assert_eq!(t.call("x", 1), Ok(2));
    t.drop_function("x").unwrap();
    assert_eq!(t.call("y", 1), Ok(2));
    t.drop_function("y").unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle_registry::restore::<Function>(p).err(),
        Some(Error::Stale)
    );
    // A late call through a stale handle is refused, not a use after free.
    // SAFETY: as above.
    unsafe { t.register_raw("late", p, None) }.unwrap();
    assert_eq!(t.call("late", 1), Err(KindsError::Callback(Error::Stale)));
}

#[test]
fn a_panicking_closure_does_not_unwind_into_c() {
    let mut t = Table::new();
    t.create_function(&["boom", "bang"], |_| panic!("kinds boom"))
        .unwrap();
    assert_eq!(
        t.call("boom", 1),
        Err(KindsError::Callback(Error::Panicked))
    );
    assert_eq!(
        t.call("bang", 1),
        Err(KindsError::Callback(Error::Panicked))
    );
}
