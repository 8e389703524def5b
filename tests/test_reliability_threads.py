"""Reliability: threads (issue 14). Fits running in threads give exactly the serial results and leave
the caller's global random state and BLAS settings alone.

NeuralCRF fits in threads are checked in ``tests/test_neural_graph_estimator.py``
(``test_fits_in_threads_equal_serial_fits``-style test with local torch generators).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import run_in_threads
from threadpoolctl import threadpool_info

from crflearn import CRF
from crflearn.datasets import make_chain_hmm


@pytest.mark.parametrize("solver", ["idal", "bcfw", "subgradient", "lbfgs"])
def test_crf_fits_in_threads_equal_serial_fits(solver):
    X, y = make_chain_hmm(n_sequences=30, length=(3, 8), n_states=3, n_features=5, random_state=0)

    def fit(seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return CRF(solver=solver, max_iter=15, random_state=seed).fit(X, y).coef_

    serial = [fit(s) for s in (0, 1)]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    results = run_in_threads(fit)
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_blas_thread_limit_is_restored_after_fit():
    X, y = make_chain_hmm(n_sequences=10, length=(3, 6), n_states=3, n_features=4, random_state=0)
    before = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CRF(max_iter=3).fit(X, y).predict(X)
    after = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    assert after == before


def test_compiled_kernels_release_the_gil():
    """Every Numba kernel is compiled with ``nogil=True``, so kernels called from several threads run in
    parallel (the data-parallel solver builds on this)."""
    import importlib

    from numba.core.registry import CPUDispatcher

    names = ["idal", "idal_monitor", "simplex", "inference_loopy", "inference_schedule", "inference_tree",
             "qp", "ssvm"]
    holding, checked = [], {}
    for name in names:
        module = importlib.import_module(f"crflearn._kernels.{name}")
        kernels = [(attr, obj) for attr, obj in vars(module).items()
                   if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__]
        checked[name] = len(kernels)
        holding += [f"{name}.{attr}" for attr, obj in kernels
                    if not obj.targetoptions.get("nogil", False) and obj.targetoptions.get("inline") != "always"]
    assert all(checked.values()), checked  # every module was really inspected
    assert holding == []
