"""Message-passing schedules for a flat batch of graphs (Numba).

One call builds, for every example of a batch, the adjacency lists of its
nodes and a breadth-first order with the parent edge of every node. The BFS
order also tells whether an example is a forest: a BFS finds ``c`` connected
components and the example is a forest exactly when it has ``n - c`` edges.

The kernels take the structure as two NamedTuples of arrays (numba accepts them
as one argument each): :class:`TreeSchedule` for the forest passes and
:class:`GraphArrays` for loopy message passing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit


class TreeSchedule(NamedTuple):
    """BFS schedule of a flat batch of forests (all int64 except ``parent_first``).

    ``order[node_offsets[i]:node_offsets[i + 1]]`` lists the nodes of example ``i``
    in BFS order; ``parent`` / ``parent_edge`` are -1 at roots; ``parent_first`` (uint8)
    is 1 when the parent is ``edges[parent_edge, 0]``.
    """

    node_offsets: np.ndarray
    order: np.ndarray
    parent: np.ndarray
    parent_edge: np.ndarray
    parent_first: np.ndarray


class GraphArrays(NamedTuple):
    """Edges, CSR offsets of the examples and CSR adjacency of a flat batch (all int64).

    The neighbours of ``v`` and the connecting edges are
    ``adj_nbr[adj_ptr[v]:adj_ptr[v + 1]]`` and ``adj_edge[...]``.
    """

    edges: np.ndarray
    node_offsets: np.ndarray
    edge_offsets: np.ndarray
    adj_ptr: np.ndarray
    adj_nbr: np.ndarray
    adj_edge: np.ndarray


@njit(cache=True, nogil=True)
def build_adjacency(edges, n_nodes, adj_ptr, adj_nbr, adj_edge):
    """Fill CSR adjacency lists: neighbours of ``v`` are ``adj_nbr[adj_ptr[v]:adj_ptr[v + 1]]``.

    ``adj_ptr`` has ``n_nodes + 1`` entries, ``adj_nbr`` / ``adj_edge`` ``2 * n_edges``.
    Neighbours are listed in edge order.
    """
    n_edges = edges.shape[0]
    for v in range(n_nodes + 1):
        adj_ptr[v] = 0
    for e in range(n_edges):
        adj_ptr[edges[e, 0] + 1] += 1
        adj_ptr[edges[e, 1] + 1] += 1
    for v in range(n_nodes):
        adj_ptr[v + 1] += adj_ptr[v]
    fill = adj_ptr[:-1].copy()
    for e in range(n_edges):
        s = edges[e, 0]
        t = edges[e, 1]
        adj_nbr[fill[s]] = t
        adj_edge[fill[s]] = e
        fill[s] += 1
        adj_nbr[fill[t]] = s
        adj_edge[fill[t]] = e
        fill[t] += 1


@njit(cache=True, nogil=True)
def build_bfs_schedule(edges, node_offsets, edge_offsets, adj_ptr, adj_nbr, adj_edge,
                       order, parent, parent_edge, parent_first, n_components, is_forest):
    """Breadth-first order of every example (roots = lowest unvisited node index).

    Fills ``order`` (nodes of example ``i`` occupy ``order[node_offsets[i]:node_offsets[i+1]]``
    in BFS order), ``parent`` / ``parent_edge`` (-1 at roots), ``parent_first``
    (1 when the parent is ``edges[parent_edge, 0]``), ``n_components`` and
    ``is_forest`` per example.
    """
    n_nodes = parent.shape[0]
    visited = np.zeros(n_nodes, dtype=np.uint8)
    n_examples = node_offsets.shape[0] - 1
    for i in range(n_examples):
        lo = node_offsets[i]
        hi = node_offsets[i + 1]
        tail = lo
        head = lo
        comps = 0
        for root in range(lo, hi):
            if visited[root]:
                continue
            comps += 1
            visited[root] = 1
            parent[root] = -1
            parent_edge[root] = -1
            parent_first[root] = 0
            order[tail] = root
            tail += 1
            while head < tail:
                v = order[head]
                head += 1
                for k in range(adj_ptr[v], adj_ptr[v + 1]):
                    t = adj_nbr[k]
                    if visited[t]:
                        continue
                    visited[t] = 1
                    e = adj_edge[k]
                    parent[t] = v
                    parent_edge[t] = e
                    parent_first[t] = 1 if edges[e, 0] == v else 0
                    order[tail] = t
                    tail += 1
        n_components[i] = comps
        n_edges_i = edge_offsets[i + 1] - edge_offsets[i]
        is_forest[i] = 1 if n_edges_i == (hi - lo) - comps else 0
