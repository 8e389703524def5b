"""Thread limits for the torch work: torch's intra-op threads and the BLAS / OpenMP pools.

Why one thread by default: the networks and batches of these problems are small (tensors of
thousands of elements), so intra-op parallelism has little to gain, while a process that
runs as many threads as there are cores slows down badly when the cores are shared (issue
13 measured ``NeuralCRF`` 13x slower with 2 torch threads than with 1 on a busy 2-core
machine; ``benchmarks/bench_threads.py`` measures wall against CPU time).
"""

from __future__ import annotations

import numbers
import os
import threading
from contextlib import contextmanager

import torch
from threadpoolctl import ThreadpoolController

__all__ = ["limit_threads", "resolve_threads"]

_LOCK = threading.Lock()
_STATE = {"depth": 0, "torch": 1, "pools": None, "controller": None}


def resolve_threads(n_threads) -> int:
    """The thread count of ``n_threads``: None -> 1, -1 -> every usable CPU, a positive int as is."""
    if n_threads is None:
        return 1
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral) or \
            (n_threads < 1 and n_threads != -1):
        raise ValueError(f"n_threads must be None, -1 or a positive integer, got {n_threads!r}")
    if n_threads == -1:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(n_threads)


@contextmanager
def limit_threads(n_threads=None):
    """Run the block with ``n_threads`` torch intra-op threads and BLAS / OpenMP pools of that size.

    The settings are process-wide; they are restored when the outermost block exits (the
    blocks of concurrent Python threads are counted, so the last one out restores).

    Parameters
    ----------
    n_threads : int or None
        None: 1; -1: every usable CPU; otherwise a positive count.

    Yields
    ------
    int
        The thread count in force.

    Examples
    --------
    >>> import torch
    >>> from crflearn.neural import limit_threads
    >>> before = torch.get_num_threads()
    >>> with limit_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    n = resolve_threads(n_threads)
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["torch"] = torch.get_num_threads()
            if _STATE["controller"] is None:  # scanning the loaded libraries takes milliseconds: once
                _STATE["controller"] = ThreadpoolController()
            _STATE["pools"] = _STATE["controller"].limit(limits=n)
        _STATE["depth"] += 1
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                _STATE["pools"].restore_original_limits()
                _STATE["pools"] = None
                torch.set_num_threads(_STATE["torch"])
