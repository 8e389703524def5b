"""Argument checks and construction of the IDAL core for :func:`crflearn.solvers.idal.fit_idal`."""

from __future__ import annotations

import numpy as np

from .._kernels.idal import GINI, SHANNON, IdalEntropy, IdalGraph, IdalState, IdalWeights, make_scratch
from .._kernels.idal_compact import DEFAULT_CAPACITY, CompactEdges, compact_edges, one_hot_edges
from .._kernels.idal_engine import IdalEngine, incidence, orient_forest
from .._kernels.idal_monitor import dual_sums
from .._validation import check_int, check_positive
from ..graphs import GraphBatch
from ..models import PairwiseModel, hamming_loss_vectors

__all__ = ["ENTROPIES", "OTRW_FRACTION", "default_rho", "check_idal_options", "build_engine", "exact_primal",
           "exact_losses", "ground_truth_statistics", "node_losses"]

ENTROPIES = ("gini", "gini_otrw", "shannon")
#: nodes per block of :func:`exact_losses` (its work arrays: a few ``(block, K)`` float arrays)
EXACT_BLOCK = 1 << 16
SAMPLINGS = ("uniform", "gap")
#: fraction of the concavity limit 1/K used by ``gini_otrw`` (a_e = OTRW_FRACTION / K)
OTRW_FRACTION = 0.5
EDGE_STORAGES = ("dense", "compact")
#: the layout of the edge marginals when ``build_engine`` gets ``edge_storage=None`` (see
#: :mod:`crflearn._kernels.idal_compact`): ``"dense"`` (K*K float64 per edge) or ``"compact"`` (at most
#: ``EDGE_CAPACITY`` non-zeros per edge; Gini entropies only). Module-level until ``fit_idal`` takes it.
EDGE_STORAGE = "dense"
#: slots per edge of the compact layout when ``build_engine`` gets ``edge_capacity=None``
EDGE_CAPACITY = DEFAULT_CAPACITY


def default_rho(batch: GraphBatch, model: PairwiseModel, alpha: float, kappa: float = 1.0) -> float:
    """The default augmented-Lagrangian penalty of :func:`~crflearn.solvers.idal.fit_idal`.

    ``rho * mean_degree = max(2 kappa, median_v ||x_v||^2 / max(alpha n, 1))``: the penalty's
    curvature on a node block balances the larger of the entropy curvature and the
    curvature of the regulariser term (DESIGN-idal section 4), the latter capped at
    ``median ||x_v||^2`` for weak regularisation (``alpha n < 1``), where a penalty growing
    like ``1 / (alpha n)`` made the multipliers crawl (measured on OCR subsets: the best fixed
    penalty stayed near ``median ||x_v||^2 / mean_degree`` at ``alpha n`` = 0.3 and 1.25). It is
    the starting value: with ``rho_schedule="adaptive"`` (the default) the solver rebalances it.

    Parameters
    ----------
    batch : GraphBatch
    model : PairwiseModel
    alpha : float
        Regularisation strength (lambda).
    kappa : float
        Entropy weight.

    Returns
    -------
    float
    """
    sq = model.feature_view(batch, "csr").sq_norms
    mean_deg = max(2.0 * batch.n_edges / max(batch.n_nodes, 1), 1.0)
    return float(max(2.0 * kappa, np.median(sq) / max(alpha * batch.n_examples, 1.0)) / mean_deg)


def check_idal_options(kappa, rho, inner_epochs, entropy, loss_augmented, sampling, monitor_every,
                       rho_schedule) -> tuple:
    """Validate the IDAL-specific options; return ``(kappa, rho, inner_epochs, monitor_every)``."""
    kappa = check_positive(kappa, "kappa")
    rho = check_positive(rho, "rho", allow_none=True)
    inner_epochs = check_int(inner_epochs, "inner_epochs", 1)
    if not (isinstance(monitor_every, str) and monitor_every == "auto"):
        monitor_every = check_int(monitor_every, "monitor_every", 1)
    if entropy not in ENTROPIES:
        raise ValueError(f"entropy must be one of {list(ENTROPIES)}, got {entropy!r}")
    if rho_schedule not in ("fixed", "adaptive"):
        raise ValueError(f"rho_schedule must be 'fixed' or 'adaptive', got {rho_schedule!r}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
    if not isinstance(loss_augmented, (bool, np.bool_)):
        raise TypeError(f"loss_augmented must be a bool, got {loss_augmented!r}")
    return kappa, rho, inner_epochs, monitor_every


def check_warm_start(warm_start, n_nodes: int, n_edges: int, k: int) -> dict:
    """The arrays of a previous ``fit_idal`` state, checked against this batch (``mu_edges`` dense or a
    :class:`~crflearn._kernels.idal_compact.CompactEdges`, kept compact)."""
    if not isinstance(warm_start, dict):
        raise TypeError(f"warm_start must be a SolverResult.state dict or None, got {type(warm_start).__name__}")
    shapes = {"mu_nodes": (n_nodes, k), "mu_edges": (n_edges, k, k), "xi": (n_edges, 2, k)}
    out = {}
    for key, shape in shapes.items():
        if key not in warm_start:
            raise ValueError(f"warm_start lacks {key!r}; pass the state of a previous fit_idal result")
        if isinstance(warm_start[key], CompactEdges):
            out[key] = _check_compact(warm_start[key], n_edges, k)
            continue
        arr = np.asarray(warm_start[key], dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"warm_start[{key!r}] has shape {arr.shape}, expected {shape} for this batch")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"warm_start[{key!r}] contains NaN or infinite values")
        out[key] = np.array(arr, dtype=np.float64, order="C")
    return out


def _check_compact(mu_e: CompactEdges, n_edges: int, k: int) -> CompactEdges:
    """A copy of compact warm-start edge marginals, checked against this batch."""
    if mu_e.shape != (n_edges, k * k):
        raise ValueError(f"warm_start['mu_edges'] has shape {mu_e.shape}, expected {(n_edges, k * k)} for this batch")
    m = mu_e.capacity
    used = np.arange(m)[None, :] < mu_e.nnz[:, None]
    if (mu_e.idx.shape != (n_edges, m) or np.any(mu_e.nnz < 0) or np.any(mu_e.nnz > m)
            or np.any((mu_e.idx < 0) | (mu_e.idx >= k * k)) or not np.all(np.isfinite(mu_e.val[used]))):
        raise ValueError("warm_start['mu_edges'] is not a valid CompactEdges (indices, counts or values)")
    return CompactEdges(mu_e.idx.astype(np.int32), mu_e.val.astype(np.float64), mu_e.nnz.astype(np.int32), k * k)


def _warm_edges(mu_e, n_edges: int, k: int, capacity: int | None):
    """Warm-start edge marginals in the layout asked for (dense when ``capacity`` is None)."""
    if isinstance(mu_e, CompactEdges):
        if capacity == mu_e.capacity:
            return mu_e
        mu_e = mu_e.to_dense()
    mu_e = mu_e.reshape(n_edges, k * k)
    return mu_e if capacity is None else compact_edges(mu_e, capacity)


def make_entropy(entropy: str, kappa: float, edges: np.ndarray, n_nodes: int, k: int) -> IdalEntropy:
    """The kernel bundle of the entropy surrogate (see :mod:`crflearn._kernels.idal`)."""
    n_edges = len(edges)
    if entropy == "shannon":
        side, node_w, edge_w = orient_forest(edges, n_nodes)
        return IdalEntropy(SHANNON, kappa * node_w, kappa * edge_w, 0.0, side)
    a = OTRW_FRACTION / k if entropy == "gini_otrw" else 0.0
    return IdalEntropy(GINI, np.full(n_nodes, kappa), np.full(n_edges, kappa), a, np.zeros(n_edges, np.int64))


def initial_state(batch: GraphBatch, k: int, warm: dict | None, capacity: int | None = None) -> IdalState:
    """One-hot ground truth (``w = 0``, ``A mu = 0``, ``xi = 0``, ``zeta = 0``) or the warm-start arrays
    (``zeta`` then left for :meth:`~crflearn._kernels.idal_engine.IdalEngine.rebuild_zeta`); the edge
    marginals dense, or :class:`~crflearn._kernels.idal_compact.CompactEdges` with ``capacity`` slots."""
    n_nodes, n_edges = batch.n_nodes, batch.n_edges
    if warm is not None:
        return IdalState(warm["mu_nodes"], _warm_edges(warm["mu_edges"], n_edges, k, capacity), warm["xi"],
                         np.empty((n_edges, 2, k)))
    y = batch.labels
    mu_n = np.zeros((n_nodes, k))
    mu_n[np.arange(n_nodes), y] = 1.0
    flat = y[batch.edges[:, 0]] * k + y[batch.edges[:, 1]] if n_edges else np.zeros(0, np.int64)
    if capacity is not None:
        mu_e = one_hot_edges(flat, k * k, capacity)
    else:
        mu_e = np.zeros((n_edges, k * k))
        if n_edges:
            mu_e[np.arange(n_edges), flat] = 1.0
    return IdalState(mu_n, mu_e, np.zeros((n_edges, 2, k)), np.zeros((n_edges, 2, k)))


def check_edge_storage(edge_storage: str | None, edge_capacity: int | None, entropy: str, k: int) -> int | None:
    """The compact layout's capacity, or None for the dense layout (module defaults for None arguments)."""
    edge_storage = EDGE_STORAGE if edge_storage is None else edge_storage
    if edge_storage not in EDGE_STORAGES:
        raise ValueError(f"edge_storage must be one of {list(EDGE_STORAGES)}, got {edge_storage!r}")
    if edge_storage == "dense":
        return None
    if entropy == "shannon":
        raise ValueError("edge_storage='compact' needs a Gini entropy (Shannon edge blocks are dense), got "
                         "entropy='shannon'")
    capacity = check_int(EDGE_CAPACITY if edge_capacity is None else edge_capacity, "edge_capacity", 1)
    return min(capacity, k * k)


def build_engine(batch: GraphBatch, model: PairwiseModel, *, alpha: float, kappa: float, rho: float,
                 entropy: str, loss_augmented: bool, warm: dict | None, rng, inner_epochs: int,
                 sampling: str, sample_weight: np.ndarray | None = None, edge_storage: str | None = None,
                 edge_capacity: int | None = None) -> IdalEngine:
    """The IDAL core for one training batch (arrays built once per call).

    ``sample_weight`` (positive, one per example) gives example ``i`` the objective weight ``s_i``:
    ``s_i max_mu [<Psi_i^T w + l_i, mu> + sum_c h_c(mu_c)]`` is the same maximisation with the
    features, the loss and the entropy weights of the example scaled by ``s_i``, so the engine runs
    unchanged on those scaled arrays (shared transitions become an edge feature equal to ``s_i``).

    ``edge_storage`` (``"dense"`` or ``"compact"``; None: the module's ``EDGE_STORAGE``) and
    ``edge_capacity`` (None: ``EDGE_CAPACITY``) choose the layout of the edge marginals
    (:mod:`crflearn._kernels.idal_compact`).
    """
    k = model.n_states
    edges = np.ascontiguousarray(batch.edges, dtype=np.int64).reshape(-1, 2)
    feats = model.feature_view(batch, "csr")
    inc_ptr, inc_slot = incidence(edges, batch.n_nodes)
    base_n = node_losses(batch, k, loss_augmented)
    capacity = check_edge_storage(edge_storage, edge_capacity, entropy, k)
    state = initial_state(batch, k, warm, capacity)
    ent = make_entropy(entropy, kappa, edges, batch.n_nodes, k)
    if sample_weight is None:
        graph = IdalGraph(edges, inc_ptr, inc_slot, np.ascontiguousarray(base_n), np.zeros((0, k * k)))
        psi_u, psi_p = model.to_kernel(model.joint_feature(batch))
        # w(mu) in the kernel layout, from scratch; at the one-hot start with shared transitions Psi mu = psi*
        # exactly (the same unary statistic, integer pair counts), so w = 0 without a pass over mu_e
        if warm is None and model.n_edge_features is None:
            wu, wp = psi_u, psi_p
        elif capacity is not None:
            wu, wp = _statistics(graph, feats, ent, model, state.mu_n, state.mu_e)
        else:
            wu, wp = model.to_kernel(model.expected_joint_feature(batch, state.mu_n, state.mu_e.reshape(-1, k, k)))
    else:
        feats, ent, base_n = _weighted(batch, feats, ent, base_n, sample_weight)
        graph = IdalGraph(edges, inc_ptr, inc_slot, np.ascontiguousarray(base_n), np.zeros((0, k * k)))
        psi_u, psi_p = _statistics(graph, feats, ent, model, *initial_state(batch, k, None)[:2])
        wu, wp = _statistics(graph, feats, ent, model, state.mu_n, state.mu_e)
    inv = 1.0 / (alpha * batch.n_examples)
    weights = IdalWeights(np.ascontiguousarray((psi_u - wu) * inv), np.ascontiguousarray((psi_p - wp) * inv))
    return IdalEngine(graph, feats, weights, state, ent, rho=rho, alpha=alpha, n_examples=batch.n_examples,
                      psi_star=(psi_u, psi_p), offsets=(batch.node_offsets, batch.edge_offsets), rng=rng,
                      inner_epochs=inner_epochs, sampling=sampling, zeta_ready=warm is None)


def node_losses(batch: GraphBatch, n_states: int, loss_augmented: bool) -> np.ndarray:
    """The fixed node scores ``base_n`` of training: the Hamming loss vectors ``(N, K)`` when
    ``loss_augmented``, else none, shape ``(0, K)`` (the kernels then score no node: 8 N K bytes saved)."""
    return hamming_loss_vectors(batch, n_states) if loss_augmented else np.zeros((0, n_states))


def ground_truth_statistics(batch: GraphBatch, model: PairwiseModel,
                            sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``psi* = sum_i s_i psi*_i`` in the kernel layout (``s = 1`` when ``sample_weight`` is None): the sum of the
    ``psi_star`` of engines built on a split of ``batch`` (the partitioned solver's certificate)."""
    if sample_weight is None:
        return model.to_kernel(model.joint_feature(batch))
    k = model.n_states
    edges = np.ascontiguousarray(batch.edges, dtype=np.int64).reshape(-1, 2)
    ent = make_entropy("gini", 1.0, edges, batch.n_nodes, k)  # any entropy: only the statistics are read
    feats, ent, base_n = _weighted(batch, model.feature_view(batch, "csr"), ent, np.zeros((0, k)), sample_weight)
    graph = IdalGraph(edges, *incidence(edges, batch.n_nodes), base_n, np.zeros((0, k * k)))
    return _statistics(graph, feats, ent, model, *initial_state(batch, k, None)[:2])


def _weighted(batch: GraphBatch, feats, ent: IdalEntropy, base_n: np.ndarray, sample_weight: np.ndarray):
    """Features, entropy weights and loss of every clique scaled by its example's weight."""
    s = np.asarray(sample_weight, dtype=np.float64)
    s_node = s[batch.example_of_node()]
    s_edge = np.repeat(s, np.diff(batch.edge_offsets))
    data = feats.data * np.repeat(s_node, np.diff(feats.indptr))
    feats = feats._replace(data=data, sq_norms=feats.sq_norms * s_node ** 2,
                           edge_features=np.ascontiguousarray(feats.edge_features * s_edge[:, None]),
                           edge_sq_norms=feats.edge_sq_norms * s_edge ** 2, shared=False)
    ent = ent._replace(node_w=ent.node_w * s_node, edge_w=ent.edge_w * s_edge)
    return feats, ent, base_n * s_node[:, None] if len(base_n) else base_n


def _statistics(graph: IdalGraph, feats, ent: IdalEntropy, model: PairwiseModel, mu_n: np.ndarray,
                mu_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Psi mu`` in the kernel layout with the (weighted) features of ``feats``."""
    ustat = np.zeros((model.n_inputs, model.n_states))
    pstat = np.zeros((feats.edge_features.shape[1], model.n_states ** 2))
    dual_sums(graph, feats, ent, mu_n, mu_e, ustat, pstat, make_scratch(model.n_states))
    return ustat, pstat


def exact_losses(model: PairwiseModel, batch: GraphBatch, w: np.ndarray, loss_augmented: bool,
                 sample_weight: np.ndarray | None = None, block_nodes: int = EXACT_BLOCK) -> float:
    """``sum_i s_i [log Z_i(w) - score_i(w)]``: the summed softmax-margin (``loss_augmented``, Hamming loss)
    or plain CRF losses of the examples, with exact log-partitions (forests only); ``s`` the weights of the
    examples (None: 1). Runs over blocks of consecutive examples of about ``block_nodes`` nodes, so that its
    work arrays stay small whatever the size of the batch; additive over any split of the examples."""
    from ..inference import infer_batch

    cuts = np.searchsorted(batch.node_offsets, np.arange(block_nodes, batch.n_nodes, block_nodes))
    bounds = np.unique(np.concatenate([[0], cuts, [batch.n_examples]]))
    total = 0.0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = batch if (lo, hi) == (0, batch.n_examples) else batch.subset(np.arange(lo, hi))
        unary, pairwise = model.potentials(w, part)
        if loss_augmented:
            unary = unary + hamming_loss_vectors(part, model.n_states)
        res = infer_batch(unary, pairwise, part.edges, part.node_offsets, part.edge_offsets, method="exact",
                          edge_marginals="none")
        losses = np.asarray(res.log_partition) - model.score(w, part)
        total += float(losses @ sample_weight[lo:hi]) if sample_weight is not None else float(losses.sum())
    return total


def exact_primal(model: PairwiseModel, batch: GraphBatch, w: np.ndarray, alpha: float, loss_augmented: bool,
                 sample_weight: np.ndarray | None = None) -> float:
    """Softmax-margin (or plain) CRF objective ``alpha/2 ||w||^2 + 1/n sum_i s_i loss_i(w)`` with exact
    log-partitions (forests only; :func:`exact_losses`)."""
    return float(0.5 * alpha * (w @ w) + exact_losses(model, batch, w, loss_augmented, sample_weight)
                 / batch.n_examples)
