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

Layout: messages are held as ``(K, 2 M)`` (states first, so every reduction over states
is vectorised across messages), grouped by colour; the public ``(2 M, K)`` row order
(row ``2 e`` is the message along ``edges[e, 0] -> edges[e, 1]``, row ``2 e + 1`` the
reverse, as in :mod:`crflearn._kernels.inference_loopy`) is used only at the interface.
For a shared ``(K, K)`` score the exponential tables are computed once per distinct
``rho`` value and orientation, then gathered per message.

Differentiation: :func:`trw_log_partition` and :func:`trw_nll_loss` have an explicit
backward. The TRW value is ``max_tau <theta, tau> + H_rho(tau)`` over the local polytope,
so by Danskin's theorem its gradient is the pseudo-marginals ``tau`` at the fixed point
(exact once converged): no unrolled iterations are stored, and the loss adds no autograd
graph of its own. Marginals returned by :func:`trw_infer` are detached.

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
    edge_marginals : Tensor (M, K, K)
        ``edge_marginals[e, a, b]`` for ``y_s = a, y_t = b``, ``edges[e] = (s, t)``.
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
    """Per-call data of one :class:`MessageBlock`."""

    unary: torch.Tensor    # (K, n_sources): unary scores of the block's sources
    rho: torch.Tensor      # (n,): rho of each message's edge
    rows: tuple            # K tensors (K, n): rows[x][y, j] = exp((pw_j[x, y] - top_j[y]) / rho_j)
    col_max: torch.Tensor  # (K, n): top_j[y] / rho_j, with top_j[y] = max_x pw_j[x, y]


def _shared_tables(pairwise, rho_values):
    """Exponential tables of a shared ``(K, K)`` score for both orientations and every distinct rho:
    ``(K * K, 2 n_rho)`` and ``(K, 2 n_rho)``, column ``backward * n_rho + group``."""
    k = pairwise.shape[0]
    oriented = torch.stack([pairwise, pairwise.T])                      # (2, K_source, K_target)
    top = oriented.amax(dim=1)                                          # (2, K_target)
    inv = (1.0 / rho_values)[None, :, None, None]
    exp_pw = ((oriented - top[:, None, :])[:, None] * inv).exp_()      # (2, n_rho, K, K)
    col_max = top[:, None, :] * inv[..., 0]                             # (2, n_rho, K)
    # contiguous: a column gather (index_select along dim 1) from a transposed view is ~3x slower
    return (exp_pw.permute(2, 3, 0, 1).reshape(k * k, -1).contiguous(),
            col_max.permute(2, 0, 1).reshape(k, -1).contiguous())


def _block_tables(pairwise, block, rho):
    """Exponential tables ``(K, K, n)`` and ``(K, n)`` of a block's messages for per-edge scores
    (views of ``(n, ...)`` storage: transposing copies of such narrow tensors are slow in torch)."""
    pw = pairwise.index_select(0, block.edge)
    pw = torch.where(block.backward[:, None, None], pw.transpose(1, 2), pw)   # [source, target]
    top = pw.amax(dim=1)                                                       # (n, K_target)
    exp_pw = ((pw - top[:, None, :]) / rho[:, None, None]).exp_()
    return exp_pw.permute(1, 2, 0), (top / rho[:, None]).T


def _block_data(unary_t, pairwise, graph):
    """The :class:`_BlockData` of every block (``unary_t`` is ``(K, N)``)."""
    k = unary_t.shape[0]
    rho = graph.rho.to(unary_t.dtype)
    shared = _shared_tables(pairwise, graph.rho_values.to(unary_t.dtype)) if pairwise.dim() == 2 else None
    out = []
    for block in graph.blocks:
        rho_b = rho.index_select(0, block.edge)
        if shared is None:
            exp_pw, col_max = _block_tables(pairwise, block, rho_b)
        else:
            exp_pw = shared[0].index_select(1, block.table).view(k, k, -1)
            col_max = shared[1].index_select(1, block.table)
        out.append(_BlockData(unary_t.index_select(1, block.sources), rho_b, exp_pw.unbind(0), col_max))
    return out


def _block_update(logm, block, data, damping, want_residual):
    """Update the messages of one block in place (they do not depend on each other).

    ``new[y] = log sum_x exp(cav[x] + pw[x, y] / rho)`` evaluated as a product in exp space,
    ``log sum_x exp_pw[x, y] * exp(cav[x] - max cav) + col_max[y]``: a multiply-add over
    ``x`` vectorised over the block (the row constant ``max cav`` cancels in the
    normalisation). The sum is at least the term of the best ``x``; it is floored at the
    smallest normal number, so a term more than ~87 (float32) or ~708 (float64) nats below
    its column maximum cannot produce ``-inf``. Returns the largest change, or None.
    """
    r = block.reverse_start   # the messages into the sources from the targets:
    into = logm[:, r:r + block.stop - block.start] if r >= 0 else logm.index_select(1, block.reverse)
    belief = data.unary.index_add(1, block.source_index, into * data.rho)
    cav = belief.index_select(1, block.source_index).sub_(into)
    a = cav.sub_(cav.amax(dim=0)).exp_()
    total = data.rows[0] * a[0]
    for x in range(1, len(data.rows)):
        total.addcmul_(data.rows[x], a[x])
    new = total.clamp_min_(torch.finfo(a.dtype).tiny).log_().add_(data.col_max)
    old = logm[:, block.start:block.stop]
    if damping > 0.0:
        # (1 - d) * new + d * old; normalising ``new`` first would only shift each column by a constant
        new = torch.lerp(new, old, damping)
    new.sub_(new.amax(dim=0))
    residual = (new - old).abs().amax() if want_residual else None
    old.copy_(new)
    return residual


def _run_messages(unary_t, pairwise, graph, init, max_iter, tol, damping, check_every):
    """Sweep to convergence (``unary_t`` is ``(K, N)``); return ``(logm (K, 2 M) internal order, n_iter,
    residual, converged)``."""
    k, m = unary_t.shape[0], graph.edges.shape[0]
    data = _block_data(unary_t, pairwise, graph)
    if init is None:
        logm = unary_t.new_zeros(k, 2 * m)
    else:
        logm = init.to(unary_t.dtype).T.index_select(1, graph.internal)
    residual = unary_t.new_zeros(())
    converged = None if check_every == 0 else (m == 0)
    n_iter = 0
    while m and n_iter < max_iter:
        n_iter += 1
        last = n_iter == max_iter
        check = (n_iter % check_every == 0 or last) if check_every else last
        changes = [_block_update(logm, block, d, damping, check) for block, d in zip(graph.blocks, data)]
        if check:
            residual = torch.stack(changes).amax()
            if check_every:
                converged = bool(residual <= tol)  # the one host synchronisation
                if converged:
                    break
    return logm, n_iter, residual, converged


def _marginals_and_value(unary_t, pairwise, graph, logm):
    """Pseudo-marginals ``tau`` (K, N), ``tau_e`` (K, K, M) and the TRW variational value per example.

    With the cavities ``cs = b_s - m_{t->s}``, ``ct = b_t - m_{s->t}`` and the edge table
    ``T[x, y] = cs[x] + pw[x, y] / rho + ct[y]`` (``tau_e = softmax T``, ``L_e = logsumexp T``), the value
    ``sum_v <tau_v, unary_v - log tau_v> + sum_e <tau_e, pw_e - rho_e (log tau_e - log tau_s - log tau_t)>``
    reduces edge-wise to ``rho_e (L_e - <tau_e 1, cs - log tau_s> - <tau_e^T 1, ct - log tau_t>)``: the
    energy ``<tau_e, pw_e>`` cancels. States lead (the ``(K, ...)`` layout), so every reduction over
    states is vectorised across nodes and edges.
    """
    rho = graph.rho.to(unary_t.dtype)
    s, t = graph.edges[:, 0], graph.edges[:, 1]
    to_t = logm.index_select(1, graph.forward)      # (K, M): message s -> t
    to_s = logm.index_select(1, graph.backward)     # (K, M): message t -> s
    belief = unary_t.index_add(1, t, to_t * rho).index_add_(1, s, to_s * rho)
    log_tau = torch.log_softmax(belief, dim=0)
    cs = belief.index_select(1, s).sub_(to_s)
    ct = belief.index_select(1, t).sub_(to_t)
    pw = pairwise[:, :, None] if pairwise.dim() == 2 else pairwise.permute(1, 2, 0)
    table = pw * (1.0 / rho)   # (K, K, M); per-edge scores keep their (M, K, K) storage
    table += cs[:, None, :]
    table += ct[None, :, :]
    top = table.amax(dim=(0, 1))
    tau_e = table.sub_(top).exp_()
    norm = tau_e.sum(dim=(0, 1))
    tau_e /= norm
    cs -= log_tau.index_select(1, s)
    ct -= log_tau.index_select(1, t)
    edge_value = rho * (top + norm.log() - (tau_e.sum(dim=1) * cs).sum(dim=0) - (tau_e.sum(dim=0) * ct).sum(dim=0))
    tau = log_tau.exp()
    node_value = (tau * (unary_t - log_tau)).sum(dim=0)
    value = unary_t.new_zeros(graph.n_examples).index_add_(0, graph.node_example, node_value)
    return tau, tau_e, value.index_add_(0, graph.edge_example, edge_value)


def _trw_core(unary, pairwise, graph, init, options):
    """Validated inputs -> (TRWResult in the compute dtype), no autograd."""
    max_iter, tol, damping, check_every, warn = options
    dtype = _compute_dtype(unary, pairwise)
    with torch.no_grad(), torch.autocast(unary.device.type, enabled=False):
        u, p = unary.detach().to(dtype).T.contiguous(), pairwise.detach().to(dtype)   # u: (K, N)
        logm, n_iter, residual, converged = _run_messages(u, p, graph, init, max_iter, tol, damping,
                                                          check_every)
        tau, tau_e, value = _marginals_and_value(u, p, graph, logm)
        logm = logm.index_select(1, graph.external).T  # external order (2 M, K), a view
        tau, tau_e = tau.T, tau_e.permute(2, 0, 1)  # (N, K) and (M, K, K) views
    if warn and converged is False:
        warnings.warn(f"TRW message passing did not converge in max_iter={max_iter} iterations (largest "
                      f"message change {float(residual):.3e} > tol={tol:g}); the marginals and the bound are "
                      "approximate: increase max_iter or damping", ConvergenceWarning, stacklevel=3)
    return TRWResult(tau, tau_e, value, logm, n_iter, residual, converged)


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
    return _trw_core(unary, pairwise, graph, init, options)


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
    def forward(ctx, unary, pairwise, graph, init, options, out, labels):
        res = _trw_core(unary, pairwise, graph, init, options)
        ctx.graph, ctx.labels, ctx.shared = graph, labels, pairwise.dim() == 2
        ctx.save_for_backward(res.node_marginals, res.edge_marginals)
        if out is not None:
            out.append(res)
        if labels is None:
            return res.log_partition
        return res.log_partition - _labelling_score(unary.detach(), pairwise.detach(), graph, labels)

    @staticmethod
    def backward(ctx, grad_out):
        tau, tau_e = ctx.saved_tensors
        g, labels = ctx.graph, ctx.labels
        grad_out = grad_out.to(tau.dtype)
        gu = gp = None
        if ctx.needs_input_grad[0]:
            weight = grad_out[g.node_example]
            gu = tau * weight[:, None]
            if labels is not None:
                gu.scatter_add_(1, labels[:, None], -weight[:, None])
        if ctx.needs_input_grad[1]:
            gp = _pairwise_gradient(tau_e, grad_out[g.edge_example], g, labels, ctx.shared)
        return gu, gp, None, None, None, None, None


def _pairwise_gradient(tau_e, weight, graph, labels, shared):
    """``sum_e weight_e (tau_e - onehot(y_s, y_t))`` for a shared score, else the per-edge terms
    (``tau_e`` is an ``(M, K, K)`` view of ``(K, K, M)`` storage; no onehot term without labels)."""
    m, k = tau_e.shape[0], tau_e.shape[1]
    if shared:  # one matrix-vector product over the (K, K, M) storage
        gp = tau_e.permute(1, 2, 0).reshape(k * k, m) @ weight
        if labels is not None:
            gp.index_add_(0, labels[graph.edges[:, 0]] * k + labels[graph.edges[:, 1]], -weight)
        return gp.view(k, k)
    gp = tau_e * weight[:, None, None]
    if labels is not None:
        rows = torch.arange(m, device=gp.device)
        gp.index_put_((rows, labels[graph.edges[:, 0]], labels[graph.edges[:, 1]]), -weight, accumulate=True)
    return gp


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
    return unary.to(dtype), pairwise.to(dtype), init, settings


def labelling_score(unary: torch.Tensor, pairwise: torch.Tensor, graph: LoopyGraph,
                    labels: torch.Tensor) -> torch.Tensor:
    """Score of a labelling per example, differentiable: ``sum_v unary[v, y_v] + sum_e pw[e, y_s, y_t]``.

    ``labels`` is a LongTensor ``(N,)`` on the device of ``unary``; values are checked
    on CPU only (on an accelerator the check would need a host synchronisation).
    """
    _check_potentials(unary, pairwise, graph)
    _check_labels(labels, graph, unary.shape[1])
    return _labelling_score(unary, pairwise, graph, labels)


def _check_labels(labels, graph, k):
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or tuple(labels.shape) != (graph.n_nodes,):
        raise ValueError(f"labels must be a LongTensor of shape ({graph.n_nodes},)")
    if labels.device.type == "cpu" and labels.numel():
        low, high = torch.aminmax(labels)
        if int(low) < 0 or int(high) >= k:
            raise ValueError(f"labels must lie in 0..{k - 1}, got {int(low)}..{int(high)}")


def _labelling_score(unary, pairwise, graph, labels):
    k = unary.shape[1]
    node = unary.gather(1, labels[:, None]).squeeze(1)
    ys, yt = labels[graph.edges[:, 0]], labels[graph.edges[:, 1]]
    if pairwise.dim() == 2:
        edge = pairwise[ys, yt]
    else:
        edge = pairwise.flatten(1).gather(1, (ys * k + yt)[:, None]).squeeze(1)
    score = unary.new_zeros(graph.n_examples).index_add(0, graph.node_example, node)
    return score.index_add(0, graph.edge_example, edge.to(score.dtype))


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
        nll = _TRWLogPartition.apply(unary, pairwise, graph, init, settings, out, labels)
    if reduction == "mean":
        return nll.mean()
    return nll.sum() if reduction == "sum" else nll
