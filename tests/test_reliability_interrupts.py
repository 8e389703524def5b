"""Reliability: interrupts (issue 14). Ctrl-C during ``CRF.fit`` keeps a usable model for every solver: the
weights of the last recorded history row, ``n_iter_`` equal to that row, ``interrupted_`` set.

Solver-level and ``SolverLoop`` tests (interrupts from oracles, mid-epoch) are in ``tests/test_solver_loop.py``;
the CLI's Ctrl-C semantics in ``tests/test_reliability_cli.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from crflearn import CRF
from crflearn.datasets import make_chain_hmm
from crflearn.solvers import SOLVER_NAMES


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_ctrl_c_in_fit_keeps_the_last_recorded_row(solver):
    X, y = make_chain_hmm(n_sequences=20, length=(3, 7), n_states=3, n_features=4, random_state=0)
    seen = []

    def callback(info):
        seen.append((info["iteration"], info["w"]))
        if len(seen) == 3:
            raise KeyboardInterrupt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = {"monitor_every": 1} if solver == "idal" else None
        crf = CRF(solver=solver, max_iter=50, tol=0.0, random_state=0, callback=callback, solver_params=params)
        crf.fit(X, y)
    assert crf.interrupted_
    assert crf.n_iter_ == crf.history_["iteration"][-1] == seen[-1][0]
    np.testing.assert_array_equal(crf.coef_, seen[-1][1])
    predictions = crf.predict(X[:2])
    assert [len(p) for p in predictions] == [len(x) for x in X[:2]]
