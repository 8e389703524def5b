"""Cutting-plane iteration cost: where the time goes as the working set grows.

Fits ``solver="cutting_plane"`` on a synthetic sticky-HMM chain task and prints, per oracle
pass, the solver time of the pass, the working-set size and the relative gap, then the share
of the time spent in the working-set QP.

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        res = get_solver("cutting_plane")(batch, model, alpha=1.0 / len(X), max_iter=args.max_iter, tol=args.tol)
        total = time.perf_counter() - t0
    h = res.history
    step = np.diff(np.r_[0.0, h["time"]])
    for i in range(0, len(step), max(1, len(step) // 15)):
        print(f"iter {h['iteration'][i]:4d}  pass {step[i]:7.3f}s  constraints {int(h['n_constraints'][i]):4d}  "
              f"rel.gap {h['gap'][i] / h['primal'][i]:.2e}")
    print(f"last pass {step[-1]:.3f}s; {len(step)} passes, solver time {h['time'][-1]:.2f}s, "
          f"QP {qp_time[0]:.2f}s ({100 * qp_time[0] / max(h['time'][-1], 1e-12):.0f}%), total fit {total:.2f}s, "
          f"final rel.gap {h['gap'][-1] / h['primal'][-1]:.2e}, primal {h['primal'][-1]:.8f}")


if __name__ == "__main__":
    main()
