"""Structured-SVM baselines and L-BFGS against brute force and independent optimisers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

from crflearn.graphs import grid_edges, make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers import COLUMNS, get_solver
from crflearn.solvers.lbfgs import crf_objective
from reference_ssvm import fit_quietly
from reference_ssvm import chain_problem as _chain_problem
from reference_ssvm import labelings as _labelings
from reference_ssvm import reference_bcfw, reference_subgradient
from reference_ssvm import ssvm_reference as _ssvm_reference
from reference_ssvm import with_bias as _with_bias

SSVM_SOLVERS = ("bcfw", "subgradient", "cutting_plane")
ALPHA = 0.1


@pytest.fixture(scope="module")
def chain():
    batch, model = _chain_problem()
    p_star, w_star = _ssvm_reference(batch, model, ALPHA)
    return batch, model, p_star, w_star


@pytest.fixture(scope="module")
def chain_edge_features():
    batch, model = _chain_problem(edge_features=True, seed=1)
    p_star, w_star = _ssvm_reference(batch, model, ALPHA)
    return batch, model, p_star, w_star


def _fit(name, batch, model, **kw):
    return fit_quietly(name, batch, model, **{"alpha": ALPHA, **kw})


def _check_certified(result, p_star, w_star, alpha=ALPHA):
    h = result.history
    assert np.all(h["gap"] >= 0)
    assert np.all(h["dual"] <= p_star + 1e-9), "dual above the optimum: not a lower bound"
    assert np.all(h["primal"] >= p_star - 1e-9), "primal below the optimum"
    # the last row describes the returned w: P(w) - P* <= gap and, by strong convexity,
    # ||w - w*||^2 <= 2 (P(w) - P*) / alpha <= 2 gap / alpha
    assert h["primal"][-1] - p_star <= h["gap"][-1] + 1e-9
    assert np.sum((result.w - w_star) ** 2) <= 2 * h["gap"][-1] / alpha + 1e-7


def test_cutting_plane_reaches_qp_optimum(chain):
    batch, model, p_star, w_star = chain
    res = _fit("cutting_plane", batch, model, max_iter=100, tol=1e-9)
    assert res.converged
    assert res.history["primal"][-1] == pytest.approx(p_star, rel=1e-7)
    np.testing.assert_allclose(res.w, w_star, atol=1e-3)
    _check_certified(res, p_star, w_star)


def test_cutting_plane_edge_features(chain_edge_features):
    batch, model, p_star, w_star = chain_edge_features
    res = _fit("cutting_plane", batch, model, max_iter=200, tol=1e-8)
    assert res.converged
    assert res.history["primal"][-1] == pytest.approx(p_star, rel=1e-6)
    _check_certified(res, p_star, w_star)


@pytest.mark.parametrize("averaging", ["none", "weighted"])
def test_bcfw_gap_certified_and_small(chain, averaging):
    batch, model, p_star, w_star = chain
    res = _fit("bcfw", batch, model, max_iter=300, tol=0.0, averaging=averaging)
    _check_certified(res, p_star, w_star)
    assert res.history["gap"][-1] / res.history["primal"][-1] < 1e-2
    assert res.history["primal"][-1] == pytest.approx(p_star, rel=1e-2)
    if averaging == "none":  # exact line search: the BCFW dual never decreases
        assert np.all(np.diff(res.history["dual"]) >= -1e-12)
    assert res.n_iter == 300 and res.info["exact_oracle"]


def test_bcfw_edge_features(chain_edge_features):
    batch, model, p_star, w_star = chain_edge_features
    res = _fit("bcfw", batch, model, max_iter=150, tol=0.0)
    _check_certified(res, p_star, w_star)
    assert res.history["gap"][-1] / res.history["primal"][-1] < 3e-2


@pytest.mark.parametrize("averaging", ["none", "uniform"])
def test_subgradient_dual_certificate(chain, averaging):
    batch, model, p_star, w_star = chain
    res = _fit("subgradient", batch, model, max_iter=300, tol=0.0, averaging=averaging)
    _check_certified(res, p_star, w_star)
    assert res.history["primal"][-1] == pytest.approx(p_star, rel=3e-2)
    assert res.history["gap"][-1] < res.history["gap"][0] / 5


def test_ssvm_solvers_agree(chain):
    batch, model, p_star, _ = chain
    cp = _fit("cutting_plane", batch, model, max_iter=100, tol=1e-9)
    bc = _fit("bcfw", batch, model, max_iter=400, tol=1e-4)
    assert bc.history["primal"][-1] == pytest.approx(cp.history["primal"][-1], rel=1e-2)


@pytest.mark.parametrize("name", SSVM_SOLVERS + ("lbfgs",))
def test_common_record(chain, name):
    batch, model, _, _ = chain
    res = _fit(name, batch, model, max_iter=5, tol=0.0)
    h = res.history
    for col in COLUMNS:
        assert col in h and len(h[col]) == len(h["iteration"]) > 0
    assert np.all(np.diff(h["time"]) >= 0) and np.all(np.diff(h["iteration"]) > 0)
    assert np.all(np.diff(h["oracle_calls"]) >= 0)
    np.testing.assert_allclose(h["gap"], np.maximum(h["primal"] - h["dual"], 0), atol=1e-12)
    assert res.w.shape == (model.size,) and res.n_iter == h["iteration"][-1]


@pytest.mark.parametrize("name", SSVM_SOLVERS + ("lbfgs",))
def test_callback_stops_and_max_iter_warns(chain, name):
    batch, model, _, _ = chain
    seen = []

    def stop_now(info):
        seen.append(info)
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = get_solver(name)(batch, model, alpha=ALPHA, max_iter=50, tol=0.0, callback=stop_now)
    assert len(seen) == 1 and "w" in seen[0] and res.n_iter == 1
    with pytest.warns(ConvergenceWarning):
        get_solver(name)(batch, model, alpha=ALPHA, max_iter=2, tol=0.0)


@pytest.mark.parametrize("name", SSVM_SOLVERS)
def test_warm_start_continues(chain, name):
    batch, model, p_star, w_star = chain
    first = _fit(name, batch, model, max_iter=3, tol=0.0)
    second = _fit(name, batch, model, max_iter=3, tol=0.0, warm_start=first.state)
    h = second.history
    assert len(h["iteration"]) == len(first.history["iteration"]) + 3
    assert second.n_iter == first.n_iter + 3
    assert np.all(np.diff(h["time"]) >= 0)
    _check_certified(second, p_star, w_star)
    with pytest.raises(ValueError, match="warm_start"):
        _fit(name, batch, model, max_iter=1, tol=0.0, warm_start={"w": first.w})


def test_loopy_graphs_flagged(chain):
    rng = np.random.default_rng(3)
    X = [(rng.normal(size=(4, 2)), grid_edges(2, 2)) for _ in range(3)]
    y = [rng.integers(0, 2, size=4) for _ in range(3)]
    batch, _ = make_batch(X, y)
    model = PairwiseModel(2, 2)
    for name in SSVM_SOLVERS:
        res = _fit(name, batch, model, max_iter=2, tol=0.0)
        assert not res.info["exact_oracle"]
        assert "approximate" in res.info["inference"]
        assert np.all(res.history["exact_oracle"] == 0.0)
    with pytest.raises(ValueError, match="cycle"):
        get_solver("lbfgs")(batch, model, alpha=ALPHA, max_iter=5, tol=1e-6)
    ok = _fit("bcfw", *_chain_problem()[:2], max_iter=1, tol=0.0)
    assert np.all(ok.history["exact_oracle"] == 1.0)


def _enumerate_features(batch, model, loss_augmented):
    """Per example: joint features of every labeling (rows), their losses, and the truth's features."""
    out = []
    for i in range(batch.n_examples):
        sub = batch.subset([i])
        labs = _labelings(sub.n_nodes, model.n_states)
        feats = np.array([model.joint_feature(sub, lab) for lab in labs])
        loss = np.sum(labs != sub.labels, axis=1) if loss_augmented else np.zeros(len(labs))
        out.append((feats, loss, model.joint_feature(sub)))
    return out


def _nll_bruteforce(w, table, alpha):
    total = sum(logsumexp(feats @ w + loss) - truth @ w for feats, loss, truth in table)
    return 0.5 * alpha * w @ w + total / len(table)


@pytest.mark.parametrize("edge_features,loss_augmented", [(False, False), (True, False), (False, True)])
def test_lbfgs_matches_bruteforce_likelihood(edge_features, loss_augmented):
    batch, model = _chain_problem(edge_features=edge_features, seed=2)
    rng = np.random.default_rng(0)
    w = rng.normal(size=model.size)
    table = _enumerate_features(batch, model, loss_augmented)
    value, grad = crf_objective(w, batch, model, ALPHA, loss_augmented)
    assert value == pytest.approx(_nll_bruteforce(w, table, ALPHA), rel=1e-10)
    eps = 1e-6
    num = np.array([(_nll_bruteforce(w + eps * e, table, ALPHA) - _nll_bruteforce(w - eps * e, table, ALPHA))
                    / (2 * eps) for e in np.eye(model.size)])
    np.testing.assert_allclose(grad, num, atol=1e-6)
    ref = minimize(_nll_bruteforce, np.zeros(model.size), args=(table, ALPHA), method="BFGS",
                   options={"gtol": 1e-9})
    res = _fit("lbfgs", batch, model, max_iter=500, tol=1e-12, loss_augmented=loss_augmented)
    np.testing.assert_allclose(res.w, ref.x, atol=1e-4)
    h = res.history
    # certified: primal - gap <= P* (gap = ||grad||^2 / (2 alpha))
    assert np.all(h["dual"] <= ref.fun + 1e-9)
    assert h["primal"][-1] == pytest.approx(ref.fun, rel=1e-8)


@pytest.mark.parametrize("name", SSVM_SOLVERS + ("lbfgs",))
def test_bad_arguments(chain, name):
    batch, model, _, _ = chain
    fit = get_solver(name)
    with pytest.raises(ValueError, match="alpha"):
        fit(batch, model, alpha=-1.0, max_iter=1, tol=0.0)
    with pytest.raises(TypeError, match="max_iter"):
        fit(batch, model, alpha=1.0, max_iter=1.5, tol=0.0)
    with pytest.raises(TypeError, match="batch"):
        fit([np.zeros((2, 2))], model, alpha=1.0, max_iter=1, tol=0.0)
    with pytest.raises(TypeError, match="warm_start"):
        fit(batch, model, alpha=1.0, max_iter=1, tol=0.0, warm_start=[1, 2])
    if name in ("bcfw", "subgradient"):
        with pytest.raises(ValueError, match="averaging"):
            fit(batch, model, alpha=1.0, max_iter=1, tol=0.0, averaging="last")
    if name != "lbfgs":
        with pytest.raises(ValueError, match="inference"):
            fit(batch, model, alpha=1.0, max_iter=1, tol=0.0, inference="magic")


def _random_forest_batch(edge_features, sparse, seed):
    """Random trees and forests (some edges dropped, random edge directions), 4 states."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    k, p, q = 4, 3, 2
    X, y = [], []
    for _ in range(25):
        n = int(rng.integers(2, 8))
        feats = rng.normal(size=(n, p))
        if sparse:
            feats[rng.random(size=feats.shape) < 0.5] = 0.0
        edges = np.array([[rng.integers(0, v), v] for v in range(1, n)], dtype=np.int64)
        if not edge_features:
            edges = edges[rng.random(len(edges)) < 0.8]
        flip = rng.random(len(edges)) < 0.5
        edges[flip] = edges[flip][:, ::-1]
        X.append((feats, edges, rng.normal(size=(len(edges), q))) if edge_features else (feats, edges))
        y.append(rng.integers(0, k, size=n))
    batch, _ = make_batch(X, y)
    if sparse:
        batch = type(batch)(sp.csr_matrix(batch.node_features), batch.node_offsets, batch.edges,
                            batch.edge_offsets, batch.edge_features, batch.labels)
    return _with_bias(batch), PairwiseModel(k, p + 1, q if edge_features else None)


@pytest.mark.parametrize("name,averaging", [("bcfw", "none"), ("bcfw", "weighted"), ("subgradient", "uniform")])
@pytest.mark.parametrize("edge_features,sparse,csr_density", [(False, False, 0.0), (True, False, 0.0),
                                                            (False, True, 0.0), (True, False, 1.0)])
def test_compiled_epochs_match_reference(monkeypatch, name, averaging, edge_features, sparse, csr_density):
    """The compiled epoch kernels reproduce the pure-Python reference (same seed) up to round-off.

    Continuous random features, so that no loss-augmented MAP is tied (ties are broken by round-off).
    ``csr_density = 1`` sends dense features to the kernels in CSR form.
    """
    from crflearn import models

    monkeypatch.setattr(models, "CSR_DENSITY", csr_density)
    batch, model = _random_forest_batch(edge_features, sparse, seed=7)
    kw = dict(alpha=0.05, max_iter=15, averaging=averaging, random_state=3)
    fast = _fit(name, batch, model, tol=0.0, **kw)
    reference = {"bcfw": reference_bcfw, "subgradient": reference_subgradient}[name]
    ref_w, ref_state, ref_rows = reference(batch, model, **kw)
    for key, value in ref_state.items():
        np.testing.assert_allclose(fast.state[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(fast.w, ref_w, rtol=1e-10, atol=1e-12)
    for col, values in ref_rows.items():
        np.testing.assert_allclose(fast.history[col], values, rtol=1e-10, atol=1e-12, err_msg=col)
    # a warm start continues from the reference's state
    cont = _fit(name, batch, model, **{**kw, "max_iter": 2}, tol=0.0, warm_start=ref_state)
    assert cont.n_iter == 2 and len(cont.history["iteration"]) == 2


def test_loopy_step_kernels_match_reference():
    """On loopy graphs each example is decoded in Python and updated by the compiled one-example step:
    with exact (brute-force) decoding the iterates are those of the reference."""
    rng = np.random.default_rng(5)
    X = [(rng.normal(size=(4, 2)), grid_edges(2, 2)) for _ in range(4)]
    y = [rng.integers(0, 3, size=4) for _ in range(4)]
    batch, _ = make_batch(X, y)
    model = PairwiseModel(3, 2, fit_intercept=True)
    for name, reference in (("bcfw", reference_bcfw), ("subgradient", reference_subgradient)):
        kw = dict(alpha=0.1, max_iter=4, random_state=1)
        res = _fit(name, batch, model, tol=0.0, inference="bruteforce", **kw)
        ref_w, _, ref_rows = reference(batch, model, **kw, decode_method="bruteforce")
        np.testing.assert_allclose(res.w, ref_w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.history["primal"], ref_rows["primal"], rtol=1e-10)


@pytest.mark.parametrize("name", ["bcfw", "subgradient"])
def test_warm_start_with_another_alpha_is_refused(name):
    # their state (weights, dual bookkeeping) is scaled by 1/alpha: reusing it would report invalid bounds
    batch, model = _chain_problem()
    first = _fit(name, batch, model, alpha=1.0, max_iter=3)
    with pytest.raises(ValueError, match="alpha"):
        _fit(name, batch, model, alpha=0.01, max_iter=1, warm_start=first.state)
    again = _fit(name, batch, model, alpha=1.0, max_iter=1, warm_start=first.state)
    assert again.n_iter == first.n_iter + 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_warm_start_after_alpha_change_starts_afresh():
    from crflearn import CRF

    rng = np.random.default_rng(0)
    X = [rng.normal(size=(n, 2)) for n in (3, 4, 2, 3)]
    y = [rng.integers(0, 2, size=len(x)) for x in X]
    crf = CRF(solver="bcfw", alpha=1.0, max_iter=3, warm_start=True, random_state=0).fit(X, y)
    crf.set_params(alpha=0.01, max_iter=2)
    with pytest.warns(UserWarning, match="starting afresh"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            crf.fit(X, y)
    h = crf.history_
    assert h["iteration"][0] == 1
    assert np.all(h["dual"] <= h["primal"] + 1e-12)


def test_simplex_qp_matches_slsqp():
    """The working-set QP solver reaches the optimum found by SLSQP, also with a singular Gram
    matrix (more constraints than weights) and duplicated constraints."""
    from crflearn._kernels.qp import simplex_qp

    rng = np.random.default_rng(0)
    for trial in range(30):
        m, d = int(rng.integers(1, 16)), int(rng.integers(1, 6))
        A = rng.normal(size=(m, d))
        if m > 2 and trial % 3 == 0:
            A[1] = A[0]
        b, lam = 3 * rng.random(m), 10 ** rng.uniform(-2, 1)
        G = A @ A.T
        beta = np.zeros(m)
        beta[0] = 1.0
        _, gap = simplex_qp(G, b, lam, beta, 1000, 1e-12)

        def neg(z):
            return -(b @ z - z @ G @ z / (2 * lam))

        ref = minimize(neg, np.full(m, 1.0 / m), jac=lambda z: G @ z / lam - b, method="SLSQP",
                       bounds=[(0, None)] * m, constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1}],
                       options={"ftol": 1e-15, "maxiter": 1000})
        assert beta.min() >= 0 and beta.sum() == pytest.approx(1.0, abs=1e-12)
        assert -neg(beta) >= -ref.fun - 1e-9 and gap <= 1e-9  # gap: down to round-off
