"""Node- and sequence-level metrics for structured outputs, and ready-made scorers.

Structured targets are lists of 1-D label arrays, one per example (a sequence,
a tree, a grid...). Node-level metrics flatten them and compare node by node;
sequence-level metrics count an example as correct only when every node is.

scikit-learn's scorer registry only knows its own names, so
``GridSearchCV(..., scoring="node_accuracy")`` cannot work directly. Pass a
scorer object instead::

    from crflearn.metrics import node_accuracy_scorer, get_scorer
    GridSearchCV(CRF(), {"alpha": [1e-3, 1e-2]}, scoring=node_accuracy_scorer)
    GridSearchCV(CRF(), {"alpha": [1e-3, 1e-2]}, scoring=get_scorer("node_f1_macro"))

The scorers call ``estimator.predict(X)`` and compare with ``y`` as above, so
they work with :class:`crflearn.CRF` and with pipelines ending in one.

scikit-learn's own scoring strings (``"f1_macro"``, ``"accuracy"``...) compare flat 1-D
labels and fail on structured ``y``; scikit-learn's cross-validation would turn that
failure into a ``nan`` score. :func:`check_structured_scoring` (called by
:meth:`crflearn.CRF.fit`) detects such a scorer in the cross-validation that is fitting the
estimator and raises a ``ValueError`` naming the crflearn scorer to use instead, so
``cross_val_score(crf, X, y, scoring="f1_macro")`` raises rather than returning ``nan``.
``SKLEARN_EQUIVALENTS`` maps those scikit-learn names to the crflearn scorer computing the
same metric on the nodes (``"f1_macro"`` -> ``"node_f1_macro"``).
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import classification_report as _sk_classification_report
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from sklearn.metrics import make_scorer
from sklearn.metrics import precision_recall_fscore_support

from ._labels import as_label_array, encode_labels

__all__ = [
    "flatten_labels",
    "node_accuracy",
    "sequence_accuracy",
    "per_label_precision_recall_f1",
    "node_f1_score",
    "node_classification_report",
    "node_confusion_matrix",
    "node_accuracy_scorer",
    "sequence_accuracy_scorer",
    "node_f1_macro_scorer",
    "node_f1_micro_scorer",
    "node_f1_weighted_scorer",
    "SCORERS",
    "get_scorer",
    "check_structured_scoring",
]

_AVERAGES = ("macro", "micro", "weighted")


def _as_examples(y, name: str) -> list[np.ndarray]:
    """Check that ``y`` is a non-empty list of 1-D label arrays and return it as such."""
    if y is None or isinstance(y, (str, bytes, dict)):
        raise TypeError(f"{name} must be a list of 1-D label arrays (one per example), got {y!r:.80}")
    if isinstance(y, np.ndarray) and y.dtype != object:
        raise TypeError(f"{name} must be a list of 1-D label arrays (one per example), not a single "
                        f"array of shape {y.shape}; wrap one sequence as [labels]")
    try:
        items = list(y)
    except TypeError:
        raise TypeError(f"{name} must be a list of 1-D label arrays, got {type(y).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty: at least one example is needed")
    out = []
    for i, item in enumerate(items):
        arr = None if isinstance(item, (str, bytes)) else as_label_array(item)
        if arr is None or arr.ndim != 1:
            raise ValueError(f"{name}[{i}] must be a 1-D array of node labels, got {item!r:.80}")
        out.append(arr)
    return out


def _paired(y_true, y_pred) -> tuple[list[np.ndarray], list[np.ndarray]]:
    true = _as_examples(y_true, "y_true")
    pred = _as_examples(y_pred, "y_pred")
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} examples but y_pred has {len(pred)}")
    for i, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise ValueError(f"example {i}: y_true has {len(t)} labels but y_pred has {len(p)}")
    return true, pred


def _codes(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Both label lists encoded together by the one label encoder (TypeError for labels of two types):
    ``(true codes, predicted codes, true, pred)``, the codes flat."""
    true, pred = _paired(y_true, y_pred)
    _, codes = encode_labels(true + pred)
    n = sum(len(t) for t in true)
    return codes[:n], codes[n:], true, pred


def flatten_labels(y: Sequence) -> np.ndarray:
    """Concatenate a list of per-example label arrays into one 1-D array.

    Parameters
    ----------
    y : list of array-like of shape (n_nodes_i,)

    Returns
    -------
    ndarray of shape (sum_i n_nodes_i,)
    """
    return np.concatenate(_as_examples(y, "y"))


def node_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of nodes (e.g. letters, tokens, pixels) whose label is right.

    Every node counts once, so long examples weigh more than short ones.

    Parameters
    ----------
    y_true, y_pred : list of array-like of shape (n_nodes_i,)
        True and predicted labels, one array per example.

    Returns
    -------
    float in [0, 1]
    """
    t, p, _, _ = _codes(y_true, y_pred)
    if t.size == 0:
        raise ValueError("y_true has no nodes")
    return float(np.mean(t == p))


def sequence_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of examples whose labels are all right (exact match per example).

    Parameters
    ----------
    y_true, y_pred : list of array-like of shape (n_nodes_i,)

    Returns
    -------
    float in [0, 1]
    """
    t, p, true, _ = _codes(y_true, y_pred)
    bounds = np.cumsum([len(lab) for lab in true])[:-1]
    return float(np.mean([np.array_equal(a, b) for a, b in zip(np.split(t, bounds), np.split(p, bounds))]))


def per_label_precision_recall_f1(y_true: Sequence, y_pred: Sequence, *, labels=None) -> dict:
    """Precision, recall, F1 and support of every label over all nodes.

    Parameters
    ----------
    y_true, y_pred : list of array-like of shape (n_nodes_i,)
    labels : array-like, optional
        Labels to report, in this order; by default the sorted union of the
        labels in ``y_true`` and ``y_pred``.

    Returns
    -------
    dict
        ``{"labels", "precision", "recall", "f1", "support"}``, each a 1-D array
        aligned with ``labels``. A ratio with an empty denominator is 0.
    """
    _, _, true, pred = _codes(y_true, y_pred)
    t, p = np.concatenate(true), np.concatenate(pred)
    if labels is None:
        labels = np.unique(np.concatenate([t, p]))
    labels = np.asarray(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=labels, average=None, zero_division=0)
    return {"labels": labels, "precision": precision, "recall": recall, "f1": f1, "support": support}


def node_f1_score(y_true: Sequence, y_pred: Sequence, *, average: str = "macro", labels=None) -> float:
    """F1 score over all nodes, averaged over labels.

    Parameters
    ----------
    y_true, y_pred : list of array-like of shape (n_nodes_i,)
    average : {"macro", "micro", "weighted"}
        ``"macro"``: unweighted mean of per-label F1; ``"micro"``: global counts
        (equals node accuracy when every label is included); ``"weighted"``:
        mean weighted by support.
    labels : array-like, optional
        Labels to include (e.g. leave out an "O" tag).

    Returns
    -------
    float
    """
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {list(_AVERAGES)}, got {average!r}")
    _, _, true, pred = _codes(y_true, y_pred)
    _, _, f1, _ = precision_recall_fscore_support(
        np.concatenate(true), np.concatenate(pred), labels=labels, average=average, zero_division=0)
    return float(f1)


def node_classification_report(y_true: Sequence, y_pred: Sequence, **kwargs):
    """scikit-learn's ``classification_report`` over all nodes.

    Parameters
    ----------
    y_true, y_pred : list of array-like of shape (n_nodes_i,)
    **kwargs
        Passed to :func:`sklearn.metrics.classification_report` (``labels``,
        ``digits``, ``output_dict``, ``zero_division``...).

    Returns
    -------
    str or dict
    """
    _, _, true, pred = _codes(y_true, y_pred)
    kwargs.setdefault("zero_division", 0)
    return _sk_classification_report(np.concatenate(true), np.concatenate(pred), **kwargs)


def node_confusion_matrix(y_true: Sequence, y_pred: Sequence, *, labels=None) -> np.ndarray:
    """Confusion matrix over all nodes (rows: true label, columns: predicted).

    Parameters
    ----------
    y_true, y_pred : list of array-like of shape (n_nodes_i,)
    labels : array-like, optional
        Row/column order; by default the sorted union of the labels seen.

    Returns
    -------
    ndarray of shape (n_labels, n_labels), int
    """
    _, _, true, pred = _codes(y_true, y_pred)
    return _sk_confusion_matrix(np.concatenate(true), np.concatenate(pred), labels=labels)


def _f1(average: str) -> Callable:
    def score(y_true, y_pred):
        return node_f1_score(y_true, y_pred, average=average)

    score.__name__ = f"node_f1_{average}"
    return score


node_accuracy_scorer = make_scorer(node_accuracy)
sequence_accuracy_scorer = make_scorer(sequence_accuracy)
node_f1_macro_scorer = make_scorer(_f1("macro"))
node_f1_micro_scorer = make_scorer(_f1("micro"))
node_f1_weighted_scorer = make_scorer(_f1("weighted"))

#: Scorers by name, for :func:`get_scorer`.
SCORERS = {
    "node_accuracy": node_accuracy_scorer,
    "sequence_accuracy": sequence_accuracy_scorer,
    "node_f1_macro": node_f1_macro_scorer,
    "node_f1_micro": node_f1_micro_scorer,
    "node_f1_weighted": node_f1_weighted_scorer,
}


#: scikit-learn scoring names and the crflearn scorer computing the same on the nodes
SKLEARN_EQUIVALENTS = {"accuracy": "node_accuracy", "f1_macro": "node_f1_macro",
                       "f1_micro": "node_f1_micro", "f1_weighted": "node_f1_weighted"}


def get_scorer(scoring):
    """A scorer for structured outputs, by name.

    Parameters
    ----------
    scoring : str or callable
        One of ``"node_accuracy"``, ``"sequence_accuracy"``, ``"node_f1_macro"``,
        ``"node_f1_micro"``, ``"node_f1_weighted"``; a callable is returned unchanged.

    Returns
    -------
    callable
        ``scorer(estimator, X, y) -> float`` (greater is better), usable as
        ``GridSearchCV(..., scoring=get_scorer("node_accuracy"))``.
    """
    if callable(scoring):
        return scoring
    if not isinstance(scoring, str):
        raise TypeError(f"scoring must be a scorer name or a callable, got {scoring!r:.80}")
    if scoring not in SCORERS:
        hint = f" ({SKLEARN_EQUIVALENTS[scoring]!r} is its node-level equivalent)" \
            if scoring in SKLEARN_EQUIVALENTS else ""
        raise ValueError(f"scoring must be one of {sorted(SCORERS)}, got {scoring!r}{hint}")
    return SCORERS[scoring]


def _flat_target_scorers(scorer) -> list:
    """The scikit-learn scorers of flat targets in ``scorer`` (a scorer, a dict or a multi-metric scorer)."""
    from sklearn.metrics._scorer import _BaseScorer

    if isinstance(scorer, dict):
        found = []
        for value in scorer.values():
            found += _flat_target_scorers(value)
        return found
    inner = getattr(scorer, "_scorers", None)
    if isinstance(inner, dict):
        return _flat_target_scorers(inner)
    func = getattr(scorer, "_score_func", None)
    if isinstance(scorer, _BaseScorer) and str(getattr(func, "__module__", "")).startswith("sklearn."):
        return [scorer]
    return []


def check_structured_scoring(max_depth: int = 60) -> None:
    """Raise if a scikit-learn cross-validation up the call stack scores with a flat-target scorer.

    Called at the start of :meth:`crflearn.CRF.fit`: inside ``cross_val_score``,
    ``cross_validate``, ``GridSearchCV``... (scikit-learn's ``_fit_and_score``), a scorer
    such as ``scoring="f1_macro"`` would fail on structured ``y`` and be recorded as
    ``nan``; raising in ``fit`` makes every fit fail, so scikit-learn raises with this
    message instead of returning ``nan``. Outside cross-validation it does nothing.

    Parameters
    ----------
    max_depth : int, default=60
        How many frames up the stack to look.

    Raises
    ------
    ValueError
        Naming the scorer and the :mod:`crflearn.metrics` scorer to use.
    """
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return
        if frame.f_code.co_name == "_fit_and_score" and \
                frame.f_globals.get("__name__") == "sklearn.model_selection._validation":
            bad = _flat_target_scorers(frame.f_locals.get("scorer"))
            if bad:
                raise ValueError(f"the scoring {bad[0]!r} is a scikit-learn scorer of flat 1-D labels: it "
                                 "cannot score structured y (one label sequence per example) and would give "
                                 "nan; use a crflearn scorer, crflearn.metrics.get_scorer(name) with name in "
                                 f"{sorted(SCORERS)} (node-level equivalents of scikit-learn's names: "
                                 f"{SKLEARN_EQUIVALENTS})")
            return
        frame = frame.f_back

