"""The IDAL core shared by the solver (:func:`crflearn.solvers.idal.fit_idal`) and Gini-relaxed
inference (:func:`crflearn.inference.gini.gini_infer`): state, sweeps, multiplier steps,
the certificate, the adaptive penalty and the monitoring schedule (plain NumPy around the
kernels of :mod:`crflearn._kernels.idal` and :mod:`crflearn._kernels.idal_monitor`).

Callers validate their input; nothing here does.

Certificate (DESIGN-idal section 5), with ``n`` the number of examples (1 in inference):

* upper bound ``P~(w, zeta) = alpha/2 ||w||^2 + (sum_c h_c*(theta_c) - <w, psi*>) / n``, valid for
  any ``zeta`` because the inner maximum over the local polytope is at most its Lagrangian
  relaxation over the product of simplices;
* lower bound ``D(mu~) = (sum_c h_c(mu~_c) + <l, mu~>) / n - alpha/2 ||w(mu~)||^2`` at the feasible
  point ``mu~`` of :func:`~crflearn._kernels.idal_monitor.transport_repair`, ``w(mu~)`` recomputed
  from scratch.

Their difference bounds both ``P(w) - P*`` and ``P* - D(mu~)``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Iterable, NamedTuple

import numpy as np

from .idal import IdalState, clique_order, idal_sweep, make_scratch, multiplier_update, zeta_from_blocks
from .idal_monitor import idal_monitor, repair_sums, transport_repair

__all__ = ["incidence", "orient_forest", "IdalEngine", "drive", "initial_rho_range", "CertificateProblem",
           "add_terms", "assemble_certificate"]

#: adaptive rho: rebalance when the residual and the square root of the gap differ this much
RHO_BALANCE = 16.0
#: an adaptive rho stays within [rho0 / RHO_RANGE, RHO_RANGE * rho0] (snakes at the defaults: 204 epochs to a
#: certified 1e-3 with 16, 296 with 4, where rho sat at its cap)
RHO_RANGE = 16.0
#: outer steps before the first change of an adaptive rho (the first inner gaps measure the
#: distance of the starting point, not the balance of the penalty)
RHO_WARMUP = 10
#: the multiplier step reads ``A mu`` off ``zeta - xi`` (O(E K)) and recomputes it from the edge blocks
#: (O(E K^2)) every this many steps, so that round-off in the incrementally kept ``zeta`` stays bounded
EXACT_OUTER_EVERY = 16
#: Dykstra rounds of the certificate's repair (per edge, stops early)
REPAIR_ROUNDS = 3
#: node-marginal entries below this are rounded to 0 before the certificate's repair
CLEAN_FLOOR = 1e-12
#: most outer steps between two certificates with ``monitor_every="auto"``
MAX_MONITOR_EVERY = 32
#: :func:`drive` with ``cheap_rows=True`` skips the repair (the costly part of a certificate) while the
#: augmented-Lagrangian gap exceeds this many times ``tol`` (relative): such a row cannot be certified
CHEAP_FACTOR = 10.0


def initial_rho_range(rho0: float) -> tuple[float, float]:
    """Bounds of the adaptive penalty: ``[rho0, RHO_RANGE * rho0]``."""
    return rho0 / RHO_RANGE, rho0 * RHO_RANGE


def incidence(edges: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Node -> separator incidence in CSR form.

    Returns ``inc_ptr`` (n_nodes + 1,) and ``inc_slot`` (2 E,) where the slots of node
    ``v`` are ``inc_slot[inc_ptr[v]:inc_ptr[v + 1]]`` and ``slot = 2 * e + side``
    (``side`` 0 when ``v == edges[e, 0]``, 1 when ``v == edges[e, 1]``).
    """
    n_edges = len(edges)
    owner = np.concatenate([edges[:, 0], edges[:, 1]]) if n_edges else np.zeros(0, np.int64)
    slots = np.concatenate([2 * np.arange(n_edges), 2 * np.arange(n_edges) + 1]).astype(np.int64)
    perm = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=n_nodes) if n_edges else np.zeros(n_nodes, np.int64)
    inc_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return inc_ptr, np.ascontiguousarray(slots[perm], dtype=np.int64)


def orient_forest(edges: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation and weights of the (tree-reweighted) Bethe entropy.

    Every connected component is explored breadth first from its lowest node; an edge points
    from the endpoint reached first (the parent) to the other. Edge weights are
    ``rho_e = min((n_c - 1) / |E_c|, 1 / indeg(child))`` (1 on forests) and node weights
    ``1 - sum_{e into v} rho_e`` (1 on roots, 0 elsewhere on forests), so that every block is
    concave and the entropy is exact on forests.

    Returns ``side`` (E,) int64 (the parent is ``edges[e, side[e]]``), ``node_w`` (N,), ``edge_w`` (E,).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n_edges = len(edges)
    order_pos = np.zeros(n_nodes, np.int64)
    comp = np.arange(n_nodes)
    if n_edges:
        adj = coo_matrix((np.ones(n_edges), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes)).tocsr()
        _, comp = connected_components(adj, directed=False)
        seen = np.zeros(n_nodes, bool)
        pos = 0
        for root in range(n_nodes):
            if not seen[root]:
                nodes = breadth_first_order(adj, root, directed=False, return_predecessors=False)
                seen[nodes] = True
                order_pos[nodes] = pos + np.arange(len(nodes))
                pos += len(nodes)
    side = (order_pos[edges[:, 1]] < order_pos[edges[:, 0]]).astype(np.int64) if n_edges else np.zeros(0, np.int64)
    child = edges[np.arange(n_edges), 1 - side] if n_edges else np.zeros(0, np.int64)
    n_c = np.bincount(comp, minlength=n_nodes).astype(float)
    e_c = np.bincount(comp[edges[:, 0]], minlength=n_nodes).astype(float) if n_edges else np.zeros(n_nodes)
    indeg = np.bincount(child, minlength=n_nodes).astype(float)
    edge_w = np.ones(n_edges)
    if n_edges:
        c = comp[edges[:, 0]]
        edge_w = np.minimum(np.minimum((n_c[c] - 1.0) / e_c[c], 1.0), 1.0 / indeg[child])
    node_w = 1.0 - np.bincount(child, weights=edge_w, minlength=n_nodes)
    return side, np.maximum(node_w, 0.0), edge_w


def clean_simplex_rows(mu: np.ndarray, floor: float = CLEAN_FLOOR) -> np.ndarray:
    """Rows of ``mu`` with entries below ``floor`` set to 0 and renormalised (a copy).

    Round-off leaves 1e-17-sized masses where a block's optimum is 0; the repair would have to
    route them through every edge of the node, which can cost a full mixing step."""
    out = np.where(mu < floor, 0.0, mu)
    out /= out.sum(axis=1, keepdims=True)
    return out


class CertificateProblem(NamedTuple):
    """What the assembly of a certificate needs beyond the partition terms: the current weights in the
    kernel layout, the ground-truth statistics ``psi*`` (None in inference), ``alpha``, the number of
    examples ``n`` and the penalty ``rho``."""

    wuT: np.ndarray
    wp: np.ndarray
    psi_star: tuple | None
    alpha: float
    n: int
    rho: float


def add_terms(parts: list[dict]) -> dict:
    """The sum of partition terms (:meth:`IdalEngine.monitor_terms` or :meth:`IdalEngine.repair_terms`);
    ``repair`` is the largest of the parts."""
    out = {}
    for key, first in parts[0].items():
        if key == "repair":
            out[key] = max(part[key] for part in parts)
        elif isinstance(first, np.ndarray):
            out[key] = sum((part[key] for part in parts[1:]), first.copy())
        else:
            out[key] = sum(part[key] for part in parts)
    return out


def _w_terms(problem: CertificateProblem, wuT, wp) -> tuple[float, float]:
    """``(||w||^2, <w, psi*>)``."""
    if problem.psi_star is None:
        return 0.0, 0.0
    return (float(np.vdot(wuT, wuT) + np.vdot(wp, wp)),
            float(np.vdot(wuT, problem.psi_star[0]) + np.vdot(wp, problem.psi_star[1])))


def assemble_certificate(problem: CertificateProblem, terms: dict, repaired: dict | None,
                         best_lower: float = -np.inf) -> dict:
    """One certificate row from the (summed) terms of the module docstring.

    Returns a dict with ``primal`` (upper bound), ``dual`` (certified lower bound: ``D(mu~)`` from
    ``repaired``, never below ``best_lower``; ``best_lower`` alone when ``repaired`` is None), ``gap``
    (their difference), ``residual`` (RMS of ``A mu`` per separator), ``al_gap`` (the
    augmented-Lagrangian Fenchel-Young gap), ``al_primal``, ``al_dual``, ``relaxed_dual`` (``D(mu)`` at
    the unrepaired marginals), ``repair``, ``value`` (``sum h(mu) + <base, mu>``, unnormalised) and
    ``fresh`` (whether a repair was made).
    """
    n, alpha, rho = problem.n, problem.alpha, problem.rho
    wsq, wpsi = _w_terms(problem, problem.wuT, problem.wp)
    a2, xa = terms["a2"], terms["xa"]
    upper = 0.5 * alpha * wsq + (terms["hstar"] - wpsi) / n
    relaxed_dual = (terms["hsum"] + terms["base_mu"]) / n - 0.5 * alpha * wsq
    lower, t_max = best_lower, np.nan
    if repaired is not None:
        lower = repaired["dual_total"]
        if problem.psi_star is not None:
            inv_lam_n = 1.0 / (alpha * n)
            wu = (problem.psi_star[0] - repaired["ustat"]) * inv_lam_n
            wpp = (problem.psi_star[1] - repaired["pstat"]) * inv_lam_n
            lower = lower / n - 0.5 * alpha * _w_terms(problem, wu, wpp)[0]
        lower, t_max = max(lower, best_lower), repaired["repair"]
    n_edges = terms["n_edges"]
    return {"primal": upper, "dual": lower, "gap": upper - lower,
            "residual": math.sqrt(a2 / (2 * n_edges)) if n_edges else 0.0,
            "al_gap": terms["fy_gap"] / n, "al_primal": upper + 0.5 * rho * a2 / n,
            "al_dual": relaxed_dual - (xa + 0.5 * rho * a2) / n, "relaxed_dual": relaxed_dual,
            "repair": t_max, "value": terms["hsum"] + terms["base_mu"], "fresh": repaired is not None}


class IdalEngine:
    """State and operations of one IDAL run (see the module docstring).

    Parameters
    ----------
    graph, feats, weights, state, ent :
        The kernel bundles of :mod:`crflearn._kernels.idal` (updated in place).
    rho : float
        Augmented-Lagrangian penalty.
    alpha : float
        L2 strength (0 in inference: no weight coupling).
    n_examples : int
        Normaliser ``n`` of the objectives (1 in inference).
    psi_star : tuple of ndarray or None
        Ground-truth statistics ``psi*`` in the kernel layout ``(psi_u (n_inputs, K), psi_p (q, K*K))``;
        None in inference.
    offsets : tuple of ndarray
        ``(node_offsets, edge_offsets)`` of the examples (sweep order).
    rng : numpy Generator
    inner_epochs : int
        Sweeps per outer step.
    sampling : {"uniform", "gap"}
        Clique order of a sweep (see :meth:`next_order`).
    zeta_ready : bool
        ``state.zeta`` already holds ``xi + rho A mu`` with ``A mu = 0`` (a one-hot start with ``xi = 0``:
        ``zeta = 0``), so the construction skips :meth:`rebuild_zeta` (a pass over every edge block).
    """

    def __init__(self, graph, feats, weights, state, ent, *, rho: float, alpha: float, n_examples: int,
                 psi_star, offsets, rng, inner_epochs: int = 1, sampling: str = "uniform", zeta_ready: bool = False):
        self.graph, self.feats, self.weights, self.state, self.ent = graph, feats, weights, state, ent
        self.rho = float(rho)
        self.alpha = float(alpha)
        self.n = int(n_examples)
        self.inv_lam_n = 1.0 / (alpha * n_examples) if alpha > 0 else 0.0
        self.psi_star = psi_star
        self.offsets = offsets
        self.rng = rng
        self.inner_epochs = int(inner_epochs)
        self.sampling = sampling
        n_nodes, k = state.mu_n.shape
        self.n_nodes, self.k = n_nodes, k
        self.n_edges = state.mu_e.shape[0]
        self.n_cliques = n_nodes + self.n_edges
        self.gaps = np.zeros(self.n_cliques)
        self.have_gaps = False
        self.order = np.empty(self.n_cliques, dtype=np.int64)
        self.tau_e = np.full(self.n_edges, np.nan)  # last simplex threshold of every edge (warm starts)
        self.scr = make_scratch(k)
        self.outer = np.zeros(2)  # [||A mu||^2, <xi, A mu>] of the last multiplier step
        self.best_lower = -np.inf  # largest certified lower bound so far (P* does not change during a run)
        self.steps_since_exact = 0
        if not zeta_ready:
            self.rebuild_zeta()

    # -- iterations ------------------------------------------------------------------------
    def rebuild_zeta(self) -> None:
        """``zeta = xi + rho A mu`` (after a change of ``rho`` or an interrupted sweep)."""
        zeta_from_blocks(self.graph, self.state, self.rho, self.outer)
        self.steps_since_exact = 0

    def next_order(self) -> np.ndarray:
        """The clique order of the next sweep (a permutation, or a gap-weighted sample)."""
        if self.sampling == "gap" and self.have_gaps and self.gaps.sum() > 0:
            prob = 0.5 / self.n_cliques + 0.5 * self.gaps / self.gaps.sum()
            return self.rng.choice(self.n_cliques, size=self.n_cliques, p=prob / prob.sum()).astype(np.int64)
        n_ex = len(self.offsets[0]) - 1
        clique_order(self.rng.permutation(n_ex).astype(np.int64), self.rng.random(self.n_cliques),
                     self.offsets[0], self.offsets[1], self.n_nodes, self.order, self.graph.edges)
        return self.order

    def sweep(self, order: np.ndarray) -> None:
        """Exact clique-wise SDCA updates of the cliques ``order`` (indices < ``n_cliques``, nodes first:
        ``c < n_nodes`` is node ``c``, else edge ``c - n_nodes``), in that order, against ``self.weights``
        (which may be swapped for another :class:`IdalWeights` of the same shapes between calls)."""
        idal_sweep(order, self.graph, self.feats, self.weights, self.state, self.ent, self.rho, self.inv_lam_n,
                   self.tau_e, self.scr)

    def multiplier_step(self) -> None:
        """The multiplier step ``xi += rho A mu`` (and ``zeta`` updated): ``A mu`` read off ``zeta - xi``
        (:func:`~crflearn._kernels.idal.multiplier_update`), which is first restored from the blocks
        (:meth:`rebuild_zeta`) every :data:`EXACT_OUTER_EVERY` steps."""
        if self.steps_since_exact + 1 >= EXACT_OUTER_EVERY:
            self.rebuild_zeta()
        else:
            self.steps_since_exact += 1
        multiplier_update(self.state, self.rho, self.rho, self.outer)

    def step(self) -> None:
        """``inner_epochs`` sweeps over all cliques, then the multiplier step ``xi += rho A mu``."""
        for _ in range(self.inner_epochs):
            self.sweep(self.next_order())
        self.multiplier_step()

    # -- certificate -----------------------------------------------------------------------
    def monitor_terms(self) -> dict:
        """The partition-additive terms of the upper bound and the diagnostics (one monitoring pass).

        Returns ``hstar`` (``sum h*(theta)``), ``hsum`` (``sum h(mu)``), ``base_mu`` (``sum <base, mu>``),
        ``fy_gap`` (sum of the clique Fenchel-Young gaps), ``a2`` (``||A mu||^2``), ``xa``
        (``<xi, A mu>``) and ``n_edges``, all unnormalised sums over this engine's cliques; sums of
        these over the partitions of a data set are the terms of the whole data set.
        """
        sums = np.empty(4)
        idal_monitor(self.graph, self.feats, self.weights, self.state, self.ent, self.gaps, sums, self.scr)
        self.have_gaps = True
        return {"hstar": float(sums[0]), "hsum": float(sums[1]), "base_mu": float(sums[2]),
                "fy_gap": float(np.sum(self.gaps)), "a2": float(self.outer[0]), "xa": float(self.outer[1]),
                "n_edges": self.n_edges}

    def repair_terms(self) -> dict:
        """The partition-additive terms of the lower bound: the feasible repair ``mu~`` of the current
        marginals (:func:`~crflearn._kernels.idal_monitor.transport_repair`) and its sums, one edge block
        at a time (:func:`~crflearn._kernels.idal_monitor.repair_sums`: ``mu~`` is never stored).

        Returns ``dual_total`` (``sum h(mu~) + <base, mu~>``), ``ustat`` / ``pstat`` (``Psi mu~`` in the
        kernel layout) and ``repair`` (largest L1 distance an edge block moved).
        """
        mu_n = clean_simplex_rows(self.state.mu_n)
        ustat = np.zeros_like(self.weights.wuT)
        pstat = np.zeros_like(self.weights.wp)
        t_max = np.zeros(1)
        total = repair_sums(self.graph, self.feats, self.ent, mu_n, self.state.mu_e, ustat, pstat, self.scr,
                            REPAIR_ROUNDS, t_max)
        return {"dual_total": float(total), "ustat": ustat, "pstat": pstat, "repair": float(t_max[0])}

    @property
    def repaired(self) -> np.ndarray:
        """The feasible repair ``mu~`` (E, K*K) of the current edge marginals, the point of the lower bound
        of :meth:`repair_terms` (a new array, computed on request)."""
        out = np.empty((self.n_edges, self.k * self.k))
        transport_repair(self.graph, clean_simplex_rows(self.state.mu_n), self.state.mu_e, out, REPAIR_ROUNDS, 0.0)
        return out

    def certify(self, repair_above: float = np.inf) -> dict:
        """The certificate and the diagnostics at the current state (see :func:`assemble_certificate`).

        When the relative augmented-Lagrangian gap exceeds ``repair_above`` and a lower bound is known,
        the repair is skipped: ``dual`` is the best earlier lower bound (still valid), ``repair`` NaN,
        ``fresh`` False.
        """
        terms = self.monitor_terms()
        problem = CertificateProblem(self.weights.wuT, self.weights.wp, self.psi_star, self.alpha, self.n, self.rho)
        row = assemble_certificate(problem, terms, None, self.best_lower)
        if not (row["al_gap"] > repair_above * abs(row["primal"]) and np.isfinite(self.best_lower)):
            row = assemble_certificate(problem, terms, self.repair_terms(), self.best_lower)
        self.best_lower = max(self.best_lower, row["dual"])
        return row

    # -- adaptive penalty ------------------------------------------------------------------
    def adapt_rho(self, row: dict, bounds: tuple[float, float]) -> bool:
        """Residual balancing of ``rho`` on the certificate, like with like: the part of the certified
        gap due to the agreement violation (``gap - al_gap``, which shrinks with the residual) against
        the augmented-Lagrangian gap ``al_gap`` (the inner suboptimality). Doubles ``rho`` when the
        former dominates by ``RHO_BALANCE``, halves it in the opposite case, within ``bounds``;
        rebuilds ``zeta`` on a change. Returns whether it changed."""
        inner = max(float(row["al_gap"]), 0.0)
        penalty = max(float(row["gap"]) - inner, 0.0)  # the part of the certified gap due to A mu != 0
        old = self.rho
        if penalty > RHO_BALANCE * inner and self.rho * 2.0 <= bounds[1]:
            self.rho *= 2.0
        elif inner > RHO_BALANCE * penalty and self.rho * 0.5 >= bounds[0]:
            self.rho *= 0.5
        if self.rho != old:
            self.rebuild_zeta()
        return self.rho != old


class MonitorSchedule:
    """When to compute the certificate: every ``every`` outer steps, or ``"auto"``: predict from the
    last two certified relative gaps (log-linear rate) the step at which ``tol`` is reached and
    certify then (at least every step, at most every ``MAX_MONITOR_EVERY`` steps, growing by at most 2x;
    doubling while the gap does not shrink)."""

    def __init__(self, every, tol: float):
        self.auto = every == "auto"
        self.every = 1 if self.auto else int(every)
        self.tol = tol
        self.next = self.every
        self._last = None

    def due(self, step: int, is_last: bool) -> bool:
        return is_last or step >= self.next

    def update(self, step: int, rel_gap: float) -> None:
        if not self.auto:
            self.next = step + self.every
            return
        k = self.every
        if self._last is not None and rel_gap > 0 and self.tol > 0:
            s0, g0 = self._last
            if 0 < rel_gap < g0 and step > s0:
                rate = (math.log(rel_gap) - math.log(g0)) / (step - s0)
                pred = math.ceil((math.log(self.tol) - math.log(rel_gap)) / rate)
                k = int(min(max(pred, 1), 2 * self.every, MAX_MONITOR_EVERY))
            else:  # no progress measured yet: back off (the first certificates reflect the start)
                k = min(2 * self.every, MAX_MONITOR_EVERY)
        self._last = (step, max(rel_gap, 1e-300))
        self.every = k
        self.next = step + k


def drive(engine: IdalEngine, iterations: Iterable[int], record: Callable[[int, dict], bool], *,
          schedule: MonitorSchedule, is_last: Callable[[int], bool], rel_gap: Callable[[dict], float],
          adaptive: bool, rho_bounds: tuple[float, float], monitoring=nullcontext,
          cheap_rows: bool = False) -> None:
    """The outer loop: step, certify when due, adapt ``rho``, record (``record`` returns True to stop).

    ``cheap_rows``: skip the repair of a certificate (not on the last step) while the relative
    augmented-Lagrangian gap exceeds ``CHEAP_FACTOR * tol`` (see :meth:`IdalEngine.certify`); ``rho``
    adapts on fresh certificates only."""
    repair_above = CHEAP_FACTOR * schedule.tol if cheap_rows and schedule.tol > 0 else np.inf
    first = None
    for it in iterations:
        first = it if first is None else first
        engine.step()
        step = it - first + 1
        if not schedule.due(step, is_last(it)):
            continue
        with monitoring():
            row = engine.certify(repair_above=np.inf if is_last(it) else repair_above)
            rel = rel_gap(row)
            schedule.update(step, rel)
        if record(it, row):
            break
        if adaptive and step > RHO_WARMUP and row["fresh"]:
            with monitoring():
                engine.adapt_rho(row, rho_bounds)
