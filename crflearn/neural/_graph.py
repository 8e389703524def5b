"""Structured losses on any graph, backed by the NumPy/Numba inference of :mod:`crflearn.inference`.

Potentials follow the package convention (``docs/architecture.md``): ``unary``
``(N, K)`` scores, ``pairwise`` ``(K, K)`` shared or ``(E, K, K)`` per edge with
``pairwise[e, a, b]`` scoring ``y_s = a, y_t = b`` for ``edges[e] = (s, t)``.
A batch of graphs is one graph with several connected components (global node
indices, as in :class:`~crflearn.graphs.GraphBatch`); every loss here is
separable over components, so the loss of a batch is the sum of the losses of
its examples.

Inference runs on CPU in float64; tensors on another device are copied there
and the gradients copied back.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["GiniRelaxedLoss", "gini_relaxed_loss", "graph_hinge_loss", "graph_score"]


def _check_graph(unary, pairwise, edges, labels):
    """Validate torch potentials, edges and labels; return ``edges`` and ``labels`` as long tensors."""
    if not isinstance(unary, torch.Tensor) or not unary.is_floating_point():
        raise TypeError(f"unary must be a floating point torch.Tensor (N, K), got {type(unary).__name__}")
    if unary.dim() != 2 or unary.shape[0] == 0 or unary.shape[1] == 0:
        raise ValueError(f"unary must have shape (n_nodes, n_states) with both > 0, got {tuple(unary.shape)}")
    n, k = unary.shape
    if isinstance(edges, torch.Tensor):
        edges_np = edges.detach().cpu().numpy()
    else:
        edges_np = np.asarray(edges)
    if edges_np.size == 0:
        edges_np = np.zeros((0, 2), dtype=np.int64)
    if edges_np.dtype == object or not np.issubdtype(edges_np.dtype, np.integer):
        raise TypeError(f"edges must hold integer node indices, got dtype {edges_np.dtype}")
    if edges_np.ndim != 2 or edges_np.shape[1] != 2:
        raise ValueError(f"edges must have shape (n_edges, 2), got {edges_np.shape}")
    if edges_np.size and (edges_np.min() < 0 or edges_np.max() >= n):
        raise ValueError(f"edges refer to nodes outside 0..{n - 1}")
    n_edges = edges_np.shape[0]
    if not isinstance(pairwise, torch.Tensor) or not pairwise.is_floating_point():
        raise TypeError(f"pairwise must be a floating point torch.Tensor, got {type(pairwise).__name__}")
    if tuple(pairwise.shape) not in ((k, k), (n_edges, k, k)):
        raise ValueError(f"pairwise must have shape ({k}, {k}) or ({n_edges}, {k}, {k}), "
                         f"got {tuple(pairwise.shape)}")
    if pairwise.device != unary.device:
        raise ValueError(f"pairwise is on {pairwise.device} but unary is on {unary.device}")
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.dtype == object or not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels must hold integer labels, got dtype {lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}, got values {lab.min()}..{lab.max()}")
    return np.ascontiguousarray(edges_np, dtype=np.int64), np.ascontiguousarray(lab, dtype=np.int64)


def _check_offsets(node_offsets, edge_offsets, n_nodes, n_edges):
    if (node_offsets is None) != (edge_offsets is None):
        raise ValueError("give both node_offsets and edge_offsets, or neither")
    if node_offsets is None:
        return None, None
    out = []
    for name, offsets, total in (("node_offsets", node_offsets, n_nodes), ("edge_offsets", edge_offsets, n_edges)):
        arr = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets)
        if arr.ndim != 1 or arr.size < 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be a 1-D integer array of length n_examples + 1")
        if arr[0] != 0 or arr[-1] != total or np.any(np.diff(arr) < 0):
            raise ValueError(f"{name} must increase from 0 to {total}, got {arr.tolist()[:6]}...")
        out.append(arr.astype(np.int64))
    if out[0].size != out[1].size:
        raise ValueError("node_offsets and edge_offsets must have the same length")
    return out


def _true_score(unary, pairwise, edges_t, labels_t):
    """Per-node and per-edge scores of the labeling (torch, differentiable)."""
    node = unary.gather(1, labels_t.unsqueeze(1)).squeeze(1)
    if edges_t.shape[0] == 0:
        return node, unary.new_zeros(0)
    ys, yt = labels_t[edges_t[:, 0]], labels_t[edges_t[:, 1]]
    if pairwise.dim() == 2:
        edge = pairwise[ys, yt]
    else:
        edge = pairwise[torch.arange(edges_t.shape[0], device=unary.device), ys, yt]
    return node, edge


def graph_score(unary: torch.Tensor, pairwise: torch.Tensor, edges, labels,
                node_offsets=None, edge_offsets=None) -> torch.Tensor:
    """Score ``sum_v unary[v, y_v] + sum_e pairwise[e, y_s, y_t]`` of a labeling.

    Parameters
    ----------
    unary : Tensor of shape (N, K)
    pairwise : Tensor of shape (K, K) or (E, K, K)
    edges : array-like or LongTensor of shape (E, 2)
        Global node indices.
    labels : array-like or LongTensor of shape (N,)
    node_offsets, edge_offsets : array-like of shape (n_examples + 1,), optional
        When given, return one score per example.

    Returns
    -------
    score : Tensor, scalar or of shape (n_examples,)
        Differentiable in ``unary`` and ``pairwise``.
    """
    edges_np, lab_np = _check_graph(unary, pairwise, edges, labels)
    node_off, edge_off = _check_offsets(node_offsets, edge_offsets, unary.shape[0], edges_np.shape[0])
    dev = unary.device
    node, edge = _true_score(unary, pairwise, torch.as_tensor(edges_np, device=dev),
                             torch.as_tensor(lab_np, device=dev))
    if node_off is None:
        return node.sum() + edge.sum()
    n_ex = node_off.size - 1
    node_ex = torch.as_tensor(np.repeat(np.arange(n_ex), np.diff(node_off)), device=dev)
    edge_ex = torch.as_tensor(np.repeat(np.arange(n_ex), np.diff(edge_off)), device=dev)
    out = unary.new_zeros(n_ex).index_add(0, node_ex, node)
    return out.index_add(0, edge_ex, edge) if edge.numel() else out


def _gini_infer():
    try:
        from ..inference.gini import gini_infer
    except ImportError as exc:
        raise ImportError("the Gini-relaxed loss needs crflearn.inference.gini.gini_infer, "
                          f"which could not be imported ({exc})") from exc
    return gini_infer


class GiniRelaxedLoss(torch.autograd.Function):
    """Gini-relaxed structured loss of the IDAL surrogate, as an autograd function.

    For potentials ``theta = (unary, pairwise)`` and true labels ``y``::

        loss(theta) = max_{mu in L} <theta, mu> + kappa * sum_c Gini(mu_c)  -  <theta, onehot(y)>

    where ``L`` is the local polytope of the graph and ``Gini(p) = 1 - ||p||^2``
    is summed over node and edge cliques. The forward pass runs
    :func:`crflearn.inference.gini.gini_infer` (CPU, float64). The loss is
    non-negative (the one-hot truth is feasible with zero Gini term) and,
    by Danskin's theorem, its gradient is the relaxed marginals minus the
    one-hot truth, which is what :meth:`backward` returns.

    Use through :func:`gini_relaxed_loss`; ``apply`` takes
    ``(unary, pairwise, edges, labels, kappa, options)`` with ``edges`` and
    ``labels`` already-validated int64 NumPy arrays and ``options`` a dict of
    extra keyword arguments for ``gini_infer``.
    """

    @staticmethod
    def forward(ctx, unary, pairwise, edges, labels, kappa, options):
        gini_infer = _gini_infer()
        u = unary.detach().cpu().double().numpy()
        p = pairwise.detach().cpu().double().numpy()
        res = gini_infer(u, p, edges, kappa=kappa, **options)
        n, k = u.shape
        node_grad = np.array(res.node_marginals, dtype=np.float64, copy=True)
        node_grad[np.arange(n), labels] -= 1.0
        edge_marg = np.asarray(res.edge_marginals, dtype=np.float64)
        if p.ndim == 2:
            pair_grad = edge_marg.sum(axis=0) if edge_marg.ndim == 3 else edge_marg.copy()
            if len(edges):
                np.add.at(pair_grad, (labels[edges[:, 0]], labels[edges[:, 1]]), -1.0)
        else:
            pair_grad = edge_marg.copy()
            if len(edges):
                pair_grad[np.arange(len(edges)), labels[edges[:, 0]], labels[edges[:, 1]]] -= 1.0
        true = u[np.arange(n), labels].sum()
        if len(edges):
            ys, yt = labels[edges[:, 0]], labels[edges[:, 1]]
            true += (p[ys, yt] if p.ndim == 2 else p[np.arange(len(edges)), ys, yt]).sum()
        # the certified upper bound of the relaxed maximum (gini_infer certifies it within tol)
        value = float(getattr(res, "upper_bound", res.value)) - float(true)
        ctx.save_for_backward(torch.as_tensor(node_grad, dtype=unary.dtype, device=unary.device),
                              torch.as_tensor(pair_grad, dtype=pairwise.dtype, device=pairwise.device))
        return torch.as_tensor(value, dtype=unary.dtype, device=unary.device)

    @staticmethod
    def backward(ctx, grad_output):
        node_grad, pair_grad = ctx.saved_tensors
        gu = grad_output * node_grad if ctx.needs_input_grad[0] else None
        gp = grad_output * pair_grad if ctx.needs_input_grad[1] else None
        return gu, gp, None, None, None, None


def gini_relaxed_loss(unary: torch.Tensor, pairwise: torch.Tensor, edges, labels, *,
                      kappa: float = 1.0, **infer_options) -> torch.Tensor:
    """Gini-relaxed structured loss (IDAL surrogate) of one graph or a flat batch of graphs.

    Parameters
    ----------
    unary : Tensor of shape (N, K)
        Node scores, e.g. the output of a network.
    pairwise : Tensor of shape (K, K) or (E, K, K)
        Shared transition scores or per-edge scores (e.g. from an edge network).
    edges : array-like or LongTensor of shape (E, 2)
        Global node indices; any graph (chains, grids, loopy).
    labels : array-like or LongTensor of shape (N,)
        True labels.
    kappa : float
        Weight of the Gini term (> 0); small kappa approaches the structured
        hinge loss without the Hamming term, large kappa smooths more.
    **infer_options
        Passed on to :func:`crflearn.inference.gini.gini_infer` (e.g. a tolerance).

    Returns
    -------
    loss : Tensor (scalar)
        Summed over the graph; the gradient wrt the potentials is the relaxed
        marginals minus the one-hot truth.

    References
    ----------
    Hu, X. and Obozinski, G. (2018). SDCA-powered inexact dual augmented
    Lagrangian method for fast CRF learning. AISTATS.
    """
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real) or not np.isfinite(kappa) or kappa <= 0:
        raise ValueError(f"kappa must be a positive finite number, got {kappa!r}")
    edges_np, lab_np = _check_graph(unary, pairwise, edges, labels)
    return GiniRelaxedLoss.apply(unary, pairwise, edges_np, lab_np, float(kappa), dict(infer_options))


def graph_hinge_loss(unary: torch.Tensor, pairwise: torch.Tensor, edges, labels, *,
                     loss_weight: float = 1.0, method: str = "auto") -> torch.Tensor:
    """Margin-rescaled structured hinge loss on any graph (summed over the graph).

    ``max_y' [score(y') + loss_weight * hamming(y', y)] - score(y)`` with the
    loss-augmented labeling ``y'`` from
    :func:`crflearn.inference.loss_augmented_decode` (exact on forests,
    approximate MAP on loopy graphs; then the value is a lower bound of the
    true hinge). The subgradient is ``onehot(y') - onehot(y)``, obtained by
    autograd through :func:`graph_score`.

    Parameters
    ----------
    unary, pairwise, edges, labels
        As in :func:`gini_relaxed_loss`.
    loss_weight : float
        Scale of the (unnormalised) Hamming loss.
    method : str
        Decoding method passed to ``loss_augmented_decode``.

    Returns
    -------
    loss : Tensor (scalar)
    """
    if isinstance(loss_weight, bool) or not isinstance(loss_weight, numbers.Real) or loss_weight < 0:
        raise ValueError(f"loss_weight must be a non-negative number, got {loss_weight!r}")
    edges_np, lab_np = _check_graph(unary, pairwise, edges, labels)
    from ..inference import loss_augmented_decode

    pred = loss_augmented_decode(unary.detach().cpu().double().numpy(), pairwise.detach().cpu().double().numpy(),
                                 edges_np, lab_np, loss_weight=float(loss_weight), method=method)
    pred = np.asarray(pred, dtype=np.int64)
    hamming = float(np.count_nonzero(pred != lab_np))
    return (graph_score(unary, pairwise, edges_np, pred) + float(loss_weight) * hamming
            - graph_score(unary, pairwise, edges_np, lab_np))
