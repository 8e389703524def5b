"""Input checks shared by every entry point.

Every public function converts and checks its inputs here, once, before any
compute: a wrong shape, a NaN or a bad label raises a ``ValueError`` or
``TypeError`` that names the argument and the offending value, never a Numba
typing error deep inside a kernel.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = [
    "check_features",
    "check_edges",
    "check_labels",
    "check_potentials",
    "check_scores",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_batch_structure",
    "structured_input_tags",
]


def structured_input_tags(tags, *, labels: bool = False):
    """scikit-learn tags of an estimator taking a list of structured examples (not one 2-D array).

    With ``labels``, ``y`` is required and is a list of label arrays (not 1-D labels).
    """
    tags.input_tags.two_d_array = False
    tags.input_tags.sparse = False
    tags.requires_fit = True
    if labels:
        tags.target_tags.required = True
        tags.target_tags.one_d_labels = False
    return tags


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_bool(value, name: str) -> bool:
    """Return ``value`` as a bool after checking it is ``True`` or ``False`` (numpy's included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def check_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(value, name: str, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float after checking it is finite and > 0."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {_describe(value)}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_nonnegative(value, name: str) -> float:
    """Return ``value`` as a float after checking it is finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a non-negative number, got {_describe(value)}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


#: largest feature magnitude accepted: squared norms of rows must stay far from float64 overflow (1.8e308)
MAX_FEATURE_MAGNITUDE = 1e100


def check_features(features, name: str = "features", *, allow_sparse: bool = True,
                   n_rows: int | None = None, n_columns: int | None = None):
    """Check a 2-D feature matrix and return it as float64 (C-contiguous or CSR).

    Parameters
    ----------
    features : array-like or scipy.sparse matrix of shape (n_rows, n_columns)
    name : str
        Argument name used in error messages.
    allow_sparse : bool
        Accept scipy.sparse input (returned as CSR float64 with sorted indices).
    n_rows, n_columns : int, optional
        Expected shape entries.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
    """
    if sp.issparse(features):
        if not allow_sparse:
            raise TypeError(f"{name} must be a dense array; sparse input is not supported here")
        if features.dtype.kind == "c":
            raise TypeError(f"{name} must be real, got complex dtype {features.dtype}")
        out = sp.csr_matrix(features, dtype=np.float64)  # any scipy format (dok, lil, coo, ...)
        out.sum_duplicates()
        out.sort_indices()
        data = out.data
        shape = out.shape
    else:
        if isinstance(features, (str, bytes)) or features is None:
            raise TypeError(f"{name} must be a 2-D numeric array, got {_describe(features)}")
        try:
            arr = np.asarray(features)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be a 2-D numeric array: {exc}") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        if arr.dtype.kind == "c":
            raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_nodes, n_features), got shape {arr.shape}")
        out = np.ascontiguousarray(arr, dtype=np.float64)
        data = out
        shape = out.shape
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: an example needs at least one node")
    if shape[1] == 0:
        raise ValueError(f"{name} has no feature columns (shape {shape})")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains NaN or infinite values")
    largest = float(np.max(np.abs(data))) if data.size else 0.0
    if largest > MAX_FEATURE_MAGNITUDE:
        raise ValueError(f"{name} has a value of magnitude {largest:.3g}, above {MAX_FEATURE_MAGNITUDE:g}: squared "
                         "norms and scores would overflow float64; rescale the features (e.g. StandardScaler "
                         "through crflearn.NodeTransformer)")
    if n_rows is not None and shape[0] != n_rows:
        raise ValueError(f"{name} has {shape[0]} rows, expected {n_rows}")
    if n_columns is not None and shape[1] != n_columns:
        raise ValueError(f"{name} has {shape[1]} features, expected {n_columns}")
    return out


def check_edges(edges, n_nodes: int, name: str = "edges") -> np.ndarray:
    """Check an edge list against ``n_nodes`` and return it as (E, 2) int64.

    Rejects self-loops, duplicate edges (in either orientation), indices out
    of range and wrong shapes. An empty edge list is allowed (all nodes
    independent).
    """
    if edges is None:
        return np.zeros((0, 2), dtype=np.int64)
    if sp.issparse(edges):
        raise TypeError(f"{name} must be an integer array of shape (n_edges, 2), got a sparse matrix")
    arr = np.asarray(edges)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)
                                   or (np.issubdtype(arr.dtype, np.floating)
                                       and np.all(np.isfinite(arr))
                                       and np.all(arr == np.round(arr)))):
        raise TypeError(f"{name} must hold integer node indices, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n_edges, 2), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    bad = (arr < 0) | (arr >= n_nodes)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"{name}[{row}] = {arr[row].tolist()} refers to a node outside 0..{n_nodes - 1}")
    loops = arr[:, 0] == arr[:, 1]
    if loops.any():
        row = int(np.flatnonzero(loops)[0])
        raise ValueError(f"{name}[{row}] = {arr[row].tolist()} is a self-loop")
    key = np.sort(arr, axis=1)
    key = key[:, 0] * n_nodes + key[:, 1]
    uniq, counts = np.unique(key, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[np.argmax(counts > 1)])
        raise ValueError(f"{name} contains the edge ({dup // n_nodes}, {dup % n_nodes}) more than once")
    return arr


def check_labels(labels, n_nodes: int, n_states: int | None = None, name: str = "y") -> np.ndarray:
    """Check integer labels for ``n_nodes`` nodes and return them as int64."""
    arr = np.asarray(labels)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)
                                   or (np.issubdtype(arr.dtype, np.floating)
                                       and np.all(np.isfinite(arr))
                                       and np.all(arr == np.round(arr)))):
        raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one label per node, got shape {arr.shape}")
    if arr.shape[0] != n_nodes:
        raise ValueError(f"{name} has {arr.shape[0]} labels but the example has {n_nodes} nodes")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if n_states is not None and arr.size and (arr.min() < 0 or arr.max() >= n_states):
        bad = arr[(arr < 0) | (arr >= n_states)][0]
        raise ValueError(f"{name} contains label {int(bad)} outside 0..{n_states - 1}")
    if n_states is None and arr.size and arr.min() < 0:
        raise ValueError(f"{name} contains the negative label {int(arr.min())}")
    return arr


def check_scores(values, name: str) -> np.ndarray:
    """Scores (log-potentials) as C-contiguous float64; rejects non-real dtypes, NaN and +inf (-inf forbids)."""
    arr = np.asarray(values)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if np.isnan(arr).any() or np.isposinf(arr).any():
        raise ValueError(f"{name} contains NaN or +inf (-inf is allowed and forbids a state or pair)")
    return arr


def check_potentials(unary, pairwise, edges):
    """Check potentials for single-graph inference.

    Parameters
    ----------
    unary : array-like of shape (n_nodes, n_states)
        Node log-potentials (scores; larger is more likely).
    pairwise : array-like of shape (n_states, n_states) or (n_edges, n_states, n_states)
        Edge log-potentials, shared or per edge; ``pairwise[e, a, b]`` scores
        ``y_s = a, y_t = b`` for ``edges[e] = (s, t)``.
    edges : array-like of shape (n_edges, 2)

    Returns
    -------
    unary : ndarray (n, K) float64
    pairwise : ndarray (K, K) or (E, K, K) float64
    edges : ndarray (E, 2) int64
    """
    u = check_scores(unary, "unary")
    if u.ndim != 2:
        raise ValueError(f"unary must have shape (n_nodes, n_states), got {u.shape}")
    if u.shape[0] == 0:
        raise ValueError("unary is empty: the graph needs at least one node")
    if u.shape[1] == 0:
        raise ValueError("unary has zero states")
    n, k = u.shape
    e = check_edges(edges, n, "edges")
    p = check_scores(pairwise, "pairwise")
    if p.ndim == 2:
        if p.shape != (k, k):
            raise ValueError(f"pairwise must have shape ({k}, {k}) or ({len(e)}, {k}, {k}), got {p.shape}")
    elif p.ndim == 3:
        if p.shape != (len(e), k, k):
            raise ValueError(f"pairwise must have shape ({k}, {k}) or ({len(e)}, {k}, {k}), got {p.shape}")
    else:
        raise ValueError(f"pairwise must be 2-D (shared) or 3-D (per edge), got shape {p.shape}")
    return u, p, e


def _check_offsets(offsets, name: str, total: int) -> np.ndarray:
    arr = np.asarray(offsets)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"{name} must be 1-D with n_examples + 1 >= 2 entries, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {int(arr[0])}")
    if (np.diff(arr) < 0).any():
        raise ValueError(f"{name} must be non-decreasing")
    if arr[-1] != total:
        raise ValueError(f"{name}[-1] = {int(arr[-1])} but there are {total} rows")
    return arr


def check_batch_structure(edges, node_offsets, edge_offsets, n_nodes: int):
    """Validate a flat batch's graph arrays; return ``(edges, node_offsets, edge_offsets)`` as int64.

    Edges must use global node indices, stay inside their own example, and
    contain no self-loops or duplicates.
    """
    e = check_edges(edges, n_nodes, "edges")
    no = _check_offsets(node_offsets, "node_offsets", n_nodes)
    eo = _check_offsets(edge_offsets, "edge_offsets", len(e))
    if len(no) != len(eo):
        raise ValueError(f"node_offsets has {len(no)} entries but edge_offsets has {len(eo)}; "
                         "both must have n_examples + 1")
    if len(e):
        ex = np.repeat(np.arange(len(no) - 1), np.diff(eo))
        lo = no[ex]
        hi = no[ex + 1]
        bad = (e[:, 0] < lo) | (e[:, 0] >= hi) | (e[:, 1] < lo) | (e[:, 1] >= hi)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"edges[{row}] = {e[row].tolist()} leaves its example {int(ex[row])} "
                             f"(nodes {int(lo[row])}..{int(hi[row]) - 1})")
    return e, no, eo
