"""Cutting-plane iteration cost: where the time goes as the working set grows.

Fits ``solver="cutting_plane"`` on a synthetic sticky-HMM chain task and prints, every few
oracle passes, the solver time of the pass, the working-set size, the relative gap and the
cumulated time spent in the working-set QP.

Run::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/bench_cutting_plane.py --n-sequences 300 --max-iter 150
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from crflearn.datasets import make_chain_hmm
from crflearn.graphs import make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers import cutting_plane, get_solver


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sequences", type=int, default=300)
    parser.add_argument("--max-iter", type=int, default=150)
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=10, help="print every k-th pass")
    args = parser.parse_args(argv)

    X, y = make_chain_hmm(n_sequences=args.n_sequences, random_state=args.seed)
    batch, _ = make_batch(X, y)
    model = PairwiseModel(int(max(map(np.max, y))) + 1, X[0].shape[1], fit_intercept=True)
    qp_time = [0.0]
    solve = cutting_plane._WorkingSet.solve

    def timed_solve(self):
        t0 = time.perf_counter()
        solve(self)
        qp_time[0] += time.perf_counter() - t0

    cutting_plane._WorkingSet.solve = timed_solve
    last = [0.0]

    def report(info):  # one line per pass, printed as it comes (solver time, monitoring excluded)
        it = info["iteration"]
        if it == 1 or it % args.every == 0:
            print(f"iter {it:4d}  pass {info['time'] - last[0]:7.3f}s  constraints {int(info['n_constraints']):4d}  "
                  f"rel.gap {info['gap'] / info['primal']:.2e}  solver time {info['time']:8.2f}s  "
                  f"QP {qp_time[0]:8.2f}s", flush=True)
        last[0] = info["time"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        res = get_solver("cutting_plane")(batch, model, alpha=1.0 / len(X), max_iter=args.max_iter, tol=args.tol,
                                          callback=report)
        total = time.perf_counter() - t0
    h = res.history
    print(f"{len(h['time'])} passes, solver time {h['time'][-1]:.2f}s, QP {qp_time[0]:.2f}s "
          f"({100 * qp_time[0] / max(h['time'][-1], 1e-12):.0f}%), total fit {total:.2f}s, "
          f"final rel.gap {h['gap'][-1] / h['primal'][-1]:.2e}, primal {h['primal'][-1]:.8f}")

if __name__ == "__main__":
    main()
