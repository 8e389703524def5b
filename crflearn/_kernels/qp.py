"""Compiled solver for small concave quadratic programs over the probability simplex.

Maximise ``f(beta) = b . beta - 1/(2 lam) beta' G beta`` subject to ``beta >= 0``,
``sum(beta) = 1``, with ``G`` symmetric positive semi-definite. This is the dual
of the 1-slack structural SVM restricted to a working set of constraints.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["project_simplex", "simplex_qp"]


@njit(cache=True)
def project_simplex(v, out):
    """Euclidean projection of ``v`` onto the probability simplex, written into ``out``."""
    m = v.shape[0]
    u = np.sort(v)[::-1]
    css = 0.0
    theta = 0.0
    for j in range(m):
        css += u[j]
        t = (css - 1.0) / (j + 1.0)
        if u[j] - t > 0.0:
            theta = t
    for j in range(m):
        x = v[j] - theta
        out[j] = x if x > 0.0 else 0.0


@njit(cache=True)
def _objective_grad(gram, b, lam, beta, grad):
    m = beta.shape[0]
    val = 0.0
    for j in range(m):
        gb = 0.0
        for l in range(m):
            gb += gram[j, l] * beta[l]
        grad[j] = b[j] - gb / lam
        val += beta[j] * (b[j] - 0.5 * gb / lam)
    return val


@njit(cache=True)
def simplex_qp(gram, b, lam, lipschitz, beta, max_iter, tol):
    """Accelerated projected gradient (FISTA with adaptive restart), in place on ``beta``.

    Parameters
    ----------
    gram : ndarray (m, m) float64
        ``G = A A'`` for constraint vectors ``A`` (rows).
    b : ndarray (m,) float64
    lam : float
        Regularisation strength (> 0).
    lipschitz : float
        Upper bound on the largest eigenvalue of ``G / lam`` (> 0).
    beta : ndarray (m,) float64
        Feasible start; overwritten by the solution.
    max_iter : int
    tol : float
        Stop when the Frank-Wolfe gap ``max_j grad_j - grad . beta`` (an upper bound on
        ``f* - f(beta)``) is <= tol.

    Returns
    -------
    n_iter : int
    fw_gap : float
        Final Frank-Wolfe gap.
    """
    m = beta.shape[0]
    grad = np.empty(m)
    y = beta.copy()
    prev = beta.copy()
    step = np.empty(m)
    t = 1.0
    fw_gap = np.inf
    f_prev = _objective_grad(gram, b, lam, beta, grad)
    it = 0
    for it in range(max_iter):
        # Frank-Wolfe gap at the current iterate
        f_cur = _objective_grad(gram, b, lam, beta, grad)
        gmax = -np.inf
        gdot = 0.0
        for j in range(m):
            if grad[j] > gmax:
                gmax = grad[j]
            gdot += grad[j] * beta[j]
        fw_gap = gmax - gdot
        if fw_gap <= tol:
            break
        if f_cur < f_prev:  # restart momentum when the objective goes down
            t = 1.0
            for j in range(m):
                y[j] = beta[j]
        f_prev = f_cur
        _objective_grad(gram, b, lam, y, grad)
        for j in range(m):
            step[j] = y[j] + grad[j] / lipschitz
        for j in range(m):
            prev[j] = beta[j]
        project_simplex(step, beta)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        mom = (t - 1.0) / t_next
        for j in range(m):
            y[j] = beta[j] + mom * (beta[j] - prev[j])
        t = t_next
    return it + 1, fw_gap
