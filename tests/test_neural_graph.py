"""Graph losses (Gini-relaxed, structured hinge, scores) against independent computations."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.optimize import minimize  # noqa: E402

from crflearn.neural import gini_relaxed_loss, graph_hinge_loss, graph_score  # noqa: E402

TRIANGLE = np.array([[0, 1], [1, 2], [0, 2]])


def _needs_gini():
    try:
        from crflearn.inference.gini import gini_infer  # noqa: F401
    except ImportError:
        pytest.skip("crflearn.inference.gini not available")


def _relaxed_max_slsqp(unary, pairwise, edges, kappa):
    """max <theta, mu> + kappa sum_c (1 - ||mu_c||^2) over the local polytope, by SLSQP."""
    n, k = unary.shape
    m = len(edges)
    pw = np.broadcast_to(pairwise, (m, k, k)) if pairwise.ndim == 2 else pairwise
    theta = np.concatenate([unary.ravel(), pw.ravel()])
    n_var = n * k + m * k * k

    def split(z):
        return z[: n * k].reshape(n, k), z[n * k:].reshape(m, k, k)

    def neg(z):
        mu_n, mu_e = split(z)
        val = theta @ z + kappa * ((1 - (mu_n ** 2).sum(1)).sum() + (1 - (mu_e ** 2).sum((1, 2))).sum())
        grad = theta - 2 * kappa * z
        return -val, -grad

    cons = []
    rows = []
    for v in range(n):
        r = np.zeros(n_var)
        r[v * k:(v + 1) * k] = 1
        rows.append((r, 1.0))
    for e, (s, t) in enumerate(edges):
        base = n * k + e * k * k
        for a in range(k):
            r = np.zeros(n_var)
            r[base + a * k: base + (a + 1) * k] = 1
            r[s * k + a] = -1
            rows.append((r, 0.0))
            if a == k - 1:  # implied by the others (both sides sum to 1): keep the system full rank
                continue
            r = np.zeros(n_var)
            r[base + a: base + k * k: k] = 1
            r[t * k + a] = -1
            rows.append((r, 0.0))
    a_eq = np.array([r for r, _ in rows])
    b_eq = np.array([b for _, b in rows])
    cons.append({"type": "eq", "fun": lambda z: a_eq @ z - b_eq, "jac": lambda z: a_eq})
    z0 = np.full(n_var, 1.0 / k)
    z0[n * k:] = 1.0 / (k * k)
    res = minimize(neg, z0, jac=True, bounds=[(0, 1)] * n_var, constraints=cons, method="SLSQP",
                   options={"ftol": 1e-13, "maxiter": 2000})
    assert res.success, res.message
    mu_n, mu_e = split(res.x)
    return -res.fun, mu_n, mu_e


@pytest.mark.parametrize("per_edge", [False, True])
def test_gini_loss_matches_independent_qp(per_edge):
    _needs_gini()
    rng = np.random.default_rng(0)
    k = 3
    unary = rng.normal(size=(3, k))
    pairwise = rng.normal(size=(3, k, k)) if per_edge else rng.normal(size=(k, k))
    labels = np.array([0, 2, 1])
    kappa = 0.7
    value, mu_n, mu_e = _relaxed_max_slsqp(unary, pairwise, TRIANGLE, kappa)
    u = torch.tensor(unary, requires_grad=True)
    p = torch.tensor(pairwise, requires_grad=True)
    loss = gini_relaxed_loss(u, p, TRIANGLE, labels, kappa=kappa, tol=1e-12, max_iter=100000)
    true = graph_score(u, p, TRIANGLE, labels).item()
    assert loss.item() == pytest.approx(value - true, abs=1e-6)
    assert loss.item() >= 0
    loss.backward()
    onehot = np.eye(k)[labels]
    np.testing.assert_allclose(u.grad.numpy(), mu_n - onehot, atol=1e-4)
    pair_truth = np.zeros((3, k, k))
    pair_truth[np.arange(3), labels[TRIANGLE[:, 0]], labels[TRIANGLE[:, 1]]] = 1
    expected = mu_e - pair_truth
    np.testing.assert_allclose(p.grad.numpy(), expected if per_edge else expected.sum(0), atol=1e-4)


def test_gini_loss_gradient_by_finite_differences():
    _needs_gini()
    rng = np.random.default_rng(1)
    u = torch.tensor(rng.normal(size=(4, 2)), requires_grad=True)
    p = torch.tensor(rng.normal(size=(2, 2)), requires_grad=True)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])  # a 4-cycle
    labels = np.array([0, 1, 1, 0])

    def f(a, b):
        return gini_relaxed_loss(a, b, edges, labels, kappa=1.0, tol=1e-13, max_iter=200000)

    assert torch.autograd.gradcheck(f, (u, p), eps=1e-5, atol=1e-5, rtol=1e-4)


def test_gini_loss_separable_over_batch_and_zero_at_confident_truth():
    _needs_gini()
    rng = np.random.default_rng(2)
    u1, u2 = rng.normal(size=(3, 2)), rng.normal(size=(2, 2))
    p = torch.tensor(rng.normal(size=(2, 2)))
    e1, e2 = np.array([[0, 1], [1, 2]]), np.array([[0, 1]])
    y1, y2 = np.array([1, 0, 1]), np.array([0, 0])
    opts = dict(kappa=0.5, tol=1e-11, max_iter=100000)
    l1 = gini_relaxed_loss(torch.tensor(u1), p, e1, y1, **opts)
    l2 = gini_relaxed_loss(torch.tensor(u2), p, e2, y2, **opts)
    both = gini_relaxed_loss(torch.tensor(np.vstack([u1, u2])), p, np.vstack([e1, e2 + 3]),
                             np.concatenate([y1, y2]), **opts)
    assert both.item() == pytest.approx(l1.item() + l2.item(), abs=1e-7)
    # truth scored far above everything else: the relaxed maximiser is the truth, loss 0
    big = torch.tensor(20.0 * (np.eye(2)[y1] - 0.5))
    assert gini_relaxed_loss(big, torch.zeros(2, 2, dtype=torch.float64), e1, y1,
                             **opts).item() == pytest.approx(0.0, abs=1e-8)


def _brute_hinge(unary, pairwise, edges, labels):
    n, k = unary.shape
    best = -np.inf
    for y in itertools.product(range(k), repeat=n):
        y = np.array(y)
        s = unary[np.arange(n), y].sum() + sum(
            (pairwise[y[a], y[b]] if pairwise.ndim == 2 else pairwise[i, y[a], y[b]])
            for i, (a, b) in enumerate(edges))
        best = max(best, s + (y != labels).sum())
    true = unary[np.arange(n), labels].sum() + sum(
        (pairwise[labels[a], labels[b]] if pairwise.ndim == 2 else pairwise[i, labels[a], labels[b]])
        for i, (a, b) in enumerate(edges))
    return best - true


def test_graph_hinge_matches_brute_force():
    inference = pytest.importorskip("crflearn.inference")
    if not hasattr(inference, "loss_augmented_decode"):
        pytest.skip("crflearn.inference.loss_augmented_decode not available yet")
    rng = np.random.default_rng(3)
    for per_edge in (False, True):
        unary = rng.normal(size=(4, 3))
        pairwise = rng.normal(size=(3, 3, 3)) if per_edge else rng.normal(size=(3, 3))
        edges = np.array([[0, 1], [1, 2], [1, 3]])  # a tree: exact decoding
        labels = np.array([0, 2, 1, 1])
        u = torch.tensor(unary, requires_grad=True)
        loss = graph_hinge_loss(u, torch.tensor(pairwise), edges, labels)
        assert loss.item() == pytest.approx(_brute_hinge(unary, pairwise, edges, labels), abs=1e-9)
        loss.backward()
        assert np.allclose(u.grad.numpy().sum(1), 0)


def test_graph_score_matches_enumeration_and_offsets():
    rng = np.random.default_rng(4)
    unary = torch.tensor(rng.normal(size=(5, 3)))
    pairwise = torch.tensor(rng.normal(size=(3, 3, 3)))
    edges = np.array([[0, 1], [1, 2], [3, 4]])
    labels = np.array([2, 0, 1, 1, 2])
    per_ex = graph_score(unary, pairwise, edges, labels, node_offsets=[0, 3, 5], edge_offsets=[0, 2, 3])
    u, p = unary.numpy(), pairwise.numpy()
    first = u[[0, 1, 2], [2, 0, 1]].sum() + p[0, 2, 0] + p[1, 0, 1]
    second = u[[3, 4], [1, 2]].sum() + p[2, 1, 2]
    np.testing.assert_allclose(per_ex.numpy(), [first, second])
    assert graph_score(unary, pairwise, edges, labels).item() == pytest.approx(first + second)


def test_graph_validation_errors():
    u, p = torch.zeros(3, 2), torch.zeros(2, 2)
    edges = np.array([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="kappa"):
        gini_relaxed_loss(u, p, edges, [0, 1, 0], kappa=0.0)
    with pytest.raises(ValueError, match="labels must lie"):
        graph_score(u, p, edges, [0, 1, 5])
    with pytest.raises(ValueError, match="labels must have shape"):
        graph_score(u, p, edges, [0, 1])
    with pytest.raises(ValueError, match="edges refer"):
        graph_score(u, p, np.array([[0, 3]]), [0, 1, 0])
    with pytest.raises(ValueError, match="pairwise must have shape"):
        graph_score(u, torch.zeros(3, 3), edges, [0, 1, 0])
    with pytest.raises(TypeError, match="labels must hold integer"):
        graph_score(u, p, edges, [0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="both node_offsets"):
        graph_score(u, p, edges, [0, 1, 0], node_offsets=[0, 3])
    with pytest.raises(ValueError, match="loss_weight"):
        graph_hinge_loss(u, p, edges, [0, 1, 0], loss_weight=-1.0)
