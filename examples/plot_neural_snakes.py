"""
Snakes from pixels: a small CNN plus a grid CRF, trained end to end
===================================================================

Each image shows a "snake" of ten cells coloured by the direction it moved; the task
labels every cell 0 (background) or 1..10 from head to tail. Here the network reads the
raw pixels: :class:`crflearn.neural.NeuralCRF` treats each ``(height, width, 3)`` image as a
4-connected grid, a small fully convolutional network (:class:`crflearn.neural.GridCNN`,
``module="cnn"``) emits the unary scores, one learned 11x11 matrix per edge direction
scores neighbouring labels, and both are trained with the tree-reweighted bound of the
CRF negative log-likelihood (batched message passing in torch). The same network trained
alone with per-pixel cross-entropy is the unary-only baseline.

Needs ``snakes.npz`` (``$CRFLEARN_DATA`` or ``../shared/datasets``); exits politely when absent.
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

from crflearn.datasets import load_snakes  # noqa: E402
import torch  # noqa: E402

from crflearn.neural import GridCNN, NeuralCRF, limit_threads  # noqa: E402

OUT_DIR = Path(os.environ.get("CRFLEARN_EXAMPLES_OUT", "crflearn-examples"))
QUICK = bool(os.environ.get("CRFLEARN_EXAMPLES_QUICK"))

try:
    X_train, y_train, X_test, y_test = load_snakes(raw=True)
except FileNotFoundError as exc:
    print(f"snakes.npz not found, skipping: {exc}")
    sys.exit(0)

X_train = [x.astype(np.float64) / 255.0 for x in X_train]
X_test = [x.astype(np.float64) / 255.0 for x in X_test]
if QUICK:
    X_train, y_train, X_test, y_test = X_train[:40], y_train[:40], X_test[:20], y_test[:20]
EPOCHS = 5 if QUICK else 60
params = dict(module="cnn", hidden_sizes=(32, 32), max_epochs=EPOCHS, batch_size=16, lr=1e-2, random_state=0,
              device="cpu")


def train_unary_only(images, labels, test_images, test_labels):
    """The same CNN trained alone: per-pixel cross-entropy, no CRF (padded batches, masked)."""
    torch.manual_seed(0)
    net = GridCNN(3, 11, (32, 32))
    opt = torch.optim.Adam(net.parameters(), lr=params["lr"])
    order = np.random.default_rng(0).permutation(len(images))

    def pad(idx, imgs, labs):
        h, w = max(imgs[i].shape[0] for i in idx), max(imgs[i].shape[1] for i in idx)
        x = torch.zeros(len(idx), 3, h, w)
        y = torch.full((len(idx), h, w), -100, dtype=torch.long)
        for j, i in enumerate(idx):
            hi, wi = labs[i].shape
            x[j, :, :hi, :wi] = torch.as_tensor(imgs[i]).permute(2, 0, 1)
            y[j, :hi, :wi] = torch.as_tensor(labs[i])
        return x, y

    for _ in range(EPOCHS):
        for start in range(0, len(order), params["batch_size"]):
            x, y = pad(order[start:start + params["batch_size"]], images, labels)
            loss = torch.nn.functional.cross_entropy(net(x.float()), y, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        x, y = pad(np.arange(len(test_images)), test_images, test_labels)
        pred = net(x.float()).argmax(1)
    return float((pred[y >= 0] == y[y >= 0]).float().mean())


results = {}
start = time.perf_counter()
with limit_threads(params.get("n_threads")):  # as NeuralCRF does: one torch thread unless told otherwise
    accuracy = train_unary_only(X_train, y_train, X_test, y_test)
results["unary-only CNN"] = (None, accuracy, time.perf_counter() - start)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # TRW tolerance notes of the first epochs
    clf = NeuralCRF(**params)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    results["CNN + grid CRF"] = (clf, clf.score(X_test, y_test), time.perf_counter() - start)
for name, (_, accuracy, seconds) in results.items():
    print(f"{name:16s} test accuracy {accuracy:.3f}  (train + test {seconds:.1f} s, {EPOCHS} epochs)")

crf = results["CNN + grid CRF"][0]
pred = crf.predict(X_test[:3])
fig, axes = plt.subplots(3, 3, figsize=(7, 7))
for row, (img, truth, guess) in enumerate(zip(X_test[:3], y_test[:3], pred)):
    for ax, (title, data) in zip(axes[row], (("pixels", img), ("truth", truth), ("CNN + CRF", guess))):
        ax.imshow(data if data.ndim == 3 else data, cmap=None if data.ndim == 3 else "tab20", vmin=0, vmax=10)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle(" | ".join(f"{n}: {a:.3f}" for n, (_, a, _) in results.items()))
fig.tight_layout()
OUT_DIR.mkdir(parents=True, exist_ok=True)
fig.savefig(OUT_DIR / "plot_neural_snakes.png")
print(f"figure written to {OUT_DIR / 'plot_neural_snakes.png'}")
