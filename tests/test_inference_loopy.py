"""Approximate inference on loopy graphs: validity, bounds, and agreement where it must be exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crflearn.graphs import chain_edges, grid_edges
from crflearn.inference import (
    edge_appearance_probabilities,
    infer,
    labeling_score,
    make_schedule,
    map_inference,
)

SETTINGS = dict(max_examples=15, deadline=None, derandomize=True)  # the same examples on every CI run
TIGHT = dict(max_iter=3000, tol=1e-12)


def _cycle(n):
    return np.array([(i, (i + 1) % n) for i in range(n)], dtype=np.int64)


@st.composite
def loopy_problems(draw):
    kind = draw(st.sampled_from(["cycle", "grid", "grid_diag"]))
    if kind == "cycle":
        edges = _cycle(draw(st.integers(3, 7)))
    elif kind == "grid":
        edges = grid_edges(3, 3)
    else:
        edges = grid_edges(2, 3, connectivity=8)
    n = int(edges.max()) + 1
    k = draw(st.integers(2, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.5, 1.5]))
    unary = rng.normal(size=(n, k))
    per_edge = draw(st.booleans())
    pairwise = rng.normal(scale=scale, size=(len(edges), k, k) if per_edge else (k, k))
    return unary, pairwise, edges


@settings(**SETTINGS)
@given(loopy_problems())
def test_approximate_map_never_beats_optimum_and_bound_is_valid(problem):
    unary, pairwise, edges = problem
    ref = map_inference(unary, pairwise, edges, method="bruteforce")
    for method in ("auto", "trws", "maxproduct"):
        res = map_inference(unary, pairwise, edges, method=method)
        assert not res.exact
        assert res.method == ("trws" if method == "auto" else method)
        np.testing.assert_allclose(labeling_score(unary, pairwise, edges, res.labels), res.score, atol=1e-10)
        assert res.score <= ref.score + 1e-9
        assert res.bound is not None and res.bound >= ref.score - 1e-9


def test_trws_finds_optimum_on_easy_grid():
    # attractive (Potts) grid with strong unaries: the LP relaxation is tight, TRW-S certifies it
    rng = np.random.default_rng(0)
    edges = grid_edges(3, 3)
    unary = rng.normal(size=(9, 3))
    pairwise = 0.5 * np.eye(3)
    res = map_inference(unary, pairwise, edges, method="trws")
    ref = map_inference(unary, pairwise, edges, method="bruteforce")
    np.testing.assert_allclose(res.score, ref.score, atol=1e-10)
    np.testing.assert_allclose(res.bound, ref.score, atol=1e-8)


@settings(**SETTINGS)
@given(loopy_problems(), st.sampled_from(["trw", "bp"]))
def test_loopy_marginals_are_valid_and_consistent(problem, method):
    unary, pairwise, edges = problem
    res = infer(unary, pairwise, edges, method=method, **TIGHT)
    assert not res.exact and res.method == method
    if not res.converged:  # loopy BP may oscillate; validity still must hold
        assert method == "bp"
    node, edge = res.node_marginals, res.edge_marginals
    assert np.all(node >= 0) and np.all(edge >= 0)
    np.testing.assert_allclose(node.sum(axis=1), 1.0, atol=1e-10)
    np.testing.assert_allclose(edge.sum(axis=(1, 2)), 1.0, atol=1e-10)
    if res.converged:
        np.testing.assert_allclose(edge.sum(axis=2), node[edges[:, 0]], atol=1e-6)
        np.testing.assert_allclose(edge.sum(axis=1), node[edges[:, 1]], atol=1e-6)


@settings(**SETTINGS)
@given(loopy_problems())
def test_trw_log_partition_is_an_upper_bound(problem):
    unary, pairwise, edges = problem
    res = infer(unary, pairwise, edges, method="trw", **TIGHT)
    ref = infer(unary, pairwise, edges, method="bruteforce")
    assert res.converged
    assert res.log_partition >= ref.log_partition - 1e-8
    # auto on a loopy graph is TRW
    auto = infer(unary, pairwise, edges, **TIGHT)
    assert auto.method == "trw"
    np.testing.assert_allclose(auto.log_partition, res.log_partition, atol=1e-10)


@pytest.mark.parametrize("method", ["trw", "bp"])
def test_loopy_sum_product_is_exact_on_trees(method):
    rng = np.random.default_rng(1)
    edges = np.array([[0, 1], [1, 2], [1, 3], [4, 3], [5, 0]])
    unary = rng.normal(size=(6, 3))
    pairwise = rng.normal(size=(5, 3, 3))
    res = infer(unary, pairwise, edges, method=method, **TIGHT)
    ref = infer(unary, pairwise, edges, method="bruteforce")
    assert res.converged
    np.testing.assert_allclose(res.node_marginals, ref.node_marginals, atol=1e-9)
    np.testing.assert_allclose(res.edge_marginals, ref.edge_marginals, atol=1e-9)
    np.testing.assert_allclose(res.log_partition, ref.log_partition, atol=1e-9)


@pytest.mark.parametrize("method", ["trws", "maxproduct"])
def test_loopy_max_product_is_exact_on_chains(method):
    rng = np.random.default_rng(2)
    unary = rng.normal(size=(7, 3))
    pairwise = rng.normal(size=(3, 3))
    res = map_inference(unary, pairwise, chain_edges(7), method=method)
    ref = map_inference(unary, pairwise, chain_edges(7), method="bruteforce")
    np.testing.assert_allclose(res.score, ref.score, atol=1e-10)
    np.testing.assert_allclose(res.bound, ref.score, atol=1e-8)


def test_exact_refuses_cycles():
    with pytest.raises(ValueError, match="cycle"):
        infer(np.zeros((3, 2)), np.zeros((2, 2)), _cycle(3), method="exact")
    with pytest.raises(ValueError, match="cycle"):
        map_inference(np.zeros((3, 2)), np.zeros((2, 2)), _cycle(3), method="exact")


def test_edge_appearance_probabilities():
    # cycle of n: every spanning tree drops one edge -> rho = (n - 1) / n
    np.testing.assert_allclose(edge_appearance_probabilities(_cycle(5), 5), 0.8)
    # a pendant edge (bridge) on a triangle belongs to every spanning tree
    edges = np.array([[0, 1], [1, 2], [0, 2], [2, 3]])
    np.testing.assert_allclose(edge_appearance_probabilities(edges, 4), [2 / 3, 2 / 3, 2 / 3, 1.0])
    # sum over a connected component = n - 1 (spanning trees have n - 1 edges)
    rho = edge_appearance_probabilities(grid_edges(3, 4), 12)
    np.testing.assert_allclose(rho.sum(), 11.0)
    assert np.all((rho > 0) & (rho <= 1))
    sched = make_schedule(grid_edges(3, 4), n_nodes=12)
    assert not sched.all_forests
    np.testing.assert_allclose(sched.edge_appearance(), rho)


def test_loopy_with_forbidden_pairs_gives_feasible_labels():
    # a 3x3 grid where neighbours must differ (graph colouring with 3 colours)
    edges = grid_edges(3, 3)
    rng = np.random.default_rng(3)
    unary = rng.normal(scale=0.1, size=(9, 3))
    pairwise = np.where(np.eye(3, dtype=bool), -np.inf, 0.0)
    res = map_inference(unary, pairwise, edges)
    ref = map_inference(unary, pairwise, edges, method="bruteforce")
    assert np.isfinite(res.score) and res.score <= ref.score + 1e-12
    assert res.bound is None  # no bound claimed with -inf potentials
    marg = infer(unary, pairwise, edges, method="bp")
    assert np.all(np.isfinite(marg.node_marginals))
    np.testing.assert_allclose(marg.node_marginals.sum(1), 1.0, atol=1e-10)


def test_loopy_batch_edge_sum_matches_full():
    rng = np.random.default_rng(4)
    grid = grid_edges(2, 3)
    edges = np.concatenate([grid, grid + 6, chain_edges(4) + 12])
    no = np.array([0, 6, 12, 16])
    eo = np.array([0, len(grid), 2 * len(grid), 2 * len(grid) + 3])
    unary = rng.normal(size=(16, 3))
    pairwise = rng.normal(size=(len(edges), 3, 3))
    from crflearn.inference import infer_batch
    full = infer_batch(unary, pairwise, edges, no, eo, **TIGHT)
    summed = infer_batch(unary, pairwise, edges, no, eo, edge_marginals="sum", **TIGHT)
    assert full.method == "exact+trw"
    np.testing.assert_array_equal(full.exact_examples, [False, False, True])
    np.testing.assert_allclose(summed.edge_marginals, full.edge_marginals.sum(axis=0), atol=1e-10)
    np.testing.assert_allclose(summed.log_partition, full.log_partition, atol=1e-10)
    # the two identical-structure grids with different potentials are solved independently
    for i in range(2):
        ns, es = slice(no[i], no[i + 1]), slice(eo[i], eo[i + 1])
        one = infer(unary[ns], pairwise[es], edges[es] - no[i], method="trw", **TIGHT)
        np.testing.assert_allclose(full.node_marginals[ns], one.node_marginals, atol=1e-10)
        np.testing.assert_allclose(full.log_partition[i], one.log_partition, atol=1e-10)


def test_uncached_loopy_messages_agree(monkeypatch):
    # the direct K^2-exponential path (used for huge examples) gives the same fixed point
    import crflearn.inference.api as api

    rng = np.random.default_rng(6)
    edges = grid_edges(3, 3)
    unary = rng.normal(size=(9, 3))
    pairwise = rng.normal(size=(len(edges), 3, 3))
    cached = infer(unary, pairwise, edges, method="trw", **TIGHT)
    monkeypatch.setattr(api, "_LOOPY_CACHE_LIMIT", 0)
    direct = infer(unary, pairwise, edges, method="trw", **TIGHT)
    np.testing.assert_allclose(direct.node_marginals, cached.node_marginals, atol=1e-10)
    np.testing.assert_allclose(direct.log_partition, cached.log_partition, atol=1e-10)
