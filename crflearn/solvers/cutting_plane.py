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

from ._base import SolverResult, check_common, check_sample_weight
from ._ssvm import SSVMProblem, prepare, ssvm_loop
from .._kernels.qp import simplex_qp
from .._validation import check_int
from ..graphs import GraphBatch
from ..models import PairwiseModel

__all__ = ["fit_cutting_plane"]


def fit_cutting_plane(batch: GraphBatch, model: PairwiseModel, *, alpha: float, max_iter: int = 100,
                      tol: float = 1e-3, verbose: int = 0, random_state=None, warm_start: dict | None = None,
                      callback=None, check_input: bool = True, cache_size: int = 5, max_cache_steps: int = 10,
                      qp_max_iter: int = 20000, inference: str = "auto",
                      sample_weight: np.ndarray | None = None) -> SolverResult:
    """Train a structured SVM with the 1-slack cutting-plane method.

    Minimises ``alpha/2 ||w||^2 + 1/n sum_i s_i H_i(w)``. With sample weights each 1-slack
    constraint is built from the weighted sums ``a = 1/n sum_i s_i dpsi_i(y_i)``,
    ``b = 1/n sum_i s_i L_i(y_i)`` (the 1-slack form of the weighted objective), so every
    simplex point of the working-set dual is still dual feasible and the gap stays certified.

    Parameters
    ----------
    batch : GraphBatch
        Labelled training batch (``batch.labels`` set).
    model : PairwiseModel
        The joint feature map.
    alpha : float
        L2 strength (the SSVM ``C`` is ``1 / (alpha n)``).
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
    check_input : bool, default=True
        Validate ``batch`` and ``model``; False when the caller already did (the estimator).
    inference : {"auto", "exact", "trws", "maxproduct", "bruteforce"}
        Loss-augmented MAP method; approximate on loopy graphs (gap then not certified).
    sample_weight : ndarray (n_examples,), optional
        Weights ``s_i`` inside every constraint (see above); None: all 1. Warm starts refuse
        a state built with other weights (its constraints depend on them).

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
    alpha, max_iter, tol, verbose = check_common(batch, model, alpha, max_iter, tol, callback, verbose,
                                                 check_input)
    cache_size = check_int(cache_size, "cache_size", 0)
    max_cache_steps = check_int(max_cache_steps, "max_cache_steps", 0)
    qp_max_iter = check_int(qp_max_iter, "qp_max_iter", 1)
    sample_weight = check_sample_weight(sample_weight, batch.n_examples)
    prob, warm = prepare("cutting_plane", batch, model, alpha, warm_start, inference, sample_weight=sample_weight)
    loop = ssvm_loop("cutting_plane", max_iter, tol, verbose, callback, warm, extra=("n_constraints",))
    ws = _WorkingSet(prob, warm, qp_max_iter, loop.n_iter)
    calls = loop.history.last_oracle_calls
    cache_steps = 0
    last_gap = np.inf
    with loop:
        for it in loop.iterations():
            ws.solve()
            for _ in range(max_cache_steps if cache_size else 0):  # constraints from the cache, no oracle
                cand, slack_cache = ws.best_labels(ws.cache)
                if slack_cache - ws.slack() <= 0.5 * last_gap:
                    break
                ws.add(cand)
                ws.solve()
                cache_steps += 1
            labels, slack = ws.best_labels([prob.oracle_all(ws.w)])
            calls += prob.n
            sq = 0.5 * alpha * float(ws.w @ ws.w)
            primal, dual = sq + slack, float(ws.b @ ws.beta) - sq
            last_gap = max(primal - dual, 0.0)
            ws.snapshot(it)
            if loop.record(it, primal=primal, dual=dual, w=ws.w, oracle_calls=calls,
                           exact_oracle=float(prob.exact_oracle), n_constraints=float(len(ws.b))):
                break
            ws.commit(labels, cache_size)  # solved at the next iteration; the recorded w is unchanged
    if loop.interrupted:
        ws.rollback(loop.n_iter)
    hist = loop.finish()
    state = dict(constraints=ws.A.copy(), offsets=ws.b.copy(), beta=ws.beta.copy(), cache=ws.cache, history=hist,
                 sample_weight=sample_weight)
    return SolverResult(w=ws.w.copy(), n_iter=loop.n_iter, state=state, history=hist, converged=loop.converged,
                        interrupted=loop.interrupted,
                        info={"inference": prob.inference_note, "exact_oracle": prob.exact_oracle,
                              "n_constraints": len(ws.b), "cache_steps": cache_steps})


class _WorkingSet:
    """The 1-slack constraints ``(A, b)``, their Gram matrix, the dual point ``beta`` and the cache.

    ``w = A' beta / alpha`` always describes ``beta``; constraints added since the last
    :meth:`solve` carry ``beta = 0`` (``w`` unchanged) until the next solve.
    """

    def __init__(self, prob: SSVMProblem, warm: dict | None, qp_max_iter: int, iteration: int):
        self.prob = prob
        self.qp_max_iter = qp_max_iter
        d, n_nodes = prob.model.size, prob.batch.n_nodes
        if warm is None:  # the trivial constraint (all ground truths): a = 0, b = 0
            A, b, self.beta = np.zeros((1, d)), np.zeros(1), np.ones(1)
            self.cache = np.empty((0, n_nodes), dtype=np.int64)
        else:
            A = np.array(warm["constraints"], dtype=np.float64)
            b = np.array(warm["offsets"], dtype=np.float64)
            self.beta = np.array(warm["beta"], dtype=np.float64)
            self.cache = np.array(warm["cache"], dtype=np.int64)
            if (A.ndim != 2 or A.shape[1] != d or b.shape != (len(A),) or self.beta.shape != b.shape
                    or self.cache.shape[1:] != (n_nodes,)):
                raise ValueError("warm_start does not match this batch and model")
        # constraints, offsets and Gram matrix live in buffers that grow by doubling
        self.m = len(b)
        self._A, self._b, self._gram = A, b, A @ A.T
        self.solved = self.m
        self.w = A.T @ self.beta / prob.alpha
        self._snapshots: dict[int, tuple] = {}
        self.snapshot(iteration)

    @property
    def A(self) -> np.ndarray:
        return self._A[:self.m]

    @property
    def b(self) -> np.ndarray:
        return self._b[:self.m]

    def add(self, labels: np.ndarray) -> None:
        """Append the constraint of a joint labeling (``beta`` 0 for it)."""
        prob, m = self.prob, self.m
        a_new = (prob.psi_true - prob.joint_feature(labels)) / prob.n
        if m == len(self._b):
            cap = 2 * m
            grown = np.empty((cap, cap))
            grown[:m, :m] = self._gram[:m, :m]
            self._gram = grown
            self._A = np.concatenate([self._A, np.empty_like(self._A)])
            self._b = np.concatenate([self._b, np.empty_like(self._b)])
        g_row = self.A @ a_new
        self._gram[m, :m] = self._gram[:m, m] = g_row
        self._gram[m, m] = a_new @ a_new
        self._A[m], self._b[m] = a_new, float((prob.weights * prob.losses(labels)).mean())
        self.beta = np.append(self.beta, 0.0)
        self.m = m + 1

    def solve(self) -> None:
        """Maximise the restricted dual over the simplex (no-op when nothing was added)."""
        if self.solved == self.m:
            return
        alpha = self.prob.alpha
        scale = max(float(np.abs(self.b).max()), 1e-12)
        # the buffers go as they are: the kernel reads their leading m x m block
        simplex_qp(self._gram, self._b, alpha, self.beta, self.qp_max_iter, 1e-10 * scale)
        self.solved = self.m
        self.w = self.A.T @ self.beta / alpha

    def slack(self) -> float:
        """The working set's slack at ``w``: ``max(0, max_j b_j - <a_j, w>)``."""
        return max(float((self.b - self.A @ self.w).max()), 0.0)

    def best_labels(self, candidates) -> tuple[np.ndarray, float]:
        """Per example, the candidate labeling with the largest hinge at ``w`` (ground truth if none > 0),
        and the mean of those hinges weighted by the sample weights."""
        prob, w = self.prob, self.w
        best = prob.labels.copy()
        best_val = np.zeros(prob.n)
        ex = prob.batch.example_of_node()
        truth = prob.model.score(w, prob.batch)
        for cand in candidates:
            h = prob.losses(cand) + prob.model.score(w, prob.batch, cand) - truth
            better = h > best_val
            if better.any():
                best_val = np.where(better, h, best_val)
                take = better[ex]
                best[take] = cand[take]
        return best, float((prob.weights * best_val).mean())

    def snapshot(self, iteration: int) -> None:
        """Remember the point of history row ``iteration`` (the last two are kept)."""
        self._snapshots = {key: snap for key, snap in self._snapshots.items() if key == iteration - 1}
        self._snapshots[iteration] = (self.m, self.beta.copy(), self.cache, self.w)

    def commit(self, labels: np.ndarray, cache_size: int) -> None:
        """Add the oracle pass's constraint and cache its labeling, after its row was recorded."""
        if cache_size:
            self.cache = np.vstack([labels[None, :], self.cache])[:cache_size]
        self.add(labels)

    def rollback(self, iteration: int) -> None:
        """Back to the point of history row ``iteration``, the last recorded one (after an interrupt)."""
        self.m, beta, self.cache, self.w = self._snapshots[iteration]
        self.beta = beta.copy()
        self.solved = self.m
