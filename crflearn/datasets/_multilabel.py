"""Multi-label classification as a CRF on a complete graph over the labels."""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.utils import check_random_state

from .._validation import check_int, check_nonnegative, check_positive

__all__ = ["make_multilabel_graph"]


def make_multilabel_graph(n_samples: int = 200, n_features: int = 5, n_labels: int = 6, *,
                          coupling: float = 3.0, temperature: float = 0.25, random_state=None):
    """Multi-label data drawn from a pairwise model on the complete graph over the labels.

    Each sample has an input ``x ~ N(0, I)`` of ``n_features`` values and
    ``n_labels`` binary labels drawn exactly (by enumerating the
    ``2 ** n_labels`` labellings) from

    ``p(y | x) ∝ exp((sum_j y_j (x @ W[:, j] + b_j) + sum_{j<k} J_jk [y_j == y_k]) / temperature)``

    with ``W ~ N(0, 1)``, ``b ~ N(0, 0.5^2)`` and couplings ``J_jk`` uniform in
    ``[-coupling, coupling]``: the labels depend on each other given ``x``, which
    independent per-label classifiers cannot use. At a low temperature the
    labels are nearly the most likely labelling of that pairwise model, whose
    per-label decision is not linear in ``x`` (frustrated couplings): a CRF
    then beats independent logistic regressions in Hamming loss.

    Parameters
    ----------
    n_samples : int, default=200
    n_features : int, default=5
        Dimension of the inputs ``x``.
    n_labels : int, default=6
        Number of binary labels (nodes of the complete graph), at most 12.
    coupling : float, default=3.0
        Largest absolute pairwise coupling (0: independent labels given ``x``).
    temperature : float, default=0.25
        Divides the scores: small values make the labels nearly deterministic
        given ``x``, large ones noisy.
    random_state : int, RandomState instance or None
        Seed; the model (``W``, ``b``, ``J``) and the samples both come from it.

    Returns
    -------
    X : list of tuples ``(node_features, edges, edge_features)``
        One complete graph per sample, for :class:`crflearn.CRF`. Node ``j``
        (label ``j``) has ``n_labels * n_features + n_labels`` features: ``x`` in
        block ``j`` (zeros in the other blocks), then the one-hot of ``j`` (a
        per-label bias). ``edges`` lists the pairs ``j < k``; ``edge_features``
        is the one-hot of the edge index (one 2 x 2 table per label pair).
    y : list of int64 arrays of shape (n_labels,)
        Labels (0 or 1) of the nodes.
    inputs : ndarray of shape (n_samples, n_features)
        The raw inputs ``x``, for per-label baselines.
    label_matrix : ndarray of shape (n_samples, n_labels)
        ``np.vstack(y)``.
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_features = check_int(n_features, "n_features", 1)
    n_labels = check_int(n_labels, "n_labels", 2)
    if n_labels > 12:
        raise ValueError(f"n_labels must be at most 12 (labellings are enumerated), got {n_labels}")
    coupling = check_nonnegative(coupling, "coupling")
    temperature = check_positive(temperature, "temperature")
    rng = check_random_state(random_state)

    weights = rng.standard_normal((n_features, n_labels))
    bias = 0.5 * rng.standard_normal(n_labels)
    edges = np.array(list(itertools.combinations(range(n_labels), 2)), dtype=np.int64)
    couplings = rng.uniform(-coupling, coupling, size=len(edges))
    labellings = np.array(list(itertools.product((0, 1), repeat=n_labels)), dtype=np.int64)  # (2^L, L)
    agree = (labellings[:, edges[:, 0]] == labellings[:, edges[:, 1]]) @ couplings  # (2^L,)

    inputs = rng.standard_normal((n_samples, n_features))
    scores = ((inputs @ weights + bias) @ labellings.T + agree) / temperature  # (n, 2^L)
    prob = np.exp(scores - scores.max(axis=1, keepdims=True))
    cumulative = np.cumsum(prob / prob.sum(axis=1, keepdims=True), axis=1)
    draws = (cumulative < rng.uniform(size=(n_samples, 1))).sum(axis=1)
    label_matrix = labellings[np.minimum(draws, len(labellings) - 1)]

    edge_features = np.eye(len(edges))
    node_ids = np.eye(n_labels)
    X, y = [], []
    for x, labels in zip(inputs, label_matrix):
        blocks = np.kron(node_ids, x[None, :])  # (L, L * n_features): x in block j of row j
        X.append((np.hstack([blocks, node_ids]), edges.copy(), edge_features.copy()))
        y.append(labels.copy())
    return X, y, inputs, label_matrix
