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

Runs in a few minutes on a laptop CPU; set ``CRFLEARN_DATA`` to the folder
holding ``ocr_letters.npz`` if it is not in ``../shared/datasets``.
"""

import matplotlib.pyplot as plt
import numpy as np
from torch import nn

from crflearn.datasets import load_ocr
from crflearn.neural import NeuralCRF
from crflearn.neural.symmetry import FlipSharedConv2d, count_parameters

X_train, y_train, X_test, y_test = load_ocr("large")
letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))

models = {}
for name, symmetry in (("plain CNN", None), ("flip-shared CNN", "flip")):
    clf = NeuralCRF(module="cnn", image_shape=(16, 8), symmetry=symmetry, max_epochs=4, batch_size=16, lr=2e-3,
                    random_state=0, verbose=1)
    clf.fit(X_train, y_train)
    pred = clf.predict(X_test)
    error = np.mean(np.concatenate(pred) != np.concatenate(y_test))
    conv = count_parameters(clf.net_.unary, (nn.Conv2d, FlipSharedConv2d))
    print(f"{name}: test letter error {100 * error:.2f}%, {conv} learned conv parameters")
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
plt.show()
