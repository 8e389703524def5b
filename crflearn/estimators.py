"""The scikit-learn estimator: a thin wrapper over the solvers and the inference layer.

:class:`CRF` converts the user-facing list-of-instances input once into a
:class:`~crflearn.graphs.GraphBatch`, hands it to a solver function from
:mod:`crflearn.solvers` (IDAL by default), and decodes with
:mod:`crflearn.inference`. It follows the scikit-learn estimator contract
(``__init__`` only stores parameters, validation in ``fit``, learned state in
attributes ending with ``_``), so it works with ``clone``, ``GridSearchCV``,
``cross_val_score`` and ``Pipeline`` (see :class:`crflearn.NodeTransformer`).
"""

from __future__ import annotations

import numbers
import os
import warnings
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, check_random_state

from ._validation import check_int, check_nonnegative, check_positive
from .graphs import GraphBatch, make_batch
from .models import PairwiseModel

__all__ = ["CRF"]

_COMMON_SOLVER_ARGS = ("alpha", "max_iter", "tol", "verbose", "random_state", "warm_start", "callback")
_ENTROPIES = ("gini", "gini_otrw")
_SAMPLINGS = ("uniform", "gap")
_DECODE_METHODS = ("auto", "exact", "trws", "maxproduct", "bruteforce")
_MARGINAL_METHODS = ("auto", "exact", "trw", "bp", "bruteforce")
_INFERENCE_METHODS = ("auto", "exact", "trw", "bp", "trws", "maxproduct", "bruteforce")


def _ignore_labels(labels) -> np.ndarray:
    """Label encoder used where labels are not needed (they are handled by the caller)."""
    return np.zeros(len(labels), dtype=np.int64)



def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r:.80}")
    return bool(value)


def _check_choice(value, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}, got {value!r:.80}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


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


def _encode_classes(raw_labels: list) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique labels over all examples, and the int64 code of every node."""
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
    flat = np.concatenate(parts)
    classes, codes = np.unique(flat, return_inverse=True)
    return classes, np.ascontiguousarray(codes.ravel(), dtype=np.int64)


class CRF(BaseEstimator):
    """Pairwise conditional random field for chains, trees and general graphs.

    Learns linear unary weights (one row per label over the node features) and
    pairwise weights (a ``K x K`` transition matrix, or one per edge feature) by
    minimising the L2-regularised objective::

        P(w) = alpha / 2 ||w||^2 + 1 / n sum_i loss_i(w)

    over the ``n`` training examples. The loss depends on the solver: IDAL (the
    default) minimises a Gini-smoothed CRF loss over the local polytope (no
    exact inference needed, so loopy graphs are fine); ``"bcfw"``,
    ``"subgradient"`` and ``"cutting_plane"`` train a structured SVM (margin
    rescaling, Hamming loss); ``"lbfgs"`` the CRF negative log-likelihood.

    Parameters
    ----------
    alpha : float, default=1e-2
        L2 regularisation strength (``lambda``). The structured-SVM ``C`` of
        other packages equals ``1 / (alpha * n)`` with ``n`` training examples.
    solver : {"idal", "bcfw", "subgradient", "cutting_plane", "lbfgs"}, default="idal"
        Learning algorithm (see :mod:`crflearn.solvers`).
    max_iter : int, default=100
        Maximum number of iterations (epochs or outer steps) of the solver.
    tol : float, default=1e-3
        Stop when the relative duality gap (and the constraint residual, for
        IDAL) fall below ``tol``. A ``ConvergenceWarning`` is issued otherwise.
    kappa : float, default=1.0
        IDAL only: weight of the Gini entropy surrogate (the temperature; small
        values approach the structured SVM).
    rho : float or None, default=None
        IDAL only: augmented-Lagrangian penalty; None picks it from the data.
    inner_epochs : int, default=1
        IDAL only: passes of clique-wise SDCA updates per outer step.
    entropy : {"gini", "gini_otrw"}, default="gini"
        IDAL only: entropy surrogate.
    loss_augmented : bool, default=False
        IDAL and lbfgs: add the Hamming loss to the scores (softmax-margin training).
    sampling : {"uniform", "gap"}, default="uniform"
        IDAL only: order of the clique updates (uniform random or proportional
        to the per-clique duality gaps).
    fit_intercept : bool, default=True
        Append a constant feature to every node (a per-label bias, reported in
        ``intercept_``).
    inference : {"auto", "exact", "trw", "bp", "trws", "maxproduct", "bruteforce"}, default="auto"
        Inference method for :meth:`predict` (MAP) and :meth:`predict_marginals`.
        ``"auto"`` is exact on forests (chains, trees) and approximate on loopy
        graphs. With the marginal methods ``"trw"``/``"bp"`` :meth:`predict`
        takes the most likely label of each node marginal; the MAP methods
        ``"trws"``/``"maxproduct"`` cannot give marginals.
    solver_params : dict or None, default=None
        Extra keyword options for the solver (e.g. a step size of
        ``"subgradient"``). Must not repeat the parameters above.
    random_state : int, RandomState instance or None, default=None
        Seed of the solver's sampling; an int makes ``fit`` reproducible.
    verbose : int, default=0
        Print one progress line per iteration when > 0.
    warm_start : bool, default=False
        Keep the solver state after ``fit`` and continue from it at the next
        ``fit`` (same training set, classes and features) instead of starting
        afresh. The state (dual variables, ``O(n_nodes K + n_edges K^2)``
        floats) is only kept, and pickled, while ``warm_start=True``.
    callback : callable or None, default=None
        ``callback(info)`` after every iteration with the history row and the
        current ``"w"``; returning True stops training.

    Attributes
    ----------
    coef_ : ndarray of shape (model_.size,)
        Flat learned weights (layout of :class:`~crflearn.models.PairwiseModel`;
        the bias column is the last node feature when ``fit_intercept``).
    unary_coef_ : ndarray of shape (n_classes, n_features_in_)
        Unary weights: score of label ``k`` at a node is ``unary_coef_[k] @ x + intercept_[k]``.
    pairwise_coef_ : ndarray of shape (n_classes, n_classes) or (n_edge_features_in_, n_classes, n_classes)
        Pairwise weights; ``pairwise_coef_[a, b]`` scores ``y_s = a, y_t = b`` on an edge ``(s, t)``
        (for chains, ``s`` precedes ``t``).
    intercept_ : ndarray of shape (n_classes,)
        Per-label bias (zeros when ``fit_intercept=False``).
    classes_ : ndarray of shape (n_classes,)
        Sorted unique labels seen in training; columns of :meth:`predict_marginals`.
    n_features_in_ : int
        Number of node features seen in ``fit``.
    n_edge_features_in_ : int or None
        Number of edge features seen in ``fit`` (None: one shared pairwise matrix).
    n_iter_ : int
        Solver iterations run (warm starts included).
    history_ : dict of ndarray
        The solver's convergence record (``iteration``, ``time``, ``primal``,
        ``dual``, ``gap``, ``residual``, ``oracle_calls``, ...); plot it with
        ``crflearn.plotting.plot_convergence``.
    converged_ : bool
        Whether ``tol`` was reached.
    interrupted_ : bool
        Whether training stopped on ``KeyboardInterrupt`` (the last iterate is kept).
    model_ : PairwiseModel
        The potentials' layout (over the bias-augmented features).
    solver_info_ : dict
        Free-form notes returned by the solver.

    Notes
    -----
    ``X`` is a list of examples; each is one of

    * an array or sparse matrix ``(n_nodes, n_features)``: a chain;
    * a tuple ``(features, edges)`` or ``(features, edges, edge_features)`` with
      ``edges`` an ``(n_edges, 2)`` array of node indices local to the example;
    * an undirected networkx graph with node attribute ``"x"`` (features) and,
      for training without ``y``, ``"y"`` (labels); predictions follow
      ``list(graph.nodes)``. The pairwise weights need not be symmetric and an
      undirected graph has no edge direction, so an edge is oriented as
      ``graph.edges`` yields it, which follows the node insertion order.

    ``y`` is a list of 1-D label arrays of any hashable type (e.g. strings).

    References
    ----------
    .. [1] X. Hu and G. Obozinski, "SDCA-Powered Inexact Dual Augmented Lagrangian
       Method for Fast CRF Learning", AISTATS 2018.
    .. [2] J. Lafferty, A. McCallum and F. Pereira, "Conditional Random Fields:
       Probabilistic Models for Segmenting and Labeling Sequence Data", ICML 2001.

    Examples
    --------
    >>> import numpy as np
    >>> from crflearn import CRF
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.normal(size=(5, 3)) for _ in range(4)]
    >>> y = [(x[:, 0] > 0).astype(int) for x in X]
    >>> crf = CRF(alpha=0.1, max_iter=20, tol=1e-2, random_state=0).fit(X, y)  # doctest: +SKIP
    >>> [p.shape for p in crf.predict(X[:2])]  # doctest: +SKIP
    [(5,), (5,)]
    """

    def __init__(self, alpha: float = 1e-2, *, solver: str = "idal", max_iter: int = 100, tol: float = 1e-3,
                 kappa: float = 1.0, rho: float | None = None, inner_epochs: int = 1, entropy: str = "gini",
                 loss_augmented: bool = False, sampling: str = "uniform", fit_intercept: bool = True,
                 inference: str = "auto", solver_params: dict | None = None, random_state=None,
                 verbose: int = 0, warm_start: bool = False, callback: Callable | None = None):
        self.alpha = alpha
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.kappa = kappa
        self.rho = rho
        self.inner_epochs = inner_epochs
        self.entropy = entropy
        self.loss_augmented = loss_augmented
        self.sampling = sampling
        self.fit_intercept = fit_intercept
        self.inference = inference
        self.solver_params = solver_params
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.callback = callback

    # -- scikit-learn plumbing ----------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # X is a list of structured examples, not one 2-D array; y a list of label arrays.
        tags.input_tags.two_d_array = False
        tags.input_tags.sparse = False
        tags.target_tags.required = True
        tags.target_tags.one_d_labels = False
        return tags

    def _check_params(self) -> dict[str, Any]:
        """Check every parameter; return the solver keyword options."""
        from .solvers import SOLVER_NAMES

        check_positive(self.alpha, "alpha")
        _check_choice(self.solver, "solver", SOLVER_NAMES)
        check_int(self.max_iter, "max_iter", 1)
        check_nonnegative(self.tol, "tol")
        check_positive(self.kappa, "kappa")
        check_positive(self.rho, "rho", allow_none=True)
        check_int(self.inner_epochs, "inner_epochs", 1)
        _check_choice(self.entropy, "entropy", _ENTROPIES)
        _check_bool(self.loss_augmented, "loss_augmented")
        _check_choice(self.sampling, "sampling", _SAMPLINGS)
        _check_bool(self.fit_intercept, "fit_intercept")
        _check_choice(self.inference, "inference", _INFERENCE_METHODS)
        if not isinstance(self.verbose, bool):
            check_int(self.verbose, "verbose", 0)
        _check_bool(self.warm_start, "warm_start")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable or None, got {self.callback!r:.80}")
        check_random_state(self.random_state)  # raises ValueError for a bad seed

        options: dict[str, Any] = {}
        if self.solver == "idal":
            options.update(kappa=float(self.kappa), rho=None if self.rho is None else float(self.rho),
                           inner_epochs=int(self.inner_epochs), entropy=self.entropy,
                           loss_augmented=bool(self.loss_augmented), sampling=self.sampling)
        elif self.solver == "lbfgs":  # softmax-margin CRF with exact inference
            options.update(loss_augmented=bool(self.loss_augmented))
        if self.solver_params is not None:
            if not isinstance(self.solver_params, dict):
                raise TypeError(f"solver_params must be a dict or None, got {type(self.solver_params).__name__}")
            for key in self.solver_params:
                if not isinstance(key, str):
                    raise TypeError(f"solver_params keys must be strings, got {key!r:.80}")
                if key in _COMMON_SOLVER_ARGS or key in options:
                    raise ValueError(f"solver_params must not contain {key!r}: set the CRF parameter "
                                     f"{key!r} instead")
            options.update(self.solver_params)
        return options

    # -- data ---------------------------------------------------------------------------
    def _predict_batch(self, X) -> GraphBatch:
        check_is_fitted(self, "coef_")
        batch, _ = make_batch(X, None, n_features=self.n_features_in_,
                              n_edge_features=self.n_edge_features_in_, label_encoder=_ignore_labels)
        return batch

    def _set_coef(self, w: np.ndarray, model: PairwiseModel) -> None:
        """Store ``coef_`` and its read-only views (``coef_`` is the single source of truth)."""
        self.coef_ = np.ascontiguousarray(w, dtype=np.float64).copy()
        self.model_ = model
        self.unary_coef_ = model.unary_coef(self.coef_)
        self.intercept_ = model.intercept(self.coef_)
        self.pairwise_coef_ = model.pairwise_coef(self.coef_)
        for view in (self.unary_coef_, self.intercept_, self.pairwise_coef_):
            view.flags.writeable = False

    # -- fit ----------------------------------------------------------------------------
    def fit(self, X: Sequence, y: Sequence | None = None) -> "CRF":
        """Learn the CRF weights.

        Parameters
        ----------
        X : list of examples
            Arrays or sparse matrices ``(n_nodes, n_features)`` (chains),
            ``(features, edges[, edge_features])`` tuples, or networkx graphs
            with node attribute ``"x"`` (see the class notes).
        y : list of array-like of shape (n_nodes_i,), optional
            Labels of every node, any hashable type. May be omitted when ``X``
            holds networkx graphs whose nodes carry a ``"y"`` attribute.

        Returns
        -------
        self : CRF
            The fitted estimator.
        """
        from .solvers import get_solver

        options = self._check_params()
        batch, raw_labels = make_batch(X, y, label_encoder=_ignore_labels)
        if raw_labels is None:
            raise ValueError("y is required: pass y, or networkx graphs whose nodes all carry a 'y' attribute")
        classes, codes = _encode_classes(raw_labels)
        if len(classes) < 2:
            raise ValueError(f"y needs at least 2 distinct labels to train a CRF, got {classes.tolist()!r:.80}")
        batch.labels = codes
        n_features, n_edge_features = batch.n_features, batch.n_edge_features
        if self.fit_intercept:
            batch = batch.with_bias()
        model = PairwiseModel(len(classes), batch.n_features, batch.n_edge_features)

        warm_state = None
        signature = (self.solver, batch.n_examples, batch.n_nodes, batch.n_edges)
        if self.solver in ("bcfw", "subgradient"):  # their state is scaled by 1 / alpha
            signature += (float(self.alpha),)
        if self.warm_start and getattr(self, "_solver_state", None) is not None:
            if (classes.dtype.kind != self.classes_.dtype.kind or not np.array_equal(classes, self.classes_)
                    or n_features != self.n_features_in_ or n_edge_features != self.n_edge_features_in_
                    or bool(self.fit_intercept) != self.model_.fit_intercept):
                raise ValueError("warm_start=True needs the same classes, features and fit_intercept as the "
                                 "previous fit; set warm_start=False to start afresh")
            if signature == self._warm_signature:
                warm_state = self._solver_state
            else:
                warnings.warn("warm_start=True but the solver, the training set or (bcfw, subgradient) alpha "
                              "changed; "
                              "starting afresh", UserWarning, stacklevel=2)

        seed = self.random_state
        if isinstance(seed, np.random.RandomState):  # solvers take an int seed; draw one
            seed = int(seed.randint(np.iinfo(np.int32).max))
        elif seed is not None:
            seed = int(seed)
        solver = get_solver(self.solver)
        result = solver(batch, model, alpha=float(self.alpha), max_iter=int(self.max_iter), tol=float(self.tol),
                        verbose=int(self.verbose), random_state=seed,
                        warm_start=warm_state, callback=self.callback, **options)

        # Assign everything at the end: an exception above leaves a previous fit intact.
        self.classes_ = classes
        self.n_features_in_ = int(n_features)
        self.n_edge_features_in_ = None if n_edge_features is None else int(n_edge_features)
        self._set_coef(result.w, PairwiseModel(len(classes), n_features, n_edge_features,
                                               fit_intercept=bool(self.fit_intercept)))
        self.alpha_ = float(self.alpha)
        self.n_iter_ = int(result.n_iter)
        self.history_ = {k: np.asarray(v) for k, v in dict(result.history).items()}
        self.converged_ = bool(result.converged)
        self.interrupted_ = bool(result.interrupted)
        self.solver_info_ = dict(result.info)
        # the solver state (dual variables: O(nodes K + edges K^2)) is kept only for warm starts
        self._solver_state = result.state if self.warm_start else None
        self._warm_signature = signature
        return self

    # -- prediction ---------------------------------------------------------------------
    def _decode_codes(self, batch: GraphBatch) -> np.ndarray:
        from .inference import decode_batch, infer_batch

        unary, pairwise = self.model_.potentials(self.coef_, batch)
        if self.inference in ("trw", "bp"):
            res = infer_batch(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets,
                              method=self.inference, edge_marginals="none")
            return np.argmax(res.node_marginals, axis=1)
        return decode_batch(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets,
                            method=self.inference)

    def predict(self, X: Sequence) -> list[np.ndarray]:
        """Most likely labeling (MAP) of every example.

        Parameters
        ----------
        X : list of examples
            Same formats as in :meth:`fit`, with as many node (and edge)
            features as in training.

        Returns
        -------
        y_pred : list of ndarray of shape (n_nodes_i,)
            Labels from ``classes_`` (node order of the input; for networkx
            graphs ``list(graph.nodes)``).
        """
        batch = self._predict_batch(X)
        codes = np.asarray(self._decode_codes(batch), dtype=np.int64)
        return [self.classes_[c] for c in batch.split_nodes(codes)]

    def _infer(self, X, method_name: str):
        from .inference import infer_batch

        if self.inference in ("trws", "maxproduct"):
            raise ValueError(f"{method_name} needs marginal inference but inference={self.inference!r} is a "
                             "MAP method; use 'auto', 'exact', 'trw' or 'bp'")
        batch = self._predict_batch(X)
        unary, pairwise = self.model_.potentials(self.coef_, batch)
        res = infer_batch(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets,
                          method=self.inference, edge_marginals="none")
        return batch, res

    def predict_marginals(self, X: Sequence) -> list[np.ndarray]:
        """Node marginal probabilities of every example.

        Exact on forests (chains, trees); approximate (the loopy default, or
        the ``inference`` method) on graphs with cycles.

        Parameters
        ----------
        X : list of examples

        Returns
        -------
        marginals : list of ndarray of shape (n_nodes_i, n_classes)
            Rows sum to one; columns follow ``classes_``.
        """
        batch, res = self._infer(X, "predict_marginals")
        return [np.asarray(m) for m in batch.split_nodes(np.asarray(res.node_marginals))]

    def predict_log_partition(self, X: Sequence) -> np.ndarray:
        """Log-partition function ``log Z(x_i)`` of every example under the learned weights.

        Exact on forests, an approximation (for TRW an upper bound) on loopy graphs.

        Parameters
        ----------
        X : list of examples

        Returns
        -------
        ndarray of shape (n_examples,)
        """
        _, res = self._infer(X, "predict_log_partition")
        return np.asarray(res.log_partition, dtype=np.float64)

    def score(self, X: Sequence, y: Sequence) -> float:
        """Node accuracy of :meth:`predict` on ``X`` (fraction of nodes labelled right).

        Parameters
        ----------
        X : list of examples
        y : list of array-like of shape (n_nodes_i,)

        Returns
        -------
        float
        """
        from .metrics import node_accuracy

        return node_accuracy(y, self.predict(X))

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted model to a crflearn archive (no pickle; written atomically).

        Parameters
        ----------
        path : str, path-like or writable binary file object
            Destination file, written as given (no suffix added). A path is
            written through a temporary file and renamed: an interrupted save
            leaves the previous file intact.

        Raises
        ------
        TypeError
            If a parameter cannot be stored as JSON (a ``RandomState``
            ``random_state`` is stored as None; ``callback`` is never stored) or
            the classes are not bool, int, float, str or bytes labels.
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.

        See Also
        --------
        crflearn.persistence.save_archive
        """
        from . import _crf_archive
        from .persistence import save_archive

        check_is_fitted(self, "coef_")
        metadata, arrays = _crf_archive.to_archive(self)
        save_archive(path, kind=_crf_archive.KIND, metadata=metadata, arrays=arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CRF":
        """Load a model written by :meth:`save` (safe on untrusted files).

        Parameters
        ----------
        path : str, path-like or readable binary file object

        Returns
        -------
        CRF
            A fitted estimator predicting exactly like the saved one (without
            the solver state: a new ``fit`` starts afresh).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a crflearn CRF model, is damaged or inconsistent,
            or has another format version; the message names the file.
        """
        from . import _crf_archive
        from .persistence import load_archive

        where = "the file object" if hasattr(path, "read") else repr(os.fspath(path))
        metadata, arrays = load_archive(path, kind=_crf_archive.KIND, finite=("coef",))
        try:
            params, attrs = _crf_archive.from_archive(metadata, arrays)
            est = cls(**params)
            est._check_params()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where} is not a valid crflearn CRF model: {exc!s:.300}") from None
        est._set_coef(attrs.pop("coef_"), attrs.pop("model_"))
        for key, value in attrs.items():
            setattr(est, key, value)
        est._solver_state = None
        est._warm_signature = None
        return est
