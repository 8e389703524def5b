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

from functools import partial

import numpy as np
import scipy.sparse as sp

from ._base import check_warm_state, check_warm_weights
from ._history import ConvergenceHistory
from ._loop import SolverLoop
from .._kernels.ssvm import EpochGraph
from ..exceptions import LoopyGraphError
from ..graphs import GraphBatch
from ..models import PairwiseModel, hamming_loss_vectors

__all__ = ["SSVMProblem", "INFERENCE_METHODS", "prepare", "ssvm_loop", "run_epoch", "Checkpoint"]

INFERENCE_METHODS = ("auto", "exact", "trws", "maxproduct", "bruteforce")


def _check_method(method) -> str:
    if method not in INFERENCE_METHODS:
        raise ValueError(f"inference must be one of {list(INFERENCE_METHODS)}, got {method!r:.80}")
    return method


def _epoch_graph(schedule, labels: np.ndarray, weights: np.ndarray) -> EpochGraph:
    """The BFS schedule of every example with example-local node and edge indices, and the sample weights."""
    lengths = np.diff(schedule.node_offsets)
    node_base = np.repeat(schedule.node_offsets[:-1], lengths)
    edge_base = np.repeat(schedule.edge_offsets[:-1], lengths)
    order_loc = schedule.order - node_base  # order[lo:hi] holds the nodes of the example of row lo
    parent_loc = np.where(schedule.parent >= 0, schedule.parent - node_base, -1)
    pedge_loc = np.where(schedule.parent_edge >= 0, schedule.parent_edge - edge_base, -1)
    as_int = partial(np.ascontiguousarray, dtype=np.int64)
    return EpochGraph(as_int(schedule.edges).reshape(-1, 2), as_int(schedule.node_offsets),
                      as_int(schedule.edge_offsets), as_int(labels), as_int(order_loc), as_int(parent_loc),
                      as_int(pedge_loc), np.ascontiguousarray(schedule.parent_first, dtype=np.uint8),
                      np.ascontiguousarray(weights, dtype=np.float64))


def weighted_joint_feature(batch: GraphBatch, model: PairwiseModel, weights: np.ndarray,
                           labels: np.ndarray | None = None) -> np.ndarray:
    """``sum_i s_i psi(x_i, y_i)`` for a flat labeling (``batch.labels`` by default).

    Built from one-hot marginals scaled by each example's weight, through
    :meth:`~crflearn.models.PairwiseModel.expected_joint_feature` (the model keeps the layout).
    """
    y = batch.labels if labels is None else np.asarray(labels, dtype=np.int64)
    k = model.n_states
    node_w = weights[batch.example_of_node()]
    node_marg = np.zeros((batch.n_nodes, k))
    node_marg[np.arange(batch.n_nodes), y] = node_w
    edge_w = np.repeat(weights, np.diff(batch.edge_offsets))
    s, t = batch.edges[:, 0], batch.edges[:, 1]
    if model.n_edge_features is None:
        edge_marg = np.zeros((k, k))
        np.add.at(edge_marg, (y[s], y[t]), edge_w)
    else:
        edge_marg = np.zeros((batch.n_edges, k, k))
        edge_marg[np.arange(batch.n_edges), y[s], y[t]] = edge_w
    return model.expected_joint_feature(batch, node_marg, edge_marg)


class SSVMProblem:
    """A labelled batch prepared once for structured-SVM learning.

    Parameters
    ----------
    batch : GraphBatch
        Labelled batch.
    model : PairwiseModel
        Potentials / joint feature map (owns the weight layout, intercept included).
    alpha : float
        L2 strength (lambda).
    inference : str
        MAP method passed to :mod:`crflearn.inference` (``"auto"``: exact on forests,
        approximate on loopy graphs).
    sample_weight : ndarray (n,) or None
        Per-example weights ``s_i`` of the objective ``alpha/2 ||w||^2 + 1/n sum_i s_i H_i(w)``
        (validated by the caller: finite, >= 0); None is ``s_i = 1`` exactly.

    Attributes
    ----------
    n : int
        Number of examples.
    view : FeatureView
        ``model.feature_view(batch)``: the features as the kernels read them.
    graph : EpochGraph
        Structure, ground truth and example-local BFS schedule for the kernels.
    schedule : InferenceSchedule
        Built once; reused by every batched oracle pass.
    exact_oracle : bool
        Whether the loss-augmented oracle is exact (forests with an exact method).
    compiled : bool
        Whether whole epochs run in the compiled kernels of :mod:`crflearn._kernels.ssvm`
        (forests decoded by exact max-product); otherwise each example is decoded by
        :meth:`oracle_one` and updated by the kernels' one-example steps.
    inference_note : str
        Human-readable description for ``SolverResult.info["inference"]``.
    weights : ndarray (n,)
        The sample weights (ones when None was given).
    weighted : bool
        Whether sample weights were given.
    psi_true : ndarray (model.size,)
        ``sum_i s_i psi(x_i, y_i)``.
    """

    def __init__(self, batch: GraphBatch, model: PairwiseModel, alpha: float, inference: str = "auto",
                 sample_weight: np.ndarray | None = None):
        from ..inference import make_schedule

        self.alpha = float(alpha)
        self.batch = batch
        self.model = model
        self.method = _check_method(inference)
        self.n = batch.n_examples
        self.k = model.n_states
        self.shared = model.n_edge_features is None
        self.schedule = make_schedule(batch)
        forest = bool(np.all(self.schedule.is_forest))
        if self.method == "exact" and not forest:
            raise LoopyGraphError("inference='exact' needs forests (chains/trees); the batch has a cycle")
        self.exact_oracle = bool(forest and self.method in ("auto", "exact")) or self.method == "bruteforce"
        self.compiled = bool(forest and self.method in ("auto", "exact"))
        self.inference_note = ("exact" if self.exact_oracle else
                               f"approximate loss-augmented MAP ({self.method}); the duality gap is not certified")
        self.labels = batch.labels
        self.loss = hamming_loss_vectors(batch, self.k)
        self.view = model.feature_view(batch)
        self.weighted = sample_weight is not None
        self.weights = np.ones(self.n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.graph = _epoch_graph(self.schedule, batch.labels, self.weights)
        self.psi_true = self.joint_feature()
        self.oracle_calls = 0
        v = self.view
        self._design = (None if self.compiled else
                        sp.csr_matrix((v.data, v.indices, v.indptr), shape=(batch.n_nodes, model.n_inputs))
                        if v.sparse else v.dense)

    def joint_feature(self, labels: np.ndarray | None = None) -> np.ndarray:
        """``sum_i s_i psi(x_i, y_i)`` of a flat labeling (the ground truth by default)."""
        if not self.weighted:
            return self.model.joint_feature(self.batch, labels)
        return weighted_joint_feature(self.batch, self.model, self.weights, labels)

    # -- per-example oracle (the only path on loopy graphs) ------------------------------------
    def oracle_one(self, wuT: np.ndarray, wp: np.ndarray, i: int) -> np.ndarray:
        """Loss-augmented MAP labeling (local labels) of example ``i`` at the kernel-layout weights."""
        from ..inference import decode

        lo, hi = self.batch.node_offsets[i], self.batch.node_offsets[i + 1]
        elo, ehi = self.batch.edge_offsets[i], self.batch.edge_offsets[i + 1]
        unary = np.asarray(self._design[lo:hi] @ wuT) + self.loss[lo:hi]
        k = self.k
        pairwise = (wp[0].reshape(k, k) if self.shared else
                    (self.view.edge_features[elo:ehi] @ wp).reshape(-1, k, k))
        edges = self.graph.edges[elo:ehi] - lo
        self.oracle_calls += 1
        return np.asarray(decode(np.ascontiguousarray(unary), np.ascontiguousarray(pairwise), edges, self.method),
                          dtype=np.int64)

    # -- batched oracle and objectives ---------------------------------------------------------
    def oracle_all(self, w: np.ndarray) -> np.ndarray:
        """Loss-augmented MAP labelings of every example at ``w`` (flat, one batched call)."""
        from ..inference import decode_batch

        unary, pairwise = self.model.potentials(w, self.batch)
        b = self.batch
        labels = decode_batch(np.ascontiguousarray(unary + self.loss), pairwise, b.edges, b.node_offsets,
                              b.edge_offsets, self.method, schedule=self.schedule)
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
        """SSVM objective at ``w`` (hinges weighted by ``s_i``) and the loss-augmented labelings used
        (a full oracle pass if not given)."""
        if labels is None:
            labels = self.oracle_all(w)
        value = 0.5 * self.alpha * float(w @ w) + float((self.weights * self.hinge(w, labels)).mean())
        return value, labels

    def dual_value(self, w: np.ndarray, ell: float) -> float:
        """Dual objective ``-alpha/2 ||w||^2 + ell`` of a feasible point with weights ``w``."""
        return -0.5 * self.alpha * float(w @ w) + float(ell)

    def record(self, loop, iteration: int, w: np.ndarray, ell: float, oracle_calls: int) -> bool:
        """Record the SSVM primal at ``w`` and the dual value of the feasible point ``(w, ell)``
        (monitoring: excluded from the solver time); return True to stop."""
        with loop.monitoring():
            primal, _ = self.primal(w)
        return loop.record(iteration, primal=primal, dual=self.dual_value(w, ell), w=w, oracle_calls=oracle_calls,
                           exact_oracle=float(self.exact_oracle))


AVERAGING = ("none", "uniform", "weighted")


def prepare(solver: str, batch: GraphBatch, model: PairwiseModel, alpha: float, warm_start, inference: str,
            averaging: str = "none", sample_weight: np.ndarray | None = None) -> tuple[SSVMProblem, dict | None]:
    """The checks the SSVM solvers share beyond :func:`check_common`; returns the problem and the
    checked warm-start state (which must come from a run with the same sample weights: the
    state's weights and bounds are scaled by them)."""
    if averaging not in AVERAGING:
        raise ValueError(f"averaging must be one of {list(AVERAGING)}, got {averaging!r:.80}")
    warm = check_warm_state(warm_start, solver, alpha)
    check_warm_weights(warm, sample_weight)
    return SSVMProblem(batch, model, alpha, inference, sample_weight), warm


def ssvm_loop(solver: str, max_iter: int, tol: float, verbose: int, callback, warm: dict | None,
              extra: tuple[str, ...] = ()) -> SolverLoop:
    """The :class:`SolverLoop` of an SSVM solver, continuing the warm start's record."""
    history = ConvergenceHistory(extra=("exact_oracle",) + extra, start=warm and warm.get("history"))
    return SolverLoop(solver, max_iter=max_iter, tol=tol, verbose=verbose, callback=callback, history=history)


def run_epoch(prob: SSVMProblem, perm: np.ndarray, state, epoch_kernel, step_kernel, *params) -> None:
    """One pass over the examples ``perm``, in place on the kernel ``state``.

    On forests with the exact oracle the whole pass is one call of ``epoch_kernel``; elsewhere
    each example is decoded by :meth:`SSVMProblem.oracle_one` and updated by ``step_kernel``
    (the same update, compiled). ``params`` follow the kernels' common arguments.
    """
    perm = np.ascontiguousarray(perm, dtype=np.int64)
    if prob.compiled:
        epoch_kernel(prob.view, prob.graph, state, perm, *params)
        return
    for i in perm:
        step_kernel(prob.view, prob.graph, state, i, prob.oracle_one(state.wuT, state.wp, i), *params)


class Checkpoint:
    """The arrays of a kernel state as they were at the start of an iteration.

    An interrupt that cuts an iteration short (:attr:`SolverLoop.unrecorded`) restores
    them, so that the result is the iterate of the last recorded row.
    """

    def __init__(self, state):
        self._saved = tuple(np.array(a, copy=True) for a in state)

    def save(self, state) -> None:
        for dst, src in zip(self._saved, state):
            np.copyto(dst, src)

    def restore(self, state) -> None:
        for dst, src in zip(state, self._saved):
            np.copyto(dst, src)
