"""Solver comparison on OCR (large protocol) and snakes: time to relative gap and test error.

Usage::

    python benchmarks/bench_compare.py [--ocr-time 30] [--snakes-time 12] [--out FILE.md]

Writes the markdown tables to ``--out`` and the plots to ``docs/img/compare_<dataset>_*.png``.
Needs the shared data sets (``$CRFLEARN_DATA`` or ``../shared/datasets``). Run with ``OPENBLAS_NUM_THREADS=1``.

The harness's times are solver seconds (monitoring excluded). Each solver also runs in its own harness call, timed
as a whole in CPU seconds (``time.process_time``) and wall seconds: solver, monitoring and the per-iteration test
evaluation (``eval_every=1``) included, so the second table shows what the budget costs end to end.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from crflearn import datasets
from crflearn.compare import compare_solvers, format_summary, write_comparison

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocr-time", type=float, default=30.0, help="solver seconds per OCR run")
    parser.add_argument("--snakes-time", type=float, default=12.0, help="solver seconds per snakes run")
    parser.add_argument("--alpha-ocr", type=float, default=5e-4)
    parser.add_argument("--alpha-snakes", type=float, default=5e-3)
    parser.add_argument("--out", default="-", help="markdown output file (default: standard output)")
    parser.add_argument("--img", default=str(ROOT / "docs" / "img"))
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_compare.py " + " ".join(sys.argv[1:] if argv is None else argv)

    sections = []
    runs = [
        ("ocr", "OCR, large protocol (6,251 train / 626 test words, chains, K=26)",
         lambda: datasets.load_ocr("large"), ("idal", "bcfw", "subgradient", "cutting_plane", "lbfgs"),
         args.ocr_time, args.alpha_ocr),
        ("snakes", "snakes (200 train / 100 test loopy 4-connected grids, K=11, edge features)",
         lambda: datasets.load_snakes(), ("idal", "bcfw", "subgradient", "cutting_plane"),
         args.snakes_time, args.alpha_snakes),
    ]
    for key, title, loader, solvers, budget, alpha in runs:
        X_train, y_train, X_test, y_test = loader()
        start = time.perf_counter()
        results, totals = {}, []
        for solver in solvers:  # one harness call per solver, so that each is timed end to end
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results.update(compare_solvers(X_train, y_train, X_test, y_test, solvers=(solver,), max_time=budget,
                                           alpha=alpha, eval_every=1, random_state=0))
            totals.append(f"| {solver} | {results[solver].get('solver_time', float('nan')):.1f} "
                          f"| {time.process_time() - cpu0:.1f} | {time.perf_counter() - wall0:.1f} |")
        wall = time.perf_counter() - start
        files = write_comparison(results, args.img, prefix=f"compare_{key}_")
        for f in files:  # keep only the PNGs in docs/img
            if f.suffix != ".png":
                f.unlink()
        pngs = [f.name for f in files if f.suffix == ".png"]
        sections.append(f"### {title}\n\nalpha = {alpha:g}, solver-time budget {budget:g} s per solver "
                        f"(monitoring excluded), total wall time of this section {wall:.0f} s.\n\n"
                        + format_summary(results) + "\n\n"
                        + "| solver | solver s | harness CPU s (everything) | harness wall s |\n"
                        + "| --- | ---: | ---: | ---: |\n" + "\n".join(totals) + "\n\n"
                        + "\n".join(f"![{p}](img/{p})" for p in pngs) + "\n")
    header = (f"## Solver comparison (harness `crflearn.compare`)\n\nCommand: `{command}`\n\n"
              f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
              "2 cores shared with other jobs, so times are noisy.\n\n"
              "Each gap is relative to the solver's own objective: IDAL = Gini-relaxed CRF, "
              "bcfw/subgradient/cutting_plane = structured SVM (hinge), lbfgs = CRF likelihood; "
              "only the test error (fraction of wrong nodes) compares the solvers directly.\n\n")
    text = header + "\n".join(sections)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
