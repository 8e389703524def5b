"""What every solver returns, and the checks of the arguments every solver shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import check_int, check_nonnegative, check_positive
from ..graphs import GraphBatch
from ..models import PairwiseModel
from ._registry import get_solver_spec

__all__ = ["SolverResult", "check_common", "check_warm_state"]


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
                 check_input: bool = True) -> tuple[float, int, float, int]:
    """Validate the arguments every solver shares; return ``(alpha, max_iter, tol, verbose)``.

    With ``check_input=False`` the batch and the model are trusted (the caller, e.g. the
    estimator, validated them once); the cheap scalar checks always run.
    """
    if check_input:
        if not isinstance(batch, GraphBatch):
            raise TypeError(f"batch must be a GraphBatch, got {type(batch).__name__}")
        if not isinstance(model, PairwiseModel):
            raise TypeError(f"model must be a PairwiseModel, got {type(model).__name__}")
        if batch.labels is None:
            raise ValueError("batch.labels must be set: the solvers learn from labelled examples")
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
