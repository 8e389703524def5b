"""Data sets and data helpers.

* Real benchmarks read from ``.npz`` files that are **not** shipped with
  crflearn: :func:`load_ocr` (handwritten words, chains) and
  :func:`load_snakes` (loopy grids). Files are looked for in an explicit
  ``path``, then ``$CRFLEARN_DATA``, then ``../shared/datasets``.
* CoNLL text: :func:`read_conll`, :func:`write_conll`, :func:`token_features`
  and a tiny part-of-speech sample (:func:`load_tiny_pos`).
* Synthetic tasks with ``random_state``: :func:`make_chain_hmm`,
  :func:`make_grid_potts`, :func:`make_random_graphs`, :func:`make_multilabel_graph`.
"""

from __future__ import annotations

from ._conll import (load_tiny_pos, read_conll, sentence_features, tiny_pos_path, token_features,
                     write_conll)
from ._ocr import OCR_LETTERS, load_ocr
from ._paths import DATA_ENV_VAR, candidate_dirs, find_data_file
from ._snakes import SNAKE_COLOURS, SNAKE_N_STATES, load_snakes, snake_grid_features
from ._multilabel import make_multilabel_graph
from ._synthetic import make_chain_hmm, make_grid_potts, make_random_graphs

__all__ = [
    "DATA_ENV_VAR",
    "OCR_LETTERS",
    "SNAKE_COLOURS",
    "SNAKE_N_STATES",
    "candidate_dirs",
    "find_data_file",
    "load_ocr",
    "load_snakes",
    "load_tiny_pos",
    "make_chain_hmm",
    "make_multilabel_graph",
    "make_grid_potts",
    "make_random_graphs",
    "read_conll",
    "sentence_features",
    "snake_grid_features",
    "tiny_pos_path",
    "token_features",
    "write_conll",
]
