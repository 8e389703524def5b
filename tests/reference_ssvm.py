"""Pure-Python reference implementations of the BCFW and subgradient epochs (test oracles), the
tiny chain problems of the baseline tests and the SSVM optimum by enumeration (SLSQP).

They follow the papers line by line with NumPy and the public API (``PairwiseModel`` joint
features, :func:`crflearn.inference.decode` per example), sharing no code with the compiled
kernels of :mod:`crflearn._kernels.ssvm`; the tests pin the library to them (same seed, same
iterates up to round-off). They return the library's state layout so that warm starts can
cross from one to the other.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from crflearn.graphs import make_batch
from crflearn.inference import decode, decode_batch
from crflearn.models import PairwiseModel, hamming_loss_vectors


class _Examples:
    """Per-example sub-batches, oracle and objective of the margin-rescaled SSVM (Hamming loss)."""

    def __init__(self, batch, model, alpha, method):
        self.batch, self.model, self.alpha, self.method = batch, model, alpha, method
        self.n = batch.n_examples
        self.subs = [batch.subset([i]) for i in range(self.n)]
        self.loss = hamming_loss_vectors(batch, model.n_states)
        self.shared = model.n_edge_features is None
        self.calls = 0

    def oracle(self, w, i):
        sub = self.subs[i]
        unary, pairwise = self.model.potentials(w, sub)
        self.calls += 1
        return np.asarray(decode(unary + self.loss[self.batch.node_slice(i)], pairwise, sub.edges, self.method),
                          dtype=np.int64)

    def psi(self, i, labels):
        return self.model.joint_feature(self.subs[i], labels)

    def mean_psi(self, i, node_stats, edge_stats):
        return self.model.expected_joint_feature(self.subs[i], node_stats, edge_stats)

    def edge_stat(self, i, labels):
        """``(K, K)`` counts (shared pairwise) or ``(E_i, K, K)`` one-hots of a labeling."""
        k, e = self.model.n_states, self.subs[i].edges
        if self.shared:
            out = np.zeros((k, k))
            np.add.at(out, (labels[e[:, 0]], labels[e[:, 1]]), 1.0)
            return out
        out = np.zeros((len(e), k, k))
        out[np.arange(len(e)), labels[e[:, 0]], labels[e[:, 1]]] = 1.0
        return out

    def primal(self, w):
        b, m = self.batch, self.model
        unary, pairwise = m.potentials(w, b)
        lab = decode_batch(unary + self.loss, pairwise, b.edges, b.node_offsets, b.edge_offsets, self.method)
        wrong = np.add.reduceat((lab != b.labels).astype(float), b.node_offsets[:-1])
        hinge = np.maximum(wrong + m.score(w, b, lab) - m.score(w, b), 0.0)
        return 0.5 * self.alpha * w @ w + hinge.mean()

    def record(self, rows, w, ell):
        rows["primal"].append(self.primal(w))
        rows["dual"].append(-0.5 * self.alpha * w @ w + ell)
        rows["oracle_calls"].append(self.calls)


def reference_bcfw(batch, model, *, alpha, max_iter, averaging="none", random_state=None, decode_method="exact"):
    """BCFW (Lacoste-Julien et al., 2013, Algorithm 3, exact line search, optional averaging)."""
    ex = _Examples(batch, model, alpha, decode_method)
    n, k = ex.n, model.n_states
    rng = np.random.default_rng(random_state)
    w, w_avg, ell, ell_avg, steps = np.zeros(model.size), np.zeros(model.size), 0.0, 0.0, 0
    node_stats = np.zeros((batch.n_nodes, k))
    node_stats[np.arange(batch.n_nodes), batch.labels] = 1.0
    truth = [batch.labels[batch.node_slice(i)] for i in range(n)]
    edge_stats = [ex.edge_stat(i, truth[i]) for i in range(n)]
    block_losses = np.zeros(n)
    rows = {"primal": [], "dual": [], "oracle_calls": []}
    for _ in range(max_iter):
        for i in rng.permutation(n):
            y_star = ex.oracle(w, i)
            sl = batch.node_slice(i)
            s_node = np.eye(k)[y_star]
            s_edge = ex.edge_stat(i, y_star)
            diff = (ex.psi(i, y_star) - ex.mean_psi(i, node_stats[sl], edge_stats[i])) / (alpha * n)
            l_s = np.count_nonzero(y_star != truth[i]) / n
            denom = alpha * diff @ diff
            if denom > 0:
                gamma = min(max((alpha * diff @ w - block_losses[i] + l_s) / denom, 0.0), 1.0)
            else:
                gamma = 1.0 if l_s > block_losses[i] else 0.0
            w = w - gamma * diff
            ell += gamma * (l_s - block_losses[i])
            block_losses[i] += gamma * (l_s - block_losses[i])
            node_stats[sl] += gamma * (s_node - node_stats[sl])
            edge_stats[i] = edge_stats[i] + gamma * (s_edge - edge_stats[i])
            if averaging != "none":
                rho = 2.0 / (steps + 2.0) if averaging == "weighted" else 1.0 / (steps + 1.0)
                w_avg = (1 - rho) * w_avg + rho * w
                ell_avg = (1 - rho) * ell_avg + rho * ell
            steps += 1
        ex.record(rows, *((w_avg, ell_avg) if averaging != "none" else (w, ell)))
    edges = np.stack(edge_stats) if ex.shared else np.concatenate(edge_stats)
    state = dict(alpha=alpha, w=w, ell=ell, node_stats=node_stats, edge_stats=edges, block_losses=block_losses,
                 w_avg=w_avg, ell_avg=ell_avg, n_steps=steps)
    return (w_avg if averaging != "none" else w), state, rows


def reference_subgradient(batch, model, *, alpha, max_iter, averaging="none", random_state=None,
                          decode_method="exact"):
    """Pegasos steps ``1 / (alpha t)`` over a fresh permutation per epoch; epoch-end averages."""
    ex = _Examples(batch, model, alpha, decode_method)
    n = ex.n
    rng = np.random.default_rng(random_state)
    w, t, loss_sum = np.zeros(model.size), 1, 0.0
    w_avg, ell_avg, avg_weight = np.zeros(model.size), 0.0, 0.0
    psi_true = [ex.psi(i, batch.labels[batch.node_slice(i)]) for i in range(n)]
    rows = {"primal": [], "dual": [], "oracle_calls": []}
    for epoch in range(1, max_iter + 1):
        for i in rng.permutation(n):
            y_star = ex.oracle(w, i)
            loss = np.count_nonzero(y_star != batch.labels[batch.node_slice(i)])
            w = w * (1.0 - 1.0 / t)
            if loss > 0:
                w = w + (psi_true[i] - ex.psi(i, y_star)) / (alpha * t)
            loss_sum += loss
            t += 1
        ell = loss_sum / (t - 1)
        if averaging != "none":
            weight = 1.0 if averaging == "uniform" else float(epoch)
            avg_weight += weight
            w_avg = (1 - weight / avg_weight) * w_avg + weight / avg_weight * w
            ell_avg = (1 - weight / avg_weight) * ell_avg + weight / avg_weight * ell
        ex.record(rows, *((w_avg, ell_avg) if averaging != "none" else (w, ell)))
    state = dict(alpha=alpha, w=w, t=t, loss_sum=loss_sum, w_avg=w_avg, ell_avg=ell_avg, avg_weight=avg_weight)
    return (w_avg if averaging != "none" else w), state, rows


def with_bias(batch):
    """The batch with a constant feature column appended (an explicit bias the reference oracles can read)."""
    design = PairwiseModel(1, batch.n_features, fit_intercept=True).design(batch)
    return type(batch)(design, batch.node_offsets, batch.edges, batch.edge_offsets, batch.edge_features,
                       batch.labels, batch.node_names)


def labelings(n_nodes, k):
    """Every labeling of ``n_nodes`` nodes with ``k`` states, one per row."""
    return np.array(list(itertools.product(range(k), repeat=n_nodes)), dtype=np.int64)


def chain_problem(edge_features=False, seed=0):
    """Five short chains, 3 states, 2 features plus an explicit bias column: ``(batch, model)``."""
    rng = np.random.default_rng(seed)
    k, p = 3, 2
    X, y = [], []
    for length in (2, 3, 3, 2, 3):
        feats = rng.normal(size=(length, p))
        edges = np.array([[i, i + 1] for i in range(length - 1)], dtype=np.int64)
        if edge_features:
            X.append((feats, edges, rng.normal(size=(len(edges), 2))))
        else:
            X.append((feats, edges))
        y.append(rng.integers(0, k, size=length))
    batch, _ = make_batch(X, y)
    batch = with_bias(batch)
    model = PairwiseModel(k, p + 1, 2 if edge_features else None)
    return batch, model


def ssvm_reference(batch, model, alpha, sample_weight=None):
    """Solve the n-slack SSVM QP ``alpha/2 ||w||^2 + 1/n sum_i s_i xi_i`` with every labeling
    enumerated (SLSQP): ``(P*, w*)``."""
    n, d = batch.n_examples, model.size
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    rows, rhs = [], []
    for i in range(n):
        sub = batch.subset([i])
        y_i = sub.labels
        psi_true = model.joint_feature(sub)
        for lab in labelings(len(y_i), model.n_states):
            row = np.zeros(d + n)
            row[:d] = psi_true - model.joint_feature(sub, lab)
            row[d + i] = 1.0
            rows.append(row)
            rhs.append(float(np.sum(lab != y_i)))
    A, b = np.array(rows), np.array(rhs)

    def obj(z):
        return 0.5 * alpha * z[:d] @ z[:d] + (s @ z[d:]) / n

    def jac(z):
        g = np.concatenate([np.zeros(d), s / n])
        g[:d] = alpha * z[:d]
        return g

    z0 = np.concatenate([np.zeros(d), np.full(n, b.max())])
    res = minimize(obj, z0, jac=jac, method="SLSQP", options={"ftol": 1e-13, "maxiter": 2000},
                   constraints=[{"type": "ineq", "fun": lambda z: A @ z - b, "jac": lambda z: A}])
    # SLSQP may end on "positive directional derivative" at machine precision: check feasibility
    assert res.status in (0, 8), res.message
    assert np.max(b - A @ res.x) <= 1e-8
    return float(res.fun), res.x[:d]


def fit_quietly(name, batch, model, *, alpha, random_state=0, **kw):
    """``get_solver(name)(batch, model, ...)`` with its ConvergenceWarning silenced."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from crflearn.solvers import get_solver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return get_solver(name)(batch, model, alpha=alpha, random_state=random_state, **kw)
