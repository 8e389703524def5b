"""Numba kernels of IDAL's monitoring: clique conjugates, Fenchel-Young gaps and the certificate.

* :func:`idal_monitor`: every clique's score ``theta_c`` at the current ``(w, zeta)``, the value of
  the conjugate ``h_c*(theta_c)`` (an upper bound on it for ``gini_otrw``, whose conjugate has no
  closed form), the Fenchel-Young gaps and the sums behind the objectives. ``sum_c h_c*(theta_c)``
  is the inner term of the relaxed primal ``P~(w, zeta)``, an upper bound on the optimum for any
  ``zeta`` (DESIGN-idal section 5).
* :func:`transport_repair`: a point of the local polytope near the current marginals: every edge
  block moved towards the transportation polytope ``{M >= 0, M 1 = mu_s, M^T 1 = mu_t}`` (a few
  Dykstra rounds) and then rounded onto it exactly (clip, cap the rows and columns, add the outer
  product of the deficits); node blocks are kept (entries below 1e-12 rounded to 0 beforehand).
* :func:`dual_sums`: entropy and loss sums of a marginal vector and its joint feature statistics,
  from which ``D(mu~)``, the certified lower bound, follows.

The layout of the arguments is that of :mod:`crflearn._kernels.idal`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .idal import GINI, _conditionals, edge_theta, node_theta, parent_sums, softmax_into
from .idal_compact import edge_done, edge_row
from .simplex import project_simplex

__all__ = ["idal_monitor", "transport_repair", "dual_sums", "repair_sums"]


@njit(cache=True, nogil=True)
def _gini_conj(th, kappa, p, buf, idx):
    """Value of ``max_p <th, p> + kappa (1 - ||p||^2)`` (maximiser left in ``p``)."""
    project_simplex(th, 1.0 / (2.0 * kappa), p, buf, idx)
    val = kappa
    for i in range(th.shape[0]):
        if p[i] != 0.0:
            val += p[i] * (th[i] - kappa * p[i])
    return val


@njit(cache=True, nogil=True)
def _otrw_conj(th, kappa, a, start, scr, max_iter, tol):
    """Upper bound on ``max_p <th, p> + kappa (G(p) - a G(rowsum p))`` over the simplex.

    Projected gradient (step ``1 / (2 kappa)``, contraction ``a K``) from ``start``,
    then the value plus the Frank-Wolfe gap of the last iterate, which bounds the
    maximum from above and vanishes at the maximiser.
    """
    K = scr.rmu.shape[0]
    p, g, rp = scr.tgt, scr.d, scr.rmu
    for i in range(K * K):
        p[i] = start[i]
    val = 0.0
    for it in range(max_iter + 1):
        parent_sums(p, K, 0, rp)
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
        fw = max(gmax - gp, 0.0)
        if fw <= tol * (1.0 + abs(val)) or it == max_iter:
            return val + fw
        for r in range(K):
            shift = 2.0 * kappa * a * rp[r]
            for b in range(K):
                g[r * K + b] = th[r * K + b] + shift
        project_simplex(g, 1.0 / (2.0 * kappa), p, scr.buf, scr.cidx)
    return val


@njit(cache=True, nogil=True)
def _plogp(x):
    return x * np.log(x) if x > 0.0 else 0.0


@njit(cache=True, nogil=True)
def node_entropy(mu_row, w, kind):
    """``h_v(mu_v)``: ``w G(mu_v)`` or ``w H(mu_v)``."""
    h = 0.0
    if kind == GINI:
        h = w
        for k in range(mu_row.shape[0]):
            h -= w * mu_row[k] * mu_row[k]
    else:
        for k in range(mu_row.shape[0]):
            h -= w * _plogp(mu_row[k])
    return h


@njit(cache=True, nogil=True)
def edge_entropy(mu_row, w, ent, side, rp):
    """``h_e(mu_e)``: ``w (G(mu_e) - a G(P mu_e))`` or ``w (H(mu_e) - H(P mu_e))``."""
    K = rp.shape[0]
    h = node_entropy(mu_row, w, ent.kind)
    if ent.kind == GINI and ent.a == 0.0:
        return h
    parent_sums(mu_row, K, side, rp)
    if ent.kind == GINI:
        return h - ent.a * node_entropy(rp, w, GINI)
    return h - node_entropy(rp, w, ent.kind)


@njit(cache=True, nogil=True)
def _node_conj(th, w, kind, scr):
    K = th.shape[0]
    if kind == GINI:
        return _gini_conj(th, w, scr.tgt[:K], scr.buf, scr.cidx)
    return softmax_into(th, w, scr.tgt[:K])


@njit(cache=True, nogil=True)
def _edge_conj(e, th, ent, mu_row, scr):
    K = scr.rd.shape[0]
    w = ent.edge_w[e]
    if ent.kind == GINI:
        if ent.a > 0.0:
            return _otrw_conj(th, w, ent.a, mu_row, scr, 500, 1e-13)
        return _gini_conj(th, w, scr.tgt, scr.buf, scr.cidx)
    if ent.side[e]:
        _conditionals(th, w, 1, K, scr.tgt, scr.sk)
    else:
        _conditionals(th, w, K, 1, scr.tgt, scr.sk)
    return np.max(scr.sk)


@njit(cache=True, nogil=True)
def idal_monitor(graph, feats, weights, state, ent, gaps, sums, scr):
    """Fenchel-Young gaps of every clique and the sums needed for the objectives.

    Writes ``gaps[c] = h_c*(theta_c) - <theta_c, mu_c> - h_c(mu_c) >= 0`` for every clique
    (nodes first, then edges) and ``sums = [sum h*(theta), sum h(mu), sum <base, mu>,
    sum <theta, mu>]``. Returns 0.
    """
    mu_n, mu_e = state.mu_n, state.mu_e
    N, K = mu_n.shape
    th = scr.th
    acc = np.zeros(4)
    unscored = np.zeros(K)  # base_n of shape (0, K): no node scores
    for v in range(N):
        thv = th[:K]
        node_theta(v, thv, graph, feats, weights.wuT, state.zeta)
        hs = _node_conj(thv, ent.node_w[v], ent.kind, scr)
        h = node_entropy(mu_n[v], ent.node_w[v], ent.kind)
        base = graph.base_n[v] if graph.base_n.shape[0] > 0 else unscored
        gaps[v] = _accumulate(acc, hs, h, thv, base, mu_n[v])
    nb = graph.base_e.shape[0]
    zero = np.zeros(K * K)
    for e in range(graph.edges.shape[0]):
        row = edge_row(mu_e, e, scr.row)
        edge_theta(e, th, K, graph.base_e, feats.edge_features, weights.wp, state.zeta)
        hs = _edge_conj(e, th, ent, row, scr)
        h = edge_entropy(row, ent.edge_w[e], ent, ent.side[e], scr.rk)
        base = zero if nb == 0 else graph.base_e[e if nb > 1 else 0]
        gaps[N + e] = _accumulate(acc, hs, h, th, base, row)
        edge_done(mu_e, e, row)
    for j in range(4):
        sums[j] = acc[j]
    return 0


@njit(cache=True, nogil=True)
def _accumulate(acc, hs, h, th, base, mu_row):
    """Add one clique to ``acc = [h*, h, <base, mu>, <theta, mu>]``; return its Fenchel-Young gap."""
    tm = 0.0
    bm = 0.0
    for i in range(mu_row.shape[0]):
        m = mu_row[i]
        if m != 0.0:
            tm += th[i] * m
            bm += base[i] * m
    acc[0] += hs
    acc[1] += h
    acc[2] += bm
    acc[3] += tm
    return max(hs - tm - h, 0.0)


@njit(cache=True, nogil=True)
def _affine_projection(x, a, b, K, out):
    """Euclidean projection of ``x`` (K*K) onto ``{M 1 = a, M^T 1 = b}`` restricted to the rows with
    ``a > 0`` and columns with ``b > 0`` (the other entries are 0 in every feasible point)."""
    kr = 0
    kc = 0
    for i in range(K):
        kr += a[i] > 0.0
        kc += b[i] > 0.0
    rdef = a.copy()
    cdef = b.copy()
    s = 1.0
    for i in range(K):
        for j in range(K):
            if a[i] > 0.0 and b[j] > 0.0:
                rdef[i] -= x[i * K + j]
                cdef[j] -= x[i * K + j]
                s -= x[i * K + j]
    for i in range(K):
        for j in range(K):
            if a[i] > 0.0 and b[j] > 0.0:
                out[i * K + j] = x[i * K + j] + rdef[i] / kc + cdef[j] / kr - s / (kr * kc)
            else:
                out[i * K + j] = 0.0


@njit(cache=True, nogil=True)
def _cap_lines(out, cap, stride_line, stride_entry):
    """Scale down every line ``l`` of the K x K block (entries ``l * stride_line + j * stride_entry``)
    whose sum exceeds ``cap[l]`` to sum ``cap[l]``."""
    K = cap.shape[0]
    for line in range(K):
        total = 0.0
        for j in range(K):
            total += out[line * stride_line + j * stride_entry]
        if total > cap[line]:
            for j in range(K):
                out[line * stride_line + j * stride_entry] *= cap[line] / total


@njit(cache=True, nogil=True)
def _round_transport(y, a, b, base, out):
    """A point of ``{M >= 0, M 1 = a, M^T 1 = b}`` near ``y`` (Altschuler et al. 2017, Alg. 2):
    clip to the orthant (forbidden entries, ``base == -inf``, to 0), scale down the rows and the
    columns whose sums exceed ``a`` and ``b``, then add the outer product of the remaining deficits
    ``u v^T / sum(u)``. Returns the L1 distance moved."""
    K = a.shape[0]
    for i in range(K):
        for j in range(K):
            x = y[i * K + j]
            bad = a[i] <= 0.0 or b[j] <= 0.0 or (base.shape[0] > 0 and base[i * K + j] == -np.inf)
            out[i * K + j] = 0.0 if bad or x < 0.0 else x
    u = np.empty(K)
    v = np.empty(K)
    _cap_lines(out, a, K, 1)
    _cap_lines(out, b, 1, K)
    s = 0.0
    for i in range(K):
        u[i] = a[i]
        v[i] = b[i]
        for j in range(K):
            u[i] -= out[i * K + j]
            v[i] -= out[j * K + i]
        u[i] = max(u[i], 0.0)
        v[i] = max(v[i], 0.0)
        s += u[i]
    moved = 0.0
    for i in range(K):
        for j in range(K):
            if s > 0.0:
                out[i * K + j] += u[i] * v[j] / s
            moved += abs(out[i * K + j] - y[i * K + j])
    return moved


@njit(cache=True, nogil=True)
def _repair_edge(graph, e, mu_n, row, out, work, n_rounds, t_tol):
    """The repair of one edge block ``row`` into ``out`` (see :func:`transport_repair`); ``work`` (3, K*K)
    scratch. Returns the L1 distance moved by the rounding."""
    edges = graph.edges
    K = mu_n.shape[1]
    KK = K * K
    x, y, q = work[0], work[1], work[2]
    nb = graph.base_e.shape[0]
    a = mu_n[edges[e, 0]]
    b = mu_n[edges[e, 1]]
    base = graph.base_e[e if nb > 1 else 0] if nb > 0 else q[:0]
    for i in range(KK):
        q[i] = 0.0
    _affine_projection(row, a, b, K, y)
    for _ in range(n_rounds):
        if np.min(y) >= -t_tol:
            break
        for i in range(KK):  # orthant step with Dykstra's correction, then the affine step
            z = y[i] + q[i]
            x[i] = 0.0 if base.shape[0] and base[i] == -np.inf else max(z, 0.0)
            q[i] = z - x[i]
        _affine_projection(x, a, b, K, y)
    return _round_transport(y, a, b, base, out)


@njit(cache=True, nogil=True)
def transport_repair(graph, mu_n, mu_e, out, n_rounds, t_tol):
    """Write into ``out`` (E, K*K) a feasible edge block for every edge given the node marginals
    ``mu_n``: ``n_rounds`` of Dykstra between the orthant and the affine marginal constraints
    (fewer once the affine iterate is non-negative up to ``t_tol``), then
    :func:`_round_transport` of the last affine iterate. Returns the largest L1 distance moved by
    the rounding. A forbidden entry (``-inf`` score) gets mass only where the marginals force it."""
    K = mu_n.shape[1]
    work = np.empty((3, K * K))
    scratch = np.zeros(K * K)
    worst = 0.0
    for e in range(graph.edges.shape[0]):
        row = edge_row(mu_e, e, scratch)
        worst = max(worst, _repair_edge(graph, e, mu_n, row, out[e], work, n_rounds, t_tol))
        edge_done(mu_e, e, row)
    return worst


@njit(cache=True, nogil=True)
def _node_sums(graph, feats, ent, mu_n, ustat, pstat):
    """The node part of :func:`dual_sums` (zeroes ``ustat`` and ``pstat`` first); returns its total."""
    N, K = mu_n.shape
    total = 0.0
    ustat[:] = 0.0
    pstat[:] = 0.0
    for v in range(N):
        total += node_entropy(mu_n[v], ent.node_w[v], ent.kind)
        if graph.base_n.shape[0] > 0:
            for k in range(K):
                if mu_n[v, k] != 0.0:
                    total += graph.base_n[v, k] * mu_n[v, k]
        for j in range(feats.indptr[v], feats.indptr[v + 1]):
            c = feats.indices[j]
            for k in range(K):
                ustat[c, k] += feats.data[j] * mu_n[v, k]
    return total


@njit(cache=True, nogil=True)
def _edge_sum(total, e, row, graph, feats, ent, pstat, scr):
    """``total`` plus the entropy and loss of edge block ``row`` of edge ``e``; adds its statistics to ``pstat``."""
    K = scr.rk.shape[0]
    nb = graph.base_e.shape[0]
    efeat = feats.edge_features
    total += edge_entropy(row, ent.edge_w[e], ent, ent.side[e], scr.rk)
    for i in range(K * K):
        m = row[i]
        if m != 0.0:
            if nb > 0:
                total += graph.base_e[e if nb > 1 else 0, i] * m
            for f in range(efeat.shape[1]):
                pstat[f, i] += efeat[e, f] * m
    return total


@njit(cache=True, nogil=True)
def dual_sums(graph, feats, ent, mu_n, mu_e, ustat, pstat, scr):
    """Entropy and loss sums of ``(mu_n, mu_e)`` and its feature statistics.

    Returns ``sum_c h_c(mu_c) + sum_c <base_c, mu_c>``; writes ``ustat = sum_v x_v mu_v^T``
    (n_inputs, K) and ``pstat = sum_e x_e mu_e^T`` (q, K*K) (``Psi mu`` in the kernel layout).
    """
    total = _node_sums(graph, feats, ent, mu_n, ustat, pstat)
    for e in range(graph.edges.shape[0]):
        row = edge_row(mu_e, e, scr.row)
        total = _edge_sum(total, e, row, graph, feats, ent, pstat, scr)
        edge_done(mu_e, e, row)
    return total


@njit(cache=True, nogil=True)
def repair_sums(graph, feats, ent, mu_n, mu_e, ustat, pstat, scr, n_rounds, out):
    """:func:`dual_sums` at the repair of :func:`transport_repair` (``t_tol = 0``) without storing it:
    every edge block is repaired into a K*K scratch row and summed at once. Returns the total and
    writes the largest L1 distance the rounding moved a block into ``out[0]``."""
    K = mu_n.shape[1]
    work = np.empty((4, K * K))
    total = _node_sums(graph, feats, ent, mu_n, ustat, pstat)
    worst = 0.0
    for e in range(graph.edges.shape[0]):
        row = edge_row(mu_e, e, scr.row)
        worst = max(worst, _repair_edge(graph, e, mu_n, row, work[3], work[:3], n_rounds, 0.0))
        edge_done(mu_e, e, row)
        total = _edge_sum(total, e, work[3], graph, feats, ent, pstat, scr)
    out[0] = worst
    return total
