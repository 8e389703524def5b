"""Reliability: numerics (issue 14). Huge scores and features give clear errors or correct results,
never bare arithmetic errors or silently unnormalised marginals.

The inference-level checks (row sums at scores up to 1e300, decode on all--inf nodes) live in
``tests/test_inference_numerics.py``; non-finite NeuralCRF losses in ``tests/test_neural_estimator.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from crflearn import CRF


@pytest.mark.parametrize("solver", ["idal", "bcfw", "lbfgs"])
@pytest.mark.parametrize("scale", [1e160, 1e200])
def test_overflowing_features_are_a_value_error_naming_the_scale(solver, scale):
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(5, 3)) * scale for _ in range(4)]
    y = [rng.integers(0, 3, 5) for _ in range(4)]
    with pytest.raises(ValueError, match="magnitude"):
        CRF(solver=solver, max_iter=2).fit(X, y)


@pytest.mark.parametrize("scale", [1e16, 1e40])
def test_large_but_representable_features_train_without_arithmetic_errors(scale):
    rng = np.random.default_rng(1)
    X = [rng.normal(size=(5, 3)) * scale for _ in range(4)]
    y = [rng.integers(0, 3, 5) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crf = CRF(max_iter=3, random_state=0).fit(X, y)
    assert np.all(np.isfinite(crf.coef_))
    marginals = crf.predict_marginals(X)
    for m in marginals:
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
