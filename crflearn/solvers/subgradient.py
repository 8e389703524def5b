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
(:func:`crflearn._kernels.ssvm.subgradient_epoch`); on other graphs each example
is decoded by the approximate oracle and updated by the same compiled step
(:func:`crflearn._kernels.ssvm.subgradient_step`).
"""

from __future__ import annotations

import numpy as np

from ._base import SolverResult, check_common, check_sample_weight
from ._ssvm import Checkpoint, SSVMProblem, prepare, run_epoch, ssvm_loop
from .._kernels.ssvm import PegasosState, subgradient_epoch, subgradient_step
from ..graphs import GraphBatch
from ..models import PairwiseModel

__all__ = ["fit_subgradient"]


def fit_subgradient(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 100,
                    tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
                    callback=None, check_input: bool = True, averaging: str = "none",
                    inference: str = "auto", sample_weight: np.ndarray | None = None) -> SolverResult:
    """Train a structured SVM by stochastic subgradient descent with Pegasos steps ``1/(alpha t)``.

    Minimises ``alpha/2 ||w||^2 + 1/n sum_i s_i H_i(w)``. Sample weights scale the steps (not
    the sampling): example ``i``'s step is ``s_i dpsi_i / (alpha t)`` and its decoded loss enters
    the dual value as ``s_i L_i``, so the epoch-end iterate is still ``1/(alpha n) sum_i s_i
    E_{a_i}[dpsi_i]`` of a feasible point of the weighted dual and the gap stays certified.

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
    check_input : bool, default=True
        Validate ``batch`` and ``model``; False when the caller already did (the estimator).
    inference : {"auto", "exact", "trws", "maxproduct", "bruteforce"}
        Loss-augmented MAP method; approximate on loopy graphs (gap then not certified,
        ``history["exact_oracle"] == 0``).
    sample_weight : ndarray (n_examples,), optional
        Step and loss scale ``s_i`` of each example (see above); None means 1. A state from a
        run with other weights cannot warm start this one.

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
    alpha, max_iter, tol, verbose = check_common(batch, model, alpha, max_iter, tol, callback, verbose,
                                                 check_input)
    sample_weight = check_sample_weight(sample_weight, batch.n_examples)
    prob, warm = prepare("subgradient", batch, model, alpha, warm_start, inference, averaging, sample_weight)
    state, avg = _initial_state(prob, warm)
    if prob.compiled:  # load (or compile) the kernel with an empty pass, untimed
        subgradient_epoch(prob.view, prob.graph, state, np.zeros(0, dtype=np.int64), alpha)
    rng = np.random.default_rng(random_state)
    loop = ssvm_loop("subgradient", max_iter, tol, verbose, callback, warm)
    state.counters[1] = loop.history.last_oracle_calls
    # the dual certificate needs whole epochs: an interrupt mid-epoch rolls back to its start
    checkpoint, avg_saved = Checkpoint(state), dict(avg)
    with loop:
        for it in loop.iterations():
            checkpoint.save(state)
            avg_saved.update(avg)
            run_epoch(prob, rng.permutation(prob.n), state, subgradient_epoch, subgradient_step, alpha)
            w = model.from_kernel(state.wuT, state.wp)
            ell = float(state.sums[0]) / (int(state.counters[0]) - 1)  # mean decoded loss (module docstring)
            _update_average(avg, averaging, it, w, ell)
            w_rep, ell_rep = (avg["w_avg"], avg["ell_avg"]) if averaging != "none" else (w, ell)
            if prob.record(loop, it, w_rep, ell_rep, int(state.counters[1])):
                break
    if loop.unrecorded:
        checkpoint.restore(state)
        avg.update(avg_saved)
    hist = loop.finish()
    w = model.from_kernel(state.wuT, state.wp)
    w_rep = avg["w_avg"] if averaging != "none" and avg["avg_weight"] > 0 else w
    state_dict = dict(alpha=alpha, w=w, t=int(state.counters[0]), loss_sum=float(state.sums[0]), **avg,
                      history=hist, sample_weight=sample_weight)
    return SolverResult(w=np.array(w_rep, dtype=np.float64), n_iter=loop.n_iter, state=state_dict, history=hist,
                        converged=loop.converged, interrupted=loop.interrupted,
                        info={"inference": prob.inference_note, "averaging": averaging,
                              "exact_oracle": prob.exact_oracle})


def _initial_state(prob: SSVMProblem, warm: dict | None) -> tuple[PegasosState, dict]:
    """The kernel state (w = 0, t = 1), or a previous run's, and the running average."""
    model = prob.model
    if warm is None:
        w, t, loss_sum = np.zeros(model.size), 1, 0.0
        avg = dict(w_avg=np.zeros(model.size), ell_avg=0.0, avg_weight=0.0)
    else:
        w = np.asarray(warm["w"], dtype=np.float64)
        if w.shape != (model.size,):
            raise ValueError(f"warm_start['w'] has shape {w.shape}, expected ({model.size},)")
        t, loss_sum = int(warm["t"]), float(warm["loss_sum"])
        if (t - 1) % prob.n:
            raise ValueError("warm_start comes from a run on a different number of examples")
        avg = dict(w_avg=np.array(warm["w_avg"], dtype=np.float64), ell_avg=float(warm["ell_avg"]),
                   avg_weight=float(warm["avg_weight"]))
    return PegasosState(*model.to_kernel(w), np.array([t, 0], dtype=np.int64), np.array([loss_sum])), avg


def _update_average(avg: dict, averaging: str, epoch: int, w: np.ndarray, ell: float) -> None:
    """Fold the epoch-end point ``(w, ell)`` into the running average (uniform or weighted by epoch)."""
    if averaging == "none":
        return
    weight = 1.0 if averaging == "uniform" else float(epoch)
    avg["avg_weight"] += weight
    rho = weight / avg["avg_weight"]
    avg["w_avg"] = (1.0 - rho) * avg["w_avg"] + rho * w
    avg["ell_avg"] = (1.0 - rho) * avg["ell_avg"] + rho * ell
