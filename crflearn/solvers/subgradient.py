"""Stochastic subgradient descent (Pegasos steps) for the structured SVM, with a certified gap.

With the step ``1/(alpha t)`` (``t = 1, 2, ...``) the update
``w <- (1 - 1/t) w + 1/(alpha t) dpsi_i(y_t)`` unrolls to
``w_{T+1} = 1/(alpha T) sum_{s <= T} dpsi_{i_s}(y_s)``. When every epoch visits each
example exactly once (a fresh permutation per epoch), after ``m`` epochs
(``T = m n``) this is ``w = 1/(alpha n) sum_i E_{a_i}[dpsi_i]`` where ``a_i`` is the
uniform distribution over the ``m`` labelings decoded for example ``i``: a feasible
point of the structured-SVM dual. Its dual value is
``D = -alpha/2 ||w||^2 + (1/T) sum_s L_{i_s}(y_s)`` (the running mean of the losses
of the decoded labelings), a valid lower bound on the optimum; the gap
``P(w) - D`` recorded at epoch boundaries is therefore a certified bound on
``P(w) - P*`` when the oracle is exact. Averages of epoch-end iterates are
averages of dual-feasible points and are certified the same way.

On forests with exact inference each epoch runs in one compiled kernel
(:func:`crflearn._kernels.ssvm.subgradient_epoch`); other graphs use the
per-example Python path with the approximate oracle.
"""

from __future__ import annotations

import numpy as np

from ._base import SolverResult, warn_interrupted, warn_not_converged
from ._history import ConvergenceHistory, Stopwatch
from ._ssvm import Monitor, SSVMProblem, check_common, check_warm_state
from .._kernels.ssvm import subgradient_epoch
from ..graphs import GraphBatch
from ..models import PairwiseModel

__all__ = ["fit_subgradient"]

_AVERAGING = ("none", "uniform", "weighted")
_STATE_KEYS = ("w", "t", "loss_sum", "w_avg", "ell_avg", "avg_weight", "history")


def fit_subgradient(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 100,
                    tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
                    callback=None, averaging: str = "none", inference: str = "auto") -> SolverResult:
    """Train a structured SVM by stochastic subgradient descent with Pegasos steps ``1/(alpha t)``.

    Parameters
    ----------
    batch : GraphBatch
        Labelled training batch.
    model : PairwiseModel
        Joint feature map.
    alpha : float
        L2 strength.
    max_iter : int
        Maximum number of epochs (each visits every example once, in a random order).
    tol : float
        Stop when the relative certified gap ``gap / |primal|`` is <= tol.
    verbose : int
        One progress line per epoch when > 0.
    random_state : None, int or seed
        Seed of the per-epoch permutations.
    warm_start : dict, optional
        ``state`` of a previous :func:`fit_subgradient` run (the step counter continues,
        which keeps the dual certificate valid).
    callback : callable, optional
        ``callback(info)`` after each epoch; returning True stops training.
    averaging : {"none", "uniform", "weighted"}
        Report the last epoch-end iterate, the uniform average of the epoch-end iterates,
        or their average weighted by epoch index. (Only epoch-end iterates are averaged:
        they are the ones with a known dual-feasible counterpart.)
    inference : {"auto", "exact", "trws", "maxproduct", "bruteforce"}
        Loss-augmented MAP method; approximate on loopy graphs (gap then not certified,
        ``history["exact_oracle"] == 0``).

    Returns
    -------
    SolverResult

    References
    ----------
    .. [1] S. Shalev-Shwartz, Y. Singer, N. Srebro, A. Cotter. "Pegasos: primal estimated
       sub-gradient solver for SVM", Mathematical Programming 127(1), 2011.
    .. [2] N. Ratliff, J. A. Bagnell, M. Zinkevich. "(Online) subgradient methods for
       structured prediction", AISTATS 2007.
    """
    alpha, max_iter, tol = check_common(batch, model, alpha, max_iter, tol, callback, verbose)
    if averaging not in _AVERAGING:
        raise ValueError(f"averaging must be one of {list(_AVERAGING)}, got {averaging!r}")
    warm = check_warm_state(warm_start, _STATE_KEYS, "subgradient", alpha)
    prob = SSVMProblem(batch, model, alpha, inference)
    rng = np.random.default_rng(random_state)
    n = prob.n

    if warm is None:
        w = np.zeros(model.size)
        t, loss_sum = 1, 0.0
        w_avg, ell_avg, avg_weight = np.zeros(model.size), 0.0, 0.0
        history = ConvergenceHistory(extra=("exact_oracle",))
    else:
        w = np.array(warm["w"], dtype=np.float64)
        if w.shape != (model.size,):
            raise ValueError(f"warm_start['w'] has shape {w.shape}, expected ({model.size},)")
        t, loss_sum = int(warm["t"]), float(warm["loss_sum"])
        if (t - 1) % n:
            raise ValueError("warm_start comes from a run on a different number of examples")
        w_avg, ell_avg, avg_weight = np.array(warm["w_avg"]), float(warm["ell_avg"]), float(warm["avg_weight"])
        history = ConvergenceHistory(extra=("exact_oracle",), start=warm["history"])

    if prob.compiled:
        psi_true = None
        _warm_up(prob, w)
    else:
        psi_true = [prob.feature(i, prob.node_stat(prob._y[i]), prob.edge_stat(i, prob._y[i])) for i in range(n)]
    monitor = Monitor("subgradient", history, tol, verbose, callback)
    watch = Stopwatch(offset=history.last_time)
    epoch = history.last_iteration
    train_calls = history.last_oracle_calls
    interrupted = stopped = False
    w_rep = w_avg if averaging != "none" and avg_weight > 0 else w
    try:
        for _ in range(max_iter):
            # the dual certificate needs whole epochs: an interrupt mid-epoch rolls back to its start
            w_start, t_start, loss_start = w.copy(), t, loss_sum
            try:
                perm = rng.permutation(n)
                if prob.compiled:  # w is updated in place
                    counters = np.array([t, 0], dtype=np.int64)
                    sums = np.array([loss_sum])
                    subgradient_epoch(*prob.kernel_args(), np.ascontiguousarray(perm, dtype=np.int64), alpha, w,
                                      counters, sums)
                    t, loss_sum = int(counters[0]), float(sums[0])
                    train_calls += int(counters[1])
                    prob.oracle_calls += int(counters[1])
                else:
                    for i in perm:
                        y_star = prob.oracle_one(w, i)
                        train_calls += 1
                        loss = prob.hamming(i, y_star)
                        w *= 1.0 - 1.0 / t
                        if loss > 0:
                            dpsi = psi_true[i] - prob.feature(i, prob.node_stat(y_star), prob.edge_stat(i, y_star))
                            w += dpsi / (alpha * t)
                        loss_sum += loss
                        t += 1
            except KeyboardInterrupt:
                w, t, loss_sum = w_start, t_start, loss_start
                raise
            epoch += 1
            ell = loss_sum / (t - 1)  # running mean of the decoded losses (module docstring)
            if averaging != "none":
                weight = 1.0 if averaging == "uniform" else float(epoch)
                avg_weight += weight
                rho = weight / avg_weight
                w_avg = (1.0 - rho) * w_avg + rho * w
                ell_avg = (1.0 - rho) * ell_avg + rho * ell
            with watch.paused():
                w_rep, ell_rep = (w_avg, ell_avg) if averaging != "none" else (w, ell)
                stop = monitor.record_ssvm(prob, w_rep, ell_rep, iteration=epoch, time=watch.elapsed(),
                                           oracle_calls=train_calls)
            if stop:
                stopped = True
                break
    except KeyboardInterrupt:
        interrupted = True
        warn_interrupted("subgradient", epoch)
        w_rep = w_avg if averaging != "none" and avg_weight > 0 else w

    if not (monitor.converged or interrupted or stopped):
        warn_not_converged("subgradient", max_iter, monitor.last_rel_gap, tol)
    hist = history.to_dict()
    state = dict(alpha=alpha, w=w.copy(), t=t, loss_sum=loss_sum, w_avg=np.array(w_avg), ell_avg=ell_avg,
                 avg_weight=avg_weight, history=hist)
    return SolverResult(w=np.array(w_rep, dtype=np.float64), n_iter=epoch, state=state, history=hist,
                        converged=monitor.converged, interrupted=interrupted,
                        info={"inference": prob.inference_note, "averaging": averaging,
                              "exact_oracle": prob.exact_oracle})


def _warm_up(prob: SSVMProblem, w: np.ndarray) -> None:
    """Build the kernel arguments and load (or compile) the epoch kernel with an empty pass, untimed."""
    subgradient_epoch(*prob.kernel_args(), np.zeros(0, dtype=np.int64), 1.0, w,
                      np.array([1, 0], dtype=np.int64), np.zeros(1))
