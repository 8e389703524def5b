"""The one label encoder of crflearn: raw hashable labels <-> int64 codes.

Every entry point that takes labels (``CRF``, ``NeuralCRF``, the CLI, ``compare``, the
metrics) encodes them here, so that label types, ordering and error messages agree.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

__all__ = ["encode_labels", "transform_labels"]


def _label_kind(labels: np.ndarray, where: str) -> tuple[str, np.ndarray]:
    """Classify one example's raw labels as bool/int/float/str/bytes and normalise the dtype."""
    kind = labels.dtype.kind
    if kind == "b":
        return "bool", labels
    if kind in "iu":
        return "int", labels
    if kind == "f":
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"{where} contains NaN or infinite labels")
        return "float", labels
    if kind == "U":
        return "str", labels
    if kind == "S":
        return "bytes", labels
    if kind == "O":
        values = labels.tolist()
        if all(isinstance(v, str) for v in values):
            return "str", np.asarray(values, dtype=str)
        if all(isinstance(v, (bool, np.bool_)) for v in values):
            return "bool", np.asarray(values, dtype=bool)
        if all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))
               for v in values):
            return "int", np.asarray(values, dtype=np.int64)
        if all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values):
            arr = np.asarray(values, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{where} contains NaN or infinite labels")
            return "float", arr
        kinds = sorted({type(v).__name__ for v in values})
        raise TypeError(f"{where} mixes label types {kinds}; labels must all be strings, all integers, "
                        "all floats or all booleans")
    raise TypeError(f"{where} has unsupported label dtype {labels.dtype}; use strings, integers, floats "
                    "or booleans")


def encode_labels(raw_labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique labels over all examples, and the int64 code of every node.

    Parameters
    ----------
    raw_labels : sequence of 1-D array-like
        One label array per example.

    Returns
    -------
    classes : ndarray of shape (n_classes,)
        Sorted unique labels.
    codes : ndarray of shape (total_nodes,), int64
        ``classes[codes]`` equals the concatenated labels.

    Raises
    ------
    TypeError
        Mixed or unsupported label types.
    ValueError
        NaN or infinite float labels.
    """
    kinds, parts = set(), []
    for i, lab in enumerate(raw_labels):
        kind, arr = _label_kind(np.asarray(lab), f"y[{i}]")
        if arr.size:
            kinds.add(kind)
        parts.append(arr)
    if kinds == {"int", "float"}:
        kinds = {"float"}
        parts = [p.astype(np.float64) for p in parts]
    if len(kinds) > 1:
        raise TypeError(f"y mixes label types {sorted(kinds)} across examples; use one type for all labels")
    flat = np.concatenate(parts) if parts else np.zeros(0)
    classes, codes = np.unique(flat, return_inverse=True)
    return classes, np.ascontiguousarray(codes.ravel(), dtype=np.int64)


def transform_labels(classes: np.ndarray, labels, where: str = "y") -> np.ndarray:
    """int64 codes of ``labels`` under the fitted ``classes`` (sorted, as from :func:`encode_labels`).

    Raises
    ------
    ValueError
        A label not in ``classes`` (named in the message).
    TypeError
        Labels of another type than ``classes``.
    """
    kind, arr = _label_kind(np.asarray(labels), where)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    ckind = classes.dtype.kind
    compatible = (ckind == arr.dtype.kind or (ckind in "iuf" and arr.dtype.kind in "iuf")
                  or (ckind == "U" and arr.dtype.kind == "U"))
    if not compatible:
        raise TypeError(f"{where} has labels of type {kind} but the model was fitted on labels of dtype "
                        f"{classes.dtype}")
    idx = np.searchsorted(classes, arr)
    idx = np.clip(idx, 0, len(classes) - 1)
    bad = classes[idx] != arr
    if np.any(bad):
        unknown = arr[bad][0]
        raise ValueError(f"{where} contains the label {unknown!r}, not seen in training "
                         f"(classes: {classes.tolist()!r:.200})")
    return np.ascontiguousarray(idx, dtype=np.int64)
