"""Benchmark: structured losses forward+backward, CPU vs CUDA, several batch sizes.

Rows:

* ``chain-nll``: :func:`crflearn.neural.chain_crf_nll` on ``B`` sequences of length 14,
  26 states (OCR-sized), shared transitions;
* ``grid-trw``: :func:`crflearn.neural.trw_nll_loss` on ``B`` 10x10 4-connected grids with
  11 states (snakes-sized), potentials from a small CNN, one SGD step per call (so the
  potentials move as in training); cold start (messages from zero, run to ``tol``) and warm
  start (messages of the previous call, as ``NeuralCRF`` trains);
* ``cnn-forward``: the forward pass of that CNN (3 -> 16 -> 16 -> 11 channels, 3x3 kernels),
  the reference for the ratio ``loss / cnn``.

Timings are medians over ``--repeats`` runs after one warm-up; CUDA timings synchronise
before reading the clock. CUDA rows are skipped (and say so) when no GPU is available.

Usage::

    python benchmarks/bench_neural_gpu.py --batch-sizes 1 16 64 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from crflearn.graphs import grid_edges
from crflearn.neural import chain_crf_nll, make_loopy_graph, trw_nll_loss

K_GRID, SIDE, K_CHAIN, LENGTH = 11, 10, 26, 14


def _timer(device, fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cnn(device):
    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, K_GRID, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.3, 0.3, generator=gen)
    return net.to(device)


def _grid_problem(batch, device):
    edges1 = grid_edges(SIDE, SIDE)
    n1 = SIDE * SIDE
    edges = np.concatenate([edges1 + i * n1 for i in range(batch)])
    graph = make_loopy_graph(edges, batch * n1, np.arange(batch + 1) * n1, np.arange(batch + 1) * len(edges1),
                             device=device)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, SIDE, SIDE, generator=gen).to(device)
    labels = torch.randint(0, K_GRID, (batch * n1,), generator=gen).to(device)
    pairwise = (0.5 * torch.randn(K_GRID, K_GRID, generator=gen)).to(device).requires_grad_()
    return graph, images, labels, pairwise


def grid_rows(batch, device, repeats, tol):
    net = _cnn(device)
    graph, images, labels, pairwise = _grid_problem(batch, device)
    check = 0 if device.type == "cuda" else 5
    cnn = _timer(device, lambda: net(images), repeats)
    opt = torch.optim.SGD(list(net.parameters()) + [pairwise], lr=0.01)
    state = {}

    def loss_step(warm):
        unary = net(images).permute(0, 2, 3, 1).reshape(-1, K_GRID)
        out = []
        loss = trw_nll_loss(unary, pairwise, graph, labels, tol=tol, max_iter=200, check_every=check, warn=False,
                            out=out, init_messages=state.get("messages") if warm else None)
        loss.backward()
        opt.step()  # the potentials move between calls, as in training
        opt.zero_grad()
        state["messages"], state["n_iter"] = out[0].messages, out[0].n_iter

    cold = _timer(device, lambda: loss_step(False), repeats)
    cold_iter = state["n_iter"]
    warm = _timer(device, lambda: loss_step(True), repeats)
    return [("cnn-forward", batch, device.type, cnn, 1.0, ""),
            ("grid-trw cold (cnn+loss, fwd+bwd)", batch, device.type, cold, cold / cnn, f"{cold_iter} it"),
            ("grid-trw warm (cnn+loss, fwd+bwd)", batch, device.type, warm, warm / cnn, f"{state['n_iter']} it")]


def chain_rows(batch, device, repeats):
    gen = torch.Generator().manual_seed(2)
    unary = torch.randn(batch, LENGTH, K_CHAIN, generator=gen).to(device).requires_grad_()
    trans = torch.randn(K_CHAIN, K_CHAIN, generator=gen).to(device).requires_grad_()
    tags = torch.randint(0, K_CHAIN, (batch, LENGTH), generator=gen).to(device)
    t = _timer(device, lambda: chain_crf_nll(unary, trans, tags).backward(), repeats)
    return [("chain-nll (fwd+bwd)", batch, device.type, t, float("nan"), "")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-3, help="TRW tolerance of the grid loss")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} CPU thread(s), CUDA: {torch.cuda.get_device_name(0) if len(devices) > 1 else 'none'}")
    print("\n| row | batch | device | median time (ms) | x CNN forward | TRW iterations |")
    print("|---|---:|---|---:|---:|---:|")
    for device in devices:
        for batch in args.batch_sizes:
            for name, b, dev, t, ratio, note in grid_rows(batch, device, args.repeats, args.tol) + \
                    chain_rows(batch, device, args.repeats):
                ratio_text = "" if np.isnan(ratio) else f"{ratio:.1f}"
                print(f"| {name} | {b} | {dev} | {1e3 * t:.2f} | {ratio_text} | {note} |")
    if len(devices) == 1:
        print("\nCUDA rows skipped: no CUDA GPU available (the GPU path is unmeasured here).")


if __name__ == "__main__":
    main()
