"""Exact k-best Viterbi on a chain (Numba): the ``k`` highest-scoring labellings, best first.

List Viterbi: for every position ``t`` and state ``j`` keep the ``k`` best partial labellings
ending in ``j`` (their scores, and back-pointers to the predecessor's state and rank). The
``k`` best at ``(t, j)`` are among the ``K * k`` extensions of the lists at ``t - 1``, so
the recursion is exact; cost ``O(n K^2 k log(K k))``. ``-inf`` scores (forbidden states or
transitions) never enter a list, so fewer than ``k`` labellings come back when fewer than
``k`` have a finite score. Ties are broken by the lower (state, rank) index: the result is
deterministic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

__all__ = ["KBestWork", "make_work", "kbest_chain"]


class KBestWork(NamedTuple):
    """Scratch of :func:`kbest_chain` for chains of up to ``n`` nodes, ``K`` states, ``k`` paths."""

    delta: np.ndarray       # (n, K, k) float64: scores of the partial labellings
    back_state: np.ndarray  # (n, K, k) int64: predecessor state
    back_rank: np.ndarray   # (n, K, k) int64: predecessor rank
    cand: np.ndarray        # (K * k,) float64: extensions being ranked


def make_work(n: int, n_states: int, k: int) -> KBestWork:
    """Allocate the scratch of :func:`kbest_chain`."""
    shape = (max(n, 1), n_states, k)
    return KBestWork(np.empty(shape), np.empty(shape, dtype=np.int64), np.empty(shape, dtype=np.int64),
                     np.empty(n_states * k))


@njit(cache=True, nogil=True)
def kbest_chain(unary, pw3, shared, work, out_labels, out_scores):
    """The ``k`` best labellings of the chain ``0 - 1 - ... - n-1``.

    Parameters
    ----------
    unary : float64 (n, K)
        Node scores (finite or -inf).
    pw3 : float64 (P, K, K)
        Transition scores: ``pw3[0]`` for every edge when ``shared``, else ``pw3[t]`` scores the
        edge ``(t, t + 1)``; ``pw3[., a, b]`` scores ``y_t = a, y_{t+1} = b``.
    shared : bool
    work : KBestWork
        Scratch from :func:`make_work` (at least ``n`` positions, ``k = out_scores.size``).
    out_labels : int64 (k, n)
        Filled with the labellings, best first (rows beyond the returned count untouched).
    out_scores : float64 (k,)
        Their scores.

    Returns
    -------
    int
        How many labellings were found (``<= k``; fewer when fewer have a finite score).
    """
    n, n_states = unary.shape
    k = out_scores.shape[0]
    delta, back_state, back_rank, cand = work.delta, work.back_state, work.back_rank, work.cand
    delta[:n] = -np.inf
    for j in range(n_states):
        delta[0, j, 0] = unary[0, j]
    for t in range(1, n):
        q = pw3[0] if shared else pw3[t - 1]
        for j in range(n_states):
            for i in range(n_states):
                for r in range(k):
                    cand[i * k + r] = delta[t - 1, i, r] + q[i, j]
            order = np.argsort(-cand, kind="mergesort")
            for r in range(k):
                best = order[r]
                value = cand[best] + unary[t, j]
                if value == -np.inf:
                    break
                delta[t, j, r] = value
                back_state[t, j, r] = best // k
                back_rank[t, j, r] = best % k
    last = delta[n - 1].ravel()
    order = np.argsort(-last, kind="mergesort")
    found = 0
    for m in range(min(k, last.size)):
        best = order[m]
        if last[best] == -np.inf:
            break
        out_scores[m] = last[best]
        state, rank = best // k, best % k
        for t in range(n - 1, -1, -1):
            out_labels[m, t] = state
            if t > 0:
                state, rank = back_state[t, state, rank], back_rank[t, state, rank]
        found += 1
    return found
