"""One epoch of the structured-SVM baselines on forests, compiled (Numba).

:func:`bcfw_epoch` and :func:`subgradient_epoch` run the inner loops of
:func:`crflearn.solvers.fit_bcfw` and :func:`crflearn.solvers.fit_subgradient`
over a given order of the examples, mutating the solver state in place. Each
step builds the example's loss-augmented potentials from the flat weight vector
(layout of :class:`crflearn.models.PairwiseModel`: ``W_u (K, p)`` then ``W_p``
``(K, K)`` or ``(q, K, K)``), decodes them exactly with
:func:`~crflearn._kernels.inference_tree.forest_max_product` on the example's
precomputed BFS schedule (local indices), then applies the solver's update.

Node features come either dense (``x`` of shape ``(N, p)``, ``sparse = False``) or
as CSR arrays (``indptr, indices, data``, ``sparse = True``); the unused form is
passed as an empty array so that each kernel has one signature. Edge features
``ef (M, q)`` are ignored when ``shared`` (one ``K x K`` matrix for all edges).

The kernels assume forests (the solvers call them only when every example is
one and the inference method is exact) and return 0. Zero features are skipped
and every sum runs in the order of the per-example Python path, so both paths
give the same iterates up to round-off (exactly tied loss-augmented maxima may
be broken differently, as round-off decides them).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .inference_tree import forest_max_product


@njit(cache=True)
def _transpose_unary(w, k, p, wt):
    """``wt[j, c] = W_u[c, j]``: the unary block of ``w`` as a ``(p, K)`` matrix."""
    for c in range(k):
        base = c * p
        for j in range(p):
            wt[j, c] = w[base + j]


@njit(cache=True)
def _unary(x, indptr, indices, data, sparse, wt, k, y, lo, hi, out):
    """``out[v - lo, c] = x_v . W_u[c] + [c != y_v]`` for the nodes ``lo..hi-1`` (``wt = W_u^T``).

    Each entry is summed over the features in increasing order (zero features skipped:
    they add nothing), the loop over states innermost.
    """
    p = wt.shape[0]
    for v in range(lo, hi):
        r = v - lo
        for c in range(k):
            out[r, c] = 0.0
        if sparse:
            for j in range(indptr[v], indptr[v + 1]):
                val = data[j]
                if val != 0.0:
                    col = indices[j]
                    for c in range(k):
                        out[r, c] += val * wt[col, c]
        else:
            for j in range(p):
                val = x[v, j]
                if val != 0.0:
                    for c in range(k):
                        out[r, c] += val * wt[j, c]
        for c in range(k):
            if c != y[v]:
                out[r, c] += 1.0


@njit(cache=True)
def _pairwise(ef, shared, w, k, p, elo, ehi, out):
    """Pairwise potentials of the edges ``elo..ehi-1`` into ``out`` (``out[0]`` when shared)."""
    off = k * p
    kk = k * k
    if shared:
        for a in range(k):
            for b in range(k):
                out[0, a, b] = w[off + a * k + b]
        return
    q = ef.shape[1]
    for e in range(elo, ehi):
        r = e - elo
        for a in range(k):
            for b in range(k):
                out[r, a, b] = 0.0
        for f in range(q):
            val = ef[e, f]
            base = off + f * kk
            for a in range(k):
                for b in range(k):
                    out[r, a, b] += val * w[base + a * k + b]


@njit(cache=True)
def _decode(x, indptr, indices, data, sparse, ef, shared, w, wt, k, p, y, lo, hi, elo, ehi,
            order_loc, parent_loc, pedge_loc, pfirst, unary_buf, pw_buf, loc_offsets, active, score, lab):
    """Loss-augmented MAP labels (local) of the example with nodes ``lo..hi-1`` into ``lab[:hi - lo]``.

    ``wt`` must hold the transposed unary block of ``w`` (:func:`_transpose_unary`).
    """
    n_i = hi - lo
    u = unary_buf[:n_i]
    _unary(x, indptr, indices, data, sparse, wt, k, y, lo, hi, u)
    _pairwise(ef, shared, w, k, p, elo, ehi, pw_buf)
    pw = pw_buf[:1] if shared else pw_buf[:ehi - elo]
    loc_offsets[1] = n_i
    forest_max_product(u, pw, shared, loc_offsets, active, order_loc[lo:hi], parent_loc[lo:hi],
                       pedge_loc[lo:hi], pfirst[lo:hi], lab[:n_i], score)


@njit(cache=True)
def _add_node_feature(x, indptr, indices, data, sparse, v, c, coef, p, out):
    """``W_u[c] += coef * x_v`` in the flat vector ``out``."""
    base = c * p
    if sparse:
        for j in range(indptr[v], indptr[v + 1]):
            out[base + indices[j]] += coef * data[j]
    else:
        for j in range(p):
            out[base + j] += coef * x[v, j]


@njit(cache=True)
def _labeling_feature(x, indptr, indices, data, sparse, ef, shared, edges, k, p, lab, lo, hi, elo, ehi, out):
    """Joint feature of one example's labeling ``lab`` (local, length ``hi - lo``) into ``out`` (zeroed)."""
    for j in range(out.shape[0]):
        out[j] = 0.0
    _add_labeling_feature(x, indptr, indices, data, sparse, ef, shared, edges, k, p, lab, lo, hi, elo, ehi, out)


@njit(cache=True)
def _add_labeling_feature(x, indptr, indices, data, sparse, ef, shared, edges, k, p, lab, lo, hi, elo, ehi, out):
    """``out += psi(lab)`` for one example's labeling ``lab`` (local, length ``hi - lo``)."""
    for v in range(lo, hi):
        _add_node_feature(x, indptr, indices, data, sparse, v, lab[v - lo], 1.0, p, out)
    off = k * p
    kk = k * k
    for e in range(elo, ehi):
        ab = lab[edges[e, 0] - lo] * k + lab[edges[e, 1] - lo]
        if shared:
            out[off + ab] += 1.0
        else:
            for f in range(ef.shape[1]):
                out[off + f * kk + ab] += ef[e, f]


@njit(cache=True)
def _max_sizes(node_offsets, edge_offsets):
    """Largest number of nodes and of edges (at least 1) of an example."""
    max_nodes = 0
    max_edges = 1
    for i in range(node_offsets.shape[0] - 1):
        if node_offsets[i + 1] - node_offsets[i] > max_nodes:
            max_nodes = node_offsets[i + 1] - node_offsets[i]
        if edge_offsets[i + 1] - edge_offsets[i] > max_edges:
            max_edges = edge_offsets[i + 1] - edge_offsets[i]
    return max_nodes, max_edges


@njit(cache=True)
def bcfw_epoch(x, indptr, indices, data, sparse, ef, shared, edges, node_offsets, edge_offsets, labels, k, p,
               order_loc, parent_loc, pedge_loc, pfirst, perm, lam, averaging,
               w, node_stats, edge_stats, block_losses, w_avg, scalars, counters):
    """One BCFW pass over the examples ``perm`` (Lacoste-Julien et al., 2013), in place.

    Parameters
    ----------
    x, indptr, indices, data, sparse : node features, dense ``(N, p)`` or CSR (see module docstring)
    ef : (M, q) float64 edge features (unused when ``shared``)
    shared : bool, one pairwise matrix for all edges
    edges : (M, 2) int64 global edges; node_offsets, edge_offsets : (n + 1,) int64
    labels : (N,) int64 ground truth
    k, p : int, number of states and of node features
    order_loc, parent_loc, pedge_loc, pfirst : BFS schedule with example-local node / edge indices
    perm : (T,) int64 examples to visit, in order
    lam : float, L2 strength; averaging : 0 none, 1 uniform, 2 weighted (``2 / (k + 2)``)
    w : (d,) weights; node_stats : (N, K) and edge_stats : (n, K, K) shared or (M, K, K) per edge,
        the dual blocks as marginals; block_losses : (n,); w_avg : (d,)
    scalars : [ell, ell_avg] float64; counters : [n_steps, oracle_calls] int64

    Returns
    -------
    status : 0
    """
    d = w.shape[0]
    n = node_offsets.shape[0] - 1
    scale = 1.0 / (lam * n)
    kk = k * k
    off = k * p
    max_nodes, max_edges = _max_sizes(node_offsets, edge_offsets)
    unary_buf = np.empty((max_nodes, k))
    pw_buf = np.empty((max_edges, k, k))
    lab = np.zeros(max_nodes, dtype=np.int64)
    loc_offsets = np.zeros(2, dtype=np.int64)
    active = np.ones(1, dtype=np.uint8)
    score = np.empty(1)
    wt = np.empty((p, k))
    _transpose_unary(w, k, p, wt)  # kept in sync with w below
    row_on = np.zeros(k, dtype=np.uint8)
    rows = np.zeros(k + 1, dtype=np.int64)
    fs = np.zeros(d)
    fm = np.zeros(d)
    diff = np.zeros(d)
    ell = scalars[0]
    ell_avg = scalars[1]
    n_steps = counters[0]
    for t in range(perm.shape[0]):
        i = perm[t]
        lo = node_offsets[i]
        hi = node_offsets[i + 1]
        elo = edge_offsets[i]
        ehi = edge_offsets[i + 1]
        n_i = hi - lo
        if n_i > 0:
            _decode(x, indptr, indices, data, sparse, ef, shared, w, wt, k, p, labels, lo, hi, elo, ehi,
                    order_loc, parent_loc, pedge_loc, pfirst, unary_buf, pw_buf, loc_offsets, active, score, lab)
        counters[1] += 1
        # the unary rows W_u[c] that can change: states of y* or with some mass in the block's marginals;
        # every other entry of the direction is exactly zero and is skipped (the sums below are unchanged)
        n_rows = 0
        for c in range(k):
            row_on[c] = 0
        for v in range(lo, hi):
            row_on[lab[v - lo]] = 1
            for c in range(k):
                if node_stats[v, c] != 0.0:
                    row_on[c] = 1
        for c in range(k):
            if row_on[c]:
                rows[n_rows] = c
                n_rows += 1
        # corner s = psi(y*) and the current block's mean feature m = E_alpha_i[psi], on the live entries
        for r in range(n_rows):
            base = rows[r] * p
            for j in range(base, base + p):
                fs[j] = 0.0
                fm[j] = 0.0
        for j in range(off, d):
            fs[j] = 0.0
            fm[j] = 0.0
        _add_labeling_feature(x, indptr, indices, data, sparse, ef, shared, edges, k, p, lab, lo, hi, elo, ehi, fs)
        for v in range(lo, hi):
            for c in range(k):
                mu = node_stats[v, c]
                if mu != 0.0:
                    _add_node_feature(x, indptr, indices, data, sparse, v, c, mu, p, fm)
        if shared:
            for ab in range(kk):
                fm[off + ab] = edge_stats[i, ab // k, ab % k]
        else:
            q = ef.shape[1]
            for e in range(elo, ehi):
                for a in range(k):
                    for b in range(k):
                        mu = edge_stats[e, a, b]
                        if mu != 0.0:
                            for f in range(q):
                                fm[off + f * kk + a * k + b] += ef[e, f] * mu
        wrong = 0
        for v in range(lo, hi):
            if lab[v - lo] != labels[v]:
                wrong += 1
        l_s = float(wrong) / n
        dd = 0.0
        dw = 0.0
        for r in range(n_rows + 1):  # the live unary rows in increasing order, then the pairwise block
            j0 = rows[r] * p if r < n_rows else off
            j1 = j0 + p if r < n_rows else d
            for j in range(j0, j1):
                dj = scale * (fs[j] - fm[j])
                diff[j] = dj
                dd += dj * dj
                dw += dj * w[j]
        denom = lam * dd
        if denom > 0.0:
            gamma = (lam * dw - block_losses[i] + l_s) / denom
            gamma = min(max(gamma, 0.0), 1.0)
        else:
            gamma = 1.0 if l_s > block_losses[i] else 0.0
        if gamma > 0.0:
            for r in range(n_rows + 1):
                j0 = rows[r] * p if r < n_rows else off
                j1 = j0 + p if r < n_rows else d
                for j in range(j0, j1):
                    w[j] -= gamma * diff[j]
            for r in range(n_rows):
                c = rows[r]
                base = c * p
                for j in range(p):
                    wt[j, c] = w[base + j]
            d_ell = gamma * (l_s - block_losses[i])
            ell += d_ell
            block_losses[i] += d_ell
            for v in range(lo, hi):
                yv = lab[v - lo]
                for c in range(k):
                    s = 1.0 if c == yv else 0.0
                    node_stats[v, c] += gamma * (s - node_stats[v, c])
            if shared:
                for ab in range(kk):
                    a = ab // k
                    b = ab % k
                    edge_stats[i, a, b] += gamma * (fs[off + ab] - edge_stats[i, a, b])
            else:
                for e in range(elo, ehi):
                    ys = lab[edges[e, 0] - lo]
                    yt = lab[edges[e, 1] - lo]
                    for a in range(k):
                        for b in range(k):
                            s = 1.0 if (a == ys and b == yt) else 0.0
                            edge_stats[e, a, b] += gamma * (s - edge_stats[e, a, b])
        if averaging != 0:
            rho = 2.0 / (n_steps + 2.0) if averaging == 2 else 1.0 / (n_steps + 1.0)
            for j in range(d):
                w_avg[j] = (1.0 - rho) * w_avg[j] + rho * w[j]
            ell_avg = (1.0 - rho) * ell_avg + rho * ell
        n_steps += 1
    scalars[0] = ell
    scalars[1] = ell_avg
    counters[0] = n_steps
    return 0


@njit(cache=True)
def subgradient_epoch(x, indptr, indices, data, sparse, ef, shared, edges, node_offsets, edge_offsets, labels, k, p,
                      order_loc, parent_loc, pedge_loc, pfirst, perm, alpha, w, counters, sums):
    """One pass of Pegasos steps ``w <- (1 - 1/t) w + dpsi_i(y*) / (alpha t)`` over ``perm``, in place.

    Parameters are those of :func:`bcfw_epoch`; ``counters = [t, oracle_calls]`` (int64) and
    ``sums = [loss_sum]`` (float64) are updated. Returns 0.
    """
    d = w.shape[0]
    max_nodes, max_edges = _max_sizes(node_offsets, edge_offsets)
    unary_buf = np.empty((max_nodes, k))
    pw_buf = np.empty((max_edges, k, k))
    lab = np.zeros(max_nodes, dtype=np.int64)
    truth = np.zeros(max_nodes, dtype=np.int64)
    loc_offsets = np.zeros(2, dtype=np.int64)
    active = np.ones(1, dtype=np.uint8)
    score = np.empty(1)
    wt = np.empty((p, k))
    fs = np.empty(d)
    ft = np.empty(d)
    t = counters[0]
    loss_sum = sums[0]
    for step in range(perm.shape[0]):
        i = perm[step]
        lo = node_offsets[i]
        hi = node_offsets[i + 1]
        elo = edge_offsets[i]
        ehi = edge_offsets[i + 1]
        if hi > lo:
            _transpose_unary(w, k, p, wt)
            _decode(x, indptr, indices, data, sparse, ef, shared, w, wt, k, p, labels, lo, hi, elo, ehi,
                    order_loc, parent_loc, pedge_loc, pfirst, unary_buf, pw_buf, loc_offsets, active, score, lab)
        counters[1] += 1
        wrong = 0
        for v in range(lo, hi):
            if lab[v - lo] != labels[v]:
                wrong += 1
        loss = float(wrong)
        shrink = 1.0 - 1.0 / t
        for j in range(d):
            w[j] *= shrink
        if loss > 0:
            for v in range(lo, hi):
                truth[v - lo] = labels[v]
            _labeling_feature(x, indptr, indices, data, sparse, ef, shared, edges, k, p, truth, lo, hi, elo, ehi,
                              ft)
            _labeling_feature(x, indptr, indices, data, sparse, ef, shared, edges, k, p, lab, lo, hi, elo, ehi,
                              fs)
            step_size = alpha * t
            for j in range(d):
                w[j] += (ft[j] - fs[j]) / step_size
        loss_sum += loss
        t += 1
    counters[0] = t
    sums[0] = loss_sum
    return 0
