"""`NeuralCRF`: a network emitting unary potentials plus a chain CRF, trained end to end."""

from __future__ import annotations

import copy
import json
import numbers
import os
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import check_random_state

from ..graphs import make_batch
from ..solvers._base import report_progress, warn_interrupted
from ..solvers._history import ConvergenceHistory, Stopwatch
from ._chain import chain_crf_nll, chain_hinge_loss, chain_marginals, chain_viterbi
from ._graph import gini_relaxed_loss
from .networks import BiLSTMTagger, LetterCNN, NodeMLP

__all__ = ["NeuralCRF"]

_BUILTIN = ("mlp", "linear", "cnn", "bilstm")
_LOSSES = ("nll", "gini", "hinge")
_OPTIMIZERS = ("adam", "adamw", "sgd")
_PARAMS_FILE = "params.json"
_WEIGHTS_FILE = "weights.pt"


class _CRFNet(torch.nn.Module):
    """A unary network plus a learned transition matrix."""

    def __init__(self, unary: torch.nn.Module, n_states: int):
        super().__init__()
        self.unary = unary
        self.transitions = torch.nn.Parameter(torch.zeros(n_states, n_states))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if getattr(self.unary, "accepts_lengths", False):
            return self.unary(x, lengths)
        return self.unary(x)


def _resolve_device(device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:i]' or a torch.device, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available")
    return dev


def _pad(features: list[np.ndarray], labels: list[np.ndarray] | None):
    """Pad per-example arrays to (B, T, p) float32, (B, T) int64 (-1 at padding), lengths (B,)."""
    lengths = np.array([len(f) for f in features], dtype=np.int64)
    t = int(lengths.max())
    p = features[0].shape[1]
    x = np.zeros((len(features), t, p), dtype=np.float32)
    y = np.full((len(features), t), -1, dtype=np.int64)
    for i, f in enumerate(features):
        x[i, : len(f)] = f
        if labels is not None:
            y[i, : len(f)] = labels[i]
    return x, (y if labels is not None else None), lengths


class NeuralCRF(BaseEstimator):
    """Chain CRF whose unary potentials come from a neural network, trained end to end.

    The network maps each sequence ``(T, n_features)`` to scores ``(T, K)``; a
    learned ``(K, K)`` transition matrix scores neighbouring labels. Training
    minimises one of three structured losses with a torch optimiser;
    prediction is Viterbi decoding.

    Parameters
    ----------
    module : {"mlp", "linear", "cnn", "bilstm"} or torch.nn.Module
        The unary network. A module is called as ``module(x)`` on a padded
        batch ``(B, T, n_features)`` and must return ``(B, T, n_classes)``
        (with ``accepts_lengths = True`` it is called as ``module(x, lengths)``).
        It is deep-copied in :meth:`fit`, so the object passed is not modified.
        Built-ins: ``"mlp"`` (:class:`~crflearn.neural.NodeMLP`), ``"linear"``
        (no hidden layer: a linear CRF), ``"cnn"``
        (:class:`~crflearn.neural.LetterCNN`, node features are images of
        ``image_shape``), ``"bilstm"`` (:class:`~crflearn.neural.BiLSTMTagger`).
    loss : {"nll", "gini", "hinge"}
        ``"nll"``: CRF negative log-likelihood; ``"gini"``: the Gini-relaxed
        IDAL surrogate (:func:`~crflearn.neural.gini_relaxed_loss`, inference on
        CPU); ``"hinge"``: margin-rescaled structured hinge with Hamming loss.
    hidden_sizes : tuple of int
        Hidden widths of the ``"mlp"`` network.
    image_shape : (int, int)
        Image shape of the node features for ``"cnn"`` (``h * w == n_features``).
    symmetry : str or None
        Symmetric-convolution mode for ``"cnn"`` (see
        :mod:`crflearn.neural.symmetry`); None for plain convolutions.
    hidden_size : int
        Per-direction width of the ``"bilstm"`` network.
    module_kwargs : dict, optional
        Extra keyword arguments for the built-in network's constructor.
    kappa : float
        Gini weight of ``loss="gini"``.
    lr : float
        Learning rate.
    weight_decay : float
        L2 penalty (``weight_decay`` of the torch optimiser).
    optimizer : {"adam", "adamw", "sgd"}
        ``"sgd"`` uses momentum 0.9.
    max_epochs : int
        Passes over the training set.
    batch_size : int
        Sequences per optimiser step.
    validation_fraction : float
        Fraction of the sequences held out to measure ``val_accuracy`` each
        epoch (0 disables it).
    n_iter_no_change : int or None
        Early stopping: stop when the validation accuracy has not improved for
        this many epochs, and restore the best weights. Needs
        ``validation_fraction > 0``. None disables it.
    device : "auto", str or torch.device
        ``"auto"`` uses CUDA when available.
    random_state : int, RandomState or None
        Seeds the split, the shuffling and torch (initialisation, dropout).
    verbose : int
        Print one progress line per epoch when > 0.
    callback : callable, optional
        ``callback(info)`` after each epoch with the history row plus
        ``"model"``; returning True stops training.

    Attributes
    ----------
    net_ : torch.nn.Module
        The trained network; ``net_.unary`` is the unary network and
        ``net_.transitions`` the transition matrix.
    transitions_ : ndarray of shape (n_classes, n_classes)
    classes_ : ndarray
        Label values; label ``classes_[k]`` is state ``k``.
    n_features_in_ : int
    n_iter_ : int
        Epochs run.
    history_ : dict of ndarray
        ``iteration`` (epoch), ``time`` (training seconds, validation excluded),
        ``primal`` (mean training loss per sequence over the epoch), ``dual``
        and ``gap`` (NaN: no dual here), ``residual`` (0), ``oracle_calls``
        (sequences processed) and ``val_accuracy`` (node accuracy on the
        validation split; NaN without one).
    device_ : torch.device

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.normal(size=(5, 3)) for _ in range(20)]
    >>> y = [(x[:, 0] > 0).astype(int) for x in X]
    >>> clf = NeuralCRF(module="linear", max_epochs=5, random_state=0).fit(X, y)
    >>> pred = clf.predict(X)
    """

    def __init__(self, module="mlp", loss="nll", *, hidden_sizes=(128,), image_shape=(16, 8), symmetry=None,
                 hidden_size=64, module_kwargs=None, kappa=1.0, lr=1e-3, weight_decay=0.0, optimizer="adam",
                 max_epochs=20, batch_size=32, validation_fraction=0.1, n_iter_no_change=None, device="auto",
                 random_state=None, verbose=0, callback=None):
        self.module = module
        self.loss = loss
        self.hidden_sizes = hidden_sizes
        self.image_shape = image_shape
        self.symmetry = symmetry
        self.hidden_size = hidden_size
        self.module_kwargs = module_kwargs
        self.kappa = kappa
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        tags.non_deterministic = True
        return tags

    # ------------------------------------------------------------------ validation
    def _check_params(self):
        if isinstance(self.module, str):
            if self.module not in _BUILTIN:
                raise ValueError(f"module must be one of {_BUILTIN} or a torch.nn.Module, got {self.module!r}")
        elif not isinstance(self.module, torch.nn.Module):
            raise TypeError(f"module must be a name in {_BUILTIN} or a torch.nn.Module, "
                            f"got {type(self.module).__name__}")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lr", "kappa"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, numbers.Real) or not np.isfinite(wd) or wd < 0:
            raise ValueError(f"weight_decay must be a non-negative finite number, got {wd!r}")
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, numbers.Real) or not 0 <= vf < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {vf!r}")
        nc = self.n_iter_no_change
        if nc is not None:
            if isinstance(nc, bool) or not isinstance(nc, numbers.Integral) or nc < 1:
                raise ValueError(f"n_iter_no_change must be a positive integer or None, got {nc!r}")
            if vf == 0:
                raise ValueError("n_iter_no_change needs validation_fraction > 0 (early stopping "
                                 "monitors the validation accuracy)")
        if self.module_kwargs is not None and not isinstance(self.module_kwargs, dict):
            raise TypeError(f"module_kwargs must be a dict or None, got {type(self.module_kwargs).__name__}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable or None, got {type(self.callback).__name__}")

    def _check_X(self, X, y=None, n_features=None):
        if isinstance(X, np.ndarray) and X.dtype != object and X.ndim == 2:
            raise TypeError("X must be a list of sequences (one (n_nodes, n_features) array each), not a "
                            "single 2-D array; wrap it as [X] for one sequence")
        if isinstance(X, (str, bytes, dict)):
            raise TypeError(f"X must be a list of (n_nodes, n_features) arrays, got {type(X).__name__}")
        try:
            items = list(X)
        except TypeError:
            raise TypeError(f"X must be a list of (n_nodes, n_features) arrays, got {type(X).__name__}") from None
        for i, item in enumerate(items):
            if isinstance(item, tuple) or hasattr(item, "nodes"):
                raise TypeError(f"X[{i}] is a {type(item).__name__}: NeuralCRF handles chains only; give each "
                                "sequence as an (n_nodes, n_features) array")
        encoder = None
        if y is not None:
            encoder = self._encode
        batch, _ = make_batch(items, y, n_features=n_features, n_edge_features=None, label_encoder=encoder)
        if batch.is_sparse:
            batch.node_features = batch.node_features.toarray()
        labels = batch.split_nodes(batch.labels) if batch.labels is not None else None
        return batch.split_nodes(batch.node_features), labels

    def _encode(self, raw):
        raw = np.asarray(raw)
        codes = np.searchsorted(self.classes_, raw)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[codes], raw):
            bad = raw[self.classes_[codes] != raw][0]
            raise ValueError(f"y contains the label {bad!r} not seen during fit")
        return codes.astype(np.int64)

    def _build_module(self, n_features: int, n_states: int) -> torch.nn.Module:
        if isinstance(self.module, torch.nn.Module):
            return copy.deepcopy(self.module)
        kwargs = dict(self.module_kwargs or {})
        if self.module == "mlp":
            return NodeMLP(n_features, n_states, tuple(self.hidden_sizes), **kwargs)
        if self.module == "linear":
            return NodeMLP(n_features, n_states, (), **kwargs)
        if self.module == "cnn":
            shape = tuple(int(s) for s in self.image_shape)
            if len(shape) != 2 or shape[0] * shape[1] != n_features:
                raise ValueError(f"image_shape={self.image_shape!r} does not match n_features={n_features} "
                                 "(height * width must equal the number of node features)")
            return LetterCNN(n_states, shape, symmetry=self.symmetry, **kwargs)
        return BiLSTMTagger(n_features, n_states, hidden_size=int(self.hidden_size), **kwargs)

    # ------------------------------------------------------------------ training
    def _loss(self, unary, transitions, tags, lengths):
        if self.loss == "nll":
            return chain_crf_nll(unary, transitions, tags, lengths, reduction="mean")
        if self.loss == "hinge":
            return chain_hinge_loss(unary, transitions, tags, lengths, reduction="mean")
        b, t, _ = unary.shape
        mask = torch.arange(t, device=unary.device)[None, :] < lengths[:, None]
        flat_unary = unary[mask]
        flat_tags = tags[mask]
        lens = lengths.cpu().numpy()
        offsets = np.concatenate([[0], np.cumsum(lens)])
        edges = np.concatenate([np.stack([np.arange(o, o + n - 1), np.arange(o + 1, o + n)], axis=1)
                                for o, n in zip(offsets[:-1], lens)]).astype(np.int64).reshape(-1, 2)
        return gini_relaxed_loss(flat_unary, transitions, edges, flat_tags, kappa=float(self.kappa)) / b

    def fit(self, X, y) -> "NeuralCRF":
        """Train the network and the transition matrix.

        Parameters
        ----------
        X : list of ndarray of shape (n_nodes_i, n_features)
            One array per sequence.
        y : list of 1-D arrays
            Labels per sequence (any sortable values).

        Returns
        -------
        self

        Notes
        -----
        Training seeds torch from ``random_state`` inside :func:`torch.random.fork_rng`, so the
        caller's global torch random state is left as it was.
        """
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            return self._fit(X, y)

    def _fit(self, X, y) -> "NeuralCRF":
        self._check_params()
        if y is None:
            raise ValueError("y is required: NeuralCRF is supervised")
        try:
            y_items = [np.asarray(lab) for lab in y]
        except TypeError:
            raise TypeError(f"y must be a list of label arrays, got {type(y).__name__}") from None
        if not y_items:
            raise ValueError("y is empty")
        self.classes_ = np.unique(np.concatenate([lab.ravel() for lab in y_items]))
        feats, labels = self._check_X(X, y_items)
        n_states = len(self.classes_)
        self.n_features_in_ = feats[0].shape[1]
        rng = check_random_state(self.random_state)
        torch.manual_seed(int(rng.randint(0, 2**31 - 1)))
        self.device_ = _resolve_device(self.device)
        dev = self.device_

        n = len(feats)
        order = rng.permutation(n)
        n_val = int(round(self.validation_fraction * n)) if self.validation_fraction > 0 else 0
        if self.validation_fraction > 0:
            n_val = min(max(n_val, 1), n - 1)
            if n_val < 1:
                raise ValueError("validation_fraction > 0 needs at least 2 sequences")
        val_idx, train_idx = order[:n_val], order[n_val:]
        x_all, y_all, len_all = _pad(feats, labels)
        x_all = torch.as_tensor(x_all)
        y_all = torch.as_tensor(y_all)
        len_all = torch.as_tensor(len_all)

        net = _CRFNet(self._build_module(self.n_features_in_, n_states), n_states).to(dev)
        with torch.no_grad():
            probe = net(x_all[:1].to(dev), len_all[:1].to(dev))
        if probe.dim() != 3 or probe.shape[-1] != n_states or probe.shape[:2] != x_all[:1].shape[:2]:
            raise ValueError(f"module must map (B, T, {self.n_features_in_}) inputs to (B, T, {n_states}) "
                             f"scores (one per class), got output shape {tuple(probe.shape)}")
        params = net.parameters()
        if self.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        elif self.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)

        history = ConvergenceHistory(extra=("val_accuracy",))
        watch = Stopwatch()
        best_acc, best_state, since_best = -np.inf, None, 0
        interrupted, stopped_early = False, False
        self.net_ = net
        epoch = 0
        try:
            for epoch in range(1, int(self.max_epochs) + 1):
                net.train()
                perm = train_idx[rng.permutation(len(train_idx))]
                total, seen = 0.0, 0
                for start in range(0, len(perm), int(self.batch_size)):
                    idx = torch.as_tensor(perm[start:start + int(self.batch_size)])
                    lens = len_all[idx]
                    t = int(lens.max())
                    xb = x_all[idx, :t].to(dev)
                    yb = y_all[idx, :t].to(dev)
                    lb = lens.to(dev)
                    unary = net(xb, lb)
                    loss = self._loss(unary, net.transitions.to(unary.dtype), yb, lb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                with watch.paused():
                    val_acc = np.nan
                    if n_val:
                        val_acc = self._accuracy(x_all[val_idx], y_all[val_idx], len_all[val_idx])
                    row = history.append(iteration=epoch, time=watch.elapsed(), primal=total / max(seen, 1),
                                         dual=np.nan, gap=np.nan, residual=0.0,
                                         oracle_calls=history.last_oracle_calls + seen, val_accuracy=val_acc)
                    if self.verbose:
                        report_progress(self.verbose, row, "NeuralCRF")
                        if n_val:
                            print(f"[NeuralCRF] epoch {epoch:4d}  val_accuracy={val_acc:.4f}", flush=True)
                    stop = False
                    if self.n_iter_no_change is not None:
                        if val_acc > best_acc:
                            best_acc, since_best = val_acc, 0
                            best_state = copy.deepcopy(net.state_dict())
                        else:
                            since_best += 1
                            if since_best >= self.n_iter_no_change:
                                stop = stopped_early = True
                    if self.callback is not None and self.callback({**row, "model": net}):
                        stop = True
                if stop:
                    break
        except KeyboardInterrupt:
            interrupted = True
            warn_interrupted("NeuralCRF", epoch)
        if best_state is not None:
            net.load_state_dict(best_state)
        if (self.n_iter_no_change is not None and not stopped_early and not interrupted
                and epoch == int(self.max_epochs)):
            warnings.warn(f"NeuralCRF stopped at max_epochs={self.max_epochs} before early stopping triggered; "
                          "increase max_epochs", ConvergenceWarning, stacklevel=2)
        net.eval()
        self.n_iter_ = len(history)
        self.history_ = history.to_dict()
        self.interrupted_ = interrupted
        self.transitions_ = net.transitions.detach().cpu().double().numpy().copy()
        return self

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise NotFittedError("This NeuralCRF instance is not fitted yet; call fit(X, y) first")

    def _unary_batches(self, x_all, len_all, batch_size=256):
        net, dev = self.net_, self.device_
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                for start in range(0, x_all.shape[0], batch_size):
                    lens = len_all[start:start + batch_size]
                    t = int(lens.max())
                    xb = x_all[start:start + batch_size, :t].to(dev)
                    lb = lens.to(dev)
                    yield start, net(xb, lb), lb
        finally:
            net.train(was_training)

    def _decode_padded(self, x_all, len_all):
        out = []
        for _, unary, lb in self._unary_batches(x_all, len_all):
            tags, _ = chain_viterbi(unary, self.net_.transitions.to(unary.dtype), lb)
            out.extend(tags[i, : int(lb[i])].cpu().numpy() for i in range(len(lb)))
        return out

    def _accuracy(self, x_all, y_all, len_all) -> float:
        pred = self._decode_padded(x_all, len_all)
        correct = sum(int((p == y_all[i, : len(p)].numpy()).sum()) for i, p in enumerate(pred))
        return correct / max(int(len_all.sum()), 1)

    def _prepare(self, X):
        self._check_fitted()
        feats, _ = self._check_X(X, None, n_features=self.n_features_in_)
        x_all, _, len_all = _pad(feats, None)
        return torch.as_tensor(x_all), torch.as_tensor(len_all)

    def predict(self, X) -> list[np.ndarray]:
        """Viterbi labels of each sequence.

        Parameters
        ----------
        X : list of ndarray of shape (n_nodes_i, n_features)

        Returns
        -------
        y_pred : list of ndarray
            Label values (from ``classes_``) per sequence.
        """
        x_all, len_all = self._prepare(X)
        return [self.classes_[p] for p in self._decode_padded(x_all, len_all)]

    def predict_marginals(self, X) -> list[np.ndarray]:
        """Node marginals ``P(y_t = classes_[k])`` of each sequence, arrays ``(n_nodes_i, n_classes)``."""
        x_all, len_all = self._prepare(X)
        out = []
        for _, unary, lb in self._unary_batches(x_all, len_all):
            node, _ = chain_marginals(unary.double(), self.net_.transitions.double(), lb)
            out.extend(node[i, : int(lb[i])].cpu().numpy() for i in range(len(lb)))
        return out

    def score(self, X, y) -> float:
        """Node accuracy: the fraction of correctly labelled nodes over all sequences."""
        pred = self.predict(X)
        y_items = [np.asarray(lab) for lab in y]
        if len(y_items) != len(pred):
            raise ValueError(f"X has {len(pred)} sequences but y has {len(y_items)}")
        correct, total = 0, 0
        for i, (p, t) in enumerate(zip(pred, y_items)):
            if t.shape != p.shape:
                raise ValueError(f"y[{i}] has shape {t.shape}, expected {p.shape}")
            correct += int((p == t).sum())
            total += t.size
        return correct / total

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save the fitted model to the directory ``path`` (created if needed).

        Writes ``params.json`` (constructor parameters and fitted metadata, plain
        JSON) and ``weights.pt`` (the ``state_dict``, tensors only). A custom
        ``module`` is not serialised: pass an identically built module to
        :meth:`load`. The callback is not saved.
        """
        self._check_fitted()
        params = self.get_params(deep=False)
        params.pop("callback")
        custom = not isinstance(params["module"], str)
        params["module"] = None if custom else params["module"]
        for key in ("hidden_sizes", "image_shape"):
            params[key] = list(params[key]) if params[key] is not None else None
        if isinstance(params["device"], torch.device):
            params["device"] = str(params["device"])
        if params["random_state"] is not None and not isinstance(params["random_state"], numbers.Integral):
            params["random_state"] = None
        classes = self.classes_.tolist()
        meta = {"params": params, "custom_module": custom, "classes": classes,
                "classes_dtype": self.classes_.dtype.str, "n_features_in": int(self.n_features_in_),
                "n_iter": int(self.n_iter_),
                "history": {k: v.tolist() for k, v in self.history_.items()}}
        try:
            text = json.dumps(meta, allow_nan=True)
        except TypeError as exc:
            raise TypeError(f"cannot save: a parameter is not JSON-serialisable ({exc})") from None
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, _PARAMS_FILE), "w", encoding="utf-8") as fh:
            fh.write(text)
        torch.save({k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
                   os.path.join(path, _WEIGHTS_FILE))

    @classmethod
    def load(cls, path, module: torch.nn.Module | None = None, device="auto") -> "NeuralCRF":
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            The directory given to :meth:`save`.
        module : torch.nn.Module, optional
            Required when the saved model used a custom module: a module of the
            same architecture (its weights are overwritten).
        device : "auto", str or torch.device
            Where to put the network.

        Returns
        -------
        NeuralCRF
            Fitted, ready to predict.
        """
        with open(os.path.join(path, _PARAMS_FILE), encoding="utf-8") as fh:
            meta = json.load(fh)
        params = meta["params"]
        if meta["custom_module"]:
            if module is None:
                raise ValueError("this model was trained with a custom module: pass module= with the same "
                                 "architecture to load it")
            params["module"] = module
        elif module is not None:
            raise ValueError(f"this model uses the built-in module {params['module']!r}; do not pass module=")
        for key in ("hidden_sizes", "image_shape"):
            if params.get(key) is not None:
                params[key] = tuple(params[key])
        params["device"] = device
        est = cls(**params)
        est.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        est.n_features_in_ = int(meta["n_features_in"])
        est.n_iter_ = int(meta["n_iter"])
        est.history_ = {k: np.asarray(v, dtype=np.int64 if k in ("iteration", "oracle_calls") else np.float64)
                        for k, v in meta["history"].items()}
        est.device_ = _resolve_device(device)
        n_states = len(est.classes_)
        net = _CRFNet(est._build_module(est.n_features_in_, n_states), n_states)
        state = torch.load(os.path.join(path, _WEIGHTS_FILE), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        est.net_ = net.to(est.device_).eval()
        est.interrupted_ = False
        est.transitions_ = net.transitions.detach().cpu().double().numpy().copy()
        return est
