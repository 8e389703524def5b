"""Exact sum-product and max-product on forests, all examples of a batch in one call (Numba).

Both kernels follow a BFS schedule (see :mod:`inference_schedule`): an upward
pass in reverse BFS order sends every node's message to its parent, a downward
pass in BFS order sends the parent's "outside" message back.

Sum-product messages are computed in exp-space for speed,
``log sum_b exp(x_b + Q_ab) = max(x) + max_b(Q_ab) + log sum_b exp(x_b - max x) exp(Q_ab - max_b Q_ab)``,
with the two factors precomputed; whenever the sum falls below ``TINY`` (so
that underflow could cost accuracy, e.g. widely spread potentials) the entry
is recomputed with an exact max-shifted log-sum-exp. ``-inf`` entries
(forbidden states or pairs) are exact zeros throughout.

Status codes: 0 ok, 1 some example has no labelling of finite score.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TINY = 1e-280


@njit(cache=True)
def exp_form(pw, transpose, E, shift):
    """``E[a, b] = exp(Q[a, b] - shift[a])`` with ``shift[a] = max_b Q[a, b]``, ``Q = pw`` or ``pw.T``."""
    k = pw.shape[0]
    for a in range(k):
        m = -np.inf
        for b in range(k):
            q = pw[b, a] if transpose else pw[a, b]
            if q > m:
                m = q
        shift[a] = m
        if m == -np.inf:
            for b in range(k):
                E[a, b] = 0.0
        else:
            for b in range(k):
                q = pw[b, a] if transpose else pw[a, b]
                E[a, b] = np.exp(q - m)


@njit(cache=True)
def lse_vector(x):
    """Log-sum-exp of a 1-D array (``-inf`` when every entry is ``-inf``)."""
    m = -np.inf
    for i in range(x.shape[0]):
        if x[i] > m:
            m = x[i]
    if m == -np.inf:
        return -np.inf
    s = 0.0
    for i in range(x.shape[0]):
        s += np.exp(x[i] - m)
    return m + np.log(s)


@njit(cache=True)
def lse_message(x, pw, transpose, E, shift, ex, ssum, out):
    """``out[a] = log sum_b exp(x[b] + Q[a, b])`` with ``Q = pw`` (or ``pw.T``) and its exp-form ``E, shift``.

    Leaves ``ex[b] = exp(x[b] - max x)`` and the fast sums ``ssum[a] = sum_b ex[b] E[a, b]``
    behind for :func:`fast_pair_table`. Returns 0, or 1 when the exact fallback
    was used for some entry (or ``x`` is all ``-inf``), in which case ``ex`` /
    ``ssum`` must not be reused.
    """
    k = x.shape[0]
    mx = -np.inf
    for b in range(k):
        if x[b] > mx:
            mx = x[b]
    if mx == -np.inf:
        for a in range(k):
            out[a] = -np.inf
        return 1
    for b in range(k):
        ex[b] = np.exp(x[b] - mx)
    flag = 0
    for a in range(k):
        if shift[a] == -np.inf:
            out[a] = -np.inf
            ssum[a] = 0.0
            continue
        s = 0.0
        for b in range(k):
            s += ex[b] * E[a, b]
        ssum[a] = s
        if s > TINY:
            out[a] = mx + shift[a] + np.log(s)
        else:  # exact fallback: the fast sum underflowed or every term is zero
            flag = 1
            m2 = -np.inf
            for b in range(k):
                q = pw[b, a] if transpose else pw[a, b]
                t = x[b] + q
                if t > m2:
                    m2 = t
            if m2 == -np.inf:
                out[a] = -np.inf
            else:
                s2 = 0.0
                for b in range(k):
                    q = pw[b, a] if transpose else pw[a, b]
                    s2 += np.exp(x[b] + q - m2)
                out[a] = m2 + np.log(s2)
    return flag


@njit(cache=True)
def fast_pair_table(u, shift, E, ex, ssum, B, T):
    """Normalised ``T[x, y] ∝ exp(u[x] + Q[x, y] + w[y])`` reusing a message computation.

    ``ex`` and ``ssum`` come from ``lse_message(w, ...)`` with the same exp-form
    ``E, shift`` of ``Q``: then ``T[x, y] = B[x] E[x, y] ex[y] / S`` with
    ``B[x] = exp(u[x] + shift[x] - max)`` and ``S = sum_x B[x] ssum[x]``, which
    costs ``K`` exponentials. Returns 0, or 1 when ``S`` is too small (the
    caller then uses the exact :func:`pair_table`).
    """
    k = u.shape[0]
    m1 = -np.inf
    for x in range(k):
        t = u[x] + shift[x]
        if t > m1:
            m1 = t
    if m1 == -np.inf:
        return 1
    total = 0.0
    for x in range(k):
        B[x] = np.exp(u[x] + shift[x] - m1)
        total += B[x] * ssum[x]
    if not total > TINY:
        return 1
    inv = 1.0 / total
    for x in range(k):
        c = B[x] * inv
        for y in range(k):
            T[x, y] = c * E[x, y] * ex[y]
    return 0


@njit(cache=True)
def pair_table(u, w, pw, transpose, E, shift, A, B, T):
    """Normalised ``T[x, y] ∝ exp(u[x] + Q[x, y] + w[y])`` (``Q = pw`` or ``pw.T``). Returns 0, or 1 if all zero."""
    k = u.shape[0]
    m1 = -np.inf
    for x in range(k):
        t = u[x] + shift[x]
        if t > m1:
            m1 = t
    m2 = -np.inf
    for y in range(k):
        if w[y] > m2:
            m2 = w[y]
    total = 0.0
    if m1 > -np.inf and m2 > -np.inf:
        for x in range(k):
            A[x] = np.exp(u[x] + shift[x] - m1)
        for y in range(k):
            B[y] = np.exp(w[y] - m2)
        for x in range(k):
            ax = A[x]
            for y in range(k):
                v = ax * E[x, y] * B[y]
                T[x, y] = v
                total += v
    if total > TINY:
        inv = 1.0 / total
        for x in range(k):
            for y in range(k):
                T[x, y] *= inv
        return 0
    # exact fallback in log space
    m = -np.inf
    for x in range(k):
        for y in range(k):
            q = pw[y, x] if transpose else pw[x, y]
            t = u[x] + q + w[y]
            T[x, y] = t
            if t > m:
                m = t
    if m == -np.inf:
        for x in range(k):
            for y in range(k):
                T[x, y] = 0.0
        return 1
    s = 0.0
    for x in range(k):
        for y in range(k):
            s += np.exp(T[x, y] - m)
    lz = m + np.log(s)
    for x in range(k):
        for y in range(k):
            T[x, y] = np.exp(T[x, y] - lz)
    return 0


@njit(cache=True)
def forest_sum_product(unary, pw3, shared, node_offsets, active, order, parent, parent_edge, parent_first,
                       edge_mode, node_marg, edge_out, log_partition):
    """Exact marginals and log-partition of every active (forest) example.

    Parameters
    ----------
    unary : (N, K) float64
    pw3 : (P, K, K) float64; ``P = 1`` when ``shared`` else one slice per edge
    active : (n_examples,) uint8; examples to process
    order, parent, parent_edge, parent_first : BFS schedule (int64 / uint8)
    edge_mode : 0 per-edge marginals into ``edge_out[e]``; 1 summed into ``edge_out[0]``; 2 none
    node_marg : (N, K) output; edge_out : (M, K, K), (1, K, K) or (0, K, K) output
    log_partition : (n_examples,) output

    Returns
    -------
    status : 0 ok, 1 an example has no labelling of finite score (its outputs are NaN)
    """
    n, k = unary.shape
    belief = unary.copy()
    msg_up = np.empty((n, k))
    er = np.empty((k, k))
    sr = np.empty(k)
    ec = np.empty((k, k))
    sc = np.empty(k)
    E = np.empty((k, k))
    sh = np.empty(k)
    ex = np.empty(k)
    ssum = np.empty(k)
    cav = np.empty(k)
    tmp = np.empty(k)
    A = np.empty(k)
    B = np.empty(k)
    T = np.empty((k, k))
    if shared:
        exp_form(pw3[0], False, er, sr)
        exp_form(pw3[0], True, ec, sc)
    status = 0
    n_examples = node_offsets.shape[0] - 1
    for i in range(n_examples):
        if not active[i]:
            continue
        lo = node_offsets[i]
        hi = node_offsets[i + 1]
        # upward pass: child -> parent, message over the parent's states
        for j in range(hi - 1, lo - 1, -1):
            v = order[j]
            p = parent[v]
            if p < 0:
                continue
            e = parent_edge[v]
            # Q[a_p, b_v] = pw[a_p, b_v] if the parent is edges[e, 0] else pw[b_v, a_p]
            tr = parent_first[v] == 0
            slot = 0 if shared else e
            if shared:
                if tr:
                    lse_message(belief[v], pw3[0], True, ec, sc, ex, ssum, msg_up[v])
                else:
                    lse_message(belief[v], pw3[0], False, er, sr, ex, ssum, msg_up[v])
            else:
                exp_form(pw3[slot], tr, E, sh)
                lse_message(belief[v], pw3[slot], tr, E, sh, ex, ssum, msg_up[v])
            for a in range(k):
                belief[p, a] += msg_up[v, a]
        lz = 0.0
        for j in range(lo, hi):
            v = order[j]
            if parent[v] < 0:
                lz += lse_vector(belief[v])
        log_partition[i] = lz
        if lz == -np.inf:
            status = 1
            for j in range(lo, hi):
                for a in range(k):
                    node_marg[order[j], a] = np.nan
            continue
        # downward pass: parent -> child, message over the child's states
        for j in range(lo, hi):
            v = order[j]
            p = parent[v]
            if p < 0:
                continue
            e = parent_edge[v]
            for a in range(k):
                cav[a] = -np.inf if msg_up[v, a] == -np.inf else belief[p, a] - msg_up[v, a]
            # Q[b_v, a_p] = pw[a_p, b_v] if the parent is edges[e, 0] (transpose) else pw[b_v, a_p]
            tr = parent_first[v] == 1
            slot = 0 if shared else e
            if shared:
                if tr:
                    Eu = ec
                    su = sc
                else:
                    Eu = er
                    su = sr
            else:
                exp_form(pw3[slot], tr, E, sh)
                Eu = E
                su = sh
            flag = lse_message(cav, pw3[slot], tr, Eu, su, ex, ssum, tmp)
            if edge_mode != 2:
                # T[b_v, a_p] ∝ exp(belief_v[b] + Q[b, a] + cav[a]) (belief_v still excludes the parent side)
                if flag != 0 or fast_pair_table(belief[v], su, Eu, ex, ssum, B, T) != 0:
                    pair_table(belief[v], cav, pw3[slot], tr, Eu, su, A, B, T)
                # the child's marginal is the row sum of the pair table
                for b in range(k):
                    acc = 0.0
                    for a in range(k):
                        acc += T[b, a]
                    node_marg[v, b] = acc
                if edge_mode == 0:
                    if tr:
                        for a in range(k):
                            for b in range(k):
                                edge_out[e, a, b] = T[b, a]
                    else:
                        for a in range(k):
                            for b in range(k):
                                edge_out[e, a, b] = T[a, b]
                else:
                    if tr:
                        for a in range(k):
                            for b in range(k):
                                edge_out[0, a, b] += T[b, a]
                    else:
                        for a in range(k):
                            for b in range(k):
                                edge_out[0, a, b] += T[a, b]
            for b in range(k):
                belief[v, b] += tmp[b]
        for j in range(lo, hi):
            v = order[j]
            if edge_mode != 2 and parent[v] >= 0:
                continue  # already set from the pair table
            m = lse_vector(belief[v])
            for a in range(k):
                node_marg[v, a] = np.exp(belief[v, a] - m)
    return status


@njit(cache=True)
def forest_max_product(unary, pw3, shared, node_offsets, active, order, parent, parent_edge, parent_first,
                       labels, scores):
    """Exact MAP labelling (max-product with back-pointers) of every active (forest) example.

    Fills ``labels`` (N,) and ``scores`` (n_examples,) (``-inf`` when no labelling
    has a finite score; labels are then arbitrary). Returns 0.
    """
    n, k = unary.shape
    belief = unary.copy()
    back = np.empty((n, k), dtype=np.int64)
    n_examples = node_offsets.shape[0] - 1
    for i in range(n_examples):
        if not active[i]:
            continue
        lo = node_offsets[i]
        hi = node_offsets[i + 1]
        for j in range(hi - 1, lo - 1, -1):
            v = order[j]
            p = parent[v]
            if p < 0:
                continue
            slot = 0 if shared else parent_edge[v]
            pw = pw3[slot]
            if parent_first[v] == 1:
                for a in range(k):
                    best = -np.inf
                    arg = 0
                    for b in range(k):
                        t = belief[v, b] + pw[a, b]
                        if t > best:
                            best = t
                            arg = b
                    belief[p, a] += best
                    back[v, a] = arg
            else:
                for a in range(k):
                    best = -np.inf
                    arg = 0
                    for b in range(k):
                        t = belief[v, b] + pw[b, a]
                        if t > best:
                            best = t
                            arg = b
                    belief[p, a] += best
                    back[v, a] = arg
        total = 0.0
        for j in range(lo, hi):
            v = order[j]
            p = parent[v]
            if p < 0:
                best = -np.inf
                arg = 0
                for a in range(k):
                    if belief[v, a] > best:
                        best = belief[v, a]
                        arg = a
                labels[v] = arg
                total += best
            else:
                labels[v] = back[v, labels[p]]
        scores[i] = total
    return 0
