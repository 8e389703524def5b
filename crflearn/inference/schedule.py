"""Reusable message-passing schedules for flat batches of graphs.

A solver calls inference on the same graphs thousands of times with new
potentials; :func:`make_schedule` does the graph work once (validation,
adjacency lists, BFS order with parent edges, forest detection, TRW edge
appearance probabilities on demand) and the result is passed back as
``schedule=`` to every batched inference call, which then checks only that it
belongs to the arrays given (the structure was validated when it was built).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .._kernels.inference_schedule import GraphArrays, TreeSchedule, build_adjacency, build_bfs_schedule
from .._validation import _check_offsets, check_batch_structure, check_edges
from ..graphs import GraphBatch

__all__ = ["InferenceSchedule", "make_schedule", "edge_appearance_probabilities"]

#: Components with more nodes than this get the uniform ``(n - 1) / |E|`` heuristic
#: instead of exact spanning-tree probabilities (dense Laplacian inverse).
MAX_DENSE_COMPONENT = 1500


@dataclass(eq=False)
class InferenceSchedule:
    """Graph structure of a flat batch, precomputed for message passing.

    Build it with :func:`make_schedule`; treat it as read-only.

    Attributes
    ----------
    edges : ndarray (M, 2) int64
        Global edges (a private copy).
    node_offsets, edge_offsets : ndarray (n_examples + 1,) int64
    order : ndarray (N,) int64
        BFS order; the nodes of example ``i`` occupy ``order[node_offsets[i]:node_offsets[i+1]]``.
    parent, parent_edge : ndarray (N,) int64
        BFS parent and the edge to it (-1 at roots).
    parent_first : ndarray (N,) uint8
        1 when the parent is ``edges[parent_edge, 0]``.
    adj_ptr, adj_nbr, adj_edge : ndarray int64
        CSR adjacency: neighbours of ``v`` and the connecting edges are at
        ``adj_ptr[v]:adj_ptr[v + 1]``.
    is_forest : ndarray (n_examples,) bool
        Whether each example is a forest (exact inference applies).
    n_components : ndarray (n_examples,) int64
        Connected components per example.
    """

    edges: np.ndarray
    node_offsets: np.ndarray
    edge_offsets: np.ndarray
    order: np.ndarray
    parent: np.ndarray
    parent_edge: np.ndarray
    parent_first: np.ndarray
    adj_ptr: np.ndarray
    adj_nbr: np.ndarray
    adj_edge: np.ndarray
    is_forest: np.ndarray
    n_components: np.ndarray
    _rho: np.ndarray | None = field(default=None, repr=False)

    n_nodes = property(lambda self: int(self.node_offsets[-1]), doc="Nodes of the whole batch (int).")
    n_edges = property(lambda self: int(self.edge_offsets[-1]), doc="Edges of the whole batch (int).")
    n_examples = property(lambda self: len(self.node_offsets) - 1, doc="Graphs in the batch (int).")

    @property
    def tree(self) -> TreeSchedule:
        """The BFS schedule bundled for the forest kernels."""
        return TreeSchedule(self.node_offsets, self.order, self.parent, self.parent_edge, self.parent_first)

    @property
    def graph(self) -> GraphArrays:
        """Edges, offsets and adjacency bundled for the loopy kernels."""
        return GraphArrays(self.edges, self.node_offsets, self.edge_offsets, self.adj_ptr, self.adj_nbr,
                           self.adj_edge)

    @property
    def all_forests(self) -> bool:
        """Whether every example is a forest."""
        return bool(self.is_forest.all())

    def edge_appearance(self) -> np.ndarray:
        """TRW edge appearance probabilities ``rho`` (M,), computed once and cached.

        See :func:`edge_appearance_probabilities`.
        """
        if self._rho is None:
            self._rho = edge_appearance_probabilities(self.edges, self.n_nodes)
        return self._rho

    def matches(self, edges: np.ndarray, node_offsets: np.ndarray, edge_offsets: np.ndarray) -> bool:
        """Whether this schedule was built for exactly these arrays."""
        return ((edges is self.edges or np.array_equal(np.asarray(edges).reshape(-1, 2), self.edges))
                and np.array_equal(node_offsets, self.node_offsets)
                and np.array_equal(edge_offsets, self.edge_offsets))


def make_schedule(edges: ArrayLike | GraphBatch, node_offsets: ArrayLike | None = None, edge_offsets: ArrayLike | None = None,
                  n_nodes: int | None = None) -> InferenceSchedule:
    """Precompute the message-passing schedule of a flat batch (or of one graph).

    Parameters
    ----------
    edges : array-like of shape (M, 2), or a GraphBatch
        Global node indices (see :class:`crflearn.graphs.GraphBatch`). A
        ``GraphBatch`` supplies its own edges and offsets.
    node_offsets, edge_offsets : array-like of shape (n_examples + 1,), optional
        CSR offsets of the examples. Omit both for a single graph, in which
        case ``n_nodes`` is required.
    n_nodes : int, optional
        Number of nodes; defaults to ``node_offsets[-1]``.

    Returns
    -------
    InferenceSchedule
        Pass it as ``schedule=`` to :func:`~crflearn.inference.infer_batch`,
        :func:`~crflearn.inference.decode_batch` and friends.
    """
    if isinstance(edges, GraphBatch):
        if node_offsets is not None or edge_offsets is not None:
            raise ValueError("pass either a GraphBatch or edges with offsets, not both")
        edges, node_offsets, edge_offsets = edges.edges, edges.node_offsets, edges.edge_offsets
    if (node_offsets is None) != (edge_offsets is None):
        raise ValueError("give both node_offsets and edge_offsets, or neither")
    if node_offsets is None:
        if n_nodes is None:
            raise ValueError("n_nodes is required for a single graph (no offsets given)")
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1:
            raise ValueError(f"n_nodes must be a positive integer, got {n_nodes!r}")
        e = check_edges(edges, int(n_nodes), "edges")
        node_offsets = np.array([0, int(n_nodes)], dtype=np.int64)
        edge_offsets = np.array([0, len(e)], dtype=np.int64)
        edges = e
    total = n_nodes
    if total is None:
        arr = np.asarray(node_offsets)
        if arr.ndim != 1 or arr.size < 2 or not np.issubdtype(arr.dtype, np.integer):
            _check_offsets(node_offsets, "node_offsets", 0)  # raises a precise error
        total = int(arr[-1])
    e, no, eo = check_batch_structure(edges, node_offsets, edge_offsets, int(total))
    return _build(e.copy(), no.copy(), eo.copy())


def _build(edges: np.ndarray, node_offsets: np.ndarray, edge_offsets: np.ndarray) -> InferenceSchedule:
    n = int(node_offsets[-1])
    m = len(edges)
    n_ex = len(node_offsets) - 1
    adj_ptr = np.empty(n + 1, dtype=np.int64)
    adj_nbr = np.empty(2 * m, dtype=np.int64)
    adj_edge = np.empty(2 * m, dtype=np.int64)
    build_adjacency(edges, n, adj_ptr, adj_nbr, adj_edge)
    order = np.empty(n, dtype=np.int64)
    parent = np.empty(n, dtype=np.int64)
    parent_edge = np.empty(n, dtype=np.int64)
    parent_first = np.empty(n, dtype=np.uint8)
    n_comp = np.empty(n_ex, dtype=np.int64)
    forest = np.empty(n_ex, dtype=np.uint8)
    build_bfs_schedule(edges, node_offsets, edge_offsets, adj_ptr, adj_nbr, adj_edge,
                       order, parent, parent_edge, parent_first, n_comp, forest)
    return InferenceSchedule(edges=edges, node_offsets=node_offsets, edge_offsets=edge_offsets, order=order,
                             parent=parent, parent_edge=parent_edge, parent_first=parent_first,
                             adj_ptr=adj_ptr, adj_nbr=adj_nbr, adj_edge=adj_edge,
                             is_forest=forest.astype(bool), n_components=n_comp)


def edge_appearance_probabilities(edges: ArrayLike, n_nodes: int) -> np.ndarray:
    """Edge appearance probabilities of the uniform distribution over spanning trees.

    For every connected component, ``rho_e`` is the probability that edge ``e``
    belongs to a spanning tree drawn uniformly at random, which equals the
    effective resistance between its endpoints (Kirchhoff): ``rho_e =
    X_ss + X_tt - 2 X_st`` with ``X = (L + 11^T / n)^{-1}`` for the component's
    Laplacian ``L``. Such ``rho`` lies in the spanning-tree polytope, so the TRW
    log-partition is an upper bound at its fixed point. Bridges (and all edges of
    tree components) get ``rho = 1``. Components with more than
    ``MAX_DENSE_COMPONENT`` nodes fall back to the uniform heuristic
    ``rho = (n_c - 1) / |E_c|``, which is not guaranteed to give a bound.

    Parameters
    ----------
    edges : array-like (M, 2)
    n_nodes : int

    Returns
    -------
    rho : ndarray (M,) float64 in (0, 1]

    References
    ----------
    Wainwright, Jaakkola and Willsky, "A new class of upper bounds on the log
    partition function", IEEE Trans. Information Theory 51(7), 2005.
    """
    e = check_edges(edges, int(n_nodes), "edges")
    m = len(e)
    rho = np.ones(m)
    if m == 0:
        return rho
    graph = sp.coo_matrix((np.ones(m), (e[:, 0], e[:, 1])), shape=(n_nodes, n_nodes))
    n_comp, comp = connected_components(graph, directed=False)
    edge_comp = comp[e[:, 0]]
    nodes_per = np.bincount(comp, minlength=n_comp)
    edges_per = np.bincount(edge_comp, minlength=n_comp)
    cyclic = np.flatnonzero(edges_per > nodes_per - 1)
    if len(cyclic) == 0:
        return rho
    edge_order = np.argsort(edge_comp, kind="stable")
    edge_starts = np.concatenate([[0], np.cumsum(edges_per)])
    for c in cyclic:
        ids = edge_order[edge_starts[c]:edge_starts[c + 1]]
        nodes = np.flatnonzero(comp == c)
        nc = len(nodes)
        if nc > MAX_DENSE_COMPONENT:
            rho[ids] = min(1.0, (nc - 1) / len(ids))
            continue
        local = np.searchsorted(nodes, e[ids])
        lap = np.zeros((nc, nc))
        np.add.at(lap, (local[:, 0], local[:, 0]), 1.0)
        np.add.at(lap, (local[:, 1], local[:, 1]), 1.0)
        np.add.at(lap, (local[:, 0], local[:, 1]), -1.0)
        np.add.at(lap, (local[:, 1], local[:, 0]), -1.0)
        x = np.linalg.inv(lap + 1.0 / nc)
        s, t = local[:, 0], local[:, 1]
        r = x[s, s] + x[t, t] - 2.0 * x[s, t]
        rho[ids] = np.clip(r, 1e-12, 1.0)
    return rho
