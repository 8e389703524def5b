"""Reliability of saving and loading (issue 14): atomic writes, hostile and damaged files.

Every damaged or hostile file must give a ValueError naming the file (never
NotImplementedError, RuntimeError, RecursionError, zlib/zip errors), and loading
must never decompress more than the manifest declares.
"""

from __future__ import annotations

import errno
import json
import struct
import warnings
import zipfile

import numpy as np
import pytest

from crflearn import CRF
from crflearn import persistence
from crflearn.persistence import atomic_write, load_archive, save_archive

KIND = "test.kind"


@pytest.fixture(scope="module")
def crf_file(tmp_path_factory, chain_data_module):
    X, y = chain_data_module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crf = CRF(alpha=0.1, max_iter=3, random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("model") / "m.npz"
    crf.save(path)
    return path


@pytest.fixture(scope="module")
def chain_data_module():
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(4, 2)) for _ in range(3)]
    y = [(x[:, 0] > 0).astype(int) for x in X]
    y[0][:2] = [0, 1]
    return X, y


def _small(path):
    save_archive(path, kind=KIND, metadata={"a": [1, 2], "b": {"c": "d"}},
                 arrays={"w": np.array([0.5, -1.0, 2.0]), "labels": np.array(["x", "y"])})
    return path


# -- atomic writes ---------------------------------------------------------------------------
@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch, error):
    path = _small(tmp_path / "m.npz")
    before = path.read_bytes()
    calls = []

    def failing(fh, arr, **kwargs):
        calls.append(1)
        raise error

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(type(error)):
        save_archive(path, kind=KIND, metadata={}, arrays={"w": np.zeros(3)})
    assert calls and path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    with atomic_write(path) as fh:
        fh.write(b"new")
    assert path.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_crf_save_is_atomic(crf_file, tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    target.write_bytes(crf_file.read_bytes())
    crf = CRF.load(target)
    monkeypatch.setattr(np.lib.format, "write_array", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        crf.save(target)
    assert target.read_bytes() == crf_file.read_bytes()
    assert len(list(tmp_path.iterdir())) == 1


# -- fuzzing: truncation, byte flips ---------------------------------------------------------
def test_truncation_at_every_offset_is_a_value_error(tmp_path):
    good = _small(tmp_path / "good.npz").read_bytes()
    bad = tmp_path / "bad.npz"
    for end in range(len(good)):
        bad.write_bytes(good[:end])
        with pytest.raises(ValueError, match="bad.npz"):
            load_archive(bad, kind=KIND)


def test_crf_truncation_is_a_value_error(crf_file, tmp_path):
    good = crf_file.read_bytes()
    bad = tmp_path / "bad.npz"
    for end in range(0, len(good), 7):
        bad.write_bytes(good[:end])
        with pytest.raises(ValueError, match="bad.npz"):
            CRF.load(bad)


@pytest.mark.parametrize("loader", ["archive", "crf"])
def test_random_byte_flips_load_or_raise_value_error(crf_file, tmp_path, loader):
    source = crf_file if loader == "crf" else _small(tmp_path / "good.npz")
    good = source.read_bytes()
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.npz"
    failures = 0
    for _ in range(300):
        raw = bytearray(good)
        for pos in rng.integers(0, len(raw), size=rng.integers(1, 4)):
            raw[pos] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(raw))
        try:
            CRF.load(bad) if loader == "crf" else load_archive(bad, kind=KIND)
        except ValueError as exc:
            assert "bad.npz" in str(exc)
            failures += 1
    assert failures > 200  # most flips are detected (CRC, header or consistency checks)


# -- hostile archives --------------------------------------------------------------------------
def _write(path, manifest, entries):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive.json", manifest if isinstance(manifest, str) else json.dumps(manifest))
        for name, data in entries.items():
            zf.writestr(name, data)


def _npy(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    return buf.getvalue()


def _manifest(declared: dict, /, **top) -> dict:
    out = {"format": persistence.FORMAT_NAME, "format_version": persistence.FORMAT_VERSION, "kind": KIND,
           "metadata": {}, "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape), "file": f"arrays/{i}.npy"}
                                      for i, (name, a) in enumerate(declared.items())}}
    out.update(top)
    return out


def test_unused_entries_are_never_read(tmp_path):
    w = np.arange(3.0)
    path = tmp_path / "extra.npz"
    _write(path, _manifest({"w": w}), {"arrays/0.npy": _npy(w), "bomb.npy": b"\0" * 5_000_000})
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("bomb.npy")
    raw[info.header_offset + 30 + len("bomb.npy") + 10] ^= 0xFF  # corrupt the unused entry's data
    path.write_bytes(bytes(raw))
    meta, arrays = load_archive(path, kind=KIND)
    assert meta == {} and list(arrays) == ["w"]
    np.testing.assert_array_equal(arrays["w"], w)


def test_an_entry_larger_than_declared_is_refused_before_decompressing(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    _write(path, _manifest({"w": np.zeros(4)}), {"arrays/0.npy": _npy(np.zeros(1_000_000))})
    read = []
    original = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: read.append(n) or original(self, n))
    with pytest.raises(ValueError, match="declares 8000128 bytes"):
        load_archive(path, kind=KIND)
    assert len(read) == 1  # only archive.json was decompressed


def test_an_entry_lying_about_its_size_inflates_no_further_than_declared(tmp_path, monkeypatch):
    path = tmp_path / "liar.npz"
    small = _npy(np.zeros(4))
    _write(path, _manifest({"w": np.zeros(4)}), {"arrays/0.npy": _npy(np.zeros(1_000_000))})
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("arrays/0.npy")
    # rewrite the uncompressed size in the local header and the central directory
    actual = struct.pack("<I", info.file_size)
    fake = struct.pack("<I", len(small))
    assert raw.count(actual) >= 2
    raw = bytearray(bytes(raw).replace(actual, fake))
    path.write_bytes(bytes(raw))
    sizes = []
    original = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read",
                        lambda self, n=-1: sizes.append(len(out := original(self, n))) or out)
    with pytest.raises(ValueError, match="liar.npz"):
        load_archive(path, kind=KIND)
    assert max(sizes) <= len(small) + 4096 + 1


def test_total_size_bound(tmp_path):
    path = _small(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="max_bytes"):
        load_archive(path, kind=KIND, max_bytes=8)


@pytest.mark.parametrize("text, match", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    ('{"format": NaN}', "NaN"),
    ("{not json", "not valid JSON"),
    ('"a string"', "not a crflearn archive"),
    ("\udcff".encode("utf-8", "surrogatepass"), "m.npz"),
])
def test_bad_manifest_text(tmp_path, text, match):
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive.json", text)
    with pytest.raises(ValueError, match=match):
        load_archive(path, kind=KIND)


def test_manifest_size_bound(tmp_path):
    path = tmp_path / "m.npz"
    save_archive(path, kind=KIND, metadata={"pad": "x" * 10_000}, arrays={})
    assert load_archive(path, kind=KIND)[0]["pad"] == "x" * 10_000
    with pytest.raises(ValueError, match="more than the 1000"):
        load_archive(path, kind=KIND, max_metadata_bytes=1000)


@pytest.mark.parametrize("change, match", [
    ({"format_version": True}, "version True"),
    ({"format_version": 2.0}, "version 2.0"),
    ({"format_version": 1}, "version 1"),
    ({"kind": "other"}, "'other' archive"),
    ({"arrays": {"w": {"dtype": "|O", "shape": [3], "file": "arrays/0.npy"}}}, "unsupported dtype"),
    ({"arrays": {"w": {"dtype": "<f8", "shape": [-3], "file": "arrays/0.npy"}}}, "malformed shape"),
    ({"arrays": {"w": {"dtype": "<f8", "shape": [True], "file": "arrays/0.npy"}}}, "malformed shape"),
    ({"arrays": {"w": {"dtype": "<f8", "shape": [3], "file": "../../etc/passwd"}}}, "entry name"),
    ({"arrays": {"w": {"dtype": "<f8", "shape": [3], "file": "arrays/9.npy"}}}, "arrays/9.npy"),
    ({"arrays": {"w": {"dtype": "<f4", "shape": [6], "file": "arrays/0.npy"}}}, "declares"),
    ({"arrays": {"w": {"dtype": "<f8", "shape": [1, 3], "file": "arrays/0.npy"}}}, "declares"),
    ({"metadata": []}, "'metadata'"),
])
def test_inconsistent_manifest(tmp_path, change, match):
    w = np.arange(3.0)
    path = tmp_path / "m.npz"
    _write(path, _manifest({"w": w}, **change), {"arrays/0.npy": _npy(w)})
    with pytest.raises(ValueError, match=match):
        load_archive(path, kind=KIND)


def test_pickled_entry_is_refused(tmp_path):
    obj = np.array([{"a": 1}], dtype=object)
    path = tmp_path / "m.npz"
    buf = __import__("io").BytesIO()
    np.lib.format.write_array(buf, obj, allow_pickle=True)
    _write(path, _manifest({"w": np.zeros(1)}), {"arrays/0.npy": buf.getvalue()})
    with pytest.raises(ValueError, match="m.npz"):
        load_archive(path, kind=KIND)


def test_finite_arrays_required_where_declared(tmp_path):
    path = tmp_path / "m.npz"
    save_archive(path, kind=KIND, metadata={}, arrays={"w": np.array([1.0, np.inf]), "h": np.array([np.nan])})
    load_archive(path, kind=KIND, finite=())  # history-like columns may hold NaN
    for name in ("w", "h", "missing"):
        with pytest.raises(ValueError, match=name):
            load_archive(path, kind=KIND, finite=(name,))


def test_unsupported_encrypted_or_compression_entries(tmp_path):
    w = np.arange(3.0)
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive.json", json.dumps(_manifest({"w": w})))
        zf.writestr("arrays/0.npy", _npy(w))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offsets = [(i.header_offset, i.filename) for i in zf.infolist()]
    cd = bytes(raw).rfind(b"PK\x01\x02")  # last central directory record: arrays/0.npy
    for flag_pos in (offsets[1][0] + 6, cd + 8):
        raw[flag_pos] |= 0x1  # "encrypted": zipfile raises RuntimeError
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="m.npz"):
        load_archive(path, kind=KIND)
    raw = bytearray(path.read_bytes())
    for flag_pos in (offsets[1][0] + 6, cd + 8):
        raw[flag_pos] &= 0xFE
    for method_pos in (offsets[1][0] + 8, cd + 10):
        raw[method_pos] = 99  # unknown compression: zipfile raises NotImplementedError
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="m.npz"):
        load_archive(path, kind=KIND)


def test_save_rejects_what_cannot_be_loaded(tmp_path):
    with pytest.raises(TypeError, match="obj"):
        save_archive(tmp_path / "m", kind=KIND, metadata={}, arrays={"obj": np.array([object()])})
    with pytest.raises(ValueError, match="NaN"):
        save_archive(tmp_path / "m", kind=KIND, metadata={"x": float("nan")}, arrays={})
    with pytest.raises(TypeError):
        save_archive(tmp_path / "m", kind=KIND, metadata={"x": object()}, arrays={})
    assert not list(tmp_path.iterdir())


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_archive(tmp_path / "nope.npz", kind=KIND)
