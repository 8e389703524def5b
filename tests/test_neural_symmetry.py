"""Symmetric and factorised layers: symmetry, parameter counts, gradients, equivalence to plain layers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from crflearn.neural.symmetry import (  # noqa: E402
    FactorizedConv2d,
    FactorizedLinear,
    FlipSharedConv2d,
    SymmetricConv2d,
    SymmetricLinear,
    count_parameters,
    frobenius_decay,
    symmetry_penalty,
)


def _square_blocks(w):
    """Square channel blocks of a (out, in, ...) weight, cut along the longer axis."""
    out, inp = w.shape[:2]
    m = min(out, inp)
    q = max(out, inp) // m
    if out >= inp:
        return [w[i * m:(i + 1) * m] for i in range(q)]
    return [w[:, i * m:(i + 1) * m] for i in range(q)]


def _is_block_symmetric(w):
    return all(torch.allclose(b, b.transpose(0, 1)) for b in _square_blocks(w))


@pytest.mark.parametrize("shape", [(6, 6), (4, 10), (9, 4), (8, 4)])
@pytest.mark.parametrize("mode", ["triangular", "average"])
def test_linear_square_block_modes_are_symmetric(shape, mode):
    torch.manual_seed(0)
    out, inp = shape
    layer = SymmetricLinear(inp, out, mode=mode, bias=False)
    w = layer.weight
    assert w.shape == (out, inp)
    assert _is_block_symmetric(w)
    m = min(out, inp)
    q, r = max(out, inp) // m, max(out, inp) % m
    expected = q * m * (m + 1) // 2 + r * m if mode == "triangular" else out * inp
    assert count_parameters(layer) == expected
    x = torch.randn(5, inp)
    torch.testing.assert_close(layer(x), F.linear(x, w))


def test_triangular_square_has_about_half_the_parameters():
    layer = SymmetricLinear(64, 64, mode="triangular", bias=False)
    assert count_parameters(layer) == 64 * 65 // 2
    assert count_parameters(nn.Linear(64, 64, bias=False)) == 4096


def _tied(layer, mode):
    """Whether the effective weight satisfies the constraint of ``mode`` exactly."""
    w = layer.weight.detach()
    if mode in ("triangular", "average"):
        w3 = w.reshape(w.shape[0], w.shape[1], -1)
        return all(torch.equal(b, b.transpose(0, 1)) for p in range(w3.shape[2])
                   for b in _square_blocks(w3[:, :, p]))
    if mode == "block":
        return torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))
    return torch.equal(w, w.transpose(-1, -2))  # channel: symmetric spatial kernels


@pytest.mark.parametrize("mode", ["triangular", "average", "block", "channel"])
def test_exact_weight_tying_after_optimiser_steps(mode):
    torch.manual_seed(0)
    layers = [SymmetricConv2d(3, 5, 3, mode=mode, padding=1)]
    if mode != "channel":
        layers.append(SymmetricLinear(7, 4, mode=mode))
    for layer in layers:
        opt = torch.optim.Adam(layer.parameters(), lr=0.1)
        x = torch.randn(4, 3, 6, 6) if isinstance(layer, SymmetricConv2d) else torch.randn(4, 7)
        before = layer.weight.detach().clone()
        for _ in range(5):
            opt.zero_grad()
            (layer(x) - 1.0).square().sum().backward()
            opt.step()
        assert not torch.equal(before, layer.weight.detach())
        assert _tied(layer, mode)


def test_parameter_savings_per_mode():
    assert count_parameters(SymmetricConv2d(8, 8, 3, mode="channel", bias=False)) == 8 * 8 * 6
    assert count_parameters(SymmetricConv2d(8, 8, 3, mode="block", bias=False)) == 9 * 4 * 4
    assert count_parameters(SymmetricConv2d(7, 5, 1, mode="block", bias=False)) == 4 * 3
    with pytest.raises(ValueError, match="square convolution kernel"):
        SymmetricLinear(3, 3, mode="channel")
    with pytest.raises(ValueError, match="square convolution kernel"):
        SymmetricConv2d(3, 3, (3, 2), mode="channel")


def test_flip_shared_conv_copies_kernels():
    torch.manual_seed(1)
    conv = FlipSharedConv2d(3, 8, 3, factor=4, bias=False)
    w = conv.weight
    assert count_parameters(conv) == 2 * 3 * 9
    torch.testing.assert_close(w[2:4], w[:2].flip(-1))
    torch.testing.assert_close(w[4:6], w[:2].flip(-2))
    torch.testing.assert_close(w[6:8], w[:2].flip(-2, -1))
    with pytest.raises(ValueError, match="factor"):
        FlipSharedConv2d(3, 6, 3, factor=4)


@pytest.mark.parametrize("rank", [1, 3])
def test_spectral_init_is_truncated_svd_of_dense_init(rank):
    gen = torch.Generator().manual_seed(2)
    layer = FactorizedLinear(7, 5, rank=rank, generator=gen)
    full = layer.init_full_.double()
    u, s, vh = torch.linalg.svd(full)
    best = (u[:, :rank] * s[:rank]) @ vh[:rank]
    torch.testing.assert_close(layer.weight.double(), best, atol=1e-6, rtol=0)
    # balanced factors: U^T U = V^T V = diag(S_r)
    torch.testing.assert_close((layer.U.T @ layer.U).double(), torch.diag(s[:rank]), atol=1e-5, rtol=0)
    torch.testing.assert_close((layer.V.T @ layer.V).double(), torch.diag(s[:rank]), atol=1e-5, rtol=0)
    conv = FactorizedConv2d(2, 4, 3, rank=rank, generator=gen)
    u, s, vh = torch.linalg.svd(conv.init_full_.double())
    best = ((u[:, :rank] * s[:rank]) @ vh[:rank]).reshape(4, 2, 3, 3)
    torch.testing.assert_close(conv.weight.double(), best, atol=1e-6, rtol=0)
    # the dense init has the scale of nn.Linear's default (Kaiming-uniform, bound 1 / sqrt(fan_in))
    assert float(layer.init_full_.abs().max()) <= 1 / np.sqrt(7)


@pytest.mark.parametrize("mode", ["triangular", "average", "block", "channel"])
def test_conv_forward_equals_plain_conv_and_gradients_flow(mode):
    torch.manual_seed(3)
    conv = SymmetricConv2d(4, 8, (3, 3) if mode == "channel" else (3, 2), mode=mode, padding=1, stride=1)
    plain = nn.Conv2d(4, 8, conv.kernel_size, padding=1)
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        plain.bias.copy_(conv.bias)
    x = torch.randn(2, 4, 6, 5)
    torch.testing.assert_close(conv(x), plain(x))
    if mode in ("triangular", "average"):
        w = conv.weight
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                assert _is_block_symmetric(w[:, :, i, j])
    conv(x).square().sum().backward()
    grads = [p.grad for p in conv.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_symmetric_layer_gradient_matches_projected_plain_gradient():
    """d loss / d tri equals the plain-weight gradient gathered through the mirror map."""
    torch.manual_seed(4)
    layer = SymmetricLinear(3, 3, mode="triangular", bias=False)
    x, target = torch.randn(10, 3), torch.randn(10, 3)
    F.mse_loss(layer(x), target).backward()
    w = layer.weight.detach().requires_grad_(True)
    F.mse_loss(F.linear(x, w), target).backward()
    g = w.grad
    iu = torch.triu_indices(3, 3)
    expected = g[iu[0], iu[1]] + torch.where(iu[0] != iu[1], g[iu[1], iu[0]], torch.zeros(()))
    tri_grad = next(p.grad for n, p in layer.named_parameters() if n.endswith("tri"))
    torch.testing.assert_close(tri_grad.reshape(-1), expected)


def test_symmetry_penalty_and_frobenius_decay():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU(), SymmetricLinear(4, 4, bias=False))
    w = net[0].weight
    expected = ((w - w.T) ** 2).sum()
    torch.testing.assert_close(symmetry_penalty(net), expected)
    with torch.no_grad():
        net[0].weight.copy_(0.5 * (w + w.T))
    assert symmetry_penalty(net).item() == pytest.approx(0.0, abs=1e-12)
    # soft penalty drives a plain layer to symmetry
    lin = nn.Linear(5, 5, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        symmetry_penalty(lin).backward()
        opt.step()
    assert symmetry_penalty(lin).item() < 1e-6

    fl = FactorizedLinear(6, 5, rank=2)
    assert count_parameters(fl) == (6 + 5) * 2 + 5
    torch.testing.assert_close(fl.frobenius_decay(), (fl.weight ** 2).sum())
    x = torch.randn(3, 6)
    torch.testing.assert_close(fl(x), F.linear(x, fl.weight, fl.bias))
    fc = FactorizedConv2d(3, 8, 3, rank=2, padding=1)
    torch.testing.assert_close(fc.frobenius_decay(), (fc.weight ** 2).sum())
    assert count_parameters(fc) == 8 * 2 + 2 * 3 * 9 + 8
    both = nn.Sequential(fl, nn.Linear(5, 3))
    torch.testing.assert_close(frobenius_decay(both), fl.frobenius_decay())


def test_count_parameters_filters_and_dedups():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared, SymmetricConv2d(2, 2, 1, mode="triangular", bias=False))
    assert count_parameters(net) == 12 + 3
    assert count_parameters(net, (nn.Conv2d, SymmetricConv2d)) == 3
    frozen = nn.Linear(2, 2)
    frozen.weight.requires_grad_(False)
    assert count_parameters(frozen) == 2


def test_errors():
    with pytest.raises(ValueError, match="mode"):
        SymmetricLinear(3, 3, mode="diagonal")
    with pytest.raises(ValueError, match="rank must be"):
        FactorizedLinear(3, 4, rank=4)
    with pytest.raises(TypeError, match="in_features"):
        SymmetricLinear(3.0, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        SymmetricConv2d(3, 3, 0)
    with pytest.raises(TypeError, match="module"):
        count_parameters(np.zeros(3))
