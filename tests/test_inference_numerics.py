"""Numerics of the inference kernels: normalisation at huge scores, -inf and overflow handling,
validation done once (schedule reuse, ``check_input=False``)."""

from __future__ import annotations

import numpy as np
import pytest

import crflearn.inference.api as api
import crflearn.inference.schedule as schedule_module
from crflearn.exceptions import LoopyGraphError
from crflearn.graphs import chain_edges, grid_edges
from crflearn.inference import (
    decode,
    decode_batch,
    infer,
    infer_batch,
    loss_augmented_decode,
    make_schedule,
    map_inference,
    map_inference_batch,
)


def _forest_batch(rng, k):
    """Chains and a star (one isolated node too), global indices."""
    parts = [chain_edges(1), chain_edges(5), np.array([[0, 1], [0, 2], [3, 0], [2, 4]]), chain_edges(3)]
    sizes = [1, 5, 5, 3]
    no = np.concatenate([[0], np.cumsum(sizes)])
    eo = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    edges = np.concatenate([p + o for p, o in zip(parts, no[:-1])]).astype(np.int64).reshape(-1, 2)
    return edges, no, eo


def _huge(rng, shape, scale, kind):
    """Scores of magnitude ``scale``: an offset with O(1) differences (near-ties, the hard case for
    ``exp(b - logsumexp(b))``) or integer multiples of ``scale`` (exact ties and far-apart states)."""
    if kind == "offset":
        return scale + rng.normal(size=shape)
    return rng.integers(-2, 3, size=shape) * scale


@pytest.mark.parametrize("scale", [1e14, 1e16, 1e300])
@pytest.mark.parametrize("kind", ["offset", "multiples"])
def test_forest_marginals_normalised_at_huge_scores(scale, kind):
    rng = np.random.default_rng(0)
    k = 3
    edges, no, eo = _forest_batch(rng, k)
    unary = _huge(rng, (no[-1], k), scale, kind)
    for pairwise in (_huge(rng, (k, k), scale, kind), _huge(rng, (len(edges), k, k), scale, kind)):
        full = infer_batch(unary, pairwise, edges, no, eo)
        none = infer_batch(unary, pairwise, edges, no, eo, edge_marginals="none")
        summed = infer_batch(unary, pairwise, edges, no, eo, edge_marginals="sum")
        assert full.exact and np.all(np.isfinite(full.log_partition))
        for node in (full.node_marginals, none.node_marginals):
            assert np.all(node >= 0)
            np.testing.assert_allclose(node.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(full.edge_marginals.sum(axis=(1, 2)), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(summed.edge_marginals.sum(), len(edges), rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [1e14, 1e16, 1e300])
@pytest.mark.parametrize("method", ["trw", "bp"])
def test_loopy_marginals_normalised_at_huge_scores(scale, method):
    rng = np.random.default_rng(1)
    edges = grid_edges(2, 3)
    k = 3
    for kind in ("offset", "multiples"):
        unary = _huge(rng, (6, k), scale, kind)
        pairwise = _huge(rng, (len(edges), k, k), scale, kind)
        res = infer(unary, pairwise, edges, method=method, max_iter=30)
        np.testing.assert_allclose(res.node_marginals.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.edge_marginals.sum(axis=(1, 2)), 1.0, rtol=0, atol=1e-12)


def test_huge_offsets_keep_forest_map_and_marginals_sane():
    # a per-node offset changes neither the MAP labelling nor (beyond input rounding) the marginals
    rng = np.random.default_rng(2)
    edges = chain_edges(6)
    base = rng.normal(size=(6, 3))
    pairwise = rng.normal(size=(3, 3))
    shifted = base + 1e10
    np.testing.assert_array_equal(decode(shifted, pairwise, edges), decode(base, pairwise, edges))
    np.testing.assert_allclose(infer(shifted, pairwise, edges).node_marginals,
                               infer(base, pairwise, edges).node_marginals, atol=1e-5)


def test_overflowing_scores_raise_a_clear_error():
    unary = np.full((4, 2), 1e308)
    unary[:, 1] = 0.0
    with pytest.raises(ValueError, match="overflows float64"):
        infer(unary, np.zeros((2, 2)), chain_edges(4))
    with pytest.raises(ValueError, match="overflows float64"):
        map_inference(unary, np.zeros((2, 2)), chain_edges(4))


@pytest.mark.parametrize("edges", [chain_edges(4), np.array([[0, 1], [0, 2], [0, 3]])])
def test_decode_raises_like_infer_when_a_node_is_all_forbidden(edges):
    rng = np.random.default_rng(3)
    unary = rng.normal(size=(4, 3))
    unary[2] = -np.inf
    pairwise = rng.normal(size=(3, 3))
    with pytest.raises(ValueError) as from_infer:
        infer(unary, pairwise, edges)
    with pytest.raises(ValueError) as from_decode:
        decode(unary, pairwise, edges)
    assert str(from_decode.value) == str(from_infer.value)
    with pytest.raises(ValueError, match="-inf"):
        loss_augmented_decode(unary, pairwise, edges, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"example\(s\) \[0\]"):
        decode_batch(unary, pairwise, edges, [0, 4], [0, len(edges)])
    # map_inference reports it in the result instead
    res = map_inference(unary, pairwise, edges)
    assert res.score == -np.inf and res.exact


def test_decode_raises_when_pairwise_forbids_everything():
    pairwise = np.full((2, 2), -np.inf)
    with pytest.raises(ValueError, match="-inf"):
        decode(np.zeros((2, 2)), pairwise, chain_edges(2))
    with pytest.raises(ValueError, match="-inf"):
        decode(np.zeros((4, 2)), pairwise, grid_edges(2, 2))  # loopy: TRW-S finds nothing finite


def test_exact_on_a_cycle_raises_loopy_graph_error():
    cycle = np.array([[0, 1], [1, 2], [2, 0]])
    for call in (lambda: infer(np.zeros((3, 2)), np.zeros((2, 2)), cycle, method="exact"),
                 lambda: map_inference(np.zeros((3, 2)), np.zeros((2, 2)), cycle, method="exact"),
                 lambda: decode_batch(np.zeros((5, 2)), np.zeros((2, 2)), np.vstack([chain_edges(2), cycle + 2]),
                                      [0, 2, 5], [0, 1, 4], method="exact")):
        with pytest.raises(LoopyGraphError) as info:
            call()
        assert isinstance(info.value, ValueError)


def _loopy_and_forest_batch(rng):
    edges = np.vstack([grid_edges(2, 2), chain_edges(3) + 4])
    no, eo = np.array([0, 4, 7]), np.array([0, 4, 6])
    return rng.normal(size=(7, 3)), rng.normal(size=(len(edges), 3, 3)), edges, no, eo


def test_schedule_skips_structure_validation(monkeypatch):
    rng = np.random.default_rng(4)
    unary, pairwise, edges, no, eo = _loopy_and_forest_batch(rng)
    sched = make_schedule(edges, no, eo)
    ref = infer_batch(unary, pairwise, edges, no, eo, schedule=sched)

    def forbidden(*args, **kwargs):
        raise AssertionError("structure validated again")

    monkeypatch.setattr(schedule_module, "check_batch_structure", forbidden)
    res = infer_batch(unary, pairwise, edges, no, eo, schedule=sched)
    np.testing.assert_array_equal(res.node_marginals, ref.node_marginals)
    map_inference_batch(unary, pairwise, edges, no, eo, schedule=sched)
    with pytest.raises(AssertionError, match="validated again"):
        infer_batch(unary, pairwise, edges, no, eo)  # no schedule: make_schedule validates


def test_check_input_false_skips_validation_and_gives_the_same_results(monkeypatch):
    rng = np.random.default_rng(5)
    unary, pairwise, edges, no, eo = _loopy_and_forest_batch(rng)
    sched = make_schedule(edges, no, eo)
    ref = infer_batch(unary, pairwise, edges, no, eo, schedule=sched)
    ref_map = map_inference_batch(unary, pairwise, edges, no, eo, schedule=sched)
    y = rng.integers(0, 3, size=7)
    ref_aug = api.loss_augmented_decode_batch(unary, pairwise, edges, no, eo, y, 0.5, schedule=sched)

    def forbidden(*args, **kwargs):
        raise AssertionError("validated")

    for name in ("check_scores", "_check_unary", "_check_options", "_check_method", "check_labels"):
        monkeypatch.setattr(api, name, forbidden)
    res = infer_batch(unary, pairwise, edges, no, eo, schedule=sched, check_input=False)
    out = map_inference_batch(unary, pairwise, edges, no, eo, schedule=sched, check_input=False)
    aug = api.loss_augmented_decode_batch(unary, pairwise, edges, no, eo, y, 0.5, schedule=sched, check_input=False)
    np.testing.assert_array_equal(res.node_marginals, ref.node_marginals)
    np.testing.assert_array_equal(res.log_partition, ref.log_partition)
    np.testing.assert_array_equal(out.labels, ref_map.labels)
    np.testing.assert_array_equal(aug, ref_aug)
    # without a schedule the unvalidated path builds one
    again = infer_batch(unary, pairwise, edges, no, eo, check_input=False)
    np.testing.assert_array_equal(again.node_marginals, ref.node_marginals)
