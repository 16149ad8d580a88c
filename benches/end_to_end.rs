//! A real C library end to end: the demo library's `traverse_file` scans a
//! file of 200 000 small blocks and makes two short callbacks per block
//! (`start` at `{`, `end` at `}`), the shape of an expat parse with start-
//! and end-element handlers. Every figure includes C's own work (reading
//! and scanning the file), as a user's would.
//!
//! `cargo bench --bench end_to_end`. One group: the raw-pointer baseline
//! beside each way of reaching the state, so each ratio comes from one run.
//! (`benches/interleaved.rs` measures the same parses alternated round by
//! round, which this machine's drift calls for: see BENCHMARKS.md.)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use handle_registry::Registry;

#[path = "common/parses.rs"]
mod parses;
#[path = "common/variants.rs"]
mod variants;
use parses::demo::{ways, Counts, Input};
use variants::bench_variants;

fn end_to_end(c: &mut Criterion) {
    let input = Input::new("e2e");
    let registry = Registry::global();

    let mut g = c.benchmark_group("end-to-end");
    g.throughput(Throughput::Elements(parses::ITEMS as u64));
    let parse = |cbs, user_data| input.parse(cbs, user_data);
    bench_variants(&mut g, registry, ways(), parse, |c: &Counts| c.blocks);
    g.finish();
    // Each variant must have seen every block.
    let mut counts = Counts::default();
    registry
        .scope(&mut counts, |p| parse(ways().with, p))
        .unwrap();
    assert_eq!((counts.blocks, counts.max_depth), (parses::ITEMS as u64, 1));
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
