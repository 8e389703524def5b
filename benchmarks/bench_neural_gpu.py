"""Benchmark: structured losses forward+backward, CPU vs CUDA, several batch sizes.

Rows:

* ``cnn-forward``: the forward pass (with autograd, as in training) of a small CNN
  (3 -> 16 -> 16 -> 11 channels, 3x3 kernels) on ``B`` 10x10 images, the reference: timed
  in the training step (right after the previous step's loss, backward and SGD update) and
  alone (right after another forward of the CNN, so with its caches warm, as when a CNN is
  timed back to back);
* ``grid-trw cold`` / ``grid-trw warm``: :func:`crflearn.neural.trw_nll_loss` forward +
  backward on that CNN's output, ``B`` 10x10 4-connected grids with 11 states
  (snakes-sized), messages from zero (cold) or from the previous call (warm, as
  ``NeuralCRF`` trains), with ``NeuralCRF``'s training settings (``TRAIN_INFERENCE``, a
  convergence test every sweep on CPU, none on CUDA);
* ``grid-trw ...: whole step``: CNN forward, loss, CNN backward and an SGD step (so the
  potentials move between calls, as in training);
* ``chain-nll``: :func:`crflearn.neural.chain_crf_nll` forward + backward on ``B``
  sequences of length 14 with 26 states (OCR-sized), shared transitions.

Method: after ``--warmup`` untimed rounds, ``--repeats`` rounds each time the CNN alone,
then run one cold and one warm training step, timing the CNN forward and the loss
separately, so CNN and loss timings interleave (CNN, loss, CNN, loss, ...) and share the
machine's state. Each time is read twice: CPU seconds of this process
(``time.process_time``; torch runs on ``--threads`` threads, 1 by default, so this is the
work done, which other processes on a shared machine disturb much less than wall time) and
wall seconds (on CUDA, after a synchronisation; there the wall time is the figure). The
table gives medians and, against both CNN references, the ratio of medians, the 25th-75th
percentiles of the paired per-round ratios as the spread, and the ratio of the minima (the
least disturbed runs). In the step, the CNN runs after the loss has evicted its data from
the caches, which makes it slower (about 1.3-1.8x on the 2-core test machine) and the
ratio to it smaller; the ratio to the CNN alone is the stricter one. The load average is
recorded before and after.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_neural_gpu.py --batch-sizes 16 --repeats 30
    python benchmarks/bench_neural_gpu.py --device cuda --batch-sizes 1 16 64 256 --out gpu.json

``--device cuda`` times every row on CPU and on CUDA (about a minute on the default
sizes) and stops with an error when CUDA is not available; ``--out`` writes the table as
JSON (``.json``) or markdown (any other suffix).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crflearn.graphs import grid_edges
from crflearn.neural import chain_crf_nll, make_loopy_graph, trw_nll_loss
from crflearn.neural.estimator import TRAIN_INFERENCE

K_GRID, SIDE, K_CHAIN, LENGTH = 11, 10, 26, 14


def _clock(device):
    """(CPU seconds of this process, wall seconds); synchronised first on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.process_time(), time.perf_counter()


def _since(start, device):
    now = _clock(device)
    return now[0] - start[0], now[1] - start[1]


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


def _options(args, device):
    """``NeuralCRF``'s training settings (``--tol`` / ``--max-iter`` / ``--damping`` override them)."""
    options = dict(TRAIN_INFERENCE, check_every=0 if device.type == "cuda" else 1)
    for key in ("tol", "max_iter", "damping"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def _percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def _series(name, batch, device, times, refs=None, note=""):
    """One row: medians of (CPU, wall) seconds; for every reference series (``refs``: tag -> times), the
    ratio of medians, the 25th-75th percentiles of the paired ratios and the ratio of minima, on the clock
    that matters (CPU on CPU, wall on CUDA)."""
    cpu, wall = (np.asarray(t) for t in zip(*times))
    row = {"row": name, "batch": batch, "device": device.type, "n": len(cpu), "cpu_ms": 1e3 * float(np.median(cpu)),
           "wall_ms": 1e3 * float(np.median(wall)), "note": note}
    own = cpu if device.type == "cpu" else wall
    for tag, reference in (refs or {}).items():
        ref = np.asarray([t[0 if device.type == "cpu" else 1] for t in reference])
        paired = own / ref
        row.update({f"ratio_{tag}": float(np.median(own) / np.median(ref)),
                    f"ratio_{tag}_p25": _percentile(paired, 25), f"ratio_{tag}_p75": _percentile(paired, 75),
                    f"ratio_{tag}_min": float(own.min() / ref.min())})
    return row


def grid_rows(batch, device, args):
    """Interleaved rounds: per round the CNN forward alone (run twice, the second timed), then a cold and a
    warm training step, each timing the CNN forward and the loss."""
    net = _cnn(device)
    graph, images, labels, pairwise = _grid_problem(batch, device)
    opt = torch.optim.SGD(list(net.parameters()) + [pairwise], lr=0.01)
    options = _options(args, device)
    state = {"messages": None}
    times = {key: [] for key in ("cnn", "cnn alone", "cold", "warm", "cold step", "warm step")}
    iters = {"cold": [], "warm": []}

    def step(kind, record):
        start = _clock(device)
        out = net(images)
        cnn = _since(start, device)
        mid = _clock(device)
        unary = out.detach().permute(0, 2, 3, 1).reshape(-1, K_GRID).requires_grad_()
        res = []
        loss = trw_nll_loss(unary, pairwise, graph, labels, warn=False, out=res,
                            init_messages=state["messages"] if kind == "warm" else None, **options)
        loss.backward()
        loss_t = _since(mid, device)
        out.backward(unary.grad.view(out.shape[0], SIDE, SIDE, K_GRID).permute(0, 3, 1, 2))
        opt.step()  # the potentials move between calls, as in training
        opt.zero_grad()
        whole = _since(start, device)
        if kind == "warm":
            state["messages"] = res[0].messages
        if record:
            times["cnn"].append(cnn)
            times[kind].append(loss_t)
            times[f"{kind} step"].append(whole)
            iters[kind].append(res[0].n_iter)

    for r in range(args.warmup + args.repeats):
        net(images)  # the CNN alone: its caches warm, as when timed back to back
        start = _clock(device)
        net(images)
        if r >= args.warmup:
            times["cnn alone"].append(_since(start, device))
        for kind in ("cold", "warm"):
            step(kind, r >= args.warmup)
    in_step = {"cold": times["cnn"][0::2], "warm": times["cnn"][1::2]}
    rows = [_series("cnn-forward (in the step)", batch, device, times["cnn"]),
            _series("cnn-forward (alone)", batch, device, times["cnn alone"])]
    for kind in ("cold", "warm"):
        refs = {"step": in_step[kind], "alone": times["cnn alone"]}
        sweeps = f"{int(np.median(iters[kind]))} sweeps (median)"
        rows += [_series(f"grid-trw {kind}: loss fwd+bwd", batch, device, times[kind], refs, sweeps),
                 _series(f"grid-trw {kind}: whole step", batch, device, times[f"{kind} step"], refs)]
    return rows


def chain_rows(batch, device, args):
    gen = torch.Generator().manual_seed(2)
    unary = torch.randn(batch, LENGTH, K_CHAIN, generator=gen).to(device).requires_grad_()
    trans = torch.randn(K_CHAIN, K_CHAIN, generator=gen).to(device).requires_grad_()
    tags = torch.randint(0, K_CHAIN, (batch, LENGTH), generator=gen).to(device)
    times = []
    for r in range(args.warmup + args.repeats):
        start = _clock(device)
        chain_crf_nll(unary, trans, tags).backward()
        if r >= args.warmup:
            times.append(_since(start, device))
    return [_series("chain-nll fwd+bwd", batch, device, times)]


def _markdown(rows, meta):
    lines = [f"{key}: {value}" for key, value in meta.items()]
    lines += ["", "| row | batch | device | CPU ms (median) | wall ms (median) | x CNN fwd in the step: ratio of "
              "medians (paired p25-p75; ratio of minima) | x CNN fwd alone: ratio of medians (paired p25-p75; "
              "ratio of minima) | note |", "|---|---:|---|---:|---:|---|---|---|"]
    for r in rows:
        ratios = [f"{r[f'ratio_{t}']:.1f} ({r[f'ratio_{t}_p25']:.1f}-{r[f'ratio_{t}_p75']:.1f}; "
                  f"{r[f'ratio_{t}_min']:.1f})" if f"ratio_{t}" in r else "" for t in ("step", "alone")]
        lines.append(f"| {r['row']} | {r['batch']} | {r['device']} | {r['cpu_ms']:.2f} | {r['wall_ms']:.2f} "
                     f"| {' | '.join(ratios)} | {r['note']} |")
    return "\n".join(lines) + "\n"


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: CPU rows only; cuda: CPU and CUDA rows (an error without CUDA)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--tol", type=float, default=None, help="TRW tolerance (default: NeuralCRF's)")
    parser.add_argument("--max-iter", type=int, default=None, help="TRW sweeps at most (default: NeuralCRF's)")
    parser.add_argument("--damping", type=float, default=None, help="TRW damping (default: NeuralCRF's)")
    parser.add_argument("--out", type=Path, default=None, help="write the table: .json as JSON, else markdown")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False (no CUDA GPU or a CPU-only torch build)")
    return args


def main(argv=None):
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if args.device == "cuda" else [])
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
            "commit": _commit(), "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "torch threads": args.threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
            "cuda": torch.cuda.get_device_name(0) if args.device == "cuda" else "not used",
            "load average before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "timing": f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds; ratios on "
                      "CPU seconds (process_time) on CPU, wall seconds on CUDA"}
    rows = []
    for device in devices:
        for batch in args.batch_sizes:
            rows += grid_rows(batch, device, args) + chain_rows(batch, device, args)
    meta["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.device == "cpu":
        meta["cuda"] = "not measured (run with --device cuda on a machine with a CUDA GPU)"
    text = _markdown(rows, meta)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".json":
            args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        else:
            args.out.write_text(text)


if __name__ == "__main__":
    main()
