"""The scikit-learn estimator contract for structured input.

The data-free ``check_*`` functions of ``sklearn.utils.estimator_checks`` run
as they are. The checks that feed random 2-D arrays do not apply to a
list-of-examples estimator (``__sklearn_tags__`` says so), so their structured
counterparts are written here: fit returns self, idempotent refit, parameters
not mutated, clone, pickle/joblib round trips, NotFittedError, feature-count
mismatch, and the model-selection tools (GridSearchCV, cross_val_score,
Pipeline with NodeTransformer).
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks as ec

from crflearn import CRF, NodeTransformer
from crflearn.metrics import get_scorer, node_accuracy, node_accuracy_scorer, sequence_accuracy_scorer

from conftest import make_chains

FAST = dict(alpha=0.1, max_iter=20, tol=1e-3, random_state=0)

DATA_FREE_CHECKS = [
    ec.check_parameters_default_constructible,
    ec.check_no_attributes_set_in_init,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_estimator_repr,
    ec.check_estimator_cloneable,
    ec.check_estimator_tags_renamed,
    ec.check_valid_tag_types,
    ec.check_mixin_order,
    ec.check_do_not_raise_errors_in_init_or_set_params,
]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("estimator", [CRF(), CRF(alpha=1.0, solver="bcfw", solver_params={"averaging": "uniform"}),
                                       NodeTransformer(StandardScaler())],
                         ids=["CRF", "CRF-bcfw", "NodeTransformer"])
@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda c: c.__name__)
def test_data_free_sklearn_checks(estimator, check):
    check(type(estimator).__name__, clone(estimator))


def test_tags_declare_structured_input():
    tags = CRF().__sklearn_tags__()
    assert tags.input_tags.two_d_array is False
    assert tags.target_tags.required is True
    assert not is_classifier(CRF())  # keeps KFold (not StratifiedKFold) for lists of label arrays
    assert NodeTransformer(StandardScaler()).__sklearn_tags__().input_tags.two_d_array is False


def test_fit_returns_self_and_sets_fitted_attributes(chain_data):
    X, y = chain_data
    crf = CRF(**FAST)
    assert crf.fit(X, y) is crf
    for attr in ("coef_", "unary_coef_", "pairwise_coef_", "intercept_", "classes_", "n_features_in_",
                 "n_edge_features_in_", "n_iter_", "history_", "converged_", "model_"):
        assert hasattr(crf, attr), attr


def test_idempotent_refit(chain_data):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, y)
    first = crf.coef_.copy()
    pred = crf.predict(X)
    crf.fit(X, y)
    np.testing.assert_array_equal(crf.coef_, first)
    # fitting on other data in between must not leak into a refit
    X2, y2 = make_chains(n_sequences=5, seed=7)
    crf.fit(X2, y2).fit(X, y)
    np.testing.assert_array_equal(crf.coef_, first)
    for a, b in zip(pred, crf.predict(X)):
        np.testing.assert_array_equal(a, b)


def test_parameters_and_inputs_not_mutated_by_fit(chain_data):
    X, y = chain_data
    sp_params = {"averaging": "uniform"}
    crf = CRF(solver="bcfw", solver_params=sp_params, **FAST)
    before = copy.deepcopy(crf.get_params())
    X_copy, y_copy = [x.copy() for x in X], [lab.copy() for lab in y]
    crf.fit(X, y)
    after = crf.get_params()
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key
    assert crf.solver_params is sp_params and sp_params == {"averaging": "uniform"}
    for a, b in zip(X, X_copy):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(y, y_copy):
        np.testing.assert_array_equal(a, b)


def test_clone_gives_unfitted_copy_with_same_params(chain_data):
    X, y = chain_data
    crf = CRF(alpha=0.5, kappa=2.0, **{k: v for k, v in FAST.items() if k != "alpha"}).fit(X, y)
    c = clone(crf)
    assert c.get_params() == crf.get_params()
    assert not hasattr(c, "coef_")
    with pytest.raises(NotFittedError):
        c.predict(X)


@pytest.mark.parametrize("method", ["pickle", "joblib"])
def test_pickle_round_trip_predicts_identically(chain_data, method):
    X, y = chain_data
    names = np.array(["x", "y", "z"])
    crf = CRF(**FAST).fit(X, [names[lab] for lab in y])
    if method == "pickle":
        restored = pickle.loads(pickle.dumps(crf))
    else:
        buf = io.BytesIO()
        joblib.dump(crf, buf)
        buf.seek(0)
        restored = joblib.load(buf)
    np.testing.assert_array_equal(restored.coef_, crf.coef_)
    np.testing.assert_array_equal(restored.classes_, crf.classes_)
    for a, b in zip(crf.predict(X), restored.predict(X)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(crf.predict_marginals(X), restored.predict_marginals(X)):
        np.testing.assert_array_equal(a, b)


def test_save_load_round_trip_predicts_identically(chain_data, tmp_path):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, y)
    path = tmp_path / "model.npz"
    crf.save(path)
    restored = CRF.load(path)
    for a, b in zip(crf.predict(X), restored.predict(X)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["predict", "predict_marginals", "predict_log_partition", "score", "save"])
def test_not_fitted_error(chain_data, method, tmp_path):
    X, y = chain_data
    crf = CRF()
    args = {"predict": (X,), "predict_marginals": (X,), "predict_log_partition": (X,), "score": (X, y),
            "save": (tmp_path / "m.npz",)}[method]
    with pytest.raises(NotFittedError):
        getattr(crf, method)(*args)


def test_feature_count_mismatch(chain_data):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="expected 4"):
        crf.predict([x[:, :2] for x in X])


def test_grid_search_over_alpha_with_structured_scorers(chain_data):
    X, y = chain_data
    grid = GridSearchCV(CRF(max_iter=15, random_state=0), {"alpha": [1e-1, 1e2]},
                        scoring=node_accuracy_scorer, cv=KFold(2))
    grid.fit(X, y)
    # heavy regularisation (alpha = 100) shrinks w to ~0 and cannot separate the classes
    assert grid.best_params_ == {"alpha": 0.1}
    assert grid.best_score_ > 0.8
    assert grid.cv_results_["mean_test_score"][1] < grid.best_score_
    assert grid.score(X, y) == pytest.approx(node_accuracy(y, grid.predict(X)))
    # named scorers and the estimator's own score (node accuracy) as default
    res = cross_validate(CRF(**FAST), X, y, cv=2,
                         scoring={"node": get_scorer("node_accuracy"), "seq": sequence_accuracy_scorer,
                                  "f1": get_scorer("node_f1_macro")})
    assert np.all(res["test_node"] >= res["test_seq"])
    default = cross_val_score(CRF(**FAST), X, y, cv=2)
    np.testing.assert_allclose(default, res["test_node"])


def test_pipeline_with_node_transformer(chain_data):
    X, y = chain_data
    X_shifted = [1000.0 + 50.0 * x for x in X]  # badly scaled features: scaling is needed
    pipe = Pipeline([("scale", NodeTransformer(StandardScaler())), ("crf", CRF(**FAST))])
    scores = cross_val_score(pipe, X_shifted, y, cv=2, scoring=node_accuracy_scorer)
    assert scores.shape == (2,) and np.all(scores > 0.8)
    pipe.fit(X_shifted, y)
    assert pipe.n_features_in_ == 4
    assert pipe.named_steps["crf"].n_features_in_ == 4
    c = clone(pipe)
    assert c.get_params()["crf__alpha"] == 0.1 and not hasattr(c.named_steps["crf"], "coef_")
    grid = GridSearchCV(pipe, {"crf__alpha": [0.1, 1.0], "scale__transformer__with_std": [True]}, cv=2)
    grid.fit(X_shifted, y)
    assert grid.best_score_ > 0.8


def test_crf_pipeline_is_a_pipeline_with_the_structured_methods(chain_data):
    from crflearn.pipeline import CRFPipeline, make_pipeline

    X, y = chain_data
    pipe = make_pipeline(NodeTransformer(StandardScaler()), CRF(**FAST))
    assert isinstance(pipe, CRFPipeline) and isinstance(pipe, Pipeline)
    c = clone(pipe)
    assert type(c) is CRFPipeline and c.get_params()["crf__alpha"] == 0.1
    grid = GridSearchCV(pipe, {"crf__start_end_transitions": [False, True]}, cv=2,
                        scoring=node_accuracy_scorer).fit(X, y)
    best = grid.best_estimator_
    assert type(best) is CRFPipeline
    marginals = best.predict_marginals(X[:2])
    assert [m.shape for m in marginals] == [(len(x), len(best[-1].classes_)) for x in X[:2]]
    restored = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(restored.predict_top_k(X[:1], 2)[0][1], best.predict_top_k(X[:1], 2)[0][1])


@pytest.mark.parametrize("params", [dict(allowed_transitions=np.ones((2, 2), bool)),
                                    dict(allowed_transitions=[(0, 1), (1, 0), (1, 1)]),
                                    dict(start_end_transitions=True)])
def test_new_parameters_are_plain_parameters(params):
    est = CRF(**params)
    assert clone(est).get_params()["start_end_transitions"] == params.get("start_end_transitions", False)
    for check in (ec.check_get_params_invariance, ec.check_set_params, ec.check_no_attributes_set_in_init):
        check("CRF", est)
