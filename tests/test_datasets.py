"""Tests for crflearn.datasets: loaders, path resolution, CoNLL, generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from crflearn.datasets import (OCR_LETTERS, SNAKE_COLOURS, find_data_file, load_ocr, load_snakes,
                               load_tiny_pos, make_chain_hmm, make_grid_potts, make_random_graphs,
                               read_conll, snake_grid_features, token_features, write_conll)
from crflearn.graphs import grid_edges

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path | None:
    for d in (os.environ.get("CRFLEARN_DATA"), REPO / ".." / "shared" / "datasets"):
        if d and (Path(d) / "ocr_letters.npz").is_file() and (Path(d) / "snakes.npz").is_file():
            return Path(d)
    return None


SHARED = _shared_dir()
needs_data = pytest.mark.skipif(SHARED is None, reason="shared datasets not found")


# ----------------------------------------------------------------------------------------
# tiny synthetic npz files
# ----------------------------------------------------------------------------------------
def _write_tiny_ocr(path: Path, rng) -> dict:
    lengths = np.array([3, 4, 2, 5, 3, 3, 4, 2, 3, 3, 4, 2], dtype=np.int32)
    folds = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1], dtype=np.int8)
    n = int(lengths.sum())
    pixels = rng.randint(0, 2, size=(n, 128)).astype(np.uint8)
    labels = rng.randint(0, 26, size=n).astype(np.int8)
    words = np.array(["".join(OCR_LETTERS[v] for v in labels[a:b])
                      for a, b in zip(np.r_[0, np.cumsum(lengths)[:-1]], np.cumsum(lengths))])
    np.savez(path, pixels=pixels, labels=labels, lengths=lengths, folds=folds, words=words)
    return dict(pixels=pixels, labels=labels, lengths=lengths, folds=folds, words=words)


def test_load_ocr_protocols_on_tiny_file(tmp_path):
    rng = np.random.RandomState(0)
    arrays = _write_tiny_ocr(tmp_path / "ocr_letters.npz", rng)
    X_tr, y_tr, X_te, y_te = load_ocr("large", tmp_path)  # directory form
    assert len(X_tr) == 10 and len(X_te) == 2  # fold 0 holds words 0 and 10
    np.testing.assert_array_equal(X_te[0], arrays["pixels"][:3].astype(float))
    np.testing.assert_array_equal(y_te[1], arrays["labels"][32:36])
    assert all(x.dtype == np.float64 and x.shape[1] == 128 for x in X_tr)
    assert all(lab.dtype == np.int64 for lab in y_tr)
    assert [len(x) for x in X_tr] == [len(v) for v in y_tr]

    X_tr, y_tr, X_te, y_te = load_ocr("small", tmp_path / "ocr_letters.npz")  # file form
    assert len(X_tr) == 2 and len(X_te) == 10  # fold 1 holds words 1 and 11
    assert [len(x) for x in X_tr] == [4, 2]

    X_tr, _, X_te, _, w_tr, w_te = load_ocr("large", tmp_path, fold=3, return_words=True)
    assert len(X_te) == 1 and w_te == [str(arrays["words"][3])]
    assert len(w_tr) == 11


def test_load_ocr_bad_arguments(tmp_path):
    _write_tiny_ocr(tmp_path / "ocr_letters.npz", np.random.RandomState(1))
    with pytest.raises(ValueError, match="protocol"):
        load_ocr("medium", tmp_path)
    with pytest.raises(ValueError, match="fold"):
        load_ocr("large", tmp_path, fold=10)
    with pytest.raises(TypeError, match="fold"):
        load_ocr("large", tmp_path, fold=1.5)


def test_load_ocr_malformed_file(tmp_path):
    np.savez(tmp_path / "ocr_letters.npz", pixels=np.zeros((5, 128)), labels=np.zeros(5))
    with pytest.raises(ValueError, match="lengths"):
        load_ocr(path=tmp_path)
    np.savez(tmp_path / "ocr_letters.npz", pixels=np.zeros((5, 100)), labels=np.zeros(5),
             lengths=np.array([5]), folds=np.array([0]))
    with pytest.raises(ValueError, match="128 columns"):
        load_ocr(path=tmp_path)
    np.savez(tmp_path / "ocr_letters.npz", pixels=np.zeros((5, 128)), labels=np.zeros(5),
             lengths=np.array([4]), folds=np.array([0]))
    with pytest.raises(ValueError, match="sum to 5"):
        load_ocr(path=tmp_path)
    (tmp_path / "bad.npz").write_text("not a zip file")
    with pytest.raises(ValueError, match="not a readable"):
        load_ocr(path=tmp_path / "bad.npz")


def test_missing_file_names_every_place_searched(tmp_path, monkeypatch):
    env_dir = tmp_path / "nowhere"
    monkeypatch.setenv("CRFLEARN_DATA", str(env_dir))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        find_data_file("no_such_file.npz")
    message = str(info.value)
    assert str(env_dir / "no_such_file.npz") in message
    assert str((tmp_path / ".." / "shared" / "datasets").resolve()) in message or \
        os.path.normpath(str(tmp_path / ".." / "shared" / "datasets")) in message
    assert os.path.normpath(str(REPO / ".." / "shared" / "datasets" / "no_such_file.npz")) in message
    assert "CRFLEARN_DATA" in message
    # an explicit path is authoritative and named in the error
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_ocr(path=env_dir)
    with pytest.raises(TypeError, match="path"):
        load_ocr(path=3)


def test_env_var_is_searched(tmp_path, monkeypatch):
    _write_tiny_ocr(tmp_path / "ocr_letters.npz", np.random.RandomState(2))
    monkeypatch.setenv("CRFLEARN_DATA", os.pathsep.join([str(tmp_path / "empty"), str(tmp_path)]))
    assert find_data_file("ocr_letters.npz") == tmp_path / "ocr_letters.npz"
    assert len(load_ocr("large")[0]) == 10


def _write_tiny_snakes(path: Path, rng) -> dict:
    out = {}
    for part, shapes in (("train", [(3, 4), (2, 2)]), ("test", [(4, 3)])):
        n = sum(h * w for h, w in shapes)
        ids = rng.randint(0, 5, size=n)
        out[f"x_{part}"] = SNAKE_COLOURS[ids]
        out[f"y_{part}"] = rng.randint(0, 11, size=n).astype(np.uint8)
        out[f"shapes_{part}"] = np.array(shapes, dtype=np.int32)
        out[f"ids_{part}"] = ids
    np.savez(path, **{k: v for k, v in out.items() if not k.startswith("ids")})
    return out


def test_load_snakes_on_tiny_file(tmp_path):
    arrays = _write_tiny_snakes(tmp_path / "snakes.npz", np.random.RandomState(3))
    X_tr, y_tr, X_te, y_te = load_snakes(tmp_path)
    assert len(X_tr) == 2 and len(X_te) == 1
    feats, edges, efeats = X_tr[0]
    assert feats.shape == (12, 29) and efeats.shape == (len(edges), 51)
    np.testing.assert_array_equal(edges, grid_edges(3, 4))
    np.testing.assert_array_equal(y_tr[0], arrays["y_train"][:12])
    # own-colour one-hot
    np.testing.assert_array_equal(feats[:, :5].argmax(1), arrays["ids_train"][:12])
    raw = load_snakes(tmp_path, raw=True)
    assert raw[0][0].shape == (3, 4, 3) and raw[1][0].shape == (3, 4)
    np.testing.assert_array_equal(raw[2][0].reshape(-1, 3), arrays["x_test"])


def test_load_snakes_rejects_unknown_colour(tmp_path):
    arrays = _write_tiny_snakes(tmp_path / "snakes.npz", np.random.RandomState(4))
    arrays["x_train"] = arrays["x_train"].copy()
    arrays["x_train"][2] = [1, 2, 3]
    np.savez(tmp_path / "snakes.npz", **{k: v for k, v in arrays.items() if not k.startswith("ids")})
    with pytest.raises(ValueError, match=r"\[1, 2, 3\]"):
        load_snakes(tmp_path)
    assert load_snakes(tmp_path, raw=True)[0][0][0, 2].tolist() == [1, 2, 3]


def test_snake_grid_features_brute_force():
    rng = np.random.RandomState(5)
    grid = rng.randint(0, 5, size=(4, 3))
    feats, edges, efeats = snake_grid_features(grid)
    h, w = grid.shape
    for r in range(h):
        for c in range(w):
            v = r * w + c
            expected = np.zeros(29)
            expected[grid[r, c]] = 1
            for j, (dr, dc) in enumerate([(-1, 0), (1, 0), (0, -1), (0, 1)]):
                rr, cc = r + dr, c + dc
                val = grid[rr, cc] if 0 <= rr < h and 0 <= cc < w else 5
                expected[5 + 6 * j + val] = 1
            np.testing.assert_array_equal(feats[v], expected)
    for e, (s, t) in enumerate(edges):
        (rs, cs), (rt, ct) = divmod(int(s), w), divmod(int(t), w)
        expected = np.zeros(51)
        expected[-1] = 1
        if rs == rt:  # horizontal, left -> right
            assert ct == cs + 1
            expected[5 * grid[rs, cs] + grid[rt, ct]] = 1
        else:  # vertical, top -> bottom
            assert rt == rs + 1 and ct == cs
            expected[25 + 5 * grid[rs, cs] + grid[rt, ct]] = 1
        np.testing.assert_array_equal(efeats[e], expected)
    with pytest.raises(ValueError, match="colours"):
        snake_grid_features(np.full((2, 2), 7))
    with pytest.raises(ValueError, match="2-D"):
        snake_grid_features(np.zeros(4, dtype=int))


@needs_data
@pytest.mark.data
def test_shared_ocr_counts():
    X_tr, y_tr, X_te, y_te = load_ocr("large", SHARED)
    assert (len(X_tr), len(X_te)) == (6251, 626)
    assert sum(len(v) for v in y_tr) + sum(len(v) for v in y_te) == 52152
    assert all(x.shape[1] == 128 for x in X_te)
    assert min(int(v.min()) for v in y_tr) == 0 and max(int(v.max()) for v in y_tr) == 25
    X_tr, _, X_te, _ = load_ocr("small", SHARED)
    assert len(X_tr) + len(X_te) == 6877 and len(X_tr) < 1000


@needs_data
@pytest.mark.data
def test_shared_snakes_shapes():
    X_tr, y_tr, X_te, y_te = load_snakes(SHARED)
    assert (len(X_tr), len(X_te)) == (200, 100)
    for (feats, edges, efeats), lab in zip(X_tr[:20], y_tr[:20]):
        assert feats.shape == (len(lab), 29) and efeats.shape == (len(edges), 51)
        assert feats[:, :5].sum() == len(lab)
    assert sum(len(v) for v in y_tr) == 7566 and sum(len(v) for v in y_te) == 3750
    assert max(int(v.max()) for v in y_tr) == 10


# ----------------------------------------------------------------------------------------
# CoNLL
# ----------------------------------------------------------------------------------------
def test_read_conll_lines_and_files(tmp_path):
    text = """-DOCSTART- -X- O O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

# a comment
Peter NNP B-NP B-PER
"""
    sents, tags = read_conll(text.splitlines())
    assert sents == [["EU", "rejects", "German"], ["Peter"]]
    assert tags == [["B-ORG", "O", "B-MISC"], ["B-PER"]]
    sents2, pos = read_conll(text.splitlines(), columns=(0, 1))
    assert sents2 == sents and pos[0] == ["NNP", "VBZ", "JJ"]
    assert read_conll(text.splitlines(), columns=(0, None))[1] is None

    path = tmp_path / "data.conll"
    write_conll(path, sents, tags)
    assert read_conll(path) == (sents, tags)
    assert read_conll(str(path)) == (sents, tags)


def test_read_conll_errors(tmp_path):
    with pytest.raises(ValueError, match="line 2"):
        read_conll(["a X", "b", ""])
    with pytest.raises(FileNotFoundError, match="missing.conll"):
        read_conll(tmp_path / "missing.conll")
    with pytest.raises(TypeError, match="columns"):
        read_conll(["a X"], columns=0)
    with pytest.raises(TypeError, match="iterable"):
        read_conll(42)


def test_tiny_pos_sample():
    sents, tags = load_tiny_pos()
    assert len(sents) >= 30
    assert all(len(s) == len(t) for s, t in zip(sents, tags))
    assert {"DET", "NOUN", "VERB", "PUNCT"} <= {tag for t in tags for tag in t}
    assert sents[0][:2] == ["The", "cat"]


def test_token_features():
    feats = token_features(["Paris", "is", "42-ish", "."])
    assert len(feats) == 4
    f0, f2, f3 = feats[0], feats[2], feats[3]
    assert f0["word.lower"] == "paris" and f0["is_title"] == 1.0 and f0["BOS"] == 1.0
    assert "-1:word.lower" not in f0 and f0["+1:word.lower"] == "is"
    assert f0["suffix3"] == "ris" and f0["prefix2"] == "pa" and f0["shape"] == "Xx"
    assert f2["shape"] == "d-x" and f2["has_hyphen"] == 1.0 and f2["has_digit"] == 1.0
    assert f2["is_digit"] == 0.0 and token_features(["2019"])[0]["is_digit"] == 1.0
    assert f3["EOS"] == 1.0 and "+1:word.lower" not in f3 and f3["-1:word.lower"] == "42-ish"
    assert "EOS" not in f0 and "BOS" not in f3
    vec = DictVectorizer().fit([row for s in load_tiny_pos()[0] for row in token_features(s)])
    Xt = vec.transform(feats)
    assert Xt.shape == (4, len(vec.feature_names_))
    assert Xt[0, vec.vocabulary_["word.lower=paris"]] == 1.0
    with pytest.raises(TypeError, match="sequence of tokens"):
        token_features("a sentence")
    assert token_features([]) == []


# ----------------------------------------------------------------------------------------
# synthetic generators
# ----------------------------------------------------------------------------------------
def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(_same(u, v) for u, v in zip(a, b))
    return np.array_equal(a, b)


@pytest.mark.parametrize("make, kwargs", [
    (make_chain_hmm, dict(n_sequences=6)),
    (make_grid_potts, dict(n_images=3, shape=((4, 6), (5, 7)))),
    (make_random_graphs, dict(n_graphs=4)),
])
def test_generators_reproducible(make, kwargs):
    X1, y1 = make(**kwargs, random_state=7)[:2]
    X2, y2 = make(**kwargs, random_state=np.random.RandomState(7))[:2]
    X3, _ = make(**kwargs, random_state=8)[:2]
    assert all(_same(a, b) for a, b in zip(X1, X2)) and all(_same(a, b) for a, b in zip(y1, y2))
    assert not all(_same(a, b) for a, b in zip(X1, X3))
    assert all(lab.dtype == np.int64 for lab in y1)


def test_generator_shapes_and_validation():
    X, y = make_chain_hmm(5, length=(3, 4), n_states=3, n_features=2, random_state=0)
    assert all(x.shape[1] == 2 and 3 <= len(x) <= 4 and len(x) == len(lab) for x, lab in zip(X, y))
    assert max(int(v.max()) for v in y) <= 2
    X, y = make_grid_potts(2, shape=(3, 5), n_states=4, random_state=0)
    feats, edges = X[0]
    assert feats.shape == (15, 4) and len(y[0]) == 15
    np.testing.assert_array_equal(edges, grid_edges(3, 5))
    X, y, graphs = make_random_graphs(3, n_nodes=(6, 9), return_networkx=True, random_state=0)
    for (feats, edges), lab, g in zip(X, y, graphs):
        assert g.number_of_nodes() == len(feats) == len(lab)
        assert g.number_of_edges() == len(edges) and np.all(edges[:, 0] < edges[:, 1])
        assert [g.nodes[v]["y"] for v in g] == lab.tolist()
        np.testing.assert_array_equal(g.nodes[0]["x"], feats[0])
    with pytest.raises(ValueError, match="n_states"):
        make_chain_hmm(3, n_states=1)
    with pytest.raises(TypeError, match="n_sequences"):
        make_chain_hmm(2.5)
    with pytest.raises(ValueError, match="length"):
        make_chain_hmm(3, length=(5, 2))
    with pytest.raises(ValueError, match="noise"):
        make_grid_potts(2, noise=-1.0)
    with pytest.raises(ValueError, match="shape"):
        make_grid_potts(2, shape=5)
    with pytest.raises(ValueError, match="stickiness"):
        make_chain_hmm(2, stickiness=1.5)
    with pytest.raises(ValueError, match="n_nodes"):
        make_random_graphs(2, n_nodes=1)


def _viterbi(logp, log_trans):
    n, k = logp.shape
    score, back = logp[0].copy(), np.zeros((n, k), dtype=int)
    for t in range(1, n):
        cand = score[:, None] + log_trans
        back[t], score = cand.argmax(0), cand.max(0) + logp[t]
    path = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return np.array(path[::-1])


def _mean_field(logp, edges, coupling, n_iter=10):
    q = np.exp(logp - logp.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    for _ in range(n_iter):
        field = np.zeros_like(q)
        np.add.at(field, edges[:, 0], q[edges[:, 1]])
        np.add.at(field, edges[:, 1], q[edges[:, 0]])
        z = logp + coupling * field
        q = np.exp(z - z.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.argmax(1)


def test_chain_task_is_learnable():
    """Decoding with learned transitions clearly beats per-node classification."""
    X, y = make_chain_hmm(200, random_state=0)
    clf = LogisticRegression(max_iter=1000).fit(np.vstack(X[:100]), np.concatenate(y[:100]))
    k = 5
    counts = np.ones((k, k))
    for lab in y[:100]:
        np.add.at(counts, (lab[:-1], lab[1:]), 1)
    log_trans = np.log(counts / counts.sum(1, keepdims=True))
    truth = np.concatenate(y[100:])
    independent = np.mean(np.concatenate([clf.predict(x) for x in X[100:]]) == truth)
    structured = np.mean(np.concatenate([_viterbi(clf.predict_log_proba(x), log_trans)
                                         for x in X[100:]]) == truth)
    assert independent < 0.8
    assert structured > independent + 0.1


@pytest.mark.parametrize("make, kwargs", [
    (make_grid_potts, dict(n_images=20, shape=(10, 10))),
    (make_random_graphs, dict(n_graphs=40, noise=1.5)),
])
def test_graph_tasks_are_learnable(make, kwargs):
    X, y = make(**kwargs, random_state=1)
    half = len(X) // 2
    clf = LogisticRegression(max_iter=1000).fit(np.vstack([f for f, _ in X[:half]]),
                                                np.concatenate(y[:half]))
    truth = np.concatenate(y[half:])
    independent = np.mean(np.concatenate([clf.predict(f) for f, _ in X[half:]]) == truth)
    smoothed = np.mean(np.concatenate([_mean_field(clf.predict_log_proba(f), e, 1.0)
                                       for f, e in X[half:]]) == truth)
    assert independent < 0.85
    assert smoothed > independent + 0.05


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_crf_beats_independent_on_chain_hmm():
    pytest.importorskip("crflearn.solvers.idal")
    from crflearn import CRF

    X, y = make_chain_hmm(120, length=(8, 16), random_state=3)
    crf = CRF(alpha=1e-2, max_iter=30, random_state=0).fit(X[:60], y[:60])
    clf = LogisticRegression(max_iter=1000).fit(np.vstack(X[:60]), np.concatenate(y[:60]))
    independent = np.mean(np.concatenate([clf.predict(x) for x in X[60:]]) == np.concatenate(y[60:]))
    assert crf.score(X[60:], y[60:]) > independent + 0.08
