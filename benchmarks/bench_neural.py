"""Benchmark: CNN + chain CRF on OCR (large protocol), plain vs symmetric convolutions.

Trains :class:`crflearn.neural.NeuralCRF` with the built-in ``"cnn"`` network on
16x8 letter images (folds 1..9), tests on fold 0, and prints a markdown table
(training time, learned parameters, test letter and word error). Every
configuration uses the same seed, optimiser and epoch budget.

Usage::

    python benchmarks/bench_neural.py --epochs 8 --threads 2
    python benchmarks/bench_neural.py --quick       # a few hundred words, for a smoke run

The data is read with :func:`crflearn.datasets.load_ocr` (``$CRFLEARN_DATA`` or
``../shared/datasets``).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from torch import nn

from crflearn.datasets import load_ocr
from crflearn.neural import NeuralCRF
from crflearn.neural.symmetry import FlipSharedConv2d, SymmetricConv2d, count_parameters


def run(name, X_train, y_train, X_test, y_test, args, **params):
    clf = NeuralCRF(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, validation_fraction=0.0,
                    random_state=args.seed, device=args.device, **params)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    train_time = time.perf_counter() - start
    pred = clf.predict(X_test)
    letters = np.concatenate(y_test)
    letter_err = float(np.mean(np.concatenate(pred) != letters))
    word_err = float(np.mean([np.any(p != t) for p, t in zip(pred, y_test)]))
    conv = count_parameters(clf.net_.unary, (nn.Conv2d, SymmetricConv2d, FlipSharedConv2d))
    return dict(name=name, time=train_time, epochs=clf.n_iter_, conv=conv,
                total=count_parameters(clf.net_), letter=letter_err, word=word_err,
                loss=float(clf.history_["primal"][-1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="train on 400 words only (smoke test)")
    parser.add_argument("--configs", default="linear,cnn,cnn-flip,cnn-triangular",
                        help="comma-separated subset of linear, cnn, cnn-flip, cnn-channel, cnn-triangular, "
                             "cnn-block")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X_train, y_train, X_test, y_test = load_ocr("large")
    if args.quick:
        X_train, y_train = X_train[:400], y_train[:400]
    configs = {
        "linear": dict(module="linear", loss="nll"),
        "cnn": dict(module="cnn", loss="nll"),
        "cnn-flip": dict(module="cnn", loss="nll", symmetry="flip"),
        "cnn-channel": dict(module="cnn", loss="nll", symmetry="channel"),
        "cnn-triangular": dict(module="cnn", loss="nll", symmetry="triangular"),
        "cnn-block": dict(module="cnn", loss="nll", symmetry="block"),
    }
    rows = []
    for name in args.configs.split(","):
        rows.append(run(name, X_train, y_train, X_test, y_test, args, **configs[name]))
        r = rows[-1]
        print(f"# {name}: {r['time']:.1f}s, letter error {100 * r['letter']:.2f}%", flush=True)
    base = next((r for r in rows if r["name"] == "cnn"), None)
    print(f"\nOCR large protocol: {len(X_train)} train words, {len(X_test)} test words; "
          f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, seed {args.seed}, "
          f"{args.threads} torch threads, {platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| network | train time (s) | conv params | conv params vs cnn | all params | test letter error | "
          "test word error | final train NLL |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ratio = f"{r['conv'] / base['conv']:.2f}x" if base and base["conv"] else "-"
        print(f"| {r['name']} | {r['time']:.0f} | {r['conv']} | {ratio} | {r['total']} | {100 * r['letter']:.2f}% | "
              f"{100 * r['word']:.2f}% | {r['loss']:.3f} |")


if __name__ == "__main__":
    main()
