"""The sweep order of IDAL (``clique_order``): today's order for small examples, blocks of consecutive
nodes inside a large one, and the same certified optimum either way."""

from __future__ import annotations

import numpy as np
import pytest

from crflearn._kernels import idal_engine
from crflearn._kernels.idal import LOCAL_BLOCK, MIN_BLOCK, MIN_BLOCKS, clique_order
from crflearn.graphs import chain_edges, grid_edges, make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers.idal import fit_idal


def _layout(graphs):
    """Offsets and global edges of examples given as ``(n_nodes, local edges)``."""
    sizes = [n for n, _ in graphs]
    node_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    edge_off = np.concatenate([[0], np.cumsum([len(e) for _, e in graphs])]).astype(np.int64)
    edges = np.concatenate([e + o for (_, e), o in zip(graphs, node_off[:-1])]).astype(np.int64).reshape(-1, 2)
    return node_off, edge_off, edges


def _order(graphs, seed, with_edges=True, blocks=()):
    node_off, edge_off, edges = _layout(graphs)
    n_nodes = int(node_off[-1])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(graphs)).astype(np.int64)
    keys = rng.random(n_nodes + len(edges))
    out = np.empty(len(keys), np.int64)
    written = clique_order(perm, keys, node_off, edge_off, n_nodes, out, edges if with_edges else None, *blocks)
    assert written == len(keys)
    return out, perm, keys, node_off, edge_off, edges


@pytest.mark.parametrize("seed", range(3))
def test_small_examples_keep_the_plain_random_order(seed):
    rng = np.random.default_rng(seed)
    # the largest example has fewer than MIN_BLOCK * MIN_BLOCKS cliques: no blocks
    longest = MIN_BLOCK * MIN_BLOCKS // 2
    graphs = [(int(n), chain_edges(int(n))) for n in rng.integers(1, 12, size=6)]
    graphs += [(12, grid_edges(3, 4)), (longest, chain_edges(longest))]
    order, perm, keys, node_off, edge_off, _ = _order(graphs, seed)
    n_nodes = int(node_off[-1])
    # reference: examples in the order perm, each example's cliques sorted by their keys
    expected = []
    for i in perm:
        cliques = np.concatenate([np.arange(node_off[i], node_off[i + 1]),
                                  n_nodes + np.arange(edge_off[i], edge_off[i + 1])])
        expected.extend(cliques[np.argsort(keys[cliques])])
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(order, _order(graphs, seed, with_edges=False)[0])


@pytest.mark.parametrize("graph, blocks", [("chain", (64, 1, 1)), ("grid", (256, 1, 1)), ("chain", ())])
def test_a_large_example_is_swept_block_by_block(graph, blocks):
    n = 45 * 45 if graph == "grid" else 3072 if blocks else MIN_BLOCK * MIN_BLOCKS
    local = grid_edges(45, 45) if graph == "grid" else chain_edges(n)
    order, perm, keys, node_off, edge_off, edges = _order([(5, chain_edges(5)), (n, local)], 7, blocks=blocks)
    n_nodes = int(node_off[-1])
    assert np.array_equal(np.sort(order), np.arange(len(order)))
    big = order[np.where(order < n_nodes, order >= 5, order - n_nodes >= 4)]  # the cliques of the large example
    lower = np.where(big < n_nodes, big, edges[np.maximum(big - n_nodes, 0)].min(axis=1)) - 5  # local lower node
    size = blocks[0] if blocks else min(LOCAL_BLOCK, len(big) // MIN_BLOCKS)  # cliques per block
    assert size >= MIN_BLOCK or blocks
    n_blocks = -(-len(big) // size)
    per = -(-n // n_blocks)  # consecutive nodes per block
    block = lower // per
    changes = np.flatnonzero(np.diff(block)) + 1
    assert len(changes) == block.max() == -(-n // per) - 1  # every block is one contiguous run of the order
    assert not np.all(np.diff(block) >= 0)  # visited in a random order, not by index
    for run in np.split(np.arange(len(big)), changes):  # each block sorted by the random keys
        assert np.all(np.diff(keys[big[run]]) > 0)


def _fit(batch, model):
    return fit_idal(batch, model, alpha=0.05, max_iter=900, tol=1e-4, random_state=0, monitor_every=4)


def _next_order(blocks):
    def next_order(self):  # the engine's random stream, clique_order with these block sizes
        perm = self.rng.permutation(len(self.offsets[0]) - 1).astype(np.int64)
        clique_order(perm, self.rng.random(self.n_cliques), self.offsets[0], self.offsets[1], self.n_nodes,
                     self.order, *blocks)
        return self.order
    return next_order


def test_blocked_order_reaches_the_same_certified_optimum(monkeypatch):
    """A chain of 712 nodes in 178 blocks of 8 cliques (the engine's rule would block only far longer
    examples: few blocks visited one after the other slow convergence down) and in the plain order."""
    rng = np.random.default_rng(0)
    n, k, p = 712, 3, 3
    x = rng.standard_normal((n, p))
    y = np.argmax(x @ rng.standard_normal((p, k)) + rng.gumbel(size=(n, k)), axis=1)
    batch, _ = make_batch([x], [y])
    model = PairwiseModel(k, p)
    fits = {}
    for name, blocks in (("plain", ()), ("blocked", (8, 64, 8))):
        monkeypatch.setattr(idal_engine.IdalEngine, "next_order", _next_order(
            blocks if not blocks else (batch.edges.astype(np.int64),) + blocks))
        fits[name] = _fit(batch, model)
    blocked, plain = fits["blocked"], fits["plain"]
    assert blocked.converged and plain.converged
    hb, hp = blocked.history, plain.history
    assert hb["iteration"][-1] <= 1.25 * hp["iteration"][-1]
    slack = 1e-12 * abs(hp["primal"][-1])
    # each run's certificate brackets P*: the two intervals overlap and both are 1e-4 tight
    assert hb["dual"][-1] <= hp["primal"][-1] + slack and hp["dual"][-1] <= hb["primal"][-1] + slack
    np.testing.assert_allclose(blocked.w, plain.w, rtol=0.05, atol=0.02)
