"""Reliability of the input edge (issue 14): zero-edge examples, sparse formats, complex
features, any hashable label type, mismatched label types in score()."""

from __future__ import annotations

import dataclasses
import enum
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from crflearn import CRF
from crflearn.graphs import make_batch

FAST = dict(alpha=0.1, max_iter=50, solver="lbfgs", random_state=0)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _graphs(edge_features: bool):
    rng = np.random.default_rng(0)
    data, y = [], []
    for n in (1, 3, 4, 1, 2):
        x = rng.normal(size=(n, 2))
        edges = np.column_stack([np.arange(n - 1), np.arange(1, n)]).astype(np.int64)
        item = (x, edges, rng.normal(size=(n - 1, 3))) if edge_features else (x, edges)
        data.append(item)
        y.append((x[:, 0] > 0).astype(int))
    y[1][:2] = [0, 1]
    return data, y


@pytest.mark.parametrize("edge_features", [False, True])
def test_examples_without_edges_fit_and_predict(edge_features):
    data, y = _graphs(edge_features)
    crf = CRF(**FAST).fit(data, y)
    assert crf.n_edge_features_in_ == (3 if edge_features else None)
    one_node = [data[0]]
    pred = crf.predict(one_node)
    assert pred[0].shape == (1,)
    marg = crf.predict_marginals(one_node)[0]
    np.testing.assert_allclose(marg.sum(axis=1), 1.0)
    # a one-node example has no pairwise term: its marginal is the softmax of the unary scores
    scores = crf.unary_coef_ @ data[0][0][0] + crf.intercept_
    np.testing.assert_allclose(marg[0], np.exp(scores - np.logaddexp.reduce(scores)), rtol=1e-10)


@pytest.mark.parametrize("empty", [np.zeros((0, 3)), np.zeros(0), [], np.zeros((0, 3), dtype=np.float32)])
def test_empty_edge_feature_arrays_in_any_form(empty):
    x = np.ones((1, 2))
    batch, _ = make_batch([(x, np.zeros((0, 2), np.int64), empty), (np.ones((2, 2)), [[0, 1]], [[1.0, 2.0, 3.0]])])
    assert batch.edge_features.shape == (1, 3) and batch.n_edges == 1
    batch, _ = make_batch([(x, [], empty)], n_edge_features=3)
    assert batch.edge_features.shape == (0, 3)


def test_only_edgeless_examples_need_a_known_width():
    x = np.ones((1, 2))
    batch, _ = make_batch([(x, [], np.zeros((0, 4)))])
    assert batch.n_edge_features == 4
    with pytest.raises(ValueError, match="edge feature"):
        make_batch([(x, [], [])])


@pytest.mark.parametrize("fmt", ["dok", "lil", "coo", "csc", "bsr", "dia", "csr"])
def test_every_scipy_sparse_format_is_accepted(chain_data, fmt):
    X, y = chain_data
    Xs = [sp.csr_matrix(x).asformat(fmt) for x in X]
    dense = CRF(**FAST).fit(X, y)
    sparse = CRF(**FAST).fit(Xs, y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-10)
    for a, b in zip(sparse.predict(Xs), dense.predict(X)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [lambda x: x.astype(np.complex128), lambda x: sp.csr_matrix(x.astype(complex))])
def test_complex_features_are_rejected(chain_data, make):
    X, y = chain_data
    with pytest.raises(TypeError, match="complex"):
        CRF(**FAST).fit([make(x) for x in X], y)
    crf = CRF(**FAST).fit(X, y)
    with pytest.raises(TypeError, match="complex"):
        crf.predict([make(X[0])])


class Tag(enum.Enum):
    NOUN = "n"
    VERB = "v"
    OTHER = "o"


@pytest.mark.parametrize("mapping", [
    {0: ("B", "PER"), 1: ("I", "PER"), 2: ("O",)},
    {0: Tag.NOUN, 1: Tag.VERB, 2: Tag.OTHER},
    {0: frozenset({1}), 1: frozenset({2}), 2: frozenset()},
])
def test_any_hashable_label_type_round_trips(chain_data, mapping):
    X, y = chain_data
    y_obj = [[mapping[int(v)] for v in lab] for lab in y]
    ref = CRF(**FAST).fit(X, y)
    crf = CRF(**FAST).fit(X, y_obj)
    assert len(crf.classes_) == 3 and set(crf.classes_.tolist()) == set(mapping.values())
    for pred, pref in zip(crf.predict(X), ref.predict(X)):
        assert [type(v) for v in pred.tolist()] == [type(mapping[0])] * len(pred)
        assert pred.tolist() == [mapping[int(v)] for v in pref]
    assert crf.score(X, y_obj) == ref.score(X, y)
    np.testing.assert_allclose(crf.coef_, ref.coef_[_perm(crf, ref, mapping)], atol=1e-10)


def _perm(crf, ref, mapping):
    """Index of ref.coef_ entries in crf's class order (the classes may be ordered differently)."""
    order = np.array([[k for k, v in mapping.items() if v == c][0] for c in crf.classes_.tolist()])
    k = len(order)
    n_in = ref.model_.n_inputs
    unary = np.arange(k * n_in).reshape(k, n_in)[order].ravel()
    pair = k * n_in + np.arange(k * k).reshape(k, k)[np.ix_(order, order)].ravel()
    return np.concatenate([unary, pair])


@dataclasses.dataclass(frozen=True, order=True)
class _Opaque:
    """A hashable, ordered label type that has no pickle-free file form."""

    name: str


def test_enum_labels_round_trip_and_opaque_labels_cannot_be_saved(chain_data, tmp_path):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, [[Tag.NOUN if v else Tag.VERB for v in lab] for lab in y])
    crf.save(tmp_path / "enum.npz")
    loaded = CRF.load(tmp_path / "enum.npz")
    assert list(loaded.classes_) == list(crf.classes_)
    assert all(list(a) == list(b) for a, b in zip(loaded.predict(X), crf.predict(X)))
    opaque = CRF(**FAST).fit(X, [[_Opaque("n") if v else _Opaque("v") for v in lab] for lab in y])
    with pytest.raises(TypeError, match="cannot be saved without pickle"):
        opaque.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists() and len(list(tmp_path.iterdir())) == 1


def test_score_with_labels_of_another_type_raises(chain_data):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, y)
    with pytest.raises(TypeError, match="type"):
        crf.score(X, [np.array(["a"] * len(lab)) for lab in y])
    assert crf.score(X, [lab + 10 for lab in y]) == 0.0  # labels unseen in training: every node wrong


def test_edgeless_examples_round_trip_through_the_cli_data_format(tmp_path):
    from crflearn.cli import read_npz_data, write_npz_data

    data, y = _graphs(edge_features=True)
    data[0] = (data[0][0], np.zeros((0, 2), np.int64), np.zeros(0))  # a one-node example, flat empty features
    write_npz_data(tmp_path / "d.npz", data, y)
    X2, y2 = read_npz_data(tmp_path / "d.npz")
    assert X2[0][1].shape == (0, 2) and X2[0][2].shape == (0, 3)
    crf = CRF(**FAST).fit(X2, y2)
    assert crf.predict(X2[:1])[0].shape == (1,)
