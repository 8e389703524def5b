"""Torch TRW message passing (crflearn.neural._loopy) against the Numba path and brute force."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from crflearn.graphs import grid_edges  # noqa: E402
from crflearn.inference import infer  # noqa: E402
from crflearn.neural._loopy_graph import colour_nodes  # noqa: E402
from crflearn.neural import (  # noqa: E402
    make_loopy_graph,
    trw_infer,
    trw_log_partition,
    trw_nll_loss,
)


def _random_graph(rng, n, extra):
    """A random spanning tree on ``n`` nodes plus ``extra`` random chords (loopy when extra > 0)."""
    edges = {(int(rng.integers(v)), v) for v in range(1, n)}
    while len(edges) < n - 1 + extra:
        a, b = sorted(rng.choice(n, size=2, replace=False).tolist())
        edges.add((a, b))
    return np.array(sorted(edges), dtype=np.int64)


def _problems():
    rng = np.random.default_rng(0)
    out = [(grid_edges(3, 4), 12), (grid_edges(4, 4), 16)]
    out += [(_random_graph(rng, n, extra), n) for n, extra in ((7, 3), (9, 5), (6, 8))]
    return out


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("case", range(5))
def test_trw_matches_numba(case, shared):
    edges, n = _problems()[case]
    rng = np.random.default_rng(case)
    k = 3
    u = rng.normal(size=(n, k))
    p = rng.normal(size=(k, k)) if shared else rng.normal(size=(len(edges), k, k))
    ref = infer(u, p, edges, method="trw", tol=1e-13, max_iter=5000)
    assert ref.converged
    for damping in (0.5, 0.0):  # the undamped value and edge marginals take a shortcut
        got = trw_infer(torch.tensor(u), torch.tensor(p), make_loopy_graph(edges, n), tol=1e-13, max_iter=20000,
                        check_every=1, damping=damping)
        assert got.converged
        np.testing.assert_allclose(got.node_marginals.numpy(), ref.node_marginals, atol=1e-6)
        np.testing.assert_allclose(got.edge_marginals.numpy(), ref.edge_marginals, atol=1e-6)
        assert abs(float(got.log_partition[0]) - ref.log_partition) < 1e-6


def test_batch_equals_examples_and_forest_equals_bruteforce():
    rng = np.random.default_rng(3)
    k = 2
    parts = [(grid_edges(2, 3), 6), (_random_graph(rng, 5, 0), 5), (np.zeros((0, 2), np.int64), 1)]
    edges = np.concatenate([e + off for (e, _), off in zip(parts, (0, 6, 11))])
    node_offsets, edge_offsets = np.array([0, 6, 11, 12]), np.array([0, 7, 11, 11])
    u, p = rng.normal(size=(12, k)), rng.normal(size=(len(edges), k, k))
    graph = make_loopy_graph(edges, 12, node_offsets, edge_offsets)
    got = trw_infer(torch.tensor(u), torch.tensor(p), graph, tol=1e-13, max_iter=20000, check_every=1)
    for i, (e, n) in enumerate(parts):
        nl, nh, el, eh = node_offsets[i], node_offsets[i + 1], edge_offsets[i], edge_offsets[i + 1]
        ref = infer(u[nl:nh], p[el:eh], e, method="trw" if i == 0 else "bruteforce", tol=1e-13, max_iter=5000)
        np.testing.assert_allclose(got.node_marginals[nl:nh].numpy(), ref.node_marginals, atol=1e-6)
        np.testing.assert_allclose(got.edge_marginals[el:eh].numpy(), ref.edge_marginals, atol=1e-6)
        assert abs(float(got.log_partition[i]) - ref.log_partition) < 1e-6


def test_gradcheck_and_gradient_is_marginals():
    edges, n = grid_edges(2, 2), 4  # one cycle
    rng = np.random.default_rng(1)
    graph = make_loopy_graph(edges, n)
    u = torch.tensor(rng.normal(size=(n, 2)), requires_grad=True)
    p = torch.tensor(rng.normal(size=(2, 2)), requires_grad=True)

    def f(u, p):
        return trw_log_partition(u, p, graph, tol=1e-14, max_iter=20000, check_every=10)

    assert torch.autograd.gradcheck(f, (u, p), eps=1e-6, atol=1e-5)
    f(u, p).sum().backward()
    res = trw_infer(u.detach(), p.detach(), graph, tol=1e-14, max_iter=20000, check_every=1)
    np.testing.assert_allclose(u.grad.numpy(), res.node_marginals.numpy(), atol=1e-12)
    np.testing.assert_allclose(p.grad.numpy(), res.edge_marginals.sum(0).numpy(), atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_nll_gradcheck_is_marginals_minus_truth(shared):
    edges, n = grid_edges(2, 2), 4  # one cycle
    rng = np.random.default_rng(8)
    graph = make_loopy_graph(edges, n)
    u = torch.tensor(rng.normal(size=(n, 2)), requires_grad=True)
    p = torch.tensor(rng.normal(size=(2, 2) if shared else (len(edges), 2, 2)), requires_grad=True)
    y = torch.tensor(rng.integers(2, size=n))

    def f(u, p):
        return trw_nll_loss(u, p, graph, y, reduction="sum", tol=1e-13, max_iter=20000, check_every=10,
                            damping=0.0)

    assert torch.autograd.gradcheck(f, (u, p), eps=1e-6, atol=1e-5)
    f(u, p).backward()
    res = trw_infer(u.detach(), p.detach(), graph, tol=1e-13, max_iter=20000, check_every=1, damping=0.0)
    truth = np.eye(2)[y.numpy()]
    np.testing.assert_allclose(u.grad.numpy(), res.node_marginals.numpy() - truth, atol=1e-12)
    pair_truth = truth[edges[:, 0], :, None] * truth[edges[:, 1], None, :]
    expected = res.edge_marginals.numpy() - pair_truth
    np.testing.assert_allclose(p.grad.numpy(), expected.sum(0) if shared else expected, atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bipartite", [True, False])
def test_replicated_batch_equals_general_structure(shared, bipartite):
    """A batch of copies of one graph (replicas as a trailing dimension) gives what the general structure
    gives: marginals, bound, messages, NLL values and gradients; gradcheck on the replicated path."""
    rng = np.random.default_rng(9)
    e1, n1 = (grid_edges(3, 3), 9) if bipartite else (_random_graph(rng, 7, 4), 7)
    b, k = 3, 3
    assert (colour_nodes(e1, n1).max() == 1) == bipartite
    edges = np.concatenate([e1 + i * n1 for i in range(b)])
    offsets = (np.arange(b + 1) * n1, np.arange(b + 1) * len(e1))
    rep, gen = (make_loopy_graph(edges, b * n1, *offsets, replicate=flag) for flag in (True, False))
    assert rep.replicas == b and gen.replicas == 1
    u = rng.normal(size=(b * n1, k))
    p = rng.normal(size=(k, k) if shared else (len(edges), k, k))
    y = torch.tensor(rng.integers(k, size=b * n1))
    got = []
    for graph in (rep, gen):
        res = trw_infer(torch.tensor(u), torch.tensor(p), graph, tol=1e-13, max_iter=5000, check_every=1)
        got.append([res.node_marginals, res.edge_marginals, res.log_partition, res.messages])
        for damping in (0.5, 0.0):
            ut, pt = torch.tensor(u, requires_grad=True), torch.tensor(p, requires_grad=True)
            loss = trw_nll_loss(ut, pt, graph, y, reduction="none", tol=1e-13, max_iter=5000, damping=damping)
            loss.square().sum().backward()
            got[-1] += [loss.detach(), ut.grad, pt.grad]
    for a, c in zip(*got):
        np.testing.assert_allclose(a.numpy(), c.numpy(), atol=1e-10)
    small = make_loopy_graph(np.concatenate([grid_edges(2, 2) + 4 * i for i in range(2)]), 8,
                             [0, 4, 8], [0, 4, 8])
    assert small.replicas == 2
    us = torch.tensor(rng.normal(size=(8, 2)), requires_grad=True)
    ps = torch.tensor(rng.normal(size=(2, 2) if shared else (8, 2, 2)), requires_grad=True)
    ys = torch.tensor(rng.integers(2, size=8))

    def f(u, p):
        return trw_nll_loss(u, p, small, ys, reduction="mean", tol=1e-13, max_iter=20000, check_every=10,
                            damping=0.0)

    assert torch.autograd.gradcheck(f, (us, ps), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("replicate", [True, False])
def test_extreme_scores_stay_finite_in_float32(replicate):
    """Scores of several hundred nats (float32): the floored tables keep messages, marginals, loss and
    gradients finite on both structures and both pairwise forms."""
    rng = np.random.default_rng(10)
    e1, b = grid_edges(3, 3), 3
    edges = np.concatenate([e1 + 9 * i for i in range(b)])
    graph = make_loopy_graph(edges, 9 * b, np.arange(b + 1) * 9, np.arange(b + 1) * len(e1), replicate=replicate)
    y = torch.tensor(rng.integers(3, size=9 * b))
    for shape in ((3, 3), (len(edges), 3, 3)):
        u = torch.tensor(rng.normal(size=(9 * b, 3)) * 300, dtype=torch.float32, requires_grad=True)
        p = torch.tensor(rng.normal(size=shape) * 300, dtype=torch.float32, requires_grad=True)
        loss = trw_nll_loss(u, p, graph, y, max_iter=50, warn=False)
        loss.backward()
        res = trw_infer(u.detach(), p.detach(), graph, max_iter=50, warn=False)
        for t in (loss, u.grad, p.grad, res.node_marginals, res.edge_marginals, res.log_partition):
            assert torch.isfinite(t).all()


@pytest.mark.parametrize("case", range(5))
def test_colouring_is_proper_and_two_colours_bipartite(case):
    edges, n = _problems()[case]
    colour = colour_nodes(edges, n)
    assert np.all(colour[edges[:, 0]] != colour[edges[:, 1]])
    odd_cycle = case == 4 or colour.max() > 1
    assert colour.max() == 1 or odd_cycle
    if case < 2:  # grids are bipartite: two colours, blocks of reverse pairs
        graph = make_loopy_graph(edges, n)
        assert colour.max() == 1 and len(graph.blocks) == 2
        assert all(b.reverse_start >= 0 for b in graph.blocks)


def test_nll_bounds_and_exact_on_trees():
    rng = np.random.default_rng(2)
    k = 3
    for edges, n in ((grid_edges(3, 3), 9), (_random_graph(rng, 6, 0), 6)):
        u, p = rng.normal(size=(n, k)), rng.normal(size=(k, k))
        y = rng.integers(k, size=n)
        loss = trw_nll_loss(torch.tensor(u), torch.tensor(p), make_loopy_graph(edges, n), torch.tensor(y),
                            tol=1e-12, max_iter=20000)
        exact = infer(u, p, edges, method="bruteforce")
        score = u[np.arange(n), y].sum() + p[y[edges[:, 0]], y[edges[:, 1]]].sum()
        assert float(loss) >= exact.log_partition - score - 1e-9  # TRW upper bound
        if n == 6:
            assert abs(float(loss) - (exact.log_partition - score)) < 1e-8


def test_half_precision_runs_in_float32():
    rng = np.random.default_rng(4)
    edges, n = grid_edges(3, 3), 9
    graph = make_loopy_graph(edges, n)
    u, p = rng.normal(size=(n, 4)) * 5, rng.normal(size=(4, 4)) * 5
    ref = trw_log_partition(torch.tensor(u), torch.tensor(p), graph, tol=1e-10, max_iter=5000)
    half = trw_log_partition(torch.tensor(u).half(), torch.tensor(p).half(), graph, tol=1e-5, max_iter=5000)
    assert half.dtype == torch.float32
    # only the rounding of the inputs to float16 remains (|scores| ~ 10, float16 step ~ 0.008)
    assert abs(float(half[0]) - float(ref[0])) < 0.1


def test_not_converged_warns():
    rng = np.random.default_rng(5)
    edges, n = grid_edges(3, 3), 9
    graph = make_loopy_graph(edges, n)
    u, p = torch.tensor(rng.normal(size=(n, 3))), torch.tensor(rng.normal(size=(3, 3)) * 3)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = trw_infer(u, p, graph, max_iter=2, check_every=1)
    assert res.converged is False and res.n_iter == 2
    res = trw_infer(u, p, graph, max_iter=3, check_every=0)  # no synchronisation, no test
    assert res.converged is None and res.n_iter == 3 and res.residual.dim() == 0


def test_warm_start_reuses_messages():
    rng = np.random.default_rng(6)
    edges, n = grid_edges(4, 4), 16
    graph = make_loopy_graph(edges, n)
    u, p = torch.tensor(rng.normal(size=(n, 3))), torch.tensor(rng.normal(size=(3, 3)))
    cold = trw_infer(u, p, graph, tol=1e-10, max_iter=5000, check_every=1)
    warm = trw_infer(u, p, graph, tol=1e-10, max_iter=5000, check_every=1, init_messages=cold.messages)
    assert warm.n_iter == 1 and warm.converged


def test_validation_errors():
    graph = make_loopy_graph(grid_edges(2, 2), 4)
    u = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="unary"):
        trw_infer(torch.zeros(3, 2), torch.zeros(2, 2), graph)
    with pytest.raises(ValueError, match="pairwise"):
        trw_infer(u, torch.zeros(3, 3), graph)
    with pytest.raises(ValueError, match="damping"):
        trw_infer(u, torch.zeros(2, 2), graph, damping=1.0)
    with pytest.raises(TypeError, match="graph"):
        trw_infer(u, torch.zeros(2, 2), grid_edges(2, 2))
    with pytest.raises(ValueError, match="labels"):
        trw_nll_loss(u, torch.zeros(2, 2), graph, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="rho"):
        make_loopy_graph(grid_edges(2, 2), 4, rho=np.zeros(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("copies", [1, 4])  # one graph; a batch of copies (replicas)
def test_cuda_loss_has_no_host_synchronisation(copies):  # pragma: no cover - no GPU in CI
    rng = np.random.default_rng(7)
    e1, n1 = grid_edges(6, 6), 36
    edges, n = np.concatenate([e1 + i * n1 for i in range(copies)]), copies * n1
    graph = make_loopy_graph(edges, n, np.arange(copies + 1) * n1, np.arange(copies + 1) * len(e1), device="cuda")
    assert graph.replicas == (copies if copies > 1 else 1)
    u = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32, device="cuda", requires_grad=True)
    p = torch.tensor(rng.normal(size=(4, 4)), dtype=torch.float32, device="cuda", requires_grad=True)
    y = torch.tensor(rng.integers(4, size=n), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = trw_nll_loss(u, p, graph, y, max_iter=30, check_every=0, damping=0.0)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert loss.dtype == torch.float32 and u.grad is not None and p.grad is not None
    cpu = make_loopy_graph(edges, n, np.arange(copies + 1) * n1, np.arange(copies + 1) * len(e1))
    ref = trw_nll_loss(u.detach().cpu(), p.detach().cpu(), cpu, y.cpu(), max_iter=30, check_every=0, damping=0.0)
    assert abs(float(loss) - float(ref)) < 1e-3
