"""Potentials of pairwise CRFs: the joint feature map, with no learned state.

A :class:`PairwiseModel` maps a weight vector ``w`` and a :class:`~crflearn.graphs.GraphBatch`
to log-potentials (scores, larger is more likely) and back (joint features of
labelings or marginals). Learners touch a model only through these methods.

Weight layout (``w`` is flat, length :attr:`PairwiseModel.size`):

* unary block ``W_u`` of shape ``(n_states, n_features)``: ``unary[v, k] = W_u[k] . x_v``;
* pairwise block ``W_p`` of shape ``(n_states, n_states)`` when there are no edge
  features (one matrix shared by all edges), or ``(n_edge_features, n_states, n_states)``
  with ``pairwise[e] = sum_f x_e[f] W_p[f]``.

``pairwise[e, a, b]`` scores ``y_s = a, y_t = b`` for ``edges[e] = (s, t)``.
A bias is not special: append a constant feature (:meth:`GraphBatch.with_bias`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._validation import check_batch_structure, check_labels
from .graphs import GraphBatch

__all__ = ["PairwiseModel", "hamming_loss_vectors"]


class PairwiseModel:
    """Linear pairwise CRF potentials.

    Parameters
    ----------
    n_states : int
        Number of labels ``K``.
    n_features : int
        Node feature dimension ``p``.
    n_edge_features : int or None
        Edge feature dimension ``q``; None for a single shared ``K x K`` matrix.
    """

    def __init__(self, n_states: int, n_features: int, n_edge_features: int | None = None):
        if n_states < 1:
            raise ValueError(f"n_states must be >= 1, got {n_states}")
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if n_edge_features is not None and n_edge_features < 1:
            raise ValueError(f"n_edge_features must be >= 1 or None, got {n_edge_features}")
        self.n_states = int(n_states)
        self.n_features = int(n_features)
        self.n_edge_features = None if n_edge_features is None else int(n_edge_features)

    def __repr__(self) -> str:
        return (f"PairwiseModel(n_states={self.n_states}, n_features={self.n_features}, "
                f"n_edge_features={self.n_edge_features})")

    # -- layout -------------------------------------------------------------------------
    @property
    def size_unary(self) -> int:
        return self.n_states * self.n_features

    @property
    def pairwise_shape(self) -> tuple[int, ...]:
        k = self.n_states
        return (k, k) if self.n_edge_features is None else (self.n_edge_features, k, k)

    @property
    def size(self) -> int:
        """Length of the flat weight vector."""
        return self.size_unary + int(np.prod(self.pairwise_shape))

    def split(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views ``(W_u, W_p)`` of a flat weight vector."""
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (self.size,):
            raise ValueError(f"w must have shape ({self.size},), got {w.shape}")
        return (w[: self.size_unary].reshape(self.n_states, self.n_features),
                w[self.size_unary:].reshape(self.pairwise_shape))

    def join(self, unary_weights: np.ndarray, pairwise_weights: np.ndarray) -> np.ndarray:
        """Flat weight vector from ``(W_u, W_p)``."""
        return np.concatenate([np.asarray(unary_weights, dtype=np.float64).ravel(),
                               np.asarray(pairwise_weights, dtype=np.float64).ravel()])

    def check_batch(self, batch: GraphBatch) -> None:
        """Raise ``ValueError`` if ``batch`` does not fit this model."""
        if batch.n_features != self.n_features:
            raise ValueError(f"the data has {batch.n_features} node features, the model expects {self.n_features}")
        if batch.n_edge_features != self.n_edge_features:
            raise ValueError(f"the data has {batch.n_edge_features} edge features, "
                             f"the model expects {self.n_edge_features}")
        check_batch_structure(batch.edges, batch.node_offsets, batch.edge_offsets, batch.n_nodes)
        if batch.node_features.shape[0] != batch.n_nodes:
            raise ValueError(f"the batch has {batch.node_features.shape[0]} feature rows but "
                             f"node_offsets[-1] = {batch.n_nodes}")
        if batch.edge_features is not None and batch.edge_features.shape[0] != batch.n_edges:
            raise ValueError(f"the batch has {batch.edge_features.shape[0]} edge feature rows but "
                             f"{batch.n_edges} edges")
        if batch.labels is not None:
            check_labels(batch.labels, batch.n_nodes, self.n_states, name="batch.labels")

    # -- potentials -----------------------------------------------------------------------
    def potentials(self, w: np.ndarray, batch: GraphBatch) -> tuple[np.ndarray, np.ndarray]:
        """Log-potentials of every node and edge of the batch.

        Returns
        -------
        unary : ndarray (n_nodes, n_states)
        pairwise : ndarray (n_states, n_states) if shared, else (n_edges, n_states, n_states)
        """
        wu, wp = self.split(w)
        unary = np.ascontiguousarray(batch.node_features @ wu.T, dtype=np.float64)
        if self.n_edge_features is None:
            pairwise = np.ascontiguousarray(wp)
        else:
            k = self.n_states
            pairwise = np.ascontiguousarray(
                (batch.edge_features @ wp.reshape(self.n_edge_features, k * k)).reshape(-1, k, k))
        return unary, pairwise

    # -- joint features ---------------------------------------------------------------------
    def joint_feature(self, batch: GraphBatch, labels: np.ndarray | None = None) -> np.ndarray:
        """Sum over the batch of the joint feature map of a labeling.

        Parameters
        ----------
        labels : ndarray (n_nodes,) int, optional
            Defaults to ``batch.labels``.
        """
        y = batch.labels if labels is None else np.asarray(labels, dtype=np.int64)
        if y is None:
            raise ValueError("joint_feature needs labels")
        k = self.n_states
        node_marg = np.zeros((batch.n_nodes, k))
        node_marg[np.arange(batch.n_nodes), y] = 1.0
        wu = np.asarray(node_marg.T @ batch.node_features if not batch.is_sparse
                        else (batch.node_features.T @ node_marg).T)
        if self.n_edge_features is None:
            wp = np.zeros((k, k))
            if batch.n_edges:
                np.add.at(wp, (y[batch.edges[:, 0]], y[batch.edges[:, 1]]), 1.0)
        else:
            flat = y[batch.edges[:, 0]] * k + y[batch.edges[:, 1]]
            wp = np.zeros((self.n_edge_features, k * k))
            for f in range(self.n_edge_features):
                wp[f] = np.bincount(flat, weights=batch.edge_features[:, f], minlength=k * k)
            wp = wp.reshape(self.pairwise_shape)
        return self.join(wu, wp)

    def expected_joint_feature(self, batch: GraphBatch, node_marginals: np.ndarray,
                               edge_marginals: np.ndarray) -> np.ndarray:
        """Sum over the batch of the joint feature map under marginals.

        Parameters
        ----------
        node_marginals : ndarray (n_nodes, n_states)
        edge_marginals : ndarray (n_edges, n_states, n_states), or (n_states, n_states)
            already summed over edges (only for shared pairwise potentials).
        """
        k = self.n_states
        mu = np.asarray(node_marginals, dtype=np.float64)
        x = batch.node_features
        wu = (x.T @ mu).T if sp.issparse(x) else mu.T @ x
        em = np.asarray(edge_marginals, dtype=np.float64)
        if self.n_edge_features is None:
            wp = em if em.ndim == 2 else em.sum(axis=0) if len(em) else np.zeros((k, k))
        else:
            if em.ndim != 3:
                raise ValueError("per-edge marginals are needed with edge features")
            wp = (batch.edge_features.T @ em.reshape(len(em), k * k)).reshape(self.pairwise_shape)
        return self.join(np.asarray(wu), wp)

    def score(self, w: np.ndarray, batch: GraphBatch, labels: np.ndarray | None = None) -> np.ndarray:
        """Score ``<w, psi(x_i, y_i)>`` of each example's labeling, shape (n_examples,)."""
        y = batch.labels if labels is None else np.asarray(labels, dtype=np.int64)
        unary, pairwise = self.potentials(w, batch)
        node_scores = unary[np.arange(batch.n_nodes), y]
        if batch.n_edges:
            s, t = batch.edges[:, 0], batch.edges[:, 1]
            edge_scores = (pairwise[y[s], y[t]] if pairwise.ndim == 2
                           else pairwise[np.arange(batch.n_edges), y[s], y[t]])
        else:
            edge_scores = np.zeros(0)
        out = np.add.reduceat(node_scores, batch.node_offsets[:-1])
        counts = np.diff(batch.edge_offsets)
        if batch.n_edges:
            edge_sum = np.zeros(batch.n_examples)
            ex = np.repeat(np.arange(batch.n_examples), counts)
            np.add.at(edge_sum, ex, edge_scores)
            out = out + edge_sum
        return out


def hamming_loss_vectors(batch: GraphBatch, n_states: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Per-node Hamming loss ``l[v, k] = [k != y_v]`` (unnormalised), shape (n_nodes, n_states).

    The structured loss of a labeling is the number of wrong nodes; adding this
    array to the unary potentials gives margin-rescaled loss-augmented inference.
    """
    y = batch.labels if labels is None else np.asarray(labels, dtype=np.int64)
    loss = np.ones((batch.n_nodes, n_states))
    loss[np.arange(batch.n_nodes), y] = 0.0
    return loss
