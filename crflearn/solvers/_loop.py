"""The one iterate / stop / record / interrupt loop shared by every solver (and ``NeuralCRF``).

A solver allocates its state, then::

    loop = SolverLoop("bcfw", max_iter=max_iter, tol=tol, verbose=verbose, callback=callback,
                      history=ConvergenceHistory(start=previous_history))
    with loop:                                  # KeyboardInterrupt -> loop.interrupted, warning
        for it in loop.iterations():            # it0 + 1 .. it0 + max_iter
            ...one epoch / outer step...
            with loop.monitoring():             # time spent here is kept out of ``time``
                primal, dual = ...
            if loop.record(it, primal=primal, dual=dual, w=w, oracle_calls=calls):
                break                           # converged, or the callback asked to stop
    if loop.unrecorded:                         # an interrupt cut an iteration short:
        ...restore the state of the last recorded row...
    history = loop.finish()                     # ConvergenceWarning when max_iter ran out

The loop owns: the BLAS thread pool (limited to one thread inside ``with loop``), the stopwatch
(``time`` excludes monitoring, ``monitor_time`` is its own column, ``wall_time`` counts everything
since the loop started), the stopping rule (relative certified gap ``<= tol`` up to round-off,
optionally the residual too), ``verbose`` progress lines, the ``callback`` protocol, the
interrupt semantics (``n_iter`` = the last recorded row; the solver returns that row's iterate)
and the not-converged warning.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ._history import ConvergenceHistory, Stopwatch, relative_gap

__all__ = ["SolverLoop", "not_converged_message", "interrupted_message"]

#: relative slack of the convergence test, so that a gap equal to ``tol`` up to round-off counts as met
ROUNDOFF = 1e-9


def not_converged_message(name: str, max_iter: int, rel_gap: float, tol: float,
                          residual: float | None = None) -> str:
    """The ``ConvergenceWarning`` text: which criterion (relative gap, residual) failed at ``max_iter``."""
    if residual is not None and rel_gap <= tol:
        what = f"constraint residual {residual:.3e} > tol={tol:g} (relative gap {rel_gap:.3e} is below tol)"
    elif residual is not None and residual > tol:
        what = f"relative gap {rel_gap:.3e} and constraint residual {residual:.3e} > tol={tol:g}"
    else:
        what = f"relative gap {rel_gap:.3e} > tol={tol:g}"
    return f"{name} stopped at max_iter={max_iter} with {what}; increase max_iter or tol"


def interrupted_message(name: str, n_iter: int) -> str:
    """The ``RuntimeWarning`` text after a ``KeyboardInterrupt``."""
    return (f"{name} interrupted by the user (KeyboardInterrupt) after {n_iter} recorded iterations; "
            "the last recorded iterate is kept and usable")


class SolverLoop:
    """Drives one solver run: iteration numbers, monitoring time, stopping, callbacks.

    Parameters
    ----------
    name : str
        Solver name for progress lines and warnings.
    max_iter : int
        Iterations to run in this call (warm starts continue the numbering).
    tol : float
        Relative-gap tolerance (see :func:`~crflearn.solvers._history.relative_gap`).
    verbose : int
        Print one progress line every ``verbose``-th recorded row when > 0 (1: every row).
    callback : callable or None
        ``callback(info)`` with the history row and ``"w"`` (a copy); returning True stops.
    history : ConvergenceHistory
        The record to append to (pass ``start=`` a previous record to continue it).
    residual_tol : bool, default=False
        Also require ``residual <= tol`` to declare convergence.
    """

    def __init__(self, name: str, *, max_iter: int, tol: float, verbose: int = 0,
                 callback: Callable | None = None, history: ConvergenceHistory,
                 residual_tol: bool = False):
        self.name = name
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.verbose = int(verbose)
        self.callback = callback
        self.history = history
        self.residual_tol = bool(residual_tol)
        self.first_iteration = history.last_iteration + 1
        self.watch = Stopwatch(offset=history.last_time)
        self._monitor_offset = history.last_value("monitor_time", 0.0)
        self._wall_offset = history.last_value("wall_time", 0.0)
        self._monitor_total = 0.0
        self._t_start = time.perf_counter()
        self.converged = False
        self.interrupted = False
        self.stopped = False
        self.last_row: dict | None = None
        self.last_w: np.ndarray | None = None
        self.iteration = history.last_iteration

    # -- context: interrupts ---------------------------------------------------------------
    def __enter__(self) -> "SolverLoop":
        # crflearn makes many tiny BLAS calls: a multi-threaded BLAS pool only adds contention
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        self.watch = Stopwatch(offset=self.history.last_time)
        self._t_start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._blas_limit.restore_original_limits()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.interrupted = True
            self.watch.resume()
            warnings.warn(interrupted_message(self.name, self.n_iter), RuntimeWarning, stacklevel=2)
            return True  # swallow the interrupt: the caller returns a usable result
        return False

    # -- iteration ---------------------------------------------------------------------
    def iterations(self) -> Iterator[int]:
        """Iteration numbers of this call (continuing a warm-started record)."""
        for it in range(self.first_iteration, self.first_iteration + self.max_iter):
            self.iteration = it
            yield it

    @property
    def is_last(self) -> bool:
        """Whether the current iteration is the last one this call may run."""
        return self.iteration >= self.first_iteration + self.max_iter - 1

    @contextmanager
    def monitoring(self):
        """Exclude the enclosed work (gaps, certificates, callbacks) from ``time``."""
        self.watch.pause()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._monitor_total += time.perf_counter() - t0
            self.watch.resume()

    # -- recording ---------------------------------------------------------------------
    def record(self, iteration: int, *, primal: float, dual: float, w: np.ndarray | None = None,
               residual: float = 0.0, oracle_calls: int = 0, gap: float | None = None, **extra) -> bool:
        """Append one history row, report progress, test ``tol``, call the callback.

        Returns
        -------
        bool
            True when the solver should stop (converged, or the callback returned True).
        """
        with self.monitoring():
            row = self.history.append(iteration=iteration, time=self.watch.elapsed(), primal=primal, dual=dual,
                                      residual=residual, oracle_calls=oracle_calls, gap=gap,
                                      monitor_time=self._monitor_offset + self._monitor_total,
                                      wall_time=self._wall_offset + time.perf_counter() - self._t_start,
                                      **extra)
            self.last_row, self.last_w = row, w
            if self.verbose and (len(self.history) % self.verbose == 0 or self.verbose == 1):
                self._report(row)
            rel = relative_gap(row["gap"], row["primal"])
            bound = self.tol * (1.0 + ROUNDOFF)
            if rel <= bound and (not self.residual_tol or row["residual"] <= bound):
                self.converged = True
            if self.callback is not None:
                info = dict(row)
                info["w"] = None if w is None else np.array(w, copy=True)
                if self.callback(info):
                    self.stopped = True
        return self.converged or self.stopped

    def _report(self, row: dict) -> None:
        print(f"[{self.name}] iter {row['iteration']:4d}  t={row['time']:8.3f}s  primal={row['primal']:.6e}  "
              f"dual={row['dual']:.6e}  rel.gap={relative_gap(row['gap'], row['primal']):.3e}  "
              f"residual={row['residual']:.3e}", flush=True)

    # -- end ---------------------------------------------------------------------------
    @property
    def n_iter(self) -> int:
        """Iterations run in total: the last recorded row (warm starts included)."""
        return self.history.last_iteration

    def recorded_w(self, default: np.ndarray) -> np.ndarray:
        """The weights of the last row recorded in this call (``default`` when none was): what a
        solver returns, also after an interrupt. ``record`` keeps a reference, so solvers pass
        arrays they do not modify afterwards."""
        return default if self.last_w is None else self.last_w

    @property
    def unrecorded(self) -> bool:
        """Whether an interrupt cut an iteration short before its row was recorded.

        The solver then restores the state of the last recorded row, so that the result,
        ``n_iter`` and the history agree.
        """
        return self.interrupted and self.iteration > self.n_iter

    @property
    def last_relative_gap(self) -> float:
        if self.last_row is None:
            return float("inf")
        return relative_gap(self.last_row["gap"], self.last_row["primal"])

    def finish(self) -> dict[str, np.ndarray]:
        """Warn (``ConvergenceWarning``) when ``max_iter`` ran out; return the history as arrays."""
        if not (self.converged or self.stopped or self.interrupted):
            res = self.last_row["residual"] if self.residual_tol and self.last_row is not None else None
            warnings.warn(not_converged_message(self.name, self.max_iter, self.last_relative_gap, self.tol, res),
                          ConvergenceWarning, stacklevel=2)
        return self.history.to_dict()
