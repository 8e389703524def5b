"""Compact storage of IDAL's edge marginals: at most ``m`` non-zero entries per edge block.

The dense layout holds every edge block ``mu_e`` as K*K float64 (5,408 bytes per edge for K = 26), the
largest part of IDAL's memory. Gini edge blocks are sparse (their block optimum is a sparsemax: on OCR at a
certified relative gap of 1e-3, 99 % of the blocks have at most 25 entries above 1e-6), so
:class:`CompactEdges` keeps ``m`` (index, value) slots per edge instead: ``12 m`` bytes.

The kernels of :mod:`crflearn._kernels.idal` and :mod:`crflearn._kernels.idal_monitor` take either layout
as ``mu_e`` through the accessors below (Numba overloads, resolved at compile time; the dense layout
compiles to exactly the code it had before):

* :func:`edge_row` -- the block of edge ``e`` as a K*K row (dense: a view of ``mu_e[e]``; compact: the
  entries scattered into the all-zero scratch row ``row``);
* :func:`edge_done` -- after reading it: the scratch row back to zero (dense: nothing);
* :func:`edge_store` -- after updating it in place: the row's non-zero entries stored back in order and
  the scratch row zeroed (dense: nothing, the update went through the view);
* :func:`edge_capacity` -- the largest support a block may have (dense: K*K);
* :func:`edge_values` -- the 2-D array of the values, a row per edge (``mu_e`` or ``val``: cache hints).

A block update whose result would exceed the capacity is replaced by the best capacity-sparse point
near it (see :func:`crflearn._kernels.idal._gini_truncated`); the weights and messages always follow the
stored values exactly, so ``w = w(mu)`` and the certificate hold as in the dense layout.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

__all__ = ["CompactEdges", "compact_edges", "one_hot_edges", "edge_row", "edge_done", "edge_store",
           "edge_capacity", "edge_values", "DEFAULT_CAPACITY"]

#: slots per edge of the compact layout by default (OCR, K = 26: 99 % of the converged blocks have at most
#: 25 entries above 1e-6; 384 bytes per edge instead of 5,408)
DEFAULT_CAPACITY = 32


class CompactEdges(NamedTuple):
    """Edge marginals with at most ``m = idx.shape[1]`` non-zeros per edge: the entries ``a * K + b`` of edge
    ``e`` are ``idx[e, :nnz[e]]`` (increasing) with values ``val[e, :nnz[e]]``; ``kk = K * K``.

    ``shape`` and ``reshape`` answer as the dense ``(E, K*K)`` array would (``reshape`` builds it: memory)."""

    idx: np.ndarray
    val: np.ndarray
    nnz: np.ndarray
    kk: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.val.shape[0], int(self.kk))

    @property
    def capacity(self) -> int:
        return self.val.shape[1]

    def to_dense(self) -> np.ndarray:
        """The dense ``(E, K*K)`` array."""
        n_edges, m = self.val.shape
        out = np.zeros((n_edges, int(self.kk)))
        used = np.arange(m)[None, :] < self.nnz[:, None]
        rows = np.broadcast_to(np.arange(n_edges)[:, None], (n_edges, m))
        out[rows[used], self.idx[used]] = self.val[used]
        return out

    def reshape(self, *shape) -> np.ndarray:
        return self.to_dense().reshape(*shape)


def one_hot_edges(flat: np.ndarray, kk: int, capacity: int) -> CompactEdges:
    """The one-hot blocks with entry ``flat[e]`` on edge ``e``."""
    n_edges = len(flat)
    idx = np.zeros((n_edges, capacity), np.int32)
    idx[:, 0] = flat
    val = np.zeros((n_edges, capacity))
    val[:, 0] = 1.0
    return CompactEdges(idx, val, np.ones(n_edges, np.int32), int(kk))


def compact_edges(dense: np.ndarray, capacity: int) -> CompactEdges:
    """The compact form of dense blocks ``(E, K*K)``; a block with more than ``capacity`` non-zeros keeps
    its ``capacity`` largest entries, renormalised to sum to 1 (still in the simplex)."""
    n_edges, kk = dense.shape
    m = min(capacity, kk)
    top = np.sort(np.argpartition(-dense, m - 1, axis=1)[:, :m], axis=1) if m < kk else np.tile(np.arange(kk),
                                                                                                (n_edges, 1))
    vals = np.take_along_axis(dense, top, axis=1)
    over = (dense != 0).sum(axis=1) > m
    if np.any(over):
        vals[over] = np.maximum(vals[over], 0.0)
        vals[over] /= vals[over].sum(axis=1, keepdims=True)
    idx = np.zeros((n_edges, capacity), np.int32)
    val = np.zeros((n_edges, capacity))
    nnz = (vals != 0).sum(axis=1).astype(np.int32)
    order = np.argsort(vals == 0, axis=1, kind="stable")  # non-zeros first, in increasing entry order
    idx[:, :m] = np.take_along_axis(top, order, axis=1)
    val[:, :m] = np.take_along_axis(vals, order, axis=1)
    return CompactEdges(idx, val, nnz, int(kk))


def edge_row(mu_e, e, row):
    """The K*K block of edge ``e`` (see the module docstring)."""
    raise NotImplementedError("edge_row is a Numba overload")


def edge_done(mu_e, e, row):
    """Zero the scratch row after :func:`edge_row` (see the module docstring)."""
    raise NotImplementedError("edge_done is a Numba overload")


def edge_store(mu_e, e, row):
    """Store the updated row of edge ``e`` (see the module docstring)."""
    raise NotImplementedError("edge_store is a Numba overload")


def edge_capacity(mu_e):
    """The largest support a block may have (see the module docstring)."""
    raise NotImplementedError("edge_capacity is a Numba overload")


def edge_values(mu_e):
    """The 2-D array holding the values of the blocks, one row per edge (see the module docstring)."""
    raise NotImplementedError("edge_values is a Numba overload")


def _dense_row(mu_e, e, row):
    return mu_e[e]


def _compact_row(mu_e, e, row):
    for j in range(mu_e.nnz[e]):
        row[mu_e.idx[e, j]] = mu_e.val[e, j]
    return row


def _dense_nothing(mu_e, e, row):
    return None


def _compact_done(mu_e, e, row):
    for j in range(mu_e.nnz[e]):
        row[mu_e.idx[e, j]] = 0.0


def _compact_store(mu_e, e, row):
    m = mu_e.val.shape[1]
    n = 0
    for i in range(row.shape[0]):
        x = row[i]
        if x != 0.0:
            if n < m:  # the updates never exceed the capacity (see the module docstring)
                mu_e.idx[e, n] = i
                mu_e.val[e, n] = x
                n += 1
            row[i] = 0.0
    mu_e.nnz[e] = n


# the overloads pick the implementation of the layout at compile time
@overload(edge_row)
def _edge_row(mu_e, e, row):
    return _dense_row if isinstance(mu_e, types.Array) else _compact_row


@overload(edge_done)
def _edge_done(mu_e, e, row):
    return _dense_nothing if isinstance(mu_e, types.Array) else _compact_done


@overload(edge_store)
def _edge_store(mu_e, e, row):
    return _dense_nothing if isinstance(mu_e, types.Array) else _compact_store


@overload(edge_capacity)
def _edge_capacity(mu_e):
    return (lambda mu_e: mu_e.shape[1]) if isinstance(mu_e, types.Array) else (lambda mu_e: mu_e.val.shape[1])


@overload(edge_values)
def _edge_values(mu_e):
    return (lambda mu_e: mu_e) if isinstance(mu_e, types.Array) else (lambda mu_e: mu_e.val)
