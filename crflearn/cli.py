"""The ``crflearn`` command line.

Subcommands
-----------
``crflearn demo``
    Train a CRF with IDAL on a synthetic chain task (or on the OCR / snakes
    data when present), print accuracies and a convergence summary, and write a
    duality-gap plot.
``crflearn fit --data FILE --model OUT``
    Train on a data file and save the model.
``crflearn predict --model FILE --data FILE [--out FILE]``
    Label a data file with a saved model.
``crflearn compare ...``
    Compare solvers (see :mod:`crflearn.compare`).

Data files
----------
Two on-disk formats are understood (chosen by ``--format``, by default from the
file extension: ``.npz`` is an array archive, anything else CoNLL text).

*CoNLL text* (chains of tokens): one token per line, whitespace-separated
columns (token first, tag in ``--tag-column``, by default the last), a blank
line between sentences, ``-DOCSTART-`` lines skipped. Node features are
:func:`crflearn.datasets.token_features` dicts vectorised with a
:class:`~sklearn.feature_extraction.DictVectorizer`; its vocabulary is saved
next to the model as ``MODEL.features.json``. For prediction the file may
hold tokens only (``--tag-column none``).

*NPZ archive* (any graphs; loaded without pickles):

==================  ==========================  =====================================================
array               shape, dtype                meaning
==================  ==========================  =====================================================
``features``        (n_nodes_total, p) float    node features, examples one after another
``lengths``         (n_examples,) int           nodes per example
``labels``          (n_nodes_total,) int        optional; node labels (needed by ``fit``)
``edges``           (n_edges_total, 2) int      optional; edges with node indices **local** to their
                                                example; without it every example is a chain
``edge_offsets``    (n_examples + 1,) int       with ``edges``: edges of example ``i`` are rows
                                                ``edge_offsets[i]:edge_offsets[i+1]``
``edge_features``   (n_edges_total, q) float    optional; per-edge features
==================  ==========================  =====================================================

``predict`` writes CoNLL text (``token<TAB>predicted tag``) for CoNLL input,
and for NPZ input an archive with ``labels`` and ``lengths`` (or, without
``--out``, one line of space-separated labels per example on stdout).

Exit status: 0 on success, 1 for an error in the data, files or training,
2 for a command-line usage error, 130 when interrupted (Ctrl-C). Errors are
reported as one line on stderr; set ``CRFLEARN_DEBUG=1`` to see the full
traceback.

Files: every output is written atomically (a temporary file in the same
directory, renamed on success), output paths are checked before any training,
and an output may not be one of the input files. After Ctrl-C, ``fit`` does not
write the model (an existing file is left as it was) unless ``--save-partial``
is given; ``demo`` stops; ``compare`` writes the partial comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["main", "build_parser", "read_npz_data", "write_npz_data"]

_PROG = "crflearn"


class UserError(Exception):
    """An error caused by the user's input; reported as one line, no traceback."""


# --------------------------------------------------------------------------------------
# data files
# --------------------------------------------------------------------------------------
def read_npz_data(path: str | os.PathLike) -> tuple[list, list | None]:
    """Read a data archive in the CLI's ``.npz`` format (see the module notes).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    X : list
        Arrays ``(n_i, p)`` (chains) or ``(features, edges[, edge_features])`` tuples.
    y : list of ndarray or None
        Labels per example when the archive has ``labels``.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, missing arrays or inconsistent shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:
        raise ValueError(f"{path} is not a readable .npz archive: {exc}") from None
    for key in ("features", "lengths"):
        if key not in arrays:
            raise ValueError(f"{path} lacks the array {key!r} (it holds {sorted(arrays)}); "
                             "see `crflearn fit --help` for the format")
    feats = arrays["features"]
    lengths = arrays["lengths"]
    if feats.ndim != 2:
        raise ValueError(f"{path}: 'features' must be 2-D (n_nodes, n_features), got shape {feats.shape}")
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer) or np.any(lengths < 1):
        raise ValueError(f"{path}: 'lengths' must be a 1-D array of positive integers")
    if int(lengths.sum()) != len(feats):
        raise ValueError(f"{path}: 'lengths' sum to {int(lengths.sum())} but 'features' has {len(feats)} rows")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    labels = arrays.get("labels")
    if labels is not None and labels.shape != (len(feats),):
        raise ValueError(f"{path}: 'labels' must have shape ({len(feats)},), got {labels.shape}")
    edges = arrays.get("edges")
    edge_feats = arrays.get("edge_features")
    if edges is None and edge_feats is not None:
        raise ValueError(f"{path}: 'edge_features' needs 'edges' and 'edge_offsets'")
    if edges is not None:
        eoff = arrays.get("edge_offsets")
        if eoff is None:
            raise ValueError(f"{path}: 'edges' needs 'edge_offsets' (n_examples + 1 entries)")
        if edges.ndim != 2 or edges.shape[1] != 2:
            raise ValueError(f"{path}: 'edges' must have shape (n_edges, 2), got {edges.shape}")
        if eoff.shape != (len(lengths) + 1,) or eoff[0] != 0 or eoff[-1] != len(edges) \
                or np.any(np.diff(eoff) < 0):
            raise ValueError(f"{path}: 'edge_offsets' must be {len(lengths) + 1} non-decreasing offsets "
                             f"from 0 to {len(edges)}")
        if edge_feats is not None and (edge_feats.ndim != 2 or len(edge_feats) != len(edges)):
            raise ValueError(f"{path}: 'edge_features' must have shape ({len(edges)}, q), got {edge_feats.shape}")
    X, y = [], ([] if labels is not None else None)
    for i in range(len(lengths)):
        f = feats[offsets[i]:offsets[i + 1]]
        if edges is None:
            X.append(f)
        else:
            e = edges[eoff[i]:eoff[i + 1]]
            X.append((f, e) if edge_feats is None else (f, e, edge_feats[eoff[i]:eoff[i + 1]]))
        if labels is not None:
            y.append(labels[offsets[i]:offsets[i + 1]])
    return X, y


def write_npz_data(path: str | os.PathLike, X: Sequence, y: Sequence | None = None) -> None:
    """Write examples in the CLI's ``.npz`` format (the inverse of :func:`read_npz_data`).

    Parameters
    ----------
    path : str or path-like
    X : list
        Arrays ``(n_i, p)`` (chains) or ``(features, edges[, edge_features])`` tuples (all of one kind).
    y : list of 1-D int arrays, optional
    """
    items = list(X)
    if not items:
        raise ValueError("X is empty")
    graphs = [isinstance(item, tuple) for item in items]
    if any(graphs) and not all(graphs):
        raise ValueError("X mixes chains (arrays) and (features, edges) tuples")
    feats = [np.asarray(item[0] if graphs[0] else item, dtype=np.float64) for item in items]
    out = {"features": np.concatenate(feats), "lengths": np.array([len(f) for f in feats], dtype=np.int64)}
    if y is not None:
        out["labels"] = np.concatenate([np.asarray(lab, dtype=np.int64) for lab in y])
    if graphs[0]:
        edges = [np.asarray(item[1], dtype=np.int64).reshape(-1, 2) for item in items]
        out["edges"] = np.concatenate(edges)
        out["edge_offsets"] = np.concatenate([[0], np.cumsum([len(e) for e in edges])]).astype(np.int64)
        with_ef = [len(item) == 3 for item in items]
        if any(with_ef):
            if not all(with_ef):
                raise ValueError("some examples have edge features and some do not")
            blocks = [np.asarray(item[2], dtype=np.float64) for item in items]
            width = max((b.shape[1] for b in blocks if b.ndim == 2), default=0)
            out["edge_features"] = np.concatenate([b.reshape(-1, width) for b in blocks])  # (0,) for no edges
    from .persistence import atomic_write

    with atomic_write(path) as fh:  # written exactly at ``path`` (no suffix added), atomically
        np.savez(fh, **out)


def _data_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return "npz" if str(path).lower().endswith(".npz") else "conll"


def _tag_column(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer column index or 'none', got {text!r}") from None


def _vocab_path(model_path: str | os.PathLike) -> Path:
    return Path(str(model_path) + ".features.json")


# --------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------
def _parse_number(text: str, cast, what: str, ok) -> float:
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _parse_number(text, int, "a positive integer", lambda v: v >= 1)


def _nonnegative_float(text: str) -> float:
    return _parse_number(text, float, "a non-negative number", lambda v: np.isfinite(v) and v >= 0)


def _add_training_arguments(parser: argparse.ArgumentParser, *, max_iter: int) -> None:
    from .compare import alpha_argument
    from .solvers import SOLVERS

    parser.add_argument("--solver", choices=tuple(SOLVERS), default="idal",
                        help="learning algorithm (default: %(default)s): " + "; ".join(
                            f"{s.name}: {s.description}" for s in SOLVERS.values()))
    parser.add_argument("--alpha", type=alpha_argument, default=None,
                        help="L2 regularisation strength, or 'auto' for 1 / n_examples (default: the CRF "
                             "default 'auto', or a per-dataset value in the demo)")
    parser.add_argument("--max-iter", type=_positive_int, default=max_iter,
                        help="maximum number of epochs / outer iterations (default: %(default)s)")
    parser.add_argument("--tol", type=_nonnegative_float, default=1e-3,
                        help="stopping tolerance on the relative duality gap (default: %(default)s)")
    parser.add_argument("--random-state", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print a progress line at every certified epoch (default: a short summary only)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no header lines either (progress lines are off unless --verbose)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``crflearn`` command (all subcommands)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="crflearn: conditional random field learning with the IDAL solver.",
        epilog="Run `crflearn COMMAND --help` for the options of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="train IDAL on a demo task and plot its duality gap",
        description="Train a CRF on a demo task, print accuracies and a convergence summary, and save a "
                    "duality-gap plot. The synthetic task needs no data files.")
    demo.add_argument("--dataset", choices=("synthetic", "ocr", "snakes"), default="synthetic",
                      help="synthetic HMM chains (default), OCR words (small protocol: train on fold 1, "
                           "test on the others) or snakes grids; the real data sets are looked for in "
                           "$CRFLEARN_DATA and ../shared/datasets")
    demo.add_argument("--data-path", default=None,
                      help="file or directory holding the real data set (overrides the search)")
    demo.add_argument("--out", default="crflearn-demo", help="output directory for the plot (default: %(default)s)")
    _add_training_arguments(demo, max_iter=300)
    # hidden knobs (tests and quick runs)
    demo.add_argument("--n-train", type=_positive_int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--n-test", type=_positive_int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--length", type=_positive_int, default=None, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_cmd_demo)

    fit = sub.add_parser(
        "fit", help="train a CRF on a data file and save it",
        description="Train a CRF on a data file (CoNLL text or an .npz archive, formats below) and save "
                    "it with CRF.save.",
        epilog="NPZ format: features (N, p), lengths (n,), labels (N,), optional edges (M, 2) local to each "
               "example with edge_offsets (n + 1,) and edge_features (M, q). CoNLL: token and tag columns, "
               "blank line between sentences; the feature vocabulary is saved as MODEL.features.json.")
    fit.add_argument("--data", required=True, help="training data (.npz or CoNLL text)")
    fit.add_argument("--model", required=True, help="where to save the model (.npz)")
    fit.add_argument("--format", choices=("auto", "conll", "npz"), default="auto",
                     help="data format (default: from the extension, .npz or else CoNLL)")
    fit.add_argument("--tag-column", type=_tag_column, default=-1,
                     help="CoNLL column holding the tag (default: -1, the last)")
    fit.add_argument("--save-partial", action="store_true",
                     help="after Ctrl-C, still save the last iterate (default: save nothing, exit 130)")
    _add_training_arguments(fit, max_iter=100)
    fit.set_defaults(handler=_cmd_fit)

    predict = sub.add_parser(
        "predict", help="label a data file with a saved model",
        description="Predict labels with a model saved by `crflearn fit`.")
    predict.add_argument("--model", required=True, help="model file written by `crflearn fit`")
    predict.add_argument("--data", required=True, help="data to label (.npz or CoNLL text)")
    predict.add_argument("--out", default=None,
                         help="output file (CoNLL text, or .npz with 'labels' and 'lengths'); default stdout")
    predict.add_argument("--format", choices=("auto", "conll", "npz"), default="auto",
                         help="data format (default: from the extension)")
    predict.add_argument("--tag-column", type=_tag_column, default=None,
                         help="CoNLL column of gold tags, to report accuracy (default: none, read tokens only)")
    predict.set_defaults(handler=_cmd_predict)

    compare = sub.add_parser("compare", help="compare solvers on a task (convergence plots and tables)",
                             description="Compare CRF solvers; see crflearn.compare.")
    try:
        from .compare import add_compare_arguments
    except ImportError as exc:  # the harness is optional at parse time; report when used
        compare.set_defaults(handler=_unavailable("compare", exc))
    else:
        add_compare_arguments(compare)
        compare.set_defaults(handler=_cmd_compare)
    return parser


def _unavailable(name: str, exc: Exception):
    def handler(args) -> int:
        raise UserError(f"the {name} command is unavailable: {exc}")
    return handler


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _check_output(path, *, inputs: Sequence = ()) -> Path:
    """Refuse an output path before any work: a directory, a missing directory, or one of the inputs."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"the output {str(out)!r} is a directory")
    parent = out.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {str(out)!r}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {str(out)!r}: the directory {str(parent)!r} is not writable")
    for source in inputs:
        if source is not None and out.resolve() == Path(source).resolve():
            raise UserError(f"the output {str(out)!r} is also an input file; choose another output name")
    return out


def _write_text(path, text: str) -> None:
    from .persistence import atomic_write

    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))


def _interrupted(args, what: str) -> int:
    print(f"{_PROG} {args.command}: interrupted; {what}", file=sys.stderr)
    return 130


def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, flush=True)


def _make_crf(args, alpha: float | None):
    from . import CRF

    params = dict(solver=args.solver, max_iter=args.max_iter, tol=args.tol, random_state=args.random_state,
                  verbose=1 if getattr(args, "verbose", False) and not args.quiet else 0)
    if args.alpha is not None:
        params["alpha"] = args.alpha
    elif alpha is not None:
        params["alpha"] = alpha
    return CRF(**params)


def _fit_quietly(est, X, y):
    """Fit, turning a ConvergenceWarning into a note; returns (seconds, note or None)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - start
    note = None
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            note = str(w.message)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return seconds, note


def _summary(est) -> str:
    hist = getattr(est, "history_", None) or {}
    parts = [f"epochs={getattr(est, 'n_iter_', '?')}"]
    for key in ("primal", "gap", "residual"):
        if key in hist and len(hist[key]):
            parts.append(f"final {key}={float(hist[key][-1]):.3e}")
    if "primal" in hist and "gap" in hist and len(hist["gap"]):
        rel = float(hist["gap"][-1]) / max(abs(float(hist["primal"][-1])), 1e-12)
        parts.append(f"relative gap={rel:.3e}")
    parts.append(f"converged={bool(getattr(est, 'converged_', False))}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------
def _demo_data(args):
    from . import datasets

    if args.dataset == "synthetic":
        n_train = args.n_train or 100
        n_test = args.n_test or 100
        length = args.length or (10, 30)
        X, y = datasets.make_chain_hmm(n_train + n_test, length=length, random_state=args.random_state)
        return (X[:n_train], y[:n_train], X[n_train:], y[n_train:],
                "synthetic HMM chains (5 states, 10 features)", 1e-2)
    try:
        if args.dataset == "ocr":
            data = datasets.load_ocr("small", args.data_path)
            desc, alpha = "OCR words, small protocol (train fold 1, test folds 0, 2-9)", 1e-3
        else:
            data = datasets.load_snakes(args.data_path)
            desc, alpha = "snakes grids (direction-aware edge features)", 1e-3
    except FileNotFoundError as exc:
        raise UserError(f"the {args.dataset} data set is not available ({exc}); run "
                        "`crflearn demo` without --dataset for the synthetic task") from None
    X_train, y_train, X_test, y_test = data
    if args.n_train:
        X_train, y_train = X_train[:args.n_train], y_train[:args.n_train]
    if args.n_test:
        X_test, y_test = X_test[:args.n_test], y_test[:args.n_test]
    return X_train, y_train, X_test, y_test, desc, alpha


def _cmd_demo(args) -> int:
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {str(out_dir)!r}: {exc}") from None
    figure_path = _check_output(out_dir / f"demo_{args.dataset}_{args.solver}_gap.png")
    X_train, y_train, X_test, y_test, desc, alpha = _demo_data(args)
    n_nodes = sum(len(lab) for lab in y_train)
    _say(args, f"crflearn demo: {desc}")
    _say(args, f"  {len(X_train)} training examples ({n_nodes} nodes), {len(X_test)} test examples")
    est = _make_crf(args, alpha)
    _say(args, f"training CRF(solver={args.solver!r}, alpha={est.alpha}, max_iter={args.max_iter}, "
               f"tol={args.tol:g}) ...")
    seconds, note = _fit_quietly(est, X_train, y_train)
    if est.interrupted_:
        return _interrupted(args, "demo stopped")
    train_acc = est.score(X_train, y_train)
    test_acc = est.score(X_test, y_test)
    print(f"training time: {seconds:.2f} s (includes Numba compilation on the first run)")
    print(f"convergence: {_summary(est)}")
    if note:
        print(f"note: {note}")
    print(f"node accuracy: train {train_acc:.4f}, test {test_acc:.4f}")

    from .persistence import atomic_write
    from .plotting import plot_convergence

    fig = _demo_figure(est, plot_convergence)
    with atomic_write(figure_path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"duality-gap plot written to {figure_path}")
    return 0


def _demo_figure(est, plot_convergence):
    """Certified relative gap against solver time counted from the end of the first epoch (so that Numba's
    compilation on a first run does not stretch the axis), with the tolerance drawn."""
    hist = dict(est.history_)
    hist["time"] = np.asarray(hist["time"], dtype=np.float64) - float(hist["time"][0])
    fig = plot_convergence({est.solver: hist}, x="time", y="gap", relative=True,
                           title="certified relative duality gap")
    ax = fig.axes[0]
    ax.axhline(est.tol, color="grey", linestyle="--", linewidth=1, label=f"tol = {est.tol:g}")
    ax.set_xlabel("solver time since the first epoch (s, monitoring excluded)")
    ax.legend()
    return fig


def _load_examples(path: str, fmt: str, tag_column: int | None, *, need_labels: bool):
    """Returns (X, y, sentences or None, fmt). X holds dict rows for CoNLL."""
    from .datasets import read_conll, sentence_features

    fmt = _data_format(path, fmt)
    if fmt == "npz":
        X, y = read_npz_data(path)
        if need_labels and y is None:
            raise UserError(f"{path} has no 'labels' array; training needs labels")
        return X, y, None, fmt
    sentences, tags = read_conll(path, columns=(0, tag_column))
    if not sentences:
        raise UserError(f"{path} holds no sentences")
    if need_labels and tags is None:
        raise UserError("training needs tags: give --tag-column")
    return sentence_features(sentences), tags, sentences, fmt


def _cmd_fit(args) -> int:
    vocab_file = _vocab_path(args.model)
    for out in (args.model, vocab_file):  # before reading or training anything
        _check_output(out, inputs=(args.data,))
    X, y, sentences, fmt = _load_examples(args.data, args.format, args.tag_column, need_labels=True)
    if fmt == "conll":
        from sklearn.feature_extraction import DictVectorizer

        vec = DictVectorizer(sparse=True).fit([row for sent in X for row in sent])
        X = [vec.transform(sent) for sent in X]
    est = _make_crf(args, None)
    _say(args, f"training CRF(solver={args.solver!r}, alpha={est.alpha}) on {len(X)} examples "
               f"({sum(len(t) for t in y)} nodes) from {args.data}")
    seconds, note = _fit_quietly(est, X, y)
    if est.interrupted_ and not args.save_partial:
        return _interrupted(args, f"nothing written to {args.model} (pass --save-partial to save the last "
                                  "iterate)")
    if fmt == "conll":
        _write_text(vocab_file, json.dumps({"format": "crflearn-conll-features", "version": 1,
                                            "feature_names": [str(n) for n in vec.feature_names_]}))
    est.save(args.model)
    if fmt != "conll" and vocab_file.exists():
        vocab_file.unlink()  # a stale vocabulary from an earlier CoNLL model
    print(f"trained in {seconds:.2f} s; {_summary(est)}")
    if note:
        print(f"note: {note}")
    print(f"training node accuracy: {est.score(X, y):.4f}")
    print(f"model saved to {args.model}" + (f" (vocabulary in {vocab_file})" if fmt == "conll" else ""))
    if est.interrupted_:
        return _interrupted(args, f"the partial model was saved to {args.model} (--save-partial)")
    return 0


def _vectorizer_from(vocab_file: Path):
    from sklearn.feature_extraction import DictVectorizer

    try:
        meta = json.loads(vocab_file.read_text())
        names = meta["feature_names"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the feature vocabulary {str(vocab_file)!r}: {exc}") from None
    vec = DictVectorizer(sparse=True)
    vec.feature_names_ = list(names)
    vec.vocabulary_ = {name: i for i, name in enumerate(names)}
    return vec


def _cmd_predict(args) -> int:
    from .estimators import CRF

    if not Path(args.model).is_file():
        raise FileNotFoundError(f"model file not found: {args.model!r}")
    if args.out:
        _check_output(args.out, inputs=(args.data, args.model, _vocab_path(args.model)))
    est = CRF.load(args.model)
    X, y, sentences, fmt = _load_examples(args.data, args.format, args.tag_column, need_labels=False)
    if fmt == "conll":
        vocab_file = _vocab_path(args.model)
        if not vocab_file.is_file():
            raise UserError(f"{args.model} was not trained on CoNLL text (no {vocab_file.name} next to it); "
                            "give an .npz data file")
        vec = _vectorizer_from(vocab_file)
        X = [vec.transform(sent) for sent in X]
    pred = est.predict(X)
    if y is not None:
        from .metrics import node_accuracy

        print(f"node accuracy against the given labels: {node_accuracy(y, pred):.4f}", file=sys.stderr)
    if fmt == "conll":
        lines = []
        for sent, tags in zip(sentences, pred):
            lines.extend(f"{tok}\t{tag}" for tok, tag in zip(sent, tags))
            lines.append("")
        text = "\n".join(lines) + "\n"
        if args.out:
            _write_text(args.out, text)
        else:
            sys.stdout.write(text)
    elif args.out:
        from .persistence import atomic_write

        with atomic_write(args.out) as fh:  # exactly at args.out: np.savez adds no suffix to a file object
            np.savez(fh, labels=np.concatenate([np.asarray(p) for p in pred]),
                     lengths=np.array([len(p) for p in pred], dtype=np.int64))
    else:
        for p in pred:
            print(" ".join(str(v) for v in np.asarray(p).tolist()))
    if args.out:
        print(f"predictions for {len(pred)} examples written to {args.out}", file=sys.stderr)
    return 0


def _cmd_compare(args) -> int:
    from .compare import run_compare

    return int(run_compare(args))


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crflearn`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 1 error, 2 usage error, 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{_PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UserError, OSError, ValueError, TypeError) as exc:
        if os.environ.get("CRFLEARN_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{_PROG} {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
