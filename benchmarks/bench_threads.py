"""Benchmark: fit wall time against CPU time on a loaded machine, threads limited vs unlimited.

Oversubscribed thread pools (BLAS, OpenMP, torch intra-op) make a fit's wall time explode
on a busy machine while little useful work is done. This script loads the machine itself
with ``--load`` busy-loop processes (default: one per CPU, so every core is busy), then
times, in this process:

* ``reference``: a single-threaded pure-Python loop; its wall / CPU ratio is ``1 / share``,
  the best any single-threaded fit can do under this load;
* ``tiny-POS CRF``: ``CRF(solver="idal")`` on the shipped tiny part-of-speech sample
  (:func:`crflearn.datasets.load_tiny_pos`, :func:`~crflearn.datasets.token_features`,
  one-hot features), ``--repeats`` fits; "unlimited" is the library's default (its solvers
  limit their BLAS pools themselves), "limited" wraps the fits in ``limit_threads(1)``;
* ``OCR NeuralCRF``: a one-epoch ``NeuralCRF(module="cnn")`` fit on ``--ocr-words`` OCR
  words (skipped when ``ocr_letters.npz`` is absent); "limited" is the default
  ``n_threads=None`` (1 thread), "unlimited" is ``n_threads=-1`` (every CPU).

Each row reports the median over ``--rounds`` interleaved rounds (the order alternates, so
a change of the machine's load hits every configuration alike) of wall seconds, process CPU
seconds (all threads) and their ratio, and that ratio relative to the reference's (``1.0`` =
no loss beyond the CPU share this process gets). A JIT / data warm-up runs first.

``--examples`` times the user's paths instead, under a controlled load of ONE busy-loop process
(on a 2-core machine one core stays free), next to the same reference:

* ``tiny-POS example``: ``CRF()`` (the default solver, IDAL) on the feature dicts of the guide
  (:func:`~crflearn.datasets.sentence_features` of :func:`~crflearn.datasets.load_tiny_pos`),
  with the default settings (its solver limits BLAS to one thread) and with ``n_jobs=2``
  (two solver threads);
* ``OCR neural example``: the fit of ``examples/plot_neural_ocr.py`` in quick mode
  (``CRFLEARN_EXAMPLES_QUICK=1``: 200 words, one epoch, ``NeuralCRF(module="cnn")``) with the
  default ``n_threads=None`` (one torch thread) and with ``n_threads=2``.

Every mode prints the busy-loop processes, the load averages and ``uptime`` before and after, and
stops the busy loops in a ``finally`` block.

Usage::

    python benchmarks/bench_threads.py --load 2 --repeats 3 --ocr-words 200 --rounds 3
    python benchmarks/bench_threads.py --examples --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import time

import numpy as np


def _busy():  # pragma: no cover - runs in the load processes
    x = 0
    while True:
        x += 1


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _reference():
    total = 0
    for i in range(3_000_000):
        total += i * i
    return total


def _pos_problem():
    from sklearn.feature_extraction import DictVectorizer

    from crflearn.datasets import load_tiny_pos, token_features

    sentences, tags = load_tiny_pos()
    feats = [token_features(s) for s in sentences]
    vec = DictVectorizer(sparse=False).fit([row for f in feats for row in f])
    return [vec.transform(f) for f in feats], tags


def _pos_fits(X, y, repeats):
    from crflearn import CRF

    for _ in range(repeats):
        CRF(solver="idal").fit(X, y)


def _ocr_problem(n_words):
    from crflearn.datasets import load_ocr

    try:
        X, y, _, _ = load_ocr("large")
    except FileNotFoundError as exc:
        print(f"OCR rows skipped: {exc}")
        return None
    return X[:n_words], y[:n_words]


def _ocr_fit(X, y, n_threads):
    from crflearn.neural import NeuralCRF

    NeuralCRF(module="cnn", image_shape=(16, 8), max_epochs=1, batch_size=16, lr=2e-3, validation_fraction=0.0,
              random_state=0, device="cpu", n_threads=n_threads).fit(X, y)


def _configurations(args):
    """(workload, threads, function) of every timed configuration, after the warm-ups."""
    from crflearn.neural import limit_threads

    X, y = _pos_problem()
    _pos_fits(X, y, 1)  # JIT compilation

    def limited():
        with limit_threads(1):
            _pos_fits(X, y, args.repeats)

    configs = [("reference (1 thread, pure Python)", "-", _reference),
               (f"tiny-POS CRF idal, {args.repeats} fits", "unlimited (library default)",
                lambda: _pos_fits(X, y, args.repeats)),
               (f"tiny-POS CRF idal, {args.repeats} fits", "limited (limit_threads(1))", limited)]
    ocr = _ocr_problem(args.ocr_words)
    if ocr is not None:
        _ocr_fit(ocr[0][:32], ocr[1][:32], None)  # warm-up
        for name, n_threads in (("limited (n_threads=None: 1)", None), ("unlimited (n_threads=-1)", -1)):
            configs.append((f"OCR NeuralCRF, {args.ocr_words} words, 1 epoch", name,
                            lambda n=n_threads: _ocr_fit(*ocr, n)))
    return configs


def _example_configurations(args):
    """(workload, threads, function) of the ``--examples`` mode, after the warm-ups: the guide's tiny-POS fit
    and the quick-mode fit of the OCR neural example, each with its default threads and with 2."""
    from crflearn import CRF
    from crflearn.datasets import load_tiny_pos, sentence_features

    sentences, tags = load_tiny_pos()
    X = sentence_features(sentences)
    CRF().fit(X, tags)  # JIT compilation
    CRF(n_jobs=2).fit(X, tags)
    pos = f"tiny-POS example: CRF() on {len(X)} sentences of feature dicts"
    configs = [("reference (1 thread, pure Python)", "-", _reference),
               (pos, "default (BLAS limited to 1 thread)", lambda: CRF().fit(X, tags)),
               (pos, "n_jobs=2 (2 solver threads)", lambda: CRF(n_jobs=2).fit(X, tags))]
    ocr = _ocr_problem(200)  # the example's quick mode: 200 training words, one epoch
    if ocr is not None:
        _ocr_fit(ocr[0][:32], ocr[1][:32], None)  # warm-up
        for name, n_threads in (("default (n_threads=None: 1)", None), ("n_threads=2", 2)):
            configs.append(("OCR neural example (quick: 200 words, 1 epoch)", name,
                            lambda n=n_threads: _ocr_fit(*ocr, n)))
    return configs


def _uptime() -> str:
    """The output of ``uptime`` (the load averages where the command is missing)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _rows(args):
    """Median wall, CPU and wall / CPU of every configuration over ``--rounds`` interleaved rounds."""
    configs = _example_configurations(args) if args.examples else _configurations(args)
    times = {i: [] for i in range(len(configs))}
    for r in range(args.rounds):
        for i in (range(len(configs)) if r % 2 == 0 else reversed(range(len(configs)))):
            times[i].append(_timed(configs[i][2]))
    rows = []
    for i, (name, setting, _) in enumerate(configs):
        wall, cpu = np.array(times[i]).T
        rows.append((name, setting, np.median(wall), np.median(cpu), np.median(wall / cpu)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy-loop processes")
    parser.add_argument("--repeats", type=int, default=5, help="CRF fits per timing")
    parser.add_argument("--ocr-words", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--examples", action="store_true",
                        help="time the tiny-POS and OCR neural examples under ONE busy-loop process (--load 1)")
    args = parser.parse_args(argv)
    if args.examples:
        args.load = 1
    ctx = mp.get_context("spawn")
    load = [ctx.Process(target=_busy, daemon=True) for _ in range(args.load)]
    for p in load:
        p.start()
    try:
        time.sleep(0.5)
        print(f"{os.cpu_count()} CPUs, {args.load} busy-loop processes (pids {[p.pid for p in load]}), load "
              f"average at start {os.getloadavg()[0]:.1f}\nuptime at start: {_uptime()}")
        rows = _rows(args)
        print(f"load average at end {os.getloadavg()[0]:.1f}\nuptime at end: {_uptime()}")
    finally:
        for p in load:
            p.terminate()
        for p in load:
            p.join()
    ref = rows[0][4]
    print(f"\nMedians over {args.rounds} interleaved rounds.")
    print("\n| workload | threads | wall s | CPU s | wall / CPU | relative to reference |")
    print("|---|---|---:|---:|---:|---:|")
    for name, setting, wall, cpu, ratio in rows:
        print(f"| {name} | {setting} | {wall:.2f} | {cpu:.2f} | {ratio:.2f} | {ratio / ref:.2f} |")


if __name__ == "__main__":
    main()
