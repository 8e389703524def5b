"""Parameter initialisation from a local ``torch.Generator`` (no global torch random state).

Building a torch layer draws its initial weights from torch's global generator. ``NeuralCRF``
builds its built-in networks inside :func:`build_quietly` (a lock plus
``torch.random.fork_rng(devices=[])``: the caller's CPU random state is restored and no
GPU is touched), then redraws every parameter from its own generator with
:func:`reset_parameters`, so a fit depends only on ``random_state``, also in threads.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import nn

__all__ = ["build_quietly", "reset_parameters"]

_BUILD_LOCK = threading.Lock()


def build_quietly(factory):
    """``factory()`` without changing the global torch random state (serialised by a lock)."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        return factory()


def _reset_dense(layer, generator):
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        fan_in = layer.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        layer.bias.uniform_(-bound, bound, generator=generator)


def reset_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw the parameters of ``module`` with PyTorch's default schemes, from ``generator``.

    Linear and convolution layers: Kaiming-uniform (``a = sqrt(5)``) weights and
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` biases; recurrent layers:
    ``U(-1/sqrt(hidden), 1/sqrt(hidden))``; layers with a ``reset_parameters(generator=)``
    method (the symmetric and factorised layers of :mod:`crflearn.neural.symmetry`) use it.
    Other layers keep their (deterministic) initial values.
    """
    with torch.no_grad():
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if getattr(layer, "accepts_generator", False):
                reset(generator=generator)
            elif isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                _reset_dense(layer, generator)
            elif isinstance(layer, nn.RNNBase):
                bound = 1.0 / math.sqrt(layer.hidden_size)
                for p in layer.parameters(recurse=False):
                    p.uniform_(-bound, bound, generator=generator)
