"""Tests of the IDAL solver against an independent smooth-primal L-BFGS solve.

The reference minimises the relaxed primal of DESIGN-idal section 5,

    P(w, zeta) = alpha/2 ||w||^2 + 1/n sum_i [ sum_c h_c*(theta_c(w, zeta)) - <w, psi*_i> ],

over ``(w, zeta)`` with scipy's L-BFGS, where ``h*`` and its gradient (a simplex
projection) are written here in plain NumPy with a sort-based projection, independent
of the Numba kernels. Its minimiser in ``w`` is unique (the relaxed dual is strongly
concave), so the solver's ``w`` must agree with it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from _idal_reference import reference_w
from sklearn.exceptions import ConvergenceWarning

from crflearn.graphs import GraphBatch, chain_edges, grid_edges, make_batch
from crflearn.models import PairwiseModel, hamming_loss_vectors
from crflearn.solvers.idal import default_rho, fit_idal


# ---------------------------------------------------------------- tiny problems
def _random_batch(kind, n_examples=3, k=3, p=3, q=None, sparse=False, seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n_examples):
        if kind == "chain":
            n = 3 + i % 2
            edges = chain_edges(n)
        elif kind == "cycle":
            n = 3
            edges = np.array([[0, 1], [1, 2], [0, 2]])
        else:  # 2x2 grid
            n = 4
            edges = grid_edges(2, 2)
        feats = rng.normal(size=(n, p))
        if sparse:
            feats[rng.random(size=feats.shape) < 0.5] = 0.0
            feats = sp.csr_matrix(feats)
        y = rng.integers(0, k, size=n)
        if q is None:
            xs.append((feats, edges))
        else:
            xs.append((feats, edges, rng.normal(size=(len(edges), q))))
        ys.append(y)
    batch, _ = make_batch(xs, ys)
    model = PairwiseModel(k, p, q)
    return batch, model


def _fit(batch, model, **kw):
    opts = dict(alpha=0.5, max_iter=3000, tol=1e-10, random_state=0)
    opts.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_idal(batch, model, **opts)


CASES = [
    dict(kind="chain"),
    dict(kind="cycle"),
    dict(kind="grid"),
    dict(kind="grid", q=2),
    dict(kind="chain", sparse=True),
    dict(kind="cycle", loss_augmented=True),
    dict(kind="chain", q=2, sparse=True, loss_augmented=True),
    dict(kind="grid", k=2, entropy="gini_otrw"),
    dict(kind="chain", entropy="gini_otrw", loss_augmented=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_w_matches_independent_lbfgs(case):
    case = dict(case)
    loss_augmented = case.pop("loss_augmented", False)
    entropy = case.pop("entropy", "gini")
    batch, model = _random_batch(**case)
    res = _fit(batch, model, kappa=0.7, loss_augmented=loss_augmented, entropy=entropy)
    w_ref, p_ref = reference_w(batch, model, 0.5, 0.7, loss_augmented, entropy)
    assert res.converged
    assert np.linalg.norm(res.w - w_ref) <= 1e-5 * np.linalg.norm(w_ref)
    # both objectives meet at the relaxed optimum
    assert res.history["primal"][-1] == pytest.approx(p_ref, rel=1e-6, abs=1e-9)
    assert res.history["relaxed_dual"][-1] == pytest.approx(p_ref, rel=1e-6, abs=1e-9)


def test_gap_equals_primal_minus_dual_and_is_nonnegative():
    batch, model = _random_batch("grid", n_examples=4, k=3, q=2)
    res = _fit(batch, model, max_iter=60, tol=0.0, kappa=0.5)
    h = res.history
    assert np.all(h["gap"] >= 0)
    np.testing.assert_allclose(h["gap"], h["primal"] - h["dual"], rtol=1e-7, atol=1e-11)


@pytest.mark.parametrize("kind", ["chain", "grid"])
@pytest.mark.parametrize("schedule", ["fixed", "adaptive"])
def test_gap_decays_geometrically(kind, schedule):
    batch, model = _random_batch(kind, n_examples=5, k=3, seed=3)
    res = _fit(batch, model, max_iter=80, tol=0.0, alpha=0.1, rho_schedule=schedule)
    gap = res.history["gap"]
    assert np.all(gap >= 0)
    it = res.history["iteration"].astype(float)
    keep = gap > 1e-13
    slope, intercept = np.polyfit(it[keep], np.log(gap[keep]), 1)
    fit = slope * it[keep] + intercept
    ss_res = np.sum((np.log(gap[keep]) - fit) ** 2)
    ss_tot = np.sum((np.log(gap[keep]) - np.log(gap[keep]).mean()) ** 2)
    assert slope < -0.05
    assert 1 - ss_res / ss_tot > 0.8
    # fixed rho: the linear rate of the theory; adaptive rho: rebalancing steps perturb the
    # inner problem, so the decay is slightly slower over the same number of epochs
    assert gap[keep][-1] < (1e-6 if schedule == "fixed" else 1e-5) * gap[0]
    assert res.history["residual"][-1] < 1e-3 * res.history["residual"][0]


def test_same_seed_same_history_and_different_seed_differs():
    batch, model = _random_batch("grid", n_examples=3)
    runs = [_fit(batch, model, max_iter=15, tol=0.0, random_state=s) for s in (7, 7, 8)]
    for col in runs[0].history:
        if col in ("time", "monitor_time", "wall_time"):
            continue
        np.testing.assert_array_equal(runs[0].history[col], runs[1].history[col])
    np.testing.assert_array_equal(runs[0].w, runs[1].w)
    assert not np.array_equal(runs[0].history["gap"], runs[2].history["gap"])


def test_gap_sampling_converges_to_same_optimum():
    batch, model = _random_batch("cycle", n_examples=3)
    a = _fit(batch, model)
    b = _fit(batch, model, sampling="gap")
    assert b.converged
    np.testing.assert_allclose(a.w, b.w, rtol=1e-6, atol=1e-9)


def test_warm_start_continues():
    batch, model = _random_batch("grid", n_examples=3)
    full = _fit(batch, model, max_iter=40, tol=0.0, random_state=1)
    first = _fit(batch, model, max_iter=20, tol=0.0, random_state=1)
    second = _fit(batch, model, max_iter=20, tol=0.0, random_state=2, warm_start=first.state)
    # the record continues (iterations and oracle calls), and so does the optimisation
    assert list(second.history["iteration"]) == list(range(1, 41))
    assert second.n_iter == 40
    assert second.history["oracle_calls"][-1] == full.history["oracle_calls"][-1]
    assert second.history["gap"][-1] < first.history["gap"][-1]
    assert second.history["gap"][-1] < 1e-2 * second.history["gap"][0]
    # a warm start at the optimum stays there
    opt = _fit(batch, model)
    again = _fit(batch, model, max_iter=3, warm_start=opt.state)
    assert again.converged and again.n_iter == opt.n_iter + 1
    np.testing.assert_allclose(again.w, opt.w, rtol=1e-6, atol=1e-8)


def test_convergence_warning_callback_and_stop():
    batch, model = _random_batch("chain")
    with pytest.warns(ConvergenceWarning):
        res = fit_idal(batch, model, alpha=0.5, max_iter=2, tol=1e-12, random_state=0)
    assert not res.converged and res.n_iter == 2
    seen = []

    def cb(info):
        seen.append(info)
        return info["iteration"] >= 3

    res = fit_idal(batch, model, alpha=0.5, max_iter=50, tol=1e-12, random_state=0, callback=cb, monitor_every=1)
    assert res.n_iter == 3 and len(seen) == 3
    assert seen[-1]["w"].shape == (model.size,)


def test_monitor_every_and_history_columns():
    batch, model = _random_batch("chain")
    res = _fit(batch, model, max_iter=10, tol=0.0, monitor_every=3)
    assert list(res.history["iteration"]) == [3, 6, 9, 10]
    for col in ("iteration", "time", "primal", "dual", "gap", "residual", "oracle_calls", "relaxed_dual"):
        assert len(res.history[col]) == 4
    assert np.all(np.diff(res.history["time"]) >= 0)
    assert res.history["oracle_calls"][-1] == 10 * batch.n_examples


@pytest.mark.parametrize("kind", ["chain", "grid"])
def test_auto_monitoring_skips_the_repair_only_far_from_tol(kind):
    """Rows with ``monitor_every="auto"`` whose AL gap exceeds 10 tol skip the repair: they keep the best
    earlier certified lower bound (so they still bracket the optimum) and never adapt rho."""
    from crflearn._kernels.idal_engine import CHEAP_FACTOR

    batch, model = _random_batch(kind, n_examples=4, seed=2)
    tol = 1e-4
    res = _fit(batch, model, max_iter=300, tol=tol, alpha=0.01)
    h = res.history
    cheap = np.isnan(h["repair"])
    assert res.converged and cheap.any() and not cheap[0] and not cheap[-1]
    best = np.maximum.accumulate(np.where(cheap, -np.inf, h["dual"]))
    np.testing.assert_array_equal(h["dual"][cheap], best[cheap])
    assert np.all(h["al_gap"][cheap] > CHEAP_FACTOR * tol * np.abs(h["primal"][cheap]))
    np.testing.assert_array_equal(h["rho"][1:][cheap[:-1]], h["rho"][:-1][cheap[:-1]])
    fixed = _fit(batch, model, max_iter=30, tol=tol, alpha=0.01, monitor_every=1)
    assert not np.isnan(fixed.history["repair"]).any()


def test_keyboard_interrupt_keeps_last_iterate():
    batch, model = _random_batch("chain")

    def cb(info):
        if info["iteration"] == 4:
            raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted"):
        res = fit_idal(batch, model, alpha=0.5, max_iter=50, tol=1e-12, random_state=0, callback=cb)
    assert res.interrupted and not res.converged
    assert np.all(np.isfinite(res.w)) and np.linalg.norm(res.w) > 0
    assert res.n_iter == 4


def test_graph_without_edges():
    """No edges: the relaxed problem is a multiclass Gini-regularised problem; check primal-dual."""
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(2, 3)) for _ in range(3)]
    ys = [rng.integers(0, 3, size=2) for _ in range(3)]
    batch = GraphBatch(np.vstack(xs), np.array([0, 2, 4, 6]), np.zeros((0, 2), np.int64),
                       np.zeros(4, np.int64), None, np.concatenate(ys))
    model = PairwiseModel(3, 3)
    res = _fit(batch, model, tol=1e-15)
    w_ref, _ = reference_w(batch, model, 0.5, 1.0)
    assert res.converged
    assert np.linalg.norm(res.w - w_ref) <= 1e-6 * np.linalg.norm(w_ref)
    assert res.history["residual"][-1] == 0.0


@pytest.mark.parametrize("kwargs, exc", [
    (dict(alpha=0.0), ValueError), (dict(alpha="a"), TypeError), (dict(max_iter=0), ValueError),
    (dict(max_iter=1.5), TypeError), (dict(tol=-1.0), ValueError), (dict(kappa=-1.0), ValueError),
    (dict(rho=0.0), ValueError), (dict(inner_epochs=0), ValueError), (dict(entropy="tsallis"), ValueError),
    (dict(sampling="importance"), ValueError), (dict(monitor_every=0), ValueError),
    (dict(warm_start={"mu_nodes": np.zeros(3)}), ValueError), (dict(warm_start=[1]), TypeError),
    (dict(callback=3), TypeError), (dict(loss_augmented="yes"), TypeError),
])
def test_bad_arguments_raise_before_compute(kwargs, exc):
    batch, model = _random_batch("chain")
    with pytest.raises(exc) as info:
        fit_idal(batch, model, **kwargs)
    name = next(iter(kwargs))
    assert name in str(info.value)


def test_bad_batch_and_model():
    batch, model = _random_batch("chain")
    with pytest.raises(TypeError, match="batch"):
        fit_idal("x", model)
    with pytest.raises(TypeError, match="model"):
        fit_idal(batch, "m")
    with pytest.raises(ValueError, match="features"):
        fit_idal(batch, PairwiseModel(3, 5))
    unlabeled = GraphBatch(batch.node_features, batch.node_offsets, batch.edges, batch.edge_offsets)
    with pytest.raises(ValueError, match="labels"):
        fit_idal(unlabeled, model)


def test_default_rho_scales_with_alpha_and_is_capped_for_weak_regularisation():
    batch, model = _random_batch("grid")
    n = batch.n_examples
    strong = [default_rho(batch, model, a / n, kappa=1e-6) for a in (1.0, 2.0, 4.0)]
    np.testing.assert_allclose([strong[0] / strong[1], strong[1] / strong[2]], [2.0, 2.0])
    weak = [default_rho(batch, model, a / n, kappa=1e-6) for a in (1e-3, 0.1, 1.0)]
    np.testing.assert_allclose(weak, strong[0])  # alpha n < 1: capped at median ||x||^2 / mean degree
    assert default_rho(batch, model, 1e-3 / n, kappa=1e6) == pytest.approx(2e6 / max(2 * batch.n_edges / batch.n_nodes, 1))


def test_exact_primal_monitoring_on_chains_matches_brute_force():
    pytest.importorskip("crflearn.inference", reason="inference module not available")
    import itertools

    batch, model = _random_batch("chain", n_examples=2, k=2)
    res = _fit(batch, model, max_iter=10, tol=0.0, loss_augmented=True)
    col = res.history.get("exact_primal")
    if col is None:
        pytest.skip("exact inference not available")
    assert np.isnan(col[:4]).all() and np.isfinite(col[4]) and np.isfinite(col[9])
    # brute-force softmax-margin objective at the final w
    w = res.w
    unary, pairwise = model.potentials(w, batch)
    unary = unary + hamming_loss_vectors(batch, 2)
    total = 0.0
    for i in range(batch.n_examples):
        sl = batch.node_slice(i)
        u, e, y = unary[sl], batch.local_edges(i), batch.labels[sl]
        scores = [u[np.arange(len(u)), lab].sum() + sum(pairwise[lab[a], lab[b]] for a, b in e)
                  for lab in itertools.product(range(2), repeat=len(u))]
        total += np.logaddexp.reduce(scores)
    expected = 0.5 * 0.5 * w @ w + (total - model.score(w, batch).sum()) / batch.n_examples
    assert col[9] == pytest.approx(expected, rel=1e-9)


def test_check_input_false_skips_validation_and_changes_nothing():
    batch, model = _random_batch("grid", n_examples=2)
    a = _fit(batch, model, max_iter=5, tol=0.0)
    b = _fit(batch, model, max_iter=5, tol=0.0, check_input=False)
    np.testing.assert_array_equal(a.w, b.w)
    with pytest.raises(TypeError, match="batch"):
        fit_idal("x", model)
    # the model's batch checks are skipped (the caller vouches for the batch); scalars are still checked
    with pytest.raises(ValueError, match="alpha"):
        fit_idal(batch, model, alpha=-1.0, check_input=False)


def _engine_optimum(batch, model, alpha, entropy, sample_weight=None, loss_augmented=False, steps=3000):
    """Run the IDAL core to a tight certificate; return (w, certified primal, certified dual)."""
    from crflearn.solvers._idal_setup import build_engine

    eng = build_engine(batch, model, alpha=alpha, kappa=1.0, rho=default_rho(batch, model, alpha), entropy=entropy,
                       loss_augmented=loss_augmented, warm=None, rng=np.random.default_rng(0), inner_epochs=1,
                       sampling="uniform", sample_weight=sample_weight)
    row = None
    for step in range(steps):
        eng.step()
        if step % 50 == 49:
            row = eng.certify()
            if row["gap"] <= 1e-10 * abs(row["primal"]):
                break
    return model.from_kernel(*eng.weights), row["primal"], row["dual"]


@pytest.mark.parametrize("kind, entropy, q", [("chain", "gini", None), ("cycle", "gini_otrw", None),
                                              ("grid", "gini", 2), ("chain", "shannon", None)])
def test_integer_sample_weights_equal_repeated_examples(kind, entropy, q):
    batch, model = _random_batch(kind, n_examples=3, q=q)
    alpha, weights = 0.3, np.array([2.0, 1.0, 3.0])
    repeated = batch.subset(np.repeat(np.arange(3), weights.astype(int)))
    w_weighted, primal, dual = _engine_optimum(batch, model, alpha, entropy, sample_weight=weights,
                                               loss_augmented=entropy != "shannon")
    # (1/3) sum_i s_i loss_i with alpha equals (6/3) x the objective on the 6 repeated examples with alpha / 2
    w_rep, primal_rep, _ = _engine_optimum(repeated, model, alpha / 2.0, entropy,
                                           loss_augmented=entropy != "shannon")
    assert dual <= primal
    np.testing.assert_allclose(w_weighted, w_rep, rtol=1e-5, atol=1e-6)
    assert primal == pytest.approx(2.0 * primal_rep, rel=1e-6)
    # unit weights are today's objective
    w_unit, primal_unit, _ = _engine_optimum(batch, model, alpha, entropy, sample_weight=np.ones(3))
    w_none, primal_none, _ = _engine_optimum(batch, model, alpha, entropy)
    np.testing.assert_allclose(w_unit, w_none, rtol=1e-6, atol=1e-8)


def test_fit_idal_sample_weight_equals_repetition_and_checks_its_input():
    batch, model = _random_batch("chain", n_examples=3)
    weights = np.array([2.0, 1.0, 3.0])
    repeated = batch.subset(np.repeat(np.arange(3), weights.astype(int)))
    res = _fit(batch, model, alpha=0.4, sample_weight=weights, tol=1e-9)
    ref = _fit(repeated, model, alpha=0.2, tol=1e-9)
    assert res.converged and ref.converged
    np.testing.assert_allclose(res.w, ref.w, rtol=1e-4, atol=1e-6)
    h = res.history
    # every certified row brackets the weighted optimum, known independently as 2 x the repeated problem's
    p_star = 2.0 * ref.history["primal"][-1]
    slack = 1e-8 * abs(p_star)
    assert np.all(h["dual"] <= p_star + slack) and np.all(h["primal"] >= p_star - slack)
    finite = np.isfinite(h["exact_primal"])  # exact CRF objective of the weighted problem, on chains
    assert finite.any() and np.all(h["exact_primal"][finite] <= h["primal"][finite] + 1e-12)
    np.testing.assert_array_equal(_fit(batch, model, sample_weight=np.ones(3), max_iter=5).w,
                                  _fit(batch, model, max_iter=5).w)
    with pytest.raises(ValueError, match="> 0"):
        _fit(batch, model, sample_weight=np.array([1.0, 0.0, 1.0]))
    par = _fit(batch, model, alpha=0.4, sample_weight=weights, tol=1e-9, n_jobs=2)  # the partitioned path too
    hp = par.history
    assert par.converged and np.all(hp["dual"] <= p_star + slack) and np.all(hp["primal"] >= p_star - slack)
    # strong convexity: ||w - w*||^2 <= 2 gap / alpha for each fit (the repeated problem is half the weighted one)
    radius = np.sqrt(2 * hp["gap"][-1] / 0.4) + np.sqrt(2 * ref.history["gap"][-1] / 0.2)
    assert np.linalg.norm(par.w - ref.w) <= radius + 1e-12
    with pytest.raises(ValueError, match="shape"):
        _fit(batch, model, sample_weight=np.ones(2))
    with pytest.raises(ValueError, match="sample_weight"):
        _fit(batch, model, sample_weight=weights, warm_start=_fit(batch, model, max_iter=2).state)
