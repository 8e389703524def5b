"""PyTorch front end: structured losses, a neural CRF estimator and symmetric layers.

Any :class:`torch.nn.Module` can emit unary potentials (scores, larger is more
likely); the structured losses here put a CRF on top and back-propagate the
structured gradient (marginals minus ground truth) into the network:

* chains, batched and masked for sequences of different lengths:
  :func:`chain_log_partition`, :func:`chain_marginals`, :func:`chain_viterbi`,
  :func:`chain_score`, :func:`chain_crf_nll` / :class:`ChainCRFLoss`,
  :func:`chain_hinge_loss`;
* any graph, on the potentials' device: tree-reweighted message passing in torch,
  :func:`trw_infer`, the differentiable bound :func:`trw_log_partition` and the loss
  :func:`trw_nll_loss` (batched over a flat edge list, :func:`make_loopy_graph`);
* any graph, on CPU (Numba): the Gini-relaxed surrogate of IDAL, :class:`GiniRelaxedLoss`
  (:func:`gini_relaxed_loss`), and the structured hinge loss
  :func:`graph_hinge_loss` with loss-augmented MAP from :mod:`crflearn.inference`;
* :class:`NeuralCRF`, a scikit-learn style estimator training a network and a
  transition matrix end to end (torch and BLAS threads limited by ``n_threads``,
  :func:`limit_threads`);
* :mod:`crflearn.neural.symmetry`: parameter-saving symmetric layers.

torch is an optional dependency: ``pip install crflearn[neural]``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "crflearn.neural needs PyTorch, which is not installed; install it with "
        "`pip install crflearn[neural]` (or see https://pytorch.org for GPU builds)"
    ) from exc

from ._chain import (
    ChainCRFLoss,
    chain_crf_nll,
    chain_hinge_loss,
    chain_log_partition,
    chain_marginals,
    chain_score,
    chain_viterbi,
)
from ._loopy import (
    LoopyGraph,
    TRWResult,
    labelling_score,
    make_loopy_graph,
    trw_infer,
    trw_log_partition,
    trw_nll_loss,
)
from ._graph import GiniRelaxedLoss, gini_relaxed_loss, graph_hinge_loss, graph_score
from ._threads import limit_threads
from .estimator import NeuralCRF
from .networks import BiLSTMTagger, GridCNN, LetterCNN, NodeMLP

__all__ = [
    "ChainCRFLoss",
    "chain_crf_nll",
    "chain_hinge_loss",
    "chain_log_partition",
    "chain_marginals",
    "chain_score",
    "chain_viterbi",
    "LoopyGraph",
    "TRWResult",
    "make_loopy_graph",
    "trw_infer",
    "trw_log_partition",
    "trw_nll_loss",
    "labelling_score",
    "GiniRelaxedLoss",
    "gini_relaxed_loss",
    "graph_hinge_loss",
    "graph_score",
    "NeuralCRF",
    "limit_threads",
    "NodeMLP",
    "LetterCNN",
    "BiLSTMTagger",
    "GridCNN",
]
