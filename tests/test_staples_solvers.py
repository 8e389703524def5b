"""Training staples in the solvers: sample weights, elastic net (exact CRF), partial labels.

Every claim is checked against enumeration of all labelings of tiny chains and an independent
scipy optimiser: weighted objectives equal repeated / removed examples, certified bounds bracket
the optimum, L1 gives exact zeros at scipy's optimum, marginalised likelihoods match brute force.
"""

from __future__ import annotations


import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from crflearn.solvers.lbfgs import _data_term, crf_objective
from reference_ssvm import fit_quietly
from reference_ssvm import chain_problem, labelings, ssvm_reference

ALPHA = 0.1
SSVM_SOLVERS = ("bcfw", "subgradient", "cutting_plane")
WEIGHTS = np.array([2.0, 1.0, 0.0, 1.0, 1.0])  # sums to n = 5: equals the batch of examples [0, 0, 1, 3, 4]
REPEATED = [0, 0, 1, 3, 4]


def _fit(name, batch, model, **kw):
    return fit_quietly(name, batch, model, **{"alpha": ALPHA, **kw})


def _table(batch, model, loss_augmented=False):
    """Per example: joint features of every labeling, their Hamming losses, and which labelings
    agree with the observed labels (label -1: any state)."""
    out = []
    for i in range(batch.n_examples):
        sub = batch.subset([i])
        labs = labelings(sub.n_nodes, model.n_states)
        feats = np.array([model.joint_feature(sub, lab) for lab in labs])
        known = sub.labels >= 0
        agree = np.all((labs == sub.labels) | ~known, axis=1)
        loss = np.sum(labs != sub.labels, axis=1) if loss_augmented else np.zeros(len(labs))
        out.append((feats, loss, agree))
    return out


def _objective_bruteforce(w, table, alpha, l1_ratio=0.0, weights=None):
    """Elastic-net penalised, weighted, marginalised negative log-likelihood by enumeration."""
    return _smooth_bruteforce(w, table, alpha, l1_ratio, weights)[0] + alpha * l1_ratio * np.abs(w).sum()


def _smooth_bruteforce(w, table, alpha, l1_ratio=0.0, weights=None):
    """The objective without its L1 term, and its gradient, by enumeration."""
    s = np.ones(len(table)) if weights is None else weights
    l2 = alpha * (1 - l1_ratio)
    value, grad = 0.5 * l2 * w @ w, l2 * w
    for s_i, (f, loss, agree) in zip(s, table):
        scores = f @ w + loss
        p_all, p_agree = np.exp(scores - logsumexp(scores)), np.exp(scores[agree] - logsumexp(scores[agree]))
        value += s_i * (logsumexp(scores) - logsumexp(scores[agree])) / len(table)
        grad = grad + s_i * (p_all @ f - p_agree @ f[agree]) / len(table)
    return value, grad


def _numeric_gradient(fun, w, eps=1e-6):
    return np.array([(fun(w + eps * e) - fun(w - eps * e)) / (2 * eps) for e in np.eye(len(w))])


def _hide_labels(batch, seed):
    """A copy of the batch with about a third of the labels unknown (-1)."""
    rng = np.random.default_rng(seed)
    labels = batch.labels.copy()
    labels[rng.random(len(labels)) < 0.35] = -1
    labels[0] = -1
    return type(batch)(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets,
                       batch.edge_features, labels, batch.node_names)


# -- the objective against enumeration ----------------------------------------------------------
@pytest.mark.parametrize("edge_features", [False, True])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_crf_objective_matches_bruteforce(edge_features, partial, weighted):
    batch, model = chain_problem(edge_features=edge_features, seed=3)
    if partial:
        batch = _hide_labels(batch, 0)
    weights = WEIGHTS * 1.5 if weighted else None
    w = np.random.default_rng(1).normal(size=model.size)
    table = _table(batch, model)
    value, grad = crf_objective(w, batch, model, ALPHA, sample_weight=weights)
    assert value == pytest.approx(_objective_bruteforce(w, table, ALPHA, weights=weights), rel=1e-10)
    num = _numeric_gradient(lambda v: _objective_bruteforce(v, table, ALPHA, weights=weights), w)
    np.testing.assert_allclose(grad, num, atol=1e-6)


def test_unit_weights_and_full_labels_give_todays_objective():
    batch, model = chain_problem(seed=4)
    w = np.random.default_rng(2).normal(size=model.size)
    plain = crf_objective(w, batch, model, ALPHA)
    ones = crf_objective(w, batch, model, ALPHA, sample_weight=np.ones(batch.n_examples))
    assert ones[0] == pytest.approx(plain[0], rel=1e-12)
    np.testing.assert_allclose(ones[1], plain[1], rtol=1e-10, atol=1e-13)
    # the marginalised path with every label known is today's likelihood (log Z^y = <w, psi>)
    value, grad = _data_term(w, batch, model, False, None, None, True)
    assert value + 0.5 * ALPHA * w @ w == pytest.approx(plain[0], rel=1e-12)
    np.testing.assert_allclose(grad + ALPHA * w, plain[1], rtol=1e-10, atol=1e-13)
    # no unknown label, no weights: the very same iterates as the default call
    a, b = _fit("lbfgs", batch, model, tol=1e-8), _fit("lbfgs", batch, model, tol=1e-8, l1_ratio=0.0)
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.history["dual"], b.history["dual"])


# -- sample weights ---------------------------------------------------------------------------
def _crf_reference(batch, model, alpha, l1_ratio=0.0, weights=None, loss_augmented=False):
    """Optimum of the enumerated objective: BFGS (smooth), or SLSQP on the split w = w+ - w- (L1)."""
    table = _table(batch, model, loss_augmented)
    d = model.size
    if l1_ratio == 0:
        res = minimize(_smooth_bruteforce, np.zeros(d), args=(table, alpha, 0.0, weights), jac=True,
                       method="BFGS", options={"gtol": 1e-11})
        return res.fun, res.x

    def split(z):
        value, grad = _smooth_bruteforce(z[:d] - z[d:], table, alpha, l1_ratio, weights)
        l1 = alpha * l1_ratio
        return value + l1 * z.sum(), np.concatenate([grad + l1, l1 - grad])

    res = minimize(split, np.full(2 * d, 0.01), jac=True, method="SLSQP", bounds=[(0, None)] * (2 * d),
                   options={"ftol": 1e-16, "maxiter": 3000})
    assert res.success or res.status == 8, res.message
    w = res.x[:d] - res.x[d:]
    return _objective_bruteforce(w, table, alpha, l1_ratio, weights), w


def test_lbfgs_weights_equal_repetition_and_removal():
    batch, model = chain_problem(seed=5)
    weighted = _fit("lbfgs", batch, model, tol=1e-13, max_iter=500, sample_weight=WEIGHTS)
    repeated = _fit("lbfgs", batch.subset(REPEATED), model, tol=1e-13, max_iter=500)
    np.testing.assert_allclose(weighted.w, repeated.w, atol=1e-6)
    assert weighted.history["primal"][-1] == pytest.approx(repeated.history["primal"][-1], rel=1e-9)
    # weight 0 = removal, with alpha rescaled by n / n_kept (the objective is divided by n)
    zero = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    removed = _fit("lbfgs", batch.subset([0, 1, 3, 4]), model, alpha=ALPHA * 5 / 4, tol=1e-13, max_iter=500)
    kept = _fit("lbfgs", batch, model, tol=1e-13, max_iter=500, sample_weight=zero)
    np.testing.assert_allclose(kept.w, removed.w, atol=1e-6)


@pytest.mark.parametrize("loss_augmented", [False, True])
def test_lbfgs_weighted_bounds_bracket_scipy(loss_augmented):
    batch, model = chain_problem(edge_features=True, seed=6)
    weights = np.array([0.5, 3.0, 0.0, 1.25, 2.0])
    p_star, w_star = _crf_reference(batch, model, ALPHA, weights=weights, loss_augmented=loss_augmented)
    res = _fit("lbfgs", batch, model, tol=1e-12, max_iter=500, sample_weight=weights,
               loss_augmented=loss_augmented)
    h = res.history
    assert res.converged
    assert np.all(h["dual"] <= p_star + 1e-10) and np.all(h["primal"] >= p_star - 1e-10)
    np.testing.assert_allclose(res.w, w_star, atol=1e-5)


@pytest.fixture(scope="module")
def weighted_chain():
    batch, model = chain_problem(seed=7)
    p_star, w_star = ssvm_reference(batch, model, ALPHA, sample_weight=WEIGHTS)
    p_rep, w_rep = ssvm_reference(batch.subset(REPEATED), model, ALPHA)
    # the weighted reference itself equals repetition (checks the reference before using it)
    assert p_star == pytest.approx(p_rep, rel=1e-7)
    np.testing.assert_allclose(w_star, w_rep, atol=1e-5)
    return batch, model, p_star, w_star


@pytest.mark.parametrize("name", SSVM_SOLVERS)
def test_ssvm_weighted_bounds_bracket_optimum(weighted_chain, name):
    batch, model, p_star, w_star = weighted_chain
    tol = {"subgradient": 3e-2, "bcfw": 1e-2, "cutting_plane": 1e-6}[name]
    res = _fit(name, batch, model, sample_weight=WEIGHTS, tol=tol, max_iter=2000)
    h = res.history
    assert res.converged
    assert np.all(h["dual"] <= p_star + 1e-9), "dual above the optimum: not a lower bound"
    assert np.all(h["primal"] >= p_star - 1e-9)
    assert h["primal"][-1] - p_star <= h["gap"][-1] + 1e-9
    # strong convexity: ||w - w*||^2 <= 2 gap / alpha
    assert np.sum((res.w - w_star) ** 2) <= 2 * h["gap"][-1] / ALPHA + 1e-7
    # the same optimum as the repeated examples (both within their certified radius of it)
    rep = _fit(name, batch.subset(REPEATED), model, tol=tol, max_iter=2000)
    radius = np.sqrt(2 * h["gap"][-1] / ALPHA) + np.sqrt(2 * rep.history["gap"][-1] / ALPHA)
    assert np.linalg.norm(res.w - rep.w) <= radius + 1e-6


@pytest.mark.parametrize("name", SSVM_SOLVERS)
def test_ssvm_zero_weight_equals_removal(name):
    batch, model = chain_problem(seed=8)
    zero = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    tol = {"subgradient": 3e-2, "bcfw": 1e-2, "cutting_plane": 1e-7}[name]
    kept = _fit(name, batch, model, sample_weight=zero, tol=tol, max_iter=2000)
    alpha_removed = ALPHA * 5 / 4
    removed = _fit(name, batch.subset([0, 1, 3, 4]), model, alpha=alpha_removed, tol=tol, max_iter=2000)
    assert kept.converged and removed.converged
    # P_kept(w) = 4/5 P_removed(w) for every w: the same minimiser, both within their certified radius
    gap_k, gap_r = kept.history["gap"][-1], removed.history["gap"][-1]
    p_k, p_r = kept.history["primal"][-1], removed.history["primal"][-1]
    assert abs(p_k - 0.8 * p_r) <= gap_k + 0.8 * gap_r + 1e-10
    radius = np.sqrt(2 * gap_k / ALPHA) + np.sqrt(2 * gap_r / alpha_removed)
    assert np.linalg.norm(kept.w - removed.w) <= radius + 1e-7


@pytest.mark.parametrize("name", SSVM_SOLVERS + ("lbfgs",))
def test_bad_sample_weight(name):
    batch, model = chain_problem()
    for bad, err in [(np.ones(4), ValueError), (-WEIGHTS, ValueError), (np.zeros(5), ValueError),
                     (np.array([1, 1, np.nan, 1, 1]), ValueError), (np.array(["a"] * 5), TypeError)]:
        with pytest.raises(err, match="sample_weight"):
            _fit(name, batch, model, max_iter=1, sample_weight=bad)


@pytest.mark.parametrize("name", SSVM_SOLVERS)
def test_warm_start_needs_the_same_weights(name):
    batch, model = chain_problem()
    first = _fit(name, batch, model, max_iter=2, sample_weight=WEIGHTS)
    with pytest.raises(ValueError, match="sample_weight"):
        _fit(name, batch, model, max_iter=1, warm_start=first.state)
    again = _fit(name, batch, model, max_iter=1, warm_start=first.state, sample_weight=WEIGHTS.copy())
    assert again.n_iter == first.n_iter + 1


# -- elastic net -------------------------------------------------------------------------------
@pytest.mark.parametrize("l1_ratio", [0.5, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_elastic_net_matches_scipy_and_is_certified(l1_ratio, weighted):
    batch, model = chain_problem(edge_features=True, seed=9)
    weights = np.array([0.5, 3.0, 0.0, 1.25, 2.0]) if weighted else None
    p_star, w_star = _crf_reference(batch, model, 0.3, l1_ratio, weights)
    res = _fit("lbfgs", batch, model, alpha=0.3, l1_ratio=l1_ratio, sample_weight=weights, tol=1e-13,
               max_iter=1000)
    h = res.history
    np.testing.assert_allclose(res.w, w_star, atol=1e-5)
    assert h["primal"][-1] == pytest.approx(p_star, rel=1e-9)
    assert np.all(h["dual"] <= p_star + 1e-10), "dual above the optimum: not a lower bound"
    assert np.all(np.isfinite(h["dual"])) and res.info["certified"]
    # the certificate closes: to round-off with the strongly convex bound, to ~1e-9 with the L1 one
    assert h["gap"][-1] <= (1e-12 if l1_ratio < 1 else 1e-8) * h["primal"][-1]
    # exact zeros exactly where scipy's optimum is (numerically) zero
    np.testing.assert_array_equal(res.w == 0.0, np.abs(w_star) < 1e-6)


def test_l1_gives_more_exact_zeros_as_l1_ratio_grows():
    batch, model = chain_problem(edge_features=True, seed=9)
    zeros = [int(np.sum(_fit("lbfgs", batch, model, alpha=0.3, l1_ratio=r, tol=1e-12, max_iter=1000).w == 0.0))
             for r in (0.0, 0.3, 0.7, 1.0)]
    assert zeros[0] == 0 and zeros[-1] > 0
    assert zeros == sorted(zeros), zeros


def test_l1_certificate_with_forbidden_transitions():
    """Potentials with -inf (the estimator's allowed_transitions) keep the L1 bound finite and valid."""
    batch, model = chain_problem(seed=11)

    class Forbidding(type(model)):
        def potentials(self, w, b):
            unary, pairwise = super().potentials(w, b)
            pairwise = pairwise.copy()
            pairwise[0, 1] = -np.inf
            return unary, pairwise

    labels = batch.labels.copy()
    for s, t in batch.edges:  # training labels obey the constraint
        if labels[s] == 0 and labels[t] == 1:
            labels[t] = 2
    batch = type(batch)(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets, None, labels)
    forbidding = Forbidding(model.n_states, model.n_features)
    res = _fit("lbfgs", batch, forbidding, alpha=0.3, l1_ratio=1.0, tol=1e-10, max_iter=300)
    h = res.history
    assert np.all(np.isfinite(h["dual"])) and np.all(h["dual"] <= h["primal"][-1] + 1e-12)
    assert h["gap"][-1] <= 1e-6 * h["primal"][-1]


@pytest.mark.parametrize("bad", [-0.1, 1.5, np.nan, "0.5", True])
def test_bad_l1_ratio(bad):
    batch, model = chain_problem()
    with pytest.raises((ValueError, TypeError), match="l1_ratio"):
        _fit("lbfgs", batch, model, l1_ratio=bad)


# -- partial labels ----------------------------------------------------------------------------
@pytest.mark.parametrize("l1_ratio", [0.0, 0.5])
def test_partial_labels_reach_a_stationary_point_of_the_marginal_likelihood(l1_ratio):
    batch, model = chain_problem(seed=10)
    batch = _hide_labels(batch, 1)
    weights = np.array([1.0, 2.0, 0.5, 1.0, 1.0])
    p_ref, w_ref = _crf_reference(batch, model, ALPHA, l1_ratio, weights)
    res = _fit("lbfgs", batch, model, tol=1e-12, max_iter=1000, l1_ratio=l1_ratio, sample_weight=weights)
    h = res.history
    assert np.all(np.isnan(h["dual"])) and np.all(np.isnan(h["gap"])) and not res.info["certified"]
    assert res.converged and h["residual"][-1] <= 1e-12
    np.testing.assert_allclose(res.w, w_ref, atol=1e-5)
    assert h["primal"][-1] == pytest.approx(p_ref, rel=1e-9)


def test_partial_labels_checks():
    batch, model = chain_problem()
    partial = _hide_labels(batch, 2)
    with pytest.raises(ValueError, match="loss_augmented"):
        _fit("lbfgs", partial, model, loss_augmented=True)
    for name in SSVM_SOLVERS:  # the structured SVMs need every label
        with pytest.raises(ValueError, match="label"):
            _fit(name, partial, model, max_iter=1)
    labels = batch.labels.copy()
    labels[1] = -2
    bad = type(batch)(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets,
                      batch.edge_features, labels)
    with pytest.raises(ValueError, match="label"):
        _fit("lbfgs", bad, model)
