"""Linear-chain CRF layers in torch: batched, masked, differentiable, device agnostic.

Shapes: ``unary`` is ``(B, T, K)`` (batch, padded length, states) and holds
scores (log-potentials, larger is more likely). ``transitions`` is either one
``(K, K)`` matrix shared by every edge (a learned transition matrix) or
``(B, T - 1, K, K)`` per-edge potentials (e.g. from an edge network);
``transitions[..., a, b]`` scores ``y_t = a, y_{t+1} = b``, the convention of
:mod:`crflearn.inference` for the edge ``(t, t + 1)``. ``lengths`` ``(B,)``
gives the true length of each sequence (default: all ``T``); positions at or
beyond a sequence's length are padding and are ignored.

One dynamic program, :func:`_chain_forward`, serves the log semiring
(log-partition; marginals are its gradient) and the max semiring (Viterbi).
Everything runs on the device of ``unary`` (CPU or CUDA), in float32 or wider: half-precision
inputs (e.g. from a network under autocast) are promoted, transitions are never cast down.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "chain_log_partition",
    "chain_marginals",
    "chain_viterbi",
    "chain_score",
    "chain_crf_nll",
    "chain_hinge_loss",
    "ChainCRFLoss",
]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------- validation
def _check_chain(unary, transitions, lengths, check_values=True):
    """Validate chain inputs; return ``(unary, transitions, lengths)`` with lengths a long tensor."""
    if not isinstance(unary, torch.Tensor):
        raise TypeError(f"unary must be a torch.Tensor of shape (B, T, K), got {type(unary).__name__}")
    if not unary.is_floating_point():
        raise TypeError(f"unary must be a floating point tensor, got dtype {unary.dtype}")
    if unary.dim() != 3:
        raise ValueError(f"unary must have shape (B, T, K), got {tuple(unary.shape)}")
    b, t, k = unary.shape
    if b == 0 or t == 0 or k == 0:
        raise ValueError(f"unary must have non-empty batch, length and state axes, got {tuple(unary.shape)}")
    if not isinstance(transitions, torch.Tensor):
        raise TypeError(f"transitions must be a torch.Tensor, got {type(transitions).__name__}")
    if not transitions.is_floating_point():
        raise TypeError(f"transitions must be a floating point tensor, got dtype {transitions.dtype}")
    if transitions.dim() == 2:
        if tuple(transitions.shape) != (k, k):
            raise ValueError(f"transitions must have shape ({k}, {k}) or ({b}, {t - 1}, {k}, {k}), "
                             f"got {tuple(transitions.shape)}")
    elif transitions.dim() == 4:
        if tuple(transitions.shape) != (b, t - 1, k, k):
            raise ValueError(f"per-edge transitions must have shape ({b}, {t - 1}, {k}, {k}), "
                             f"got {tuple(transitions.shape)}")
    else:
        raise ValueError(f"transitions must be 2-D (K, K) or 4-D (B, T-1, K, K), got {tuple(transitions.shape)}")
    if transitions.device != unary.device:
        raise ValueError(f"transitions are on {transitions.device} but unary is on {unary.device}")
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.long, device=unary.device)
    else:
        if not isinstance(lengths, torch.Tensor):
            lengths = torch.as_tensor(lengths)
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
        if lengths.dim() != 1 or lengths.shape[0] != b:
            raise ValueError(f"lengths must have shape ({b},), got {tuple(lengths.shape)}")
        lengths = lengths.to(device=unary.device, dtype=torch.long)
        if check_values and (bool((lengths < 1).any()) or bool((lengths > t).any())):
            raise ValueError(f"lengths must lie in 1..{t} (the padded length of unary), "
                             f"got values {lengths.min().item()}..{lengths.max().item()}")
    # the dynamic program runs in float32 or wider, also for half-precision inputs (autocast)
    dtype = torch.promote_types(torch.promote_types(unary.dtype, transitions.dtype), torch.float32)
    return unary.to(dtype), transitions.to(dtype), lengths


def _check_tags(tags, unary, lengths, check_values=True):
    b, t, k = unary.shape
    if not isinstance(tags, torch.Tensor):
        tags = torch.as_tensor(tags)
    if tags.is_floating_point() or tags.dtype == torch.bool:
        raise TypeError(f"tags must hold integer labels, got dtype {tags.dtype}")
    if tuple(tags.shape) != (b, t):
        raise ValueError(f"tags must have shape ({b}, {t}) like unary's first two axes, got {tuple(tags.shape)}")
    tags = tags.to(device=unary.device, dtype=torch.long)
    if check_values:
        bad = _mask(lengths, t) & ((tags < 0) | (tags >= k))
        if bool(bad.any()):
            value = int(tags[bad][0])
            raise ValueError(f"tags contains label {value} outside 0..{k - 1} at a non-padded position")
    return tags


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """Boolean ``(B, T)`` mask of non-padded positions."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


# ---------------------------------------------------------------------------- the dynamic program
def _chain_forward(unary, transitions, lengths, semiring):
    """Forward recursion over the chain in the ``"log"`` or ``"max"`` semiring.

    Returns the final messages ``(B, K)`` and, for ``"max"``, the list of
    backpointers ``(B, K)`` for positions ``1..T-1`` (identity on padding, so
    that backtracking passes through padded positions unchanged).
    """
    b, t, k = unary.shape
    alpha = unary[:, 0]
    backpointers = []
    identity = torch.arange(k, device=unary.device).expand(b, k) if semiring == "max" else None
    for pos in range(1, t):
        trans = transitions if transitions.dim() == 2 else transitions[:, pos - 1]
        scores = alpha.unsqueeze(-1) + trans  # (B, K_prev, K_next)
        if semiring == "log":
            new = torch.logsumexp(scores, dim=1) + unary[:, pos]
        else:
            best, arg = scores.max(dim=1)
            new = best + unary[:, pos]
        active = (pos < lengths).unsqueeze(-1)
        alpha = torch.where(active, new, alpha)
        if semiring == "max":
            backpointers.append(torch.where(active, arg, identity))
    return alpha, backpointers


# ---------------------------------------------------------------------------- public functions
def chain_log_partition(unary: torch.Tensor, transitions: torch.Tensor,
                        lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Log-partition function of a batch of linear-chain CRFs (forward algorithm).

    Parameters
    ----------
    unary : Tensor of shape (B, T, K)
        Node scores; padded positions are ignored.
    transitions : Tensor of shape (K, K) or (B, T - 1, K, K)
        Shared or per-edge pairwise scores; ``transitions[..., a, b]`` scores
        ``y_t = a, y_{t+1} = b``. ``-inf`` forbids a pair.
    lengths : Tensor of shape (B,), optional
        True sequence lengths (``1 <= lengths <= T``); default all ``T``.

    Returns
    -------
    log_z : Tensor of shape (B,)
        ``log sum_y exp(score(y))`` per sequence, differentiable; its gradient
        wrt ``unary`` (``transitions``) is the node (edge) marginals.
    """
    unary, transitions, lengths = _check_chain(unary, transitions, lengths)
    alpha, _ = _chain_forward(unary, transitions, lengths, "log")
    return torch.logsumexp(alpha, dim=-1)


def chain_marginals(unary: torch.Tensor, transitions: torch.Tensor,
                    lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Node and edge marginals of a batch of chain CRFs.

    Computed as the gradient of :func:`chain_log_partition` (which equals
    forward-backward). The result is detached from the autograd graph.

    Parameters
    ----------
    unary, transitions, lengths
        As in :func:`chain_log_partition`.

    Returns
    -------
    node_marginals : Tensor of shape (B, T, K)
        ``P(y_t = k)``; rows at padded positions are zero.
    edge_marginals : Tensor of shape (B, T - 1, K, K)
        ``P(y_t = a, y_{t+1} = b)``; zero on padded edges.
    """
    unary, transitions, lengths = _check_chain(unary, transitions, lengths)
    b, t, k = unary.shape
    with torch.enable_grad():
        u = unary.detach().clone().requires_grad_(True)
        if transitions.dim() == 2:
            tr = transitions.detach().expand(b, t - 1, k, k).clone()
        else:
            tr = transitions.detach().clone()
        tr.requires_grad_(True)
        alpha, _ = _chain_forward(u, tr, lengths, "log")
        log_z = torch.logsumexp(alpha, dim=-1)
        if t > 1:
            node, edge = torch.autograd.grad(log_z.sum(), (u, tr))
        else:
            (node,) = torch.autograd.grad(log_z.sum(), (u,))
            edge = torch.zeros_like(tr)
    return node, edge


def chain_viterbi(unary: torch.Tensor, transitions: torch.Tensor,
                  lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely labeling of each chain (Viterbi, max-sum), same inputs as :func:`chain_log_partition`.

    Returns
    -------
    tags : LongTensor of shape (B, T)
        MAP labels; padded positions hold ``-1``.
    scores : Tensor of shape (B,)
        Score of the returned labeling (detached).
    """
    unary, transitions, lengths = _check_chain(unary, transitions, lengths)
    b, t, k = unary.shape
    with torch.no_grad():
        alpha, backpointers = _chain_forward(unary, transitions, lengths, "max")
        scores, last = alpha.max(dim=-1)
        tags = torch.empty((b, t), dtype=torch.long, device=unary.device)
        tags[:, t - 1] = last
        for pos in range(t - 1, 0, -1):
            tags[:, pos - 1] = backpointers[pos - 1].gather(1, tags[:, pos:pos + 1]).squeeze(1)
        tags = torch.where(_mask(lengths, t), tags, torch.full_like(tags, -1))
    return tags, scores


def _score(unary, transitions, tags, lengths):
    """Score of given labelings (validated inputs), differentiable, shape (B,)."""
    b, t, k = unary.shape
    mask = _mask(lengths, t)
    safe = torch.where(mask, tags, torch.zeros_like(tags))
    node = unary.gather(2, safe.unsqueeze(-1)).squeeze(-1)
    total = (node * mask).sum(dim=1)
    if t > 1:
        prev, nxt = safe[:, :-1], safe[:, 1:]
        if transitions.dim() == 2:
            edge = transitions[prev, nxt]
        else:
            flat = transitions.reshape(b, t - 1, k * k)
            edge = flat.gather(2, (prev * k + nxt).unsqueeze(-1)).squeeze(-1)
        edge_mask = mask[:, 1:]
        total = total + torch.where(edge_mask, edge, torch.zeros_like(edge)).sum(dim=1)
    return total


def chain_score(unary: torch.Tensor, transitions: torch.Tensor, tags: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Score ``sum_t unary[t, y_t] + sum_t transitions[y_t, y_{t+1}]`` of given labelings.

    Parameters
    ----------
    unary, transitions, lengths
        As in :func:`chain_log_partition`.
    tags : LongTensor of shape (B, T)
        Labels in ``0..K-1`` at non-padded positions (anything at padding).

    Returns
    -------
    scores : Tensor of shape (B,)
        Differentiable in ``unary`` and ``transitions``.
    """
    unary, transitions, lengths = _check_chain(unary, transitions, lengths)
    tags = _check_tags(tags, unary, lengths)
    return _score(unary, transitions, tags, lengths)


def chain_crf_nll(unary: torch.Tensor, transitions: torch.Tensor, tags: torch.Tensor,
                  lengths: torch.Tensor | None = None, reduction: str = "mean", *,
                  check_input: bool = True) -> torch.Tensor:
    """Negative log-likelihood ``log Z - score(y)`` of a batch of chain CRFs.

    Parameters
    ----------
    unary, transitions, lengths
        As in :func:`chain_log_partition`.
    tags : LongTensor of shape (B, T)
        True labels.
    reduction : {"mean", "sum", "none"}
        Mean or sum over sequences, or the per-sequence values ``(B,)``.
    check_input : bool
        Check the values of ``lengths`` and ``tags`` (a host synchronisation on an
        accelerator); callers that validated them once (``NeuralCRF``) pass False.

    Returns
    -------
    loss : Tensor
        Its gradient wrt ``unary`` is node marginals minus the one-hot truth.
    """
    _check_reduction(reduction)
    unary, transitions, lengths = _check_chain(unary, transitions, lengths, check_input)
    tags = _check_tags(tags, unary, lengths, check_input)
    alpha, _ = _chain_forward(unary, transitions, lengths, "log")
    nll = torch.logsumexp(alpha, dim=-1) - _score(unary, transitions, tags, lengths)
    return _reduce(nll, reduction)


def chain_hinge_loss(unary: torch.Tensor, transitions: torch.Tensor, tags: torch.Tensor,
                     lengths: torch.Tensor | None = None, reduction: str = "mean",
                     loss_weight: float = 1.0) -> torch.Tensor:
    """Margin-rescaled structured hinge loss with the (unnormalised) Hamming loss.

    ``max_y' [score(y') + loss_weight * hamming(y', y)] - score(y)``, with the
    loss-augmented MAP ``y'`` found by :func:`chain_viterbi` on
    ``unary + loss_weight * [k != y_t]``. The (sub)gradient wrt ``unary`` is
    ``onehot(y') - onehot(y)``.

    Parameters
    ----------
    unary, transitions, tags, lengths, reduction
        As in :func:`chain_crf_nll`.
    loss_weight : float
        Scale of the Hamming term (0 gives the perceptron loss).

    Returns
    -------
    loss : Tensor
        Non-negative.
    """
    _check_reduction(reduction)
    if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)) or loss_weight < 0:
        raise ValueError(f"loss_weight must be a non-negative number, got {loss_weight!r}")
    unary, transitions, lengths = _check_chain(unary, transitions, lengths)
    tags = _check_tags(tags, unary, lengths)
    b, t, k = unary.shape
    mask = _mask(lengths, t)
    safe = torch.where(mask, tags, torch.zeros_like(tags))
    wrong = 1.0 - torch.nn.functional.one_hot(safe, k).to(unary.dtype)
    augmented = unary.detach() + float(loss_weight) * wrong
    pred, _ = chain_viterbi(augmented, transitions.detach(), lengths)
    hamming = ((pred != tags) & mask).sum(dim=1).to(unary.dtype)
    loss = (_score(unary, transitions, pred, lengths) + float(loss_weight) * hamming
            - _score(unary, transitions, tags, lengths))
    return _reduce(loss, reduction)


class ChainCRFLoss(nn.Module):
    """Chain CRF layer with a learned ``(K, K)`` transition matrix.

    Parameters
    ----------
    n_states : int
        Number of labels ``K``.
    reduction : {"mean", "sum", "none"}
        How :meth:`forward` reduces the per-sequence NLL.

    Attributes
    ----------
    transitions : nn.Parameter of shape (K, K)
        Initialised to zero (the CRF starts as independent per-node softmaxes).

    Examples
    --------
    >>> crf = ChainCRFLoss(3)
    >>> unary = torch.randn(2, 4, 3)
    >>> loss = crf(unary, torch.zeros(2, 4, dtype=torch.long))
    >>> tags = crf.decode(unary)
    """

    def __init__(self, n_states: int, reduction: str = "mean"):
        super().__init__()
        if isinstance(n_states, bool) or not isinstance(n_states, int) or n_states < 1:
            raise ValueError(f"n_states must be a positive integer, got {n_states!r}")
        _check_reduction(reduction)
        self.n_states = n_states
        self.reduction = reduction
        self.transitions = nn.Parameter(torch.zeros(n_states, n_states))

    def forward(self, unary: torch.Tensor, tags: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """NLL of ``tags`` under unary scores ``(B, T, K)`` and the learned transitions."""
        return chain_crf_nll(unary, self.transitions.to(unary.dtype), tags, lengths, self.reduction)

    def decode(self, unary: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Viterbi labels ``(B, T)`` (``-1`` at padding)."""
        return chain_viterbi(unary, self.transitions.to(unary.dtype), lengths)[0]

    def marginals(self, unary: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Node marginals ``(B, T, K)``."""
        return chain_marginals(unary, self.transitions.to(unary.dtype), lengths)[0]

    def extra_repr(self) -> str:
        return f"n_states={self.n_states}, reduction={self.reduction!r}"
