"""Steps and epochs of the structured-SVM baselines, compiled (Numba).

:func:`bcfw_epoch` and :func:`subgradient_epoch` run the inner loops of
:func:`crflearn.solvers.fit_bcfw` and :func:`crflearn.solvers.fit_subgradient` on forests
over a given order of the examples, mutating the solver state in place. Each step builds
the example's loss-augmented potentials, decodes them exactly with
:func:`~crflearn._kernels.inference_tree.forest_max_product` on the example's precomputed
BFS schedule (local indices), then applies the solver's update. :func:`bcfw_step` and
:func:`subgradient_step` apply the same update for one example whose loss-augmented labeling
was decoded elsewhere (the approximate oracle of loopy graphs).

Arrays come bundled:

* features: a :class:`crflearn.models.FeatureView` (node features dense or CSR, intercept
  column included; edge features with a ones column when the pairwise matrix is shared);
* weights in the kernel layout of :meth:`crflearn.models.PairwiseModel.to_kernel`:
  ``wuT (P, K)`` and ``wp (q, K*K)``;
* the graph: an :class:`EpochGraph`;
* the solver state: a :class:`BCFWState` or a :class:`PegasosState`.

Zero features are skipped and every sum runs in a fixed order (features increasing, states
innermost), so results are reproducible up to round-off; exactly tied loss-augmented maxima
may be broken differently from another implementation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .inference_tree import forest_max_product

__all__ = ["EpochGraph", "BCFWState", "PegasosState", "bcfw_epoch", "bcfw_step", "subgradient_epoch",
           "subgradient_step"]


class EpochGraph(NamedTuple):
    """Structure and ground truth of a flat batch for the epoch kernels.

    Attributes
    ----------
    edges : ndarray (M, 2) int64
        Global edges.
    node_offsets, edge_offsets : ndarray (n + 1,) int64
    labels : ndarray (N,) int64
        Ground truth.
    order_loc, parent_loc, pedge_loc : ndarray (N,) int64
        BFS schedule of every example with example-local node and edge indices
        (``order_loc[lo:hi]`` lists the nodes of the example whose nodes are ``lo..hi-1``).
    parent_first : ndarray (N,) uint8
    weights : ndarray (n,) float64
        Sample weights ``s_i`` of the examples (ones: the unweighted objective). The steps scale
        example ``i``'s feature difference and loss by ``s_i``; ``s_i = 1`` gives bit-identical steps.
    """

    edges: np.ndarray
    node_offsets: np.ndarray
    edge_offsets: np.ndarray
    labels: np.ndarray
    order_loc: np.ndarray
    parent_loc: np.ndarray
    pedge_loc: np.ndarray
    parent_first: np.ndarray
    weights: np.ndarray


class BCFWState(NamedTuple):
    """BCFW state, updated in place.

    ``wuT, wp``: weights (kernel layout); ``node_stats (N, K)`` and ``edge_stats`` (``(n, K, K)``
    shared, ``(M, K, K)`` per edge): the dual blocks as marginals; ``block_losses (n,)``;
    ``wuT_avg, wp_avg``: averaged weights; ``scalars = [ell, ell_avg]``;
    ``counters = [n_steps, oracle_calls]`` (int64).
    """

    wuT: np.ndarray
    wp: np.ndarray
    node_stats: np.ndarray
    edge_stats: np.ndarray
    block_losses: np.ndarray
    wuT_avg: np.ndarray
    wp_avg: np.ndarray
    scalars: np.ndarray
    counters: np.ndarray


class PegasosState(NamedTuple):
    """Subgradient state, updated in place: weights, ``counters = [t, oracle_calls]``, ``sums = [loss_sum]``."""

    wuT: np.ndarray
    wp: np.ndarray
    counters: np.ndarray
    sums: np.ndarray


class _Buffers(NamedTuple):
    """Scratch space of one epoch (``s``: corner feature, ``m``: block mean, ``d``: direction)."""

    unary: np.ndarray
    pairwise: np.ndarray
    lab: np.ndarray
    loc_offsets: np.ndarray
    active: np.ndarray
    score: np.ndarray
    sT: np.ndarray
    sP: np.ndarray
    mT: np.ndarray
    mP: np.ndarray
    dT: np.ndarray
    dP: np.ndarray
    rows: np.ndarray


@njit(cache=True, nogil=True)
def _buffers(fv, graph, wuT, wp):
    """Scratch space sized for the largest example of ``graph``."""
    no = graph.node_offsets
    eo = graph.edge_offsets
    max_nodes = 0
    max_edges = 1
    for i in range(no.shape[0] - 1):
        max_nodes = max(max_nodes, no[i + 1] - no[i])
        max_edges = max(max_edges, eo[i + 1] - eo[i])
    k = wuT.shape[1]
    return _Buffers(np.empty((max_nodes, k)), np.empty((max_edges, k, k)), np.zeros(max_nodes, dtype=np.int64),
                    np.zeros(2, dtype=np.int64), np.ones(1, dtype=np.uint8), np.empty(1),
                    np.zeros_like(wuT), np.zeros_like(wp), np.zeros_like(wuT), np.zeros_like(wp),
                    np.zeros_like(wuT), np.zeros_like(wp), np.zeros(k + 1, dtype=np.int64))


@njit(cache=True, nogil=True)
def _unary(fv, wuT, y, lo, hi, out):
    """``out[v - lo, c] = x_v . W_u[c] + [c != y_v]`` for the nodes ``lo..hi-1``.

    Each entry is summed over the features in increasing order (zero features skipped:
    they add nothing), the loop over states innermost.
    """
    k = wuT.shape[1]
    for v in range(lo, hi):
        r = v - lo
        for c in range(k):
            out[r, c] = 0.0
        if fv.sparse:
            for j in range(fv.indptr[v], fv.indptr[v + 1]):
                val = fv.data[j]
                if val != 0.0:
                    col = fv.indices[j]
                    for c in range(k):
                        out[r, c] += val * wuT[col, c]
        else:
            for j in range(wuT.shape[0]):
                val = fv.dense[v, j]
                if val != 0.0:
                    for c in range(k):
                        out[r, c] += val * wuT[j, c]
        for c in range(k):
            if c != y[v]:
                out[r, c] += 1.0


@njit(cache=True, nogil=True)
def _pairwise(fv, wp, elo, ehi, out):
    """Pairwise potentials of the edges ``elo..ehi-1`` into ``out`` (``out[0]`` when shared)."""
    k = out.shape[1]
    if fv.shared:
        for a in range(k):
            for b in range(k):
                out[0, a, b] = wp[0, a * k + b]
        return
    ef = fv.edge_features
    for e in range(elo, ehi):
        r = e - elo
        for a in range(k):
            for b in range(k):
                out[r, a, b] = 0.0
        for f in range(ef.shape[1]):
            val = ef[e, f]
            for a in range(k):
                for b in range(k):
                    out[r, a, b] += val * wp[f, a * k + b]


@njit(cache=True, nogil=True)
def _decode(fv, graph, wuT, wp, i, buf):
    """Loss-augmented MAP labels (local) of example ``i`` into ``buf.lab[:n_i]``."""
    lo = graph.node_offsets[i]
    hi = graph.node_offsets[i + 1]
    elo = graph.edge_offsets[i]
    ehi = graph.edge_offsets[i + 1]
    n_i = hi - lo
    if n_i == 0:
        return
    u = buf.unary[:n_i]
    _unary(fv, wuT, graph.labels, lo, hi, u)
    _pairwise(fv, wp, elo, ehi, buf.pairwise)
    pw = buf.pairwise[:1] if fv.shared else buf.pairwise[:ehi - elo]
    buf.loc_offsets[1] = n_i
    forest_max_product(u, pw, fv.shared, buf.loc_offsets, buf.active, graph.order_loc[lo:hi],
                       graph.parent_loc[lo:hi], graph.pedge_loc[lo:hi], graph.parent_first[lo:hi],
                       buf.lab[:n_i], buf.score)


@njit(cache=True, nogil=True)
def _add_node_feature(fv, v, c, coef, outT):
    """``W_u[c] += coef * x_v`` in the kernel layout ``outT (P, K)``."""
    if fv.sparse:
        for j in range(fv.indptr[v], fv.indptr[v + 1]):
            outT[fv.indices[j], c] += coef * fv.data[j]
    else:
        for j in range(outT.shape[0]):
            outT[j, c] += coef * fv.dense[v, j]


@njit(cache=True, nogil=True)
def _add_labeling_feature(fv, graph, i, lab, outT, outP):
    """``(outT, outP) += psi(lab)`` for example ``i``'s labeling ``lab`` (local indices)."""
    lo = graph.node_offsets[i]
    k = outT.shape[1]
    for v in range(lo, graph.node_offsets[i + 1]):
        _add_node_feature(fv, v, lab[v - lo], 1.0, outT)
    ef = fv.edge_features
    for e in range(graph.edge_offsets[i], graph.edge_offsets[i + 1]):
        ab = lab[graph.edges[e, 0] - lo] * k + lab[graph.edges[e, 1] - lo]
        for f in range(ef.shape[1]):
            outP[f, ab] += ef[e, f]


@njit(cache=True, nogil=True)
def _hamming(graph, i, lab):
    """Number of wrong nodes of example ``i``'s labeling ``lab`` (local indices)."""
    lo = graph.node_offsets[i]
    wrong = 0
    for v in range(lo, graph.node_offsets[i + 1]):
        if lab[v - lo] != graph.labels[v]:
            wrong += 1
    return float(wrong)


@njit(cache=True, nogil=True)
def _live_rows(state, graph, i, lab, rows):
    """States ``c`` whose unary row ``W_u[c]`` can move in a BCFW step (those of ``lab`` or with mass
    in the block's marginals), increasing, into ``rows``; returns their number. Every other
    entry of the step direction is exactly zero and is skipped."""
    k = state.wuT.shape[1]
    lo = graph.node_offsets[i]
    on = np.zeros(k, dtype=np.uint8)
    for v in range(lo, graph.node_offsets[i + 1]):
        on[lab[v - lo]] = 1
        for c in range(k):
            if state.node_stats[v, c] != 0.0:
                on[c] = 1
    n_rows = 0
    for c in range(k):
        if on[c]:
            rows[n_rows] = c
            n_rows += 1
    return n_rows


@njit(cache=True, nogil=True)
def _block_mean(fv, graph, state, i, rows, n_rows, buf):
    """Corner ``s = psi(lab)`` into ``buf.sT, buf.sP`` and the block's mean feature ``E_alpha_i[psi]``
    into ``buf.mT, buf.mP``, on the live rows and the pairwise block."""
    for r in range(n_rows):
        c = rows[r]
        for j in range(buf.sT.shape[0]):
            buf.sT[j, c] = 0.0
            buf.mT[j, c] = 0.0
    buf.sP[:] = 0.0
    buf.mP[:] = 0.0
    _add_labeling_feature(fv, graph, i, buf.lab, buf.sT, buf.sP)
    k = buf.sT.shape[1]
    for v in range(graph.node_offsets[i], graph.node_offsets[i + 1]):
        for c in range(k):
            mu = state.node_stats[v, c]
            if mu != 0.0:
                _add_node_feature(fv, v, c, mu, buf.mT)
    if fv.shared:
        for ab in range(k * k):
            buf.mP[0, ab] = state.edge_stats[i, ab // k, ab % k]
        return
    ef = fv.edge_features
    for e in range(graph.edge_offsets[i], graph.edge_offsets[i + 1]):
        for ab in range(k * k):
            mu = state.edge_stats[e, ab // k, ab % k]
            if mu != 0.0:
                for f in range(ef.shape[1]):
                    buf.mP[f, ab] += ef[e, f] * mu


@njit(cache=True, nogil=True)
def _direction(state, rows, n_rows, scale, buf):
    """``d = scale (s - m)`` on the live entries; returns ``(||d||^2, <d, w>)`` summed row by row
    (live unary rows increasing, then the pairwise block)."""
    dd = 0.0
    dw = 0.0
    for r in range(n_rows):
        c = rows[r]
        for j in range(buf.sT.shape[0]):
            dj = scale * (buf.sT[j, c] - buf.mT[j, c])
            buf.dT[j, c] = dj
            dd += dj * dj
            dw += dj * state.wuT[j, c]
    for f in range(buf.sP.shape[0]):
        for ab in range(buf.sP.shape[1]):
            dj = scale * (buf.sP[f, ab] - buf.mP[f, ab])
            buf.dP[f, ab] = dj
            dd += dj * dj
            dw += dj * state.wp[f, ab]
    return dd, dw


@njit(cache=True, nogil=True)
def _move_block(fv, graph, state, i, gamma, rows, n_rows, buf):
    """``w -= gamma d`` and the block's marginals move ``gamma`` of the way to the corner ``lab``."""
    for r in range(n_rows):
        c = rows[r]
        for j in range(state.wuT.shape[0]):
            state.wuT[j, c] -= gamma * buf.dT[j, c]
    for f in range(state.wp.shape[0]):
        for ab in range(state.wp.shape[1]):
            state.wp[f, ab] -= gamma * buf.dP[f, ab]
    k = state.wuT.shape[1]
    lo = graph.node_offsets[i]
    for v in range(lo, graph.node_offsets[i + 1]):
        yv = buf.lab[v - lo]
        for c in range(k):
            s = 1.0 if c == yv else 0.0
            state.node_stats[v, c] += gamma * (s - state.node_stats[v, c])
    if fv.shared:
        for ab in range(k * k):
            a = ab // k
            b = ab % k
            state.edge_stats[i, a, b] += gamma * (buf.sP[0, ab] - state.edge_stats[i, a, b])
        return
    for e in range(graph.edge_offsets[i], graph.edge_offsets[i + 1]):
        ab_star = buf.lab[graph.edges[e, 0] - lo] * k + buf.lab[graph.edges[e, 1] - lo]
        for ab in range(k * k):
            s = 1.0 if ab == ab_star else 0.0
            state.edge_stats[e, ab // k, ab % k] += gamma * (s - state.edge_stats[e, ab // k, ab % k])


@njit(cache=True, nogil=True)
def _mix(avg, w, rho):
    """``avg <- (1 - rho) avg + rho w`` (2-D, in place)."""
    for a in range(avg.shape[0]):
        for b in range(avg.shape[1]):
            avg[a, b] = (1.0 - rho) * avg[a, b] + rho * w[a, b]


@njit(cache=True, nogil=True)
def _add_difference(w, plus, minus, coef, divisor):
    """``w += coef (plus - minus) / divisor`` (2-D, in place)."""
    for a in range(w.shape[0]):
        for b in range(w.shape[1]):
            w[a, b] += coef * (plus[a, b] - minus[a, b]) / divisor


@njit(cache=True, nogil=True)
def _bcfw_update(fv, graph, state, i, lam, averaging, buf):
    """One BCFW block step for example ``i`` towards the corner ``buf.lab`` (exact line search).

    The block of example ``i`` enters the dual scaled by its weight ``s_i``: corner
    ``w_s = s_i dpsi_i / (lam n)``, ``l_s = s_i L_i / n``.
    """
    n = graph.node_offsets.shape[0] - 1
    s_i = graph.weights[i]
    n_rows = _live_rows(state, graph, i, buf.lab, buf.rows)
    _block_mean(fv, graph, state, i, buf.rows, n_rows, buf)
    l_s = s_i * _hamming(graph, i, buf.lab) / n
    dd, dw = _direction(state, buf.rows, n_rows, s_i / (lam * n), buf)
    denom = lam * dd
    if denom > 0.0:
        gamma = (lam * dw - state.block_losses[i] + l_s) / denom
        gamma = min(max(gamma, 0.0), 1.0)
    else:
        gamma = 1.0 if l_s > state.block_losses[i] else 0.0
    if gamma > 0.0:
        _move_block(fv, graph, state, i, gamma, buf.rows, n_rows, buf)
        d_ell = gamma * (l_s - state.block_losses[i])
        state.scalars[0] += d_ell
        state.block_losses[i] += d_ell
    if averaging != 0:
        n_steps = state.counters[0]
        rho = 2.0 / (n_steps + 2.0) if averaging == 2 else 1.0 / (n_steps + 1.0)
        _mix(state.wuT_avg, state.wuT, rho)
        _mix(state.wp_avg, state.wp, rho)
        state.scalars[1] = (1.0 - rho) * state.scalars[1] + rho * state.scalars[0]
    state.counters[0] += 1


@njit(cache=True, nogil=True)
def bcfw_epoch(fv, graph, state, perm, lam, averaging):
    """One BCFW pass over the examples ``perm`` (Lacoste-Julien et al., 2013), in place.

    Parameters
    ----------
    fv : FeatureView
    graph : EpochGraph
        Every example a forest.
    state : BCFWState
    perm : ndarray (T,) int64
        Examples to visit, in order.
    lam : float
        L2 strength.
    averaging : int
        0 none, 1 uniform, 2 weighted (``2 / (k + 2)``).
    """
    buf = _buffers(fv, graph, state.wuT, state.wp)
    for t in range(perm.shape[0]):
        i = perm[t]
        _decode(fv, graph, state.wuT, state.wp, i, buf)
        state.counters[1] += 1
        _bcfw_update(fv, graph, state, i, lam, averaging, buf)


@njit(cache=True, nogil=True)
def bcfw_step(fv, graph, state, i, lab, lam, averaging):
    """The BCFW step of :func:`bcfw_epoch` for example ``i`` with a given labeling ``lab`` (local)."""
    buf = _buffers(fv, graph, state.wuT, state.wp)
    buf.lab[:lab.shape[0]] = lab
    state.counters[1] += 1
    _bcfw_update(fv, graph, state, i, lam, averaging, buf)


@njit(cache=True, nogil=True)
def _pegasos_update(fv, graph, state, i, alpha, buf):
    """``w <- (1 - 1/t) w + s_i dpsi_i(lab) / (alpha t)`` with the labeling ``buf.lab``; ``t += 1``;
    the weighted loss ``s_i L_i(lab)`` is added to ``sums[0]``."""
    t = state.counters[0]
    s_i = graph.weights[i]
    loss = _hamming(graph, i, buf.lab)
    shrink = 1.0 - 1.0 / t
    state.wuT[:] *= shrink
    state.wp[:] *= shrink
    if loss > 0:
        buf.sT[:] = 0.0
        buf.sP[:] = 0.0
        buf.mT[:] = 0.0
        buf.mP[:] = 0.0
        lo = graph.node_offsets[i]
        _add_labeling_feature(fv, graph, i, graph.labels[lo:], buf.mT, buf.mP)
        _add_labeling_feature(fv, graph, i, buf.lab, buf.sT, buf.sP)
        step = alpha * t
        _add_difference(state.wuT, buf.mT, buf.sT, s_i, step)
        _add_difference(state.wp, buf.mP, buf.sP, s_i, step)
    state.sums[0] += s_i * loss
    state.counters[0] = t + 1


@njit(cache=True, nogil=True)
def subgradient_epoch(fv, graph, state, perm, alpha):
    """One pass of Pegasos steps over the examples ``perm`` (forests), in place on ``state``."""
    buf = _buffers(fv, graph, state.wuT, state.wp)
    for step in range(perm.shape[0]):
        i = perm[step]
        _decode(fv, graph, state.wuT, state.wp, i, buf)
        state.counters[1] += 1
        _pegasos_update(fv, graph, state, i, alpha, buf)


@njit(cache=True, nogil=True)
def subgradient_step(fv, graph, state, i, lab, alpha):
    """The Pegasos step of :func:`subgradient_epoch` for example ``i`` with a given labeling ``lab``."""
    buf = _buffers(fv, graph, state.wuT, state.wp)
    buf.lab[:lab.shape[0]] = lab
    state.counters[1] += 1
    _pegasos_update(fv, graph, state, i, alpha, buf)
