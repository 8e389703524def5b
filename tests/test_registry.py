"""The solver registry says what each solver really does."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from crflearn.exceptions import LoopyGraphError
from crflearn.graphs import grid_edges, make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers import SOLVER_NAMES, SOLVERS, get_solver, get_solver_spec

COMMON = ("alpha", "max_iter", "tol", "verbose", "random_state", "warm_start", "callback", "check_input")
OBJECTIVES = ("crf", "relaxed_crf", "ssvm")


def _chains():
    rng = np.random.default_rng(0)
    X = [(rng.normal(size=(n, 2)), np.array([[i, i + 1] for i in range(n - 1)])) for n in (3, 2, 3)]
    y = [rng.integers(0, 2, size=len(x[0])) for x in X]
    batch, _ = make_batch(X, y)
    return batch, PairwiseModel(2, 2, fit_intercept=True)


def _fit(name, batch, model, **kw):
    kw.setdefault("alpha", 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return get_solver(name)(batch, model, max_iter=2, tol=0.0, random_state=0, **kw)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_spec_matches_the_function_signature(name):
    spec = get_solver_spec(name)
    assert spec.name == name and SOLVERS[name] is spec and spec.objective in OBJECTIVES and spec.description
    params = inspect.signature(spec.load()).parameters
    assert list(params)[:2] == ["batch", "model"]
    for key in COMMON + spec.params:
        assert key in params and params[key].kind == inspect.Parameter.KEYWORD_ONLY, key
    # the training-staples flags say what the function takes
    assert spec.sample_weight == ("sample_weight" in params)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_staples_flags(name):
    """sample_weight=True: weights are used (all-ones = None); partial_labels=True: label -1 trains."""
    spec = get_solver_spec(name)
    batch, model = _chains()
    if spec.sample_weight:
        plain = _fit(name, batch, model)
        ones = _fit(name, batch, model, sample_weight=np.ones(batch.n_examples))
        np.testing.assert_allclose(ones.w, plain.w, rtol=1e-10, atol=1e-12)
        skewed = _fit(name, batch, model, sample_weight=np.array([5.0, 0.1, 1.0]))
        assert not np.allclose(skewed.w, plain.w)
    if spec.partial_labels:
        batch.labels = batch.labels.copy()
        batch.labels[1] = -1
        assert np.all(np.isfinite(_fit(name, batch, model).w))


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_warm_start_keys_are_those_the_solver_needs(name):
    batch, model = _chains()
    spec = get_solver_spec(name)
    first = _fit(name, batch, model)
    assert set(spec.warm_start_keys) <= set(first.state)
    again = _fit(name, batch, model, warm_start=first.state)
    assert again.n_iter == first.n_iter + 2
    for key in spec.warm_start_keys:
        partial = {k: v for k, v in first.state.items() if k != key}
        with pytest.raises(ValueError, match="warm_start"):
            _fit(name, batch, model, warm_start=partial)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_warm_start_same_alpha(name):
    batch, model = _chains()
    first = _fit(name, batch, model, alpha=0.5)
    if get_solver_spec(name).warm_start_same_alpha:
        with pytest.raises(ValueError, match="alpha"):
            _fit(name, batch, model, alpha=0.05, warm_start=first.state)
    else:
        assert _fit(name, batch, model, alpha=0.05, warm_start=first.state).n_iter == first.n_iter + 2


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_forests_only(name):
    rng = np.random.default_rng(2)
    X = [(rng.normal(size=(4, 2)), grid_edges(2, 2)) for _ in range(2)]
    y = [rng.integers(0, 2, size=4) for _ in range(2)]
    batch, _ = make_batch(X, y)
    model = PairwiseModel(2, 2)
    if get_solver_spec(name).forests_only:
        with pytest.raises(LoopyGraphError):
            _fit(name, batch, model)
    else:
        assert _fit(name, batch, model).n_iter == 2


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_check_input_false_skips_the_batch_checks_only(name, monkeypatch):
    batch, model = _chains()
    checked = _fit(name, batch, model)

    def refuse(self, batch):
        raise AssertionError("check_batch called with check_input=False")

    monkeypatch.setattr(PairwiseModel, "check_batch", refuse)
    trusted = _fit(name, batch, model, check_input=False)
    np.testing.assert_allclose(trusted.w, checked.w, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="alpha"):
        _fit(name, batch, model, alpha=-1.0, check_input=False)


def test_unknown_solver():
    with pytest.raises(ValueError, match="solver must be one of"):
        get_solver_spec("newton")
    with pytest.raises(ValueError, match="solver must be one of"):
        get_solver(3)
