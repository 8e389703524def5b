"""Exceptions and warnings of crflearn (the lowest layer: imports nothing from the package).

Code that needs to tell one failure from another catches these types; nothing in
crflearn recognises an error by the text of its message.
"""

from __future__ import annotations

__all__ = ["LoopyGraphError"]


class LoopyGraphError(ValueError):
    """An operation that needs forests (chains, trees) was given a graph with a cycle.

    Raised by exact inference (``method="exact"``) and by the solvers that need exact
    inference (``solver="lbfgs"``) on loopy graphs. It is a :class:`ValueError`, so code
    written against earlier versions keeps working.
    """
