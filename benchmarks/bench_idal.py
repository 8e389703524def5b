"""Benchmarks of the IDAL solver on OCR (chains) and snakes (loopy grids with edge features).

Usage::

    python benchmarks/bench_idal.py ocr [--alpha A] [--kappa K] [--rho R] [--inner-epochs M] [--max-iter T]
                                        [--entropy gini|gini_otrw|shannon] [--sampling uniform|gap]
    python benchmarks/bench_idal.py snakes [...]
    python benchmarks/bench_idal.py sweep-ocr | sweep-grid
    python benchmarks/bench_idal.py profile-ocr [--alpha A] [--entropy E]   # CPU s per sweep: nodes vs edges,
                                                                            # and the other parts of a step
    python benchmarks/bench_idal.py continuation-ocr --alpha 2e-3 2e-4 --tol 3e-3 1e-3   # alpha continuation

``--n-train N`` keeps the first N training examples. Reports seconds per epoch (solver time, monitoring
excluded), solver seconds until the certified relative gap ``(primal - dual) / |primal|`` of the record
reaches the tolerance, the
monitoring seconds (``monitor_time``), the total CPU and wall seconds of the ``fit_idal`` call (solver,
monitoring, setup: everything) and the test error of Viterbi / max-product predictions with the learned
weights. Run with ``OPENBLAS_NUM_THREADS=1``. Data are read with :mod:`crflearn.datasets`
(``$CRFLEARN_DATA`` or ``../shared/datasets``).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from crflearn.graphs import make_batch
from crflearn.inference import decode_batch
from crflearn.models import PairwiseModel
from crflearn.solvers.idal import fit_idal


def load_ocr_batches(n_train=None):
    """OCR large (the first ``n_train`` training words when given); the model fits an intercept."""
    from crflearn.datasets import load_ocr

    x_tr, y_tr, x_te, y_te = load_ocr(protocol="large")
    train, _ = make_batch(x_tr[:n_train], y_tr[:n_train])
    test, _ = make_batch(x_te, y_te)
    return train, test, 26, True


def load_snake_batches(n_train=None):
    from crflearn.datasets import load_snakes

    data = load_snakes()
    x_tr, y_tr, x_te, y_te = data[:4]
    train, _ = make_batch(x_tr[:n_train], y_tr[:n_train])
    test, _ = make_batch(x_te, y_te)
    k = int(max(train.labels.max(), test.labels.max())) + 1
    return train, test, k, False


def test_error(model, w, test, method="auto"):
    unary, pairwise = model.potentials(w, test)
    pred = decode_batch(unary, pairwise, test.edges, test.node_offsets, test.edge_offsets, method=method)
    return float(np.mean(pred != test.labels))


def relative_gaps(history):
    """``(primal - dual) / |primal|`` per recorded row."""
    return (history["primal"] - history["dual"]) / np.maximum(np.abs(history["primal"]), 1e-12)


def time_to(history, tol):
    ok = np.flatnonzero(relative_gaps(history) <= tol)  # the certified gap: nothing else is needed
    return (float(history["time"][ok[0]]), int(history["iteration"][ok[0]])) if len(ok) else (np.nan, -1)


def run(train, test, k, *, alpha, kappa=1.0, rho=None, inner_epochs=1, max_iter=200, tol=1e-3, seed=0,
        verbose=0, method="auto", loss_augmented=False, rho_schedule="adaptive", entropy="gini", intercept=False,
        sampling="uniform"):
    model = PairwiseModel(k, train.n_features, train.n_edge_features, fit_intercept=intercept)
    # warm-up call so that Numba compilation is not timed
    fit_idal(train.subset([0]), model, alpha=alpha, max_iter=1, tol=0.0, kappa=kappa, entropy=entropy,
             sampling=sampling)
    t0, cpu0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = fit_idal(train, model, alpha=alpha, kappa=kappa, rho=rho, inner_epochs=inner_epochs,
                       max_iter=max_iter, tol=tol, random_state=seed, verbose=verbose,
                       loss_augmented=loss_augmented, rho_schedule=rho_schedule, entropy=entropy,
                       sampling=sampling)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    h = res.history
    per_epoch = float(h["time"][-1] / (h["iteration"][-1] * inner_epochs))
    t_tol, it_tol = time_to(h, tol)
    err = test_error(model, res.w, test, method)
    rel_gap = float(relative_gaps(h)[-1])
    monitor = float(h["monitor_time"][-1]) if "monitor_time" in h else np.nan
    residual = float(h["residual"][-1]) if "residual" in h else np.nan
    return dict(alpha=alpha, kappa=kappa, rho=res.info.get("rho", np.nan), schedule=rho_schedule,
                inner_epochs=inner_epochs, epochs=int(h["iteration"][-1]),
                sec_per_epoch=per_epoch, solver_time=float(h["time"][-1]), monitor=monitor, cpu=cpu, wall=wall,
                t_tol=t_tol, it_tol=it_tol, rel_gap=rel_gap, residual=residual, test_error=err,
                converged=res.converged)


def fmt(r):
    return (f"| {r['alpha']:.2e} | {r['kappa']:g} | {r['schedule']} | {r['rho']:.3g} | {r['inner_epochs']} "
            f"| {r['epochs']} | "
            f"{r['sec_per_epoch']:.3f} | {r['t_tol']:.1f} | {r['solver_time']:.1f} | {r['monitor']:.1f} | "
            f"{r['cpu']:.1f} | {r['wall']:.1f} | {r['rel_gap']:.1e} | {r['residual']:.1e} | "
            f"{100 * r['test_error']:.2f} |")


def profile_sweeps(train, k, intercept, alpha, entropy, warm_epochs=30, repeats=3):
    """CPU seconds of one IDAL sweep over all cliques, the nodes only and the edges only (after
    ``warm_epochs`` outer steps, so that the blocks are as sparse as in a real fit)."""
    from crflearn._kernels.idal import idal_sweep
    from crflearn.solvers._idal_setup import build_engine, default_rho

    model = PairwiseModel(k, train.n_features, train.n_edge_features, fit_intercept=intercept)
    eng = build_engine(train, model, alpha=alpha, kappa=1.0, rho=default_rho(train, model, alpha), entropy=entropy,
                       loss_augmented=False, warm=None, rng=np.random.default_rng(0), inner_epochs=1,
                       sampling="uniform")
    for _ in range(warm_epochs):
        eng.step()
    order = eng.next_order().copy()
    parts = {"all cliques": order, "nodes": order[order < eng.n_nodes], "edges": order[order >= eng.n_nodes]}
    print(f"| {entropy} | part | cliques | CPU s per sweep |\n|---|---|---:|---:|")
    for name, part in parts.items():
        t0 = time.process_time()
        for _ in range(repeats):
            idal_sweep(part, eng.graph, eng.feats, eng.weights, eng.state, eng.ent, eng.rho, eng.inv_lam_n,
                       eng.tau_e, eng.scr)
        print(f"| {entropy} | {name} | {len(part)} | {(time.process_time() - t0) / repeats:.3f} |", flush=True)
    _profile_step(eng, repeats)


def _profile_step(eng, repeats):
    """CPU seconds per call of the other parts of an outer step and of a certificate row."""
    from crflearn._kernels.idal import multiplier_update, zeta_from_blocks

    parts = {
        "sweep order (next_order)": eng.next_order,
        "zeta = xi + rho A mu from the edge blocks (zeta_from_blocks)":
            lambda: zeta_from_blocks(eng.graph, eng.state, eng.rho, eng.outer),
        "multiplier step, A mu from zeta - xi (multiplier_update)":
            lambda: multiplier_update(eng.state, eng.rho, 0.0, eng.outer),
        "certificate: upper bound pass (monitor_terms)": eng.monitor_terms,
        "certificate: lower bound repair (repair_terms)": eng.repair_terms,
    }
    print("\n| part | CPU s per call |\n|---|---:|")
    for name, fn in parts.items():
        t0 = time.process_time()
        for _ in range(repeats):
            fn()
        print(f"| {name} | {(time.process_time() - t0) / repeats:.4f} |", flush=True)


def continuation(train, test, k, intercept, alphas, tols, max_iter):
    """Fit at each alpha of ``alphas`` in turn (to its tolerance in ``tols``), warm-starting from the last."""
    model = PairwiseModel(k, train.n_features, train.n_edge_features, fit_intercept=intercept)
    fit_idal(train.subset([0]), model, alpha=alphas[-1], max_iter=2, tol=0.0)  # compile outside the clock
    state, total = None, 0
    cpu0 = time.process_time()
    print("| alpha | tol | epochs | first certified rel. gap | final rel. gap | cumulative CPU s |\n|---|---|---:|---:|---:|---:|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for alpha, tol in zip(alphas, tols):
            res = fit_idal(train, model, alpha=alpha, tol=tol, max_iter=max_iter, random_state=0, warm_start=state)
            state = res.state
            # a warm-started history continues the previous one: keep this stage's rows
            mine = res.history["iteration"] > total
            gaps = relative_gaps(res.history)[mine]
            epochs = int(res.history["iteration"][-1]) - total
            total += epochs
            print(f"| {alpha:.1e} | {tol:.0e} | {epochs} | {gaps[0]:.3g} | {gaps[-1]:.3g} | "
                  f"{time.process_time() - cpu0:.1f} |", flush=True)
    print(f"total epochs {total}, CPU {time.process_time() - cpu0:.1f} s, "
          f"test error {100 * test_error(model, res.w, test):.2f} %")


HEADER = ("| alpha | kappa | rho schedule | final rho | inner | epochs | s/epoch | solver s to tol | solver s "
          "| monitor s | fit CPU s | fit wall s | final rel gap | residual | test err % |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["ocr", "snakes", "sweep-ocr", "sweep-grid", "profile-ocr",
                                         "continuation-ocr"])
    parser.add_argument("--n-train", type=int, default=None, help="use the first N training examples")
    parser.add_argument("--alpha", type=float, nargs="*", default=None)
    parser.add_argument("--kappa", type=float, nargs="*", default=[1.0])
    parser.add_argument("--rho", type=float, nargs="*", default=[None])
    parser.add_argument("--rho-factor", type=float, nargs="*", default=None,
                        help="rho as multiples of the default")
    parser.add_argument("--inner-epochs", type=int, nargs="*", default=[1])
    parser.add_argument("--rho-schedule", nargs="*", default=["adaptive"], choices=["adaptive", "fixed"])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--tol", type=float, nargs="*", default=[1e-3],
                        help="tolerance (continuation-ocr: one per alpha)")
    parser.add_argument("--loss-augmented", action="store_true")
    parser.add_argument("--entropy", default="gini", help="IDAL entropy: gini, gini_otrw or shannon (if offered)")
    parser.add_argument("--sampling", default="uniform", choices=["uniform", "gap"], help="IDAL clique sampling")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)

    if args.task in ("ocr", "sweep-ocr", "profile-ocr", "continuation-ocr"):
        train, test, k, intercept = load_ocr_batches(args.n_train)
    else:
        train, test, k, intercept = load_snake_batches(args.n_train)
    method = "auto"
    alphas = args.alpha or [1.0 / train.n_examples]
    if args.task == "profile-ocr":
        return profile_sweeps(train, k, intercept, alphas[0], args.entropy)
    if args.task == "continuation-ocr":
        if len(args.tol) != len(alphas):
            parser.error("continuation-ocr needs one --tol per --alpha")
        return continuation(train, test, k, intercept, alphas, args.tol, args.max_iter)
    args.tol = args.tol[0]
    print(f"# {args.task}: {train.n_examples} train examples, {train.n_nodes} nodes, {train.n_edges} edges, "
          f"K={k}, p={train.n_features}, q={train.n_edge_features}")
    print(HEADER)
    try:
        from crflearn.solvers._idal_setup import default_rho
    except ImportError:  # before the IDAL split
        from crflearn.solvers.idal import default_rho

    model = PairwiseModel(k, train.n_features, train.n_edge_features, fit_intercept=intercept)
    for alpha in alphas:
        for kappa in args.kappa:
            rhos = args.rho
            if args.rho_factor:
                rhos = [f * default_rho(train, model, alpha, kappa) for f in args.rho_factor]
            for rho in rhos:
                for m in args.inner_epochs:
                    for schedule in args.rho_schedule:
                        r = run(train, test, k, alpha=alpha, kappa=kappa, rho=rho, inner_epochs=m,
                                max_iter=args.max_iter, tol=args.tol, verbose=args.verbose, method=method,
                                loss_augmented=args.loss_augmented, rho_schedule=schedule, entropy=args.entropy,
                                sampling=args.sampling,
                                intercept=intercept)
                        print(fmt(r), flush=True)


if __name__ == "__main__":
    main()
