//! The pools' own registry, when it cannot be created at first: alone in
//! its binary, because that registry is created once per process and any
//! other test's acquire would create it first.

use std::panic::{catch_unwind, AssertUnwindSafe};

use handle_registry::panic::message;
use handle_registry::{static_callbacks, Registry};

static_callbacks! {
    static LATE: [extern "C" fn(x: usize) -> usize; 2] else usize::MAX;
}

#[test]
#[cfg_attr(
    all(miri, target_pointer_width = "64"),
    ignore = "254 registries take minutes under Miri; CI runs it under Miri on i686 (.ci/miri.sh), where 14 fill the ids"
)]
fn a_failed_first_acquire_is_retried_by_the_next() {
    // Every registry id taken: the pools cannot create theirs.
    let mut taken = Vec::new();
    while let Ok(registry) = Registry::try_new() {
        taken.push(registry);
    }
    let failed = catch_unwind(AssertUnwindSafe(|| LATE.acquire(Box::new(|x| x)).is_ok()));
    let payload = failed.unwrap_err();
    assert!(message(&*payload).is_some_and(|m| m.contains("cannot create its registry")));
    assert_eq!(LATE.in_use(), 0, "the failed acquire freed its slot");
    assert_eq!((LATE.fn_ptr(0).unwrap())(1), usize::MAX);

    // Ids free again: the next acquire creates the registry, and so does
    // a scope; nothing stayed poisoned.
    drop(taken);
    let guard = LATE.acquire(Box::new(|x| x + 1)).unwrap();
    assert_eq!((guard.fn_ptr())(1), 2);
    let scoped = LATE.scope(Box::new(|x| x * 2), |f| f(21)).unwrap();
    assert_eq!(scoped, 42);
    drop(guard);
    assert_eq!(LATE.in_use(), 0);
}
