"""``entropy="shannon"``: on forests IDAL trains the exact CRF (negative log-likelihood, or the
softmax-margin CRF when loss-augmented), so it must agree with ``solver="lbfgs"`` (exact
sum-product inference) at the same ``alpha``; its certificate must bracket the L-BFGS optimum.
On loopy graphs the tree-reweighted version must converge with a valid certificate."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _idal_reference import tiny_batch
from sklearn.exceptions import ConvergenceWarning

from crflearn._kernels.idal_engine import orient_forest
from crflearn.graphs import make_batch
from crflearn.models import PairwiseModel
from crflearn.solvers.idal import fit_idal
from crflearn.solvers.lbfgs import fit_lbfgs


def _tree_batch(seed=2, k=3, p=3):
    """Two small trees (a star and a branching tree) and a chain."""
    rng = np.random.default_rng(seed)
    shapes = [np.array([[0, 1], [0, 2], [0, 3]]), np.array([[0, 1], [1, 2], [1, 3], [3, 4]]),
              np.array([[1, 0], [2, 1]])]
    xs, ys = [], []
    for edges in shapes:
        n = edges.max() + 1
        xs.append((rng.normal(size=(n, p)), edges))
        ys.append(rng.integers(0, k, size=n))
    batch, _ = make_batch(xs, ys)
    return batch, PairwiseModel(k, p)


@pytest.mark.parametrize("shape", ["chain", "tree"])
@pytest.mark.parametrize("loss_augmented", [False, True])
def test_shannon_on_forests_matches_exact_lbfgs(shape, loss_augmented):
    batch, model = tiny_batch("chain", seed=1) if shape == "chain" else _tree_batch()
    alpha = 0.1
    ref = fit_lbfgs(batch, model, alpha=alpha, max_iter=1000, tol=1e-14, loss_augmented=loss_augmented)
    p_star = ref.history["primal"][-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = fit_idal(batch, model, alpha=alpha, entropy="shannon", tol=1e-7, max_iter=3000, random_state=0,
                       loss_augmented=loss_augmented)
    assert res.converged
    assert np.linalg.norm(res.w - ref.w) <= 1e-5 * np.linalg.norm(ref.w)
    h = res.history
    assert np.all(h["dual"] <= p_star + 1e-9) and np.all(h["primal"] >= p_star - 1e-9)
    # the exact CRF objective at the final weights (forward-backward) agrees with the optimum
    exact = h["exact_primal"][np.isfinite(h["exact_primal"])]
    assert len(exact) and exact[-1] == pytest.approx(p_star, rel=1e-6)


def test_orientation_is_exact_bethe_on_forests_and_concave_on_loops():
    edges = np.array([[0, 1], [1, 2], [3, 2], [4, 5]])
    side, node_w, edge_w = orient_forest(edges, 6)
    np.testing.assert_array_equal(edge_w, 1.0)
    np.testing.assert_array_equal(node_w, [1, 0, 0, 0, 1, 0])  # one root per tree
    parents = edges[np.arange(4), side]
    assert parents.tolist() == [0, 1, 2, 4]
    cycle = np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
    side, node_w, edge_w = orient_forest(cycle, 4)
    assert np.all(edge_w > 0) and np.all(edge_w <= 1) and np.all(node_w >= 0)
    children = cycle[np.arange(4), 1 - side]
    np.testing.assert_allclose(node_w + np.bincount(children, weights=edge_w, minlength=4), 1.0)


def test_shannon_on_loopy_graphs_converges_with_a_valid_certificate():
    batch, model = tiny_batch("cycle4", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = fit_idal(batch, model, alpha=0.1, entropy="shannon", tol=1e-5, max_iter=3000, random_state=0)
    assert res.converged
    h = res.history
    assert np.all(h["primal"] >= h["dual"] - 1e-12)
    # the upper bound of the last row is below every earlier dual bound's complement: bounds nest
    assert h["dual"].max() <= h["primal"].min() + 1e-9
