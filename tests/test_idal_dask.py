"""The partitioned IDAL solver on a ``dask.distributed`` cluster: same certified result as the serial solver
and the threads, survival of a killed worker, clear errors.

One 2-worker ``LocalCluster`` (processes, one thread each), started with timeouts by a module fixture and
closed after the last test of the file (the worker-kill test runs last: it leaves a restarted worker);
the problems are tiny. Skipped when ``distributed`` is not installed.
"""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest
from _idal_reference import tiny_batch
from sklearn.exceptions import ConvergenceWarning

from crflearn.solvers.idal import fit_idal

distributed = pytest.importorskip("distributed")

ALPHA = 0.5
KW = dict(alpha=ALPHA, max_iter=2000, tol=1e-6, random_state=0)


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
    pieces = [batch.subset([0, 1]), batch.subset([2, 3])]
    with pytest.raises(ValueError, match="memory"):
        DaskPartitions(_FakeClient(), pieces, model, [{}, {}], [0, 1], batch.n_examples)


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


def test_killed_worker_does_not_lose_the_fit(client):
    batch, model = tiny_batch("cycle4", n_examples=6, seed=4)
    serial = _fit(batch, model)
    killed = []

    def kill_after_round_2(info):
        if info["iteration"] >= 2 and not killed:
            addr = sorted(client.scheduler_info()["workers"])[0]
            pid = client.run(os.getpid, workers=[addr])[addr]
            os.kill(pid, signal.SIGKILL)
            killed.append(addr)

    res = _fit(batch, model, backend="dask", n_partitions=3, callback=kill_after_round_2)
    assert killed, "the callback killed a worker"
    assert res.converged and res.history["gap"][-1] <= 1e-6 * abs(res.history["primal"][-1]) * (1 + 1e-9)
    assert res.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
