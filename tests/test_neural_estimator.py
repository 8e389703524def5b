"""NeuralCRF: learning, history, early stopping, persistence, the sklearn contract, errors."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402

from crflearn.neural import NeuralCRF  # noqa: E402


def _toy(n=60, seed=0, noise=0.3):
    """Chains where a label is visible in the features only through noise, but follows a fixed cycle.

    The features give the label with noise; the transition 0 -> 1 -> 2 -> 0 is deterministic, so a
    model with transitions beats independent per-node classification.
    """
    rng = np.random.default_rng(seed)
    X, y = [], []
    for _ in range(n):
        t = int(rng.integers(3, 8))
        lab = (int(rng.integers(3)) + np.arange(t)) % 3
        feats = np.eye(3)[lab] + noise * rng.normal(size=(t, 3))
        X.append(feats)
        y.append(lab)
    return X, y


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny problems run fastest on one thread (and do not fight other test processes)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


FAST = dict(max_epochs=15, batch_size=16, lr=0.05, random_state=0, validation_fraction=0.0)


@pytest.mark.parametrize("loss", ["nll", "hinge", "gini"])
def test_learns_toy_chains(loss):
    if loss == "gini":
        pytest.importorskip("crflearn.inference.gini")
    X, y = _toy(n=48 if loss == "gini" else 60)
    clf = NeuralCRF(module="linear", loss=loss, **FAST)
    assert clf.fit(X, y) is clf
    X_test, y_test = _toy(n=40, seed=1, noise=0.3)
    assert clf.score(X_test, y_test) > 0.95
    # the learned transitions prefer the cycle
    t = clf.transitions_
    assert all(t[a, (a + 1) % 3] > t[a, (a + 2) % 3] for a in range(3))
    h = clf.history_
    assert {"iteration", "time", "primal", "dual", "gap", "residual", "val_accuracy"} <= set(h)
    assert len(h["iteration"]) == clf.n_iter_ == 15
    np.testing.assert_array_equal(h["iteration"], np.arange(1, 16))
    assert np.all(np.diff(h["time"]) >= 0)
    assert np.all(np.isnan(h["dual"])) and np.all(h["residual"] == 0) and np.all(np.isnan(h["val_accuracy"]))
    assert h["primal"][-1] < h["primal"][0]


def test_transitions_help_under_noise():
    X, y = _toy(n=80, noise=0.9, seed=2)
    X_test, y_test = _toy(n=80, noise=0.9, seed=3)
    crf = NeuralCRF(module="linear", **FAST).fit(X, y)
    # the same linear model without transitions: independent per-node argmax of the unary scores
    unary_only = crf.net_.unary
    with torch.no_grad():
        acc = np.mean(np.concatenate([unary_only(torch.tensor(x, dtype=torch.float32)).argmax(-1).numpy() == t
                                      for x, t in zip(X_test, y_test)]))
    assert crf.score(X_test, y_test) > acc + 0.05


def test_predict_marginals_and_label_values():
    X, y = _toy(n=40)
    names = np.array(["a", "b", "c"])
    y_str = [names[lab] for lab in y]
    clf = NeuralCRF(module="mlp", hidden_sizes=(8,), **FAST).fit(X, y_str)
    np.testing.assert_array_equal(clf.classes_, names)
    pred = clf.predict(X[:5])
    assert all(p.dtype == names.dtype and p.shape == (len(x),) for p, x in zip(pred, X[:5]))
    marg = clf.predict_marginals(X[:5])
    assert all(m.shape == (len(x), 3) and np.allclose(m.sum(1), 1) for m, x in zip(marg, X[:5]))
    # the marginal argmax agrees with Viterbi on this easy problem
    agree = np.mean(np.concatenate([names[m.argmax(1)] == p for m, p in zip(marg, pred)]))
    assert agree > 0.95


def test_validation_and_early_stopping():
    X, y = _toy(n=60)
    clf = NeuralCRF(module="linear", max_epochs=200, lr=0.05, batch_size=16, validation_fraction=0.25,
                    n_iter_no_change=3, random_state=0)
    clf.fit(X, y)
    h = clf.history_
    assert clf.n_iter_ < 200
    assert np.all((h["val_accuracy"] >= 0) & (h["val_accuracy"] <= 1))
    best = int(np.argmax(h["val_accuracy"]))
    assert clf.n_iter_ - 1 - best >= 3  # stopped 3 epochs after the last improvement
    with pytest.warns(ConvergenceWarning):
        NeuralCRF(module="linear", max_epochs=2, lr=1e-4, validation_fraction=0.25, n_iter_no_change=5,
                  random_state=0).fit(X, y)


def test_reproducible_refit_and_params_not_mutated():
    X, y = _toy(n=30)
    module = torch.nn.Linear(3, 3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    clf = NeuralCRF(module=module, max_epochs=3, lr=0.05, random_state=0, validation_fraction=0.2)
    clf.fit(X, y)
    first = clf.transitions_.copy()
    h1 = clf.history_["primal"].copy()
    clf.fit(X, y)
    np.testing.assert_allclose(clf.transitions_, first)
    np.testing.assert_allclose(clf.history_["primal"], h1)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())
    assert clone(clf).get_params()["max_epochs"] == 3


def test_save_load_roundtrip(tmp_path):
    X, y = _toy(n=30)
    clf = NeuralCRF(module="mlp", hidden_sizes=(6,), **FAST).fit(X, y)
    clf.save(tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == ["model"] and (tmp_path / "model").is_file()  # one archive
    loaded = NeuralCRF.load(tmp_path / "model")
    for a, b in zip(clf.predict(X), loaded.predict(X)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.transitions_, clf.transitions_)
    assert loaded.get_params()["hidden_sizes"] == (6,)
    np.testing.assert_allclose(loaded.history_["primal"], clf.history_["primal"])
    # custom module: the architecture must be supplied again
    custom = NeuralCRF(module=torch.nn.Linear(3, 3), max_epochs=2, random_state=0).fit(X, y)
    custom.save(tmp_path / "custom")
    with pytest.raises(ValueError, match="custom module"):
        NeuralCRF.load(tmp_path / "custom")
    again = NeuralCRF.load(tmp_path / "custom", module=torch.nn.Linear(3, 3))
    for a, b in zip(custom.predict(X), again.predict(X)):
        np.testing.assert_array_equal(a, b)


def test_builtin_cnn_and_bilstm_run():
    rng = np.random.default_rng(0)
    X = [rng.random((int(rng.integers(2, 5)), 32)) for _ in range(12)]
    y = [rng.integers(0, 4, len(x)) for x in X]
    for params in (dict(module="cnn", image_shape=(8, 4)),
                   dict(module="cnn", image_shape=(8, 4), symmetry="triangular"),
                   dict(module="bilstm", hidden_size=8)):
        clf = NeuralCRF(max_epochs=2, random_state=0, **params).fit(X, y)
        pred = clf.predict(X)
        assert [len(p) for p in pred] == [len(x) for x in X]
        assert np.isfinite(clf.history_["primal"]).all()
    with pytest.raises(ValueError, match="image_shape"):
        NeuralCRF(module="cnn", image_shape=(16, 8), max_epochs=1).fit(X, y)


def test_bilstm_uses_context():
    """Label = feature of the previous node: only a sequence model can see it."""
    rng = np.random.default_rng(1)
    X, y = [], []
    for _ in range(60):
        t = int(rng.integers(3, 7))
        bits = rng.integers(0, 2, t)
        X.append(np.eye(2)[bits] + 0.05 * rng.normal(size=(t, 2)))
        y.append(np.concatenate([[0], bits[:-1]]))
    clf = NeuralCRF(module="bilstm", hidden_size=16, max_epochs=20, lr=0.03, batch_size=16, random_state=0,
                    validation_fraction=0.0).fit(X, y)
    assert clf.score(X, y) > 0.95


def test_not_fitted_and_input_errors():
    X, y = _toy(n=10)
    with pytest.raises(NotFittedError):
        NeuralCRF().predict(X)
    clf = NeuralCRF(module="linear", max_epochs=1, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features, expected 3"):
        clf.predict([np.zeros((3, 4))])
    with pytest.raises(TypeError, match="single 2-D array"):
        clf.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="fitted on chain examples"):
        clf.predict([(np.zeros((3, 3)), np.array([[0, 1]]))])
    with pytest.raises(ValueError, match="y\\[0\\] has 2 labels"):
        NeuralCRF(max_epochs=1).fit([np.zeros((3, 3))], [np.array([0, 1])])
    with pytest.raises(ValueError, match="must map"):
        NeuralCRF(module=torch.nn.Linear(3, 5), max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        NeuralCRF(max_epochs=1).fit([np.full((2, 3), np.nan)], [np.array([0, 1])])


@pytest.mark.parametrize("params, exc, match", [
    (dict(module="transformer"), ValueError, "module must be one of"),
    (dict(module=3), TypeError, "module must be a name"),
    (dict(loss="mse"), ValueError, "loss must be one of"),
    (dict(optimizer="lbfgs"), ValueError, "optimizer must be one of"),
    (dict(lr=0), ValueError, "lr must be"),
    (dict(kappa=-1.0), ValueError, "kappa must be"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(max_epochs=0), ValueError, "max_epochs"),
    (dict(batch_size=2.5), ValueError, "batch_size"),
    (dict(validation_fraction=1.0), ValueError, "validation_fraction"),
    (dict(validation_fraction=0.0, n_iter_no_change=3), ValueError, "n_iter_no_change needs"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(module_kwargs=[1]), TypeError, "module_kwargs"),
])
def test_parameter_errors(params, exc, match):
    X, y = _toy(n=6)
    with pytest.raises(exc, match=match):
        NeuralCRF(**{"max_epochs": 1, **params}).fit(X, y)


def test_verbose_and_callback(capsys):
    X, y = _toy(n=20)
    calls = []
    clf = NeuralCRF(module="linear", max_epochs=10, verbose=1, random_state=0,
                    callback=lambda info: calls.append(info["iteration"]) or info["iteration"] >= 2)
    clf.fit(X, y)
    assert calls == [1, 2] and clf.n_iter_ == 2
    out = capsys.readouterr().out
    assert out.count("[NeuralCRF] iter") == 2 and "primal=" in out


def test_import_crflearn_does_not_import_torch():
    code = "import sys, crflearn, crflearn.graphs, crflearn.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _ocr_path():
    root = Path(__file__).resolve().parents[1]
    for base in (os.environ.get("CRFLEARN_DATA"), root.parent / "shared" / "datasets"):
        if base and (Path(base) / "ocr_letters.npz").exists():
            return Path(base) / "ocr_letters.npz"
    return None


@pytest.mark.data
def test_cnn_on_a_slice_of_ocr():
    path = _ocr_path()
    if path is None:
        pytest.skip("ocr_letters.npz not found (set CRFLEARN_DATA)")
    data = np.load(path)
    offsets = np.concatenate([[0], np.cumsum(data["lengths"])])
    words = range(200)
    X = [data["pixels"][offsets[i]:offsets[i + 1]].astype(np.float64) for i in words]
    y = [data["labels"][offsets[i]:offsets[i + 1]].astype(np.int64) for i in words]
    clf = NeuralCRF(module="cnn", max_epochs=3, batch_size=16, lr=3e-3, random_state=0,
                    validation_fraction=0.0).fit(X[:150], y[:150])
    # 26 classes (chance ~4%); three epochs on 150 words already reach far above chance
    assert clf.score(X[150:], y[150:]) > 0.2  # 5x chance


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda():
    X, y = _toy(n=30)
    clf = NeuralCRF(module="mlp", hidden_sizes=(8,), device="cuda", **FAST).fit(X, y)
    assert clf.device_.type == "cuda" and next(clf.net_.parameters()).is_cuda
    assert clf.score(X, y) > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = clf.predict(X)
    assert len(pred) == len(X)


def test_clear_import_error_without_torch():
    code = ("import sys\nsys.modules['torch'] = None\ntry:\n    import crflearn.neural\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install crflearn[neural]" in out.stdout


def test_fit_leaves_the_global_torch_seed_alone():
    torch = pytest.importorskip("torch")
    from crflearn.neural import NeuralCRF

    rng = np.random.default_rng(0)
    X = [rng.normal(size=(4, 3)) for _ in range(6)]
    y = [rng.integers(0, 2, size=4) for _ in range(6)]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    NeuralCRF(module="linear", max_epochs=1, random_state=0).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("n_threads", [None, 2])
def test_n_threads_limit_during_fit_and_predict_and_restore(n_threads):
    from threadpoolctl import threadpool_info

    X, y = _toy(n=24)
    seen = []
    clf = NeuralCRF(module="linear", n_threads=n_threads, callback=lambda info: seen.append(torch.get_num_threads()),
                    **{**FAST, "max_epochs": 2})
    torch.set_num_threads(3)
    pools = [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]
    clf.fit(X, y)
    assert seen == [n_threads or 1] * 2
    assert torch.get_num_threads() == 3
    assert [(p["internal_api"], p["num_threads"]) for p in threadpool_info()] == pools
    clf.predict(X)
    clf.predict_marginals(X)
    assert torch.get_num_threads() == 3
    with pytest.raises(ZeroDivisionError):  # restored after an error too
        NeuralCRF(module="linear", callback=lambda info: 1 / 0, **FAST).fit(X, y)
    assert torch.get_num_threads() == 3


def test_n_threads_results_equal_and_validation():
    X, y = _toy(n=24)
    fits = [NeuralCRF(module="linear", n_threads=n, **{**FAST, "max_epochs": 3}).fit(X, y) for n in (1, 2)]
    for a, b in zip(*(f.predict_marginals(X) for f in fits)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(*(f.predict(X) for f in fits)))
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n_threads"):
            NeuralCRF(module="linear", n_threads=bad).fit(X, y)
