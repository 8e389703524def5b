"""
CNN + chain CRF on handwritten words (OCR)
==========================================

A small convolutional network reads each 16x8 letter image and emits 26
unary scores; a learned 26x26 transition matrix couples neighbouring letters.
Both are trained end to end with the CRF negative log-likelihood by
:class:`crflearn.neural.NeuralCRF` (``module="cnn"``), on the large protocol
(train on folds 1..9, test on fold 0). A second network with flip-shared
convolutions (``symmetry="flip"``: half of the kernels are mirror images of the
other half) learns half the convolution parameters.

Runs in a few minutes on a laptop CPU (``NeuralCRF`` uses one torch thread unless
``n_threads`` says otherwise); set ``CRFLEARN_DATA`` to the folder holding
``ocr_letters.npz`` if it is not in ``../shared/datasets``. Figures go to
``$CRFLEARN_EXAMPLES_OUT`` (default ``crflearn-examples``); ``CRFLEARN_EXAMPLES_QUICK=1``
trains one epoch on a subset.
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from crflearn.datasets import OCR_LETTERS, load_ocr  # noqa: E402
from crflearn.neural import NeuralCRF  # noqa: E402
from crflearn.neural.symmetry import FlipSharedConv2d, count_parameters  # noqa: E402

OUT_DIR = Path(os.environ.get("CRFLEARN_EXAMPLES_OUT", "crflearn-examples"))
QUICK = bool(os.environ.get("CRFLEARN_EXAMPLES_QUICK"))
try:
    X_train, y_train, X_test, y_test = load_ocr("large")
except FileNotFoundError as exc:
    print(f"ocr_letters.npz not found, skipping: {exc}")
    sys.exit(0)
if QUICK:
    X_train, y_train, X_test, y_test = X_train[:200], y_train[:200], X_test[:100], y_test[:100]
letters = np.array(list(OCR_LETTERS))

models = {}
for name, symmetry in (("plain CNN", None), ("flip-shared CNN", "flip")):
    clf = NeuralCRF(module="cnn", image_shape=(16, 8), symmetry=symmetry, max_epochs=1 if QUICK else 4,
                    batch_size=16, lr=2e-3, random_state=0, verbose=0 if QUICK else 1)
    clf.fit(X_train, y_train)
    pred = clf.predict(X_test)
    error = np.mean(np.concatenate(pred) != np.concatenate(y_test))
    conv = count_parameters(clf.net_.unary, (nn.Conv2d, FlipSharedConv2d))
    print(f"{name}: test letter accuracy {100 * (1 - error):.2f}% (error {100 * error:.2f}%), "
          f"{conv} learned conv parameters")
    models[name] = (clf, pred)

fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for name, (clf, _) in models.items():
    h = clf.history_
    axes[0].plot(h["iteration"], h["primal"], marker="o", label=name)
    axes[1].plot(h["iteration"], 100 * (1 - h["val_accuracy"]), marker="o", label=name)
axes[0].set(xlabel="epoch", ylabel="training NLL per word", title="Training loss")
axes[1].set(xlabel="epoch", ylabel="validation letter error (%)", title="Validation error")
for ax in axes[:2]:
    ax.legend()
clf, pred = models["plain CNN"]
im = axes[2].imshow(clf.transitions_, cmap="RdBu_r", vmin=-np.abs(clf.transitions_).max(),
                    vmax=np.abs(clf.transitions_).max())
axes[2].set_xticks(range(26), letters, fontsize=6)
axes[2].set_yticks(range(26), letters, fontsize=6)
axes[2].set(title="Learned transitions (previous -> next)", xlabel="next letter", ylabel="previous letter")
fig.colorbar(im, ax=axes[2])
fig.tight_layout()

# a few test words with their images and predictions
fig2, axes2 = plt.subplots(4, 1, figsize=(8, 6))
for ax, i in zip(axes2, range(4)):
    images = X_test[i].reshape(-1, 16, 8)
    ax.imshow(np.hstack(list(images)), cmap="gray_r")
    ax.set_axis_off()
    ax.set_title(f"truth: {''.join(letters[y_test[i]])}   predicted: {''.join(letters[pred[i]])}", fontsize=9)
fig2.tight_layout()
OUT_DIR.mkdir(parents=True, exist_ok=True)
fig.savefig(OUT_DIR / "plot_neural_ocr.png")
fig2.savefig(OUT_DIR / "plot_neural_ocr_words.png")
print(f"figures written to {OUT_DIR}")
