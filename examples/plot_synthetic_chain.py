"""
IDAL on synthetic HMM chains (no data needed)
=============================================

Draws sticky hidden-Markov chains with noisy emissions
(:func:`crflearn.datasets.make_chain_hmm`), trains a chain CRF with the IDAL
solver and compares it with per-node logistic regression, which cannot use the
label transitions. The figure shows the duality gap against time and against
epochs.

Run ``python examples/plot_synthetic_chain.py``; the figure is written to
``crflearn-examples/`` in the current directory (or to ``$CRFLEARN_EXAMPLES_OUT``).
"""

import os
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from crflearn import CRF  # noqa: E402
from crflearn.datasets import make_chain_hmm  # noqa: E402
from crflearn.metrics import node_accuracy  # noqa: E402
from crflearn.plotting import plot_convergence  # noqa: E402

# figures go to ./crflearn-examples (or $CRFLEARN_EXAMPLES_OUT), never into examples/
OUT_DIR = Path(os.environ.get("CRFLEARN_EXAMPLES_OUT", "crflearn-examples"))
QUICK = bool(os.environ.get("CRFLEARN_EXAMPLES_QUICK"))

n_train = 40 if QUICK else 200
X, y = make_chain_hmm(2 * n_train, length=(10, 30), n_states=5, n_features=10, random_state=0)
X_train, y_train, X_test, y_test = X[:n_train], y[:n_train], X[n_train:], y[n_train:]

# Independent baseline: one logistic regression over all nodes.
baseline = LogisticRegression(max_iter=1000).fit(np.vstack(X_train), np.concatenate(y_train))
baseline_acc = node_accuracy(y_test, [baseline.predict(x) for x in X_test])

crf = CRF(alpha=1e-2, solver="idal", max_iter=10 if QUICK else 100, tol=1e-4, random_state=0)
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # reported below with `converged_`
    crf.fit(X_train, y_train)
elapsed = time.perf_counter() - start

print(f"logistic regression (per node) test accuracy: {baseline_acc:.3f}")
print(f"chain CRF (IDAL)               test accuracy: {crf.score(X_test, y_test):.3f}")
print(f"IDAL: {crf.n_iter_} epochs in {elapsed:.2f} s, final duality gap {crf.history_['gap'][-1]:.2e}, "
      f"residual {crf.history_['residual'][-1]:.2e}, converged={crf.converged_}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
plot_convergence([crf], x="time", y="gap", ax=axes[0])
plot_convergence([crf], x="iteration", y="gap", ax=axes[1])
fig.suptitle("IDAL on synthetic HMM chains")
fig.tight_layout()
OUT_DIR.mkdir(parents=True, exist_ok=True)
path = OUT_DIR / "plot_synthetic_chain.png"
fig.savefig(path, dpi=100)
print(f"figure written to {path}")
