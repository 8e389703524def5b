"""Gini-relaxed inference over the local polytope, for fixed potentials.

:func:`gini_infer` solves

.. math::

    \\max_{\\mu \\in \\mathbb{L}} \\; \\langle \\theta, \\mu \\rangle + \\kappa \\sum_c G(\\mu_c),
    \\qquad G(p) = 1 - \\|p\\|^2,

where :math:`\\mathbb{L}` is the local polytope (every node and edge block in its simplex,
edge row/column sums equal to the node marginals) and the sum runs over nodes and edges.
It uses the machinery of the IDAL solver without the weight coupling: an augmented
Lagrangian whose multipliers are messages, exact clique-wise line-search updates in
random order, and a multiplier step after every sweep. The maximiser is unique (the
objective is strongly concave), its value is a smooth function of the potentials and
its gradient with respect to them is the relaxed marginals, so it serves as a
structured loss layer; with a small ``kappa`` the node marginals approach a MAP
relaxation and their argmax is a MAP heuristic on loopy graphs.

The outer loop, the certificate and the adaptive penalty are those of the IDAL solver
(:mod:`crflearn._kernels.idal_engine`), run without features and without weight coupling.
The result is certified: ``upper_bound`` (the message dual, valid for any messages) and
``lower_bound`` (the objective at a feasible repair of the marginals) bracket the relaxed
maximum, and ``converged`` means ``upper_bound - lower_bound <= tol * max(|upper_bound|, 1)``.

References
----------
Hu, X. and Obozinski, G. (2018). SDCA-powered inexact dual augmented Lagrangian method
for fast CRF learning. AISTATS.

Niculae, V., Martins, A., Blondel, M. and Cardie, C. (2018). SparseMAP: differentiable
sparse structured inference. ICML.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._kernels.idal import GINI, IdalEntropy, IdalGraph, IdalState, IdalWeights
from .._kernels.idal_engine import (IdalEngine, MonitorSchedule, clean_simplex_rows, drive, incidence,
                                    initial_rho_range)
from .._kernels.simplex import project_simplex
from .._validation import check_batch_structure, check_int, check_nonnegative, check_positive, check_potentials
from ..models import FeatureView

__all__ = ["gini_infer", "gini_infer_batch", "GiniInferenceResult"]


@dataclass
class GiniInferenceResult:
    """Outcome of :func:`gini_infer` / :func:`gini_infer_batch`.

    Attributes
    ----------
    node_marginals : ndarray (n_nodes, n_states)
        Relaxed node marginals (each row in the simplex, often sparse).
    edge_marginals : ndarray (n_edges, n_states, n_states)
        Relaxed edge marginals: the repaired (feasible) point of the certificate, whose row and
        column sums equal the node marginals exactly.
    value : float
        ``<theta, mu> + kappa * sum_c G(mu_c)`` at the returned marginals (equals ``lower_bound``).
    bound : float
        Same as ``upper_bound`` (kept for compatibility).
    upper_bound : float
        Certified upper bound on the relaxed maximum (the message dual at the final messages).
    lower_bound : float
        Certified lower bound: the objective at a feasible repair of the returned marginals.
    residual : float
        Root mean square over separators of the agreement violation ``||A mu||`` of the solver's
        last iterate (before the repair; a diagnostic).
    n_iter : int
        Sweeps (each followed by a multiplier step) performed.
    converged : bool
        Whether ``upper_bound - lower_bound <= tol * max(|upper_bound|, 1)``.
    """

    node_marginals: np.ndarray
    edge_marginals: np.ndarray
    value: float
    bound: float
    upper_bound: float
    lower_bound: float
    residual: float
    n_iter: int
    converged: bool


def gini_infer(unary, pairwise, edges, kappa: float = 1.0, max_iter: int = 1000, tol: float = 1e-6,
               rho: float | None = None, random_state: int | None = 0) -> GiniInferenceResult:
    """Gini-relaxed marginal inference for fixed potentials (one graph).

    Parameters
    ----------
    unary : array-like of shape (n_nodes, n_states)
        Node scores (log-potentials). ``-inf`` forbids a state.
    pairwise : array-like of shape (n_states, n_states) or (n_edges, n_states, n_states)
        Edge scores, shared or per edge; ``pairwise[e, a, b]`` scores ``y_s = a, y_t = b``.
    edges : array-like of shape (n_edges, 2)
        Undirected edges (any graph, loops allowed).
    kappa : float, default=1.0
        Weight of the Gini entropy ``G(p) = 1 - ||p||^2`` on every node and edge block.
        Small values approach the LP (MAP) relaxation; large values smooth more.
    max_iter : int, default=1000
        Maximum number of sweeps (one multiplier step after each).
    tol : float, default=1e-6
        Stop when the certified gap ``upper_bound - lower_bound <= tol * max(|upper_bound|, 1)``.
    rho : float, optional
        Initial augmented-Lagrangian penalty (adapted). Default ``2 * kappa / max(mean degree, 1)``.
    random_state : int, numpy Generator or None, default=0
        Seed of the random sweep order (fixed by default so results are reproducible).

    Returns
    -------
    GiniInferenceResult

    Notes
    -----
    The objective is ``sum_v <unary_v, mu_v> + sum_e <pairwise_e, mu_e> + kappa * sum_c G(mu_c)``.
    A graph without edges is solved exactly in one pass (independent sparsemax per node).
    """
    u, p, e = check_potentials(unary, pairwise, edges)
    offsets = (np.array([0, len(u)], np.int64), np.array([0, len(e)], np.int64))
    return _solve(u, p, e, offsets, kappa, max_iter, tol, rho, random_state)


def gini_infer_batch(unary, pairwise, edges, node_offsets, edge_offsets, *, kappa: float = 1.0,
                     max_iter: int = 1000, tol: float = 1e-6, rho: float | None = None,
                     random_state: int | None = 0) -> GiniInferenceResult:
    """:func:`gini_infer` on a flat batch of graphs (the layout of :class:`~crflearn.graphs.GraphBatch`).

    ``edges`` hold global node indices; example ``i`` owns nodes
    ``node_offsets[i]:node_offsets[i + 1]`` and edges ``edge_offsets[i]:edge_offsets[i + 1]``.
    The examples are solved jointly (one sweep visits them all, example by example); the
    certificate and ``tol`` apply to the summed objective. Returns the relaxed marginals of
    every node and edge (e.g. for ``predict_marginals(method="relaxed")``).
    """
    u, p, e = check_potentials(unary, pairwise, edges)
    node_offsets = np.ascontiguousarray(node_offsets, dtype=np.int64)
    edge_offsets = np.ascontiguousarray(edge_offsets, dtype=np.int64)
    check_batch_structure(e, node_offsets, edge_offsets, len(u))
    return _solve(u, p, e, (node_offsets, edge_offsets), kappa, max_iter, tol, rho, random_state)


def _solve(u, p, e, offsets, kappa, max_iter, tol, rho, random_state) -> GiniInferenceResult:
    kappa = check_positive(kappa, "kappa")
    tol = check_nonnegative(tol, "tol")
    rho = check_positive(rho, "rho", allow_none=True)
    max_iter = check_int(max_iter, "max_iter", 1)
    n, k = u.shape
    n_edges = len(e)
    if np.isneginf(u).all(axis=1).any():
        raise ValueError("unary forbids every state (-inf) of some node")
    base_e = p.reshape(-1, k * k) if p.ndim == 3 else p.reshape(1, k * k)
    base_e = np.ascontiguousarray(base_e if n_edges else np.zeros((0, k * k)))
    if n_edges and np.isneginf(base_e).all(axis=1).any():
        j = int(np.flatnonzero(np.isneginf(base_e).all(axis=1))[0])
        raise ValueError(f"pairwise forbids every pair (-inf) of edge {j}")
    if rho is None:
        rho = 2.0 * kappa / max(2.0 * n_edges / n, 1.0)
    engine = _engine(u, base_e, e, offsets, kappa, rho, random_state)
    last = solve_relaxed(engine, max_iter, tol)
    # the returned marginals are the feasible point the lower bound was computed at (the repaired
    # iterate): they agree exactly and are within the certified gap of the maximiser's value
    node_marginals = clean_simplex_rows(engine.state.mu_n)
    edge_marginals = engine.repaired.reshape(n_edges, k, k).copy()
    return GiniInferenceResult(node_marginals=node_marginals, edge_marginals=edge_marginals,
                               value=float(last["dual"]), bound=float(last["primal"]),
                               upper_bound=float(last["primal"]), lower_bound=float(last["dual"]),
                               residual=float(last["residual"]), n_iter=int(last["n_iter"]),
                               converged=bool(last["gap"] <= tol * max(abs(last["primal"]), 1.0)))


def _engine(u, base_e, e, offsets, kappa, rho, random_state) -> IdalEngine:
    """The IDAL core without features (``q = 0``) and without weight coupling (``alpha = 0``),
    started from the independent sparsemax of every clique (which respects ``-inf`` scores)."""
    n, k = u.shape
    n_edges = len(e)
    mu_n = np.empty((n, k))
    mu_e = np.empty((n_edges, k * k))
    buf = np.empty(k * k)
    idx = np.empty(k * k, np.int64)
    for v in range(n):
        project_simplex(u[v], 1.0 / (2 * kappa), mu_n[v], buf, idx)
    for j in range(n_edges):
        project_simplex(base_e[j if base_e.shape[0] > 1 else 0], 1.0 / (2 * kappa), mu_e[j], buf, idx)
    ent = IdalEntropy(GINI, np.full(n, kappa), np.full(n_edges, kappa), 0.0, np.zeros(n_edges, np.int64))
    state = IdalState(mu_n, mu_e, np.zeros((n_edges, 2, k)), np.empty((n_edges, 2, k)))
    return relaxed_engine(u, base_e, e, ent, state, rho=rho, offsets=offsets,
                          rng=np.random.default_rng(random_state))


def relaxed_engine(base_n: np.ndarray, base_e: np.ndarray, edges: np.ndarray, ent: IdalEntropy, state: IdalState, *,
                   rho: float, offsets: tuple, rng) -> IdalEngine:
    """The IDAL core for relaxed inference: clique scores ``base_n`` (N, K) / ``base_e``, no features
    (``q = 0``), no weight coupling (``alpha = 0``), the entropy ``ent`` and the start ``state``
    (also used by :mod:`crflearn.solvers.idal_partial` for its clamped inference)."""
    n, k = base_n.shape
    n_edges = len(edges)
    inc_ptr, inc_slot = incidence(edges, n)
    feats = FeatureView(np.zeros((0, 1)), np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0), True,
                        np.zeros(n), np.zeros((n_edges, 0)), np.zeros(n_edges), False)
    return IdalEngine(IdalGraph(edges, inc_ptr, inc_slot, base_n, base_e), feats,
                      IdalWeights(np.zeros((1, k)), np.zeros((0, k * k))), state, ent, rho=rho, alpha=0.0,
                      n_examples=1, psi_star=None, offsets=offsets, rng=rng)


def solve_relaxed(engine: IdalEngine, max_iter: int, tol: float) -> dict:
    """Run a :func:`relaxed_engine` (from its current state) until its certified gap is
    ``<= tol * max(|upper|, 1)`` or ``max_iter`` sweeps; returns the last certificate row with ``n_iter``."""
    last: dict = {}

    def record(it: int, row: dict) -> bool:
        last.update(row, n_iter=it)
        return row["gap"] <= tol * max(abs(row["primal"]), 1.0)

    drive(engine, range(1, max_iter + 1), record, schedule=MonitorSchedule("auto", tol),
          is_last=lambda it: it >= max_iter, rel_gap=lambda row: row["gap"] / max(abs(row["primal"]), 1.0),
          adaptive=True, rho_bounds=initial_rho_range(engine.rho))
    return last
