"""The partitioned IDAL solver with compact edge marginals and with sample weights (issue 11).

Compact: every partition's engine keeps at most ``edge_capacity`` slots per edge; the partitioned fit
(``P = 1..3``, CoCoA+ rounds on ``backend="simulate"`` and threads sharing ``w``) must certify the optimum of
the serial fit, return dense ``(E, K, K)`` edge marginals as the serial compact fit does, and at full
capacity be the dense partitioned fit bit for bit. Weights: every partition's engine takes its examples'
weights, so integer weights equal repeated examples and the serial weighted optimum. Tiny problems only.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from test_idal_memory import _batch

from crflearn._kernels.idal_compact import CompactEdges
from crflearn.solvers._idal_dask import unpack
from crflearn.solvers._idal_setup import exact_primal
from crflearn.solvers.idal import fit_idal
from crflearn.solvers.idal_parallel import IdalPartition

#: the capacity each problem's optimum fits in (chains: at most 7 of 16 entries per block, grids 11)
CAPACITY = {"chain": 8, "grid": 12}
OPTS = dict(alpha=0.1, kappa=0.3, max_iter=3000, tol=1e-6, random_state=1)


def _fit(batch, model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_idal(batch, model, **dict(OPTS, **kw))


def _brackets(res, p_star, tol=1e-6):
    """Certified to ``tol``, every row's bounds around ``p_star`` (known to 1e-9)."""
    h = res.history
    slack = 1e-8 * abs(p_star)
    assert res.converged and h["gap"][-1] <= tol * abs(h["primal"][-1]) * (1 + 1e-9)
    assert np.all(h["dual"] <= p_star + slack) and np.all(h["primal"] >= p_star - slack)


@pytest.fixture(scope="module")
def serial():
    """The serial dense fit of each problem, certified to 1e-9 (its optimum ``P*``)."""
    return {kind: _fit(*_batch(kind), tol=1e-9) for kind in CAPACITY}


@pytest.mark.parametrize("backend, n_partitions", [("simulate", 1), ("simulate", 2), ("simulate", 3),
                                                   ("threads", 2), ("threads", 3)])
@pytest.mark.parametrize("kind", list(CAPACITY))
def test_compact_partitions_reach_the_serial_certified_optimum(serial, kind, backend, n_partitions):
    batch, model = _batch(kind)
    cap = CAPACITY[kind]
    ref = serial[kind]
    comp = _fit(batch, model, edge_storage="compact", edge_capacity=cap, n_partitions=n_partitions, n_jobs=2,
                backend=backend)
    _brackets(comp, ref.history["primal"][-1])
    np.testing.assert_allclose(comp.w, ref.w, atol=1e-3)
    # the result's edge marginals as the serial compact fit returns them: compact (E, K*K), in the simplex
    mu_e = comp.state["mu_edges"]
    assert isinstance(mu_e, CompactEdges) and mu_e.shape == (batch.n_edges, 16) and mu_e.capacity == cap
    flat = mu_e.to_dense()
    assert np.all((flat != 0).sum(1) <= cap)
    np.testing.assert_allclose(flat.sum(1), 1.0, atol=1e-12)
    if n_partitions == 1:  # one CoCoA+ partition: the serial compact iterates within rounding (40 steps: later,
        # a truncated block move taken or not by a rounding difference makes the trajectories part, by ~1e-5)
        kw = dict(edge_storage="compact", edge_capacity=cap, max_iter=40, tol=0.0)
        one = _fit(batch, model, n_partitions=1, backend=backend, **kw)
        np.testing.assert_allclose(one.w, _fit(batch, model, **kw).w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", list(CAPACITY))
def test_full_capacity_partitions_are_the_dense_partitions_bit_for_bit(kind):
    batch, model = _batch(kind)
    kw = dict(n_partitions=2, backend="simulate", max_iter=30, tol=0.0, loss_augmented=True)
    dense = _fit(batch, model, **kw)
    comp = _fit(batch, model, edge_storage="compact", edge_capacity=16, **kw)
    np.testing.assert_array_equal(comp.w, dense.w)
    np.testing.assert_array_equal(comp.state["mu_edges"].to_dense(), dense.state["mu_edges"].reshape(batch.n_edges, -1))
    np.testing.assert_array_equal(comp.state["xi"], dense.state["xi"])
    np.testing.assert_array_equal(comp.history["gap"], dense.history["gap"])


def test_compact_warm_start_is_split_over_the_partitions():
    """A state with compact (CompactEdges) or dense edge marginals warm-starts a partitioned compact fit
    identically, and the fit goes on to the certified optimum."""
    batch, model = _batch("chain")
    first = _fit(batch, model, edge_storage="compact", edge_capacity=8, max_iter=20, tol=0.0)
    compact = first.state  # the result keeps the compact layout
    assert isinstance(compact["mu_edges"], CompactEdges)
    dense = dict(first.state, mu_edges=compact["mu_edges"].to_dense().reshape(batch.n_edges, 4, 4))
    kw = dict(edge_storage="compact", edge_capacity=8, n_partitions=3, backend="simulate")
    from_dense = _fit(batch, model, warm_start=dense, max_iter=30, tol=0.0, **kw)
    from_compact = _fit(batch, model, warm_start=compact, max_iter=30, tol=0.0, **kw)
    np.testing.assert_array_equal(from_compact.w, from_dense.w)
    ref = _fit(batch, model, tol=1e-9)
    _brackets(_fit(batch, model, warm_start=compact, **kw), ref.history["primal"][-1])


def test_packed_compact_duals_rebuild_the_partition():
    """What a Dask driver keeps of a compact partition (its slots, as they are) rebuilds it exactly."""
    batch, model = _batch("grid", n_examples=3)
    spec = dict(alpha=0.1, kappa=0.3, rho=1.0, entropy="gini", loss_augmented=False, warm=None, inner_epochs=1,
                sampling="uniform", edge_storage="compact", edge_capacity=12)
    part = IdalPartition(batch, model, spec, 0, batch.n_examples, 1)
    wu, wp = part.initial()
    for _ in range(5):
        part.run(wu, wp, 1.0)
    packed = part.packed_state()
    now = part.state()
    assert isinstance(packed["mu_edges"], CompactEdges)
    warm = unpack(packed)
    assert isinstance(warm["mu_edges"], CompactEdges)
    for mine, kept in zip(now[1], warm["mu_edges"]):
        np.testing.assert_array_equal(mine, kept)
    again = IdalPartition(batch, model, dict(spec, warm=warm), 1, batch.n_examples, 1)
    for a, b in zip(again.initial(), part.contribution()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["simulate", "threads"])
def test_integer_weights_on_partitions_equal_repeated_examples(backend):
    batch, model = _batch("chain", n_examples=4)
    weights = np.array([2.0, 1.0, 3.0, 1.0])
    repeated = batch.subset(np.repeat(np.arange(4), weights.astype(int)))
    kw = dict(n_partitions=2, n_jobs=2, backend=backend)
    rows = []
    res = _fit(batch, model, sample_weight=weights, callback=lambda info: rows.append(dict(info)), **kw)
    # (1/4) sum_i s_i loss_i with alpha equals (7/4) x the objective on the 7 repeated examples with alpha 4/7
    rep = _fit(repeated, model, alpha=OPTS["alpha"] * 4 / 7, tol=1e-9)
    ser = _fit(batch, model, sample_weight=weights, tol=1e-9)
    p_star = 7 / 4 * rep.history["primal"][-1]
    assert ser.history["primal"][-1] == pytest.approx(p_star, rel=2e-9)
    _brackets(res, p_star)
    np.testing.assert_allclose(res.w, rep.w, atol=1e-3)
    np.testing.assert_array_equal(res.state["sample_weight"], weights)
    exact = [row for row in rows if np.isfinite(row.get("exact_primal", np.nan))]  # the weighted exact objective
    assert exact and all(row["exact_primal"] == pytest.approx(
        exact_primal(model, batch, row["w"], OPTS["alpha"], False, weights), rel=1e-12)
        for row in exact)
    # with compact edge marginals too (the weighted optimum's blocks have up to 8 entries: 10 slots)
    _brackets(_fit(batch, model, sample_weight=weights, edge_storage="compact", edge_capacity=10, **kw), p_star)
