"""Pure-Python reference implementations of the BCFW and subgradient epochs (test oracles).

They follow the papers line by line with NumPy and the public API (``PairwiseModel`` joint
features, :func:`crflearn.inference.decode` per example), sharing no code with the compiled
kernels of :mod:`crflearn._kernels.ssvm`; the tests pin the library to them (same seed, same
iterates up to round-off). They return the library's state layout so that warm starts can
cross from one to the other.
"""

from __future__ import annotations

import numpy as np

from crflearn.inference import decode, decode_batch
from crflearn.models import hamming_loss_vectors


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
