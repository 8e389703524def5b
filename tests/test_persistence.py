"""Saving and loading fitted CRFs as .npz + JSON (no pickle)."""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from crflearn import CRF
from crflearn import persistence

load = CRF.load


def save(est, path):
    est.save(path)

FAST = dict(alpha=0.1, max_iter=15, tol=1e-3, random_state=0)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def fitted(chain_data):
    X, y = chain_data
    return CRF(**FAST).fit(X, y), X, y


def _assert_same_model(a, b, X):
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.unary_coef_, b.unary_coef_)
    np.testing.assert_array_equal(a.pairwise_coef_, b.pairwise_coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    assert a.classes_.dtype == b.classes_.dtype
    np.testing.assert_array_equal(a.classes_, b.classes_)
    assert a.get_params() == b.get_params()
    assert (a.n_features_in_, a.n_edge_features_in_, a.n_iter_, a.converged_) == \
        (b.n_features_in_, b.n_edge_features_in_, b.n_iter_, b.converged_)
    assert a.history_.keys() == b.history_.keys()
    for key in a.history_:
        np.testing.assert_array_equal(a.history_[key], b.history_[key])
    for pa, pb in zip(a.predict(X), b.predict(X)):
        assert pa.dtype == pb.dtype
        np.testing.assert_array_equal(pa, pb)
    for ma, mb in zip(a.predict_marginals(X), b.predict_marginals(X)):
        np.testing.assert_array_equal(ma, mb)


def test_round_trip_through_path_and_file_object(fitted, tmp_path):
    crf, X, _ = fitted
    path = tmp_path / "crf.model"  # no .npz suffix: written exactly where asked
    crf.save(path)
    assert path.exists() and not (tmp_path / "crf.model.npz").exists()
    _assert_same_model(crf, load(path), X)
    _assert_same_model(crf, CRF.load(str(path)), X)
    buf = io.BytesIO()
    save(crf, buf)
    buf.seek(0)
    _assert_same_model(crf, load(buf), X)


def _manifest(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("archive.json"))


def test_file_is_a_zip_with_json_manifest_and_npy_arrays(fitted, tmp_path):
    crf, _, _ = fitted
    path = tmp_path / "m.npz"
    crf.save(path)
    manifest = _manifest(path)
    assert manifest["format"] == persistence.FORMAT_NAME
    assert manifest["format_version"] == persistence.FORMAT_VERSION
    assert manifest["kind"] == "crflearn.CRF"
    meta = manifest["metadata"]
    assert meta["params"]["alpha"] == 0.1 and meta["model"]["n_states"] == len(crf.classes_)
    with np.load(path, allow_pickle=False) as archive:  # plain .npy entries: inspectable with numpy
        coef = archive[manifest["arrays"]["coef"]["file"][:-4]]
    np.testing.assert_array_equal(coef, crf.coef_)


@pytest.mark.parametrize("classes", [
    np.array(["B-PER", "I-PER", "O"]),
    np.array([-3, 7, 1000000007], dtype=np.int64),
    np.array([3, 5, 9], dtype=np.int32),
    np.array([0.1, 1 / 3, 2.5]),
    np.array([b"a", b"bb", b"c"]),
])
def test_class_types_round_trip_exactly(chain_data, tmp_path, classes):
    X, y = chain_data
    crf = CRF(**FAST).fit(X, [classes[lab] for lab in y])
    crf.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.classes_.dtype == crf.classes_.dtype
    np.testing.assert_array_equal(back.classes_, classes)
    assert [type(v) for v in back.classes_.tolist()] == [type(v) for v in classes.tolist()]
    assert _manifest(tmp_path / "m.npz")["arrays"]["classes"]["dtype"] == classes.dtype.str
    _assert_same_model(crf, back, X)


def test_bool_classes_round_trip(chain_data, tmp_path):
    X, y = chain_data
    yb = [lab > 0 for lab in y]
    crf = CRF(**FAST).fit(X, yb)
    crf.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.classes_.dtype == np.bool_ and back.classes_.tolist() == [False, True]
    _assert_same_model(crf, back, X)


def test_edge_features_and_no_intercept_round_trip(chain_data, tmp_path):
    X, y = chain_data
    data = [(x, np.column_stack([np.arange(len(x) - 1), np.arange(1, len(x))]), np.ones((len(x) - 1, 2)))
            for x in X]
    crf = CRF(fit_intercept=False, solver_params=None, **FAST).fit(data, y)
    crf.save(tmp_path / "m.npz")
    _assert_same_model(crf, load(tmp_path / "m.npz"), data)


def test_random_state_instance_and_callback_are_not_stored(chain_data, tmp_path):
    X, y = chain_data
    crf = CRF(alpha=0.1, max_iter=5, random_state=np.random.RandomState(0), callback=lambda info: False)
    crf.fit(X, y)
    crf.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.random_state is None and back.callback is None
    for pa, pb in zip(crf.predict(X), back.predict(X)):
        np.testing.assert_array_equal(pa, pb)


def test_unsaveable_solver_params(chain_data, tmp_path):
    X, y = chain_data
    crf = CRF(solver="bcfw", solver_params={"averaging": "none"}, **FAST).fit(X, y)
    crf.set_params(solver_params={"averaging": object()})
    with pytest.raises(TypeError, match="solver_params"):
        crf.save(tmp_path / "m.npz")


def test_save_errors(tmp_path):
    with pytest.raises(NotFittedError):
        save(CRF(), tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file


def _rewrite(path, out, mutate):
    """Copy a model file, letting ``mutate`` change its manifest and its dict of arrays."""
    manifest = _manifest(path)
    with np.load(path) as archive:
        arrays = {name: archive[spec["file"][:-4]] for name, spec in manifest["arrays"].items()}
    mutate(manifest, arrays)
    manifest["arrays"] = {name: {"dtype": a.dtype.str, "shape": list(a.shape), "file": f"arrays/{i}.npy"}
                          for i, (name, a) in enumerate(arrays.items())}
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("archive.json", json.dumps(manifest))
        for name, arr in arrays.items():
            with zf.open(manifest["arrays"][name]["file"], "w") as fh:
                np.lib.format.write_array(fh, arr)


def _set_top(key, value):
    return lambda manifest, arrays: manifest.__setitem__(key, value)


def _set_meta(key, value):
    return lambda manifest, arrays: manifest["metadata"].__setitem__(key, value)


def _set_array(key, fn):
    return lambda manifest, arrays: arrays.__setitem__(key, fn(arrays[key]))


@pytest.mark.parametrize("mutate, match", [
    (_set_top("format_version", 99), "version 99"),
    (_set_top("format_version", True), "version True"),
    (_set_top("format", "something-else"), "not a crflearn archive"),
    (_set_top("kind", "crflearn.NeuralCRF"), "NeuralCRF"),
    (_set_array("coef", lambda c: c[:-1]), "coef"),
    (_set_array("coef", lambda c: np.full_like(c, np.nan)), "finite"),
    (_set_array("classes", lambda c: c[:2]), "classes"),
    (_set_array("classes", lambda c: c[[0, 0, 1]]), "unique"),
    (lambda m, a: a.pop("coef"), "coef"),
    (_set_meta("model", {"n_states": 3}), "fit_intercept|n_features|model"),
    (_set_meta("params", {"alpha": -1.0}), "alpha"),
    (_set_meta("params", {"no_such_param": 1}), "no_such_param"),
    (_set_meta("n_iter_", 1.5), "n_iter_"),
])
def test_load_rejects_foreign_or_damaged_files(fitted, tmp_path, mutate, match):
    crf, _, _ = fitted
    good = tmp_path / "good.npz"
    crf.save(good)
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, mutate)
    with pytest.raises(ValueError, match=match) as info:
        load(bad)
    assert "bad.npz" in str(info.value)


def test_load_rejects_non_npz_and_truncated_files(fitted, tmp_path):
    crf, _, _ = fitted
    good = tmp_path / "good.npz"
    crf.save(good)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a model")
    npy = tmp_path / "arr.npy"
    np.save(npy, np.arange(3))
    pickled = tmp_path / "obj.npz"
    with open(pickled, "wb") as fh:
        np.savez(fh, metadata=np.array([{"a": 1}], dtype=object))
    for path in (truncated, text, npy, pickled):
        with pytest.raises(ValueError):
            load(path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")
    # a corrupted member (bit flip inside the compressed coef) is reported, not silently loaded
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo(_manifest(good)["arrays"]["coef"]["file"])
    name_len, extra_len = np.frombuffer(bytes(raw[info.header_offset + 26: info.header_offset + 30]), "<u2")
    pos = info.header_offset + 30 + int(name_len) + int(extra_len) + info.compress_size // 2
    raw[pos] ^= 0xFF
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        load(flipped)


def test_loaded_model_can_be_refitted(fitted, tmp_path):
    crf, X, y = fitted
    crf.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    back.set_params(warm_start=True)
    back.fit(X, y)  # no solver state was saved: starts afresh without error
    np.testing.assert_allclose(back.coef_, crf.coef_)
