"""SolverLoop: stopping, recording, timing, callbacks and interrupts; interrupts of every baseline solver."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_info

from crflearn.graphs import grid_edges, make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers import ConvergenceHistory, SolverLoop, get_solver, relative_gap
from crflearn.solvers import _history, _loop
from crflearn.solvers._ssvm import SSVMProblem


class FakeClock:
    """A deterministic ``time.perf_counter``."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(_loop.time, "perf_counter", fake)
    monkeypatch.setattr(_history.time, "perf_counter", fake)
    return fake


def _loop_for(max_iter=5, tol=1e-3, **kw):
    return SolverLoop("test", max_iter=max_iter, tol=tol, history=ConvergenceHistory(), **kw)


def test_time_excludes_monitoring(clock):
    loop = _loop_for(max_iter=3, tol=0.0)
    with loop:
        for it in loop.iterations():
            clock.now += 1.0           # solver work
            with loop.monitoring():
                clock.now += 10.0      # certificate
            loop.record(it, primal=1.0, dual=0.5)
    with pytest.warns(ConvergenceWarning, match="test stopped at max_iter=3"):
        h = loop.finish()
    np.testing.assert_array_equal(h["iteration"], [1, 2, 3])
    np.testing.assert_allclose(h["time"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(h["monitor_time"], [10.0, 20.0, 30.0])
    np.testing.assert_allclose(h["wall_time"], [11.0, 22.0, 33.0])


def test_warm_continuation_numbers_and_clocks(clock):
    first = _loop_for(max_iter=2, tol=0.0)
    with first:
        for it in first.iterations():
            clock.now += 1.0
            first.record(it, primal=1.0, dual=0.0, oracle_calls=4 * it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        h1 = first.finish()
    second = SolverLoop("test", max_iter=2, tol=0.0, history=ConvergenceHistory(start=h1))
    with second:
        for it in second.iterations():
            clock.now += 1.0
            second.record(it, primal=1.0, dual=0.0)
    assert second.n_iter == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        h2 = second.finish()
    np.testing.assert_array_equal(h2["iteration"], [1, 2, 3, 4])
    np.testing.assert_allclose(h2["time"], [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("rel", [1e-3, 1e-3 * (1 + 1e-12), 0.5e-3])
def test_tolerance_met_up_to_roundoff(rel):
    loop = _loop_for(tol=1e-3)
    with loop:
        for it in loop.iterations():
            if loop.record(it, primal=2.0, dual=2.0 - rel * 2.0):
                break
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        loop.finish()
    assert loop.converged and loop.n_iter == 1


def test_tolerance_not_met_warns_with_the_gap():
    loop = _loop_for(max_iter=2, tol=1e-3)
    with loop:
        for it in loop.iterations():
            loop.record(it, primal=1.0, dual=1.0 - 1.1e-3)
    with pytest.warns(ConvergenceWarning, match=r"relative gap 1\.100e-03 > tol=0\.001"):
        loop.finish()
    assert not loop.converged and relative_gap(1.1e-3, 1.0) == pytest.approx(loop.last_relative_gap)


def test_residual_tolerance():
    loop = _loop_for(max_iter=2, tol=1e-3, residual_tol=True)
    with loop:
        for it in loop.iterations():
            loop.record(it, primal=1.0, dual=1.0, residual=1.0)
    with pytest.warns(ConvergenceWarning, match="constraint residual"):
        loop.finish()
    assert not loop.converged


def test_callback_gets_a_copy_and_stops():
    seen = []
    w = np.arange(3.0)

    def callback(info):
        seen.append(info)
        return info["iteration"] == 2

    loop = _loop_for(max_iter=10, tol=0.0, callback=callback)
    with loop:
        for it in loop.iterations():
            if loop.record(it, primal=1.0, dual=0.0, w=w):
                break
            w += 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        loop.finish()
    assert loop.stopped and loop.n_iter == 2 and len(seen) == 2
    np.testing.assert_array_equal(seen[0]["w"], [0.0, 1.0, 2.0])  # a copy, not the live array


def test_verbose_lines(capsys):
    loop = _loop_for(max_iter=4, tol=0.0, verbose=2)
    with loop:
        for it in loop.iterations():
            loop.record(it, primal=1.0, dual=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loop.finish()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[test] iter    2") and "rel.gap=5.000e-01" in lines[0]


@pytest.mark.parametrize("where", ["work", "monitoring", "callback"])
def test_interrupt_keeps_the_last_recorded_row(where):
    def callback(info):
        if where == "callback" and info["iteration"] == 3:
            raise KeyboardInterrupt

    loop = _loop_for(max_iter=10, tol=0.0, callback=callback)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        with loop:
            for it in loop.iterations():
                if it == 3 and where == "work":
                    raise KeyboardInterrupt
                with loop.monitoring():
                    if it == 3 and where == "monitoring":
                        raise KeyboardInterrupt
                loop.record(it, primal=1.0, dual=0.0)
    h = loop.finish()  # no ConvergenceWarning after an interrupt
    assert loop.interrupted and loop.n_iter == h["iteration"][-1]
    assert loop.unrecorded == (where != "callback")
    assert loop.n_iter == (3 if where == "callback" else 2)


def test_blas_limited_inside_the_loop():
    loop = _loop_for()
    with loop:
        inside = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    assert all(n == 1 for n in inside)


# -- interrupts of the solvers -------------------------------------------------------------------

def _chains():
    rng = np.random.default_rng(0)
    X = [(rng.normal(size=(n, 2)), np.array([[i, i + 1] for i in range(n - 1)])) for n in (3, 4, 2, 3)]
    y = [rng.integers(0, 3, size=len(x[0])) for x in X]
    batch, _ = make_batch(X, y)
    return batch, PairwiseModel(3, 2, fit_intercept=True)


def _grids():
    rng = np.random.default_rng(1)
    X = [(rng.normal(size=(4, 2)), grid_edges(2, 2)) for _ in range(3)]
    y = [rng.integers(0, 2, size=4) for _ in range(3)]
    batch, _ = make_batch(X, y)
    return batch, PairwiseModel(2, 2)


def _interrupted_fit(name, batch, model, monkeypatch, target, after_calls):
    """Fit with ``target`` (an oracle) raising KeyboardInterrupt at its ``after_calls``-th call;
    return the result and the weights the callback saw at each recorded row."""
    owner, attr = target
    original = getattr(owner, attr)
    calls = [0]

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == after_calls:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, attr, flaky)
    seen = {}

    def callback(info):
        seen[info["iteration"]] = info["w"]

    with pytest.warns(RuntimeWarning, match="interrupted"):
        res = get_solver(name)(batch, model, alpha=0.1, max_iter=20, tol=0.0, random_state=0, callback=callback)
    return res, seen


@pytest.mark.parametrize("name,problem,target,after_calls", [
    ("bcfw", _chains, (SSVMProblem, "oracle_all"), 3),          # in the monitoring pass after epoch 3
    ("subgradient", _chains, (SSVMProblem, "oracle_all"), 2),
    ("cutting_plane", _chains, (SSVMProblem, "oracle_all"), 4),  # the oracle pass of iteration 4
    ("bcfw", _grids, (SSVMProblem, "oracle_one"), 8),           # mid-epoch on loopy graphs
    ("subgradient", _grids, (SSVMProblem, "oracle_one"), 5),
])
def test_solver_interrupt_returns_the_last_recorded_row(monkeypatch, name, problem, target, after_calls):
    batch, model = problem()
    res, seen = _interrupted_fit(name, batch, model, monkeypatch, target, after_calls)
    h = res.history
    assert res.interrupted and not res.converged
    assert res.n_iter == h["iteration"][-1] == max(seen)
    np.testing.assert_array_equal(res.w, seen[res.n_iter])
    # the state continues from that row
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cont = get_solver(name)(batch, model, alpha=0.1, max_iter=1, tol=0.0, random_state=0, warm_start=res.state)
    assert cont.n_iter == res.n_iter + 1


def test_lbfgs_interrupt_returns_the_last_recorded_row(monkeypatch):
    from crflearn.solvers import lbfgs

    batch, model = _chains()
    res, seen = _interrupted_fit("lbfgs", batch, model, monkeypatch, (lbfgs, "crf_objective"), 6)
    assert res.interrupted and res.n_iter == res.history["iteration"][-1] == max(seen)
    np.testing.assert_array_equal(res.w, seen[res.n_iter])
