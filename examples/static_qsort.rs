//! Sorting with libc `qsort`, whose comparator gets no `user_data`, using a
//! stateful Rust closure: it counts its comparisons and orders by a key
//! chosen at run time. Two sorts run at once on two threads, each with its
//! own comparator behind its own C function pointer.
//!
//! `cargo run --example static_qsort`

use std::ffi::{c_int, c_void};

use handle_registry::static_trampoline::pools::QSORT_COMPARE;

type Compare = unsafe extern "C" fn(*const c_void, *const c_void) -> c_int;

unsafe extern "C" {
    fn qsort(base: *mut c_void, n: usize, size: usize, compare: Compare);
}

/// Sorts `words` by `key` with `qsort`; returns the number of comparisons.
fn sort_words(words: &mut [&str], key: fn(&str) -> usize) -> usize {
    let mut comparisons = 0;
    QSORT_COMPARE
        .scope(
            Box::new(|a, b| {
                comparisons += 1;
                // SAFETY: qsort passes pointers to two elements of `words`.
                let (a, b) = unsafe { (*a.cast::<&str>(), *b.cast::<&str>()) };
                key(a).cmp(&key(b)) as c_int
            }),
            // SAFETY: `words` holds `words.len()` `&str`s, which the
            // comparator reads; it stays bound until qsort returns.
            |compare| unsafe {
                qsort(
                    words.as_mut_ptr().cast(),
                    words.len(),
                    size_of::<&str>(),
                    compare,
                )
            },
        )
        .expect("a free qsort comparator slot");
    comparisons
}

fn main() {
    let text = "the quick brown fox jumps over the lazy dog while a static \
                trampoline hands qsort a plain function pointer";
    let (mut by_len, mut by_vowels): (Vec<&str>, Vec<&str>) = (
        text.split_whitespace().collect(),
        text.split_whitespace().collect(),
    );
    let (n1, n2) = std::thread::scope(|s| {
        let a = s.spawn(|| sort_words(&mut by_len, str::len));
        let b = s.spawn(|| {
            sort_words(&mut by_vowels, |w| {
                w.chars().filter(|c| "aeiou".contains(*c)).count()
            })
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    println!("by length ({n1} comparisons): {by_len:?}");
    println!("by vowels ({n2} comparisons): {by_vowels:?}");
}
