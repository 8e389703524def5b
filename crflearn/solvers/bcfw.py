"""Block-coordinate Frank-Wolfe (BCFW) for the margin-rescaled structured SVM.

Each step picks one example ``i``, calls the loss-augmented oracle at the
current weights, and moves that example's dual block towards the returned
corner with the exact line search of Lacoste-Julien et al. (2013). The dual
variables are stored compactly as per-example "marginals" (convex combinations
of one-hot labelings: node statistics ``(n_i, K)`` and pairwise statistics), so
memory is ``sum_i (n_i K + |E_i| K^2)`` floats, not ``n * dim(w)``.

On forests with exact inference each epoch runs in one compiled kernel
(:func:`crflearn._kernels.ssvm.bcfw_epoch`: loss-augmented max-product, block
update and line search per example); other graphs use the per-example Python
path with the approximate oracle.

Every epoch the exact duality gap is computed by one batched pass of
loss-augmented decoding (monitoring: excluded from the recorded time).
"""

from __future__ import annotations

import numpy as np

from ._base import SolverResult, warn_interrupted, warn_not_converged
from ._history import ConvergenceHistory, Stopwatch
from ._ssvm import Monitor, SSVMProblem, check_common, check_warm_state
from .._kernels.ssvm import bcfw_epoch
from ..graphs import GraphBatch
from ..models import PairwiseModel

__all__ = ["fit_bcfw"]

_AVERAGING = ("none", "uniform", "weighted")
_AVERAGING_CODES = {"none": 0, "uniform": 1, "weighted": 2}
_STATE_KEYS = ("w", "ell", "node_stats", "edge_stats", "block_losses", "w_avg", "ell_avg", "n_steps",
               "history")


def fit_bcfw(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 100,
             tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
             callback=None, averaging: str = "none", inference: str = "auto") -> SolverResult:
    """Train a structured SVM with block-coordinate Frank-Wolfe.

    Minimises ``P(w) = alpha/2 ||w||^2 + 1/n sum_i max_y [L_i(y) - <w, psi_i(y_i) - psi_i(y)>]``
    with the unnormalised Hamming loss ``L_i``.

    Parameters
    ----------
    batch : GraphBatch
        Labelled training batch (``batch.labels`` set).
    model : PairwiseModel
        Joint feature map.
    alpha : float
        L2 strength (the SSVM ``C`` is ``1 / (alpha n)``).
    max_iter : int
        Maximum number of epochs (passes over the examples).
    tol : float
        Stop when the relative duality gap ``gap / |primal|`` is <= tol.
    verbose : int
        Print one line per epoch when > 0.
    random_state : None, int or numpy.random.Generator-compatible seed
        Seed of the per-epoch permutation of the examples.
    warm_start : dict, optional
        ``state`` of a previous :func:`fit_bcfw` run on the same batch and model.
    callback : callable, optional
        ``callback(info)`` after each epoch (``info`` = history row plus ``"w"``); returning
        True stops training.
    averaging : {"none", "uniform", "weighted"}
        Report (and return) the plain iterate, the uniform average of all iterates, or the
        ``2/(k+2)``-weighted average of Lacoste-Julien et al. Averages of dual-feasible points
        are dual-feasible, so the recorded gap is exact for the averaged iterate too.
    inference : {"auto", "exact", "trws", "maxproduct", "bruteforce"}
        Loss-augmented MAP method. On loopy graphs the oracle is approximate: the recorded
        primal is then a lower estimate and the gap is not certified
        (``history["exact_oracle"] == 0``, ``info["inference"]`` says so).

    Returns
    -------
    SolverResult
        History columns: the common ones plus ``exact_oracle`` (1.0 or 0.0).
        ``oracle_calls`` counts training oracle calls (the monitoring pass excluded).

    References
    ----------
    .. [1] S. Lacoste-Julien, M. Jaggi, M. Schmidt, P. Pletscher. "Block-Coordinate
       Frank-Wolfe Optimization for Structural SVMs", ICML 2013.
    """
    alpha, max_iter, tol = check_common(batch, model, alpha, max_iter, tol, callback, verbose)
    if averaging not in _AVERAGING:
        raise ValueError(f"averaging must be one of {list(_AVERAGING)}, got {averaging!r}")
    warm = check_warm_state(warm_start, _STATE_KEYS, "bcfw", alpha)
    prob = SSVMProblem(batch, model, alpha, inference)
    rng = np.random.default_rng(random_state)
    n, lam = prob.n, alpha
    scale = 1.0 / (lam * n)

    if warm is None:
        w = np.zeros(model.size)
        ell = 0.0
        node_stats = prob.node_stat(batch.labels)
        edge_stats = (np.stack([prob.edge_stat(i, prob._y[i]) for i in range(n)]) if prob.shared
                      else np.concatenate([prob.edge_stat(i, prob._y[i]) for i in range(n)]))
        block_losses = np.zeros(n)
        w_avg, ell_avg, n_steps = w.copy(), 0.0, 0
        history = ConvergenceHistory(extra=("exact_oracle",))
    else:
        w = np.array(warm["w"], dtype=np.float64)
        if w.shape != (model.size,) or np.shape(warm["node_stats"]) != (batch.n_nodes, model.n_states):
            raise ValueError("warm_start does not match this batch and model")
        ell = float(warm["ell"])
        node_stats = np.array(warm["node_stats"], dtype=np.float64)
        edge_stats = np.array(warm["edge_stats"], dtype=np.float64)
        block_losses = np.array(warm["block_losses"], dtype=np.float64)
        w_avg = np.array(warm["w_avg"], dtype=np.float64)
        ell_avg, n_steps = float(warm["ell_avg"]), int(warm["n_steps"])
        k = model.n_states
        n_blocks = n if prob.shared else batch.n_edges
        if (edge_stats.shape != (n_blocks, k, k) or block_losses.shape != (n,)
                or w_avg.shape != (model.size,)):
            raise ValueError("warm_start does not match this batch and model")
        history = ConvergenceHistory(extra=("exact_oracle",), start=warm["history"])

    if prob.compiled:  # build the kernel arguments and load (or compile) the kernel, untimed
        bcfw_epoch(*prob.kernel_args(), np.zeros(0, dtype=np.int64), lam, _AVERAGING_CODES[averaging], w,
                   node_stats, edge_stats, block_losses, w_avg, np.zeros(2), np.zeros(2, dtype=np.int64))
    monitor = Monitor("bcfw", history, tol, verbose, callback)
    watch = Stopwatch(offset=history.last_time)
    epoch = history.last_iteration
    train_calls = history.last_oracle_calls
    interrupted = stopped = False
    w_rep = w_avg if averaging != "none" else w
    try:
        for _ in range(max_iter):
            perm = rng.permutation(n)
            if prob.compiled:  # w, the dual blocks and w_avg are updated in place
                scalars = np.array([ell, ell_avg])
                counters = np.array([n_steps, 0], dtype=np.int64)
                bcfw_epoch(*prob.kernel_args(), np.ascontiguousarray(perm, dtype=np.int64), lam,
                           _AVERAGING_CODES[averaging], w, node_stats, edge_stats, block_losses, w_avg,
                           scalars, counters)
                ell, ell_avg, n_steps = float(scalars[0]), float(scalars[1]), int(counters[0])
                train_calls += int(counters[1])
                prob.oracle_calls += int(counters[1])
            else:
                for i in perm:
                    y_star = prob.oracle_one(w, i)
                    train_calls += 1
                    sl = batch.node_slice(i)
                    es_idx = i if prob.shared else batch.edge_slice(i)
                    s_node = prob.node_stat(y_star)
                    s_edge = prob.edge_stat(i, y_star)
                    diff = scale * (prob.feature(i, s_node, s_edge)
                                    - prob.feature(i, node_stats[sl], edge_stats[es_idx]))  # w_i - w_s
                    l_s = prob.hamming(i, y_star) / n
                    denom = lam * float(diff @ diff)
                    if denom > 0.0:
                        gamma = (lam * float(diff @ w) - block_losses[i] + l_s) / denom
                        gamma = min(max(gamma, 0.0), 1.0)
                    else:
                        gamma = 1.0 if l_s > block_losses[i] else 0.0
                    if gamma > 0.0:
                        w -= gamma * diff
                        d_ell = gamma * (l_s - block_losses[i])
                        ell += d_ell
                        block_losses[i] += d_ell
                        node_stats[sl] += gamma * (s_node - node_stats[sl])
                        edge_stats[es_idx] += gamma * (s_edge - edge_stats[es_idx])
                    if averaging != "none":
                        rho = 2.0 / (n_steps + 2.0) if averaging == "weighted" else 1.0 / (n_steps + 1.0)
                        w_avg = (1.0 - rho) * w_avg + rho * w
                        ell_avg = (1.0 - rho) * ell_avg + rho * ell
                    n_steps += 1
            epoch += 1
            with watch.paused():
                w_rep, ell_rep = (w_avg, ell_avg) if averaging != "none" else (w, ell)
                stop = monitor.record_ssvm(prob, w_rep, ell_rep, iteration=epoch, time=watch.elapsed(),
                                           oracle_calls=train_calls)
            if stop:
                stopped = True
                break
    except KeyboardInterrupt:
        interrupted = True
        warn_interrupted("bcfw", epoch)
        w_rep = w_avg if averaging != "none" else w

    if not (monitor.converged or interrupted or stopped):
        warn_not_converged("bcfw", max_iter, monitor.last_rel_gap, tol)
    hist = history.to_dict()
    state = dict(alpha=alpha, w=w.copy(), ell=ell, node_stats=node_stats, edge_stats=edge_stats,
                 block_losses=block_losses, w_avg=np.array(w_avg), ell_avg=ell_avg, n_steps=n_steps, history=hist)
    return SolverResult(w=np.array(w_rep, dtype=np.float64), n_iter=epoch, state=state, history=hist,
                        converged=monitor.converged, interrupted=interrupted,
                        info={"inference": prob.inference_note, "averaging": averaging,
                              "exact_oracle": prob.exact_oracle})
