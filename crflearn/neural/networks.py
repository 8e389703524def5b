"""Built-in networks emitting unary potentials for :class:`~crflearn.neural.NeuralCRF`.

The contract of a unary network for chains: ``module(x)`` with ``x`` a padded batch
``(B, T, n_features)`` returns scores ``(B, T, n_states)``; for graphs, ``module(x)``
maps flat node features ``(N, n_features)`` to ``(N, n_states)``; for images,
``module(x)`` maps ``(B, channels, H, W)`` to ``(B, n_states, H, W)`` (:class:`GridCNN`). A module that also
needs the sequence lengths sets the attribute ``accepts_lengths = True`` and
is called as ``module(x, lengths)``. Per-node networks (an MLP, a CNN on the
node's image) act on the last axis and ignore the sequence structure; the
BiLSTM reads the whole sequence.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .symmetry import SYMMETRY_MODES, FlipSharedConv2d, SymmetricConv2d

__all__ = ["NodeMLP", "LetterCNN", "BiLSTMTagger", "GridCNN"]


class NodeMLP(nn.Module):
    """Per-node multilayer perceptron ``n_features -> hidden -> ... -> n_states``.

    Parameters
    ----------
    n_features, n_states : int
    hidden_sizes : tuple of int
        Widths of the hidden layers (ReLU); ``()`` gives a linear CRF.
    dropout : float
        Dropout before every hidden-to-next layer.
    """

    def __init__(self, n_features: int, n_states: int, hidden_sizes: tuple[int, ...] = (128,),
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_states))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LetterCNN(nn.Module):
    """Small per-node CNN for node features that are flattened images (e.g. 16x8 OCR letters).

    ``conv(3x3) - ReLU - maxpool(2) - conv(3x3) - ReLU - maxpool(2) - linear - ReLU - dropout - linear``.

    Parameters
    ----------
    n_states : int
    image_shape : (int, int)
        Height and width; node features have ``height * width`` entries, row-major.
    channels : (int, int)
        Output channels of the two convolutions.
    hidden : int
        Width of the fully connected layer.
    dropout : float
    symmetry : str or None
        None for plain convolutions; a mode of
        :class:`~crflearn.neural.symmetry.SymmetricConv2d` (``"triangular"``,
        ``"average"``, ``"block"``, ``"channel"``: the constraints of Hu et al. 2019)
        for both convolutions; or ``"flip"`` for
        :class:`~crflearn.neural.symmetry.FlipSharedConv2d` (``factor=2``).
    """

    def __init__(self, n_states: int, image_shape: tuple[int, int] = (16, 8), channels: tuple[int, int] = (32, 64),
                 hidden: int = 256, dropout: float = 0.3, symmetry: str | None = None):
        super().__init__()
        if symmetry is not None and symmetry not in SYMMETRY_MODES + ("flip",):
            raise ValueError(f"symmetry must be None, 'flip' or one of {SYMMETRY_MODES}, got {symmetry!r}")
        h, w = image_shape
        if h < 4 or w < 4:
            raise ValueError(f"image_shape must be at least (4, 4) for two 2x2 poolings, got {image_shape}")
        self.image_shape = (int(h), int(w))
        c1, c2 = channels

        def conv(cin, cout):
            if symmetry is None:
                return nn.Conv2d(cin, cout, 3, padding=1)
            if symmetry == "flip":
                return FlipSharedConv2d(cin, cout, 3, factor=2, padding=1)
            return SymmetricConv2d(cin, cout, 3, mode=symmetry, padding=1)

        self.features = nn.Sequential(
            conv(1, c1), nn.ReLU(), nn.MaxPool2d(2),
            conv(c1, c2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_states))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        img = x.reshape(-1, 1, *self.image_shape)
        return self.head(self.features(img)).reshape(*lead, -1)


class BiLSTMTagger(nn.Module):
    """Bidirectional LSTM over the sequence, then a linear layer to ``n_states`` scores.

    Parameters
    ----------
    n_features, n_states : int
    hidden_size : int
        Per-direction LSTM width.
    num_layers : int
    encoder : nn.Module, optional
        Per-node encoder applied first (e.g. a :class:`LetterCNN` trunk); its
        output width is given by ``encoder_dim``.
    encoder_dim : int, optional
    """

    accepts_lengths = True

    def __init__(self, n_features: int, n_states: int, hidden_size: int = 64, num_layers: int = 1,
                 encoder: nn.Module | None = None, encoder_dim: int | None = None):
        super().__init__()
        if encoder is not None and encoder_dim is None:
            raise ValueError("encoder_dim is needed with an encoder")
        self.encoder = encoder
        self.lstm = nn.LSTM(encoder_dim if encoder is not None else n_features, hidden_size,
                            num_layers=num_layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden_size, n_states)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.encoder is not None:
            x = self.encoder(x)
        if lengths is None:
            h, _ = self.lstm(x)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.lstm(packed)
            h, _ = pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        return self.out(h)


class GridCNN(nn.Module):
    """Fully convolutional network for pixel grids: ``(B, C, H, W) -> (B, n_states, H, W)``.

    ``len(channels)`` convolutions of ``kernel_size`` (same padding) with ReLU, then a
    1x1 convolution to the state scores; ``channels=()`` with ``kernel_size=1`` is a
    per-pixel linear model.

    Parameters
    ----------
    in_channels, n_states : int
    channels : tuple of int
        Widths of the hidden convolutions.
    kernel_size : int
        Odd size of the hidden convolutions.
    """

    def __init__(self, in_channels: int, n_states: int, channels: tuple[int, ...] = (32, 32), kernel_size: int = 3):
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
                or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        layers: list[nn.Module] = []
        width = in_channels
        for c in channels:
            layers += [nn.Conv2d(width, c, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            width = c
        layers.append(nn.Conv2d(width, n_states, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
