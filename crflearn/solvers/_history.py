"""The convergence record shared by every solver.

Every solver records the same columns so that one plotting function serves
them all: ``iteration``, ``time`` (seconds, monitoring excluded), ``primal``,
``dual``, ``gap`` (= primal - dual, never negative), ``residual`` (constraint
violation; 0 where it does not apply) and ``oracle_calls``. Solvers may add
extra columns (e.g. ``exact_primal``) of the same length, NaN where not measured.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["ConvergenceHistory", "COLUMNS", "Stopwatch", "relative_gap"]

COLUMNS = ("iteration", "time", "primal", "dual", "gap", "residual", "oracle_calls")

#: floor of the denominator of :func:`relative_gap`
GAP_FLOOR = 1e-12


def relative_gap(gap: float, primal: float) -> float:
    """``gap / max(|primal|, 1e-12)``: the stopping quantity of every solver (the only place it is written)."""
    return float(gap) / max(abs(float(primal)), GAP_FLOOR)


class ConvergenceHistory:
    """Collects one row per iteration and converts to a dict of equal-length arrays.

    Parameters
    ----------
    extra : sequence of str
        Names of additional float columns.
    start : dict, optional
        A previous record (from :meth:`to_dict`) to continue (warm starts):
        iterations, time and oracle calls continue from its last row.
    """

    def __init__(self, extra=(), start: dict | None = None):
        self._columns = list(COLUMNS) + [c for c in extra if c not in COLUMNS]
        self._rows: dict[str, list] = {c: [] for c in self._columns}
        if start:
            for c in start:
                if c not in self._rows:
                    self._columns.append(c)
                    self._rows[c] = []
            n = len(start["iteration"])
            for c in self._columns:
                vals = start.get(c)
                self._rows[c].extend(list(vals) if vals is not None else [np.nan] * n)

    @property
    def last_iteration(self) -> int:
        return int(self._rows["iteration"][-1]) if self._rows["iteration"] else 0

    def last_value(self, column: str, default: float = 0.0) -> float:
        """The last recorded value of ``column`` (``default`` when empty, absent or NaN)."""
        values = self._rows.get(column)
        if not values or not np.isfinite(values[-1]):
            return float(default)
        return float(values[-1])

    @property
    def last_time(self) -> float:
        return float(self._rows["time"][-1]) if self._rows["time"] else 0.0

    @property
    def last_oracle_calls(self) -> int:
        return int(self._rows["oracle_calls"][-1]) if self._rows["oracle_calls"] else 0

    def __len__(self) -> int:
        return len(self._rows["iteration"])

    def append(self, *, iteration: int, time: float, primal: float, dual: float,
               residual: float = 0.0, oracle_calls: int = 0, gap: float | None = None, **extra) -> dict:
        """Record one row; ``gap`` defaults to ``max(primal - dual, 0)``. Returns the row."""
        if gap is None:
            gap = primal - dual
        gap = max(float(gap), 0.0)  # round-off can make it -1e-16
        row = dict(iteration=int(iteration), time=float(time), primal=float(primal), dual=float(dual),
                   gap=gap, residual=float(residual), oracle_calls=int(oracle_calls))
        for key, value in extra.items():
            if key not in self._rows:
                self._columns.append(key)
                self._rows[key] = [np.nan] * len(self)
            row[key] = float(value)
        for c in self._columns:
            self._rows[c].append(row.get(c, np.nan))
        return row

    def to_dict(self) -> dict[str, np.ndarray]:
        """A dict of equal-length 1-D arrays (int for iteration and oracle_calls)."""
        out = {}
        for c in self._columns:
            dtype = np.int64 if c in ("iteration", "oracle_calls") else np.float64
            out[c] = np.asarray(self._rows[c], dtype=dtype)
        return out


class Stopwatch:
    """Accumulates solver time while excluding monitoring (:meth:`pause` / :meth:`resume`;
    :meth:`SolverLoop.monitoring` drives it)."""

    def __init__(self, offset: float = 0.0):
        self._total = float(offset)
        self._start = time.perf_counter()
        self._running = True

    def elapsed(self) -> float:
        if self._running:
            return self._total + time.perf_counter() - self._start
        return self._total

    def pause(self) -> None:
        if self._running:
            self._total += time.perf_counter() - self._start
            self._running = False

    def resume(self) -> None:
        if not self._running:
            self._start = time.perf_counter()
            self._running = True
