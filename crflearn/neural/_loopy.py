"""Tree-reweighted (TRW) sum-product on any graph, batched, in torch, on the potentials' device.

The same algorithm as the Numba path ``crflearn.inference.infer(..., method="trw")``
(Wainwright, Jaakkola & Willsky 2005): log-space messages over a flat edge list with
per-example offsets (the :class:`~crflearn.graphs.GraphBatch` layout), edge appearance
probabilities ``rho`` of the uniform spanning-tree distribution, geometric damping, and
the TRW variational value, an upper bound on the log-partition at the fixed point.

Schedule: the nodes are coloured so that no edge joins two nodes of one colour
(:mod:`._loopy_graph`; two colours on chains, trees and grids), and the messages out of
the nodes of one colour, which do not depend on each other, are updated together in one
vectorised step; a sweep (one iteration) updates the colours in turn. This is a
Gauss-Seidel schedule like the Numba sweeps (it needs as many sweeps, about half as many
as all-parallel updates) without a Python loop over edges. Both converge to the same
fixed point, where the results agree to the tolerance.

Layout: messages are held as ``(K, 2 M_r, B)`` (states first, so every reduction over
states is vectorised across messages), grouped by colour, where ``B`` is the number of
replicas: a batch of copies of one graph (same-sized images) keeps its examples as the
trailing dimension, so that the index operations move ``B`` values at a time; otherwise
``B = 1`` and ``M_r = M``. The public ``(2 M, K)`` row order (row ``2 e`` is the message
along ``edges[e, 0] -> edges[e, 1]``, row ``2 e + 1`` the reverse, as in
:mod:`crflearn._kernels.inference_loopy`) is used only at the interface. For a shared
``(K, K)`` score the exponential tables are computed once per distinct ``rho`` value and
orientation, then gathered per message position; on replicas a block's update is then one
batched matrix product.

Differentiation: :func:`trw_log_partition` and :func:`trw_nll_loss` have an explicit
backward. The TRW value is ``max_tau <theta, tau> + H_rho(tau)`` over the local polytope,
so by Danskin's theorem its gradient is the pseudo-marginals ``tau`` at the fixed point
(exact once converged): no unrolled iterations are stored, and the loss adds no autograd
graph of its own. The value comes from the last update of every message
(:func:`_marginals_and_value`); for a shared score on a batch of copies of one graph, the
NLL's backward sums the weighted edge marginals from the factors of those updates without
forming them (:func:`_shared_gradient`); otherwise the edge marginals are one ``(K, K)``
table per edge from the final messages (:func:`_edge_marginals`).
Marginals returned by :func:`trw_infer` are detached.

Precision: under autocast or with half-precision inputs the messages run in float32
(``torch.promote_types(dtype, float32)``), never in half precision.

Host synchronisation: the only device-to-host transfer is the convergence test, every
``check_every`` sweeps; ``check_every=0`` runs exactly ``max_iter`` sweeps with no
synchronisation and returns the last residual as a device tensor (the caller checks it
when convenient, e.g. once per epoch).

The CUDA path is implemented (and has a test that fails on any host synchronisation) but
has not been run or timed: no GPU was available when it was written.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from sklearn.exceptions import ConvergenceWarning

from .._validation import check_int, check_nonnegative
from ._loopy_graph import LoopyGraph, make_loopy_graph

__all__ = ["LoopyGraph", "TRWResult", "make_loopy_graph", "trw_infer", "trw_log_partition", "trw_nll_loss",
           "labelling_score"]

_REDUCTIONS = ("sum", "mean", "none")


class TRWResult(NamedTuple):
    """Output of :func:`trw_infer` (all tensors detached, on the potentials' device).

    Attributes
    ----------
    node_marginals : Tensor (N, K)
    edge_marginals : Tensor (M, K, K) or None
        ``edge_marginals[e, a, b]`` for ``y_s = a, y_t = b``, ``edges[e] = (s, t)``; None in the
        results that the losses append to ``out`` when their backward does not need them (a shared
        score on a batch of copies of one graph).
    log_partition : Tensor (n_examples,)
        TRW variational value (an upper bound on the log-partition at convergence).
    messages : Tensor (2 M, K)
        Final log-messages (pass as ``init_messages`` to warm-start a later call).
    n_iter : int
        Sweeps run (each updates every message once).
    residual : Tensor (0-dim)
        Largest change of a (max-normalised) log-message in the last sweep.
    converged : bool or None
        ``residual <= tol``; None when ``check_every=0`` (not synchronised).
    """

    node_marginals: torch.Tensor
    edge_marginals: torch.Tensor
    log_partition: torch.Tensor
    messages: torch.Tensor
    n_iter: int
    residual: torch.Tensor
    converged: bool | None


# ---------------------------------------------------------------------------- checks
def _compute_dtype(*tensors) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_potentials(unary, pairwise, graph):
    if not isinstance(graph, LoopyGraph):
        raise TypeError(f"graph must come from make_loopy_graph, got {type(graph).__name__}")
    for name, t in (("unary", unary), ("pairwise", pairwise)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating point torch.Tensor, got {type(t).__name__}")
    m = graph.edges.shape[0]
    if unary.dim() != 2 or unary.shape[0] != graph.n_nodes or unary.shape[1] == 0:
        raise ValueError(f"unary must have shape ({graph.n_nodes}, n_states), got {tuple(unary.shape)}")
    k = unary.shape[1]
    if tuple(pairwise.shape) not in ((k, k), (m, k, k)):
        raise ValueError(f"pairwise must have shape ({k}, {k}) or ({m}, {k}, {k}), got {tuple(pairwise.shape)}")
    for name, t in (("pairwise", pairwise), ("graph", graph.edges)):
        if t.device != unary.device:
            raise ValueError(f"{name} is on {t.device} but unary is on {unary.device}")


def _check_options(max_iter, tol, damping, check_every):
    max_iter = check_int(max_iter, "max_iter")
    tol = check_nonnegative(tol, "tol")
    damping = check_nonnegative(damping, "damping")
    if damping >= 1.0:
        raise ValueError(f"damping must be in [0, 1), got {damping!r}")
    check_every = check_int(check_every, "check_every", minimum=0)
    return max_iter, tol, damping, check_every


# ---------------------------------------------------------------------------- message passing
class _BlockData(NamedTuple):
    """Per-call data of one :class:`MessageBlock` (``n`` messages, ``B`` replicas)."""

    unary: torch.Tensor    # (K, n_sources, B): unary scores of the block's sources
    rho: torch.Tensor      # (n, 1): rho of each message's edge
    tables: torch.Tensor   # (n, K_y, K_x) shared by the replicas (a batched product), or (K_x, K_y, n, 1 or B)
    col_max: torch.Tensor  # (K_y, n, 1 or B): top_j[y] / rho_j, top_j[y] = max_x pw_j[x, y]
    # tables: exp((pw_j[x, y] - top_j[y]) / rho_j), as [j, y, x] or as [x, y, j]


def _shared_tables(pairwise, rho_values, batched):
    """Exponential tables of a shared ``(K, K)`` score for both orientations and every distinct rho,
    column ``backward * n_rho + group``: ``(2 n_rho, K_y, K_x)`` and ``(2 n_rho, K)`` when ``batched``,
    else ``(K_x * K_y, 2 n_rho)`` and ``(K, 2 n_rho)``."""
    k = pairwise.shape[0]
    inv = 1.0 / rho_values
    if batched:  # [orientation, target, source]: pw^T for s -> t, pw for t -> s
        oriented = torch.stack([pairwise.T, pairwise])
        top = oriented.amax(dim=2)                                      # (2, K_target)
        exp_pw = ((oriented - top[:, :, None])[:, None] * inv[None, :, None, None]).exp_()
        return (exp_pw.clamp_min_(torch.finfo(pairwise.dtype).tiny).view(-1, k, k),
                (top[:, None, :] * inv[None, :, None]).view(-1, k))
    oriented = torch.stack([pairwise, pairwise.T])                      # (2, K_source, K_target)
    top = oriented.amax(dim=1)                                          # (2, K_target)
    inv = inv[None, :, None, None]
    exp_pw = ((oriented - top[:, None, :])[:, None] * inv).exp_().clamp_min_(torch.finfo(pairwise.dtype).tiny)
    col_max = top[:, None, :] * inv[..., 0]                             # (2, n_rho, K)
    # contiguous: a column gather (index_select along dim 1) from a transposed view is ~3x slower
    return (exp_pw.permute(2, 3, 0, 1).reshape(k * k, -1).contiguous(),
            col_max.permute(2, 0, 1).reshape(k, -1).contiguous())


def _block_tables(pairwise, block, rho, replicas):
    """Exponential tables ``(K_x, K_y, n, B)`` and ``(K_y, n, B)`` column maxima of a block's messages
    for per-edge scores ``(B * M_r, K, K)``."""
    k = pairwise.shape[-1]
    pw = pairwise.view(replicas, -1, k, k).index_select(1, block.edge)
    pw = torch.where(block.backward[:, None, None], pw.transpose(2, 3), pw)   # [source, target]
    top = pw.amax(dim=2)                                                       # (B, n, K_target)
    exp_pw = ((pw - top[:, :, None, :]) / rho.view(1, -1, 1, 1)).exp_().clamp_min_(torch.finfo(pw.dtype).tiny)
    return exp_pw.permute(2, 3, 1, 0), (top / rho.view(1, -1, 1)).permute(2, 1, 0)


def _block_data(u, pairwise, graph):
    """The :class:`_BlockData` of every block (``u`` is ``(K, N_r, B)``)."""
    k, replicas = u.shape[0], u.shape[2]
    shared, batched = pairwise.dim() == 2, pairwise.dim() == 2 and replicas > 1
    if shared:
        tables, col_max = _shared_tables(pairwise, graph.rho_values.to(u.dtype), batched)
    out = []
    for block in graph.blocks:
        rho_b = block.rho.to(u.dtype)
        if batched:
            tab, cm = tables.index_select(0, block.table), col_max.index_select(0, block.table).T[:, :, None]
        elif shared:
            tab = tables.index_select(1, block.table).view(k, k, -1, 1)
            cm = col_max.index_select(1, block.table)[:, :, None]
        else:
            tab, cm = _block_tables(pairwise, block, rho_b, replicas)
        out.append(_BlockData(u.index_select(1, block.sources), rho_b, tab, cm))
    return out


def _index_add(x, index, src):
    """``x.index_add(1, index, src)`` for ``(..., n, B)`` tensors (a 2-D kernel, ~5x faster, when ``B = 1``)."""
    if x.shape[-1] == 1:
        return x[..., 0].index_add(1, index, src[..., 0]).unsqueeze(-1)
    return x.index_add(1, index, src)


def _cavity(logm, block, data):
    """``cav_j = b_source(j) - m_reverse(j)`` of the block's messages, ``(K, n, B)``, where the beliefs
    ``b = unary + sum_in rho m`` of the sources sum the reverses (every message into a source)."""
    r = block.reverse_start   # the messages into the sources from the targets:
    into = logm[:, r:r + block.stop - block.start] if r >= 0 else logm.index_select(1, block.reverse)
    belief = _index_add(data.unary, block.source_index, into * data.rho)
    return belief.index_select(1, block.source_index).sub_(into)


def _product(cav, data):
    """``(S, c, a)`` with ``S[y] = sum_x exp_pw[x, y] a[x]``, ``a = exp(cav - c)`` and ``c = max cav``
    (``cav`` is overwritten): the update of a message is ``log S + col_max + c``, a multiply-add over
    ``x`` vectorised over the block (one batched matrix product when the table is shared by the
    replicas). The tables are floored at the smallest normal number and ``a`` is 1 at the maximum, so
    ``S`` is too: a term more than ~87 (float32) or ~708 (float64) nats below its column maximum cannot
    produce ``-inf``."""
    c = cav.amax(dim=0)
    a = cav.sub_(c).exp_()
    if data.tables.dim() == 3:  # elementwise ops on the transposed view would be ~5x slower
        return torch.bmm(data.tables, a.transpose(0, 1)).transpose(0, 1).contiguous(), c, a
    total = data.tables[0] * a[0]
    for x in range(1, len(data.tables)):
        total.addcmul_(data.tables[x], a[x])
    return total, c, a


def _block_update(logm, block, data, damping):
    """Update the messages of one block in place (they do not depend on each other), max-normalised;
    return ``(S, c, a, new, top)``: :func:`_product`'s outputs, the update ``new = log S + col_max`` before
    its normalisation and, undamped, its maximum ``top`` (the stored messages are then ``new - top``)."""
    s, c, a = _product(_cavity(logm, block, data), data)
    new = s.log().add_(data.col_max)
    old = logm[:, block.start:block.stop]
    if damping > 0.0:
        # (1 - d) * new + d * old; normalising ``new`` first would only shift each column by a constant
        torch.lerp(new, old, damping, out=old)
        old.sub_(old.amax(dim=0))
        return s, c, a, new, None
    top = new.amax(dim=0)
    torch.sub(new, top, out=old)
    return s, c, a, new, top


def _to_layout(x, replicas):
    """Rows ``(B * n, K)`` (replica-major) as ``(K, n, B)``, a view."""
    return x.view(replicas, -1, x.shape[-1]).permute(2, 1, 0)


def _from_layout(x):
    """``(K, n, B)`` back to rows ``(B * n, K)``."""
    return x.permute(2, 1, 0).reshape(-1, x.shape[0])


def _run_messages(u, pairwise, graph, init, max_iter, tol, damping, check_every):
    """Sweep to convergence (``u`` is ``(K, N_r, B)``); return ``(logm (K, 2 M_r, B) internal order,
    block data, the last update of every block, n_iter, residual, converged)``."""
    k, m = u.shape[0], graph.forward.shape[0]
    data = _block_data(u, pairwise, graph)
    if init is None:
        logm = u.new_zeros(k, 2 * m, u.shape[2])
    else:
        logm = _to_layout(init.to(u.dtype), u.shape[2]).index_select(1, graph.internal)
    residual = u.new_zeros(())
    converged = None if check_every == 0 else (m == 0)
    n_iter, updates = 0, []
    while m and n_iter < max_iter:
        n_iter += 1
        last = n_iter == max_iter
        check = (n_iter % check_every == 0 or last) if check_every else last
        before = logm.clone() if check else None
        updates = [_block_update(logm, block, d, damping) for block, d in zip(graph.blocks, data)]
        if check:
            residual = before.sub_(logm).abs_().amax()
            if check_every:
                converged = float(residual) <= tol  # the one host synchronisation
                if converged:
                    break
    return logm, data, updates, n_iter, residual, converged


def _add_by_group(value, groups, terms, weight=None):
    """``value[g] += sum of weight_j terms_j over the rows j (n, B) of group g`` (``value`` is ``(G, B)``,
    ``weight`` ``(n, 1)`` or None for ones)."""
    if value.shape[0] == 1:
        if weight is None:
            value[0] += terms.sum(dim=0)
        else:
            value.addmm_(weight.T, terms)
    else:
        value.index_add_(0, groups, terms if weight is None else terms * weight)


def _softmax_(x):
    """Softmax over states in place; return ``(x, logsumexp)``."""
    top = x.amax(dim=0)
    total = x.sub_(top).exp_().sum(dim=0)
    return x.div_(total), total.log_().add_(top)


def _marginals_and_value(u, graph, logm, data, updates):
    """Node pseudo-marginals ``tau`` (K, N_r, B), the TRW variational value per example and, per block,
    ``(a, beta)`` with ``tau_e[x, y] = exp_pw[x, y] a[x] beta[y]`` for each message (``[source, target]``).

    With the beliefs ``b``, the cavities ``cs = b_s - m_{t->s}``, ``ct = b_t - m_{s->t}`` and the edge
    table ``T[x, y] = cs[x] + pw[x, y] / rho + ct[y]`` (``tau_e = softmax T``, ``L_e = logsumexp T``), the
    value ``sum_v <tau_v, unary_v - log tau_v> + sum_e <tau_e, pw_e - rho_e (log tau_e - log tau_s -
    log tau_t)>`` is ``sum_v (<tau_v, unary_v - b_v> + (1 - sum_{e at v} rho_e) lse b_v)`` plus, for every
    message ``j: s -> t``, ``rho_e (L_e / 2 + <c_j, m_j>)`` with ``c_j = softmax_y T`` summed over ``x``: the energy
    ``<tau_e, pw_e>`` cancels. ``L_e`` and ``c_j`` come from the last update of each message
    (``T`` summed over ``x`` is ``ct + log S + col_max + c``; undamped, ``c_j = tau_t``), so no
    ``(K, K)`` table per edge is formed;
    the cavities of the block updated first in the last sweep are half a sweep old, a difference that
    vanishes at convergence.
    """
    rho = torch.cat([d.rho for d in data]) if data else u.new_zeros(0, 1)   # (2 M_r, 1)
    belief = _index_add(u, graph.dst, logm * rho)
    tau, lse = _softmax_(belief.clone())                                # lse: (N_r, B)
    value = u.new_zeros(graph.n_examples // u.shape[2], u.shape[2])
    _add_by_group(value, graph.node_example,
                  (tau * (u - belief)).sum(dim=0).addcmul_(lse, graph.node_weight.to(u.dtype)[:, None]))
    parts = []
    for block, d, (s, c, a, new, top) in zip(graph.blocks, data, updates):
        own, dst = logm[:, block.start:block.stop], graph.dst[block.start:block.stop]
        if top is None:
            q, big_l = _softmax_(belief.index_select(1, dst).sub_(own).add_(new).add_(c))
            terms = torch.add((q * own).sum(dim=0), big_l, alpha=0.5)
        else:  # own = new - top: T summed over x is b_t + top + c, so c_j = tau_t and L_e = lse b_t + top + c
            q = tau.index_select(1, dst)
            terms = (q * own).sum(dim=0).add_(top.add_(c).add_(lse.index_select(0, dst)), alpha=0.5)
        _add_by_group(value, graph.edge_example.index_select(0, block.edge) if value.shape[0] > 1 else None,
                      terms, d.rho)
        parts.append((a, q.div_(s)))
    return tau, value.reshape(-1), parts


def _edge_marginals(u, graph, logm, pairwise):
    """``tau_e = softmax T`` (M, K, K) from the final messages, ``T[x, y] = cs[x] + pw[x, y] / rho + ct[y]``
    (``cs = b_s - m_{t->s}``, ``ct = b_t - m_{s->t}``), one ``(K, K)`` table per edge and replica."""
    k, replicas, m = u.shape[0], u.shape[2], graph.forward.shape[0]
    rho = graph.rho[:m].to(u.dtype)[:, None]
    belief = _index_add(u, graph.dst, logm * torch.cat([b.rho for b in graph.blocks]).to(u.dtype)) if m else u
    s, t = graph.edges[:m, 0], graph.edges[:m, 1]     # one replica's edges: local node indices
    to_t, to_s = logm.index_select(1, graph.forward), logm.index_select(1, graph.backward)   # (K, M_r, B)
    cs, ct = belief.index_select(1, s).sub_(to_s), belief.index_select(1, t).sub_(to_t)
    pw = pairwise[:, :, None, None] if pairwise.dim() == 2 else pairwise.view(replicas, m, k, k).permute(2, 3, 1, 0)
    table = pw / rho
    table = table + cs[:, None]
    table += ct[None, :]
    top = table.amax(dim=(0, 1))
    tau_e = table.sub_(top).exp_()
    tau_e /= tau_e.sum(dim=(0, 1))
    return tau_e.permute(3, 2, 0, 1).reshape(-1, k, k)


def _trw_core(unary, pairwise, graph, init, options, edge_marginals=True):
    """Validated inputs -> ``(TRWResult in the compute dtype, no autograd; the gradient data)``.

    The gradient data are the node marginals ``(K, N_r, B)``, the block data and the per-block
    ``(a, beta)`` of :func:`_marginals_and_value`. Without ``edge_marginals``, the result's
    ``edge_marginals`` is None.
    """
    max_iter, tol, damping, check_every, warn = options
    dtype = _compute_dtype(unary, pairwise)
    with torch.no_grad(), torch.autocast(unary.device.type, enabled=False):
        u = _to_layout(unary.to(dtype), graph.replicas).contiguous()     # (K, N_r, B), a copy
        p = pairwise if pairwise.dtype == dtype else pairwise.to(dtype)   # read only
        logm, data, updates, n_iter, residual, converged = _run_messages(u, p, graph, init, max_iter, tol,
                                                                         damping, check_every)
        tau, value, parts = _marginals_and_value(u, graph, logm, data, updates)
        tau_e = _edge_marginals(u, graph, logm, p) if edge_marginals else None
        messages = _from_layout(logm.index_select(1, graph.external))            # external order (2 M, K)
    if warn and converged is False:
        warnings.warn(f"TRW message passing did not converge in max_iter={max_iter} iterations (largest "
                      f"message change {float(residual):.3e} > tol={tol:g}); the marginals and the bound are "
                      "approximate: increase max_iter or damping", ConvergenceWarning, stacklevel=3)
    res = TRWResult(_from_layout(tau), tau_e, value, messages, n_iter, residual, converged)
    return res, (tau, data, parts)


def trw_infer(unary: torch.Tensor, pairwise: torch.Tensor, graph: LoopyGraph, *, max_iter: int = 200,
              tol: float = 1e-6, damping: float = 0.5, check_every: int = 5, init_messages=None,
              warn: bool = True) -> TRWResult:
    """TRW pseudo-marginals and log-partition bound of every example of a flat batch.

    Parameters
    ----------
    unary : Tensor of shape (N, K)
        Node scores (finite).
    pairwise : Tensor of shape (K, K) or (M, K, K)
        Shared or per-edge scores; ``pairwise[e, a, b]`` scores ``y_s = a, y_t = b``.
    graph : LoopyGraph
        From :func:`make_loopy_graph`, on the device of ``unary``.
    max_iter : int
        Sweeps at most.
    tol : float
        Stop when no max-normalised log-message moves by more than ``tol``.
    damping : float in [0, 1)
        ``new = (1 - damping) * update + damping * old`` (log space).
    check_every : int
        Test convergence every ``check_every`` updates (one host synchronisation each);
        0 never tests (exactly ``max_iter`` updates, no synchronisation).
    init_messages : Tensor of shape (2 M, K), optional
        Warm start (e.g. ``messages`` of an earlier call on nearby potentials).
    warn : bool
        Emit a ``ConvergenceWarning`` when the test ran and failed.

    Returns
    -------
    TRWResult
    """
    _check_potentials(unary, pairwise, graph)
    options = (*_check_options(max_iter, tol, damping, check_every), bool(warn))
    init = _check_init(init_messages, graph, unary.shape[1], unary.device)
    return _trw_core(unary, pairwise, graph, init, options)[0]


def _check_init(init, graph, k, device):
    if init is None:
        return None
    shape = (2 * graph.edges.shape[0], k)
    if not isinstance(init, torch.Tensor) or tuple(init.shape) != shape or init.device != device:
        raise ValueError(f"init_messages must be a tensor of shape {shape} on {device}")
    return init.detach()


class _TRWLogPartition(torch.autograd.Function):
    """TRW value, minus the score of ``labels`` when given, with the pseudo-marginals (minus the
    one-hot labelling) as its gradient: an explicit backward, no autograd graph inside."""

    @staticmethod
    def forward(ctx, unary, pairwise, graph, init, options, out, labels, reduction="none"):
        shared = pairwise.dim() == 2
        res, ctx.grad_data = _trw_core(unary, pairwise, graph, init, options,
                                       edge_marginals=not (shared and graph.replicas > 1))
        ctx.graph, ctx.labels, ctx.shared, ctx.reduction = graph, labels, shared, reduction
        ctx.edge_marginals = res.edge_marginals
        if out is not None:
            out.append(res)
        value = res.log_partition
        if labels is not None:
            score, ctx.pair = _labelling_score(unary, pairwise, graph, labels)   # forward runs without grad
            value = value - score
        if reduction == "none":
            return value
        return value.mean() if reduction == "mean" else value.sum()

    @staticmethod
    def backward(ctx, grad_out):
        tau, data, parts = ctx.grad_data
        g, labels = ctx.graph, ctx.labels
        grad_out = grad_out.to(tau.dtype)
        if ctx.reduction != "none":  # the reduction's backward, without an autograd node of its own
            grad_out = grad_out.expand(g.n_examples) / (g.n_examples if ctx.reduction == "mean" else 1)
        weight = grad_out.view(-1, g.replicas)              # (G, B): per example, replica-minor
        gu = gp = None
        if ctx.needs_input_grad[0]:
            gu = _from_layout(tau * (weight if weight.shape[0] == 1 else weight.index_select(0, g.node_example)))
            if labels is not None:
                gu.scatter_add_(1, labels[:, None], -grad_out[g.node_example][:, None])
        if ctx.needs_input_grad[1]:
            k = tau.shape[0]
            if ctx.shared and g.replicas > 1:
                gp = _shared_gradient(g, data, parts, weight[0], k)
            else:
                tau_e = ctx.edge_marginals
                edge_weight = grad_out[g.edge_example]
                gp = (tau_e.reshape(-1, k * k).T @ edge_weight).view(k, k) if ctx.shared else \
                    tau_e * edge_weight[:, None, None]
            if labels is not None:  # minus the one-hot pairs, summed over the edges for a shared score
                weight_e = grad_out[g.edge_example].neg_()
                gp = gp.reshape(-1).index_add(0, ctx.pair, weight_e).view(k, k) if ctx.shared else \
                    gp.view(-1, k * k).scatter_add(1, ctx.pair[:, None], weight_e[:, None]).view(-1, k, k)
        return gu, gp, None, None, None, None, None, None


def _shared_gradient(graph, data, parts, weight, k):
    """``sum_e w_e tau_e`` for a shared score on replicas, from the first message of every edge (in the
    internal order: on two colours, the first block): per message position ``p``, the weighted outer
    products ``sum_b w_b beta_pb a_pb^T`` (one batched matrix product) times the position's table, a
    ``[target, source]`` matrix, summed over positions by :attr:`MessageBlock.role`. ``beta`` (up to
    ``1 / tiny``) is scaled by its maximum per position first, so that the sums cannot overflow."""
    grad = weight.new_zeros(3, k * k)   # rows: first s -> t, first t -> s, not first (dropped)
    for block, d, (a, beta) in zip(graph.blocks, data, parts):
        if block.n_first == 0:
            continue
        scale = beta.amax(dim=0).amax(dim=1)                            # (n,)
        outer = torch.bmm((beta * (weight[None, :] / scale[:, None])).transpose(0, 1), a.permute(1, 2, 0))
        grad.index_add_(0, block.role, outer.mul_(d.tables).mul_(scale[:, None, None]).flatten(1))
    return grad[0].view(k, k).T + grad[1].view(k, k)


def trw_log_partition(unary: torch.Tensor, pairwise: torch.Tensor, graph: LoopyGraph, *,
                      max_iter: int = 200, tol: float = 1e-6, damping: float = 0.5, check_every: int = 5,
                      init_messages=None, warn: bool = True, out: list | None = None) -> torch.Tensor:
    """Differentiable TRW log-partition bound per example; its gradient is the pseudo-marginals.

    Parameters
    ----------
    unary, pairwise, graph, max_iter, tol, damping, check_every, init_messages, warn
        As in :func:`trw_infer`.
    out : list, optional
        When given, the :class:`TRWResult` of the forward pass is appended to it (for the
        messages, iteration count and residual).

    Returns
    -------
    log_z : Tensor of shape (n_examples,)
        In the compute dtype (float32 or wider).
    """
    unary, pairwise, init, settings = _prepare(unary, pairwise, graph, init_messages, max_iter, tol, damping,
                                               check_every, warn)
    with torch.autocast(unary.device.type, enabled=False):
        return _TRWLogPartition.apply(unary, pairwise, graph, init, settings, out, None)


def _prepare(unary, pairwise, graph, init_messages, max_iter, tol, damping, check_every, warn):
    """Validate; return the potentials in the compute dtype, the warm start and the core's settings."""
    _check_potentials(unary, pairwise, graph)
    settings = (*_check_options(max_iter, tol, damping, check_every), bool(warn))
    init = _check_init(init_messages, graph, unary.shape[1], unary.device)
    dtype = _compute_dtype(unary, pairwise)
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in (unary, pairwise)) + (init, settings)


def labelling_score(unary: torch.Tensor, pairwise: torch.Tensor, graph: LoopyGraph,
                    labels: torch.Tensor) -> torch.Tensor:
    """Score of a labelling per example, differentiable: ``sum_v unary[v, y_v] + sum_e pw[e, y_s, y_t]``.

    ``labels`` is a LongTensor ``(N,)`` on the device of ``unary``; values are checked
    on CPU only (on an accelerator the check would need a host synchronisation).
    """
    _check_potentials(unary, pairwise, graph)
    _check_labels(labels, graph, unary.shape[1])
    return _labelling_score(unary, pairwise, graph, labels)[0]


def _check_labels(labels, graph, k):
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or tuple(labels.shape) != (graph.n_nodes,):
        raise ValueError(f"labels must be a LongTensor of shape ({graph.n_nodes},)")
    if labels.device.type == "cpu" and labels.numel():
        low, high = torch.aminmax(labels)
        if int(low) < 0 or int(high) >= k:
            raise ValueError(f"labels must lie in 0..{k - 1}, got {int(low)}..{int(high)}")


def _labelling_score(unary, pairwise, graph, labels):
    """``(score per example, pair)`` with ``pair = y_s * K + y_t`` per edge (the flat pairwise entry)."""
    k = unary.shape[1]
    pair = labels[graph.edges[:, 0]].mul_(k).add_(labels[graph.edges[:, 1]])
    node = unary.gather(1, labels[:, None]).view(-1)
    flat = pairwise.reshape(-1, k * k)
    edge = flat.view(-1).take(pair) if pairwise.dim() == 2 else flat.gather(1, pair[:, None]).view(-1)
    return _sum_by_example(node, graph.node_example, graph) + _sum_by_example(
        edge.to(node.dtype), graph.edge_example, graph), pair


def _sum_by_example(values, example, graph):
    """Per-example sums of node or edge values (examples of equal sizes on replicas)."""
    if graph.replicas > 1:
        return values.view(graph.n_examples, values.shape[0] // graph.n_examples).sum(dim=1)
    return values.new_zeros(graph.n_examples).index_add_(0, example, values)


def trw_nll_loss(unary: torch.Tensor, pairwise: torch.Tensor, graph: LoopyGraph, labels: torch.Tensor, *,
                 reduction: str = "mean", max_iter: int = 200, tol: float = 1e-6, damping: float = 0.5,
                 check_every: int = 5, init_messages=None, warn: bool = True,
                 out: list | None = None) -> torch.Tensor:
    """TRW surrogate of the CRF negative log-likelihood, ``log Z_TRW - score(y)``, on any graph.

    With ``rho`` in the spanning-tree polytope (the default) and converged messages,
    ``log Z_TRW >= log Z >= score(y)``, so the loss is non-negative and upper-bounds the
    true NLL; on forests it is the exact NLL. Its gradient wrt the potentials is the
    TRW pseudo-marginals minus the one-hot truth.

    Parameters
    ----------
    unary, pairwise, graph
        As in :func:`trw_infer`.
    labels : LongTensor of shape (N,)
    reduction : {"mean", "sum", "none"}
        Over examples.
    max_iter, tol, damping, check_every, init_messages, warn, out
        As in :func:`trw_log_partition`.

    Returns
    -------
    loss : Tensor
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    unary, pairwise, init, settings = _prepare(unary, pairwise, graph, init_messages, max_iter, tol, damping,
                                               check_every, warn)
    _check_labels(labels, graph, unary.shape[1])
    with torch.autocast(unary.device.type, enabled=False):
        return _TRWLogPartition.apply(unary, pairwise, graph, init, settings, out, labels, reduction)
