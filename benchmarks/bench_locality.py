"""Locality of the IDAL sweep order inside one huge example (issue 11, item 5).

Usage::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/bench_locality.py sweep [--grid 1000] [--chain 1000000] [--k 4] [--repeats 3]
    OPENBLAS_NUM_THREADS=1 ... python benchmarks/bench_locality.py converge [--grid 150] [--k 4] [--tol 1e-3]

``sweep``: one Gini engine per problem (a ``grid x grid`` 4-connected grid, a chain of ``--chain`` nodes;
``K = --k`` states, p = 16 features with ~4 non-zeros per node plus an intercept, one example each),
5 warm-up steps, then CPU seconds per sweep over all cliques (``time.process_time``; per node = over the
number of nodes) in these orders, interleaved, ``--repeats`` times each (min and median):

* ``random``: every clique of the example in random order (the order before blocking: ``clique_order``
  without ``edges``);
* ``engine``: the order of :meth:`IdalEngine.next_order` (``clique_order`` with the edges and its defaults:
  blocks of ``min(LOCAL_BLOCK, cliques // MIN_BLOCKS)`` cliques, or the random order when fewer than
  ``MIN_BLOCK``);
* ``blocks B``: ``clique_order`` with blocks of ``B`` cliques whatever their number (``block=B, min_blocks=1,
  min_block=1``);
* ``sequential``: nodes then edges in index order (no randomness, a lower bound).

``converge``: epochs and CPU seconds of ``fit_idal`` (Gini, ``--alpha``, seed 0) to a certified relative gap
``--tol`` on one example (``--grid`` or ``--chain``) with the orders above (``sequential`` excluded),
certified every 4 epochs.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

P = 16


def make_problem(kind: str, size: int, k: int, seed: int = 0):
    """One example: a ``size x size`` grid or a chain of ``size`` nodes; returns its GraphBatch."""
    from crflearn.graphs import chain_edges, grid_edges, make_batch

    rng = np.random.default_rng(seed)
    edges = grid_edges(size, size) if kind == "grid" else chain_edges(size)
    n = size * size if kind == "grid" else size
    x = rng.standard_normal((n, P))
    x[rng.random((n, P)) >= 0.25] = 0.0
    y = np.argmax(x @ rng.standard_normal((P, k)) + rng.gumbel(size=(n, k)), axis=1)
    batch, _ = make_batch([(x, edges)], [y])
    return batch


def make_engine(batch, k: int, alpha: float = 1e-3):
    from crflearn.models import PairwiseModel
    from crflearn.solvers._idal_setup import build_engine, default_rho

    model = PairwiseModel(k, P, fit_intercept=True)
    return build_engine(batch, model, alpha=alpha, kappa=1.0, rho=default_rho(batch, model, alpha), entropy="gini",
                        loss_augmented=False, warm=None, rng=np.random.default_rng(0), inner_epochs=1,
                        sampling="uniform")


def orders(eng, rng, blocks):
    """``{name: order}`` for one sweep (see the module docstring)."""
    from crflearn._kernels.idal import clique_order

    keys = rng.random(eng.n_cliques)
    perm = np.zeros(1, np.int64)
    args = (perm, keys, eng.offsets[0], eng.offsets[1], eng.n_nodes)
    out = {"random": np.empty(eng.n_cliques, np.int64), "engine": np.empty(eng.n_cliques, np.int64)}
    clique_order(*args, out["random"])
    clique_order(*args, out["engine"], eng.graph.edges)
    for b in blocks:
        out[f"blocks {b}"] = np.empty(eng.n_cliques, np.int64)
        clique_order(*args, out[f"blocks {b}"], eng.graph.edges, b, 1, 1)
    out["sequential"] = np.arange(eng.n_cliques, dtype=np.int64)
    return out


def sweep_table(kind: str, size: int, k: int, repeats: int, blocks) -> None:
    batch = make_problem(kind, size, k)
    eng = make_engine(batch, k)
    for _ in range(5):
        eng.step()
    rng = np.random.default_rng(1)
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, order in orders(eng, rng, blocks).items():
            t0 = time.process_time()
            eng.sweep(order)
            times.setdefault(name, []).append(time.process_time() - t0)
        eng.multiplier_step()
    for name, t in times.items():
        print(f"| {kind} {size if kind == 'chain' else f'{size}x{size}'} | K={k} | {eng.n_nodes} | {name} | "
              f"{1e6 * min(t) / eng.n_nodes:.2f} | {1e6 * np.median(t) / eng.n_nodes:.2f} |", flush=True)


def converge(kind: str, size: int, k: int, tol: float, max_iter: int, blocks, alpha: float) -> None:
    from sklearn.exceptions import ConvergenceWarning

    from crflearn._kernels import idal_engine
    from crflearn._kernels.idal import clique_order
    from crflearn.models import PairwiseModel
    from crflearn.solvers.idal import fit_idal

    batch = make_problem(kind, size, k)
    model = PairwiseModel(k, P, fit_intercept=True)
    engine_order = idal_engine.IdalEngine.next_order

    def make_order(block):
        def next_order(self):  # the engine's random stream: a permutation of the examples, then the keys
            perm = self.rng.permutation(len(self.offsets[0]) - 1).astype(np.int64)
            keys = self.rng.random(self.n_cliques)
            args = (perm, keys, self.offsets[0], self.offsets[1], self.n_nodes, self.order)
            if block is None:  # the order before blocking: clique_order without the edges
                clique_order(*args)
            elif block == 0:  # the engine's own rule
                clique_order(*args, self.graph.edges)
            else:  # blocks of ``block`` cliques whatever their number
                clique_order(*args, self.graph.edges, block, 1, 1)
            return self.order
        return next_order

    fit_idal(make_problem("grid", 10, k), model, alpha=1e-3, max_iter=2, tol=0.0)  # compile
    for block in [None, 0] + list(blocks):
        idal_engine.IdalEngine.next_order = make_order(block)
        try:
            t0 = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = fit_idal(batch, model, alpha=alpha, max_iter=max_iter, tol=tol, random_state=0, monitor_every=4)
            cpu = time.process_time() - t0
        finally:
            idal_engine.IdalEngine.next_order = engine_order
        h = res.history
        rel = (h["primal"] - h["dual"]) / np.abs(h["primal"])
        name = "random" if block is None else "engine" if block == 0 else f"blocks {block}"
        print(f"| {kind} {size} | K={k} | {name} | {int(h['iteration'][-1])} | {res.converged} | {rel[-1]:.2e} | "
              f"{h['primal'][-1]:.8g} | {h['dual'][-1]:.8g} | {cpu:.1f} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["sweep", "converge"])
    parser.add_argument("--grid", type=int, default=None)
    parser.add_argument("--chain", type=int, default=None)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, nargs="*", default=[16, 64, 256, 1024])
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.5, help="L2 strength of converge (one example: n = 1)")
    parser.add_argument("--max-iter", type=int, default=400)
    args = parser.parse_args(argv)
    print(f"# {os.popen('uptime').read().strip()}")
    if args.task == "sweep":
        print("| problem | K | nodes | order | CPU us/node (min) | CPU us/node (median) |\n"
              "|---|---|---:|---|---:|---:|")
        sweep_table("grid", args.grid or 1000, args.k, args.repeats, args.blocks)
        sweep_table("chain", args.chain or 1000000, args.k, args.repeats, args.blocks)
    else:
        print("| problem | K | order | epochs | converged | final rel gap | primal | dual | fit CPU s |\n"
              "|---|---|---|---:|---|---:|---:|---:|---:|")
        if args.chain:
            converge("chain", args.chain, args.k, args.tol, args.max_iter, args.blocks, args.alpha)
        else:
            converge("grid", args.grid or 150, args.k, args.tol, args.max_iter, args.blocks, args.alpha)


if __name__ == "__main__":
    main()
