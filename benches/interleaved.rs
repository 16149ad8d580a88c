//! Ratios measured interleaved: every variant of a parse (or of a C loop)
//! runs once per round, in an order that rotates from round to round, and
//! each round yields its own ratio to the raw-pointer baseline of that
//! round.
//!
//! Why beside criterion: criterion measures one variant after another, for
//! seconds each, so a change in the machine's state between two of them
//! (the other core waking up, a frequency step, the page cache) lands in
//! the ratio as if the registry had caused it. When the registry's share
//! of a parse is a few percent, that drift is larger than the effect
//! (BENCHMARKS.md: expat's ratios moved between 0.68× and 2.01× over three
//! criterion runs). Here a drift moves the baseline and the variant of one
//! round together, and the median over rounds discards the rounds it hit.
//!
//! A second copy of the baseline runs in every round as a control: its
//! ratio to the first (the A/A ratio) is what this machine's noise alone
//! gives, and must be 1.00 within its spread for the other figures to be
//! believed. The demo library's parse also runs two floors of any lend
//! (`parses::demo::floor`: a thread-local record with no registry), so
//! that a lend's ratio can be read against the least a lend can cost on
//! the machine of the run.
//!
//! The same method gives the two-thread scaling figures: one thread and
//! two threads run the same loop alternately, and each round yields its
//! own scaling. Three baselines run beside the registry's loops: raw
//! derefs, the machine's ceiling; a bare lock word taken and released on
//! each thread's own line, which is what `restore` does to a slot without
//! the registry; and the same lock word followed by register-only
//! arithmetic of about `restore`'s instruction count, which touches no
//! more memory than the bare lock word. If the last one scales like
//! `restore`, the shortfall below the bare lock word is what this machine
//! gives for that much work per operation, not a line the registry shares.
//!
//! `cargo bench --bench interleaved` (one callback through the demo
//! library's tight C loop, then its parse, then `restore` as the registry
//! fills, then the thread scaling), plus
//! `--features bench-expat` for expat (system libexpat, Debian's
//! `libexpat1-dev`). `ROUNDS=n` sets the number of rounds (default 100;
//! the thread rounds are half as many).

use std::hint::black_box;
use std::time::{Duration, Instant};

use handle_registry::Registry;

// Shared with `benches/callbacks.rs`; its `Visitor` is not used here.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;
#[path = "common/parses.rs"]
mod parses;
use parses::ITEMS;

/// One way of running a whole parse, timed as one sample.
struct Variant<'a> {
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
    times: Vec<Duration>,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, run: impl FnMut() + 'a) -> Variant<'a> {
        Variant {
            name,
            run: Box::new(run),
            times: Vec::new(),
        }
    }
}

/// Runs `variants` (the first is the baseline) for `rounds` rounds after
/// a warm-up, and prints each one's median time and its ratio to the
/// baseline: the median of the per-round ratios, with their 10th and 90th
/// percentiles.
fn compare(title: &str, rounds: usize, variants: Vec<Variant<'_>>) {
    compare_per(title, rounds, ITEMS, "items per parse", variants)
}

/// [`compare`] for samples of `items` of what `what` names.
fn compare_per(
    title: &str,
    rounds: usize,
    items: usize,
    what: &str,
    mut variants: Vec<Variant<'_>>,
) {
    for v in &mut variants {
        for _ in 0..3 {
            (v.run)();
        }
    }
    let n = variants.len();
    for round in 0..rounds {
        for k in 0..n {
            let v = &mut variants[(round + k) % n];
            let start = Instant::now();
            (v.run)();
            v.times.push(start.elapsed());
        }
    }
    println!("\n{title}: {rounds} interleaved rounds, {items} {what}");
    println!(
        "{:<34} {:>10} {:>8} {:>9} {:>17}",
        "variant", "median", "ns/item", "ratio", "p10–p90 of ratio"
    );
    let base = variants[0].times.clone();
    for v in &variants {
        let mut ratios: Vec<f64> = v
            .times
            .iter()
            .zip(&base)
            .map(|(t, b)| t.as_secs_f64() / b.as_secs_f64())
            .collect();
        let mut times = v.times.clone();
        times.sort();
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
        let median = times[times.len() / 2];
        println!(
            "{:<34} {:>8.3}ms {:>8.1} {:>8.3}× {:>8.3}–{:.3}",
            v.name,
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e9 / items as f64,
            at(0.5),
            at(0.1),
            at(0.9),
        );
    }
}

/// One callback per item through the demo library's tight C loop
/// (`traverse_bench_start`), with the callbacks of `benches/callbacks.rs`
/// and `benches/instructions.sh` (`common/mod.rs`): the per-callback cost,
/// measured like the parses, each round against its own raw pointer.
mod per_callback {
    use super::*;
    use crate::common::{direct_start, registry_start, registry_with_start, scoped_start};
    use handle_registry::demo::ffi;
    use std::ffi::c_void;

    /// Callbacks per sample: some 0.5–2 ms, long against the clock.
    const CALLS: usize = 200_000;

    fn run_c(start: ffi::StartCallbackFn, user_data: *mut c_void) {
        let cbs = ffi::Callbacks { start, end: None };
        // SAFETY: every callback used here accepts the `user_data` given
        // with it (the registry's accept any), and C calls back on this
        // thread before returning.
        unsafe { ffi::traverse_bench_start(cbs, user_data, black_box(CALLS as i64)) };
    }

    pub fn run(rounds: usize) {
        let registry = Registry::global();
        let all = CALLS as i64 * (CALLS as i64 - 1) / 2;
        let direct = || {
            let mut sum = 0i64;
            run_c(Some(direct_start), (&raw mut sum).cast());
            assert_eq!(black_box(sum), all);
        };
        compare_per(
            "per callback through C (native/traverse.c's tight loop)",
            rounds,
            CALLS,
            "callbacks per sample",
            vec![
                Variant::new("direct pointer", direct),
                Variant::new("direct pointer (A/A control)", direct),
                Variant::new("registry restore", || {
                    let p = registry.save(0i64);
                    run_c(Some(registry_start), p);
                    assert_eq!(black_box(registry.take::<i64>(p)), Ok(all));
                }),
                Variant::new("registry restore inside lend", || {
                    let p = registry.save(0i64);
                    registry
                        .lend::<i64, _>(p, || run_c(Some(registry_start), p))
                        .unwrap();
                    assert_eq!(black_box(registry.take::<i64>(p)), Ok(all));
                }),
                Variant::new("registry restore_with", || {
                    let p = registry.save(0i64);
                    run_c(Some(registry_with_start), p);
                    assert_eq!(black_box(registry.take::<i64>(p)), Ok(all));
                }),
                Variant::new("restore_with inside lend", || {
                    let p = registry.save(0i64);
                    registry
                        .lend::<i64, _>(p, || run_c(Some(registry_with_start), p))
                        .unwrap();
                    assert_eq!(black_box(registry.take::<i64>(p)), Ok(all));
                }),
                Variant::new("registry scope + with", || {
                    let mut sum = 0i64;
                    registry
                        .scope(&mut sum, |p| run_c(Some(scoped_start), p))
                        .unwrap();
                    assert_eq!(black_box(sum), all);
                }),
            ],
        );
    }
}

/// The demo library's parse (`common/parses.rs`, as `benches/end_to_end.rs`).
mod demo {
    use super::*;
    use crate::parses::demo::{floor, ways, Counts, Input};

    pub fn run(rounds: usize) {
        let input = Input::new("il");
        let ways = ways();
        let registry = Registry::global();
        let direct = || {
            let mut counts = Counts::default();
            input.parse(ways.direct, (&raw mut counts).cast());
            assert_eq!(black_box(counts.blocks), ITEMS as u64);
        };
        // The floors of any lend (see `parses::demo::floor`); any non-null
        // integer serves as their handle.
        let floor_ways = floor::ways();
        let floor_parse = |cbs| {
            let mut counts = Counts::default();
            let handle = std::ptr::without_provenance_mut(0x1234_5678);
            floor::lend(handle, &mut counts, || input.parse(cbs, handle));
            assert_eq!(black_box(counts.blocks), ITEMS as u64);
        };
        compare(
            "demo library (native/traverse.c)",
            rounds,
            vec![
                Variant::new("direct pointer", direct),
                Variant::new("direct pointer (A/A control)", direct),
                Variant::new("registry restore", || {
                    let p = registry.save(Counts::default());
                    input.parse(ways.restore, p);
                    let counts = registry.take::<Counts>(p).unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
                Variant::new("registry restore inside lend", || {
                    let p = registry.save(Counts::default());
                    registry
                        .lend::<Counts, _>(p, || input.parse(ways.restore, p))
                        .unwrap();
                    let counts = registry.take::<Counts>(p).unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
                Variant::new("registry restore_with", || {
                    let p = registry.save(Counts::default());
                    input.parse(ways.restore_with, p);
                    let counts = registry.take::<Counts>(p).unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
                Variant::new("restore_with inside lend", || {
                    let p = registry.save(Counts::default());
                    registry
                        .lend::<Counts, _>(p, || input.parse(ways.restore_with, p))
                        .unwrap();
                    let counts = registry.take::<Counts>(p).unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
                Variant::new("registry scope + with", || {
                    let mut counts = Counts::default();
                    registry
                        .scope(&mut counts, |p| input.parse(ways.with, p))
                        .unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
                Variant::new("floor: thread-local, one compare", || {
                    floor_parse(floor_ways.0)
                }),
                Variant::new("floor: + busy flag, word check", || {
                    floor_parse(floor_ways.1)
                }),
            ],
        );
    }
}

/// expat's parse (`common/parses.rs`, as `benches/expat.rs`).
#[cfg(feature = "bench-expat")]
mod expat {
    use super::*;
    use crate::parses::expat::{document, parse, ways, Depths};

    pub fn run(rounds: usize) {
        let doc = document();
        let doc = doc.as_slice();
        let ways = ways();
        let registry = Registry::global();
        let all = ITEMS as u64 + 1;
        let direct = || {
            let mut d = Depths::default();
            parse(doc, ways.direct, (&raw mut d).cast());
            assert_eq!(black_box(d.elements), all);
        };
        compare(
            "expat (system libexpat)",
            rounds,
            vec![
                Variant::new("direct pointer", direct),
                Variant::new("direct pointer (A/A control)", direct),
                Variant::new("registry restore", || {
                    let p = registry.save(Depths::default());
                    parse(doc, ways.restore, p);
                    let d = registry.take::<Depths>(p).unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
                Variant::new("registry restore inside lend", || {
                    let p = registry.save(Depths::default());
                    registry
                        .lend::<Depths, _>(p, || parse(doc, ways.restore, p))
                        .unwrap();
                    let d = registry.take::<Depths>(p).unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
                Variant::new("registry restore_with", || {
                    let p = registry.save(Depths::default());
                    parse(doc, ways.restore_with, p);
                    let d = registry.take::<Depths>(p).unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
                Variant::new("restore_with inside lend", || {
                    let p = registry.save(Depths::default());
                    registry
                        .lend::<Depths, _>(p, || parse(doc, ways.restore_with, p))
                        .unwrap();
                    let d = registry.take::<Depths>(p).unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
                Variant::new("registry scope + with", || {
                    let mut d = Depths::default();
                    registry
                        .scope(&mut d, |p| parse(doc, ways.with, p))
                        .unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
            ],
        );
    }
}

/// `restore` as the registry fills: the same loop on a registry with 1,
/// 1000 and 10⁶ live handles, alternated round by round (criterion's
/// `live-handles` group measures them one after the other, and on a
/// drifting machine the drift lands in their ratio).
///
/// Twice: one handle restored over and over, as one object's callbacks
/// are, which parks it and makes it the thread's hot handle, so that its
/// index no longer matters; and two handles in turn, as two objects'
/// interleaved callbacks are, which never park, so that every restore
/// finds its slot from the index (`src/pages.rs`, `locate`).
mod live_handles {
    use super::*;
    use std::ffi::c_void;

    /// Restores per sample.
    const RESTORES: usize = 200_000;

    /// A private registry holding `live` values, and its two middle
    /// handles (one, twice, when `live` is 1).
    fn filled(live: usize) -> (Registry, [*mut c_void; 2]) {
        let r = Registry::new();
        let handles: Vec<_> = (0..live).map(|i| r.save(i as u64)).collect();
        let middle = [handles[(live - 1) / 2], handles[live / 2]];
        (r, middle)
    }

    fn restores(r: &Registry, p: *mut c_void) {
        for _ in 0..RESTORES {
            *r.restore::<u64>(black_box(p)).unwrap() += 1;
        }
    }

    fn in_turn(r: &Registry, [p, q]: [*mut c_void; 2]) {
        for _ in 0..RESTORES / 2 {
            *r.restore::<u64>(black_box(p)).unwrap() += 1;
            *r.restore::<u64>(black_box(q)).unwrap() += 1;
        }
    }

    pub fn run(rounds: usize) {
        let [one, thousand, million] = [1, 1_000, 1_000_000].map(filled);
        compare_per(
            "restore as the registry fills (private registries)",
            rounds,
            RESTORES,
            "restores per sample",
            vec![
                Variant::new("1 live handle", || restores(&one.0, one.1[0])),
                Variant::new("1 live handle (A/A control)", || restores(&one.0, one.1[0])),
                Variant::new("1000 live handles", || restores(&thousand.0, thousand.1[1])),
                Variant::new("10^6 live handles", || restores(&million.0, million.1[1])),
            ],
        );
        drop((one, thousand, million));
        // Registries of their own: the group above made one of each
        // registry's middle handles its hot handle, and a hot handle in
        // the pair would halve the cost of every other restore (until
        // 2026-11-28 the 1000 and 10^6 rows measured that, and came out
        // faster than the 2-live row).
        let [two, thousand, million] = [2, 1_000, 1_000_000].map(filled);
        compare_per(
            "two handles in turn as the registry fills (private registries)",
            rounds,
            RESTORES,
            "restores per sample",
            vec![
                Variant::new("2 live handles", || in_turn(&two.0, two.1)),
                Variant::new("2 live handles (A/A control)", || in_turn(&two.0, two.1)),
                Variant::new("1000 live handles", || in_turn(&thousand.0, thousand.1)),
                Variant::new("10^6 live handles", || in_turn(&million.0, million.1)),
            ],
        );
    }
}

/// Two threads against one: aggregate throughput of the same loop on one
/// thread and on two, alternated round by round, each round's scaling
/// `2 × t(1 thread) ÷ t(2 threads)` (each thread doing the same count).
mod threads {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Barrier;

    /// Operations per thread per sample of a registry loop: about 20 ms,
    /// long enough that starting and joining threads is lost in it.
    const OPS: u64 = 2_000_000;
    /// The same for the raw loop, some ten times faster.
    const RAW_OPS: u64 = 10 * OPS;

    /// A `u64` alone on a pair of cache lines (x86 prefetches lines in pairs).
    #[repr(align(128))]
    struct Line(u64);

    /// A lock word and a counter alone on a pair of lines: what `restore`
    /// and its release do to a slot's line (two locked instructions), with
    /// no registry around them.
    #[repr(align(128))]
    #[derive(Default)]
    struct LockedLine {
        state: AtomicU64,
        value: AtomicU64,
    }

    impl LockedLine {
        /// Takes the lock word, adds one to the counter, releases the word.
        #[inline(always)]
        fn lock_add_unlock(&self) {
            if self
                .state
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                let v = self.value.load(Ordering::Relaxed);
                self.value.store(v + 1, Ordering::Relaxed);
                let _ = self
                    .state
                    .compare_exchange(1, 0, Ordering::Release, Ordering::Relaxed);
            }
        }
    }

    /// Register-only work of about the instructions `restore` adds to a
    /// bare lock word (81 per callback against some 12, see
    /// `benches/instructions.sh`): four independent xorshift chains of
    /// three steps, 72 instructions. Each chain shifts by its own amounts, so
    /// the compiler neither folds nor vectorizes them. On the machine of
    /// BENCHMARKS.md the loop takes some 13 ns per operation on one thread,
    /// `restore` 8 to 11; one chain of twelve steps took 26.
    #[inline(always)]
    fn xorshift_rounds(x: [u64; 4]) -> [u64; 4] {
        const SHIFTS: [(u32, u32, u32); 4] = [(13, 7, 17), (11, 5, 19), (9, 15, 21), (7, 11, 25)];
        let mut x = x;
        for _ in 0..3 {
            for (x, (a, b, c)) in x.iter_mut().zip(SHIFTS) {
                *x ^= *x << a;
                *x ^= *x >> b;
                *x ^= *x << c;
            }
        }
        x
    }

    /// One thread's loop, given its number.
    type Work<'a> = dyn Fn(usize) + Sync + 'a;

    /// Runs `work(t)` on `n` threads at once; the time from their common
    /// start until the last one ends.
    fn on_threads(n: usize, work: &Work<'_>) -> Duration {
        let start = Barrier::new(n + 1);
        let began = std::thread::scope(|s| {
            for t in 0..n {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    work(t);
                });
            }
            start.wait();
            Instant::now()
        });
        began.elapsed()
    }

    pub fn run(rounds: usize) {
        let r = Registry::global();
        // Saved back to back on one thread, as a user's first two are.
        let handles: Vec<usize> = (0..2).map(|_| r.save(0u64).addr()).collect();
        let shared = r.save(7u64).addr();
        // Each on lines of its own: two small boxes allocated one after the
        // other share a line about half the time, and the baseline is the
        // machine's ceiling, not false sharing.
        let boxes: Vec<usize> = (0..2)
            .map(|_| Box::into_raw(Box::new(Line(0))).expose_provenance())
            .collect();
        let lines: Vec<LockedLine> = (0..2).map(|_| LockedLine::default()).collect();
        let locked = |t: usize| {
            let line = black_box(&lines[t]);
            for _ in 0..OPS {
                line.lock_add_unlock();
            }
        };
        let locked_and_arithmetic = |t: usize| {
            let line = black_box(&lines[t]);
            let mut x = black_box([t as u64 + 1, 2, 3, 4]);
            for _ in 0..OPS {
                line.lock_add_unlock();
                x = xorshift_rounds(x);
            }
            black_box(x);
        };
        let distinct = |t: usize| {
            let p = std::ptr::without_provenance_mut(handles[t]);
            for _ in 0..OPS {
                *r.restore::<u64>(black_box(p)).unwrap() += 1;
            }
        };
        let same = |_: usize| {
            let p = std::ptr::without_provenance_mut(shared);
            for _ in 0..OPS {
                black_box(*r.restore_ref::<u64>(black_box(p)).unwrap());
            }
        };
        let raw = |t: usize| {
            let raw = std::ptr::with_exposed_provenance_mut::<Line>(boxes[t]);
            for _ in 0..RAW_OPS {
                // SAFETY: each thread has its own live box.
                unsafe { (*black_box(raw)).0 += 1 }
            }
        };
        let kinds: [(&str, &Work<'_>, u64); 5] = [
            ("deref distinct boxes (raw baseline)", &raw, RAW_OPS),
            ("two locked ops, own line (no registry)", &locked, OPS),
            (
                "the same + restore-sized arithmetic",
                &locked_and_arithmetic,
                OPS,
            ),
            ("restore distinct handles", &distinct, OPS),
            ("restore_ref one shared handle", &same, OPS),
        ];
        let mut scaling: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        let mut single: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
        for (_, work, _) in &kinds {
            on_threads(2, *work);
        }
        for round in 0..rounds {
            for (k, (_, work, _)) in kinds.iter().enumerate() {
                let (t1, t2) = if round % 2 == 0 {
                    let t1 = on_threads(1, *work);
                    (t1, on_threads(2, *work))
                } else {
                    let t2 = on_threads(2, *work);
                    (on_threads(1, *work), t2)
                };
                scaling[k].push(2.0 * t1.as_secs_f64() / t2.as_secs_f64());
                single[k].push(t1);
            }
        }
        println!("\ntwo threads ÷ one: {rounds} interleaved rounds, the same loop on each thread");
        println!(
            "{:<38} {:>12} {:>9} {:>17}",
            "loop", "1 thread", "scaling", "p10–p90"
        );
        for (k, (name, _, ops)) in kinds.iter().enumerate() {
            let ratios = &mut scaling[k];
            ratios.sort_by(f64::total_cmp);
            let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
            single[k].sort();
            let one = single[k][single[k].len() / 2].as_secs_f64() * 1e9 / *ops as f64;
            println!(
                "{:<38} {:>8.2} ns {:>8.3}× {:>8.3}–{:.3}",
                name,
                one,
                at(0.5),
                at(0.1),
                at(0.9)
            );
        }
        for p in handles.into_iter().chain([shared]) {
            r.unref(std::ptr::without_provenance_mut(p)).unwrap();
        }
        for b in boxes {
            // SAFETY: each from `Box::into_raw` above, freed once.
            drop(unsafe { Box::from_raw(std::ptr::with_exposed_provenance_mut::<Line>(b)) });
        }
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: one
    // round each then, as a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = match std::env::var("ROUNDS") {
        Ok(n) => n.parse().expect("ROUNDS must be a number"),
        Err(_) if benching => 100,
        Err(_) => 1,
    };
    per_callback::run(rounds);
    demo::run(rounds);
    #[cfg(feature = "bench-expat")]
    expat::run(rounds);
    live_handles::run(rounds);
    threads::run(rounds.div_ceil(2));
}
