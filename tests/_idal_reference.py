"""Independent reference for the IDAL tests: the relaxed primal of DESIGN-idal section 5,

    P~(w, zeta) = alpha/2 ||w||^2 + 1/n sum_i [ sum_c h_c*(theta_c(w, zeta)) - <w, psi*_i> ],

written in plain NumPy (sort-based simplex projection, no Numba kernel), minimised with scipy's
L-BFGS over ``(w, zeta)`` (the optimum ``P*``) or over ``zeta`` at fixed ``w`` (``P(w)``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from crflearn.models import hamming_loss_vectors
from crflearn.solvers.idal import OTRW_FRACTION


def _proj_rows(v):
    """Row-wise sort-based projection onto the simplex (plain NumPy)."""
    u = -np.sort(-v, axis=1)
    css = np.cumsum(u, axis=1) - 1.0
    idx = np.arange(1, v.shape[1] + 1)
    r = np.sum(u - css / idx > 0, axis=1)
    tau = css[np.arange(len(v)), r - 1] / r
    return np.maximum(v - tau[:, None], 0.0)


def _otrw_conj_rows(theta, kappa, a, k):
    """max_p <theta_e, p> + kappa (G(p) - a G(rowsum p)) for every row by accelerated projected gradient."""
    p = _proj_rows(theta / (2 * kappa))
    y = p.copy()
    t = 1.0
    for _ in range(5000):
        r = y.reshape(-1, k, k).sum(2)
        g = theta - 2 * kappa * y + 2 * kappa * a * np.repeat(r, k, axis=1)
        p_new = _proj_rows(y + g / (2 * kappa))
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = p_new + (t - 1) / t_new * (p_new - p)
        if np.abs(p_new - p).max() < 1e-15:
            p = p_new
            break
        p, t = p_new, t_new
    r = p.reshape(-1, k, k).sum(2)
    val = np.sum(theta * p, 1) + kappa * (1 - np.sum(p * p, 1)) - kappa * a * (1 - np.sum(r * r, 1))
    return val, p


def relaxed_primal(batch, model, alpha, kappa, loss_augmented=False, entropy="gini"):
    """``fun(z) -> (P~(w, zeta), gradient)`` with ``z = concat(w, zeta)`` and the size of ``w``."""
    k = model.n_states
    n = batch.n_examples
    edges = batch.edges
    n_edges = len(edges)
    x = batch.node_features.toarray() if sp.issparse(batch.node_features) else batch.node_features
    loss = hamming_loss_vectors(batch, k) if loss_augmented else np.zeros((batch.n_nodes, k))
    psi_star = model.joint_feature(batch)
    ef = np.ones((n_edges, 1)) if batch.edge_features is None else batch.edge_features
    a = OTRW_FRACTION / k if entropy == "gini_otrw" else 0.0
    size = model.size

    def fun(z):
        w, zeta = z[:size], z[size:].reshape(n_edges, 2, k)
        wu = w[: model.size_unary].reshape(k, -1)
        wp = w[model.size_unary:].reshape(-1, k * k)
        th_n = x @ wu.T + loss
        np.add.at(th_n, edges[:, 0], zeta[:, 0])
        np.add.at(th_n, edges[:, 1], zeta[:, 1])
        th_e = ef @ wp - (zeta[:, 0][:, :, None] + zeta[:, 1][:, None, :]).reshape(n_edges, k * k)
        total = 0.5 * alpha * w @ w - w @ psi_star / n
        mu_n = _proj_rows(th_n / (2 * kappa))
        total += np.sum(np.sum(th_n * mu_n, 1) + kappa * (1 - np.sum(mu_n * mu_n, 1))) / n
        if n_edges and a > 0:
            val, mu_e = _otrw_conj_rows(th_e, kappa, a, k)
            total += np.sum(val) / n
        elif n_edges:
            mu_e = _proj_rows(th_e / (2 * kappa))
            total += np.sum(np.sum(th_e * mu_e, 1) + kappa * (1 - np.sum(mu_e * mu_e, 1))) / n
        else:
            mu_e = np.zeros((0, k * k))
        gw_u = (mu_n.T @ x).ravel()
        gw_p = (ef.T @ mu_e).ravel()
        grad_w = alpha * w + (np.concatenate([gw_u, gw_p]) - psi_star) / n
        me = mu_e.reshape(n_edges, k, k)
        g_zeta = np.empty((n_edges, 2, k))
        g_zeta[:, 0] = (mu_n[edges[:, 0]] - me.sum(2)) / n
        g_zeta[:, 1] = (mu_n[edges[:, 1]] - me.sum(1)) / n
        return total, np.concatenate([grad_w, g_zeta.ravel()])

    return fun, size, n_edges * 2 * k


def reference_w(batch, model, alpha, kappa, loss_augmented=False, entropy="gini"):
    """Minimise the relaxed primal P(w, zeta) over (w, zeta) with L-BFGS; return ``(w*, P*)``."""
    fun, size, n_zeta = relaxed_primal(batch, model, alpha, kappa, loss_augmented, entropy)
    res = minimize(fun, np.zeros(size + n_zeta), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=20000, maxcor=30, ftol=1e-16, gtol=1e-11))
    return res.x[:size], res.fun


def primal_at(w, batch, model, alpha, kappa, loss_augmented=False, entropy="gini"):
    """``P(w) = min_zeta P~(w, zeta)`` (L-BFGS over the messages only)."""
    fun, size, n_zeta = relaxed_primal(batch, model, alpha, kappa, loss_augmented, entropy)

    def f(zeta):
        val, grad = fun(np.concatenate([w, zeta]))
        return val, grad[size:]

    res = minimize(f, np.zeros(n_zeta), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=20000, maxcor=30, ftol=1e-16, gtol=1e-12))
    return res.fun




def tiny_batch(kind, n_examples=3, k=3, p=3, separable=False, seed=0):
    """Tiny labelled problems: ``"chain"`` (3-4 nodes), ``"cycle4"``, ``"grid2"`` (2x2), ``"grid3"`` (3x3).

    ``separable``: features are the one-hot label plus small noise (a margin exists); otherwise
    Gaussian features and random labels.
    """
    from crflearn.graphs import chain_edges, grid_edges, make_batch
    from crflearn.models import PairwiseModel

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n_examples):
        if kind == "chain":
            n, edges = 3 + i % 2, chain_edges(3 + i % 2)
        elif kind == "cycle4":
            n, edges = 4, np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
        else:
            side = 2 if kind == "grid2" else 3
            n, edges = side * side, grid_edges(side, side)
        y = rng.integers(0, k, size=n)
        if separable:
            feats = np.zeros((n, p))
            feats[np.arange(n), y % p] = 2.0
            feats += 0.1 * rng.normal(size=(n, p))
        else:
            feats = rng.normal(size=(n, p))
        xs.append((feats, edges))
        ys.append(y)
    batch, _ = make_batch(xs, ys)
    return batch, PairwiseModel(k, p)
