"""Tree-reweighted (TRW) sum-product on any graph, batched, in torch, on the potentials' device.

The same algorithm as the Numba path ``crflearn.inference.infer(..., method="trw")``
(Wainwright, Jaakkola & Willsky 2005): log-space messages over a flat edge list with
per-example offsets (the :class:`~crflearn.graphs.GraphBatch` layout), edge appearance
probabilities ``rho`` of the uniform spanning-tree distribution, geometric damping, and
the TRW variational value, an upper bound on the log-partition at the fixed point.
Messages are updated in parallel (all at once, damped) instead of the Numba sweep
order; both converge to the same fixed point, where the results agree to the tolerance.

Messages live in a ``(2 M, K)`` tensor: row ``2 e`` is the message along
``edges[e, 0] -> edges[e, 1]`` (a function of the target's state), row ``2 e + 1`` the
reverse, as in :mod:`crflearn._kernels.inference_loopy`.

Differentiation: :func:`trw_log_partition` has an explicit backward. The TRW value is
``max_tau <theta, tau> + H_rho(tau)`` over the local polytope, so by Danskin's theorem its
gradient is the pseudo-marginals ``tau`` at the fixed point (exact once converged): no
unrolled iterations are stored. Marginals returned by :func:`trw_infer` are detached.

Precision: under autocast or with half-precision inputs the messages run in float32
(``torch.promote_types(dtype, float32)``), never in half precision.

Host synchronisation: the only device-to-host transfer is the convergence test, every
``check_every`` iterations; ``check_every=0`` runs exactly ``max_iter`` iterations with
no synchronisation and returns the last residual as a device tensor (the caller checks
it when convenient, e.g. once per epoch).

The CUDA path is implemented (and has a test that fails on any host synchronisation) but
has not been run or timed: no GPU was available when it was written.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .._validation import check_batch_structure, check_edges, check_int, check_nonnegative

__all__ = ["LoopyGraph", "TRWResult", "make_loopy_graph", "trw_infer", "trw_log_partition", "trw_nll_loss",
           "labelling_score"]

_REDUCTIONS = ("sum", "mean", "none")


class LoopyGraph(NamedTuple):
    """Structure of a flat batch of graphs on one device (build it with :func:`make_loopy_graph`).

    Attributes
    ----------
    edges : LongTensor (M, 2)
        Global node indices.
    src, dst : LongTensor (2 M,)
        Source and target node of every message.
    rho : Tensor (M,) float64
        Edge appearance probabilities.
    node_example, edge_example : LongTensor (N,), (M,)
        Example index of every node and edge.
    n_nodes, n_examples : int
    """

    edges: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    rho: torch.Tensor
    node_example: torch.Tensor
    edge_example: torch.Tensor
    n_nodes: int
    n_examples: int


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
        Parallel message updates run.
    residual : Tensor (0-dim)
        Largest change of a (max-normalised) log-message in the last update.
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


def make_loopy_graph(edges, n_nodes: int, node_offsets=None, edge_offsets=None, *, rho=None,
                     device=None) -> LoopyGraph:
    """Validate a (flat batch of) graph(s) once and put its structure on ``device``.

    Parameters
    ----------
    edges : array-like of shape (M, 2)
        Global node indices; no self-loops or duplicate edges.
    n_nodes : int
    node_offsets, edge_offsets : array-like of shape (n_examples + 1,), optional
        CSR offsets of the examples (omit both for one graph).
    rho : array-like of shape (M,), optional
        Edge appearance probabilities in (0, 1]; default: those of the uniform
        spanning-tree distribution, as the Numba TRW uses
        (:func:`crflearn.inference.edge_appearance_probabilities`). All ones is loopy BP.
    device : torch.device or str, optional

    Returns
    -------
    LoopyGraph
    """
    n_nodes = check_int(n_nodes, "n_nodes")
    if (node_offsets is None) != (edge_offsets is None):
        raise ValueError("give both node_offsets and edge_offsets, or neither")
    if isinstance(edges, torch.Tensor):
        edges = edges.detach().cpu().numpy()
    if node_offsets is None:
        e = check_edges(edges, n_nodes, "edges")
        no = np.array([0, n_nodes], dtype=np.int64)
        eo = np.array([0, len(e)], dtype=np.int64)
    else:
        e, no, eo = check_batch_structure(edges, node_offsets, edge_offsets, n_nodes)
    if rho is None:
        from ..inference.schedule import edge_appearance_probabilities

        rho_np = edge_appearance_probabilities(e, n_nodes)
    else:
        rho_np = np.asarray(rho, dtype=np.float64).reshape(-1)
        if rho_np.shape != (len(e),) or not np.all((rho_np > 0) & (rho_np <= 1)):
            raise ValueError(f"rho must hold {len(e)} values in (0, 1], got shape {rho_np.shape}")
    m = len(e)
    msg = np.stack([e, e[:, ::-1]], axis=1).reshape(2 * m, 2)
    lengths, n_edges = np.diff(no), np.diff(eo)
    device = torch.device("cpu") if device is None else torch.device(device)
    return LoopyGraph(
        edges=_put(e, torch.long, device), src=_put(msg[:, 0], torch.long, device),
        dst=_put(msg[:, 1], torch.long, device), rho=_put(rho_np, torch.float64, device),
        node_example=_put(np.repeat(np.arange(len(lengths)), lengths), torch.long, device),
        edge_example=_put(np.repeat(np.arange(len(n_edges)), n_edges), torch.long, device),
        n_nodes=n_nodes, n_examples=len(lengths))


def _put(array, dtype, device) -> torch.Tensor:
    """A NumPy array as a tensor on ``device``; to CUDA through pinned memory, non-blocking."""
    t = torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


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
def _beliefs(unary, logm, graph, rho_msg):
    """``unary[v] + sum_{e -> v} rho_e * logm[e -> v]`` for every node."""
    return unary.index_add(0, graph.dst, logm * rho_msg[:, None])


def _reverse(logm):
    """Row ``j`` of the result is the message opposite to row ``j`` (``2 e <-> 2 e + 1``)."""
    return logm.view(-1, 2, logm.shape[1]).flip(1).reshape(logm.shape)


def _update(logm, unary, exp_pw, col_max, graph, rho_msg, damping):
    """One parallel (damped) TRW update of every message; max-normalised.

    ``new[y] = log sum_x exp(cav[x] + pw[x, y] / rho)`` evaluated as a product in exp space,
    ``log sum_x exp_pw[y, x] * exp(cav[x] - max cav) + col_max[y]`` (a batched matrix-vector
    product; ``exp_pw[y, x] = exp(pw[x, y] / rho - col_max[y])``; the row constant
    ``max cav`` cancels in the normalisation). The sum is at least the term of the best
    ``x``; it is floored at the smallest normal number, so a term more than ~87 (float32)
    or ~708 (float64) nats below its column maximum cannot produce ``-inf``.
    """
    cav = _beliefs(unary, logm, graph, rho_msg)[graph.src] - _reverse(logm)
    a = (cav - cav.amax(dim=1, keepdim=True)).exp()
    total = torch.bmm(exp_pw, a.unsqueeze(2)).squeeze(2).clamp_min(torch.finfo(a.dtype).tiny)
    new = total.log() + col_max
    if damping > 0.0:
        # (1 - d) * new + d * old; normalising ``new`` first would only shift each row by a constant
        new = torch.lerp(new, logm, damping)
    return new - new.amax(dim=1, keepdim=True)


def _message_tables(pairwise, rho):
    """``exp_pw[j, y, x] = exp((pw_j[x, y] - top_j[y]) / rho_j)`` and ``col_max[j, y] = top_j[y] / rho_j``
    for every message ``j`` (``pw_j`` oriented [source, target], ``top_j[y] = max_x pw_j[x, y]``;
    ``max_x pw / rho = top / rho`` as ``rho > 0``): two passes over the ``(2 M, K, K)`` table."""
    m, k = rho.shape[0], pairwise.shape[-1]
    inv = 1.0 / rho
    if pairwise.dim() == 2:
        oriented = torch.stack([pairwise, pairwise.T])[None]                     # (1, 2, K, K)
    else:
        oriented = torch.stack([pairwise, pairwise.transpose(1, 2)], dim=1)      # (M, 2, K, K)
    top = oriented.amax(dim=2)                                                    # (., 2, K)
    gap = (oriented - top[:, :, None, :]).transpose(2, 3).contiguous()           # [target, source], <= 0
    exp_pw = torch.exp(inv[:, None] * gap.reshape(gap.shape[0], -1)).reshape(2 * m, k, k)
    col_max = (inv[:, None, None] * top).reshape(2 * m, k)
    return exp_pw, col_max


def _run_messages(unary, pairwise, graph, init, max_iter, tol, damping, check_every):
    """Iterate to convergence; return ``(logm, n_iter, residual, converged)``."""
    m, k = graph.edges.shape[0], unary.shape[1]
    rho = graph.rho.to(unary.dtype)
    rho_msg = rho.repeat_interleave(2)
    exp_pw, col_max = _message_tables(pairwise, rho)
    logm = unary.new_zeros(2 * m, k) if init is None else init.to(unary.dtype)
    residual = unary.new_zeros(())
    converged = None if check_every == 0 else (m == 0)
    n_iter = 0
    while m and n_iter < max_iter:
        new = _update(logm, unary, exp_pw, col_max, graph, rho_msg, damping)
        n_iter += 1
        if check_every and (n_iter % check_every == 0 or n_iter == max_iter):
            residual = (new - logm).abs().amax()
            converged = bool(residual <= tol)  # the one host synchronisation
            logm = new
            if converged:
                break
        elif not check_every and n_iter == max_iter:
            residual = (new - logm).abs().amax()
            logm = new
        else:
            logm = new
    return logm, n_iter, residual, converged


def _marginals_and_value(unary, pairwise, graph, logm):
    """Pseudo-marginals and the TRW variational value per example.

    value = sum_v <tau_v, unary_v - log tau_v> + sum_e <tau_e, pw_e - rho_e (log tau_e - log tau_s - log tau_t)>,
    with the ``log tau_s`` / ``log tau_t`` terms taken through the row / column sums of ``tau_e``.
    """
    rho = graph.rho.to(unary.dtype)
    m, k = graph.edges.shape[0], unary.shape[1]
    belief = _beliefs(unary, logm, graph, rho.repeat_interleave(2))
    log_tau = torch.log_softmax(belief, dim=1)
    s, t = graph.edges[:, 0], graph.edges[:, 1]
    cs = belief[s] - logm[1::2]      # cavity of s: without the message t -> s
    ct = belief[t] - logm[0::2]      # cavity of t: without the message s -> t
    pw_flat = pairwise.reshape(-1, k * k)  # one row (shared) or one per edge
    table = (pw_flat / rho[:, None]).view(m, k, k) + cs[:, :, None]
    table += ct[:, None, :]
    table -= table.flatten(1).amax(dim=1)[:, None, None]
    tau_e = table.exp()
    norm = tau_e.flatten(1).sum(dim=1)
    tau_e /= norm[:, None, None]
    tau = log_tau.exp()
    node_value = (tau * (unary - log_tau)).sum(dim=1)
    # log tau_e = table - log(norm); <tau_e, log tau_e> = <tau_e, table> - log(norm)
    entropy_term = (tau_e * table).flatten(1).sum(dim=1) - norm.log()
    cross = (tau_e.sum(dim=2) * log_tau[s]).sum(dim=1) + (tau_e.sum(dim=1) * log_tau[t]).sum(dim=1)
    if pairwise.dim() == 2:
        energy = tau_e.flatten(1) @ pw_flat[0]
    else:
        energy = (tau_e.flatten(1) * pw_flat).sum(dim=1)
    edge_value = energy - rho * (entropy_term - cross)
    value = unary.new_zeros(graph.n_examples).index_add(0, graph.node_example, node_value)
    value = value.index_add(0, graph.edge_example, edge_value)
    return tau, tau_e, value


def _trw_core(unary, pairwise, graph, init, options):
    """Validated inputs -> (TRWResult in the compute dtype), no autograd."""
    max_iter, tol, damping, check_every, warn = options
    dtype = _compute_dtype(unary, pairwise)
    with torch.no_grad(), torch.autocast(unary.device.type, enabled=False):
        u, p = unary.detach().to(dtype), pairwise.detach().to(dtype)
        logm, n_iter, residual, converged = _run_messages(u, p, graph, init, max_iter, tol, damping,
                                                          check_every)
        tau, tau_e, value = _marginals_and_value(u, p, graph, logm)
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
        Parallel message updates at most.
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
    """TRW value with the pseudo-marginals as its gradient (explicit backward)."""

    @staticmethod
    def forward(ctx, unary, pairwise, graph, init, options, out):
        res = _trw_core(unary, pairwise, graph, init, options)
        ctx.graph = graph
        ctx.shared = pairwise.dim() == 2
        ctx.save_for_backward(res.node_marginals, res.edge_marginals)
        if out is not None:
            out.append(res)
        return res.log_partition

    @staticmethod
    def backward(ctx, grad_out):
        tau, tau_e = ctx.saved_tensors
        g = ctx.graph
        grad_out = grad_out.to(tau.dtype)
        gu = tau * grad_out[g.node_example][:, None] if ctx.needs_input_grad[0] else None
        gp = None
        if ctx.needs_input_grad[1]:
            gp = tau_e * grad_out[g.edge_example][:, None, None]
            if ctx.shared:
                gp = gp.sum(dim=0)
        return gu, gp, None, None, None, None


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
    _check_potentials(unary, pairwise, graph)
    options = (*_check_options(max_iter, tol, damping, check_every), bool(warn))
    init = _check_init(init_messages, graph, unary.shape[1], unary.device)
    dtype = _compute_dtype(unary, pairwise)
    with torch.autocast(unary.device.type, enabled=False):
        return _TRWLogPartition.apply(unary.to(dtype), pairwise.to(dtype), graph, init, options, out)


def labelling_score(unary: torch.Tensor, pairwise: torch.Tensor, graph: LoopyGraph,
                    labels: torch.Tensor) -> torch.Tensor:
    """Score of a labelling per example, differentiable: ``sum_v unary[v, y_v] + sum_e pw[e, y_s, y_t]``.

    ``labels`` is a LongTensor ``(N,)`` on the device of ``unary``; values are checked
    on CPU only (on an accelerator the check would need a host synchronisation).
    """
    _check_potentials(unary, pairwise, graph)
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or tuple(labels.shape) != (graph.n_nodes,):
        raise ValueError(f"labels must be a LongTensor of shape ({graph.n_nodes},)")
    k = unary.shape[1]
    if labels.device.type == "cpu" and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}, got {int(labels.min())}..{int(labels.max())}")
    node = unary.gather(1, labels[:, None]).squeeze(1)
    ys, yt = labels[graph.edges[:, 0]], labels[graph.edges[:, 1]]
    if pairwise.dim() == 2:
        edge = pairwise[ys, yt]
    else:
        edge = pairwise.flatten(1).gather(1, (ys * k + yt)[:, None]).squeeze(1)
    score = unary.new_zeros(graph.n_examples).index_add(0, graph.node_example, node)
    return score.index_add(0, graph.edge_example, edge.to(score.dtype))


def trw_nll_loss(unary: torch.Tensor, pairwise: torch.Tensor, graph: LoopyGraph, labels: torch.Tensor, *,
                 reduction: str = "mean", **options) -> torch.Tensor:
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
    **options
        ``max_iter``, ``tol``, ``damping``, ``check_every``, ``init_messages``, ``warn``,
        ``out`` of :func:`trw_log_partition`.

    Returns
    -------
    loss : Tensor
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    log_z = trw_log_partition(unary, pairwise, graph, **options)
    nll = log_z - labelling_score(unary.to(log_z.dtype), pairwise.to(log_z.dtype), graph, labels)
    if reduction == "mean":
        return nll.mean()
    return nll.sum() if reduction == "sum" else nll

