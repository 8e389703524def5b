"""Structure of a flat batch of graphs for the torch TRW message passing (:mod:`._loopy`).

Built once per batch in NumPy and put on the potentials' device. The messages are held
in an internal order, grouped by the colour of their source node: nodes are coloured so
that no edge joins two nodes of one colour (two colours on bipartite graphs such as
chains, trees and grids; greedy independent sets otherwise), and the messages out of one
colour, which do not depend on each other, form one block updated in a single vectorised
step. A sweep updates the blocks in turn (a Gauss-Seidel schedule over colour classes).

Replicas: when every example of the batch is the same graph (same node and edge counts,
same edges up to the node offset, same ``rho``; e.g. a batch of same-sized images), the
structure is built for the first example only and the ``B`` examples are a trailing
dimension of every tensor in :mod:`._loopy` (``replicas = B``): index operations then move
``B`` values at a time and a shared pairwise table is one small matrix per message
position. Otherwise ``replicas = 1`` and the structure covers the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import breadth_first_order, connected_components

from .._validation import check_batch_structure, check_edges, check_int

__all__ = ["LoopyGraph", "MessageBlock", "colour_nodes", "make_loopy_graph"]


class MessageBlock(NamedTuple):
    """The messages out of the nodes of one colour: internal rows ``start:stop``.

    Attributes
    ----------
    start, stop : int
    sources : LongTensor (n_sources,)
        The distinct source nodes of the block.
    source_index : LongTensor (stop - start,)
        Position of each message's source in ``sources``.
    reverse : LongTensor (stop - start,)
        Internal index of each message's reverse (a message into the source).
    reverse_start : int
        ``reverse[0]`` when the reverses are the contiguous rows ``reverse_start:reverse_start + n``, else -1.
    edge : LongTensor (stop - start,)
        Edge of each message.
    backward : BoolTensor (stop - start,)
        True for a message ``edges[e, 1] -> edges[e, 0]``.
    table : LongTensor (stop - start,)
        Column of the message in a shared pairwise table: ``backward * n_rho + rho_group[edge]``.
    role : LongTensor (stop - start,)
        0 (1) when the message comes before its reverse in the internal order (one message per
        edge is first) and runs ``s -> t`` (``t -> s``); 2 when it comes after its reverse.
    n_first : int
        The number of first messages in the block.
    rho : Tensor (stop - start, 1) float64
        ``rho`` of each message's edge.
    """

    start: int
    stop: int
    sources: torch.Tensor
    source_index: torch.Tensor
    reverse: torch.Tensor
    reverse_start: int
    edge: torch.Tensor
    backward: torch.Tensor
    table: torch.Tensor
    role: torch.Tensor
    n_first: int
    rho: torch.Tensor


class LoopyGraph(NamedTuple):
    """Structure of a flat batch of graphs on one device (build it with :func:`make_loopy_graph`).

    The fields from ``dst`` on describe one replica (the whole batch when ``replicas == 1``):
    ``N_r = n_nodes / replicas`` nodes and ``M_r = M / replicas`` edges, local indices.

    Attributes
    ----------
    edges : LongTensor (M, 2)
        Global node indices.
    rho : Tensor (M,) float64
        Edge appearance probabilities.
    node_example, edge_example : LongTensor (N,), (M,)
        Example index of every node and edge.
    n_nodes, n_examples : int
    dst : LongTensor (2 M_r,)
        Target node of every message (internal order).
    forward, backward : LongTensor (M_r,)
        Internal index of the message ``s -> t`` and ``t -> s`` of every edge ``(s, t)``.
    external : LongTensor (2 M_r,)
        Internal index of external row ``r`` (row ``2 e`` is ``s -> t``, ``2 e + 1`` is ``t -> s``).
    internal : LongTensor (2 M_r,)
        External row of each internal index (the inverse permutation).
    rho_values : Tensor (n_rho,) float64
        The distinct values of ``rho`` (one exponential table per value for shared pairwise scores).
    blocks : tuple of MessageBlock
    replicas : int
        ``B`` when the batch is ``B`` copies of one graph (see the module docstring), else 1.
    node_weight : Tensor (N_r,) float64
        ``1 - sum of rho`` over the edges of every node (its weight in the TRW value).
    """

    edges: torch.Tensor
    rho: torch.Tensor
    node_example: torch.Tensor
    edge_example: torch.Tensor
    n_nodes: int
    n_examples: int
    dst: torch.Tensor = None
    forward: torch.Tensor = None
    backward: torch.Tensor = None
    external: torch.Tensor = None
    internal: torch.Tensor = None
    rho_values: torch.Tensor = None
    blocks: tuple = ()
    replicas: int = 1
    node_weight: torch.Tensor = None


def _two_colouring(edges: np.ndarray, n_nodes: int):
    """Parity of the breadth-first depth when the graph is bipartite, else None."""
    m = len(edges)
    # a virtual root (node n) joined to one node of every component: one BFS covers the graph
    _, comp = connected_components(sp.coo_matrix((np.ones(m), (edges[:, 0], edges[:, 1])),
                                                 shape=(n_nodes, n_nodes)), directed=False)
    first = np.unique(comp, return_index=True)[1]
    rows = np.concatenate([edges[:, 0], np.full(len(first), n_nodes)])
    cols = np.concatenate([edges[:, 1], first])
    adj = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_nodes + 1, n_nodes + 1)).tocsr()
    _, pred = breadth_first_order(adj, n_nodes, directed=False, return_predecessors=True)
    pred = np.where(pred < 0, n_nodes, pred)
    parity = np.ones(n_nodes + 1, dtype=np.int64)
    parity[n_nodes] = 0
    anc = pred.copy()
    while np.any(anc != n_nodes):  # pointer jumping: parity of the path to the root
        parity = parity + parity[anc] * (anc != n_nodes)
        anc = anc[anc]
    parity = parity[:n_nodes] % 2
    return parity if np.all(parity[edges[:, 0]] != parity[edges[:, 1]]) else None


def colour_nodes(edges: np.ndarray, n_nodes: int, seed: int = 0) -> np.ndarray:
    """Colour of every node, no edge joining two nodes of one colour (validated ``edges``).

    Bipartite graphs (chains, trees, grids) get two colours. Other graphs are coloured by
    rounds of independent sets (Luby): an uncoloured node whose fixed random priority
    beats those of all its uncoloured neighbours takes the round's colour.
    """
    if len(edges) == 0:
        return np.zeros(n_nodes, dtype=np.int64)
    parity = _two_colouring(edges, n_nodes)
    if parity is not None:
        return parity
    priority = np.random.default_rng(seed).permutation(n_nodes)
    colour = np.full(n_nodes, -1, dtype=np.int64)
    s, t = edges[:, 0], edges[:, 1]
    c = 0
    while np.any(colour < 0):
        live = (colour[s] < 0) & (colour[t] < 0)
        loser = np.where(priority[s] < priority[t], s, t)[live]
        candidate = colour < 0
        candidate[loser] = False
        colour[candidate] = c
        c += 1
    return colour


def _message_order(e: np.ndarray, colour: np.ndarray):
    """Internal order of the ``2 M`` messages (grouped by source colour) and the block boundaries.

    With two colours, block 1 lists the reverses of block 0 in the same order, so that the
    messages into a block's sources are one contiguous slice.
    """
    m = len(e)
    src = np.concatenate([e[:, 0], e[:, 1]])  # message j < M: s -> t; j >= M: t -> s
    if colour.max(initial=0) == 1:
        first = np.where(colour[e[:, 0]] == 0, np.arange(m), np.arange(m) + m)
        order = np.concatenate([first, np.where(first < m, first + m, first - m)])
    else:
        order = np.argsort(colour[src], kind="stable")
    position = np.empty(2 * m, dtype=np.int64)
    position[order] = np.arange(2 * m)
    bounds = np.searchsorted(colour[src[order]], np.arange(int(colour.max(initial=0)) + 2))
    return order, position, bounds


def _blocks(e, order, position, bounds, rho, put):
    """The :class:`MessageBlock` of every colour and the distinct values of ``rho``."""
    m = len(e)
    src = np.concatenate([e[:, 0], e[:, 1]])[order]
    reverse = position[np.where(order < m, order + m, order - m)]
    edge = np.where(order < m, order, order - m)
    backward = order >= m
    rho_values, rho_group = np.unique(rho, return_inverse=True)
    rho_group = rho_group.reshape(-1)
    blocks = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:
            continue
        sources, index = np.unique(src[lo:hi], return_inverse=True)
        table = backward[lo:hi] * len(rho_values) + rho_group[edge[lo:hi]]
        rev, back = reverse[lo:hi], backward[lo:hi]
        contiguous = bool(np.all(np.diff(rev) == 1))
        first = rev > np.arange(lo, hi)
        blocks.append(MessageBlock(int(lo), int(hi), put(sources), put(index.reshape(-1)), put(rev),
                                   int(rev[0]) if contiguous else -1, put(edge[lo:hi]), put(back, torch.bool),
                                   put(table), put(np.where(first, back, 2)), int(first.sum()),
                                   put(rho[edge[lo:hi], None], torch.float64)))
    return tuple(blocks), put(rho_values, torch.float64)


def make_loopy_graph(edges, n_nodes: int, node_offsets=None, edge_offsets=None, *, rho=None,
                     device=None, replicate: bool = True) -> LoopyGraph:
    """Validate a (flat batch of) graph(s) once and put its structure on ``device``.

    Parameters
    ----------
    edges : array-like of shape (M, 2)
        Global node indices; no self-loops or duplicate edges.
    n_nodes : int
    node_offsets, edge_offsets : array-like of shape (n_examples + 1,), optional
        CSR offsets of the examples (omit both for one graph).
    rho : array-like of shape (M,), optional
        Edge appearance probabilities in (0, 1]; default: those of the uniform
        spanning-tree distribution, as the Numba TRW uses
        (:func:`crflearn.inference.edge_appearance_probabilities`). All ones is loopy BP.
    device : torch.device or str, optional
    replicate : bool
        Detect a batch of copies of one graph (see the module docstring); False builds the
        general structure (the results are the same up to rounding).

    Returns
    -------
    LoopyGraph
    """
    n_nodes = check_int(n_nodes, "n_nodes")
    if (node_offsets is None) != (edge_offsets is None):
        raise ValueError("give both node_offsets and edge_offsets, or neither")
    if isinstance(edges, torch.Tensor):
        edges = edges.detach().cpu().numpy()
    if node_offsets is None:
        e = check_edges(edges, n_nodes, "edges")
        no, eo = np.array([0, n_nodes], dtype=np.int64), np.array([0, len(e)], dtype=np.int64)
    else:
        e, no, eo = check_batch_structure(edges, node_offsets, edge_offsets, n_nodes)
    if rho is None:
        from ..inference.schedule import edge_appearance_probabilities

        rho_np = edge_appearance_probabilities(e, n_nodes)
    else:
        rho_np = np.asarray(rho, dtype=np.float64).reshape(-1)
        if rho_np.shape != (len(e),) or not np.all((rho_np > 0) & (rho_np <= 1)):
            raise ValueError(f"rho must hold {len(e)} values in (0, 1], got shape {rho_np.shape}")
    device = torch.device("cpu") if device is None else torch.device(device)

    def put(array, dtype=torch.long):
        return _put(array, dtype, device)

    replicas = _replicas(e, no, eo, rho_np) if replicate else 1
    m, n_local = len(e) // replicas, n_nodes // replicas
    e_local, rho_local = e[:m], rho_np[:m]  # the first example, when the batch is replicas of it
    order, position, bounds = _message_order(e_local, colour_nodes(e_local, n_local))
    blocks, rho_values = _blocks(e_local, order, position, bounds, rho_local, put)
    lengths, n_edges = np.diff(no), np.diff(eo)
    forward, backward = position[:m], position[m:]
    return LoopyGraph(
        edges=put(e), rho=put(rho_np, torch.float64),
        node_example=put(np.repeat(np.arange(len(lengths)), lengths)),
        edge_example=put(np.repeat(np.arange(len(n_edges)), n_edges)), n_nodes=n_nodes, n_examples=len(lengths),
        dst=put(np.concatenate([e_local[:, 1], e_local[:, 0]])[order]), forward=put(forward),
        backward=put(backward), external=put(np.stack([forward, backward], axis=1).reshape(-1)),
        internal=put(np.argsort(np.stack([forward, backward], axis=1).reshape(-1))),
        rho_values=rho_values, blocks=blocks,
        replicas=replicas, node_weight=put(1.0 - np.bincount(e_local.reshape(-1), np.repeat(rho_local, 2),
                                                             minlength=n_local), torch.float64))


def _replicas(e, node_offsets, edge_offsets, rho) -> int:
    """The number of examples when they are all one graph (same sizes, edges up to the node offset and
    ``rho``), else 1."""
    n_examples = len(node_offsets) - 1
    nodes, n_edges = np.diff(node_offsets), np.diff(edge_offsets)
    if n_examples < 2 or nodes[0] == 0 or np.any(nodes != nodes[0]) or np.any(n_edges != n_edges[0]):
        return 1
    local = e.reshape(n_examples, -1, 2) - node_offsets[:-1, None, None]
    same = np.array_equal(local, np.broadcast_to(local[:1], local.shape))
    return n_examples if same and np.array_equal(rho.reshape(n_examples, -1), np.broadcast_to(
        rho[:n_edges[0]], (n_examples, n_edges[0]))) else 1


def _put(array, dtype, device) -> torch.Tensor:
    """A NumPy array as a tensor on ``device``; to CUDA through pinned memory, non-blocking."""
    t = torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t
