"""Euclidean projection onto the probability simplex (sparsemax), Numba kernels.

The projection of ``v`` is ``max(v - tau, 0)`` where the threshold ``tau`` makes the
result sum to one. Only entries above ``max(v) - 1`` can be in the support,
so the kernel filters those candidates and then runs Michelot's fixed point on them:
``tau = (sum(candidates) - 1) / |candidates|``, drop candidates ``<= tau``, repeat until
nothing is dropped (exact, finite termination; each pass is a branch-free compaction).
In practice this costs a few passes over ``v``. :func:`michelot_threshold` is the one
implementation of the fixed point; it also compacts the candidates' indices, which the
IDAL edge update uses to touch the support only.

References
----------
Michelot, C. (1986). A finite algorithm for finding the projection of a point onto
the canonical simplex of R^n. Journal of Optimization Theory and Applications, 50(1).

Martins, A. and Astudillo, R. (2016). From softmax to sparsemax. ICML.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["project_simplex", "simplex_threshold", "michelot_threshold", "candidates_above"]


@njit(cache=True, nogil=True)
def simplex_threshold(v, scale, buf, idx):
    """Threshold ``tau`` with ``sum(max(v * scale - tau, 0)) == 1``.

    Parameters
    ----------
    v : 1-D float64 array
    scale : float
        Positive factor applied to ``v`` on the fly (avoids a copy).
    buf : 1-D float64 array, at least as long as ``v``
        Scratch space (holds the support values on return).
    idx : 1-D int64 array, at least as long as ``v``
        Scratch space (holds the support indices on return).
    """
    m = v.shape[0]
    vmax = -np.inf
    for i in range(m):
        x = v[i]
        if x > vmax:
            vmax = x
    # candidates: only entries above max - 1 can be in the support
    n = candidates_above(v, scale, vmax * scale - 1.0, buf, idx)
    return michelot_threshold(buf, idx, n)[0]


@njit(cache=True, nogil=True)
def candidates_above(v, scale, low, buf, idx):
    """Branch-free compaction of the entries of ``v * scale`` above ``low`` into ``buf``, ``idx``
    (original order); returns their number."""
    n = 0
    for i in range(v.shape[0]):
        x = v[i] * scale
        buf[n] = x
        idx[n] = i
        n += x > low
    return n


@njit(cache=True, nogil=True)
def michelot_threshold(buf, idx, n):
    """Michelot's fixed point on the candidates ``buf[:n]`` with indices ``idx[:n]`` (overwritten).

    The candidates must contain every entry of the support (e.g. all entries above
    ``max - 1``) and be in their original order; the threshold then does not depend on
    which superset was passed. Compacts the support into ``buf[:ns]``, ``idx[:ns]`` and
    returns ``(tau, ns)``.
    """
    total = 0.0
    for j in range(n):
        total += buf[j]
    tau = (total - 1.0) / n
    while True:
        kept = 0
        new_total = 0.0
        for j in range(n):
            x = buf[j]
            buf[kept] = x
            idx[kept] = idx[j]
            keep = x > tau
            kept += keep
            new_total += x if keep else 0.0
        if kept == n:
            break
        n = kept
        tau = (new_total - 1.0) / n
    return tau, n


@njit(cache=True, nogil=True)
def project_simplex(v, scale, out, buf, idx):
    """Write ``Proj_simplex(v * scale)`` into ``out`` (same length as ``v``); return the threshold.

    ``buf`` (float64) and ``idx`` (int64) are scratch arrays at least as long as ``v``.
    """
    tau = simplex_threshold(v, scale, buf, idx)
    for i in range(v.shape[0]):
        x = v[i] * scale - tau
        out[i] = x if x > 0.0 else 0.0
    return tau
