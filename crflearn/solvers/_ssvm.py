"""Shared structured-SVM machinery for the baseline solvers.

The margin-rescaled structured SVM with unnormalised Hamming loss minimises

.. math::

    P(w) = \\frac{\\alpha}{2} \\|w\\|^2 + \\frac{1}{n} \\sum_i H_i(w), \\qquad
    H_i(w) = \\max_y \\, [L_i(y) - \\langle w, \\delta\\psi_i(y) \\rangle],

with :math:`\\delta\\psi_i(y) = \\psi(x_i, y_i) - \\psi(x_i, y)`. Its dual (Lacoste-Julien et
al., 2013) has one simplex per example; a feasible point is summarised by the
primal-dual weights :math:`w(\\alpha) = \\frac{1}{\\alpha n} \\sum_i E_{\\alpha_i}[\\delta\\psi_i]`
and :math:`\\ell(\\alpha) = \\frac{1}{n} \\sum_i E_{\\alpha_i}[L_i]`, and its value is
:math:`D = -\\frac{\\alpha}{2} \\|w(\\alpha)\\|^2 + \\ell(\\alpha)`.

:class:`SSVMProblem` holds the per-example views of a :class:`~crflearn.graphs.GraphBatch`
that every structured-SVM solver needs: the loss-augmented oracle (one example
or the whole batch, through :mod:`crflearn.inference`), the exact primal from a
full oracle pass, and joint features of labelings or "marginals" (convex
combinations of labelings) of one example.

References
----------
.. [1] S. Lacoste-Julien, M. Jaggi, M. Schmidt, P. Pletscher. "Block-Coordinate
   Frank-Wolfe Optimization for Structural SVMs", ICML 2013.
.. [2] T. Joachims, T. Finley, C.-N. Yu. "Cutting-plane training of structural
   SVMs", Machine Learning 77(1), 2009.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from .._validation import check_nonnegative, check_positive
from ..graphs import GraphBatch
from ..models import PairwiseModel, hamming_loss_vectors

__all__ = ["SSVMProblem", "Monitor", "check_common", "check_warm_state", "relative_gap", "INFERENCE_METHODS"]

INFERENCE_METHODS = ("auto", "exact", "trws", "maxproduct", "bruteforce")

#: Run whole BCFW / subgradient epochs in one compiled kernel when the oracle is exact
#: max-product on forests (private switch: tests set it to False to reach the per-example
#: Python reference path, which computes the same iterates up to round-off).
_COMPILED_EPOCHS = True
#: Dense node features with at most this fraction of non-zeros are passed to the kernels as CSR.
_CSR_DENSITY = 0.5


def _decode(unary, pairwise, edges, method):
    """MAP labeling of one graph (lazy import: the inference layer is optional at import time)."""
    from ..inference import decode
    return decode(unary, pairwise, edges, method=method)


def _decode_batch(unary, pairwise, edges, node_offsets, edge_offsets, method):
    """MAP labelings of a whole flat batch in one call."""
    from ..inference import decode_batch
    return decode_batch(unary, pairwise, edges, node_offsets, edge_offsets, method=method)


def relative_gap(gap: float, primal: float) -> float:
    """``gap / max(|primal|, 1e-12)``, the stopping quantity of every solver."""
    return float(gap) / max(abs(float(primal)), 1e-12)


def check_common(batch, model, alpha, max_iter, tol, callback, verbose) -> tuple[float, int, float]:
    """Validate the arguments shared by every solver; return ``(alpha, max_iter, tol)``."""
    if not isinstance(batch, GraphBatch):
        raise TypeError(f"batch must be a GraphBatch, got {type(batch).__name__}")
    if not isinstance(model, PairwiseModel):
        raise TypeError(f"model must be a PairwiseModel, got {type(model).__name__}")
    if batch.labels is None:
        raise ValueError("batch.labels must be set: the solvers learn from labelled examples")
    model.check_batch(batch)
    alpha = check_positive(alpha, "alpha")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be an integer, got {max_iter!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    tol = check_nonnegative(tol, "tol")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if isinstance(verbose, bool):
        verbose = int(verbose)
    if not isinstance(verbose, numbers.Integral):
        raise TypeError(f"verbose must be an integer, got {verbose!r}")
    return alpha, int(max_iter), tol


def check_warm_state(warm_start, keys: tuple[str, ...], solver: str, alpha: float | None = None) -> dict | None:
    """Return ``warm_start`` (a previous ``SolverResult.state``) after checking it has ``keys``.

    With ``alpha`` given, the state must have been computed with the same ``alpha`` (its
    weights and dual bookkeeping are scaled by ``1 / alpha``; reusing them with another
    ``alpha`` would report invalid bounds).
    """
    if warm_start is None:
        return None
    if not isinstance(warm_start, dict):
        raise TypeError(f"warm_start must be a dict (a previous SolverResult.state) or None, "
                        f"got {type(warm_start).__name__}")
    missing = [k for k in keys if k not in warm_start]
    if missing:
        raise ValueError(f"warm_start lacks {missing}: {solver} can only warm start from the state of a "
                         f"previous {solver} run on the same data")
    if alpha is not None and "alpha" in warm_start and not np.isclose(float(warm_start["alpha"]), alpha,
                                                                          rtol=1e-12, atol=0.0):
        raise ValueError(f"warm_start was computed with alpha={float(warm_start['alpha']):g} but alpha={alpha:g}: "
                         f"{solver} can only warm start with the same alpha")
    return warm_start


def _check_method(method) -> str:
    if method not in INFERENCE_METHODS:
        raise ValueError(f"inference must be one of {list(INFERENCE_METHODS)}, got {method!r}")
    return method


class SSVMProblem:
    """Per-example views of a labelled batch for structured-SVM learning.

    Parameters
    ----------
    batch : GraphBatch
        Labelled batch.
    model : PairwiseModel
        Potentials / joint feature map.
    alpha : float
        L2 strength (lambda).
    inference : str
        MAP method passed to :mod:`crflearn.inference` (``"auto"``: exact on forests,
        approximate on loopy graphs).

    Attributes
    ----------
    n : int
        Number of examples.
    exact_oracle : bool
        Whether the loss-augmented oracle is exact (forests with an exact method).
    compiled : bool
        Whether whole epochs run in the compiled kernels of :mod:`crflearn._kernels.ssvm`
        (forests decoded by exact max-product); otherwise the per-example Python path.
    inference_note : str
        Human-readable description for ``SolverResult.info["inference"]``.
    """

    def __init__(self, batch: GraphBatch, model: PairwiseModel, alpha: float, inference: str = "auto"):
        self.alpha = float(alpha)
        self.batch = batch
        self.model = model
        self.method = _check_method(inference)
        self.n = batch.n_examples
        self.k = model.n_states
        self.shared = model.n_edge_features is None
        forest = batch.is_forest()
        if self.method == "exact" and not forest:
            raise ValueError("inference='exact' needs forests (chains/trees); the batch has a cycle")
        self.exact_oracle = bool(forest and self.method in ("auto", "exact")) or self.method == "bruteforce"
        self.compiled = bool(_COMPILED_EPOCHS and forest and self.method in ("auto", "exact"))
        self._kernel_args = None
        self.inference_note = ("exact" if self.exact_oracle else
                               f"approximate loss-augmented MAP ({self.method}); the duality gap is not certified")
        self.labels = batch.labels
        self.loss = hamming_loss_vectors(batch, self.k)
        x = batch.node_features
        self._x = [x[batch.node_slice(i)] for i in range(self.n)]
        self._edges = [np.ascontiguousarray(batch.local_edges(i)) for i in range(self.n)]
        self._ef = (None if self.shared else
                    [batch.edge_features[batch.edge_slice(i)] for i in range(self.n)])
        self._y = [self.labels[batch.node_slice(i)] for i in range(self.n)]
        self.psi_true = model.joint_feature(batch)
        self.oracle_calls = 0

    # -- compiled epochs ----------------------------------------------------------------------
    def kernel_args(self) -> tuple:
        """Leading arguments of the epoch kernels of :mod:`crflearn._kernels.ssvm` (built once).

        ``(x, indptr, indices, data, sparse, ef, shared, edges, node_offsets, edge_offsets, labels,
        K, p, order_loc, parent_loc, pedge_loc, parent_first)``: node features dense or CSR (the
        other form empty), edge features (empty when shared), and the BFS schedule of every
        example with example-local node and edge indices.
        """
        if self._kernel_args is None:
            from ..inference import make_schedule

            b = self.batch
            x = b.node_features
            # mostly-zero dense features go to the kernels as CSR: skipping zeros changes no sum
            use_csr = sp.issparse(x) or (x.size > 0 and np.count_nonzero(x) <= _CSR_DENSITY * x.size)
            if use_csr:
                csr = sp.csr_matrix(x, dtype=np.float64, copy=True)  # sorting its indices leaves b alone
                csr.sort_indices()
                dense = np.zeros((0, 1))
                indptr = np.ascontiguousarray(csr.indptr, dtype=np.int64)
                indices = np.ascontiguousarray(csr.indices, dtype=np.int64)
                data = np.ascontiguousarray(csr.data, dtype=np.float64)
            else:
                dense = np.ascontiguousarray(x, dtype=np.float64)
                indptr = np.zeros(1, dtype=np.int64)
                indices = np.zeros(0, dtype=np.int64)
                data = np.zeros(0)
            ef = (np.zeros((0, 1)) if self.shared else
                  np.ascontiguousarray(b.edge_features, dtype=np.float64))
            sched = make_schedule(b)
            lengths = np.diff(sched.node_offsets)
            node_base = np.repeat(sched.node_offsets[:-1], lengths)
            edge_base = np.repeat(sched.edge_offsets[:-1], lengths)
            order_loc = sched.order - node_base  # order[lo:hi] holds the nodes of the example of row lo
            parent_loc = np.where(sched.parent >= 0, sched.parent - node_base, -1)
            pedge_loc = np.where(sched.parent_edge >= 0, sched.parent_edge - edge_base, -1)
            self._kernel_args = (dense, indptr, indices, data, bool(use_csr), ef, self.shared,
                                 sched.edges, sched.node_offsets, sched.edge_offsets,
                                 np.ascontiguousarray(self.labels, dtype=np.int64),
                                 self.k, self.model.n_features,
                                 np.ascontiguousarray(order_loc, dtype=np.int64),
                                 np.ascontiguousarray(parent_loc, dtype=np.int64),
                                 np.ascontiguousarray(pedge_loc, dtype=np.int64),
                                 np.ascontiguousarray(sched.parent_first, dtype=np.uint8))
        return self._kernel_args

    # -- joint features of one example ---------------------------------------------------
    def edge_stat(self, i: int, labels_i: np.ndarray) -> np.ndarray:
        """Pairwise statistic of a labeling of example ``i``: ``(K, K)`` counts, or ``(E_i, K, K)`` one-hots."""
        e = self._edges[i]
        k = self.k
        if self.shared:
            out = np.zeros((k, k))
            if len(e):
                np.add.at(out, (labels_i[e[:, 0]], labels_i[e[:, 1]]), 1.0)
            return out
        out = np.zeros((len(e), k, k))
        out[np.arange(len(e)), labels_i[e[:, 0]], labels_i[e[:, 1]]] = 1.0
        return out

    def node_stat(self, labels_i: np.ndarray) -> np.ndarray:
        """One-hot matrix ``(n_i, K)`` of a labeling."""
        out = np.zeros((len(labels_i), self.k))
        out[np.arange(len(labels_i)), labels_i] = 1.0
        return out

    def feature(self, i: int, node_stat: np.ndarray, edge_stat: np.ndarray) -> np.ndarray:
        """Joint feature of example ``i`` under node/edge statistics (labelings or convex combinations)."""
        x = self._x[i]
        wu = (x.T @ node_stat).T if sp.issparse(x) else node_stat.T @ x
        if self.shared:
            wp = edge_stat
        else:
            k = self.k
            wp = self._ef[i].T @ edge_stat.reshape(len(edge_stat), k * k)
        return np.concatenate([np.asarray(wu).ravel(), np.asarray(wp).ravel()])

    def hamming(self, i: int, labels_i: np.ndarray) -> float:
        """Unnormalised Hamming loss of a labeling of example ``i``."""
        return float(np.count_nonzero(labels_i != self._y[i]))

    # -- oracles ----------------------------------------------------------------------------
    def oracle_one(self, w: np.ndarray, i: int) -> np.ndarray:
        """Loss-augmented MAP labeling of example ``i`` at ``w`` (local labels)."""
        wu, wp = self.model.split(w)
        x = self._x[i]
        unary = np.asarray(x @ wu.T) + self.loss[self.batch.node_slice(i)]
        if self.shared:
            pairwise = wp
        else:
            k = self.k
            pairwise = (self._ef[i] @ wp.reshape(len(wp), k * k)).reshape(-1, k, k)
        self.oracle_calls += 1
        return np.asarray(_decode(np.ascontiguousarray(unary), np.ascontiguousarray(pairwise),
                                  self._edges[i], self.method), dtype=np.int64)

    def oracle_all(self, w: np.ndarray) -> np.ndarray:
        """Loss-augmented MAP labelings of every example at ``w`` (flat, one batched call)."""
        unary, pairwise = self.model.potentials(w, self.batch)
        b = self.batch
        labels = _decode_batch(np.ascontiguousarray(unary + self.loss), pairwise, b.edges,
                               b.node_offsets, b.edge_offsets, self.method)
        self.oracle_calls += self.n
        return np.asarray(labels, dtype=np.int64)

    def losses(self, labels: np.ndarray) -> np.ndarray:
        """Hamming loss of each example for a flat labeling, shape (n,)."""
        wrong = (labels != self.labels).astype(np.float64)
        return np.add.reduceat(wrong, self.batch.node_offsets[:-1]) if self.batch.n_nodes else np.zeros(self.n)

    def hinge(self, w: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``max(0, L_i(y) - <w, dpsi_i(y)>)`` for a flat labeling ``labels``, shape (n,).

        With exact loss-augmented labelings this is exactly ``H_i(w)``; the
        ``max(0, .)`` uses that the ground truth itself is a candidate.
        """
        margin = self.model.score(w, self.batch, labels) - self.model.score(w, self.batch)
        return np.maximum(self.losses(labels) + margin, 0.0)

    def primal(self, w: np.ndarray, labels: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """SSVM objective at ``w`` and the loss-augmented labelings used (a full oracle pass if not given)."""
        if labels is None:
            labels = self.oracle_all(w)
        value = 0.5 * self.alpha * float(w @ w) + float(self.hinge(w, labels).mean())
        return value, labels

    def dual_value(self, w: np.ndarray, ell: float) -> float:
        """Dual objective ``-alpha/2 ||w||^2 + ell`` of a feasible point with weights ``w``."""
        return -0.5 * self.alpha * float(w @ w) + float(ell)


class Monitor:
    """Records history rows and applies the common stopping rules.

    Parameters
    ----------
    name : str
        Solver name for progress lines and warnings.
    history : ConvergenceHistory
    tol : float
    verbose : int
    callback : callable or None
        ``callback(row | {"w": w})``; returning True stops training.
    """

    def __init__(self, name, history, tol, verbose, callback):
        self.name = name
        self.history = history
        self.tol = tol
        self.verbose = verbose
        self.callback = callback
        self.converged = False
        self.last_rel_gap = np.inf

    def record(self, w: np.ndarray, **row) -> bool:
        """Append a row (see :meth:`ConvergenceHistory.append`); return True when training should stop."""
        from ._base import report_progress

        rec = self.history.append(**row)
        self.last_rel_gap = relative_gap(rec["gap"], rec["primal"])
        report_progress(self.verbose, rec, self.name)
        stop = False
        if self.last_rel_gap <= self.tol and rec["residual"] <= self.tol:
            self.converged = True
            stop = True
        if self.callback is not None and self.callback({**rec, "w": w.copy()}):
            stop = True
        return stop

    def record_ssvm(self, prob: "SSVMProblem", w: np.ndarray, ell: float, **row) -> bool:
        """Record the SSVM primal at ``w`` and the dual value of the point ``(w, ell)``
        (weights and averaged loss of a dual-feasible point); return True to stop."""
        primal, _ = prob.primal(w)
        return self.record(w, primal=primal, dual=prob.dual_value(w, ell),
                           exact_oracle=float(prob.exact_oracle), **row)
