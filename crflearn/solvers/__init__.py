"""Learning algorithms: plain functions over a GraphBatch and a PairwiseModel.

Every solver has the signature::

    fit_<name>(batch, model, *, alpha, max_iter, tol, verbose=0, random_state=None,
               warm_start=None, callback=None, check_input=True, **options) -> SolverResult

where ``alpha`` is the L2 strength lambda of ``P(w) = alpha/2 ||w||^2 + 1/n sum_i loss_i(w)``
(the structured-SVM ``C`` is ``1 / (alpha n)``). The registry (:data:`SOLVERS`,
:func:`get_solver_spec`) says what each solver minimises and which options it takes;
:class:`SolverLoop` is the one iterate/stop/record loop they all run.
"""

from __future__ import annotations

from ._base import SolverResult
from ._history import COLUMNS, ConvergenceHistory, relative_gap
from ._loop import SolverLoop
from ._registry import SOLVER_NAMES, SOLVERS, SolverSpec, get_solver, get_solver_spec

__all__ = ["get_solver", "get_solver_spec", "SOLVERS", "SOLVER_NAMES", "SolverSpec", "SolverResult",
           "SolverLoop", "ConvergenceHistory", "COLUMNS", "relative_gap"]
