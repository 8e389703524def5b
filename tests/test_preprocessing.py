"""NodeTransformer: fit on stacked nodes, transform per example, keep the structure."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.preprocessing import MaxAbsScaler, StandardScaler

from crflearn import NodeTransformer


def _examples(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(loc=3.0, scale=2.0, size=(n, 4)) for n in (3, 5, 2)]


def test_standard_scaler_matches_stacked_fit():
    X = _examples()
    Xt = NodeTransformer(StandardScaler()).fit_transform(X)
    stacked = np.vstack(X)
    expected = (stacked - stacked.mean(axis=0)) / stacked.std(axis=0)
    assert [x.shape for x in Xt] == [x.shape for x in X]
    np.testing.assert_allclose(np.vstack(Xt), expected, atol=1e-12)
    # the statistics are global over nodes, not per example
    assert not np.allclose(Xt[0].mean(axis=0), 0.0)


def test_pca_reduces_dimension_and_transform_is_reusable():
    X = _examples()
    nt = NodeTransformer(PCA(n_components=2, random_state=0)).fit(X)
    Xt = nt.transform(X)
    assert [x.shape for x in Xt] == [(3, 2), (5, 2), (2, 2)]
    ref = PCA(n_components=2, random_state=0).fit(np.vstack(X))
    np.testing.assert_allclose(np.vstack(Xt), ref.transform(np.vstack(X)), atol=1e-10)
    assert nt.n_features_in_ == 4
    # a new example of one node
    new = nt.transform([X[0][:1]])
    np.testing.assert_allclose(new[0], Xt[0][:1], atol=1e-10)


def test_tuples_keep_edges_and_edge_features():
    X = _examples()
    edges = np.array([[0, 1], [1, 2]])
    data = [(X[0], edges), (X[1], np.array([[0, 4]]), np.ones((1, 3))), X[2]]
    out = NodeTransformer(StandardScaler()).fit_transform(data)
    assert isinstance(out[0], tuple) and len(out[0]) == 2
    assert out[0][1] is edges
    assert len(out[1]) == 3
    np.testing.assert_array_equal(out[1][2], np.ones((1, 3)))
    assert isinstance(out[2], np.ndarray)
    stacked = np.vstack(X)
    np.testing.assert_allclose(out[1][0], (X[1] - stacked.mean(0)) / stacked.std(0))


def test_dict_vectorizer_on_token_dicts():
    sent1 = [{"word": "the", "len": 3.0}, {"word": "cat", "len": 3.0}]
    sent2 = [{"word": "sat", "len": 3.0, "upper": 1.0}]
    nt = NodeTransformer(DictVectorizer(sparse=True)).fit([sent1, sent2])
    out = nt.transform([sent1, sent2])
    assert sp.issparse(out[0]) and out[0].shape[0] == 2 and out[1].shape[0] == 1
    names = list(nt.get_feature_names_out())
    assert "word=cat" in names and "upper" in names
    col = names.index("word=cat")
    assert out[0].toarray()[1, col] == 1.0 and out[0].toarray()[0, col] == 0.0
    # an unseen word is simply dropped, as with DictVectorizer itself
    unseen = nt.transform([[{"word": "dog", "len": 3.0}]])
    assert unseen[0].toarray()[0, names.index("len")] == 3.0
    assert unseen[0].sum() == 3.0


def test_sparse_input_stays_sparse():
    X = [sp.csr_matrix(x) for x in _examples()]
    out = NodeTransformer(MaxAbsScaler()).fit_transform(X)
    assert all(sp.issparse(x) for x in out)
    dense = np.vstack([x.toarray() for x in X])
    np.testing.assert_allclose(np.vstack([x.toarray() for x in out]), dense / np.abs(dense).max(0))


def test_networkx_graph_copied_with_new_features():
    g = nx.Graph()
    g.add_node("u", x=[1.0, 0.0], y="A")
    g.add_node("v", x=[3.0, 2.0], y="B")
    g.add_node("w", x=[5.0, 4.0], y="A")
    g.add_edge("u", "v", x=[1.0])
    out = NodeTransformer(StandardScaler()).fit_transform([g])
    h = out[0]
    assert h is not g
    assert list(g.nodes["u"]["x"]) == [1.0, 0.0]  # input untouched
    assert set(h.edges) == set(g.edges) and h.edges["u", "v"]["x"] == [1.0]
    assert h.nodes["v"]["y"] == "B"
    np.testing.assert_allclose(h.nodes["u"]["x"], [-np.sqrt(1.5), -np.sqrt(1.5)])


def test_supervised_inner_transformer_gets_flattened_labels():
    rng = np.random.default_rng(0)
    y = [rng.integers(0, 2, size=n) for n in (6, 8)]
    X = [np.column_stack([lab * 5.0 + rng.normal(size=len(lab)), rng.normal(size=len(lab))]) for lab in y]
    out = NodeTransformer(SelectKBest(f_classif, k=1)).fit_transform(X, y)
    np.testing.assert_array_equal(out[0][:, 0], X[0][:, 0])


def test_clone_and_params():
    nt = NodeTransformer(StandardScaler(with_mean=False))
    assert nt.get_params()["transformer__with_mean"] is False
    nt.set_params(transformer__with_mean=True)
    c = clone(nt)
    assert c.transformer is not nt.transformer and c.transformer.with_mean is True
    nt.fit(_examples())
    assert not hasattr(nt.transformer, "mean_")  # the given transformer is not fitted in place


@pytest.mark.parametrize("X, exc, match", [
    (np.zeros((3, 2)), TypeError, "list of examples"),
    ([], ValueError, "empty"),
    (["abc"], TypeError, r"X\[0\]"),
    ([np.zeros(3)], ValueError, "2-D"),
    ([np.zeros((2, 2)), np.zeros((2, 3))], ValueError, "different numbers"),
    ([np.zeros((2, 2)), [{"a": 1.0}]], ValueError, "mixes"),
])
def test_bad_inputs(X, exc, match):
    with pytest.raises(exc, match=match):
        NodeTransformer(StandardScaler()).fit(X)


def test_bad_transformer_and_unfitted():
    with pytest.raises(TypeError, match="fit and transform"):
        NodeTransformer(object()).fit(_examples())
    with pytest.raises(TypeError, match="instance"):
        NodeTransformer(StandardScaler).fit(_examples())
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        NodeTransformer(StandardScaler()).transform(_examples())


def test_y_length_mismatch():
    with pytest.raises(ValueError, match="y"):
        NodeTransformer(StandardScaler()).fit(_examples(), [np.zeros(3)])
