"""Save and load fitted models without pickle.

A model file is a NumPy ``.npz`` archive: the learned arrays (weights,
classes, convergence history) as plain arrays, and the parameters and
metadata as a JSON document stored in the ``"metadata"`` entry. Loading uses
``numpy.load(allow_pickle=False)``, so a model file cannot execute code.

Format (version 1):

* ``metadata``: 0-d unicode array holding JSON with ``format``
  (``"crflearn-model"``), ``format_version``, ``estimator`` (``"CRF"``),
  ``crflearn_version``, ``params`` (constructor arguments), ``classes_type``
  (``"str"``, ``"bytes"``, ``"int"``, ``"float"`` or ``"bool"``) with
  ``classes_dtype``, the model layout and the scalar fitted attributes;
* ``coef``: the flat weight vector;
* ``classes``: the labels, in their original dtype;
* ``history/<column>``: the convergence record.

The solver state used by ``warm_start`` is not saved: a loaded model predicts
and scores, and a new ``fit`` starts afresh.

Pickle and joblib also work (``pickle.dumps(crf)``), but only load those from
trusted sources.
"""

from __future__ import annotations

import json
import numbers
import os
import zipfile
import zlib

import numpy as np

__all__ = ["save", "load", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "crflearn-model"
FORMAT_VERSION = 1

_CLASS_TYPES = {"b": "bool", "i": "int", "u": "int", "f": "float", "U": "str", "S": "bytes"}
_NOT_SAVED = ("callback",)


def _jsonable(value, name: str):
    """Convert parameters to JSON types, raising TypeError naming ``name`` otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not np.isfinite(value):
            raise TypeError(f"{name} = {value!r} cannot be saved (not finite)")
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{name} has the non-string key {key!r}; it cannot be saved")
            out[key] = _jsonable(v, f"{name}[{key!r}]")
        return out
    raise TypeError(f"{name} = {value!r:.80} cannot be saved as JSON (only numbers, strings, booleans, "
                    "None, lists and dicts)")


def save(estimator, path) -> None:
    """Write a fitted :class:`crflearn.CRF` to an ``.npz`` file (no pickle).

    Parameters
    ----------
    estimator : CRF
        A fitted estimator.
    path : str, path-like or writable binary file object
        Destination; a path is used exactly as given (no suffix is added).

    Raises
    ------
    TypeError
        If ``estimator`` is not a CRF, or a parameter cannot be stored as
        JSON (a ``random_state`` RandomState instance is stored as None and
        ``callback`` is never stored).
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    """
    from sklearn.utils.validation import check_is_fitted

    from . import __version__
    from .estimators import CRF

    if not isinstance(estimator, CRF):
        raise TypeError(f"estimator must be a crflearn CRF, got {type(estimator).__name__}")
    check_is_fitted(estimator, "coef_")
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key in _NOT_SAVED or (key == "random_state" and isinstance(value, np.random.RandomState)):
            params[key] = None
        else:
            params[key] = _jsonable(value, key)
    classes = np.asarray(estimator.classes_)
    if classes.dtype.kind not in _CLASS_TYPES:
        raise TypeError(f"classes_ of dtype {classes.dtype} cannot be saved")
    model = estimator.model_
    history = {str(k): np.asarray(v) for k, v in estimator.history_.items()}
    info = {}
    for key, value in getattr(estimator, "solver_info_", {}).items():
        try:
            info[str(key)] = _jsonable(value, key)
        except TypeError:
            info[str(key)] = repr(value)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": "CRF",
        "crflearn_version": __version__,
        "params": params,
        "classes_type": _CLASS_TYPES[classes.dtype.kind],
        "classes_dtype": classes.dtype.str,
        "n_classes": int(len(classes)),
        "model": {"n_states": model.n_states, "n_features": model.n_features,
                  "n_edge_features": model.n_edge_features},
        "fit_intercept": bool(estimator._fit_intercept_used),
        "n_features_in_": int(estimator.n_features_in_),
        "n_edge_features_in_": estimator.n_edge_features_in_,
        "n_iter_": int(estimator.n_iter_),
        "converged_": bool(estimator.converged_),
        "interrupted_": bool(estimator.interrupted_),
        "solver_info_": info,
        "history_columns": list(history),
    }
    arrays = {"metadata": np.array(json.dumps(meta)), "coef": np.asarray(estimator.coef_, dtype=np.float64),
              "classes": classes}
    for key, value in history.items():
        arrays[f"history/{key}"] = value
    if hasattr(path, "write"):
        np.savez_compressed(path, **arrays)
    else:
        with open(os.fspath(path), "wb") as handle:
            np.savez_compressed(handle, **arrays)


def _read(path) -> tuple[dict, dict]:
    name = path if hasattr(path, "read") else os.fspath(path)
    where = "the file object" if hasattr(path, "read") else repr(name)
    try:
        archive = np.load(name, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where} is not a crflearn model file (not a readable .npz archive: {exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{where} is not a crflearn model file (a plain .npy array, not an .npz archive)")
    try:
        with archive:
            if "metadata" not in archive.files:
                raise ValueError(f"{where} is not a crflearn model file (no 'metadata' entry)")
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise ValueError(f"{where} is corrupt: {exc}") from None
    except ValueError as exc:
        if "not a crflearn model" in str(exc):
            raise
        raise ValueError(f"{where} is corrupt or holds pickled data: {exc}") from None
    raw = arrays.pop("metadata")
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError(f"{where} is not a crflearn model file (bad 'metadata' entry)")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is corrupt: its metadata is not valid JSON ({exc})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != FORMAT_NAME:
        raise ValueError(f"{where} is not a crflearn model file (format {found!r}, expected {FORMAT_NAME!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ValueError(f"{where} has model format version {version!r}; this crflearn reads version "
                         f"{FORMAT_VERSION} or older (upgrade crflearn)")
    return meta, arrays


def load(path):
    """Load a model written by :func:`save` (or ``CRF.save``).

    Parameters
    ----------
    path : str, path-like or readable binary file object

    Returns
    -------
    CRF
        A fitted estimator predicting exactly like the saved one.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a crflearn model, is corrupt, or has a newer format version.
    """
    from .estimators import CRF
    from .models import PairwiseModel

    meta, arrays = _read(path)
    where = "the file object" if hasattr(path, "read") else repr(os.fspath(path))
    try:
        if meta["estimator"] != "CRF":
            raise ValueError(f"{where} holds an unknown estimator {meta['estimator']!r}")
        est = CRF(**meta["params"])
        m = meta["model"]
        model = PairwiseModel(int(m["n_states"]), int(m["n_features"]), m["n_edge_features"])
        coef = arrays["coef"]
        classes = arrays["classes"]
        tag, dtype = meta["classes_type"], np.dtype(meta["classes_dtype"])
        history = {col: arrays[f"history/{col}"] for col in meta["history_columns"]}
        n_features_in = int(meta["n_features_in_"])
        n_edge_in = meta["n_edge_features_in_"]
        fit_intercept = bool(meta["fit_intercept"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where} is corrupt: missing or malformed entry {exc}") from None
    if coef.dtype != np.float64 or coef.shape != (model.size,):
        raise ValueError(f"{where} is corrupt: coef has shape {coef.shape} and dtype {coef.dtype}, "
                         f"expected ({model.size},) float64")
    if _CLASS_TYPES.get(classes.dtype.kind) != tag or classes.shape != (model.n_states,):
        raise ValueError(f"{where} is corrupt: classes have dtype {classes.dtype} and shape {classes.shape}, "
                         f"expected {tag} labels of shape ({model.n_states},)")
    if model.n_features != n_features_in + int(fit_intercept) or n_edge_in != model.n_edge_features:
        raise ValueError(f"{where} is corrupt: inconsistent feature counts")
    est.classes_ = classes.astype(dtype, copy=False)
    est.n_features_in_ = n_features_in
    est.n_edge_features_in_ = None if n_edge_in is None else int(n_edge_in)
    est._set_coef(coef, model, fit_intercept)
    est.n_iter_ = int(meta.get("n_iter_", 0))
    est.history_ = history
    est.converged_ = bool(meta.get("converged_", False))
    est.interrupted_ = bool(meta.get("interrupted_", False))
    est.solver_info_ = dict(meta.get("solver_info_", {}))
    est._solver_state = None
    est._warm_signature = None
    est._fit_intercept_used = fit_intercept
    return est
