"""The IDAL sweep of one thread of the shared-``w`` threads backend, with its merges into the shared ``w``
compiled in (:mod:`crflearn.solvers.idal_parallel`, ``backend="threads"``).

A thread sweeps its partition's clique order against its own copy ``weights`` of ``w``; every ``chunk``
cliques it adds its change since the last merge (``weights - snap``) to the shared ``w`` and continues from
the sum (:func:`merge_into_shared`), all without returning to Python. The merge holds a spin lock (an int64
word taken by an atomic compare-and-swap, released by an atomic store): no two merges interleave, so no
update is lost, and a merge reads and writes each entry of ``w`` once. A thread that finds the lock taken
does not wait: it sweeps its next chunk and merges both later (on a loaded machine the holder may have lost
its core in the middle of its merge; waiting would burn the rest of a time slice); only the last merge of a
sweep waits.

:class:`SharedSync` bundles the shared ``w``, the snapshot of the thread's copy at its last merge and the
flags: ``flags[LOCK]`` the lock (0 free, 1 held), ``flags[STOP]`` set to non-zero to make every running
sweep return after its current chunk (an interrupted fit; the caller rebuilds ``zeta`` and ``w``). The two
words lie on different cache lines.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .idal import IdalWeights, idal_sweep

__all__ = ["SharedSync", "make_flags", "LOCK", "STOP", "merge_into_shared", "shared_sweep"]

#: index of the lock word in ``SharedSync.flags`` (a cache line of its own)
LOCK = 8
#: index of the stop word (the next cache line)
STOP = 16


class SharedSync(NamedTuple):
    """The shared ``w`` and the thread's snapshot of its copy at its last merge (:class:`IdalWeights`, the
    kernel layout), and the flags of :func:`make_flags`."""

    shared: IdalWeights
    snap: IdalWeights
    flags: np.ndarray


def make_flags() -> np.ndarray:
    """The lock and stop words (int64, all 0: free, running), shared by the threads of one fit."""
    return np.zeros(STOP + 8, dtype=np.int64)


def _word_pointer(context, builder, sig, args):
    aty = sig.args[0]
    ary = context.make_array(aty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aty, ary, [args[1]], wraparound=False)


@intrinsic
def _compare_and_swap(typingctx, flags, index, expected, new):
    """Atomically: ``old = flags[index]; if old == expected: flags[index] = new``; returns ``old``
    (sequentially consistent)."""
    if not (isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ptr = _word_pointer(context, builder, sig, args)
        i64 = ir.IntType(64)
        old = builder.cmpxchg(ptr, context.cast(builder, args[2], sig.args[2], types.int64),
                              context.cast(builder, args[3], sig.args[3], types.int64), "seq_cst", "seq_cst")
        return builder.extract_value(old, 0) if old.type != i64 else old

    return types.int64(flags, index, expected, new), codegen


@intrinsic
def _atomic_store(typingctx, flags, index, value):
    """Atomically ``flags[index] = value`` (release: the writes before it are visible first)."""
    if not (isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ptr = _word_pointer(context, builder, sig, args)
        builder.store_atomic(context.cast(builder, args[2], sig.args[2], types.int64), ptr, "release", 8)
        return context.get_dummy_value()

    return types.none(flags, index, value), codegen


@intrinsic
def _atomic_load(typingctx, flags, index):
    """``flags[index]``, read atomically (acquire: never hoisted out of a loop)."""
    if not (isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ptr = _word_pointer(context, builder, sig, args)
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(flags, index), codegen


@njit(cache=True, nogil=True)
def _merge_block(mine, snap, shared):
    """``shared += mine - snap``, then ``mine = snap = shared`` (one pass; 2-D C-contiguous arrays)."""
    for i in range(mine.shape[0]):
        for j in range(mine.shape[1]):
            s = shared[i, j] + (mine[i, j] - snap[i, j])
            shared[i, j] = s
            mine[i, j] = s
            snap[i, j] = s


@njit(cache=True, nogil=True)
def merge_into_shared(weights, sync, wait):
    """Add the change of the thread's copy ``weights`` since its last merge to the shared ``w`` and continue
    from the shared ``w``, under the spin lock ``sync.flags[LOCK]``. When the lock is held by another thread:
    spin until it is free if ``wait``, else merge nothing and return False (the change stays in ``weights``
    for the next merge: a thread never waits for another that lost its core in the middle of a merge)."""
    while _compare_and_swap(sync.flags, LOCK, 0, 1) != 0:
        if not wait:
            return False
    _merge_block(weights.wuT, sync.snap.wuT, sync.shared.wuT)
    _merge_block(weights.wp, sync.snap.wp, sync.shared.wp)
    _atomic_store(sync.flags, LOCK, 0)
    return True


@njit(cache=True, nogil=True)
def shared_sweep(order, chunk, graph, feats, weights, state, ent, rho, inv_lam_n, tau_e, scr, sync):
    """:func:`~crflearn._kernels.idal.idal_sweep` of ``order`` against the thread's copy ``weights``,
    merging into the shared ``w`` (:func:`merge_into_shared`) after every ``chunk`` cliques when the lock is
    free, and at the end in any case.

    Returns the number of cliques swept: ``len(order)``, or fewer when ``sync.flags[STOP]`` was set (the
    sweep stops after a chunk and a merge)."""
    n = order.shape[0]
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        idal_sweep(order[start:stop], graph, feats, weights, state, ent, rho, inv_lam_n, tau_e, scr)
        halt = _atomic_load(sync.flags, STOP) != 0
        merge_into_shared(weights, sync, stop == n or halt)
        if halt:
            return stop
    return n
