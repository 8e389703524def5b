"""Symmetric and factorised layers: symmetry, parameter counts, gradients, equivalence to plain layers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from crflearn.neural.symmetry import (  # noqa: E402
    FactorizedConv2d,
    FactorizedLinear,
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


@pytest.mark.parametrize("groups", [2, 4])
def test_block_mode_is_shift_invariant_and_learns_one_over_g(groups):
    torch.manual_seed(1)
    out, inp = 8, 12
    layer = SymmetricLinear(inp, out, mode="block", groups=groups, bias=False)
    w = layer.weight
    assert count_parameters(layer) == out * inp // groups
    # cyclic shift of the channel groups on both sides leaves the weight unchanged
    bo, bi = out // groups, inp // groups
    shifted = torch.roll(torch.roll(w, bo, dims=0), bi, dims=1)
    torch.testing.assert_close(shifted, w)
    conv = SymmetricConv2d(inp, out, 3, mode="block", groups=groups, bias=False)
    wc = conv.weight
    torch.testing.assert_close(torch.roll(torch.roll(wc, bo, dims=0), bi, dims=1), wc)
    assert count_parameters(conv) == out * inp * 9 // groups


@pytest.mark.parametrize("factor", [2, 4])
def test_conv_channel_mode_flip_copies(factor):
    torch.manual_seed(2)
    conv = SymmetricConv2d(3, 8, 3, mode="channel", factor=factor, bias=False, padding=1)
    w = conv.weight
    c = 8 // factor
    assert count_parameters(conv) == c * 3 * 9
    torch.testing.assert_close(w[c:2 * c], torch.flip(w[:c], (-1,)))
    if factor == 4:
        torch.testing.assert_close(w[2 * c:3 * c], torch.flip(w[:c], (-2,)))
        torch.testing.assert_close(w[3 * c:], torch.flip(w[:c], (-2, -1)))
    # flip equivariance: flipping the input horizontally swaps the two channel halves, flipped
    x = torch.randn(2, 3, 7, 5)
    y, yf = conv(x), conv(torch.flip(x, (-1,)))
    torch.testing.assert_close(yf[:, c:2 * c], torch.flip(y[:, :c], (-1,)), atol=1e-5, rtol=1e-5)


def test_linear_channel_mode_rolls():
    layer = SymmetricLinear(5, 6, mode="channel", factor=3, bias=False)
    w = layer.weight
    assert count_parameters(layer) == 2 * 5
    torch.testing.assert_close(w[2:4], torch.roll(w[:2], 1, dims=1))
    torch.testing.assert_close(w[4:], torch.roll(w[:2], 2, dims=1))


@pytest.mark.parametrize("mode", ["triangular", "average", "block", "channel"])
def test_conv_forward_equals_plain_conv_and_gradients_flow(mode):
    torch.manual_seed(3)
    conv = SymmetricConv2d(4, 8, (3, 2), mode=mode, padding=1, stride=1)
    plain = nn.Conv2d(4, 8, (3, 2), padding=1)
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        plain.bias.copy_(conv.bias)
    x = torch.randn(2, 4, 6, 5)
    torch.testing.assert_close(conv(x), plain(x))
    if mode in ("triangular", "average"):
        w = conv.weight
        for i in range(3):
            for j in range(2):
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
    with pytest.raises(ValueError, match="groups=3"):
        SymmetricLinear(4, 6, mode="block", groups=3)
    with pytest.raises(ValueError, match="factor=4"):
        SymmetricLinear(4, 6, mode="channel", factor=4)
    with pytest.raises(ValueError, match="factor must be 1, 2 or 4"):
        SymmetricConv2d(4, 6, 3, mode="channel", factor=3)
    with pytest.raises(TypeError, match="in_features"):
        SymmetricLinear(3.0, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        SymmetricConv2d(3, 3, 0)
    with pytest.raises(TypeError, match="module"):
        count_parameters(np.zeros(3))
