"""What a saved :class:`crflearn.CRF` holds: its metadata and arrays for :mod:`crflearn.persistence`.

Kept apart from :mod:`crflearn.estimators` so that the estimator stays about
learning; this module knows the CRF's fitted attributes but imports no estimator.

Metadata (JSON): ``params`` (constructor arguments; ``callback`` and a
``RandomState`` instance stored as None), ``model`` (``n_states``,
``n_features`` without the bias, ``n_edge_features``, ``fit_intercept``),
``n_features_in_``, ``n_edge_features_in_``, ``n_iter_``, ``converged_``,
``interrupted_``, ``alpha_``, ``solver_info_``, ``history_columns``.
Arrays: ``coef`` (finite float64), ``classes`` (sorted, unique; bool, int,
float, str or bytes), ``history/<column>``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .models import PairwiseModel

__all__ = ["KIND", "to_archive", "from_archive"]

KIND = "crflearn.CRF"
_NOT_SAVED = ("callback",)
_CLASS_KINDS = "biufUS"


def _jsonable(value, name: str):
    """Convert a parameter to JSON types, raising TypeError naming ``name`` otherwise."""
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


def to_archive(est) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and arrays of a fitted CRF (raises TypeError for what cannot be saved)."""
    params = {}
    for key, value in est.get_params(deep=False).items():
        if key in _NOT_SAVED or (key == "random_state" and isinstance(value, np.random.RandomState)):
            params[key] = None
        else:
            params[key] = _jsonable(value, key)
    classes = np.asarray(est.classes_)
    if classes.dtype.kind not in _CLASS_KINDS:
        raise TypeError(f"classes_ of dtype {classes.dtype} (e.g. tuples or Enums) cannot be saved without "
                        "pickle; only bool, int, float, str and bytes labels can")
    info = {}
    for key, value in getattr(est, "solver_info_", {}).items():
        try:
            info[str(key)] = _jsonable(value, key)
        except TypeError:
            info[str(key)] = repr(value)
    model = est.model_
    history = {str(k): np.asarray(v) for k, v in est.history_.items()}
    meta = {"params": params,
            "model": {"n_states": model.n_states, "n_features": model.n_features,
                      "n_edge_features": model.n_edge_features, "fit_intercept": bool(model.fit_intercept)},
            "n_features_in_": int(est.n_features_in_), "n_edge_features_in_": est.n_edge_features_in_,
            "n_iter_": int(est.n_iter_), "converged_": bool(est.converged_),
            "interrupted_": bool(est.interrupted_), "alpha_": float(est.alpha_),
            "solver_info_": info, "history_columns": list(history)}
    arrays = {"coef": np.asarray(est.coef_, dtype=np.float64), "classes": classes}
    arrays.update({f"history/{key}": value for key, value in history.items()})
    return meta, arrays


def _int(value, name: str, low: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if type(value) is not int or value < low:
        raise ValueError(f"{name} = {value!r:.40} (expected an int >= {low})")
    return value


def _bool(value, name: str) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{name} = {value!r:.40} (expected true or false)")
    return value


def from_archive(meta: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, Any]]:
    """Check a loaded archive; return (constructor params, fitted attributes).

    Raises ValueError or KeyError (the caller names the file) on any inconsistency.
    """
    m = meta["model"]
    model = PairwiseModel(_int(m["n_states"], "n_states", 2), _int(m["n_features"], "n_features", 0),
                          _int(m["n_edge_features"], "n_edge_features", 1, allow_none=True),
                          fit_intercept=_bool(m["fit_intercept"], "fit_intercept"))
    coef, classes = arrays["coef"], arrays["classes"]
    if coef.dtype != np.float64 or coef.shape != (model.size,):
        raise ValueError(f"coef has shape {coef.shape} and dtype {coef.dtype}, expected ({model.size},) float64")
    if classes.dtype.kind not in _CLASS_KINDS or classes.shape != (model.n_states,):
        raise ValueError(f"classes have dtype {classes.dtype} and shape {classes.shape}, expected "
                         f"({model.n_states},) labels")
    if classes.dtype.kind == "f" and not np.all(np.isfinite(classes)):
        raise ValueError("classes are not finite")
    if not np.array_equal(np.unique(classes), classes):
        raise ValueError("classes are not sorted and unique")
    n_features_in = _int(meta["n_features_in_"], "n_features_in_", 0)
    n_edge_in = _int(meta["n_edge_features_in_"], "n_edge_features_in_", 1, allow_none=True)
    if model.n_features != n_features_in or n_edge_in != model.n_edge_features:
        raise ValueError("inconsistent feature counts")
    columns = meta["history_columns"]
    if not isinstance(columns, list):
        raise ValueError("history_columns is not a list")
    history = {str(col): arrays[f"history/{col}"] for col in columns}
    if any(h.ndim != 1 or h.dtype.kind not in "biuf" for h in history.values()):
        raise ValueError("history columns must be 1-D numeric arrays")
    params = meta["params"]
    alpha_ = meta["alpha_"]
    if not isinstance(params, dict) or not isinstance(alpha_, (int, float)) or not alpha_ > 0:
        raise ValueError("params or alpha_ malformed")
    info = meta["solver_info_"]
    attrs = {"classes_": classes, "n_features_in_": n_features_in, "n_edge_features_in_": n_edge_in,
             "model_": model, "coef_": coef, "n_iter_": _int(meta["n_iter_"], "n_iter_", 0),
             "history_": history, "converged_": _bool(meta["converged_"], "converged_"),
             "interrupted_": _bool(meta["interrupted_"], "interrupted_"), "alpha_": float(alpha_),
             "solver_info_": dict(info) if isinstance(info, dict) else {}}
    return params, attrs
