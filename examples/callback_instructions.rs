//! Drives the native tight loop for one kind of callback, so that
//! `benches/instructions.sh` can count instructions per callback under
//! callgrind: a figure that, unlike a time, does not move with the noise
//! of a shared machine.
//!
//! `cargo run --release --example callback_instructions -- KIND N` with KIND
//! one of `direct`, `restore`, `lent` (`restore` inside a lend),
//! `restore_with`, `lent_with` (`restore_with` inside a lend), `scope`,
//! `visitor`, or `save_unref`
//! (no callback: N times `save` of a `u64` then `unref` of it, on the
//! global registry) and its baseline `box_unbox` (`Box::into_raw` of a
//! new `Box<u64>`, then `Box::from_raw` and drop); or, with no C loop
//! either, `private_restore` (N restores of one handle of a private
//! registry holding 1000 values, parked and this thread's hot handle after
//! a warm-up), `private_restore_with` (the same with `restore_with`) or
//! `private_in_turn` (N restores of two of its handles in
//! turn, which never park); or `static_call` (N calls, through its function
//! pointer, of a static trampoline whose closure adds to a sum) beside
//! `user_data_call` (N calls of a `user_data` trampoline doing the same with
//! `restore` and a `PanicCarrier`, as `benches/static_trampoline.rs`), both
//! after a warm-up that parks the entry.

use std::ffi::c_void;

use handle_registry::demo::traverse::repeat_start;
use handle_registry::panic::PanicCarrier;
use handle_registry::{demo::ffi, Handle, Registry};

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../benches/common/static_calls.rs"]
mod static_calls;
use common::{direct_start, registry_start, registry_with_start, scoped_start, Sum};
use static_calls::{adder, with_user_data, UserData, ADD};

/// Enough calls that the entry parks and is the thread's hot handle: the
/// same for N and for none.
const WARM_UP: i64 = 5000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, n) = match args.as_slice() {
        [_, kind, n] => (kind.as_str(), n.parse::<i64>().expect("N is a number")),
        _ => {
            eprintln!(
                "usage: callback_instructions direct|restore|lent|restore_with|lent_with|scope|visitor|save_unref|box_unbox|private_restore|private_restore_with|private_in_turn|static_call|user_data_call N"
            );
            std::process::exit(2);
        }
    };
    let registry = Registry::global();
    let cbs = |start| ffi::Callbacks {
        start: Some(start),
        end: None,
    };
    let sum = match kind {
        "direct" => {
            let mut sum = 0i64;
            // SAFETY: `sum` outlives the call and nothing else touches it.
            unsafe { ffi::traverse_bench_start(cbs(direct_start), (&raw mut sum).cast(), n) };
            sum
        }
        "restore" | "lent" | "restore_with" | "lent_with" => {
            let p = registry.save(0i64);
            let start = if kind.ends_with("with") {
                registry_with_start
            } else {
                registry_start
            };
            // SAFETY: the trampoline accepts any `user_data`.
            let run = || unsafe { ffi::traverse_bench_start(cbs(start), p, n) };
            if kind.starts_with("lent") {
                registry.lend::<i64, _>(p, run).unwrap();
            } else {
                run();
            }
            registry.take::<i64>(p).unwrap()
        }
        "scope" => {
            let mut sum = 0i64;
            registry
                // SAFETY: the trampoline accepts any `user_data`.
                .scope(&mut sum, |p| unsafe {
                    ffi::traverse_bench_start(cbs(scoped_start), p, n)
                })
                .unwrap();
            sum
        }
        "visitor" => repeat_start(Sum(0), n).unwrap().0,
        "box_unbox" => {
            let mut sum = 0i64;
            for i in 0..n {
                let p = Box::into_raw(Box::new(std::hint::black_box(i as u64)));
                // SAFETY: `p` came from `Box::into_raw` just above.
                drop(unsafe { Box::from_raw(std::hint::black_box(p)) });
                sum += i;
            }
            sum
        }
        "save_unref" => {
            let mut sum = 0i64;
            for i in 0..n {
                let p = registry.save(std::hint::black_box(i as u64));
                registry.unref(std::hint::black_box(p)).unwrap();
                sum += i;
            }
            sum
        }
        "private_restore" | "private_restore_with" | "private_in_turn" => {
            let r = Registry::new();
            let handles: Vec<_> = (0..1000).map(|_| r.save(0i64)).collect();
            let (p, q) = (handles[499], handles[500]);
            if kind == "private_restore_with" {
                for _ in 0..5000 {
                    r.restore_with(std::hint::black_box(p), |v: &mut i64| *v += 0)
                        .unwrap();
                }
                for i in 0..n {
                    r.restore_with(std::hint::black_box(p), |v: &mut i64| *v += i)
                        .unwrap();
                }
            } else if kind == "private_restore" {
                // The same for N and for none: enough restores of `p` in a
                // row that it parks and is this thread's hot handle.
                for _ in 0..5000 {
                    *r.restore::<i64>(std::hint::black_box(p)).unwrap() += 0;
                }
                for i in 0..n {
                    *r.restore::<i64>(std::hint::black_box(p)).unwrap() += i;
                }
            } else {
                for i in (0..n).step_by(2) {
                    *r.restore::<i64>(std::hint::black_box(q)).unwrap() += i;
                    if i + 1 < n {
                        *r.restore::<i64>(std::hint::black_box(p)).unwrap() += i + 1;
                    }
                }
            }
            handles.into_iter().map(|h| r.take::<i64>(h).unwrap()).sum()
        }
        "static_call" => {
            let guard = ADD.acquire(adder()).unwrap();
            let f = std::hint::black_box(guard.fn_ptr());
            (0..WARM_UP).for_each(|_| assert_eq!(f(0), 0));
            // The k-th call returns k: the sum of k - 1 is 0 + ... + (n - 1).
            let sum = (0..n).map(|_| f(std::hint::black_box(1)) as i64 - 1).sum();
            guard.finish();
            sum
        }
        "user_data_call" => {
            let state = Handle::new(UserData {
                sum: 0,
                carrier: PanicCarrier::new(),
            });
            let f: extern "C" fn(*mut c_void, u64) -> u64 = std::hint::black_box(with_user_data);
            let p = state.as_ptr();
            (0..WARM_UP).for_each(|_| assert_eq!(f(p, 0), 0));
            (0..n)
                .map(|_| f(std::hint::black_box(p), 1) as i64 - 1)
                .sum()
        }
        other => {
            eprintln!("unknown kind {other}");
            std::process::exit(2);
        }
    };
    assert_eq!(sum, n * (n - 1) / 2);
}
