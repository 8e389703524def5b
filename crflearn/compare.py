"""Run several solvers on the same split and compare their convergence and test error.

:func:`compare_solvers` fits :class:`crflearn.CRF` once per solver with a shared
time budget, evaluating the test error along the way through the estimator's
``callback``; :func:`write_comparison` saves the records (JSON, CSV) and the
plots (PNG). :func:`add_compare_arguments` / :func:`run_compare` are the glue of
the ``crflearn compare`` command.

The solvers do not share an objective (``SolverSpec.objective`` in the solver
registry says which each minimises). Each duality gap is relative to its own
objective; only the test error is comparable across solvers. A forests-only
solver (``SolverSpec.forests_only``) is skipped on loopy data.

A first Ctrl-C stops the comparison: the run in progress is kept and marked
``"interrupted": true``, the remaining solvers are marked skipped, and
``crflearn compare`` writes what it has and exits with status 130. Every file
is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["compare_solvers", "write_comparison", "time_to_gap", "add_compare_arguments", "run_compare"]


def time_to_gap(history: dict, threshold: float) -> float:
    """First recorded time at which the relative gap ``gap / |primal|`` **and** the constraint
    residual (IDAL's agreement residual; 0 for the other solvers) are both <= ``threshold``
    (NaN if never)."""
    gap = np.asarray(history.get("gap", []), dtype=np.float64)
    primal = np.asarray(history.get("primal", []), dtype=np.float64)
    if gap.size == 0:
        return math.nan
    from .solvers import relative_gap

    residual = np.asarray(history.get("residual", np.zeros_like(gap)), dtype=np.float64)
    rel = np.array([relative_gap(g, p) for g, p in zip(gap, primal)])
    hit = np.flatnonzero((rel <= threshold) & (residual <= threshold))
    return float(np.asarray(history["time"])[hit[0]]) if hit.size else math.nan


class _Evaluator:
    """Test error of a weight vector under a model (the estimator's layout)."""

    def __init__(self, X_test, y_test, classes):
        from ._labels import transform_labels
        from .graphs import make_batch

        self.batch, _ = make_batch(X_test, None)
        y_items = list(y_test)
        if len(y_items) != self.batch.n_examples:
            raise ValueError(f"X_test has {self.batch.n_examples} examples but y_test has {len(y_items)}")
        # labels unseen in training always count as errors (code -1)
        self.codes = np.concatenate([transform_labels(classes, lab, f"y_test[{i}]", unknown=-1)
                                     for i, lab in enumerate(y_items)])
        if len(self.codes) != self.batch.n_nodes:
            raise ValueError(f"y_test has {len(self.codes)} labels in total but X_test has "
                             f"{self.batch.n_nodes} nodes")

    def error(self, w: np.ndarray, model) -> float:
        from .inference import decode_batch

        b = self.batch
        unary, pairwise = model.potentials(w, b)
        pred = decode_batch(unary, pairwise, b.edges, b.node_offsets, b.edge_offsets, method="auto")
        return float(np.mean(pred != self.codes))


def _check_solvers(solvers) -> list[str]:
    from .solvers import SOLVER_NAMES

    if isinstance(solvers, str):
        solvers = [s.strip() for s in solvers.split(",") if s.strip()]
    solvers = list(solvers)
    if not solvers:
        raise ValueError("solvers is empty")
    for name in solvers:
        if name not in SOLVER_NAMES:
            raise ValueError(f"solvers contains {name!r}; choose from {list(SOLVER_NAMES)}")
    return solvers


def compare_solvers(X_train: Sequence, y_train: Sequence, X_test: Sequence, y_test: Sequence, *,
                    solvers: Sequence[str] | str = ("idal", "bcfw", "subgradient", "cutting_plane", "lbfgs"),
                    max_time: float = 60.0, alpha: float | str = "auto", eval_every: int = 1, max_iter: int = 100000,
                    tol: float = 1e-8, random_state: int | None = 0, solver_params: dict | None = None,
                    verbose: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Fit every solver on the same split with a time budget and track its test error.

    Parameters
    ----------
    X_train, y_train, X_test, y_test : lists of examples / label arrays
        The data contract of :class:`crflearn.CRF`.
    solvers : sequence of str or comma-separated str
        Solver names (see :data:`crflearn.solvers.SOLVER_NAMES`).
    max_time : float
        Wall-clock seconds per run (setup, solver, monitoring and test evaluations included) after which
        the run is stopped at its next recorded iteration.
    alpha : float or "auto"
        L2 strength shared by all runs (``"auto"``: ``1 / n_train``, the CRF default).
    eval_every : int
        Evaluate the test error every ``eval_every`` iterations (and at the last one).
    max_iter, tol : int, float
        Passed to every solver (``tol`` small so that the time budget usually decides).
    random_state : int or None
        Seed shared by all solvers.
    solver_params : dict, optional
        ``{solver_name: {option: value}}`` extra options per solver.
    verbose : int
        Passed to the solvers.
    progress : callable, optional
        ``progress(line)`` is called with one line when each run starts and ends (the CLI prints them):
        which solver, its wall time, final relative gap and which criterion (gap, time budget,
        iterations) ended it.

    Returns
    -------
    dict
        ``{solver: record}`` where a record holds ``history`` (dict of lists), ``eval``
        (``iteration``, ``time``, ``test_error`` lists), ``final_test_error``,
        ``time_to_rel_gap_1e-2`` / ``1e-3``, ``wall_time``, ``converged``, ``interrupted``,
        ``objective`` (``SolverSpec.objective``), ``info``; a solver that cannot run on the
        data (a forests-only solver on loopy graphs) or was not run because an earlier run
        was interrupted (Ctrl-C) gets ``{"skipped": reason, "objective": ...}``.
    """
    from ._labels import encode_labels
    from .graphs import make_batch
    from .models import PairwiseModel

    names = _check_solvers(solvers)
    if isinstance(max_time, bool) or not isinstance(max_time, (int, float)) or not max_time > 0:
        raise ValueError(f"max_time must be a positive number of seconds, got {max_time!r}")
    if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")
    if solver_params is not None and not isinstance(solver_params, dict):
        raise TypeError(f"solver_params must be a dict of dicts or None, got {type(solver_params).__name__}")
    train, raw_labels = make_batch(X_train, y_train, label_encoder=lambda lab: np.zeros(len(lab), np.int64))
    classes, _ = encode_labels(raw_labels)
    evaluator = _Evaluator(X_test, y_test, classes)
    # the layout CRF.fit hands its solver (and so the callback's "w"): intercept included
    model = PairwiseModel(len(classes), train.n_features, train.n_edge_features, fit_intercept=True)
    settings = dict(alpha=alpha, max_iter=max_iter, tol=tol, random_state=random_state, verbose=verbose,
                    max_time=max_time, eval_every=eval_every, forest=train.is_forest())
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        params = dict((solver_params or {}).get(name, {}))
        if any(rec.get("interrupted") for rec in results.values()):
            results[name] = _skipped(name, "not run: the comparison was interrupted (Ctrl-C)")
        else:
            if progress is not None:
                progress(f"[compare] {name}: running (budget {max_time:g} s) ...")
            results[name] = _run_one(name, params, X_train, y_train, evaluator, model, settings)
            if progress is not None:
                progress(f"[compare] {name}: {_ending(results[name], tol)}")
    return results


def _ending(record: dict, tol: float) -> str:
    """One line saying how a run ended: converged, or which criterion was unmet and why it stopped."""
    if "skipped" in record:
        return f"skipped ({record['skipped']})"
    gap = record["final_rel_gap"]
    how = ("converged" if record["converged"] else "interrupted (Ctrl-C)" if record["interrupted"]
           else f"relative gap {gap:.2e} > tol {tol:g} when it stopped (time budget or max_iter)")
    return f"{how}; {record['n_iter']} iterations, {record['wall_time']:.1f} s wall, relative gap {gap:.2e}"


def _skipped(name: str, reason: str, interrupted: bool = False) -> dict[str, Any]:
    from .solvers import get_solver_spec

    return {"skipped": reason, "objective": get_solver_spec(name).objective, "interrupted": interrupted}


def _run_one(name: str, params: dict, X_train, y_train, evaluator: _Evaluator, model, settings: dict) -> dict:
    """Fit one solver under the time budget; its record (or a skipped record)."""
    from . import CRF
    from .exceptions import LoopyGraphError
    from .solvers import get_solver_spec, relative_gap

    spec = get_solver_spec(name)
    if spec.forests_only and not settings["forest"]:
        return _skipped(name, f"{name} needs forests (chains, trees); the training graphs have cycles")
    trace = {"iteration": [], "time": [], "test_error": []}

    start = time.perf_counter()

    def callback(info):
        if info["iteration"] % settings["eval_every"] == 0:
            trace["iteration"].append(int(info["iteration"]))
            trace["time"].append(float(info["time"]))
            trace["test_error"].append(evaluator.error(info["w"], model))
        # the budget is wall time of the whole run (monitoring and evaluations count too)
        return time.perf_counter() - start >= settings["max_time"]

    est = CRF(alpha=settings["alpha"], solver=name, max_iter=settings["max_iter"], tol=settings["tol"],
              random_state=settings["random_state"], callback=callback, verbose=settings["verbose"],
              solver_params=params or None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X_train, y_train)
    except LoopyGraphError as exc:
        return _skipped(name, str(exc))
    except KeyboardInterrupt:  # outside the solver loop (which keeps the last iterate itself)
        return _skipped(name, "interrupted (Ctrl-C) before the first iteration", interrupted=True)
    wall = time.perf_counter() - start
    interrupted = bool(est.interrupted_)
    try:
        final_error = evaluator.error(est.coef_, est.model_)
    except KeyboardInterrupt:  # Ctrl-C during the final evaluation: keep the run, marked
        final_error, interrupted = math.nan, True
    if not trace["iteration"] or trace["iteration"][-1] != est.history_["iteration"][-1]:
        trace["iteration"].append(int(est.history_["iteration"][-1]))
        trace["time"].append(float(est.history_["time"][-1]))
        trace["test_error"].append(final_error)
    return {
        "solver": name,
        "objective": spec.objective,
        "history": {k: np.asarray(v).tolist() for k, v in est.history_.items()},
        "eval": trace,
        "final_test_error": final_error,
        "time_to_rel_gap_1e-2": time_to_gap(est.history_, 1e-2),
        "time_to_rel_gap_1e-3": time_to_gap(est.history_, 1e-3),
        "final_rel_gap": relative_gap(float(est.history_["gap"][-1]), float(est.history_["primal"][-1])),
        "solver_time": float(est.history_["time"][-1]),
        "wall_time": wall,
        "n_iter": int(est.n_iter_),
        "alpha": float(est.alpha_),
        "converged": bool(est.converged_),
        "interrupted": interrupted,
        "info": {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v))
                 for k, v in est.solver_info_.items()},
    }


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _clean(value):
    """NaN/inf -> None so that the JSON file is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_comparison(results: dict, out_dir: str | os.PathLike, *, plots: bool = True,
                     prefix: str = "") -> list[Path]:
    """Save the records of :func:`compare_solvers`: JSON, CSV and PNG plots.

    Parameters
    ----------
    results : dict
        Output of :func:`compare_solvers`.
    out_dir : str or path-like
        Directory (created if needed).
    plots : bool
        Also write ``gap_vs_time.png``, ``gap_vs_passes.png`` and ``test_error_vs_time.png``
        (needs matplotlib).
    prefix : str
        Prepended to every file name.

    Returns
    -------
    list of Path
        The files written: ``results.json`` (everything), ``history.csv`` (one row per
        solver iteration), ``summary.csv`` (one row per solver) and the PNGs.
    """
    if not isinstance(results, dict):
        raise TypeError(f"results must be the dict returned by compare_solvers, got {type(results).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_text(out / f"{prefix}results.json",
                           json.dumps(_clean(json.loads(json.dumps(results, default=_json_default))), indent=1))]
    ran = {k: v for k, v in results.items() if "history" in v}
    written.append(_write_text(out / f"{prefix}history.csv", _history_csv(ran)))
    keys = ["objective", "solver_time", "n_iter", "time_to_rel_gap_1e-2", "time_to_rel_gap_1e-3",
            "final_rel_gap", "final_test_error", "converged", "interrupted"]
    written.append(_write_text(out / f"{prefix}summary.csv", _csv(
        ["solver", *keys, "skipped"],
        [[name, *[rec.get(k, "") for k in keys], rec.get("skipped", "")] for name, rec in results.items()])))
    if plots and ran:
        written.extend(_write_plots(ran, out, prefix))
    return written


def _csv(header: list, rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _history_csv(ran: dict) -> str:
    from .solvers import relative_gap

    cols = ["iteration", "time", "primal", "dual", "gap", "residual", "oracle_calls"]
    rows = []
    for name, rec in ran.items():
        h = rec["history"]
        for j in range(len(h["iteration"])):
            row = [h[c][j] if c in h else "" for c in cols]
            rows.append([name, *row, relative_gap(h["gap"][j], h["primal"][j])])
    return _csv(["solver", *cols, "relative_gap"], rows)


def _write_text(path: Path, text: str) -> Path:
    from .persistence import atomic_write

    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))
    return path


def _write_plots(ran: dict, out: Path, prefix: str) -> list[Path]:
    from .persistence import atomic_write
    from .plotting import _import_pyplot, plot_convergence

    plt = _import_pyplot()
    hists = {k: v["history"] for k, v in ran.items()}
    figures = [(plot_convergence(hists, x=x, y="gap", relative=True,
                                 title="relative duality gap (each solver on its own objective)"), fname)
               for x, fname in (("time", "gap_vs_time.png"), ("iteration", "gap_vs_passes.png"))]
    evals = {k: {"iteration": v["eval"]["iteration"], "time": v["eval"]["time"],
                 "test_error": v["eval"]["test_error"]} for k, v in ran.items()}
    figures.append((plot_convergence(evals, x="time", y="test_error", title="test error (node) vs time"),
                    "test_error_vs_time.png"))
    written = []
    for fig, fname in figures:
        path = out / f"{prefix}{fname}"
        with atomic_write(path) as fh:
            fig.savefig(fh, format="png", dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``crflearn compare`` options to ``parser`` and return it."""
    parser.add_argument("--dataset", choices=("ocr", "snakes", "synthetic"), default="synthetic",
                        help="data set (ocr: large protocol by default; snakes: loopy grids; "
                             "synthetic: chain HMM, no files needed)")
    from .solvers import SOLVERS

    parser.add_argument("--solvers", default=",".join(SOLVERS),
                        help="comma-separated solver names among: " + "; ".join(
                            f"{s.name} ({s.objective}: {s.description})" for s in SOLVERS.values()))
    parser.add_argument("--max-time", type=float, default=60.0, help="wall-clock seconds per run, everything included (default: %(default)s)")
    parser.add_argument("--alpha", type=alpha_argument, default="auto",
                        help="L2 strength shared by all runs, or 'auto' (1 / n_train; default)")
    parser.add_argument("--eval-every", type=int, default=1, help="test error every N iterations")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--protocol", choices=("large", "small"), default="large", help="OCR protocol")
    parser.add_argument("--data-path", default=None, help="directory or file of the data set")
    parser.add_argument("--n-sequences", type=int, default=200, help="synthetic: number of training chains")
    parser.add_argument("--out", default="compare_out", help="output directory")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def alpha_argument(text: str) -> float | str:
    """argparse type of ``--alpha``: a positive number or ``"auto"``."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")
    return value


def load_comparison_data(dataset: str, *, protocol: str = "large", data_path=None, n_sequences: int = 200,
                         random_state: int | None = 0):
    """``(X_train, y_train, X_test, y_test)`` for the ``crflearn compare`` data sets."""
    from . import datasets

    if dataset == "ocr":
        return datasets.load_ocr(protocol, data_path)
    if dataset == "snakes":
        return datasets.load_snakes(data_path)
    if dataset == "synthetic":
        X, y = datasets.make_chain_hmm(n_sequences=int(n_sequences) + int(n_sequences) // 2,
                                       random_state=random_state)[:2]
        cut = int(n_sequences)
        return X[:cut], y[:cut], X[cut:], y[cut:]
    raise ValueError(f"dataset must be 'ocr', 'snakes' or 'synthetic', got {dataset!r}")


def run_compare(args: argparse.Namespace) -> int:
    """Run ``crflearn compare`` from parsed arguments; print a summary table; return an exit code."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():  # checked before any training
        raise ValueError(f"the output directory {str(out)!r} is a file")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ValueError(f"the output directory {str(out)!r} is not writable")
    X_train, y_train, X_test, y_test = load_comparison_data(
        args.dataset, protocol=args.protocol, data_path=args.data_path, n_sequences=args.n_sequences,
        random_state=args.random_state)
    results = compare_solvers(X_train, y_train, X_test, y_test, solvers=args.solvers, max_time=args.max_time,
                              alpha=args.alpha, eval_every=args.eval_every, random_state=args.random_state,
                              progress=lambda line: print(line, flush=True))
    files = write_comparison(results, args.out, plots=not args.no_plots)
    print(format_summary(results))  # CLI output
    print(f"wrote {len(files)} files to {args.out}")
    if any(rec.get("interrupted") for rec in results.values()):
        print("crflearn compare: interrupted; the rows above marked interrupted or skipped are partial",
              file=sys.stderr)
        return 130
    return 0


def format_summary(results: dict) -> str:
    """A markdown table: seconds to relative gap 1e-2 / 1e-3, final gap and test error per solver."""
    lines = ["| solver | objective | s to rel. gap 1e-2 | s to rel. gap 1e-3 | final rel. gap | "
             "solver s | test error |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]

    def fmt(v, spec):
        return "not reached" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    for name, rec in results.items():
        if "skipped" in rec:
            lines.append(f"| {name} | {rec['objective']} | skipped: {rec['skipped']} | | | | |")
            continue
        if rec.get("interrupted"):
            name = f"{name} (interrupted)"
        lines.append(f"| {name} | {rec['objective']} | {fmt(rec['time_to_rel_gap_1e-2'], '.2f')} | "
                     f"{fmt(rec['time_to_rel_gap_1e-3'], '.2f')} | {rec['final_rel_gap']:.2e} | "
                     f"{rec['solver_time']:.1f} | {rec['final_test_error']:.4f} |")
    return "\n".join(lines)
