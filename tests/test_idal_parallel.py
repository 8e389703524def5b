"""The partitioned (data-parallel) IDAL solver on threads: the same certified optimum as the serial solver.

Every problem is tiny; the serial solver (and, for the bounds, the independent L-BFGS reference of
:mod:`_idal_reference`) gives the optimum. The partitioned solver must reach it with ``P = 1..4``
partitions (CoCoA+ rounds, ``backend="simulate"``, and threads sharing ``w``), on chains, grids, cycles
and batches mixing them; its certificate must bracket ``P*``; the simulated rounds must not depend on the
number of threads, and shared-``w`` threads must return ``w = w(mu)`` exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from _idal_reference import reference_w, tiny_batch
from sklearn.exceptions import ConvergenceWarning

from crflearn.graphs import chain_edges, grid_edges, make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers.idal import fit_idal
from crflearn.solvers.idal_parallel import (check_parallel_options, clique_indices, partition_examples,
                                            partition_seeds)

ALPHA = 0.5


def _mixed_batch(n_examples=8, k=3, p=3, q=None, sparse=False, seed=0):
    """Chains, triangles and 2x2 grids in one batch."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n_examples):
        kind = ("chain", "cycle", "grid")[i % 3]
        if kind == "chain":
            n, edges = 3 + i % 2, chain_edges(3 + i % 2)
        elif kind == "cycle":
            n, edges = 3, np.array([[0, 1], [1, 2], [0, 2]])
        else:
            n, edges = 4, grid_edges(2, 2)
        feats = rng.normal(size=(n, p))
        if sparse:
            feats[rng.random(size=feats.shape) < 0.5] = 0.0
            feats = sp.csr_matrix(feats)
        xs.append((feats, edges) if q is None else (feats, edges, rng.normal(size=(len(edges), q))))
        ys.append(rng.integers(0, k, size=n))
    batch, _ = make_batch(xs, ys)
    return batch, PairwiseModel(k, p, q)


def _fit(batch, model, **kw):
    opts = dict(alpha=ALPHA, max_iter=2000, tol=1e-9, random_state=0)
    opts.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_idal(batch, model, **opts)


PROBLEMS = {
    "chains": lambda: tiny_batch("chain", n_examples=6, seed=2),
    "grids": lambda: tiny_batch("grid2", n_examples=5, seed=3),
    "cycles": lambda: tiny_batch("cycle4", n_examples=4, seed=4),
    "mixed": lambda: _mixed_batch(),
    "mixed-sparse-edgefeat": lambda: _mixed_batch(q=2, sparse=True, seed=5),
}


@pytest.mark.parametrize("backend, n_partitions", [("simulate", 1), ("simulate", 2), ("simulate", 3),
                                                   ("simulate", 4), ("threads", 2), ("threads", 4)])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_partitions_reach_the_serial_certified_optimum(name, backend, n_partitions):
    batch, model = PROBLEMS[name]()
    serial = _fit(batch, model)
    par = _fit(batch, model, n_partitions=n_partitions, n_jobs=2, backend=backend)
    assert serial.converged and par.converged
    hs, hp = serial.history, par.history
    p_ser = hs["primal"][-1]
    # both certified to 1e-9: their objectives agree, and each bound brackets the other's
    assert hp["primal"][-1] == pytest.approx(p_ser, rel=3e-9)
    assert hp["dual"][-1] <= hs["primal"][-1] + 1e-12 and hs["dual"][-1] <= hp["primal"][-1] + 1e-12
    # the relaxed dual is strongly concave in w: ||w - w*||^2 <= 2 gap / alpha
    np.testing.assert_allclose(par.w, serial.w, atol=2e-4)
    assert par.state["mu_nodes"].shape == (batch.n_nodes, model.n_states)
    assert par.state["mu_edges"].shape == (batch.n_edges, model.n_states, model.n_states)


@pytest.mark.parametrize("loss_augmented, entropy", [(False, "gini"), (True, "gini_otrw")])
def test_partitioned_certificate_brackets_the_independent_optimum(loss_augmented, entropy):
    batch, model = tiny_batch("grid3", n_examples=4, separable=True, seed=1)
    kappa = 0.5
    _, p_star = reference_w(batch, model, ALPHA, kappa, loss_augmented, entropy)
    res = _fit(batch, model, kappa=kappa, loss_augmented=loss_augmented, entropy=entropy, n_partitions=3,
               tol=1e-3, max_iter=400, backend="simulate")
    h = res.history
    assert res.converged
    assert np.all(h["dual"] <= p_star + 1e-9) and np.all(h["primal"] >= p_star - 1e-9)
    assert (h["primal"][-1] - p_star) <= 1e-3 * abs(h["primal"][-1])


def test_simulated_rounds_do_not_depend_on_the_threads():
    batch, model = _mixed_batch(n_examples=9, seed=7)
    one = _fit(batch, model, n_partitions=3, n_jobs=1, max_iter=40, tol=0.0, backend="simulate")
    three = _fit(batch, model, n_partitions=3, n_jobs=3, max_iter=40, tol=0.0, backend="simulate")
    np.testing.assert_array_equal(one.w, three.w)
    np.testing.assert_array_equal(one.history["gap"], three.history["gap"])
    # n_partitions defaults to n_jobs
    by_jobs = _fit(batch, model, n_jobs=3, max_iter=40, tol=0.0, backend="simulate")
    np.testing.assert_array_equal(by_jobs.w, three.w)


def test_shared_w_threads_keep_w_equal_to_w_of_mu_at_certificates():
    batch, model = _mixed_batch(n_examples=12, seed=12)
    res = _fit(batch, model, n_jobs=3, tol=1e-6)
    serial = _fit(batch, model, tol=1e-6)
    st = res.state
    stats = model.joint_feature(batch) - model.expected_joint_feature(batch, st["mu_nodes"], st["mu_edges"])
    np.testing.assert_allclose(res.w, stats / (ALPHA * batch.n_examples), rtol=1e-10, atol=1e-12)
    assert res.converged
    assert res.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
    # one thread, three partitions: reproducible
    a = _fit(batch, model, n_jobs=1, n_partitions=3, max_iter=20, tol=0.0)
    b = _fit(batch, model, n_jobs=1, n_partitions=3, max_iter=20, tol=0.0)
    np.testing.assert_array_equal(a.w, b.w)


def test_one_partition_is_the_serial_solver():
    batch, model = _mixed_batch(seed=8)
    a = _fit(batch, model, max_iter=30, tol=0.0)
    b = _fit(batch, model, n_jobs=1, n_partitions=1, max_iter=30, tol=0.0)
    np.testing.assert_array_equal(a.w, b.w)


def test_warm_start_continues_a_partitioned_fit():
    batch, model = _mixed_batch(seed=9)
    serial = _fit(batch, model)
    first = _fit(batch, model, n_partitions=2, max_iter=5, tol=0.0, backend="simulate")
    more = _fit(batch, model, n_partitions=3, warm_start=first.state, backend="simulate")
    assert more.converged and more.n_iter > first.n_iter
    assert more.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-9)


def test_gap_sampling_and_fixed_rho_partitioned():
    batch, model = _mixed_batch(seed=10)
    serial = _fit(batch, model, tol=1e-6)
    res = _fit(batch, model, n_partitions=2, sampling="gap", rho_schedule="fixed", monitor_every=3, tol=1e-6,
               backend="simulate")
    assert res.converged
    assert res.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)


def test_partitions_cover_the_examples_once_balanced_and_non_empty():
    batch, _ = tiny_batch("chain", n_examples=10, seed=0)
    cliques = batch.lengths + np.diff(batch.edge_offsets)
    for n_parts in range(1, 11):
        parts = partition_examples(batch, n_parts, seed=0)
        assert len(parts) == n_parts and all(len(p) >= 1 for p in parts)
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(10))
        sizes = [cliques[p].sum() for p in parts]
        if n_parts == 2:
            assert abs(sizes[0] - sizes[1]) <= cliques.max()
    np.testing.assert_array_equal(partition_examples(batch, 1, seed=None)[0], np.arange(10))


def test_clique_indices_follow_subset():
    batch, _ = _mixed_batch(n_examples=7, seed=1)
    ex = np.array([5, 1, 3])
    nodes, edges = clique_indices(batch, ex)
    sub = batch.subset(ex)
    np.testing.assert_array_equal(batch.labels[nodes], sub.labels)
    np.testing.assert_array_equal(batch.node_features[nodes], sub.node_features)
    assert len(edges) == sub.n_edges


def test_partition_seeds_are_independent_and_deterministic():
    a = [np.random.default_rng(s).integers(1 << 30) for s in partition_seeds(3, 4)]
    b = [np.random.default_rng(s).integers(1 << 30) for s in partition_seeds(3, 4)]
    assert a == b and len(set(a)) == 5


@pytest.mark.parametrize("kw, exc, word", [
    (dict(n_jobs=0), ValueError, "n_jobs"),
    (dict(n_jobs=-2), ValueError, "n_jobs"),
    (dict(n_jobs=1.5), TypeError, "n_jobs"),
    (dict(n_jobs=True), TypeError, "n_jobs"),
    (dict(n_partitions=0), ValueError, "n_partitions"),
    (dict(n_partitions="2"), TypeError, "n_partitions"),
    (dict(n_partitions=99), ValueError, "n_partitions"),
    (dict(backend="mpi"), ValueError, "backend"),
    (dict(backend=None), ValueError, "backend"),
    (dict(commit_duals="yes"), TypeError, "commit_duals"),
    (dict(return_state=None), TypeError, "return_state"),
])
def test_bad_parallel_options_raise_before_compute(kw, exc, word):
    batch, model = tiny_batch("chain", n_examples=3)
    with pytest.raises(exc, match=word):
        fit_idal(batch, model, **kw)


def test_all_cores():
    opts = check_parallel_options(-1, None, "threads", 1000)
    assert opts.n_jobs >= 1 and opts.n_partitions == opts.n_jobs


def test_estimator_runs_partitioned():
    from crflearn.estimators import CRF

    batch, model = _mixed_batch(seed=11)
    X = [(batch.node_features[batch.node_slice(i)], batch.local_edges(i)) for i in range(batch.n_examples)]
    y = [batch.labels[batch.node_slice(i)] for i in range(batch.n_examples)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        crf = CRF(solver="idal", alpha=ALPHA, n_jobs=2, random_state=0, max_iter=300, tol=1e-6).fit(X, y)
        ref = CRF(solver="idal", alpha=ALPHA, random_state=0, max_iter=300, tol=1e-6).fit(X, y)
    assert crf.predict(X)[0].shape == y[0].shape
    assert crf.history_["primal"][-1] == pytest.approx(ref.history_["primal"][-1], rel=3e-6)


@pytest.mark.parametrize("backend", ["threads", "simulate"])
def test_interrupt_returns_a_consistent_partitioned_state(backend):
    batch, model = _mixed_batch(n_examples=9, seed=13)

    def stop(info):
        if info["iteration"] >= 3:
            raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted"):
        res = fit_idal(batch, model, alpha=ALPHA, n_jobs=2, n_partitions=3, backend=backend, monitor_every=1,
                       callback=stop, random_state=0)
    assert res.interrupted and res.n_iter == 3
    st = res.state
    stats = model.joint_feature(batch) - model.expected_joint_feature(batch, st["mu_nodes"], st["mu_edges"])
    np.testing.assert_allclose(res.w, stats / (ALPHA * batch.n_examples), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 5])
def test_shared_w_threads_lose_no_update(chunk):
    """Threads sweeping chunks against their own copy of ``w`` and merging into the shared one: after a
    round the shared ``w`` is ``w(mu)`` up to round-off (no update is lost), before any recomputation."""
    from crflearn._kernels.idal import IdalWeights
    from crflearn.solvers.idal_parallel import IdalPartition, ThreadPartitions

    batch, model = _mixed_batch(n_examples=12, seed=14)
    shared = IdalWeights(*model.to_kernel(np.zeros(model.size)))
    examples = partition_examples(batch, 3, seed=0)
    spec = dict(alpha=ALPHA, kappa=1.0, rho=1.0, entropy="gini", loss_augmented=False, warm=None, inner_epochs=2,
                sampling="uniform")
    pool = ThreadPartitions([batch.subset(ex) for ex in examples], model, [spec] * 3, partition_seeds(0, 3)[:-1],
                            batch.n_examples, n_jobs=2, shared=shared)
    try:
        pool.parts[0].chunk = chunk
        for _ in range(3):
            assert pool.call("run", shared.wuT.copy(), shared.wp.copy(), 1.0, 2) == [None] * 3
        parts = pool.call("contribution")
    finally:
        pool.close()
    assert np.abs(shared.wuT).max() > 0.01
    np.testing.assert_allclose(shared.wuT, sum(u for u, _ in parts), rtol=0, atol=1e-12)
    np.testing.assert_allclose(shared.wp, sum(p for _, p in parts), rtol=0, atol=1e-12)


def _with_local_steps(monkeypatch, steps):
    """``fit_idal`` with ``local_steps`` (not a ``fit_idal`` keyword yet: set through the option check)."""
    from functools import partial

    from crflearn.solvers import idal

    monkeypatch.setattr(idal, "check_parallel_options", partial(check_parallel_options, local_steps=steps))


@pytest.mark.parametrize("backend", ["simulate", "threads"])
def test_local_steps_reach_the_serial_certified_optimum(monkeypatch, backend):
    batch, model = _mixed_batch(n_examples=9, seed=15)
    serial = _fit(batch, model, tol=1e-6)
    _with_local_steps(monkeypatch, 3)
    res = _fit(batch, model, n_partitions=3, n_jobs=2, tol=1e-6, backend=backend)
    assert res.converged
    assert res.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
    # a round is 3 outer steps of every partition
    assert res.history["oracle_calls"][-1] == 3 * batch.n_examples * res.history["iteration"][-1]


@pytest.mark.parametrize("steps, exc", [(0, ValueError), (None, TypeError), (1.5, TypeError)])
def test_bad_local_steps(steps, exc):
    with pytest.raises(exc, match="local_steps"):
        check_parallel_options(None, 2, "simulate", 5, local_steps=steps)


def test_unsynchronised_shared_w_threads_still_certify(monkeypatch):
    """``chunk=0`` (the sweeps write the shared ``w`` without copies or lock, kept for comparisons): updates
    may be lost between certificates, but ``w = w(mu)`` is restored before each, and the optimum is reached."""
    from crflearn.solvers import idal_parallel

    batch, model = _mixed_batch(n_examples=12, seed=16)
    serial = _fit(batch, model, tol=1e-6)
    monkeypatch.setattr(idal_parallel, "shared_chunk", lambda n_cliques, w_size: 0)
    res = _fit(batch, model, n_jobs=2, tol=1e-6)
    assert res.converged
    assert res.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
    st = res.state
    stats = model.joint_feature(batch) - model.expected_joint_feature(batch, st["mu_nodes"], st["mu_edges"])
    np.testing.assert_allclose(res.w, stats / (ALPHA * batch.n_examples), rtol=1e-10, atol=1e-12)


def test_threads_run_the_rounds_between_certificates_in_one_call(monkeypatch):
    """Threads sharing ``w`` (a thread per partition) run all the rounds up to the next due certificate in one
    call per partition; the recorded iterations, the optimum and ``w = w(mu)`` (no recomputation: the merges
    lose no update) are unchanged."""
    from crflearn.solvers.idal_parallel import IdalPartition

    calls = []
    run = IdalPartition.run

    def counting(self, wu, wp, rho, steps=1):
        calls.append(steps)
        return run(self, wu, wp, rho, steps)

    monkeypatch.setattr(IdalPartition, "run", counting)
    batch, model = _mixed_batch(n_examples=10, seed=17)
    serial = _fit(batch, model, tol=1e-6, monitor_every=5)
    res = _fit(batch, model, n_jobs=2, tol=1e-6, monitor_every=5)
    assert res.converged
    assert res.history["primal"][-1] == pytest.approx(serial.history["primal"][-1], rel=3e-6)
    its = res.history["iteration"]
    np.testing.assert_array_equal(its, np.arange(5, 5 * len(its) + 1, 5))
    assert calls == [5] * (2 * len(its))  # two partitions, one call of 5 rounds per certificate
    st = res.state
    stats = model.joint_feature(batch) - model.expected_joint_feature(batch, st["mu_nodes"], st["mu_edges"])
    np.testing.assert_allclose(res.w, stats / (ALPHA * batch.n_examples), rtol=1e-10, atol=1e-12)


def test_partitions_sharing_fewer_threads_keep_one_call_per_round(monkeypatch):
    from crflearn.solvers.idal_parallel import IdalPartition

    calls = []
    run = IdalPartition.run
    monkeypatch.setattr(IdalPartition, "run", lambda self, *a: calls.append(a[3]) or run(self, *a))
    batch, model = _mixed_batch(n_examples=9, seed=18)
    res = _fit(batch, model, n_jobs=2, n_partitions=3, max_iter=8, tol=0.0, monitor_every=4)
    assert res.n_iter == 8 and calls == [1] * 24


def _sync_fixture(model, batch):
    """A partition's engine and a :class:`SharedSync` of a shared ``w`` (zero) with its own flags."""
    from crflearn._kernels.idal import IdalWeights
    from crflearn._kernels.idal_threads import SharedSync, make_flags
    from crflearn.solvers._idal_setup import build_engine

    eng = build_engine(batch, model, alpha=ALPHA, kappa=1.0, rho=1.0, entropy="gini", loss_augmented=False,
                       warm=None, inner_epochs=1, sampling="uniform", rng=np.random.default_rng(0))
    shared = IdalWeights(*(np.zeros_like(a) for a in eng.weights))
    return eng, SharedSync(shared, IdalWeights(*(a.copy() for a in eng.weights)), make_flags())


def test_merge_skips_a_held_lock_unless_told_to_wait_and_sweeps_stop_on_request():
    from crflearn._kernels.idal_threads import LOCK, STOP, merge_into_shared, shared_sweep

    batch, model = _mixed_batch(n_examples=6, seed=19)
    eng, sync = _sync_fixture(model, batch)
    order = eng.next_order().copy()
    sync.flags[STOP] = 1  # the pool was closed: the sweep returns after its first chunk and its merge
    args = (eng.graph, eng.feats, eng.weights, eng.state, eng.ent, eng.rho, eng.inv_lam_n, eng.tau_e, eng.scr, sync)
    assert shared_sweep(order, 3, *args) == 3
    assert np.abs(sync.shared.wuT).max() > 0
    np.testing.assert_array_equal(sync.shared.wuT, eng.weights.wuT)
    sync.flags[STOP] = 0
    merged = sync.shared.wuT.copy()
    eng.sweep(order[3:])  # a change of the thread's copy ...
    mine = eng.weights.wuT.copy()
    sync.flags[LOCK] = 1  # ... while another thread holds the lock: no merge, nothing changed
    assert not merge_into_shared(eng.weights, sync, False)
    np.testing.assert_array_equal(sync.shared.wuT, merged)
    np.testing.assert_array_equal(eng.weights.wuT, mine)
    sync.flags[LOCK] = 0  # free again: merged, and the lock released
    assert merge_into_shared(eng.weights, sync, False) and sync.flags[LOCK] == 0
    np.testing.assert_allclose(sync.shared.wuT, mine, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sync.snap.wuT, sync.shared.wuT)


@pytest.mark.parametrize("kw", [dict(), dict(n_partitions=2, backend="simulate"), dict(n_jobs=2),
                                dict(edge_storage="compact", edge_capacity=16, n_partitions=2, backend="simulate")])
def test_without_the_state_the_same_fit(kw):
    """``return_state=False``: the same weights and history, a state without the duals."""
    batch, model = tiny_batch("grid3", n_examples=4, seed=1)
    opts = dict(alpha=0.5, max_iter=30, tol=0.0, random_state=0, **kw)
    full = fit_idal(batch, model, **opts)
    lean = fit_idal(batch, model, return_state=False, **opts)
    assert {"mu_nodes", "mu_edges", "xi"} <= set(full.state) and not {"mu_nodes", "mu_edges", "xi"} & set(lean.state)
    if kw.get("n_jobs", 1) == 1:  # threads merge in a thread-dependent order
        np.testing.assert_array_equal(lean.w, full.w)
        np.testing.assert_array_equal(lean.history["gap"], full.history["gap"])
        assert lean.state["rho"] == full.state["rho"]
