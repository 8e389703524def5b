"""Benchmark the batched inference kernels on the OCR training set (large protocol).

Forward-backward (marginals + log-partition) and Viterbi over all 6,251 training
words (folds 1..9, ~47k letters, K = 26) with random potentials
(``unary = pixels @ W``, shared random ``pairwise``), comparing the Numba batch
kernels of :mod:`crflearn.inference` with a plain NumPy implementation (loop over
words, vectorised over the states) measured in the same run. The NumPy results
are also used to check the kernels' output.

Usage::

    python benchmarks/bench_inference.py [--data PATH] [--repeats 5] [--numpy-repeats 1] [--snakes]

Prints a markdown table: wall-clock seconds are the best of ``--repeats`` runs
(first-call JIT compilation excluded), with the CPU seconds of that run (a
figure less sensitive to other processes sharing the machine).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from crflearn.graphs import chain_edges, grid_edges
from crflearn.inference import decode_batch, infer_batch, make_schedule, map_inference_batch


def find_data(path: str | None, name: str = "ocr_letters.npz") -> Path:
    candidates = [Path(path)] if path else []
    if os.environ.get("CRFLEARN_DATA"):
        candidates.append(Path(os.environ["CRFLEARN_DATA"]))
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    for c in candidates:
        f = c / name if c.is_dir() else c.parent / name
        if f.is_file():
            return f
    raise SystemExit(f"{name} not found: pass --data or set CRFLEARN_DATA")


def load_ocr_train(path: Path):
    data = np.load(path)
    lengths = data["lengths"].astype(np.int64)
    folds = data["folds"]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    keep = np.flatnonzero(folds != 0)  # large protocol: train on folds 1..9
    rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in keep])
    pixels = data["pixels"][rows].astype(np.float64)
    lens = lengths[keep]
    node_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    edge_offsets = np.concatenate([[0], np.cumsum(lens - 1)]).astype(np.int64)
    edges = np.concatenate([chain_edges(int(n)) + o for n, o in zip(lens, node_offsets[:-1])])
    return pixels, node_offsets, edges, edge_offsets


def numpy_forward_backward(unary, pairwise, node_offsets):
    """Per-word log-space forward-backward, vectorised over the states; returns marginals, log Z, summed edges."""
    node = np.empty_like(unary)
    logz = np.empty(len(node_offsets) - 1)
    edge_sum = np.zeros_like(pairwise)
    for i in range(len(node_offsets) - 1):
        u = unary[node_offsets[i]:node_offsets[i + 1]]
        n = len(u)
        alpha = np.empty_like(u)
        beta = np.zeros_like(u)
        alpha[0] = u[0]
        for t in range(1, n):
            alpha[t] = u[t] + logsumexp(alpha[t - 1][:, None] + pairwise, axis=0)
        for t in range(n - 2, -1, -1):
            beta[t] = logsumexp(pairwise + (u[t + 1] + beta[t + 1])[None, :], axis=1)
        lz = logsumexp(alpha[-1])
        logz[i] = lz
        node[node_offsets[i]:node_offsets[i + 1]] = np.exp(alpha + beta - lz)
        for t in range(n - 1):
            edge_sum += np.exp(alpha[t][:, None] + pairwise + (u[t + 1] + beta[t + 1])[None, :] - lz)
    return node, logz, edge_sum


def numpy_viterbi(unary, pairwise, node_offsets):
    labels = np.empty(len(unary), dtype=np.int64)
    for i in range(len(node_offsets) - 1):
        u = unary[node_offsets[i]:node_offsets[i + 1]]
        n = len(u)
        delta = u[0].copy()
        back = np.empty((n, u.shape[1]), dtype=np.int64)
        for t in range(1, n):
            scores = delta[:, None] + pairwise
            back[t] = scores.argmax(axis=0)
            delta = scores.max(axis=0) + u[t]
        y = np.empty(n, dtype=np.int64)
        y[-1] = delta.argmax()
        for t in range(n - 1, 0, -1):
            y[t - 1] = back[t, y[t]]
        labels[node_offsets[i]:node_offsets[i + 1]] = y
    return labels


def best_of(fn, repeats):
    """Best wall-clock seconds over ``repeats`` runs, the CPU seconds of that run, and the output."""
    best, best_cpu = np.inf, np.inf
    out = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    return (best, best_cpu), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--numpy-repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snakes", action="store_true", help="also time loopy inference on snakes.npz")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    pixels, no, edges, eo = load_ocr_train(find_data(args.data))
    k = 26
    rng = np.random.default_rng(args.seed)
    unary = np.ascontiguousarray(pixels @ rng.normal(scale=0.1, size=(pixels.shape[1], k)))
    pairwise = rng.normal(scale=1.0, size=(k, k))
    print(f"OCR train (large protocol): {len(no) - 1} words, {len(unary)} letters, {len(edges)} edges, K={k}")

    make_schedule(edges[:eo[2]], no[:3], eo[:3])  # warm-up (JIT cache load)
    t_sched, sched = best_of(lambda: make_schedule(edges, no, eo), args.repeats)
    # warm-up (JIT compilation / cache load)
    infer_batch(unary, pairwise, edges, no, eo, edge_marginals="sum", schedule=sched)
    infer_batch(unary, pairwise, edges, no, eo, edge_marginals="full", schedule=sched)
    decode_batch(unary, pairwise, edges, no, eo, schedule=sched)

    r = args.repeats
    t_sum, res_sum = best_of(lambda: infer_batch(unary, pairwise, edges, no, eo, edge_marginals="sum",
                                                 schedule=sched), r)
    t_none, _ = best_of(lambda: infer_batch(unary, pairwise, edges, no, eo, edge_marginals="none",
                                            schedule=sched), r)
    t_full, _ = best_of(lambda: infer_batch(unary, pairwise, edges, no, eo, edge_marginals="full",
                                            schedule=sched), r)
    t_nosched, _ = best_of(lambda: infer_batch(unary, pairwise, edges, no, eo, edge_marginals="sum"), r)
    t_vit, labels = best_of(lambda: decode_batch(unary, pairwise, edges, no, eo, schedule=sched), r)

    t_np_fb, (np_node, np_logz, np_edge) = best_of(lambda: numpy_forward_backward(unary, pairwise, no),
                                                   args.numpy_repeats)
    t_np_vit, np_labels = best_of(lambda: numpy_viterbi(unary, pairwise, no), args.numpy_repeats)

    err_node = np.abs(res_sum.node_marginals - np_node).max()
    err_logz = np.abs(res_sum.log_partition - np_logz).max()
    err_edge = np.abs(res_sum.edge_marginals - np_edge).max() / max(1.0, np.abs(np_edge).max())
    agree = np.mean(labels == np_labels)

    print(f"load average at start: {load[0]:.1f} (1 min) on {os.cpu_count()} cores")
    print()
    print("| pass (whole OCR train set) | crflearn Numba wall (s) | its CPU (s) | NumPy loop wall (s) "
          "| speed-up (wall) |")
    print("| --- | ---: | ---: | ---: | ---: |")

    def row(name, t, base=None):
        extra = f" {base[0]:.3f} | {base[0] / t[0]:.0f}x |" if base else " | |"
        print(f"| {name} | {t[0]:.3f} | {t[1]:.3f} |{extra}")

    row("sum-product, edge_marginals='sum' (schedule reused)", t_sum, t_np_fb)
    row("sum-product, edge_marginals='none'", t_none)
    row("sum-product, edge_marginals='full' (M,K,K)", t_full)
    row("sum-product 'sum', schedule rebuilt each call", t_nosched)
    row("Viterbi (decode_batch, schedule reused)", t_vit, t_np_vit)
    row("make_schedule (once)", t_sched)
    print()
    print(f"max |marginal diff| = {err_node:.1e}, max |log Z diff| = {err_logz:.1e}, "
          f"relative summed-edge diff = {err_edge:.1e}, Viterbi label agreement = {agree:.4f}")

    if args.snakes:
        bench_snakes(args)


def bench_snakes(args):
    """Loopy inference over the 200 snakes training grids (4-connected, K = 11), random potentials."""
    data = np.load(find_data(args.data, "snakes.npz"))
    shapes = data["shapes_train"]
    x = data["x_train"].astype(np.float64) / 255.0
    parts, no, eo = [], [0], [0]
    for h, w in shapes:
        e = grid_edges(int(h), int(w))
        parts.append(e + no[-1])
        no.append(no[-1] + int(h) * int(w))
        eo.append(eo[-1] + len(e))
    edges, no, eo = np.concatenate(parts), np.array(no), np.array(eo)
    k = 11
    rng = np.random.default_rng(args.seed)
    unary = np.ascontiguousarray(x @ rng.normal(size=(3, k)))
    pairwise = rng.normal(scale=0.5, size=(len(edges), k, k))
    sched = make_schedule(edges, no, eo)
    sched.edge_appearance()
    print()
    print(f"snakes train: {len(no) - 1} grids, {len(unary)} cells, {len(edges)} edges, K={k}, "
          "random per-edge pairwise")
    print()
    print("| loopy pass (whole snakes train set) | wall (s) | CPU (s) | mean sweeps | note |")
    print("| --- | ---: | ---: | ---: | --- |")
    for method in ("trw", "bp"):
        infer_batch(unary, pairwise, edges, no, eo, method=method, schedule=sched, max_iter=2)
        t, res = best_of(lambda: infer_batch(unary, pairwise, edges, no, eo, method=method, schedule=sched,
                                             edge_marginals="sum", tol=1e-6), max(1, args.repeats // 2))
        print(f"| {method} marginals (tol=1e-6, damping=0.5) | {t[0]:.3f} | {t[1]:.3f} | "
              f"{res.n_iter.mean():.1f} | converged {res.converged.mean():.0%} |")
    for method in ("trws", "maxproduct"):
        map_inference_batch(unary, pairwise, edges, no, eo, method=method, schedule=sched, max_iter=2)
        t, res = best_of(lambda: map_inference_batch(unary, pairwise, edges, no, eo, method=method,
                                                     schedule=sched), max(1, args.repeats // 2))
        gap = np.mean(res.bounds - res.scores)
        print(f"| {method} MAP (max_iter=100) | {t[0]:.3f} | {t[1]:.3f} | | mean bound - score {gap:.2f} |")


if __name__ == "__main__":
    main()
