"""Approximate inference on loopy graphs, all examples of a batch in one call (Numba).

* :func:`loopy_sum_product` — tree-reweighted (TRW) sum-product with edge
  appearance probabilities ``rho`` (``rho = 1`` everywhere is loopy belief
  propagation), sequential schedule (forward sweep over the nodes sends the
  messages to later neighbours, backward sweep to earlier ones), geometric
  damping, log space.
* :func:`loopy_max_product` — sequential max-sum message passing: TRW-S
  (Kolmogorov 2006, node weights ``gamma_s = 1 / max(#earlier, #later neighbours)``)
  or plain max-product (``gamma = 1``, optional damping). Each iteration decodes
  a labelling, polishes it by ICM and keeps the best; a dual upper bound (the
  sum of maxima of the reparametrised potentials, valid for any messages) is
  tracked when every potential is finite.

Messages live in a ``(2 M, K)`` array: row ``2 e`` is the message along
``edges[e, 0] -> edges[e, 1]`` (a function of the target's state), row ``2 e + 1``
the reverse.

Status codes: 0 ok, 1 some example has no state of finite score left
(every labelling forbidden, as far as message passing can tell).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .inference_tree import exp_form, lse_message, lse_vector


@njit(cache=True)
def _store_message(new, msgs, idx, k, delta):
    """Write ``new[:k]`` into ``msgs[idx]``; return ``max(delta, largest change)`` (inf if a
    message entry switches between finite and -inf)."""
    for y in range(k):
        old = msgs[idx, y]
        if new[y] != old:
            if new[y] == -np.inf or old == -np.inf:
                delta = np.inf
            else:
                d = abs(new[y] - old)
                if d > delta:
                    delta = d
        msgs[idx, y] = new[y]
    return delta


@njit(cache=True)
def _msg_index(edges, e, source):
    return 2 * e if edges[e, 0] == source else 2 * e + 1


@njit(cache=True)
def _node_belief(v, unary, logm, edges, adj_ptr, adj_edge, rho, out):
    """``out = unary[v] + sum_e rho_e * logm[e -> v]``."""
    k = unary.shape[1]
    for a in range(k):
        out[a] = unary[v, a]
    for q in range(adj_ptr[v], adj_ptr[v + 1]):
        e = adj_edge[q]
        idx = 2 * e if edges[e, 1] == v else 2 * e + 1
        r = rho[e]
        for a in range(k):
            out[a] += r * logm[idx, a]


@njit(cache=True)
def _cavity(b, m, out):
    for a in range(b.shape[0]):
        out[a] = -np.inf if (m[a] == -np.inf or b[a] == -np.inf) else b[a] - m[a]


@njit(cache=True)
def _log_edge_table(cs, ct, pw, inv_rho, T):
    """``T[x, y] = log of the normalised exp(cs[x] + pw[x, y] / rho + ct[y])``; returns the normaliser."""
    k = cs.shape[0]
    m = -np.inf
    for x in range(k):
        for y in range(k):
            t = cs[x] + inv_rho * pw[x, y] + ct[y]
            T[x, y] = t
            if t > m:
                m = t
    if m == -np.inf:
        return -np.inf
    s = 0.0
    for x in range(k):
        for y in range(k):
            s += np.exp(T[x, y] - m)
    lz = m + np.log(s)
    for x in range(k):
        for y in range(k):
            T[x, y] -= lz
    return lz


@njit(cache=True)
def loopy_sum_product(unary, pw3, shared, edges, node_offsets, edge_offsets, active, adj_ptr, adj_nbr, adj_edge,
                      rho, max_iter, tol, damping, cache_limit, edge_mode, node_marg, edge_out, log_partition,
                      n_iter, converged):
    """TRW / loopy BP marginals of every active example.

    Parameters
    ----------
    rho : (M,) edge appearance probabilities in (0, 1] (1 = loopy BP)
    max_iter, tol : at most ``max_iter`` forward+backward sweeps; stop when no
        max-normalised log-message moved by more than ``tol`` (max-norm) in a sweep
    damping : in [0, 1); new log-message = (1 - damping) * update + damping * old
    cache_limit : cache exp-forms of ``pairwise / rho`` (3 arrays of ``E_i K^2`` floats per
        example) when ``max_i E_i * K^2 <= cache_limit``; otherwise compute every
        message with ``K^2`` exponentials
    edge_mode, node_marg, edge_out, log_partition : as in ``forest_sum_product``;
        ``log_partition`` holds the variational value (TRW upper bound at a fixed
        point, Bethe approximation when ``rho = 1``)
    n_iter : (n_examples,) int64 output; converged : (n_examples,) uint8 output

    Returns
    -------
    status : 0 ok, 1 an example collapsed (every state of a node forbidden)
    """
    n, k = unary.shape
    n_msg = 2 * edges.shape[0]
    logm = np.zeros((n_msg, k))
    belief = np.empty((n, k))
    cav = np.empty(k)
    cs = np.empty(k)
    ct = np.empty(k)
    new = np.empty(k)
    T = np.empty((k, k))
    ex = np.empty(k)
    ssum = np.empty(k)
    status = 0
    n_examples = node_offsets.shape[0] - 1
    # exp-forms of pairwise / rho in both orientations, per edge of the current example:
    # a message then costs K exponentials and K logarithms instead of K^2 exponentials
    max_e = 0
    for i in range(n_examples):
        if active[i] and edge_offsets[i + 1] - edge_offsets[i] > max_e:
            max_e = edge_offsets[i + 1] - edge_offsets[i]
    use_cache = max_e * k * k <= cache_limit
    ce = max_e if use_cache else 0
    pws = np.empty((ce, k, k))
    e_fwd = np.empty((ce, k, k))
    s_fwd = np.empty((ce, k))
    e_bwd = np.empty((ce, k, k))
    s_bwd = np.empty((ce, k))
    for i in range(n_examples):
        if not active[i]:
            continue
        lo = node_offsets[i]
        hi = node_offsets[i + 1]
        elo = edge_offsets[i]
        if use_cache:
            for e in range(elo, edge_offsets[i + 1]):
                j = e - elo
                pw = pw3[0] if shared else pw3[e]
                inv_rho = 1.0 / rho[e]
                for x in range(k):
                    for y in range(k):
                        pws[j, x, y] = inv_rho * pw[x, y]
                exp_form(pws[j], True, e_fwd[j], s_fwd[j])
                exp_form(pws[j], False, e_bwd[j], s_bwd[j])
        for v in range(lo, hi):
            _node_belief(v, unary, logm, edges, adj_ptr, adj_edge, rho, belief[v])
        collapsed = False
        n_iter[i] = 0
        converged[i] = 0
        for it in range(max_iter):
            delta = 0.0
            for direction in range(2):
                for jj in range(hi - lo):
                    s = lo + jj if direction == 0 else hi - 1 - jj
                    for q in range(adj_ptr[s], adj_ptr[s + 1]):
                        t = adj_nbr[q]
                        if (direction == 0 and t < s) or (direction == 1 and t > s):
                            continue
                        e = adj_edge[q]
                        idx = _msg_index(edges, e, s)
                        rev = idx ^ 1
                        _cavity(belief[s], logm[rev], cav)
                        pw = pw3[0] if shared else pw3[e]
                        inv_rho = 1.0 / rho[e]
                        first = edges[e, 0] == s
                        # new[y] = lse_x(cav[x] + pw_(s,t)[x, y] / rho)
                        if use_cache:
                            j = e - elo
                            if first:
                                lse_message(cav, pws[j], True, e_fwd[j], s_fwd[j], ex, ssum, new)
                            else:
                                lse_message(cav, pws[j], False, e_bwd[j], s_bwd[j], ex, ssum, new)
                        else:
                            for y in range(k):
                                m = -np.inf
                                for x in range(k):
                                    w = pw[x, y] if first else pw[y, x]
                                    val = cav[x] + inv_rho * w
                                    if val > m:
                                        m = val
                                if m == -np.inf:
                                    new[y] = -np.inf
                                else:
                                    acc = 0.0
                                    for x in range(k):
                                        w = pw[x, y] if first else pw[y, x]
                                        acc += np.exp(cav[x] + inv_rho * w - m)
                                    new[y] = m + np.log(acc)
                        # normalise by the maximum (any constant works; no exponentials needed)
                        z = -np.inf
                        for y in range(k):
                            if new[y] > z:
                                z = new[y]
                        if z == -np.inf:
                            collapsed = True
                            break
                        for y in range(k):
                            new[y] -= z
                        if damping > 0.0:
                            z = -np.inf
                            for y in range(k):
                                if new[y] == -np.inf or logm[idx, y] == -np.inf:
                                    new[y] = -np.inf
                                else:
                                    new[y] = (1.0 - damping) * new[y] + damping * logm[idx, y]
                                if new[y] > z:
                                    z = new[y]
                            for y in range(k):
                                new[y] -= z
                        delta = _store_message(new, logm, idx, k, delta)
                        _node_belief(t, unary, logm, edges, adj_ptr, adj_edge, rho, belief[t])
                    if collapsed:
                        break
                if collapsed:
                    break
            n_iter[i] = it + 1
            if collapsed:
                break
            if delta <= tol:
                converged[i] = 1
                break
        if collapsed:
            status = 1
            log_partition[i] = -np.inf
            for v in range(lo, hi):
                for a in range(k):
                    node_marg[v, a] = np.nan
            continue
        # beliefs, marginals and the variational log-partition
        value = 0.0
        for v in range(lo, hi):
            _node_belief(v, unary, logm, edges, adj_ptr, adj_edge, rho, belief[v])
            z = lse_vector(belief[v])
            for a in range(k):
                belief[v, a] -= z          # now log tau_v
                tau = np.exp(belief[v, a])
                node_marg[v, a] = tau
                if tau > 0.0:
                    value += tau * (unary[v, a] - belief[v, a])
        for v in range(lo, hi):
            for q in range(adj_ptr[v], adj_ptr[v + 1]):
                t = adj_nbr[q]
                e = adj_edge[q]
                if edges[e, 0] != v:
                    continue
                # edge (v, t) in stored orientation; cavities use the unnormalised beliefs
                # log tau_v + z_v, but the constant cancels in the normalised table
                _cavity(belief[v], logm[2 * e + 1], cs)
                _cavity(belief[t], logm[2 * e], ct)
                pw = pw3[0] if shared else pw3[e]
                r = rho[e]
                _log_edge_table(cs, ct, pw, 1.0 / r, T)
                for x in range(k):
                    for y in range(k):
                        tau = np.exp(T[x, y])
                        if edge_mode == 0:
                            edge_out[e, x, y] = tau
                        elif edge_mode == 1:
                            edge_out[0, x, y] += tau
                        if tau > 0.0:
                            mi = T[x, y] - belief[v, x] - belief[t, y]
                            value += tau * (pw[x, y] - r * mi)
        log_partition[i] = value
    return status


@njit(cache=True)
def _local_score(v, a, unary, pw3, shared, edges, adj_ptr, adj_nbr, adj_edge, labels):
    total = unary[v, a]
    for q in range(adj_ptr[v], adj_ptr[v + 1]):
        t = adj_nbr[q]
        e = adj_edge[q]
        pw = pw3[0] if shared else pw3[e]
        if edges[e, 0] == v:
            total += pw[a, labels[t]]
        else:
            total += pw[labels[t], a]
    return total


@njit(cache=True)
def icm(lo, hi, unary, pw3, shared, edges, adj_ptr, adj_nbr, adj_edge, labels, max_sweeps):
    """Iterated conditional modes on nodes ``lo..hi-1`` until no label changes."""
    k = unary.shape[1]
    for _ in range(max_sweeps):
        changed = False
        for v in range(lo, hi):
            cur = labels[v]
            best = _local_score(v, cur, unary, pw3, shared, edges, adj_ptr, adj_nbr, adj_edge, labels)
            arg = cur
            for a in range(k):
                if a == cur:
                    continue
                sc = _local_score(v, a, unary, pw3, shared, edges, adj_ptr, adj_nbr, adj_edge, labels)
                if sc > best:
                    best = sc
                    arg = a
            if arg != cur:
                labels[v] = arg
                changed = True
        if not changed:
            break


@njit(cache=True)
def example_score(lo, hi, elo, ehi, unary, pw3, shared, edges, labels):
    """Score of the labelling of nodes ``lo..hi-1`` / edges ``elo..ehi-1``."""
    total = 0.0
    for v in range(lo, hi):
        total += unary[v, labels[v]]
    for e in range(elo, ehi):
        pw = pw3[0] if shared else pw3[e]
        total += pw[labels[edges[e, 0]], labels[edges[e, 1]]]
    return total


@njit(cache=True)
def batch_scores(unary, pw3, shared, edges, node_offsets, edge_offsets, labels, out):
    """Score of every example's labelling into ``out`` (n_examples,). Returns 0."""
    for i in range(node_offsets.shape[0] - 1):
        out[i] = example_score(node_offsets[i], node_offsets[i + 1], edge_offsets[i], edge_offsets[i + 1],
                               unary, pw3, shared, edges, labels)
    return 0


@njit(cache=True)
def _dual_bound(lo, hi, elo, ehi, unary, pw3, shared, edges, adj_ptr, adj_edge, msg, th):
    """Sum of maxima of the reparametrised node and edge potentials (an upper bound on the MAP score)."""
    k = unary.shape[1]
    total = 0.0
    for v in range(lo, hi):
        for a in range(k):
            th[a] = unary[v, a]
        for q in range(adj_ptr[v], adj_ptr[v + 1]):
            e = adj_edge[q]
            idx = 2 * e if edges[e, 1] == v else 2 * e + 1
            for a in range(k):
                th[a] += msg[idx, a]
        m = -np.inf
        for a in range(k):
            if th[a] > m:
                m = th[a]
        total += m
    for e in range(elo, ehi):
        pw = pw3[0] if shared else pw3[e]
        m = -np.inf
        for x in range(k):
            for y in range(k):
                t = pw[x, y] - msg[2 * e + 1, x] - msg[2 * e, y]
                if t > m:
                    m = t
        total += m
    return total


@njit(cache=True)
def _chain_bound(lo, hi, elo, ehi, unary, pw3, shared, edges, adj_ptr, adj_nbr, adj_edge, msg, gamma_chain,
                 nxt, has_prev, th, f, g):
    """Upper bound on the MAP score from a decomposition into monotonic chains (Kolmogorov 2006).

    At every node the edges to earlier neighbours are paired, in adjacency order,
    with the edges to later neighbours; this splits the graph into increasing
    paths, ``max(#earlier, #later)`` of them through each node. Every chain gets
    the reparametrised edge potentials of its edges and a share
    ``gamma_chain[v] = 1 / max(#earlier, #later)`` of each node's reparametrised
    potential, so the chains sum to the original score function and the sum of
    their maxima (Viterbi) bounds the optimum, for any messages.
    """
    k = unary.shape[1]
    for e in range(elo, ehi):
        nxt[e] = -1
        has_prev[e] = 0
    total = 0.0
    for v in range(lo, hi):
        n_in = 0
        n_out = 0
        for q in range(adj_ptr[v], adj_ptr[v + 1]):
            if adj_nbr[q] < v:
                n_in += 1
            else:
                n_out += 1
        if n_in == 0 and n_out == 0:
            m = -np.inf
            for a in range(k):
                if unary[v, a] > m:
                    m = unary[v, a]
            total += m
            continue
        # pair the j-th incoming edge with the j-th outgoing edge
        j_in = 0
        for q in range(adj_ptr[v], adj_ptr[v + 1]):
            if adj_nbr[q] > v:
                continue
            j_out = 0
            for r in range(adj_ptr[v], adj_ptr[v + 1]):
                if adj_nbr[r] < v:
                    continue
                if j_out == j_in:
                    nxt[adj_edge[q]] = adj_edge[r]
                    has_prev[adj_edge[r]] = 1
                    break
                j_out += 1
            j_in += 1
    for e0 in range(elo, ehi):
        if has_prev[e0]:
            continue
        e = e0
        s = edges[e, 0] if edges[e, 0] < edges[e, 1] else edges[e, 1]
        _reparam_node(s, unary, edges, adj_ptr, adj_edge, msg, th)
        for a in range(k):
            f[a] = gamma_chain[s] * th[a]
        while e >= 0:
            t = edges[e, 0] + edges[e, 1] - s
            _reparam_node(t, unary, edges, adj_ptr, adj_edge, msg, th)
            pw = pw3[0] if shared else pw3[e]
            s_first = edges[e, 0] == s
            for y in range(k):
                m = -np.inf
                for x in range(k):
                    if s_first:
                        w = pw[x, y] - msg[2 * e + 1, x] - msg[2 * e, y]
                    else:
                        w = pw[y, x] - msg[2 * e + 1, y] - msg[2 * e, x]
                    val = f[x] + w
                    if val > m:
                        m = val
                g[y] = m + gamma_chain[t] * th[y]
            for y in range(k):
                f[y] = g[y]
            s = t
            e = nxt[e]
        m = -np.inf
        for a in range(k):
            if f[a] > m:
                m = f[a]
        total += m
    return total


@njit(cache=True)
def _reparam_node(v, unary, edges, adj_ptr, adj_edge, msg, th):
    k = unary.shape[1]
    for a in range(k):
        th[a] = unary[v, a]
    for q in range(adj_ptr[v], adj_ptr[v + 1]):
        e = adj_edge[q]
        idx = 2 * e if edges[e, 1] == v else 2 * e + 1
        for a in range(k):
            th[a] += msg[idx, a]


@njit(cache=True)
def loopy_max_product(unary, pw3, shared, edges, node_offsets, edge_offsets, active, adj_ptr, adj_nbr, adj_edge,
                      trws, max_iter, tol, damping, compute_bound, labels, scores, bounds, n_iter):
    """Approximate MAP of every active example by sequential max-sum message passing.

    Parameters
    ----------
    trws : bool; True for TRW-S node weights, False for plain max-product
    max_iter, tol : stop after ``max_iter`` forward+backward sweeps, when no
        normalised message moved by more than ``tol``, when the bound stopped
        improving (relative change <= tol), or when the best score meets the bound
    damping : in [0, 1), max-product only
    compute_bound : bool; track the dual bound (only valid with finite potentials)
    labels : (N,) output, the best labelling found (ICM-polished); scores, bounds, n_iter : per example

    Returns
    -------
    status : 0
    """
    n, k = unary.shape
    msg = np.zeros((2 * edges.shape[0], k))
    th = np.empty(k)
    cav = np.empty(k)
    new = np.empty(k)
    gamma = np.ones(n)
    gamma_chain = np.ones(n)
    nxt = np.empty(edges.shape[0], dtype=np.int64)
    has_prev = np.empty(edges.shape[0], dtype=np.uint8)
    fbuf = np.empty(k)
    gbuf = np.empty(k)
    cur = labels.copy()
    n_examples = node_offsets.shape[0] - 1
    for i in range(n_examples):
        if not active[i]:
            continue
        lo = node_offsets[i]
        hi = node_offsets[i + 1]
        elo = edge_offsets[i]
        ehi = edge_offsets[i + 1]
        for v in range(lo, hi):
            before = 0
            after = 0
            for q in range(adj_ptr[v], adj_ptr[v + 1]):
                if adj_nbr[q] < v:
                    before += 1
                else:
                    after += 1
            mx = max(before, after)
            gamma_chain[v] = 1.0 / mx if mx > 0 else 1.0
            gamma[v] = gamma_chain[v] if trws else 1.0
        best = -np.inf
        bound = np.inf
        for v in range(lo, hi):
            labels[v] = 0
        n_iter[i] = 0
        for it in range(max_iter):
            delta = 0.0
            for direction in range(2):
                for jj in range(hi - lo):
                    s = lo + jj if direction == 0 else hi - 1 - jj
                    for a in range(k):
                        th[a] = unary[s, a]
                    for q in range(adj_ptr[s], adj_ptr[s + 1]):
                        e = adj_edge[q]
                        idx = 2 * e if edges[e, 1] == s else 2 * e + 1
                        for a in range(k):
                            th[a] += msg[idx, a]
                    g = gamma[s]
                    for q in range(adj_ptr[s], adj_ptr[s + 1]):
                        t = adj_nbr[q]
                        if (direction == 0 and t < s) or (direction == 1 and t > s):
                            continue
                        e = adj_edge[q]
                        idx = _msg_index(edges, e, s)
                        rev = idx ^ 1
                        for a in range(k):
                            if th[a] == -np.inf or msg[rev, a] == -np.inf:
                                cav[a] = -np.inf
                            else:
                                cav[a] = g * th[a] - msg[rev, a]
                        pw = pw3[0] if shared else pw3[e]
                        first = edges[e, 0] == s
                        m_all = -np.inf
                        for y in range(k):
                            m = -np.inf
                            for x in range(k):
                                w = pw[x, y] if first else pw[y, x]
                                val = cav[x] + w
                                if val > m:
                                    m = val
                            new[y] = m
                            if m > m_all:
                                m_all = m
                        if m_all == -np.inf:
                            continue  # contradiction: keep the old message
                        for y in range(k):
                            new[y] -= m_all
                        if damping > 0.0 and not trws:
                            for y in range(k):
                                if new[y] == -np.inf or msg[idx, y] == -np.inf:
                                    new[y] = -np.inf
                                else:
                                    new[y] = (1.0 - damping) * new[y] + damping * msg[idx, y]
                        delta = _store_message(new, msg, idx, k, delta)
            # decode in node order: earlier neighbours by their labels, later ones by their messages
            for s in range(lo, hi):
                for a in range(k):
                    th[a] = unary[s, a]
                for q in range(adj_ptr[s], adj_ptr[s + 1]):
                    t = adj_nbr[q]
                    e = adj_edge[q]
                    if t < s:
                        pw = pw3[0] if shared else pw3[e]
                        if edges[e, 0] == t:
                            for a in range(k):
                                th[a] += pw[cur[t], a]
                        else:
                            for a in range(k):
                                th[a] += pw[a, cur[t]]
                    else:
                        idx = 2 * e if edges[e, 1] == s else 2 * e + 1
                        for a in range(k):
                            th[a] += msg[idx, a]
                arg = 0
                m = -np.inf
                for a in range(k):
                    if th[a] > m:
                        m = th[a]
                        arg = a
                cur[s] = arg
            icm(lo, hi, unary, pw3, shared, edges, adj_ptr, adj_nbr, adj_edge, cur, 50)
            sc = example_score(lo, hi, elo, ehi, unary, pw3, shared, edges, cur)
            if sc > best or it == 0:
                best = sc
                for v in range(lo, hi):
                    labels[v] = cur[v]
            n_iter[i] = it + 1
            stop = delta <= tol
            if compute_bound and (stop or it % 5 == 4 or it == max_iter - 1):
                bd = min(_dual_bound(lo, hi, elo, ehi, unary, pw3, shared, edges, adj_ptr, adj_edge, msg, th),
                         _chain_bound(lo, hi, elo, ehi, unary, pw3, shared, edges, adj_ptr, adj_nbr, adj_edge,
                                      msg, gamma_chain, nxt, has_prev, th, fbuf, gbuf))
                if trws and bound < np.inf and abs(bound - bd) <= tol * max(1.0, abs(bd)):
                    stop = True
                if bd < bound:
                    bound = bd
                if bound - best <= 1e-12 * max(1.0, abs(bound)):
                    stop = True
            if stop:
                break
        scores[i] = best
        bounds[i] = bound if compute_bound else np.nan
    return 0
