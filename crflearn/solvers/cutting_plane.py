"""1-slack cutting-plane training of the structured SVM (Joachims, Finley & Yu, 2009).

The 1-slack formulation ``min_w alpha/2 ||w||^2 + xi`` subject to, for every joint
labeling ``(y_1, ..., y_n)``, ``1/n sum_i <w, dpsi_i(y_i)> >= 1/n sum_i L_i(y_i) - xi``,
has the same optimum as the n-slack SSVM. Each constraint is a pair ``(a, b)``;
the restricted dual over a working set is the simplex QP
``max_beta b . beta - 1/(2 alpha) ||A' beta||^2`` with ``w = A' beta / alpha``,
solved to high accuracy by :func:`crflearn._kernels.qp.simplex_qp`. Any simplex
point is feasible for the full 1-slack dual, so its value is a valid lower
bound and ``gap = P(w) - D(beta)`` is certified when the oracle is exact.

An inference cache keeps the labelings of the last ``cache_size`` oracle passes;
when the most violated constraint built from the cache is violated enough, it is
added without calling the oracle.
"""

from __future__ import annotations

import numpy as np

from ._base import SolverResult, warn_interrupted, warn_not_converged
from ._history import ConvergenceHistory, Stopwatch
from ._ssvm import Monitor, SSVMProblem, check_common, check_warm_state
from .._kernels.qp import simplex_qp
from .._validation import check_int
from ..graphs import GraphBatch
from ..models import PairwiseModel

__all__ = ["fit_cutting_plane"]

_STATE_KEYS = ("constraints", "offsets", "beta", "cache", "history")



def fit_cutting_plane(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 100,
                      tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
                      callback=None, cache_size: int = 5, max_cache_steps: int = 10,
                      qp_max_iter: int = 20000, inference: str = "auto") -> SolverResult:
    """Train a structured SVM with the 1-slack cutting-plane method.

    Parameters
    ----------
    batch : GraphBatch
        Labelled training batch.
    model : PairwiseModel
        Joint feature map.
    alpha : float
        L2 strength.
    max_iter : int
        Maximum number of oracle passes (one recorded row each); cache-only steps in
        between are not counted.
    tol : float
        Stop when the relative gap ``(P(w) - D(beta)) / |P(w)|`` is <= tol.
    verbose : int
        One progress line per oracle pass when > 0.
    random_state : ignored
        Accepted for the common signature (the method is deterministic).
    warm_start : dict, optional
        ``state`` of a previous :func:`fit_cutting_plane` run on the same batch and model.
    callback : callable, optional
        ``callback(info)`` after each oracle pass; returning True stops training.
    cache_size : int
        Number of past oracle passes whose labelings are kept (0 disables the cache).
    max_cache_steps : int
        At most this many cache-only constraints between two oracle passes.
    qp_max_iter : int
        Iteration cap of the working-set QP solver.
    inference : {"auto", "exact", "trws", "maxproduct", "bruteforce"}
        Loss-augmented MAP method; approximate on loopy graphs (gap then not certified).

    Returns
    -------
    SolverResult
        ``info["n_constraints"]`` is the working-set size; ``info["cache_steps"]`` the
        number of constraints taken from the cache.

    References
    ----------
    .. [1] T. Joachims, T. Finley, C.-N. Yu. "Cutting-plane training of structural
       SVMs", Machine Learning 77(1), 2009.
    """
    alpha, max_iter, tol = check_common(batch, model, alpha, max_iter, tol, callback, verbose)
    cache_size = check_int(cache_size, "cache_size", 0)
    max_cache_steps = check_int(max_cache_steps, "max_cache_steps", 0)
    qp_max_iter = check_int(qp_max_iter, "qp_max_iter", 1)
    warm = check_warm_state(warm_start, _STATE_KEYS, "cutting_plane")
    prob = SSVMProblem(batch, model, alpha, inference)
    n, d = prob.n, model.size
    psi_true = prob.psi_true

    if warm is None:
        A = np.zeros((1, d))            # the trivial constraint (all ground truths): a = 0, b = 0
        b = np.zeros(1)
        beta = np.ones(1)
        cache = np.empty((0, batch.n_nodes), dtype=np.int64)
        history = ConvergenceHistory(extra=("exact_oracle", "n_constraints"))
    else:
        A = np.array(warm["constraints"], dtype=np.float64)
        b = np.array(warm["offsets"], dtype=np.float64)
        beta = np.array(warm["beta"], dtype=np.float64)
        cache = np.array(warm["cache"], dtype=np.int64)
        if A.ndim != 2 or A.shape[1] != d or cache.shape[1:] != (batch.n_nodes,):
            raise ValueError("warm_start does not match this batch and model")
        history = ConvergenceHistory(extra=("exact_oracle", "n_constraints"), start=warm["history"])
    gram = A @ A.T

    def add_constraint(labels):
        nonlocal A, b, gram, beta
        a_new = (psi_true - model.joint_feature(batch, labels)) / n
        b_new = float(prob.losses(labels).mean())
        g_row = A @ a_new
        m = len(b)
        new_gram = np.empty((m + 1, m + 1))
        new_gram[:m, :m] = gram
        new_gram[m, :m] = g_row
        new_gram[:m, m] = g_row
        new_gram[m, m] = a_new @ a_new
        A = np.vstack([A, a_new])
        b = np.append(b, b_new)
        gram = new_gram
        beta = np.append(beta, 0.0)

    def solve_qp():
        lip = max(float(np.linalg.eigvalsh(gram)[-1]) / alpha, 1e-12)
        scale = max(float(np.abs(b).max()), 1e-12)
        simplex_qp(gram, b, alpha, lip, beta, qp_max_iter, 1e-10 * scale)

    def weights():
        return A.T @ beta / alpha

    def best_labels(w, candidates):
        """Per example, the candidate labeling with the largest hinge value (ground truth if none > 0)."""
        best = batch.labels.copy()
        best_val = np.zeros(n)
        ex = batch.example_of_node()
        for cand in candidates:
            h = prob.losses(cand) + model.score(w, batch, cand) - model.score(w, batch)
            better = h > best_val
            if better.any():
                best_val = np.where(better, h, best_val)
                take = better[ex]
                best[take] = cand[take]
        return best, float(best_val.mean())

    monitor = Monitor("cutting_plane", history, tol, verbose, callback)
    watch = Stopwatch(offset=history.last_time)
    it = history.last_iteration
    train_calls = history.last_oracle_calls
    cache_steps = 0
    last_gap = np.inf
    interrupted = stopped = False
    w = weights()
    try:
        for _ in range(max_iter):
            w = weights()
            slack_ws = max(float((b - A @ w).max()), 0.0)
            if cache_size and len(cache):
                for _ in range(max_cache_steps):
                    cand, slack_cache = best_labels(w, cache)
                    if slack_cache - slack_ws <= 0.5 * last_gap:
                        break
                    add_constraint(cand)
                    cache_steps += 1
                    solve_qp()
                    w = weights()
                    slack_ws = max(float((b - A @ w).max()), 0.0)
            labels = prob.oracle_all(w)
            train_calls += n
            labels, slack = best_labels(w, [labels])
            primal = 0.5 * alpha * float(w @ w) + slack
            dual = float(b @ beta) - 0.5 * alpha * float(w @ w)
            it += 1
            last_gap = max(primal - dual, 0.0)
            with watch.paused():
                stop = monitor.record(w, iteration=it, time=watch.elapsed(), primal=primal, dual=dual,
                                      oracle_calls=train_calls, exact_oracle=float(prob.exact_oracle),
                                      n_constraints=float(len(b)))
            if stop:
                stopped = True
                break
            if cache_size:
                cache = np.vstack([labels[None, :], cache])[:cache_size]
            add_constraint(labels)
            solve_qp()
    except KeyboardInterrupt:
        interrupted = True
        warn_interrupted("cutting_plane", it)
        if len(beta) != len(b):
            beta = np.append(beta, np.zeros(len(b) - len(beta)))

    if not (monitor.converged or interrupted or stopped):
        warn_not_converged("cutting_plane", max_iter, monitor.last_rel_gap, tol)
    w = weights()
    hist = history.to_dict()
    state = dict(constraints=A, offsets=b, beta=beta.copy(), cache=cache, history=hist)
    return SolverResult(w=w, n_iter=it, state=state, history=hist, converged=monitor.converged,
                        interrupted=interrupted,
                        info={"inference": prob.inference_note, "exact_oracle": prob.exact_oracle,
                              "n_constraints": len(b), "cache_steps": cache_steps})

