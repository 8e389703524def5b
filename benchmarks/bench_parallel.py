"""Benchmarks of the data-parallel IDAL solver (:mod:`crflearn.solvers.idal_parallel`, docs/scaling.md).

Usage::

    python benchmarks/bench_parallel.py simulate ocr-small|ocr-large|chains [--parts 1,2,4,...] [--tol T]
                                                                           [--max-iter N] [--alpha A]
                                                                           [--local-steps L]
    python benchmarks/bench_parallel.py fit ocr-large|ocr-small|chains [--tol T] [--max-iter N] [--alpha A]
                                                                      [--runs threads1,threads2,threads2:C,dask2,twin1]
                                                                      [--local-steps L]
    python benchmarks/bench_parallel.py order ocr-small|chains [--max-iter N]

``simulate``: P = 1, 2, 4, ... partitions of the CoCoA+ rounds of the Dask backend run one after the other
on one thread (``backend="simulate", n_jobs=1``), which gives the iterates of P workers; reports the rounds
(each ``--local-steps`` outer steps of every partition) to the certified relative gap ``tol``, the CPU
seconds, the bytes a round ships per partition (``w`` out, the change back; the certificate rounds add ``w``
out and the terms back, pickled sizes) and the CPU seconds per node and round.

``fit``: total fit time (the whole ``fit_idal`` call, setup included) to ``tol`` with 1 and 2 threads
(``backend="threads"``: one shared ``w``) and with a 2-worker ``LocalCluster`` (CoCoA+ rounds; processes,
one thread each; the workers import crflearn and load the compiled kernels before the clock starts).
``threadsN:C``: N threads merging their change into the shared ``w`` every ``C`` cliques (default
:func:`~crflearn.solvers.idal_parallel.shared_chunk`; 0: no copies, unsynchronised writes to the shared
``w``, the behaviour before the chunks). ``twin1``: two 1-thread fits at the same time in two processes
(the control: the wall speed-up and CPU overhead the machine allows right now; the row shows the first
fit's rounds, the wall of both, the CPU of both: the machine allows a speed-up of
``2 x wall(threads1) / wall(twin1)``). CPU seconds are the driver's plus, for dask, the workers'
(``time.process_time`` in every worker before and after). The load average (``os.getloadavg``) is printed
with every row: the figures are only comparable on a quiet machine; "loop s" is the solver's time without
the certificates, "monitor s" that of the certificates; "CPU s per round" is per fit for ``twin1``; "wall speed-up"
is against the first ``threads1`` row of the same run (for ``twin1``: ``2 x wall(threads1) / wall(twin1)``, what the
machine allows). The kernels are compiled (or loaded from Numba's cache) for the data set before any clock starts.

``order``: the serial solver with the examples of every epoch in a random order (its own), in two shuffled
halves one after the other (what shared-``w`` partitions see when they do not run at the same time), and in
a fixed order: rounds to ``tol``.

Run with ``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1``. Data: :func:`crflearn.datasets.load_ocr`
(``$CRFLEARN_DATA`` or ``../shared/datasets``) and :func:`crflearn.datasets.make_chain_hmm`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from crflearn.graphs import make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers.idal import fit_idal
from crflearn.solvers import idal_parallel
from crflearn.solvers.idal_parallel import IdalPartition, partition_examples


def load(name: str):
    """``(batch, model, default alpha)`` of a named data set."""
    if name.startswith("ocr"):
        from crflearn.datasets import load_ocr

        x, y = load_ocr(protocol=name.split("-")[1])[:2]
        k = 26
    elif name == "chains":
        from crflearn.datasets import make_chain_hmm

        x, y = make_chain_hmm(n_sequences=1000, length=(10, 30), n_states=5, n_features=10, random_state=0)
        k = 5
    else:
        raise SystemExit(f"unknown data set {name!r}")
    batch, _ = make_batch(x, y)
    return batch, PairwiseModel(k, batch.n_features, fit_intercept=True), 1.0 / batch.n_examples


def bytes_per_round(batch, model, alpha: float) -> tuple[int, int, int]:
    """Pickled sizes of ``w`` (sent to a partition), of a weight change and of the certificate terms
    (received from a partition)."""
    part = IdalPartition(batch.subset(np.arange(min(5, batch.n_examples))), model,
                         dict(alpha=alpha, kappa=1.0, rho=1.0, entropy="gini", loss_augmented=False, warm=None,
                              inner_epochs=1, sampling="uniform"), 0, batch.n_examples, 1)
    wu, wp = part.initial()
    w_bytes = len(pickle.dumps((wu, wp, 1.0), protocol=5))
    change = len(pickle.dumps(part.run(wu, wp, 1.0), protocol=5))
    terms = len(pickle.dumps(part.terms(wu, wp, True), protocol=5))
    return w_bytes, change, terms


def _fit(batch, model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0, c0 = time.perf_counter(), time.process_time()
        res = fit_idal(batch, model, random_state=0, **kw)
        return res, time.perf_counter() - t0, time.process_time() - c0


def _rel_gap(res) -> float:
    h = res.history
    return float(h["gap"][-1] / abs(h["primal"][-1]))


def extrapolated_rounds(res, tol: float) -> float:
    """Rounds to ``tol`` at the log-linear rate of the last half of the recorded rows (fresh ones: those
    with a repaired lower bound); the rounds run when converged, inf when the gap did not shrink."""
    if res.converged:
        return float(res.n_iter)
    h = res.history
    keep = np.isfinite(h["repair"])
    its, gaps = h["iteration"][keep], h["gap"][keep] / np.abs(h["primal"][keep])
    half = its >= its[-1] / 2
    if half.sum() < 2 or gaps[half][-1] >= gaps[half][0]:
        return float("inf")
    slope = np.polyfit(its[half], np.log(gaps[half]), 1)[0]
    return float(its[-1] + (np.log(tol) - np.log(gaps[-1])) / slope) if slope < 0 else float("inf")


def simulate(name: str, parts: list[int], tol: float, max_iter: int, alpha: float | None) -> None:
    batch, model, a0 = load(name)
    alpha = a0 if alpha is None else alpha
    w_b, d_b, t_b = bytes_per_round(batch, model, alpha)
    print(f"# {name}: {batch.n_examples} examples, {batch.n_nodes} nodes, {batch.n_edges} edges, K={model.n_states}, "
          f"alpha={alpha:.3g}, tol={tol:g}; per partition and round: w out {w_b} B, change back {d_b} B; "
          f"certificate: w out {w_b} B, terms back {t_b} B")
    print("| P | examples per partition | rounds run | converged | certified rel. gap | rounds to tol "
          "(extrapolated) | CPU s | CPU us per node-round | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n_parts in parts:
        sizes = [len(p) for p in partition_examples(batch, n_parts, 0)]
        res, wall, cpu = _fit(batch, model, alpha=alpha, tol=tol, max_iter=max_iter, n_partitions=n_parts,
                              n_jobs=1, backend="simulate")
        per = 1e6 * float(res.history["time"][-1]) / (res.n_iter * batch.n_nodes)
        print(f"| {n_parts} | {min(sizes)}-{max(sizes)} | {res.n_iter} | {res.converged} | "
              f"{_rel_gap(res):.2e} | {extrapolated_rounds(res, tol):.0f} | {cpu:.1f} | {per:.2f} | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)


def _dask_fit(batch, model, kw) -> tuple:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.run(_warm_worker)
        cpu0 = client.run(time.process_time)
        res, wall, cpu = _fit(batch, model, backend="dask", **kw)
        cpu1 = client.run(time.process_time)
    return res, wall, cpu + sum(cpu1[a] - cpu0[a] for a in cpu0)


def _warm_worker() -> None:
    """Import the solver and run a tiny fit (loads the compiled kernels)."""
    from crflearn.datasets import make_chain_hmm

    x, y = make_chain_hmm(n_sequences=4, length=5, n_states=3, n_features=2, random_state=0)
    batch, _ = make_batch(x, y)
    _fit(batch, PairwiseModel(3, 2), alpha=0.1, max_iter=2, n_partitions=2, n_jobs=1)


def _twin(batch, model, kw) -> tuple:
    """Two 1-thread fits at the same time in two processes (the control: the wall speed-up and the CPU
    overhead the machine allows two independent copies of the serial solver right now)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:  # fork: the children inherit the data and the compiled kernels
        t0 = time.perf_counter()
        futures = [pool.submit(_fit, batch, model, **kw) for _ in range(2)]
        runs = [f.result() for f in futures]
        wall = time.perf_counter() - t0
    return runs[0][0], wall, sum(r[2] for r in runs)


def fit_times(name: str, tol: float, max_iter: int, alpha: float | None, runs: list[str]) -> None:
    batch, model, a0 = load(name)
    alpha = a0 if alpha is None else alpha
    kw = dict(alpha=alpha, tol=tol, max_iter=max_iter)
    _warm_worker()
    for n_jobs in (1, 2):  # compile (or load) the kernels for this data set's types before any clock starts
        _fit(batch.subset(np.arange(min(20, batch.n_examples))), model, alpha=alpha, max_iter=2, n_jobs=n_jobs)
    print(f"# {name}: {batch.n_examples} examples, {batch.n_nodes} nodes, alpha={alpha:.3g}, tol={tol:g}, "
          f"{os.cpu_count()} cores, shared-w chunk at 2 threads: "
          f"{idal_parallel.shared_chunk((batch.n_nodes + batch.n_edges) // 2, model.size)} cliques")
    print("| run | rounds | converged | certified rel. gap | wall s | CPU s | CPU/wall | CPU s per round | loop s "
          "| monitor s | wall speed-up vs first threads1 | load before/after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = None
    for run in runs:
        load0 = os.getloadavg()[0]
        if run.startswith("threads"):  # threadsN or threadsN:C (chunks of C cliques; 0: unsynchronised)
            n, _, chunk = run[len("threads"):].partition(":")
            default = idal_parallel.shared_chunk
            if chunk:
                idal_parallel.shared_chunk = lambda n_cliques, w_size: min(int(chunk), n_cliques)
            try:
                res, wall, cpu = _fit(batch, model, n_jobs=int(n), **kw)
            finally:
                idal_parallel.shared_chunk = default
        elif run == "dask2":
            res, wall, cpu = _dask_fit(batch, model, kw)
        elif run == "twin1":
            res, wall, cpu = _twin(batch, model, kw)
        else:
            raise SystemExit(f"unknown run {run!r}")
        h = res.history
        base = wall if base is None and run == "threads1" else base
        speed = "" if base is None else f"{(2 if run == 'twin1' else 1) * base / wall:.2f}x"
        print(f"| {run} | {res.n_iter} | {res.converged} | {_rel_gap(res):.2e} | {wall:.1f} | {cpu:.1f} | "
              f"{cpu / wall:.2f} | {cpu / (res.n_iter * (2 if run == 'twin1' else 1)):.3f} | {h['time'][-1]:.1f} | "
              f"{h['monitor_time'][-1]:.1f} | {speed} | {load0:.1f}/{os.getloadavg()[0]:.1f} |", flush=True)


def sweep_order(name: str, tol: float, max_iter: int, alpha: float | None) -> None:
    """The serial solver with the examples of an epoch visited in a random order (the solver's own), in two
    halves each shuffled (what partitions run one after the other see) and in a fixed order: rounds to ``tol``."""
    from crflearn._kernels import idal_engine
    from crflearn._kernels.idal import clique_order

    batch, model, a0 = load(name)
    batch = batch.subset(np.random.default_rng(0).permutation(batch.n_examples))
    original = idal_engine.IdalEngine.next_order

    def ordered(mode):
        def next_order(self):
            n, half = len(self.offsets[0]) - 1, (len(self.offsets[0]) - 1) // 2
            perm = (np.concatenate([self.rng.permutation(half), half + self.rng.permutation(n - half)])
                    if mode == "halves" else np.arange(n))
            clique_order(perm.astype(np.int64), self.rng.random(self.n_cliques), self.offsets[0], self.offsets[1],
                         self.n_nodes, self.order)
            return self.order
        return original if mode == "random" else next_order

    print("| epoch order | rounds | converged |\n|---|---|---|")
    for mode in ("random", "halves", "fixed"):
        idal_engine.IdalEngine.next_order = ordered(mode)
        try:
            res = _fit(batch, model, alpha=a0 if alpha is None else alpha, tol=tol, max_iter=max_iter)[0]
        finally:
            idal_engine.IdalEngine.next_order = original
        print(f"| {mode} | {res.n_iter} | {res.converged} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["simulate", "fit", "order"])
    ap.add_argument("data", choices=["ocr-small", "ocr-large", "chains"])
    ap.add_argument("--parts", default="1,2,4,8,16,32,64")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=None, help="default: 1/n (the estimator's default)")
    ap.add_argument("--runs", default="threads1,threads2,dask2")
    ap.add_argument("--local-steps", type=int, default=1, help="outer steps of every partition per round "
                    "(check_parallel_options(local_steps=...))")
    args = ap.parse_args(argv)
    if args.local_steps != 1:  # not a fit_idal keyword (yet): set through its option check
        from functools import partial

        from crflearn.solvers import idal

        idal.check_parallel_options = partial(idal_parallel.check_parallel_options, local_steps=args.local_steps)
    if args.what == "order":
        sweep_order(args.data, args.tol, args.max_iter, args.alpha)
    elif args.what == "simulate":
        simulate(args.data, [int(p) for p in args.parts.split(",")], args.tol, args.max_iter, args.alpha)
    else:
        fit_times(args.data, args.tol, args.max_iter, args.alpha, args.runs.split(","))


if __name__ == "__main__":
    main()
