"""What a saved :class:`crflearn.CRF` holds: its metadata and arrays for :mod:`crflearn.persistence`.

Kept apart from :mod:`crflearn.estimators` so that the estimator stays about
learning; this module knows the CRF's fitted attributes but imports no estimator.

Metadata (JSON): ``params`` (constructor arguments; ``callback`` and a
``RandomState`` instance stored as None), ``model`` (``n_states``,
``n_features`` without the bias, ``n_edge_features``, ``fit_intercept``),
``n_features_in_``, ``n_edge_features_in_``, ``n_iter_``, ``converged_``,
``interrupted_``, ``alpha_``, ``solver_info_``, ``history_columns``, and
``object_classes`` for labels that are not bool, int, float, str or bytes (tuples
of JSON values as ``{"tuple": [...]}``, Enum members as ``{"enum": [module,
qualname, name]}``: restored only when that Enum's module is already imported, never
by importing it).
Arrays: ``coef`` (finite float64), ``classes`` (sorted, unique; bool, int,
float, str or bytes; absent with ``object_classes``), ``history/<column>``,
``feature_names`` (the vocabulary of a CRF fitted on feature dicts) and
``transition_mask`` (bool ``(K, K)``, the allowed transitions; the parameter
``allowed_transitions`` is stored as this mask).
"""

from __future__ import annotations

import enum
import numbers
import sys
from typing import Any

import numpy as np

from .models import PairwiseModel

__all__ = ["KIND", "to_archive", "from_archive"]

KIND = "crflearn.CRF"
_NOT_SAVED = ("callback", "allowed_transitions")
_MAX_LABEL_DEPTH = 16
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


def _encode_label(value, depth: int = 0):
    """A label as JSON (see the module docstring); TypeError for a label that cannot be saved."""
    if depth > _MAX_LABEL_DEPTH:
        raise TypeError("labels nested deeper than 16 tuples cannot be saved")
    if isinstance(value, enum.Enum):
        cls = type(value)
        return {"enum": [cls.__module__, cls.__qualname__, value.name]}
    if isinstance(value, tuple):
        return {"tuple": [_encode_label(v, depth + 1) for v in value]}
    if value is None or isinstance(value, (bool, np.bool_, numbers.Real, str)):
        return _jsonable(value.item() if isinstance(value, np.generic) else value, "label")
    raise TypeError(f"the label {value!r:.60} cannot be saved without pickle; labels must be bool, int, "
                    "float, str or bytes, tuples of bool, int, float, str or None, or Enum members")


def _enum_member(spec) -> enum.Enum:
    if not (isinstance(spec, list) and len(spec) == 3 and all(isinstance(v, str) for v in spec)):
        raise ValueError("malformed Enum label")
    module, qualname, name = spec
    obj = sys.modules.get(module)  # never import: a file must not choose code to run
    if obj is None:
        raise ValueError(f"the labels are members of the Enum {module}.{qualname}; import {module} before "
                         "loading the model")
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, enum.Enum)) or name not in obj.__members__:
        raise ValueError(f"{module}.{qualname} is not an Enum with a member {name!r:.40}")
    return obj[name]


def _decode_label(value, depth: int = 0):
    if depth > _MAX_LABEL_DEPTH:
        raise ValueError("labels nested too deeply")
    if isinstance(value, dict) and list(value) == ["tuple"] and isinstance(value["tuple"], list):
        return tuple(_decode_label(v, depth + 1) for v in value["tuple"])
    if isinstance(value, dict) and list(value) == ["enum"]:
        return _enum_member(value["enum"])
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"malformed label {value!r:.60}")


def _object_classes(encoded) -> np.ndarray:
    if not isinstance(encoded, list) or len(encoded) < 2:
        raise ValueError("object_classes must be a list of at least 2 labels")
    values = [_decode_label(v) for v in encoded]
    if len(set(values)) != len(values):
        raise ValueError("classes are not unique")
    classes = np.empty(len(values), dtype=object)
    classes[:] = values
    return classes


def to_archive(est) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and arrays of a fitted CRF (raises TypeError for what cannot be saved)."""
    params = {}
    for key, value in est.get_params(deep=False).items():
        if key in _NOT_SAVED or (key == "random_state" and isinstance(value, np.random.RandomState)):
            params[key] = None
        else:
            params[key] = _jsonable(value, key)
    classes = np.asarray(est.classes_)
    object_classes = None
    if classes.dtype.kind not in _CLASS_KINDS:
        object_classes = [_encode_label(v) for v in classes.tolist()]
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
    arrays = {"coef": np.asarray(est.coef_, dtype=np.float64)}
    if object_classes is None:
        arrays["classes"] = classes
    else:
        meta["object_classes"] = object_classes
    if getattr(est, "vectorizer_", None) is not None:
        arrays["feature_names"] = np.asarray(est.feature_names_in_, dtype=str)
    if getattr(est, "transition_mask_", None) is not None:
        arrays["transition_mask"] = np.asarray(est.transition_mask_, dtype=bool)
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
    coef = arrays["coef"]
    if coef.dtype != np.float64 or coef.shape != (model.size,):
        raise ValueError(f"coef has shape {coef.shape} and dtype {coef.dtype}, expected ({model.size},) float64")
    classes = _classes(meta, arrays, model.n_states)
    params = meta["params"]
    if not isinstance(params, dict):
        raise ValueError("params malformed")
    n_features_in = _int(meta["n_features_in_"], "n_features_in_", 0)
    n_edge_in = _int(meta["n_edge_features_in_"], "n_edge_features_in_", 1, allow_none=True)
    n_extra = 2 if params.get("start_end_transitions") is True else 0
    if model.n_features != n_features_in + n_extra or n_edge_in != model.n_edge_features:
        raise ValueError("inconsistent feature counts")
    columns = meta["history_columns"]
    if not isinstance(columns, list):
        raise ValueError("history_columns is not a list")
    history = {str(col): arrays[f"history/{col}"] for col in columns}
    if any(h.ndim != 1 or h.dtype.kind not in "biuf" for h in history.values()):
        raise ValueError("history columns must be 1-D numeric arrays")
    alpha_ = meta["alpha_"]
    if not isinstance(alpha_, (int, float)) or not alpha_ > 0:
        raise ValueError("alpha_ malformed")
    info = meta["solver_info_"]
    attrs = {"classes_": classes, "n_features_in_": n_features_in, "n_edge_features_in_": n_edge_in,
             "model_": model, "coef_": coef, "n_iter_": _int(meta["n_iter_"], "n_iter_", 0),
             "history_": history, "converged_": _bool(meta["converged_"], "converged_"),
             "interrupted_": _bool(meta["interrupted_"], "interrupted_"), "alpha_": float(alpha_),
             "solver_info_": dict(info) if isinstance(info, dict) else {}}
    attrs.update(_vocabulary(arrays, n_features_in))
    mask = arrays.get("transition_mask")
    if mask is not None and (mask.dtype != bool or mask.shape != (model.n_states, model.n_states)):
        raise ValueError(f"transition_mask has dtype {mask.dtype} and shape {mask.shape}, expected bool "
                         f"({model.n_states}, {model.n_states})")
    params["allowed_transitions"] = mask
    attrs["transition_mask_"] = mask
    return params, attrs


def _classes(meta: dict, arrays: dict[str, np.ndarray], n_states: int) -> np.ndarray:
    if "object_classes" in meta:
        classes = _object_classes(meta["object_classes"])
        if classes.shape != (n_states,):
            raise ValueError(f"{len(classes)} classes for a model of {n_states} states")
        return classes
    classes = arrays["classes"]
    if classes.dtype.kind not in _CLASS_KINDS or classes.shape != (n_states,):
        raise ValueError(f"classes have dtype {classes.dtype} and shape {classes.shape}, expected "
                         f"({n_states},) labels")
    if classes.dtype.kind == "f" and not np.all(np.isfinite(classes)):
        raise ValueError("classes are not finite")
    if not np.array_equal(np.unique(classes), classes):
        raise ValueError("classes are not sorted and unique")
    return classes


def _vocabulary(arrays: dict[str, np.ndarray], n_features_in: int) -> dict[str, Any]:
    """The feature-dict vectoriser restored from the saved feature names (None without them)."""
    from .preprocessing import dict_vectorizer_from_names

    names = arrays.get("feature_names")
    if names is None:
        return {"vectorizer_": None}
    if names.dtype.kind != "U" or names.shape != (n_features_in,):
        raise ValueError(f"feature_names have dtype {names.dtype} and shape {names.shape}, expected "
                         f"({n_features_in},) strings")
    vectorizer = dict_vectorizer_from_names(names.tolist())
    return {"vectorizer_": vectorizer, "feature_names_in_": np.asarray(names.tolist(), dtype=object)}
