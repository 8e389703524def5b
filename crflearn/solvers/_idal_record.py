"""History rows and results of IDAL fits, shared by the serial (:mod:`crflearn.solvers.idal`) and the
partitioned (:mod:`crflearn.solvers.idal_parallel`) solvers."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .._kernels.idal_compact import CompactEdges
from ..graphs import GraphBatch
from ..models import PairwiseModel
from ._base import SolverResult
from ._history import ConvergenceHistory
from ._loop import SolverLoop

__all__ = ["Recorder", "idal_result", "new_history", "DIAGNOSTICS"]

#: the exact CRF primal is computed on every ``_EXACT_EVERY``-th recorded row (forests only)
_EXACT_EVERY = 5
DIAGNOSTICS = ("al_gap", "al_primal", "al_dual", "relaxed_dual", "repair")


def new_history(batch: GraphBatch, warm_start: dict | None) -> ConvergenceHistory:
    """The history of an IDAL fit (continuing a warm start's)."""
    return ConvergenceHistory(extra=DIAGNOSTICS + ("rho",) + (("exact_primal",) if batch.is_forest() else ()),
                              start=None if warm_start is None else warm_start.get("history"))


class Recorder:
    """Turns a certificate row into a :class:`SolverLoop` record (weights, exact primal); ``engine`` is
    anything with the current ``weights`` (kernel layout) and ``rho``; ``exact`` maps the weights (model
    layout) to the exact CRF objective (None: no ``exact_primal`` column, e.g. on loopy graphs).

    The serial solver passes :func:`exact_primal` of its batch; the partitioned one sums the partitions'
    :func:`~crflearn.solvers._idal_setup.exact_losses` (the driver computes none of it)."""

    def __init__(self, engine, loop: SolverLoop, model: PairwiseModel, n_examples: int, inner_epochs: int,
                 exact: Callable[[np.ndarray], float] | None):
        self.engine, self.loop, self.model, self.exact = engine, loop, model, exact
        self.oracle0, self.it0 = loop.history.last_oracle_calls, loop.history.last_iteration
        self.calls_per_step = inner_epochs * n_examples

    def __call__(self, it: int, row: dict) -> bool:
        loop, engine = self.loop, self.engine
        w = self.model.from_kernel(*engine.weights)
        extra = {key: row[key] for key in DIAGNOSTICS}
        extra["rho"] = engine.rho
        if self.exact is not None and (len(loop.history) + 1) % _EXACT_EVERY == 0:
            with loop.monitoring():
                extra["exact_primal"] = self.exact(w)
        return loop.record(it, primal=row["primal"], dual=row["dual"], gap=row["gap"], residual=row["residual"],
                           w=w, oracle_calls=self.oracle0 + (it - self.it0) * self.calls_per_step, **extra)


def idal_result(weights, st, rho: float, loop: SolverLoop, model: PairwiseModel, batch: GraphBatch, kappa: float,
                entropy: str, sample_weight: np.ndarray | None = None) -> SolverResult:
    """The :class:`SolverResult` from the kernel-layout ``weights``, the state ``st`` (``mu_n``, ``mu_e``,
    ``xi``; None: a state without the duals) and ``rho`` (compact edge marginals stay compact: dense they would
    take ``8 K^2`` bytes per edge)."""
    hist = loop.finish()
    w = model.from_kernel(*weights)
    state = {"w": w.copy(), "rho": float(rho), "kappa": float(kappa), "entropy": entropy, "history": hist}
    if st is not None:  # the duals (a warm start's): None when the caller did not ask for them
        k = model.n_states
        mu_e = st.mu_e if isinstance(st.mu_e, CompactEdges) else st.mu_e.reshape(batch.n_edges, k, k)
        state.update(mu_nodes=st.mu_n, mu_edges=mu_e, xi=st.xi)
    if sample_weight is not None:  # a warm start must use the same weights (check_warm_weights)
        state["sample_weight"] = sample_weight.copy()
    info = {"inference": f"none (local polytope, {entropy} surrogate)", "rho": float(rho),
            "kappa": float(kappa), "entropy": entropy}
    return SolverResult(w=w, n_iter=loop.n_iter, state=state, history=hist, converged=loop.converged,
                        interrupted=loop.interrupted, info=info)
