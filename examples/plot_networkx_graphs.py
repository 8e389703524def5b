"""
CRFs on networkx graphs
=======================

:func:`crflearn.datasets.make_random_graphs` draws k-nearest-neighbour graphs
(loopy) of different sizes whose node labels form spatial regions. The CRF
takes the networkx graphs directly: node attribute ``"x"`` holds the features
and ``"y"`` the label. The figure draws a test graph coloured by the true and
the predicted labels, and the duality gap of training.

Runs anywhere (no data files); the figure is written to ``crflearn-examples/``
in the current directory (or to ``$CRFLEARN_EXAMPLES_OUT``).
"""

import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from crflearn import CRF  # noqa: E402
from crflearn.datasets import make_random_graphs  # noqa: E402
from crflearn.metrics import node_accuracy  # noqa: E402
from crflearn.plotting import plot_convergence  # noqa: E402

# figures go to ./crflearn-examples (or $CRFLEARN_EXAMPLES_OUT), never into examples/
OUT_DIR = Path(os.environ.get("CRFLEARN_EXAMPLES_OUT", "crflearn-examples"))
QUICK = bool(os.environ.get("CRFLEARN_EXAMPLES_QUICK"))

n = 20 if QUICK else 100
_, _, graphs = make_random_graphs(2 * n, n_nodes=(15, 40), n_states=3, n_features=5, noise=1.5,
                                  random_state=0, return_networkx=True)
train, test = graphs[:n], graphs[n:]
y_test = [np.array([g.nodes[v]["y"] for v in g]) for g in test]

# labels are read from the "y" node attributes when y is omitted
crf = CRF(alpha=1e-2, solver="idal", max_iter=10 if QUICK else 100, tol=1e-4, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    crf.fit(train)
pred = crf.predict(test)

features = np.vstack([g.nodes[v]["x"] for g in train for v in g])
labels = np.array([g.nodes[v]["y"] for g in train for v in g])
baseline = LogisticRegression(max_iter=1000).fit(features, labels)
baseline_pred = [baseline.predict(np.vstack([g.nodes[v]["x"] for v in g])) for g in test]
print(f"per-node logistic regression test accuracy: {node_accuracy(y_test, baseline_pred):.3f}")
print(f"graph CRF (IDAL) test accuracy:             {node_accuracy(y_test, pred):.3f}")

fig, axes = plt.subplots(1, 3, figsize=(13, 4))
g = test[0]
pos = nx.get_node_attributes(g, "pos")
for ax, values, title in ((axes[0], y_test[0], "true labels"), (axes[1], pred[0], "CRF prediction")):
    nx.draw_networkx(g, pos=pos, ax=ax, node_color=values, cmap="viridis", vmin=0, vmax=2,
                     with_labels=False, node_size=80)
    ax.set_title(title)
    ax.set_axis_off()
plot_convergence([crf], x="iteration", y="gap", ax=axes[2])
fig.tight_layout()
OUT_DIR.mkdir(parents=True, exist_ok=True)
path = OUT_DIR / "plot_networkx_graphs.png"
fig.savefig(path, dpi=100)
print(f"figure written to {path}")
