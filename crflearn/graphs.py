"""Structured examples stored flat: one batch holds chains, grids, trees and loopy graphs.

A :class:`GraphBatch` concatenates the nodes of all examples (features, labels)
and all their edges (global node indices, optional edge features), with CSR-style
offsets per example, so that one compiled kernel can sweep any mixture of
graph shapes in a single pass.

Builders: :func:`chain_edges`, :func:`grid_edges`, :func:`from_networkx`, and
:func:`make_batch`, which converts the user-facing list-of-instances format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ._labels import as_label_array
from ._validation import check_edges, check_features, check_int, check_labels

__all__ = [
    "GraphBatch",
    "chain_edges",
    "grid_edges",
    "from_networkx",
    "make_batch",
    "check_instances",
    "split_instance",
    "is_forest",
]


def chain_edges(n_nodes: int) -> np.ndarray:
    """Edges of a chain ``0 - 1 - ... - (n_nodes - 1)``.

    Parameters
    ----------
    n_nodes : int
        Number of nodes (>= 1).

    Returns
    -------
    edges : ndarray of shape (n_nodes - 1, 2), int64
        ``edges[i] = (i, i + 1)``.
    """
    n = check_int(n_nodes, "n_nodes")
    return np.arange(n - 1, dtype=np.int64)[:, None] + np.array([0, 1], dtype=np.int64)


def grid_edges(height: int, width: int, connectivity: int = 4) -> np.ndarray:
    """Edges of a ``height x width`` grid with nodes numbered row-major.

    Parameters
    ----------
    height, width : int
        Grid size (>= 1 each).
    connectivity : {4, 8}
        4: horizontal and vertical neighbours; 8: diagonals too.

    Returns
    -------
    edges : ndarray of shape (n_edges, 2), int64
        Each edge ``(s, t)`` has ``s < t``; node ``(r, c)`` has index ``r * width + c``.
    """
    h = check_int(height, "height")
    w = check_int(width, "width")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    ids = np.arange(h * w, dtype=np.int64).reshape(h, w)
    parts = [
        np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], axis=1),   # right
        np.stack([ids[:-1, :].ravel(), ids[1:, :].ravel()], axis=1),   # down
    ]
    if connectivity == 8:
        parts.append(np.stack([ids[:-1, :-1].ravel(), ids[1:, 1:].ravel()], axis=1))  # down-right
        parts.append(np.stack([ids[:-1, 1:].ravel(), ids[1:, :-1].ravel()], axis=1))  # down-left
    edges = np.concatenate(parts, axis=0)
    edges = np.sort(edges, axis=1)
    return np.ascontiguousarray(edges, dtype=np.int64)


def is_forest(edges: np.ndarray, n_nodes: int) -> bool:
    """Whether the undirected graph has no cycle.

    A graph without duplicate edges is a forest exactly when
    ``n_edges == n_nodes - n_connected_components``.

    Parameters
    ----------
    edges : ndarray of shape (n_edges, 2)
        Node indices in ``0..n_nodes-1``; assumed free of duplicates/self-loops.
    n_nodes : int
    """
    from scipy.sparse.csgraph import connected_components

    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if len(edges) >= n_nodes:
        return False
    adjacency = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    n_components = connected_components(adjacency, directed=False, return_labels=False)
    return len(edges) == n_nodes - n_components


def from_networkx(graph, *, feature_attr: str = "x", label_attr: str = "y",
                  edge_feature_attr: str = "x", require_labels: bool = False):
    """Convert a networkx graph to arrays.

    Parameters
    ----------
    graph : networkx.Graph
        Undirected graph. Each node carries a feature vector in attribute
        ``feature_attr`` (a 1-D array-like or a 1-row sparse matrix); optionally
        a label in ``label_attr``; each edge optionally carries edge features
        in ``edge_feature_attr`` (all edges or none). Node names can be any
        hashable values; node order is ``list(graph.nodes)``.
    require_labels : bool
        Raise if some node has no label.

    Returns
    -------
    features : ndarray (n_nodes, n_features) or csr_matrix
    edges : ndarray (n_edges, 2) int64
    edge_features : ndarray (n_edges, n_edge_features) or None
    labels : list or None
        Raw node labels in node order (not yet encoded), or None when no node has one.
    nodes : list
        Node names in the order used for rows of ``features``.
    """
    import networkx as nx

    if not isinstance(graph, nx.Graph):
        raise TypeError(f"expected a networkx graph, got {type(graph).__name__}")
    if graph.is_directed():
        raise ValueError("the CRF graph must be undirected; convert with graph.to_undirected()")
    if graph.is_multigraph():
        raise ValueError("multigraphs are not supported: merge parallel edges first")
    nodes = list(graph.nodes)
    if not nodes:
        raise ValueError("the networkx graph has no nodes")
    index = {node: i for i, node in enumerate(nodes)}
    rows = []
    for node in nodes:
        data = graph.nodes[node]
        if feature_attr not in data:
            raise ValueError(f"node {node!r} has no feature attribute {feature_attr!r}")
        value = data[feature_attr]
        if sp.issparse(value):
            rows.append(sp.csr_matrix(value).reshape(1, -1))
        else:
            vec = np.asarray(value, dtype=np.float64).ravel() if not isinstance(value, (str, bytes)) else None
            if vec is None:
                raise TypeError(f"node {node!r}: feature attribute {feature_attr!r} must be numeric")
            rows.append(vec)
    if any(sp.issparse(r) for r in rows):
        features = sp.vstack([sp.csr_matrix(r).reshape(1, -1) for r in rows], format="csr")
    else:
        lengths = {len(r) for r in rows}
        if len(lengths) != 1:
            raise ValueError(f"node feature vectors have different lengths {sorted(lengths)}")
        features = np.vstack(rows)
    has_label = [label_attr in graph.nodes[n] for n in nodes]
    if any(has_label) and not all(has_label):
        missing = nodes[has_label.index(False)]
        raise ValueError(f"node {missing!r} has no {label_attr!r} attribute while other nodes do")
    if require_labels and not all(has_label):
        raise ValueError(f"nodes need a {label_attr!r} attribute when y is not given")
    labels = [graph.nodes[n][label_attr] for n in nodes] if all(has_label) else None

    edge_list = []
    edge_feats = []
    for s, t, data in graph.edges(data=True):
        if s == t:
            raise ValueError(f"the networkx graph has a self-loop at node {s!r}")
        edge_list.append((index[s], index[t]))
        edge_feats.append(data.get(edge_feature_attr))
    edges = np.asarray(edge_list, dtype=np.int64).reshape(-1, 2)
    present = [f is not None for f in edge_feats]
    if any(present) and not all(present):
        raise ValueError(f"some edges have edge features {edge_feature_attr!r} and some do not")
    edge_features = None
    if edge_feats and all(present):
        edge_features = np.vstack([np.asarray(f, dtype=np.float64).ravel() for f in edge_feats])
    return features, edges, edge_features, labels, nodes


@dataclass
class GraphBatch:
    """A batch of structured examples stored flat.

    Attributes
    ----------
    node_features : ndarray of shape (n_nodes_total, n_features) float64, or csr_matrix
        Features of all nodes, example after example.
    node_offsets : ndarray of shape (n_examples + 1,) int64
        Nodes of example ``i`` are rows ``node_offsets[i]:node_offsets[i+1]``.
    edges : ndarray of shape (n_edges_total, 2) int64
        Edges with **global** node indices (already offset), example after example.
    edge_offsets : ndarray of shape (n_examples + 1,) int64
        Edges of example ``i`` are rows ``edge_offsets[i]:edge_offsets[i+1]``.
    edge_features : ndarray of shape (n_edges_total, n_edge_features) float64 or None
        None means one pairwise matrix shared by all edges.
    labels : ndarray of shape (n_nodes_total,) int64 or None
        Encoded labels in ``0..n_states-1``.
    node_names : list or None
        Per example, the node names of networkx inputs (None for array inputs).
    """

    node_features: Any
    node_offsets: np.ndarray
    edges: np.ndarray
    edge_offsets: np.ndarray
    edge_features: np.ndarray | None = None
    labels: np.ndarray | None = None
    node_names: list | None = field(default=None, repr=False)

    @property
    def n_examples(self) -> int:
        return len(self.node_offsets) - 1

    @property
    def n_nodes(self) -> int:
        return int(self.node_offsets[-1])

    @property
    def n_edges(self) -> int:
        return int(self.edge_offsets[-1])

    @property
    def n_features(self) -> int:
        return int(self.node_features.shape[1])

    @property
    def n_edge_features(self) -> int | None:
        return None if self.edge_features is None else int(self.edge_features.shape[1])

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.node_features)

    @property
    def lengths(self) -> np.ndarray:
        """Nodes per example."""
        return np.diff(self.node_offsets)

    def node_slice(self, i: int) -> slice:
        return slice(int(self.node_offsets[i]), int(self.node_offsets[i + 1]))

    def edge_slice(self, i: int) -> slice:
        return slice(int(self.edge_offsets[i]), int(self.edge_offsets[i + 1]))

    def local_edges(self, i: int) -> np.ndarray:
        """Edges of example ``i`` with node indices local to that example."""
        return self.edges[self.edge_slice(i)] - self.node_offsets[i]

    def split_nodes(self, values: np.ndarray) -> list[np.ndarray]:
        """Split a per-node array (first axis ``n_nodes``) into one array per example."""
        return [values[self.node_slice(i)] for i in range(self.n_examples)]

    def example_of_node(self) -> np.ndarray:
        """Example index of every node, shape (n_nodes,)."""
        return np.repeat(np.arange(self.n_examples, dtype=np.int64), self.lengths)

    def degrees(self) -> np.ndarray:
        """Degree of every node, shape (n_nodes,), int64."""
        deg = np.zeros(self.n_nodes, dtype=np.int64)
        if self.n_edges:
            np.add.at(deg, self.edges[:, 0], 1)
            np.add.at(deg, self.edges[:, 1], 1)
        return deg

    def is_forest(self) -> bool:
        """Whether every example is a forest (exact inference applies)."""
        return bool(self.n_edges < self.n_nodes and is_forest(self.edges, self.n_nodes))

    def subset(self, indices: Sequence[int]) -> "GraphBatch":
        """A new batch holding the examples ``indices`` in that order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        lengths = self.lengths[indices]
        n_edges = np.diff(self.edge_offsets)[indices]
        node_idx = concat_ranges(self.node_offsets[indices], lengths)
        edge_idx = concat_ranges(self.edge_offsets[indices], n_edges)
        node_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        edge_offsets = np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64)
        shift = np.repeat(node_offsets[:-1] - self.node_offsets[indices], n_edges)
        edges = np.ascontiguousarray(self.edges[edge_idx] + shift[:, None], dtype=np.int64)
        feats = self.node_features[node_idx]
        return GraphBatch(
            node_features=feats if sp.issparse(feats) else np.ascontiguousarray(feats),
            node_offsets=node_offsets,
            edges=edges.reshape(-1, 2),
            edge_offsets=edge_offsets,
            edge_features=None if self.edge_features is None
            else np.ascontiguousarray(self.edge_features[edge_idx]),
            labels=None if self.labels is None else self.labels[node_idx],
            node_names=None if self.node_names is None else [self.node_names[i] for i in indices],
        )


def concat_ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``concatenate([arange(a, a + n) for a, n in zip(starts, sizes)])`` without a Python loop (int64)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    shift = np.asarray(starts, dtype=np.int64) - (np.cumsum(sizes) - sizes)
    return np.repeat(shift, sizes) + np.arange(total, dtype=np.int64)


def check_instances(X) -> list:
    """``X`` as a non-empty list of examples (rejecting one 2-D array, a sparse matrix, strings, dicts).

    Shared by every entry point that takes a list of examples (:func:`make_batch`,
    :class:`crflearn.NodeTransformer`, the neural estimator).
    """
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype != object:
        raise TypeError("X must be a list of examples (one (n_nodes, n_features) array per sequence), "
                        "not a single 2-D array; wrap it as [X] for one sequence")
    if X is None or sp.issparse(X) or isinstance(X, (str, bytes, dict)):
        raise TypeError(f"X must be a list of examples, got {type(X).__name__}")
    try:
        items = list(X)
    except TypeError:
        raise TypeError(f"X must be a list of examples, got {type(X).__name__}") from None
    if not items:
        raise ValueError("X is empty: at least one example is needed")
    return items


def split_instance(item, i: int):
    """One example's parts: ``(features, edges or None, edge_features or None, raw_labels or None, nodes or None)``.

    ``features`` are as given (not yet checked) for arrays and tuples; numeric
    (via :func:`from_networkx`) for networkx graphs. ``edges`` None means a chain.
    """
    import networkx as nx

    if isinstance(item, nx.Graph):
        return from_networkx(item)
    if sp.issparse(item):  # before the dict test: dok_matrix is a dict
        return item, None, None, None, None
    if isinstance(item, tuple):
        if len(item) in (2, 3):
            return item[0], item[1], (item[2] if len(item) == 3 else None), None, None
        raise ValueError(f"X[{i}] is a tuple of length {len(item)}; expected (features, edges) "
                         "or (features, edges, edge_features)")
    if isinstance(item, (str, bytes, dict)) or item is None:
        raise TypeError(f"X[{i}] has unsupported type {type(item).__name__}; expected an array "
                        "(n_nodes, n_features), a (features, edges[, edge_features]) tuple or a networkx graph")
    return item, None, None, None, None


def _edge_feature_rows(efeats, n_edges: int, i: int):
    """Edge features of an example as (n_edges, q) float64; for an example without edges any empty
    array is accepted and returned with q columns when its shape says so, else as shape (0, 0)."""
    if n_edges:
        return check_features(efeats, f"X[{i}] edge_features", allow_sparse=False, n_rows=n_edges)
    arr = np.asarray(efeats) if not sp.issparse(efeats) else efeats
    if arr.size:
        raise ValueError(f"X[{i}] has no edges but {arr.size} edge feature values")
    width = arr.shape[1] if arr.ndim == 2 else 0
    return np.zeros((0, width))


def _stack_edge_features(efeats_list: list, n_edge_features) -> np.ndarray | None:
    """All examples' edge features as one (n_edges_total, q) array, or None (shared pairwise)."""
    has_e = [e is not None for e in efeats_list]
    if any(has_e) and not all(has_e):
        raise ValueError("some examples have edge features and some do not; give all or none")
    if not all(has_e):
        stacked = None
    else:
        widths = {e.shape[1] for e in efeats_list if e.shape[0] or e.shape[1]}
        if len(widths) > 1:
            raise ValueError(f"edge feature widths differ between examples: {sorted(widths)}")
        width = widths.pop() if widths else n_edge_features
        if not isinstance(width, int) or width == 0:
            raise ValueError("edge features have no columns (give the edge features of an example "
                             "without edges as an array of shape (0, n_edge_features))")
        stacked = np.ascontiguousarray(np.vstack([e.reshape(-1, width) for e in efeats_list]))
    if n_edge_features != "infer":
        got = None if stacked is None else stacked.shape[1]
        if got != n_edge_features:
            raise ValueError(f"expected {n_edge_features if n_edge_features is not None else 'no'} edge "
                             f"features, got {got if got is not None else 'none'}")
    return stacked


def _raw_labels_of(y_items, i: int, n: int, labels):
    if y_items is None:
        return None if labels is None else as_label_array(labels)
    lab_arr = as_label_array(y_items[i])
    if lab_arr.ndim != 1:
        raise ValueError(f"y[{i}] must be 1-D with one label per node, got shape {lab_arr.shape}")
    if lab_arr.shape[0] != n:
        raise ValueError(f"y[{i}] has {lab_arr.shape[0]} labels but X[{i}] has {n} nodes")
    return lab_arr


def _encode(raw_labels: list, label_encoder) -> np.ndarray:
    parts = []
    for i, lab in enumerate(raw_labels):
        codes = label_encoder(lab) if label_encoder is not None else check_labels(lab, len(lab), None,
                                                                                    name=f"y[{i}]")
        parts.append(np.asarray(codes, dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(parts))


def make_batch(X: Sequence, y: Sequence | None = None, *, n_features: int | None = None,
               n_edge_features: int | None | str = "infer",
               label_encoder=None) -> tuple[GraphBatch, list | None]:
    """Validate a list of instances and convert it into a :class:`GraphBatch` (THE input parser).

    Parameters
    ----------
    X : list
        Each item is one of: an array or any scipy sparse matrix ``(n_nodes,
        n_features)`` (a chain); a tuple ``(features, edges)`` or ``(features,
        edges, edge_features)`` (any graph; ``edges`` local to the example,
        possibly empty; the edge features of an example without edges may be
        any empty array, shape ``(0, n_edge_features)`` when no example has
        edges); a networkx graph with node attribute ``"x"`` (and ``"y"``).
    y : list of 1-D arrays, optional
        Raw labels per example (any hashable values). When omitted, labels are
        taken from networkx ``"y"`` attributes if every example has them.
    n_features : int, optional
        Expected number of node features (e.g. ``n_features_in_`` at predict time).
    n_edge_features : int, None or "infer"
        Expected number of edge features; None means "no edge features".
    label_encoder : callable, optional
        Maps a 1-D array of raw labels to int64 codes (raising ``ValueError``
        for unknown labels). When None, raw labels must already be
        non-negative integers.

    Returns
    -------
    batch : GraphBatch
        ``batch.labels`` holds encoded labels when labels were available.
    raw_labels : list of ndarray or None
        The raw labels per example (before encoding), or None.
    """
    items = check_instances(X)
    y_items = None
    if y is not None:
        if isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype != object and len(items) != len(y):
            raise TypeError("y must be a list with one label array per example")
        y_items = list(y)
        if len(y_items) != len(items):
            raise ValueError(f"X has {len(items)} examples but y has {len(y_items)}")

    feats_list, edges_list, efeats_list, raw_labels, names = [], [], [], [], []
    for i, item in enumerate(items):
        feats, edges, efeats, labels, nodes = split_instance(item, i)
        feats = check_features(feats, f"X[{i}] features", n_columns=n_features)
        n_features, n = feats.shape[1], feats.shape[0]
        edges = chain_edges(n) if edges is None else check_edges(edges, n, f"X[{i}] edges")
        feats_list.append(feats)
        edges_list.append(edges)
        efeats_list.append(None if efeats is None else _edge_feature_rows(efeats, len(edges), i))
        names.append(nodes)
        raw_labels.append(_raw_labels_of(y_items, i, n, labels))
    edge_features = _stack_edge_features(efeats_list, n_edge_features)

    lengths = np.array([f.shape[0] for f in feats_list], dtype=np.int64)
    node_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    edge_offsets = np.concatenate([[0], np.cumsum([len(e) for e in edges_list])]).astype(np.int64)
    if any(sp.issparse(f) for f in feats_list):
        node_features = sp.vstack([sp.csr_matrix(f) for f in feats_list], format="csr")
    else:
        node_features = np.ascontiguousarray(np.vstack(feats_list))
    edges = np.concatenate([e + node_offsets[i] for i, e in enumerate(edges_list)]).reshape(-1, 2)

    have_labels = all(lab is not None for lab in raw_labels)
    if not have_labels and y is None and any(lab is not None for lab in raw_labels):
        raise ValueError("only some networkx graphs carry 'y' labels; give y explicitly or label all")
    encoded = _encode(raw_labels, label_encoder) if have_labels else None
    batch = GraphBatch(node_features, node_offsets, np.ascontiguousarray(edges, dtype=np.int64),
                       edge_offsets, edge_features, encoded,
                       names if any(nm is not None for nm in names) else None)
    return batch, (raw_labels if have_labels else None)
