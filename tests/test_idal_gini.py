"""Tests of Gini-relaxed inference (crflearn.inference.gini) and the simplex projection kernel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from crflearn._kernels.simplex import project_simplex
from crflearn.inference.gini import gini_infer


def _proj(v):
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, len(v) + 1)
    r = idx[u - css / idx > 0][-1]
    return np.maximum(v - css[r - 1] / r, 0.0)


def reference_gini(unary, pairwise, edges, kappa):
    """Minimise the message dual sum_c h_c*(theta_c - (A^T zeta)_c) with L-BFGS (plain NumPy)."""
    n, k = unary.shape
    m = len(edges)
    pw = np.broadcast_to(pairwise, (m, k, k)).reshape(m, k * k)

    def fun(z):
        zeta = z.reshape(m, 2, k)
        th_n = unary.copy()
        np.add.at(th_n, edges[:, 0], zeta[:, 0])
        np.add.at(th_n, edges[:, 1], zeta[:, 1])
        th_e = pw - (zeta[:, 0][:, :, None] + zeta[:, 1][:, None, :]).reshape(m, k * k)
        total = 0.0
        mu_n = np.array([_proj(t / (2 * kappa)) for t in th_n])
        mu_e = np.array([_proj(t / (2 * kappa)) for t in th_e])
        total = (np.sum(th_n * mu_n) + kappa * np.sum(1 - (mu_n ** 2).sum(1))
                 + np.sum(th_e * mu_e) + kappa * np.sum(1 - (mu_e ** 2).sum(1)))
        me = mu_e.reshape(m, k, k)
        g = np.empty((m, 2, k))
        g[:, 0] = mu_n[edges[:, 0]] - me.sum(2)
        g[:, 1] = mu_n[edges[:, 1]] - me.sum(1)
        return total, g.ravel(), mu_n, me

    res = minimize(lambda z: fun(z)[:2], np.zeros(m * 2 * k), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=20000, ftol=1e-16, gtol=1e-12))
    val, _, mu_n, mu_e = fun(res.x)
    return val, mu_n, mu_e


GRAPHS = {
    "chain": np.array([[0, 1], [1, 2], [2, 3]]),
    "cycle": np.array([[0, 1], [1, 2], [0, 2]]),
    "grid": np.array([[0, 1], [2, 3], [0, 2], [1, 3]]),
}


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("shared", [True, False])
def test_gini_infer_matches_independent_dual_solve(graph, shared):
    rng = np.random.default_rng(1)
    edges = GRAPHS[graph]
    n = edges.max() + 1
    k = 3
    unary = rng.normal(size=(n, k)) * 2
    pairwise = rng.normal(size=(k, k)) if shared else rng.normal(size=(len(edges), k, k))
    res = gini_infer(unary, pairwise, edges, kappa=0.8, tol=1e-10, max_iter=5000)
    val, mu_n, mu_e = reference_gini(unary, pairwise, edges, 0.8)
    assert res.converged
    assert res.value == pytest.approx(val, rel=1e-7)
    assert res.bound >= res.value - 1e-8  # value is taken at a slightly infeasible mu
    np.testing.assert_allclose(res.node_marginals, mu_n, atol=1e-5)
    np.testing.assert_allclose(res.edge_marginals, mu_e, atol=1e-5)
    # local polytope: simplex blocks and marginalisation
    np.testing.assert_allclose(res.node_marginals.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(res.edge_marginals.sum(2), res.node_marginals[edges[:, 0]], atol=1e-8)
    np.testing.assert_allclose(res.edge_marginals.sum(1), res.node_marginals[edges[:, 1]], atol=1e-8)
    assert res.node_marginals.min() >= 0


def test_gradient_of_value_is_marginals():
    rng = np.random.default_rng(2)
    edges = GRAPHS["cycle"]
    unary = rng.normal(size=(3, 3))
    pairwise = rng.normal(size=(3, 3, 3))
    res = gini_infer(unary, pairwise, edges, kappa=1.0, tol=1e-12, max_iter=5000)
    eps = 1e-5
    for v, k in [(0, 0), (1, 2), (2, 1)]:
        up, dn = unary.copy(), unary.copy()
        up[v, k] += eps
        dn[v, k] -= eps
        fd = (gini_infer(up, pairwise, edges, tol=1e-12, max_iter=5000).value
              - gini_infer(dn, pairwise, edges, tol=1e-12, max_iter=5000).value) / (2 * eps)
        assert fd == pytest.approx(res.node_marginals[v, k], abs=1e-5)


def test_small_kappa_recovers_map_on_a_chain():
    rng = np.random.default_rng(3)
    n, k = 5, 3
    edges = np.array([[i, i + 1] for i in range(n - 1)])
    unary = rng.normal(size=(n, k))
    pairwise = rng.normal(size=(k, k))
    best, best_y = -np.inf, None
    for y in itertools.product(range(k), repeat=n):
        s = unary[np.arange(n), y].sum() + sum(pairwise[y[a], y[b]] for a, b in edges)
        if s > best:
            best, best_y = s, y
    res = gini_infer(unary, pairwise, edges, kappa=1e-3, tol=1e-9, max_iter=20000)
    np.testing.assert_array_equal(res.node_marginals.argmax(1), best_y)
    # the relaxed max exceeds the MAP score by at most the entropy term kappa * (n + |E|)
    assert best - 1e-6 <= res.value <= best + 1e-3 * (n + len(edges)) + 1e-6


def test_forbidden_states_get_zero_mass():
    unary = np.array([[0.0, -np.inf, 1.0], [0.5, 0.2, 0.1]])
    pairwise = np.zeros((3, 3))
    pairwise[2, 0] = -np.inf
    res = gini_infer(unary, pairwise, np.array([[0, 1]]), tol=1e-10)
    assert res.converged
    assert res.node_marginals[0, 1] == 0.0
    assert res.edge_marginals[0, 2, 0] == 0.0
    assert np.isfinite(res.value)


def test_no_edges_is_independent_sparsemax():
    unary = np.array([[1.0, 0.2, -3.0], [0.0, 0.0, 0.0]])
    res = gini_infer(unary, np.zeros((3, 3)), np.zeros((0, 2), np.int64), kappa=0.5)
    np.testing.assert_allclose(res.node_marginals[0], _proj(unary[0]))
    np.testing.assert_allclose(res.node_marginals[1], [1 / 3] * 3)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(kappa=0.0), ValueError, "kappa"), (dict(tol=-1.0), ValueError, "tol"),
    (dict(max_iter=0), ValueError, "max_iter"), (dict(rho=-2.0), ValueError, "rho"),
])
def test_bad_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        gini_infer(np.zeros((2, 2)), np.zeros((2, 2)), np.array([[0, 1]]), **kwargs)


def test_bad_potentials():
    with pytest.raises(ValueError, match="pairwise"):
        gini_infer(np.zeros((2, 2)), np.zeros((3, 3)), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="unary"):
        gini_infer(np.array([[np.nan, 0.0]]), np.zeros((2, 2)), np.zeros((0, 2)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=30), st.floats(0.05, 20))
def test_project_simplex_matches_sort_based(values, scale):
    v = np.asarray(values)
    out = np.empty_like(v)
    buf = np.empty_like(v)
    tau = project_simplex(v, scale, out, buf, np.empty(len(v), np.int64))
    expected = _proj(v * scale)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert out.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(np.maximum(v * scale - tau, 0), out, atol=1e-12)


def test_returned_marginals_are_the_certified_feasible_point():
    """The marginals gini_infer returns agree exactly (local polytope) and score the lower bound."""
    from crflearn.inference import gini_infer

    rng = np.random.default_rng(7)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]])
    unary, pairwise = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    res = gini_infer(unary, pairwise, edges, kappa=0.5, tol=1e-8, max_iter=5000)
    mu_n, mu_e = res.node_marginals, res.edge_marginals
    np.testing.assert_allclose(mu_e.sum(axis=2), mu_n[edges[:, 0]], atol=1e-12)
    np.testing.assert_allclose(mu_e.sum(axis=1), mu_n[edges[:, 1]], atol=1e-12)
    assert mu_n.min() >= 0 and mu_e.min() >= 0
    gini = lambda p: 1.0 - np.sum(p * p, axis=tuple(range(1, p.ndim)))  # noqa: E731
    value = (np.sum(unary * mu_n) + np.sum(pairwise * mu_e) + 0.5 * (gini(mu_n).sum() + gini(mu_e).sum()))
    assert value == pytest.approx(res.lower_bound, abs=1e-9)
    assert res.lower_bound <= res.upper_bound + 1e-12 and res.converged


# ------------------------------------------------------------ the sweep against a plain reference
def _reference_sweep(order, eng, mu_n, mu_e, wuT, wp, zeta):
    """One Gini sweep (plain entropy, dense blocks) written directly from DESIGN-idal: for every clique the
    target ``Proj(theta / 2 kappa)``, the exact step ``min(slope / curvature, 1)`` towards it, then ``w`` and
    ``zeta`` follow (plain NumPy, sort-based projection, no warm start: independent of the kernels)."""
    graph, feats, ent, rho, inv = eng.graph, eng.feats, eng.ent, eng.rho, eng.inv_lam_n
    n_nodes, k = mu_n.shape
    x = np.zeros((n_nodes, wuT.shape[0]))
    for v in range(n_nodes):
        x[v, feats.indices[feats.indptr[v]:feats.indptr[v + 1]]] = feats.data[feats.indptr[v]:feats.indptr[v + 1]]
    edges, ef = graph.edges, feats.edge_features
    for c in order:
        if c < n_nodes:
            slots = [(e, s) for s in (0, 1) for e in np.flatnonzero(edges[:, s] == c)]
            theta = graph.base_n[c] + x[c] @ wuT + sum((zeta[e, s] for e, s in slots), np.zeros(k))
            two_k = 2 * ent.node_w[c]
            d = _proj(theta / two_k) - mu_n[c]
            num, dd = np.dot(theta - two_k * mu_n[c], d), np.dot(d, d)
            if dd > 0 and num > 0:
                g = min(num / (dd * (two_k + rho * len(slots) + inv * x[c] @ x[c])), 1.0)
                mu_n[c] += g * d
                wuT -= g * inv * np.outer(x[c], d)
                for e, s in slots:
                    zeta[e, s] -= g * rho * d
            continue
        e = c - n_nodes
        theta = ((ef[e] @ wp).reshape(k, k) - zeta[e, 0][:, None] - zeta[e, 1][None, :]).ravel()
        two_k = 2 * ent.edge_w[e]
        d = _proj(theta / two_k) - mu_e[e]
        rd, cd = d.reshape(k, k).sum(1), d.reshape(k, k).sum(0)
        num, dd = np.dot(theta - two_k * mu_e[e], d), np.dot(d, d)
        if dd > 0 and num > 0:
            g = min(num / (two_k * dd + rho * (rd @ rd + cd @ cd) + inv * (ef[e] @ ef[e]) * dd), 1.0)
            mu_e[e] += g * d
            wp -= g * inv * np.outer(ef[e], d)
            zeta[e, 0] += g * rho * rd
            zeta[e, 1] += g * rho * cd


def _reference_multiplier_step(eng, mu_n, mu_e, xi, zeta):
    k = mu_n.shape[1]
    blocks = mu_e.reshape(-1, k, k)
    am = np.stack([blocks.sum(2) - mu_n[eng.graph.edges[:, 0]], blocks.sum(1) - mu_n[eng.graph.edges[:, 1]]], 1)
    xi += eng.rho * am
    zeta[...] = xi + eng.rho * am


@pytest.mark.parametrize("q", [None, 2])
def test_sweep_iterates_match_a_plain_reference(q):
    """Five epochs (sweep + multiplier step) of the engine on a small random problem (chains and a grid,
    shared or featured transitions) equal the plain reference's iterates to round-off."""
    from crflearn.graphs import chain_edges, grid_edges, make_batch
    from crflearn.models import PairwiseModel
    from crflearn.solvers._idal_setup import build_engine

    rng = np.random.default_rng(3)
    k, p = 4, 3
    shapes = [(5, chain_edges(5)), (6, grid_edges(2, 3)), (3, chain_edges(3))]
    xs = [(rng.normal(size=(n, p)), e) if q is None else (rng.normal(size=(n, p)), e, rng.normal(size=(len(e), q)))
          for n, e in shapes]
    batch, _ = make_batch(xs, [rng.integers(0, k, size=n) for n, _ in shapes])
    model = PairwiseModel(k, p, q, fit_intercept=True)
    eng = build_engine(batch, model, alpha=0.3, kappa=0.7, rho=0.9, entropy="gini", loss_augmented=True, warm=None,
                       rng=np.random.default_rng(0), inner_epochs=1, sampling="uniform")
    ref = [a.copy() for a in (eng.state.mu_n, eng.state.mu_e, eng.weights.wuT, eng.weights.wp, eng.state.xi,
                              eng.state.zeta)]
    for _ in range(5):
        order = eng.next_order().copy()
        eng.sweep(order)
        eng.multiplier_step()
        _reference_sweep(order, eng, ref[0], ref[1], ref[2], ref[3], ref[5])
        _reference_multiplier_step(eng, ref[0], ref[1], ref[4], ref[5])
    for got, want in zip((eng.state.mu_n, eng.state.mu_e, eng.weights.wuT, eng.weights.wp, eng.state.xi,
                          eng.state.zeta), ref):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert np.count_nonzero(ref[1]) > 2 * len(ref[1])  # not a trivial run: the edge blocks left their one-hot start
