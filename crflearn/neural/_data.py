"""Inputs of :class:`~crflearn.neural.NeuralCRF`: parsing (through ``graphs.make_batch``) and batching.

Three kinds of examples, decided from ``X`` as a whole:

``"chain"``
    ``(n_nodes, n_features)`` arrays; the network sees padded batches ``(B, T, p)``.
``"graph"``
    ``(features, edges[, edge_features])`` tuples or networkx graphs; the network sees the
    flat node features ``(N, p)`` of a batch (plus ``edges`` and ``node_offsets`` when it
    sets ``accepts_graph = True``).
``"image"``
    ``(height, width, channels)`` arrays: 4-connected pixel grids whose edges carry a
    one-hot direction feature (right, down); the network sees padded images
    ``(B, channels, H, W)`` and returns ``(B, K, H, W)``.

Every kind is turned into one :class:`~crflearn.graphs.GraphBatch` by ``make_batch`` (the
one instance parser) and labels are encoded by :mod:`crflearn._labels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._labels import encode_labels, transform_labels
from ..graphs import GraphBatch, check_instances, grid_edges, make_batch

__all__ = ["NeuralData", "parse_inputs", "to_device"]


@dataclass
class NeuralData:
    """A parsed data set: its kind, the flat batch and, for images, the image shapes."""

    kind: str
    batch: GraphBatch
    image_shapes: np.ndarray | None = None   # (n_examples, 2) for images
    rho: np.ndarray | None = None            # TRW edge appearance probabilities, filled on demand
    padded: tuple | None = None              # chains: padded tensors, filled on demand

    @property
    def n_examples(self) -> int:
        return self.batch.n_examples

    def edge_appearance(self) -> np.ndarray:
        """TRW ``rho`` of every edge, computed once for the whole data set."""
        if self.rho is None:
            from ..inference.schedule import edge_appearance_probabilities

            self.rho = edge_appearance_probabilities(self.batch.edges, self.batch.n_nodes)
        return self.rho


def _kind_of(items: list) -> str:
    image = [isinstance(it, np.ndarray) and it.ndim == 3 for it in items]
    if all(image):
        return "image"
    if any(image):
        raise ValueError("X mixes images (height, width, channels) with other kinds of examples")
    plain = [not isinstance(it, tuple) and not hasattr(it, "nodes") for it in items]
    return "chain" if all(plain) else "graph"


def _image_instance(img: np.ndarray, i: int):
    h, w, c = img.shape
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"X[{i}] is an image of shape {img.shape}; every axis must be non-empty")
    edges = grid_edges(h, w)
    down = (edges[:, 1] - edges[:, 0]) == w if h > 1 else np.zeros(len(edges), bool)
    direction = np.stack([~down, down], axis=1).astype(np.float64)
    return img.reshape(h * w, c), edges, direction


def _flat_labels(y, kind):
    if y is None:
        return None
    try:
        items = list(y)
    except TypeError:
        raise TypeError(f"y must be a list of label arrays, got {type(y).__name__}") from None
    if kind == "image":
        return [np.asarray(lab).reshape(-1) for lab in items]
    return items


def parse_inputs(X, y=None, *, classes=None, n_features=None, n_edge_features="infer",
                 kind=None) -> tuple[NeuralData, np.ndarray | None]:
    """Validate ``X`` (and ``y``) and build a :class:`NeuralData`.

    Parameters
    ----------
    X : list of examples (see the module docstring)
    y : list of label arrays, optional
        Per node (for images: ``(height, width)`` or flat row-major).
    classes : ndarray, optional
        Fitted classes: labels are encoded against them (unknown labels raise). When
        None and ``y`` is given, the classes are learned from ``y``.
    n_features, n_edge_features
        Expected widths (prediction time), as in ``make_batch``.
    kind : str, optional
        Expected kind (prediction time); a different kind raises.

    Returns
    -------
    data : NeuralData
    classes : ndarray or None
    """
    if isinstance(X, np.ndarray) and X.dtype != object and X.ndim == 3:
        items = list(X)  # a stack of equally sized images
    else:
        items = check_instances(X)
    found = _kind_of(items)
    if kind is not None and found != kind:
        raise ValueError(f"the model was fitted on {kind} examples but X holds {found} examples")
    shapes = None
    if found == "image":
        shapes = np.array([it.shape[:2] for it in items], dtype=np.int64)
        items = [_image_instance(it, i) for i, it in enumerate(items)]
    y_items = _flat_labels(y, found)
    if y_items is not None and classes is None:
        classes, _ = encode_labels(y_items)
    encoder = None
    if y_items is not None:
        def encoder(lab, _classes=classes):
            return transform_labels(_classes, lab)
    batch, _ = make_batch(items, y_items, n_features=n_features, n_edge_features=n_edge_features,
                          label_encoder=encoder)
    if batch.is_sparse:
        batch.node_features = batch.node_features.toarray()
    return NeuralData(found, batch, shapes), classes


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to ``device``: through pinned memory, non-blocking, when it is CUDA."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
