"""The solver registry: the one place that knows which solvers exist and what each takes.

The estimator, :mod:`crflearn.compare`, the CLI and the docs read :data:`SOLVERS`; none of them
names a solver's options or objective themselves. Adding a solver means writing its module
and adding one :class:`SolverSpec` here (see ``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["SolverSpec", "SOLVERS", "SOLVER_NAMES", "get_solver_spec", "get_solver"]


@dataclass(frozen=True)
class SolverSpec:
    """What the rest of crflearn needs to know about one solver.

    Attributes
    ----------
    name : str
        Registry key (``CRF(solver=name)``).
    module, function : str
        Where the solver function lives (imported lazily).
    objective : str
        Which objective it minimises: ``"crf"`` (negative log-likelihood, exact inference),
        ``"relaxed_crf"`` (IDAL's surrogate over the local polytope), ``"ssvm"``
        (margin-rescaled structured SVM, Hamming loss). Objectives of different kinds are
        not comparable.
    description : str
        One line for docs, ``--help`` and comparison tables.
    params : tuple of str
        The :class:`~crflearn.CRF` constructor parameters (beyond the common ones: alpha,
        max_iter, tol, verbose, random_state, warm_start, callback) this solver takes, passed
        as keyword arguments of the same name.
    forests_only : bool
        Raises :class:`~crflearn.exceptions.LoopyGraphError` on graphs with cycles.
    warm_start_keys : tuple of str
        Keys a ``SolverResult.state`` must hold to warm start this solver.
    warm_start_same_alpha : bool
        Whether a warm start needs the same ``alpha`` as the run that produced the state.
    sample_weight : bool
        The function takes ``sample_weight`` (per-example weights ``s_i`` of the objective
        ``alpha/2 ||w||^2 + 1/n sum_i s_i loss_i(w)``).
    partial_labels : bool
        The function trains on ``batch.labels`` holding ``-1`` (unknown node, marginalised).
    """

    name: str
    module: str
    function: str
    objective: str
    description: str
    params: tuple[str, ...] = ()
    forests_only: bool = False
    warm_start_keys: tuple[str, ...] = ()
    warm_start_same_alpha: bool = False
    sample_weight: bool = False
    partial_labels: bool = False

    def load(self) -> Callable:
        """The solver function (imports its module on first use)."""
        return getattr(importlib.import_module(self.module), self.function)


SOLVERS: dict[str, SolverSpec] = {spec.name: spec for spec in (
    SolverSpec("idal", "crflearn.solvers.idal", "fit_idal", "relaxed_crf",
               "IDAL: SDCA-powered inexact dual augmented Lagrangian over the local polytope",
               params=("kappa", "rho", "inner_epochs", "entropy", "loss_augmented", "sampling", "n_jobs",
                       "n_partitions", "backend"),
               warm_start_keys=("mu_nodes", "mu_edges", "xi"), sample_weight=True, partial_labels=True),
    SolverSpec("bcfw", "crflearn.solvers.bcfw", "fit_bcfw", "ssvm",
               "block-coordinate Frank-Wolfe for the structured SVM",
               warm_start_keys=("w", "ell", "node_stats", "edge_stats", "block_losses", "w_avg", "ell_avg",
                                "n_steps"),
               warm_start_same_alpha=True, sample_weight=True),
    SolverSpec("subgradient", "crflearn.solvers.subgradient", "fit_subgradient", "ssvm",
               "stochastic subgradient descent for the structured SVM",
               warm_start_keys=("w", "t", "loss_sum", "w_avg", "ell_avg", "avg_weight"),
               warm_start_same_alpha=True, sample_weight=True),
    SolverSpec("cutting_plane", "crflearn.solvers.cutting_plane", "fit_cutting_plane", "ssvm",
               "1-slack cutting-plane method for the structured SVM",
               warm_start_keys=("constraints", "offsets", "beta", "cache"), sample_weight=True),
    SolverSpec("lbfgs", "crflearn.solvers.lbfgs", "fit_lbfgs", "crf",
               "L-BFGS on the exact CRF negative log-likelihood (forests only)",
               params=("loss_augmented", "l1_ratio"), forests_only=True, warm_start_keys=("w",),
               sample_weight=True, partial_labels=True),
)}

SOLVER_NAMES: tuple[str, ...] = tuple(SOLVERS)


def get_solver_spec(name: str) -> SolverSpec:
    """The :class:`SolverSpec` registered under ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a registered solver (the message lists them).
    """
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {name!r}")
    return SOLVERS[name]


def get_solver(name: str) -> Callable:
    """The solver function registered under ``name`` (one of :data:`SOLVER_NAMES`)."""
    return get_solver_spec(name).load()
