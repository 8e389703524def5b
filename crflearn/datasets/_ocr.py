"""The OCR handwritten-words chain benchmark (Taskar, Guestrin & Koller, 2003)."""

from __future__ import annotations

import os

import numpy as np

from ._paths import find_data_file, load_npz

__all__ = ["OCR_LETTERS", "OCR_FILENAME", "load_ocr"]

OCR_LETTERS = "abcdefghijklmnopqrstuvwxyz"
OCR_FILENAME = "ocr_letters.npz"


def _check_fold(fold) -> int | None:
    if fold is None:
        return None
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)):
        raise TypeError(f"fold must be an integer in 0..9 or None, got {fold!r}")
    if not 0 <= fold <= 9:
        raise ValueError(f"fold must be in 0..9, got {fold}")
    return int(fold)


def load_ocr(protocol: str = "large", path: str | os.PathLike | None = None, *,
             fold: int | None = None, return_words: bool = False):
    """Load the OCR handwritten-words data set as chains of letters.

    Each word is a chain whose nodes are letters; a letter is a 16x8 binary
    image flattened row-major into 128 features (0.0 or 1.0). The capital first
    letter of each word is removed, as in the usual release.

    Parameters
    ----------
    protocol : {"large", "small"}
        ``"large"``: train on the nine folds other than the test fold, test on
        the test fold (fold 0 by default: 6,251 / 626 words). ``"small"``:
        train on one fold (fold 1 by default), test on the nine others.
    path : str or path-like, optional
        ``ocr_letters.npz`` or the directory holding it. By default the file is
        searched in ``$CRFLEARN_DATA`` and ``../shared/datasets`` (relative to
        the working directory, then to the source tree).
    fold : int in 0..9, optional
        Overrides the special fold: the test fold for ``"large"``, the
        training fold for ``"small"`` (cross-validation over folds).
    return_words : bool, default False
        Also return the words (lower-case strings) of the train and test sets.

    Returns
    -------
    X_train, y_train, X_test, y_test : lists
        ``X`` items are float64 arrays ``(n_letters, 128)``; ``y`` items int64
        arrays of letter ids ``0..25`` (``OCR_LETTERS[i]`` is the letter).
    words_train, words_test : lists of str
        Only when ``return_words`` is true.

    Raises
    ------
    FileNotFoundError
        If the data file cannot be found (the message lists the places searched).
    ValueError
        For a bad ``protocol`` or ``fold``, or a malformed file.

    References
    ----------
    B. Taskar, C. Guestrin and D. Koller. Max-margin Markov networks. NIPS 2003.
    """
    if protocol not in ("large", "small"):
        raise ValueError(f"protocol must be 'large' or 'small', got {protocol!r}")
    fold = _check_fold(fold)
    file = find_data_file(OCR_FILENAME, path)
    names = {"pixels": 2, "labels": 1, "lengths": 1, "folds": 1}
    if return_words:
        names["words"] = 1
    data = load_npz(file, names)
    pixels, labels, lengths, folds = data["pixels"], data["labels"], data["lengths"], data["folds"]
    if pixels.shape[1] != 128:
        raise ValueError(f"{file}: 'pixels' must have 128 columns (16x8 images), got {pixels.shape}")
    if len(labels) != len(pixels):
        raise ValueError(f"{file}: 'labels' has {len(labels)} entries but 'pixels' has {len(pixels)} rows")
    if len(folds) != len(lengths):
        raise ValueError(f"{file}: 'folds' has {len(folds)} entries but 'lengths' has {len(lengths)}")
    if np.any(lengths < 1) or int(lengths.sum()) != len(pixels):
        raise ValueError(f"{file}: 'lengths' must be positive and sum to {len(pixels)} letters, "
                         f"got sum {int(lengths.sum())}")
    if labels.size and (labels.min() < 0 or labels.max() > 25):
        raise ValueError(f"{file}: 'labels' must lie in 0..25")

    if protocol == "large":
        test_fold = 0 if fold is None else fold
        train_mask = folds != test_fold
    else:
        train_fold = 1 if fold is None else fold
        train_mask = folds == train_fold

    offsets = np.concatenate([[0], np.cumsum(lengths)])
    feats = pixels.astype(np.float64)
    labs = labels.astype(np.int64)
    X = [np.ascontiguousarray(feats[offsets[k]:offsets[k + 1]]) for k in range(len(lengths))]
    y = [labs[offsets[k]:offsets[k + 1]].copy() for k in range(len(lengths))]
    train = np.flatnonzero(train_mask)
    test = np.flatnonzero(~train_mask)
    out = ([X[k] for k in train], [y[k] for k in train], [X[k] for k in test], [y[k] for k in test])
    if return_words:
        words = data["words"]
        out = out + ([str(words[k]) for k in train], [str(words[k]) for k in test])
    return out
