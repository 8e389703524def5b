"""The network of :class:`~crflearn.neural.NeuralCRF` (unary module + pairwise parameters) and its batches."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ._data import NeuralData, to_device
from ._loopy import LoopyGraph, make_loopy_graph

__all__ = ["CRFNet", "Batch", "make_batches", "padded_chains"]


class Batch(NamedTuple):
    """One mini-batch on the training device (``graph`` etc. are None for chains)."""

    kind: str
    x: torch.Tensor                   # (B, T, p) chains, (N, p) graphs, (B, C, H, W) images
    labels: torch.Tensor | None       # (B, T) chains (-1 at padding), (N,) otherwise
    lengths: torch.Tensor | None      # (B,) chains
    graph: LoopyGraph | None
    edge_features: torch.Tensor | None
    pixel_index: torch.Tensor | None  # flat index of the real pixels in (B, H, W)
    edges: np.ndarray | None          # host copies for the CPU losses and decoding
    node_offsets: np.ndarray | None
    edge_offsets: np.ndarray | None
    message_rows: torch.Tensor | None  # rows of the warm-start message store
    n_examples: int


class CRFNet(torch.nn.Module):
    """A unary network plus pairwise parameters.

    ``transitions`` ``(K, K)`` scores every edge alike; with edge features ``(E, q)``,
    ``edge_weights`` ``(q, K, K)`` gives ``pairwise[e] = sum_j features[e, j] edge_weights[j]``.
    A unary module may also return ``(unary, pairwise)`` to supply its own pairwise scores.
    """

    def __init__(self, unary: torch.nn.Module, n_states: int, n_edge_features: int | None = None):
        super().__init__()
        self.unary = unary
        if n_edge_features is None:
            self.transitions = torch.nn.Parameter(torch.zeros(n_states, n_states))
        else:
            self.edge_weights = torch.nn.Parameter(torch.zeros(n_edge_features, n_states, n_states))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Chain unary scores ``(B, T, K)`` (the module's first output)."""
        out = self.unary(x, lengths) if getattr(self.unary, "accepts_lengths", False) else self.unary(x)
        return out[0] if isinstance(out, tuple) else out

    def potentials(self, batch: Batch):
        """``(unary, pairwise)`` of a batch: chains ``(B, T, K)``, otherwise flat ``(N, K)``."""
        if batch.kind == "chain":
            out = self.unary(batch.x, batch.lengths) if getattr(self.unary, "accepts_lengths", False) \
                else self.unary(batch.x)
        elif batch.kind == "graph" and getattr(self.unary, "accepts_graph", False):
            offsets = torch.as_tensor(batch.node_offsets, device=batch.x.device)
            out = self.unary(batch.x, batch.graph.edges, offsets)
        else:
            out = self.unary(batch.x)
        unary, pairwise = out if isinstance(out, tuple) else (out, None)
        if batch.kind == "image":
            unary = unary.permute(0, 2, 3, 1).reshape(-1, unary.shape[1])[batch.pixel_index]
        if pairwise is None:
            pairwise = self.pairwise(batch.edge_features, unary.dtype)
        return unary, pairwise

    def pairwise(self, edge_features, dtype):
        """Pairwise scores in ``dtype`` or float32, whichever is wider (never cast down to half)."""
        dtype = torch.promote_types(dtype, torch.float32)
        if hasattr(self, "transitions"):
            return self.transitions.to(dtype)
        with torch.autocast(edge_features.device.type, enabled=False):
            return torch.einsum("eq,qab->eab", edge_features.to(dtype), self.edge_weights.to(dtype))


def padded_chains(data: NeuralData):
    """Padded ``(B, T, p)`` float32 features, ``(B, T)`` labels (-1 at padding), lengths ``(B,)``."""
    b = data.batch
    lengths = b.lengths
    t = int(lengths.max())
    x = np.zeros((b.n_examples, t, b.n_features), dtype=np.float32)
    y = np.full((b.n_examples, t), -1, dtype=np.int64)
    rows = np.repeat(np.arange(b.n_examples), lengths)
    cols = np.arange(b.n_nodes) - np.repeat(b.node_offsets[:-1], lengths)
    x[rows, cols] = b.node_features
    if b.labels is not None:
        y[rows, cols] = b.labels
    return torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(lengths)


def _chain_batch(padded, idx, device) -> Batch:
    x_all, y_all, len_all = padded
    lens = len_all[idx]
    t = int(lens.max())
    return Batch("chain", to_device(x_all[idx, :t], device), to_device(y_all[idx, :t], device),
                 to_device(lens, device), None, None, None, None, None, None, None, len(idx))


def _images(data: NeuralData, sub, idx):
    """Padded images ``(B, C, H, W)`` and the flat index of their real pixels."""
    shapes = data.image_shapes[idx]
    h, w = (int(v) for v in shapes.max(axis=0))
    c = sub.n_features
    img = np.zeros((len(idx), h, w, c), dtype=np.float32)
    index = []
    for j, (hj, wj) in enumerate(shapes):
        img[j, :hj, :wj] = sub.node_features[sub.node_offsets[j]:sub.node_offsets[j + 1]].reshape(hj, wj, c)
        index.append((j * h + np.arange(hj)[:, None]) * w + np.arange(wj)[None, :])
    return torch.as_tensor(img).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(
        np.concatenate([i.ravel() for i in index]))


def _graph_batch(data: NeuralData, idx, device, with_graph: bool) -> Batch:
    b = data.batch
    sub = b.subset(idx)
    edge_idx = np.concatenate([np.arange(b.edge_offsets[i], b.edge_offsets[i + 1]) for i in idx])
    graph = rows = None
    if with_graph:
        rho = data.edge_appearance()[edge_idx.astype(np.int64)]
        graph = make_loopy_graph(sub.edges, sub.n_nodes, sub.node_offsets, sub.edge_offsets, rho=rho,
                                 device=device)
        rows = torch.as_tensor(np.stack([2 * edge_idx, 2 * edge_idx + 1], axis=1).reshape(-1).astype(np.int64),
                               device=device)
    if data.kind == "image":
        x, pixel_index = _images(data, sub, idx)
        pixel_index = to_device(pixel_index, device)
    else:
        x, pixel_index = torch.as_tensor(sub.node_features, dtype=torch.float32), None
    labels = None if sub.labels is None else to_device(torch.as_tensor(sub.labels), device)
    ef = None if sub.edge_features is None else to_device(
        torch.as_tensor(sub.edge_features, dtype=torch.float32), device)
    if graph is None:
        graph = LoopyGraph(torch.as_tensor(sub.edges, device=device), None, None, None, sub.n_nodes, len(idx))
    return Batch(data.kind, to_device(x, device), labels, None, graph, ef, pixel_index, sub.edges,
                 sub.node_offsets, sub.edge_offsets, rows, len(idx))


def make_batches(data: NeuralData, order: np.ndarray, batch_size: int, device: torch.device, *,
                 padded=None, with_graph: bool = True):
    """Yield :class:`Batch` es of ``batch_size`` examples in ``order``."""
    for start in range(0, len(order), batch_size):
        idx = np.asarray(order[start:start + batch_size], dtype=np.int64)
        if data.kind == "chain":
            yield _chain_batch(padded, torch.as_tensor(idx), device)
        else:
            yield _graph_batch(data, idx, device, with_graph)
