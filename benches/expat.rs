//! A real, widely used C library end to end: expat parses a document of
//! 200 000 small elements, and its start- and end-element handlers reach
//! the parse state through `user_data`: the measurement issue 9 names
//! ("expat parsing 200k small elements, handlers restore the state").
//! Every figure includes expat's own work, as a user's would.
//!
//! Needs the system's expat (Debian: `apt-get install libexpat1-dev`) and
//! the `bench-expat` feature, which only links it:
//! `cargo bench --features bench-expat --bench expat`. One group: the
//! raw-pointer baseline beside each way of reaching the state, so each
//! ratio comes from one run.

use std::ffi::{c_char, c_int, c_void};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use handle_registry::Registry;

#[path = "common/variants.rs"]
mod variants;
use variants::{bench_variants, Handlers};

const ELEMENTS: usize = 200_000;

/// The few declarations of `expat.h` this bench needs.
mod expat {
    use std::ffi::{c_char, c_int, c_void};

    /// `XML_Parser`: an opaque pointer.
    pub type Parser = *mut c_void;
    pub type StartHandler =
        unsafe extern "C" fn(user_data: *mut c_void, name: *const c_char, atts: *mut *const c_char);
    pub type EndHandler = unsafe extern "C" fn(user_data: *mut c_void, name: *const c_char);
    /// `XML_STATUS_OK`.
    pub const STATUS_OK: c_int = 1;

    #[link(name = "expat")]
    extern "C" {
        pub fn XML_ParserCreate(encoding: *const c_char) -> Parser;
        pub fn XML_ParserFree(parser: Parser);
        pub fn XML_SetUserData(parser: Parser, user_data: *mut c_void);
        pub fn XML_SetElementHandler(parser: Parser, start: StartHandler, end: EndHandler);
        pub fn XML_Parse(parser: Parser, s: *const c_char, len: c_int, is_final: c_int) -> c_int;
    }
}

/// What the handlers keep: the shape of a small parse state.
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

/// Parses `doc` in one call with these handlers and `user_data`.
fn parse(doc: &[u8], start: expat::StartHandler, end: expat::EndHandler, ud: *mut c_void) {
    // SAFETY: a parser is created, used with a buffer of the given length
    // and handlers that accept this `user_data`, and freed.
    unsafe {
        let parser = expat::XML_ParserCreate(std::ptr::null());
        assert!(!parser.is_null());
        expat::XML_SetUserData(parser, ud);
        expat::XML_SetElementHandler(parser, start, end);
        let len = c_int::try_from(doc.len()).unwrap();
        let status = expat::XML_Parse(parser, doc.as_ptr().cast(), len, 1);
        expat::XML_ParserFree(parser);
        assert_eq!(status, expat::STATUS_OK);
    }
}

fn expat_end_to_end(c: &mut Criterion) {
    let mut doc = String::from("<doc>");
    // The smallest element there is: expat's own work per element is then
    // the least, and the handlers' share the largest (the harshest ratio).
    for _ in 0..ELEMENTS {
        doc.push_str("<e/>");
    }
    doc.push_str("</doc>");
    let doc = doc.as_bytes();
    let registry = Registry::global();

    let mut g = c.benchmark_group("expat");
    g.throughput(Throughput::Elements(ELEMENTS as u64));
    let handlers = Handlers {
        direct: (
            direct_start as expat::StartHandler,
            direct_end as expat::EndHandler,
        ),
        restore: (restore_start, restore_end),
        with: (with_start, with_end),
    };
    bench_variants(
        &mut g,
        registry,
        handlers,
        |(start, end), ud| parse(doc, start, end, ud),
        |d: &Depths| d.elements,
    );
    g.finish();
    // Each variant sees every element: check one of each kind once.
    let p = registry.save(Depths::default());
    parse(doc, restore_start, restore_end, p);
    let d = registry.take::<Depths>(p).unwrap();
    assert_eq!(
        (d.elements, d.max_depth, d.depth),
        (ELEMENTS as u64 + 1, 2, 0)
    );
    let mut d = Depths::default();
    registry
        .scope(&mut d, |p| parse(doc, with_start, with_end, p))
        .unwrap();
    assert_eq!(
        (d.elements, d.max_depth, d.depth),
        (ELEMENTS as u64 + 1, 2, 0)
    );
}

criterion_group!(benches, expat_end_to_end);
criterion_main!(benches);
