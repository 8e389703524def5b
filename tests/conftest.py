"""Small generic fixtures shared by the test modules (tiny synthetic problems, data location)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def run_in_threads(fn, n: int = 2) -> list:
    """``[fn(0), ..., fn(n - 1)]`` computed in ``n`` threads started together."""
    import threading

    results = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def make_chains(n_sequences: int = 8, length=(4, 7), n_states: int = 3, n_features: int = 4,
                noise: float = 0.6, seed: int = 0):
    """Sticky-HMM chains with Gaussian node features (class means plus noise).

    Returns ``X`` (list of ``(n_i, n_features)`` arrays) and ``y`` (list of int64 arrays).
    """
    rng = np.random.default_rng(seed)
    means = 2.0 * rng.normal(size=(n_states, n_features))
    trans = np.full((n_states, n_states), 0.2 / max(n_states - 1, 1))
    np.fill_diagonal(trans, 0.8)
    X, y = [], []
    for _ in range(n_sequences):
        n = int(rng.integers(length[0], length[1] + 1))
        labels = np.empty(n, dtype=np.int64)
        labels[0] = rng.integers(n_states)
        for t in range(1, n):
            labels[t] = rng.choice(n_states, p=trans[labels[t - 1]])
        X.append(means[labels] + noise * rng.normal(size=(n, n_features)))
        y.append(labels)
    return X, y


@pytest.fixture
def chain_data():
    """Eight short chains, 3 states, 4 features."""
    return make_chains()


@pytest.fixture
def tiny_chains():
    """Four chains of 2-4 nodes (small enough for brute-force enumeration)."""
    return make_chains(n_sequences=4, length=(2, 4), seed=1)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path | None:
    """Directory of the shared datasets (``$CRFLEARN_DATA`` or ``../shared/datasets``), or None."""
    env = os.environ.get("CRFLEARN_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    for path in candidates:
        if path.is_dir():
            return path
    return None
