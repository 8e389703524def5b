"""Exact maximum-likelihood CRF training with L-BFGS (forests only).

Minimises the regularised, weighted negative log-likelihood

``P(w) = alpha (l1_ratio ||w||_1 + (1 - l1_ratio)/2 ||w||^2) + 1/n sum_i s_i [log Z_i(w) - log Z_i^y(w)]``

where ``log Z_i^y`` is the log-partition with the observed labels clamped: ``<w, psi(x_i, y_i)>``
when every label is known, the log-sum over the unknown nodes (label code -1, marginalised)
otherwise. The penalty is the elastic net of scikit-learn's ``ElasticNet`` and covers the whole
weight vector, intercept included, as the L2 term always did. ``s_i`` are sample weights (1 by
default). The log-partitions and marginals come from exact sum-product inference
(:func:`crflearn.inference.infer_batch`). With ``loss_augmented=True`` the Hamming loss is added
to the unary scores inside ``log Z`` (softmax-margin).

Optimiser: :func:`scipy.optimize.minimize` with ``method="L-BFGS-B"``; with ``l1_ratio > 0`` on
the split ``w = w+ - w-`` with bounds ``w+, w- >= 0``, where the L1 term is linear (weights at a
bound are exact zeros).

Certified gap (fully labelled data: ``P`` is convex):

* ``l1_ratio = 0``: ``P`` is ``alpha``-strongly convex, so ``P(w) - P* <= ||grad P(w)||^2 / (2 alpha)``;
  the recorded dual is ``primal - ||grad P(w)||^2 / (2 alpha)``.
* ``0 < l1_ratio < 1``: the larger of two lower bounds on ``P*``: strong convexity with modulus
  ``mu = alpha (1 - l1_ratio)`` and the minimum-norm subgradient ``v`` of ``P`` at ``w``
  (``P(w) - ||v||^2 / (2 mu)``), and the Fenchel dual at ``u = grad F(w)`` (``F`` the data term):
  ``F(w) - <u, w> - sum_j (|u_j| - l1)_+^2 / (2 l2)``.
* ``l1_ratio = 1``: Fenchel duality with the dual point ``c grad F(w)``,
  ``c = min(1, l1 / ||grad F(w)||_inf)``, which is feasible (inside the L1 ball); its value is
  bounded through the distributions ``q_i = c p_i + (1 - c) delta_{y_i}`` (``p_i`` the model's
  distribution at ``w``): ``P* >= 1/n sum_i s_i (H(q_i) + E_{q_i}[L_i])``.

Partial labels make ``P`` non-convex: no certificate exists; the recorded dual and gap are NaN,
``residual`` is the stationarity measure ``||v||^2 / (2 alpha) / |P(w)|`` (``v`` the minimum-norm
subgradient) and ``converged`` means ``residual <= tol`` (a stationary point, not an optimum).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import xlogy

from .._validation import check_int
from ._base import SolverResult, check_common, check_sample_weight, check_warm_state
from ._history import ConvergenceHistory, relative_gap
from ._loop import ROUNDOFF, SolverLoop
from ..exceptions import LoopyGraphError
from ..graphs import GraphBatch
from ..models import PairwiseModel, hamming_loss_vectors

__all__ = ["fit_lbfgs", "crf_objective"]


def crf_objective(w: np.ndarray, batch: GraphBatch, model: PairwiseModel, alpha: float,
                  loss_augmented: bool = False, psi_true: np.ndarray | None = None, *,
                  sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Regularised CRF negative log-likelihood and its gradient (exact inference, forests only).

    Parameters
    ----------
    w : ndarray (model.size,)
    batch : GraphBatch
        Labelled batch of forests; label code -1 marks an unknown node (marginalised).
    model : PairwiseModel
    alpha : float
        L2 strength (the term ``alpha/2 ||w||^2``).
    loss_augmented : bool
        Add the Hamming loss to the unary scores inside ``log Z`` (softmax-margin; full labels only).
    psi_true : ndarray (model.size,), optional
        ``sum_i s_i psi(x_i, y_i)`` precomputed (it does not depend on ``w``; full labels only).
    sample_weight : ndarray (n_examples,), optional
        Per-example weights ``s_i`` of the data term; None is ``s_i = 1`` exactly.

    Returns
    -------
    value : float
    grad : ndarray (model.size,)
    """
    partial = batch.labels is not None and batch.labels.size > 0 and int(batch.labels.min()) < 0
    if sample_weight is not None or partial:
        value, grad = _data_term(w, batch, model, loss_augmented, psi_true, sample_weight, partial)
        return 0.5 * alpha * float(w @ w) + value, alpha * w + grad
    from ..inference import infer_batch

    unary, pairwise = model.potentials(w, batch)
    if loss_augmented:
        unary = unary + hamming_loss_vectors(batch, model.n_states)
    mode = "sum" if model.n_edge_features is None else "full"
    res = infer_batch(np.ascontiguousarray(unary), pairwise, batch.edges, batch.node_offsets,
                      batch.edge_offsets, method="exact", edge_marginals=mode)
    n = batch.n_examples
    if mode == "sum":
        em = res.edge_marginals if res.edge_marginals is not None else np.zeros(model.pairwise_shape)
    else:
        em = res.edge_marginals
    if psi_true is None:
        psi_true = model.joint_feature(batch)
    # sum_i <w, psi(x_i, y_i)> = <w, psi_true>
    value = 0.5 * alpha * float(w @ w) + (float(np.sum(res.log_partition)) - float(w @ psi_true)) / n
    expected = model.expected_joint_feature(batch, res.node_marginals, em)
    grad = alpha * w + (expected - psi_true) / n
    return value, grad


def _weighted_inference(unary: np.ndarray, pairwise: np.ndarray, batch: GraphBatch, model: PairwiseModel,
                        weights: np.ndarray):
    """Exact inference on ``(unary, pairwise)``; returns the result, ``sum_i s_i log Z_i`` and
    ``sum_i s_i E_{p_i}[psi]`` (marginals scaled by each example's weight)."""
    from ..inference import infer_batch

    res = infer_batch(np.ascontiguousarray(unary), pairwise, batch.edges, batch.node_offsets,
                      batch.edge_offsets, method="exact", edge_marginals="full")
    node_w = weights[batch.example_of_node()][:, None]
    edge_w = np.repeat(weights, np.diff(batch.edge_offsets))[:, None, None]
    em = res.edge_marginals if res.edge_marginals is not None else np.zeros((0,) + (model.n_states,) * 2)
    expected = model.expected_joint_feature(batch, res.node_marginals * node_w, em * edge_w)
    return res, float(weights @ res.log_partition), expected


def _data_term(w, batch, model, loss_augmented, psi_true, sample_weight, partial) -> tuple[float, np.ndarray]:
    """``1/n sum_i s_i [log Z_i - log Z_i^y]`` and its gradient ``1/n sum_i s_i (E_p[psi] - E_{p^y}[psi])``,
    with ``p^y`` the model clamped to the observed labels (unknown nodes free)."""
    from ._ssvm import weighted_joint_feature

    n = batch.n_examples
    if partial and loss_augmented:
        raise ValueError("loss_augmented=True needs fully labelled data (no label -1)")
    weights = np.ones(n) if sample_weight is None else sample_weight
    unary, pairwise = model.potentials(w, batch)
    if loss_augmented:
        unary = unary + hamming_loss_vectors(batch, model.n_states)
    _, logz, expected = _weighted_inference(unary, pairwise, batch, model, weights)
    if not partial:
        if psi_true is None:
            psi_true = weighted_joint_feature(batch, model, weights)
        return (logz - float(w @ psi_true)) / n, (expected - psi_true) / n
    y = batch.labels
    off = (y[:, None] >= 0) & (np.arange(model.n_states)[None, :] != y[:, None])
    clamped = np.where(off, -np.inf, unary)
    _, logz_c, expected_c = _weighted_inference(clamped, pairwise, batch, model, weights)
    return (logz - logz_c) / n, (expected - expected_c) / n


def fit_lbfgs(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 200,
              tol: float = 1e-6, verbose: int = 0, random_state=None, warm_start: dict | None = None,
              callback=None, check_input: bool = True, loss_augmented: bool = False,
              memory: int = 10, l1_ratio: float = 0.0, sample_weight: np.ndarray | None = None) -> SolverResult:
    """Train a CRF by exact maximum likelihood with L-BFGS (chains, trees and forests only).

    Parameters
    ----------
    batch : GraphBatch
        Labelled training batch; every example must be a forest. Label code -1 marks an
        unknown node, marginalised in training (the objective is then non-convex).
    model : PairwiseModel
        Joint feature map.
    alpha : float
        Regularisation strength.
    max_iter : int
        Maximum number of L-BFGS iterations.
    tol : float
        Stop when the relative certified gap ``gap / |P(w)|`` is <= tol (module docstring); with
        unknown labels, when the relative stationarity measure ``residual`` is <= tol.
    verbose : int
        One progress line per iteration when > 0.
    random_state : ignored
        Accepted for the common signature (deterministic method).
    warm_start : dict, optional
        A previous ``SolverResult.state`` holding ``"w"`` (from any solver); the history is
        continued when the state comes from :func:`fit_lbfgs`.
    callback : callable, optional
        ``callback(info)`` after each iteration; returning True stops training.
    check_input : bool, default=True
        Validate ``batch`` and ``model``; False when the caller already did (the estimator).
    loss_augmented : bool
        Softmax-margin training (Hamming loss inside ``log Z``); needs fully labelled data.
    memory : int
        Number of L-BFGS correction pairs.
    l1_ratio : float in [0, 1], default=0.0
        Elastic-net mixing: penalty ``alpha (l1_ratio ||w||_1 + (1 - l1_ratio)/2 ||w||^2)``;
        0 is the L2 objective exactly (same iterates), > 0 gives exact zeros.
    sample_weight : ndarray (n_examples,), optional
        Per-example weights ``s_i`` of the data term (finite, >= 0, not all 0); None is ``s_i = 1``.

    Returns
    -------
    SolverResult
        ``info["certified"]`` is False with unknown labels (gap NaN).

    Raises
    ------
    LoopyGraphError
        If some example has a cycle (exact inference is needed).

    References
    ----------
    .. [1] J. Lafferty, A. McCallum, F. Pereira. "Conditional random fields: probabilistic
       models for segmenting and labeling sequence data", ICML 2001.
    .. [2] K. Gimpel, N. A. Smith. "Softmax-margin CRFs: training log-linear models with
       cost functions", NAACL 2010.
    """
    alpha, max_iter, tol, verbose = check_common(batch, model, alpha, max_iter, tol, callback, verbose,
                                                 check_input, partial_labels=True)
    obj = _Objective(batch, model, alpha, *_check_options(batch, loss_augmented, l1_ratio, sample_weight))
    memory = check_int(memory, "memory", 1)
    if not batch.is_forest():
        raise LoopyGraphError("fit_lbfgs needs exact inference, which is only available on forests "
                              "(chains/trees); the batch has a cycle: use solver='idal' or an SSVM baseline")
    warm = check_warm_state(warm_start, "lbfgs", alpha)
    w0 = np.zeros(model.size) if warm is None else np.array(warm["w"], dtype=np.float64)
    if w0.shape != (model.size,):
        raise ValueError(f"warm_start['w'] has shape {w0.shape}, expected ({model.size},)")
    # continue the record only when the state comes from a previous fit_lbfgs run
    same = warm is not None and warm.get("solver") == "lbfgs" and isinstance(warm.get("history"), dict)
    loop = SolverLoop("lbfgs", max_iter=max_iter, tol=tol, verbose=verbose, callback=callback,
                      history=ConvergenceHistory(start=warm["history"] if same else None))
    obj.calls = loop.history.last_oracle_calls
    iterations = loop.iterations()

    def on_iter(intermediate_result):
        w = obj.weights_of(np.array(intermediate_result.x, dtype=np.float64))
        it = next(iterations)
        with loop.monitoring():
            primal, dual, residual = obj.certificate(w)
        if loop.record(it, primal=primal, dual=dual, w=w, residual=residual, oracle_calls=obj.calls):
            raise StopIteration
        if obj.partial and residual <= tol * (1.0 + ROUNDOFF):  # non-convex: a stationary point
            loop.converged = True
            raise StopIteration

    with loop:
        minimize(obj.fun, obj.start(w0), jac=True, method="L-BFGS-B", callback=on_iter, bounds=obj.bounds(),
                 options={"maxiter": max_iter, "maxcor": memory, "gtol": 0.0, "ftol": 0.0})
    hist = loop.finish()
    w = loop.recorded_w(w0)
    return SolverResult(w=w, n_iter=loop.n_iter, state={"w": w.copy(), "history": hist, "solver": "lbfgs"},
                        history=hist, converged=loop.converged, interrupted=loop.interrupted,
                        info={"inference": "exact (sum-product)", "loss_augmented": obj.loss_augmented,
                              "l1_ratio": obj.l1_ratio, "certified": not obj.partial})


def _check_options(batch: GraphBatch, loss_augmented, l1_ratio, sample_weight) -> tuple:
    """``(l1_ratio, loss_augmented, sample_weight, partial)`` checked."""
    if not isinstance(loss_augmented, (bool, np.bool_)):
        raise TypeError(f"loss_augmented must be a bool, got {loss_augmented!r:.80}")
    if isinstance(l1_ratio, (bool, np.bool_)) or not isinstance(l1_ratio, (int, float, np.integer, np.floating)):
        raise TypeError(f"l1_ratio must be a real number in [0, 1], got {l1_ratio!r:.80}")
    if not 0.0 <= float(l1_ratio) <= 1.0:
        raise ValueError(f"l1_ratio must be in [0, 1], got {l1_ratio!r}")
    sample_weight = check_sample_weight(sample_weight, batch.n_examples)
    partial = batch.labels.size > 0 and int(batch.labels.min()) < 0
    if partial and loss_augmented:
        raise ValueError("loss_augmented=True needs fully labelled data: the Hamming loss of an unknown "
                         "node (label -1) is undefined")
    return float(l1_ratio), bool(loss_augmented), sample_weight, partial


class _Objective:
    """What L-BFGS-B minimises (``w``, or the split ``(w+, w-)`` when ``l1_ratio > 0``) and the
    certificate of a point (module docstring)."""

    def __init__(self, batch, model, alpha, l1_ratio, loss_augmented, sample_weight, partial):
        from ._ssvm import weighted_joint_feature

        self.batch, self.model, self.alpha, self.l1_ratio = batch, model, alpha, l1_ratio
        self.loss_augmented, self.sample_weight, self.partial = loss_augmented, sample_weight, partial
        self.l1, self.l2 = alpha * l1_ratio, alpha * (1.0 - l1_ratio)
        self.split = l1_ratio > 0.0
        self.psi_true = (None if partial else model.joint_feature(batch) if sample_weight is None
                         else weighted_joint_feature(batch, model, sample_weight))
        self.calls = 0
        self.last = (None, None, None)

    def smooth(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        """The data term plus the L2 part of the penalty, and its gradient."""
        return crf_objective(w, self.batch, self.model, self.l2, self.loss_augmented, self.psi_true,
                             sample_weight=self.sample_weight)

    def fun(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        w = self.weights_of(x)
        f, g = self.smooth(w)
        self.calls += self.batch.n_examples
        self.last = (w.copy(), f, g)
        if not self.split:
            return f, g
        return f + self.l1 * float(x.sum()), np.concatenate([g + self.l1, self.l1 - g])

    def start(self, w0: np.ndarray) -> np.ndarray:
        return np.concatenate([np.maximum(w0, 0.0), np.maximum(-w0, 0.0)]) if self.split else w0

    def bounds(self):
        return [(0.0, None)] * (2 * self.model.size) if self.split else None

    def weights_of(self, x: np.ndarray) -> np.ndarray:
        d = self.model.size
        return x[:d] - x[d:] if self.split else x

    def certificate(self, w: np.ndarray) -> tuple[float, float, float]:
        """``(primal, dual, residual)`` at ``w``: a certified lower bound on ``P*`` as dual, or NaN
        and the relative stationarity measure as residual with unknown labels."""
        last_w, f, g = self.last
        if last_w is None or not np.array_equal(last_w, w):
            f, g = self.smooth(w)
        if not self.split and not self.partial:
            # strong convexity: P(w) - P* <= ||grad||^2 / (2 alpha), a certified gap
            return f, f - float(g @ g) / (2.0 * self.alpha), 0.0
        v = np.where(w != 0.0, g + self.l1 * np.sign(w), np.sign(g) * np.maximum(np.abs(g) - self.l1, 0.0))
        primal = f + self.l1 * float(np.abs(w).sum())
        if self.partial:
            return primal, np.nan, relative_gap(float(v @ v) / (2.0 * self.alpha), primal)
        if self.l2 > 0.0:
            data, u = f - 0.5 * self.l2 * float(w @ w), g - self.l2 * w
            fenchel = data - float(u @ w) - float(np.sum(np.maximum(np.abs(u) - self.l1, 0.0) ** 2)) / (2 * self.l2)
            return primal, max(primal - float(v @ v) / (2.0 * self.l2), fenchel), 0.0
        return primal, _lasso_dual(w, self), 0.0


def _lasso_dual(w: np.ndarray, obj: _Objective) -> float:
    """The Fenchel lower bound on ``P*`` for ``l1_ratio = 1`` (module docstring): the dual point
    ``c grad F(w)`` scaled into the L1 ball, its conjugate bounded by the entropy (plus expected
    loss) of ``q_i = c p_i + (1 - c) delta_{y_i}``."""
    batch, model, n = obj.batch, obj.model, obj.batch.n_examples
    weights = np.ones(n) if obj.sample_weight is None else obj.sample_weight
    unary, pairwise = model.potentials(w, batch)
    loss = hamming_loss_vectors(batch, model.n_states) if obj.loss_augmented else np.zeros_like(unary)
    res, _, expected = _weighted_inference(unary + loss, pairwise, batch, model, weights)
    u = (expected - obj.psi_true) / n
    u_max = float(np.abs(u).max(initial=0.0))
    c = 1.0 if u_max <= obj.l1 else obj.l1 / u_max
    ex_node = batch.example_of_node()
    # E_p[score] (forbidden states, score -inf, have probability 0 and add nothing)
    node_energy = np.sum(_expected(res.node_marginals, unary + loss), axis=1)
    em = np.zeros((0, model.n_states, model.n_states)) if res.edge_marginals is None else res.edge_marginals
    edge_energy = np.sum(_expected(em, pairwise if pairwise.ndim == 3 else pairwise[None]), axis=(1, 2))
    ex_edge = np.repeat(np.arange(n), np.diff(batch.edge_offsets))
    energy = (np.bincount(ex_node, node_energy, minlength=n) + np.bincount(ex_edge, edge_energy, minlength=n))
    entropy = res.log_partition - energy                       # H(p_i)
    expected_loss = np.bincount(ex_node, np.sum(res.node_marginals * loss, axis=1), minlength=n)
    p_y = np.exp(np.minimum(model.score(w, batch) - res.log_partition, 0.0))  # p_i(y_i) (loss 0 at y_i)
    q_y = c * p_y + (1.0 - c)
    entropy_q = c * (entropy + xlogy(p_y, p_y)) - xlogy(c, c) * (1.0 - p_y) - xlogy(q_y, q_y)
    return float(weights @ (entropy_q + c * expected_loss)) / n


def _expected(marginals: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``marginals * scores`` with ``0 * (-inf) = 0``."""
    return np.where(marginals > 0.0, marginals * np.where(np.isfinite(scores), scores, 0.0), 0.0)
