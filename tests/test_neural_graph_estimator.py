"""NeuralCRF on graphs and images: learning, inputs, threads, numerics, persistence."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import run_in_threads

torch = pytest.importorskip("torch")

from crflearn.neural import NeuralCRF  # noqa: E402
from crflearn.neural.symmetry import FactorizedLinear  # noqa: E402


def _halves(n, size=8, noise=1.0, seed=0):
    """Noisy images of two half-planes split by a random line: smoothing pays off."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[:size, :size] - size / 2 + 0.5
    X, Y = [], []
    for _ in range(n):
        a, off = rng.uniform(0, 2 * np.pi), rng.uniform(-2, 2)
        y = ((np.cos(a) * r + np.sin(a) * c) > off).astype(np.int64)
        X.append((2.0 * y - 1.0)[:, :, None] * 0.5 + noise * rng.normal(size=(size, size, 1)))
        Y.append(y)
    return X, Y


FAST = dict(module="linear", max_epochs=15, lr=0.1, batch_size=16, random_state=0)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        yield


def test_grid_crf_beats_unary_only_network():
    X, Y = _halves(32)
    X_test, Y_test = _halves(32, seed=1)
    crf = NeuralCRF(**FAST).fit(X, Y)
    assert crf.kind_ == "image" and crf.net_.edge_weights.shape == (2, 2, 2)
    # the same per-pixel linear network without edges: independent softmaxes
    flat = [(x.reshape(-1, 1), np.zeros((0, 2), np.int64)) for x in X]
    flat_test = [(x.reshape(-1, 1), np.zeros((0, 2), np.int64)) for x in X_test]
    unary = NeuralCRF(**FAST).fit(flat, [y.ravel() for y in Y])
    acc_crf = crf.score(X_test, Y_test)
    acc_unary = unary.score(flat_test, [y.ravel() for y in Y_test])
    assert acc_crf > acc_unary + 0.1, (acc_crf, acc_unary)
    pred = crf.predict(X_test[:2])
    assert pred[0].shape == (8, 8)
    marg = crf.predict_marginals(X_test[:2])
    assert marg[0].shape == (8, 8, 2)
    np.testing.assert_allclose(marg[0].sum(-1), 1.0, atol=1e-9)


def test_tuples_networkx_and_edge_features():
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(0)
    X, y = [], []
    for _ in range(10):
        g = nx.cycle_graph(5)
        for v in g.nodes:
            lab = int(v % 2)
            g.nodes[v]["x"] = np.array([lab + 0.3 * rng.normal(), 1.0])
            g.nodes[v]["y"] = lab
        X.append(g)
        y.append(np.array([v % 2 for v in range(5)]))
    clf = NeuralCRF(module="mlp", hidden_sizes=(4,), max_epochs=3, random_state=0).fit(X, y)
    assert clf.kind_ == "graph" and len(clf.predict(X[:2])[0]) == 5
    feats = [(np.asarray([g.nodes[v]["x"] for v in g.nodes]), np.array(list(g.edges)),
              np.ones((5, 3))) for g in X]
    clf = NeuralCRF(module="linear", max_epochs=2, random_state=0).fit(feats, y)
    assert clf.n_edge_features_ == 3 and clf.net_.edge_weights.shape == (3, 2, 2)
    with pytest.raises(ValueError, match="edge features"):
        clf.predict([(feats[0][0], feats[0][1])])


class _UnaryAndPairwise(torch.nn.Module):
    accepts_graph = True

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.pair = torch.nn.Parameter(torch.zeros(2, 2))
        self.seen = None

    def forward(self, x, edges, node_offsets):
        self.seen = (tuple(edges.shape), tuple(node_offsets.shape))
        return self.lin(x), self.pair


def test_module_may_return_pairwise_and_read_the_graph():
    X = [(np.random.default_rng(i).normal(size=(4, 2)), np.array([[0, 1], [1, 2], [2, 3], [3, 0]]))
         for i in range(6)]
    y = [np.array([0, 1, 0, 1])] * 6
    module = _UnaryAndPairwise()
    clf = NeuralCRF(module=module, max_epochs=3, lr=0.1, random_state=0).fit(X, y)
    assert clf.net_.unary.seen[1] == (7,)  # node offsets of the 6-example prediction batch
    assert not torch.equal(clf.net_.unary.pair, torch.zeros(2, 2))  # trained through the loss
    assert module.pair.abs().sum() == 0  # the given module was copied


def test_fits_in_threads_equal_serial_fits_and_leave_global_rng_alone():
    X, Y = _halves(8, size=5)

    def fit(seed):
        return NeuralCRF(module="mlp", hidden_sizes=(4,), max_epochs=2, batch_size=4, random_state=seed,
                         device="cpu").fit(X, Y)

    serial = [fit(0), fit(1)]
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    results = run_in_threads(fit)
    assert torch.equal(torch.rand(2), expected)
    for a, b in zip(serial, results):
        for (ka, va), (kb, vb) in zip(a.net_.state_dict().items(), b.net_.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    assert not torch.cuda.is_initialized()  # no CUDA context for a CPU fit


def test_non_finite_loss_stops_and_keeps_finite_weights():
    X, Y = _halves(8, size=5)
    clf = NeuralCRF(module="linear", optimizer="sgd", lr=1e38, max_epochs=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="non-finite"):
            clf.fit(X, Y)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        clf.fit(X, Y)
    assert all(torch.isfinite(p).all() for p in clf.net_.parameters())
    assert clf.n_iter_ < 5
    assert all(np.isfinite(m).all() for m in clf.predict_marginals(X))


def test_validation_data_only_taken_with_early_stopping():
    X, Y = _halves(10, size=4)
    clf = NeuralCRF(module="linear", max_epochs=2, validation_fraction=0.5, random_state=0).fit(X, Y)
    assert clf.history_["oracle_calls"][0] == 10 and np.isnan(clf.history_["val_accuracy"]).all()
    clf = NeuralCRF(module="linear", max_epochs=2, validation_fraction=0.5, n_iter_no_change=5,
                    random_state=0).fit(X, Y)
    assert clf.history_["oracle_calls"][0] == 5 and np.isfinite(clf.history_["val_accuracy"]).all()


def test_frobenius_decay_option_shrinks_factorised_layers():
    X = [np.random.default_rng(i).normal(size=(4, 6)) for i in range(20)]
    y = [(x[:, 0] > 0).astype(int) for x in X]

    def norm(decay):
        module = torch.nn.Sequential(FactorizedLinear(6, 2, rank=2, generator=torch.Generator().manual_seed(0)))
        clf = NeuralCRF(module=module, frobenius_decay=decay, max_epochs=10, batch_size=4, lr=0.05,
                        random_state=0).fit(X, y)
        return float(clf.net_.unary[0].frobenius_decay())

    assert norm(1.0) < 0.5 * norm(0.0)


def test_save_load_graph_model_and_refuse_other_files(tmp_path):
    X, Y = _halves(6, size=4)
    clf = NeuralCRF(module="cnn", hidden_sizes=(3,), max_epochs=2, random_state=0).fit(X, Y)
    clf.save(tmp_path / "m.crfl")
    again = NeuralCRF.load(tmp_path / "m.crfl", device="cpu")
    for a, b in zip(clf.predict(X), again.predict(X)):
        np.testing.assert_array_equal(a, b)
    assert again.kind_ == "image" and again.get_params()["hidden_sizes"] == (3,)
    from crflearn.persistence import save_archive

    save_archive(tmp_path / "crf.crfl", kind="crflearn.CRF", metadata={}, arrays={})
    with pytest.raises(ValueError, match="crf.crfl"):
        NeuralCRF.load(tmp_path / "crf.crfl")
    (tmp_path / "junk").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="junk"):
        NeuralCRF.load(tmp_path / "junk")


def test_damaged_files_raise_value_errors(tmp_path):
    X = [np.random.default_rng(i).normal(size=(3, 2)) for i in range(6)]
    y = [np.array([0, 1, 0])] * 6
    NeuralCRF(module="linear", max_epochs=1, random_state=0).fit(X, y).save(tmp_path / "m")
    data = (tmp_path / "m").read_bytes()
    rng = np.random.default_rng(0)
    damaged = [data[:cut] for cut in range(0, len(data), max(len(data) // 40, 1))]
    for _ in range(20):
        flipped = bytearray(data)
        flipped[int(rng.integers(len(data)))] ^= 0xFF
        damaged.append(bytes(flipped))
    for i, blob in enumerate(damaged):
        (tmp_path / "bad").write_bytes(blob)
        try:
            model = NeuralCRF.load(tmp_path / "bad")
        except ValueError:
            continue
        # a flip in unused bytes (zip padding, timestamps) may leave a valid model
        assert all(np.isfinite(m).all() for m in model.predict_marginals(X)), i
