"""The snakes loopy-grid task (Nowozin et al., "Decision Tree Fields", ICCV 2011)."""

from __future__ import annotations

import os

import numpy as np

from ..graphs import grid_edges
from ._paths import find_data_file, load_npz

__all__ = ["SNAKES_FILENAME", "SNAKE_COLOURS", "SNAKE_N_STATES", "load_snakes", "snake_grid_features"]

SNAKES_FILENAME = "snakes.npz"

#: The five RGB colours of the snakes images; colour id ``i`` is ``SNAKE_COLOURS[i]``.
SNAKE_COLOURS = np.array([[0, 0, 255], [0, 255, 0], [0, 255, 255], [255, 0, 0], [255, 255, 0]],
                         dtype=np.uint8)
SNAKE_N_STATES = 11
_N_COLOURS = len(SNAKE_COLOURS)
_OUTSIDE = _N_COLOURS  # neighbour value beyond the image border


def _colour_ids(rgb: np.ndarray, where: str) -> np.ndarray:
    """Map (n, 3) RGB rows to ids in 0..4 (ValueError for an unknown colour)."""
    codes = rgb.astype(np.int64) @ np.array([65536, 256, 1])
    palette = SNAKE_COLOURS.astype(np.int64) @ np.array([65536, 256, 1])
    order = np.argsort(palette)
    pos = np.searchsorted(palette[order], codes)
    pos = np.minimum(pos, _N_COLOURS - 1)
    ok = palette[order][pos] == codes
    if not ok.all():
        bad = rgb[np.flatnonzero(~ok)[0]].tolist()
        raise ValueError(f"{where}: colour {bad} is not one of the 5 snake colours {SNAKE_COLOURS.tolist()}")
    return order[pos]


def snake_grid_features(colours) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node features, edges and direction-aware edge features of one snake image.

    Parameters
    ----------
    colours : array-like of int, shape (height, width)
        Colour id ``0..4`` of every cell (see :data:`SNAKE_COLOURS`).

    Returns
    -------
    node_features : ndarray (height * width, 29) float64
        Row-major cells. Columns ``0..4``: one-hot of the cell's colour; then
        four blocks of 6 columns for the neighbour above, below, left and
        right: one-hot of its colour, the 6th column meaning "outside the image".
    edges : ndarray (n_edges, 2) int64
        4-connected grid edges from :func:`crflearn.graphs.grid_edges`
        (``s < t``: horizontal edges point left -> right, vertical ones top -> bottom).
    edge_features : ndarray (n_edges, 51) float64
        Columns ``0..24``: for horizontal edges, the one-hot of the pair
        ``(colour_s, colour_t)`` at ``5 * colour_s + colour_t``; columns
        ``25..49``: the same for vertical edges; column 50: constant 1.
        Pairwise potentials thus depend on the edge direction and on the
        colours at both ends.
    """
    grid = np.asarray(colours)
    if grid.ndim != 2:
        raise ValueError(f"colours must be a 2-D grid of colour ids, got shape {grid.shape}")
    if grid.size == 0:
        raise ValueError("colours is empty")
    if not np.issubdtype(grid.dtype, np.integer):
        raise TypeError(f"colours must hold integer colour ids, got dtype {grid.dtype}")
    if grid.min() < 0 or grid.max() >= _N_COLOURS:
        raise ValueError(f"colours must lie in 0..{_N_COLOURS - 1}, got range "
                         f"{int(grid.min())}..{int(grid.max())}")
    h, w = grid.shape
    grid = grid.astype(np.int64)
    padded = np.full((h + 2, w + 2), _OUTSIDE, dtype=np.int64)
    padded[1:-1, 1:-1] = grid
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    n = h * w
    rows = np.arange(n)
    node = np.zeros((n, _N_COLOURS + 4 * (_N_COLOURS + 1)))
    node[rows, grid.ravel()] = 1.0
    for j, nb in enumerate(neighbours):
        node[rows, _N_COLOURS + j * (_N_COLOURS + 1) + nb.ravel()] = 1.0

    edges = grid_edges(h, w)
    flat = grid.ravel()
    s, t = edges[:, 0], edges[:, 1]
    horizontal = (t - s == 1) & (s // w == t // w)
    pair = _N_COLOURS * flat[s] + flat[t]
    n_pairs = _N_COLOURS * _N_COLOURS
    efeat = np.zeros((len(edges), 2 * n_pairs + 1))
    efeat[np.arange(len(edges)), np.where(horizontal, pair, n_pairs + pair)] = 1.0
    efeat[:, -1] = 1.0
    return np.ascontiguousarray(node), edges, np.ascontiguousarray(efeat)


def _split_images(x, y, shapes, file, part: str):
    if x.shape[1:] != (3,):
        raise ValueError(f"{file}: 'x_{part}' must have shape (cells, 3), got {x.shape}")
    if shapes.shape[1:] != (2,) or np.any(shapes < 1):
        raise ValueError(f"{file}: 'shapes_{part}' must be (images, 2) positive sizes, got {shapes.shape}")
    sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1]
    if int(sizes.sum()) != len(x) or len(y) != len(x):
        raise ValueError(f"{file}: 'shapes_{part}' cover {int(sizes.sum())} cells but 'x_{part}' has "
                         f"{len(x)} and 'y_{part}' {len(y)}")
    if y.size and (y.min() < 0 or y.max() >= SNAKE_N_STATES):
        raise ValueError(f"{file}: 'y_{part}' labels must lie in 0..{SNAKE_N_STATES - 1}")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for k, (h, w) in enumerate(shapes):
        sl = slice(offsets[k], offsets[k + 1])
        yield int(h), int(w), x[sl], y[sl].astype(np.int64)


def load_snakes(path: str | os.PathLike | None = None, *, raw: bool = False):
    """Load the snakes data set as 4-connected grids with direction-aware edge features.

    A snake of ten cells wanders over a small grid; each cell is coloured by
    the direction the snake moved there (or background). The task labels the
    cells 0 (background) and 1..10 from head to tail, which needs pairwise
    potentials that depend on both endpoint colours and on the edge direction.

    Parameters
    ----------
    path : str or path-like, optional
        ``snakes.npz`` or the directory holding it; by default searched in
        ``$CRFLEARN_DATA`` and ``../shared/datasets``.
    raw : bool, default False
        Return the raw images instead of graph features.

    Returns
    -------
    X_train, y_train, X_test, y_test : lists
        By default ``X`` items are ``(node_features, edges, edge_features)``
        tuples built by :func:`snake_grid_features` (29 node features, 51 edge
        features) and ``y`` items int64 arrays of ``height * width`` labels in
        ``0..10`` (row-major). With ``raw=True``, ``X`` items are uint8 RGB
        images ``(height, width, 3)`` and ``y`` items int64 label grids
        ``(height, width)``.

    Raises
    ------
    FileNotFoundError
        If the data file cannot be found (the message lists the places searched).
    ValueError
        If the file is malformed (missing arrays, inconsistent shapes, unknown colours).

    References
    ----------
    S. Nowozin, C. Rother, S. Bagon, T. Sharp, B. Yao and P. Kohli. Decision tree
    fields. ICCV 2011.
    """
    file = find_data_file(SNAKES_FILENAME, path)
    arrays = load_npz(file, {"x_train": 2, "y_train": 1, "shapes_train": 2,
                             "x_test": 2, "y_test": 1, "shapes_test": 2})
    out = []
    for part in ("train", "test"):
        X, Y = [], []
        for h, w, rgb, lab in _split_images(arrays[f"x_{part}"], arrays[f"y_{part}"],
                                            arrays[f"shapes_{part}"], file, part):
            if raw:
                X.append(np.ascontiguousarray(rgb.reshape(h, w, 3)))
                Y.append(lab.reshape(h, w))
            else:
                ids = _colour_ids(rgb, f"{file} ({part})").reshape(h, w)
                X.append(snake_grid_features(ids))
                Y.append(lab)
        out.extend([X, Y])
    return tuple(out)
