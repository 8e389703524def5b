"""Numba kernels of the IDAL solver and of Gini-relaxed inference.

All state lives in flat arrays (see :mod:`crflearn.solvers.idal` for the layout):

* ``mu_n`` (N, K) node marginals, ``mu_e`` (E, K*K) edge marginals (row-major ``a * K + b``);
* ``zeta`` (E, 2, K): ``zeta[e, 0]`` lives on the separator of ``edges[e, 0]`` (row sums),
  ``zeta[e, 1]`` on ``edges[e, 1]`` (column sums);
* ``wuT`` (p, K): transposed unary weights (so that one feature touches K contiguous numbers),
  ``wp`` (q, K*K): pairwise weights, ``pairwise[e] = sum_f efeat[e, f] * wp[f]``
  (shared transitions are ``q = 1`` with ``efeat = 1``);
* node features as CSR arrays ``x_ptr, x_idx, x_val``; incidence of node ``v`` is
  ``inc_slot[inc_ptr[v]:inc_ptr[v + 1]]`` with ``slot = 2 * e + side``.

Clique scores are ``theta_v = base_n[v] + W_u x_v + sum_{e ∋ v} zeta[e, side]`` and
``theta_e[a, b] = base_e + W_p(x_e)[a, b] - zeta[e, 0, a] - zeta[e, 1, b]``. ``base_e`` has
``E`` rows (per edge), 1 row (shared) or 0 rows (none). Gini relaxed inference uses the
same kernels with no features (empty CSR, ``q = 0``) and ``inv_lam_n = 0`` (no ``w`` coupling).

The entropy surrogate is ``kappa * G(mu_v)`` on nodes and ``kappa * (G(mu_e) - a * G(rowsum mu_e))``
on edges with ``G(p) = 1 - ||p||^2``; ``a = 0`` is the plain Gini surrogate and ``0 < a < 1/K``
the oriented tree-reweighted one (``gini_otrw``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .simplex import project_simplex

__all__ = ["idal_sweep", "idal_sweep_warm", "idal_monitor", "idal_outer", "clique_order"]


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


@njit(cache=True)
def _prefetch_clique(c, N, K, x_ptr, x_idx, x_val, base_n, mu_n, mu_e, zeta, inc_ptr, inc_slot):
    """Prefetch what the update of clique ``c`` will read (cliques are visited in random order,
    which defeats the hardware prefetcher); 8 float64 per cache line."""
    if c < N:
        lo = x_ptr[c]
        hi = x_ptr[c + 1]
        for j in range(lo, hi, 8):
            _prefetch(x_idx, (j,))
            _prefetch(x_val, (j,))
        if hi > lo:
            _prefetch(x_idx, (hi - 1,))
            _prefetch(x_val, (hi - 1,))
        for k in range(0, K, 8):
            _prefetch(base_n, (c, k))
            _prefetch(mu_n, (c, k))
        _prefetch(base_n, (c, K - 1))
        _prefetch(mu_n, (c, K - 1))
        for j in range(inc_ptr[c], inc_ptr[c + 1]):
            slot = inc_slot[j]
            e = slot // 2
            side = slot - 2 * e
            for k in range(0, K, 8):
                _prefetch(zeta, (e, side, k))
            _prefetch(zeta, (e, side, K - 1))
    else:
        e = c - N
        for i in range(0, K * K, 8):
            _prefetch(mu_e, (e, i))
        _prefetch(mu_e, (e, K * K - 1))
        for side in range(2):
            for k in range(0, K, 8):
                _prefetch(zeta, (e, side, k))
            _prefetch(zeta, (e, side, K - 1))


@njit(cache=True)
def _michelot_support(buf, cidx, n):
    """Michelot's fixed point on the candidates ``buf[:n]`` (indices ``cidx[:n]``), which must
    contain the support and be in index order. Compacts the support into ``buf[:ns]``,
    ``cidx[:ns]`` and returns ``(tau, ns)``; same threshold as
    :func:`~crflearn._kernels.simplex.michelot_threshold`.
    """
    total = 0.0
    for j in range(n):
        total += buf[j]
    tau = (total - 1.0) / n
    while True:
        kept = 0
        new_total = 0.0
        for j in range(n):
            x = buf[j]
            buf[kept] = x
            cidx[kept] = cidx[j]
            keep = x > tau
            kept += keep
            new_total += x if keep else 0.0
        if kept == n:
            break
        n = kept
        tau = (new_total - 1.0) / n
    return tau, n


@njit(cache=True)
def _node_theta(v, th, base_n, x_ptr, x_idx, x_val, wuT, zeta, inc_ptr, inc_slot):
    K = th.shape[0]
    for k in range(K):
        th[k] = base_n[v, k]
    for j in range(x_ptr[v], x_ptr[v + 1]):
        c = x_idx[j]
        x = x_val[j]
        for k in range(K):
            th[k] += wuT[c, k] * x
    for j in range(inc_ptr[v], inc_ptr[v + 1]):
        slot = inc_slot[j]
        e = slot // 2
        side = slot - 2 * e
        for k in range(K):
            th[k] += zeta[e, side, k]


@njit(cache=True)
def _edge_theta(e, th, K, base_e, efeat, wp, zeta):
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


@njit(cache=True)
def idal_sweep(order, K, base_n, base_e, x_ptr, x_idx, x_val, x_sq, efeat, e_sq,
               edges, inc_ptr, inc_slot, wuT, wp, mu_n, mu_e, zeta,
               kappa, otrw_a, rho, inv_lam_n):
    """One pass of exact clique-wise line-search updates in the order ``order``.

    ``order[j] < N`` is node ``order[j]``, otherwise edge ``order[j] - N``. Updates
    ``mu_n``, ``mu_e``, ``zeta`` and (when ``inv_lam_n > 0``) ``wuT``, ``wp`` in place.
    Returns the number of cliques whose step was non-zero. Same as :func:`idal_sweep_warm`
    without remembered thresholds.
    """
    tau_e = np.full(mu_e.shape[0], np.nan)
    return idal_sweep_warm(order, K, base_n, base_e, x_ptr, x_idx, x_val, x_sq, efeat, e_sq,
                           edges, inc_ptr, inc_slot, wuT, wp, mu_n, mu_e, zeta,
                           kappa, otrw_a, rho, inv_lam_n, tau_e)


@njit(cache=True)
def idal_sweep_warm(order, K, base_n, base_e, x_ptr, x_idx, x_val, x_sq, efeat, e_sq,
                    edges, inc_ptr, inc_slot, wuT, wp, mu_n, mu_e, zeta,
                    kappa, otrw_a, rho, inv_lam_n, tau_e):
    """:func:`idal_sweep` with the simplex thresholds of the edge projections remembered.

    ``tau_e`` (E,) holds the threshold of the last projection of every edge (NaN: none yet)
    and is updated in place. It only selects the candidates of the next projection of that
    edge (entries above ``tau_e - WARM_DELTA``, checked to contain the support, otherwise the
    cold candidates above ``max - 1`` are used): results do not depend on it up to round-off.
    Returns the number of cliques whose step was non-zero.
    """
    N = mu_n.shape[0]
    KK = K * K
    th = np.empty(KK)
    tgt = np.empty(KK)
    d = np.empty(KK)
    buf = np.empty(KK)
    rd = np.empty(K)
    cd = np.empty(K)
    rmu = np.empty(K)
    idx = np.empty(KK, dtype=np.int64)
    cidx = np.empty(KK, dtype=np.int64)
    tg = np.zeros(KK)
    two_k = 2.0 * kappa
    inv_2k = 1.0 / two_k
    moved = 0
    n_order = order.shape[0]
    for jj in range(n_order):
        c = order[jj]
        if jj + 1 < n_order:
            _prefetch_clique(order[jj + 1], N, K, x_ptr, x_idx, x_val, base_n, mu_n, mu_e, zeta,
                             inc_ptr, inc_slot)
        if c < N:
            v = c
            thv = th[:K]
            _node_theta(v, thv, base_n, x_ptr, x_idx, x_val, wuT, zeta, inc_ptr, inc_slot)
            # the gradient is shifted by the constant 2 kappa tau (it vanishes on the support at
            # the block optimum); sum(d) = 0 makes this exact, and it keeps the line search
            # accurate when d is tiny (otherwise round-off in sum(d) times tau dominates num)
            shift0 = two_k * project_simplex(thv, 1.0 / two_k, tgt[:K], buf)
            num = 0.0
            dd = 0.0
            for k in range(K):
                dk = tgt[k] - mu_n[v, k]
                d[k] = dk
                if dk != 0.0:  # -inf scores (forbidden states) keep d = 0
                    num += (thv[k] - two_k * mu_n[v, k] - shift0) * dk
                    dd += dk * dk
            if dd <= 0.0 or num <= 0.0:
                continue
            deg = inc_ptr[v + 1] - inc_ptr[v]
            den = dd * (two_k + rho * deg + inv_lam_n * x_sq[v])
            gamma = num / den
            if gamma > 1.0:
                gamma = 1.0
            moved += 1
            for k in range(K):
                mu_n[v, k] += gamma * d[k]
            if inv_lam_n > 0.0:
                for j in range(x_ptr[v], x_ptr[v + 1]):
                    s = gamma * inv_lam_n * x_val[j]
                    col = x_idx[j]
                    for k in range(K):
                        wuT[col, k] -= s * d[k]
            gr = gamma * rho
            for j in range(inc_ptr[v], inc_ptr[v + 1]):
                slot = inc_slot[j]
                e = slot // 2
                side = slot - 2 * e
                for k in range(K):
                    zeta[e, side, k] -= gr * d[k]
        else:
            e = c - N
            _edge_theta(e, th, K, base_e, efeat, wp, zeta)
            src = th
            if otrw_a > 0.0:
                # linearised target: (theta + 2 kappa a M^T M mu) / (2 kappa)
                for a in range(K):
                    sm = 0.0
                    for b in range(K):
                        sm += mu_e[e, a * K + b]
                    rmu[a] = sm
                for a in range(K):
                    shift = two_k * otrw_a * rmu[a]
                    for b in range(K):
                        d[a * K + b] = th[a * K + b] + shift
                src = d
            # projection threshold of src / (2 kappa): Michelot on candidates that contain the
            # support, taken above the previous threshold of this edge when that is provably
            # low enough (sum of (x - low)_+ >= 1), else above max - 1
            low = tau_e[e] - WARM_DELTA
            n = 0
            for i in range(KK):
                x = src[i] * inv_2k
                buf[n] = x
                cidx[n] = i
                n += x > low
            excess = 0.0
            for j in range(n):
                excess += buf[j] - low
            if not excess >= 1.0:
                m0 = -np.inf
                m1 = -np.inf
                m2 = -np.inf
                m3 = -np.inf
                for i in range(0, KK - 3, 4):
                    x0 = src[i]
                    x1 = src[i + 1]
                    x2 = src[i + 2]
                    x3 = src[i + 3]
                    if x0 > m0:
                        m0 = x0
                    if x1 > m1:
                        m1 = x1
                    if x2 > m2:
                        m2 = x2
                    if x3 > m3:
                        m3 = x3
                for i in range(KK - KK % 4, KK):
                    if src[i] > m0:
                        m0 = src[i]
                if m1 > m0:
                    m0 = m1
                if m3 > m2:
                    m2 = m3
                if m2 > m0:
                    m0 = m2
                low = m0 * inv_2k - 1.0
                n = 0
                for i in range(KK):
                    x = src[i] * inv_2k
                    buf[n] = x
                    cidx[n] = i
                    n += x > low
            tau, ns = _michelot_support(buf, cidx, n)
            tau_e[e] = tau
            shift0 = two_k * tau
            # target (non-zero on the support only) and the direction on its support (entries
            # where target or mu is non-zero)
            for j in range(ns):
                tg[cidx[j]] = buf[j] - tau
            nz = 0
            for i in range(KK):
                di = tg[i] - mu_e[e, i]
                d[i] = di
                idx[nz] = i
                nz += di != 0.0
            for j in range(ns):
                tg[cidx[j]] = 0.0
            if nz == 0:
                continue
            for a in range(K):
                rd[a] = 0.0
                cd[a] = 0.0
            num = 0.0
            dd = 0.0
            for j in range(nz):
                i = idx[j]
                di = d[i]
                num += (th[i] - two_k * mu_e[e, i] - shift0) * di
                dd += di * di
                a = i // K
                rd[a] += di
                cd[i - a * K] += di
            if dd <= 0.0:
                continue
            rr = 0.0
            cc = 0.0
            for a in range(K):
                rr += rd[a] * rd[a]
                cc += cd[a] * cd[a]
            curv = two_k * dd
            if otrw_a > 0.0:
                for a in range(K):
                    num += two_k * otrw_a * rmu[a] * rd[a]
                curv -= two_k * otrw_a * rr
            if num <= 0.0:
                continue
            den = curv + rho * (rr + cc) + inv_lam_n * e_sq[e] * dd
            gamma = num / den
            if gamma > 1.0:
                gamma = 1.0
            moved += 1
            for j in range(nz):
                i = idx[j]
                mu_e[e, i] += gamma * d[i]
            if inv_lam_n > 0.0:
                for f in range(efeat.shape[1]):
                    s = gamma * inv_lam_n * efeat[e, f]
                    if s != 0.0:
                        for j in range(nz):
                            i = idx[j]
                            wp[f, i] -= s * d[i]
            gr = gamma * rho
            for a in range(K):
                zeta[e, 0, a] += gr * rd[a]
                zeta[e, 1, a] += gr * cd[a]
    return moved


@njit(cache=True)
def _gini_conj(th, scale_k, p, buf):
    """Value of ``max_p <th, p> + kappa (1 - ||p||^2)`` (maximiser left in ``p``)."""
    kappa = scale_k
    project_simplex(th, 1.0 / (2.0 * kappa), p, buf)
    val = kappa
    for i in range(th.shape[0]):
        if p[i] != 0.0:
            val += p[i] * (th[i] - kappa * p[i])
    return val


@njit(cache=True)
def _otrw_conj(th, K, kappa, a, start, p, g, buf, rp, max_iter, tol):
    """Upper bound on ``max_p <th, p> + kappa (G(p) - a G(rowsum p))`` over the simplex.

    Projected gradient (step ``1 / (2 kappa)``, contraction ``a K``) from ``start``,
    then the value plus the Frank-Wolfe gap of the last iterate, which bounds the
    maximum from above and vanishes at the maximiser.
    """
    KK = K * K
    for i in range(KK):
        p[i] = start[i]
    val = 0.0
    for it in range(max_iter + 1):
        for r in range(K):
            sm = 0.0
            for b in range(K):
                sm += p[r * K + b]
            rp[r] = sm
        # gradient and value at p
        val = kappa * (1.0 - a)
        gmax = -np.inf
        gp = 0.0
        for r in range(K):
            val += kappa * a * rp[r] * rp[r]
            for b in range(K):
                i = r * K + b
                gi = th[i] - 2.0 * kappa * p[i] + 2.0 * kappa * a * rp[r]
                g[i] = gi
                if p[i] != 0.0:
                    val += p[i] * (th[i] - kappa * p[i])
                    gp += gi * p[i]
                if gi > gmax:
                    gmax = gi
        fw = gmax - gp
        if fw < 0.0:
            fw = 0.0
        if fw <= tol * (1.0 + abs(val)) or it == max_iter:
            return val + fw
        for r in range(K):
            shift = 2.0 * kappa * a * rp[r]
            for b in range(K):
                g[r * K + b] = th[r * K + b] + shift
        project_simplex(g, 1.0 / (2.0 * kappa), p, buf)
    return val


@njit(cache=True)
def idal_monitor(K, base_n, base_e, x_ptr, x_idx, x_val, efeat, edges, inc_ptr, inc_slot,
                 wuT, wp, mu_n, mu_e, zeta, kappa, otrw_a, gaps, sums):
    """Fenchel-Young gaps of every clique and the sums needed for the objectives.

    Writes ``gaps[c] = h_c*(theta_c) - <theta_c, mu_c> - h_c(mu_c) >= 0`` for every clique
    (nodes first, then edges) and ``sums = [sum h*(theta), sum h(mu), sum <base, mu>,
    sum <theta, mu>]``. Returns 0.
    """
    N = mu_n.shape[0]
    E = mu_e.shape[0]
    KK = K * K
    th = np.empty(KK)
    p = np.empty(KK)
    g = np.empty(KK)
    buf = np.empty(KK)
    rp = np.empty(K)
    s_hstar = 0.0
    s_h = 0.0
    s_base = 0.0
    s_thmu = 0.0
    for v in range(N):
        thv = th[:K]
        _node_theta(v, thv, base_n, x_ptr, x_idx, x_val, wuT, zeta, inc_ptr, inc_slot)
        hs = _gini_conj(thv, kappa, p[:K], buf)
        h = kappa
        tm = 0.0
        bm = 0.0
        for k in range(K):
            m = mu_n[v, k]
            if m != 0.0:
                h -= kappa * m * m
                tm += thv[k] * m
                bm += base_n[v, k] * m
        gap = hs - tm - h
        gaps[v] = gap if gap > 0.0 else 0.0
        s_hstar += hs
        s_h += h
        s_base += bm
        s_thmu += tm
    nb = base_e.shape[0]
    for e in range(E):
        _edge_theta(e, th, K, base_e, efeat, wp, zeta)
        if otrw_a > 0.0:
            hs = _otrw_conj(th, K, kappa, otrw_a, mu_e[e], p, g, buf, rp, 500, 1e-13)
        else:
            hs = _gini_conj(th, kappa, p, buf)
        h = kappa
        tm = 0.0
        bm = 0.0
        for i in range(KK):
            m = mu_e[e, i]
            if m == 0.0:
                continue
            h -= kappa * m * m
            tm += th[i] * m
            if nb > 0:
                bm += base_e[e if nb > 1 else 0, i] * m
        if otrw_a > 0.0:
            sq = 0.0
            for r in range(K):
                sm = 0.0
                for b in range(K):
                    sm += mu_e[e, r * K + b]
                sq += sm * sm
            h -= kappa * otrw_a * (1.0 - sq)
        gap = hs - tm - h
        gaps[N + e] = gap if gap > 0.0 else 0.0
        s_hstar += hs
        s_h += h
        s_base += bm
        s_thmu += tm
    sums[0] = s_hstar
    sums[1] = s_h
    sums[2] = s_base
    sums[3] = s_thmu
    return 0


@njit(cache=True)
def idal_outer(K, edges, mu_n, mu_e, xi, zeta, rho, eta, out):
    """Multiplier step ``xi += eta * A mu``, then ``zeta = xi + rho * A mu``.

    Writes ``out = [||A mu||^2, <xi_new, A mu>]``. With ``eta = 0`` it only rebuilds ``zeta``.
    Returns 0.
    """
    a2 = 0.0
    xa = 0.0
    r = np.empty(K)
    c = np.empty(K)
    for e in range(edges.shape[0]):
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
                m0 = mu_e[e, o + b]
                m1 = mu_e[e, o + K + b]
                m2 = mu_e[e, o + 2 * K + b]
                m3 = mu_e[e, o + 3 * K + b]
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
                m = mu_e[e, a * K + b]
                ra += m
                c[b] += m
            r[a] = ra
        for a in range(K):
            x0 = xi[e, 0, a] + eta * r[a]
            x1 = xi[e, 1, a] + eta * c[a]
            xi[e, 0, a] = x0
            xi[e, 1, a] = x1
            zeta[e, 0, a] = x0 + rho * r[a]
            zeta[e, 1, a] = x1 + rho * c[a]
            a2 += r[a] * r[a] + c[a] * c[a]
            xa += x0 * r[a] + x1 * c[a]
    out[0] = a2
    out[1] = xa
    return 0


@njit(cache=True)
def clique_order(example_perm, keys, node_offsets, edge_offsets, n_nodes, order):
    """Sweep order: examples in the order ``example_perm``; inside an example its nodes
    and edges (clique ids ``v`` and ``n_nodes + e``) sorted by the random ``keys``.

    Keeping an example's cliques together keeps its marginals and messages in cache;
    the order within and across examples is random. Returns the number of cliques written.
    """
    pos = 0
    for j in range(example_perm.shape[0]):
        i = example_perm[j]
        start = pos
        for v in range(node_offsets[i], node_offsets[i + 1]):
            order[pos] = v
            pos += 1
        for e in range(edge_offsets[i], edge_offsets[i + 1]):
            order[pos] = n_nodes + e
            pos += 1
        seg_keys = np.empty(pos - start)
        for q in range(start, pos):
            c = order[q]
            seg_keys[q - start] = keys[c]
        idx = np.argsort(seg_keys)
        seg = order[start:pos].copy()
        for q in range(pos - start):
            order[start + q] = seg[idx[q]]
    return pos
