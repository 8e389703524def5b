"""What every solver returns, and the checks of the arguments every solver shares."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .._validation import check_int, check_nonnegative, check_positive
from ..graphs import GraphBatch
from ..models import PairwiseModel
from ._registry import get_solver_spec

__all__ = ["SolverResult", "check_common", "check_warm_state", "check_sample_weight", "check_warm_weights"]


@dataclass
class SolverResult:
    """The outcome of a solver run.

    Attributes
    ----------
    w : ndarray (model.size,)
        Learned weights (those of the last history row).
    n_iter : int
        Iterations (epochs / outer steps) run in total, warm starts included: the last history row.
    state : dict
        Solver-specific arrays for a warm start (pass back as ``warm_start=``).
    history : dict of 1-D arrays
        The common convergence record (see :mod:`crflearn.solvers._history`).
    converged : bool
        Whether ``tol`` was met.
    interrupted : bool
        Whether training stopped on ``KeyboardInterrupt`` (the last recorded iterate is kept).
    info : dict
        Free-form notes (e.g. ``{"inference": "approximate (trw)"}``).
    """

    w: np.ndarray
    n_iter: int
    state: dict
    history: dict
    converged: bool = False
    interrupted: bool = False
    info: dict = field(default_factory=dict)


def check_common(batch, model, alpha, max_iter, tol, callback, verbose,
                 check_input: bool = True, partial_labels: bool = False) -> tuple[float, int, float, int]:
    """Validate the arguments every solver shares; return ``(alpha, max_iter, tol, verbose)``.

    With ``check_input=False`` the batch and the model are trusted (the caller, e.g. the
    estimator, validated them once); the cheap scalar checks always run. With
    ``partial_labels=True`` the label code -1 (unknown node) is accepted.
    """
    if check_input:
        if not isinstance(batch, GraphBatch):
            raise TypeError(f"batch must be a GraphBatch, got {type(batch).__name__}")
        if not isinstance(model, PairwiseModel):
            raise TypeError(f"model must be a PairwiseModel, got {type(model).__name__}")
        if batch.labels is None:
            raise ValueError("batch.labels must be set: the solvers learn from labelled examples")
        labels = batch.labels
        if (partial_labels and np.issubdtype(np.asarray(labels).dtype, np.integer) and labels.size
                and int(labels.min()) == -1):
            batch = replace(batch, labels=np.where(labels == -1, 0, labels))  # -1 checked, the rest as usual
        model.check_batch(batch)
    alpha = check_positive(alpha, "alpha")
    max_iter = check_int(max_iter, "max_iter", 1)
    tol = check_nonnegative(tol, "tol")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    verbose = check_int(int(verbose) if isinstance(verbose, bool) else verbose, "verbose", 0)
    return alpha, max_iter, tol, verbose


def check_warm_state(warm_start, solver: str, alpha: float) -> dict | None:
    """Return ``warm_start`` (a previous ``SolverResult.state``) after checking it fits ``solver``.

    The keys it must hold and whether it needs the same ``alpha`` come from the solver's
    :class:`~crflearn.solvers.SolverSpec` (``warm_start_keys``, ``warm_start_same_alpha``).
    """
    if warm_start is None:
        return None
    if not isinstance(warm_start, dict):
        raise TypeError(f"warm_start must be a dict (a previous SolverResult.state) or None, "
                        f"got {type(warm_start).__name__}")
    spec = get_solver_spec(solver)
    missing = [k for k in spec.warm_start_keys if k not in warm_start]
    if missing:
        raise ValueError(f"warm_start lacks {missing}: {solver} can only warm start from the state of a "
                         f"previous {solver} run on the same data")
    if spec.warm_start_same_alpha and "alpha" in warm_start and not np.isclose(
            float(warm_start["alpha"]), alpha, rtol=1e-12, atol=0.0):
        raise ValueError(f"warm_start was computed with alpha={float(warm_start['alpha']):g} but alpha={alpha:g}: "
                         f"{solver} can only warm start with the same alpha")
    return warm_start


def check_sample_weight(sample_weight, n_examples: int) -> np.ndarray | None:
    """Per-example weights as float64 of shape ``(n_examples,)``: finite, >= 0, not all 0 (None stays None).

    The solvers minimise ``alpha/2 ||w||^2 + 1/n sum_i s_i loss_i(w)``; None means ``s_i = 1``
    exactly (the unweighted code path).
    """
    if sample_weight is None:
        return None
    arr = np.asarray(sample_weight)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"sample_weight must be a real numeric array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.shape != (n_examples,):
        raise ValueError(f"sample_weight must have shape ({n_examples},) (one weight per example), "
                         f"got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0:
        bad = arr[~np.isfinite(arr) | (arr < 0)][0]
        raise ValueError(f"sample_weight must be finite and >= 0, got {bad!r}")
    if n_examples and not arr.any():
        raise ValueError("sample_weight is 0 for every example: nothing to learn from")
    return arr


def check_warm_weights(warm: dict | None, sample_weight: np.ndarray | None) -> None:
    """Refuse a warm-start state computed with other sample weights (its dual point, weights and
    bounds are scaled by them, so reusing it would report invalid bounds). A state without the
    ``"sample_weight"`` key comes from an unweighted run."""
    if warm is None:
        return
    before = warm.get("sample_weight")
    same = (before is None and sample_weight is None) or (
        before is not None and sample_weight is not None and np.array_equal(np.asarray(before), sample_weight))
    if not same:
        raise ValueError("warm_start was computed with other sample_weight values: this solver's state is "
                         "only valid for the same sample weights; start afresh (warm_start=None)")
