"""Data-parallel IDAL: the examples split into partitions that share only the weight vector.

IDAL's dual variables (marginals ``mu``) and multipliers (``xi``, messages on the separators of one
example) belong to examples; the only coupling between examples is ``w(mu) = 1/(lambda n) sum_i
(psi*_i - Psi_i mu_i)``. So the examples are split into ``P`` contiguous partitions (balanced by
clique count), each with its own :class:`~crflearn._kernels.idal_engine.IdalEngine` holding its
marginals and multipliers, and every round

1. the driver broadcasts ``w``;
2. every partition copies it, runs its outer step(s) (``inner_epochs`` clique-wise SDCA sweeps and its
   multiplier step) against that local copy and returns its weight change;
3. the driver adds the changes: ``w += sum_k dw_k``.

This is CoCoA+ (Ma et al. 2015; Smith et al. 2018) with "adding" (``gamma = 1``) and the safe local
subproblem scaling ``sigma' = gamma P = P``: each partition maximises its part of the dual with the
quadratic term ``lambda/2 ||w||^2`` replaced by the separable upper model
``lambda/2 (||w||^2/P + <w, 2 dw_k> + sigma' ||dw_k||^2)``, which in the SDCA kernels means the
weight curvature and the local weight update are scaled by ``sigma'`` (``inv_lam_n = P/(lambda n)``),
and the partition returns its unscaled change ``dw_k = (local change) / sigma'`` ``= Psi_k d mu_k /
(lambda n)``. Because ``||sum_k dw_k||^2 <= P sum_k ||dw_k||^2``, the sum of the local models is a lower
bound of the true augmented Lagrangian that is tight at ``d mu = 0``: every round in which each
partition increases its model increases the global objective by at least the sum of the local
increases, so the combined step is an ascent step of a block-separable minorant, and the rate of the
local solver carries over with a factor of at most ``P`` in the worst case (Ma et al. 2015, Thm. 2;
Smith et al. 2018, Thm. 8 and 10). The invariant ``w = w(mu)`` holds exactly after every round (the
changes are the exact contributions of the partitions' marginal changes), and the multiplier steps
are example-local, so the augmented-Lagrangian outer loop is the serial one with an inexact inner
solver.

The certificate is assembled exactly from partition-additive terms
(:meth:`IdalEngine.monitor_terms`, :meth:`IdalEngine.repair_terms`, :func:`add_terms`,
:func:`assemble_certificate`) computed at the global ``w``. ``P = 1`` with ``backend="threads"`` is the
serial solver itself.

Backends: ``"threads"`` (a :class:`~concurrent.futures.ThreadPoolExecutor`; every Numba kernel releases
the GIL) and ``"dask"`` (:mod:`crflearn.solvers._idal_dask`: the partitions live on the workers of the
current ``dask.distributed`` client and are rebuilt on another worker when one is lost).

References
----------
Ma, C., Smith, V., Jaggi, M., Jordan, M. I., Richtarik, P. and Takac, M. (2015). Adding vs. averaging in
distributed primal-dual optimization. ICML.

Smith, V., Forte, S., Ma, C., Takac, M., Jordan, M. I. and Jaggi, M. (2018). CoCoA: a general framework
for communication-efficient distributed optimization. JMLR 18(230).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .._kernels.idal import IdalState, IdalWeights
from .._kernels.idal_engine import (RHO_WARMUP, CertificateProblem, IdalEngine, MonitorSchedule, add_terms,
                                    assemble_certificate, initial_rho_range)
from ..graphs import GraphBatch
from ..models import PairwiseModel, hamming_loss_vectors
from ._history import relative_gap
from ._idal_setup import build_engine
from ._loop import SolverLoop
from ._idal_record import Recorder, idal_result

__all__ = ["BACKENDS", "ParallelOptions", "check_parallel_options", "partition_bounds", "IdalPartition",
           "ThreadPartitions", "Rebuilt", "fit_partitioned"]

BACKENDS = ("threads", "dask")
#: :func:`drive`-like skipping of the repair while the relative AL gap exceeds this many times ``tol``
_CHEAP_FACTOR = 10.0


class ParallelOptions(NamedTuple):
    """Checked ``n_jobs``, ``n_partitions`` (None: decided by the backend) and ``backend``."""

    n_jobs: int
    n_partitions: int | None
    backend: str

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


def check_parallel_options(n_jobs, n_partitions, backend, n_examples: int) -> ParallelOptions:
    """Validate the data-parallel options (before any compute).

    ``n_jobs`` None is 1 and -1 all cores; ``n_partitions`` None is ``n_jobs`` (threads, at most the
    number of examples) or the number of Dask workers; a larger ``n_partitions`` than ``n_examples``
    is an error. ``backend="dask"`` also needs a running ``dask.distributed`` client.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    n_jobs = _check_count(n_jobs, "n_jobs", allow_all=True) or 1
    n_partitions = _check_count(n_partitions, "n_partitions", allow_all=False)
    if n_partitions is not None and n_partitions > n_examples:
        raise ValueError(f"n_partitions={n_partitions} exceeds the number of examples ({n_examples}); every "
                         "partition needs at least one example")
    if backend == "threads" and n_partitions is None:
        n_partitions = min(n_jobs, n_examples)
    if backend == "dask":
        from ._idal_dask import current_client

        current_client()
    return ParallelOptions(n_jobs, n_partitions, backend)


def partition_bounds(batch: GraphBatch, n_partitions: int) -> np.ndarray:
    """Example boundaries ``b`` (n_partitions + 1,) of contiguous partitions ``b[k]:b[k+1]``, each
    non-empty, balanced by clique count (nodes plus edges)."""
    n = batch.n_examples
    cliques = np.cumsum(batch.lengths + np.diff(batch.edge_offsets))
    targets = cliques[-1] * np.arange(1, n_partitions) / n_partitions
    idx = np.searchsorted(cliques, targets, side="left")  # first example reaching each target
    below = np.where(idx > 0, cliques[np.maximum(idx - 1, 0)], 0)
    cuts = np.where(cliques[idx] - targets < targets - below, idx + 1, idx)  # the nearer boundary
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    for k in range(1, n_partitions):  # strictly increasing, room for the partitions after k
        bounds[k] = min(max(bounds[k], bounds[k - 1] + 1), n - (n_partitions - k))
    return bounds


def split_warm(batch: GraphBatch, warm: dict | None, lo: int, hi: int) -> dict | None:
    """The warm-start arrays of the examples ``lo:hi`` (contiguous)."""
    if warm is None:
        return None
    ns, es = slice(batch.node_offsets[lo], batch.node_offsets[hi]), slice(batch.edge_offsets[lo],
                                                                           batch.edge_offsets[hi])
    return {"mu_nodes": warm["mu_nodes"][ns], "mu_edges": warm["mu_edges"][es], "xi": warm["xi"][es]}


def partition_seeds(random_state, n_partitions: int) -> list:
    """Independent, deterministic seeds of the partitions' sweep orders (from ``random_state``); one
    partition takes ``random_state`` itself, as the serial solver does."""
    if n_partitions == 1:
        return [random_state]
    if isinstance(random_state, np.random.Generator):
        root = np.random.SeedSequence(int(random_state.integers(2**63)))
    elif isinstance(random_state, np.random.RandomState):
        root = np.random.SeedSequence(int(random_state.randint(2**31)))
    else:
        root = np.random.SeedSequence(random_state)
    return root.spawn(n_partitions)


class IdalPartition:
    """One partition: an :class:`IdalEngine` on its examples, with the global normaliser ``n`` and the
    CoCoA+ scaling ``sigma`` (lives on a thread of the driver or on a Dask worker).

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
        Subproblem scaling ``sigma'`` (the number of partitions).
    """

    def __init__(self, batch: GraphBatch, model: PairwiseModel, spec: dict, seed, n_total: int, sigma: float):
        eng = build_engine(batch, model, rng=np.random.default_rng(seed), **spec)
        # build_engine normalises by the partition's own n: w(mu_k) of the partition's marginals
        scale = batch.n_examples / n_total
        self.contribution = (eng.weights.wuT * scale, eng.weights.wp * scale)
        eng.n = int(n_total)
        eng.inv_lam_n = sigma / (eng.alpha * n_total)
        self.engine, self.sigma = eng, float(sigma)

    def initial(self) -> tuple[np.ndarray, np.ndarray]:
        """This partition's part of ``w(mu)`` at construction (0 for the one-hot start)."""
        return self.contribution

    def _load(self, wu: np.ndarray, wp: np.ndarray) -> IdalEngine:
        eng = self.engine
        np.copyto(eng.weights.wuT, wu)
        np.copyto(eng.weights.wp, wp)
        return eng

    def run(self, wu: np.ndarray, wp: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
        """One outer step against ``w``; returns the unscaled weight change ``(dwu, dwp)``."""
        eng = self._load(wu, wp)
        if eng.rho != rho:
            eng.rho = rho
            eng.rebuild_zeta()
        eng.step()
        return (eng.weights.wuT - wu) / self.sigma, (eng.weights.wp - wp) / self.sigma

    def terms(self, wu: np.ndarray, wp: np.ndarray, repair: bool) -> tuple[dict, dict | None]:
        """The partition's certificate terms at the global ``w`` (repair terms when ``repair``)."""
        eng = self._load(wu, wp)
        return eng.monitor_terms(), eng.repair_terms() if repair else None

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mu_n, mu_e, xi)`` of the partition."""
        st = self.engine.state
        return st.mu_n, st.mu_e, st.xi


class Rebuilt(NamedTuple):
    """Answer of a partition that was lost and rebuilt: its initial part of ``w(mu)``."""

    contribution: tuple


class ThreadPartitions:
    """The partitions on a thread pool of the driver (``n_jobs`` threads)."""

    def __init__(self, pieces: list, model: PairwiseModel, specs: list, seeds: list, n_total: int, n_jobs: int):
        sigma = len(pieces)
        self.executor = ThreadPoolExecutor(max_workers=n_jobs) if n_jobs > 1 and sigma > 1 else None
        self.parts = self._map(lambda k: IdalPartition(pieces[k], model, specs[k], seeds[k], n_total, sigma),
                               range(sigma))

    def _map(self, fn, items) -> list:
        if self.executor is None:
            return [fn(x) for x in items]
        return list(self.executor.map(fn, items))

    def call(self, name: str, *args) -> list:
        """``getattr(partition, name)(*args)`` on every partition, in parallel."""
        return self._map(lambda part: getattr(part, name)(*args), self.parts)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)


class _GlobalWeights:
    """The driver's ``w`` (kernel layout) and each partition's part of it, and ``rho``: what
    :class:`~crflearn.solvers.idal._Recorder` reads (``weights``, ``rho``)."""

    def __init__(self, parts: list, rho: float):
        self.parts = [(np.array(u, dtype=np.float64), np.array(p, dtype=np.float64)) for u, p in parts]
        self.weights = IdalWeights(sum(u for u, _ in self.parts), sum(p for _, p in self.parts))
        self.rho = float(rho)

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
            adaptive: bool, rho_bounds: tuple) -> None:
    """The outer loop of the partitioned solver (the analogue of :func:`~crflearn._kernels.idal_engine.drive`):
    broadcast ``w``, one step per partition, add the changes; certify when due; adapt ``rho``."""
    repair_above = _CHEAP_FACTOR * schedule.tol if schedule.auto and schedule.tol > 0 else np.inf
    best_lower, first, cheap = -np.inf, None, False
    for it in loop.iterations():
        first = it if first is None else first
        wu, wp = glob.weights
        changes = _call(pool, glob, "run", wu.copy(), wp.copy(), glob.rho, retry=False)
        for k, change in enumerate(changes):
            if not isinstance(change, Rebuilt):
                glob.add(k, *change)
        step = it - first + 1
        if not schedule.due(step, loop.is_last):
            continue
        with loop.monitoring():
            row = _certify(pool, glob, problem, best_lower, want_repair=not cheap, repair_above=repair_above,
                           force=loop.is_last)
            cheap, best_lower = not row["fresh"], max(best_lower, row["dual"])
            schedule.update(step, relative_gap(row["gap"], row["primal"]))
        if record(it, row):
            break
        if adaptive and step > RHO_WARMUP and row["fresh"]:
            _adapt_rho(glob, row, rho_bounds)


def make_pool(batch: GraphBatch, model: PairwiseModel, opts: ParallelOptions, spec: dict, warm: dict | None,
              random_state):
    """The partitions of ``batch`` on the backend of ``opts`` (built there)."""
    n_parts = opts.n_partitions
    if opts.backend == "dask":
        from ._idal_dask import DaskPartitions, current_client

        client = current_client()
        n_parts = n_parts or min(len(client.scheduler_info()["workers"]), batch.n_examples)
    bounds = partition_bounds(batch, n_parts)
    pieces = [batch.subset(np.arange(bounds[k], bounds[k + 1])) for k in range(n_parts)]
    specs = [dict(spec, warm=split_warm(batch, warm, bounds[k], bounds[k + 1])) for k in range(n_parts)]
    seeds = partition_seeds(random_state, n_parts)
    if opts.backend == "dask":
        return DaskPartitions(client, pieces, model, specs, seeds, batch.n_examples)
    return ThreadPartitions(pieces, model, specs, seeds, batch.n_examples, opts.n_jobs)


def fit_partitioned(batch: GraphBatch, model: PairwiseModel, *, opts: ParallelOptions, spec: dict,
                    warm: dict | None, random_state, loop: SolverLoop, monitor_every, rho_schedule: str):
    """Run the partitioned solver (called by :func:`~crflearn.solvers.idal.fit_idal` after validation).

    ``spec`` holds the keywords of :func:`~crflearn.solvers._idal_setup.build_engine` but ``warm`` and
    ``rng``. Returns the :class:`~crflearn.solvers._base.SolverResult` of ``fit_idal``.
    """
    pool = make_pool(batch, model, opts, spec, warm, random_state)
    try:
        glob = _GlobalWeights([r.contribution if isinstance(r, Rebuilt) else r for r in pool.call("initial")],
                              spec["rho"])
        psi_star = model.to_kernel(model.joint_feature(batch))
        k = model.n_states
        base_n = hamming_loss_vectors(batch, k) if spec["loss_augmented"] else np.zeros((batch.n_nodes, k))
        record = Recorder(glob, loop, model, batch, spec["alpha"], spec["inner_epochs"], base_n)
        with loop:
            _rounds(pool, glob, loop, record, (psi_star, spec["alpha"], batch.n_examples),
                    schedule=MonitorSchedule(monitor_every, loop.tol), adaptive=rho_schedule == "adaptive",
                    rho_bounds=initial_rho_range(spec["rho"]))
        states = _call(pool, glob, "state")
    finally:
        pool.close()
    st = IdalState(*(np.concatenate([s[j] for s in states]) for j in range(3)), None)
    return idal_result(glob.weights, st, glob.rho, loop, model, batch, spec["kappa"], spec["entropy"])

