"""Exact top-k (n-best) decoding of chains: the ``k`` most likely labellings, best first.

The kernel is list Viterbi (:mod:`crflearn._kernels.kbest`); ``-inf`` scores forbid states
or transitions (see :mod:`crflearn.inference.constraints`) and such labellings are never
returned.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from .._kernels.kbest import kbest_chain, make_work
from .._validation import check_int, check_scores
from ..graphs import chain_edges

__all__ = ["TopKResult", "top_k_decode", "top_k_decode_batch"]


class TopKResult(NamedTuple):
    """The best labellings of one chain.

    Attributes
    ----------
    labels : ndarray of shape (m, n_nodes), int64
        The ``m <= k`` best labellings, best first (``m < k`` when fewer labellings have a
        finite score).
    scores : ndarray of shape (m,)
        Their scores (sum of the unary and pairwise log-potentials), non-increasing.
    """

    labels: np.ndarray
    scores: np.ndarray


def _pw3(pairwise: np.ndarray, n_edges: int, n_states: int) -> tuple[np.ndarray, bool]:
    if pairwise.ndim == 2 and pairwise.shape == (n_states, n_states):
        return np.ascontiguousarray(pairwise[None]), True
    if pairwise.ndim == 3 and pairwise.shape == (n_edges, n_states, n_states):
        return np.ascontiguousarray(pairwise), False
    raise ValueError(f"pairwise must have shape ({n_states}, {n_states}) or ({n_edges}, {n_states}, "
                     f"{n_states}), got {pairwise.shape}")


def _solve(unary: np.ndarray, pw3: np.ndarray, shared: bool, k: int, work) -> TopKResult:
    n = unary.shape[0]
    labels = np.zeros((k, n), dtype=np.int64)
    scores = np.zeros(k)
    found = kbest_chain(unary, pw3, shared, work, labels, scores)
    if found == 0:
        raise ValueError("no labelling has a finite score (the forbidden states or transitions exclude "
                         "every labelling)")
    return TopKResult(labels[:found], scores[:found])


def top_k_decode(unary: ArrayLike, pairwise: ArrayLike, k: int, *, check_input: bool = True) -> TopKResult:
    """The ``k`` highest-scoring labellings of a chain ``0 - 1 - ... - n-1``.

    Parameters
    ----------
    unary : array-like of shape (n_nodes, n_states)
        Node scores; ``-inf`` forbids a state.
    pairwise : array-like of shape (n_states, n_states) or (n_nodes - 1, n_states, n_states)
        Transition scores, shared or per edge ``(t, t + 1)``; ``pairwise[., a, b]`` scores
        ``y_t = a, y_{t+1} = b``; ``-inf`` forbids the transition.
    k : int
        Number of labellings wanted (>= 1).
    check_input : bool, default=True
        Validate the arrays (False: the caller did).

    Returns
    -------
    TopKResult
        ``labels (m, n_nodes)`` and ``scores (m,)`` with ``m = min(k, number of labellings of
        finite score)``, best first; ties in order of the lower state index at the last node.

    Raises
    ------
    ValueError
        If no labelling has a finite score, or on malformed input.

    Examples
    --------
    >>> import numpy as np
    >>> res = top_k_decode(np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros((2, 2)), k=2)
    >>> res.labels.tolist(), res.scores.tolist()
    ([[0, 1], [1, 1]], [3.0, 2.0])
    """
    k = check_int(k, "k", 1)
    if check_input:
        unary = check_scores(unary, "unary")
        pairwise = check_scores(pairwise, "pairwise")
        if unary.ndim != 2 or unary.shape[0] == 0 or unary.shape[1] == 0:
            raise ValueError(f"unary must have shape (n_nodes, n_states) with n_nodes, n_states >= 1, "
                             f"got {unary.shape}")
    n, n_states = unary.shape
    pw3, shared = _pw3(pairwise, n - 1, n_states)
    return _solve(unary, pw3, shared, k, make_work(n, n_states, k))


def top_k_decode_batch(unary: ArrayLike, pairwise: ArrayLike, edges: ArrayLike, node_offsets: ArrayLike,
                       edge_offsets: ArrayLike, k: int) -> list[TopKResult]:
    """:func:`top_k_decode` of every example of a flat batch of chains.

    Parameters
    ----------
    unary : array-like of shape (n_nodes_total, n_states)
    pairwise : array-like of shape (n_states, n_states) or (n_edges_total, n_states, n_states)
    edges : array-like of shape (n_edges_total, 2)
        Global node indices; example ``i`` must be the chain ``(s, s + 1), (s + 1, s + 2), ...``
        in this order (as :func:`crflearn.graphs.make_batch` builds for arrays).
    node_offsets, edge_offsets : array-like of shape (n_examples + 1,)
    k : int

    Returns
    -------
    list of TopKResult
        One per example.

    Raises
    ------
    ValueError
        If an example is not a chain in that edge order (the message names it).
    """
    k = check_int(k, "k", 1)
    unary = check_scores(unary, "unary")
    pairwise = check_scores(pairwise, "pairwise")
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    node_offsets = np.asarray(node_offsets, dtype=np.int64)
    edge_offsets = np.asarray(edge_offsets, dtype=np.int64)
    n_states = unary.shape[1]
    lengths = np.diff(node_offsets)
    work = make_work(int(lengths.max()), n_states, k)
    out = []
    for i, n in enumerate(lengths.tolist()):
        e0, e1 = int(edge_offsets[i]), int(edge_offsets[i + 1])
        if not np.array_equal(edges[e0:e1] - node_offsets[i], chain_edges(n)):
            raise ValueError(f"top-k decoding needs chains: example {i} is not the chain 0 - 1 - ... - {n - 1}")
        pw = pairwise if pairwise.ndim == 2 else pairwise[e0:e1]
        pw3, shared = _pw3(pw, n - 1, n_states)
        out.append(_solve(np.ascontiguousarray(unary[node_offsets[i]:node_offsets[i + 1]]), pw3, shared, k,
                          work))
    return out
