"""Where dataset files are looked for.

Every loader resolves its file the same way (see :func:`find_data_file`):

1. an explicit ``path`` argument (a file, or a directory holding the file) is
   authoritative: when it is given, nothing else is searched;
2. the ``CRFLEARN_DATA`` environment variable (one directory, or several
   separated by :data:`os.pathsep`);
3. ``../shared/datasets`` relative to the current working directory;
4. ``../shared/datasets`` relative to the root of the crflearn source tree.

When no place holds the file a :class:`FileNotFoundError` names every place
that was searched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DATA_ENV_VAR", "candidate_dirs", "find_data_file", "load_npz"]

DATA_ENV_VAR = "CRFLEARN_DATA"

_REPO_ROOT = Path(__file__).resolve().parents[2]


def candidate_dirs() -> list[Path]:
    """Directories searched (in order) when no explicit path is given."""
    dirs: list[Path] = []
    env = os.environ.get(DATA_ENV_VAR, "")
    for part in env.split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    dirs.append(Path.cwd() / ".." / "shared" / "datasets")
    dirs.append(_REPO_ROOT / ".." / "shared" / "datasets")
    unique: list[Path] = []
    seen = set()
    for d in dirs:
        key = os.path.normpath(str(d.absolute()))
        if key not in seen:
            seen.add(key)
            unique.append(Path(key))
    return unique


def find_data_file(filename: str, path: str | os.PathLike | None = None) -> Path:
    """Resolve the location of a dataset file.

    Parameters
    ----------
    filename : str
        File name to look for, e.g. ``"ocr_letters.npz"``.
    path : str or path-like, optional
        A file, or a directory containing ``filename``. When given, it is the
        only place searched.

    Returns
    -------
    pathlib.Path
        An existing file.

    Raises
    ------
    TypeError
        If ``path`` is not a string or path-like.
    FileNotFoundError
        If the file is not found; the message lists every place searched.
    """
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file or directory name, got {type(path).__name__}")
        p = Path(path).expanduser()
        if p.is_file():
            return p
        candidate = p / filename
        if p.is_dir() and candidate.is_file():
            return candidate
        where = str(candidate) if p.is_dir() else str(p)
        raise FileNotFoundError(f"{filename} not found at path={str(p)!r} (looked for {where})")
    searched = []
    for d in candidate_dirs():
        candidate = d / filename
        searched.append(str(candidate))
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{filename} not found; searched: {', '.join(searched)}. Pass path=... or set "
        f"${DATA_ENV_VAR} to the directory holding it")


def load_npz(file: Path, required: dict[str, int]) -> dict[str, np.ndarray]:
    """Load an ``.npz`` archive without pickles and check its arrays.

    Parameters
    ----------
    file : Path
    required : dict
        Array name -> expected number of dimensions.

    Returns
    -------
    dict of ndarray
    """
    try:
        with np.load(file, allow_pickle=False) as archive:
            files = list(archive.files)
            out = {k: archive[k] for k in required if k in files}
    except Exception as exc:  # not a zip, corrupt archive, object arrays needing pickles
        raise ValueError(f"{file} is not a readable .npz archive (loaded without pickles): {exc}") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"{file} lacks the array(s) {missing}; it holds {sorted(files)}")
    for key, ndim in required.items():
        if out[key].ndim != ndim:
            raise ValueError(f"{file}: array {key!r} must be {ndim}-D, got shape {out[key].shape}")
    return out
