"""IDAL with partial labels: unknown nodes (label code -1) marginalised, by the concave-convex procedure.

With ``A_i(w)`` IDAL's relaxed log-partition of example ``i`` (the maximum over the local polytope of
``<theta_i(w) + l_i, mu> + sum_c h_c(mu_c)``, :mod:`crflearn.solvers.idal`) and ``A_i^y(w)`` the same
maximum with the known nodes clamped to their labels (the unknown nodes free), the objective is::

    F(w) = alpha/2 ||w||^2 + 1/n sum_i s_i [A_i(w) - A_i^y(w)]

which is IDAL's objective when every label is known (``A_i^y = <w, psi_i>``) and, on forests with
``entropy="shannon"`` and ``kappa=1``, the exact marginal negative log-likelihood. ``F`` is a
difference of convex functions; each CCCP round linearises ``-A^y`` at the current ``w_t``: its
gradient is ``Psi nu_t``, ``nu_t`` the clamped relaxed marginals at ``w_t``, so the round is an
ordinary IDAL fit whose ground-truth statistics are the soft ``psi* = sum_i s_i Psi_i nu_t``. The
round's IDAL run stops on its own certified relative gap (``tol / 10``), which makes ``F`` decrease
from round to round up to that gap. The rounds share one IDAL engine: a new ``psi*`` moves the
weights by ``(psi*_new - psi*_old) / (alpha n)``, which keeps ``w = (psi* - Psi mu) / (alpha n)``.

The clamped maximum is solved exactly as a smaller relaxed-inference problem: the known nodes are
eliminated (an edge to a known node adds its scores to the unary of the unknown endpoint and its
entropy to that node's entropy, because the edge block is then the node marginal times a one-hot),
and the remaining graph is solved by IDAL's inference engine (no features, no weight coupling) with
the same entropy, to a certified gap far below ``tol``.

Reporting, as :func:`~crflearn.solvers.lbfgs.fit_lbfgs` with partial labels (``F`` is not convex: no
certificate): one history row per round, ``primal`` = ``F`` at the round's ``w`` (the round's
certified upper bound plus the exactly computed clamped part), ``dual`` and ``gap`` NaN, ``residual``
= ``||g||^2 / (2 alpha) / |F|`` with ``g = (psi*_t - psi*_{t+1}) / n``, the gradient of ``F`` at the
round's solution (exact when its IDAL run is), and ``converged`` = ``residual <= tol``: a stationary
point, not an optimum. ``inner_gap`` is the round's certified relative gap. ``max_iter`` bounds the
IDAL outer steps of all rounds together; ``iteration`` counts them.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from .._kernels.idal import SHANNON, IdalEntropy, IdalState
from .._kernels.idal_engine import IdalEngine, MonitorSchedule, clean_simplex_rows, drive, initial_rho_range
from ..graphs import GraphBatch
from ..inference.gini import relaxed_engine, solve_relaxed
from ..models import PairwiseModel
from ._base import SolverResult
from ._history import relative_gap
from ._idal_record import idal_result
from ._idal_setup import build_engine
from ._loop import ROUNDOFF, SolverLoop

__all__ = ["has_unknown_labels", "check_partial_options", "partial_runner", "fit_partial", "ClampedInference"]

#: a round's IDAL run stops at the relative certified gap ``INNER_FRACTION * residual`` of the previous round
#: (``FIRST_INNER_TOL`` in the first), never below ``INNER_FRACTION * tol`` (nor ``INNER_FLOOR``, the round-off
#: level of the Shannon certificate); ``converged`` needs a round run to that strictest level
INNER_FRACTION = 0.1
FIRST_INNER_TOL = 1e-2
INNER_FLOOR = 1e-9
#: the clamped inference stops at this fraction of the round's tolerance (gap relative to ``max(|value|, 1)``),
#: not below the floor
INFERENCE_FRACTION = 1e-2
INFERENCE_FLOOR = 1e-11
#: most sweeps of one clamped inference
INFERENCE_SWEEPS = 20000


def has_unknown_labels(batch: GraphBatch) -> bool:
    """Whether some node of ``batch`` has the label code -1 (unknown)."""
    labels = batch.labels
    return labels is not None and labels.size > 0 and int(np.min(labels)) < 0


def check_partial_options(serial: bool) -> None:
    """Refuse the data-parallel solver with partial labels (before any compute)."""
    if not serial:
        raise ValueError("partial labels (label None / code -1) are only supported by the serial IDAL solver: "
                         "use n_jobs=None, n_partitions=None and backend='threads'")


class ClampedInference:
    """The clamped relaxed maximum ``sum_i s_i A_i^y(w)`` and its marginals ``nu`` (module docstring).

    Parameters
    ----------
    batch : GraphBatch
        Labels with -1 on the unknown nodes.
    model : PairwiseModel
    ent : IdalEntropy
        The fit's entropy (per-clique weights already multiplied by the sample weights).
    sample_weight : ndarray (n_examples,)
    rng : numpy Generator
    """

    def __init__(self, batch: GraphBatch, model: PairwiseModel, ent: IdalEntropy, sample_weight: np.ndarray, rng):
        self.batch, self.model, self.k = batch, model, model.n_states
        y, edges = batch.labels, np.asarray(batch.edges, np.int64).reshape(-1, 2)
        self.unknown = unk = y < 0
        self.s_node = sample_weight[batch.example_of_node()]
        self.s_edge = np.repeat(sample_weight, np.diff(batch.edge_offsets))
        new = np.cumsum(unk) - 1
        both = unk[edges[:, 0]] & unk[edges[:, 1]]
        self.both, self.none = both, ~unk[edges[:, 0]] & ~unk[edges[:, 1]]
        mixed = np.flatnonzero(unk[edges[:, 0]] != unk[edges[:, 1]])
        row_known = ~unk[edges[mixed, 0]]  # the known endpoint indexes the rows of the edge scores
        free = np.where(row_known, edges[mixed, 1], edges[mixed, 0])
        self.mixed, self.row_known, self.free = mixed, row_known, free
        self.free_r, self.fixed_state = new[free], y[np.where(row_known, edges[mixed, 0], edges[mixed, 1])]
        # entropy of an edge to a known node, as a function of the free marginal (module docstring)
        parent_known = ~unk[edges[mixed, ent.side[mixed]]]
        share = np.where(parent_known, 1.0, 1.0 - (1.0 if ent.kind == SHANNON else ent.a))
        node_w = ent.node_w[unk] + np.bincount(self.free_r, ent.edge_w[mixed] * share, minlength=int(unk.sum()))
        ex_node = batch.example_of_node()
        ex_edge = np.repeat(np.arange(batch.n_examples), np.diff(batch.edge_offsets))
        node_off = np.concatenate([[0], np.cumsum(np.bincount(ex_node[unk], minlength=batch.n_examples))])
        edge_off = np.concatenate([[0], np.cumsum(np.bincount(ex_edge[both], minlength=batch.n_examples))])
        sub_ent = IdalEntropy(ent.kind, np.ascontiguousarray(node_w), np.ascontiguousarray(ent.edge_w[both]),
                              ent.a, np.ascontiguousarray(ent.side[both]))
        self.engine = _inference_engine(np.ascontiguousarray(new[edges[both]]).reshape(-1, 2), sub_ent,
                                        (node_off.astype(np.int64), edge_off.astype(np.int64)), self.k, rng)

    def solve(self, w: np.ndarray, tol: float) -> tuple[float, np.ndarray, np.ndarray]:
        """``(sum_i s_i A_i^y(w), nu_nodes (N, K), nu_edges (E, K, K))`` at ``w`` (certified within
        ``tol * max(|value|, 1)``; the value is the certified lower bound, at the returned marginals)."""
        k, y, unk, eng = self.k, self.batch.labels, self.unknown, self.engine
        unary, pairwise = self.model.potentials(w, self.batch)
        unary = unary * self.s_node[:, None]
        pair = np.broadcast_to(pairwise, (self.batch.n_edges, k, k)) * self.s_edge[:, None, None]
        known = np.flatnonzero(~unk)
        ends = self.batch.edges[self.none]
        const = float(unary[known, y[known]].sum() + pair[self.none, y[ends[:, 0]], y[ends[:, 1]]].sum())
        base_n = unary[unk]
        pm = pair[self.mixed]
        rows = np.arange(len(self.mixed))
        np.add.at(base_n, self.free_r, np.where(self.row_known[:, None], pm[rows, self.fixed_state, :],
                                                pm[rows, :, self.fixed_state]))
        np.copyto(eng.graph.base_n, base_n)
        np.copyto(eng.graph.base_e, pair[self.both].reshape(-1, k * k))
        value = _solve_relaxed(eng, tol) + const
        return value, *self._marginals(clean_simplex_rows(eng.state.mu_n), eng.repaired.reshape(-1, k, k))

    def update(self, engine: IdalEngine, w: np.ndarray, tol: float, primal: float = np.nan) -> tuple[float, float]:
        """The CCCP step at ``w`` (the solution of the round whose certified upper bound is ``primal``): the
        clamped marginals there become ``engine``'s ground-truth statistics. Returns ``(F(w), residual)``
        (module docstring; NaN without ``primal``)."""
        value, nu_n, nu_e = self.solve(w, tol)
        psi_old = engine.psi_star
        psi = self.model.to_kernel(self.model.expected_joint_feature(
            self.batch, nu_n * self.s_node[:, None], nu_e * self.s_edge[:, None, None]))  # sum_i s_i Psi_i nu_i
        n, wuT, wp = self.batch.n_examples, *engine.weights
        objective = primal + (float(np.vdot(wuT, psi_old[0]) + np.vdot(wp, psi_old[1])) - value) / n
        grad = np.concatenate([(psi_old[0] - psi[0]).ravel(), (psi_old[1] - psi[1]).ravel()]) / n
        _set_psi_star(engine, psi)
        return objective, relative_gap(float(grad @ grad) / (2.0 * engine.alpha), objective)

    def _marginals(self, sub_n: np.ndarray, sub_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The marginals of the whole batch from those of the free nodes and edges."""
        k, y, unk, edges = self.k, self.batch.labels, self.unknown, self.batch.edges
        nu_n = np.zeros((self.batch.n_nodes, k))
        nu_n[unk] = sub_n
        nu_n[~unk, y[~unk]] = 1.0
        nu_e = np.zeros((self.batch.n_edges, k, k))
        nu_e[self.both] = sub_e
        ends = edges[self.none]
        nu_e[np.flatnonzero(self.none), y[ends[:, 0]], y[ends[:, 1]]] = 1.0
        rk, ck = self.row_known, ~self.row_known
        nu_e[self.mixed[rk], self.fixed_state[rk], :] = nu_n[self.free[rk]]
        nu_e[self.mixed[ck], :, self.fixed_state[ck]] = nu_n[self.free[ck]]
        return nu_n, nu_e


def _inference_engine(edges: np.ndarray, ent: IdalEntropy, offsets: tuple, k: int, rng) -> IdalEngine:
    """IDAL's core without features and without weight coupling on the free part (scores set by
    :meth:`ClampedInference.solve`), started from uniform marginals."""
    n, n_edges = len(ent.node_w), len(edges)
    state = IdalState(np.full((n, k), 1.0 / k), np.full((n_edges, k * k), 1.0 / k ** 2),
                      np.zeros((n_edges, 2, k)), np.empty((n_edges, 2, k)))
    weights = np.concatenate([ent.node_w, ent.edge_w])
    scale = float(np.median(weights[weights > 0])) if np.any(weights > 0) else 1.0
    rho = 2.0 * scale / max(2.0 * n_edges / max(n, 1), 1.0)
    return relaxed_engine(np.zeros((n, k)), np.zeros((n_edges, k * k)), edges, ent, state, rho=rho, offsets=offsets,
                          rng=rng)


def _solve_relaxed(engine: IdalEngine, tol: float) -> float:
    """Run the inference engine (warm: its last marginals and messages) until its certified gap is
    ``<= tol * max(|upper|, 1)``; returns the lower bound (the objective at the repaired marginals)."""
    if engine.n_nodes == 0:
        return 0.0
    engine.best_lower = -np.inf  # new scores, new maximum
    return float(solve_relaxed(engine, INFERENCE_SWEEPS, tol)["dual"])


def _set_psi_star(engine: IdalEngine, psi: tuple[np.ndarray, np.ndarray]) -> None:
    """New ground-truth statistics; the weights move with them (``w = (psi* - Psi mu) / (alpha n)``)."""
    old_u, old_p = engine.psi_star
    wuT, wp = engine.weights  # moved in place: the kernels hold these arrays
    wuT += (psi[0] - old_u) * engine.inv_lam_n
    wp += (psi[1] - old_p) * engine.inv_lam_n
    engine.psi_star = (psi[0].copy(), psi[1].copy())
    engine.best_lower = -np.inf  # a new subproblem: earlier lower bounds do not hold


def fit_partial(batch: GraphBatch, model: PairwiseModel, *, spec: dict, warm: dict | None, random_state,
                loop: SolverLoop, monitor_every, rho_schedule: str, w0: np.ndarray | None = None,
                return_state: bool = True) -> SolverResult:
    """The CCCP rounds of the module docstring (``spec``: keywords of ``build_engine``; ``w0`` the weights
    of a warm start, whose first clamped marginals are computed there; the duals in the result's state
    when ``return_state``)."""
    rng = np.random.default_rng(random_state)
    unknown = batch.labels < 0
    engine = build_engine(replace(batch, labels=np.where(unknown, 0, batch.labels)), model, warm=warm, rng=rng,
                          **spec)
    if len(engine.graph.base_n):  # loss-augmented: the loss of an unknown node is undefined, none
        engine.graph.base_n[unknown] = 0.0
    weights = spec.get("sample_weight")
    clamp = ClampedInference(batch, model, engine.ent, np.ones(batch.n_examples) if weights is None else weights,
                             rng)
    tol = loop.tol
    strict, inner_tol = max(INNER_FRACTION * tol, INNER_FLOOR), max(FIRST_INNER_TOL, INNER_FRACTION * tol)
    clamp.update(engine, np.zeros(model.size) if w0 is None else w0, _inference_tol(inner_tol))
    steps, it0 = loop.iterations(), loop.history.last_iteration
    calls0, per_step = loop.history.last_oracle_calls, spec["inner_epochs"] * batch.n_examples
    with loop:
        while True:
            last = _round(engine, steps, loop, inner_tol, monitor_every, rho_schedule, spec["rho"])
            if last is None:
                break
            w = model.from_kernel(*engine.weights)
            objective, residual = clamp.update(engine, w, _inference_tol(inner_tol), last["primal"])
            if loop.record(last["it"], primal=objective, dual=np.nan, gap=np.nan, residual=residual, w=w,
                           oracle_calls=calls0 + (last["it"] - it0) * per_step, rho=engine.rho,
                           inner_gap=relative_gap(last["gap"], last["primal"])):
                break
            if residual <= tol * (1.0 + ROUNDOFF) and inner_tol <= strict:  # non-convex: a stationary point
                loop.converged = True
                break
            if loop.is_last:
                break
            inner_tol = max(min(FIRST_INNER_TOL, INNER_FRACTION * residual), strict)
    result = idal_result(engine.weights, engine.state if return_state else None, engine.rho, loop, model, batch,
                         spec["kappa"], spec["entropy"], sample_weight=weights)
    result.w = loop.recorded_w(np.zeros(model.size))
    result.state["w"] = result.w.copy()
    result.info["certified"] = False
    return result


def _inference_tol(inner_tol: float) -> float:
    """The tolerance of the clamped inference after a round run to ``inner_tol``."""
    return max(INFERENCE_FRACTION * inner_tol, INFERENCE_FLOOR)


def _round(engine: IdalEngine, steps, loop: SolverLoop, inner_tol: float, monitor_every, rho_schedule: str,
           rho0: float) -> dict | None:
    """One CCCP round: IDAL outer steps (drawn from the shared iterator ``steps``) until the certified
    relative gap of the round's convex problem is ``<= inner_tol`` or the steps run out. Returns the
    last certificate row with its iteration ``"it"`` (None when no step was left)."""
    last: dict = {}

    def record(it: int, row: dict) -> bool:
        last.update(row, it=it)
        return relative_gap(row["gap"], row["primal"]) <= inner_tol

    drive(engine, steps, record, schedule=MonitorSchedule(monitor_every, inner_tol),
          is_last=lambda it: loop.is_last, rel_gap=lambda row: relative_gap(row["gap"], row["primal"]),
          adaptive=rho_schedule == "adaptive", rho_bounds=initial_rho_range(rho0), monitoring=loop.monitoring,
          cheap_rows=monitor_every == "auto")
    return last or None


def partial_runner(batch: GraphBatch, serial: bool, warm_start: dict | None):
    """``fit_partial`` with the warm-start weights bound when ``batch`` has unknown labels (the data-parallel
    solver refused first: ValueError), else None (the fully labelled solvers)."""
    if not has_unknown_labels(batch):
        return None
    check_partial_options(serial)
    if np.all(batch.labels < 0):
        raise ValueError("every label of the batch is unknown (-1): there is nothing to learn (the partial-label "
                         "objective is alpha/2 ||w||^2, minimised by w = 0)")
    w0 = None if warm_start is None or "w" not in warm_start else np.asarray(warm_start["w"], dtype=np.float64)
    return partial(fit_partial, w0=w0)
