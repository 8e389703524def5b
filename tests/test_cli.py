"""Tests for the crflearn command line (crflearn.cli and python -m crflearn)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from crflearn.cli import main, read_npz_data, write_npz_data
from crflearn.datasets import load_tiny_pos, make_chain_hmm, make_grid_potts, read_conll, write_conll

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [[], ["demo"], ["fit"], ["predict"], ["compare"]])
def test_help_everywhere(capsys, argv):
    code, out, _ = _run(capsys, *argv, "--help")
    assert code == 0
    assert "usage: crflearn" in out


def test_no_command_and_version(capsys):
    code, out, _ = _run(capsys)
    assert code == 2 and "COMMAND" in out
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith("crflearn ")


def test_usage_errors_exit_2(capsys):
    code, _, err = _run(capsys, "demo", "--max-iter", "0")
    assert code == 2 and "--max-iter" in err
    code, _, err = _run(capsys, "fit", "--data", "x.npz")
    assert code == 2 and "--model" in err
    code, _, err = _run(capsys, "demo", "--dataset", "mnist")
    assert code == 2 and "invalid choice" in err


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "crflearn", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert "demo" in proc.stdout and "predict" in proc.stdout


def test_demo_small_writes_png(capsys, tmp_path):
    code, out, err = _run(capsys, "demo", "--n-train", "12", "--n-test", "6", "--length", "6",
                          "--max-iter", "4", "--out", str(tmp_path / "out"))
    assert code == 0, err
    pngs = list((tmp_path / "out").glob("*.png"))
    assert len(pngs) == 1
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(pngs[0]) in out
    assert "[idal] iter" not in out  # quiet by default: a short summary only
    assert "epochs=4" in out and "final gap=" in out and "final residual=" in out
    assert "node accuracy: train" in out


def test_demo_verbose_prints_progress_lines(capsys, tmp_path):
    code, out, err = _run(capsys, "demo", "--n-train", "12", "--n-test", "6", "--length", "6",
                          "--max-iter", "4", "--verbose", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert "[idal] iter" in out


def test_demo_missing_real_data(capsys, tmp_path):
    code, out, err = _run(capsys, "demo", "--dataset", "ocr", "--data-path", str(tmp_path / "absent"),
                          "--out", str(tmp_path / "o"), "-q")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "ocr data set is not available" in err and "absent" in err


@pytest.mark.data
@pytest.mark.parametrize("dataset", ["ocr", "snakes"])
def test_demo_real_data_subset(capsys, tmp_path, dataset):
    from crflearn.datasets import find_data_file

    try:
        find_data_file("ocr_letters.npz" if dataset == "ocr" else "snakes.npz")
    except FileNotFoundError:
        pytest.skip("shared datasets not found")
    code, out, err = _run(capsys, "demo", "--dataset", dataset, "--n-train", "10", "--n-test", "5",
                          "--max-iter", "2", "--out", str(tmp_path), "-q")
    assert code == 0, err
    assert "10 training examples" not in out  # -q hides the header
    assert f"demo_{dataset}_idal_gap.png" in out and "node accuracy" in out
    assert (tmp_path / f"demo_{dataset}_idal_gap.png").is_file()


def test_fit_predict_conll_round_trip(capsys, tmp_path):
    sents, tags = load_tiny_pos()
    data = tmp_path / "train.conll"
    write_conll(data, sents[:12], tags[:12])
    model = tmp_path / "pos.npz"
    code, out, err = _run(capsys, "fit", "--data", str(data), "--model", str(model), "--max-iter", "40", "-q")
    assert code == 0, err
    assert model.is_file() and (tmp_path / "pos.npz.features.json").is_file()

    unlabeled = tmp_path / "tokens.txt"
    unlabeled.write_text("\n\n".join("\n".join(s) for s in sents[:12]) + "\n")
    pred_file = tmp_path / "pred.conll"
    code, _, err = _run(capsys, "predict", "--model", str(model), "--data", str(unlabeled),
                        "--out", str(pred_file))
    assert code == 0, err
    pred_sents, pred_tags = read_conll(pred_file)
    assert pred_sents == sents[:12]
    gold = np.concatenate([np.array(t) for t in tags[:12]])
    accuracy = np.mean(np.concatenate([np.array(t) for t in pred_tags]) == gold)
    assert accuracy > 0.9  # training data, rich features

    # stdout output and accuracy report when gold tags are given
    code, out, err = _run(capsys, "predict", "--model", str(model), "--data", str(data), "--tag-column", "-1")
    assert code == 0 and "node accuracy" in err
    assert read_conll(out.splitlines())[0] == sents[:12]


def test_fit_predict_npz_chains(capsys, tmp_path):
    X, y = make_chain_hmm(60, length=(5, 10), random_state=0)
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    write_npz_data(train, X[:40], y[:40])
    write_npz_data(test, X[40:])  # unlabelled
    model = tmp_path / "model.npz"
    code, out, err = _run(capsys, "fit", "--data", str(train), "--model", str(model), "--max-iter", "30",
                          "--alpha", "0.01", "--verbose")
    assert code == 0, err
    assert "model saved" in out and "[idal] iter" in out
    out_file = tmp_path / "pred.npz"
    code, _, err = _run(capsys, "predict", "--model", str(model), "--data", str(test), "--out", str(out_file))
    assert code == 0, err
    with np.load(out_file) as pred:
        np.testing.assert_array_equal(pred["lengths"], [len(v) for v in y[40:]])
        accuracy = np.mean(pred["labels"] == np.concatenate(y[40:]))
    assert accuracy > 0.7
    code, out, _ = _run(capsys, "predict", "--model", str(model), "--data", str(test))
    lines = out.strip().splitlines()
    assert len(lines) == 20 and [len(line.split()) for line in lines] == [len(v) for v in y[40:]]


def test_fit_predict_npz_grid(capsys, tmp_path):
    X, y = make_grid_potts(6, shape=(5, 5), random_state=0)
    data = tmp_path / "grid.npz"
    write_npz_data(data, X, y)
    model = tmp_path / "m.npz"
    code, _, err = _run(capsys, "fit", "--data", str(data), "--model", str(model), "--max-iter", "10", "-q")
    assert code == 0, err
    code, out, err = _run(capsys, "predict", "--model", str(model), "--data", str(data))
    assert code == 0, err
    assert len(out.strip().splitlines()) == 6


def test_npz_format_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    X = [(rng.rand(4, 3), np.array([[0, 1], [1, 2], [2, 3], [0, 3]]), rng.rand(4, 2)),
         (rng.rand(2, 3), np.array([[0, 1]]), rng.rand(1, 2))]
    y = [np.array([0, 1, 1, 0]), np.array([2, 2])]
    write_npz_data(tmp_path / "d.npz", X, y)
    X2, y2 = read_npz_data(tmp_path / "d.npz")
    for a, b in zip(X, X2):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    for a, b in zip(y, y2):
        np.testing.assert_array_equal(a, b)
    X3, y3 = read_npz_data(_chain_file(tmp_path))
    assert y3 is None and [x.shape for x in X3] == [(2, 2), (1, 2)]


def _chain_file(tmp_path):
    path = tmp_path / "chains.npz"
    np.savez(path, features=np.zeros((3, 2)), lengths=np.array([2, 1]))
    return path


@pytest.mark.parametrize("arrays, message", [
    (dict(features=np.zeros((3, 2))), "lacks the array 'lengths'"),
    (dict(features=np.zeros((3, 2)), lengths=np.array([2, 2])), "sum to 4"),
    (dict(features=np.zeros((3, 2)), lengths=np.array([3]), labels=np.zeros(2)), "'labels'"),
    (dict(features=np.zeros((3, 2)), lengths=np.array([3]), edges=np.array([[0, 1]])), "edge_offsets"),
    (dict(features=np.zeros((3, 2)), lengths=np.array([3]), edges=np.array([[0, 1]]),
          edge_offsets=np.array([0, 2])), "edge_offsets"),
])
def test_read_npz_data_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        read_npz_data(tmp_path / "bad.npz")


def test_user_errors_are_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, "fit", "--data", str(tmp_path / "missing.npz"), "--model", str(tmp_path / "m"))
    assert code == 1 and err.count("\n") == 1 and "missing.npz" in err and "Traceback" not in err

    code, _, err = _run(capsys, "fit", "--data", str(_chain_file(tmp_path)), "--model", str(tmp_path / "m"))
    assert code == 1 and "no 'labels'" in err

    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((3, 2)))
    code, _, err = _run(capsys, "fit", "--data", str(bad), "--model", str(tmp_path / "m"))
    assert code == 1 and "lengths" in err and err.startswith("crflearn fit: error:")

    code, _, err = _run(capsys, "predict", "--model", str(tmp_path / "nope.npz"), "--data", str(bad))
    assert code == 1 and "model file not found" in err

    conll = tmp_path / "bad.conll"
    conll.write_text("a\n")
    code, _, err = _run(capsys, "fit", "--data", str(conll), "--model", str(tmp_path / "m"))
    assert code == 1 and "line 1" in err
