//! Wrapping a real C API with `user_data`: glibc's `qsort_r`.
//!
//! `qsort_r` calls a comparator with a `void *arg` passed through from the
//! call. Here that `arg` is a registry handle to the comparator's state,
//! never a Rust pointer: a stray or late call cannot reach freed memory, and
//! a panic in the comparator is carried back to the caller instead of
//! aborting at the `extern "C"` boundary.
//!
//! `cargo run --example qsort_r`

use std::cmp::Ordering;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use handle_registry::{panic::PanicCarrier, Registry};

unsafe extern "C" {
    /// glibc: `void qsort_r(void *base, size_t nmemb, size_t size,
    ///   int (*compar)(const void *, const void *, void *), void *arg);`
    fn qsort_r(
        base: *mut c_void,
        nmemb: usize,
        size: usize,
        compar: unsafe extern "C" fn(*const c_void, *const c_void, *mut c_void) -> c_int,
        arg: *mut c_void,
    );
}

/// What the handle holds while C sorts: the caller's comparator and the
/// slot that carries its panic back.
struct SortState<F> {
    compare: F,
    panic: PanicCarrier,
}

/// Sorts `items` with glibc's `qsort_r`. A panic in `compare` stops the
/// comparisons and is resumed here.
fn sort_with<T, F>(items: &mut [T], compare: F)
where
    F: FnMut(&T, &T) -> Ordering + Send + 'static,
{
    let registry = Registry::global();
    let user_data = registry.save(SortState {
        compare,
        panic: PanicCarrier::new(),
    });
    // `qsort_r` calls back synchronously on this thread: lend the state to
    // it, so that each comparison is served from this thread's record of
    // the lend, with no atomic read-modify-write.
    let lent = registry.lend::<SortState<F>, _>(user_data, || {
        // SAFETY: `items` is a valid, exclusively borrowed slice of
        // `items.len()` elements of `size_of::<T>()` bytes; the comparator
        // only reads elements as `T`; qsort_r only permutes them bytewise,
        // which moves Rust values without duplicating any.
        unsafe {
            qsort_r(
                items.as_mut_ptr().cast(),
                items.len(),
                std::mem::size_of::<T>(),
                compare_trampoline::<T, F>,
                user_data,
            )
        }
    });
    lent.expect("the handle was saved just above");
    let state = registry
        .take::<SortState<F>>(user_data)
        .expect("nothing else removes the handle");
    state.panic.resume();
}

/// The comparator C sees. Never unwinds; any handle problem compares
/// equal, as does every comparison after a panic.
unsafe extern "C" fn compare_trampoline<T, F>(
    a: *const c_void,
    b: *const c_void,
    user_data: *mut c_void,
) -> c_int
where
    F: FnMut(&T, &T) -> Ordering + Send + 'static,
{
    // `restore_with` catches no panic: the carrier does, and a stale,
    // forged or wrong-typed `user_data` is an `Err`, never a crash.
    handle_registry::restore_with(user_data, |state: &mut SortState<F>| {
        let SortState { compare, panic } = state;
        panic.catch(|| {
            // SAFETY: qsort_r passes two pointers into the array that
            // `sort_with` handed it, whose elements are `T`s.
            let (a, b) = unsafe { (&*a.cast::<T>(), &*b.cast::<T>()) };
            compare(a, b) as c_int
        })
    })
    .ok()
    .flatten()
    .unwrap_or(0)
}

fn main() {
    let mut words = vec!["pear", "fig", "banana", "kiwi", "apple", "cherry"];
    let comparisons = Arc::new(AtomicUsize::new(0));
    let counter = comparisons.clone();
    sort_with(&mut words, move |a: &&str, b: &&str| {
        let n = counter.fetch_add(1, Relaxed) + 1;
        println!("  compare #{n}: {a} vs {b}");
        a.len().cmp(&b.len()).then(a.cmp(b))
    });
    println!(
        "sorted by length, then alphabetically, in {} comparisons: {words:?}",
        comparisons.load(Relaxed)
    );
    assert_eq!(words, ["fig", "kiwi", "pear", "apple", "banana", "cherry"]);

    // A panicking comparator: caught in the trampoline, resumed here.
    let mut numbers = vec![3, 1, 2];
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // keep the expected panic quiet
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sort_with(&mut numbers, |_: &i32, _: &i32| {
            panic!("comparator gave up")
        })
    }));
    std::panic::set_hook(default_hook);
    let payload = outcome.expect_err("the panic came back");
    println!(
        "a panicking comparator came back as a Rust panic: {:?}",
        handle_registry::panic::message(&*payload)
    );
    assert!(Registry::global()
        .leak_report()
        .entries()
        .iter()
        .all(|e| !e.type_name().contains("SortState")));
}
