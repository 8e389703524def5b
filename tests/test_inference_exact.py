"""Exact inference on forests and loss-augmented decoding, against brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crflearn.graphs import chain_edges
from crflearn.inference import (
    decode,
    decode_batch,
    infer,
    infer_batch,
    labeling_score,
    loss_augmented_decode,
    loss_augmented_decode_batch,
    make_schedule,
    map_inference,
    map_inference_batch,
)

SETTINGS = dict(max_examples=25, deadline=None)


@st.composite
def forests(draw, max_nodes=7, max_states=3, allow_neg_inf=True):
    """A random forest (random parent pointers, some roots), potentials, and edge orientation."""
    n = draw(st.integers(1, max_nodes))
    k = draw(st.integers(1, max_states))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    edges = []
    for v in range(1, n):
        if rng.random() < 0.85:  # else v starts a new tree
            p = int(rng.integers(0, v))
            edges.append((v, p) if rng.random() < 0.5 else (p, v))
    perm = rng.permutation(n)  # relabel nodes so BFS order differs from index order
    edges = np.array([(perm[s], perm[t]) for s, t in edges], dtype=np.int64).reshape(-1, 2)
    edges = edges[rng.permutation(len(edges))]
    unary = rng.normal(scale=1.5, size=(n, k))
    per_edge = draw(st.booleans())
    pairwise = rng.normal(scale=1.5, size=(len(edges), k, k) if per_edge else (k, k))
    if allow_neg_inf and draw(st.booleans()) and k > 1:
        # forbid some pairs and states; draws where everything is forbidden test the error path
        mask = rng.random(pairwise.shape) < 0.25
        pairwise = np.where(mask, -np.inf, pairwise)
        umask = rng.random(unary.shape) < 0.15
        unary = np.where(umask, -np.inf, unary)
    return unary, pairwise, edges


def _any_finite(unary, pairwise, edges):
    try:
        infer(unary, pairwise, edges, method="bruteforce")
        return True
    except ValueError:
        return False


@settings(**SETTINGS)
@given(forests())
def test_forest_marginals_match_bruteforce(problem):
    unary, pairwise, edges = problem
    if not _any_finite(unary, pairwise, edges):
        with pytest.raises(ValueError, match="-inf"):
            infer(unary, pairwise, edges)
        return
    ref = infer(unary, pairwise, edges, method="bruteforce")
    res = infer(unary, pairwise, edges)
    assert res.exact and res.method == "exact"
    np.testing.assert_allclose(res.log_partition, ref.log_partition, atol=1e-8, rtol=0)
    np.testing.assert_allclose(res.node_marginals, ref.node_marginals, atol=1e-8, rtol=0)
    np.testing.assert_allclose(res.edge_marginals, ref.edge_marginals, atol=1e-8, rtol=0)


@settings(**SETTINGS)
@given(forests())
def test_forest_map_matches_bruteforce(problem):
    unary, pairwise, edges = problem
    ref = map_inference(unary, pairwise, edges, method="bruteforce")
    if not np.isfinite(ref.score):  # -inf entries forbid every labelling: MAP scores -inf, decode raises
        assert map_inference(unary, pairwise, edges).score == -np.inf
        with pytest.raises(ValueError, match="every labelling"):
            decode(unary, pairwise, edges)
        return
    res = map_inference(unary, pairwise, edges)
    assert res.exact and res.bound == res.score
    np.testing.assert_allclose(res.score, ref.score, atol=1e-8, rtol=0)
    np.testing.assert_allclose(labeling_score(unary, pairwise, edges, res.labels), ref.score, atol=1e-8, rtol=0)
    assert np.array_equal(decode(unary, pairwise, edges), res.labels)


@settings(**SETTINGS)
@given(forests(allow_neg_inf=False), st.floats(0.0, 3.0))
def test_loss_augmented_decode_matches_bruteforce(problem, loss_weight):
    unary, pairwise, edges = problem
    n, k = unary.shape
    rng = np.random.default_rng(n * 31 + k)
    y = rng.integers(0, k, size=n)
    labels = loss_augmented_decode(unary, pairwise, edges, y, loss_weight=loss_weight)
    # brute force over score + loss_weight * Hamming
    best = -np.inf
    grids = np.stack(np.meshgrid(*[np.arange(k)] * n, indexing="ij"), -1).reshape(-1, n)
    for lab in grids:
        best = max(best, labeling_score(unary, pairwise, edges, lab) + loss_weight * np.sum(lab != y))
    got = labeling_score(unary, pairwise, edges, labels) + loss_weight * np.sum(labels != y)
    np.testing.assert_allclose(got, best, atol=1e-8, rtol=0)


def _random_batch(rng, n_examples, k, per_edge, loopy_every=0):
    """A flat batch of random chains/trees (and 3-cycles every ``loopy_every`` examples)."""
    unaries, edge_list, node_off, edge_off = [], [], [0], [0]
    for i in range(n_examples):
        n = int(rng.integers(1, 6))
        if loopy_every and i % loopy_every == 0:
            n = 3
            e = np.array([[0, 1], [1, 2], [0, 2]])
        else:
            e = np.array([(v, int(rng.integers(0, v))) for v in range(1, n)], dtype=np.int64).reshape(-1, 2)
        unaries.append(rng.normal(size=(n, k)))
        edge_list.append(e + node_off[-1])
        node_off.append(node_off[-1] + n)
        edge_off.append(edge_off[-1] + len(e))
    edges = np.concatenate(edge_list).astype(np.int64).reshape(-1, 2)
    unary = np.concatenate(unaries)
    pairwise = rng.normal(size=(len(edges), k, k) if per_edge else (k, k))
    return unary, pairwise, edges, np.array(node_off), np.array(edge_off)


@pytest.mark.parametrize("per_edge", [False, True])
def test_batch_equals_per_example_calls(per_edge):
    rng = np.random.default_rng(3)
    k = 3
    unary, pairwise, edges, no, eo = _random_batch(rng, 12, k, per_edge)
    sched = make_schedule(edges, no, eo)
    assert sched.all_forests
    full = infer_batch(unary, pairwise, edges, no, eo, schedule=sched)
    summed = infer_batch(unary, pairwise, edges, no, eo, edge_marginals="sum", schedule=sched)
    none = infer_batch(unary, pairwise, edges, no, eo, edge_marginals="none")
    labels = decode_batch(unary, pairwise, edges, no, eo, schedule=sched)
    y = rng.integers(0, k, size=len(unary))
    aug = loss_augmented_decode_batch(unary, pairwise, edges, no, eo, y, loss_weight=0.7, schedule=sched)
    assert full.exact and none.edge_marginals is None
    np.testing.assert_allclose(summed.edge_marginals, full.edge_marginals.sum(axis=0), atol=1e-10)
    np.testing.assert_allclose(none.node_marginals, full.node_marginals, atol=1e-12)
    for i in range(len(no) - 1):
        ns, es = slice(no[i], no[i + 1]), slice(eo[i], eo[i + 1])
        local = edges[es] - no[i]
        pw = pairwise[es] if per_edge else pairwise
        one = infer(unary[ns], pw, local)
        np.testing.assert_allclose(full.node_marginals[ns], one.node_marginals, atol=1e-12)
        np.testing.assert_allclose(full.edge_marginals[es], one.edge_marginals, atol=1e-12)
        np.testing.assert_allclose(full.log_partition[i], one.log_partition, atol=1e-12)
        np.testing.assert_array_equal(labels[ns], decode(unary[ns], pw, local))
        np.testing.assert_array_equal(aug[ns], loss_augmented_decode(unary[ns], pw, local, y[ns], 0.7))


def test_mixed_batch_uses_exact_on_forests_only():
    rng = np.random.default_rng(4)
    unary, pairwise, edges, no, eo = _random_batch(rng, 9, 2, per_edge=False, loopy_every=3)
    res = infer_batch(unary, pairwise, edges, no, eo, tol=1e-12, max_iter=2000)
    assert not res.exact and res.method == "exact+trw"
    np.testing.assert_array_equal(res.exact_examples, np.arange(9) % 3 != 0)
    ref = infer_batch(unary, pairwise, edges, no, eo, method="bruteforce")
    forest_nodes = np.repeat(res.exact_examples, np.diff(no))
    np.testing.assert_allclose(res.node_marginals[forest_nodes], ref.node_marginals[forest_nodes], atol=1e-8)
    np.testing.assert_allclose(res.log_partition[res.exact_examples], ref.log_partition[res.exact_examples],
                               atol=1e-8)
    # TRW gives an upper bound on the loopy ones
    assert np.all(res.log_partition[~res.exact_examples] >= ref.log_partition[~res.exact_examples] - 1e-9)
    out = map_inference_batch(unary, pairwise, edges, no, eo)
    ref_map = map_inference_batch(unary, pairwise, edges, no, eo, method="bruteforce")
    assert np.all(out.scores <= ref_map.scores + 1e-9)
    assert np.all(out.bounds >= ref_map.scores - 1e-9)
    np.testing.assert_allclose(out.scores[out.exact_examples], ref_map.scores[out.exact_examples], atol=1e-9)


def test_extreme_potentials_stay_finite_and_exact():
    # very spread potentials exercise the exact log-sum-exp fallback of the fast kernels
    rng = np.random.default_rng(5)
    n, k = 6, 3
    unary = rng.normal(scale=400.0, size=(n, k))
    pairwise = rng.normal(scale=400.0, size=(n - 1, k, k))
    edges = chain_edges(n)
    res = infer(unary, pairwise, edges)
    ref = infer(unary, pairwise, edges, method="bruteforce")
    np.testing.assert_allclose(res.log_partition, ref.log_partition, rtol=1e-12)
    np.testing.assert_allclose(res.node_marginals, ref.node_marginals, atol=1e-10)
    np.testing.assert_allclose(res.edge_marginals, ref.edge_marginals, atol=1e-10)


def test_chain_with_long_forbidden_pattern():
    # only the all-zeros labelling and the alternating one are allowed: marginals are exact 0/0.5/1
    n, k = 7, 2
    unary = np.zeros((n, k))
    pairwise = np.array([[0.0, 0.0], [0.0, -np.inf]])  # no two adjacent ones
    res = infer(unary, pairwise, chain_edges(n))
    ref = infer(unary, pairwise, chain_edges(n), method="bruteforce")
    np.testing.assert_allclose(res.node_marginals, ref.node_marginals, atol=1e-12)
    assert np.all(res.edge_marginals[:, 1, 1] == 0.0)
    assert decode(unary - np.array([0.0, 0.1]), pairwise, chain_edges(n)).sum() == 0


def test_isolated_nodes_and_empty_edges():
    unary = np.array([[0.0, 1.0], [2.0, 0.0]])
    res = infer(unary, np.zeros((2, 2)), np.zeros((0, 2), dtype=np.int64))
    expected = np.exp(unary - np.log(np.exp(unary).sum(1, keepdims=True)))
    np.testing.assert_allclose(res.node_marginals, expected)
    np.testing.assert_allclose(res.log_partition, np.log(np.exp(unary).sum(1)).sum())
    assert res.edge_marginals.shape == (0, 2, 2)
    np.testing.assert_array_equal(decode(unary, np.zeros((2, 2)), []), [1, 0])


def test_schedule_from_graph_batch():
    from crflearn.graphs import make_batch

    rng = np.random.default_rng(7)
    X = [rng.normal(size=(n, 2)) for n in (3, 1, 4)]
    batch, _ = make_batch(X)
    sched = make_schedule(batch)
    assert sched.n_examples == 3 and sched.all_forests
    np.testing.assert_array_equal(sched.n_components, [1, 1, 1])
    unary = rng.normal(size=(batch.n_nodes, 2))
    res = infer_batch(unary, np.eye(2), batch.edges, batch.node_offsets, batch.edge_offsets, schedule=sched)
    ref = infer_batch(unary, np.eye(2), batch.edges, batch.node_offsets, batch.edge_offsets, method="bruteforce")
    np.testing.assert_allclose(res.log_partition, ref.log_partition, atol=1e-10)
