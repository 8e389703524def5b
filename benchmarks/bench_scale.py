"""Peak memory and setup time per node of serial IDAL on a synthetic chain set (issue 11, items 5-6).

Usage::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/bench_scale.py [--sizes 100000 300000 1000000] [--profile N]
        [--edge-storage dense|compact] [--capacity M] [--engine] [--epochs 3] [--ocr EPOCHS]

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
``step()`` + ``certify()`` (what a fit does, without building the result: with compact edge marginals
``fit_idal``'s result state densifies them today); ``epoch s`` is then the wall time of a ``step()``
and ``cpu s`` its CPU time. ``--edge-storage compact --capacity M`` runs with the compact edge
marginals of :mod:`crflearn._kernels.idal_compact` (engine mode only).

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


def make_chains(n_nodes: int, seed: int = 0):
    """About ``n_nodes`` nodes as chains of 8-10 nodes: a list of (n, P) arrays and label arrays."""
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
        y_all[lo:lo + CHUNK] = np.argmax(x @ proj + rng.gumbel(size=(len(x), K)), axis=1)
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
    return dict(n_nodes=int(batch.n_nodes), setup_peak_mb=setup_peak, peak_mb=peak, bytes_per_node=peak * 2 ** 20 / batch.n_nodes,
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
    args = parser.parse_args()
    if args.ocr is not None:
        compare_ocr(args.ocr, [32, 64] if args.capacity is None else [args.capacity])
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
        print(f"{r['n_nodes']:>9} {r['setup_peak_mb']:>8.0f} {r['peak_mb']:>8.0f} {r['bytes_per_node']:>7.0f} {r['make_batch_s']:>12.2f} "
              f"{r['default_rho_s']:>13.2f} {r['setup_s']:>8.2f} {r['epoch_s']:>8.2f} {r.get('cpu_s', np.nan):>6.2f} "
              f"{r['fit_s']:>7.2f}   (|w| = {r['w_norm']:.17g}, rel gap {r.get('gap', np.nan):.3g})", flush=True)


if __name__ == "__main__":
    main()
