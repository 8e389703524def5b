"""Exact k-best Viterbi against enumeration, and allowed-transition constraints at decoding and training."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from crflearn import CRF
from crflearn.graphs import make_batch
from crflearn.inference.constraints import bio_transitions, transition_mask, violations
from crflearn.inference.kbest import top_k_decode, top_k_decode_batch

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _all_scores(unary, pairwise):
    """Every labelling of the chain with its score (``-inf`` ones included)."""
    n, k = unary.shape
    out = []
    for lab in itertools.product(range(k), repeat=n):
        s = sum(unary[t, lab[t]] for t in range(n))
        s += sum((pairwise if pairwise.ndim == 2 else pairwise[t])[lab[t], lab[t + 1]] for t in range(n - 1))
        out.append((lab, s))
    return out


@st.composite
def chains(draw):
    n, k = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    unary = rng.normal(size=(n, k)).round(draw(st.sampled_from([0, 1, 6])))  # rounding makes ties
    shared = draw(st.booleans())
    pairwise = rng.normal(size=(k, k) if shared else (n - 1, k, k)).round(1)
    if k > 1 and draw(st.booleans()):
        pairwise = np.where(rng.random(pairwise.shape) < 0.3, -np.inf, pairwise)
        pairwise[..., 0, 0] = 0.0  # keep the all-0 labelling feasible
    return unary, pairwise, draw(st.integers(1, 9))


@settings(max_examples=150, deadline=None)
@given(chains())
def test_top_k_equals_enumeration(case):
    unary, pairwise, k = case
    res = top_k_decode(unary, pairwise, k)
    every = _all_scores(unary, pairwise)
    expected = sorted((s for _, s in every if s > -np.inf), reverse=True)[:k]
    np.testing.assert_allclose(res.scores, expected, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(res.scores) <= 0)
    seen = {tuple(lab) for lab in res.labels.tolist()}
    assert len(seen) == len(res.labels)  # distinct labellings
    score_of = dict(every)
    for lab, s in zip(res.labels.tolist(), res.scores):
        assert score_of[tuple(lab)] == pytest.approx(s, abs=1e-12)


def test_top_k_batch_and_errors():
    rng = np.random.default_rng(0)
    lengths = [3, 1, 4]
    unary = rng.normal(size=(8, 3))
    pairwise = rng.normal(size=(3, 3))
    batch, _ = make_batch([np.zeros((n, 1)) for n in lengths])
    got = top_k_decode_batch(unary, pairwise, batch.edges, batch.node_offsets, batch.edge_offsets, 4)
    for i, res in enumerate(got):
        ref = top_k_decode(unary[batch.node_slice(i)], pairwise, 4)
        np.testing.assert_array_equal(res.labels, ref.labels)
    assert got[1].labels.shape == (3, 1)  # a one-node chain has K labellings
    tree, _ = make_batch([(np.zeros((3, 1)), np.array([[0, 1], [0, 2]]))])
    with pytest.raises(ValueError, match="chains"):
        top_k_decode_batch(unary[:3], pairwise, tree.edges, tree.node_offsets, tree.edge_offsets, 2)
    with pytest.raises(ValueError, match="k must be"):
        top_k_decode(unary, pairwise, 0)
    with pytest.raises(ValueError, match="no labelling"):
        top_k_decode(unary[:2, :1], np.full((1, 1), -np.inf), 2)


def _numeric(seed=0, n=6, k=3):
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(rng.integers(2, 4), 2)) for _ in range(n)]
    y = [np.clip(np.round(x[:, 0] + 1), 0, k - 1).astype(int) for x in X]
    return X, y


def test_predict_top_k_scores_are_log_probabilities():
    X, y = _numeric()
    crf = CRF(solver="lbfgs", max_iter=50).fit(X, y)
    out = crf.predict_top_k(X, k=30)
    log_z = crf.predict_log_partition(X)
    for (seqs, scores), pred, x, lz in zip(out, crf.predict(X), X, log_z):
        np.testing.assert_array_equal(seqs[0], pred)
        assert len(seqs) == min(30, 3 ** len(x))
        if len(seqs) == 3 ** len(x):  # every labelling: the probabilities sum to one
            assert np.exp(scores - lz).sum() == pytest.approx(1.0, abs=1e-10)


# -- constraints --------------------------------------------------------------------------------
def test_bio_transitions_and_masks():
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    pairs = bio_transitions(tags)
    assert ("O", "I-PER") not in pairs and ("B-LOC", "I-PER") not in pairs and ("I-LOC", "I-PER") not in pairs
    assert ("B-PER", "I-PER") in pairs and ("I-PER", "I-PER") in pairs and ("I-PER", "B-LOC") in pairs
    assert len(pairs) == 25 - 3 * 2
    with pytest.raises(ValueError, match="not BIO"):
        bio_transitions(["O", "PER"])
    classes = np.array(sorted(tags))
    mask = transition_mask(classes, pairs + [("B-MISC", "I-MISC")])  # unknown labels are ignored
    assert mask.sum() == len(pairs)
    np.testing.assert_array_equal(transition_mask(classes, mask), mask)
    with pytest.raises(ValueError, match="shape"):
        transition_mask(classes, np.ones((2, 2), bool))
    with pytest.raises(TypeError, match="boolean"):
        transition_mask(classes, np.ones((5, 5)))
    with pytest.raises(ValueError, match="pairs"):
        transition_mask(classes, [("O",)])


def _bio_data(seed=0, n=12):
    rng = np.random.default_rng(seed)
    tags = np.array(["O", "B-X", "I-X", "B-Y", "I-Y"])
    X, y = [], []
    for _ in range(n):
        lab = []
        while len(lab) < 5:
            kind = rng.choice(["O", "X", "Y"])
            lab += ["O"] if kind == "O" else [f"B-{kind}"] + [f"I-{kind}"] * int(rng.integers(0, 2))
        lab = np.array(lab[:5])
        x = (lab[:, None] == tags[None, :]).astype(float) + rng.normal(scale=1.5, size=(5, 5))
        X.append(x)
        y.append(lab)
    return X, y, tags


@pytest.mark.parametrize("solver", ["bcfw", "lbfgs"])
def test_constraints_are_never_violated_at_decoding(solver):
    X, y, tags = _bio_data()
    crf = CRF(solver=solver, max_iter=20, allowed_transitions=bio_transitions(tags), random_state=0).fit(X, y)
    rng = np.random.default_rng(1)
    X_new = [rng.normal(scale=3.0, size=(6, 5)) for _ in range(30)]  # noisy: unconstrained decoding errs
    mask = crf.transition_mask_
    index = {t: i for i, t in enumerate(crf.classes_)}
    for seq in crf.predict(X_new) + [s for seqs, _ in crf.predict_top_k(X_new, 4) for s in seqs]:
        codes = np.array([index[t] for t in seq])
        assert mask[codes[:-1], codes[1:]].all()
    for m in crf.predict_marginals(X_new):
        np.testing.assert_allclose(m.sum(axis=1), 1.0)
    back = CRF.load(_saved(crf))
    np.testing.assert_array_equal(back.transition_mask_, mask)
    assert [s.tolist() for s in back.predict(X_new)] == [s.tolist() for s in crf.predict(X_new)]


def _saved(crf):
    buf = io.BytesIO()
    crf.save(buf)
    buf.seek(0)
    return buf


def test_unconstrained_decoding_does_violate_on_the_same_data():
    """The constraint test above is not vacuous: without it the decoder makes forbidden transitions."""
    X, y, tags = _bio_data()
    crf = CRF(solver="bcfw", max_iter=20, random_state=0).fit(X, y)
    rng = np.random.default_rng(1)
    X_new = [rng.normal(scale=3.0, size=(6, 5)) for _ in range(30)]
    mask = transition_mask(crf.classes_, bio_transitions(tags))
    index = {t: i for i, t in enumerate(crf.classes_)}
    codes = [np.array([index[t] for t in seq]) for seq in crf.predict(X_new)]
    assert any(not mask[c[:-1], c[1:]].all() for c in codes)


def test_training_labels_must_obey_the_constraints_of_the_exact_solver():
    X, y, tags = _bio_data()
    y_bad = [lab.copy() for lab in y]
    y_bad[3][0] = "I-X"
    y_bad[3][1] = "I-Y"
    with pytest.raises(ValueError, match=r"y\[3\].*allowed_transitions"):
        CRF(solver="lbfgs", allowed_transitions=bio_transitions(tags)).fit(X, y_bad)
    CRF(solver="bcfw", max_iter=2, allowed_transitions=bio_transitions(tags)).fit(X, y_bad)  # decode only


def test_lbfgs_with_constraints_minimises_the_constrained_likelihood():
    """The minimum of the brute-force constrained negative log-likelihood (tiny problem; zero gradient)."""
    X, y = _numeric(seed=4, n=5)
    allowed = np.ones((3, 3), bool)
    allowed[2, 0] = allowed[0, 2] = False
    y = [np.where((np.roll(lab, 1) == 0) & (lab == 2), 1, lab) for lab in y]  # obey the constraint
    y = [np.where((np.roll(lab, 1) == 2) & (lab == 0), 1, lab) for lab in y]
    alpha = 0.2
    crf = CRF(solver="lbfgs", alpha=alpha, max_iter=500, tol=1e-12, allowed_transitions=allowed).fit(X, y)
    batch, _ = make_batch(X, y)
    model = crf.model_

    every = [np.array(list(itertools.product(range(3), repeat=len(x)))) for x in X]  # all labellings
    truth = [np.flatnonzero((e == batch.labels[batch.node_slice(i)]).all(axis=1))[0] for i, e in enumerate(every)]

    def objective(w):
        unary, pairwise = model.potentials(w, batch)
        pairwise = np.where(allowed, pairwise, -np.inf)
        total = 0.0
        for i, labs in enumerate(every):
            u = unary[batch.node_slice(i)]
            scores = u[np.arange(labs.shape[1]), labs].sum(axis=1) + pairwise[labs[:, :-1], labs[:, 1:]].sum(axis=1)
            total += logsumexp(scores) - scores[truth[i]]
        return 0.5 * alpha * w @ w + total / batch.n_examples

    # the objective is convex: a zero gradient (central differences) certifies the minimum
    assert np.abs(approx_fprime(crf.coef_, objective, 1e-6)).max() < 1e-5
    free = CRF(solver="lbfgs", alpha=alpha, max_iter=500, tol=1e-12).fit(X, y)
    assert np.abs(approx_fprime(free.coef_, objective, 1e-6)).max() > 1e-2  # the constraint matters here
    assert violations(batch.labels, batch.edges, allowed).size == 0


def approx_fprime(w, f, h):
    """Central-difference gradient of ``f`` at ``w``."""
    eye = np.eye(len(w)) * h
    return np.array([(f(w + e) - f(w - e)) / (2 * h) for e in eye])
