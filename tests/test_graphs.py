"""Tests of the flat graph representation, builders and input validation."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from crflearn.graphs import GraphBatch, chain_edges, from_networkx, grid_edges, is_forest, make_batch


def test_chain_edges():
    np.testing.assert_array_equal(chain_edges(4), [[0, 1], [1, 2], [2, 3]])
    assert chain_edges(1).shape == (0, 2)
    assert chain_edges(3).dtype == np.int64


@pytest.mark.parametrize("bad", [0, -2])
def test_chain_edges_rejects_nonpositive(bad):
    with pytest.raises(ValueError, match="n_nodes"):
        chain_edges(bad)


def test_chain_edges_rejects_non_integer():
    with pytest.raises(TypeError, match="n_nodes"):
        chain_edges(2.5)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (3, 4), (5, 2)])
def test_grid_edges_matches_networkx(h, w):
    edges = grid_edges(h, w)
    g = nx.grid_2d_graph(h, w)
    expected = {tuple(sorted((r1 * w + c1, r2 * w + c2))) for (r1, c1), (r2, c2) in g.edges}
    assert {tuple(e) for e in edges} == expected
    assert len(edges) == len(expected)
    assert np.all(edges[:, 0] < edges[:, 1])


def test_grid_edges_8_connectivity():
    h, w = 3, 4
    edges = grid_edges(h, w, connectivity=8)
    # 4-connected edges + two diagonals per 2x2 block
    assert len(edges) == h * (w - 1) + (h - 1) * w + 2 * (h - 1) * (w - 1)
    assert len({tuple(e) for e in edges}) == len(edges)
    with pytest.raises(ValueError, match="connectivity"):
        grid_edges(2, 2, connectivity=6)


def test_is_forest():
    assert is_forest(chain_edges(5), 5)
    assert not is_forest(grid_edges(2, 2), 4)
    assert is_forest(np.array([[0, 1], [2, 3]]), 4)  # two components
    assert not is_forest(np.array([[0, 1], [1, 2], [2, 0]]), 3)


def _random_instances(rng, n):
    items, labels = [], []
    for i in range(n):
        length = int(rng.integers(1, 6))
        x = rng.normal(size=(length, 3))
        y = rng.integers(0, 3, size=length)
        if i % 2:
            items.append((x, chain_edges(length)[::-1]))
        else:
            items.append(x)
        labels.append(y)
    return items, labels


def test_make_batch_offsets_and_global_edges():
    rng = np.random.default_rng(0)
    items, labels = _random_instances(rng, 6)
    batch, raw = make_batch(items, labels)
    assert batch.n_examples == 6
    lengths = [len(y) for y in labels]
    np.testing.assert_array_equal(batch.lengths, lengths)
    np.testing.assert_array_equal(batch.labels, np.concatenate(labels))
    for i in range(6):
        local = batch.local_edges(i)
        assert local.min(initial=0) >= 0 and local.max(initial=0) < lengths[i]
        x = items[i][0] if isinstance(items[i], tuple) else items[i]
        np.testing.assert_array_equal(batch.node_features[batch.node_slice(i)], x)
    assert batch.is_forest()
    assert len(raw) == 6


def test_subset_roundtrip():
    rng = np.random.default_rng(1)
    items, labels = _random_instances(rng, 5)
    batch, _ = make_batch(items, labels)
    sub = batch.subset([3, 1])
    np.testing.assert_array_equal(sub.labels, np.concatenate([labels[3], labels[1]]))
    np.testing.assert_array_equal(sub.local_edges(0), batch.local_edges(3))
    np.testing.assert_array_equal(sub.local_edges(1), batch.local_edges(1))


def test_subset_equals_the_loop_over_examples():
    """The vectorised index ranges of ``subset``: any order, repeats, empty examples and no example at all."""
    from crflearn.graphs import concat_ranges

    rng = np.random.default_rng(2)
    items, labels = _random_instances(rng, 7)
    batch, _ = make_batch(items, labels)
    for idx in ([6, 0, 3, 3], [], list(rng.permutation(7)), [2]):
        sub = batch.subset(idx)
        np.testing.assert_array_equal(sub.labels, np.concatenate([labels[i] for i in idx]) if idx else [])
        np.testing.assert_array_equal(sub.node_features, batch.node_features[
            np.concatenate([np.arange(batch.node_offsets[i], batch.node_offsets[i + 1]) for i in idx] or [[]])
            .astype(int)])
        for j, i in enumerate(idx):
            np.testing.assert_array_equal(sub.local_edges(j), batch.local_edges(i))
    starts, sizes = np.array([5, 0, 9]), np.array([2, 0, 3])
    np.testing.assert_array_equal(concat_ranges(starts, sizes), [5, 6, 9, 10, 11])


def test_intercept_design_dense_and_sparse():
    from crflearn.models import PairwiseModel

    x = np.arange(6.0).reshape(3, 2)
    dense, _ = make_batch([x], [np.array([0, 1, 0])])
    sparse, _ = make_batch([sp.csr_matrix(x)], [np.array([0, 1, 0])])
    model = PairwiseModel(2, 2, fit_intercept=True)
    np.testing.assert_array_equal(model.design(dense)[:, -1], 1.0)
    assert sp.issparse(model.design(sparse))
    np.testing.assert_array_equal(model.design(sparse).toarray(), model.design(dense))


def test_degrees():
    batch, _ = make_batch([(np.ones((4, 1)), grid_edges(2, 2))])
    np.testing.assert_array_equal(batch.degrees(), [2, 2, 2, 2])


def test_from_networkx_any_node_names_and_order():
    g = nx.Graph()
    g.add_node("b", x=[1.0, 0.0], y="NOUN")
    g.add_node(("t", 2), x=[0.0, 1.0], y="VERB")
    g.add_node(7, x=[1.0, 1.0], y="NOUN")
    g.add_edge("b", 7, x=[0.5])
    g.add_edge(7, ("t", 2), x=[1.5])
    feats, edges, efeats, labels, nodes = from_networkx(g)
    assert nodes == ["b", ("t", 2), 7]
    np.testing.assert_array_equal(feats, [[1, 0], [0, 1], [1, 1]])
    assert {tuple(sorted(map(int, e))) for e in edges} == {(0, 2), (1, 2)}
    assert efeats.shape == (2, 1)
    assert labels == ["NOUN", "VERB", "NOUN"]


def test_from_networkx_errors():
    g = nx.Graph()
    g.add_node(0)
    with pytest.raises(ValueError, match="feature attribute"):
        from_networkx(g)
    with pytest.raises(ValueError, match="undirected"):
        from_networkx(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match="no nodes"):
        from_networkx(nx.Graph())


def test_make_batch_networkx_disconnected_different_sizes():
    graphs = []
    for n in (3, 5):
        g = nx.Graph()
        for v in range(n):
            g.add_node(f"n{v}", x=[float(v), 1.0], y=v % 2)
        g.add_edge("n0", "n1")  # the rest are isolated nodes
        graphs.append(g)
    batch, raw = make_batch(graphs)
    assert batch.n_nodes == 8 and batch.n_edges == 2
    np.testing.assert_array_equal(batch.labels, [0, 1, 0, 0, 1, 0, 1, 0])
    assert batch.node_names[1][0] == "n0"


@pytest.mark.parametrize(
    "X, y, exc, match",
    [
        ([], None, ValueError, "empty"),
        (np.zeros((3, 2)), None, TypeError, "list of examples"),
        ([np.zeros((0, 2))], None, ValueError, "empty"),
        ([np.array([[1.0, np.nan]])], None, ValueError, "NaN"),
        ([np.array([[1.0, np.inf]])], None, ValueError, "NaN or infinite"),
        ([np.zeros(3)], None, ValueError, "2-D"),
        ([np.array([["a", "b"]])], None, TypeError, "numeric"),
        ([(np.zeros((3, 1)), [[0, 0]])], None, ValueError, "self-loop"),
        ([(np.zeros((3, 1)), [[0, 5]])], None, ValueError, "outside"),
        ([(np.zeros((3, 1)), [[0, 1], [1, 0]])], None, ValueError, "more than once"),
        ([(np.zeros((3, 1)), [[0, 1, 2]])], None, ValueError, r"\(n_edges, 2\)"),
        ([np.zeros((3, 1))], [np.zeros(2, int)], ValueError, "2 labels but X\\[0\\] has 3 nodes"),
        ([np.zeros((3, 1))], [np.zeros(3, int), np.zeros(3, int)], ValueError, "1 examples but y has 2"),
        ([np.zeros((3, 1)), np.zeros((3, 2))], None, ValueError, "expected 1"),
        ([(np.zeros((3, 1)), chain_edges(3), np.ones((2, 2))), np.zeros((3, 1))], None, ValueError,
         "some examples have edge features"),
        (["abc"], None, TypeError, "unsupported type"),
    ],
)
def test_make_batch_bad_input(X, y, exc, match):
    with pytest.raises(exc, match=match):
        make_batch(X, y)


def test_make_batch_rejects_negative_labels():
    with pytest.raises(ValueError, match="negative label"):
        make_batch([np.zeros((2, 1))], [np.array([0, -1])])


def test_make_batch_expected_feature_counts():
    with pytest.raises(ValueError, match="expected 4"):
        make_batch([np.zeros((2, 3))], n_features=4)
    with pytest.raises(ValueError, match="edge features"):
        make_batch([np.zeros((2, 3))], n_edge_features=2)


def test_graphbatch_is_plain_data():
    batch, _ = make_batch([np.ones((2, 2))], [np.array([0, 1])])
    assert isinstance(batch, GraphBatch)
    assert batch.n_features == 2 and batch.n_edge_features is None and not batch.is_sparse
