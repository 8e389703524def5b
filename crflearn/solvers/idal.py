"""IDAL: SDCA-powered inexact dual augmented Lagrangian for CRF learning.

The solver maximises a relaxed dual of the regularised (softmax-margin) CRF objective
over the local polytope, with a separable entropy surrogate (Gini by default), by an
augmented Lagrangian whose multipliers are messages on the edge/node separators. Each
outer step runs ``inner_epochs`` sweeps of exact clique-wise line-search (SDCA) updates in
random order, then moves the multipliers by ``rho`` times the constraint residual. No
inference subroutine is called: one epoch costs ``O(nnz(X) K + |E| K^2)``.

Objective (``n`` examples, ``lambda = alpha``, ``L_i`` the local polytope of example ``i``,
``h_c`` the entropy surrogate of clique ``c``, ``l`` the Hamming loss when loss-augmented)::

    P(w) = alpha/2 ||w||^2 + 1/n sum_i [ max_{mu_i in L_i} <Psi_i^T w + l_i, mu_i> + sum_c h_c(mu_ic)
                                         - <w, psi*_i> ]

On forests with ``entropy="shannon"`` and ``kappa=1`` this is exactly the CRF negative
log-likelihood (softmax-margin with ``loss_augmented``).

The certificate (DESIGN-idal section 5, :mod:`crflearn._kernels.idal_engine`): every history
row records ``primal`` = the relaxed primal ``P~(w, zeta) >= P(w) >= P*`` at the current
weights and messages, ``dual`` = ``D(mu~) <= P*`` at a feasible repair ``mu~`` of the current
marginals, and ``gap`` = their difference, which bounds ``P(w) - P*``. ``converged`` means
``gap <= tol * |primal|``. Diagnostic columns: ``residual`` (RMS of the agreement violation
``A mu`` per separator), ``al_gap`` (the augmented-Lagrangian Fenchel-Young gap, *not* a
certificate while ``A mu != 0``), ``al_primal``, ``al_dual``, ``relaxed_dual`` (``D(mu)`` at the
unrepaired marginals), ``repair`` (largest L1 distance the repair moved an edge block), ``rho``, and on
forests ``exact_primal`` (exact-inference CRF objective, every 5th recorded row).

References
----------
Hu, X. and Obozinski, G. (2018). SDCA-powered inexact dual augmented Lagrangian method
for fast CRF learning. AISTATS.

Shalev-Shwartz, S. and Zhang, T. (2013). Stochastic dual coordinate ascent methods for
regularized loss minimization. JMLR 14.

Le Priol, R., Piché, A. and Lacoste-Julien, S. (2018). Adaptive stochastic dual coordinate
ascent for conditional random fields. UAI.
"""

from __future__ import annotations

import numpy as np

from .._kernels.idal_engine import MonitorSchedule, drive, initial_rho_range
from .._validation import check_positive
from ..graphs import GraphBatch
from ..models import PairwiseModel
from ._base import SolverResult, check_common
from ._history import ConvergenceHistory, relative_gap
from ._idal_setup import (ENTROPIES, OTRW_FRACTION, build_engine, check_idal_options, check_warm_start,
                          default_rho, exact_primal)
from ._loop import SolverLoop

__all__ = ["fit_idal", "default_rho", "ENTROPIES", "OTRW_FRACTION"]

#: the exact CRF primal is computed on every ``_EXACT_EVERY``-th recorded row (forests only)
_EXACT_EVERY = 5
_DIAGNOSTICS = ("al_gap", "al_primal", "al_dual", "relaxed_dual", "repair")


def fit_idal(batch: GraphBatch, model: PairwiseModel, *, alpha: float = 1e-3, max_iter: int = 100,
             tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
             callback=None, kappa: float = 1.0, rho: float | None = None, inner_epochs: int = 1,
             entropy: str = "gini", loss_augmented: bool = False, sampling: str = "uniform",
             monitor_every="auto", rho_schedule: str = "adaptive", n_jobs: int | None = None,
             n_partitions: int | None = None, backend: str = "threads",
             check_input: bool = True) -> SolverResult:
    """Train a pairwise CRF with IDAL (dual augmented Lagrangian over the local polytope).

    Parameters
    ----------
    batch : GraphBatch
        Training examples; ``batch.labels`` must be set. Any mixture of chains, trees and
        loopy graphs; dense or CSR node features; optional edge features.
    model : PairwiseModel
        The potentials (shared ``(K, K)`` or edge-feature-dependent ``(q, K, K)`` pairwise).
    alpha : float, default=1e-3
        L2 strength lambda of ``alpha/2 ||w||^2 + 1/n sum_i loss_i(w)``.
    max_iter : int, default=100
        Maximum number of outer steps (each runs ``inner_epochs`` sweeps over all cliques).
    tol : float, default=1e-3
        Stop when the certified relative gap ``(primal - dual) / |primal| <= tol``; then
        ``(P(w) - P*) / |P(w)| <= tol`` holds for the returned ``w``.
    verbose : int, default=0
        Print one progress line per recorded row when > 0.
    random_state : int, numpy Generator or None
        Seed of the sweep orders. Same seed, same history (except the time columns).
    warm_start : dict, optional
        ``state`` of a previous result on the same batch; ``alpha``, ``kappa``, ``rho`` may change.
    callback : callable, optional
        ``callback(info)`` after each recorded row with the row and ``"w"``; returning True stops.
    kappa : float, default=1.0
        Weight of the entropy surrogate (the temperature): larger is smoother and converges
        faster; ``kappa -> 0`` approaches the structured SVM.
    rho : float, optional
        Augmented-Lagrangian penalty (and multiplier step). Default: :func:`default_rho`.
    inner_epochs : int, default=1
        Sweeps over all cliques between two multiplier steps.
    entropy : {"gini", "gini_otrw", "shannon"}, default="gini"
        ``"gini"``: ``kappa * G(mu_c)`` on every node and edge, ``G(p) = 1 - ||p||^2``.
        ``"gini_otrw"``: edges oriented as stored, ``kappa * (G(mu_e) - a G(rowsum mu_e))``
        with ``a = 0.5 / K`` (strongly concave), plus ``kappa * G`` on nodes.
        ``"shannon"``: ``kappa`` times the Bethe entropy on forests (edges oriented parent ->
        child, ``H(mu_root) + sum_e [H(mu_e) - H(mu_parent)]``: the exact CRF), a tree-reweighted
        version on loopy graphs (:func:`~crflearn._kernels.idal_engine.orient_forest`).
    loss_augmented : bool, default=False
        Add the unnormalised Hamming loss to the node scores (softmax-margin CRF).
    sampling : {"uniform", "gap"}, default="uniform"
        ``"uniform"``: every clique once per sweep, examples in random order and each
        example's nodes and edges in random order (cache friendly). ``"gap"``: cliques
        drawn with probability half uniform, half proportional to their Fenchel-Young gap
        at the last certificate (as many draws as cliques).
    monitor_every : int or "auto", default="auto"
        Certify (and test ``tol``) every this many outer steps; ``"auto"`` predicts from the
        observed rate when ``tol`` will be reached (at most every 32 steps), and skips the repair of
        the lower bound while the augmented-Lagrangian gap exceeds ``10 tol`` (relative): such rows
        record the best earlier lower bound (still valid) and NaN ``repair``.
    rho_schedule : {"adaptive", "fixed"}, default="adaptive"
        ``"adaptive"``: residual balancing at each certificate (after 10 warm-up steps): ``rho`` is
        doubled when the part of the certified gap due to the agreement violation exceeds 16x the
        augmented-Lagrangian gap, halved in the opposite case, within ``[rho0 / 4, 4 rho0]``
        (``zeta`` is then rebuilt; the saddle point does not depend on ``rho``). ``"fixed"`` keeps ``rho``.
    n_jobs : int or None, default=None
        Threads running the partitions (None: 1, -1: all cores).
    n_partitions : int or None, default=None
        Number of example partitions of the data-parallel solver (None: one per worker).
    backend : {"threads", "dask"}, default="threads"
        Where the partitions run.
    check_input : bool, default=True
        Validate the batch and the model (False: the caller did).

    Returns
    -------
    SolverResult
        ``w`` (flat, :class:`~crflearn.models.PairwiseModel` layout), ``state`` with
        ``mu_nodes`` (N, K), ``mu_edges`` (E, K, K), ``xi`` (E, 2, K), ``w``, ``rho``,
        ``kappa``, ``entropy`` and ``history`` (columns: see the module docstring).
        ``oracle_calls`` counts sweeps times ``n_examples`` (no inference oracle is called).

    Raises
    ------
    ValueError, TypeError
        On invalid arguments, before any compute.
    """
    alpha, max_iter, tol, verbose = check_common(batch, model, alpha, max_iter, tol, callback, verbose,
                                                 check_input)
    if n_jobs not in (None, 1) or n_partitions not in (None, 1) or backend != "threads":
        raise ValueError("the data-parallel IDAL solver is not available yet: leave n_jobs, n_partitions "
                         "and backend at their defaults")
    kappa, rho, inner_epochs, monitor_every = check_idal_options(
        kappa, rho, inner_epochs, entropy, loss_augmented, sampling, monitor_every, rho_schedule)
    warm = None if warm_start is None else check_warm_start(warm_start, batch.n_nodes, batch.n_edges,
                                                            model.n_states)
    if warm is not None and rho is None and "rho" in warm_start:
        rho = check_positive(warm_start["rho"], "warm_start['rho']")
    rho0 = default_rho(batch, model, alpha, kappa) if rho is None else rho
    engine = build_engine(batch, model, alpha=alpha, kappa=kappa, rho=rho0, entropy=entropy,
                          loss_augmented=bool(loss_augmented), warm=warm,
                          rng=np.random.default_rng(random_state), inner_epochs=inner_epochs, sampling=sampling)
    history = ConvergenceHistory(extra=_DIAGNOSTICS + ("rho",) + (("exact_primal",) if batch.is_forest() else ()),
                                 start=None if warm_start is None else warm_start.get("history"))
    loop = SolverLoop("idal", max_iter=max_iter, tol=tol, verbose=verbose, callback=callback, history=history)
    with loop:
        drive(engine, loop.iterations(), _Recorder(engine, loop, model, batch, alpha, inner_epochs),
              schedule=MonitorSchedule(monitor_every, tol), is_last=lambda it: loop.is_last,
              rel_gap=lambda row: relative_gap(row["gap"], row["primal"]),
              adaptive=rho_schedule == "adaptive", rho_bounds=initial_rho_range(rho0), monitoring=loop.monitoring,
              cheap_rows=monitor_every == "auto")
    if loop.interrupted:  # the interrupted sweep may have left zeta stale
        engine.rebuild_zeta()
    return _result(engine, loop, model, batch, kappa, entropy)


class _Recorder:
    """Turns a certificate row of the engine into a :class:`SolverLoop` record (weights, exact primal)."""

    def __init__(self, engine, loop: SolverLoop, model: PairwiseModel, batch: GraphBatch, alpha: float,
                 inner_epochs: int):
        self.engine, self.loop, self.model, self.batch, self.alpha = engine, loop, model, batch, alpha
        self.exact_ok = batch.is_forest()
        self.oracle0, self.it0 = loop.history.last_oracle_calls, loop.history.last_iteration
        self.calls_per_step = inner_epochs * batch.n_examples

    def __call__(self, it: int, row: dict) -> bool:
        loop, engine = self.loop, self.engine
        w = self.model.from_kernel(*engine.weights)
        extra = {key: row[key] for key in _DIAGNOSTICS}
        extra["rho"] = engine.rho
        if self.exact_ok and (len(loop.history) + 1) % _EXACT_EVERY == 0:
            with loop.monitoring():
                extra["exact_primal"] = exact_primal(self.model, self.batch, w, self.alpha, engine.graph.base_n)
        return loop.record(it, primal=row["primal"], dual=row["dual"], gap=row["gap"], residual=row["residual"],
                           w=w, oracle_calls=self.oracle0 + (it - self.it0) * self.calls_per_step, **extra)


def _result(engine, loop: SolverLoop, model: PairwiseModel, batch: GraphBatch, kappa: float,
            entropy: str) -> SolverResult:
    hist = loop.finish()
    w = model.from_kernel(*engine.weights)
    st = engine.state
    state = {"mu_nodes": st.mu_n, "mu_edges": st.mu_e.reshape(batch.n_edges, model.n_states, model.n_states),
             "xi": st.xi, "w": w.copy(), "rho": float(engine.rho), "kappa": float(kappa), "entropy": entropy,
             "history": hist}
    info = {"inference": f"none (local polytope, {entropy} surrogate)", "rho": float(engine.rho),
            "kappa": float(kappa), "entropy": entropy}
    return SolverResult(w=w, n_iter=loop.n_iter, state=state, history=hist, converged=loop.converged,
                        interrupted=loop.interrupted, info=info)
