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
//! a warm-up) or `private_in_turn` (N restores of two of its handles in
//! turn, which never park).

use handle_registry::demo::traverse::repeat_start;
use handle_registry::{demo::ffi, Registry};

#[path = "../benches/common/mod.rs"]
mod common;
use common::{direct_start, registry_start, registry_with_start, scoped_start, Sum};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, n) = match args.as_slice() {
        [_, kind, n] => (kind.as_str(), n.parse::<i64>().expect("N is a number")),
        _ => {
            eprintln!(
                "usage: callback_instructions direct|restore|lent|restore_with|lent_with|scope|visitor|save_unref|box_unbox|private_restore|private_in_turn N"
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
        "private_restore" | "private_in_turn" => {
            let r = Registry::new();
            let handles: Vec<_> = (0..1000).map(|_| r.save(0i64)).collect();
            let (p, q) = (handles[499], handles[500]);
            if kind == "private_restore" {
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
        other => {
            eprintln!("unknown kind {other}");
            std::process::exit(2);
        }
    };
    assert_eq!(sum, n * (n - 1) / 2);
}
