"""Allowed-transition constraints: which label may follow which on an edge ``(s, t)``.

A constraint is a boolean ``(K, K)`` matrix ``allowed[a, b]`` (``y_s = a, y_t = b`` allowed)
applied to the pairwise log-potentials as ``-inf`` where it is False: exact inference then
never returns (MAP, top-k) or weighs (marginals) a forbidden pair.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

__all__ = ["transition_mask", "mask_pairwise", "bio_transitions", "violations"]


def transition_mask(classes: np.ndarray, allowed) -> np.ndarray:
    """The ``(K, K)`` boolean matrix of the allowed transitions between ``classes``.

    Parameters
    ----------
    classes : ndarray of shape (K,)
        The labels, in the order of the rows and columns (a CRF's ``classes_``).
    allowed : array-like of bool of shape (K, K), or iterable of (label_from, label_to) pairs
        A matrix is taken as is (rows and columns follow ``classes``); pairs name labels, and
        pairs naming a label not in ``classes`` (e.g. a tag absent from one cross-validation
        fold) are ignored.

    Returns
    -------
    ndarray of shape (K, K), bool

    Raises
    ------
    ValueError
        A matrix of the wrong shape, or a pair that is not a 2-tuple.
    TypeError
        A matrix that is not boolean.
    """
    k = len(classes)
    if isinstance(allowed, np.ndarray) and allowed.ndim == 2:
        if allowed.dtype != bool:
            raise TypeError(f"allowed_transitions as a matrix must be boolean, got dtype {allowed.dtype}")
        if allowed.shape != (k, k):
            raise ValueError(f"allowed_transitions has shape {allowed.shape}, expected ({k}, {k}) for the "
                             f"{k} classes")
        return allowed.copy()
    index = {label: i for i, label in enumerate(np.asarray(classes).tolist())}
    mask = np.zeros((k, k), dtype=bool)
    for pair in allowed:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"allowed_transitions must hold (label_from, label_to) pairs, got {pair!r:.80}")
        a, b = (p.item() if isinstance(p, np.generic) else p for p in pair)
        if a in index and b in index:
            mask[index[a], index[b]] = True
    return mask


def mask_pairwise(pairwise: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Pairwise log-potentials with ``-inf`` where ``mask`` forbids the pair.

    Parameters
    ----------
    pairwise : ndarray of shape (K, K) or (E, K, K)
    mask : ndarray of bool of shape (K, K) or None

    Returns
    -------
    ndarray
        ``pairwise`` itself when ``mask`` is None, else a new array of its shape.
    """
    if mask is None:
        return pairwise
    return np.where(mask, pairwise, -np.inf)


def violations(codes: np.ndarray, edges: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The edges whose label pair is forbidden by ``mask``.

    Parameters
    ----------
    codes : ndarray of shape (n_nodes,), int
        Label codes; ``-1`` (unknown label) never violates.
    edges : ndarray of shape (n_edges, 2), int
    mask : ndarray of bool of shape (K, K)

    Returns
    -------
    ndarray of int
        Indices ``e`` with ``mask[codes[s], codes[t]]`` False for ``edges[e] = (s, t)``.
    """
    s, t = codes[edges[:, 0]], codes[edges[:, 1]]
    known = (s >= 0) & (t >= 0)
    bad = np.zeros(len(edges), dtype=bool)
    bad[known] = ~mask[s[known], t[known]]
    return np.flatnonzero(bad)


def bio_transitions(labels: Sequence[Hashable], *, outside: str = "O", sep: str = "-") -> list[tuple]:
    """The allowed transitions of the BIO (IOB2) tagging scheme, as (label_from, label_to) pairs.

    ``I-X`` may only follow ``B-X`` or ``I-X``; every other transition is allowed. Pass the
    result as ``CRF(allowed_transitions=bio_transitions(tags))``.

    Parameters
    ----------
    labels : sequence of str
        The tag set, e.g. ``["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]``.
    outside : str, default="O"
        The outside tag.
    sep : str, default="-"
        Separator between the ``B``/``I`` prefix and the entity type.

    Returns
    -------
    list of tuple
        Every allowed ordered pair of ``labels``.

    Raises
    ------
    ValueError
        A label that is neither ``outside`` nor ``B<sep>X`` / ``I<sep>X``.

    Examples
    --------
    >>> pairs = bio_transitions(["O", "B-PER", "I-PER"])
    >>> ("O", "I-PER") in pairs, ("B-PER", "I-PER") in pairs
    (False, True)
    """
    parsed = {}
    for label in dict.fromkeys(labels):
        if label == outside:
            parsed[label] = (outside, None)
            continue
        prefix, _, kind = str(label).partition(sep)
        if not isinstance(label, str) or prefix not in ("B", "I") or not kind:
            raise ValueError(f"label {label!r} is not BIO: expected {outside!r}, 'B{sep}X' or 'I{sep}X'")
        parsed[label] = (prefix, kind)
    pairs = []
    for a, (_, kind_a) in parsed.items():
        for b, (prefix_b, kind_b) in parsed.items():
            if prefix_b != "I" or kind_a == kind_b:
                pairs.append((a, b))
    return pairs
