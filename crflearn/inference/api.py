"""Public inference functions: marginals, log-partition, MAP and loss-augmented decoding.

All functions take log-potentials (scores): ``unary`` (n, K), ``pairwise``
(K, K) shared or (E, K, K) per edge with ``pairwise[e, a, b]`` scoring
``y_s = a, y_t = b`` for ``edges[e] = (s, t)``; ``-inf`` forbids a state or pair.

Methods
-------
``"auto"``
    Exact on forests (every connected component a tree), otherwise ``"trw"``
    for marginals and ``"trws"`` for MAP. In a batch the choice is per example.
``"exact"``
    Sum-product / max-product with back-pointers along a BFS schedule;
    raises :class:`~crflearn.exceptions.LoopyGraphError` (a ``ValueError``) on a graph with a cycle.
``"trw"`` / ``"bp"``
    Tree-reweighted / loopy sum-product (approximate marginals) with damping.
    TRW uses the edge appearance probabilities of the uniform spanning-tree
    distribution (:func:`~crflearn.inference.edge_appearance_probabilities`);
    its ``log_partition`` is the TRW variational value, an upper bound on the
    true log-partition once converged. BP returns the Bethe approximation.
``"trws"`` / ``"maxproduct"``
    Sequential TRW-S / damped max-product (approximate MAP). The best labelling
    seen over the iterations (each polished by ICM) is kept; the bound is the
    dual value ``sum_v max reparametrised unary + sum_e max reparametrised
    pairwise`` (an upper bound on the optimum), available when all potentials
    are finite.
``"bruteforce"``
    Enumerate all ``K^n`` labellings (refused above 10^6); for tests.

An explicitly named approximate method runs on every example, forests included
(where ``"bp"`` and ``"trw"`` are exact at convergence).

References
----------
Wainwright, Jaakkola and Willsky, "A new class of upper bounds on the log
partition function", IEEE Trans. Information Theory, 2005.
Kolmogorov, "Convergent tree-reweighted message passing for energy
minimization", IEEE TPAMI, 2006.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import partial

import numpy as np
from numpy.typing import ArrayLike

from .._kernels.inference_loopy import LoopyOptions, LoopyOutputs, batch_scores, loopy_pass
from .._kernels.inference_tree import MAX, SUM, Potentials, forest_pass
from .._validation import check_labels, check_nonnegative, check_potentials, check_scores
from ..exceptions import LoopyGraphError
from .bruteforce import bruteforce_map, bruteforce_marginals
from .schedule import InferenceSchedule, _build, make_schedule

__all__ = [
    "InferenceResult",
    "MAPResult",
    "BatchInferenceResult",
    "BatchMAPResult",
    "infer",
    "decode",
    "map_inference",
    "loss_augmented_decode",
    "infer_batch",
    "decode_batch",
    "map_inference_batch",
    "loss_augmented_decode_batch",
    "labeling_score",
]

MARGINAL_METHODS = ("auto", "exact", "trw", "bp", "bruteforce")
MAP_METHODS = ("auto", "exact", "trws", "maxproduct", "bruteforce")
EDGE_MODES = {"full": 0, "sum": 1, "none": 2}
# loopy sum-product caches exp-forms of the pairwise potentials when the largest example
# has at most this many ``n_edges * K * K`` entries (3 cached arrays of that size)
_LOOPY_CACHE_LIMIT = 4_000_000
# placeholders for the outputs of the other semiring (one signature per kernel)
_NO_LABELS = np.empty(0, dtype=np.int64)
_NO_VALUES = np.empty(0)
_NO_NODES = np.empty((0, 0))
_NO_EDGES = np.empty((0, 0, 0))


# --------------------------------------------------------------------------------------------
# result objects
# --------------------------------------------------------------------------------------------
@dataclass
class InferenceResult:
    """Marginals of one graph.

    Attributes
    ----------
    node_marginals : ndarray (n, K)
    edge_marginals : ndarray (E, K, K)
        ``edge_marginals[e, a, b] = P(y_s = a, y_t = b)`` for ``edges[e] = (s, t)``.
    log_partition : float
        Exact log-partition, or the method's approximation (TRW: upper bound).
    exact : bool
    method : str
        The algorithm that ran (``"exact"``, ``"trw"``, ``"bp"``, ``"bruteforce"``).
    n_iter : int
        Message-passing sweeps (0 for exact methods).
    converged : bool
        Whether the approximate method met ``tol`` (True for exact methods).
    """

    node_marginals: np.ndarray
    edge_marginals: np.ndarray
    log_partition: float
    exact: bool
    method: str
    n_iter: int = 0
    converged: bool = True


@dataclass
class MAPResult:
    """MAP labelling of one graph.

    Attributes
    ----------
    labels : ndarray (n,) int64
    score : float
        Score of ``labels`` (``-inf`` when every labelling is forbidden).
    bound : float or None
        Upper bound on the optimal score (equals ``score`` when exact; None when
        the method gives none).
    exact : bool
    method : str
    """

    labels: np.ndarray
    score: float
    bound: float | None
    exact: bool
    method: str


@dataclass
class BatchInferenceResult:
    """Marginals of a flat batch.

    Attributes
    ----------
    node_marginals : ndarray (N, K)
    edge_marginals : ndarray (M, K, K), ndarray (K, K) summed over all edges, or None
        Following the ``edge_marginals`` argument (``"full"``, ``"sum"``, ``"none"``).
    log_partition : ndarray (n_examples,)
    exact : bool
        Whether every example was solved exactly.
    method : str
        ``"exact"``, the approximate method, or ``"exact+trw"`` for a mixed batch.
    exact_examples : ndarray (n_examples,) bool
    n_iter : ndarray (n_examples,) int64
    converged : ndarray (n_examples,) bool
    """

    node_marginals: np.ndarray
    edge_marginals: np.ndarray | None
    log_partition: np.ndarray
    exact: bool
    method: str
    exact_examples: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


@dataclass
class BatchMAPResult:
    """MAP labellings of a flat batch.

    Attributes
    ----------
    labels : ndarray (N,) int64
    scores : ndarray (n_examples,)
    bounds : ndarray (n_examples,)
        Upper bounds on each example's optimum; NaN where the method gives none.
    exact : bool
    method : str
    exact_examples : ndarray (n_examples,) bool
    """

    labels: np.ndarray
    scores: np.ndarray
    bounds: np.ndarray
    exact: bool
    method: str
    exact_examples: np.ndarray


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _check_method(method, allowed: tuple, what: str) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {method!r}")
    if method not in allowed:
        raise ValueError(f"method must be one of {allowed} for {what}, got {method!r}")
    return method


def _check_options(max_iter, tol, damping) -> tuple[int, float, float]:
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be an integer, got {max_iter!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    tol = check_nonnegative(tol, "tol")
    damping = check_nonnegative(damping, "damping")
    if damping >= 1.0:
        raise ValueError(f"damping must be in [0, 1), got {damping!r}")
    return int(max_iter), tol, damping


def _check_unary(unary) -> np.ndarray:
    u = check_scores(unary, "unary")
    if u.ndim != 2 or 0 in u.shape:
        raise ValueError(f"unary must have shape (n_nodes, n_states), both >= 1, got {u.shape}")
    return u


def _potentials(u: np.ndarray, p: np.ndarray) -> Potentials:
    """Bundle validated ``(n, K)`` unary and ``(K, K)`` / ``(E, K, K)`` pairwise arrays for the kernels."""
    pw3 = p if p.ndim == 3 else p[None]
    return Potentials(np.ascontiguousarray(u, dtype=np.float64), np.ascontiguousarray(pw3, dtype=np.float64),
                      bool(p.ndim == 2))


def _prepare(unary, pairwise, edges, node_offsets, edge_offsets, schedule, check_input: bool = True):
    """``(Potentials, InferenceSchedule)`` of a batch (offsets None: one graph).

    The graph structure is validated once, by :func:`make_schedule`; a schedule
    passed in is only checked to belong to these arrays. With ``check_input=False``
    nothing is validated (internal callers that validated already).
    """
    if not check_input:
        if schedule is None:
            e = np.ascontiguousarray(edges, dtype=np.int64).reshape(-1, 2)
            schedule = _build(e, np.asarray(node_offsets, dtype=np.int64), np.asarray(edge_offsets, dtype=np.int64))
        return _potentials(np.asarray(unary), np.asarray(pairwise)), schedule
    u = _check_unary(unary)
    if schedule is None:
        offsets = () if node_offsets is None else (node_offsets, edge_offsets)
        schedule = make_schedule(edges, *offsets, n_nodes=u.shape[0])
    elif not isinstance(schedule, InferenceSchedule):
        raise TypeError(f"schedule must come from make_schedule, got {type(schedule).__name__}")
    elif not schedule.matches(edges, node_offsets, edge_offsets):
        raise ValueError("schedule was built for different edges or offsets; "
                         "rebuild it with make_schedule(edges, node_offsets, edge_offsets)")
    if schedule.n_nodes != u.shape[0]:
        raise ValueError(f"unary has {u.shape[0]} rows but the graphs have {schedule.n_nodes} nodes")
    p = check_scores(pairwise, "pairwise")
    k, m = u.shape[1], schedule.n_edges
    if p.shape not in ((k, k), (m, k, k)):
        raise ValueError(f"pairwise must have shape ({k}, {k}) (shared) or ({m}, {k}, {k}) (per edge), "
                         f"got {p.shape}")
    return _potentials(u, p), schedule


def _infeasible(examples: np.ndarray) -> ValueError:
    return ValueError(f"every labelling of example(s) {examples[:10].tolist()} has score -inf "
                      "(the -inf entries of unary/pairwise forbid all of them)")


def _check_overflow(values: np.ndarray, pots: Potentials, what: str) -> None:
    """Raise when an example's log-partition / score is NaN or +inf (scores beyond the float64 range)."""
    bad = np.flatnonzero(np.isnan(values) | (values == np.inf))
    if len(bad):
        scale = max(np.abs(pots.unary[np.isfinite(pots.unary)]).max(initial=0.0),
                    np.abs(pots.pw3[np.isfinite(pots.pw3)]).max(initial=0.0))
        raise ValueError(f"the {what} of example(s) {bad[:10].tolist()} overflows float64 (scores up to "
                         f"{scale:.3g} summed over a graph leave the float64 range); rescale the potentials")


def _combined_name(exact_mask: np.ndarray, exact_name: str, approx_name: str) -> str:
    if exact_mask.all():
        return exact_name
    if not exact_mask.any():
        return approx_name
    return f"{exact_name}+{approx_name}"


def _exact_examples(sched: InferenceSchedule, method: str, alternatives: str) -> np.ndarray:
    """Mask of the examples solved exactly; ``method="exact"`` on a cycle raises LoopyGraphError."""
    if method == "exact" and not sched.all_forests:
        bad = np.flatnonzero(~sched.is_forest)
        raise LoopyGraphError(f"method='exact' needs forests but example(s) {bad[:10].tolist()} have a cycle; "
                              f"use method={alternatives}")
    if method in ("auto", "exact"):
        return sched.is_forest.copy()
    return np.zeros(sched.n_examples, dtype=bool)


def _per_example(pots: Potentials, sched: InferenceSchedule, solve):
    """Yield ``(i, nodes, edges, solve(unary_i, pairwise_i, local_edges_i))`` for every non-empty example."""
    no, eo = sched.node_offsets, sched.edge_offsets
    for i in range(sched.n_examples):
        if no[i + 1] > no[i]:
            nodes, edges = slice(no[i], no[i + 1]), slice(eo[i], eo[i + 1])
            p = pots.pw3[0] if pots.shared else pots.pw3[edges]
            yield i, nodes, edges, solve(pots.unary[nodes], p, sched.edges[edges] - no[i])


# --------------------------------------------------------------------------------------------
# cores (validated inputs)
# --------------------------------------------------------------------------------------------
def _marginals_core(pots: Potentials, sched: InferenceSchedule, method: str, mode: int,
                    max_iter: int, tol: float, damping: float):
    n, k = pots.unary.shape
    n_ex = sched.n_examples
    node = np.empty((n, k))
    edge_out = np.zeros((sched.n_edges if mode == 0 else (1 if mode == 1 else 0), k, k))
    logz = np.zeros(n_ex)
    n_iter = np.zeros(n_ex, dtype=np.int64)
    conv = np.ones(n_ex, dtype=np.uint8)
    if method == "bruteforce":
        for i, nodes, edges, (nm, em, lz) in _per_example(
                pots, sched, partial(bruteforce_marginals, with_edges=mode != 2)):
            node[nodes], logz[i] = nm, lz
            if mode == 0:
                edge_out[edges] = em
            elif mode == 1:
                edge_out[0] += em.sum(axis=0)
        exact = np.ones(n_ex, dtype=bool)
        name = "bruteforce"
    else:
        exact = _exact_examples(sched, method, "'auto', 'trw' or 'bp'")
        approx = "bp" if method == "bp" else "trw"
        if exact.any():
            forest_pass(pots, sched.tree, exact.astype(np.uint8), SUM, mode, node, edge_out, _NO_LABELS, logz)
        if not exact.all():
            rho = np.ones(sched.n_edges) if approx == "bp" else sched.edge_appearance()
            opts = LoopyOptions(SUM, rho, int(max_iter), float(tol), float(damping), int(_LOOPY_CACHE_LIMIT),
                                int(mode), False, False)
            out = LoopyOutputs(node, edge_out, logz, _NO_LABELS, _NO_VALUES, _NO_VALUES, n_iter, conv)
            loopy_pass(pots, sched.graph, (~exact).astype(np.uint8), opts, out)
        name = _combined_name(exact, "exact", approx)
    nan_nodes = np.isnan(node).any(axis=1)  # only where a pass overflowed (or an example is infeasible)
    node_example = np.repeat(np.arange(n_ex), np.diff(sched.node_offsets))
    _check_overflow(np.where(np.isfinite(logz) & np.isin(np.arange(n_ex), node_example[nan_nodes]), np.nan, logz),
                    pots, "log-partition")
    bad = np.flatnonzero(logz == -np.inf)
    if len(bad):
        raise _infeasible(bad)
    edge_res = edge_out if mode == 0 else (edge_out[0] if mode == 1 else None)
    return node, edge_res, logz, exact, name, n_iter, conv.astype(bool)


def _map_core(pots: Potentials, sched: InferenceSchedule, method: str, max_iter: int, tol: float,
              damping: float):
    n_ex = sched.n_examples
    labels = np.zeros(pots.unary.shape[0], dtype=np.int64)
    scores = np.zeros(n_ex)
    bounds = np.full(n_ex, np.nan)
    if method == "bruteforce":
        for i, nodes, _, (lab, sc) in _per_example(pots, sched, bruteforce_map):
            labels[nodes], scores[i] = lab, sc
        bounds[:] = scores
        return labels, scores, bounds, np.ones(n_ex, dtype=bool), "bruteforce"
    exact = _exact_examples(sched, method, "'auto', 'trws' or 'maxproduct'")
    approx = "maxproduct" if method == "maxproduct" else "trws"
    if exact.any():
        forest_pass(pots, sched.tree, exact.astype(np.uint8), MAX, 2, _NO_NODES, _NO_EDGES, labels, scores)
        bounds[exact] = scores[exact]
    if not exact.all():
        finite = bool(np.isfinite(pots.unary).all() and np.isfinite(pots.pw3).all())
        opts = LoopyOptions(MAX, _NO_VALUES, int(max_iter), float(tol), float(damping), 0, 2,
                            approx == "trws", finite)
        out = LoopyOutputs(_NO_NODES, _NO_EDGES, _NO_VALUES, labels, scores, bounds,
                           np.zeros(n_ex, dtype=np.int64), np.zeros(n_ex, dtype=np.uint8))
        loopy_pass(pots, sched.graph, (~exact).astype(np.uint8), opts, out)
        # the bound is >= the optimum >= the score; remove round-off crossings
        bounds = np.where(np.isnan(bounds), bounds, np.maximum(bounds, scores))
    _check_overflow(scores, pots, "score")
    return labels, scores, bounds, exact, _combined_name(exact, "exact", approx)


def _feasible_labels(res) -> np.ndarray:
    """The labels of a MAP result; raise like :func:`infer` when some example has no labelling of finite score."""
    scores = np.atleast_1d(res.scores if hasattr(res, "scores") else res.score)
    bad = np.flatnonzero(scores == -np.inf)
    if len(bad):
        exact = np.atleast_1d(res.exact_examples if hasattr(res, "exact_examples") else res.exact)
        if exact[bad].all():
            raise _infeasible(bad)
        raise ValueError(f"method={res.method!r} found no labelling of finite score for example(s) "
                         f"{bad[:10].tolist()}; the -inf entries of unary/pairwise may forbid all of them")
    return res.labels


# --------------------------------------------------------------------------------------------
# single graph
# --------------------------------------------------------------------------------------------
def infer(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, method: str = "auto", *,
          max_iter: int = 200, tol: float = 1e-8, damping: float = 0.5) -> InferenceResult:
    """Node and edge marginals and the log-partition of one graph.

    Parameters
    ----------
    unary : array-like of shape (n_nodes, n_states)
        Node log-potentials (``-inf`` forbids a state).
    pairwise : array-like of shape (n_states, n_states) or (n_edges, n_states, n_states)
        Edge log-potentials, shared or per edge.
    edges : array-like of shape (n_edges, 2)
        Node index pairs; no self-loops or duplicates.
    method : {"auto", "exact", "trw", "bp", "bruteforce"}
        See :mod:`crflearn.inference`.
    max_iter, tol, damping : int, float, float
        Loopy message passing only: at most ``max_iter`` sweeps, stop when no
        (max-normalised) log-message moves more than ``tol`` in a sweep;
        geometric damping factor in [0, 1).

    Returns
    -------
    InferenceResult

    Raises
    ------
    ValueError
        Bad input, ``method="exact"`` on a cyclic graph, or no labelling of finite score.
    """
    method = _check_method(method, MARGINAL_METHODS, "marginal inference")
    max_iter, tol, damping = _check_options(max_iter, tol, damping)
    pots, sched = _prepare(unary, pairwise, edges, None, None, None)
    node, edge, logz, exact, name, n_iter, conv = _marginals_core(pots, sched, method, 0, max_iter, tol, damping)
    return InferenceResult(node_marginals=node, edge_marginals=edge, log_partition=float(logz[0]),
                           exact=bool(exact[0]), method=name, n_iter=int(n_iter[0]), converged=bool(conv[0]))


def map_inference(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, method: str = "auto", *,
                  max_iter: int = 100, tol: float = 1e-9, damping: float = 0.5) -> MAPResult:
    """Highest-scoring labelling of one graph, its score and an upper bound.

    Parameters
    ----------
    unary, pairwise, edges : array-like
        As in :func:`infer`.
    method : {"auto", "exact", "trws", "maxproduct", "bruteforce"}
    max_iter, tol, damping : int, float, float
        Loopy message passing only (``damping`` applies to ``"maxproduct"``).

    Returns
    -------
    MAPResult
    """
    method = _check_method(method, MAP_METHODS, "MAP inference")
    max_iter, tol, damping = _check_options(max_iter, tol, damping)
    pots, sched = _prepare(unary, pairwise, edges, None, None, None)
    labels, scores, bounds, exact, name = _map_core(pots, sched, method, max_iter, tol, damping)
    bound = None if np.isnan(bounds[0]) else float(bounds[0])
    return MAPResult(labels=labels, score=float(scores[0]), bound=bound, exact=bool(exact[0]), method=name)


def decode(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, method: str = "auto",
           **options) -> np.ndarray:
    """MAP labels of one graph (see :func:`map_inference`).

    Returns
    -------
    labels : ndarray (n_nodes,) int64

    Raises
    ------
    ValueError
        As :func:`map_inference`, and, like :func:`infer`, when no labelling has a finite
        score (``map_inference`` reports that as ``score = -inf`` instead).
    """
    return _feasible_labels(map_inference(unary, pairwise, edges, method, **options))


def _augment(u: np.ndarray, y_true, loss_weight, check_input: bool = True) -> np.ndarray:
    n, k = u.shape
    if check_input:
        y = check_labels(y_true, n, k, "y_true")
        w = check_nonnegative(loss_weight, "loss_weight")
    else:
        y, w = np.asarray(y_true, dtype=np.int64), float(loss_weight)
    out = u + w
    out[np.arange(n), y] -= w
    return out


def loss_augmented_decode(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, y_true: ArrayLike,
                          loss_weight: float = 1.0, method: str = "auto",
                          **options) -> np.ndarray:
    """Labels maximising score + ``loss_weight`` x Hamming loss to ``y_true``.

    The (unnormalised) Hamming loss adds ``loss_weight * [k != y_true[v]]`` to
    ``unary[v, k]``; the augmented problem is then solved by :func:`decode`.

    Parameters
    ----------
    unary, pairwise, edges : array-like
        As in :func:`infer`.
    y_true : array-like of shape (n_nodes,)
        Ground-truth labels in ``0..n_states-1``.
    loss_weight : float
        Non-negative multiplier of the loss.
    method : str
        As in :func:`map_inference`.

    Returns
    -------
    labels : ndarray (n_nodes,) int64
    """
    method = _check_method(method, MAP_METHODS, "loss-augmented decoding")
    return decode(_augment(_check_unary(unary), y_true, loss_weight), pairwise, edges, method, **options)


def labeling_score(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, labels: ArrayLike) -> float:
    """Score ``sum_v unary[v, y_v] + sum_e pairwise[e, y_s, y_t]`` of a labelling of one graph."""
    u, p, e = check_potentials(unary, pairwise, edges)
    y = check_labels(labels, u.shape[0], u.shape[1], "labels")
    out = np.empty(1)
    batch_scores(_potentials(u, p), e, np.array([0, len(u)], dtype=np.int64), np.array([0, len(e)], dtype=np.int64),
                 y, out)
    return float(out[0])


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------
def infer_batch(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, node_offsets: ArrayLike,
                edge_offsets: ArrayLike, method: str = "auto",
                edge_marginals: str = "full", *, schedule: InferenceSchedule | None = None,
                max_iter: int = 200, tol: float = 1e-8, damping: float = 0.5,
                check_input: bool = True) -> BatchInferenceResult:
    """Marginals and log-partitions of every example of a flat batch, in one kernel call.

    Parameters
    ----------
    unary : array-like of shape (N, K)
        Node log-potentials of all examples, stacked.
    pairwise : array-like of shape (K, K) or (M, K, K)
        Shared, or one matrix per edge of the batch.
    edges : array-like of shape (M, 2)
        Global node indices (see :class:`crflearn.graphs.GraphBatch`).
    node_offsets, edge_offsets : array-like of shape (n_examples + 1,)
        CSR offsets of the examples.
    method : {"auto", "exact", "trw", "bp", "bruteforce"}
        ``"auto"``: exact on the examples that are forests, TRW on the others.
    edge_marginals : {"full", "sum", "none"}
        Return per-edge marginals (M, K, K), their sum over all edges (K, K) --
        computed without allocating (M, K, K) -- or nothing.
    schedule : InferenceSchedule, optional
        From :func:`~crflearn.inference.make_schedule` on the same arrays; reuse it
        across calls to skip the graph preprocessing and its validation.
    max_iter, tol, damping
        Loopy message passing, as in :func:`infer`.
    check_input : bool, default=True
        False skips every validation (potentials, structure, options): for internal
        callers (solvers, estimators, monitors) that validated once already; pass a
        ``schedule`` too. Invalid input then gives undefined results.

    Returns
    -------
    BatchInferenceResult
    """
    if check_input:
        method = _check_method(method, MARGINAL_METHODS, "marginal inference")
        if not isinstance(edge_marginals, str) or edge_marginals not in EDGE_MODES:
            raise ValueError(f"edge_marginals must be 'full', 'sum' or 'none', got {edge_marginals!r}")
        max_iter, tol, damping = _check_options(max_iter, tol, damping)
    pots, sched = _prepare(unary, pairwise, edges, node_offsets, edge_offsets, schedule, check_input)
    node, edge, logz, exact, name, n_iter, conv = _marginals_core(
        pots, sched, method, EDGE_MODES[edge_marginals], max_iter, tol, damping)
    return BatchInferenceResult(node_marginals=node, edge_marginals=edge, log_partition=logz,
                                exact=bool(exact.all()), method=name, exact_examples=exact,
                                n_iter=n_iter, converged=conv)


def map_inference_batch(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, node_offsets: ArrayLike,
                        edge_offsets: ArrayLike, method: str = "auto", *,
                        schedule: InferenceSchedule | None = None, max_iter: int = 100, tol: float = 1e-9,
                        damping: float = 0.5, check_input: bool = True) -> BatchMAPResult:
    """MAP labellings, scores and bounds of every example of a flat batch (one kernel call).

    Parameters are those of :func:`infer_batch` (``schedule``, ``check_input``) and
    :func:`map_inference`.

    Returns
    -------
    BatchMAPResult
    """
    if check_input:
        method = _check_method(method, MAP_METHODS, "MAP inference")
        max_iter, tol, damping = _check_options(max_iter, tol, damping)
    pots, sched = _prepare(unary, pairwise, edges, node_offsets, edge_offsets, schedule, check_input)
    labels, scores, bounds, exact, name = _map_core(pots, sched, method, max_iter, tol, damping)
    return BatchMAPResult(labels=labels, scores=scores, bounds=bounds, exact=bool(exact.all()), method=name,
                          exact_examples=exact)


def decode_batch(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, node_offsets: ArrayLike,
                 edge_offsets: ArrayLike, method: str = "auto",
                 **options) -> np.ndarray:
    """MAP labels of every example of a flat batch (see :func:`map_inference_batch`).

    Returns
    -------
    labels : ndarray (N,) int64

    Raises
    ------
    ValueError
        As :func:`decode`: also when an example has no labelling of finite score.
    """
    return _feasible_labels(map_inference_batch(unary, pairwise, edges, node_offsets, edge_offsets, method,
                                                **options))


def loss_augmented_decode_batch(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike,
                                node_offsets: ArrayLike, edge_offsets: ArrayLike, y_true: ArrayLike,
                                loss_weight: float = 1.0, method: str = "auto", **options) -> np.ndarray:
    """Loss-augmented decoding (Hamming, unnormalised) of every example of a flat batch.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        Ground-truth labels of all nodes.
    loss_weight : float
        Non-negative multiplier of the loss.
    Other parameters
        As in :func:`decode_batch` (``schedule=`` and ``check_input=`` are accepted).

    Returns
    -------
    labels : ndarray (N,) int64
    """
    check_input = options.get("check_input", True)
    if check_input:
        method = _check_method(method, MAP_METHODS, "loss-augmented decoding")
        unary = _check_unary(unary)
    unary = _augment(np.asarray(unary, dtype=np.float64), y_true, loss_weight, check_input)
    return decode_batch(unary, pairwise, edges, node_offsets, edge_offsets, method, **options)
