"""Parameter-saving layers with symmetric weights, and soft alternatives.

Hard constraints (the layer stores fewer numbers and builds the effective
weight on the fly; :attr:`weight` is always the effective weight, so
``layer(x)`` equals a plain layer using ``layer.weight``):

``"triangular"``
    Each square channel block is symmetric and stored as its upper triangle
    (``m (m + 1) / 2`` numbers instead of ``m^2``). For a non-square channel
    matrix ``(out, in)`` with ``m = min(out, in)``, the longer axis is cut into
    ``floor(max / m)`` square ``m x m`` blocks that are each symmetric; a
    leftover strip (when ``max`` is not a multiple of ``m``) is stored densely.
    For convolutions the constraint applies to the channel matrix
    ``W[:, :, i, j]`` at every kernel position (so a layer with one input
    channel saves nothing).
``"average"``
    The same block structure, but every block is stored densely and the
    effective block is ``(B + B^T) / 2``: symmetric, with as many parameters as
    a plain layer (a re-parametrisation, useful as a control).
``"block"``
    Block symmetry over ``groups`` channel groups (both ``in`` and ``out`` must
    be divisible by ``groups``): the ``g x g`` grid of channel blocks is block
    circulant, ``W[i, j] = B[(j - i) mod g]``, so only one block row
    (a ``1/g`` fraction) is learned and the layer is equivariant to cyclic
    shifts of the channel groups.
``"channel"``
    Channel-wise sharing: ``out / factor`` output channels are learned, the
    others are generated from them. For :class:`SymmetricConv2d` the copies are
    spatial flips of the learned kernels (``factor`` 2: identity and horizontal
    flip; 4: also vertical and both flips), giving flip-equivariant features.
    For :class:`SymmetricLinear` copy ``c`` is the learned block rolled by ``c``
    positions along the input axis.

Soft options (no parameter saving by themselves): :func:`symmetry_penalty`
(``sum ||B - B^T||_F^2`` over square channel blocks of plain layers) and, as a
second parameter-saving route, the low-rank :class:`FactorizedLinear` /
:class:`FactorizedConv2d` with Frobenius decay ``||U V^T||_F^2`` (Khodak et
al., 2021) instead of weight decay on ``U`` and ``V``.

References
----------
Khodak, M., Tenenholtz, N., Mackey, L. and Fusi, N. (2021). Initialization and
regularization of factorized neural layers. ICLR.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int

__all__ = [
    "SYMMETRY_MODES",
    "SymmetricLinear",
    "SymmetricConv2d",
    "FactorizedLinear",
    "FactorizedConv2d",
    "symmetry_penalty",
    "frobenius_decay",
    "count_parameters",
]

SYMMETRY_MODES = ("triangular", "average", "block", "channel")



class _SymmetricWeight(nn.Module):
    """Parametrisation of a weight ``(out, in, *kernel)`` under one symmetry mode.

    Internally the weight is handled as ``S`` channel matrices ``(S, out, in)``,
    ``S = prod(kernel)`` (1 for a linear layer).
    """

    def __init__(self, out_features: int, in_features: int, kernel: tuple[int, ...], mode: str,
                 groups: int, factor: int):
        super().__init__()
        if mode not in SYMMETRY_MODES:
            raise ValueError(f"mode must be one of {SYMMETRY_MODES}, got {mode!r}")
        self.out_features, self.in_features, self.kernel, self.mode = out_features, in_features, kernel, mode
        self.n_pos = math.prod(kernel)
        fan_in = in_features * self.n_pos
        bound = 1.0 / math.sqrt(fan_in)  # variance of the default (Kaiming-uniform, a=sqrt(5)) init
        s = self.n_pos
        if mode in ("triangular", "average"):
            m = min(out_features, in_features)
            self.m, self.q = m, max(out_features, in_features) // m
            self.r = max(out_features, in_features) - self.q * m
            self.rows_long = out_features > in_features
            rest_shape = (s, self.r, m) if self.rows_long else (s, m, self.r)
            if mode == "triangular":
                iu = torch.triu_indices(m, m)
                index = torch.zeros(m, m, dtype=torch.long)
                index[iu[0], iu[1]] = torch.arange(iu.shape[1])
                index[iu[1], iu[0]] = torch.arange(iu.shape[1])
                self.register_buffer("_index", index, persistent=False)
                self.tri = nn.Parameter(torch.empty(s, self.q, iu.shape[1]).uniform_(-bound, bound))
                self.rest = nn.Parameter(torch.empty(rest_shape).uniform_(-bound, bound)) if self.r else None
            else:
                self.raw = nn.Parameter(torch.empty(s, out_features, in_features).uniform_(-bound, bound))
        elif mode == "block":
            g = check_int(groups, "groups")
            if out_features % g or in_features % g:
                raise ValueError(f"groups={g} must divide both the input ({in_features}) and the output "
                                 f"({out_features}) channels")
            self.groups = g
            self.blocks = nn.Parameter(torch.empty(s, g, out_features // g, in_features // g)
                                       .uniform_(-bound, bound))
            i = torch.arange(g)
            self.register_buffer("_shift", (i[None, :] - i[:, None]) % g, persistent=False)
        else:  # channel
            r = check_int(factor, "factor")
            if out_features % r:
                raise ValueError(f"factor={r} must divide the output channels ({out_features})")
            if kernel and r not in (1, 2, 4):
                raise ValueError(f"factor must be 1, 2 or 4 for convolutions (spatial flips), got {r}")
            self.factor = r
            self.base = nn.Parameter(torch.empty(out_features // r, in_features, *kernel).uniform_(-bound, bound))

    def _stack_blocks(self, blocks: torch.Tensor, rest: torch.Tensor | None) -> torch.Tensor:
        """(S, q, m, m) square blocks + leftover strip -> (S, out, in)."""
        s, q, m = blocks.shape[0], self.q, self.m
        if self.rows_long:
            w = blocks.reshape(s, q * m, m)
            return torch.cat([w, rest], dim=1) if rest is not None else w
        w = blocks.permute(0, 2, 1, 3).reshape(s, m, q * m)
        return torch.cat([w, rest], dim=2) if rest is not None else w

    def _matrices(self) -> torch.Tensor:
        """The effective weight as ``(S, out, in)`` (not for the channel mode)."""
        s, m, q = self.n_pos, getattr(self, "m", 0), getattr(self, "q", 0)
        if self.mode == "triangular":
            return self._stack_blocks(self.tri[:, :, self._index], self.rest)
        if self.mode == "average":
            raw = self.raw
            if self.rows_long:
                sq = raw[:, : q * m].reshape(s, q, m, m)
                rest = raw[:, q * m:] if self.r else None
            else:
                sq = raw[:, :, : q * m].reshape(s, m, q, m).permute(0, 2, 1, 3)
                rest = raw[:, :, q * m:] if self.r else None
            return self._stack_blocks(0.5 * (sq + sq.transpose(-1, -2)), rest)
        # block circulant: grid[i, j] = blocks[(j - i) mod g]
        grid = self.blocks[:, self._shift]  # (S, g, g, out/g, in/g)
        return grid.permute(0, 1, 3, 2, 4).reshape(s, self.out_features, self.in_features)

    def forward(self) -> torch.Tensor:
        """The effective weight ``(out, in, *kernel)``."""
        if self.mode == "channel":
            base, r = self.base, self.factor
            if not self.kernel:
                copies = [torch.roll(base, shifts=c, dims=1) for c in range(r)]
            else:
                flips = [(), (-1,), (-2,), (-2, -1)][:r]
                copies = [base if not dims else torch.flip(base, dims) for dims in flips]
            return torch.cat(copies, dim=0)
        w = self._matrices()  # (S, out, in)
        return w.permute(1, 2, 0).reshape(self.out_features, self.in_features, *self.kernel)


class SymmetricLinear(nn.Module):
    """Linear layer ``y = x W^T + b`` with a symmetric (structured) weight.

    Parameters
    ----------
    in_features, out_features : int
    mode : {"triangular", "average", "block", "channel"}
        See the module docstring.
    bias : bool
        Learn an additive bias (not constrained).
    groups : int
        Number of channel groups for ``mode="block"``.
    factor : int
        Output channels per learned channel for ``mode="channel"``.

    Attributes
    ----------
    weight : Tensor of shape (out_features, in_features)
        The effective weight (a property, rebuilt from the learned parameters).
    """

    def __init__(self, in_features: int, out_features: int, mode: str = "triangular", bias: bool = True,
                 *, groups: int = 2, factor: int = 2):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.mode = mode
        self._param = _SymmetricWeight(self.out_features, self.in_features, (), mode, groups, factor)
        bound = 1.0 / math.sqrt(self.in_features)
        self.bias = nn.Parameter(torch.empty(self.out_features).uniform_(-bound, bound)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self._param()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode!r}, "
                f"bias={self.bias is not None}")


class SymmetricConv2d(nn.Module):
    """2-D convolution whose kernel bank has a symmetric (structured) channel structure.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    mode : {"triangular", "average", "block", "channel"}
        See the module docstring; ``"triangular"``/``"average"``/``"block"`` act
        on the ``(out, in)`` channel matrix at each kernel position,
        ``"channel"`` generates output channels by spatial flips.
    stride, padding : int or (int, int)
        As in :class:`torch.nn.Conv2d`.
    bias : bool
    groups : int
        Channel groups for ``mode="block"``.
    factor : {1, 2, 4}
        Output channels per learned channel for ``mode="channel"``.

    Attributes
    ----------
    weight : Tensor of shape (out_channels, in_channels, kh, kw)
        The effective kernel bank.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mode: str = "triangular",
                 stride=1, padding=0, bias: bool = True, *, groups: int = 2, factor: int = 2):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(ks) != 2 or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"kernel_size must be a positive int or a pair of them, got {kernel_size!r}")
        self.kernel_size = ks
        self.stride, self.padding, self.mode = stride, padding, mode
        self._param = _SymmetricWeight(self.out_channels, self.in_channels, ks, mode, groups, factor)
        bound = 1.0 / math.sqrt(self.in_channels * ks[0] * ks[1])
        self.bias = nn.Parameter(torch.empty(self.out_channels).uniform_(-bound, bound)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self._param()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mode={self.mode!r}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class FactorizedLinear(nn.Module):
    """Low-rank linear layer ``W = U V^T`` (``U`` (out, rank), ``V`` (in, rank)).

    Train with :meth:`frobenius_decay` (``||U V^T||_F^2``) added to the loss
    instead of weight decay on the factors (Khodak et al., 2021).

    Parameters
    ----------
    in_features, out_features, rank : int
    bias : bool
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.rank = check_int(rank, "rank")
        # spectral init: the product has roughly the scale of a default dense init
        scale = (1.0 / in_features) ** 0.25 / rank ** 0.25
        self.U = nn.Parameter(torch.empty(out_features, rank).uniform_(-scale, scale))
        self.V = nn.Parameter(torch.empty(in_features, rank).uniform_(-scale, scale))
        bound = 1.0 / math.sqrt(in_features)
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self.U @ self.V.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x @ self.V) @ self.U.T
        return out + self.bias if self.bias is not None else out

    def frobenius_decay(self) -> torch.Tensor:
        """``||U V^T||_F^2 = trace((U^T U)(V^T V))``, without forming ``U V^T``."""
        return ((self.U.T @ self.U) * (self.V.T @ self.V)).sum()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedConv2d(nn.Module):
    """Low-rank convolution: a ``rank``-channel convolution followed by a 1x1 mixing ``U``.

    The effective kernel is ``W[o] = sum_r U[o, r] V[r]`` with ``V`` of shape
    ``(rank, in, kh, kw)``; :meth:`frobenius_decay` is ``||U V||_F^2``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, rank
    stride, padding, bias
        As in :class:`torch.nn.Conv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int, stride=1, padding=0,
                 bias: bool = True):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        self.rank = check_int(rank, "rank")
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.kernel_size, self.stride, self.padding = ks, stride, padding
        fan_in = in_channels * ks[0] * ks[1]
        scale = (1.0 / fan_in) ** 0.25 / rank ** 0.25
        self.U = nn.Parameter(torch.empty(out_channels, rank).uniform_(-scale, scale))
        self.V = nn.Parameter(torch.empty(rank, in_channels, *ks).uniform_(-scale, scale))
        bound = 1.0 / math.sqrt(fan_in)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return (self.U @ self.V.reshape(self.rank, -1)).reshape(self.out_channels, self.in_channels,
                                                                 *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def frobenius_decay(self) -> torch.Tensor:
        """``||U V||_F^2`` with ``V`` flattened to ``(rank, in * kh * kw)``."""
        v = self.V.reshape(self.rank, -1)
        return ((self.U.T @ self.U) * (v @ v.T)).sum()


def _block_asymmetry(weight: torch.Tensor) -> torch.Tensor:
    """``sum ||B - B^T||_F^2`` over the square channel blocks of ``weight`` (out, in, ...)."""
    w = weight.reshape(weight.shape[0], weight.shape[1], -1).permute(2, 0, 1)  # (S, out, in)
    out, inp = w.shape[1], w.shape[2]
    m = min(out, inp)
    q = max(out, inp) // m
    if out >= inp:
        blocks = w[:, : q * m].reshape(w.shape[0], q, m, m)
    else:
        blocks = w[:, :, : q * m].reshape(w.shape[0], m, q, m).permute(0, 2, 1, 3)
    return ((blocks - blocks.transpose(-1, -2)) ** 2).sum()


def symmetry_penalty(module: nn.Module) -> torch.Tensor:
    """Soft symmetry regulariser: ``sum ||B - B^T||_F^2`` over plain layers' square channel blocks.

    Sums over every :class:`torch.nn.Linear` and :class:`torch.nn.Conv2d`
    inside ``module`` (hard-constrained symmetric layers are already symmetric
    and contribute nothing); blocks are cut as in the ``"triangular"`` mode.
    Add ``strength * symmetry_penalty(net)`` to the training loss.

    Parameters
    ----------
    module : nn.Module

    Returns
    -------
    penalty : Tensor (scalar), differentiable
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    total = None
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            term = _block_asymmetry(layer.weight)
            total = term if total is None else total + term
    if total is None:
        p = next(module.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    return total


def frobenius_decay(module: nn.Module) -> torch.Tensor:
    """Sum of :meth:`FactorizedLinear.frobenius_decay` over the factorised layers of ``module``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    terms = [layer.frobenius_decay() for layer in module.modules()
             if isinstance(layer, (FactorizedLinear, FactorizedConv2d))]
    if not terms:
        p = next(module.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    return torch.stack(terms).sum()


def count_parameters(module: nn.Module, layer_types: tuple | type | None = None) -> int:
    """Number of learned (``requires_grad``) parameters, shared tensors counted once.

    Parameters
    ----------
    module : nn.Module
    layer_types : type or tuple of types, optional
        Count only parameters owned by sub-modules of these types (e.g.
        ``(nn.Conv2d, SymmetricConv2d)`` for "conv parameters"), including
        their own sub-modules.

    Returns
    -------
    int
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    seen: set[int] = set()
    total = 0
    owners = [module] if layer_types is None else [m for m in module.modules() if isinstance(m, layer_types)]
    for owner in owners:
        for p in owner.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total
