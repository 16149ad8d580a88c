#!/usr/bin/env python3
"""Prints BENCHMARKS.md's performance tables from criterion's last run.

Run the benches first (`cargo bench --bench registry --bench callbacks
--bench static_trampoline`), then `python3 benches/summarize.py`. Every
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


def main():
    print("| measurement | registry (ns) | direct pointer (ns) | ratio | target |")
    print("|---|---|---|---|---|")
    row("save + unref vs `Box::into_raw` + `from_raw`",
        median_ns("ops", "save+unref_registry"),
        median_ns("ops", "save+unref_direct Box__into_raw+from_raw"), note="≤ 1.5")
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
        for name, label, target in (
            ("registry restore", "`restore`", ""),
            ("registry restore, lent", "`restore` inside `lend`", "≤ 2.0" if n == 1000 else ""),
            ("traverse__Visitor (save+take per call)", "`traverse::Visitor` (save + take per C call)", ""),
        ):
            row(f"per callback through C, N = {n}: {label}",
                median_ns("per-callback", name, str(n)),
                median_ns("per-callback", "direct pointer", str(n)), per=n, note=target)
    one = median_ns("live-handles", "restore", "1")
    million = median_ns("live-handles", "restore", "1000000")
    print(f"| restore with 10⁶ live handles ÷ with 1 | {million:.1f} | {one:.1f} (1 live) | {million / one:.2f}× | ≤ 1.3 |")
    print()
    print("| threads | restore, distinct handles (M/s) | scaling | restore_ref, one shared handle (M/s) | direct deref (M/s) |")
    print("|---|---|---|---|---|")
    single = None
    for n in (1, 2, 4):
        def rate(name):
            return n / median_ns("threads", name, str(n)) * 1e3
        distinct = rate("restore distinct_registry")
        single = single or distinct
        target = " (target ≥ 1.6)" if n == 2 else ""
        print(f"| {n} | {distinct:.0f} | {distinct / single:.2f}×{target} | "
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
