"""A versioned archive of (JSON metadata, named arrays): how crflearn saves models without pickle.

This module knows no estimator class: :class:`crflearn.CRF` and
:class:`crflearn.NeuralCRF` build their own ``metadata`` dict and ``arrays``
and call :func:`save_archive` / :func:`load_archive`.

Format (version 2)
------------------
A ZIP file (so ``numpy.load`` and ``unzip`` can inspect it) holding

* ``archive.json`` (stored first): UTF-8 JSON ``{"format": "crflearn-archive",
  "format_version": 2, "kind": <kind>, "crflearn_version": ..., "arrays":
  {name: {"dtype": "<f8", "shape": [...], "file": "arrays/<i>.npy"}},
  "metadata": <caller's metadata>}``;
* one ``.npy`` entry (deflate-compressed) per declared array.

Guarantees
----------
* **Atomic writes**: a path is written through a temporary file in the same
  directory (flush, fsync, ``os.replace``); an interrupted or failed save leaves
  the previous file untouched (:func:`atomic_write`).
* **Safe, bounded loading**: no pickle; only ``archive.json`` and the entries it
  declares are read; every entry's declared uncompressed size is checked against
  the dtype and shape in the manifest *before* it is decompressed, and reads stop
  at that size, so an archive cannot inflate beyond what it declares (``max_bytes``
  bounds the total); the JSON is bounded in size (``max_metadata_bytes``) and
  nesting depth (:data:`MAX_JSON_DEPTH`) and must be strict (no NaN/Infinity);
  dtypes are restricted to booleans, integers, floats and fixed-width strings;
  arrays named in ``finite`` must be all finite. Every format problem is a
  :class:`ValueError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import tempfile
import zipfile
import zlib
from typing import IO, Collection, Iterator, Mapping

import numpy as np

__all__ = ["save_archive", "load_archive", "atomic_write", "FORMAT_NAME", "FORMAT_VERSION",
           "MAX_JSON_DEPTH"]

FORMAT_NAME = "crflearn-archive"
FORMAT_VERSION = 2
MAX_JSON_DEPTH = 32
MAX_METADATA_BYTES = 16 * 2**20
MAX_BYTES = 2**33  # 8 GiB of arrays, uncompressed
_MANIFEST = "archive.json"
_MAX_NPY_HEADER = 4096
_MAX_NDIM = 8
_DTYPE = re.compile(r"^(\|b1|[<>|][iu][1248]|[<>][f][248]|[<>]U\d{1,6}|\|S\d{1,6})$")
# everything a damaged or hostile archive can raise from zipfile, zlib or numpy's npy reader
_FORMAT_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
                  struct.error, KeyError, ValueError, TypeError, OverflowError, UnicodeDecodeError,
                  SyntaxError, RecursionError, MemoryError)


# -- writing --------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open ``path`` for binary writing so that it is replaced only on success.

    Writes go to a temporary file in the same directory; on leaving the block
    normally it is flushed, fsynced and renamed over ``path`` (``os.replace``);
    on any exception (``KeyboardInterrupt`` included) it is removed and ``path``
    is left as it was.

    Parameters
    ----------
    path : str or path-like
        Destination file.

    Yields
    ------
    file object
        A binary file open for writing.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where directories can be fsynced
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _check_array(name, value) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise TypeError(f"array names must be non-empty strings, got {name!r:.80}")
    arr = np.ascontiguousarray(value)
    if not _DTYPE.match(arr.dtype.str) or arr.ndim > _MAX_NDIM:
        raise TypeError(f"array {name!r} of dtype {arr.dtype} and {arr.ndim} dimensions cannot be saved "
                        "(booleans, integers, floats and fixed-width strings of at most "
                        f"{_MAX_NDIM} dimensions only)")
    return arr


def _write_zip(handle: IO[bytes], manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_MANIFEST, json.dumps(manifest, allow_nan=False))
        for name, arr in arrays.items():
            with zf.open(manifest["arrays"][name]["file"], "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, arr, allow_pickle=False)


def save_archive(path, *, kind: str, metadata: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``metadata`` (JSON) and named ``arrays`` to a crflearn archive.

    Parameters
    ----------
    path : str, path-like or writable binary file object
        Destination; a path is written atomically and used exactly as given
        (no suffix added).
    kind : str
        What the archive holds (e.g. ``"crflearn.CRF"``); :func:`load_archive`
        refuses an archive of another kind.
    metadata : dict
        Strict JSON content (str keys; no NaN or infinity; at most
        :data:`MAX_JSON_DEPTH` levels deep).
    arrays : dict of str to ndarray
        Boolean, integer, float or fixed-width string arrays.

    Raises
    ------
    TypeError
        If ``metadata`` is not JSON-serialisable or an array has an unsupported dtype.
    ValueError
        If ``metadata`` holds NaN or infinity.
    """
    from . import __version__

    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind must be a non-empty string, got {kind!r:.80}")
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    checked = {name: _check_array(name, value) for name, value in arrays.items()}
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind,
                "crflearn_version": __version__,
                "arrays": {name: {"dtype": arr.dtype.str, "shape": list(arr.shape), "file": f"arrays/{i}.npy"}
                           for i, (name, arr) in enumerate(checked.items())},
                "metadata": dict(metadata)}
    try:
        text = json.dumps(manifest, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"metadata cannot be saved: {exc} (NaN and infinity are not allowed)") from None
    if _depth(json.loads(text)) > MAX_JSON_DEPTH:
        raise ValueError(f"metadata is nested deeper than {MAX_JSON_DEPTH - 1} levels")
    if hasattr(path, "write"):
        _write_zip(path, manifest, checked)
        return
    with atomic_write(path) as handle:
        _write_zip(handle, manifest, checked)


# -- reading --------------------------------------------------------------------------------------
def _depth(value) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _text_depth(text: str) -> int:
    """Maximum bracket depth of JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        char = token.group()
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str):
    raise ValueError(f"the JSON constant {name} is not allowed")


def _read_entry(zf: zipfile.ZipFile, name: str, limit: int, what: str) -> bytes:
    """The bytes of one entry, refusing one declared or inflating larger than ``limit``."""
    info = zf.getinfo(name)  # KeyError when missing
    if info.file_size > limit:
        raise ValueError(f"{what} declares {info.file_size} bytes, more than the {limit} expected")
    with zf.open(info) as entry:
        data = entry.read(limit + 1)
    if len(data) != info.file_size:
        raise ValueError(f"{what} holds {len(data)} bytes but declares {info.file_size}")
    return data


def _read_manifest(zf: zipfile.ZipFile, kind: str, max_metadata_bytes: int) -> dict:
    text = _read_entry(zf, _MANIFEST, max_metadata_bytes, f"{_MANIFEST!r}").decode("utf-8")
    if _text_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"its metadata is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        manifest = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"its metadata is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"it is not a crflearn archive (no {FORMAT_NAME!r} format tag)")
    version = manifest.get("format_version")
    if type(version) is not int or not 2 <= version <= FORMAT_VERSION:
        raise ValueError(f"it has archive format version {version!r:.40}; this crflearn reads version "
                         f"{FORMAT_VERSION} (re-save older models; upgrade crflearn for newer ones)")
    if manifest.get("kind") != kind:
        raise ValueError(f"it holds a {manifest.get('kind')!r:.60} archive, not a {kind!r} archive")
    if not isinstance(manifest.get("metadata"), dict) or not isinstance(manifest.get("arrays"), dict):
        raise ValueError("its manifest has no 'metadata' or 'arrays' dict")
    return manifest


def _declared(name: str, spec) -> tuple[np.dtype, tuple[int, ...], str, int]:
    """Validate one manifest array entry; return (dtype, shape, entry name, data bytes)."""
    if not isinstance(spec, dict):
        raise ValueError(f"array {name!r:.60} has a malformed manifest entry")
    dtype, shape, file = spec.get("dtype"), spec.get("shape"), spec.get("file")
    if not isinstance(dtype, str) or not _DTYPE.match(dtype):
        raise ValueError(f"array {name!r:.60} has the unsupported dtype {dtype!r:.40}")
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"array {name!r:.60} has the malformed shape {shape!r:.60}")
    if not isinstance(file, str) or not re.fullmatch(r"arrays/\d{1,9}\.npy", file):
        raise ValueError(f"array {name!r:.60} has the malformed entry name {file!r:.60}")
    dt = np.dtype(dtype)
    return dt, tuple(shape), file, int(np.prod(shape, dtype=object)) * dt.itemsize


def _read_array(zf: zipfile.ZipFile, name: str, spec, budget: int) -> np.ndarray:
    dtype, shape, file, nbytes = _declared(name, spec)
    if nbytes > budget:
        raise ValueError(f"array {name!r:.60} declares {nbytes} bytes, over the max_bytes limit")
    data = _read_entry(zf, file, nbytes + _MAX_NPY_HEADER, f"array {name!r:.60}")
    arr = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    if arr.dtype != dtype or arr.shape != shape:
        raise ValueError(f"array {name!r:.60} holds {arr.dtype} {arr.shape}, the manifest declares "
                         f"{dtype} {shape}")
    return arr


def load_archive(path, *, kind: str, finite: Collection[str] = (), max_bytes: int = MAX_BYTES,
                 max_metadata_bytes: int = MAX_METADATA_BYTES) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an archive written by :func:`save_archive`, safely.

    Parameters
    ----------
    path : str, path-like or readable, seekable binary file object
    kind : str
        The kind the caller expects (as given to :func:`save_archive`).
    finite : collection of str, default=()
        Names of float arrays that must be present and hold only finite values.
    max_bytes : int, default=8 GiB
        Refuse an archive whose arrays declare more uncompressed bytes in total.
    max_metadata_bytes : int, default=16 MiB
        Refuse a larger JSON manifest.

    Returns
    -------
    metadata : dict
        The caller's metadata as saved.
    arrays : dict of str to ndarray
        The declared arrays (other entries of the file are never read).

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
        If ``path`` cannot be opened.
    ValueError
        If the file is not a crflearn archive of this ``kind``, is damaged, has
        an unsupported format version, exceeds the bounds, or an array in
        ``finite`` is missing or not finite. The message names the file.
    """
    where = "the file object" if hasattr(path, "read") else repr(os.fspath(path))
    source = path if hasattr(path, "read") else open(os.fspath(path), "rb")  # OSError: not a format error
    owned = contextlib.nullcontext() if source is path else source
    try:
        with owned, zipfile.ZipFile(source) as zf:
            manifest = _read_manifest(zf, kind, max_metadata_bytes)
            arrays, budget = {}, max_bytes
            for name, spec in manifest["arrays"].items():
                arrays[name] = _read_array(zf, name, spec, budget)
                budget -= arrays[name].nbytes
        for name in finite:
            arr = arrays.get(name)
            if arr is None or arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
                raise ValueError(f"array {name!r} is missing, not floating point or not finite")
    except _FORMAT_ERRORS as exc:
        raise ValueError(f"{where} is not a valid {kind} archive: {exc}") from None
    return manifest["metadata"], arrays
