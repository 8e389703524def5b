"""Convergence plots shared by every solver.

Every solver records the same history columns (:mod:`crflearn.solvers._history`),
so one function draws them all. matplotlib is the optional ``plot`` extra and is
imported only when a plot is made.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["plot_convergence"]

_X_AXES = {"time": "time (s, monitoring excluded)", "iteration": "iteration (epochs / outer steps)",
           "oracle_calls": "oracle calls"}
_LOG_Y = ("gap", "residual")


def _import_pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_convergence needs matplotlib; install it with "
                          "`pip install crflearn[plot]` or `pip install matplotlib`") from exc
    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _as_history(obj: Any, index: int) -> tuple[dict, str]:
    """A (history dict, default label) pair from an estimator or a history dict."""
    if isinstance(obj, Mapping):
        if "iteration" not in obj:
            raise ValueError(f"histories[{index}] is a dict without an 'iteration' column; "
                             "expected a convergence history (SolverResult.history or estimator.history_)")
        return dict(obj), f"run {index}"
    history = getattr(obj, "history_", None)
    if history is None:
        if hasattr(obj, "history") and isinstance(getattr(obj, "history"), Mapping):
            return dict(obj.history), f"run {index}"
        raise TypeError(f"histories[{index}] of type {type(obj).__name__} is neither a fitted estimator "
                        "(with history_) nor a history dict")
    label = str(getattr(obj, "solver", f"run {index}"))
    return dict(history), label


def _collect(estimators_or_histories) -> list[tuple[dict, str]]:
    obj = estimators_or_histories
    if isinstance(obj, Mapping) and "iteration" not in obj:
        # a dict name -> history or estimator
        out = []
        for i, (name, value) in enumerate(obj.items()):
            hist, _ = _as_history(value, i)
            out.append((hist, str(name)))
        return out
    if isinstance(obj, Mapping) or hasattr(obj, "history_") or hasattr(obj, "history"):
        return [_as_history(obj, 0)]
    if isinstance(obj, (str, bytes)):
        raise TypeError("estimators_or_histories must be estimators, history dicts or a dict of them")
    try:
        items = list(obj)
    except TypeError:
        raise TypeError(f"estimators_or_histories must be estimators, history dicts or a dict of them, "
                        f"got {type(obj).__name__}") from None
    return [_as_history(item, i) for i, item in enumerate(items)]


def plot_convergence(estimators_or_histories, x: str = "time", y: str = "gap",
                     labels: Sequence[str] | None = None, ax=None, relative: bool = False,
                     title: str | None = None):
    """Plot convergence curves of one or several solver runs.

    Parameters
    ----------
    estimators_or_histories : estimator, dict, list or dict of name -> history
        Fitted estimators (their ``history_`` is used and the ``solver`` attribute names
        the line), ``SolverResult.history``-style dicts, a list of either, or a dict
        mapping a line label to a history or estimator.
    x : {"time", "iteration", "oracle_calls"} or any history column
        Horizontal axis.
    y : {"gap", "primal", "dual", "residual"} or any history column
        Vertical axis; ``gap`` and ``residual`` use a logarithmic scale.
    labels : list of str, optional
        Line labels overriding the defaults.
    ax : matplotlib Axes, optional
        Draw into this axes (a new figure is created otherwise).
    relative : bool
        Divide ``y`` by ``max(|primal|, 1e-12)`` row by row (relative gap), or, for
        ``y="primal"``, plot ``primal - min(primal)`` relative to ``|min(primal)|``.
    title : str, optional
        Axes title (a default naming ``y`` and ``x`` otherwise).

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes, one line per run.
    """
    if not isinstance(x, str):
        raise TypeError(f"x must be a column name, got {x!r}")
    if not isinstance(y, str):
        raise TypeError(f"y must be a column name, got {y!r}")
    runs = _collect(estimators_or_histories)
    if not runs:
        raise ValueError("estimators_or_histories is empty")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(runs):
            raise ValueError(f"labels has {len(labels)} entries for {len(runs)} runs")
    for i, (hist, _) in enumerate(runs):
        for col in (x, y):
            if col not in hist:
                raise ValueError(f"run {i} has no history column {col!r}; columns are {sorted(hist)}")
    plt = _import_pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 4.0))
    else:
        fig = ax.figure
    log_y = y in _LOG_Y
    for i, (hist, default) in enumerate(runs):
        xs = np.asarray(hist[x], dtype=np.float64)
        ys = np.asarray(hist[y], dtype=np.float64)
        if relative:
            if y == "primal":
                best = np.nanmin(ys)
                ys = (ys - best) / max(abs(best), 1e-12)
                log_y = True
            elif "primal" in hist:
                ys = ys / np.maximum(np.abs(np.asarray(hist["primal"], dtype=np.float64)), 1e-12)
        if log_y:
            # zeros cannot be drawn on a log axis: show them at the smallest positive value
            pos = ys[np.isfinite(ys) & (ys > 0)]
            floor = pos.min() if pos.size else 1e-16
            ys = np.where(ys > 0, ys, floor)
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=labels[i] if labels else default)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(_X_AXES.get(x, x))
    ylabel = f"relative {y}" if relative else y
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else f"{ylabel} vs {x}")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig
