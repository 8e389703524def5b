"""Compiled solver for small concave quadratic programs over the probability simplex.

Maximise ``f(beta) = b . beta - 1/(2 lam) beta' G beta`` subject to ``beta >= 0``,
``sum(beta) = 1``, with ``G`` symmetric positive semi-definite. This is the dual
of the 1-slack structural SVM restricted to a working set of constraints.

:func:`simplex_qp` is a primal active-set method in the manner of Wolfe's minimum-norm-point
algorithm: each major step adds the coordinate of the smallest gradient of the (minimised)
objective ``q(beta) = 1/(2 lam) beta' G beta - b . beta`` to the support, each minor step
jumps to the minimiser of ``q`` on the affine hull of the support (one small KKT solve) or,
when that leaves the simplex, as far towards it as feasibility allows, dropping the
coordinates that reach zero. The cost is a few solves of the support's size, independent of
the conditioning of ``G`` (which is singular whenever there are more constraints than
weights). Any simplex point is dual feasible, so inexactness only weakens the bound.

References
----------
.. [1] P. Wolfe. "Finding the nearest point in a polytope", Mathematical Programming 11, 1976.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["simplex_qp"]

#: Tikhonov term (relative to the largest diagonal of ``G / lam``) that keeps the KKT systems
#: solvable when ``G`` is singular on the support
_RIDGE = 1e-12


@njit(cache=True, nogil=True)
def _gradient(gram, b, lam, beta, grad):
    """``grad = G beta / lam - b`` (the support of ``beta`` only)."""
    m = beta.shape[0]
    for j in range(m):
        grad[j] = -b[j]
    for l in range(m):
        if beta[l] != 0.0:
            coef = beta[l] / lam
            for j in range(m):
                grad[j] += gram[j, l] * coef


@njit(cache=True, nogil=True)
def _affine_minimiser(gram, b, lam, ridge, idx):
    """Minimiser of ``q`` on ``{sum(beta_S) = 1}`` for the support ``idx`` (KKT system, with a ridge)."""
    s = idx.shape[0]
    kkt = np.zeros((s + 1, s + 1))
    rhs = np.zeros(s + 1)
    for p in range(s):
        for r in range(s):
            kkt[p, r] = gram[idx[p], idx[r]] / lam
        kkt[p, p] += ridge
        kkt[p, s] = 1.0
        kkt[s, p] = 1.0
        rhs[p] = b[idx[p]]
    rhs[s] = 1.0
    return np.linalg.solve(kkt, rhs)[:s]


@njit(cache=True, nogil=True)
def _line_search_towards(gram, lam, beta, grad, j):
    """Exact line search of ``q`` from ``beta`` towards the vertex ``e_j`` (a Frank-Wolfe step)."""
    m = beta.shape[0]
    gb = 0.0
    bqb = 0.0
    for l in range(m):
        if beta[l] != 0.0:
            gb += grad[l] * beta[l]
    slope = grad[j] - gb  # < 0: descent
    for l in range(m):
        if beta[l] != 0.0:
            for r in range(m):
                if beta[r] != 0.0:
                    bqb += beta[l] * gram[l, r] * beta[r]
    col = 0.0
    for l in range(m):
        col += gram[j, l] * beta[l]
    curvature = (gram[j, j] - 2.0 * col + bqb) / lam
    step = 1.0 if curvature <= 0.0 else min(1.0, -slope / curvature)
    for l in range(m):
        beta[l] *= 1.0 - step
    beta[j] += step


@njit(cache=True, nogil=True)
def _minor_cycle(gram, b, lam, ridge, beta, support, entering, grad):
    """Move to the minimiser of ``q`` on the support's affine hull, dropping coordinates that reach 0.

    Returns whether ``beta`` ends at that minimiser (else a Frank-Wolfe step was taken).
    """
    m = beta.shape[0]
    for _ in range(m + 1):
        idx = np.nonzero(support)[0]
        x = _affine_minimiser(gram, b, lam, ridge, idx)
        step = 1.0
        for p in range(idx.shape[0]):
            if x[p] <= 0.0:
                cur = beta[idx[p]]
                step = min(step, cur / (cur - x[p]) if cur > 0.0 else 0.0)
        if step >= 1.0:
            for p in range(idx.shape[0]):
                beta[idx[p]] = x[p]
            return True
        if step <= 0.0 and entering >= 0:
            # the entering coordinate would leave at once: a Frank-Wolfe step onto it instead
            _line_search_towards(gram, lam, beta, grad, entering)
            for l in range(m):
                support[l] = beta[l] > 0.0
            return False
        for p in range(idx.shape[0]):
            j = idx[p]
            beta[j] += step * (x[p] - beta[j])
            if x[p] <= 0.0 and beta[j] <= 1e-15:
                beta[j] = 0.0
                support[j] = False
        entering = -1
    return False


@njit(cache=True, nogil=True)
def simplex_qp(gram, b, lam, beta, max_iter, tol):
    """Active-set maximisation of ``b . beta - 1/(2 lam) beta' G beta`` over the simplex, in place.

    Parameters
    ----------
    gram : ndarray (>= m, >= m) float64
        ``G = A A'`` for constraint vectors ``A`` (rows): the leading ``m x m`` block is read
        (callers may pass a larger, growing buffer).
    b : ndarray (>= m,) float64
        Offsets (the first ``m`` are read).
    lam : float
        Regularisation strength (> 0).
    beta : ndarray (m,) float64
        Feasible start (on the simplex); overwritten by the solution.
    max_iter : int
        Cap on major steps (coordinates entering the support).
    tol : float
        Stop when the Frank-Wolfe gap ``max_j grad_j - grad . beta`` of ``f`` (an upper bound on
        ``f* - f(beta)``) is <= tol.

    Returns
    -------
    n_iter : int
        Major steps taken.
    fw_gap : float
        Final Frank-Wolfe gap.
    """
    m = beta.shape[0]
    grad = np.empty(m)
    support = np.zeros(m, dtype=np.bool_)
    diag = 0.0
    for j in range(m):
        support[j] = beta[j] > 0.0
        diag = max(diag, gram[j, j] / lam)
    ridge = _RIDGE * max(diag, 1.0)
    fw_gap = np.inf
    at_minimiser = False
    it = 0
    for it in range(max_iter):
        _gradient(gram, b, lam, beta, grad)
        j = np.argmin(grad)
        gb = 0.0
        for l in range(m):
            gb += grad[l] * beta[l]
        fw_gap = gb - grad[j]
        if fw_gap <= tol or (support[j] and at_minimiser):  # optimal, or at the round-off floor
            break
        entering = -1 if support[j] else j
        support[j] = True
        at_minimiser = _minor_cycle(gram, b, lam, ridge, beta, support, entering, grad)
    return it + 1, fw_gap
