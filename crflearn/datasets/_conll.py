"""CoNLL-style column files (one token per line, blank line between sentences) and token features."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["read_conll", "write_conll", "token_features", "sentence_features", "load_tiny_pos",
           "tiny_pos_path"]


def _check_column(value, name: str, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer column index{' or None' if allow_none else ''}, "
                        f"got {value!r}")
    return value


def read_conll(path_or_lines: str | os.PathLike | Iterable[str], columns: Sequence = (0, -1), *,
               encoding: str = "utf-8") -> tuple[list[list[str]], list[list[str]] | None]:
    """Read sentences and tag sequences from CoNLL-style text.

    The format is one token per line with whitespace-separated columns, and a
    blank line between sentences. Lines starting with ``-DOCSTART-`` (document
    separators of the CoNLL shared tasks) and lines starting with ``#``
    (comments) are skipped.

    Parameters
    ----------
    path_or_lines : str, path-like or iterable of str
        A file name, or the lines themselves (e.g. ``text.splitlines()`` or an
        open file).
    columns : (int, int or None), default (0, -1)
        Column index of the token and of the tag (negative indices count from
        the end, so ``-1`` is the last column, as in CoNLL-2003 NER files).
        A tag column of ``None`` reads unlabelled text.
    encoding : str, default "utf-8"

    Returns
    -------
    sentences : list of list of str
        Tokens of each sentence.
    tags : list of list of str, or None
        Tags of each sentence (None when the tag column is None).

    Raises
    ------
    FileNotFoundError
        If a file name is given and does not exist.
    ValueError
        If a line lacks the requested columns (the message gives the line number).

    Examples
    --------
    >>> sents, tags = read_conll(["The DET", "cat NOUN", "", "Hi INTJ"])
    >>> sents, tags
    ([['The', 'cat'], ['Hi']], [['DET', 'NOUN'], ['INTJ']])
    """
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence) or len(columns) != 2:
        raise TypeError(f"columns must be a pair (token_column, tag_column), got {columns!r}")
    tok_col = _check_column(columns[0], "columns[0]", False)
    tag_col = _check_column(columns[1], "columns[1]", True)
    if isinstance(path_or_lines, (str, os.PathLike)):
        path = Path(path_or_lines)
        if not path.is_file():
            raise FileNotFoundError(f"CoNLL file not found: {str(path)!r}")
        with open(path, encoding=encoding) as handle:
            return _parse(handle, tok_col, tag_col, str(path))
    if isinstance(path_or_lines, bytes):
        raise TypeError("path_or_lines must be a file name or an iterable of str lines, got bytes")
    try:
        lines = iter(path_or_lines)
    except TypeError:
        raise TypeError("path_or_lines must be a file name or an iterable of str lines, "
                        f"got {type(path_or_lines).__name__}") from None
    return _parse(lines, tok_col, tag_col, "<lines>")


def _parse(lines: Iterable[str], tok_col: int, tag_col: int | None, where: str):
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    cur_tok: list[str] = []
    cur_tag: list[str] = []
    needed = max(c + 1 if c >= 0 else -c for c in (tok_col, tag_col) if c is not None)
    if tag_col is not None:
        needed = max(needed, 2)  # the token and the tag must be distinct columns
    for lineno, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise TypeError(f"{where}: line {lineno} is {type(line).__name__}, expected str")
        fields = line.split()
        if not fields:
            if cur_tok:
                sentences.append(cur_tok)
                tags.append(cur_tag)
                cur_tok, cur_tag = [], []
            continue
        if fields[0].startswith("-DOCSTART-") or fields[0].startswith("#"):
            continue
        if len(fields) < needed:
            raise ValueError(f"{where}: line {lineno} has {len(fields)} column(s), expected at least "
                             f"{needed}: {line.rstrip()!r}")
        cur_tok.append(fields[tok_col])
        if tag_col is not None:
            cur_tag.append(fields[tag_col])
    if cur_tok:
        sentences.append(cur_tok)
        tags.append(cur_tag)
    return sentences, (tags if tag_col is not None else None)


def write_conll(path: str | os.PathLike, sentences: Sequence[Sequence[str]],
                tags: Sequence[Sequence] | None = None) -> None:
    """Write sentences (and tags) as CoNLL text: ``token<TAB>tag`` lines, blank line between sentences.

    Parameters
    ----------
    path : str or path-like
    sentences : list of list of str
    tags : list of list, optional
        One tag per token; written with ``str``.
    """
    if tags is not None and len(tags) != len(sentences):
        raise ValueError(f"tags has {len(tags)} sequences but sentences has {len(sentences)}")
    with open(path, "w", encoding="utf-8") as handle:
        for i, sent in enumerate(sentences):
            if tags is not None and len(tags[i]) != len(sent):
                raise ValueError(f"tags[{i}] has {len(tags[i])} tags but sentence {i} has {len(sent)} tokens")
            for j, tok in enumerate(sent):
                handle.write(f"{tok}\t{tags[i][j]}\n" if tags is not None else f"{tok}\n")
            handle.write("\n")


def _shape(word: str) -> str:
    """Word shape with runs collapsed: 'Paris' -> 'Xx', 'A4-b' -> 'Xd-x'."""
    mapped = re.sub(r"[A-Z]", "X", word)
    mapped = re.sub(r"[a-z]", "x", mapped)
    mapped = re.sub(r"[0-9]", "d", mapped)
    return re.sub(r"(.)\1+", r"\1", mapped)


def _word_features(word: str, prefix: str) -> dict:
    return {
        f"{prefix}word.lower": word.lower(),
        f"{prefix}is_title": float(word.istitle()),
        f"{prefix}is_upper": float(word.isupper()),
    }


def token_features(sentence: Sequence[str]) -> list[dict]:
    """Standard per-token feature dicts for sequence labelling.

    For each token: a bias, the lower-cased word, prefixes and suffixes of
    length 1-3, the collapsed word shape (``"Xx"``, ``"d"``, ...), flags
    ``is_title``, ``is_upper``, ``is_digit``, ``has_hyphen``, ``has_digit``,
    and the lower-cased previous / next word (with their title/upper flags),
    or ``BOS`` / ``EOS`` flags at the sentence boundaries. String values are
    categorical and numeric values are numbers, as
    :class:`sklearn.feature_extraction.DictVectorizer` expects.

    Parameters
    ----------
    sentence : sequence of str
        The tokens of one sentence.

    Returns
    -------
    list of dict
        One dict per token.

    Examples
    --------
    >>> feats = token_features(["Hello", "world"])
    >>> feats[0]["word.lower"], feats[0]["BOS"], feats[1]["-1:word.lower"]
    ('hello', 1.0, 'hello')
    """
    if isinstance(sentence, (str, bytes)):
        raise TypeError("sentence must be a sequence of tokens, not a single string; use text.split()")
    tokens = list(sentence)
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise TypeError(f"sentence[{i}] must be a str token, got {type(tok).__name__}")
    out = []
    n = len(tokens)
    for i, word in enumerate(tokens):
        f = {"bias": 1.0}
        f.update(_word_features(word, ""))
        lower = word.lower()
        for k in (1, 2, 3):
            f[f"prefix{k}"] = lower[:k]
            f[f"suffix{k}"] = lower[-k:]
        f["shape"] = _shape(word)
        f["is_digit"] = float(word.isdigit())
        f["has_digit"] = float(any(c.isdigit() for c in word))
        f["has_hyphen"] = float("-" in word)
        if i == 0:
            f["BOS"] = 1.0
        else:
            f.update(_word_features(tokens[i - 1], "-1:"))
        if i == n - 1:
            f["EOS"] = 1.0
        else:
            f.update(_word_features(tokens[i + 1], "+1:"))
        out.append(f)
    return out


def sentence_features(sentences: Sequence[Sequence[str]]) -> list[list[dict]]:
    """:func:`token_features` of every sentence."""
    return [token_features(s) for s in sentences]


def tiny_pos_path() -> Path:
    """Path of the tiny part-of-speech sample shipped with crflearn (36 sentences, universal tags)."""
    return Path(str(resources.files("crflearn.datasets").joinpath("data", "tiny_pos.conll")))


def load_tiny_pos() -> tuple[list[list[str]], list[list[str]]]:
    """The tiny part-of-speech sample shipped with crflearn.

    36 short English sentences written for crflearn, tagged with universal POS
    tags (DET, NOUN, VERB, ADJ, ADP, PRON, ADV, AUX, NUM, PROPN, CCONJ, INTJ,
    PUNCT). Meant for tests and demos, far too small for a real tagger.

    Returns
    -------
    sentences, tags : lists of list of str
    """
    return read_conll(tiny_pos_path())
