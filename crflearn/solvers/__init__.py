"""Learning algorithms: plain functions over a GraphBatch and a PairwiseModel.

Every solver has the signature::

    fit_<name>(batch, model, *, alpha, max_iter, tol, verbose=0, random_state=None,
               warm_start=None, callback=None, **options) -> SolverResult

where ``alpha`` is the L2 strength lambda of ``P(w) = alpha/2 ||w||^2 + 1/n sum_i loss_i(w)``
(the structured-SVM ``C`` is ``1 / (alpha n)``). Use :func:`get_solver` to look
one up by name.
"""

from __future__ import annotations

import importlib

from ._base import SolverResult
from ._history import COLUMNS, ConvergenceHistory

__all__ = ["get_solver", "SOLVER_NAMES", "SolverResult", "ConvergenceHistory", "COLUMNS"]

_REGISTRY = {
    "idal": ("crflearn.solvers.idal", "fit_idal"),
    "bcfw": ("crflearn.solvers.bcfw", "fit_bcfw"),
    "subgradient": ("crflearn.solvers.subgradient", "fit_subgradient"),
    "cutting_plane": ("crflearn.solvers.cutting_plane", "fit_cutting_plane"),
    "lbfgs": ("crflearn.solvers.lbfgs", "fit_lbfgs"),
}
SOLVER_NAMES = tuple(_REGISTRY)


def get_solver(name: str):
    """The solver function registered under ``name`` (one of :data:`SOLVER_NAMES`)."""
    if name not in _REGISTRY:
        raise ValueError(f"solver must be one of {list(_REGISTRY)}, got {name!r}")
    module, attr = _REGISTRY[name]
    return getattr(importlib.import_module(module), attr)
