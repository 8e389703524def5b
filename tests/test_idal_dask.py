"""The partitioned IDAL solver on a ``dask.distributed`` cluster: same certified result as the serial solver
and the threads, survival of a killed worker, clear errors.

One 2-worker ``LocalCluster`` (processes, one thread each), started with timeouts by a module fixture and
closed after the last test of the file (the worker-kill tests run last: each leaves a restarted worker);
the problems are tiny. Dense and compact edge marginals, unit and integer sample weights. Skipped when
``distributed`` is not installed.
"""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest
from _idal_reference import tiny_batch
from sklearn.exceptions import ConvergenceWarning
from test_idal_memory import _batch

from crflearn.solvers.idal import fit_idal

distributed = pytest.importorskip("distributed")

ALPHA = 0.5
KW = dict(alpha=ALPHA, max_iter=2000, tol=1e-6, random_state=0)
#: compact edge marginals with room for the optimum (K = 4 chains at kappa = 0.3: at most 7 of 16 entries)
COMPACT = dict(edge_storage="compact", edge_capacity=8, kappa=0.3, alpha=0.1, max_iter=3000)


def _cluster():
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                    timeout=60)


@pytest.fixture(scope="module")
def client():
    """A client of a 2-worker ``LocalCluster``, closed with the cluster after the module's tests."""
    with _cluster() as cluster, distributed.Client(cluster, timeout=60) as cl:
        yield cl


def _fit(batch, model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_idal(batch, model, **dict(KW, **kw))


def test_no_client_and_closed_client_are_clear_errors():
    batch, model = tiny_batch("chain", n_examples=3)
    try:
        distributed.get_client()
        pytest.skip("a dask client is already open in this process")
    except ValueError:
        pass
    with pytest.raises(ValueError, match="Client"):
        fit_idal(batch, model, backend="dask")
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0", timeout=60) as cluster:
        closed = distributed.Client(cluster, timeout=60)
        closed.close()
        with pytest.raises(ValueError, match="client"):
            fit_idal(batch, model, backend="dask")


class _FakeClient:
    """A client whose two workers have 1 kB of memory each (no cluster needed)."""

    status = "running"

    def scheduler_info(self):
        return {"workers": {f"tcp://w{i}": {"memory_limit": 1000} for i in range(2)}}


def test_data_larger_than_worker_memory_is_a_clear_error():
    from crflearn.solvers._idal_dask import DaskPartitions

    batch, model = tiny_batch("grid3", n_examples=4)
    with pytest.raises(ValueError, match="memory"):
        DaskPartitions(_FakeClient(), batch, [np.array([0, 1]), np.array([2, 3])], model, [{}, {}], [0, 1])


def test_two_workers_same_certified_result_as_serial_and_threads(client):
    batch, model = tiny_batch("grid2", n_examples=6, seed=3)
    serial = _fit(batch, model)
    threads = _fit(batch, model, n_jobs=2)
    simulated = _fit(batch, model, n_partitions=2, backend="simulate")
    on_dask = _fit(batch, model, backend="dask")  # one partition per worker
    one = _fit(batch, model, backend="dask", n_partitions=1, max_iter=10, tol=0.0)
    assert on_dask.converged and serial.converged and threads.converged
    # the same partitions and seeds as simulated: the same iterates, up to the order of float sums
    np.testing.assert_allclose(on_dask.w, simulated.w, rtol=1e-12, atol=1e-14)
    assert on_dask.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
    assert threads.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
    np.testing.assert_allclose(on_dask.w, serial.w, atol=1e-2)
    # one partition on dask is the serial solver (within rounding)
    serial10 = _fit(batch, model, max_iter=10, tol=0.0)
    np.testing.assert_allclose(one.w, serial10.w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("entropy, steps", [("gini", 0), ("shannon", 3)])
def test_packed_duals_unpack_bit_for_bit(entropy, steps):
    from crflearn.solvers._idal_dask import unpack
    from crflearn.solvers.idal_parallel import IdalPartition

    batch, model = tiny_batch("grid3", n_examples=3, seed=5)
    spec = dict(alpha=ALPHA, kappa=1.0, rho=1.0, entropy=entropy, loss_augmented=False, warm=None, inner_epochs=1,
                sampling="uniform")
    part = IdalPartition(batch, model, spec, 0, batch.n_examples, 1)
    wu, wp = part.initial()
    for _ in range(steps):
        part.run(wu, wp, 1.0)
    packed = part.packed_state()
    # the one-hot start is sparse, Shannon's marginals are dense
    assert isinstance(packed["mu_edges"], tuple) == (steps == 0)
    warm = unpack(packed)
    for key, now in zip(("mu_nodes", "mu_edges", "xi"), part.state()):
        np.testing.assert_array_equal(warm[key], now)


def test_two_workers_compact_and_weighted_reach_the_serial_certified_optimum(client):
    batch, model = _batch("chain", n_examples=4)
    weights = np.array([2.0, 1.0, 3.0, 1.0])
    serial = _fit(batch, model, **dict(COMPACT, edge_storage="dense", tol=1e-9))
    compact = _fit(batch, model, backend="dask", **COMPACT)
    assert compact.converged
    h = compact.history
    p_star = serial.history["primal"][-1]
    assert h["dual"][-1] <= p_star + 1e-9 <= h["primal"][-1] + 2e-9
    assert compact.state["mu_edges"].shape == (batch.n_edges, 16)  # compact: (E, K*K) with 8 slots per edge
    assert np.all((compact.state["mu_edges"].to_dense() != 0).sum(1) <= 8)
    lean = _fit(batch, model, backend="dask", return_state=False, commit_duals=False, **COMPACT)
    np.testing.assert_array_equal(lean.w, compact.w)  # the same rounds, nothing kept or gathered on the driver
    assert "mu_nodes" not in lean.state
    w_serial = _fit(batch, model, sample_weight=weights, tol=1e-9)
    weighted = _fit(batch, model, sample_weight=weights, backend="dask")
    assert weighted.converged
    assert weighted.history["primal"][-1] == pytest.approx(w_serial.history["primal"][-1], rel=3e-6)
    assert weighted.history["dual"][-1] <= w_serial.history["primal"][-1] + 1e-12
    np.testing.assert_array_equal(weighted.state["sample_weight"], weights)


@pytest.mark.parametrize("storage", [{}, dict(edge_storage="compact", edge_capacity=6)])
def test_lost_partition_restarts_from_its_committed_duals(client, storage):
    from crflearn.solvers.idal_parallel import ParallelOptions, Rebuilt, make_pool

    batch, model = tiny_batch("cycle4", n_examples=6, seed=6)
    spec = dict(alpha=ALPHA, kappa=1.0, rho=1.0, entropy="gini", loss_augmented=False, inner_epochs=1,
                sampling="uniform", **storage)
    pool, _ = make_pool(batch, model, ParallelOptions(1, 2, "dask", "cocoa"), spec, None, 0, None)
    try:
        start = pool.call("initial")
        for _ in range(3):
            pool.call("run", *start[0], 1.0)  # any w: only the duals matter here
        committed = pool.commit()
        rebuilt = pool._rebuild(0)  # what a lost partition answers
        assert isinstance(rebuilt, Rebuilt)
        now = pool.call("state")[0]
        for was, is_ in zip((committed[0]["mu_nodes"], committed[0]["xi"]), (now[0], now[2])):
            np.testing.assert_array_equal(was, is_)
        if storage:  # compact slots shipped and restored as they are
            for was, is_ in zip(committed[0]["mu_edges"], now[1]):
                np.testing.assert_array_equal(was, is_)
        contribution = pool.call("contribution")[0]
        np.testing.assert_allclose(rebuilt.contribution[0], contribution[0], rtol=1e-12, atol=1e-14)
        assert np.abs(rebuilt.contribution[0] - start[0][0]).max() > 1e-3  # not the one-hot start
    finally:
        pool.close()


def test_estimator_on_dask_with_the_memory_options(client):
    """``CRF(backend="dask")`` with compact edges and no committed duals through ``solver_params``: the certified
    optimum of the serial estimator; without ``warm_start`` no duals come back, with it they do (compact)."""
    from crflearn import CRF

    batch, _ = _batch("chain", n_examples=4)
    X = [batch.node_features[a:b] for a, b in zip(batch.node_offsets[:-1], batch.node_offsets[1:])]
    y = [batch.labels[a:b] for a, b in zip(batch.node_offsets[:-1], batch.node_offsets[1:])]
    kw = dict(alpha=0.1, kappa=0.3, tol=1e-6, max_iter=3000, random_state=1)
    serial = CRF(**kw).fit(X, y)
    params = {"edge_storage": "compact", "edge_capacity": 8, "commit_duals": False}
    on_dask = CRF(backend="dask", solver_params=params, **kw).fit(X, y)
    assert serial.converged_ and on_dask.converged_
    assert on_dask.history_["primal"][-1] == pytest.approx(serial.history_["primal"][-1], rel=3e-6)
    assert on_dask._solver_state is None
    warm = CRF(backend="dask", solver_params=params, warm_start=True, **kw).fit(X, y)
    assert warm._solver_state["mu_edges"].shape == (batch.n_edges, 16)


def test_without_commit_the_driver_keeps_no_duals_and_a_lost_partition_restarts_one_hot(client):
    from crflearn.solvers.idal_parallel import ParallelOptions, make_pool

    batch, model = tiny_batch("cycle4", n_examples=6, seed=6)
    spec = dict(alpha=ALPHA, kappa=1.0, rho=1.0, entropy="gini", loss_augmented=False, inner_epochs=1,
                sampling="uniform")
    opts = ParallelOptions(1, 2, "dask", "cocoa", commit_duals=False)
    pool, _ = make_pool(batch, model, opts, spec, None, 0, None)
    try:
        start = pool.call("initial")
        for _ in range(3):
            pool.call("run", *start[0], 1.0)
        assert pool.commit() == [] and pool.committed == [None, None]
        rebuilt = pool._rebuild(0)
        for was, is_ in zip(start[0], rebuilt.contribution):  # the one-hot start's part of w(mu) again
            np.testing.assert_array_equal(was, is_)
    finally:
        pool.close()


@pytest.mark.parametrize("storage", [{}, dict(edge_storage="compact", edge_capacity=9), dict(commit_duals=False)])
def test_killed_worker_does_not_lose_the_fit(client, storage):
    batch, model = tiny_batch("cycle4", n_examples=6, seed=4)
    serial = _fit(batch, model)
    killed = []

    def kill_after_round_2(info):
        if info["iteration"] >= 2 and not killed:
            addr = sorted(client.scheduler_info()["workers"])[0]
            pid = client.run(os.getpid, workers=[addr])[addr]
            os.kill(pid, signal.SIGKILL)
            killed.append(addr)

    res = _fit(batch, model, backend="dask", n_partitions=3, callback=kill_after_round_2, **storage)
    assert killed, "the callback killed a worker"
    assert res.converged and res.history["gap"][-1] <= 1e-6 * abs(res.history["primal"][-1]) * (1 + 1e-9)
    assert res.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
