"""
IDAL on the OCR handwritten words (chain CRF)
=============================================

Trains a chain CRF with IDAL on the OCR words of Taskar et al. (2003) with the
*large* protocol (train on folds 1-9, 6,251 words; test on fold 0, 626 words),
prints the letter accuracy and plots the duality gap and the constraint
residual against time.

The data file ``ocr_letters.npz`` is not shipped with crflearn; it is looked
for in ``$CRFLEARN_DATA`` and ``../shared/datasets`` (see
``datasets/README.md``). The example exits politely when it is absent. A full
run takes a few minutes on a laptop (about 2-3 s per epoch on 2 cores).
"""

import os
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from crflearn import CRF  # noqa: E402
from crflearn.datasets import OCR_LETTERS, load_ocr  # noqa: E402
from crflearn.plotting import plot_convergence  # noqa: E402

# figures go to ./crflearn-examples (or $CRFLEARN_EXAMPLES_OUT), never into examples/
OUT_DIR = Path(os.environ.get("CRFLEARN_EXAMPLES_OUT", "crflearn-examples"))
QUICK = bool(os.environ.get("CRFLEARN_EXAMPLES_QUICK"))

try:
    X_train, y_train, X_test, y_test = load_ocr("large")
except FileNotFoundError as exc:
    print(f"skipping the OCR example: {exc}")
    sys.exit(0)
if QUICK:
    X_train, y_train, X_test, y_test = X_train[:150], y_train[:150], X_test[:50], y_test[:50]

crf = CRF(alpha=1e-3, solver="idal", max_iter=3 if QUICK else 40, tol=1e-4, random_state=0, verbose=1)
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # the curve shows how far it got
    crf.fit(X_train, y_train)
elapsed = time.perf_counter() - start

print(f"{len(X_train)} training words, {sum(len(v) for v in y_train)} letters; trained in {elapsed:.1f} s")
print(f"test letter accuracy: {crf.score(X_test, y_test):.4f}")
word = crf.predict(X_test[:1])[0]
print("first test word: truth", "".join(OCR_LETTERS[v] for v in y_test[0]),
      "predicted", "".join(OCR_LETTERS[v] for v in word))

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
plot_convergence([crf], x="time", y="gap", ax=axes[0])
plot_convergence([crf], x="time", y="residual", ax=axes[1])
fig.suptitle("IDAL on OCR (large protocol)")
fig.tight_layout()
OUT_DIR.mkdir(parents=True, exist_ok=True)
path = OUT_DIR / "plot_ocr_chain.png"
fig.savefig(path, dpi=100)
print(f"figure written to {path}")
