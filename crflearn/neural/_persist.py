"""`NeuralCRF` files: one crflearn archive (``crflearn.persistence``) of metadata and arrays.

The archive holds the constructor parameters and fitted metadata (JSON), the classes, the
training history and every tensor of the network's ``state_dict`` as plain arrays: no
pickle, atomic writes, and the safety checks of :func:`crflearn.persistence.load_archive`.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import torch

from ..persistence import load_archive, save_archive

__all__ = ["KIND", "save_neural", "load_neural"]

KIND = "crflearn.NeuralCRF"
_TUPLE_PARAMS = ("hidden_sizes", "image_shape")
_STATE = "state/"
_HISTORY = "history/"


def _params(est) -> dict:
    params = est.get_params(deep=False)
    params.pop("callback")
    params["module"] = params["module"] if isinstance(params["module"], str) else None
    for key in _TUPLE_PARAMS:
        params[key] = list(params[key]) if params[key] is not None else None
    if isinstance(params["device"], torch.device):
        params["device"] = str(params["device"])
    if params["random_state"] is not None and not isinstance(params["random_state"], numbers.Integral):
        params["random_state"] = None
    elif params["random_state"] is not None:
        params["random_state"] = int(params["random_state"])
    return params


def save_neural(est, path) -> None:
    """Write a fitted ``NeuralCRF`` to ``path`` (see the module docstring)."""
    metadata = {"params": _params(est), "custom_module": not isinstance(est.module, str), "kind": est.kind_,
                "n_features_in": int(est.n_features_in_),
                "n_edge_features": None if est.n_edge_features_ is None else int(est.n_edge_features_),
                "n_iter": int(est.n_iter_)}
    arrays = {"classes": np.asarray(est.classes_)}
    arrays.update({_HISTORY + k: np.asarray(v) for k, v in est.history_.items()})
    arrays.update({_STATE + k: v.detach().cpu().numpy() for k, v in est.net_.state_dict().items()})
    try:
        save_archive(os.fspath(path), kind=KIND, metadata=metadata, arrays=arrays)
    except TypeError as exc:
        raise TypeError(f"cannot save this NeuralCRF: a parameter is not JSON-serialisable ({exc})") from None


def _restore(cls, metadata, arrays, module):
    params = dict(metadata["params"])
    if metadata["custom_module"]:
        if module is None:
            raise ValueError("this model was trained with a custom module: pass module= with the same "
                             "architecture to load it")
        params["module"] = module
    elif module is not None:
        raise ValueError(f"this model uses the built-in module {params['module']!r}; do not pass module=")
    for key in _TUPLE_PARAMS:
        if params.get(key) is not None:
            params[key] = tuple(params[key])
    est = cls(**params)
    est._train_inference = est._check_params()
    est.classes_ = arrays["classes"]
    if est.classes_.ndim != 1 or len(est.classes_) == 0 or len(np.unique(est.classes_)) != len(est.classes_):
        raise ValueError("the classes must be a non-empty 1-D array of distinct values")
    est.kind_ = metadata["kind"]
    if est.kind_ not in ("chain", "graph", "image"):
        raise ValueError(f"unknown example kind {est.kind_!r}")
    est.n_features_in_ = int(metadata["n_features_in"])
    nef = metadata["n_edge_features"]
    est.n_edge_features_ = None if nef is None else int(nef)
    est.n_iter_ = int(metadata["n_iter"])
    est.history_ = {k[len(_HISTORY):]: v for k, v in arrays.items() if k.startswith(_HISTORY)}
    est.interrupted_ = False
    return est


def load_neural(cls, path, module, device):
    """Read a ``NeuralCRF`` written by :func:`save_neural`; every format problem is a ValueError."""
    metadata, arrays = load_archive(os.fspath(path), kind=KIND)
    try:
        est = _restore(cls, metadata, arrays, module)
        state = {k[len(_STATE):]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith(_STATE)}
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(f"weights {bad[:3]} are not finite")
        est.device_ = device
        net = est._build_net(None)
        net.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ValueError) and "module" in str(exc):
            raise
        raise ValueError(f"{os.fspath(path)!r} is not a valid NeuralCRF file: {exc}") from None
    est.net_ = net.to(device).eval()
    est._set_transitions()
    return est
