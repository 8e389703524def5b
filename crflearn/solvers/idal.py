"""IDAL: SDCA-powered inexact dual augmented Lagrangian for CRF learning.

The solver maximises a relaxed dual of the regularised (softmax-margin) CRF objective
over the local polytope, with a separable Gini entropy surrogate, by an augmented
Lagrangian whose multipliers are messages on the edge/node separators. Each outer
step runs ``inner_epochs`` sweeps of exact clique-wise line-search (SDCA) updates in
random order, then moves the multipliers by ``rho`` times the constraint residual. No
inference subroutine is called: one epoch costs ``O(nnz(X) K + |E| K^2)``.

Objectives (``n`` examples, ``lambda = alpha``, cliques ``c`` = nodes and edges)::

    theta_c = Psi_c^T w + l_c - (A^T zeta)_c                       clique scores
    P_rho(w, zeta; xi) = alpha/2 ||w||^2 + 1/n [sum_c h_c*(theta_c) - <w, psi*>
                         + ||zeta - xi||^2 / (2 rho)]              (recorded as ``primal``)
    L_rho(mu; xi) = 1/n [sum_c h_c(mu_c) + <l, mu> - <xi, A mu> - rho/2 ||A mu||^2]
                    - alpha/2 ||w(mu)||^2                           (recorded as ``dual``)

with ``w(mu) = (psi* - Psi mu) / (alpha n)`` and ``zeta = xi + rho A mu``. The recorded
``gap`` is the Fenchel-Young gap ``1/n sum_c [h_c*(theta_c) - <theta_c, mu_c> - h_c(mu_c)]``,
which equals ``primal - dual`` and is never negative. At a fixed point of the outer loop
``A mu = 0`` and both objectives equal the optimum of the relaxed problem; ``primal`` is
always an upper bound on that optimum. The column ``relaxed_dual`` records ``D(mu)``
(``L_rho`` without the multiplier terms), a lower bound once ``residual`` is zero.

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

from .._kernels.idal import clique_order, idal_monitor, idal_outer, idal_sweep_warm
from .._kernels.idal_engine import csr_arrays, incidence
from .._validation import check_int, check_nonnegative, check_positive
from ..graphs import GraphBatch
from ..models import PairwiseModel, hamming_loss_vectors
from ._base import SolverResult, report_progress, warn_interrupted, warn_not_converged
from ._history import ConvergenceHistory, Stopwatch

try:  # exact CRF objective on forests, monitoring only
    from ..inference import infer_batch as _infer_batch
except ImportError:  # pragma: no cover - depends on the inference module being present
    _infer_batch = None

RHO_BALANCE = 10.0  # adaptive rho: rebalance when residual and relative gap differ 10x
RHO_RANGE = 64.0  # ... within [rho0 / 64, 64 rho0]; round-off floors must not drive rho off

__all__ = ["fit_idal", "default_rho", "ENTROPIES"]

ENTROPIES = ("gini", "gini_otrw")
_SAMPLINGS = ("uniform", "gap")
#: fraction of the concavity limit 1/K used by ``gini_otrw`` (a_e = OTRW_FRACTION / K)
OTRW_FRACTION = 0.5
#: the exact CRF primal is computed on every ``_EXACT_EVERY``-th monitored iteration
_EXACT_EVERY = 5



def default_rho(batch: GraphBatch, model: PairwiseModel, alpha: float, kappa: float = 1.0) -> float:
    """The default augmented-Lagrangian penalty of :func:`fit_idal`.

    ``rho * mean_degree = max(2 kappa, median_v ||x_v||^2 / (alpha n))``: the penalty's
    curvature on a node block balances the larger of the entropy curvature and the
    curvature of the regulariser term, as suggested by DESIGN-idal section 4. It is the
    starting value: with ``rho_schedule="adaptive"`` (the default) the solver rebalances it;
    on OCR it settles 4-8x higher (``docs/benchmarks.md``, section 2).

    Parameters
    ----------
    batch : GraphBatch
    model : PairwiseModel
    alpha : float
        Regularisation strength (lambda).
    kappa : float
        Gini weight.

    Returns
    -------
    float
    """
    x = batch.node_features
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel() if batch.is_sparse else np.einsum("ij,ij->i", x, x)
    mean_deg = max(2.0 * batch.n_edges / max(batch.n_nodes, 1), 1.0)
    return float(max(2.0 * kappa, np.median(sq) / (alpha * batch.n_examples)) / mean_deg)


class _Problem:
    """Flat arrays of one training batch (built once per call)."""

    def __init__(self, batch: GraphBatch, model: PairwiseModel, loss_augmented: bool):
        k = model.n_states
        self.k = k
        self.n = batch.n_examples
        self.n_nodes = batch.n_nodes
        self.n_edges = batch.n_edges
        self.edges = np.ascontiguousarray(batch.edges, dtype=np.int64).reshape(-1, 2)
        self.labels = np.asarray(batch.labels, dtype=np.int64)
        self.x_ptr, self.x_idx, self.x_val, self.x_sq = csr_arrays(batch.node_features)
        if batch.edge_features is None:
            self.efeat = np.ones((self.n_edges, 1))
        else:
            self.efeat = np.ascontiguousarray(batch.edge_features, dtype=np.float64)
        self.e_sq = np.einsum("ij,ij->i", self.efeat, self.efeat)
        self.inc_ptr, self.inc_slot = incidence(self.edges, self.n_nodes)
        self.base_n = (hamming_loss_vectors(batch, k) if loss_augmented else np.zeros((self.n_nodes, k)))
        self.base_e = np.zeros((0, k * k))
        self.psi_star = model.joint_feature(batch)
        self.p = model.n_features
        self.q = self.efeat.shape[1]

    def init_state(self):
        k = self.k
        mu_n = np.zeros((self.n_nodes, k))
        mu_n[np.arange(self.n_nodes), self.labels] = 1.0
        mu_e = np.zeros((self.n_edges, k * k))
        if self.n_edges:
            mu_e[np.arange(self.n_edges), self.labels[self.edges[:, 0]] * k + self.labels[self.edges[:, 1]]] = 1.0
        return mu_n, mu_e, np.zeros((self.n_edges, 2, k))

    def weights_of(self, model, batch, mu_n, mu_e, alpha):
        """``w(mu)`` in the kernel layout ``(wuT (p, K), wp (q, K*K))``."""
        k = self.k
        expected = model.expected_joint_feature(batch, mu_n, mu_e.reshape(-1, k, k) if self.n_edges
                                                else np.zeros((0, k, k)))
        w = (self.psi_star - expected) / (alpha * self.n)
        wu, wp = model.split(w)
        return np.ascontiguousarray(wu.T), np.ascontiguousarray(wp.reshape(self.q, k * k))

    def flat_w(self, model, wuT, wp):
        return model.join(wuT.T, wp.reshape(model.pairwise_shape))


def _check_warm_start(warm_start, prob: _Problem):
    if not isinstance(warm_start, dict):
        raise TypeError(f"warm_start must be a SolverResult.state dict or None, got {type(warm_start).__name__}")
    shapes = {"mu_nodes": (prob.n_nodes, prob.k), "mu_edges": (prob.n_edges, prob.k, prob.k),
              "xi": (prob.n_edges, 2, prob.k)}
    out = {}
    for key, shape in shapes.items():
        if key not in warm_start:
            raise ValueError(f"warm_start lacks {key!r}; pass the state of a previous fit_idal result")
        arr = np.asarray(warm_start[key], dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"warm_start[{key!r}] has shape {arr.shape}, expected {shape} for this batch")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"warm_start[{key!r}] contains NaN or infinite values")
        out[key] = np.array(arr, dtype=np.float64, order="C")
    return out


def fit_idal(batch: GraphBatch, model: PairwiseModel, *, alpha: float = 1e-3, max_iter: int = 100,
             tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
             callback=None, kappa: float = 1.0, rho: float | None = None, inner_epochs: int = 1,
             entropy: str = "gini", loss_augmented: bool = False, sampling: str = "uniform",
             monitor_every: int = 1, rho_schedule: str = "adaptive") -> SolverResult:
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
        Stop when ``gap / max(|primal|, 1e-12) <= tol`` and the RMS residual ``<= tol``.
    verbose : int, default=0
        Print one progress line per monitored iteration when > 0.
    random_state : int, numpy Generator or None
        Seed of the sweep orders. Same seed, same history (except ``time``).
    warm_start : dict, optional
        ``state`` of a previous result on the same batch (marginals and multipliers);
        ``alpha``, ``kappa``, ``rho`` may change between the runs.
    callback : callable, optional
        ``callback(info)`` after each monitored iteration with the history row and ``"w"``;
        returning True stops training.
    kappa : float, default=1.0
        Weight of the Gini entropy surrogate (the temperature): larger is smoother and
        converges faster; ``kappa -> 0`` approaches the structured SVM.
    rho : float, optional
        Augmented-Lagrangian penalty (and multiplier step). Default: :func:`default_rho`.
    inner_epochs : int, default=1
        Sweeps over all cliques between two multiplier steps.
    entropy : {"gini", "gini_otrw"}, default="gini"
        ``"gini"``: ``kappa * G(mu_c)`` on every node and edge, ``G(p) = 1 - ||p||^2``.
        ``"gini_otrw"``: edges oriented as stored, ``kappa * (G(mu_e) - a G(rowsum mu_e))``
        with ``a = 0.5 / K`` (strongly concave), plus ``kappa * G`` on nodes.
    loss_augmented : bool, default=False
        Add the unnormalised Hamming loss to the node scores (softmax-margin CRF).
    sampling : {"uniform", "gap"}, default="uniform"
        ``"uniform"``: every clique once per sweep, examples in random order and each
        example's nodes and edges in random order (cache friendly). ``"gap"``: cliques
        drawn with probability half uniform, half proportional to their Fenchel-Young gap
        at the last monitoring (as many draws as cliques).
    monitor_every : int, default=1
        Compute the gap (and test ``tol``) every this many outer steps.
    rho_schedule : {"adaptive", "fixed"}, default="adaptive"
        ``"adaptive"``: residual balancing at each monitored step: ``rho`` is doubled when
        the RMS residual exceeds both ``tol`` and ``RHO_BALANCE`` times the relative gap,
        halved in the opposite case, within ``[rho0 / 64, 64 rho0]`` (then ``zeta`` is
        rebuilt; the saddle point does not depend on ``rho``). ``"fixed"`` keeps ``rho``.

    Returns
    -------
    SolverResult
        ``w`` (flat, :class:`~crflearn.models.PairwiseModel` layout), ``state`` with
        ``mu_nodes`` (N, K), ``mu_edges`` (E, K, K), ``xi`` (E, 2, K), ``w``, ``rho``,
        ``kappa``, ``entropy`` and ``history``; ``history`` has the common columns plus
        ``relaxed_dual`` and, on forests, ``exact_primal`` (softmax-margin CRF objective
        with exact log-partitions, every 5th monitored iteration, NaN elsewhere).
        ``oracle_calls`` counts sweeps times ``n_examples`` (example visits; no inference
        oracle is called).

    Raises
    ------
    ValueError, TypeError
        On invalid arguments, before any compute.
    """
    if not isinstance(batch, GraphBatch):
        raise TypeError(f"batch must be a GraphBatch, got {type(batch).__name__}")
    if not isinstance(model, PairwiseModel):
        raise TypeError(f"model must be a PairwiseModel, got {type(model).__name__}")
    if batch.labels is None:
        raise ValueError("batch.labels must be set to train")
    model.check_batch(batch)
    alpha = check_positive(alpha, "alpha")
    max_iter = check_int(max_iter, "max_iter", 1)
    tol = check_nonnegative(tol, "tol")
    kappa = check_positive(kappa, "kappa")
    rho = check_positive(rho, "rho", allow_none=True)
    inner_epochs = check_int(inner_epochs, "inner_epochs", 1)
    monitor_every = check_int(monitor_every, "monitor_every", 1)
    verbose = check_int(verbose, "verbose", 0)
    if entropy not in ENTROPIES:
        raise ValueError(f"entropy must be one of {list(ENTROPIES)}, got {entropy!r}")
    if rho_schedule not in ("fixed", "adaptive"):
        raise ValueError(f"rho_schedule must be 'fixed' or 'adaptive', got {rho_schedule!r}")
    if sampling not in _SAMPLINGS:
        raise ValueError(f"sampling must be one of {list(_SAMPLINGS)}, got {sampling!r}")
    if not isinstance(loss_augmented, (bool, np.bool_)):
        raise TypeError(f"loss_augmented must be a bool, got {loss_augmented!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if batch.labels.size and batch.labels.min() < 0:
        raise ValueError(f"batch.labels contains the negative label {int(batch.labels.min())}")

    prob = _Problem(batch, model, bool(loss_augmented))
    start_history = None
    if warm_start is not None:
        ws = _check_warm_start(warm_start, prob)
        mu_n, mu_e, xi = ws["mu_nodes"], ws["mu_edges"].reshape(prob.n_edges, -1), ws["xi"]
        if rho is None and "rho" in warm_start:
            rho = check_positive(warm_start["rho"], "warm_start['rho']")
        start_history = warm_start.get("history")
    else:
        mu_n, mu_e, xi = prob.init_state()
    if rho is None:
        rho = default_rho(batch, model, alpha, kappa)
    rho0 = rho
    otrw_a = OTRW_FRACTION / prob.k if entropy == "gini_otrw" else 0.0
    rng = np.random.default_rng(random_state)
    wuT, wp = prob.weights_of(model, batch, mu_n, mu_e, alpha)
    zeta = np.empty_like(xi)
    outer = np.zeros(2)
    idal_outer(prob.k, prob.edges, mu_n, mu_e, xi, zeta, rho, 0.0, outer)
    inv_lam_n = 1.0 / (alpha * prob.n)
    n_cliques = prob.n_nodes + prob.n_edges
    gaps = np.zeros(n_cliques)
    have_gaps = False
    order = np.empty(n_cliques, dtype=np.int64)
    tau_e = np.full(prob.n_edges, np.nan)  # last simplex threshold of every edge (warm starts)
    sums = np.empty(4)
    exact_ok = _infer_batch is not None and batch.is_forest()

    history = ConvergenceHistory(extra=("relaxed_dual",) + (("exact_primal",) if exact_ok else ()),
                                 start=start_history)
    it0 = history.last_iteration
    oracle0 = history.last_oracle_calls
    watch = Stopwatch(offset=history.last_time)
    converged = interrupted = stop = False
    n_monitored = 0
    last = None
    it = it0
    try:
        for it in range(it0 + 1, it0 + max_iter + 1):
            for _ in range(inner_epochs):
                if sampling == "gap" and have_gaps and gaps.sum() > 0:
                    prob_c = 0.5 / n_cliques + 0.5 * gaps / gaps.sum()
                    order = rng.choice(n_cliques, size=n_cliques, p=prob_c / prob_c.sum()).astype(np.int64)
                else:
                    clique_order(rng.permutation(prob.n).astype(np.int64), rng.random(n_cliques),
                                 batch.node_offsets, batch.edge_offsets, prob.n_nodes, order)
                idal_sweep_warm(order, prob.k, prob.base_n, prob.base_e, prob.x_ptr, prob.x_idx, prob.x_val,
                                prob.x_sq, prob.efeat, prob.e_sq, prob.edges, prob.inc_ptr, prob.inc_slot,
                                wuT, wp, mu_n, mu_e, zeta, kappa, otrw_a, rho, inv_lam_n, tau_e)
            idal_outer(prob.k, prob.edges, mu_n, mu_e, xi, zeta, rho, rho, outer)
            if (it - it0) % monitor_every and it != it0 + max_iter:
                continue
            with watch.paused():
                n_monitored += 1
                idal_monitor(prob.k, prob.base_n, prob.base_e, prob.x_ptr, prob.x_idx, prob.x_val, prob.efeat,
                             prob.edges, prob.inc_ptr, prob.inc_slot, wuT, wp, mu_n, mu_e, zeta, kappa, otrw_a,
                             gaps, sums)
                have_gaps = True
                w = prob.flat_w(model, wuT, wp)
                row_vals = _objectives(prob, w, sums, gaps, outer, alpha, rho)
                extra = {"relaxed_dual": row_vals.pop("relaxed_dual")}
                if exact_ok and n_monitored % _EXACT_EVERY == 0:
                    extra["exact_primal"] = _exact_primal(model, batch, w, alpha, prob)
                row = history.append(iteration=it, time=watch.elapsed(),
                                     oracle_calls=oracle0 + (it - it0) * inner_epochs * prob.n,
                                     **row_vals, **extra)
                last = row
                report_progress(verbose, row, "idal")
                rel_gap = row["gap"] / max(abs(row["primal"]), 1e-12)
                if rel_gap <= tol and row["residual"] <= tol:
                    converged = True
                elif rho_schedule == "adaptive":
                    res = row["residual"]
                    if res > tol and res > RHO_BALANCE * rel_gap and rho < RHO_RANGE * rho0:
                        rho *= 2.0
                    elif rel_gap > tol and rel_gap > RHO_BALANCE * res and rho > rho0 / RHO_RANGE:
                        rho *= 0.5
                    idal_outer(prob.k, prob.edges, mu_n, mu_e, xi, zeta, rho, 0.0, outer)
                if callback is not None:
                    info = dict(row)
                    info["w"] = w
                    stop = bool(callback(info))
            if converged or stop:
                break
    except KeyboardInterrupt:
        interrupted = True
        warn_interrupted("idal", it)
    if interrupted:
        # the interrupted sweep may have left zeta stale; rebuild it from mu and xi
        idal_outer(prob.k, prob.edges, mu_n, mu_e, xi, zeta, rho, 0.0, outer)
    w = prob.flat_w(model, wuT, wp)
    n_iter = history.last_iteration if len(history) else it
    if not converged and not interrupted and not stop:
        gap_rel = np.inf if last is None else last["gap"] / max(abs(last["primal"]), 1e-12)
        warn_not_converged("idal", max_iter, gap_rel, tol, None if last is None else last["residual"])
    hist = history.to_dict()
    state = {"mu_nodes": mu_n, "mu_edges": mu_e.reshape(prob.n_edges, prob.k, prob.k), "xi": xi, "w": w.copy(),
             "rho": float(rho), "kappa": float(kappa), "entropy": entropy, "history": hist}
    info = {"inference": "none (local polytope, Gini surrogate)", "rho": float(rho), "kappa": float(kappa),
            "entropy": entropy}
    return SolverResult(w=w, n_iter=n_iter, state=state, history=hist, converged=converged,
                        interrupted=interrupted, info=info)


def _objectives(prob: _Problem, w, sums, gaps, outer, alpha, rho) -> dict:
    """primal (P_rho), dual (L_rho), Fenchel-Young gap, residual and the relaxed dual D(mu)."""
    n = prob.n
    wsq = float(w @ w)
    a2, xa = float(outer[0]), float(outer[1])
    hstar, hsum, base_mu = float(sums[0]), float(sums[1]), float(sums[2])
    primal = 0.5 * alpha * wsq + (hstar - float(w @ prob.psi_star) + 0.5 * rho * a2) / n
    relaxed_dual = (hsum + base_mu) / n - 0.5 * alpha * wsq
    dual = relaxed_dual - (xa + 0.5 * rho * a2) / n
    gap = float(np.sum(gaps)) / n
    residual = float(np.sqrt(a2 / (2 * prob.n_edges))) if prob.n_edges else 0.0
    return {"primal": primal, "dual": dual, "gap": gap, "residual": residual, "relaxed_dual": relaxed_dual}


def _exact_primal(model, batch, w, alpha, prob) -> float:
    """Softmax-margin (or plain) CRF objective with exact log-partitions (forests only)."""
    unary, pairwise = model.potentials(w, batch)
    unary = unary + prob.base_n
    res = _infer_batch(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets,
                       method="exact", edge_marginals="none")
    scores = model.score(w, batch)
    return float(0.5 * alpha * (w @ w) + np.mean(np.asarray(res.log_partition) - scores))
