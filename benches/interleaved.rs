//! End-to-end ratios measured interleaved: every variant of a parse runs
//! once per round, in an order that rotates from round to round, and each
//! round yields its own ratio to the raw-pointer baseline of that round.
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
//! believed.
//!
//! `cargo bench --bench interleaved` (the demo library of `native/`), plus
//! `--features bench-expat` for expat (system libexpat, Debian's
//! `libexpat1-dev`). `ROUNDS=n` sets the number of rounds (default 100).

use std::ffi::{c_int, c_void, CString};
use std::hint::black_box;
use std::time::{Duration, Instant};

use handle_registry::demo::ffi;
use handle_registry::Registry;

/// Blocks in the demo library's input, elements in expat's.
const ITEMS: usize = 200_000;

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
fn compare(title: &str, rounds: usize, mut variants: Vec<Variant<'_>>) {
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
    println!("\n{title}: {rounds} interleaved rounds, {ITEMS} items per parse");
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
            median.as_secs_f64() * 1e9 / ITEMS as f64,
            at(0.5),
            at(0.1),
            at(0.9),
        );
    }
}

/// The demo library's parse state: the shape of `benches/end_to_end.rs`.
mod demo {
    use super::*;

    #[derive(Default)]
    pub struct Counts {
        depth: i32,
        max_depth: i32,
        pub blocks: u64,
        bytes: i64,
    }

    impl Counts {
        fn start(&mut self, depth: c_int) {
            self.depth = depth;
            self.max_depth = self.max_depth.max(depth);
        }
        fn end(&mut self, open: c_int, close: c_int) {
            self.blocks += 1;
            self.bytes += i64::from(close - open);
        }
    }

    unsafe extern "C" fn direct_start(user_data: *mut c_void, depth: c_int) {
        // SAFETY: the baseline passes a pointer to a live, unaliased `Counts`.
        unsafe { &mut *user_data.cast::<Counts>() }.start(depth)
    }
    unsafe extern "C" fn direct_end(user_data: *mut c_void, open: c_int, close: c_int) {
        // SAFETY: as above.
        unsafe { &mut *user_data.cast::<Counts>() }.end(open, close)
    }
    unsafe extern "C" fn restore_start(user_data: *mut c_void, depth: c_int) {
        if let Ok(mut c) = handle_registry::restore::<Counts>(user_data) {
            c.start(depth)
        }
    }
    unsafe extern "C" fn restore_end(user_data: *mut c_void, open: c_int, close: c_int) {
        if let Ok(mut c) = handle_registry::restore::<Counts>(user_data) {
            c.end(open, close)
        }
    }
    unsafe extern "C" fn with_start(user_data: *mut c_void, depth: c_int) {
        let _ = handle_registry::with(user_data, |c: &mut Counts| c.start(depth));
    }
    unsafe extern "C" fn with_end(user_data: *mut c_void, open: c_int, close: c_int) {
        let _ = handle_registry::with(user_data, |c: &mut Counts| c.end(open, close));
    }

    pub fn run(rounds: usize) {
        let dir = std::env::temp_dir().join(format!("handle-registry-il-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("blocks.txt");
        std::fs::write(&path, "{x}\n".repeat(ITEMS)).unwrap();
        let name = CString::new(path.to_str().unwrap()).unwrap();
        let parse = |start, end, user_data: *mut c_void| {
            let cbs = ffi::Callbacks {
                start: Some(start),
                end: Some(end),
            };
            // SAFETY: a valid C string; every callback accepts this user_data.
            let code = unsafe { ffi::traverse_file(name.as_ptr(), cbs, user_data) };
            assert_eq!(code, ffi::TRAVERSE_OK);
        };
        let registry = Registry::global();
        let direct = || {
            let mut counts = Counts::default();
            parse(direct_start, direct_end, (&raw mut counts).cast());
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
                    parse(restore_start, restore_end, p);
                    let counts = registry.take::<Counts>(p).unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
                Variant::new("registry restore inside lend", || {
                    let p = registry.save(Counts::default());
                    registry
                        .lend::<Counts, _>(p, || parse(restore_start, restore_end, p))
                        .unwrap();
                    let counts = registry.take::<Counts>(p).unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
                Variant::new("registry scope + with", || {
                    let mut counts = Counts::default();
                    registry
                        .scope(&mut counts, |p| parse(with_start, with_end, p))
                        .unwrap();
                    assert_eq!(black_box(counts.blocks), ITEMS as u64);
                }),
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// expat with start- and end-element handlers: the shape of
/// `benches/expat.rs`.
#[cfg(feature = "bench-expat")]
mod expat {
    use super::*;
    use std::ffi::c_char;

    type Parser = *mut c_void;
    type StartHandler =
        unsafe extern "C" fn(user_data: *mut c_void, name: *const c_char, atts: *mut *const c_char);
    type EndHandler = unsafe extern "C" fn(user_data: *mut c_void, name: *const c_char);
    const STATUS_OK: c_int = 1;

    #[link(name = "expat")]
    extern "C" {
        fn XML_ParserCreate(encoding: *const c_char) -> Parser;
        fn XML_ParserFree(parser: Parser);
        fn XML_SetUserData(parser: Parser, user_data: *mut c_void);
        fn XML_SetElementHandler(parser: Parser, start: StartHandler, end: EndHandler);
        fn XML_Parse(parser: Parser, s: *const c_char, len: c_int, is_final: c_int) -> c_int;
    }

    #[derive(Default)]
    struct Depths {
        depth: u32,
        max_depth: u32,
        elements: u64,
    }

    impl Depths {
        fn start(&mut self) {
            self.depth += 1;
            self.max_depth = self.max_depth.max(self.depth);
            self.elements += 1;
        }
        fn end(&mut self) {
            self.depth -= 1;
        }
    }

    unsafe extern "C" fn direct_start(ud: *mut c_void, _: *const c_char, _: *mut *const c_char) {
        // SAFETY: the baseline passes a pointer to a live, unaliased `Depths`.
        unsafe { &mut *ud.cast::<Depths>() }.start()
    }
    unsafe extern "C" fn direct_end(ud: *mut c_void, _: *const c_char) {
        // SAFETY: as above.
        unsafe { &mut *ud.cast::<Depths>() }.end()
    }
    unsafe extern "C" fn restore_start(ud: *mut c_void, _: *const c_char, _: *mut *const c_char) {
        if let Ok(mut d) = handle_registry::restore::<Depths>(ud) {
            d.start()
        }
    }
    unsafe extern "C" fn restore_end(ud: *mut c_void, _: *const c_char) {
        if let Ok(mut d) = handle_registry::restore::<Depths>(ud) {
            d.end()
        }
    }
    unsafe extern "C" fn with_start(ud: *mut c_void, _: *const c_char, _: *mut *const c_char) {
        let _ = handle_registry::with(ud, |d: &mut Depths| d.start());
    }
    unsafe extern "C" fn with_end(ud: *mut c_void, _: *const c_char) {
        let _ = handle_registry::with(ud, |d: &mut Depths| d.end());
    }

    fn parse(doc: &[u8], start: StartHandler, end: EndHandler, ud: *mut c_void) {
        // SAFETY: a parser is created, used with a buffer of the given length
        // and handlers that accept this `user_data`, and freed.
        unsafe {
            let parser = XML_ParserCreate(std::ptr::null());
            assert!(!parser.is_null());
            XML_SetUserData(parser, ud);
            XML_SetElementHandler(parser, start, end);
            let len = c_int::try_from(doc.len()).unwrap();
            let status = XML_Parse(parser, doc.as_ptr().cast(), len, 1);
            XML_ParserFree(parser);
            assert_eq!(status, STATUS_OK);
        }
    }

    pub fn run(rounds: usize) {
        let mut doc = String::from("<doc>");
        // The smallest element there is: expat's own work per element is
        // then the least, and the handlers' share the largest.
        for _ in 0..ITEMS {
            doc.push_str("<e/>");
        }
        doc.push_str("</doc>");
        let doc = doc.as_bytes();
        let registry = Registry::global();
        let all = ITEMS as u64 + 1;
        let direct = || {
            let mut d = Depths::default();
            parse(doc, direct_start, direct_end, (&raw mut d).cast());
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
                    parse(doc, restore_start, restore_end, p);
                    let d = registry.take::<Depths>(p).unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
                Variant::new("registry restore inside lend", || {
                    let p = registry.save(Depths::default());
                    registry
                        .lend::<Depths, _>(p, || parse(doc, restore_start, restore_end, p))
                        .unwrap();
                    let d = registry.take::<Depths>(p).unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
                Variant::new("registry scope + with", || {
                    let mut d = Depths::default();
                    registry
                        .scope(&mut d, |p| parse(doc, with_start, with_end, p))
                        .unwrap();
                    assert_eq!((black_box(d.elements), d.depth), (all, 0));
                }),
            ],
        );
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
    demo::run(rounds);
    #[cfg(feature = "bench-expat")]
    expat::run(rounds);
}
