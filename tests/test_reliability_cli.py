"""Reliability of the command line (issue 14): Ctrl-C, atomic outputs, output paths checked
before training, inputs never overwritten, one-line errors for bad model files."""

from __future__ import annotations

import numpy as np
import pytest

import crflearn.cli as cli
from crflearn import CRF
from crflearn.cli import main, write_npz_data
from crflearn.compare import compare_solvers, run_compare

FIT = ["--solver", "bcfw", "--max-iter", "5", "-q"]

# the solvers' own "interrupted" RuntimeWarning is expected in these tests
pytestmark = pytest.mark.filterwarnings("ignore:.*interrupted by the user:RuntimeWarning")


def _data(tmp_path, n=12):
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(4, 3)) for _ in range(n)]
    y = [(x[:, 0] > 0).astype(int) for x in X]
    y[0][:2] = [0, 1]
    path = tmp_path / "d.npz"
    write_npz_data(path, X, y)
    return path, X, y


def _interrupt_at(monkeypatch, iteration: int):
    """Make the CLI's CRF raise KeyboardInterrupt from its callback at ``iteration`` (inside the solver loop)."""
    make = cli._make_crf

    def raising(info):
        if info["iteration"] >= iteration:
            raise KeyboardInterrupt

    def patched(args, alpha):
        est = make(args, alpha)
        est.set_params(callback=raising)
        return est

    monkeypatch.setattr(cli, "_make_crf", patched)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ctrl_c_in_fit_exits_130_and_keeps_the_old_model(tmp_path, capsys, monkeypatch):
    data, _, _ = _data(tmp_path)
    model = tmp_path / "m.npz"
    assert _run(capsys, "fit", "--data", str(data), "--model", str(model), *FIT)[0] == 0
    before = model.read_bytes()
    _interrupt_at(monkeypatch, 2)
    code, _, err = _run(capsys, "fit", "--data", str(data), "--model", str(model), *FIT, "--alpha", "0.5")
    assert code == 130 and "interrupted" in err and "--save-partial" in err
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.npz"]


def test_ctrl_c_with_save_partial_saves_the_last_iterate(tmp_path, capsys, monkeypatch):
    data, X, _ = _data(tmp_path)
    model = tmp_path / "m.npz"
    _interrupt_at(monkeypatch, 2)
    code, _, err = _run(capsys, "fit", "--data", str(data), "--model", str(model), *FIT, "--save-partial")
    assert code == 130 and "partial" in err
    est = CRF.load(model)
    assert est.interrupted_ and len(est.predict(X)) == len(X)


def test_ctrl_c_outside_the_solver_exits_130(tmp_path, capsys, monkeypatch):
    data, _, _ = _data(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_load_examples", interrupted)
    code, _, err = _run(capsys, "fit", "--data", str(data), "--model", str(tmp_path / "m.npz"), *FIT)
    assert code == 130 and "interrupted" in err
    assert not (tmp_path / "m.npz").exists()


def test_ctrl_c_stops_the_demo(tmp_path, capsys, monkeypatch):
    _interrupt_at(monkeypatch, 1)
    code, out, err = _run(capsys, "demo", "--out", str(tmp_path / "demo"), "--n-train", "5", "--n-test", "5",
                          "--length", "4", *FIT)
    assert code == 130 and "interrupted" in err
    assert "node accuracy" not in out and not list((tmp_path / "demo").iterdir())


def _no_training(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError("training started before the output path was checked")

    monkeypatch.setattr(CRF, "fit", refuse)


def test_fit_refuses_to_overwrite_its_input(tmp_path, capsys, monkeypatch):
    data, _, _ = _data(tmp_path)
    before = data.read_bytes()
    _no_training(monkeypatch)
    code, _, err = _run(capsys, "fit", "--data", str(data), "--model", str(data), *FIT)
    assert code == 1 and "input" in err and err.count("\n") == 1
    assert data.read_bytes() == before


@pytest.mark.parametrize("bad", ["missing_dir/m.npz", "."])
def test_bad_output_paths_fail_before_training(tmp_path, capsys, monkeypatch, bad):
    data, _, _ = _data(tmp_path)
    _no_training(monkeypatch)
    target = str(tmp_path / bad)
    code, _, err = _run(capsys, "fit", "--data", str(data), "--model", target, *FIT)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err


def test_predict_output_is_written_exactly_where_reported(tmp_path, capsys):
    data, X, _ = _data(tmp_path)
    model = tmp_path / "m.npz"
    assert _run(capsys, "fit", "--data", str(data), "--model", str(model), *FIT)[0] == 0
    for name in ("preds.npz", "preds"):
        out = tmp_path / name
        code, _, err = _run(capsys, "predict", "--model", str(model), "--data", str(data), "--out", str(out))
        assert code == 0 and f"written to {out}\n" in err
        with np.load(out) as archive:
            assert archive["labels"].shape == (sum(len(x) for x in X),)
    assert not (tmp_path / "preds.npz.npz").exists()
    code, _, err = _run(capsys, "predict", "--model", str(model), "--data", str(data), "--out", str(model))
    assert code == 1 and "input" in err


@pytest.mark.parametrize("damage", ["truncate", "text", "empty", "npz"])
def test_bad_model_files_give_one_line_errors(tmp_path, capsys, damage):
    data, _, _ = _data(tmp_path)
    model = tmp_path / "m.npz"
    assert _run(capsys, "fit", "--data", str(data), "--model", str(model), *FIT)[0] == 0
    raw = model.read_bytes()
    if damage == "truncate":
        model.write_bytes(raw[: len(raw) // 2])
    elif damage == "text":
        model.write_text("not a model")
    elif damage == "empty":
        model.write_bytes(b"")
    else:
        np.savez(model, coef=np.zeros(3))
    code, _, err = _run(capsys, "predict", "--model", str(model), "--data", str(data))
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err and "m.npz" in err


def _tiny_split():
    rng = np.random.default_rng(1)
    X = [rng.normal(size=(3, 2)) for _ in range(8)]
    y = [(x[:, 0] > 0).astype(int) for x in X]
    y[0][:2] = [0, 1]
    return X[:6], y[:6], X[6:], y[6:]


def test_compare_stops_at_the_first_ctrl_c(monkeypatch):
    import crflearn.compare as compare

    calls = []

    def error(self, w, model):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 0.5

    monkeypatch.setattr(compare._Evaluator, "error", error)
    results = compare_solvers(*_tiny_split(), solvers="bcfw,subgradient", max_time=30, max_iter=20)
    assert results["bcfw"]["interrupted"] is True and "history" in results["bcfw"]
    assert results["subgradient"]["interrupted"] is False and "interrupted" in results["subgradient"]["skipped"]


def test_compare_command_exits_130_after_ctrl_c_and_writes_atomically(tmp_path, monkeypatch, capsys):
    import argparse

    import crflearn.compare as compare

    calls = []

    def interrupted(self, w, model):  # one Ctrl-C, inside the first solver's loop
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return 0.5

    monkeypatch.setattr(compare._Evaluator, "error", interrupted)
    monkeypatch.setattr(compare, "load_comparison_data", lambda *a, **k: _tiny_split())
    args = argparse.Namespace(dataset="synthetic", protocol="large", data_path=None, n_sequences=6,
                              random_state=0, solvers="bcfw,lbfgs", max_time=5.0, alpha="auto", eval_every=1,
                              out=str(tmp_path / "cmp"), no_plots=True)
    assert run_compare(args) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err
    names = sorted(p.name for p in (tmp_path / "cmp").iterdir())
    assert names == ["history.csv", "results.json", "summary.csv"]  # no temporary files left


def test_compare_survives_ctrl_c_during_the_final_evaluation(monkeypatch):
    import crflearn.compare as compare

    def interrupted(self, w, model):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare._Evaluator, "error", interrupted)
    try:
        results = compare_solvers(*_tiny_split(), solvers="bcfw,subgradient", max_time=30, max_iter=5)
    except KeyboardInterrupt:  # must not escape (it would also stop this test session)
        pytest.fail("KeyboardInterrupt escaped compare_solvers")
    assert results["bcfw"]["interrupted"] is True and np.isnan(results["bcfw"]["final_test_error"])
    assert "skipped" in results["subgradient"]


def test_compare_output_directory_checked_before_training(tmp_path, capsys, monkeypatch):
    import crflearn.compare as compare

    monkeypatch.setattr(compare, "compare_solvers", lambda *a, **k: pytest.fail("training started"))
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a directory")
    code, _, err = _run(capsys, "compare", "--dataset", "synthetic", "--out", str(blocker))
    assert code == 1 and "is a file" in err and err.count("\n") == 1
