"""Peak memory and setup time per node of IDAL on a synthetic chain set, serial or on Dask workers (issue 11).

Usage::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/bench_scale.py [--sizes 100000 300000 1000000] [--profile N]
        [--edge-storage dense|compact] [--capacity M] [--engine] [--epochs 3] [--ocr EPOCHS]
        [--dask WORKERS [--worker-memory BYTES]]
        [--dask-fit WORKERS [--alpha A] [--kappa C] [--tol T] [--max-iter N] [--capacity M] [--signal S]
                            [--no-commit] [--no-state]]

Each size runs in a fresh subprocess: chains of 8-10 nodes, K = 26 states, p = 16 features with
about 4 non-zeros per node (dense numpy arrays, so ``feature_view`` converts dense -> CSR), labels
correlated with the features. The child reports

* ``setup MB``: ``ru_maxrss`` after ``build_engine`` minus the baseline (``peak MB``'s);
* ``peak MB``: ``ru_maxrss`` after ``fit_idal`` minus the resident size after imports and data creation
  (in engine mode also after loading the compiled kernels on a 100-node problem);
* ``B/node``: that difference over the total number of nodes;
* the wall seconds of ``make_batch``, of ``build_engine`` (timed on its own, its engine then freed),
  and per epoch (``history["time"]`` of ``fit_idal(max_iter=3, tol=0)``: solver time, monitoring
  excluded).

``--engine`` replaces ``fit_idal`` by the engine itself: ``build_engine`` then ``--epochs`` times
``step()`` + ``certify()`` (what a fit does, without building the result: until session 5, with compact edge
marginals ``fit_idal``'s result state densified them); ``epoch s`` is then the wall time of a ``step()``
and ``cpu s`` its CPU time. ``--edge-storage compact --capacity M`` runs with the compact edge
marginals of :mod:`crflearn._kernels.idal_compact` (engine mode only).

``--dask W`` runs the partitioned solver on a ``W``-worker Dask ``LocalCluster`` of this machine (processes, one
thread each; ``W`` partitions, one per worker; compact edge marginals unless ``--edge-storage dense``): the driver
builds the chain set, scatters the partitions, then runs ``--epochs`` CoCoA+ rounds, each followed by the
certificate round of a fit (the driver keeps every partition's duals, :meth:`DaskPartitions.commit`, then the
partition-additive certificate). Like ``--engine`` it drives the partitions itself and skips the result
(``--dask-fit`` below runs the whole ``fit_idal``). The compiled kernels are loaded on every
worker first (a 100-node fit), then every process's peak resident size is reset (``/proc/<pid>/clear_refs``)
and its resident size taken as its baseline; each process reports ``VmHWM`` of ``/proc/<pid>/status`` at the
end (``psutil`` has no peak on Linux) minus its baseline: ``driver MB``, ``worker MB`` (each), their ``B/node``
(a worker's over its partition's nodes; ``total B/node`` = all processes over all nodes), and the wall and
driver-CPU seconds of a round (``round s``, the workers' steps in parallel) and of a certificate (``cert s``,
commit included). ``--worker-memory`` sets the workers' ``memory_limit`` (default: none).

``--dask-fit W`` runs a whole ``fit_idal(backend="dask", n_partitions=W, edge_storage="compact")`` (the user's
path: validation, setup, scatter, rounds, certificates, result) on a ``W``-worker ``LocalCluster`` to ``--tol`` or
``--max-iter`` rounds, with ``commit_duals=False`` (``--no-commit``) and ``return_state=False`` (``--no-state``)
if asked; labels ``argmax(S x proj + Gumbel)`` (``--signal S``, default 1: the data above). It prints one JSON
record: every process's peak resident size (``VmHWM``, MiB, absolute: data and libraries included, and over its
baseline after the data were made), their sum, the machine's lowest ``MemAvailable`` during the fit (sampled every
second), the wall and driver-CPU seconds of the fit, its rounds and its certified relative gaps.

``--setup-only N ...`` skips the fit at those sizes (``B/node`` then from the setup peak).
``--ocr E`` instead compares the layouts on OCR large (Gini, ``alpha = 2e-4``, seed 0): one engine per layout
(dense, compact with ``--capacity`` slots, default 32 and 64), their steps interleaved, the certified relative gap
after 10 / 30 / 60 / 100 / 150 epochs (up to ``E``) and the CPU seconds per step in between, and how many
entries the dense edge blocks have then.
``--profile N`` instead runs cProfile on ``default_rho`` + ``build_engine`` at N nodes and prints
the top 10 functions by cumulative time.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time

import numpy as np

K, P = 26, 16
CHUNK = 1 << 16


def make_chains(n_nodes: int, seed: int = 0, signal: float = 1.0):
    """About ``n_nodes`` nodes as chains of 8-10 nodes: a list of (n, P) arrays and label arrays; the labels
    are ``argmax(signal * x proj + Gumbel noise)`` (the same random draws for every ``signal``)."""
    rng = np.random.default_rng(seed)
    lengths = []
    total = 0
    while total < n_nodes:
        n = int(rng.integers(8, 11))
        lengths.append(n)
        total += n
    x_all = rng.standard_normal((total, P))
    # in chunks (the same random stream as whole-array draws): no temporaries of the data's size
    chunks = range(0, total, CHUNK)
    for lo in chunks:
        x_all[lo:lo + CHUNK][rng.random((min(CHUNK, total - lo), P)) >= 0.25] = 0.0  # ~4 of 16 features non-zero
    proj = rng.standard_normal((P, K))
    y_all = np.empty(total, np.int64)
    for lo in chunks:
        x = x_all[lo:lo + CHUNK]
        y_all[lo:lo + CHUNK] = np.argmax(signal * (x @ proj) + rng.gumbel(size=(len(x), K)), axis=1)
    cuts = np.cumsum(lengths)[:-1]
    return list(np.split(x_all, cuts)), list(np.split(y_all, cuts))


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _rss_mb() -> float:
    """The resident set size now (Linux), the baseline: a high-water mark would hide what the data's
    creation allocated and freed."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return _maxrss_mb()


def child(n_nodes: int, fit: bool = True, engine_mode: bool = False, storage: dict | None = None,
          epochs: int = 3) -> dict:
    """One measurement in this (fresh) process (``storage``: the ``edge_storage`` keywords, None: the default)."""
    from crflearn.graphs import make_batch
    from crflearn.models import PairwiseModel
    from crflearn.solvers._idal_setup import build_engine
    from crflearn.solvers.idal import default_rho, fit_idal

    if engine_mode:  # load the compiled kernels (~75 MB, whatever the size) before the baseline
        small, _ = make_batch(*make_chains(100))
        warm = build_engine(small, PairwiseModel(K, P, fit_intercept=True), alpha=1e-3, kappa=1.0, rho=1.0,
                            entropy="gini", loss_augmented=False, warm=None, rng=np.random.default_rng(0),
                            inner_epochs=1, sampling="uniform", **(storage or {}))
        warm.step()
        warm.certify()
    X, y = make_chains(n_nodes)
    base = _rss_mb()
    t0 = time.perf_counter()
    batch, _ = make_batch(X, y)
    t_batch = time.perf_counter() - t0
    del X, y
    model = PairwiseModel(K, P, fit_intercept=True)
    alpha = 1e-3
    t0 = time.perf_counter()
    rho = default_rho(batch, model, alpha)
    t_rho = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = build_engine(batch, model, alpha=alpha, kappa=1.0, rho=rho, entropy="gini", loss_augmented=False,
                          warm=None, rng=np.random.default_rng(0), inner_epochs=1, sampling="uniform",
                          **(storage or {}))
    t_setup = time.perf_counter() - t0
    setup_peak = _maxrss_mb() - base
    if fit and engine_mode:
        return _engine_fit(engine, batch, model, base, setup_peak, epochs, dict(make_batch_s=t_batch,
                                                                                  default_rho_s=t_rho, setup_s=t_setup))
    del engine
    gc.collect()
    if not fit:
        return dict(n_nodes=int(batch.n_nodes), setup_peak_mb=setup_peak, peak_mb=np.nan,
                    bytes_per_node=setup_peak * 2 ** 20 / batch.n_nodes, make_batch_s=t_batch,
                    default_rho_s=t_rho, setup_s=t_setup, epoch_s=np.nan, fit_s=np.nan, w_norm=np.nan)
    t0 = time.perf_counter()
    res = fit_idal(batch, model, alpha=alpha, max_iter=3, tol=0, random_state=0)
    t_fit = time.perf_counter() - t0
    peak = _maxrss_mb() - base
    times = np.diff(np.concatenate([[0.0], np.asarray(res.history["time"], dtype=float)]))
    return dict(n_nodes=int(batch.n_nodes), setup_peak_mb=setup_peak, peak_mb=peak,
                bytes_per_node=peak * 2 ** 20 / batch.n_nodes,
                make_batch_s=t_batch, default_rho_s=t_rho, setup_s=t_setup, epoch_s=float(np.median(times)),
                fit_s=t_fit, w_norm=float(np.linalg.norm(res.w)))


def _engine_fit(engine, batch, model, base: float, setup_peak: float, epochs: int, times: dict) -> dict:
    """``epochs`` x (``step()``, ``certify()``) on a built engine; its peak memory and step times."""
    wall, cpu = [], []
    t_fit = time.perf_counter()
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        engine.step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        row = engine.certify()
    t_fit = time.perf_counter() - t_fit
    peak = _maxrss_mb() - base
    return dict(n_nodes=int(batch.n_nodes), setup_peak_mb=setup_peak, peak_mb=peak,
                bytes_per_node=peak * 2 ** 20 / batch.n_nodes, epoch_s=float(np.median(wall)),
                cpu_s=float(np.median(cpu)), fit_s=t_fit, gap=float(row["gap"] / abs(row["primal"])),
                w_norm=float(np.linalg.norm(model.from_kernel(*engine.weights))), **times)


def _peak_reset() -> dict:
    """Reset this process's peak resident size (Linux ``clear_refs`` 5) and return its pid and resident MB."""
    import os

    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:  # an old kernel or no permission: the peak then includes what came before
        reset = False
    return {"pid": os.getpid(), "rss_mb": _rss_mb(), "reset": reset}


def _peak_mb() -> float:
    """``VmHWM`` of this process (MB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    return _maxrss_mb()


def _warm_worker(storage: dict) -> None:
    """Compile the kernels of a partition on this worker (a 100-node engine, one step and a certificate)."""
    from crflearn.graphs import make_batch
    from crflearn.models import PairwiseModel
    from crflearn.solvers._idal_setup import build_engine

    small, _ = make_batch(*make_chains(100))
    eng = build_engine(small, PairwiseModel(K, P, fit_intercept=True), alpha=1e-3, kappa=1.0, rho=1.0,
                       entropy="gini", loss_augmented=False, warm=None, rng=np.random.default_rng(0), inner_epochs=1,
                       sampling="uniform", **storage)
    eng.step()
    eng.monitor_terms()
    eng.repair_terms()


def dask_child(n_nodes: int, n_workers: int, epochs: int, storage: dict, worker_memory) -> dict:
    """The ``--dask`` measurement of the module docstring, in this (fresh) process."""
    from distributed import Client, LocalCluster

    from crflearn.graphs import make_batch
    from crflearn.models import PairwiseModel
    from crflearn.solvers._idal_setup import default_rho, ground_truth_statistics
    from crflearn.solvers.idal_parallel import (_GlobalWeights, _call, _certify, check_parallel_options,
                                                make_pool)

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit=worker_memory, timeout=120) as cluster, Client(cluster, timeout=120) as client:
        client.run(_warm_worker, storage)
        _warm_worker(storage)
        X, y = make_chains(n_nodes)
        batch, _ = make_batch(X, y)
        del X, y
        base = {"driver": _peak_reset()} | client.run(_peak_reset)
        model = PairwiseModel(K, P, fit_intercept=True)
        alpha = 1e-3
        spec = dict(alpha=alpha, kappa=1.0, rho=default_rho(batch, model, alpha), entropy="gini",
                    loss_augmented=False, inner_epochs=1, sampling="uniform", **storage)
        opts = check_parallel_options(None, n_workers, "dask", batch.n_examples)
        t0 = time.perf_counter()
        pool, cliques = make_pool(batch, model, opts, spec, None, 0, None)
        glob = _GlobalWeights(pool.call("initial"), spec["rho"])
        t_setup = time.perf_counter() - t0
        problem = (ground_truth_statistics(batch, model), alpha, batch.n_examples)
        rounds, certs, best = [], [], -np.inf
        try:
            for _ in range(epochs):
                t0, c0 = time.perf_counter(), time.process_time()
                for k, change in enumerate(_call(pool, glob, "run", *(a.copy() for a in glob.weights), glob.rho, 1,
                                                 retry=False)):
                    glob.add(k, *change)
                rounds.append((time.perf_counter() - t0, time.process_time() - c0))
                t0, c0 = time.perf_counter(), time.process_time()
                pool.commit()
                row = _certify(pool, glob, problem, best, want_repair=True, repair_above=np.inf, force=True)
                best = row["dual"]
                certs.append((time.perf_counter() - t0, time.process_time() - c0))
            peaks = {"driver": _peak_mb()} | client.run(_peak_mb)
        finally:
            pool.close()
    nodes = {"driver": batch.n_nodes} | {addr: sum(len(c[0]) for j, c in enumerate(cliques) if pool.addr[j] == addr)
                                         for addr in peaks if addr != "driver"}
    used = {key: peaks[key] - base[key]["rss_mb"] for key in peaks}
    return dict(n_nodes=int(batch.n_nodes), n_workers=n_workers, setup_s=t_setup,
                driver_mb=used["driver"], driver_peak_mb=peaks["driver"],
                workers=[dict(nodes=nodes[a], mb=used[a], peak_mb=peaks[a], b_per_node=used[a] * 2 ** 20 / nodes[a])
                         for a in sorted(used) if a != "driver"],
                total_b_per_node=sum(used.values()) * 2 ** 20 / batch.n_nodes,
                round_s=float(np.median([r[0] for r in rounds])), round_cpu_s=float(np.median([r[1] for r in rounds])),
                cert_s=float(np.median([c[0] for c in certs])), gap=float(row["gap"] / abs(row["primal"])),
                peak_reset=all(b["reset"] for b in base.values()))


class _MemoryWatch:
    """The lowest ``MemAvailable`` of the machine (MiB) while it runs, sampled every ``period`` seconds."""

    def __init__(self, period: float = 1.0):
        import threading

        self.lowest, self.period, self._stop = np.inf, period, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        self.lowest = min(self.lowest, float(line.split()[1]) / 1024.0)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def dask_fit_child(n_nodes: int, n_workers: int, max_iter: int, storage: dict, worker_memory, *, alpha: float,
                   kappa: float, tol: float, commit: bool, state: bool, signal: float) -> dict:
    """The ``--dask-fit`` measurement of the module docstring, in this (fresh) process."""
    from distributed import Client, LocalCluster

    from crflearn.graphs import make_batch
    from crflearn.models import PairwiseModel
    from crflearn.solvers.idal import fit_idal

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit=worker_memory, timeout=120) as cluster, Client(cluster, timeout=120) as client:
        client.run(_warm_worker, storage)
        X, y = make_chains(n_nodes, signal=signal)
        batch, _ = make_batch(X, y)
        del X, y
        base = {"driver": _peak_reset()} | client.run(_peak_reset)
        model = PairwiseModel(K, P, fit_intercept=True)
        t0, c0 = time.perf_counter(), time.process_time()
        with _MemoryWatch() as watch:
            res = fit_idal(batch, model, alpha=alpha, kappa=kappa, max_iter=max_iter, tol=tol, random_state=0,
                           backend="dask", n_partitions=n_workers, commit_duals=commit, return_state=state,
                           verbose=1, **storage)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peaks = {"driver": _peak_mb()} | client.run(_peak_mb)
    h = res.history
    rel = (np.asarray(h["primal"]) - np.asarray(h["dual"])) / np.abs(h["primal"])
    return dict(n_nodes=int(batch.n_nodes), n_workers=n_workers, wall_s=wall, driver_cpu_s=cpu,
                rounds=int(res.n_iter), converged=bool(res.converged), rel_gap=float(rel[-1]),
                gaps=[(int(i), float(g)) for i, g in zip(h["iteration"], rel)],
                baseline_mb={k: v["rss_mb"] for k, v in base.items()}, peak_mb=peaks,
                peak_total_mb=float(sum(peaks.values())), min_available_mb=float(watch.lowest),
                peak_reset=all(b["reset"] for b in base.values()))


def _print_dask(r: dict) -> None:
    workers = " / ".join(f"{w['mb']:.0f}" for w in r["workers"])
    per_node = " / ".join(f"{w['b_per_node']:.0f}" for w in r["workers"])
    print(f"{r['n_nodes']:>9} {r['driver_mb']:>9.0f} {r['driver_mb'] * 2 ** 20 / r['n_nodes']:>13.0f} {workers:>13} "
          f"{per_node:>15} {r['total_b_per_node']:>13.0f} {r['setup_s']:>8.2f} {r['round_s']:>8.2f} "
          f"{r['round_cpu_s']:>11.2f} {r['cert_s']:>7.2f}   (peaks MB: driver {r['driver_peak_mb']:.0f}, workers "
          f"{' / '.join(str(round(w['peak_mb'])) for w in r['workers'])}; rel gap {r['gap']:.3g}"
          f"{'' if r['peak_reset'] else '; peaks NOT reset'})", flush=True)


def compare_ocr(epochs: int, capacities: list[int]) -> None:
    """The ``--ocr`` comparison of the module docstring."""
    from bench_idal import load_ocr_batches

    from crflearn.models import PairwiseModel
    from crflearn.solvers._idal_setup import build_engine, default_rho

    train, _, k, intercept = load_ocr_batches()
    alpha = 2e-4
    model = PairwiseModel(k, train.n_features, train.n_edge_features, fit_intercept=intercept)
    layouts = {"dense": {}} | {f"compact {m}": dict(edge_storage="compact", edge_capacity=m) for m in capacities}
    engines = {name: build_engine(train, model, alpha=alpha, kappa=1.0, rho=default_rho(train, model, alpha),
                                  entropy="gini", loss_augmented=False, warm=None, rng=np.random.default_rng(0),
                                  inner_epochs=1, sampling="uniform", **kw) for name, kw in layouts.items()}
    print("| layout | epochs | CPU s per step | certified rel gap |\n|---|---|---|---|")
    done = 0
    for target in [t for t in (10, 30, 60, 100, 150) if t <= epochs]:
        cpu = dict.fromkeys(engines, 0.0)
        for _ in range(done, target):
            for name, eng in engines.items():  # interleaved: the same load for every layout
                c0 = time.process_time()
                eng.step()
                cpu[name] += time.process_time() - c0
        for name, eng in engines.items():
            row = eng.certify()
            print(f"| {name} | {done + 1}-{target} | {cpu[name] / (target - done):.3f} | "
                  f"{row['gap'] / abs(row['primal']):.3g} |", flush=True)
        mu_e = engines["dense"].state.mu_e
        print(f"dense blocks after {target} epochs, median / 99th percentile / largest number of entries "
              f"> 1e-6: {_percentiles((mu_e > 1e-6).sum(axis=1))}, != 0: {_percentiles((mu_e != 0).sum(axis=1))}")
        done = target


def _percentiles(counts: np.ndarray) -> str:
    return " / ".join(str(int(v)) for v in np.percentile(counts, [50, 99, 100]))


def profile(n_nodes: int) -> None:
    import cProfile
    import pstats

    from crflearn.graphs import make_batch
    from crflearn.models import PairwiseModel
    from crflearn.solvers._idal_setup import build_engine
    from crflearn.solvers.idal import default_rho

    X, y = make_chains(n_nodes)
    batch, _ = make_batch(X, y)
    model = PairwiseModel(K, P, fit_intercept=True)
    prof = cProfile.Profile()
    prof.enable()
    rho = default_rho(batch, model, 1e-3)
    build_engine(batch, model, alpha=1e-3, kappa=1.0, rho=rho, entropy="gini", loss_augmented=False,
                 warm=None, rng=np.random.default_rng(0), inner_epochs=1, sampling="uniform")
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=int, default=None)
    parser.add_argument("--setup-only", type=int, nargs="*", default=[],
                        help="sizes measured without the fit (B/node then from the setup peak)")
    parser.add_argument("--engine", action="store_true", help="step the engine instead of calling fit_idal")
    parser.add_argument("--epochs", type=int, default=3, help="engine mode: step() + certify() rounds")
    parser.add_argument("--edge-storage", default=None, choices=["dense", "compact"])
    parser.add_argument("--capacity", type=int, default=None, help="slots per edge of the compact layout")
    parser.add_argument("--ocr", type=int, default=None, help="compare the layouts on OCR for this many epochs")
    parser.add_argument("--dask", type=int, default=None, metavar="WORKERS",
                        help="run on a LocalCluster of this many worker processes (compact edges by default)")
    parser.add_argument("--dask-fit", type=int, default=None, metavar="WORKERS",
                        help="a whole fit_idal(backend='dask') on this many worker processes (compact edges)")
    parser.add_argument("--alpha", type=float, default=1e-3, help="--dask-fit: alpha")
    parser.add_argument("--kappa", type=float, default=1.0, help="--dask-fit: kappa")
    parser.add_argument("--tol", type=float, default=1e-3, help="--dask-fit: tol")
    parser.add_argument("--max-iter", type=int, default=100, help="--dask-fit: max_iter")
    parser.add_argument("--no-commit", action="store_true", help="--dask-fit: commit_duals=False")
    parser.add_argument("--no-state", action="store_true", help="--dask-fit: return_state=False")
    parser.add_argument("--signal", type=float, default=1.0, help="--dask-fit: label signal of make_chains")
    parser.add_argument("--worker-memory", default="0", help="--dask: the workers' memory_limit, e.g. 4GiB "
                        "(default 0: none)")
    args = parser.parse_args()
    if args.ocr is not None:
        compare_ocr(args.ocr, [32, 64] if args.capacity is None else [args.capacity])
        return
    if args.dask is not None:
        _main_dask(args)
        return
    if args.dask_fit is not None:
        _main_dask_fit(args)
        return
    storage = None if args.edge_storage is None else dict(edge_storage=args.edge_storage, edge_capacity=args.capacity)
    if storage is not None and not args.engine:
        parser.error("--edge-storage needs --engine (fit_idal does not take it)")
    if args.child is not None:
        print(json.dumps(child(args.child, fit=args.child not in args.setup_only, engine_mode=args.engine,
                               storage=storage, epochs=args.epochs)))
        return
    if args.profile is not None:
        profile(args.profile)
        return
    print(f"{'nodes':>9} {'setup MB':>8} {'peak MB':>8} {'B/node':>7} {'make_batch s':>12} {'default_rho s':>13} "
          f"{'setup s':>8} {'epoch s':>8} {'cpu s':>6} {'fit s':>7}")
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--epochs", str(args.epochs)]
        cmd += ["--engine"] if args.engine else []
        if storage is not None:
            cmd += ["--edge-storage", args.edge_storage] + ([] if args.capacity is None else ["--capacity",
                                                                                               str(args.capacity)])
        if n in args.setup_only:
            cmd += ["--setup-only", str(n)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n_nodes']:>9} {r['setup_peak_mb']:>8.0f} {r['peak_mb']:>8.0f} {r['bytes_per_node']:>7.0f} "
              f"{r['make_batch_s']:>12.2f} "
              f"{r['default_rho_s']:>13.2f} {r['setup_s']:>8.2f} {r['epoch_s']:>8.2f} {r.get('cpu_s', np.nan):>6.2f} "
              f"{r['fit_s']:>7.2f}   (|w| = {r['w_norm']:.17g}, rel gap {r.get('gap', np.nan):.3g})", flush=True)


def _main_dask(args) -> None:
    """``--dask``: one fresh driver process (and cluster) per size."""
    storage = {} if args.edge_storage == "dense" else dict(edge_storage="compact", edge_capacity=args.capacity)
    if args.child is not None:
        limit = int(args.worker_memory) if args.worker_memory.isdigit() else args.worker_memory
        print(json.dumps(dask_child(args.child, args.dask, args.epochs, storage, limit)))
        return
    print(f"{'nodes':>9} {'driver MB':>9} {'driver B/node':>13} {'worker MB':>13} {'worker B/node':>15} "
          f"{'total B/node':>13} {'setup s':>8} {'round s':>8} {'round cpu s':>11} {'cert s':>7}")
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--epochs", str(args.epochs), "--dask", str(args.dask),
               "--worker-memory", str(args.worker_memory)]
        cmd += ["--edge-storage", args.edge_storage or "compact"] + ([] if args.capacity is None else
                                                                     ["--capacity", str(args.capacity)])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        _print_dask(json.loads(out.stdout.strip().splitlines()[-1]))


def _main_dask_fit(args) -> None:
    """``--dask-fit``: one fresh driver process (and cluster) per size; prints its JSON record."""
    storage = dict(edge_storage="compact", edge_capacity=args.capacity or 32)
    limit = int(args.worker_memory) if args.worker_memory.isdigit() else args.worker_memory
    kw = dict(alpha=args.alpha, kappa=args.kappa, tol=args.tol, commit=not args.no_commit, state=not args.no_state,
              signal=args.signal)
    if args.child is not None:
        print(json.dumps(dask_fit_child(args.child, args.dask_fit, args.max_iter, storage, limit, **kw)))
        return
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--dask-fit", str(args.dask_fit), "--max-iter",
               str(args.max_iter), "--worker-memory", str(args.worker_memory), "--capacity", str(storage["edge_capacity"]),
               "--alpha", str(args.alpha), "--kappa", str(args.kappa), "--tol", str(args.tol)]
        cmd += ["--signal", str(args.signal)] + (["--no-commit"] if args.no_commit else []) + (
            ["--no-state"] if args.no_state else [])
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)  # the record is the last line
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
