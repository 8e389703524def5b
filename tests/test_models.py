"""Tests of the pairwise potentials / joint feature map."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from crflearn.graphs import grid_edges, make_batch
from crflearn.models import PairwiseModel, hamming_loss_vectors


def _batch(rng, edge_features=False, sparse=False):
    items, labels = [], []
    for n, edges in [(4, None), (4, grid_edges(2, 2)), (3, np.array([[2, 0]]))]:
        x = rng.normal(size=(n, 3))
        if sparse:
            x[x < 0] = 0
            x = sp.csr_matrix(x)
        if edges is None:
            edges = np.array([[0, 1], [1, 2], [2, 3]])
        if edge_features:
            items.append((x, edges, rng.normal(size=(len(edges), 2))))
        else:
            items.append((x, edges))
        labels.append(rng.integers(0, 3, size=n))
    return make_batch(items, labels)[0]


@pytest.mark.parametrize("edge_features", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_score_is_linear_in_joint_feature(edge_features, sparse):
    rng = np.random.default_rng(0)
    batch = _batch(rng, edge_features, sparse)
    model = PairwiseModel(3, 3, 2 if edge_features else None)
    w = rng.normal(size=model.size)
    psi = model.joint_feature(batch)
    assert np.isclose(model.score(w, batch).sum(), w @ psi)


@pytest.mark.parametrize("edge_features", [False, True])
def test_expected_joint_feature_of_one_hot_marginals(edge_features):
    rng = np.random.default_rng(1)
    batch = _batch(rng, edge_features)
    model = PairwiseModel(3, 3, 2 if edge_features else None)
    y = batch.labels
    node = np.eye(3)[y]
    edge = np.einsum("ea,eb->eab", node[batch.edges[:, 0]], node[batch.edges[:, 1]])
    np.testing.assert_allclose(model.expected_joint_feature(batch, node, edge), model.joint_feature(batch))
    if not edge_features:
        np.testing.assert_allclose(model.expected_joint_feature(batch, node, edge.sum(0)),
                                   model.joint_feature(batch))


def test_score_matches_explicit_enumeration_of_potentials():
    rng = np.random.default_rng(2)
    batch = _batch(rng, edge_features=True)
    model = PairwiseModel(3, 3, 2)
    w = rng.normal(size=model.size)
    unary, pairwise = model.potentials(w, batch)
    assert unary.shape == (batch.n_nodes, 3) and pairwise.shape == (batch.n_edges, 3, 3)
    for i in range(batch.n_examples):
        nodes = batch.node_slice(i)
        y = batch.labels[nodes]
        s = unary[nodes][np.arange(len(y)), y].sum()
        for e in range(*batch.edge_offsets[i:i + 2]):
            a, b = batch.edges[e] - batch.node_offsets[i]
            s += pairwise[e, y[a], y[b]]
        assert np.isclose(s, model.score(w, batch)[i])


def test_split_join_roundtrip_and_errors():
    model = PairwiseModel(4, 5)
    w = np.arange(model.size, dtype=float)
    wu, wp = model.split(w)
    assert wu.shape == (4, 5) and wp.shape == (4, 4)
    np.testing.assert_array_equal(model.join(wu, wp), w)
    with pytest.raises(ValueError, match="shape"):
        model.split(np.zeros(3))
    with pytest.raises(ValueError, match="n_states"):
        PairwiseModel(0, 2)


def test_check_batch_mismatch():
    rng = np.random.default_rng(3)
    batch = _batch(rng)
    with pytest.raises(ValueError, match="node features"):
        PairwiseModel(3, 4).check_batch(batch)
    with pytest.raises(ValueError, match="edge features"):
        PairwiseModel(3, 3, 2).check_batch(batch)
    with pytest.raises(ValueError, match="outside 0..1"):
        PairwiseModel(2, 3).check_batch(batch)


def test_hamming_loss_counts_wrong_nodes():
    rng = np.random.default_rng(4)
    batch = _batch(rng)
    loss = hamming_loss_vectors(batch, 3)
    for labels in itertools.islice(itertools.product(range(3), repeat=batch.n_nodes), 0, 50):
        labels = np.array(labels)
        assert loss[np.arange(batch.n_nodes), labels].sum() == np.sum(labels != batch.labels)


def test_check_batch_rejects_corrupt_batches():
    rng = np.random.default_rng(5)
    batch = _batch(rng)
    model = PairwiseModel(3, 3)
    model.check_batch(batch)
    bad_labels = batch.subset(range(batch.n_examples))
    bad_labels.labels = bad_labels.labels.copy()
    bad_labels.labels[0] = -1
    with pytest.raises(ValueError, match="outside 0..2"):
        model.check_batch(bad_labels)
    short = batch.subset(range(batch.n_examples))
    short.labels = short.labels[:-1]
    with pytest.raises(ValueError, match="labels"):
        model.check_batch(short)
    crossing = batch.subset(range(batch.n_examples))
    crossing.edges = crossing.edges.copy()
    crossing.edges[0, 1] = batch.n_nodes - 1  # an edge of example 0 into the last example
    with pytest.raises(ValueError, match="leaves its example"):
        model.check_batch(crossing)


def test_solvers_reject_negative_labels():
    from crflearn.solvers import get_solver

    rng = np.random.default_rng(6)
    batch = _batch(rng)
    batch.labels = batch.labels.copy()
    from crflearn.solvers import get_solver_spec

    for name in ("idal", "bcfw", "subgradient", "cutting_plane", "lbfgs"):
        # -1 marks an unknown node for the solvers that train with partial labels; -2 is never a label
        batch.labels[2] = -2 if get_solver_spec(name).partial_labels else -1
        with pytest.raises(ValueError, match="-1|-2|negative|outside"):
            get_solver(name)(batch, PairwiseModel(3, 3), alpha=1.0, max_iter=1, tol=0.0)
