"""The CRF estimator: fitting, prediction against brute force, labels, features, options, errors."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import logsumexp

from crflearn import CRF
from crflearn.solvers import SOLVER_NAMES

from conftest import make_chains

FAST = dict(alpha=0.1, max_iter=30, tol=1e-3, random_state=0)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the deliberately short fits
        yield


def _chain_scores(crf, x):
    """Score of every labeling of a chain from the readable weight views (independent of the model)."""
    unary = x @ crf.unary_coef_.T + crf.intercept_
    pair = crf.pairwise_coef_
    n, k = unary.shape
    labelings = np.array(list(itertools.product(range(k), repeat=n)))
    scores = unary[np.arange(n), labelings].sum(axis=1)
    if n > 1:
        scores = scores + pair[labelings[:, :-1], labelings[:, 1:]].sum(axis=1)
    return labelings, scores


def test_fit_learns_a_separable_chain_task(chain_data):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, y)
    assert crf.score(X, y) > 0.9
    X_test, y_test = make_chains(n_sequences=6, seed=0)  # same seed: same class means
    assert crf.score(X_test, y_test) > 0.85
    assert crf.n_iter_ >= 1 and crf.n_iter_ <= 30
    assert set(crf.history_) >= {"iteration", "time", "primal", "dual", "gap", "residual", "oracle_calls"}
    assert len(crf.history_["gap"]) >= 1 and np.all(crf.history_["gap"] >= 0)


def test_predict_marginals_and_log_partition_match_brute_force(tiny_chains):
    X, y = tiny_chains
    crf = CRF(**FAST).fit(X, y)
    preds = crf.predict(X)
    margs = crf.predict_marginals(X)
    logz = crf.predict_log_partition(X)
    k = len(crf.classes_)
    for i, x in enumerate(X):
        labelings, scores = _chain_scores(crf, x)
        np.testing.assert_array_equal(preds[i], crf.classes_[labelings[np.argmax(scores)]])
        assert logz[i] == pytest.approx(logsumexp(scores), rel=1e-9)
        prob = np.exp(scores - logsumexp(scores))
        expected = np.zeros((len(x), k))
        for v in range(len(x)):
            np.add.at(expected[v], labelings[:, v], prob)
        np.testing.assert_allclose(margs[i], expected, atol=1e-9)


def test_lbfgs_estimator_matches_independent_optimiser(tiny_chains):
    """End-to-end wiring (alpha, bias column, label coding) against scipy on a brute-force objective."""
    X, y = tiny_chains
    alpha = 0.3
    crf = CRF(alpha=alpha, solver="lbfgs", max_iter=200, tol=1e-10).fit(X, y)
    k, p = 3, X[0].shape[1] + 1

    def objective(w):
        wu, wp = w[: k * p].reshape(k, p), w[k * p:].reshape(k, k)
        total = 0.0
        for x, lab in zip(X, y):
            xb = np.hstack([x, np.ones((len(x), 1))])
            unary = xb @ wu.T
            labelings = np.array(list(itertools.product(range(k), repeat=len(x))))
            scores = unary[np.arange(len(x)), labelings].sum(1) + wp[labelings[:, :-1], labelings[:, 1:]].sum(1)
            true = unary[np.arange(len(x)), lab].sum() + wp[lab[:-1], lab[1:]].sum()
            total += logsumexp(scores) - true
        return alpha / 2 * w @ w + total / len(X)

    ref = minimize(objective, np.zeros(k * p + k * k), method="L-BFGS-B", options={"gtol": 1e-10, "maxiter": 2000})
    assert objective(crf.coef_) == pytest.approx(ref.fun, rel=1e-6, abs=1e-8)
    np.testing.assert_allclose(crf.coef_, ref.x, atol=1e-3)


def test_weight_views_are_consistent(chain_data):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, y)
    k, p = 3, X[0].shape[1]
    assert crf.unary_coef_.shape == (k, p)
    assert crf.intercept_.shape == (k,)
    assert crf.pairwise_coef_.shape == (k, k)
    assert crf.coef_.shape == (crf.model_.size,)
    wu, wp = crf.model_.split(crf.coef_)
    np.testing.assert_array_equal(wu[:, :p], crf.unary_coef_)
    np.testing.assert_array_equal(wu[:, p], crf.intercept_)
    np.testing.assert_array_equal(wp, crf.pairwise_coef_)
    assert crf.n_features_in_ == p and crf.n_edge_features_in_ is None

    crf0 = CRF(fit_intercept=False, **FAST).fit(X, y)
    assert crf0.model_.n_features == p
    np.testing.assert_array_equal(crf0.intercept_, np.zeros(k))


def test_string_labels_give_same_model_as_codes(chain_data):
    X, y = chain_data
    names = np.array(["ADJ", "NOUN", "VERB"])  # sorted, so the codes are unchanged
    y_str = [names[lab] for lab in y]
    a = CRF(**FAST).fit(X, y)
    b = CRF(**FAST).fit(X, y_str)
    np.testing.assert_array_equal(b.classes_, names)
    np.testing.assert_allclose(a.coef_, b.coef_)
    pred = b.predict(X)
    assert pred[0].dtype.kind == "U"
    for pa, pb in zip(a.predict(X), pred):
        np.testing.assert_array_equal(names[pa], pb)
    assert b.score(X, y_str) == pytest.approx(a.score(X, y))


def test_labels_as_python_lists_and_unsorted_classes(chain_data):
    X, y = chain_data
    y_obj = [[["z", "a", "m"][v] for v in lab] for lab in y]
    crf = CRF(**FAST).fit(X, y_obj)
    assert list(crf.classes_) == ["a", "m", "z"]
    marg = crf.predict_marginals(X[:1])[0]
    pred = crf.predict(X[:1])[0]
    # on a chain the most likely label of each node mostly agrees with MAP; columns follow classes_
    assert np.mean(crf.classes_[marg.argmax(1)] == pred) >= 0.75


def test_sparse_features_give_same_model_as_dense(chain_data):
    X, y = chain_data
    dense = CRF(**FAST).fit(X, y)
    sparse = CRF(**FAST).fit([sp.csr_matrix(x) for x in X], y)
    np.testing.assert_allclose(dense.coef_, sparse.coef_, rtol=1e-8, atol=1e-10)
    for a, b in zip(dense.predict(X), sparse.predict([sp.csr_matrix(x) for x in X])):
        np.testing.assert_array_equal(a, b)


def test_graphs_with_edge_features(chain_data):
    X, y = chain_data
    data = []
    for x in X:
        n = len(x)
        edges = np.column_stack([np.arange(n - 1), np.arange(1, n)])
        efeat = np.column_stack([np.ones(n - 1), np.linspace(0, 1, n - 1)])
        data.append((x, edges, efeat))
    crf = CRF(**FAST).fit(data, y)
    assert crf.n_edge_features_in_ == 2
    assert crf.pairwise_coef_.shape == (2, 3, 3)
    assert crf.score(data, y) > 0.9
    with pytest.raises(ValueError, match="edge features"):
        crf.predict(X)  # no edge features at predict time
    with pytest.raises(ValueError, match="edge features"):
        CRF(**FAST).fit(X, y).predict(data)


def test_feature_count_mismatch_at_predict(chain_data):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        crf.predict([X[0][:, :3]])
    with pytest.raises(ValueError, match="features"):
        crf.predict_marginals([np.hstack([X[0], X[0]])])


def test_loopy_graph_prediction(chain_data):
    X, y = chain_data
    cyc = [(x, np.array([[i, (i + 1) % len(x)] for i in range(len(x))])) for x in X]
    crf = CRF(**FAST).fit(cyc, y)
    marg = crf.predict_marginals(cyc)
    for m, x in zip(marg, X):
        assert m.shape == (len(x), 3)
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
    assert crf.score(cyc, y) > 0.85


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_every_solver_trains(chain_data, solver):
    X, y = chain_data
    crf = CRF(alpha=0.1, solver=solver, max_iter=15, random_state=0).fit(X, y)
    assert crf.score(X, y) > 0.85
    assert np.all(np.isfinite(crf.coef_))


def test_solver_params_are_passed_and_checked(chain_data):
    X, y = chain_data
    crf = CRF(solver="bcfw", solver_params={"averaging": "weighted"}, **FAST).fit(X, y)
    assert crf.score(X, y) > 0.85
    with pytest.raises(TypeError):  # an unknown option reaches the solver
        CRF(solver="bcfw", solver_params={"no_such_option": 1}, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="max_iter"):
        CRF(solver_params={"max_iter": 3}).fit(X, y)
    with pytest.raises(ValueError, match="kappa"):
        CRF(solver="idal", solver_params={"kappa": 3}).fit(X, y)


def test_idal_options_change_the_fit(chain_data):
    X, y = chain_data
    base = CRF(**FAST).fit(X, y)
    other = CRF(kappa=0.3, inner_epochs=2, loss_augmented=True, **FAST).fit(X, y)
    assert not np.allclose(base.coef_, other.coef_)


def test_warm_start_continues(chain_data):
    X, y = chain_data
    crf = CRF(alpha=0.1, max_iter=3, tol=0.0, random_state=0, warm_start=True).fit(X, y)
    first = crf.n_iter_
    gap_first = crf.history_["gap"][-1]
    crf.fit(X, y)
    assert crf.n_iter_ == first + 3
    assert crf.history_["iteration"][-1] == first + 3
    assert crf.history_["gap"][-1] < gap_first
    cold = CRF(alpha=0.1, max_iter=3, tol=0.0, random_state=0).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 3
    with pytest.raises(ValueError, match="warm_start"):
        crf.fit([x[:, :3] for x in X], y)


def test_callback_stops_and_interrupt_keeps_a_usable_model(chain_data):
    X, y = chain_data
    seen = []

    def stop_now(info):
        seen.append(info["iteration"])
        return True

    crf = CRF(callback=stop_now, **FAST).fit(X, y)
    assert crf.n_iter_ == 1 and seen == [1]

    def interrupt(info):
        if info["iteration"] >= 2:
            raise KeyboardInterrupt
        return False

    crf = CRF(callback=interrupt, alpha=0.1, max_iter=50, tol=0.0, random_state=0).fit(X, y)
    assert crf.interrupted_ and not crf.converged_
    assert crf.n_iter_ <= 3
    assert len(crf.predict(X)) == len(X)
    assert crf.score(X, y) > 0.5


@pytest.mark.parametrize("params, exc, match", [
    (dict(alpha=0.0), ValueError, "alpha"),
    (dict(alpha="big"), TypeError, "alpha"),
    (dict(solver="adam"), ValueError, "solver"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(tol=-1.0), ValueError, "tol"),
    (dict(kappa=-1.0), ValueError, "kappa"),
    (dict(rho=0.0), ValueError, "rho"),
    (dict(inner_epochs=0), ValueError, "inner_epochs"),
    (dict(entropy="tsallis"), ValueError, "entropy"),
    (dict(solver="bcfw", kappa=0.5), ValueError, "kappa.*idal"),
    (dict(solver="lbfgs", entropy="gini_otrw"), ValueError, "entropy"),
    (dict(loss_augmented="yes"), TypeError, "loss_augmented"),
    (dict(sampling="cyclic"), ValueError, "sampling"),
    (dict(fit_intercept=1), TypeError, "fit_intercept"),
    (dict(inference="gibbs"), ValueError, "inference"),
    (dict(solver_params=[1, 2]), TypeError, "solver_params"),
    (dict(random_state="seed"), ValueError, "seed"),
    (dict(verbose=-1), ValueError, "verbose"),
    (dict(warm_start=None), TypeError, "warm_start"),
    (dict(callback=3), TypeError, "callback"),
])
def test_bad_parameters_raise_before_compute(chain_data, params, exc, match):
    X, y = chain_data
    with pytest.raises(exc, match=match):
        CRF(**params).fit(X, y)


@pytest.mark.parametrize("make, exc, match", [
    (lambda X, y: (np.vstack(X), np.concatenate(y)), TypeError, "list of examples"),
    (lambda X, y: (X, y[:-1]), ValueError, "examples"),
    (lambda X, y: (X, None), ValueError, "y is required"),
    (lambda X, y: (X, [np.zeros(len(x), int) for x in X]), ValueError, "2 distinct labels"),
    (lambda X, y: ([np.full_like(X[0], np.nan)] + X[1:], y), ValueError, "NaN"),
    (lambda X, y: (X, [y[0].astype(str)] + y[1:]), TypeError, "mixes label types"),
    (lambda X, y: (X, [np.array([1.0, np.nan] + [0.0] * (len(y[0]) - 2))] + y[1:]), ValueError, "NaN"),
    (lambda X, y: (X, [y[0][:-1]] + y[1:]), ValueError, r"y\[0\]"),
    (lambda X, y: ([], []), ValueError, "empty"),
])
def test_bad_inputs(chain_data, make, exc, match):
    X, y = make(*chain_data)
    with pytest.raises(exc, match=match):
        CRF(**FAST).fit(X, y)


def test_marginal_method_must_fit_inference(chain_data):
    X, y = chain_data
    crf = CRF(inference="trws", **FAST).fit(X, y)
    assert len(crf.predict(X)) == len(X)
    with pytest.raises(ValueError, match="MAP method"):
        crf.predict_marginals(X)


def test_trw_and_bp_inference_options_are_used(chain_data):
    X, y = chain_data
    exact = CRF(**FAST).fit(X, y)
    for method in ("trw", "bp", "exact"):
        other = CRF(inference=method, **FAST).fit(X, y)
        np.testing.assert_array_equal(other.coef_, exact.coef_)
        # both are exact on chains: same marginals, and max-marginal decoding equals MAP here
        for a, b in zip(exact.predict_marginals(X), other.predict_marginals(X)):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert other.score(X, y) == pytest.approx(exact.score(X, y), abs=0.05)


def test_pos_tagging_pipeline_with_dict_features():
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline

    from crflearn import NodeTransformer
    from crflearn.datasets import load_tiny_pos, sentence_features

    sentences, tags = load_tiny_pos()
    X = sentence_features(sentences)
    pipe = make_pipeline(NodeTransformer(DictVectorizer()), CRF(alpha=0.01, max_iter=30, random_state=0))
    pipe.fit(X[:28], tags[:28])
    crf = pipe[-1]
    assert crf.classes_.dtype.kind == "U" and "NOUN" in crf.classes_
    assert pipe.score(X[:28], tags[:28]) > 0.95
    assert pipe.score(X[28:], tags[28:]) > 0.6
    assert all(p.dtype.kind == "U" for p in pipe.predict(X[28:]))


@pytest.mark.data
def test_ocr_subset(shared_data_dir):
    if shared_data_dir is None or not (shared_data_dir / "ocr_letters.npz").exists():
        pytest.skip("ocr_letters.npz not found (set CRFLEARN_DATA)")
    from crflearn.datasets import load_ocr

    X_train, y_train, X_test, y_test = load_ocr("small", path=shared_data_dir)
    crf = CRF(alpha=1e-2, max_iter=30, random_state=0).fit(X_train[:150], y_train[:150])
    assert crf.score(X_train[:150], y_train[:150]) > 0.95
    assert crf.score(X_test[:300], y_test[:300]) > 0.7


def test_warm_start_with_other_classes_or_data(chain_data):
    X, y = chain_data
    crf = CRF(alpha=0.1, max_iter=3, tol=0.0, random_state=0, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="warm_start"):
        crf.fit(X, [np.array(["a", "b", "c"])[lab] for lab in y])
    with pytest.warns(UserWarning, match="starting afresh"):
        warnings.simplefilter("always")
        crf.fit(X[:5], y[:5])
    assert crf.n_iter_ == 3
    cold = CRF(alpha=0.1, max_iter=3, tol=0.0, random_state=0).fit(X[:5], y[:5])
    np.testing.assert_allclose(crf.coef_, cold.coef_)


def test_readable_coefficients_are_read_only_views_of_coef(chain_data):
    X, y = chain_data[:2]
    crf = CRF(max_iter=5, tol=0.0, random_state=0).fit(X, y)
    for name in ("unary_coef_", "intercept_", "pairwise_coef_"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(crf, name)[...] = 0.0
    before = crf.predict(X)
    crf.coef_[:] = 0.0  # coef_ drives predict: all-zero weights give a constant labelling
    after = crf.predict(X)
    assert all(np.all(p == p[0]) for p in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_alpha_auto_is_one_over_n_for_every_solver(chain_data):
    from crflearn.solvers import SOLVER_NAMES

    X, y = chain_data
    for name in SOLVER_NAMES:
        crf = CRF(solver=name, max_iter=3, random_state=0).fit(X, y)
        assert crf.alpha == "auto" and crf.alpha_ == 1.0 / len(X)
        same = CRF(solver=name, alpha=1.0 / len(X), max_iter=3, random_state=0).fit(X, y)
        np.testing.assert_array_equal(crf.coef_, same.coef_)
    assert CRF(alpha=0.25, solver="bcfw", max_iter=2).fit(X, y).alpha_ == 0.25


def test_solver_specific_parameter_for_another_solver_names_the_takers(chain_data):
    X, y = chain_data
    with pytest.raises(ValueError, match=r"inner_epochs.*\['idal'\]"):
        CRF(solver="lbfgs", inner_epochs=3).fit(X, y)
    with pytest.raises(ValueError, match=r"loss_augmented.*\['idal', 'lbfgs'\]"):
        CRF(solver="bcfw", loss_augmented=True).fit(X, y)
    CRF(solver="bcfw", loss_augmented=False, kappa=1.0, max_iter=2).fit(X, y)  # defaults are fine


def test_solvers_are_called_once_validated(chain_data, monkeypatch):
    from crflearn.solvers import get_solver_spec

    X, y = chain_data
    spec = get_solver_spec("bcfw")
    real = spec.load()
    seen = {}

    def spy(batch, model, *, check_input=True, **kwargs):
        seen.update(kwargs, check_input=check_input, fit_intercept=model.fit_intercept,
                    n_features=batch.n_features)
        return real(batch, model, check_input=check_input, **kwargs)

    monkeypatch.setattr(type(spec), "load", lambda self: spy)
    CRF(solver="bcfw", max_iter=2).fit(X, y)
    assert seen["check_input"] is False
    # the intercept is the model's business: the batch keeps the raw features
    assert seen["fit_intercept"] is True and seen["n_features"] == X[0].shape[1]


def test_relaxed_marginals_differ_from_exact_and_are_the_gini_solution(chain_data):
    from crflearn.inference import gini_infer

    X, y = chain_data
    crf = CRF(solver="bcfw", max_iter=5, random_state=0).fit(X, y)
    exact = crf.predict_marginals(X[:2])
    relaxed = crf.predict_marginals(X[:2], method="relaxed")
    for e, r, x in zip(exact, relaxed, X[:2]):
        np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-6)
        unary, pairwise = crf.model_.potentials(crf.coef_, __import__("crflearn").graphs.make_batch([x])[0])
        edges = np.column_stack([np.arange(len(x) - 1), np.arange(1, len(x))])
        ref = gini_infer(unary, pairwise, edges, kappa=crf.kappa, tol=1e-12, max_iter=100_000).node_marginals
        # predict_marginals solves to the default relative gap 1e-6; the Gini objective is strongly
        # concave, so the marginals are within O(sqrt(gap)) of the optimum
        np.testing.assert_allclose(r, ref, atol=1e-3)
    assert max(np.abs(e - r).max() for e, r in zip(exact, relaxed)) > 1e-3
    with pytest.raises(ValueError, match="method"):
        crf.predict_marginals(X, method="bethe")


def test_prediction_runs_with_one_blas_thread(chain_data, monkeypatch):
    import crflearn.inference as inference
    from threadpoolctl import threadpool_info

    X, y = chain_data
    crf = CRF(solver="bcfw", max_iter=2).fit(X, y)
    seen = []
    real_decode, real_infer = inference.decode_batch, inference.infer_batch

    def record(fn):
        def wrapped(*args, **kwargs):
            seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(inference, "decode_batch", record(real_decode))
    monkeypatch.setattr(inference, "infer_batch", record(real_infer))
    crf.predict(X)
    crf.predict_marginals(X)
    crf.score(X, y)
    assert len(seen) == 3 and all(threads <= {1} for threads in seen)
