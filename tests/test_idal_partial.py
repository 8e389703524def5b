"""IDAL with partial labels (label -1 / None: unknown node), :mod:`crflearn.solvers.idal_partial`.

Independent references: the exact marginal likelihood by enumeration of every labelling (Shannon
entropy on chains, where IDAL's relaxed objective is the exact CRF), and the Gini-relaxed maxima
as quadratic programs over the local polytope solved by cvxopt (chains and a loopy graph).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

from crflearn import CRF
from crflearn.graphs import make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers import get_solver
from crflearn.solvers._idal_setup import build_engine, default_rho
from crflearn.solvers._loop import SolverLoop
from crflearn.solvers._idal_record import new_history
from crflearn.solvers.idal_partial import ClampedInference, fit_partial
from reference_ssvm import chain_problem, fit_quietly, labelings

ALPHA = 0.1
WEIGHTS = np.array([1.0, 2.0, 0.5, 1.0, 1.5])


def _hide(batch, seed, fraction=0.35):
    """A copy of ``batch`` with about ``fraction`` of the labels unknown (-1), node 0 among them."""
    labels = batch.labels.copy()
    labels[np.random.default_rng(seed).random(len(labels)) < fraction] = -1
    labels[0] = -1
    return type(batch)(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets,
                       batch.edge_features, labels)


def _loopy_problem(seed=0):
    """A 4-cycle with a chord and a triangle, 3 states, 2 features: ``(batch, model)``."""
    rng = np.random.default_rng(seed)
    graphs = [np.array([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]]), np.array([[0, 1], [1, 2], [0, 2]])]
    X = [(rng.normal(size=(int(e.max()) + 1, 2)), e) for e in graphs]
    y = [rng.integers(0, 3, size=len(x[0])) for x in X]
    batch, _ = make_batch(X, y)
    return batch, PairwiseModel(3, 2, fit_intercept=True)


# -- references --------------------------------------------------------------------------------
def _exact_objective(w, batch, model, alpha, weights=None):
    """The marginal negative log-likelihood ``alpha/2 ||w||^2 + 1/n sum_i s_i [log Z_i - log Z_i^y]`` and
    its gradient, by enumeration of every labelling."""
    n = batch.n_examples
    s = np.ones(n) if weights is None else weights
    value, grad = 0.5 * alpha * w @ w, alpha * w
    for i in range(n):
        sub = batch.subset([i])
        labs = labelings(sub.n_nodes, model.n_states)
        feats = np.array([model.joint_feature(sub, lab) for lab in labs])
        agree = np.all((labs == sub.labels) | (sub.labels < 0), axis=1)
        scores = feats @ w
        p_all, p_agree = np.exp(scores - logsumexp(scores)), np.exp(scores[agree] - logsumexp(scores[agree]))
        value += s[i] * (logsumexp(scores) - logsumexp(scores[agree])) / n
        grad = grad + s[i] * (p_all @ feats - p_agree @ feats[agree]) / n
    return value, grad


def _gini_qp(unary, pairwise, edges, kappa, clamp=None, a=0.0):
    """``max <theta, mu> + kappa sum_v G(mu_v) + kappa sum_e [G(mu_e) - a G(rowsum mu_e)]`` over the local
    polytope (``G(p) = 1 - ||p||^2``), with ``mu_v = e_{clamp[v]}`` where ``clamp[v] >= 0``, by cvxopt:
    ``(value, node marginals (N, K), edge marginals (E, K, K))``."""
    cvxopt = pytest.importorskip("cvxopt")  # the `test` extra installs it
    matrix, solvers = cvxopt.matrix, cvxopt.solvers

    n, k = unary.shape
    n_e = len(edges)
    pw = np.broadcast_to(pairwise, (n_e, k, k))
    size = n * k + n_e * k * k
    theta = np.concatenate([unary.ravel(), pw.reshape(-1)])
    quad = np.zeros((size, size))
    quad[np.arange(n * k), np.arange(n * k)] = 2 * kappa
    rows = np.kron(np.eye(k), np.ones(k))  # (K, K*K): row sums
    cols = np.kron(np.ones(k), np.eye(k))
    for e in range(n_e):
        sl = slice(n * k + e * k * k, n * k + (e + 1) * k * k)
        quad[sl, sl] = 2 * kappa * (np.eye(k * k) - a * rows.T @ rows)
    eq, rhs = [], []
    for v in range(n):
        if clamp is not None and clamp[v] >= 0:
            for j in range(k):
                eq.append(np.eye(size)[v * k + j])
                rhs.append(float(j == clamp[v]))
        else:
            eq.append(np.concatenate([np.zeros(v * k), np.ones(k), np.zeros(size - (v + 1) * k)]))
            rhs.append(1.0)
    for e, (s, t) in enumerate(edges):
        for m, end, count in ((rows, s, k), (cols, t, k - 1)):  # the last column sum is implied
            for j in range(count):
                row = np.zeros(size)
                row[n * k + e * k * k: n * k + (e + 1) * k * k] = m[j]
                row[end * k + j] = -1.0
                eq.append(row)
                rhs.append(0.0)
    solvers.options.update(show_progress=False, abstol=1e-12, reltol=1e-12, feastol=1e-12)
    sol = solvers.qp(matrix(quad), matrix(-theta), matrix(-np.eye(size)), matrix(np.zeros(size)),
                     matrix(np.array(eq)), matrix(np.array(rhs)))
    mu = np.maximum(np.array(sol["x"]).ravel(), 0.0)
    value = theta @ mu + kappa * (n + n_e) - 0.5 * mu @ quad @ mu - kappa * a * n_e
    return value, mu[: n * k].reshape(n, k), mu[n * k:].reshape(n_e, k, k)


def _gini_objective(w, batch, model, alpha, kappa=1.0, a=0.0, loss_augmented=False):
    """The Gini-surrogate objective ``alpha/2 ||w||^2 + 1/n sum_i [A_i(w) - A_i^y(w)]`` and its gradient
    ``alpha w + 1/n sum_i Psi_i (mu_i - nu_i)`` (``mu`` the free, ``nu`` the clamped maximisers)."""
    unary, pairwise = model.potentials(w, batch)
    known = batch.labels >= 0
    if loss_augmented:  # Hamming loss on the known nodes only
        unary = unary + known[:, None] * (np.arange(model.n_states)[None, :] != batch.labels[:, None])
    free = _gini_qp(unary, pairwise, batch.edges, kappa, a=a)
    clamped = _gini_qp(unary, pairwise, batch.edges, kappa, clamp=batch.labels, a=a)
    n = batch.n_examples
    grad = alpha * w + (model.expected_joint_feature(batch, *free[1:])
                        - model.expected_joint_feature(batch, *clamped[1:])) / n
    return 0.5 * alpha * w @ w + (free[0] - clamped[0]) / n, grad


def _stationarity(grad, value, alpha):
    """The relative stationarity measure of the solvers: ``||g||^2 / (2 alpha) / |F|``."""
    return grad @ grad / (2 * alpha) / abs(value)


# -- stationary points --------------------------------------------------------------------------
@pytest.mark.parametrize("edge_features, weighted", [(False, False), (True, True)])
def test_shannon_reaches_a_stationary_point_of_the_marginal_likelihood(edge_features, weighted):
    batch, model = chain_problem(edge_features=edge_features, seed=10)
    batch = _hide(batch, 1)
    weights = WEIGHTS if weighted else None
    res = fit_quietly("idal", batch, model, alpha=ALPHA, entropy="shannon", tol=1e-6, max_iter=20000,
                      sample_weight=weights)
    h = res.history
    assert res.converged and not res.info["certified"]
    assert np.all(np.isnan(h["dual"])) and np.all(np.isnan(h["gap"])) and h["residual"][-1] <= 1e-6
    assert np.all(np.diff(h["primal"]) <= 1e-9)  # CCCP: the objective decreases round after round
    value, grad = _exact_objective(res.w, batch, model, ALPHA, weights)
    assert _stationarity(grad, value, ALPHA) <= 1e-5
    assert h["primal"][-1] == pytest.approx(value, rel=1e-6)  # the recorded objective is the exact one
    ref = fit_quietly("lbfgs", batch, model, alpha=ALPHA, tol=1e-12, max_iter=1000, sample_weight=weights)
    assert value <= _exact_objective(ref.w, batch, model, ALPHA, weights)[0] + 1e-5 * value
    np.testing.assert_allclose(res.w, ref.w, atol=2e-2)


@pytest.mark.parametrize("problem, entropy, loss_augmented", [
    ("chains", "gini", False), ("chains", "gini", True), ("loopy", "gini", False), ("loopy", "gini_otrw", False)])
def test_gini_reaches_a_stationary_point_of_the_relaxed_objective(problem, entropy, loss_augmented):
    batch, model = chain_problem(seed=4) if problem == "chains" else _loopy_problem(seed=2)
    batch = _hide(batch, 3)
    res = fit_quietly("idal", batch, model, alpha=ALPHA, entropy=entropy, loss_augmented=loss_augmented,
                      tol=1e-8, max_iter=20000)
    assert res.converged and np.all(np.diff(res.history["primal"]) <= 1e-9)
    a = 0.5 / model.n_states if entropy == "gini_otrw" else 0.0
    value, grad = _gini_objective(res.w, batch, model, ALPHA, a=a, loss_augmented=loss_augmented)
    assert _stationarity(grad, value, ALPHA) <= 1e-6
    assert res.history["primal"][-1] == pytest.approx(value, rel=1e-6)


# -- the engine hooks and the clamped inference -------------------------------------------------
@pytest.mark.parametrize("edge_features, weighted", [(False, False), (True, False), (False, True)])
def test_every_label_known_gives_the_ordinary_fit(edge_features, weighted):
    """The CCCP driver on a fully labelled batch: the clamped marginals are the labels, the soft statistics
    equal the engine's ``psi*`` (no weight shift), and the rounds (a loose one, then one to ``tol / 10``) are
    the ordinary IDAL fit."""
    batch, model = chain_problem(edge_features=edge_features, seed=5)
    weights = WEIGHTS if weighted else None
    kw = dict(alpha=ALPHA, tol=1e-9, max_iter=5000, sample_weight=weights)
    plain = fit_quietly("idal", batch, model, **kw)
    assert np.all(np.isfinite(plain.history["gap"]))  # the ordinary path (certified)
    spec = dict(alpha=ALPHA, kappa=1.0, rho=default_rho(batch, model, ALPHA), entropy="gini", loss_augmented=False,
                inner_epochs=1, sampling="uniform", **({} if weights is None else {"sample_weight": weights}))
    engine = build_engine(batch, model, warm=None, rng=np.random.default_rng(0), **spec)
    clamp = ClampedInference(batch, model, engine.ent, np.ones(5) if weights is None else weights,
                             np.random.default_rng(0))
    psi_u, psi_p = (x.copy() for x in engine.psi_star)
    clamp.update(engine, np.zeros(model.size), 1e-12)
    np.testing.assert_allclose(engine.psi_star[0], psi_u, atol=1e-12)
    np.testing.assert_allclose(engine.psi_star[1], psi_p, atol=1e-12)
    assert np.abs(engine.weights.wuT).max() <= 1e-12 and np.abs(engine.weights.wp).max() <= 1e-12
    loop = SolverLoop("idal", max_iter=5000, tol=1e-9, history=new_history(batch, None))
    res = fit_partial(batch, model, spec=spec, warm=None, random_state=0, loop=loop, monitor_every="auto",
                      rho_schedule="adaptive")
    assert res.converged and np.all(res.history["residual"] <= 1e-20) and len(res.history["primal"]) == 2
    np.testing.assert_allclose(res.w, plain.w, atol=1e-4)
    assert res.history["primal"][-1] == pytest.approx(plain.history["primal"][-1], rel=1e-8)


@pytest.mark.parametrize("entropy", ["gini", "gini_otrw", "shannon"])
def test_clamped_inference_fixes_the_known_nodes_and_frees_the_others(entropy):
    batch, model = _loopy_problem(seed=1) if entropy != "shannon" else chain_problem(seed=6)
    batch = _hide(batch, 4, fraction=0.5)
    w = np.random.default_rng(2).normal(size=model.size)
    spec = dict(alpha=ALPHA, kappa=1.0, rho=1.0, entropy=entropy, loss_augmented=False, inner_epochs=1,
                sampling="uniform")
    filled = type(batch)(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets,
                         batch.edge_features, np.maximum(batch.labels, 0))
    engine = build_engine(filled, model, warm=None, rng=np.random.default_rng(0), **spec)
    clamp = ClampedInference(batch, model, engine.ent, np.ones(batch.n_examples), np.random.default_rng(0))
    value, nu_n, nu_e = clamp.solve(w, 1e-11)
    known = batch.labels >= 0
    np.testing.assert_array_equal(nu_n[known], np.eye(model.n_states)[batch.labels[known]])  # exactly one-hot
    np.testing.assert_allclose(nu_e.sum(axis=2), nu_n[batch.edges[:, 0]], atol=1e-9)  # agreement
    np.testing.assert_allclose(nu_e.sum(axis=1), nu_n[batch.edges[:, 1]], atol=1e-9)
    unary, pairwise = model.potentials(w, batch)
    if entropy == "shannon":  # forests: the conditional marginals of the CRF given the known labels
        ref_n, total = np.zeros_like(nu_n), 0.0
        for i in range(batch.n_examples):
            sub, sl = batch.subset([i]), batch.node_slice(i)
            labs = labelings(sub.n_nodes, model.n_states)
            labs = labs[np.all((labs == sub.labels) | (sub.labels < 0), axis=1)]
            scores = np.array([model.joint_feature(sub, lab) @ w for lab in labs])
            ref_n[sl] = np.einsum("l,lvk->vk", np.exp(scores - logsumexp(scores)), np.eye(model.n_states)[labs])
            total += logsumexp(scores)
        np.testing.assert_allclose(nu_n, ref_n, atol=1e-6)
        assert value == pytest.approx(total, rel=1e-7)
    else:
        a = 0.5 / model.n_states if entropy == "gini_otrw" else 0.0
        ref_value, ref_n, ref_e = _gini_qp(unary, pairwise, batch.edges, 1.0, clamp=batch.labels, a=a)
        np.testing.assert_allclose(nu_n, ref_n, atol=1e-5)
        np.testing.assert_allclose(nu_e, ref_e, atol=1e-5)
        assert value == pytest.approx(ref_value, rel=1e-8)


# -- edges of the domain, errors ---------------------------------------------------------------
def test_examples_with_every_node_unknown():
    """An example whose nodes are all unknown adds ``A_i - A_i = 0``: the fit works and ignores it. With every
    node of the batch unknown there is nothing to learn: ValueError."""
    batch, model = chain_problem(seed=7)
    labels = batch.labels.copy()
    labels[batch.node_slice(1)] = -1
    some = type(batch)(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets, None, labels)
    res = fit_quietly("idal", some, model, alpha=ALPHA, tol=1e-8, max_iter=5000)
    without = fit_quietly("idal", batch.subset([0, 2, 3, 4]), model, alpha=ALPHA * 5 / 4, tol=1e-8, max_iter=5000)
    assert res.converged
    np.testing.assert_allclose(res.w, without.w, atol=1e-3)
    none = type(batch)(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets, None,
                       np.full_like(labels, -1))
    with pytest.raises(ValueError, match="every label"):
        get_solver("idal")(none, model, alpha=ALPHA)


@pytest.mark.parametrize("options", [dict(n_jobs=2), dict(n_partitions=2), dict(backend="simulate", n_partitions=2)])
def test_partial_labels_need_the_serial_solver(options):
    batch, model = chain_problem(seed=8)
    with pytest.raises(ValueError, match="partial labels"):
        get_solver("idal")(_hide(batch, 0), model, alpha=ALPHA, **options)


def test_estimator_trains_and_predicts_with_unknown_labels():
    rng = np.random.default_rng(3)
    X = [rng.normal(size=(n, 3)) for n in (4, 3, 5, 4, 3, 4)]
    y = [["ab"[int(v > 0)] for v in x[:, 0]] for x in X]
    y_partial = [[None if (i + j) % 3 == 0 else c for j, c in enumerate(lab)] for i, lab in enumerate(y)]
    crf = CRF(solver="idal", alpha=0.1, max_iter=2000, tol=1e-6).fit(X, y_partial)
    assert crf.converged_ and np.isnan(crf.history_["gap"]).all()
    assert crf.classes_.tolist() == ["a", "b"]
    pred = crf.predict(X)
    assert [len(p) for p in pred] == [len(x) for x in X]
    assert np.mean(np.concatenate(pred) == np.concatenate(y)) > 0.8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(ValueError, match="partial labels"):
            CRF(solver="idal", n_jobs=2).fit(X, y_partial)


def test_warm_start_continues_the_rounds():
    batch, model = chain_problem(seed=9)
    batch = _hide(batch, 5)
    first = fit_quietly("idal", batch, model, alpha=ALPHA, tol=1e-8, max_iter=30)
    again = fit_quietly("idal", batch, model, alpha=ALPHA, tol=1e-8, max_iter=5000, warm_start=first.state)
    cold = fit_quietly("idal", batch, model, alpha=ALPHA, tol=1e-8, max_iter=5000)
    assert not first.converged and again.converged and again.n_iter > first.n_iter
    np.testing.assert_allclose(again.w, cold.w, atol=1e-3)
