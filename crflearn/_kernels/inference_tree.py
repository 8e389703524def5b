"""Exact inference on forests, all examples of a batch in one call (Numba).

One kernel, :func:`forest_pass`, runs sum-product (marginals and log-partition)
or max-product (MAP labelling and score): the semiring is a constant
(:data:`SUM` / :data:`MAX`) chosen at the message operator. The pass follows a
BFS schedule (:class:`~crflearn._kernels.inference_schedule.TreeSchedule`): an
upward pass in reverse BFS order sends every node's message to its parent; then
max-product back-tracks the labels from the roots, while sum-product sends the
parent's "outside" message back down and reads the pair and node marginals.

Sum-product messages are computed in exp-space for speed,
``log sum_b exp(x_b + Q_ab) = max(x) + max_b(Q_ab) + log sum_b exp(x_b - max x) exp(Q_ab - max_b Q_ab)``,
with the two factors precomputed; whenever the sum falls below ``TINY`` (so
that underflow could cost accuracy, e.g. widely spread potentials) the entry
is recomputed with an exact max-shifted log-sum-exp. ``-inf`` entries
(forbidden states or pairs) are exact zeros throughout.

Numerics: every sum-product log-message is normalised (the sender's largest
belief subtracted, the constant added to the log-partition), and every probability vector or table
is normalised by dividing by its sum, never through ``exp(b - logsumexp(b))``
(at scores of 1e16 the log-sum-exp rounds to the maximum and such rows would sum
to the number of tied states). Rows therefore sum to one within a few ulps for
any finite scores.

An example with no labelling of finite score gets ``values[i] = -inf`` (and NaN
marginals); the caller turns that into an error.
"""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

import numpy as np
from numba import njit

from .inference_schedule import TreeSchedule

TINY = 1e-280

#: Semirings of the message operator.
SUM = 0
MAX = 1


class Potentials(NamedTuple):
    """Log-potentials of a flat batch: ``unary (N, K)``; ``pw3 (P, K, K)`` with ``P = 1`` when
    ``shared`` (one matrix for every edge) else one slice per edge (float64, C-contiguous)."""

    unary: np.ndarray
    pw3: np.ndarray
    shared: bool


#: Scratch of a sum-product pass: exp-forms of the shared matrix (``er, sr``: ``Q = pw``;
#: ``ec, sc``: ``Q = pw.T``) and of one edge (``E, sh``), vectors of ``K`` and a ``K x K`` table ``T``.
TreeWork = namedtuple("TreeWork", "er sr ec sc E sh ex ssum cav tmp A B T")


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def lse_vector(x):
    """Log-sum-exp of a 1-D array (``-inf`` when every entry is ``-inf``)."""
    m = x.max()
    if m == -np.inf:
        return -np.inf
    s = 0.0
    for i in range(x.shape[0]):
        s += np.exp(x[i] - m)
    return m + np.log(s)


@njit(cache=True, nogil=True)
def normalise_log(x):
    """Subtract ``max(x)`` from ``x`` in place and return it (0 when ``x`` is all ``-inf``)."""
    m = x.max()
    if m == -np.inf:
        return 0.0
    for i in range(x.shape[0]):
        x[i] -= m
    return m


@njit(cache=True, nogil=True)
def normalised_exp(x, out):
    """``out = exp(x) / sum(exp(x))`` computed as ``exp(x - max) / sum`` (NaN when ``x`` is all ``-inf``)."""
    m = x.max()
    s = 0.0
    for i in range(x.shape[0]):
        out[i] = np.exp(x[i] - m)
        s += out[i]
    inv = 1.0 / s
    for i in range(x.shape[0]):
        out[i] *= inv


@njit(cache=True, nogil=True)
def softmax_table(L, P):
    """``P = exp(L) / sum(exp(L))`` (``P`` may be ``L``; all zero when ``L`` is all ``-inf``).

    Returns ``log sum exp(L)``. Normalised by dividing, so ``P`` sums to one at any scale.
    """
    m = L.max()
    s = 0.0
    for x in range(L.shape[0]):
        for y in range(L.shape[1]):
            P[x, y] = 0.0 if m == -np.inf else np.exp(L[x, y] - m)
            s += P[x, y]
    if s == 0.0:
        return -np.inf
    inv = 1.0 / s
    for x in range(L.shape[0]):
        for y in range(L.shape[1]):
            P[x, y] *= inv
    return m + np.log(s)


@njit(cache=True, inline="always")
def reduce_entry(semiring, x, pw, transpose, scale, a):
    """``(op_b (x[b] + scale * Q[a, b]), argmax_b)`` with ``Q = pw`` or ``pw.T`` and ``op`` the
    maximum (``MAX``) or a max-shifted log-sum-exp (``SUM``); the first maximiser wins ties."""
    k = x.shape[0]
    m = -np.inf
    arg = 0
    if transpose:
        for b in range(k):
            t = x[b] + scale * pw[b, a]
            if t > m:
                m = t
                arg = b
    else:
        for b in range(k):
            t = x[b] + scale * pw[a, b]
            if t > m:
                m = t
                arg = b
    if semiring == MAX or m == -np.inf:
        return m, arg
    s = 0.0
    for b in range(k):
        s += np.exp(x[b] + scale * (pw[b, a] if transpose else pw[a, b]) - m)
    return m + np.log(s), arg


@njit(cache=True, inline="always")
def direct_message(semiring, x, pw, transpose, scale, out, arg, accumulate):
    """``out[a] = op_b (x[b] + scale * Q[a, b])`` for every ``a`` (see :func:`reduce_entry`), or
    ``out[a] += ...`` when ``accumulate``; ``arg[a]`` receives the maximiser (the back-pointer)."""
    for a in range(out.shape[0]):
        v, arg[a] = reduce_entry(semiring, x, pw, transpose, scale, a)
        if accumulate:
            out[a] += v
        else:
            out[a] = v


@njit(cache=True, inline="always")
def lse_message(x, pw, transpose, E, shift, ex, ssum, out):
    """``out[a] = log sum_b exp(x[b] + Q[a, b]) - max(x)`` with ``Q = pw`` (or ``pw.T``) and its
    exp-form ``E, shift``: the log-message normalised by the constant ``max(x)``.

    Leaves ``ex[b] = exp(x[b] - max x)`` and the fast sums ``ssum[a] = sum_b ex[b] E[a, b]``
    behind for :func:`fast_pair_table`. Returns ``(max(x), flag)`` with ``flag`` 1 when the
    exact fallback was used for some entry (or ``x`` is all ``-inf``), in which case ``ex`` /
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
        return mx, 1
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
            out[a] = shift[a] + np.log(s)
        else:  # exact fallback: the fast sum underflowed or every term is zero
            flag = 1
            out[a] = reduce_entry(SUM, x, pw, transpose, 1.0, a)[0] - mx
    return mx, flag


@njit(cache=True, nogil=True)
def _shifted_exp(u, shift, out):
    """``out[x] = exp(u[x] + shift[x] - m)`` with ``m = max_x (u[x] + shift[x])``; returns ``m``
    (``out`` untouched when ``m = -inf``)."""
    m = -np.inf
    for x in range(u.shape[0]):
        m = max(m, u[x] + shift[x])
    if m > -np.inf:
        for x in range(u.shape[0]):
            out[x] = np.exp(u[x] + shift[x] - m)
    return m


@njit(cache=True, nogil=True)
def fast_pair_table(u, shift, E, ex, ssum, B, T):
    """Normalised ``T[x, y] ∝ exp(u[x] + Q[x, y] + w[y])`` reusing a message computation.

    ``ex`` and ``ssum`` come from ``lse_message(w, ...)`` with the same exp-form
    ``E, shift`` of ``Q``: then ``T[x, y] = B[x] E[x, y] ex[y] / S`` with
    ``B[x] = exp(u[x] + shift[x] - max)`` and ``S = sum_x B[x] ssum[x]``, which
    costs ``K`` exponentials. Returns 0, or 1 when ``S`` is too small (the
    caller then uses the exact :func:`pair_table`).
    """
    k = u.shape[0]
    if _shifted_exp(u, shift, B) == -np.inf:
        return 1
    total = 0.0
    for x in range(k):
        total += B[x] * ssum[x]
    if not total > TINY:
        return 1
    inv = 1.0 / total
    for x in range(k):
        c = B[x] * inv
        for y in range(k):
            T[x, y] = c * E[x, y] * ex[y]
    return 0


@njit(cache=True, nogil=True)
def pair_table(u, w, pw, transpose, E, shift, A, B, T):
    """Normalised ``T[x, y] ∝ exp(u[x] + Q[x, y] + w[y])`` (``Q = pw`` or ``pw.T``); all zero if no finite entry."""
    k = u.shape[0]
    m1 = _shifted_exp(u, shift, A)
    m2 = w.max()
    total = 0.0
    if m1 > -np.inf and m2 > -np.inf:
        for y in range(k):
            B[y] = np.exp(w[y] - m2)
        for x in range(k):
            ax = A[x]
            for y in range(k):
                v = ax * E[x, y] * B[y]
                T[x, y] = v
                total += v
    if not total > TINY:  # exact fallback in log space
        for x in range(k):
            for y in range(k):
                q = pw[y, x] if transpose else pw[x, y]
                T[x, y] = u[x] + q + w[y]
        softmax_table(T, T)
        return
    inv = 1.0 / total
    for x in range(k):
        for y in range(k):
            T[x, y] *= inv


@njit(cache=True, nogil=True)
def _tree_work(pots, semiring):
    """Scratch for :func:`forest_pass` (exp-forms of a shared matrix precomputed; empty for ``MAX``)."""
    k = pots.unary.shape[1] if semiring == SUM else 0
    w = TreeWork(np.empty((k, k)), np.empty(k), np.empty((k, k)), np.empty(k), np.empty((k, k)), np.empty(k),
                 np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty((k, k)))
    if semiring == SUM and pots.shared:
        exp_form(pots.pw3[0], False, w.er, w.sr)
        exp_form(pots.pw3[0], True, w.ec, w.sc)
    return w


@njit(cache=True, nogil=True)
def _edge_exp_form(pots, work, slot, transpose):
    """The exp-form ``(E, shift)`` of ``Q = pw`` or ``pw.T`` of matrix ``slot`` (precomputed when shared)."""
    if pots.shared:
        if transpose:
            return work.ec, work.sc
        return work.er, work.sr
    exp_form(pots.pw3[slot], transpose, work.E, work.sh)
    return work.E, work.sh


@njit(cache=True, nogil=True)
def _upward(pots, sched, lo, hi, semiring, belief, msg, back, work):
    """Leaves to roots: every non-root node's message to its parent, added to the parent's belief.

    The message is ``op_b (belief[v, b] + Q[a, b])`` over the parent's states ``a``
    (``Q[a_p, b_v]``). ``MAX`` adds it straight into the parent's belief and records
    the maximisers in ``back[v]``; ``SUM`` keeps it in ``msg[v]`` for the downward
    pass, normalised by the child's largest belief, and returns the sum of the normalisers.
    """
    k = belief.shape[1]
    shift = 0.0
    for j in range(hi - 1, lo - 1, -1):
        v = sched.order[j]
        p = sched.parent[v]
        if p < 0:
            continue
        slot = 0 if pots.shared else sched.parent_edge[v]
        # Q[a_p, b_v] = pw[a_p, b_v] if the parent is edges[e, 0] else pw[b_v, a_p]
        tr = sched.parent_first[v] == 0
        if semiring == MAX:
            direct_message(MAX, belief[v], pots.pw3[slot], tr, 1.0, belief[p], back[v], True)
            continue
        E, sh = _edge_exp_form(pots, work, slot, tr)
        shift += lse_message(belief[v], pots.pw3[slot], tr, E, sh, work.ex, work.ssum, msg[v])[0]
        for a in range(k):
            belief[p, a] += msg[v, a]
    return shift


@njit(cache=True, nogil=True)
def _roots(sched, lo, hi, semiring, belief, back, labels):
    """Sum over the roots of ``op`` of their beliefs; ``MAX`` also back-tracks ``labels`` (BFS order)."""
    k = belief.shape[1]
    total = 0.0
    for j in range(lo, hi):
        v = sched.order[j]
        p = sched.parent[v]
        if p >= 0:
            if semiring == MAX:
                labels[v] = back[v, labels[p]]
            continue
        if semiring == SUM:
            total += lse_vector(belief[v])
            continue
        best = -np.inf
        arg = 0
        for a in range(k):
            if belief[v, a] > best:
                best = belief[v, a]
                arg = a
        labels[v] = arg
        total += best
    return total


@njit(cache=True, nogil=True)
def _store_pair(T, transpose, e, edge_mode, node_row, edge_out):
    """Child marginal = row sums of ``T[b_child, a_parent]``; the edge table (``edges[e]`` orientation)
    into ``edge_out[e]`` (``edge_mode`` 0) or added to ``edge_out[0]`` (1)."""
    k = T.shape[0]
    for b in range(k):
        acc = 0.0
        for a in range(k):
            acc += T[b, a]
        node_row[b] = acc
    dst = e if edge_mode == 0 else 0
    for a in range(k):
        for b in range(k):
            t = T[b, a] if transpose else T[a, b]
            if edge_mode == 0:
                edge_out[dst, a, b] = t
            else:
                edge_out[dst, a, b] += t


@njit(cache=True, nogil=True)
def _downward(pots, sched, lo, hi, edge_mode, belief, msg, node_marg, edge_out, work):
    """Roots to leaves (sum-product): outside messages, pair tables and the children's marginals."""
    k = belief.shape[1]
    cav = work.cav
    for j in range(lo, hi):
        v = sched.order[j]
        p = sched.parent[v]
        if p < 0:
            continue
        e = sched.parent_edge[v]
        for a in range(k):
            cav[a] = -np.inf if msg[v, a] == -np.inf else belief[p, a] - msg[v, a]
        # Q[b_v, a_p] = pw[a_p, b_v] if the parent is edges[e, 0] (transpose) else pw[b_v, a_p]
        tr = sched.parent_first[v] == 1
        slot = 0 if pots.shared else e
        E, sh = _edge_exp_form(pots, work, slot, tr)
        flag = lse_message(cav, pots.pw3[slot], tr, E, sh, work.ex, work.ssum, work.tmp)[1]
        if edge_mode != 2:
            # T[b_v, a_p] ∝ exp(belief_v[b] + Q[b, a] + cav[a]) (belief_v still excludes the parent side)
            if flag != 0 or fast_pair_table(belief[v], sh, E, work.ex, work.ssum, work.B, work.T) != 0:
                pair_table(belief[v], cav, pots.pw3[slot], tr, E, sh, work.A, work.B, work.T)
            _store_pair(work.T, tr, e, edge_mode, node_marg[v], edge_out)
        for b in range(k):
            belief[v, b] += work.tmp[b]


@njit(cache=True, nogil=True)
def forest_pass(pots, sched, active, semiring, edge_mode, node_marg, edge_out, labels, values):
    """Exact sum-product or max-product on every active (forest) example of a flat batch.

    Parameters
    ----------
    pots : Potentials
    sched : TreeSchedule
    active : (n_examples,) uint8; examples to process
    semiring : SUM (marginals) or MAX (MAP)
    edge_mode : SUM only: 0 per-edge marginals into ``edge_out[e]``; 1 summed into ``edge_out[0]``; 2 none
    node_marg : (N, K) output (SUM); edge_out : (M, K, K), (1, K, K) or (0, K, K) output (SUM)
    labels : (N,) int64 output (MAX; arbitrary for an example without a labelling of finite score)
    values : (n_examples,) output: log-partition (SUM) or best score (MAX); ``-inf`` when no
        labelling has a finite score (the example's marginals are then NaN)
    """
    n, k = pots.unary.shape
    work = _tree_work(pots, semiring)
    belief = pots.unary.copy()
    msg = np.empty((n if semiring == SUM else 0, k))
    back = np.empty((n if semiring == MAX else 0, k), dtype=np.int64)
    for i in range(sched.node_offsets.shape[0] - 1):
        if not active[i]:
            continue
        lo = sched.node_offsets[i]
        hi = sched.node_offsets[i + 1]
        shift = _upward(pots, sched, lo, hi, semiring, belief, msg, back, work)
        values[i] = _roots(sched, lo, hi, semiring, belief, back, labels) + shift
        if semiring == MAX:
            continue
        if values[i] == -np.inf:
            for j in range(lo, hi):
                node_marg[sched.order[j]] = np.nan
            continue
        _downward(pots, sched, lo, hi, edge_mode, belief, msg, node_marg, edge_out, work)
        for j in range(lo, hi):
            v = sched.order[j]
            if edge_mode == 2 or sched.parent[v] < 0:
                normalised_exp(belief[v], node_marg[v])


@njit(cache=True, nogil=True)
def forest_max_product(unary, pw3, shared, node_offsets, active, order, parent, parent_edge, parent_first,
                       labels, scores):
    """:func:`forest_pass` with ``MAX`` on flat arrays (the form the SSVM epoch kernels call per example)."""
    forest_pass(Potentials(unary, pw3, shared), TreeSchedule(node_offsets, order, parent, parent_edge, parent_first),
                active, MAX, 2, np.empty((0, 0)), np.empty((0, 0, 0)), labels, scores)

