"""
Snakes: a loopy grid task that needs direction-aware pairwise potentials
=======================================================================

Each image shows a "snake" of ten cells coloured by the direction it moved;
the task labels the cells 0 (background) and 1..10 from head to tail. Per-cell
classification cannot count along the snake; a CRF on the 4-connected grid
whose pairwise potentials depend on the colours at both ends and on the edge
direction (see :func:`crflearn.datasets.load_snakes`) can. IDAL trains it
without exact inference.

Needs ``snakes.npz`` (``$CRFLEARN_DATA`` or ``../shared/datasets``); exits
politely when absent.
"""

import os
import sys
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
from crflearn.datasets import load_snakes  # noqa: E402
from crflearn.metrics import node_accuracy  # noqa: E402
from crflearn.plotting import plot_convergence  # noqa: E402

# figures go to ./crflearn-examples (or $CRFLEARN_EXAMPLES_OUT), never into examples/
OUT_DIR = Path(os.environ.get("CRFLEARN_EXAMPLES_OUT", "crflearn-examples"))
QUICK = bool(os.environ.get("CRFLEARN_EXAMPLES_QUICK"))

try:
    X_train, y_train, X_test, y_test = load_snakes()
    raw_test = load_snakes(raw=True)[2]
except FileNotFoundError as exc:
    print(f"skipping the snakes example: {exc}")
    sys.exit(0)
if QUICK:
    X_train, y_train = X_train[:40], y_train[:40]

baseline = LogisticRegression(max_iter=2000).fit(np.vstack([f for f, _, _ in X_train]),
                                                 np.concatenate(y_train))
baseline_acc = node_accuracy(y_test, [baseline.predict(f) for f, _, _ in X_test])

crf = CRF(alpha=1e-3, solver="idal", max_iter=5 if QUICK else 100, tol=1e-4, random_state=0)
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    crf.fit(X_train, y_train)
elapsed = time.perf_counter() - start
pred = crf.predict(X_test)
print(f"per-cell logistic regression test accuracy: {baseline_acc:.4f}")
print(f"grid CRF (IDAL) test accuracy:              {node_accuracy(y_test, pred):.4f} "
      f"({crf.n_iter_} epochs, {elapsed:.1f} s)")

fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
plot_convergence([crf], x="time", y="gap", ax=axes[0])
k = 0
h, w = raw_test[k].shape[:2]
axes[1].imshow(raw_test[k])
axes[1].set_title("input colours")
axes[2].imshow(y_test[k].reshape(h, w), cmap="viridis", vmin=0, vmax=10)
axes[2].set_title("true labels")
axes[3].imshow(pred[k].reshape(h, w), cmap="viridis", vmin=0, vmax=10)
axes[3].set_title("CRF prediction")
for ax in axes[1:]:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
OUT_DIR.mkdir(parents=True, exist_ok=True)
path = OUT_DIR / "plot_snakes_grid.png"
fig.savefig(path, dpi=100)
print(f"figure written to {path}")
