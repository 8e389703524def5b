"""Node- and sequence-level metrics and the ready-made scorers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from crflearn import metrics
from crflearn.metrics import (get_scorer, node_accuracy, node_classification_report, node_confusion_matrix,
                              node_f1_score, per_label_precision_recall_f1, sequence_accuracy)

Y_TRUE = [np.array(["a", "b", "b"]), np.array(["c", "a"]), np.array(["b"])]
Y_PRED = [np.array(["a", "b", "a"]), np.array(["c", "a"]), np.array(["c"])]


def _manual_counts(y_true, y_pred, label):
    t, p = np.concatenate(y_true), np.concatenate(y_pred)
    tp = np.sum((t == label) & (p == label))
    fp = np.sum((t != label) & (p == label))
    fn = np.sum((t == label) & (p != label))
    return tp, fp, fn


def test_node_and_sequence_accuracy_by_hand():
    # 6 nodes, 4 right; 3 sequences, only the second entirely right
    assert node_accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert sequence_accuracy(Y_TRUE, Y_PRED) == pytest.approx(1 / 3)
    assert node_accuracy(Y_TRUE, Y_TRUE) == 1.0
    assert sequence_accuracy(Y_TRUE, Y_TRUE) == 1.0


def test_node_accuracy_weights_nodes_not_sequences():
    y_true = [np.zeros(9, int), np.zeros(1, int)]
    y_pred = [np.zeros(9, int), np.ones(1, int)]
    assert node_accuracy(y_true, y_pred) == pytest.approx(0.9)
    assert sequence_accuracy(y_true, y_pred) == pytest.approx(0.5)


def test_per_label_scores_match_manual_counts():
    res = per_label_precision_recall_f1(Y_TRUE, Y_PRED)
    assert list(res["labels"]) == ["a", "b", "c"]
    for j, label in enumerate(res["labels"]):
        tp, fp, fn = _manual_counts(Y_TRUE, Y_PRED, label)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        assert res["precision"][j] == pytest.approx(prec)
        assert res["recall"][j] == pytest.approx(rec)
        assert res["f1"][j] == pytest.approx(f1)
        assert res["support"][j] == np.sum(np.concatenate(Y_TRUE) == label)
    assert node_f1_score(Y_TRUE, Y_PRED, average="macro") == pytest.approx(np.mean(res["f1"]))
    # micro F1 over all labels equals node accuracy
    assert node_f1_score(Y_TRUE, Y_PRED, average="micro") == pytest.approx(node_accuracy(Y_TRUE, Y_PRED))
    weighted = np.sum(res["f1"] * res["support"]) / np.sum(res["support"])
    assert node_f1_score(Y_TRUE, Y_PRED, average="weighted") == pytest.approx(weighted)


def test_report_and_confusion_matrix():
    cm = node_confusion_matrix(Y_TRUE, Y_PRED, labels=["a", "b", "c"])
    expected = np.array([[2, 0, 0], [1, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    report = node_classification_report(Y_TRUE, Y_PRED, output_dict=True)
    assert report["a"]["recall"] == pytest.approx(1.0)
    assert report["b"]["support"] == 3
    assert isinstance(node_classification_report(Y_TRUE, Y_PRED), str)


@pytest.mark.parametrize("y_true, y_pred, exc, match", [
    ([np.array([0, 1])], [np.array([0, 1]), np.array([1])], ValueError, "examples"),
    ([np.array([0, 1])], [np.array([0])], ValueError, "example 0"),
    (np.array([0, 1, 1]), [np.array([0, 1, 1])], TypeError, "y_true"),
    ([], [], ValueError, "empty"),
    ([np.zeros((2, 2))], [np.zeros((2, 2))], ValueError, r"y_true\[0\]"),
    ("abc", ["abc"], TypeError, "y_true"),
])
def test_bad_inputs(y_true, y_pred, exc, match):
    with pytest.raises(exc, match=match):
        node_accuracy(y_true, y_pred)


def test_bad_average():
    with pytest.raises(ValueError, match="average"):
        node_f1_score(Y_TRUE, Y_PRED, average="samples")


class _FixedPredictor(BaseEstimator):
    """Predicts a stored answer; lets the scorers be checked without any CRF."""

    def __init__(self, answer=None):
        self.answer = answer

    def fit(self, X, y=None):
        return self

    def predict(self, X):
        return self.answer


@pytest.mark.parametrize("name, func", [
    ("node_accuracy", node_accuracy),
    ("sequence_accuracy", sequence_accuracy),
    ("node_f1_macro", lambda t, p: node_f1_score(t, p, average="macro")),
    ("node_f1_micro", lambda t, p: node_f1_score(t, p, average="micro")),
    ("node_f1_weighted", lambda t, p: node_f1_score(t, p, average="weighted")),
])
def test_scorers_call_predict_and_compare(name, func):
    est = _FixedPredictor(Y_PRED)
    scorer = get_scorer(name)
    assert scorer is metrics.SCORERS[name]
    assert scorer(est, [None] * 3, Y_TRUE) == pytest.approx(func(Y_TRUE, Y_PRED))


def test_get_scorer_errors_and_passthrough():
    with pytest.raises(ValueError, match="scoring must be one of"):
        get_scorer("accuracy")
    with pytest.raises(TypeError, match="scoring"):
        get_scorer(3)
    fn = metrics.node_accuracy_scorer
    assert get_scorer(fn) is fn


def test_labels_of_two_types_raise_instead_of_scoring_zero():
    from crflearn.metrics import node_accuracy, sequence_accuracy

    with pytest.raises(TypeError, match="type"):
        node_accuracy([np.array([0, 1])], [np.array(["0", "1"])])
    with pytest.raises(TypeError, match="type"):
        sequence_accuracy([np.array([0, 1])], [np.array(["0", "1"])])


def test_tuple_labels_are_compared_whole():
    from crflearn.metrics import node_accuracy, sequence_accuracy

    y = [[("B", "PER"), ("O",)], [("O",)]]
    pred = [[("B", "PER"), ("B", "PER")], [("O",)]]
    assert node_accuracy(y, pred) == pytest.approx(2 / 3)
    assert sequence_accuracy(y, pred) == 0.5
