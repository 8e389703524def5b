"""The partitions of :mod:`crflearn.solvers.idal_parallel` on the workers of a ``dask.distributed`` client.

Every partition's examples are scattered once to one worker, which builds the partition
(:class:`~crflearn.solvers.idal_parallel.IdalPartition`) and keeps it in its memory: the task's result
stays on the worker and later tasks, pinned to that worker, update it in place. A round ships ``w`` (and
``rho``) out and the weight change back; a certificate ships ``w`` out and the partition's terms back.

Memory: the driver keeps the batch and the indices of every partition's examples, no copy per partition
(a partition's examples are cut from the batch when it is placed). At the end of a fit the partitions'
states are fetched one after the other, each partition released on its worker once its state is on the
driver (none with ``return_state=False``).

Faults: at every certificate round the driver keeps the partitions' duals (:meth:`DaskPartitions.commit`;
the edge marginals as their non-zeros when sparse, as Gini's are, or as their compact slots with
``edge_storage="compact"``; not with ``commit_duals=False``). When a partition's worker leaves the
cluster (killed, restarted by its nanny) or its task is lost, the driver scatters the partition's examples
and its last committed duals (none before the first certificate or without commits: the one-hot start) to
the live worker holding the fewest partitions, rebuilds the partition there and answers
:class:`~crflearn.solvers.idal_parallel.Rebuilt` with its new part of ``w(mu)``, which the driver swaps for
the lost one, so that ``w = w(mu)`` holds again and the fit continues from the committed round. The
certificate never depends on this bookkeeping (its bounds are valid for any ``w``).

``distributed`` is an optional dependency, imported here only.
"""

from __future__ import annotations

import time

import numpy as np

from .._kernels.idal_compact import CompactEdges
from ..graphs import GraphBatch
from ..models import PairwiseModel
from .idal_parallel import IdalPartition, Rebuilt

__all__ = ["current_client", "DaskPartitions", "partition_bytes", "unpack"]

#: seconds between two checks of the workers while a round is in flight
_POLL = 0.5
#: seconds a partition may wait for a worker to hold it before the fit gives up
_NO_WORKER_TIMEOUT = 60.0


def current_client():
    """The running ``dask.distributed`` client of this process (``distributed.get_client()``).

    Raises
    ------
    ImportError
        When ``distributed`` is not installed.
    ValueError
        When no client is open (or the last one was closed), or the client is not running.
    """
    try:
        from distributed import get_client
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ImportError("backend='dask' needs dask.distributed: pip install distributed") from exc
    try:
        client = get_client()
    except ValueError:
        raise ValueError("backend='dask' needs a running dask.distributed client, and none is open (or it was "
                         "closed): open one first, e.g. `from distributed import Client, LocalCluster; "
                         "client = Client(LocalCluster())` or `Client('tcp://scheduler:8786')`") from None
    if client.status != "running":
        raise ValueError(f"backend='dask': the current dask.distributed client is {client.status!r}, not "
                         "running; open a new one with distributed.Client(...)")
    return client


def partition_bytes(batch: GraphBatch, n_states: int, edge_capacity: int | None = None,
                    examples: np.ndarray | None = None) -> int:
    """Estimated memory of one partition on its worker (the ``examples`` of ``batch``; None: all): marginals,
    multipliers, repair and features (float64), plus the examples themselves; the edge marginals dense
    (``3 K^2`` floats per edge), or ``edge_capacity`` slots of 12 bytes per edge with the compact layout."""
    n_nodes, n_edges = batch.n_nodes, batch.n_edges
    if examples is not None:
        n_nodes, n_edges = int(batch.lengths[examples].sum()), int(np.diff(batch.edge_offsets)[examples].sum())
    k = n_states
    edge_block = 3 * k * k if edge_capacity is None else 1.5 * edge_capacity
    floats = n_nodes * 3 * k + n_edges * (edge_block + 4 * k)
    feats = batch.node_features
    data = feats.data.nbytes + feats.indices.nbytes if hasattr(feats, "indices") else feats.nbytes
    return int(8 * floats + 2 * data * n_nodes / max(batch.n_nodes, 1))


def _build(piece, model: PairwiseModel, spec: dict, seed, n_total: int, sigma: int) -> IdalPartition:
    return IdalPartition(piece, model, spec, seed, n_total, sigma)


def _invoke(part: IdalPartition, name: str, *args):
    return getattr(part, name)(*args)


class DaskPartitions:
    """The partitions on the workers of ``client`` (see the module docstring).

    Parameters
    ----------
    client : distributed.Client
    batch : GraphBatch
        All examples (kept on the driver: a partition's examples are cut from it when the partition is
        placed on a worker, and again to rebuild it after a loss; no copy per partition stays on the driver).
    examples : list of ndarray
        The examples of every partition (indices into ``batch``).
    model : PairwiseModel
    specs, seeds : lists
        Per partition: keywords of ``build_engine`` and the seed of its sweep orders.
    commit : bool, default=True
        Whether :meth:`commit` keeps the partitions' duals on the driver (False: a lost partition restarts
        from the one-hot start, and the driver holds no duals).
    """

    def __init__(self, client, batch: GraphBatch, examples: list, model: PairwiseModel, specs: list, seeds: list,
                 commit: bool = True):
        self.client, self.batch, self.examples, self.model = client, batch, examples, model
        self.specs, self.seeds, self.n_total, self.keep = specs, seeds, batch.n_examples, bool(commit)
        workers = self._workers()
        if not workers:
            raise ValueError("backend='dask': the dask.distributed cluster has no workers")
        self.addr = [workers[k % len(workers)] for k in range(len(examples))]
        self._check_memory(workers)
        self.parts = [None] * len(examples)
        self.committed = [None] * len(examples)  # packed duals of the last certificate round
        for k in range(len(examples)):
            self._place(k, self.addr[k])

    def _workers(self) -> list[str]:
        return sorted(self.client.scheduler_info()["workers"])

    def _check_memory(self, workers: list[str]) -> None:
        info = self.client.scheduler_info()["workers"]
        need = {addr: 0 for addr in workers}
        for k, examples in enumerate(self.examples):
            need[self.addr[k]] += partition_bytes(self.batch, self.model.n_states, self.specs[k].get("edge_capacity"),
                                                  examples)
        for addr, nbytes in need.items():
            limit = info[addr].get("memory_limit") or 0
            if limit and nbytes > limit:
                raise ValueError(f"the data do not fit in the workers' memory: worker {addr} would hold "
                                 f"~{nbytes / 2**30:.2f} GiB of partitions, its memory_limit is "
                                 f"{limit / 2**30:.2f} GiB; use more workers or larger memory limits")

    def _place(self, k: int, addr: str) -> None:
        """Scatter partition ``k``'s examples (and its last committed duals) to ``addr`` and build the
        partition there."""
        spec = self.specs[k] if self.committed[k] is None else dict(self.specs[k], warm=unpack(self.committed[k]))
        data, spec = self.client.scatter([self.batch.subset(self.examples[k]), spec], workers=[addr], hash=False)
        self.addr[k] = addr
        self.parts[k] = self.client.submit(_build, data, self.model, spec, self.seeds[k], self.n_total,
                                           len(self.examples), pure=False, workers=[addr],
                                           allow_other_workers=False)

    def _submit(self, k: int, name: str, args: tuple):
        return self.client.submit(_invoke, self.parts[k], name, *args, pure=False, workers=[self.addr[k]],
                                  allow_other_workers=False)

    def call(self, name: str, *args) -> list:
        """``getattr(partition, name)(*args)`` on every partition; a lost partition is rebuilt and
        answers :class:`Rebuilt` instead."""
        futures = {k: self._submit(k, name, args) for k in range(len(self.parts))}
        results, lost = self._collect(futures)
        for k in lost:
            results[k] = self._rebuild(k)
        return [results[k] for k in range(len(self.parts))]

    def call_one(self, k: int, name: str, *args):
        """``getattr(partition k, name)(*args)``; :class:`Rebuilt` if partition ``k`` was lost (and rebuilt)."""
        results, lost = self._collect({k: self._submit(k, name, args)})
        return self._rebuild(k) if lost else results.pop(k)

    def release(self, k: int) -> None:
        """Free partition ``k`` on its worker (after its last call)."""
        part, self.parts[k] = self.parts[k], None
        try:
            self.client.cancel([part])
        except Exception:  # noqa: BLE001 - the client may be gone; the partition goes with it
            pass

    def _collect(self, futures: dict) -> tuple[dict, list[int]]:
        """Wait for ``futures``; return the answers and the partitions whose worker was lost."""
        from distributed import wait

        results, lost, pending = {}, [], dict(futures)
        while pending:
            try:
                wait(list(pending.values()), timeout=_POLL, return_when="FIRST_COMPLETED")
            except Exception as exc:  # noqa: BLE001 - a timeout or cancelled futures: see their status below
                if not isinstance(exc, TimeoutError) and "Cancelled" not in type(exc).__name__:
                    raise
            alive = None
            for k, fut in list(pending.items()):
                if fut.status == "finished":
                    results[k] = fut.result()
                elif fut.status == "error" and not _is_loss(fut.exception()):
                    fut.result()  # a genuine error of the computation: raise it
                elif fut.status in ("error", "cancelled", "lost"):
                    lost.append(k)
                else:
                    alive = self._workers() if alive is None else alive
                    if self.addr[k] in alive:
                        continue
                    fut.cancel()
                    lost.append(k)
                del pending[k]
        return results, lost

    def _rebuild(self, k: int) -> Rebuilt:
        """Rebuild partition ``k`` from its examples on a live worker; its new part of ``w(mu)``."""
        deadline = time.monotonic() + _NO_WORKER_TIMEOUT
        while True:
            workers = self._workers()
            if workers:
                load = {addr: sum(a == addr for j, a in enumerate(self.addr) if j != k) for addr in workers}
                self._place(k, min(workers, key=lambda a: (load[a], a)))
                results, lost = self._collect({k: self._submit(k, "initial", ())})
                if not lost:
                    return Rebuilt(results[k])
            if time.monotonic() > deadline:
                raise RuntimeError(f"partition {k} of the dask IDAL fit could not be rebuilt on any worker "
                                   f"within {_NO_WORKER_TIMEOUT:.0f} s (workers: {workers})")
            time.sleep(_POLL)

    def commit(self) -> list:
        """Keep every partition's duals on the driver (:meth:`IdalPartition.packed_state`), to rebuild a
        lost partition from them; returns the answers (:class:`Rebuilt` for a partition lost meanwhile).
        Nothing (an empty list) when the pool was made with ``commit=False``.

        The partitions answer one after the other, each answer replacing that partition's earlier duals at
        once: the driver holds the committed duals plus one partition's new ones, not two copies of all."""
        if not self.keep:
            return []
        answers = []
        for k in range(len(self.parts)):
            answer = self.call_one(k, "packed_state")
            if not isinstance(answer, Rebuilt):
                self.committed[k] = answer
            answers.append(answer)
        return answers

    def close(self) -> None:
        """Release the partitions on the workers."""
        try:
            self.client.cancel([p for p in self.parts if p is not None])
            self.parts = [None] * len(self.parts)
        except Exception:  # noqa: BLE001 - the client may be gone; the partitions go with it
            pass


def unpack(packed: dict) -> dict:
    """The warm-start arrays of :meth:`IdalPartition.packed_state` (sparse edge marginals made dense again,
    compact ones kept as they are)."""
    edges = packed["mu_edges"]
    if isinstance(edges, tuple) and not isinstance(edges, CompactEdges):
        shape, idx, values = edges
        dense = np.zeros(shape)
        dense.reshape(-1)[idx] = values
        edges = dense
    return dict(packed, mu_edges=edges)


def _is_loss(exc: BaseException) -> bool:
    """Whether a task error means the worker (or the task's input) was lost, not a computation error."""
    from distributed import KilledWorker

    name = type(exc).__name__
    return isinstance(exc, (KilledWorker, OSError)) or name in ("CommClosedError", "FutureCancelledError",
                                                               "CancelledError")
