"""Array preparation shared by the IDAL solver and Gini-relaxed inference (plain NumPy).

These helpers build the flat arrays the kernels of :mod:`crflearn._kernels.idal` read
and perform the outer (multiplier) step. They do no input validation: callers validate.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["incidence", "constraint_residual", "csr_arrays", "empty_features"]


def incidence(edges: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Node -> separator incidence in CSR form.

    Returns ``inc_ptr`` (n_nodes + 1,) and ``inc_slot`` (2 E,) where the slots of node
    ``v`` are ``inc_slot[inc_ptr[v]:inc_ptr[v + 1]]`` and ``slot = 2 * e + side``
    (``side`` 0 when ``v == edges[e, 0]``, 1 when ``v == edges[e, 1]``).
    """
    n_edges = len(edges)
    owner = np.concatenate([edges[:, 0], edges[:, 1]]) if n_edges else np.zeros(0, np.int64)
    slots = np.concatenate([2 * np.arange(n_edges), 2 * np.arange(n_edges) + 1]).astype(np.int64)
    perm = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=n_nodes) if n_edges else np.zeros(n_nodes, np.int64)
    inc_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return inc_ptr, np.ascontiguousarray(slots[perm], dtype=np.int64)


def constraint_residual(mu_n: np.ndarray, mu_e: np.ndarray, edges: np.ndarray, n_states: int) -> np.ndarray:
    """``A mu`` as an array (E, 2, K): row sums minus ``mu_s``, column sums minus ``mu_t``."""
    k = n_states
    me = mu_e.reshape(-1, k, k)
    out = np.empty((len(edges), 2, k))
    if len(edges):
        out[:, 0] = me.sum(axis=2) - mu_n[edges[:, 0]]
        out[:, 1] = me.sum(axis=1) - mu_n[edges[:, 1]]
    return out


def csr_arrays(features) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays ``(indptr, indices, data, row_sq_norms)`` of dense or sparse node features."""
    mat = sp.csr_matrix(features, dtype=np.float64)
    mat.eliminate_zeros()
    mat.sort_indices()
    sq = np.asarray(mat.multiply(mat).sum(axis=1), dtype=np.float64).ravel()
    return (np.ascontiguousarray(mat.indptr, dtype=np.int64), np.ascontiguousarray(mat.indices, dtype=np.int64),
            np.ascontiguousarray(mat.data, dtype=np.float64), sq)


def empty_features(n_nodes: int, n_edges: int, n_states: int):
    """Empty feature arrays for uncoupled (fixed-potential) runs: CSR without entries, q = 0."""
    return dict(x_ptr=np.zeros(n_nodes + 1, np.int64), x_idx=np.zeros(0, np.int64), x_val=np.zeros(0),
                x_sq=np.zeros(n_nodes), efeat=np.zeros((n_edges, 0)), e_sq=np.zeros(n_edges),
                wuT=np.zeros((1, n_states)), wp=np.zeros((0, n_states * n_states)))
