"""Default settings generalise: a CRF with only ``random_state`` set against per-label baselines.

Issue 10, item 4: on a held-out multi-label task on a complete 6-node graph, ``CRF()`` at its default settings is
no worse in Hamming loss than six independent ``LogisticRegression`` classifiers (also at their defaults). The
OCR and snakes parts of that item need the shared data sets and run as a benchmark
(``python benchmarks/bench_fit_total.py defaults``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from crflearn import CRF
from crflearn.datasets._multilabel import make_multilabel_graph

N_TRAIN = 200


def _split(seed):
    X, y, inputs, labels = make_multilabel_graph(2 * N_TRAIN, n_features=5, n_labels=6, random_state=seed)
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, 2 * N_TRAIN)
    return (X[train], y[train], inputs[train], labels[train]), (X[test], inputs[test], labels[test])


def test_generator_shapes_and_complete_graph():
    X, y, inputs, labels = make_multilabel_graph(7, n_features=3, n_labels=4, random_state=0)
    assert len(X) == len(y) == 7 and inputs.shape == (7, 3) and labels.shape == (7, 4)
    features, edges, edge_features = X[0]
    assert features.shape == (4, 4 * 3 + 4) and edge_features.shape == (6, 6)
    assert {tuple(e) for e in edges} == {(j, k) for j in range(4) for k in range(j + 1, 4)}
    # node j carries x in block j and the one-hot of j
    np.testing.assert_array_equal(features[2, 6:9], inputs[0])
    assert features[2, :6].sum() == 0 and features[2, 9:12].sum() == 0
    np.testing.assert_array_equal(features[:, 12:], np.eye(4))
    np.testing.assert_array_equal(np.vstack(y), labels)
    assert set(np.unique(labels)) <= {0, 1}
    again = make_multilabel_graph(7, n_features=3, n_labels=4, random_state=0)
    np.testing.assert_array_equal(again[3], labels)


@pytest.mark.parametrize("kwargs, error", [({"n_labels": 13}, ValueError), ({"coupling": -1.0}, ValueError),
                                           ({"temperature": 0.0}, ValueError), ({"n_samples": 1.5}, TypeError)])
def test_generator_rejects_bad_parameters(kwargs, error):
    with pytest.raises(error):
        make_multilabel_graph(**kwargs)


@pytest.mark.parametrize("seed", [0, 1])
def test_default_crf_no_worse_than_independent_logistic_regressions(seed):
    (X_tr, y_tr, in_tr, lab_tr), (X_te, in_te, lab_te) = _split(seed)
    baseline = np.column_stack([LogisticRegression().fit(in_tr, lab_tr[:, j]).predict(in_te)
                                for j in range(lab_tr.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        crf = CRF(random_state=0).fit(X_tr, y_tr)
    predicted = np.vstack(crf.predict(X_te))
    hamming_crf = float(np.mean(predicted != lab_te))
    hamming_lr = float(np.mean(baseline != lab_te))
    assert hamming_crf <= hamming_lr, (hamming_crf, hamming_lr)
