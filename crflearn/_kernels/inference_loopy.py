"""Approximate inference on loopy graphs, all examples of a batch in one call (Numba).

One kernel, :func:`loopy_pass`, runs sequential message passing in either semiring
(the constant ``opts.semiring``, chosen at the message operator, as in
:mod:`inference_tree`). A sweep (:func:`_sweep`) visits the nodes forward, sending
the messages to later neighbours, then backward, sending them to earlier ones;
log-messages are normalised by their maximum after every update.

* ``SUM`` — tree-reweighted (TRW) sum-product with edge appearance probabilities
  ``rho`` (``rho = 1`` everywhere is loopy belief propagation), geometric damping.
  Beliefs weigh incoming messages by ``rho``; the message divides the pairwise
  potential by ``rho``. Node and edge marginals are normalised by dividing by
  their sums (rows sum to one at any score scale).
* ``MAX`` — max-sum message passing: TRW-S (Kolmogorov 2006, node weights
  ``gamma_s = 1 / max(#earlier, #later neighbours)``) or plain max-product
  (``gamma = 1``, optional damping). Each iteration decodes a labelling, polishes
  it by ICM and keeps the best; a dual upper bound (the sum of maxima of the
  reparametrised potentials, valid for any messages) is tracked when every
  potential is finite.

Messages live in a ``(2 M, K)`` array: row ``2 e`` is the message along
``edges[e, 0] -> edges[e, 1]`` (a function of the target's state), row ``2 e + 1``
the reverse.

An example on which sum-product collapses (a message with no finite entry: no
labelling of finite score) gets ``log_partition = -inf`` and NaN marginals; the
caller turns that into an error.
"""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

import numpy as np
from numba import njit

from .inference_tree import (
    MAX,
    SUM,
    direct_message,
    exp_form,
    lse_message,
    lse_vector,
    normalise_log,
    normalised_exp,
    softmax_table,
)


class LoopyOptions(NamedTuple):
    """Settings of :func:`loopy_pass`.

    semiring : SUM or MAX; rho : (M,) edge appearance probabilities in (0, 1] (SUM; ones for BP);
    max_iter, tol : at most ``max_iter`` sweeps; stop when no normalised log-message moved by
    more than ``tol`` (MAX also stops when the bound stops improving or meets the best score);
    damping : in [0, 1) (SUM and plain max-product); cache_limit : SUM caches exp-forms of
    ``pairwise / rho`` (3 arrays of ``E_i K^2`` floats) when ``max_i E_i K^2 <= cache_limit``;
    edge_mode : as in ``forest_pass``; trws : MAX with TRW-S node weights; compute_bound : MAX
    tracks the dual bound (valid only with finite potentials).
    """

    semiring: int
    rho: np.ndarray
    max_iter: int
    tol: float
    damping: float
    cache_limit: int
    edge_mode: int
    trws: bool
    compute_bound: bool


class LoopyOutputs(NamedTuple):
    """Outputs of :func:`loopy_pass`; the other semiring's arrays may be empty.

    SUM: node_marg (N, K), edge_out (M, K, K) / (1, K, K) / (0, K, K), log_partition (n_examples,)
    (TRW: variational upper bound at a fixed point; BP: Bethe approximation).
    MAX: labels (N,) int64 (best labelling found), scores, bounds (n_examples,).
    Both: n_iter (n_examples,) int64, converged (n_examples,) uint8.
    """

    node_marg: np.ndarray
    edge_out: np.ndarray
    log_partition: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    bounds: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


#: Exp-form cache of the current example's edges: ``pws`` (E_max, K, K) = pairwise / rho; ``e_fwd, s_fwd``
#: the exp-form of ``pws.T`` (messages along ``edges[e, 0] -> edges[e, 1]``), ``e_bwd, s_bwd`` of ``pws``.
_Cache = namedtuple("_Cache", "pws e_fwd s_fwd e_bwd s_bwd")

#: Scratch: ``weights`` (M,) of the incoming messages in a belief (rho, or ones); ``gamma`` (N,) cavity
#: node weights (TRW-S, else ones); ``gamma_chain`` (N,) chain weights of the bound; ``belief`` (N, K)
#: (SUM); ``cur`` (N,) int64 labelling being decoded, ``nxt`` (M,) int64 / ``has_prev`` (M,) uint8 chain
#: links (MAX); ``arg`` (K,) int64; vectors ``th, cav, new, ex, ssum, f, g`` (K,); tables ``T, P`` (K, K).
_Work = namedtuple("_Work", "weights gamma gamma_chain belief cur nxt has_prev arg th cav new ex ssum f g T P")


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
def _msg_index(edges, e, source):
    return 2 * e if edges[e, 0] == source else 2 * e + 1


@njit(cache=True, inline="always")
def _node_belief(v, unary, msgs, graph, weights, out):
    """``out = unary[v] + sum_e weights[e] * msgs[e -> v]``."""
    k = unary.shape[1]
    for a in range(k):
        out[a] = unary[v, a]
    for q in range(graph.adj_ptr[v], graph.adj_ptr[v + 1]):
        e = graph.adj_edge[q]
        idx = 2 * e if graph.edges[e, 1] == v else 2 * e + 1
        r = weights[e]
        for a in range(k):
            out[a] += r * msgs[idx, a]


@njit(cache=True, inline="always")
def _cavity(b, g, m, out):
    """``out = g * b - m`` with ``-inf`` wherever ``b`` or ``m`` is ``-inf``."""
    for a in range(b.shape[0]):
        out[a] = -np.inf if (m[a] == -np.inf or b[a] == -np.inf) else g * b[a] - m[a]


@njit(cache=True, inline="always")
def _damp(new, old, damping, renormalise):
    """``new = (1 - damping) new + damping old`` (``-inf`` where either is); optionally re-normalised."""
    for y in range(new.shape[0]):
        if new[y] == -np.inf or old[y] == -np.inf:
            new[y] = -np.inf
        else:
            new[y] = (1.0 - damping) * new[y] + damping * old[y]
    if renormalise:
        normalise_log(new)


@njit(cache=True, inline="always")
def _message(pots, cache, semiring, e, j, first, inv_rho, work):
    """``work.new[y] = op_x (cav[x] + pw_(s,t)[x, y] / rho_e)``: the message ``s -> t`` along edge ``e``
    (local index ``j``; ``first`` when ``s = edges[e, 0]``)."""
    if semiring == SUM and cache.pws.shape[0] > 0:
        if first:
            lse_message(work.cav, cache.pws[j], True, cache.e_fwd[j], cache.s_fwd[j], work.ex, work.ssum, work.new)
        else:
            lse_message(work.cav, cache.pws[j], False, cache.e_bwd[j], cache.s_bwd[j], work.ex, work.ssum,
                        work.new)
    else:
        pw = pots.pw3[0] if pots.shared else pots.pw3[e]
        direct_message(semiring, work.cav, pw, first, inv_rho, work.new, work.arg, False)


@njit(cache=True, nogil=True)
def _sweep(pots, graph, i, semiring, damping, msgs, cache, work):
    """One forward and one backward sweep over example ``i``; returns ``(largest change, collapsed)``.

    A message without a finite entry collapses sum-product (no labelling of finite
    score) and is skipped by max-product (the old message is kept).
    """
    lo = graph.node_offsets[i]
    hi = graph.node_offsets[i + 1]
    elo = graph.edge_offsets[i]
    k = pots.unary.shape[1]
    delta = 0.0
    for direction in range(2):
        for jj in range(hi - lo):
            s = lo + jj if direction == 0 else hi - 1 - jj
            _node_belief(s, pots.unary, msgs, graph, work.weights, work.th)
            for q in range(graph.adj_ptr[s], graph.adj_ptr[s + 1]):
                t = graph.adj_nbr[q]
                if (direction == 0 and t < s) or (direction == 1 and t > s):
                    continue
                e = graph.adj_edge[q]
                idx = _msg_index(graph.edges, e, s)
                _cavity(work.th, work.gamma[s], msgs[idx ^ 1], work.cav)
                _message(pots, cache, semiring, e, e - elo, graph.edges[e, 0] == s, 1.0 / work.weights[e], work)
                z = -np.inf
                for y in range(k):
                    z = max(z, work.new[y])
                if z == -np.inf:
                    if semiring == SUM:
                        return delta, True
                    continue
                for y in range(k):
                    work.new[y] -= z
                if damping > 0.0:
                    _damp(work.new, msgs[idx], damping, semiring == SUM)
                delta = _store_message(work.new, msgs, idx, k, delta)
    return delta, False


@njit(cache=True, nogil=True)
def _new_cache(graph, active, k, opts):
    """Exp-form cache sized for the largest active example (empty when unused or too large)."""
    max_e = 0
    for i in range(graph.node_offsets.shape[0] - 1):
        if active[i]:
            max_e = max(max_e, graph.edge_offsets[i + 1] - graph.edge_offsets[i])
    ce = max_e if (opts.semiring == SUM and max_e * k * k <= opts.cache_limit) else 0
    return _Cache(np.empty((ce, k, k)), np.empty((ce, k, k)), np.empty((ce, k)), np.empty((ce, k, k)),
                  np.empty((ce, k)))


@njit(cache=True, nogil=True)
def _fill_cache(pots, graph, i, weights, cache):
    """Exp-forms of ``pairwise / rho`` in both orientations for the edges of example ``i``:
    a message then costs K exponentials and K logarithms instead of K^2 exponentials."""
    if cache.pws.shape[0] == 0:
        return
    k = pots.unary.shape[1]
    elo = graph.edge_offsets[i]
    for e in range(elo, graph.edge_offsets[i + 1]):
        j = e - elo
        pw = pots.pw3[0] if pots.shared else pots.pw3[e]
        inv_rho = 1.0 / weights[e]
        for x in range(k):
            for y in range(k):
                cache.pws[j, x, y] = inv_rho * pw[x, y]
        exp_form(cache.pws[j], True, cache.e_fwd[j], cache.s_fwd[j])
        exp_form(cache.pws[j], False, cache.e_bwd[j], cache.s_bwd[j])


@njit(cache=True, nogil=True)
def _new_work(pots, graph, opts):
    n, k = pots.unary.shape
    m = graph.edges.shape[0]
    kk = k if opts.semiring == SUM else 0
    weights = opts.rho.copy() if opts.semiring == SUM else np.ones(m)
    return _Work(weights, np.ones(n), np.ones(n), np.empty((n if opts.semiring == SUM else 0, k)),
                 np.zeros(n, dtype=np.int64), np.empty(m, dtype=np.int64), np.empty(m, dtype=np.uint8),
                 np.empty(k, dtype=np.int64), np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k),
                 np.empty(k), np.empty(k), np.empty((kk, kk)), np.empty((kk, kk)))


@njit(cache=True, nogil=True)
def _edge_table(cs, ct, pw, inv_rho, T, P):
    """``P`` = the table ``exp(cs[x] + pw[x, y] / rho + ct[y])`` divided by its sum, ``T = log P``."""
    k = cs.shape[0]
    for x in range(k):
        for y in range(k):
            T[x, y] = cs[x] + inv_rho * pw[x, y] + ct[y]
    lz = softmax_table(T, P)
    if lz > -np.inf:
        for x in range(k):
            for y in range(k):
                T[x, y] -= lz


@njit(cache=True, nogil=True)
def _sum_outputs(pots, graph, i, msgs, edge_mode, out, work):
    """Marginals of example ``i`` at the final messages; returns the variational log-partition."""
    k = pots.unary.shape[1]
    lo = graph.node_offsets[i]
    hi = graph.node_offsets[i + 1]
    belief = work.belief
    value = 0.0
    for v in range(lo, hi):
        _node_belief(v, pots.unary, msgs, graph, work.weights, belief[v])
        normalised_exp(belief[v], out.node_marg[v])
        z = lse_vector(belief[v])
        for a in range(k):
            belief[v, a] -= z          # now log tau_v
            tau = out.node_marg[v, a]
            if tau > 0.0:
                value += tau * (pots.unary[v, a] - belief[v, a])
    for e in range(graph.edge_offsets[i], graph.edge_offsets[i + 1]):
        v = graph.edges[e, 0]
        t = graph.edges[e, 1]
        # cavities use log tau_v instead of the unnormalised beliefs: the constant cancels
        _cavity(belief[v], 1.0, msgs[2 * e + 1], work.th)
        _cavity(belief[t], 1.0, msgs[2 * e], work.cav)
        pw = pots.pw3[0] if pots.shared else pots.pw3[e]
        r = work.weights[e]
        _edge_table(work.th, work.cav, pw, 1.0 / r, work.T, work.P)
        for x in range(k):
            for y in range(k):
                tau = work.P[x, y]
                if edge_mode == 0:
                    out.edge_out[e, x, y] = tau
                elif edge_mode == 1:
                    out.edge_out[0, x, y] += tau
                if tau > 0.0:
                    mi = work.T[x, y] - belief[v, x] - belief[t, y]
                    value += tau * (pw[x, y] - r * mi)
    return value


@njit(cache=True, inline="always")
def _local_score(pots, graph, v, a, labels):
    total = pots.unary[v, a]
    for q in range(graph.adj_ptr[v], graph.adj_ptr[v + 1]):
        t = graph.adj_nbr[q]
        e = graph.adj_edge[q]
        pw = pots.pw3[0] if pots.shared else pots.pw3[e]
        if graph.edges[e, 0] == v:
            total += pw[a, labels[t]]
        else:
            total += pw[labels[t], a]
    return total


@njit(cache=True, nogil=True)
def icm(pots, graph, lo, hi, labels, max_sweeps):
    """Iterated conditional modes on nodes ``lo..hi-1`` until no label changes."""
    k = pots.unary.shape[1]
    for _ in range(max_sweeps):
        changed = False
        for v in range(lo, hi):
            cur = labels[v]
            best = _local_score(pots, graph, v, cur, labels)
            arg = cur
            for a in range(k):
                if a == cur:
                    continue
                sc = _local_score(pots, graph, v, a, labels)
                if sc > best:
                    best = sc
                    arg = a
            if arg != cur:
                labels[v] = arg
                changed = True
        if not changed:
            break


@njit(cache=True, nogil=True)
def example_score(pots, edges, lo, hi, elo, ehi, labels):
    """Score of the labelling of nodes ``lo..hi-1`` / edges ``elo..ehi-1``."""
    total = 0.0
    for v in range(lo, hi):
        total += pots.unary[v, labels[v]]
    for e in range(elo, ehi):
        pw = pots.pw3[0] if pots.shared else pots.pw3[e]
        total += pw[labels[edges[e, 0]], labels[edges[e, 1]]]
    return total


@njit(cache=True, nogil=True)
def batch_scores(pots, edges, node_offsets, edge_offsets, labels, out):
    """Score of every example's labelling into ``out`` (n_examples,)."""
    for i in range(node_offsets.shape[0] - 1):
        out[i] = example_score(pots, edges, node_offsets[i], node_offsets[i + 1], edge_offsets[i],
                               edge_offsets[i + 1], labels)


@njit(cache=True, nogil=True)
def _dual_bound(pots, graph, i, msgs, work):
    """Sum of maxima of the reparametrised node and edge potentials (an upper bound on the MAP score)."""
    k = pots.unary.shape[1]
    total = 0.0
    for v in range(graph.node_offsets[i], graph.node_offsets[i + 1]):
        _node_belief(v, pots.unary, msgs, graph, work.weights, work.th)
        total += work.th.max()
    for e in range(graph.edge_offsets[i], graph.edge_offsets[i + 1]):
        pw = pots.pw3[0] if pots.shared else pots.pw3[e]
        m = -np.inf
        for x in range(k):
            for y in range(k):
                m = max(m, pw[x, y] - msgs[2 * e + 1, x] - msgs[2 * e, y])
        total += m
    return total


@njit(cache=True, nogil=True)
def _link_chains(pots, graph, i, work):
    """Pair, at every node, the j-th edge to an earlier neighbour with the j-th edge to a later one
    (``work.nxt``, ``work.has_prev``); returns the sum of ``max unary`` over the isolated nodes."""
    for e in range(graph.edge_offsets[i], graph.edge_offsets[i + 1]):
        work.nxt[e] = -1
        work.has_prev[e] = 0
    isolated = 0.0
    for v in range(graph.node_offsets[i], graph.node_offsets[i + 1]):
        if graph.adj_ptr[v] == graph.adj_ptr[v + 1]:
            isolated += pots.unary[v].max()
            continue
        j_in = 0
        for q in range(graph.adj_ptr[v], graph.adj_ptr[v + 1]):
            if graph.adj_nbr[q] > v:
                continue
            j_out = 0
            for r in range(graph.adj_ptr[v], graph.adj_ptr[v + 1]):
                if graph.adj_nbr[r] < v:
                    continue
                if j_out == j_in:
                    work.nxt[graph.adj_edge[q]] = graph.adj_edge[r]
                    work.has_prev[graph.adj_edge[r]] = 1
                    break
                j_out += 1
            j_in += 1
    return isolated


@njit(cache=True, nogil=True)
def _chain_bound(pots, graph, i, msgs, work):
    """Upper bound on the MAP score from a decomposition into monotonic chains (Kolmogorov 2006).

    :func:`_link_chains` splits the graph into increasing paths, ``max(#earlier,
    #later)`` of them through each node. Every chain gets the reparametrised edge
    potentials of its edges and a share ``gamma_chain[v] = 1 / max(#earlier, #later)``
    of each node's reparametrised potential, so the chains sum to the original score
    function and the sum of their maxima (Viterbi) bounds the optimum, for any messages.
    """
    k = pots.unary.shape[1]
    edges = graph.edges
    f, g, th = work.f, work.g, work.th
    total = _link_chains(pots, graph, i, work)
    for e0 in range(graph.edge_offsets[i], graph.edge_offsets[i + 1]):
        if work.has_prev[e0]:
            continue
        e = e0
        s = min(edges[e, 0], edges[e, 1])
        _node_belief(s, pots.unary, msgs, graph, work.weights, th)
        for a in range(k):
            f[a] = work.gamma_chain[s] * th[a]
        while e >= 0:
            t = edges[e, 0] + edges[e, 1] - s
            _node_belief(t, pots.unary, msgs, graph, work.weights, th)
            pw = pots.pw3[0] if pots.shared else pots.pw3[e]
            s_first = edges[e, 0] == s
            for y in range(k):
                m = -np.inf
                for x in range(k):
                    if s_first:
                        w = pw[x, y] - msgs[2 * e + 1, x] - msgs[2 * e, y]
                    else:
                        w = pw[y, x] - msgs[2 * e + 1, y] - msgs[2 * e, x]
                    m = max(m, f[x] + w)
                g[y] = m + work.gamma_chain[t] * th[y]
            for y in range(k):
                f[y] = g[y]
            s = t
            e = work.nxt[e]
        total += f.max()
    return total


@njit(cache=True, nogil=True)
def _node_weights(graph, i, trws, work):
    """TRW-S weights ``1 / max(#earlier, #later neighbours)`` of the nodes of example ``i``."""
    for v in range(graph.node_offsets[i], graph.node_offsets[i + 1]):
        before = 0
        after = 0
        for q in range(graph.adj_ptr[v], graph.adj_ptr[v + 1]):
            if graph.adj_nbr[q] < v:
                before += 1
            else:
                after += 1
        mx = max(before, after)
        work.gamma_chain[v] = 1.0 / mx if mx > 0 else 1.0
        work.gamma[v] = work.gamma_chain[v] if trws else 1.0


@njit(cache=True, nogil=True)
def _decode(pots, graph, i, msgs, work):
    """Labelling in node order: earlier neighbours by their labels, later ones by their messages."""
    k = pots.unary.shape[1]
    th = work.th
    cur = work.cur
    for s in range(graph.node_offsets[i], graph.node_offsets[i + 1]):
        for a in range(k):
            th[a] = pots.unary[s, a]
        for q in range(graph.adj_ptr[s], graph.adj_ptr[s + 1]):
            t = graph.adj_nbr[q]
            e = graph.adj_edge[q]
            if t < s:
                pw = pots.pw3[0] if pots.shared else pots.pw3[e]
                for a in range(k):
                    th[a] += pw[cur[t], a] if graph.edges[e, 0] == t else pw[a, cur[t]]
            else:
                idx = 2 * e if graph.edges[e, 1] == s else 2 * e + 1
                for a in range(k):
                    th[a] += msgs[idx, a]
        cur[s] = np.argmax(th)


@njit(cache=True, nogil=True)
def _map_iteration(pots, graph, i, it, opts, msgs, out, work, best, bound, stop):
    """Decode, polish by ICM, keep the best labelling and (every 5 sweeps) tighten the bound.

    Returns the updated ``(best, bound, stop)``.
    """
    lo = graph.node_offsets[i]
    hi = graph.node_offsets[i + 1]
    _decode(pots, graph, i, msgs, work)
    icm(pots, graph, lo, hi, work.cur, 50)
    sc = example_score(pots, graph.edges, lo, hi, graph.edge_offsets[i], graph.edge_offsets[i + 1], work.cur)
    if sc > best or it == 0:
        best = sc
        for v in range(lo, hi):
            out.labels[v] = work.cur[v]
    if opts.compute_bound and (stop or it % 5 == 4 or it == opts.max_iter - 1):
        bd = min(_dual_bound(pots, graph, i, msgs, work), _chain_bound(pots, graph, i, msgs, work))
        if opts.trws and bound < np.inf and abs(bound - bd) <= opts.tol * max(1.0, abs(bd)):
            stop = True
        bound = min(bound, bd)
        if bound - best <= 1e-12 * max(1.0, abs(bound)):
            stop = True
    return best, bound, stop


@njit(cache=True, nogil=True)
def loopy_pass(pots, graph, active, opts, out):
    """Sum-product (TRW / BP) or max-product (TRW-S / damped) on every active example.

    Parameters
    ----------
    pots : Potentials; graph : GraphArrays; active : (n_examples,) uint8
    opts : LoopyOptions; out : LoopyOutputs (filled for the active examples)
    """
    k = pots.unary.shape[1]
    msgs = np.zeros((2 * graph.edges.shape[0], k))
    work = _new_work(pots, graph, opts)
    cache = _new_cache(graph, active, k, opts)
    damping = 0.0 if (opts.semiring == MAX and opts.trws) else opts.damping
    for i in range(graph.node_offsets.shape[0] - 1):
        if not active[i]:
            continue
        if opts.semiring == SUM:
            _fill_cache(pots, graph, i, work.weights, cache)
        else:
            _node_weights(graph, i, opts.trws, work)
        best = -np.inf
        bound = np.inf
        out.n_iter[i] = 0
        out.converged[i] = 0
        collapsed = False
        for it in range(opts.max_iter):
            delta, collapsed = _sweep(pots, graph, i, opts.semiring, damping, msgs, cache, work)
            out.n_iter[i] = it + 1
            if collapsed:
                break
            stop = delta <= opts.tol
            if opts.semiring == MAX:
                best, bound, stop = _map_iteration(pots, graph, i, it, opts, msgs, out, work, best, bound, stop)
            if stop:
                out.converged[i] = 1
                break
        if opts.semiring == MAX:
            out.scores[i] = best
            out.bounds[i] = bound if opts.compute_bound else np.nan
        elif collapsed:
            out.log_partition[i] = -np.inf
            for v in range(graph.node_offsets[i], graph.node_offsets[i + 1]):
                out.node_marg[v] = np.nan
        else:
            out.log_partition[i] = _sum_outputs(pots, graph, i, msgs, opts.edge_mode, out, work)
