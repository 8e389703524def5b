"""Chain CRF layers in torch against brute-force enumeration and the NumPy inference path."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crflearn.neural import (  # noqa: E402
    ChainCRFLoss,
    chain_crf_nll,
    chain_hinge_loss,
    chain_log_partition,
    chain_marginals,
    chain_score,
    chain_viterbi,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny problems run fastest on one thread (and do not fight other test processes)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _problem(seed, b=3, t=4, k=3, per_edge=False, lengths=None):
    g = torch.Generator().manual_seed(seed)
    unary = torch.randn(b, t, k, generator=g, dtype=torch.float64)
    if per_edge:
        trans = torch.randn(b, t - 1, k, k, generator=g, dtype=torch.float64)
    else:
        trans = torch.randn(k, k, generator=g, dtype=torch.float64)
    lengths = torch.tensor(lengths if lengths is not None else [t] * b)
    return unary, trans, lengths


def _brute(unary, trans, n, b):
    """All labelings of sequence b (length n): scores, labelings."""
    k = unary.shape[2]
    labs = list(itertools.product(range(k), repeat=n))
    scores = []
    for y in labs:
        s = sum(float(unary[b, i, y[i]]) for i in range(n))
        for i in range(n - 1):
            s += float(trans[y[i], y[i + 1]] if trans.dim() == 2 else trans[b, i, y[i], y[i + 1]])
        scores.append(s)
    return np.array(scores), np.array(labs)


@pytest.mark.parametrize("per_edge", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_log_partition_marginals_viterbi_match_brute_force(seed, per_edge):
    unary, trans, lengths = _problem(seed, b=3, t=4, k=3, per_edge=per_edge, lengths=[4, 2, 1])
    log_z = chain_log_partition(unary, trans, lengths)
    node, edge = chain_marginals(unary, trans, lengths)
    tags, best = chain_viterbi(unary, trans, lengths)
    k = unary.shape[2]
    for b in range(3):
        n = int(lengths[b])
        scores, labs = _brute(unary, trans, n, b)
        lz = np.logaddexp.reduce(scores)
        assert log_z[b].item() == pytest.approx(lz, abs=1e-10)
        p = np.exp(scores - lz)
        for i in range(n):
            expected = np.array([p[labs[:, i] == a].sum() for a in range(k)])
            np.testing.assert_allclose(node[b, i].numpy(), expected, atol=1e-10)
        for i in range(n - 1):
            expected = np.array([[p[(labs[:, i] == a) & (labs[:, i + 1] == c)].sum() for c in range(k)]
                                 for a in range(k)])
            np.testing.assert_allclose(edge[b, i].numpy(), expected, atol=1e-10)
        # padding is inert
        assert torch.all(node[b, n:] == 0) and torch.all(edge[b, max(n - 1, 0):] == 0)
        assert torch.all(tags[b, n:] == -1)
        assert best[b].item() == pytest.approx(scores.max(), abs=1e-10)
        np.testing.assert_array_equal(tags[b, :n].numpy(), labs[np.argmax(scores)])


def test_padding_content_does_not_matter():
    unary, trans, lengths = _problem(3, b=2, t=5, k=2, lengths=[3, 5])
    other = unary.clone()
    other[0, 3:] = 100.0
    torch.testing.assert_close(chain_log_partition(unary, trans, lengths), chain_log_partition(other, trans, lengths))
    torch.testing.assert_close(chain_viterbi(unary, trans, lengths)[0], chain_viterbi(other, trans, lengths)[0])


@pytest.mark.parametrize("per_edge", [False, True])
def test_gradcheck_log_partition(per_edge):
    unary, trans, lengths = _problem(5, b=2, t=4, k=3, per_edge=per_edge, lengths=[4, 3])
    unary.requires_grad_(True)
    trans.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, t: chain_log_partition(u, t, lengths), (unary, trans))
    tags = torch.tensor([[0, 1, 2, 1], [2, 2, 0, -1]])
    assert torch.autograd.gradcheck(lambda u, t: chain_crf_nll(u, t, tags, lengths, reduction="sum"),
                                    (unary, trans))


def test_nll_gradient_is_marginals_minus_truth():
    unary, trans, lengths = _problem(7, b=2, t=4, k=3, lengths=[4, 2])
    tags = torch.tensor([[0, 1, 2, 1], [2, 0, -1, -1]])
    unary.requires_grad_(True)
    chain_crf_nll(unary, trans, tags, lengths, reduction="sum").backward()
    node, _ = chain_marginals(unary, trans, lengths)
    onehot = torch.nn.functional.one_hot(tags.clamp(min=0), 3).double()
    onehot[tags < 0] = 0
    torch.testing.assert_close(unary.grad, node - onehot)
    # NLL is log Z - score, and positive
    nll = chain_crf_nll(unary, trans, tags, lengths, reduction="none")
    torch.testing.assert_close(nll, chain_log_partition(unary, trans, lengths)
                               - chain_score(unary, trans, tags, lengths))
    assert torch.all(nll > 0)
    torch.testing.assert_close(chain_crf_nll(unary, trans, tags, lengths), nll.mean())


def test_hinge_loss_matches_brute_force_and_gradient():
    unary, trans, lengths = _problem(11, b=2, t=4, k=3, lengths=[4, 3])
    tags = torch.tensor([[0, 1, 2, 1], [2, 2, 0, -1]])
    loss = chain_hinge_loss(unary, trans, tags, lengths, reduction="none")
    for b in range(2):
        n = int(lengths[b])
        scores, labs = _brute(unary, trans, n, b)
        truth = tags[b, :n].numpy()
        aug = scores + (labs != truth).sum(axis=1)
        true_score = scores[np.all(labs == truth, axis=1)][0]
        assert loss[b].item() == pytest.approx(aug.max() - true_score, abs=1e-10)
    assert torch.all(loss >= 0)
    u = unary.clone().requires_grad_(True)
    chain_hinge_loss(u, trans, tags, lengths, reduction="sum").backward()
    # subgradient rows sum to zero and are (onehot(y') - onehot(y))
    assert torch.allclose(u.grad.sum(-1), torch.zeros(2, 4, dtype=torch.float64))
    assert set(np.unique(u.grad.numpy())) <= {-1.0, 0.0, 1.0}


def test_agrees_with_numpy_inference():
    inference = pytest.importorskip("crflearn.inference")
    if not hasattr(inference, "infer"):
        pytest.skip("crflearn.inference.infer not available yet")
    from crflearn.graphs import chain_edges

    unary, trans, lengths = _problem(13, b=2, t=6, k=4, lengths=[6, 4])
    per_edge = torch.randn(2, 5, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for tr in (trans, per_edge):
        log_z = chain_log_partition(unary, tr, lengths)
        node, edge = chain_marginals(unary, tr, lengths)
        for b in range(2):
            n = int(lengths[b])
            pw = tr.numpy() if tr.dim() == 2 else tr[b, : n - 1].numpy()
            res = inference.infer(unary[b, :n].numpy(), pw, chain_edges(n), method="exact")
            assert log_z[b].item() == pytest.approx(res.log_partition, rel=1e-9)
            np.testing.assert_allclose(node[b, :n].numpy(), res.node_marginals, atol=1e-9)
            np.testing.assert_allclose(edge[b, : n - 1].numpy(), res.edge_marginals, atol=1e-9)
        if hasattr(inference, "decode"):
            tags, _ = chain_viterbi(unary, tr, lengths)
            for b in range(2):
                n = int(lengths[b])
                pw = tr.numpy() if tr.dim() == 2 else tr[b, : n - 1].numpy()
                np.testing.assert_array_equal(tags[b, :n].numpy(),
                                              inference.decode(unary[b, :n].numpy(), pw, chain_edges(n)))


def test_forbidden_transitions_respected():
    unary, trans, lengths = _problem(17, b=2, t=5, k=3)
    trans = trans.clone()
    trans[0, 1] = -np.inf
    tags, _ = chain_viterbi(unary, trans, lengths)
    assert not torch.any((tags[:, :-1] == 0) & (tags[:, 1:] == 1))
    _, edge = chain_marginals(unary, trans, lengths)
    assert torch.all(edge[..., 0, 1] == 0)
    assert torch.isfinite(chain_log_partition(unary, trans, lengths)).all()


def test_chain_crf_loss_module_trains():
    torch.manual_seed(0)
    crf = ChainCRFLoss(3)
    unary = torch.randn(4, 5, 3)
    # truth alternates states 0 -> 1 -> 2 -> 0; unary uninformative, so transitions must learn it
    tags = torch.tensor([[(s + i) % 3 for i in range(5)] for s in range(4)])
    opt = torch.optim.Adam(crf.parameters(), lr=0.3)
    first = None
    for _ in range(60):
        loss = crf(unary * 0.1, tags)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    pred = crf.decode(unary * 0.1)
    # the first label is ambiguous (uniform), the cyclic transitions are learned
    assert torch.all(pred[:, 1:] == (pred[:, :-1] + 1) % 3)
    marg = crf.marginals(unary * 0.1)
    assert torch.allclose(marg.sum(-1), torch.ones(4, 5))


def test_single_position_and_float32():
    unary = torch.randn(2, 1, 3)
    trans = torch.randn(3, 3)
    torch.testing.assert_close(chain_log_partition(unary, trans), torch.logsumexp(unary[:, 0], -1))
    tags, _ = chain_viterbi(unary, trans)
    torch.testing.assert_close(tags[:, 0], unary[:, 0].argmax(-1))
    node, edge = chain_marginals(unary, trans)
    assert edge.shape == (2, 0, 3, 3)
    torch.testing.assert_close(node[:, 0], torch.softmax(unary[:, 0], -1))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(unary=torch.zeros(2, 3)), ValueError, "unary must have shape"),
    (dict(unary=torch.zeros(2, 3, 2, dtype=torch.long)), TypeError, "floating point"),
    (dict(transitions=torch.zeros(3, 3)), ValueError, "transitions must have shape"),
    (dict(transitions=torch.zeros(2, 3, 2, 2)), ValueError, "per-edge transitions"),
    (dict(lengths=torch.tensor([4, 1])), ValueError, "lengths must lie"),
    (dict(lengths=torch.tensor([1.0, 2.0])), TypeError, "lengths must hold integers"),
    (dict(lengths=torch.tensor([1, 2, 3])), ValueError, "lengths must have shape"),
    (dict(unary=[[0.0]]), TypeError, "unary must be a torch.Tensor"),
])
def test_validation_errors(kwargs, exc, match):
    args = dict(unary=torch.zeros(2, 3, 2), transitions=torch.zeros(2, 2), lengths=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        chain_log_partition(args["unary"], args["transitions"], args["lengths"])


def test_tag_and_reduction_errors():
    unary, trans = torch.zeros(2, 3, 2), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="label 2 outside"):
        chain_crf_nll(unary, trans, torch.tensor([[0, 1, 2], [0, 0, 0]]))
    with pytest.raises(ValueError, match="tags must have shape"):
        chain_crf_nll(unary, trans, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        chain_crf_nll(unary, trans, torch.zeros(2, 3, dtype=torch.long), reduction="avg")
    with pytest.raises(ValueError, match="n_states"):
        ChainCRFLoss(0)
    # labels at padded positions are ignored
    out = chain_crf_nll(unary, trans, torch.tensor([[0, 1, 7], [0, -1, -1]]), torch.tensor([2, 1]))
    assert torch.isfinite(out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    unary, trans, lengths = _problem(19, b=4, t=6, k=5, lengths=[6, 3, 1, 5])
    tags = torch.randint(0, 5, (4, 6))
    cpu = chain_crf_nll(unary, trans, tags, lengths, reduction="none")
    gpu = chain_crf_nll(unary.cuda(), trans.cuda(), tags.cuda(), lengths.cuda(), reduction="none")
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu)
    torch.testing.assert_close(chain_viterbi(unary.cuda(), trans.cuda(), lengths.cuda())[0].cpu(),
                               chain_viterbi(unary, trans, lengths)[0])
    torch.testing.assert_close(chain_marginals(unary.cuda(), trans.cuda(), lengths.cuda())[0].cpu(),
                               chain_marginals(unary, trans, lengths)[0])


def test_half_precision_inputs_run_the_dynamic_program_in_float32():
    from crflearn.neural import chain_log_partition

    gen = torch.Generator().manual_seed(0)
    unary = 4 * torch.randn(3, 12, 5, generator=gen)
    trans = 4 * torch.randn(5, 5, generator=gen)
    exact = chain_log_partition(unary.half().double(), trans.half().double())
    got = chain_log_partition(unary.half(), trans.half())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, atol=1e-4, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = chain_log_partition(unary, trans)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under.double(), chain_log_partition(unary.double(), trans.double()),
                               atol=1e-4, rtol=1e-5)
