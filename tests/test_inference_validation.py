"""Bad input to the inference API raises ValueError / TypeError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

import crflearn.inference as inf
from crflearn.graphs import chain_edges
from crflearn.inference import (
    decode,
    decode_batch,
    infer,
    infer_batch,
    loss_augmented_decode,
    loss_augmented_decode_batch,
    make_schedule,
    map_inference,
)

U = np.zeros((3, 2))
P = np.zeros((2, 2))
E = chain_edges(3)


@pytest.mark.parametrize("func", [infer, decode, map_inference])
@pytest.mark.parametrize("unary, pairwise, edges, exc, match", [
    (np.zeros(3), P, E, ValueError, "unary"),
    (np.full((3, 2), np.nan), P, E, ValueError, "unary"),
    (np.array([["a", "b"]] * 3), P, E, TypeError, "unary"),
    (U, np.zeros((3, 3)), E, ValueError, "pairwise"),
    (U, np.zeros((3, 2, 2)), E, ValueError, "pairwise"),
    (U, np.full((2, 2), np.inf), E, ValueError, "pairwise"),
    (U, P, np.array([[0, 0], [1, 2]]), ValueError, "self-loop"),
    (U, P, np.array([[0, 1], [1, 3]]), ValueError, "outside"),
    (U, P, np.array([[0, 1], [1, 0]]), ValueError, "more than once"),
    (U, P, np.array([0, 1, 2]), ValueError, "edges"),
    (U, P, np.array([[0.5, 1.0]]), TypeError, "edges"),
])
def test_bad_potentials(func, unary, pairwise, edges, exc, match):
    with pytest.raises(exc, match=match):
        func(unary, pairwise, edges)


def test_bad_method_and_options():
    with pytest.raises(ValueError, match="method"):
        infer(U, P, E, method="trws")
    with pytest.raises(ValueError, match="method"):
        decode(U, P, E, method="trw")
    with pytest.raises(TypeError, match="method"):
        infer(U, P, E, method=None)
    with pytest.raises(ValueError, match="damping"):
        infer(U, P, E, damping=1.0)
    with pytest.raises(ValueError, match="max_iter"):
        infer(U, P, E, max_iter=0)
    with pytest.raises(ValueError, match="bruteforce"):
        infer(np.zeros((30, 2)), P, chain_edges(30), method="bruteforce")


def test_bad_loss_augmentation():
    with pytest.raises(ValueError, match="y_true"):
        loss_augmented_decode(U, P, E, [0, 1])
    with pytest.raises(ValueError, match="y_true"):
        loss_augmented_decode(U, P, E, [0, 1, 5])
    with pytest.raises(ValueError, match="loss_weight"):
        loss_augmented_decode(U, P, E, [0, 1, 1], loss_weight=-1.0)
    with pytest.raises(TypeError, match="loss_weight"):
        loss_augmented_decode(U, P, E, [0, 1, 1], loss_weight="big")


def test_bad_batch_structure():
    unary = np.zeros((5, 2))
    edges = np.array([[0, 1], [1, 2], [3, 4]])
    no, eo = np.array([0, 3, 5]), np.array([0, 2, 3])
    infer_batch(unary, P, edges, no, eo)  # valid
    with pytest.raises(ValueError, match="leaves its example"):
        infer_batch(unary, P, np.array([[0, 1], [2, 3], [3, 4]]), no, eo)
    with pytest.raises(ValueError, match="node_offsets"):
        infer_batch(unary, P, edges, np.array([0, 3, 4]), eo)
    with pytest.raises(ValueError, match="node_offsets"):
        infer_batch(unary, P, edges, np.array([1, 3, 5]), eo)
    with pytest.raises(ValueError, match="edge_offsets"):
        infer_batch(unary, P, edges, no, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="entries"):
        infer_batch(unary, P, edges, no, np.array([0, 3]))
    with pytest.raises(TypeError, match="node_offsets"):
        infer_batch(unary, P, edges, np.array([0.0, 3.0, 5.0]), eo)
    with pytest.raises(ValueError, match="edge_marginals"):
        infer_batch(unary, P, edges, no, eo, edge_marginals="mean")
    with pytest.raises(ValueError, match="y_true"):
        loss_augmented_decode_batch(unary, P, edges, no, eo, np.zeros(4, dtype=int))
    other = make_schedule(np.array([[0, 1], [1, 2]]), np.array([0, 3, 5]), np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="schedule"):
        decode_batch(unary, P, edges, no, eo, schedule=other)
    with pytest.raises(TypeError, match="schedule"):
        decode_batch(unary, P, edges, no, eo, schedule="cached")


def test_gini_hook_is_lazy_and_unknown_names_fail():
    with pytest.raises(AttributeError, match="no_such_function"):
        inf.no_such_function  # noqa: B018
    try:
        from crflearn.inference import gini
    except ImportError:
        pytest.skip("crflearn.inference.gini not available yet")
    if hasattr(gini, "gini_infer"):
        assert inf.gini_infer is gini.gini_infer
