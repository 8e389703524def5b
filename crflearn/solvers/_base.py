"""What every solver returns, and the shared stopping/reporting helpers."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning

__all__ = ["SolverResult", "report_progress", "warn_not_converged", "warn_interrupted"]


@dataclass
class SolverResult:
    """The outcome of a solver run.

    Attributes
    ----------
    w : ndarray (model.size,)
        Learned weights.
    n_iter : int
        Iterations (epochs / outer steps) run in total, warm starts included.
    state : dict
        Solver-specific arrays for a warm start (pass back as ``warm_start=``).
    history : dict of 1-D arrays
        The common convergence record (see :mod:`crflearn.solvers._history`).
    converged : bool
        Whether ``tol`` was met.
    interrupted : bool
        Whether training stopped on ``KeyboardInterrupt`` (the last iterate is kept).
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


def report_progress(verbose: int, row: dict, solver: str) -> None:
    """Print one progress line when ``verbose`` is truthy (the verbose output channel)."""
    if not verbose:
        return
    print(f"[{solver}] iter {row['iteration']:4d}  t={row['time']:8.3f}s  primal={row['primal']:.6e}  "
          f"dual={row['dual']:.6e}  gap={row['gap']:.3e}  residual={row['residual']:.3e}", flush=True)


def warn_not_converged(solver: str, max_iter: int, gap: float, tol: float, residual: float | None = None) -> None:
    """Warn that ``max_iter`` ended before ``tol`` was met, naming the criterion that failed."""
    if residual is not None and gap <= tol:
        what = f"constraint residual {residual:.3e} > tol={tol:g} (relative gap {gap:.3e} is below tol)"
    elif residual is not None and residual > tol:
        what = f"relative gap {gap:.3e} and constraint residual {residual:.3e} > tol={tol:g}"
    else:
        what = f"relative gap {gap:.3e} > tol={tol:g}"
    warnings.warn(f"{solver} stopped at max_iter={max_iter} with {what}; increase max_iter or tol",
                  ConvergenceWarning, stacklevel=3)


def warn_interrupted(solver: str, n_iter: int) -> None:
    warnings.warn(f"{solver} interrupted by the user (KeyboardInterrupt) after {n_iter} iterations; "
                  "the last iterate is kept and usable", RuntimeWarning, stacklevel=3)
