"""Potentials of pairwise CRFs: the joint feature map, with no learned state.

A :class:`PairwiseModel` maps a weight vector ``w`` and a :class:`~crflearn.graphs.GraphBatch`
to log-potentials (scores, larger is more likely) and back (joint features of
labelings or marginals). Learners touch a model only through these methods.

Weight layout (``w`` is flat, length :attr:`PairwiseModel.size`):

* unary block ``W_u`` of shape ``(n_states, n_features + fit_intercept)``:
  ``unary[v, k] = W_u[k, :p] . x_v + W_u[k, p]`` (the last column is the per-label intercept
  when ``fit_intercept=True``; only this module knows that);
* pairwise block ``W_p`` of shape ``(n_states, n_states)`` when there are no edge
  features (one matrix shared by all edges), or ``(n_edge_features, n_states, n_states)``
  with ``pairwise[e] = sum_f x_e[f] W_p[f]``.

``pairwise[e, a, b]`` scores ``y_s = a, y_t = b`` for ``edges[e] = (s, t)``.
Kernels read features through one bundled :class:`FeatureView` (:meth:`PairwiseModel.feature_view`)
and weights in the kernel layout of :meth:`PairwiseModel.to_kernel` / :meth:`PairwiseModel.from_kernel`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ._validation import check_batch_structure, check_labels
from .graphs import GraphBatch

__all__ = ["PairwiseModel", "FeatureView", "hamming_loss_vectors"]

#: dense node features with at most this fraction of non-zeros go to the kernels as CSR (``form="auto"``)
CSR_DENSITY = 0.5


class FeatureView(NamedTuple):
    """Node and edge features of a batch as the kernels read them (built once per fit).

    Node features include the intercept column (last) when the model fits one.

    Attributes
    ----------
    dense : ndarray (n_nodes, n_inputs) or (0, 1)
        Dense node features, or an empty placeholder when ``sparse``.
    indptr, indices, data : ndarray
        CSR node features (sorted indices, explicit zeros removed), or empty placeholders
        (``indptr`` of length 1) when not ``sparse``.
    sparse : bool
        Whether the kernels should read the CSR form.
    sq_norms : ndarray (n_nodes,)
        ``||x_v||^2`` of every node (intercept included).
    edge_features : ndarray (n_edges, q)
        Edge features; a column of ones (``q = 1``) when pairwise potentials are shared.
    edge_sq_norms : ndarray (n_edges,)
        ``||x_e||^2`` of every edge.
    shared : bool
        Whether one ``(K, K)`` pairwise matrix is shared by all edges.
    """

    dense: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    sparse: bool
    sq_norms: np.ndarray
    edge_features: np.ndarray
    edge_sq_norms: np.ndarray
    shared: bool


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
    fit_intercept : bool, default=False
        Add a per-label intercept to the unary scores (stored as the last column of ``W_u``).
    """

    def __init__(self, n_states: int, n_features: int, n_edge_features: int | None = None, *,
                 fit_intercept: bool = False):
        if n_states < 1:
            raise ValueError(f"n_states must be >= 1, got {n_states}")
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if n_edge_features is not None and n_edge_features < 1:
            raise ValueError(f"n_edge_features must be >= 1 or None, got {n_edge_features}")
        self.n_states = int(n_states)
        self.n_features = int(n_features)
        self.n_edge_features = None if n_edge_features is None else int(n_edge_features)
        self.fit_intercept = bool(fit_intercept)

    def __repr__(self) -> str:
        return (f"PairwiseModel(n_states={self.n_states}, n_features={self.n_features}, "
                f"n_edge_features={self.n_edge_features}, fit_intercept={self.fit_intercept})")

    # -- layout -------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        """Columns of ``W_u``: the node features plus the intercept column when fitted."""
        return self.n_features + int(self.fit_intercept)

    @property
    def size_unary(self) -> int:
        return self.n_states * self.n_inputs

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
        return (w[: self.size_unary].reshape(self.n_states, self.n_inputs),
                w[self.size_unary:].reshape(self.pairwise_shape))

    def join(self, unary_weights: np.ndarray, pairwise_weights: np.ndarray) -> np.ndarray:
        """Flat weight vector from ``(W_u, W_p)`` (``W_u`` with the intercept column when fitted)."""
        return np.concatenate([np.asarray(unary_weights, dtype=np.float64).ravel(),
                               np.asarray(pairwise_weights, dtype=np.float64).ravel()])

    def unary_coef(self, w: np.ndarray) -> np.ndarray:
        """View ``(n_states, n_features)`` of the unary weights, intercept excluded."""
        return self.split(w)[0][:, : self.n_features]

    def intercept(self, w: np.ndarray) -> np.ndarray:
        """Per-label intercept ``(n_states,)``: a view of ``w``, or zeros when not fitted."""
        wu = self.split(w)[0]
        return wu[:, self.n_features] if self.fit_intercept else np.zeros(self.n_states)

    def pairwise_coef(self, w: np.ndarray) -> np.ndarray:
        """View of the pairwise weights, shape :attr:`pairwise_shape`."""
        return self.split(w)[1]

    def to_kernel(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights in the kernel layout: ``wuT (n_inputs, K)`` and ``wp (q, K*K)`` (copies, C order).

        ``q`` is 1 for shared pairwise potentials (matching the ones column of
        :attr:`FeatureView.edge_features`).
        """
        wu, wp = self.split(w)
        k = self.n_states
        return np.array(wu.T, order="C"), np.array(wp.reshape(-1, k * k), order="C")

    def from_kernel(self, wuT: np.ndarray, wp: np.ndarray) -> np.ndarray:
        """Flat weight vector from the kernel layout of :meth:`to_kernel`."""
        return self.join(np.asarray(wuT).T, np.asarray(wp).reshape(self.pairwise_shape))

    def design(self, batch: GraphBatch):
        """Node features with the intercept column of ones appended (last) when fitted."""
        x = batch.node_features
        if not self.fit_intercept:
            return x
        ones = np.ones((x.shape[0], 1))
        if sp.issparse(x):
            return sp.hstack([x, sp.csr_matrix(ones)], format="csr")
        return np.hstack([x, ones])

    def feature_view(self, batch: GraphBatch, form: str = "auto") -> FeatureView:
        """The batch's features bundled for the kernels (see :class:`FeatureView`).

        Parameters
        ----------
        batch : GraphBatch
        form : {"auto", "csr", "dense"}
            ``"csr"``: always CSR; ``"dense"``: always dense; ``"auto"``: CSR for sparse input
            or dense input with at most ``CSR_DENSITY`` non-zeros, dense otherwise.
        """
        if form not in ("auto", "csr", "dense"):
            raise ValueError(f"form must be 'auto', 'csr' or 'dense', got {form!r}")
        raw = batch.node_features
        if form == "auto":
            size = raw.shape[0] * self.n_inputs
            nnz = (raw.nnz if sp.issparse(raw) else np.count_nonzero(raw)) + raw.shape[0] * self.fit_intercept
            use_csr = sp.issparse(raw) or (size > 0 and nnz <= CSR_DENSITY * size)
        else:
            use_csr = form == "csr"
        if use_csr and not sp.issparse(raw):
            dense = np.zeros((0, 1))
            indptr, indices, data, sq = self._dense_to_csr(raw)
        elif use_csr:
            mat = sp.csr_matrix(self.design(batch), dtype=np.float64, copy=True)
            mat.eliminate_zeros()
            mat.sort_indices()
            dense = np.zeros((0, 1))
            indptr = np.ascontiguousarray(mat.indptr, dtype=np.int64)
            indices = np.ascontiguousarray(mat.indices, dtype=np.int64)
            data = np.ascontiguousarray(mat.data, dtype=np.float64)
            sq = np.asarray(mat.multiply(mat).sum(axis=1), dtype=np.float64).ravel()
        else:
            x = self.design(batch)
            dense = np.ascontiguousarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
            indptr, indices, data = np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0)
            sq = np.einsum("ij,ij->i", dense, dense)
        shared = self.n_edge_features is None
        if shared:
            ef = np.ones((batch.n_edges, 1))
        else:
            ef = np.ascontiguousarray(batch.edge_features, dtype=np.float64).reshape(batch.n_edges, -1)
        return FeatureView(dense, indptr, indices, data, bool(use_csr), np.ascontiguousarray(sq), ef,
                           np.einsum("ij,ij->i", ef, ef), shared)

    def _dense_to_csr(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, indices, data, sq_norms)`` of the design of dense features ``x``, zeros dropped and
        indices sorted, built directly (no COO, no copy with the ones column)."""
        x = np.asarray(x, dtype=np.float64)
        mask = x != 0
        counts = np.count_nonzero(mask, axis=1) + int(self.fit_intercept)
        indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        cols = np.nonzero(mask)[1].astype(np.int64, copy=False)
        values = x[mask]
        del mask
        if not self.fit_intercept:
            return indptr, cols, values, _row_sq_norms(indptr, values)
        is_feature = np.ones(indptr[-1], dtype=bool)
        is_feature[indptr[1:] - 1] = False  # the intercept closes every row
        indices = np.full(indptr[-1], self.n_features, dtype=np.int64)
        indices[is_feature] = cols
        data = np.ones(indptr[-1])
        data[is_feature] = values
        return indptr, indices, data, _row_sq_norms(indptr, data)

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
        unary = np.asarray(batch.node_features @ wu[:, : self.n_features].T, dtype=np.float64)
        if self.fit_intercept:
            unary = unary + wu[:, self.n_features]
        unary = np.ascontiguousarray(unary)
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
        wu = self._unary_statistic(batch, node_marg)
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
        wu = self._unary_statistic(batch, mu)
        em = np.asarray(edge_marginals, dtype=np.float64)
        if self.n_edge_features is None:
            wp = em if em.ndim == 2 else em.sum(axis=0) if len(em) else np.zeros((k, k))
        else:
            if em.ndim != 3:
                raise ValueError("per-edge marginals are needed with edge features")
            wp = (batch.edge_features.T @ em.reshape(len(em), k * k)).reshape(self.pairwise_shape)
        return self.join(np.asarray(wu), wp)

    def _unary_statistic(self, batch: GraphBatch, node_stat: np.ndarray) -> np.ndarray:
        """``node_stat^T X`` (K, n_inputs), with the column sums of ``node_stat`` for the intercept."""
        x = batch.node_features
        wu = np.asarray((x.T @ node_stat).T if sp.issparse(x) else node_stat.T @ x)
        if self.fit_intercept:
            wu = np.hstack([wu, node_stat.sum(axis=0)[:, None]])
        return wu

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


def _row_sq_norms(indptr: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Squared row norms of a CSR matrix, summed as scipy's ``mat.multiply(mat).sum(axis=1)``."""
    sq = np.zeros(len(indptr) - 1)
    rows = np.flatnonzero(np.diff(indptr))
    if len(rows):
        sq[rows] = np.add.reduceat(data * data, indptr[rows])
    return sq


def hamming_loss_vectors(batch: GraphBatch, n_states: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Per-node Hamming loss ``l[v, k] = [k != y_v]`` (unnormalised), shape (n_nodes, n_states).

    The structured loss of a labeling is the number of wrong nodes; adding this
    array to the unary potentials gives margin-rescaled loss-augmented inference.
    """
    y = batch.labels if labels is None else np.asarray(labels, dtype=np.int64)
    loss = np.ones((batch.n_nodes, n_states))
    loss[np.arange(batch.n_nodes), y] = 0.0
    return loss
