"""crflearn: conditional random field learning.

The core solver is IDAL, an SDCA-powered inexact dual augmented Lagrangian
method over the local polytope with a Gini entropy surrogate; it trains chains,
trees and loopy graphs without exact inference and reports a duality gap every
epoch. Structured-SVM baselines, scikit-learn estimators, networkx input and an
optional PyTorch front end (``crflearn.neural``) are included.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["CRF", "NodeTransformer", "CRFPipeline", "__version__"]


def __getattr__(name):  # lazy: keep `import crflearn` light (no torch, no matplotlib)
    if name == "CRF":
        from .estimators import CRF
        return CRF
    if name == "NodeTransformer":
        from .preprocessing import NodeTransformer
        return NodeTransformer
    if name == "CRFPipeline":
        from .pipeline import CRFPipeline
        return CRFPipeline
    raise AttributeError(f"module 'crflearn' has no attribute {name!r}")
