"""Inference for pairwise CRFs: marginals, log-partition, MAP and loss-augmented decoding.

Exact on forests (sum-product / max-product along a BFS schedule), approximate
on loopy graphs (tree-reweighted or loopy BP for marginals, TRW-S or damped
max-product for MAP), brute force for tiny graphs. Every function has a batched
twin that sweeps all examples of a flat batch (:class:`crflearn.graphs.GraphBatch`
layout) in one compiled call; :func:`make_schedule` precomputes the graph work
for solvers that call inference repeatedly on the same graphs.

:func:`top_k_decode` (:mod:`crflearn.inference.kbest`) gives the ``k`` best labellings of a
chain (exact list Viterbi); :mod:`crflearn.inference.constraints` builds allowed-transition
masks (:func:`bio_transitions` for the BIO scheme) applied as ``-inf`` pairwise scores.

``gini_infer`` (relaxed inference over the local polytope with a Gini entropy)
lives in :mod:`crflearn.inference.gini` and is loaded on first access.
"""

from __future__ import annotations

import importlib

from . import api
from .api import (
    BatchInferenceResult,
    BatchMAPResult,
    InferenceResult,
    MAPResult,
    decode,
    decode_batch,
    infer,
    infer_batch,
    labeling_score,
    loss_augmented_decode,
    loss_augmented_decode_batch,
    map_inference,
    map_inference_batch,
)
from .constraints import bio_transitions, mask_pairwise, transition_mask
from .kbest import TopKResult, top_k_decode, top_k_decode_batch
from .schedule import InferenceSchedule, edge_appearance_probabilities, make_schedule

__all__ = [*api.__all__, "InferenceSchedule", "make_schedule", "edge_appearance_probabilities", "gini_infer",
           "TopKResult", "top_k_decode", "top_k_decode_batch", "bio_transitions", "transition_mask",
           "mask_pairwise"]

def __getattr__(name):
    # the Gini-relaxed inference (crflearn.inference.gini: gini_infer and whatever else its
    # __all__ lists) is imported on first access
    if name != "gini" and not name.startswith("_"):
        gini = importlib.import_module(".gini", __name__)
        if name in gini.__all__:
            return getattr(gini, name)
    raise AttributeError(f"module 'crflearn.inference' has no attribute {name!r}")
