//! Static trampolines against the real libc: `qsort` and `nftw`, whose
//! callbacks get no `user_data`.
#![cfg(not(miri))]

use std::ffi::{c_int, c_void};
use std::sync::Barrier;

use handle_registry::panic::message;
use handle_registry::static_callbacks;
use handle_registry::static_trampoline::pools::QSORT_COMPARE;

type Compare = unsafe extern "C" fn(*const c_void, *const c_void) -> c_int;

extern "C" {
    fn qsort(base: *mut c_void, n: usize, size: usize, compare: Compare);
}

static_callbacks! {
    /// Private pools, so that tests running in parallel on the ready-made
    /// ones cannot take these slots.
    static ONE_COMPARE: [unsafe extern "C" fn(a: *const c_void, b: *const c_void) -> c_int; 1] else 0;
    static TWO_COMPARE: [unsafe extern "C" fn(a: *const c_void, b: *const c_void) -> c_int; 2] else 0;
}

/// Deterministic pseudo-random numbers (no `rand` dependency).
fn numbers(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 1000
        })
        .collect()
}

/// Sorts `v` with libc `qsort` and a comparator ordering by `key`;
/// returns how many comparisons it made. `before` runs once the comparator
/// is bound, right before the sort.
fn sort_by_key(v: &mut [u64], key: impl Fn(u64) -> u64 + Sync, before: impl FnOnce()) -> usize {
    let mut comparisons = 0;
    QSORT_COMPARE
        .scope(
            Box::new(|a, b| {
                comparisons += 1;
                // SAFETY: qsort passes pointers to two elements of `v`.
                let (a, b) = unsafe { (*a.cast::<u64>(), *b.cast::<u64>()) };
                key(a).cmp(&key(b)) as c_int
            }),
            |compare| {
                before();
                // SAFETY: `v` holds `v.len()` u64s, which the comparator reads.
                unsafe { qsort(v.as_mut_ptr().cast(), v.len(), 8, compare) }
            },
        )
        .unwrap();
    comparisons
}

#[test]
fn qsort_with_a_stateful_comparator() {
    let mut v = numbers(1, 200);
    let mut expected = v.clone();
    expected.sort();
    let comparisons = sort_by_key(&mut v, |x| x, || {});
    assert_eq!(v, expected);
    // At least n - 1 to know it is sorted; far fewer than n² for a real sort.
    assert!((199..200 * 200).contains(&comparisons), "{comparisons}");
}

#[test]
fn qsort_on_four_threads_at_once_keeps_state_apart() {
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let barrier = &barrier;
            s.spawn(move || {
                // Each thread orders by its own key: a comparator reaching
                // another thread's closure would show as a wrong order.
                let key = move |x: u64| (x * (t + 3)) % 1009;
                let mut v = numbers(t + 10, 300);
                let mut expected = v.clone();
                expected.sort_by_key(|&x| key(x));
                // All four comparators are bound before any sorts.
                let comparisons = sort_by_key(&mut v, key, || {
                    barrier.wait();
                });
                let keys: Vec<u64> = v.iter().map(|&x| key(x)).collect();
                let want: Vec<u64> = expected.iter().map(|&x| key(x)).collect();
                assert_eq!(keys, want, "thread {t}");
                assert!(comparisons >= 299, "thread {t}: {comparisons}");
            });
        }
    });
}

#[test]
fn qsort_comparator_panic_is_caught_and_resumed() {
    let mut v = numbers(7, 50);
    let mut comparisons = 0;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        QSORT_COMPARE.scope(
            Box::new(|_, _| {
                comparisons += 1;
                if comparisons == 3 {
                    panic!("third comparison");
                }
                0
            }),
            // SAFETY: `v` holds u64s; the comparator reads nothing.
            |compare| unsafe { qsort(v.as_mut_ptr().cast(), v.len(), 8, compare) },
        )
    }))
    .unwrap_err();
    assert_eq!(message(&*caught), Some("third comparison"));
    // qsort went on with the fallback; the closure was not called again.
    assert_eq!(comparisons, 3);
}

#[test]
fn stale_comparator_is_ignored() {
    let guard = ONE_COMPARE
        .acquire(Box::new(|_, _| panic!("a released comparator ran")))
        .unwrap();
    let compare = guard.fn_ptr();
    guard.finish();
    let (a, b) = (1u64, 2u64);
    // SAFETY: both point to u64s, as the comparator's contract says.
    let order = unsafe { compare((&a as *const u64).cast(), (&b as *const u64).cast()) };
    assert_eq!(order, 0, "the pool's fallback");
    // A whole sort through the stale pointer: every call is ignored.
    let mut v = numbers(3, 20);
    let before = v.clone();
    // SAFETY: as above.
    unsafe { qsort(v.as_mut_ptr().cast(), v.len(), 8, compare) };
    let (mut got, mut want) = (v, before);
    got.sort();
    want.sort();
    assert_eq!(got, want, "qsort permutes, never loses elements");
}

#[test]
fn exhausted_pool_is_an_error() {
    let a = TWO_COMPARE.acquire(Box::new(|_, _| 0)).unwrap();
    let b = TWO_COMPARE.acquire(Box::new(|_, _| 0)).unwrap();
    let err = TWO_COMPARE.acquire(Box::new(|_, _| 0)).unwrap_err();
    assert_eq!(err.capacity(), 2);
    assert!(err.to_string().contains("TWO_COMPARE"));
    let mut v = [2u64, 1];
    let mut ran = false;
    let refused = TWO_COMPARE.scope(Box::new(|_, _| 0), |_| ran = true);
    assert_eq!(refused, Err(err));
    assert!(!ran);
    drop(a);
    TWO_COMPARE
        .scope(
            Box::new(|a, b| {
                // SAFETY: qsort passes pointers into `v`.
                let (a, b) = unsafe { (*a.cast::<u64>(), *b.cast::<u64>()) };
                a.cmp(&b) as c_int
            }),
            // SAFETY: `v` holds u64s.
            |compare| unsafe { qsort(v.as_mut_ptr().cast(), 2, 8, compare) },
        )
        .unwrap();
    assert_eq!(v, [1, 2]);
    drop(b);
}

#[cfg(target_os = "linux")]
mod nftw {
    use std::collections::BTreeSet;
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    use handle_registry::panic::message;
    use handle_registry::static_trampoline::pools::{Ftw, NFTW_VISIT};

    type Visit = unsafe extern "C" fn(*const c_char, *const c_void, c_int, *mut Ftw) -> c_int;

    extern "C" {
        fn nftw(dirpath: *const c_char, visit: Visit, nopenfd: c_int, flags: c_int) -> c_int;
    }

    // <ftw.h> values, the same in glibc and musl.
    /// Do not follow symbolic links.
    const FTW_PHYS: c_int = 1;
    /// Typeflag: a regular file.
    const FTW_F: c_int = 0;
    /// Typeflag: a directory.
    const FTW_D: c_int = 1;

    /// A directory tree under the temporary directory, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        /// `root/{tag}-a/{tag}-b/`, with one file per directory.
        fn new(tag: &str) -> Tree {
            static N: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "hr-static-nftw-{}-{}-{tag}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let deep = root.join(format!("{tag}-a")).join(format!("{tag}-b"));
            std::fs::create_dir_all(&deep).unwrap();
            for (i, dir) in deep.ancestors().take(3).enumerate() {
                std::fs::write(dir.join(format!("{tag}-file{i}")), tag).unwrap();
            }
            Tree(root)
        }

        /// Every entry below the root, relative, with its level and type.
        fn expected(&self) -> BTreeSet<(String, c_int, c_int)> {
            let mut all = BTreeSet::from([(String::new(), 0, FTW_D)]);
            let mut stack = vec![self.0.clone()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    let rel = path.strip_prefix(&self.0).unwrap();
                    let level = rel.components().count() as c_int;
                    let kind = if path.is_dir() { FTW_D } else { FTW_F };
                    all.insert((rel.to_str().unwrap().to_owned(), level, kind));
                    if path.is_dir() {
                        stack.push(path);
                    }
                }
            }
            all
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Walks `root` with libc `nftw`, collecting what the callback sees.
    fn walk(root: &Path, before: impl FnOnce()) -> (c_int, BTreeSet<(String, c_int, c_int)>) {
        let c_root = CString::new(root.as_os_str().as_bytes()).unwrap();
        let mut seen = BTreeSet::new();
        let rc = NFTW_VISIT
            .scope(
                Box::new(|path, _stat, typeflag, ftw| {
                    // SAFETY: nftw passes a NUL-terminated path and a
                    // valid `struct FTW` for the duration of the call.
                    let (path, ftw) = unsafe { (CStr::from_ptr(path), *ftw) };
                    let path = Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
                    let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
                    seen.insert((rel.to_owned(), ftw.level, typeflag));
                    0
                }),
                |visit| {
                    before();
                    // SAFETY: a NUL-terminated path and a callback of the
                    // type nftw expects, bound for the whole walk.
                    unsafe { nftw(c_root.as_ptr(), visit, 8, FTW_PHYS) }
                },
            )
            .unwrap();
        (rc, seen)
    }

    #[test]
    fn nftw_collects_the_tree() {
        let tree = Tree::new("one");
        let (rc, seen) = walk(&tree.0, || {});
        assert_eq!(rc, 0);
        assert_eq!(seen, tree.expected());
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn nftw_on_four_threads_at_once_keeps_state_apart() {
        let barrier = Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4 {
                let barrier = &barrier;
                s.spawn(move || {
                    let tree = Tree::new(&format!("t{t}"));
                    // All four callbacks are bound before any walk starts.
                    let (rc, seen) = walk(&tree.0, || {
                        barrier.wait();
                    });
                    assert_eq!(rc, 0);
                    assert_eq!(seen, tree.expected(), "thread {t}");
                });
            }
        });
    }

    #[test]
    fn nftw_callback_panic_stops_the_walk_and_is_resumed() {
        let tree = Tree::new("panic");
        let c_root = CString::new(tree.0.as_os_str().as_bytes()).unwrap();
        let mut calls = 0;
        let mut rc = 0;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            NFTW_VISIT.scope(
                Box::new(|_, _, _, _| {
                    calls += 1;
                    if calls == 2 {
                        panic!("second entry");
                    }
                    0
                }),
                // SAFETY: as in `walk`.
                |visit| rc = unsafe { nftw(c_root.as_ptr(), visit, 8, FTW_PHYS) },
            )
        }))
        .unwrap_err();
        assert_eq!(message(&*caught), Some("second entry"));
        // The pool's fallback, 1, made nftw stop and return it.
        assert_eq!((calls, rc), (2, 1));
    }
}
