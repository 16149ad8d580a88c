#!/usr/bin/env python3
"""Prints BENCHMARKS.md's performance tables from criterion's last run.

Run the benches first (`cargo bench --bench registry --bench callbacks
--bench end_to_end --bench static_trampoline`, and `cargo bench --features
bench-expat --bench expat` where the system's expat is installed), then
`python3 benches/summarize.py`. Every
ratio divides two figures of the same run: the registry path by its
direct-pointer baseline from the same criterion group.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"


def median_ns(*parts):
    """Median time of one benchmark, in ns per iteration."""
    path = ROOT.joinpath(*parts, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def row(what, ns, base_ns, per=1, note=""):
    ns, base_ns = ns / per, base_ns / per
    print(f"| {what} | {ns:.1f} | {base_ns:.2f} | {ns / base_ns:.2f}× | {note} |")


def verdict(ratio, must, aim, higher_is_better=False):
    """'met aim', 'met must' or 'MISSED' for a ratio against its targets."""
    ok = (lambda t: ratio >= t) if higher_is_better else (lambda t: ratio <= t)
    return "met aim" if ok(aim) else "met must" if ok(must) else "MISSED"


def targets():
    """The issue-9 table: each figure a ratio of two medians of one run."""
    per = lambda name: median_ns("per-callback", name, "1000") / 1000
    e2e = lambda name: median_ns("end-to-end", name)
    rows = []
    direct = per("direct pointer")
    rows.append(("per callback through C (N = 1000), plain `restore` ÷ raw pointer",
                 per("registry restore"), direct, 9, 3, False))
    rows.append(("per callback through C (N = 1000), `scope` + `with` ÷ raw pointer",
                 per("registry scope + with"), direct, 9, 3, False))
    base = e2e("direct pointer")
    rows.append(("C library end to end (200k blocks, 2 callbacks each), plain `restore` ÷ raw",
                 e2e("registry restore"), base, 1.6, 1.15, False))
    rows.append(("the same inside `scope` (`with`) ÷ raw",
                 e2e("registry scope + with"), base, 1.10, 1.03, False))
    rows.append(("the same inside `lend` ÷ raw",
                 e2e("registry restore inside lend"), base, 1.10, 1.03, False))
    if ROOT.joinpath("expat").exists():
        x = lambda name: median_ns("expat", name)
        base = x("direct pointer")
        rows.append(("expat end to end (200k `<e/>` elements, 2 callbacks each), plain `restore` ÷ raw",
                     x("registry restore"), base, 1.6, 1.15, False))
        rows.append(("the same inside `scope` (`with`) ÷ raw",
                     x("registry scope + with"), base, 1.10, 1.03, False))
        rows.append(("the same inside `lend` ÷ raw",
                     x("registry restore inside lend"), base, 1.10, 1.03, False))
    rows.append(("`save` + `unref` of a `u64` ÷ `Box::into_raw` + `from_raw`",
                 median_ns("ops", "save+unref_registry"),
                 median_ns("ops", "save+unref_direct Box__into_raw+from_raw"), 1.5, 1.2, False))
    rows.append(("restore with 10⁶ live handles ÷ with 1",
                 median_ns("live-handles", "restore", "1000000"),
                 median_ns("live-handles", "restore", "1"), 1.3, 1.1, False))
    print("| figure | registry | baseline | ratio | must | aim | verdict |")
    print("|---|---|---|---|---|---|---|")
    for what, ns, base_ns, must, aim, hib in rows:
        ratio = ns / base_ns
        print(f"| {what} | {ns:.2f} ns | {base_ns:.2f} ns | {ratio:.2f}× | ≤ {must} | ≤ {aim} | "
              f"{verdict(ratio, must, aim, hib)} |")
    for what, name, must, aim in (
        ("2 threads, distinct handles saved back to back: throughput ÷ 1 thread",
         "restore distinct_registry", 1.8, 1.95),
        ("2 threads, one shared handle via `restore_ref`: throughput ÷ 1 thread",
         "restore_ref same_registry", 1.5, 1.9),
    ):
        one = 1 / median_ns("threads", name, "1")
        two = 2 / median_ns("threads", name, "2")
        ratio = two / one
        print(f"| {what} | {two * 1e3:.0f} M/s | {one * 1e3:.0f} M/s | {ratio:.2f}× | ≥ {must} | ≥ {aim} | "
              f"{verdict(ratio, must, aim, True)} |")


def main():
    targets()
    print()
    print("| measurement | registry (ns) | direct pointer (ns) | ratio | target |")
    print("|---|---|---|---|---|")
    row("save + unref vs `Box::into_raw` + `from_raw`",
        median_ns("ops", "save+unref_registry"),
        median_ns("ops", "save+unref_direct Box__into_raw+from_raw"))
    row("restore + release, exclusive vs deref",
        median_ns("ops", "restore_registry exclusive"),
        median_ns("ops", "restore_direct deref"))
    row("restore_ref + release, shared vs deref",
        median_ns("ops", "restore_registry shared"),
        median_ns("ops", "restore_direct deref"))
    row("restore inside `lend` vs deref",
        median_ns("ops", "restore_registry lent"),
        median_ns("ops", "restore_direct deref"))
    for n in (1, 1000):
        for name, label in (
            ("registry restore", "`restore`"),
            ("registry restore, lent", "`restore` inside `lend`"),
            ("registry scope + with", "`scope` + `with`"),
            ("traverse__Visitor (save+take per call)", "`traverse::Visitor` (save + take per C call)"),
        ):
            row(f"per callback through C, N = {n}: {label}",
                median_ns("per-callback", name, str(n)),
                median_ns("per-callback", "direct pointer", str(n)), per=n)
    print()
    print("| threads | restore, distinct handles (M/s) | scaling | restore_ref, one shared handle (M/s) | direct deref (M/s) |")
    print("|---|---|---|---|---|")
    single = None
    for n in (1, 2, 4):
        def rate(name):
            return n / median_ns("threads", name, str(n)) * 1e3
        distinct = rate("restore distinct_registry")
        single = single or distinct
        print(f"| {n} | {distinct:.0f} | {distinct / single:.2f}× | "
              f"{rate('restore_ref same_registry'):.0f} | {rate('deref distinct_direct'):.0f} |")
    static = ROOT / "call"
    if static.exists():
        print()
        print("| C function pointer without `user_data` | ns per call |")
        print("|---|---|")
        for bench in sorted(p.name for p in static.iterdir() if p.is_dir() and p.name != "report"):
            print(f"| {bench.replace('_', ' ')} | {median_ns('call', bench):.1f} |")


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as e:
        sys.exit(f"missing criterion data ({e.filename}): run the benches first")
