"""Exact maximum-likelihood CRF training with L-BFGS (forests only).

Minimises the regularised negative log-likelihood

``P(w) = alpha/2 ||w||^2 + 1/n sum_i [log Z_i(w) - <w, psi(x_i, y_i)>]``

with :func:`scipy.optimize.minimize` (``method="L-BFGS-B"``), the log-partition
and marginals coming from exact sum-product inference
(:func:`crflearn.inference.infer_batch`). With ``loss_augmented=True`` the
Hamming loss is added to the unary scores inside ``log Z`` (softmax-margin).

Certified gap: ``P`` is ``alpha``-strongly convex, so for any ``w``
``P(w) - P* <= ||grad P(w)||^2 / (2 alpha)``. The recorded dual is
``primal - ||grad P(w)||^2 / (2 alpha)``, a valid lower bound on ``P*``, and the
gap is that bound.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from .._validation import check_int
from ._base import SolverResult, check_common, check_warm_state
from ._history import ConvergenceHistory
from ._loop import SolverLoop
from ..exceptions import LoopyGraphError
from ..graphs import GraphBatch
from ..models import PairwiseModel, hamming_loss_vectors

__all__ = ["fit_lbfgs", "crf_objective"]


def crf_objective(w: np.ndarray, batch: GraphBatch, model: PairwiseModel, alpha: float,
                  loss_augmented: bool = False, psi_true: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Regularised CRF negative log-likelihood and its gradient (exact inference, forests only).

    Parameters
    ----------
    w : ndarray (model.size,)
    batch : GraphBatch
        Labelled batch of forests.
    model : PairwiseModel
    alpha : float
        L2 strength.
    loss_augmented : bool
        Add the Hamming loss to the unary scores inside ``log Z`` (softmax-margin).
    psi_true : ndarray (model.size,), optional
        ``model.joint_feature(batch)``, precomputed (it does not depend on ``w``).

    Returns
    -------
    value : float
    grad : ndarray (model.size,)
    """
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


def fit_lbfgs(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 200,
              tol: float = 1e-6, verbose: int = 0, random_state=None, warm_start: dict | None = None,
              callback=None, check_input: bool = True, loss_augmented: bool = False,
              memory: int = 10) -> SolverResult:
    """Train a CRF by exact maximum likelihood with L-BFGS (chains, trees and forests only).

    Parameters
    ----------
    batch : GraphBatch
        Labelled training batch; every example must be a forest.
    model : PairwiseModel
        Joint feature map.
    alpha : float
        L2 strength.
    max_iter : int
        Maximum number of L-BFGS iterations.
    tol : float
        Stop when the relative certified gap ``||grad||^2 / (2 alpha) / |P(w)|`` is <= tol.
    verbose : int
        One progress line per iteration when > 0.
    random_state : ignored
        Accepted for the common signature (deterministic method).
    warm_start : dict, optional
        A previous ``SolverResult.state`` holding ``"w"`` (from any solver); the history is
        continued when the state comes from :func:`fit_lbfgs`.
    callback : callable, optional
        ``callback(info)`` after each iteration; returning True stops training.
    loss_augmented : bool
        Softmax-margin training (Hamming loss inside ``log Z``).
    check_input : bool, default=True
        Validate ``batch`` and ``model``; False when the caller already did (the estimator).
    memory : int
        Number of L-BFGS correction pairs.

    Returns
    -------
    SolverResult

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
                                                 check_input)
    if not isinstance(loss_augmented, (bool, np.bool_)):
        raise TypeError(f"loss_augmented must be a bool, got {loss_augmented!r:.80}")
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
    psi_true = model.joint_feature(batch)
    calls = [loop.history.last_oracle_calls]
    last = {"x": None, "f": None, "g": None}
    iterations = loop.iterations()

    def fun(x):
        f, g = crf_objective(x, batch, model, alpha, loss_augmented, psi_true)
        calls[0] += batch.n_examples
        last["x"], last["f"], last["g"] = x.copy(), f, g
        return f, g

    def on_iter(intermediate_result):
        x = np.array(intermediate_result.x, dtype=np.float64)
        it = next(iterations)
        with loop.monitoring():
            if last["x"] is not None and np.array_equal(last["x"], x):
                f, g = last["f"], last["g"]
            else:
                f, g = crf_objective(x, batch, model, alpha, loss_augmented, psi_true)
        # strong convexity: P(x) - P* <= ||grad||^2 / (2 alpha), a certified gap
        if loop.record(it, primal=f, dual=f - float(g @ g) / (2.0 * alpha), w=x, oracle_calls=calls[0]):
            raise StopIteration

    with loop:
        minimize(fun, w0, jac=True, method="L-BFGS-B", callback=on_iter,
                 options={"maxiter": max_iter, "maxcor": memory, "gtol": 0.0, "ftol": 0.0})
    hist = loop.finish()
    w = loop.recorded_w(w0)
    return SolverResult(w=w, n_iter=loop.n_iter, state={"w": w.copy(), "history": hist, "solver": "lbfgs"},
                        history=hist, converged=loop.converged, interrupted=loop.interrupted,
                        info={"inference": "exact (sum-product)", "loss_augmented": bool(loss_augmented)})
