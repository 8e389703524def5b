"""Data-parallel IDAL: the examples split into partitions that share only the weight vector.

IDAL's dual variables (marginals ``mu``) and multipliers (``xi``, messages on the separators of one
example) belong to examples; the only coupling between examples is ``w(mu) = 1/(lambda n) sum_i
(psi*_i - Psi_i mu_i)``. So the examples are dealt at random into ``P`` partitions (balanced by clique
count, :func:`partition_examples`), each with its own :class:`~crflearn._kernels.idal_engine.IdalEngine`
holding its marginals and multipliers, and the partitions run their outer steps (``inner_epochs``
clique-wise SDCA sweeps, then their multiplier step) in rounds. Two ways to share ``w``:

* ``backend="dask"`` and ``backend="simulate"`` (a copy of ``w`` per partition, CoCoA+): every round the
  driver broadcasts ``w``, every partition runs its step against its local copy and returns its weight
  change, and the driver adds the changes, ``w += sum_k dw_k``. This is CoCoA+ (Ma et al. 2015; Smith
  et al. 2018) with "adding" (``gamma = 1``) and the safe subproblem scaling ``sigma' = gamma P = P``:
  each partition maximises its part of the dual with ``lambda/2 ||w||^2`` replaced by the separable
  model ``lambda/2 (||w||^2/P + <w, 2 dw_k> + sigma' ||dw_k||^2)``, i.e. the weight curvature and the
  local weight update of the SDCA kernels are scaled by ``sigma'`` (``inv_lam_n = P/(lambda n)``), and
  it returns the unscaled change ``dw_k = (local change) / sigma' = Psi_k d mu_k / (lambda n)``. As
  ``||sum_k dw_k||^2 <= P sum_k ||dw_k||^2``, the sum of the local models is a minorant of the
  augmented Lagrangian, tight at ``d mu = 0``: a round that increases every local model increases the
  global objective at least as much, so the rounds ascend and converge linearly (Ma et al. 2015, Thm. 2;
  Smith et al. 2018, Thm. 8 and 10), at a rate that degrades with ``P`` when the partitions' features
  are strongly correlated (docs/scaling.md). ``"simulate"`` runs these rounds on threads of this
  process, with the iterates a cluster of ``P`` workers would compute.
* ``backend="threads"`` (one ``w`` in shared memory, ``sigma' = 1``): the partitions' sweeps run at the
  same time on a thread pool (every Numba kernel releases the GIL) and all update the one ``w``, as in
  asynchronous parallel dual coordinate ascent (PASSCoDe, Hsieh et al. 2015). Each thread sweeps its clique
  order against its own copy of ``w`` and, every :func:`shared_chunk` cliques (64 on OCR), adds its change
  to the shared ``w`` under a spin lock and continues from the shared ``w``, all in one compiled call per
  sweep (:func:`~crflearn._kernels.idal_threads.shared_sweep`; a thread that finds the lock taken sweeps on
  and merges later). No update is lost, so ``w = w(mu)`` holds up to round-off without recomputation, and
  a thread misses at most the other threads' current chunks (OCR large, two threads: 169-173 rounds to 1e-3 in
  13 runs, 173 in full overlap (one-thread emulation); serial: 168 for the seeds 0, 1 and 2; the former
  merges from Python every 256 cliques: 188-190, 231 in full overlap). With a
  thread per partition the driver has nothing to do between certificates, so the rounds up to the next
  due certificate run in one call per partition, without a barrier per round (:func:`_rounds`).
  ``chunk=0`` (kept for comparisons) lets the sweeps write the shared ``w`` directly, without lock: updates
  can be lost, and ``w = w(mu)`` is recomputed from the partitions' marginals before every certificate. The
  merges sum in a thread-dependent order: the iterates are not reproducible bit for bit with ``n_jobs > 1``.

The invariant ``w = w(mu)`` holds after every CoCoA+ round and, with threads, at every certificate, and the
multiplier steps are example-local, so the augmented-Lagrangian outer loop is the serial one with a
different inner solver. The certificate is assembled exactly from partition-additive terms
(:meth:`IdalEngine.monitor_terms`, :meth:`IdalEngine.repair_terms`, :func:`add_terms`,
:func:`assemble_certificate`) computed at the global ``w``; its bounds hold for any ``w``. One partition
with ``backend="threads"`` is the serial solver itself. Dask: :mod:`crflearn.solvers._idal_dask` (the
partitions live on the workers of the current ``dask.distributed`` client and are rebuilt on another
worker when one is lost).

References
----------
Hsieh, C.-J., Yu, H.-F. and Dhillon, I. S. (2015). PASSCoDe: parallel asynchronous stochastic dual
co-ordinate descent. ICML.

Ma, C., Smith, V., Jaggi, M., Jordan, M. I., Richtarik, P. and Takac, M. (2015). Adding vs. averaging in
distributed primal-dual optimization. ICML.

Smith, V., Forte, S., Ma, C., Takac, M., Jordan, M. I. and Jaggi, M. (2018). CoCoA: a general framework
for communication-efficient distributed optimization. JMLR 18(230).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import numpy as np

from .._kernels.idal import IdalState, IdalWeights
from .._kernels.idal_compact import CompactEdges
from .._kernels.idal_engine import (RHO_WARMUP, CertificateProblem, IdalEngine, MonitorSchedule, add_terms,
                                    assemble_certificate, initial_rho_range)
from .._kernels.idal_monitor import dual_sums
from .._kernels.idal_threads import STOP, SharedSync, make_flags, shared_sweep
from .._validation import check_bool
from ..graphs import GraphBatch, concat_ranges
from ..models import PairwiseModel
from ._history import relative_gap
from ._idal_setup import build_engine, exact_losses, ground_truth_statistics
from ._loop import SolverLoop
from ._idal_record import Recorder, idal_result

__all__ = ["BACKENDS", "ParallelOptions", "check_parallel_options", "partition_examples", "shared_chunk",
           "IdalPartition", "ThreadPartitions", "Rebuilt", "fit_partitioned"]

BACKENDS = ("threads", "dask", "simulate")
#: most cliques a thread sweeps against its own copy of ``w`` between two merges into the shared ``w`` (or
#: 1/64 of the size of ``w`` if larger: a merge reads and writes ``w`` once). The merge is compiled into the
#: sweep (crflearn._kernels.idal_threads): 2-3 us for OCR's 4,030 weights (6-9 us when another core wrote
#: them last), ~4 us per clique update. OCR large, two threads in full overlap (one-thread emulation): 173
#: rounds to 1e-3 with 64, 231 with 256; 168 serial
SHARED_CHUNK = 64
#: and at least this many merges per sweep of a partition (small partitions merge more often)
SHARED_MERGES = 64
#: :func:`drive`-like skipping of the repair while the relative AL gap exceeds this many times ``tol``
_CHEAP_FACTOR = 10.0


class ParallelOptions(NamedTuple):
    """Checked ``n_jobs``, ``n_partitions`` (None: decided by the backend), ``backend`` and how the
    partitions share ``w``: ``"shared"`` (threads: one ``w`` in memory, updated in place by every
    partition) or ``"cocoa"`` (a copy per partition, CoCoA+ rounds; dask, and the simulations), the
    outer steps every partition runs per round (``local_steps``; the serial solver ignores it), and whether
    the Dask driver keeps the partitions' duals at every certificate (``commit_duals``)."""

    n_jobs: int
    n_partitions: int | None
    backend: str
    combine: str = "shared"
    local_steps: int = 1
    commit_duals: bool = True

    @property
    def serial(self) -> bool:
        """Whether the serial solver runs (one partition on the calling thread)."""
        return self.backend == "threads" and (self.n_partitions or self.n_jobs) == 1


def _check_count(value, name: str, allow_all: bool):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    value = int(value)
    if allow_all and value == -1:
        return os.cpu_count() or 1
    if value < 1:
        raise ValueError(f"{name} must be >= 1{' or -1 (all cores)' if allow_all else ''} or None, got {value}")
    return value


def check_parallel_options(n_jobs, n_partitions, backend, n_examples: int, local_steps=1,
                           commit_duals=True) -> ParallelOptions:
    """Validate the data-parallel options (before any compute).

    ``n_jobs`` None is 1 and -1 all cores; ``n_partitions`` None is ``n_jobs`` (threads, at most the
    number of examples) or the number of Dask workers; a larger ``n_partitions`` than ``n_examples``
    is an error. ``backend="dask"`` also needs a running ``dask.distributed`` client. ``local_steps``
    (>= 1): outer steps (sweeps and the partition's multiplier step) every partition runs per round,
    i.e. between two exchanges of ``w``: more local work for fewer CoCoA+ rounds. ``commit_duals`` (bool,
    ``backend="dask"``): keep every partition's duals on the driver at each certificate, to rebuild a lost
    partition from them; False rebuilds it from the one-hot start and spares the driver their memory.
    """
    commit_duals = check_bool(commit_duals, "commit_duals")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    n_jobs = _check_count(n_jobs, "n_jobs", allow_all=True) or 1
    if local_steps is None:
        raise TypeError("local_steps must be an int >= 1, got None")
    local_steps = _check_count(local_steps, "local_steps", allow_all=False)
    n_partitions = _check_count(n_partitions, "n_partitions", allow_all=False)
    if n_partitions is not None and n_partitions > n_examples:
        raise ValueError(f"n_partitions={n_partitions} exceeds the number of examples ({n_examples}); every "
                         "partition needs at least one example")
    if backend != "dask" and n_partitions is None:
        n_partitions = min(n_jobs, n_examples)
    if backend == "dask":
        from ._idal_dask import current_client

        current_client()
    return ParallelOptions(n_jobs, n_partitions, backend, "shared" if backend == "threads" else "cocoa",
                           local_steps, commit_duals)


def partition_examples(batch: GraphBatch, n_partitions: int, seed) -> list[np.ndarray]:
    """The examples of every partition (sorted indices), balanced by clique count (nodes plus edges).

    The examples are dealt in a random order (``seed``; one partition keeps them all in order), then cut
    into consecutive runs of about equal clique counts, each non-empty. Random assignment keeps the
    partitions statistically alike: data sets are often sorted (OCR by word), and contiguous partitions
    of a sorted set pull ``w`` in different directions, which slows the CoCoA+ rounds down.
    """
    n = batch.n_examples
    order = np.arange(n) if n_partitions == 1 else np.random.default_rng(seed).permutation(n)
    cliques = np.cumsum((batch.lengths + np.diff(batch.edge_offsets))[order])
    targets = cliques[-1] * np.arange(1, n_partitions) / n_partitions
    idx = np.searchsorted(cliques, targets, side="left")  # first example reaching each target
    below = np.where(idx > 0, cliques[np.maximum(idx - 1, 0)], 0)
    cuts = np.where(cliques[idx] - targets < targets - below, idx + 1, idx)  # the nearer boundary
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    for k in range(1, n_partitions):  # strictly increasing, room for the partitions after k
        bounds[k] = min(max(bounds[k], bounds[k - 1] + 1), n - (n_partitions - k))
    return [np.sort(order[bounds[k]:bounds[k + 1]]) for k in range(n_partitions)]


def clique_indices(batch: GraphBatch, examples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node and edge indices (in ``batch``) of the ``examples``, in the order of ``batch.subset(examples)``."""
    return tuple(concat_ranges(offsets[examples], np.diff(offsets)[examples])
                 for offsets in (batch.node_offsets, batch.edge_offsets))


def split_warm(warm: dict | None, nodes: np.ndarray, edges: np.ndarray) -> dict | None:
    """The warm-start arrays of one partition (its node and edge indices; compact edge marginals stay compact)."""
    if warm is None:
        return None
    mu_e = warm["mu_edges"]
    mu_e = CompactEdges(mu_e.idx[edges], mu_e.val[edges], mu_e.nnz[edges], mu_e.kk) if isinstance(
        mu_e, CompactEdges) else mu_e[edges]
    return {"mu_nodes": warm["mu_nodes"][nodes], "mu_edges": mu_e, "xi": warm["xi"][edges]}


def partition_seeds(random_state, n_partitions: int) -> list:
    """Independent, deterministic seeds of the partitions' sweep orders and, last, of the assignment of
    the examples (from ``random_state``); one partition takes ``random_state`` itself, as the serial
    solver does."""
    if n_partitions == 1:
        return [random_state, None]
    if isinstance(random_state, np.random.Generator):
        root = np.random.SeedSequence(int(random_state.integers(2**63)))
    elif isinstance(random_state, np.random.RandomState):
        root = np.random.SeedSequence(int(random_state.randint(2**31)))
    else:
        root = np.random.SeedSequence(random_state)
    return root.spawn(n_partitions + 1)


def _padded(a):
    """A copy of the array ``a`` with 64 bytes of its own memory on either side (no other array on its
    cache lines: small work arrays of two threads' engines would otherwise be neighbours in memory);
    anything else as is."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return a
    pad = -(-64 // a.itemsize)
    out = np.empty(a.size + 2 * pad, dtype=a.dtype)[pad:pad + a.size].reshape(a.shape)
    out[...] = a
    return out


def shared_chunk(n_cliques: int, w_size: int) -> int:
    """Cliques a thread sweeps between two merges into the shared ``w``: ``SHARED_CHUNK`` (or 1/64 of the
    size of ``w`` if larger), and at least ``SHARED_MERGES`` merges per sweep of ``n_cliques``."""
    return max(1, min(max(SHARED_CHUNK, w_size // 64), n_cliques // SHARED_MERGES))


class IdalPartition:
    """One partition: an :class:`IdalEngine` on its examples, with the global normaliser ``n`` and the
    CoCoA+ scaling ``sigma`` (lives on a thread of the driver or on a Dask worker).

    The engine always sweeps against a weight vector of its own. With ``shared`` (threads) a step sweeps
    its clique order in chunks of ``chunk`` cliques and after each chunk adds its change to ``shared``
    under ``lock`` and takes ``shared`` back, inside one compiled call per sweep
    (:func:`~crflearn._kernels.idal_threads.shared_sweep`): no two threads write the same memory while they
    sweep, no update is lost, a chunk sees the other partitions' changes up to their last merge.

    Parameters
    ----------
    batch : GraphBatch
        The partition's examples.
    model : PairwiseModel
    spec : dict
        Keywords of :func:`~crflearn.solvers._idal_setup.build_engine` (``warm`` the partition's slice).
    seed : SeedSequence
    n_total : int
        Number of examples of the whole data set.
    sigma : float
        Subproblem scaling ``sigma'`` (the number of partitions; 1 with ``shared``).
    shared : IdalWeights, optional
        The driver's ``w``, to which the partition adds its changes (threads, ``combine="shared"``).
    lock : ndarray, optional
        The lock and stop words of the threads sharing ``shared``
        (:func:`~crflearn._kernels.idal_threads.make_flags`; with ``shared``).
    chunk : int, optional
        Cliques swept between two merges (with ``shared``); default :func:`shared_chunk`. 0: no copy, the
        sweeps write the shared ``w`` itself without a lock (concurrent updates can be lost: the behaviour
        before the chunks, kept for comparisons).
    """

    def __init__(self, batch: GraphBatch, model: PairwiseModel, spec: dict, seed, n_total: int, sigma: float,
                 shared: IdalWeights | None = None, lock=None, chunk: int | None = None):
        eng = build_engine(batch, model, rng=np.random.default_rng(seed), **spec)
        forest = batch.is_forest()  # what exact_loss needs (forests only): the examples themselves
        self.exact_args = (model, batch, spec["loss_augmented"], spec.get("sample_weight")) if forest else None
        eng.n = int(n_total)
        eng.inv_lam_n = sigma / (eng.alpha * n_total)
        self.engine, self.sigma, self.shared = eng, float(sigma), shared
        self.lock = lock
        self.chunk = int(chunk) if chunk is not None else shared_chunk(batch.n_nodes + batch.n_edges,
                                                                        eng.weights.wuT.size + eng.weights.wp.size)
        if shared is not None:  # threads: what a sweep writes on its own cache lines (no false sharing)
            eng.scr = type(eng.scr)(*(_padded(a) for a in eng.scr))
            eng.weights = IdalWeights(*(_padded(a) for a in eng.weights))
        self.snap = IdalWeights(*(_padded(a) for a in eng.weights))
        self.start = self.contribution()

    def contribution(self) -> tuple[np.ndarray, np.ndarray]:
        """This partition's part of ``w(mu)``: ``(psi*_k - Psi_k mu_k) / (lambda n)``, from scratch."""
        eng = self.engine
        ustat, pstat = np.zeros_like(eng.weights.wuT), np.zeros_like(eng.weights.wp)
        dual_sums(eng.graph, eng.feats, eng.ent, eng.state.mu_n, eng.state.mu_e, ustat, pstat, eng.scr)
        inv = eng.inv_lam_n / self.sigma  # 1 / (lambda n)
        return (eng.psi_star[0] - ustat) * inv, (eng.psi_star[1] - pstat) * inv

    def initial(self) -> tuple[np.ndarray, np.ndarray]:
        """This partition's part of ``w(mu)`` at construction (0 for the one-hot start)."""
        return self.start

    def _load(self, wu: np.ndarray, wp: np.ndarray) -> IdalEngine:
        eng = self.engine
        np.copyto(eng.weights.wuT, wu)
        np.copyto(eng.weights.wp, wp)
        return eng

    def run(self, wu: np.ndarray, wp: np.ndarray, rho: float, steps: int = 1) -> tuple | None:
        """``steps`` outer steps from ``w``; returns the unscaled weight change ``(dwu, dwp)`` (None with a
        shared ``w``: the steps added it there chunk by chunk, and stop early once the pool is closed)."""
        eng = self._load(wu, wp)
        if eng.rho != rho:
            eng.rho = rho
            eng.rebuild_zeta()
        if self.shared is None:
            for _ in range(steps):
                eng.step()
            return (eng.weights.wuT - wu) / self.sigma, (eng.weights.wp - wp) / self.sigma
        if self.chunk == 0:  # unsynchronised writes to the shared w (updates can be lost; for comparisons)
            mine, eng.weights = eng.weights, self.shared
            try:
                for _ in range(steps):
                    eng.step()
            finally:
                eng.weights = mine
            return None
        for mine, snap in zip(eng.weights, self.snap):
            np.copyto(snap, mine)
        sync = SharedSync(self.shared, self.snap, self.lock)
        for epoch in range(1, steps * eng.inner_epochs + 1):  # eng.step(), merging every `chunk` cliques
            order = eng.next_order()
            if shared_sweep(order, self.chunk, eng.graph, eng.feats, eng.weights, eng.state, eng.ent, eng.rho,
                            eng.inv_lam_n, eng.tau_e, eng.scr, sync) < len(order):
                return None  # the pool was closed (an interrupt): zeta and w are rebuilt by the caller
            if epoch % eng.inner_epochs == 0:
                eng.multiplier_step()
        return None

    def terms(self, wu: np.ndarray, wp: np.ndarray, repair: bool) -> tuple[dict, dict | None]:
        """The partition's certificate terms at the global ``w`` (repair terms when ``repair``)."""
        eng = self._load(wu, wp)
        return eng.monitor_terms(), eng.repair_terms() if repair else None

    def exact_loss(self, w: np.ndarray) -> float:
        """The partition's part of the exact CRF objective at ``w`` (model layout):
        :func:`~crflearn.solvers._idal_setup.exact_losses` of its examples (forests only)."""
        model, batch, loss_augmented, weights = self.exact_args
        return exact_losses(model, batch, w, loss_augmented, weights)

    def rebuild_zeta(self) -> None:
        """``zeta = xi + rho A mu`` again (after an interrupted sweep)."""
        self.engine.rebuild_zeta()

    def state(self) -> tuple:
        """``(mu_n, mu_e, xi)`` of the partition (``mu_e`` a :class:`CompactEdges` with compact storage)."""
        st = self.engine.state
        return st.mu_n, st.mu_e, st.xi

    def packed_state(self) -> dict:
        """The partition's duals as warm-start arrays (``mu_nodes``, ``mu_edges``, ``xi``: copies), the
        edge marginals as ``(shape, flat indices, values)`` of their non-zeros when fewer than half are
        non-zero (Gini blocks are sparse: 8-10 % non-zeros on OCR, 12 % of the dense bytes with int32
        indices): what a Dask driver keeps to rebuild a lost partition. With compact edge marginals the three
        arrays go as they are, not copied (no second copy of the duals on the worker: Dask serialises them when
        the driver fetches them, before the partition's next step)."""
        mu_n, mu_e, xi = self.state()
        if isinstance(mu_e, CompactEdges):
            return {"mu_nodes": mu_n, "mu_edges": mu_e, "xi": xi}
        flat = mu_e.reshape(-1)
        nz = np.flatnonzero(flat)
        if flat.size < 2**31:
            nz = nz.astype(np.int32)
        edges = (mu_e.shape, nz, flat[nz]) if 2 * len(nz) < flat.size else mu_e.copy()
        return {"mu_nodes": mu_n.copy(), "mu_edges": edges, "xi": xi.copy()}


class Rebuilt(NamedTuple):
    """Answer of a partition that was lost and rebuilt: its initial part of ``w(mu)``."""

    contribution: tuple


class ThreadPartitions:
    """The partitions on a thread pool of the driver (``n_jobs`` threads); with ``shared`` weights every
    partition updates them in place (``sigma' = 1``), else each works on its copy (CoCoA+, ``sigma' = P``)."""

    def __init__(self, pieces: list, model: PairwiseModel, specs: list, seeds: list, n_total: int, n_jobs: int,
                 shared: IdalWeights | None = None):
        n_parts = len(pieces)
        sigma = 1 if shared is not None else n_parts
        self.executor = ThreadPoolExecutor(max_workers=n_jobs) if n_jobs > 1 and n_parts > 1 else None
        self.shared, self.flags = shared, make_flags()
        #: every partition has a thread of its own: their steps run at the same time
        self.concurrent = self.executor is not None and n_jobs >= n_parts
        self.parts = self._map(lambda k: IdalPartition(pieces[k], model, specs[k], seeds[k], n_total, sigma,
                                                       shared, self.flags), range(n_parts))

    def _map(self, fn, items) -> list:
        if self.executor is None:
            return [fn(x) for x in items]
        return list(self.executor.map(fn, items))

    def call(self, name: str, *args) -> list:
        """``getattr(partition, name)(*args)`` on every partition, in parallel."""
        return self._map(lambda part: getattr(part, name)(*args), self.parts)

    def commit(self) -> list:
        """Nothing to keep: the partitions live in this process (:meth:`DaskPartitions.commit` keeps their
        duals on the driver)."""
        return []

    def close(self) -> None:
        """Stop the running steps after their current chunk (after an interrupt), wait for them and run later
        calls on the calling thread."""
        self.flags[STOP] = 1
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


class _GlobalWeights:
    """The driver's ``w`` (kernel layout) and each partition's part of it, and ``rho``: what
    :class:`~crflearn.solvers._idal_record.Recorder` reads (``weights``, ``rho``)."""

    def __init__(self, parts: list, rho: float, weights: IdalWeights | None = None):
        self.weights = weights if weights is not None else IdalWeights(np.zeros_like(parts[0][0]),
                                                                       np.zeros_like(parts[0][1]))
        self.set_parts(parts)
        self.rho = float(rho)

    def set_parts(self, parts: list) -> None:
        """``w`` = the sum of the partitions' parts (in place: partitions may share ``weights``)."""
        self.parts = [(np.array(u, dtype=np.float64), np.array(p, dtype=np.float64)) for u, p in parts]
        self.weights.wuT[...] = sum(u for u, _ in self.parts)
        self.weights.wp[...] = sum(p for _, p in self.parts)

    def add(self, k: int, du: np.ndarray, dp: np.ndarray) -> None:
        self.weights.wuT[...] += du
        self.weights.wp[...] += dp
        self.parts[k][0][...] += du
        self.parts[k][1][...] += dp

    def replace(self, k: int, contribution: tuple) -> None:
        """Partition ``k`` was rebuilt: swap its old part of ``w(mu)`` for its new one."""
        u, p = contribution
        self.add(k, np.asarray(u) - self.parts[k][0], np.asarray(p) - self.parts[k][1])


def _call(pool, glob: _GlobalWeights, name: str, *args, retry: bool = True) -> list:
    """``pool.call`` with the weight corrections of rebuilt partitions; calls whose answer depends on
    ``w`` are repeated with the corrected ``w`` when a partition was rebuilt (``retry``)."""
    while True:
        results = pool.call(name, *args)
        rebuilt = [k for k, r in enumerate(results) if isinstance(r, Rebuilt)]
        for k in rebuilt:
            glob.replace(k, results[k].contribution)
        if not rebuilt or not retry:
            return results


def _terms(pool, glob: _GlobalWeights, repair: bool) -> tuple[dict, dict | None]:
    """The summed certificate terms of the partitions at the global ``w`` (and the repair terms)."""
    answers = _call(pool, glob, "terms", *glob.weights, repair)
    return add_terms([a[0] for a in answers]), add_terms([a[1] for a in answers]) if repair else None


def _certify(pool, glob: _GlobalWeights, problem: tuple, best_lower: float, *, want_repair: bool,
             repair_above: float, force: bool) -> dict:
    """The certificate of the whole data set (the rule of :meth:`IdalEngine.certify`: no repair while the
    relative AL gap exceeds ``repair_above`` and a lower bound is known, unless ``force``). The repair
    terms come with the monitoring terms when ``want_repair`` (one round trip instead of two)."""
    terms, repaired = _terms(pool, glob, want_repair or force)
    psi_star, alpha, n = problem
    cert = CertificateProblem(*glob.weights, psi_star, alpha, n, glob.rho)
    row = assemble_certificate(cert, terms, None, best_lower)
    if force or not (row["al_gap"] > repair_above * abs(row["primal"]) and np.isfinite(best_lower)):
        if repaired is None:
            terms, repaired = _terms(pool, glob, True)
        row = assemble_certificate(cert, terms, repaired, best_lower)
    return row


def _adapt_rho(glob: _GlobalWeights, row: dict, bounds: tuple) -> None:
    """The serial residual-balancing rule (:meth:`IdalEngine.adapt_rho`) applied to the global ``rho``;
    the partitions take the new value (and rebuild ``zeta``) at their next step."""

    class _Rho:
        rho = glob.rho

        def rebuild_zeta(self) -> None:
            pass

    proxy = _Rho()
    IdalEngine.adapt_rho(proxy, row, bounds)
    glob.rho = proxy.rho


def _rounds(pool, glob: _GlobalWeights, loop: SolverLoop, record, problem: tuple, *, schedule: MonitorSchedule,
            adaptive: bool, rho_bounds: tuple, local_steps: int = 1) -> None:
    """The outer loop of the partitioned solver (the analogue of :func:`~crflearn._kernels.idal_engine.drive`):
    broadcast ``w``, ``local_steps`` steps per partition, add the changes; certify when due; adapt ``rho``.

    Threads sharing ``w`` have nothing to exchange between certificates: when every partition has a thread
    of its own, the rounds up to the next due certificate run in one call per partition (no barrier per
    round; ``rho`` only changes at certificates). Partitions that take turns on fewer threads keep one call
    per round (a partition running many rounds alone would work against a ``w`` the others do not move)."""
    repair_above = _CHEAP_FACTOR * schedule.tol if schedule.auto and schedule.tol > 0 else np.inf
    shared = getattr(pool, "shared", None) is not None
    lazy = shared and pool.concurrent
    exact = shared and all(part.chunk > 0 for part in pool.parts)  # chunked merges lose no update
    best_lower, first, cheap, pending = -np.inf, None, False, 0
    for it in loop.iterations():
        first = it if first is None else first
        step, pending = it - first + 1, pending + local_steps
        due = schedule.due(step, loop.is_last)
        if lazy and not due:
            continue
        wu, wp = glob.weights
        changes = _call(pool, glob, "run", wu.copy(), wp.copy(), glob.rho, pending, retry=False)
        pending = 0
        for k, change in enumerate(changes):
            if change is not None and not isinstance(change, Rebuilt):
                glob.add(k, *change)
        if not due:
            continue
        with loop.monitoring():
            for k, answer in enumerate(pool.commit()):  # dask: the duals a lost partition restarts from
                if isinstance(answer, Rebuilt):
                    glob.replace(k, answer.contribution)
            if shared and not exact:  # unsynchronised writes may have lost updates: w = w(mu) again
                glob.set_parts(pool.call("contribution"))
            row = _certify(pool, glob, problem, best_lower, want_repair=not cheap, repair_above=repair_above,
                           force=loop.is_last)
            cheap, best_lower = not row["fresh"], max(best_lower, row["dual"])
            schedule.update(step, relative_gap(row["gap"], row["primal"]))
        if record(it, row):
            break
        if adaptive and step > RHO_WARMUP and row["fresh"]:
            _adapt_rho(glob, row, rho_bounds)


def make_pool(batch: GraphBatch, model: PairwiseModel, opts: ParallelOptions, spec: dict, warm: dict | None,
              random_state, shared: IdalWeights):
    """The partitions of ``batch`` on the backend of ``opts`` (built there) and the node and edge indices
    of every partition."""
    n_parts = opts.n_partitions
    if opts.backend == "dask":
        from ._idal_dask import DaskPartitions, current_client

        client = current_client()
        n_parts = n_parts or min(len(client.scheduler_info()["workers"]), batch.n_examples)
    seeds = partition_seeds(random_state, n_parts)
    examples = partition_examples(batch, n_parts, seeds[-1])
    cliques = [clique_indices(batch, ex) for ex in examples]
    weights = spec.get("sample_weight")  # every partition's engine takes the weights of its examples
    specs = [dict(spec, warm=split_warm(warm, *cl), **({} if weights is None else {"sample_weight": weights[ex]}))
             for cl, ex in zip(cliques, examples)]
    if opts.backend == "dask":  # the examples of a partition are cut from the batch when it is placed
        pool = DaskPartitions(client, batch, examples, model, specs, seeds[:-1], commit=opts.commit_duals)
    else:
        pool = ThreadPartitions([batch.subset(ex) for ex in examples], model, specs, seeds[:-1], batch.n_examples,
                                opts.n_jobs, shared if opts.combine == "shared" else None)
    return pool, cliques


def _exact_primal(pool, glob: _GlobalWeights, alpha: float, n_examples: int, w: np.ndarray) -> float:
    """The exact CRF objective at ``w`` (model layout) from the partitions' summed exact losses (forests)."""
    return float(0.5 * alpha * (w @ w) + sum(_call(pool, glob, "exact_loss", w)) / n_examples)


class _Gathered:
    """The whole batch's ``(mu_n, mu_e, xi)``, written partition by partition straight to their rows (the
    arrays made when the first partition's state arrives; ``mu_e`` a :class:`CompactEdges` when the
    partitions' are)."""

    def __init__(self, cliques: list):
        self.nodes, self.edges = ([c[j] for c in cliques] for j in range(2))
        self.out, self.kk = None, None  # the arrays and K*K of compact edges (None: dense), set by the first add

    def add(self, k: int, state: tuple) -> None:
        mu_n, mu_e, xi = state
        parts = (mu_n, *(mu_e[:3] if isinstance(mu_e, CompactEdges) else (mu_e,)), xi)
        rows = (self.nodes,) + (self.edges,) * (len(parts) - 1)
        if self.out is None:
            self.out = [np.empty((sum(len(i) for i in idx),) + a.shape[1:], dtype=a.dtype) for idx, a in zip(rows, parts)]
            if isinstance(mu_e, CompactEdges):
                self.kk = mu_e.kk
        for out, idx, a in zip(self.out, rows, parts):
            out[idx[k]] = a

    def state(self) -> IdalState:
        mu_n, *mu_e, xi = self.out
        return IdalState(mu_n, CompactEdges(*mu_e, self.kk) if self.kk is not None else mu_e[0], xi, None)


def _final_state(pool, glob: _GlobalWeights, cliques: list) -> IdalState:
    """The whole batch's duals. On Dask one partition after the other, each released on its worker once its
    state is written into the driver's arrays: the processes together hold the duals about once, not twice."""
    gathered = _Gathered(cliques)
    if isinstance(pool, ThreadPartitions):
        for k, state in enumerate(_call(pool, glob, "state")):
            gathered.add(k, state)
        return gathered.state()
    for k in range(len(pool.parts)):
        answer = pool.call_one(k, "state")
        while isinstance(answer, Rebuilt):  # lost meanwhile: w follows the rebuilt duals
            glob.replace(k, answer.contribution)
            answer = pool.call_one(k, "state")
        gathered.add(k, answer)
        del answer
        pool.release(k)
    return gathered.state()


def fit_partitioned(batch: GraphBatch, model: PairwiseModel, *, opts: ParallelOptions, spec: dict,
                    warm: dict | None, random_state, loop: SolverLoop, monitor_every, rho_schedule: str,
                    return_state: bool = True):
    """Run the partitioned solver (called by :func:`~crflearn.solvers.idal.fit_idal` after validation).

    ``spec`` holds the keywords of :func:`~crflearn.solvers._idal_setup.build_engine` but ``warm`` and
    ``rng``. Returns the :class:`~crflearn.solvers._base.SolverResult` of ``fit_idal`` (without the duals
    unless ``return_state``).
    """
    shared = IdalWeights(*model.to_kernel(np.zeros(model.size)))
    pool, cliques = make_pool(batch, model, opts, spec, warm, random_state, shared)
    try:
        glob = _GlobalWeights([r.contribution if isinstance(r, Rebuilt) else r for r in pool.call("initial")],
                              spec["rho"], shared if opts.combine == "shared" else None)
        weights = spec.get("sample_weight")
        psi_star = ground_truth_statistics(batch, model, weights)
        record = Recorder(glob, loop, model, batch.n_examples, spec["inner_epochs"] * opts.local_steps,
                          partial(_exact_primal, pool, glob, spec["alpha"], batch.n_examples) if batch.is_forest()
                          else None)
        with loop:
            _rounds(pool, glob, loop, record, (psi_star, spec["alpha"], batch.n_examples),
                    schedule=MonitorSchedule(monitor_every, loop.tol), adaptive=rho_schedule == "adaptive",
                    rho_bounds=initial_rho_range(spec["rho"]), local_steps=opts.local_steps)
        if loop.interrupted:  # an interrupted sweep may have left zeta (and a shared w) stale
            if isinstance(pool, ThreadPartitions):
                pool.close()
            _call(pool, glob, "rebuild_zeta")
            if opts.combine == "shared":
                glob.set_parts(pool.call("contribution"))
        st = _final_state(pool, glob, cliques) if return_state else None
    finally:
        pool.close()
    return idal_result(glob.weights, st, glob.rho, loop, model, batch, spec["kappa"], spec["entropy"],
                       sample_weight=spec.get("sample_weight"))

