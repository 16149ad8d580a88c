//! The four ways of reaching a parse state that the end-to-end benches
//! (`benches/end_to_end.rs`, `benches/expat.rs`) compare in one group, so
//! that each ratio comes from one run: the raw-pointer baseline, `restore`
//! on a saved value, a scope with `with`, and `restore` inside a lend.
//! Shared so that both benches measure the very same shapes under the same
//! names. Included with `#[path = "common/variants.rs"] mod variants;`,
//! beside `common/parses.rs` (as `parses`), whose handler sets it takes.

use std::ffi::c_void;
use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use handle_registry::Registry;

use crate::parses::Ways;

/// Adds the four benchmarks to `g`. `parse(handlers, user_data)` runs one
/// whole parse; `seen` reads what the state counted, kept from the
/// optimizer.
pub fn bench_variants<S: Default + Send + 'static, H: Copy>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    registry: &Registry,
    handlers: Ways<H>,
    parse: impl Fn(H, *mut c_void),
    seen: impl Fn(&S) -> u64,
) {
    g.bench_function("direct pointer", |b| {
        b.iter(|| {
            let mut state = S::default();
            parse(handlers.direct, (&raw mut state).cast());
            black_box(seen(&state))
        })
    });
    g.bench_function("registry restore", |b| {
        b.iter(|| {
            let p = registry.save(S::default());
            parse(handlers.restore, p);
            black_box(seen(&registry.take::<S>(p).unwrap()))
        })
    });
    g.bench_function("registry scope + with", |b| {
        b.iter(|| {
            let mut state = S::default();
            registry
                .scope(&mut state, |p| parse(handlers.with, p))
                .unwrap();
            black_box(seen(&state))
        })
    });
    g.bench_function("registry restore inside lend", |b| {
        b.iter(|| {
            let p = registry.save(S::default());
            registry
                .lend::<S, _>(p, || parse(handlers.restore, p))
                .unwrap();
            black_box(seen(&registry.take::<S>(p).unwrap()))
        })
    });
}
