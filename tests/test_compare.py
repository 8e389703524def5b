"""The comparison harness on a tiny synthetic task."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from crflearn.compare import (add_compare_arguments, compare_solvers, format_summary,  # noqa: E402
                              run_compare, time_to_gap, write_comparison)


def _data(seed=0, n=12):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for _ in range(n):
        length = int(rng.integers(3, 6))
        lab = rng.integers(0, 3, size=length)
        X.append(np.eye(3)[lab] * 2.0 + rng.normal(size=(length, 3)))
        y.append(lab)
    return X[: n // 2 + 2], y[: n // 2 + 2], X[n // 2 + 2:], y[n // 2 + 2:]


def test_time_to_gap():
    h = {"time": np.array([1.0, 2.0, 3.0]), "gap": np.array([1.0, 0.05, 0.0005]),
         "primal": np.array([2.0, 2.0, 2.0])}
    assert time_to_gap(h, 1e-2) == 3.0 and time_to_gap(h, 3e-2) == 2.0
    assert np.isnan(time_to_gap(h, 1e-6))
    # IDAL: the agreement residual must be below the threshold too
    h_res = dict(h, residual=np.array([1.0, 1.0, 1e-2]))
    assert time_to_gap(h_res, 1e-2) == 3.0 and time_to_gap(h_res, 3e-2) == 3.0


def test_compare_and_write(tmp_path):
    Xtr, ytr, Xte, yte = _data()
    res = compare_solvers(Xtr, ytr, Xte, yte, solvers=("bcfw", "lbfgs", "cutting_plane"), max_time=0.5,
                          max_iter=8, alpha=0.1, random_state=0)
    assert set(res) == {"bcfw", "lbfgs", "cutting_plane"}
    for rec in res.values():
        assert 0.0 <= rec["final_test_error"] <= 1.0
        assert len(rec["eval"]["test_error"]) >= 1
        assert rec["eval"]["iteration"][-1] == rec["history"]["iteration"][-1]
    # easy data: the structured models beat chance by far
    assert res["cutting_plane"]["final_test_error"] < 0.3
    files = write_comparison(res, tmp_path)
    names = {f.name for f in files}
    assert {"results.json", "history.csv", "summary.csv", "gap_vs_time.png", "gap_vs_passes.png",
            "test_error_vs_time.png"} <= names
    for f in files:
        assert f.stat().st_size > 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["bcfw"]["history"]["iteration"] == res["bcfw"]["history"]["iteration"]
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + sum(len(r["history"]["iteration"]) for r in res.values())
    assert "| bcfw |" in format_summary(res)
    from crflearn.solvers import get_solver_spec

    for name, rec in res.items():  # the objective comes from the solver registry
        assert rec["objective"] == get_solver_spec(name).objective and rec["interrupted"] is False


def test_lbfgs_skipped_on_loopy_graphs():
    rng = np.random.default_rng(0)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])
    X = [(rng.normal(size=(4, 2)), edges) for _ in range(6)]
    y = [rng.integers(0, 2, size=4) for _ in range(6)]
    res = compare_solvers(X[:4], y[:4], X[4:], y[4:], solvers="lbfgs,subgradient", max_time=0.2, max_iter=2)
    assert "skipped" in res["lbfgs"] and "history" in res["subgradient"]
    assert res["lbfgs"]["objective"] == "crf" and res["lbfgs"]["interrupted"] is False


def test_bad_arguments():
    Xtr, ytr, Xte, yte = _data()
    with pytest.raises(ValueError, match="solvers"):
        compare_solvers(Xtr, ytr, Xte, yte, solvers=("bcfw", "newton"))
    with pytest.raises(ValueError, match="max_time"):
        compare_solvers(Xtr, ytr, Xte, yte, max_time=0)


def test_cli_glue(tmp_path):
    parser = add_compare_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--dataset", "synthetic", "--solvers", "bcfw", "--max-time", "0.3",
                              "--n-sequences", "10", "--out", str(tmp_path / "out"), "--no-plots"])
    assert run_compare(args) == 0
    assert (tmp_path / "out" / "summary.csv").exists()


def test_progress_lines_and_wall_clock_budget():
    """compare reports each run as it starts and ends, naming how it ended, and a run stops within its wall
    budget (monitoring and test evaluations count)."""
    from crflearn.compare import compare_solvers
    from crflearn.datasets import make_chain_hmm

    X, y = make_chain_hmm(n_sequences=40, length=(4, 8), n_states=3, n_features=5, random_state=0)
    lines = []
    results = compare_solvers(X[:30], y[:30], X[30:], y[30:], solvers=["bcfw"], max_time=0.5, tol=0.0,
                              progress=lines.append)
    assert lines[0].startswith("[compare] bcfw: running") and lines[1].startswith("[compare] bcfw:")
    assert "time budget or max_iter" in lines[1] and "s wall" in lines[1]
    assert not results["bcfw"]["converged"]
    assert results["bcfw"]["n_iter"] < 100000  # stopped by its 0.5 s budget, not by max_iter
