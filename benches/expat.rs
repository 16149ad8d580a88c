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
//! ratio comes from one run. (`benches/interleaved.rs` measures the same
//! parses alternated round by round, which this machine's drift calls
//! for: see BENCHMARKS.md.)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use handle_registry::Registry;

#[path = "common/parses.rs"]
mod parses;
#[path = "common/variants.rs"]
mod variants;
use parses::expat::{document, parse, ways, Depths};
use variants::bench_variants;

fn expat_end_to_end(c: &mut Criterion) {
    let doc = document();
    let doc = doc.as_slice();
    let registry = Registry::global();

    let mut g = c.benchmark_group("expat");
    g.throughput(Throughput::Elements(parses::ITEMS as u64));
    bench_variants(
        &mut g,
        registry,
        ways(),
        |handlers, ud| parse(doc, handlers, ud),
        |d: &Depths| d.elements,
    );
    g.finish();
    // Each variant sees every element (the root's too): check one of each
    // kind once.
    let all = (parses::ITEMS as u64 + 1, 2, 0);
    let p = registry.save(Depths::default());
    parse(doc, ways().restore, p);
    let d = registry.take::<Depths>(p).unwrap();
    assert_eq!((d.elements, d.max_depth, d.depth), all);
    let mut d = Depths::default();
    registry
        .scope(&mut d, |p| parse(doc, ways().with, p))
        .unwrap();
    assert_eq!((d.elements, d.max_depth, d.depth), all);
}

criterion_group!(benches, expat_end_to_end);
criterion_main!(benches);
