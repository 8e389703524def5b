"""Block-coordinate Frank-Wolfe (BCFW) for the margin-rescaled structured SVM.

Each step picks one example ``i``, calls the loss-augmented oracle at the
current weights, and moves that example's dual block towards the returned
corner with the exact line search of Lacoste-Julien et al. (2013). The dual
variables are stored compactly as per-example "marginals" (convex combinations
of one-hot labelings: node statistics ``(n_i, K)`` and pairwise statistics), so
memory is ``sum_i (n_i K + |E_i| K^2)`` floats, not ``n * dim(w)``.

On forests with exact inference each epoch runs in one compiled kernel
(:func:`crflearn._kernels.ssvm.bcfw_epoch`: loss-augmented max-product, block
update and line search per example); on other graphs each example is decoded by
the approximate oracle and updated by the same compiled step
(:func:`crflearn._kernels.ssvm.bcfw_step`).

Every epoch the exact duality gap is computed by one batched pass of
loss-augmented decoding (monitoring: excluded from the recorded time).
"""

from __future__ import annotations

import numpy as np

from ._base import SolverResult, check_common, check_sample_weight
from ._ssvm import SSVMProblem, prepare, run_epoch, ssvm_loop
from .._kernels.ssvm import BCFWState, bcfw_epoch, bcfw_step
from ..graphs import GraphBatch
from ..models import PairwiseModel

__all__ = ["fit_bcfw"]

_AVERAGING_CODES = {"none": 0, "uniform": 1, "weighted": 2}


def fit_bcfw(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 100,
             tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
             callback=None, check_input: bool = True, averaging: str = "none",
             inference: str = "auto", sample_weight: np.ndarray | None = None) -> SolverResult:
    """Train a structured SVM with block-coordinate Frank-Wolfe.

    Minimises ``P(w) = alpha/2 ||w||^2 + 1/n sum_i s_i max_y [L_i(y) - <w, psi_i(y_i) - psi_i(y)>]``
    with the unnormalised Hamming loss ``L_i`` and sample weights ``s_i`` (1 by default).
    With weights the dual is the weighted block dual: ``w = 1/(alpha n) sum_i s_i E_{a_i}[dpsi_i]``,
    ``ell = 1/n sum_i s_i E_{a_i}[L_i]``, each block ``a_i`` on its simplex; the line search and
    the recorded dual value ``-alpha/2 ||w||^2 + ell`` use these, so the gap stays a certificate.

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
    check_input : bool, default=True
        Validate ``batch`` and ``model``; False when the caller already did (the estimator).
    inference : {"auto", "exact", "trws", "maxproduct", "bruteforce"}
        Loss-augmented MAP method. On loopy graphs the oracle is approximate: the recorded
        primal is then a lower estimate and the gap is not certified
        (``history["exact_oracle"] == 0``, ``info["inference"]`` says so).
    sample_weight : ndarray (n_examples,), optional
        Weight ``s_i`` of each example's block (see above); None: all 1, the unweighted run.
        Warm starts need the weights of the run that produced the state.

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
    alpha, max_iter, tol, verbose = check_common(batch, model, alpha, max_iter, tol, callback, verbose,
                                                 check_input)
    sample_weight = check_sample_weight(sample_weight, batch.n_examples)
    prob, warm = prepare("bcfw", batch, model, alpha, warm_start, inference, averaging, sample_weight)
    state = _initial_state(prob, warm)
    code = _AVERAGING_CODES[averaging]
    if prob.compiled:  # load (or compile) the kernel with an empty pass, untimed
        bcfw_epoch(prob.view, prob.graph, state, np.zeros(0, dtype=np.int64), alpha, code)
    rng = np.random.default_rng(random_state)
    loop = ssvm_loop("bcfw", max_iter, tol, verbose, callback, warm)
    state.counters[1] = loop.history.last_oracle_calls
    w_start = _reported(model, state, averaging)[0]
    with loop:
        for it in loop.iterations():
            run_epoch(prob, rng.permutation(prob.n), state, bcfw_epoch, bcfw_step, alpha, code)
            w_rep, ell_rep = _reported(model, state, averaging)
            if prob.record(loop, it, w_rep, ell_rep, int(state.counters[1])):
                break
    hist = loop.finish()
    # after an interrupt the dual state may be a part-epoch ahead of the last row: still feasible,
    # a valid warm start; the weights returned are those of the last row
    state_dict = _state_dict(model, state, alpha, hist)
    state_dict["sample_weight"] = sample_weight
    return SolverResult(w=loop.recorded_w(w_start), n_iter=loop.n_iter, state=state_dict, history=hist,
                        converged=loop.converged, interrupted=loop.interrupted,
                        info={"inference": prob.inference_note, "averaging": averaging,
                              "exact_oracle": prob.exact_oracle})


def _reported(model: PairwiseModel, state: BCFWState, averaging: str) -> tuple[np.ndarray, float]:
    """The reported point: the iterate, or its average (flat weights and averaged loss)."""
    if averaging == "none":
        return model.from_kernel(state.wuT, state.wp), float(state.scalars[0])
    return model.from_kernel(state.wuT_avg, state.wp_avg), float(state.scalars[1])


def _initial_state(prob: SSVMProblem, warm: dict | None) -> BCFWState:
    """The kernel state: all dual mass on the ground truths (w = 0), or a previous run's state."""
    model, batch, k, n = prob.model, prob.batch, prob.k, prob.n
    n_blocks = n if prob.shared else batch.n_edges
    if warm is None:
        y, e = batch.labels, batch.edges
        node_stats = np.zeros((batch.n_nodes, k))
        node_stats[np.arange(batch.n_nodes), y] = 1.0
        edge_stats = np.zeros((n_blocks, k, k))
        block = (np.repeat(np.arange(n), np.diff(batch.edge_offsets)) if prob.shared
                 else np.arange(batch.n_edges))
        np.add.at(edge_stats, (block, y[e[:, 0]], y[e[:, 1]]), 1.0)
        w = w_avg = np.zeros(model.size)
        scalars, counters, block_losses = np.zeros(2), np.zeros(2, dtype=np.int64), np.zeros(n)
    else:
        w, w_avg = (np.asarray(warm[key], dtype=np.float64) for key in ("w", "w_avg"))
        node_stats, edge_stats, block_losses = (np.array(warm[key], dtype=np.float64)
                                                for key in ("node_stats", "edge_stats", "block_losses"))
        if (w.shape != (model.size,) or w_avg.shape != (model.size,) or node_stats.shape != (batch.n_nodes, k)
                or edge_stats.shape != (n_blocks, k, k) or block_losses.shape != (n,)):
            raise ValueError("warm_start does not match this batch and model")
        scalars = np.array([float(warm["ell"]), float(warm["ell_avg"])])
        counters = np.array([int(warm["n_steps"]), 0], dtype=np.int64)
    return BCFWState(*model.to_kernel(w), node_stats, edge_stats, block_losses, *model.to_kernel(w_avg),
                     scalars, counters)


def _state_dict(model: PairwiseModel, state: BCFWState, alpha: float, history: dict) -> dict:
    """The warm-start state (flat weights; the keys of the registry's ``warm_start_keys``)."""
    return dict(alpha=alpha, w=model.from_kernel(state.wuT, state.wp), ell=float(state.scalars[0]),
                node_stats=state.node_stats, edge_stats=state.edge_stats, block_losses=state.block_losses,
                w_avg=model.from_kernel(state.wuT_avg, state.wp_avg), ell_avg=float(state.scalars[1]),
                n_steps=int(state.counters[0]), history=history)
