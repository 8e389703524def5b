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

Timings are the minimum and the median over ``--repeats`` runs after one warm-up; on CPU
they are this thread's CPU time (torch runs single-threaded, ``--threads 1``), which other
processes on a loaded machine disturb less than wall time; CUDA timings are wall times,
synchronised before reading the clock. The grid loss is timed alone (forward and backward on
the CNN's output) and as a whole SGD step; its TRW settings are ``NeuralCRF``'s training
settings (warm start, undamped colour-class sweeps, a convergence test every sweep on CPU).
CUDA rows are skipped (and say so) when no GPU is available.

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
from crflearn.neural.estimator import TRAIN_INFERENCE

K_GRID, SIDE, K_CHAIN, LENGTH = 11, 10, 26, 14


def _clock(device):
    """Seconds: this thread's CPU time on CPU (robust to other processes on a loaded machine; torch runs
    single-threaded here), synchronised wall time on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.thread_time()


def _stats(times):
    """(minimum, median): on a shared machine the minimum is the least disturbed run."""
    return min(times), statistics.median(times)


def _timer(device, fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = _clock(device)
        fn()
        times.append(_clock(device) - start)
    return _stats(times)


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


def grid_rows(batch, device, repeats, options):
    """CNN forward; the TRW loss forward + backward on the CNN's output (the loss alone); a whole SGD step."""
    net = _cnn(device)
    graph, images, labels, pairwise = _grid_problem(batch, device)
    cnn = _timer(device, lambda: net(images), repeats)
    opt = torch.optim.SGD(list(net.parameters()) + [pairwise], lr=0.01)
    state = {}

    def loss_step(warm, times):
        start = _clock(device)
        out = net(images).permute(0, 2, 3, 1).reshape(-1, K_GRID)
        mid = _clock(device)
        unary = out.detach().requires_grad_()
        res = []
        loss = trw_nll_loss(unary, pairwise, graph, labels, warn=False, out=res,
                            init_messages=state.get("messages") if warm else None, **options)
        loss.backward()
        loss_end = _clock(device)
        out.backward(unary.grad)
        opt.step()  # the potentials move between calls, as in training
        opt.zero_grad()
        times.append((loss_end - mid, _clock(device) - start))
        state["messages"], state["n_iter"] = res[0].messages, res[0].n_iter

    rows = [("cnn-forward", batch, device.type, cnn, cnn, "")]
    for warm in (False, True):
        times = []
        for _ in range(repeats + 1):
            loss_step(warm, times)
        loss_t, step_t = (_stats(t) for t in zip(*times[1:]))
        name = "warm" if warm else "cold"
        rows += [(f"grid-trw {name}: loss fwd+bwd", batch, device.type, loss_t, cnn, f"{state['n_iter']} it"),
                 (f"grid-trw {name}: whole step (cnn fwd+bwd, loss, SGD)", batch, device.type, step_t, cnn, "")]
    return rows


def chain_rows(batch, device, repeats):
    gen = torch.Generator().manual_seed(2)
    unary = torch.randn(batch, LENGTH, K_CHAIN, generator=gen).to(device).requires_grad_()
    trans = torch.randn(K_CHAIN, K_CHAIN, generator=gen).to(device).requires_grad_()
    tags = torch.randint(0, K_CHAIN, (batch, LENGTH), generator=gen).to(device)
    t = _timer(device, lambda: chain_crf_nll(unary, trans, tags).backward(), repeats)
    return [("chain-nll (fwd+bwd)", batch, device.type, t, None, "")]


def _options(args, device):
    """The TRW settings of ``NeuralCRF`` training (``--tol`` / ``--damping`` override them)."""
    options = dict(TRAIN_INFERENCE, tol=args.tol, max_iter=200)
    if args.damping is not None:
        options["damping"] = args.damping
    options["check_every"] = 0 if device.type == "cuda" else 1  # a host synchronisation is free on CPU
    return options


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-3, help="TRW tolerance of the grid loss")
    parser.add_argument("--damping", type=float, default=None, help="TRW damping (default: NeuralCRF's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} CPU thread(s), CUDA: {torch.cuda.get_device_name(0) if len(devices) > 1 else 'none'}")
    print(f"\nTimes over {args.repeats} runs after a warm-up (CPU: this thread's CPU time; CUDA: wall); "
          "ratios to the CNN forward of the same statistic.")
    print("\n| row | batch | device | min ms | median ms | x CNN fwd (min) | x CNN fwd (median) | TRW iterations |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for device in devices:
        for batch in args.batch_sizes:
            for name, b, dev, t, cnn, note in grid_rows(batch, device, args.repeats, _options(args, device)) + \
                    chain_rows(batch, device, args.repeats):
                ratios = ("", "") if cnn is None else (f"{t[0] / cnn[0]:.1f}", f"{t[1] / cnn[1]:.1f}")
                print(f"| {name} | {b} | {dev} | {1e3 * t[0]:.2f} | {1e3 * t[1]:.2f} | {ratios[0]} | {ratios[1]} "
                      f"| {note} |")
    if len(devices) == 1:
        print("\nCUDA rows skipped: no CUDA GPU available (the GPU path is unmeasured here).")


if __name__ == "__main__":
    main()
