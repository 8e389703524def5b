"""`NeuralCRF`: a network emitting CRF potentials, on chains, any graph or pixel grids, trained end to end."""

from __future__ import annotations

import copy
import functools
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import check_random_state

from ..solvers._history import ConvergenceHistory
from ..solvers._loop import SolverLoop
from ._chain import chain_crf_nll, chain_hinge_loss, chain_marginals, chain_viterbi
from ._data import NeuralData, parse_inputs
from ._graph import gini_relaxed_loss, graph_hinge_loss
from ._init import build_quietly, reset_parameters
from ._loopy import trw_infer, trw_nll_loss
from ._model import CRFNet, make_batches, padded_chains
from ._persist import load_neural, save_neural
from ._threads import limit_threads
from .networks import BiLSTMTagger, GridCNN, LetterCNN, NodeMLP
from .symmetry import frobenius_decay as _frobenius_decay

__all__ = ["NeuralCRF"]

_BUILTIN = ("mlp", "linear", "cnn", "bilstm")
_LOSSES = ("nll", "gini", "hinge")
_OPTIMIZERS = ("adam", "adamw", "sgd")
#: TRW settings of the training loss (warm-started from the previous epoch's messages)
TRAIN_INFERENCE = {"max_iter": 30, "tol": 1e-3, "damping": 0.0}
_INFERENCE_KEYS = ("max_iter", "tol", "damping")


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


def _threaded(method):
    """Run ``method`` under :func:`~crflearn.neural.limit_threads` ``(self.n_threads)``."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with limit_threads(self.n_threads):
            return method(self, *args, **kwargs)
    return wrapper


def _check_real(value, name, *, positive):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a {kind} finite number, got {value!r}")


class NeuralCRF(BaseEstimator):
    """CRF whose potentials come from a neural network, trained end to end; chains, graphs or images.

    Examples are chains (``(n_nodes, n_features)`` arrays), graphs (``(features, edges[,
    edge_features])`` tuples or networkx graphs) or images (``(height, width, channels)``
    arrays, read as 4-connected pixel grids whose edges carry their direction). The network
    maps node inputs to unary scores; pairwise scores are a learned ``(K, K)`` matrix, or a
    learned linear map of the edge features (``(q, K, K)``; images: one matrix per
    direction), unless the module returns ``(unary, pairwise)`` itself.

    Training minimises a structured loss with a torch optimiser. On chains ``"nll"`` is the
    exact negative log-likelihood (forward algorithm); on other graphs it is its tree-reweighted
    upper bound ``log Z_TRW - score(y)`` (:func:`~crflearn.neural.trw_nll_loss`, exact on forests),
    computed on the training device by batched message passing warm-started from the previous
    epoch's messages. ``"gini"`` (Gini-relaxed IDAL surrogate) and ``"hinge"`` (structured hinge)
    run their inference on CPU with Numba. Prediction is Viterbi on chains and MAP inference
    (:func:`crflearn.inference.decode_batch`: exact on forests, TRW-S otherwise) on graphs.

    Parameters
    ----------
    module : {"mlp", "linear", "cnn", "bilstm"} or torch.nn.Module
        The unary network, deep-copied in :meth:`fit` (a given module keeps its initial
        weights). Chains: called on ``(B, T, n_features)``, returns ``(B, T, K)`` (with
        ``accepts_lengths = True`` called as ``module(x, lengths)``). Graphs: called on flat
        node features ``(N, n_features)``, returns ``(N, K)`` (with ``accepts_graph = True``
        called as ``module(x, edges, node_offsets)``). Images: called on ``(B, C, H, W)``,
        returns ``(B, K, H, W)``. Built-ins: ``"mlp"`` / ``"linear"``
        (:class:`~crflearn.neural.NodeMLP`; a per-pixel :class:`~crflearn.neural.GridCNN`
        with 1x1 kernels for images), ``"cnn"`` (:class:`~crflearn.neural.LetterCNN` on
        node features that are images of ``image_shape``; :class:`~crflearn.neural.GridCNN`
        for images), ``"bilstm"`` (chains only).
    loss : {"nll", "gini", "hinge"}
    hidden_sizes : tuple of int
        Hidden widths of ``"mlp"`` (and the hidden channels of ``"cnn"`` on images).
    image_shape : (int, int)
        Shape of the node-feature images of ``"cnn"`` on chains and graphs.
    symmetry : str or None
        Symmetric-convolution mode of ``"cnn"`` on node-feature images
        (:mod:`crflearn.neural.symmetry`).
    hidden_size : int
        Per-direction width of ``"bilstm"``.
    module_kwargs : dict, optional
        Extra keyword arguments of the built-in network.
    kappa : float
        Gini weight of ``loss="gini"``.
    lr, weight_decay : float
        Learning rate and L2 penalty of the optimiser.
    frobenius_decay : float
        Weight of ``||U V^T||_F^2`` summed over the factorised layers of the module
        (:func:`~crflearn.neural.symmetry.frobenius_decay`, Khodak et al. 2021), added to the
        loss; 0 disables it.
    optimizer : {"adam", "adamw", "sgd"}
        ``"sgd"`` uses momentum 0.9.
    max_epochs, batch_size : int
    validation_fraction : float
        Fraction of the examples held out for early stopping; used (and taken from the
        training data) only when ``n_iter_no_change`` is set.
    n_iter_no_change : int or None
        Early stopping: stop when the validation accuracy has not improved for this many
        epochs and restore the best weights. None trains for ``max_epochs`` on all the data.
    inference_options : dict, optional
        TRW settings of the graph ``"nll"`` loss: ``max_iter`` (30 sweeps), ``tol`` (1e-3) and
        ``damping`` (0: undamped colour-class sweeps need fewer iterations than damped ones,
        ``benchmarks/bench_neural_gpu.py --damping``; raise it when the non-convergence
        warning appears) per training step, warm-started from the previous epoch's messages.
    device : "auto", str or torch.device
        ``"auto"`` uses CUDA when available. On CUDA, batches are copied through pinned
        memory without blocking and the loop synchronises once per epoch; this path is
        implemented but unmeasured (no GPU was available to test or time it).
    n_threads : int or None
        Torch intra-op threads and BLAS / OpenMP pool sizes during :meth:`fit`, :meth:`predict`,
        :meth:`predict_marginals` and :meth:`score` (:func:`~crflearn.neural.limit_threads`;
        the previous settings are restored afterwards). None (default) uses 1 thread: these
        networks are small, and extra threads slow a shared machine down badly (issue 13
        measured 13x slower with 2 threads than 1 on a busy 2-core machine;
        ``benchmarks/bench_threads.py``); -1 uses every CPU.
    random_state : int, RandomState or None
        Seeds the split, the shuffling and the initial weights of built-in networks, through
        local generators (the global torch and NumPy random states are neither read nor
        changed, so fits in threads equal serial fits). Dropout masks are drawn by torch from
        its global generator (torch has no per-call generator for them).
    verbose : int
        Progress line every ``verbose`` epochs (through :class:`~crflearn.solvers._loop.SolverLoop`).
    callback : callable, optional
        ``callback(info)`` after each epoch with the history row plus ``"model"`` (the
        network); returning True stops training.

    Attributes
    ----------
    net_ : torch.nn.Module
        ``net_.unary`` and the pairwise parameters (``net_.transitions`` or ``net_.edge_weights``).
    transitions_ : ndarray of shape (n_classes, n_classes) or None
    classes_ : ndarray
    kind_ : {"chain", "graph", "image"}
    n_features_in_ : int
    n_edge_features_ : int or None
    n_iter_ : int
        Epochs run (the last recorded history row).
    history_ : dict of ndarray
        Per epoch: ``primal`` is the mean training loss per example (with the penalties);
        there is no dual, so ``dual`` and ``gap`` are NaN, and convergence is never declared
        from them. ``val_accuracy`` (NaN without early stopping) and ``inference_residual`` (the
        largest TRW message change of the epoch's last updates; NaN when no TRW ran) are extra
        columns; ``time`` excludes validation.
    interrupted_ : bool
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
                 hidden_size=64, module_kwargs=None, kappa=1.0, lr=1e-3, weight_decay=0.0, frobenius_decay=0.0,
                 optimizer="adam", max_epochs=20, batch_size=32, validation_fraction=0.1, n_iter_no_change=None,
                 inference_options=None, device="auto", n_threads=None, random_state=None, verbose=0,
                 callback=None):
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
        self.frobenius_decay = frobenius_decay
        self.optimizer = optimizer
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.inference_options = inference_options
        self.device = device
        self.n_threads = n_threads
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
        for name, allowed in (("loss", _LOSSES), ("optimizer", _OPTIMIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("lr", "kappa"):
            _check_real(getattr(self, name), name, positive=True)
        for name in ("weight_decay", "frobenius_decay"):
            _check_real(getattr(self, name), name, positive=False)
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        vf, nc = self.validation_fraction, self.n_iter_no_change
        if isinstance(vf, bool) or not isinstance(vf, numbers.Real) or not 0 <= vf < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {vf!r}")
        if nc is not None:
            if isinstance(nc, bool) or not isinstance(nc, numbers.Integral) or nc < 1:
                raise ValueError(f"n_iter_no_change must be a positive integer or None, got {nc!r}")
            if vf == 0:
                raise ValueError("n_iter_no_change needs validation_fraction > 0 (early stopping "
                                 "monitors the validation accuracy)")
        for name in ("module_kwargs", "inference_options"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict or None, got {type(getattr(self, name)).__name__}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable or None, got {type(self.callback).__name__}")
        return self._inference_settings()

    def _inference_settings(self) -> dict:
        opts = dict(TRAIN_INFERENCE)
        given = self.inference_options or {}
        unknown = sorted(set(given) - set(_INFERENCE_KEYS))
        if unknown:
            raise ValueError(f"inference_options accepts {_INFERENCE_KEYS}, got unknown keys {unknown}")
        opts.update(given)
        return opts

    # ------------------------------------------------------------------ networks
    def _build_unary(self, kind: str, n_features: int, n_states: int) -> torch.nn.Module:
        if isinstance(self.module, torch.nn.Module):
            return copy.deepcopy(self.module)
        kwargs = dict(self.module_kwargs or {})
        hidden = tuple(int(h) for h in self.hidden_sizes)
        if kind == "image":
            if self.module == "bilstm":
                raise ValueError("module='bilstm' reads sequences; use 'mlp', 'linear', 'cnn' or a module "
                                 "for images")
            channels, size = {"cnn": (hidden, 3), "mlp": (hidden, 1), "linear": ((), 1)}[self.module]
            kwargs.setdefault("kernel_size", size)
            return GridCNN(n_features, n_states, channels, **kwargs)
        if self.module in ("mlp", "linear"):
            return NodeMLP(n_features, n_states, hidden if self.module == "mlp" else (), **kwargs)
        if self.module == "cnn":
            shape = tuple(int(s) for s in self.image_shape)
            if len(shape) != 2 or shape[0] * shape[1] != n_features:
                raise ValueError(f"image_shape={self.image_shape!r} does not match n_features={n_features} "
                                 "(height * width must equal the number of node features)")
            return LetterCNN(n_states, shape, symmetry=self.symmetry, **kwargs)
        if kind == "graph":
            raise ValueError("module='bilstm' reads sequences; graphs need 'mlp', 'linear', 'cnn' or a module")
        return BiLSTMTagger(n_features, n_states, hidden_size=int(self.hidden_size), **kwargs)

    def _build_net(self, generator: torch.Generator | None) -> CRFNet:
        """The network for the fitted dimensions; built-in weights drawn from ``generator``."""
        n_states = len(self.classes_)

        def factory():
            return CRFNet(self._build_unary(self.kind_, self.n_features_in_, n_states), n_states,
                          self.n_edge_features_)

        net = build_quietly(factory)
        if generator is not None and isinstance(self.module, str):
            reset_parameters(net.unary, generator)
        return net

    # ------------------------------------------------------------------ losses
    def _loss(self, net: CRFNet, batch, store, residuals):
        """Mean loss per example of one batch (plus the Frobenius penalty)."""
        unary, pairwise = net.potentials(batch)
        if batch.kind == "chain":
            if self.loss == "nll":
                loss = chain_crf_nll(unary, pairwise, batch.labels, batch.lengths, reduction="mean",
                                     check_input=False)  # validated once by parse_inputs
            elif self.loss == "hinge":
                loss = chain_hinge_loss(unary, pairwise, batch.labels, batch.lengths, reduction="mean")
            else:
                loss = self._gini_chain(unary, pairwise, batch)
        elif self.loss == "nll":
            loss = self._trw_loss(unary, pairwise, batch, store, residuals)
        elif self.loss == "gini":
            loss = gini_relaxed_loss(unary, pairwise, batch.edges, batch.labels,
                                     kappa=float(self.kappa)) / batch.n_examples
        else:
            loss = graph_hinge_loss(unary, pairwise, batch.edges, batch.labels) / batch.n_examples
        if self.frobenius_decay:
            loss = loss + float(self.frobenius_decay) * _frobenius_decay(net)
        return loss

    def _gini_chain(self, unary, transitions, batch):
        mask = torch.arange(unary.shape[1], device=unary.device)[None, :] < batch.lengths[:, None]
        lens = mask.sum(dim=1).cpu().numpy()
        offsets = np.concatenate([[0], np.cumsum(lens)])
        edges = np.concatenate([np.stack([np.arange(o, o + n - 1), np.arange(o + 1, o + n)], axis=1)
                                for o, n in zip(offsets[:-1], lens)]).astype(np.int64).reshape(-1, 2)
        return gini_relaxed_loss(unary[mask], transitions, edges, batch.labels[mask],
                                 kappa=float(self.kappa)) / batch.n_examples

    def _trw_loss(self, unary, pairwise, batch, store, residuals):
        opts = self._train_inference
        out = []
        init = store[batch.message_rows] if store is not None else None
        loss = trw_nll_loss(unary, pairwise, batch.graph, batch.labels, reduction="mean", out=out,
                            init_messages=init, warn=False, check_every=0 if unary.is_cuda else 1, **opts)
        res = out[0]
        if store is not None:
            store[batch.message_rows] = res.messages.to(store.dtype)
        residuals.append(res.residual)
        return loss

    # ------------------------------------------------------------------ training
    @_threaded
    def fit(self, X, y) -> "NeuralCRF":
        """Train the network and the pairwise parameters.

        Parameters
        ----------
        X : list of examples
            Chains, graphs or images (see the class docstring).
        y : list of label arrays
            One label per node (for images: ``(height, width)`` or flat, row-major); any
            hashable label values of one type.

        Returns
        -------
        self
        """
        self._train_inference = self._check_params()
        if y is None:
            raise ValueError("y is required: NeuralCRF is supervised")
        data, self.classes_ = parse_inputs(X, y)
        self.kind_ = data.kind
        self.n_features_in_ = data.batch.n_features
        self.n_edge_features_ = data.batch.n_edge_features
        self.device_ = _resolve_device(self.device)
        seeds = check_random_state(self.random_state).randint(0, 2**31 - 1, size=2)
        rng = np.random.default_rng(int(seeds[0]))
        generator = torch.Generator().manual_seed(int(seeds[1]))
        self.net_ = net = self._build_net(generator).to(self.device_)
        train_idx, val_idx = self._split(data.n_examples, rng)
        self._check_output(net, data)
        return self._train(net, data, train_idx, val_idx, rng)

    def _split(self, n, rng):
        if self.n_iter_no_change is None:
            return np.arange(n), np.zeros(0, dtype=np.int64)
        if n < 2:
            raise ValueError("early stopping (n_iter_no_change) needs at least 2 examples to hold some out")
        order = rng.permutation(n)
        n_val = min(max(int(round(self.validation_fraction * n)), 1), n - 1)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _check_output(self, net, data):
        """Fail early, with the expected shape, when the module does not fit the data."""
        batch = next(self._batches(data, np.arange(1), with_graph=False))
        with torch.no_grad():
            unary, pairwise = net.potentials(batch)
        k = len(self.classes_)
        n = batch.x.shape[1] if data.kind == "chain" else data.batch.lengths[0]
        expected = (1, n, k) if data.kind == "chain" else (n, k)
        if tuple(unary.shape) != expected:
            what = {"chain": f"(B, T, {self.n_features_in_}) inputs to (B, T, {k})",
                    "graph": f"(N, {self.n_features_in_}) node features to (N, {k})",
                    "image": f"(B, {self.n_features_in_}, H, W) images to (B, {k}, H, W)"}[data.kind]
            raise ValueError(f"module must map {what} scores (one per class); got unary scores of shape "
                             f"{tuple(unary.shape)} where {expected} was expected")

    def _batches(self, data: NeuralData, order, *, batch_size=None, with_graph=True):
        if data.kind == "chain" and data.padded is None:
            data.padded = padded_chains(data)
        return make_batches(data, order, int(batch_size or self.batch_size), self.device_,
                            padded=data.padded, with_graph=with_graph)

    def _optimizer(self, net):
        params = net.parameters()
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)

    def _message_store(self, data):
        if data.kind == "chain" or self.loss != "nll":
            return None
        k = len(self.classes_)
        return torch.zeros(2 * data.batch.n_edges, k, device=self.device_)

    def _epoch(self, net, opt, data, order, store):
        """One pass; returns the summed loss (device tensor), examples seen and TRW residuals."""
        net.train()
        total = torch.zeros((), device=self.device_)
        residuals = []
        for batch in self._batches(data, order):
            loss = self._loss(net, batch, store, residuals)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total = total + loss.detach().to(total.dtype) * batch.n_examples
        return total, len(order), residuals

    def _train(self, net, data, train_idx, val_idx, rng) -> "NeuralCRF":
        opt = self._optimizer(net)
        store = self._message_store(data)
        history = ConvergenceHistory(extra=("val_accuracy", "inference_residual"))
        callback = None if self.callback is None else (lambda info: self.callback({**info, "model": net}))
        loop = SolverLoop("NeuralCRF", max_iter=int(self.max_epochs), tol=0.0, verbose=int(self.verbose),
                          callback=callback, history=history)
        early = _EarlyStopping(self.n_iter_no_change, net)
        last_good = copy.deepcopy(net.state_dict())
        seen = 0
        with loop:
            for epoch in loop.iterations():
                total, n, residuals = self._epoch(net, opt, data, train_idx[rng.permutation(len(train_idx))],
                                                  store)
                seen += n
                with loop.monitoring():
                    mean_loss = float(total) / max(n, 1)  # the one host synchronisation of the epoch
                    if not (np.isfinite(mean_loss) and _finite_parameters(net)):
                        net.load_state_dict(last_good)
                        self._warn_non_finite(epoch, mean_loss)
                        break
                    last_good = copy.deepcopy(net.state_dict())
                    residual = float(torch.stack(residuals).max()) if residuals else np.nan
                    val_acc = self._accuracy(data, val_idx) if len(val_idx) else np.nan
                    stop = early.update(val_acc)
                if loop.record(epoch, primal=mean_loss, dual=np.nan, gap=np.nan, oracle_calls=seen,
                               val_accuracy=val_acc, inference_residual=residual) or stop:
                    break
        early.restore()
        self._finish(loop, early, net)
        return self

    def _warn_non_finite(self, epoch, value):
        warnings.warn(f"NeuralCRF: the training loss became non-finite ({value}) or a weight did in epoch "
                      f"{epoch}; training stopped and the weights of the last finite epoch were restored "
                      f"({epoch - 1} epochs). Lower lr or check the inputs.", RuntimeWarning, stacklevel=3)

    def _finish(self, loop, early, net):
        history = loop.history.to_dict()
        residual = history["inference_residual"]
        if residual.size and np.isfinite(residual[-1]) and residual[-1] > self._train_inference["tol"]:
            warnings.warn(f"NeuralCRF: TRW inference of the training loss did not reach tol="
                          f"{self._train_inference['tol']:g} in the last epoch (largest message change "
                          f"{residual[-1]:.3e}); its gradients are approximate: raise inference_options"
                          "['max_iter'] or 'damping'", ConvergenceWarning, stacklevel=3)
        if early.active and not early.triggered and not (loop.interrupted or loop.stopped) \
                and loop.n_iter >= int(self.max_epochs):
            warnings.warn(f"NeuralCRF stopped at max_epochs={self.max_epochs} before early stopping triggered; "
                          "increase max_epochs", ConvergenceWarning, stacklevel=3)
        net.eval()
        self.n_iter_ = loop.n_iter
        self.history_ = history
        self.interrupted_ = loop.interrupted
        self._set_transitions()

    def _set_transitions(self):
        t = getattr(self.net_, "transitions", None)
        self.transitions_ = None if t is None else t.detach().cpu().double().numpy().copy()

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise NotFittedError("This NeuralCRF instance is not fitted yet; call fit(X, y) first")

    def _potentials(self, data, *, with_graph=False):
        """Yield ``(batch, unary, pairwise)`` in eval mode without gradients."""
        net = self.net_
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                for batch in self._batches(data, np.arange(data.n_examples), batch_size=256,
                                           with_graph=with_graph):
                    unary, pairwise = net.potentials(batch)
                    yield batch, unary, pairwise
        finally:
            net.train(was_training)

    def _decode(self, data) -> list[np.ndarray]:
        from ..inference import decode_batch

        out = []
        for batch, unary, pairwise in self._potentials(data):
            if batch.kind == "chain":
                tags, _ = chain_viterbi(unary, pairwise, batch.lengths)
                lengths = batch.lengths.cpu().numpy()
                out.extend(tags[i, :lengths[i]].cpu().numpy() for i in range(len(lengths)))
                continue
            labels = decode_batch(unary.double().cpu().numpy(), pairwise.double().cpu().numpy(), batch.edges,
                                  batch.node_offsets, batch.edge_offsets)
            out.extend(np.split(labels, batch.node_offsets[1:-1]))
        return out

    def _accuracy(self, data, idx) -> float:
        sub = NeuralData(data.kind, data.batch.subset(idx),
                         None if data.image_shapes is None else data.image_shapes[idx])
        pred = np.concatenate(self._decode(sub))
        return float(np.mean(pred == sub.batch.labels))

    def _parse(self, X, y=None):
        self._check_fitted()
        data, _ = parse_inputs(X, y, classes=self.classes_ if y is not None else None,
                               n_features=self.n_features_in_, n_edge_features=self.n_edge_features_,
                               kind=self.kind_)
        return data

    @_threaded
    def predict(self, X) -> list[np.ndarray]:
        """MAP labels of each example (Viterbi on chains, ``decode_batch`` on graphs).

        Returns
        -------
        y_pred : list of ndarray
            Label values (from ``classes_``) per example; images give ``(height, width)`` arrays.
        """
        data = self._parse(X)
        return self._reshape(data, [self.classes_[p] for p in self._decode(data)])

    def _reshape(self, data, values):
        if data.kind != "image":
            return values
        return [v.reshape(*shape, *v.shape[1:]) for v, shape in zip(values, data.image_shapes)]

    @_threaded
    def predict_marginals(self, X) -> list[np.ndarray]:
        """Node marginals ``P(y_v = classes_[k])`` per example: exact on chains and forests, TRW otherwise.

        Raises
        ------
        FloatingPointError
            If the marginals are not finite (non-finite potentials).
        """
        data = self._parse(X)
        out = []
        for batch, unary, pairwise in self._potentials(data, with_graph=True):
            if batch.kind == "chain":
                node, _ = chain_marginals(unary.double(), pairwise.double(), batch.lengths)
                lengths = batch.lengths.cpu().numpy()
                out.extend(node[i, :lengths[i]].cpu().numpy() for i in range(len(lengths)))
                continue
            res = trw_infer(unary.double(), pairwise.double(), batch.graph, tol=1e-8, max_iter=1000)
            out.extend(np.split(res.node_marginals.cpu().numpy(), batch.node_offsets[1:-1]))
        if not all(np.all(np.isfinite(m)) for m in out):
            raise FloatingPointError("NeuralCRF produced non-finite marginals: the network's potentials are "
                                     "not finite for these inputs")
        return self._reshape(data, out)

    @_threaded
    def score(self, X, y) -> float:
        """Node accuracy: the fraction of correctly labelled nodes over all examples."""
        data = self._parse(X, y)
        pred = np.concatenate(self._decode(data))
        return float(np.mean(pred == data.batch.labels))

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save the fitted model to one crflearn archive (atomic write; no pickle).

        Holds the constructor parameters, the fitted metadata and the network's tensors. A
        custom ``module`` and the callback are not saved: pass an identically built module to
        :meth:`load`.
        """
        self._check_fitted()
        save_neural(self, path)

    @classmethod
    def load(cls, path, module: torch.nn.Module | None = None, device="auto") -> "NeuralCRF":
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        module : torch.nn.Module, optional
            Required when the model was trained with a custom module: one of the same
            architecture (its weights are overwritten).
        device : "auto", str or torch.device

        Raises
        ------
        ValueError
            If the file is not a NeuralCRF archive (e.g. a ``CRF`` model) or is damaged.
        """
        return load_neural(cls, path, module, _resolve_device(device))


class _EarlyStopping:
    """Best-validation-accuracy tracking with patience; keeps the best weights."""

    def __init__(self, patience, net):
        self.active = patience is not None
        self.patience = patience
        self.net = net
        self.best, self.best_state, self.since, self.triggered = -np.inf, None, 0, False

    def update(self, val_acc) -> bool:
        if not self.active:
            return False
        if val_acc > self.best:
            self.best, self.since = val_acc, 0
            self.best_state = copy.deepcopy(self.net.state_dict())
        else:
            self.since += 1
            self.triggered = self.since >= self.patience
        return self.triggered

    def restore(self):
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)


def _finite_parameters(net) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in net.parameters()]).all())
