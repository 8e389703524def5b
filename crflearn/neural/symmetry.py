"""Parameter-saving layers: symmetric weights (Hu et al. 2019), flip sharing, low-rank factors.

Symmetric layers (:class:`SymmetricLinear`, :class:`SymmetricConv2d`) impose the hard
symmetry constraints of Hu, Zagoruyko & Komodakis (2019). The layer stores fewer numbers
and builds the effective weight on the fly (:attr:`weight`), so ``layer(x)`` equals a plain
layer using ``layer.weight``. The constraints hold exactly after any optimiser step (the
effective weight is a function of the stored parameters), which the tests check per mode:

``"triangular"``
    The channel matrix ``W[:, :, p]`` at every kernel position is symmetric, stored as its
    upper triangle, ``W = triu(P) + triu(P, 1)^T`` (``m (m + 1) / 2`` numbers instead of
    ``m^2``). The paper defines it for square matrices; for ``(out, in)`` with
    ``m = min(out, in)`` the longer axis is cut here into ``floor(max / m)`` symmetric
    ``m x m`` blocks plus a dense leftover strip.
``"average"``
    The same symmetry as ``"triangular"`` through ``W = (P + P^T) / 2`` with a dense ``P``
    (as many stored numbers as a plain layer: a re-parametrisation, not a saving).
``"block"``
    Block symmetry: the channel matrix is invariant under reversing the order of the output
    channels and, separately, of the input channels, ``W[i, j] = W[out-1-i, j] = W[i, in-1-j]``:
    one corner block (about a quarter) is learned and mirrored into the other three.
``"channel"``
    Channel-wise symmetry (convolutions with square kernels only): every spatial kernel
    ``W[o, i]`` is a symmetric matrix, ``W[o, i, a, b] = W[o, i, b, a]``, stored as its upper
    triangle (6 numbers instead of 9 for 3x3 kernels).

:func:`symmetry_penalty` is the soft alternative (``sum ||B - B^T||_F^2`` over the square
channel blocks of plain layers, added to the loss).

:class:`FlipSharedConv2d` is a different kind of sharing, not from that paper: output
channels come in groups of ``factor`` whose kernels are spatial flips of one learned kernel.
No equivariance property is claimed for any of these layers.

:class:`FactorizedLinear` / :class:`FactorizedConv2d` are low-rank layers ``W = U V^T``
with the spectral initialisation and Frobenius decay of Khodak et al. (2021): a
standard-initialised full weight is replaced by its rank-``r`` truncated SVD
``U_r S_r V_r^T`` with factors ``U = U_r sqrt(S_r)`` and ``V = V_r sqrt(S_r)``, and the
penalty is ``||U V^T||_F^2`` (:func:`frobenius_decay`; ``NeuralCRF(frobenius_decay=...)``)
instead of weight decay on ``U`` and ``V``.

References
----------
Hu, S. X., Zagoruyko, S. and Komodakis, N. (2019). Exploring weight symmetry in deep
neural networks. Computer Vision and Image Understanding 187. arXiv:1812.11027.

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
    "FlipSharedConv2d",
    "FactorizedLinear",
    "FactorizedConv2d",
    "symmetry_penalty",
    "frobenius_decay",
    "count_parameters",
]

SYMMETRY_MODES = ("triangular", "average", "block", "channel")


def _uniform(shape, bound, generator):
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def _triangle_index(m: int) -> torch.Tensor:
    """``(m, m)`` index into the ``m (m + 1) / 2`` upper-triangle entries, symmetric."""
    iu = torch.triu_indices(m, m)
    index = torch.zeros(m, m, dtype=torch.long)
    index[iu[0], iu[1]] = torch.arange(iu.shape[1])
    index[iu[1], iu[0]] = torch.arange(iu.shape[1])
    return index


def _fold(n: int) -> torch.Tensor:
    """Index ``min(i, n - 1 - i)``: mirror positions share an entry."""
    i = torch.arange(n)
    return torch.minimum(i, n - 1 - i)


class _SymmetricWeight(nn.Module):
    """Parametrisation of a weight ``(out, in, *kernel)`` under one symmetry mode.

    The weight is handled as ``S`` channel matrices ``(S, out, in)``, ``S = prod(kernel)``
    (1 for a linear layer); the channel mode works on the kernels instead.
    """

    accepts_generator = True

    def __init__(self, out_features: int, in_features: int, kernel: tuple[int, ...], mode: str,
                 generator: torch.Generator | None = None):
        super().__init__()
        if mode not in SYMMETRY_MODES:
            raise ValueError(f"mode must be one of {SYMMETRY_MODES}, got {mode!r}")
        self.out_features, self.in_features, self.kernel, self.mode = out_features, in_features, kernel, mode
        self.n_pos = s = math.prod(kernel)
        m = min(out_features, in_features)
        self.m, self.q = m, max(out_features, in_features) // m
        self.r = max(out_features, in_features) - self.q * m
        self.rows_long = out_features > in_features
        if mode == "triangular":
            self.register_buffer("_index", _triangle_index(m), persistent=False)
            self.tri = nn.Parameter(torch.empty(s, self.q, m * (m + 1) // 2))
            rest_shape = (s, self.r, m) if self.rows_long else (s, m, self.r)
            self.rest = nn.Parameter(torch.empty(rest_shape)) if self.r else None
        elif mode == "average":
            self.raw = nn.Parameter(torch.empty(s, out_features, in_features))
        elif mode == "block":
            self.register_buffer("_rows", _fold(out_features), persistent=False)
            self.register_buffer("_cols", _fold(in_features), persistent=False)
            self.corner = nn.Parameter(torch.empty(s, (out_features + 1) // 2, (in_features + 1) // 2))
        else:  # channel: symmetric spatial kernels
            if len(kernel) != 2 or kernel[0] != kernel[1]:
                raise ValueError(f"mode='channel' (symmetric spatial kernels) needs a square convolution "
                                 f"kernel, got kernel size {kernel if kernel else 'none (a linear layer)'}")
            k = kernel[0]
            self.register_buffer("_index", _triangle_index(k), persistent=False)
            self.tri = nn.Parameter(torch.empty(out_features, in_features, k * (k + 1) // 2))
        self.reset_parameters(generator=generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform ``(-1/sqrt(fan_in), 1/sqrt(fan_in))`` stored entries (the scale of a default layer)."""
        bound = 1.0 / math.sqrt(self.in_features * self.n_pos)
        with torch.no_grad():
            for p in self.parameters(recurse=False):
                p.copy_(_uniform(p.shape, bound, generator))

    def _stack_blocks(self, blocks: torch.Tensor, rest: torch.Tensor | None) -> torch.Tensor:
        """(S, q, m, m) square blocks + leftover strip -> (S, out, in)."""
        s, q, m = blocks.shape[0], self.q, self.m
        if self.rows_long:
            w = blocks.reshape(s, q * m, m)
            return torch.cat([w, rest], dim=1) if rest is not None else w
        w = blocks.permute(0, 2, 1, 3).reshape(s, m, q * m)
        return torch.cat([w, rest], dim=2) if rest is not None else w

    def _average(self) -> torch.Tensor:
        s, m, q, raw = self.n_pos, self.m, self.q, self.raw
        if self.rows_long:
            sq = raw[:, : q * m].reshape(s, q, m, m)
            rest = raw[:, q * m:] if self.r else None
        else:
            sq = raw[:, :, : q * m].reshape(s, m, q, m).permute(0, 2, 1, 3)
            rest = raw[:, :, q * m:] if self.r else None
        return self._stack_blocks(0.5 * (sq + sq.transpose(-1, -2)), rest)

    def forward(self) -> torch.Tensor:
        """The effective weight ``(out, in, *kernel)``."""
        if self.mode == "channel":
            return self.tri[:, :, self._index]
        if self.mode == "triangular":
            w = self._stack_blocks(self.tri[:, :, self._index], self.rest)
        elif self.mode == "average":
            w = self._average()
        else:
            w = self.corner[:, self._rows][:, :, self._cols]
        return w.permute(1, 2, 0).reshape(self.out_features, self.in_features, *self.kernel)


def _bias(n: int, fan_in: int, enabled: bool) -> nn.Parameter | None:
    return nn.Parameter(torch.empty(n)) if enabled else None


def _reset_bias(bias, fan_in, generator):
    if bias is not None:
        with torch.no_grad():
            bias.copy_(_uniform(bias.shape, 1.0 / math.sqrt(fan_in), generator))


def _kernel_size(kernel_size) -> tuple[int, int]:
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(ks) != 2 or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"kernel_size must be a positive int or a pair of them, got {kernel_size!r}")
    return ks


class _SymmetricLayer(nn.Module):
    """Shared parts of the symmetric layers: the effective weight and the initialisation."""

    accepts_generator = True

    def _setup(self, out_features: int, in_features: int, kernel: tuple[int, ...], mode: str, bias: bool,
               generator) -> None:
        self.mode = mode
        self._param = _SymmetricWeight(out_features, in_features, kernel, mode, generator)
        self._fan_in = in_features * math.prod(kernel)
        self.bias = _bias(out_features, self._fan_in, bias)
        _reset_bias(self.bias, self._fan_in, generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self._param.reset_parameters(generator)
        _reset_bias(self.bias, self._fan_in, generator)

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight, rebuilt from the stored parameters."""
        return self._param()


class SymmetricLinear(_SymmetricLayer):
    """Linear layer ``y = x W^T + b`` with a symmetric weight (Hu et al. 2019).

    Parameters
    ----------
    in_features, out_features : int
    mode : {"triangular", "average", "block"}
        See the module docstring (``"channel"`` needs convolution kernels).
    bias : bool
        Learn an additive bias (not constrained).
    generator : torch.Generator, optional
        Source of the initial values (default: torch's global generator).

    Attributes
    ----------
    weight : Tensor of shape (out_features, in_features)
        The effective weight (a property, rebuilt from the learned parameters).
    """

    def __init__(self, in_features: int, out_features: int, mode: str = "triangular", bias: bool = True,
                 *, generator: torch.Generator | None = None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self._setup(self.out_features, self.in_features, (), mode, bias, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode!r}, "
                f"bias={self.bias is not None}")


class SymmetricConv2d(_SymmetricLayer):
    """2-D convolution with symmetric weights (Hu et al. 2019).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    mode : {"triangular", "average", "block", "channel"}
        See the module docstring: the first three constrain the ``(out, in)`` channel matrix
        at every kernel position, ``"channel"`` makes every spatial kernel symmetric.
    stride, padding : int or (int, int)
        As in :class:`torch.nn.Conv2d`.
    bias : bool
    generator : torch.Generator, optional

    Attributes
    ----------
    weight : Tensor of shape (out_channels, in_channels, kh, kw)
        The effective kernel bank.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mode: str = "triangular",
                 stride=1, padding=0, bias: bool = True, *, generator: torch.Generator | None = None):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        self.kernel_size = _kernel_size(kernel_size)
        self.stride, self.padding = stride, padding
        self._setup(self.out_channels, self.in_channels, self.kernel_size, mode, bias, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mode={self.mode!r}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class FlipSharedConv2d(nn.Module):
    """Convolution whose output channels come in groups of spatially flipped copies of learned kernels.

    ``out_channels / factor`` kernels are learned; the bank is
    ``[K, flip_w(K)]`` (``factor=2``) or ``[K, flip_w(K), flip_h(K), flip_hw(K)]``
    (``factor=4``), concatenated along the output channels. This is parameter sharing, not
    a symmetry constraint of Hu et al., and no equivariance is claimed.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    factor : {1, 2, 4}
        Output channels per learned kernel; must divide ``out_channels``.
    stride, padding, bias
        As in :class:`torch.nn.Conv2d`.
    generator : torch.Generator, optional
    """

    accepts_generator = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, factor: int = 2, stride=1, padding=0,
                 bias: bool = True, *, generator: torch.Generator | None = None):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        self.kernel_size = _kernel_size(kernel_size)
        if factor not in (1, 2, 4) or isinstance(factor, bool):
            raise ValueError(f"factor must be 1, 2 or 4 (spatial flips), got {factor!r}")
        if self.out_channels % factor:
            raise ValueError(f"factor={factor} must divide the output channels ({self.out_channels})")
        self.factor, self.stride, self.padding = factor, stride, padding
        self._fan_in = self.in_channels * math.prod(self.kernel_size)
        self.base = nn.Parameter(torch.empty(self.out_channels // factor, self.in_channels, *self.kernel_size))
        self.bias = _bias(self.out_channels, self._fan_in, bias)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.base.copy_(_uniform(self.base.shape, 1.0 / math.sqrt(self._fan_in), generator))
        _reset_bias(self.bias, self._fan_in, generator)

    @property
    def weight(self) -> torch.Tensor:
        flips = [(), (-1,), (-2,), (-2, -1)][: self.factor]
        return torch.cat([self.base if not dims else torch.flip(self.base, dims) for dims in flips], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def _spectral_init(layer, rows: int, cols: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral initialisation of a factorised layer: draw a Kaiming-uniform ``(rows, cols)`` matrix
    (kept as ``layer.init_full_``), return ``(U_r sqrt(S_r), V_r sqrt(S_r))`` of its rank-``layer.rank``
    truncated SVD and reset the bias."""
    full = torch.empty(rows, cols)
    nn.init.kaiming_uniform_(full, a=math.sqrt(5), generator=generator)
    layer.init_full_ = full
    _reset_bias(layer.bias, cols, generator)
    u, s, vh = torch.linalg.svd(full.double(), full_matrices=False)
    root = s[:layer.rank].sqrt()
    return (u[:, :layer.rank] * root).to(full.dtype), (vh[:layer.rank].T * root).to(full.dtype)


class FactorizedLinear(nn.Module):
    """Low-rank linear layer ``W = U V^T`` (``U`` (out, rank), ``V`` (in, rank)), Khodak et al. (2021).

    Spectral initialisation: a standard-initialised full weight (Kaiming-uniform, as
    :class:`torch.nn.Linear`) is replaced by its rank-``rank`` truncated SVD, with factors
    ``U = U_r sqrt(S_r)`` and ``V = V_r sqrt(S_r)``. Train with :meth:`frobenius_decay`
    (``||U V^T||_F^2``) instead of weight decay on ``U`` and ``V``.

    Parameters
    ----------
    in_features, out_features, rank : int
        ``rank <= min(in_features, out_features)``.
    bias : bool
    generator : torch.Generator, optional
    """

    accepts_generator = True

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.rank = check_int(rank, "rank")
        if self.rank > min(self.in_features, self.out_features):
            raise ValueError(f"rank must be <= min(in_features, out_features) = "
                             f"{min(self.in_features, self.out_features)}, got {rank}")
        self.U = nn.Parameter(torch.empty(self.out_features, self.rank))
        self.V = nn.Parameter(torch.empty(self.in_features, self.rank))
        self.bias = _bias(self.out_features, self.in_features, bias)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Spectral initialisation; the dense matrix it started from is kept as ``init_full_``."""
        u, v = _spectral_init(self, self.out_features, self.in_features, generator)
        with torch.no_grad():
            self.U.copy_(u)
            self.V.copy_(v)

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
    """Low-rank convolution: a ``rank``-channel convolution ``V`` followed by a 1x1 mixing ``U``.

    The effective kernel is ``W[o] = sum_r U[o, r] V[r]`` with ``V`` of shape
    ``(rank, in, kh, kw)``; spectral initialisation as :class:`FactorizedLinear` on the
    ``(out, in * kh * kw)`` matrix of a standard-initialised convolution;
    :meth:`frobenius_decay` is ``||U V||_F^2``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, rank
    stride, padding, bias
        As in :class:`torch.nn.Conv2d`.
    generator : torch.Generator, optional
    """

    accepts_generator = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int, stride=1, padding=0,
                 bias: bool = True, *, generator: torch.Generator | None = None):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        self.rank = check_int(rank, "rank")
        self.kernel_size, self.stride, self.padding = _kernel_size(kernel_size), stride, padding
        self._fan_in = self.in_channels * math.prod(self.kernel_size)
        if self.rank > min(self.out_channels, self._fan_in):
            raise ValueError(f"rank must be <= min(out_channels, in_channels * kh * kw) = "
                             f"{min(self.out_channels, self._fan_in)}, got {rank}")
        self.U = nn.Parameter(torch.empty(self.out_channels, self.rank))
        self.V = nn.Parameter(torch.empty(self.rank, self.in_channels, *self.kernel_size))
        self.bias = _bias(self.out_channels, self._fan_in, bias)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        u, v = _spectral_init(self, self.out_channels, self._fan_in, generator)
        with torch.no_grad():
            self.U.copy_(u)
            self.V.copy_(v.T.reshape(self.V.shape))

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
