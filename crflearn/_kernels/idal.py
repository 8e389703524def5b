"""Numba kernels of the IDAL sweep: exact clique-wise line-search (SDCA) updates.

All state lives in flat arrays bundled in NamedTuples (built by :mod:`crflearn._kernels.idal_engine`):

* :class:`IdalGraph` ``(edges, inc_ptr, inc_slot, base_n, base_e)``: edges (E, 2); incidence of node
  ``v`` is ``inc_slot[inc_ptr[v]:inc_ptr[v + 1]]`` with ``slot = 2 * e + side``; ``base_n`` (N, K)
  or (0, K) (none: no node is scored, saving ``8 N K`` bytes) and ``base_e`` (E, K*K), (1, K*K)
  (shared) or (0, K*K) (none) are fixed clique scores (loss vectors when training, potentials in
  relaxed inference);
* :class:`IdalState` ``(mu_n, mu_e, xi, zeta)``: node marginals (N, K), edge marginals (E, K*K)
  (row-major ``a * K + b``), multipliers and ``zeta = xi + rho A mu`` (E, 2, K), ``zeta[e, 0]`` on
  the separator of ``edges[e, 0]`` (row sums), ``zeta[e, 1]`` on ``edges[e, 1]`` (column sums);
* :class:`IdalWeights` ``(wuT, wp)``: the kernel layout of :meth:`PairwiseModel.to_kernel`;
* the node/edge features: a :class:`~crflearn.models.FeatureView` in CSR form;
* :class:`IdalEntropy` ``(kind, node_w, edge_w, a, side)``: the separable entropy surrogate.

Clique scores are ``theta_v = base_n[v] + W_u x_v + sum_{e ∋ v} zeta[e, side]`` and
``theta_e[a, b] = base_e + W_p(x_e)[a, b] - zeta[e, 0, a] - zeta[e, 1, b]``. Relaxed inference
uses the same kernels with no features (empty CSR, ``q = 0``) and ``inv_lam_n = 0``.

Entropies (``G(p) = 1 - ||p||^2``, ``H`` the Shannon entropy, ``P_e mu_e`` the marginal of the
parent endpoint ``edges[e, side[e]]``):

* ``kind == GINI``: ``node_w[v] G(mu_v)`` and ``edge_w[e] (G(mu_e) - a G(P_e mu_e))``; ``a = 0`` is
  the plain Gini surrogate, ``0 < a < 1/K`` the oriented tree-reweighted one (``gini_otrw``,
  rows are the parent);
* ``kind == SHANNON``: ``node_w[v] H(mu_v)`` and ``edge_w[e] (H(mu_e) - H(P_e mu_e))`` (a conditional
  entropy); with unit edge weights, parent->child orientation and weight 1 on roots only, this
  is the Bethe entropy, exact on forests. Its block update is a 1-D Newton line search.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .idal_compact import edge_capacity, edge_done, edge_row, edge_store, edge_values
from .simplex import candidates_above, michelot_threshold, project_simplex

__all__ = ["IdalGraph", "IdalState", "IdalWeights", "IdalEntropy", "IdalScratch", "GINI", "SHANNON",
           "make_scratch", "idal_sweep", "zeta_from_blocks", "multiplier_update", "clique_order"]

GINI = 0
SHANNON = 1


class IdalGraph(NamedTuple):
    """Structure and fixed scores of the cliques (see the module docstring)."""

    edges: np.ndarray
    inc_ptr: np.ndarray
    inc_slot: np.ndarray
    base_n: np.ndarray
    base_e: np.ndarray


class IdalState(NamedTuple):
    """Marginals and multipliers, updated in place."""

    mu_n: np.ndarray
    mu_e: np.ndarray
    xi: np.ndarray
    zeta: np.ndarray


class IdalWeights(NamedTuple):
    """Weights in the kernel layout ``wuT (n_inputs, K)``, ``wp (q, K*K)``, updated in place."""

    wuT: np.ndarray
    wp: np.ndarray


class IdalEntropy(NamedTuple):
    """The separable entropy surrogate: ``kind``, per-clique weights, ``a``, parent sides."""

    kind: int
    node_w: np.ndarray
    edge_w: np.ndarray
    a: float
    side: np.ndarray


class IdalScratch(NamedTuple):
    """Work arrays of one sweep (K*K or K long; ``row``, the block of a compact edge, all zero between uses)."""

    th: np.ndarray
    tgt: np.ndarray
    d: np.ndarray
    buf: np.ndarray
    tg: np.ndarray
    rd: np.ndarray
    cd: np.ndarray
    rmu: np.ndarray
    sk: np.ndarray
    rk: np.ndarray
    idx: np.ndarray
    cidx: np.ndarray
    row: np.ndarray


def make_scratch(n_states: int) -> IdalScratch:
    """Work arrays for :func:`idal_sweep` and the monitoring kernels."""
    kk = n_states * n_states
    return IdalScratch(np.empty(kk), np.empty(kk), np.empty(kk), np.empty(kk), np.zeros(kk), np.empty(n_states),
                       np.empty(n_states), np.empty(n_states), np.empty(n_states), np.empty(n_states),
                       np.empty(kk, np.int64), np.empty(kk, np.int64), np.zeros(kk))


@intrinsic
def _prefetch(typingctx, arr, index):
    """Hint the cache to load ``arr[index]`` (``index`` a tuple); no effect on results.

    A prefetch never faults, so ``index`` needs no bounds check.
    """
    if not isinstance(arr, types.Array) or not isinstance(index, types.UniTuple) or index.count != arr.ndim:
        return None

    def codegen(context, builder, sig, args):
        aty, ity = sig.args
        ary = context.make_array(aty)(context, builder, args[0])
        idx = cgutils.unpack_tuple(builder, args[1], ity.count)
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, idx, wraparound=False)
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)  # mangles per LLVM version
        # read access, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen


@njit(cache=True, nogil=True)
def _prefetch_clique(c, feats, graph, state):
    """Prefetch what the update of clique ``c`` will read (cliques are visited in random order,
    which defeats the hardware prefetcher); 8 float64 per cache line."""
    N, K = state.mu_n.shape
    if c < N:
        lo = feats.indptr[c]
        hi = feats.indptr[c + 1]
        for j in range(lo, hi, 8):
            _prefetch(feats.indices, (j,))
            _prefetch(feats.data, (j,))
        if hi > lo:
            _prefetch(feats.indices, (hi - 1,))
            _prefetch(feats.data, (hi - 1,))
        scored = graph.base_n.shape[0] > 0
        for k in range(0, K, 8):
            if scored:
                _prefetch(graph.base_n, (c, k))
            _prefetch(state.mu_n, (c, k))
        if scored:
            _prefetch(graph.base_n, (c, K - 1))
        _prefetch(state.mu_n, (c, K - 1))
        for j in range(graph.inc_ptr[c], graph.inc_ptr[c + 1]):
            slot = graph.inc_slot[j]
            _prefetch_separator(state.zeta, slot // 2, slot % 2, K)
    else:
        e = c - N
        vals = edge_values(state.mu_e)
        n = vals.shape[1]
        for i in range(0, n, 8):
            _prefetch(vals, (e, i))
        _prefetch(vals, (e, n - 1))
        _prefetch_separator(state.zeta, e, 0, K)
        _prefetch_separator(state.zeta, e, 1, K)


@njit(cache=True, nogil=True)
def _prefetch_separator(zeta, e, side, K):
    for k in range(0, K, 8):
        _prefetch(zeta, (e, side, k))
    _prefetch(zeta, (e, side, K - 1))


@njit(cache=True, nogil=True)
def node_theta(v, th, graph, feats, wuT, zeta):
    """Score ``theta_v`` of node ``v`` into ``th`` (length K)."""
    K = th.shape[0]
    if graph.base_n.shape[0] > 0:
        for k in range(K):
            th[k] = graph.base_n[v, k]
    else:
        th[:] = 0.0
    for j in range(feats.indptr[v], feats.indptr[v + 1]):
        c = feats.indices[j]
        x = feats.data[j]
        for k in range(K):
            th[k] += wuT[c, k] * x
    for j in range(graph.inc_ptr[v], graph.inc_ptr[v + 1]):
        slot = graph.inc_slot[j]
        e = slot // 2
        side = slot - 2 * e
        for k in range(K):
            th[k] += zeta[e, side, k]


@njit(cache=True, nogil=True)
def edge_theta(e, th, K, base_e, efeat, wp, zeta):
    """Score ``theta_e`` (K*K, row-major) of edge ``e`` into ``th``."""
    KK = K * K
    nb = base_e.shape[0]
    if nb == 0:
        for i in range(KK):
            th[i] = 0.0
    else:
        r = e if nb > 1 else 0
        for i in range(KK):
            th[i] = base_e[r, i]
    for f in range(efeat.shape[1]):
        x = efeat[e, f]
        if x != 0.0:
            for i in range(KK):
                th[i] += x * wp[f, i]
    for a in range(K):
        za = zeta[e, 0, a]
        for b in range(K):
            th[a * K + b] -= za + zeta[e, 1, b]


#: the warm-started projection of an edge keeps the entries above ``tau_prev - WARM_DELTA``
#: (in units of the simplex) as candidates; the threshold moves by less than this between
#: two visits of an edge except in the first epochs (then the cold path is taken)
WARM_DELTA = 0.1


@njit(cache=True, nogil=True)
def idal_sweep(order, graph, feats, weights, state, ent, rho, inv_lam_n, tau_e, scr):
    """One pass of exact clique-wise line-search updates in the order ``order``.

    ``order[j] < N`` is node ``order[j]``, otherwise edge ``order[j] - N``. Updates the state
    and (when ``inv_lam_n > 0``) the weights in place. ``tau_e`` (E,) holds the simplex
    threshold of the last projection of every Gini edge (NaN: none yet); it only selects the
    candidates of the next projection (results do not depend on it up to round-off).
    Returns the number of cliques whose step was non-zero.
    """
    N = state.mu_n.shape[0]
    moved = 0
    n_order = order.shape[0]
    for jj in range(n_order):
        c = order[jj]
        if jj + 1 < n_order:
            _prefetch_clique(order[jj + 1], feats, graph, state)
        if c >= N:
            moved += _edge_update(c - N, graph, feats, weights, state, ent, rho, inv_lam_n, tau_e, scr)
        elif ent.kind == SHANNON:
            moved += _shannon_node(c, graph, feats, weights, state, ent, rho, inv_lam_n, scr)
        else:
            moved += _gini_node(c, graph, feats, weights, state, ent, rho, inv_lam_n, scr)
    return moved


@njit(cache=True, nogil=True)
def _apply_node(v, gamma, d, graph, feats, weights, state, rho, inv_lam_n):
    """``mu_v += gamma d`` and the matching updates of ``W_u`` and of ``zeta`` on the separators."""
    mu_n = state.mu_n
    K = mu_n.shape[1]
    for k in range(K):
        mu_n[v, k] += gamma * d[k]
    if inv_lam_n > 0.0:
        for j in range(feats.indptr[v], feats.indptr[v + 1]):
            s = gamma * inv_lam_n * feats.data[j]
            col = feats.indices[j]
            for k in range(K):
                weights.wuT[col, k] -= s * d[k]
    gr = gamma * rho
    for j in range(graph.inc_ptr[v], graph.inc_ptr[v + 1]):
        slot = graph.inc_slot[j]
        e = slot // 2
        side = slot - 2 * e
        for k in range(K):
            state.zeta[e, side, k] -= gr * d[k]


@njit(cache=True, nogil=True)
def _apply_edge(e, gamma, nz, scr, feats, weights, state, rho, inv_lam_n, mu_row):
    """``mu_row += gamma d`` on the entries ``scr.idx[:nz]`` (``mu_row`` the block of edge ``e``, stored
    back by the caller), then ``W_p`` and ``zeta``."""
    K = scr.rd.shape[0]
    idx = scr.idx
    d = scr.d
    for j in range(nz):
        i = idx[j]
        mu_row[i] += gamma * d[i]
    if inv_lam_n > 0.0:
        efeat = feats.edge_features
        for f in range(efeat.shape[1]):
            s = gamma * inv_lam_n * efeat[e, f]
            if s != 0.0:
                for j in range(nz):
                    i = idx[j]
                    weights.wp[f, i] -= s * d[i]
    gr = gamma * rho
    for a in range(K):
        state.zeta[e, 0, a] += gr * scr.rd[a]
        state.zeta[e, 1, a] += gr * scr.cd[a]


@njit(cache=True, nogil=True)
def _gini_node(v, graph, feats, weights, state, ent, rho, inv_lam_n, scr):
    mu_n = state.mu_n
    K = mu_n.shape[1]
    thv = scr.th[:K]
    tgt = scr.tgt
    d = scr.d
    node_theta(v, thv, graph, feats, weights.wuT, state.zeta)
    two_k = 2.0 * ent.node_w[v]
    # the gradient is shifted by the constant 2 kappa tau (it vanishes on the support at
    # the block optimum); sum(d) = 0 makes this exact, and it keeps the line search
    # accurate when d is tiny (otherwise round-off in sum(d) times tau dominates num)
    shift0 = two_k * project_simplex(thv, 1.0 / two_k, tgt[:K], scr.buf, scr.cidx)
    num = 0.0
    dd = 0.0
    for k in range(K):
        dk = tgt[k] - mu_n[v, k]
        d[k] = dk
        if dk != 0.0:  # -inf scores (forbidden states) keep d = 0
            num += (thv[k] - two_k * mu_n[v, k] - shift0) * dk
            dd += dk * dk
    if dd <= 0.0 or num <= 0.0:
        return 0
    deg = graph.inc_ptr[v + 1] - graph.inc_ptr[v]
    gamma = num / (dd * (two_k + rho * deg + inv_lam_n * feats.sq_norms[v]))
    _apply_node(v, min(gamma, 1.0), d, graph, feats, weights, state, rho, inv_lam_n)
    return 1


@njit(cache=True, nogil=True)
def _edge_max(src, KK):
    """``max(src[:KK])`` with four independent chains (vectorises)."""
    m0 = -np.inf
    m1 = -np.inf
    m2 = -np.inf
    m3 = -np.inf
    for i in range(0, KK - 3, 4):
        m0 = max(m0, src[i])
        m1 = max(m1, src[i + 1])
        m2 = max(m2, src[i + 2])
        m3 = max(m3, src[i + 3])
    for i in range(KK - KK % 4, KK):
        m0 = max(m0, src[i])
    return max(max(m0, m1), max(m2, m3))


@njit(cache=True, nogil=True)
def _edge_threshold(src, inv_2k, low, buf, cidx):
    """Projection threshold of ``src * inv_2k``: Michelot on the candidates above ``low`` when
    they provably contain the support (``sum (x - low)_+ >= 1``), else above ``max - 1``.
    Returns ``(tau, ns)`` with the support compacted into ``buf[:ns]``, ``cidx[:ns]``."""
    n = candidates_above(src, inv_2k, low, buf, cidx)
    excess = 0.0
    for j in range(n):
        excess += buf[j] - low
    if not excess >= 1.0:
        n = candidates_above(src, inv_2k, _edge_max(src, src.shape[0]) * inv_2k - 1.0, buf, cidx)
    return michelot_threshold(buf, cidx, n)


@njit(cache=True, nogil=True, inline="always")
def _edge_update(e, graph, feats, weights, state, ent, rho, inv_lam_n, tau_e, scr):
    """The update of edge ``e`` (either layout of :mod:`crflearn._kernels.idal_compact`); returns 1 if it moved."""
    mu_row = edge_row(state.mu_e, e, scr.row)
    if ent.kind == SHANNON:
        moved = _shannon_edge(e, mu_row, graph, feats, weights, state, ent, rho, inv_lam_n, scr)
    else:
        moved = _gini_edge(e, mu_row, graph, feats, weights, state, ent, rho, inv_lam_n, tau_e, scr)
    if moved:
        edge_store(state.mu_e, e, mu_row)
    else:
        edge_done(state.mu_e, e, mu_row)
    return moved


@njit(cache=True, nogil=True, inline="always")
def _gini_edge(e, mu_row, graph, feats, weights, state, ent, rho, inv_lam_n, tau_e, scr):
    """The Gini update of edge ``e`` whose block is ``mu_row`` (updated in place); returns 1 if it moved."""
    K = scr.rd.shape[0]
    KK = K * K
    th = scr.th
    d = scr.d
    rd = scr.rd
    rmu = scr.rmu
    edge_theta(e, th, K, graph.base_e, feats.edge_features, weights.wp, state.zeta)
    two_k = 2.0 * ent.edge_w[e]
    otrw_a = ent.a
    src = th
    if otrw_a > 0.0:
        # linearised target: (theta + 2 kappa a M^T M mu) / (2 kappa)
        for a in range(K):
            sm = 0.0
            for b in range(K):
                sm += mu_row[a * K + b]
            rmu[a] = sm
        for a in range(K):
            shift = two_k * otrw_a * rmu[a]
            for b in range(K):
                d[a * K + b] = th[a * K + b] + shift
        src = d
    tau, ns = _edge_threshold(src, 1.0 / two_k, tau_e[e] - WARM_DELTA, scr.buf, scr.cidx)
    tau_e[e] = tau
    shift0 = two_k * tau
    nz = _sparse_direction(ns, tau, mu_row, scr)
    if nz == 0:
        return 0
    num, curv, rr, cc, dd = _gini_edge_sums(nz, two_k, otrw_a, mu_row, shift0, scr)
    if dd <= 0.0 or num <= 0.0:
        return 0
    gamma = min(num / (curv + rho * (rr + cc) + inv_lam_n * feats.edge_sq_norms[e] * dd), 1.0)
    if edge_capacity(state.mu_e) < KK and _support_after(gamma, mu_row, d) > edge_capacity(state.mu_e):
        return _gini_truncated(e, gamma, mu_row, feats, weights, state, ent, rho, inv_lam_n, shift0, scr)
    _apply_edge(e, gamma, nz, scr, feats, weights, state, rho, inv_lam_n, mu_row)
    return 1


@njit(cache=True, nogil=True, inline="always")
def _sparse_direction(ns, tau, mu_row, scr):
    """The direction ``scr.d = p - mu_row`` to the point ``p`` with entries ``scr.buf[:ns] - tau`` at
    ``scr.cidx[:ns]`` (0 elsewhere), its support (where ``p`` or ``mu_row`` is non-zero) compacted into
    ``scr.idx``; returns its size. ``scr.tg`` holds ``p`` meanwhile (all zero before and after)."""
    tg = scr.tg
    d = scr.d
    for j in range(ns):
        tg[scr.cidx[j]] = scr.buf[j] - tau
    nz = 0
    for i in range(tg.shape[0]):
        di = tg[i] - mu_row[i]
        d[i] = di
        scr.idx[nz] = i
        nz += di != 0.0
    for j in range(ns):
        tg[scr.cidx[j]] = 0.0
    return nz


@njit(cache=True, nogil=True, inline="always")
def _gini_edge_sums(nz, two_k, otrw_a, mu_row, shift0, scr):
    """``(num, curv, rr, cc, dd)`` of the Gini edge direction ``scr.d`` on the entries ``scr.idx[:nz]``:
    the slope and the entropy curvature of the block objective (with the ``gini_otrw`` terms; ``scr.rmu``
    the row sums of ``mu_row`` then) and the sums of :func:`_edge_direction_sums`."""
    K = scr.rd.shape[0]
    num, dd, rr, cc = _edge_direction_sums(nz, scr.th, two_k, mu_row, shift0, scr)
    curv = two_k * dd
    if otrw_a > 0.0 and dd > 0.0:
        for a in range(K):
            num += two_k * otrw_a * scr.rmu[a] * scr.rd[a]
        curv -= two_k * otrw_a * rr
    return num, curv, rr, cc, dd


@njit(cache=True, nogil=True)
def _support_after(gamma, mu_row, d):
    """Number of non-zeros of ``mu_row + gamma d``."""
    n = 0
    for i in range(mu_row.shape[0]):
        n += mu_row[i] + gamma * d[i] != 0.0
    return n


@njit(cache=True, nogil=True)
def _keep_largest(buf, cidx, n, m):
    """Compact the ``m`` largest of ``buf[:n]`` (ties: the first ones) with their ``cidx`` into the first
    ``m`` places, in their original order; returns ``m``."""
    t = np.partition(buf[:n], n - m)[n - m]  # the m-th largest value
    ties = m
    for j in range(n):
        ties -= buf[j] > t
    kept = 0
    for j in range(n):
        v = buf[j]
        if v > t or (v == t and ties > 0):
            ties -= v == t
            buf[kept] = v
            cidx[kept] = cidx[j]
            kept += 1
    return kept


@njit(cache=True, nogil=True)
def _gini_truncated(e, gamma, mu_row, feats, weights, state, ent, rho, inv_lam_n, shift0, scr):
    """A compact edge whose line-search point ``x = mu + gamma d`` has more non-zeros than the capacity
    ``m``: the projection ``p`` of the ``m`` largest entries of ``x`` onto the simplex (the others 0),
    taken (a full step) when it improves the block objective (exactly: the objective is quadratic along
    ``p - mu``); otherwise no move. Returns 1 if it moved."""
    K = scr.rd.shape[0]
    KK = K * K
    m = edge_capacity(state.mu_e)
    x, d, buf, cidx = scr.tgt, scr.d, scr.buf, scr.cidx
    for i in range(KK):
        x[i] = mu_row[i] + gamma * d[i]
    n = candidates_above(x, 1.0, 0.0, buf, cidx)
    if n > m:
        n = _keep_largest(buf, cidx, n, m)
    tau, ns = michelot_threshold(buf, cidx, n)
    nz = _sparse_direction(ns, tau, mu_row, scr)
    two_k = 2.0 * ent.edge_w[e]
    num, curv, rr, cc, dd = _gini_edge_sums(nz, two_k, ent.a, mu_row, shift0, scr)
    if not num - 0.5 * (curv + rho * (rr + cc) + inv_lam_n * feats.edge_sq_norms[e] * dd) > 0.0:
        return 0
    _apply_edge(e, 1.0, nz, scr, feats, weights, state, rho, inv_lam_n, mu_row)
    return 1


@njit(cache=True, nogil=True)
def _edge_direction_sums(nz, th, two_k, mu_row, shift0, scr):
    """Row/column sums of ``d`` (into ``scr.rd``, ``scr.cd``) and ``(<th - two_k mu_row - shift0, d>,
    ||d||^2, ||rowsum d||^2, ||colsum d||^2)`` over the entries ``scr.idx[:nz]``."""
    K = scr.rd.shape[0]
    rd = scr.rd
    cd = scr.cd
    for a in range(K):
        rd[a] = 0.0
        cd[a] = 0.0
    num = 0.0
    dd = 0.0
    for j in range(nz):
        i = scr.idx[j]
        di = scr.d[i]
        num += (th[i] - two_k * mu_row[i] - shift0) * di
        dd += di * di
        a = i // K
        rd[a] += di
        cd[i - a * K] += di
    rr = 0.0
    cc = 0.0
    for a in range(K):
        rr += rd[a] * rd[a]
        cc += cd[a] * cd[a]
    return num, dd, rr, cc


@njit(cache=True, nogil=True)
def _entropy_slope(gamma, p, d, th, w, curv, r, rd, strides):
    """``(phi'(gamma), phi''(gamma))`` of ``phi(g) = w [H(p + g d) - H(r + g rd)] + g <th, d> - g^2 curv / 2``.

    Node blocks: ``r`` empty. Edge blocks: ``r``, ``rd`` the parent marginals of ``p``, ``d``; entry
    ``(a, b)`` (parent ``a``) is ``a * strides[0] + b * strides[1]``. The entropy term is written with
    conditionals ``x_ab / r_a`` (the direction's conditional where the parent mass vanishes)."""
    g1 = -gamma * curv
    g2 = -curv
    K = r.shape[0]
    rows = K if K > 0 else 1
    cols = p.shape[0] // rows
    for a in range(rows):
        ra = r[a] + gamma * rd[a] if K > 0 else 1.0
        for b in range(cols):
            i = a * strides[0] + b * strides[1]
            di = d[i]
            if di == 0.0:
                continue
            g1 += di * th[i]
            if w == 0.0:
                continue
            x = p[i] + gamma * di
            if ra > 0.0:
                g1 -= w * di * np.log(x / ra)
            else:
                g1 -= w * di * np.log(di / rd[a])
            g2 = g2 - w * di * di / x if x > 0.0 else -np.inf
        if K > 0 and rd[a] != 0.0 and w != 0.0:
            g2 = g2 + w * rd[a] * rd[a] / ra if ra > 0.0 else -np.inf
    return g1, g2


@njit(cache=True, nogil=True)
def entropy_line_search(p, d, th, w, curv, r, rd, strides):
    """Exact step ``argmax_{g in [0, 1]} phi(g)`` of :func:`_entropy_slope` (concave): safeguarded
    Newton on ``phi'`` inside a bisection bracket. Returns 0 when ``d`` is not an ascent direction."""
    # phi' decreases: phi'(1) >= 0 makes the full step optimal (and d an ascent direction) whatever phi'(0)
    g_one = _entropy_slope(1.0, p, d, th, w, curv, r, rd, strides)[0]
    if g_one >= 0.0:
        return 1.0
    g0 = _entropy_slope(0.0, p, d, th, w, curv, r, rd, strides)[0]
    if not g0 > 0.0:
        return 0.0
    lo = 0.0
    hi = 1.0
    gamma = g0 / (g0 - g_one)  # the secant root: a closer start than 0.5 (10 % fewer slope evaluations on OCR)
    if not 0.0 < gamma < 1.0:
        gamma = 0.5
    for _ in range(100):
        g1, g2 = _entropy_slope(gamma, p, d, th, w, curv, r, rd, strides)
        if g1 > 0.0:
            lo = gamma
        elif g1 < 0.0:
            hi = gamma
        else:
            return gamma
        step = gamma - g1 / g2 if g2 < 0.0 else 0.5 * (lo + hi)
        if not (lo < step < hi):
            step = 0.5 * (lo + hi)
        if abs(step - gamma) <= 1e-15 or hi - lo <= 1e-15:
            return step
        gamma = step
    return gamma


@njit(cache=True, nogil=True)
def softmax_into(th, w, out):
    """``out = softmax(th / w)``; returns ``w * logsumexp(th / w)`` (``max(th)`` when ``w == 0``,
    with ``out`` the first argmax vertex)."""
    m = -np.inf
    am = 0
    for i in range(th.shape[0]):
        if th[i] > m:
            m = th[i]
            am = i
    if w <= 0.0:
        for i in range(th.shape[0]):
            out[i] = 0.0
        out[am] = 1.0
        return m
    z = 0.0
    for i in range(th.shape[0]):
        x = np.exp((th[i] - m) / w)
        out[i] = x
        z += x
    for i in range(th.shape[0]):
        out[i] /= z
    return m + w * np.log(z)


@njit(cache=True, nogil=True)
def _shannon_node(v, graph, feats, weights, state, ent, rho, inv_lam_n, scr):
    """Entropy-weighted nodes: target ``softmax(theta / w)``; entropy-free nodes (non-roots of a
    forest): the exact block maximiser ``Proj(mu + theta / curv)``; then the exact line search."""
    mu_n = state.mu_n
    K = mu_n.shape[1]
    thv = scr.th[:K]
    tgt = scr.tgt[:K]
    d = scr.d[:K]
    node_theta(v, thv, graph, feats, weights.wuT, state.zeta)
    wv = ent.node_w[v]
    deg = graph.inc_ptr[v + 1] - graph.inc_ptr[v]
    curv = rho * deg + inv_lam_n * feats.sq_norms[v]
    if wv > 0.0 or curv <= 0.0:
        softmax_into(thv, wv, tgt)
    else:
        for k in range(K):
            d[k] = mu_n[v, k] + thv[k] / curv
        project_simplex(d, 1.0, tgt, scr.buf, scr.cidx)
    dd = 0.0
    for k in range(K):
        d[k] = tgt[k] - mu_n[v, k]
        dd += d[k] * d[k]
    if dd <= 0.0:
        return 0
    gamma = entropy_line_search(mu_n[v], d, thv, wv, curv * dd, scr.rk[:0], scr.rd[:0], (0, 1))
    if gamma <= 0.0:
        return 0
    _apply_node(v, gamma, d, graph, feats, weights, state, rho, inv_lam_n)
    return 1


@njit(cache=True, nogil=True)
def parent_sums(row, K, side, out):
    """Marginal of the parent endpoint of an edge block (``side`` 0: row sums, 1: column sums)."""
    for a in range(K):
        out[a] = 0.0
    for a in range(K):
        for b in range(K):
            out[b if side else a] += row[a * K + b]


@njit(cache=True, nogil=True)
def _conditionals(th, w, stride_p, stride_c, out, vals):
    """For every parent state ``a``: ``out[a, :] = softmax(th[a, :] / w)`` and ``vals[a] = w lse(th[a, :] / w)``
    (entries ``a * stride_p + b * stride_c``)."""
    K = vals.shape[0]
    for a in range(K):
        m = -np.inf
        for b in range(K):
            m = max(m, th[a * stride_p + b * stride_c])
        z = 0.0
        for b in range(K):
            i = a * stride_p + b * stride_c
            out[i] = np.exp((th[i] - m) / w)
            z += out[i]
        for b in range(K):
            out[a * stride_p + b * stride_c] /= z
        vals[a] = m + w * np.log(z)


@njit(cache=True, nogil=True)
def _shannon_edge(e, mu_row, graph, feats, weights, state, ent, rho, inv_lam_n, scr):
    """Conditional-entropy edge: target ``r^_a q_a`` with the conditionals ``q_a = softmax(theta_a / w)``
    of every parent state ``a`` and the parent marginal ``r^ = Proj(r + s / L)`` (``s_a = w lse(theta_a / w)``,
    ``L`` the penalty curvature), then the exact line search."""
    K = scr.rd.shape[0]
    th, tgt, d, sk, rk = scr.th, scr.tgt, scr.d, scr.sk, scr.rk
    edge_theta(e, th, K, graph.base_e, feats.edge_features, weights.wp, state.zeta)
    w = ent.edge_w[e]
    side = ent.side[e]
    stride_p, stride_c = (1, K) if side else (K, 1)
    _conditionals(th, w, stride_p, stride_c, tgt, sk)
    parent_sums(mu_row, K, side, scr.rmu)
    lip = 2.0 * rho + inv_lam_n * feats.edge_sq_norms[e]
    if lip > 0.0:
        for a in range(K):
            scr.cd[a] = scr.rmu[a] + sk[a] / lip
        project_simplex(scr.cd, 1.0, rk, scr.buf, scr.cidx)
    else:
        softmax_into(sk, 0.0, rk)
    nz = 0
    for a in range(K):
        for b in range(K):
            i = a * stride_p + b * stride_c
            d[i] = rk[a] * tgt[i] - mu_row[i]
            scr.idx[nz] = i
            nz += d[i] != 0.0
    if nz == 0:
        return 0
    _, dd, rr, cc = _edge_direction_sums(nz, th, 0.0, mu_row, 0.0, scr)
    parent_sums(d, K, side, sk)
    gamma = entropy_line_search(mu_row, d, th, w, rho * (rr + cc) + inv_lam_n * feats.edge_sq_norms[e] * dd,
                                scr.rmu, sk, (stride_p, stride_c))
    if gamma <= 0.0:
        return 0
    _apply_edge(e, gamma, nz, scr, feats, weights, state, rho, inv_lam_n, mu_row)
    return 1


@njit(cache=True, nogil=True)
def zeta_from_blocks(graph, state, rho, out):
    """``zeta = xi + rho * A mu`` with ``A mu`` computed from the node and edge blocks (a pass over every edge
    block: O(E K^2)).

    Writes ``out = [||A mu||^2, <xi, A mu>]``. Returns 0.
    """
    edges, mu_n, mu_e, xi, zeta = graph.edges, state.mu_n, state.mu_e, state.xi, state.zeta
    K = mu_n.shape[1]
    a2 = 0.0
    xa = 0.0
    r = np.empty(K)
    c = np.empty(K)
    scratch = np.zeros(K * K)
    for e in range(edges.shape[0]):
        row = edge_row(mu_e, e, scratch)
        s = edges[e, 0]
        t = edges[e, 1]
        for a in range(K):
            r[a] = -mu_n[s, a]
            c[a] = -mu_n[t, a]
        # four rows at a time: independent accumulation chains, same summation order
        a = 0
        while a + 4 <= K:
            r0 = r[a]
            r1 = r[a + 1]
            r2 = r[a + 2]
            r3 = r[a + 3]
            o = a * K
            for b in range(K):
                m0 = row[o + b]
                m1 = row[o + K + b]
                m2 = row[o + 2 * K + b]
                m3 = row[o + 3 * K + b]
                r0 += m0
                r1 += m1
                r2 += m2
                r3 += m3
                c[b] = (((c[b] + m0) + m1) + m2) + m3
            r[a] = r0
            r[a + 1] = r1
            r[a + 2] = r2
            r[a + 3] = r3
            a += 4
        for a in range(a, K):
            ra = r[a]
            for b in range(K):
                m = row[a * K + b]
                ra += m
                c[b] += m
            r[a] = ra
        edge_done(mu_e, e, row)
        for a in range(K):
            zeta[e, 0, a] = xi[e, 0, a] + rho * r[a]
            zeta[e, 1, a] = xi[e, 1, a] + rho * c[a]
            a2 += r[a] * r[a] + c[a] * c[a]
            xa += xi[e, 0, a] * r[a] + xi[e, 1, a] * c[a]
    out[0] = a2
    out[1] = xa
    return 0


@njit(cache=True, nogil=True)
def multiplier_update(state, rho, eta, out):
    """The multiplier step ``xi += eta * A mu``, then ``zeta = xi + rho * A mu``, with ``A mu`` read off
    ``(zeta - xi) / rho``: O(E K), no pass over the edge blocks.

    Valid while ``zeta == xi + rho * A mu`` holds, which every clique update maintains (up to round-off); the
    caller restores it exactly with :func:`zeta_from_blocks` from time to time so that round-off cannot
    accumulate. Writes ``out = [||A mu||^2, <xi_new, A mu>]``; returns 0.
    """
    xi, zeta = state.xi, state.zeta
    inv_rho = 1.0 / rho
    a2 = 0.0
    xa = 0.0
    for e in range(xi.shape[0]):
        for side in range(2):
            for a in range(xi.shape[2]):
                r = (zeta[e, side, a] - xi[e, side, a]) * inv_rho
                x = xi[e, side, a] + eta * r
                xi[e, side, a] = x
                zeta[e, side, a] = x + rho * r
                a2 += r * r
                xa += x * r
    out[0] = a2
    out[1] = xa
    return 0


#: a large example is swept block by block (see :func:`clique_order`): blocks of at most LOCAL_BLOCK cliques of
#: consecutive nodes stay in cache while they are updated. Measured (benchmarks/bench_locality.py, K = 4, Gini,
#: 2-core machine under load, interleaved): CPU us per node and sweep on a 700 x 700 grid 5.14 in random order,
#: 4.09 in blocks of 8 cliques, 3.82 of 16, 3.53 of 64; on a 500,000-node chain 3.64, 2.45, 2.33, 2.14. Larger
#: blocks cost convergence: epochs to a certified 1e-3 on a 300 x 300 grid (certified every 4 epochs) 16 in
#: random order, 16 in blocks of 8, 20 of 16, 36 of 256
LOCAL_BLOCK = 8
#: ... and at least MIN_BLOCKS of them: few blocks visited one after the other slow convergence down (a chain of
#: 7,120 nodes: 14 blocks never reached a certified 1e-3 in 600 epochs, the random order took 32), so a block
#: holds ``min(LOCAL_BLOCK, cliques // MIN_BLOCKS)`` cliques
MIN_BLOCKS = 1024
#: ... and an example whose blocks would hold fewer cliques than this keeps the plain random order
MIN_BLOCK = 8


@njit(cache=True, nogil=True)
def clique_order(example_perm, keys, node_offsets, edge_offsets, n_nodes, order, edges=None, block=LOCAL_BLOCK,
                 min_blocks=MIN_BLOCKS, min_block=MIN_BLOCK):
    """Sweep order: examples in the order ``example_perm``; inside an example its nodes
    and edges (clique ids ``v`` and ``n_nodes + e``) sorted by the random ``keys``.

    Keeping an example's cliques together keeps its marginals and messages in cache;
    the order within and across examples is random. When ``edges`` (the (E, 2) endpoints) is given, an
    example of ``c`` cliques with ``size = min(block, c // min_blocks) >= min_block`` is split into blocks of
    about ``size`` cliques: consecutive nodes with the edges whose lower endpoint they hold, visited in a
    random order (by a key drawn from ``keys``), each sorted by ``keys``: a huge example is then swept block
    by block, not in random order over all its memory. Returns the number of cliques written.
    """
    pos = 0
    for j in range(example_perm.shape[0]):
        i = example_perm[j]
        n0, n1 = node_offsets[i], node_offsets[i + 1]
        e0, e1 = edge_offsets[i], edge_offsets[i + 1]
        size = min(block, ((n1 - n0) + (e1 - e0)) // min_blocks)
        if edges is None or size < min_block:
            start = pos
            for v in range(n0, n1):
                order[pos] = v
                pos += 1
            for e in range(e0, e1):
                order[pos] = n_nodes + e
                pos += 1
            _sort_by_keys(order, start, pos, keys)
        else:
            pos = _blocked_example(n0, n1, e0, e1, size, keys, edges, n_nodes, order, pos)
    return pos


@njit(cache=True, nogil=True)
def _sort_by_keys(order, start, stop, keys):
    """Sort the cliques ``order[start:stop]`` by their ``keys``."""
    seg_keys = np.empty(stop - start)
    for q in range(start, stop):
        seg_keys[q - start] = keys[order[q]]
    idx = np.argsort(seg_keys)
    seg = order[start:stop].copy()
    for q in range(stop - start):
        order[start + q] = seg[idx[q]]


@njit(cache=True, nogil=True)
def _blocked_example(n0, n1, e0, e1, size, keys, edges, n_nodes, order, pos):
    """The cliques of one large example from ``order[pos]`` on, in blocks of about ``size`` cliques (see
    :func:`clique_order`); returns the position after them."""
    n = n1 - n0
    n_blocks = -(-(n + e1 - e0) // size)
    per = -(-n // n_blocks)  # nodes per block
    n_blocks = -(-n // per)
    block_of_edge = np.empty(e1 - e0, np.int64)
    start = np.zeros(n_blocks + 1, np.int64)
    for b in range(n_blocks):
        start[b + 1] = min(per, n - b * per)
    for e in range(e0, e1):
        b = (min(edges[e, 0], edges[e, 1]) - n0) // per
        block_of_edge[e - e0] = b
        start[b + 1] += 1
    # the visiting order of the blocks: the low bits of the key of each block's first node (a uniform
    # number independent of the key's high bits, which also place that node inside its block)
    block_keys = np.empty(n_blocks)
    for b in range(n_blocks):
        block_keys[b] = (keys[n0 + b * per] * 4096.0) % 1.0
    visit = np.argsort(block_keys)
    offset = np.empty(n_blocks, np.int64)
    for q in range(n_blocks):
        b = visit[q]
        offset[b] = pos
        pos += start[b + 1]
    fill = offset.copy()
    for v in range(n0, n1):
        b = (v - n0) // per
        order[fill[b]] = v
        fill[b] += 1
    for e in range(e0, e1):
        b = block_of_edge[e - e0]
        order[fill[b]] = n_nodes + e
        fill[b] += 1
    for b in range(n_blocks):
        _sort_by_keys(order, offset[b], fill[b], keys)
    return pos
