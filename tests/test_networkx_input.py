"""networkx graphs as CRF input: node names, labels from "y", mixed sizes, disconnected graphs."""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pytest

from crflearn import CRF, NodeTransformer

from conftest import make_chains

FAST = dict(alpha=0.1, max_iter=30, tol=1e-3, random_state=0)
NAMES = np.array(["bg", "fg", "edge"])


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _as_graph(x, labels, names=None, shuffle_seed=None):
    """A path graph with arbitrary node names, optionally inserted in a shuffled order."""
    n = len(x)
    names = names or [f"n{i}" for i in range(n)]
    order = np.arange(n)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(n)
    g = nx.Graph()
    for i in order:
        g.add_node(names[i], x=x[i], y=NAMES[labels[i]])
    for i in range(n - 1):
        g.add_edge(names[i], names[i + 1])
    return g


def _tuples(X):
    return [(x, np.column_stack([np.arange(len(x) - 1), np.arange(1, len(x))])) for x in X]


def test_graphs_with_labels_from_y_attribute_match_array_input():
    X, y = make_chains()
    graphs = [_as_graph(x, lab, shuffle_seed=i) for i, (x, lab) in enumerate(zip(X, y))]
    from_graphs = CRF(**FAST).fit(graphs)  # labels read from the "y" attributes
    from_arrays = CRF(**FAST).fit(_tuples(X), [NAMES[lab] for lab in y])
    np.testing.assert_array_equal(from_graphs.classes_, np.sort(NAMES))
    for g, pred_g, pred_a in zip(graphs, from_graphs.predict(graphs), from_arrays.predict(_tuples(X))):
        # predictions follow list(g.nodes); map them back to the path order by name
        by_name = dict(zip(g.nodes, pred_g))
        np.testing.assert_array_equal([by_name[f"n{i}"] for i in range(len(pred_a))], pred_a)
    assert from_graphs.score(graphs, [[g.nodes[v]["y"] for v in g.nodes] for g in graphs]) > 0.9


def test_mixed_node_name_types_sizes_and_disconnected_graphs():
    X, y = make_chains(n_sequences=6, length=(3, 8), seed=3)
    graphs = []
    for i, (x, lab) in enumerate(zip(X, y)):
        names = [(i, j) for j in range(len(x))] if i % 2 else [f"tok{j}" for j in range(len(x))]
        g = _as_graph(x, lab, names=names)
        if len(x) >= 4:  # cut one edge in the middle: two components
            g.remove_edge(names[1], names[2])
        graphs.append(g)
    g_iso = nx.Graph()
    g_iso.add_node("alone", x=X[0][0], y=NAMES[y[0][0]])  # a single node, no edges
    graphs.append(g_iso)
    crf = CRF(**FAST).fit(graphs)
    preds = crf.predict(graphs)
    assert [len(p) for p in preds] == [g.number_of_nodes() for g in graphs]
    margs = crf.predict_marginals(graphs)
    for m in margs:
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-8)
    # a disconnected graph factorises: its marginals equal those of its components taken alone
    g = graphs[0]
    comps = []
    for c in nx.connected_components(g):
        # keep g's node order: edge orientation (hence the asymmetric pairwise) follows node order
        comp = nx.Graph()
        comp.add_nodes_from((v, g.nodes[v]) for v in g.nodes if v in c)
        comp.add_edges_from(e for e in g.edges if e[0] in c)
        comps.append(comp)
    assert len(comps) == 2
    full = dict(zip(g.nodes, margs[0]))
    for comp, m in zip(comps, crf.predict_marginals(comps)):
        for node, row in zip(comp.nodes, m):
            np.testing.assert_allclose(row, full[node], atol=1e-9)


def test_explicit_y_overrides_graph_labels_and_graph_without_labels_needs_y():
    X, y = make_chains(n_sequences=4, seed=2)
    graphs = [_as_graph(x, lab) for x, lab in zip(X, y)]
    crf = CRF(**FAST).fit(graphs, y)  # integer y given explicitly
    assert crf.classes_.dtype.kind == "i"
    bare = nx.path_graph(3)
    for v in bare.nodes:
        bare.nodes[v]["x"] = X[0][v]
    assert len(crf.predict([bare])[0]) == 3  # no labels needed to predict
    with pytest.raises(ValueError, match="y"):
        CRF(**FAST).fit([bare])


def test_loopy_graph_and_edge_attributes():
    rng = np.random.default_rng(0)
    graphs, labels = [], []
    for s in range(4):
        g = nx.grid_2d_graph(3, 3)  # loopy, tuple node names
        lab = rng.integers(0, 2, size=9)
        for (node, k) in zip(g.nodes, lab):
            g.nodes[node]["x"] = np.array([2.0 * k - 1.0 + 0.3 * rng.normal(), 1.0])
        for e in g.edges:
            g.edges[e]["x"] = np.array([1.0])
        graphs.append(g)
        labels.append(lab)
    crf = CRF(**FAST).fit(graphs, labels)
    assert crf.n_edge_features_in_ == 1
    assert crf.score(graphs, labels) > 0.85
    for m in crf.predict_marginals(graphs):
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)


def test_node_transformer_on_graphs_in_a_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = make_chains(seed=4)
    graphs = [_as_graph(100.0 + 30.0 * x, lab) for x, lab in zip(X, y)]
    pipe = make_pipeline(NodeTransformer(StandardScaler()), CRF(**FAST)).fit(graphs)
    assert pipe.score(graphs, [[g.nodes[v]["y"] for v in g.nodes] for g in graphs]) > 0.9
    assert abs(graphs[0].nodes["n0"]["x"][0]) > 10  # inputs untouched


@pytest.mark.parametrize("graph_fn, match", [
    (lambda: nx.DiGraph([(0, 1)]), "undirected"),
    (lambda: nx.path_graph(2), "feature attribute"),
])
def test_bad_graphs(graph_fn, match):
    g = graph_fn()
    with pytest.raises(ValueError, match=match):
        CRF(**FAST).fit([g], [np.array([0, 1])])
