"""The sequence-labelling front end: feature dicts, pipelines, scorers, label-named weights, the staples."""

from __future__ import annotations

import enum
import io
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.preprocessing import StandardScaler

from crflearn import CRF, NodeTransformer
from crflearn.datasets import load_tiny_pos, sentence_features
from crflearn.inference.constraints import bio_transitions
from crflearn.metrics import flatten_labels, get_scorer, node_classification_report
from crflearn.pipeline import CRFPipeline, make_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def pos():
    sentences, tags = load_tiny_pos()
    return sentence_features(sentences), tags


def _numeric(seed=0, n=8, length=(2, 5), k=3):
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(rng.integers(*length), 3)) for _ in range(n)]
    y = [np.clip(np.round(x[:, 0] + 1), 0, k - 1).astype(int) for x in X]
    return X, y


def _roundtrip(crf):
    buf = io.BytesIO()
    crf.save(buf)
    buf.seek(0)
    return CRF.load(buf)


def test_sklearn_crfsuite_tutorial_workflow(pos):
    """The sklearn-crfsuite tutorial, line for line: dicts in, string tags, flat report, marginals, weights."""
    X, y = pos
    X_train, X_test, y_train, y_test = X[:28], X[28:], y[:28], y[28:]
    crf = CRF(solver="lbfgs", alpha=0.05, max_iter=100)
    crf.fit(X_train, y_train)
    y_pred = crf.predict(X_test)
    report = node_classification_report(y_test, y_pred, digits=3)
    marginals = crf.predict_marginals(X_test)
    top_states = sorted(crf.state_features_.items(), key=lambda kv: -kv[1])[:5]
    top_transitions = sorted(crf.transition_features_.items(), key=lambda kv: -kv[1])[:5]

    assert np.mean(flatten_labels(y_pred) == flatten_labels(y_test)) > 0.6
    assert "NOUN" in report and "macro avg" in report
    assert [m.shape for m in marginals] == [(len(s), len(crf.classes_)) for s in X_test]
    assert all(isinstance(name, str) and label in crf.classes_ for (name, label), _ in top_states)
    assert all(a in crf.classes_ and b in crf.classes_ for (a, b), _ in top_transitions)
    assert isinstance(y_pred[0][0], str)


def test_feature_dicts_equal_the_explicit_vectoriser_pipeline(pos):
    X, y = pos
    crf = CRF(solver="lbfgs", max_iter=30).fit(X, y)
    pipe = make_pipeline(NodeTransformer(DictVectorizer()), CRF(solver="lbfgs", max_iter=30)).fit(X, y)
    np.testing.assert_allclose(crf.coef_, pipe[-1].coef_, rtol=1e-10, atol=1e-12)
    assert list(crf.feature_names_in_) == list(pipe[0].get_feature_names_out())
    assert crf.n_features_in_ == len(crf.feature_names_in_) == crf.unary_coef_.shape[1]
    # str values are "name=value" indicators, numbers and booleans values
    assert "word.lower=the" in crf.feature_names_in_ and "is_title" in crf.feature_names_in_


def test_feature_dict_values_and_unknown_features():
    X = [[{"w": "a", "up": True, "n": 2}, {"w": "b", "up": False}], [{"w": "a"}, {"w": "c", "n": 1.5}]]
    y = [["X", "Y"], ["X", "Y"]]
    crf = CRF(solver="lbfgs", max_iter=20).fit(X, y)
    assert list(crf.feature_names_in_) == ["n", "up", "w=a", "w=b", "w=c"]
    unseen = [[{"w": "zzz", "new": 3.0}, {"w": "a", "other": "q"}]]
    known = [[{}, {"w": "a"}]]
    np.testing.assert_allclose(crf.predict_marginals(unseen)[0], crf.predict_marginals(known)[0])
    with pytest.raises(ValueError, match="feature dicts"):
        crf.predict([np.zeros((2, 5))])
    numeric = CRF(solver="lbfgs", max_iter=5).fit(*_numeric())
    with pytest.raises(ValueError, match="numeric features"):
        numeric.predict(X)
    assert not hasattr(numeric, "feature_names_in_") and numeric.vectorizer_ is None


def test_feature_dicts_in_tuples_and_networkx_graphs():
    import networkx as nx

    rows = [{"w": "a", "n": 1.0}, {"w": "b"}, {"w": "a", "n": -1.0}]
    tree = np.array([[0, 1], [0, 2]])
    X = [(rows, tree)] * 3
    y = [["a", "b", "a"]] * 3
    crf = CRF(solver="lbfgs", max_iter=20).fit(X, y)
    assert list(crf.feature_names_in_) == ["n", "w=a", "w=b"]
    graph = nx.Graph()
    for j, row in enumerate(rows):
        graph.add_node(j, x=row, y=y[0][j])
    graph.add_edges_from(tree.tolist())
    from_graphs = CRF(solver="lbfgs", max_iter=20).fit([graph] * 3)  # labels from the "y" attributes
    np.testing.assert_allclose(from_graphs.coef_, crf.coef_, atol=1e-12)
    assert from_graphs.predict([graph])[0].tolist() == crf.predict(X[:1])[0].tolist()


def test_feature_dicts_save_load_keeps_the_vocabulary(pos):
    X, y = pos
    crf = CRF(solver="lbfgs", max_iter=20).fit(X[:20], y[:20])
    back = _roundtrip(crf)
    assert list(back.feature_names_in_) == list(crf.feature_names_in_)
    for a, b in zip(back.predict_marginals(X[20:]), crf.predict_marginals(X[20:])):
        np.testing.assert_array_equal(a, b)
    assert back.state_features_ == crf.state_features_


# -- pipelines and scorers ---------------------------------------------------------------
def test_pipeline_exposes_the_structured_methods():
    X, y = _numeric()
    pipe = make_pipeline(NodeTransformer(StandardScaler()), CRF(solver="lbfgs", max_iter=20))
    assert isinstance(pipe, CRFPipeline)
    pipe.fit(X, y)
    crf, Xt = pipe[-1], pipe[0].transform(X)
    for a, b in zip(pipe.predict_marginals(X), crf.predict_marginals(Xt)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pipe.predict_log_partition(X), crf.predict_log_partition(Xt))
    (seqs, scores), = pipe.predict_top_k(X[:1], k=2)
    np.testing.assert_array_equal(seqs[0], pipe.predict(X[:1])[0])
    flat = CRFPipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    assert not hasattr(flat, "predict_marginals") and not hasattr(flat, "predict_top_k")


def test_sklearn_scoring_strings_raise_naming_the_crflearn_scorers():
    X, y = _numeric(n=9)
    pipe = make_pipeline(NodeTransformer(StandardScaler()), CRF(solver="lbfgs", max_iter=10))
    with pytest.raises(ValueError, match="crflearn.metrics.get_scorer"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's FitFailedWarning before it raises
        cross_val_score(pipe, X, y, scoring="f1_macro", cv=3)
    with pytest.raises(ValueError, match="node_f1_macro"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GridSearchCV(CRF(solver="lbfgs", max_iter=5), {"alpha": [0.1, 1.0]}, scoring="accuracy", cv=3).fit(X, y)
    scores = cross_val_score(pipe, X, y, scoring=get_scorer("node_f1_macro"), cv=3)
    assert np.all(np.isfinite(scores)) and np.all(scores > 0)
    assert np.all(np.isfinite(cross_val_score(pipe, X, y, cv=3)))  # scoring=None: CRF.score
    CRF(solver="lbfgs", max_iter=5).fit(X, y)  # outside cross-validation nothing is checked


# -- label-named weights, start/end transitions ---------------------------------------------
def test_label_named_weight_views():
    X, y = _numeric()
    labels = [np.array(["a", "b", "c"])[lab] for lab in y]
    crf = CRF(solver="lbfgs", max_iter=20).fit(X, labels)
    state = crf.state_features_
    assert state == {(f"x{j}", crf.classes_[k]): crf.unary_coef_[k, j]
                     for k in range(3) for j in range(3) if crf.unary_coef_[k, j] != 0}
    trans = crf.transition_features_
    assert trans[("a", "c")] == crf.pairwise_coef_[0, 2] and len(trans) == 9
    with pytest.raises(AttributeError):
        CRF().state_features_
    edge = CRF(solver="lbfgs", max_iter=3).fit([(x, np.array([[0, 1]]), np.ones((1, 2))) for x in X], y)
    assert not hasattr(edge, "transition_features_")


def test_start_end_transitions_are_first_and_last_node_indicators():
    X, y = _numeric(seed=3)
    ends = [np.column_stack([x, np.eye(len(x))[0], np.eye(len(x))[-1]]) for x in X]
    crf = CRF(solver="lbfgs", max_iter=50, start_end_transitions=True).fit(X, y)
    ref = CRF(solver="lbfgs", max_iter=50).fit(ends, y)
    np.testing.assert_allclose(crf.coef_, ref.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(crf.start_transitions_, ref.unary_coef_[:, 3])
    np.testing.assert_array_equal(crf.end_transitions_, ref.unary_coef_[:, 4])
    assert crf.unary_coef_.shape == (3, 3) and crf.n_features_in_ == 3
    for a, b in zip(crf.predict_marginals(X), ref.predict_marginals(ends)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert CRF(solver="lbfgs", max_iter=5).fit(X, y).start_transitions_ is None
    back = _roundtrip(crf)
    np.testing.assert_array_equal(back.end_transitions_, crf.end_transitions_)
    np.testing.assert_array_equal(back.predict_top_k(X[:2], 3)[1][1], crf.predict_top_k(X[:2], 3)[1][1])
    with pytest.raises(ValueError, match="chains"):
        CRF(start_end_transitions=True, max_iter=2).fit([(x, np.zeros((0, 2), int)) for x in X], y)


@pytest.mark.parametrize("solver", ["idal", "bcfw", "subgradient", "cutting_plane", "lbfgs"])
def test_every_solver_takes_feature_dicts_and_start_end_transitions(pos, solver):
    X, y = pos
    crf = CRF(solver=solver, max_iter=2, start_end_transitions=True, random_state=0).fit(X[:10], y[:10])
    assert crf.start_transitions_.shape == crf.end_transitions_.shape == (len(crf.classes_),)
    assert crf.model_.n_features == crf.n_features_in_ + 2 == len(crf.feature_names_in_) + 2
    assert [len(p) for p in crf.predict(X[10:14])] == [len(s) for s in X[10:14]]


# -- labels of every hashable type ------------------------------------------------------------
class Tag(enum.Enum):
    NOUN = "n"
    VERB = "v"
    OTHER = "o"


@pytest.mark.parametrize("kind", ["tuple", "enum"])
def test_tuple_and_enum_labels_fit_predict_save_load(kind):
    X, y = _numeric(seed=1)
    values = [("B", "PER"), ("I", "PER"), ("O",)] if kind == "tuple" else list(Tag)
    labels = [[values[c] for c in lab] for lab in y]
    crf = CRF(solver="lbfgs", max_iter=20).fit(X, labels)
    assert set(crf.classes_.tolist()) == set(values)
    pred = crf.predict(X)
    assert all(p in values for seq in pred for p in seq.tolist())
    assert 0 <= crf.score(X, labels) <= 1
    back = _roundtrip(crf)
    assert back.classes_.tolist() == crf.classes_.tolist()
    assert [p.tolist() for p in back.predict(X)] == [p.tolist() for p in pred]
    assert set(crf.transition_features_) == {(a, b) for a in values for b in values}


# -- staples wiring ---------------------------------------------------------------------------
def test_sample_weight_validation_and_routing(monkeypatch):
    from dataclasses import replace

    from crflearn.solvers import SOLVERS

    X, y = _numeric()
    monkeypatch.setitem(SOLVERS, "bcfw", replace(SOLVERS["bcfw"], sample_weight=False))
    with pytest.raises(ValueError, match=r"solver='bcfw' does not support sample_weight.*lbfgs"):
        CRF(solver="bcfw", max_iter=2).fit(X, y, sample_weight=np.ones(len(X)))
    monkeypatch.undo()
    for bad, match in [(np.ones(3), "shape"), (-np.ones(len(X)), ">= 0"), (np.zeros(len(X)), "0 for every example"),
                       (np.full(len(X), np.nan), "finite")]:
        with pytest.raises(ValueError, match=match):
            CRF(solver="lbfgs").fit(X, y, sample_weight=bad)
    # an integer weight equals repeating the example (same objective: alpha scaled to the same n)
    w = np.array([2, 1, 1, 1, 1, 1, 1, 3])
    rep_X = [x for x, c in zip(X, w) for _ in range(c)]
    rep_y = [lab for lab, c in zip(y, w) for _ in range(c)]
    weighted = CRF(solver="lbfgs", alpha=0.1, max_iter=300, tol=1e-10).fit(X, y, sample_weight=w * len(X) / w.sum())
    repeated = CRF(solver="lbfgs", alpha=0.1, max_iter=300, tol=1e-10).fit(rep_X, rep_y)
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-5)


@pytest.mark.parametrize("solver", ["idal", "bcfw", "subgradient", "cutting_plane", "lbfgs"])
def test_sample_weight_reaches_every_solver_that_takes_it(solver):
    from crflearn.solvers import get_solver_spec

    if not get_solver_spec(solver).sample_weight:
        pytest.skip(f"{solver} does not take sample_weight")
    X, y = _numeric()
    fit = dict(solver=solver, max_iter=3, random_state=0)
    plain = CRF(**fit).fit(X, y).coef_
    np.testing.assert_allclose(CRF(**fit).fit(X, y, sample_weight=np.ones(len(X))).coef_, plain, atol=1e-10)
    skewed = CRF(**fit).fit(X, y, sample_weight=np.linspace(0.2, 3.0, len(X))).coef_
    assert not np.allclose(skewed, plain)


@pytest.mark.parametrize("solver", ["bcfw", "lbfgs"])
def test_warm_start_with_new_sample_weight_starts_afresh(solver):
    X, y = _numeric()
    crf = CRF(solver=solver, warm_start=True, max_iter=3).fit(X, y, sample_weight=np.ones(len(X)))
    crf.fit(X, y, sample_weight=np.ones(len(X)))
    assert crf.n_iter_ > 3  # same weights: continued
    with pytest.warns(UserWarning, match="sample_weight changed"):
        crf.fit(X, y, sample_weight=np.arange(1.0, len(X) + 1))
    assert crf.n_iter_ == 3


def test_l1_ratio_validation_and_sparsity():
    X, y = _numeric()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="l1_ratio"):
            CRF(solver="lbfgs", l1_ratio=bad).fit(X, y)
    with pytest.raises(TypeError, match="l1_ratio"):
        CRF(solver="lbfgs", l1_ratio="0.5").fit(X, y)
    with pytest.raises(ValueError, match=r"l1_ratio.*not used by solver='idal'"):
        CRF(l1_ratio=0.5).fit(X, y)
    dense = CRF(solver="lbfgs", alpha=0.3, max_iter=200).fit(X, y)
    sparse = CRF(solver="lbfgs", alpha=0.3, l1_ratio=1.0, max_iter=200).fit(X, y)
    assert np.sum(sparse.coef_ == 0) > np.sum(dense.coef_ == 0)
    assert len(sparse.state_features_) == np.count_nonzero(sparse.unary_coef_)


def test_partial_labels():
    X, y = _numeric(seed=2)
    labels = [[None if (i + j) % 4 == 0 else int(c) for j, c in enumerate(lab)] for i, lab in enumerate(y)]
    crf = CRF(solver="lbfgs", max_iter=50).fit(X, labels)
    assert crf.classes_.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"None \(unknown labels\).*lbfgs"):
        CRF(solver="bcfw", max_iter=2).fit(X, labels)
    with pytest.raises(ValueError, match="2 distinct"):
        CRF(solver="lbfgs").fit(X, [[None] * len(x) for x in X])


def test_partial_labels_maximise_the_marginal_likelihood():
    """lbfgs on labels with None: a stationary point of the brute-force marginalised likelihood (tiny problem)."""
    import itertools

    from scipy.special import logsumexp

    from crflearn.graphs import make_batch

    X, y = _numeric(seed=8, n=6, length=(2, 4))
    labels = [[None if j == 1 else int(c) for j, c in enumerate(lab)] for lab in y]
    alpha = 0.3
    crf = CRF(solver="lbfgs", alpha=alpha, max_iter=500, tol=1e-12).fit(X, labels)
    batch, _ = make_batch(X)
    known = [np.array([c is not None for c in lab]) for lab in labels]
    k = len(crf.classes_)
    assert k == 3
    every = [np.array(list(itertools.product(range(k), repeat=len(x)))) for x in X]  # all labellings
    consistent = [np.all(e[:, m] == np.searchsorted(crf.classes_, lab)[m], axis=1)
                  for e, m, lab in zip(every, known, y)]

    def objective(w):
        unary, pairwise = crf.model_.potentials(w, batch)
        total = 0.0
        for i, (labs, ok) in enumerate(zip(every, consistent)):
            u = unary[batch.node_slice(i)]
            scores = u[np.arange(labs.shape[1]), labs].sum(axis=1) + pairwise[labs[:, :-1], labs[:, 1:]].sum(axis=1)
            total += logsumexp(scores) - logsumexp(scores[ok])
        return 0.5 * alpha * w @ w + total / len(X)

    # non-convex: lbfgs promises a stationary point of the marginal likelihood (central differences)
    assert np.abs(approx_fprime(crf.coef_, objective, 1e-6)).max() < 1e-5
    full = CRF(solver="lbfgs", alpha=alpha, max_iter=500, tol=1e-12).fit(X, y)
    assert np.abs(approx_fprime(full.coef_, objective, 1e-6)).max() > 1e-2  # unknown nodes matter


def approx_fprime(w, f, h):
    """Central-difference gradient of ``f`` at ``w``."""
    eye = np.eye(len(w)) * h
    return np.array([(f(w + e) - f(w - e)) / (2 * h) for e in eye])
