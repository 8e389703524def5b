"""The one label encoder of crflearn: raw hashable labels <-> int64 codes.

Every entry point that takes labels (``CRF``, ``NeuralCRF``, the CLI, ``compare``, the
metrics) encodes them here, so that label types, ordering and error messages agree.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

__all__ = ["encode_labels", "transform_labels", "as_label_array"]

_BASIC = (str, bytes, bool, np.bool_, numbers.Real)


def as_label_array(labels) -> np.ndarray:
    """One example's labels as a 1-D array, keeping tuple (or other sequence-like) labels whole.

    ``np.asarray([("B", "PER"), ("O",)])`` would build a 2-D or ragged array; here a
    sequence of non-scalar labels becomes a 1-D object array.
    """
    if isinstance(labels, np.ndarray):
        return labels
    values = list(labels) if isinstance(labels, (list, tuple)) else None
    if values is None:
        return np.asarray(labels)
    if any(not isinstance(v, _BASIC) for v in values):
        arr = np.empty(len(values), dtype=object)
        arr[:] = [v.item() if isinstance(v, np.generic) else v for v in values]
        return arr
    return np.asarray(values)


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
        if all(isinstance(v, _BASIC) for v in values):
            kinds = sorted({type(v).__name__ for v in values})
            raise TypeError(f"{where} mixes label types {kinds}; labels must all be strings, all integers, "
                            "all floats or all booleans (or any other hashable objects)")
        for v in values:
            try:
                hash(v)
            except TypeError:
                raise TypeError(f"{where} contains the unhashable label {v!r:.60}") from None
        return "object", labels
    raise TypeError(f"{where} has unsupported label dtype {labels.dtype}; use strings, integers, floats "
                    "or booleans")


def _without_none(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``arr`` without its ``None`` entries (re-typed), and the mask of the known entries (None: all)."""
    if arr.dtype != object:
        return arr, None
    known = np.array([v is not None for v in arr.tolist()], dtype=bool)
    if known.all():
        return arr, None
    return as_label_array(arr[known].tolist()), known


def encode_labels(raw_labels: Sequence, *, unknown_none: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique labels over all examples, and the int64 code of every node.

    Parameters
    ----------
    raw_labels : sequence of 1-D array-like
        One label array per example.
    unknown_none : bool, default=False
        A label ``None`` marks an unknown node (partial labels): it gets the code ``-1`` and is
        not a class. When False, ``None`` is an ordinary (object) label.

    Returns
    -------
    classes : ndarray of shape (n_classes,)
        Sorted unique labels; for labels that are not strings, bytes, numbers or
        booleans (tuples, Enums, ...) an object array in order of first appearance.
    codes : ndarray of shape (total_nodes,), int64
        ``classes[codes]`` equals the concatenated labels (``-1`` for unknown nodes).

    Raises
    ------
    TypeError
        Mixed or unsupported label types.
    ValueError
        NaN or infinite float labels.
    """
    kinds, parts, masks = set(), [], []
    for i, lab in enumerate(raw_labels):
        arr, known = as_label_array(lab), None
        if unknown_none:
            arr, known = _without_none(arr)
        kind, arr = _label_kind(arr, f"y[{i}]")
        if arr.size:
            kinds.add(kind)
        parts.append(arr)
        masks.append(np.ones(len(arr), dtype=bool) if known is None else known)
    classes, codes = _encode_known(parts, kinds)
    full = np.full(sum(len(m) for m in masks), -1, dtype=np.int64)
    full[np.concatenate(masks) if masks else np.zeros(0, dtype=bool)] = codes
    return classes, full


def _encode_known(parts: list[np.ndarray], kinds: set) -> tuple[np.ndarray, np.ndarray]:
    if kinds == {"int", "float"}:
        kinds = {"float"}
        parts = [p.astype(np.float64) for p in parts]
    if len(kinds) > 1:
        raise TypeError(f"y mixes label types {sorted(kinds)} across examples; use one type for all labels")
    flat = np.concatenate(parts) if parts else np.zeros(0)
    if kinds == {"object"}:
        first_seen = list(dict.fromkeys(flat.tolist()))
        classes = np.empty(len(first_seen), dtype=object)
        classes[:] = first_seen
        index = {value: i for i, value in enumerate(first_seen)}
        return classes, np.fromiter((index[v] for v in flat.tolist()), dtype=np.int64, count=len(flat))
    classes, codes = np.unique(flat, return_inverse=True)
    return classes, np.ascontiguousarray(codes.ravel(), dtype=np.int64)


def transform_labels(classes: np.ndarray, labels, where: str = "y", *,
                     unknown: int | None = None) -> np.ndarray:
    """int64 codes of ``labels`` under the fitted ``classes`` (sorted, as from :func:`encode_labels`).

    With ``unknown`` set, labels not in ``classes`` get that code instead of raising.

    Raises
    ------
    ValueError
        A label not in ``classes`` (named in the message), unless ``unknown`` is set.
    TypeError
        Labels of another type than ``classes``.
    """
    kind, arr = _label_kind(as_label_array(labels), where)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    ckind = classes.dtype.kind
    if "O" in (ckind, arr.dtype.kind):
        if ckind != arr.dtype.kind:
            raise TypeError(f"{where} has labels of type {kind} but the model was fitted on labels of dtype "
                            f"{classes.dtype}")
        index = {value: i for i, value in enumerate(classes.tolist())}
        missing = [v for v in arr.tolist() if v not in index]
        if missing and unknown is None:
            raise ValueError(f"{where} contains the label {missing[0]!r}, not seen in training "
                             f"(classes: {classes.tolist()!r:.200})")
        return np.fromiter((index.get(v, unknown) for v in arr.tolist()), dtype=np.int64, count=len(arr))
    compatible = (ckind == arr.dtype.kind or (ckind in "iuf" and arr.dtype.kind in "iuf")
                  or (ckind == "U" and arr.dtype.kind == "U"))
    if not compatible:
        raise TypeError(f"{where} has labels of type {kind} but the model was fitted on labels of dtype "
                        f"{classes.dtype}")
    idx = np.searchsorted(classes, arr)
    idx = np.clip(idx, 0, len(classes) - 1)
    bad = classes[idx] != arr
    if np.any(bad) and unknown is not None:
        idx = np.where(bad, unknown, idx)
    elif np.any(bad):
        raise ValueError(f"{where} contains the label {arr[bad][0]!r}, not seen in training "
                         f"(classes: {classes.tolist()!r:.200})")
    return np.ascontiguousarray(idx, dtype=np.int64)
