"""Inference by enumerating every labelling (tiny graphs; the reference for tests).

Labellings are enumerated in chunks in mixed radix (node 0 varies fastest), so
memory stays bounded even at the limit of :data:`MAX_LABELINGS` labellings.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_LABELINGS", "bruteforce_marginals", "bruteforce_map"]

#: Largest number of labellings ``K ** n`` that brute force accepts.
MAX_LABELINGS = 1_000_000
_CHUNK = 1 << 15


def _check_size(n: int, k: int) -> int:
    if k ** n > MAX_LABELINGS:
        raise ValueError(f"method='bruteforce' would enumerate {k}^{n} labellings (more than "
                         f"{MAX_LABELINGS:,}); use it only on tiny graphs")
    return k ** n


def _chunks(unary: np.ndarray, pairwise: np.ndarray, edges: np.ndarray):
    """Yield ``(labels (c, n), scores (c,))`` over all labellings."""
    n, k = unary.shape
    total = _check_size(n, k)
    radix = k ** np.arange(n, dtype=np.int64)
    nodes = np.arange(n)
    s, t = edges[:, 0], edges[:, 1]
    eidx = np.arange(len(edges))
    for start in range(0, total, _CHUNK):
        idx = np.arange(start, min(total, start + _CHUNK), dtype=np.int64)
        labels = (idx[:, None] // radix[None, :]) % k
        scores = unary[nodes[None, :], labels].sum(axis=1)
        if len(edges):
            if pairwise.ndim == 2:
                scores = scores + pairwise[labels[:, s], labels[:, t]].sum(axis=1)
            else:
                scores = scores + pairwise[eidx[None, :], labels[:, s], labels[:, t]].sum(axis=1)
        yield labels, scores


def bruteforce_marginals(unary: np.ndarray, pairwise: np.ndarray, edges: np.ndarray,
                         with_edges: bool = True):
    """Exact node/edge marginals and log-partition by enumeration.

    Parameters
    ----------
    unary : ndarray (n, K); pairwise : ndarray (K, K) or (E, K, K); edges : ndarray (E, 2)
        Already validated (see :func:`crflearn._validation.check_potentials`).
    with_edges : bool
        Also return the edge marginals (E, K, K).

    Returns
    -------
    node_marginals : ndarray (n, K)
    edge_marginals : ndarray (E, K, K) or None
    log_partition : float
        ``-inf`` (and NaN marginals) when every labelling has score ``-inf``.
    """
    n, k = unary.shape
    m = -np.inf
    for _, scores in _chunks(unary, pairwise, edges):
        m = max(m, float(scores.max()))
    node = np.zeros((n, k))
    edge = np.zeros((len(edges), k, k)) if with_edges else None
    if m == -np.inf:
        node[:] = np.nan
        if edge is not None:
            edge[:] = np.nan
        return node, edge, -np.inf
    total = 0.0
    for labels, scores in _chunks(unary, pairwise, edges):
        p = np.exp(scores - m)
        total += p.sum()
        for v in range(n):
            node[v] += np.bincount(labels[:, v], weights=p, minlength=k)
        if edge is not None:
            for e, (s, t) in enumerate(edges):
                edge[e] += np.bincount(labels[:, s] * k + labels[:, t], weights=p,
                                       minlength=k * k).reshape(k, k)
    node /= total
    if edge is not None:
        edge /= total
    return node, edge, m + float(np.log(total))


def bruteforce_map(unary: np.ndarray, pairwise: np.ndarray, edges: np.ndarray):
    """The highest-scoring labelling by enumeration (first one in enumeration order on ties).

    Returns
    -------
    labels : ndarray (n,) int64
    score : float
    """
    best = -np.inf
    best_labels = np.zeros(unary.shape[0], dtype=np.int64)
    for labels, scores in _chunks(unary, pairwise, edges):
        j = int(np.argmax(scores))
        if scores[j] > best:
            best = float(scores[j])
            best_labels = labels[j].astype(np.int64)
    return best_labels, best
