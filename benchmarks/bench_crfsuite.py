"""CRFsuite L-BFGS (through sklearn-crfsuite) on OCR large: the external peer of crflearn's CRF solvers.

CRFsuite is a benchmark-only peer, never a crflearn dependency. It runs in its own virtual environment::

    python -m venv /work/venvs/crfsuite
    /work/venvs/crfsuite/bin/pip install sklearn-crfsuite numpy

Usage (from the repository root, in crflearn's environment)::

    python benchmarks/bench_crfsuite.py [--alpha 2e-4 ...] [--peer-python /work/venvs/crfsuite/bin/python]
                                        [--epsilon 1e-5] [--delta 1e-5] [--period 10] [--max-iterations N]

For every ``alpha`` the script

1. exports the OCR large split of :func:`crflearn.datasets.load_ocr` (``protocol="large"``) to an ``.npz``
   (crflearn's environment);
2. runs ``bench_crfsuite.py train`` in the peer environment: that step imports only numpy and sklearn-crfsuite
   (no crflearn code), turns each letter into a CRFsuite feature dict (one attribute per non-zero pixel, value
   1.0, plus a constant ``bias`` attribute), trains CRFsuite's L-BFGS with ``c1 = 0`` and ``c2 = n alpha / 2``
   (CRFsuite minimises ``-sum_i log p(y_i | x_i) + c2 ||w||^2``, i.e. ``n`` times crflearn's
   ``alpha / 2 ||w||^2 + 1/n sum_i NLL_i``), with every (attribute, label) pair and every transition as a
   feature (``all_possible_states``, ``all_possible_transitions``: the same model as ``CRF(solver="lbfgs")``),
   and measures the CPU (``time.process_time``) and wall seconds of ``CRF.fit`` (feature generation, training
   and loading the model) and the test letter error;
3. evaluates crflearn's objective ``P(w)`` at CRFsuite's weights with exact inference and the certified
   relative gap ``||grad P(w)||^2 / (2 alpha) / P(w)`` (the bound ``fit_lbfgs`` uses), so that the peer's stopping
   point is measured on the same scale as crflearn's rows.

It prints one markdown row per ``alpha``; ``--workdir`` keeps the exported data, CRFsuite's weights and timings
(``--reuse`` evaluates them again without training).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_PEER = "/work/venvs/crfsuite/bin/python"
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------------------------
# peer side (numpy and sklearn-crfsuite only)
def _items(pixels: np.ndarray, lengths: np.ndarray) -> list[list[dict[str, float]]]:
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = [{**{f"p{j}": float(v[j]) for j in np.flatnonzero(v)}, "bias": 1.0} for v in pixels]
    return [rows[offsets[i]:offsets[i + 1]] for i in range(len(lengths))]


def _labels(labels: np.ndarray, lengths: np.ndarray) -> list[list[str]]:
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return [[str(c) for c in labels[offsets[i]:offsets[i + 1]]] for i in range(len(lengths))]


def train_peer(args) -> int:
    """Train CRFsuite on the exported split; write timings, test error and weights."""
    import sklearn_crfsuite

    data = np.load(args.data)
    n_features, n_states = int(data["n_features"]), int(data["n_states"])
    t0 = time.perf_counter()
    x_tr = _items(data["train_pixels"], data["train_lengths"])
    y_tr = _labels(data["train_labels"], data["train_lengths"])
    x_te = _items(data["test_pixels"], data["test_lengths"])
    convert = time.perf_counter() - t0
    n = len(x_tr)
    c2 = n * args.alpha / 2.0
    options = dict(algorithm="lbfgs", c1=0.0, c2=c2, all_possible_states=True, all_possible_transitions=True,
                   epsilon=args.epsilon, delta=args.delta, period=args.period)
    if args.max_iterations:
        options["max_iterations"] = args.max_iterations
    crf = sklearn_crfsuite.CRF(**options)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    crf.fit(x_tr, y_tr)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    pred = np.concatenate([np.array(p, dtype=np.int64) for p in crf.predict(x_te)])
    test_error = float(np.mean(pred != data["test_labels"]))

    wu = np.zeros((n_states, n_features + 1))  # bias last, as crflearn's intercept column
    for (attr, label), value in crf.state_features_.items():
        col = n_features if attr == "bias" else int(attr[1:])
        wu[int(label), col] = value
    wp = np.zeros((n_states, n_states))
    for (a, b), value in crf.transition_features_.items():
        wp[int(a), int(b)] = value
    log = crf.training_log_
    last = log.last_iteration if log is not None else {}
    np.savez(args.out, wu=wu, wp=wp)
    info = dict(c2=c2, n_train=n, fit_cpu=cpu, fit_wall=wall, convert_wall=convert, test_error=test_error,
                n_iter=int(last.get("num", -1)), crfsuite_loss=float(last.get("loss", np.nan)),
                options=options)
    Path(args.out).with_suffix(".json").write_text(json.dumps(info), encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# crflearn side
def export_ocr(path: str) -> None:
    """Write the OCR large split of ``load_ocr`` as flat arrays readable with numpy alone."""
    from crflearn.datasets import load_ocr

    x_tr, y_tr, x_te, y_te = load_ocr(protocol="large")
    np.savez(path, n_features=128, n_states=26,
             train_pixels=np.vstack(x_tr), train_labels=np.concatenate(y_tr),
             train_lengths=np.array([len(y) for y in y_tr]),
             test_pixels=np.vstack(x_te), test_labels=np.concatenate(y_te),
             test_lengths=np.array([len(y) for y in y_te]))


def crf_gap(weights: str, alpha: float) -> tuple[float, float]:
    """crflearn's objective at CRFsuite's weights and its certified relative gap."""
    from crflearn.datasets import load_ocr
    from crflearn.graphs import make_batch
    from crflearn.models import PairwiseModel
    from crflearn.solvers.lbfgs import crf_objective

    x_tr, y_tr, _, _ = load_ocr(protocol="large")
    batch, _ = make_batch([np.hstack([x, np.ones((len(x), 1))]) for x in x_tr], y_tr)
    arrays = np.load(weights)
    model = PairwiseModel(26, 129)
    w = model.join(arrays["wu"], arrays["wp"])
    value, grad = crf_objective(w, batch, model, alpha)
    return float(value), float(grad @ grad / (2.0 * alpha) / value)


HEADER = ("| peer | alpha | c2 | iterations | fit CPU s | fit wall s | P(w) (crflearn) | certified rel. gap "
          "| test err % |\n|---|---|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", nargs="?", default="run", choices=["run", "train"])
    parser.add_argument("--alpha", type=float, nargs="*", default=[2e-4])
    parser.add_argument("--peer-python", default=DEFAULT_PEER)
    parser.add_argument("--epsilon", type=float, default=1e-5, help="CRFsuite lbfgs epsilon (its default)")
    parser.add_argument("--delta", type=float, default=1e-5, help="CRFsuite lbfgs delta (its default)")
    parser.add_argument("--period", type=int, default=10, help="CRFsuite lbfgs period (its default)")
    parser.add_argument("--max-iterations", type=int, default=0, help="0: CRFsuite's default (no limit)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "crflearn_bench_crfsuite"),
                        help="where the exported data, CRFsuite's weights and timings are kept")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the weights and timings already in --workdir instead of training again")
    parser.add_argument("--data", help="train step: the exported .npz")
    parser.add_argument("--out", help="train step: output .npz of weights (+ .json of timings)")
    args = parser.parse_args(argv)
    if args.step == "train":
        args.alpha = args.alpha[0]
        return train_peer(args)

    print(HEADER)
    tmp = args.workdir
    os.makedirs(tmp, exist_ok=True)
    data = os.path.join(tmp, "ocr_large.npz")
    if not args.reuse:
        export_ocr(data)
    for alpha in args.alpha:
        out = os.path.join(tmp, f"crfsuite_{alpha:g}.npz")
        cmd = [args.peer_python, __file__, "train", "--data", data, "--out", out, "--alpha", repr(alpha),
               "--epsilon", repr(args.epsilon), "--delta", repr(args.delta), "--period", str(args.period),
               "--max-iterations", str(args.max_iterations)]
        if not args.reuse:
            subprocess.run(cmd, check=True, env={**os.environ, **ONE_THREAD})
        info = json.loads(Path(out).with_suffix(".json").read_text(encoding="utf-8"))
        print(f"  CRFsuite: {json.dumps(info)}", file=sys.stderr, flush=True)
        value, rel_gap = crf_gap(out, alpha)
        print(f"| CRFsuite L-BFGS | {alpha:.3g} | {info['c2']:.4g} | {info['n_iter']} | {info['fit_cpu']:.1f} "
              f"| {info['fit_wall']:.1f} | {value:.6f} | {rel_gap:.1e} | {100 * info['test_error']:.2f} |",
              flush=True)
        print(f"  (CRFsuite's own loss / n = {info['crfsuite_loss'] / info['n_train']:.6f}; feature dicts "
              f"built in {info['convert_wall']:.1f} s wall, not counted)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
