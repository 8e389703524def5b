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

from functools import partial

import numpy as np

from .._kernels.idal_engine import MonitorSchedule, drive, initial_rho_range
from .._validation import check_bool, check_positive
from ..graphs import GraphBatch
from ..models import PairwiseModel
from ._base import SolverResult, check_common, check_sample_weight, check_warm_weights
from ._history import relative_gap
from ._idal_record import Recorder, idal_result, new_history
from ._idal_setup import (ENTROPIES, OTRW_FRACTION, build_engine, check_edge_storage, check_idal_options,
                          check_warm_start, default_rho, exact_primal)
from ._loop import SolverLoop
from .idal_parallel import check_parallel_options, fit_partitioned
from .idal_partial import partial_runner

__all__ = ["fit_idal", "default_rho", "ENTROPIES", "OTRW_FRACTION"]



def fit_idal(batch: GraphBatch, model: PairwiseModel, *, alpha: float = 1e-3, max_iter: int = 100,
             tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
             callback=None, kappa: float = 1.0, rho: float | None = None, inner_epochs: int = 1,
             entropy: str = "gini", loss_augmented: bool = False, sampling: str = "uniform",
             monitor_every="auto", rho_schedule: str = "adaptive", n_jobs: int | None = None,
             n_partitions: int | None = None, backend: str = "threads", sample_weight=None,
             edge_storage: str = "dense", edge_capacity: int | None = None, commit_duals: bool = True,
             return_state: bool = True, check_input: bool = True) -> SolverResult:
    """Train a pairwise CRF with IDAL (dual augmented Lagrangian over the local polytope).

    Parameters
    ----------
    batch : GraphBatch
        Training examples; ``batch.labels`` must be set (-1: unknown node, :mod:`~crflearn.solvers.idal_partial`).
        Any mixture of chains, trees and loopy graphs; dense or CSR node features; optional edge features.
    model : PairwiseModel
        The potentials (shared ``(K, K)`` or edge-feature-dependent ``(q, K, K)`` pairwise).
    alpha : float, default=1e-3
        L2 strength lambda of ``alpha/2 ||w||^2 + 1/n sum_i loss_i(w)``.
    max_iter : int, default=100
        Maximum number of outer steps (each runs ``inner_epochs`` sweeps over all cliques).
    tol : float, default=1e-3
        Stop when the certified relative gap ``(primal - dual) / |primal| <= tol`` (then ``(P(w) - P*) / |P(w)|
        <= tol``); with unknown labels, at a stationary point (:mod:`~crflearn.solvers.idal_partial`).
    verbose : int, default=0
        Print one progress line per recorded row when > 0.
    random_state : int, numpy Generator or None
        Seed of the sweep orders. Same seed, same history (except the time columns).
    warm_start : dict, optional
        ``state`` of a previous result on the same batch; ``alpha``, ``kappa``, ``rho`` may change.
    callback : callable, optional
        ``callback(info)`` after each recorded row with the row and ``"w"``; returning True stops.
    kappa : float, default=1.0
        Entropy weight (temperature): larger is smoother, faster; ``kappa -> 0`` nears the SSVM.
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
        Each clique once per sweep in random order; or draws (with replacement) half uniform, half by the
        Fenchel-Young gaps of the last certificate row: much slower on OCR and snakes (docs/benchmarks.md 0.8).
    monitor_every : int or "auto", default="auto"
        Certify (and test ``tol``) every this many outer steps; ``"auto"`` predicts from the observed rate when
        ``tol`` will be reached (at most every 32 steps) and skips the repair of the lower bound while the
        augmented-Lagrangian gap exceeds ``10 tol``: such rows keep the best earlier lower bound, NaN ``repair``.
    rho_schedule : {"adaptive", "fixed"}, default="adaptive"
        ``"adaptive"``: at each certificate after 10 warm-up steps, ``rho`` doubles when the part of the certified
        gap due to the agreement violation exceeds 16x the augmented-Lagrangian gap, halves in the opposite case,
        within ``[rho0 / 16, 16 rho0]`` (the saddle point does not depend on ``rho``). ``"fixed"`` keeps it.
    n_jobs : int or None, default=None
        Threads running the partitions (None: 1, -1: all cores).
    n_partitions : int or None, default=None
        Example partitions (:mod:`~crflearn.solvers.idal_parallel`); None: ``n_jobs`` or one per Dask worker.
    backend : {"threads", "dask", "simulate"}, default="threads"
        Threads sharing ``w``; the current ``dask.distributed`` client; its rounds on threads (docs/scaling.md).
    sample_weight : array-like of shape (n_examples,), optional
        Weights ``s_i`` of ``alpha/2 ||w||^2 + 1/n sum_i s_i loss_i(w)``: all > 0 (split with the partitions).
    edge_storage : {"dense", "compact"}, default="dense"
        Dense ``K^2`` edge marginals, or at most ``edge_capacity`` non-zeros per edge (Gini; docs/scaling.md).
    edge_capacity : int, optional
        Slots per edge of ``"compact"`` (default 32); fewer than the optimum's blocks need: stalls, uncertified.
    commit_duals : bool, default=True
        ``backend="dask"``: the driver keeps every partition's duals at each certificate and rebuilds a lost
        partition from them; False: from the one-hot start (the fit still ends certified), sparing the driver
        memory of the size of the duals.
    return_state : bool, default=True
        Return the duals (``mu_nodes``, ``mu_edges``, ``xi``: what a warm start needs) in ``state``; False keeps
        only ``w``, ``rho``, ``kappa``, ``entropy`` and ``history`` there (the estimator without ``warm_start``),
        and spares a partitioned fit gathering the duals on the driver.
    check_input : bool, default=True
        Validate the batch and the model (False: the caller did).

    Returns
    -------
    SolverResult
        ``w`` (:class:`~crflearn.models.PairwiseModel` layout), ``state`` (``mu_nodes`` (N, K), ``mu_edges`` (E, K, K)
        or, with ``edge_storage="compact"``, a :class:`~crflearn._kernels.idal_compact.CompactEdges` (its
        ``to_dense()`` is (E, K*K)), ``xi`` (E, 2, K), ``w``, ``rho``, ``kappa``, ``entropy``, ``history``: module
        docstring); ``oracle_calls``.

    Raises
    ------
    ValueError, TypeError
        On invalid arguments, before any compute."""
    alpha, max_iter, tol, verbose = check_common(batch, model, alpha, max_iter, tol, callback, verbose,
                                                 check_input, partial_labels=True)
    kappa, rho, inner_epochs, monitor_every = check_idal_options(
        kappa, rho, inner_epochs, entropy, loss_augmented, sampling, monitor_every, rho_schedule)
    par = check_parallel_options(n_jobs, n_partitions, backend, batch.n_examples, commit_duals=commit_duals)
    return_state = check_bool(return_state, "return_state")
    run = partial_runner(batch, par.serial, warm_start)  # unknown labels: CCCP rounds (None: fully labelled)
    warm, rho = _check_warm(warm_start, rho, batch, model)
    spec = dict(alpha=alpha, kappa=kappa, rho=rho, entropy=entropy, loss_augmented=bool(loss_augmented),
                inner_epochs=inner_epochs, sampling=sampling,
                **_check_idal_weights(sample_weight, batch.n_examples, warm_start),
                **_check_storage(edge_storage, edge_capacity, entropy, model.n_states))
    if spec["rho"] is None:  # after every check: the default is a pass over the data
        spec["rho"] = default_rho(batch, model, alpha, kappa)
    loop = SolverLoop("idal", max_iter=max_iter, tol=tol, verbose=verbose, callback=callback,
                      history=new_history(batch, warm_start))
    run = run or (_fit_serial if par.serial else partial(fit_partitioned, opts=par))
    return run(batch, model, spec=spec, warm=warm, random_state=random_state, loop=loop,
               monitor_every=monitor_every, rho_schedule=rho_schedule, return_state=return_state)


def _fit_serial(batch: GraphBatch, model: PairwiseModel, *, spec: dict, warm: dict | None, random_state,
                loop: SolverLoop, monitor_every, rho_schedule: str, return_state: bool = True) -> SolverResult:
    """The serial solver: one engine on the whole batch (``spec``: keywords of ``build_engine``)."""
    engine = build_engine(batch, model, warm=warm, rng=np.random.default_rng(random_state), **spec)
    weights = spec.get("sample_weight")
    exact = partial(exact_primal, model, batch, alpha=spec["alpha"], loss_augmented=spec["loss_augmented"],
                    sample_weight=weights) if batch.is_forest() else None
    with loop:
        drive(engine, loop.iterations(), Recorder(engine, loop, model, batch.n_examples, spec["inner_epochs"], exact),
              schedule=MonitorSchedule(monitor_every, loop.tol), is_last=lambda it: loop.is_last,
              rel_gap=lambda row: relative_gap(row["gap"], row["primal"]),
              adaptive=rho_schedule == "adaptive", rho_bounds=initial_rho_range(spec["rho"]),
              monitoring=loop.monitoring, cheap_rows=monitor_every == "auto")
    if loop.interrupted:  # the interrupted sweep may have left zeta stale
        engine.rebuild_zeta()
    return idal_result(engine.weights, engine.state if return_state else None, engine.rho, loop, model, batch,
                       spec["kappa"], spec["entropy"], sample_weight=weights)


def _check_warm(warm_start, rho, batch: GraphBatch, model: PairwiseModel) -> tuple[dict | None, float | None]:
    """The checked warm-start arrays (None without a warm start) and ``rho`` (the warm start's when not given)."""
    if warm_start is None:
        return None, rho
    warm = check_warm_start(warm_start, batch.n_nodes, batch.n_edges, model.n_states)
    if rho is None and "rho" in warm_start:
        rho = check_positive(warm_start["rho"], "warm_start['rho']")
    return warm, rho


def _check_idal_weights(sample_weight, n_examples: int, warm_start) -> dict:
    """``{"sample_weight": s}`` for :func:`build_engine`, or ``{}`` for unit weights (the unweighted path exactly).

    Every weight must be > 0 (an example of weight 0 has no entropy left to keep its block updates
    strictly concave: drop it instead). The partitioned solver splits the weights as it splits the examples.
    """
    weights = check_sample_weight(sample_weight, n_examples)
    if weights is not None and np.all(weights == 1.0):
        weights = None
    if weights is None:
        check_warm_weights(warm_start, None)
        return {}
    if np.any(weights == 0):
        raise ValueError(f"solver 'idal' needs every sample_weight > 0; {int(np.sum(weights == 0))} example(s) have "
                         "weight 0: remove them from the training set instead")
    check_warm_weights(warm_start, weights)
    return {"sample_weight": weights}


def _check_storage(edge_storage, edge_capacity, entropy: str, k: int) -> dict:
    """``{}`` for the dense layout (the default path exactly), else the compact layout's :func:`build_engine`
    keywords (every partition of the partitioned solver uses it)."""
    capacity = check_edge_storage(edge_storage, edge_capacity, entropy, k)
    if capacity is None:
        return {}
    return {"edge_storage": "compact", "edge_capacity": capacity}
