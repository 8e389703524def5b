"""Apply any scikit-learn transformer to the nodes of structured examples.

:class:`NodeTransformer` fits a transformer on the nodes of all training
examples stacked together and transforms every example node by node, keeping
its structure (edges, edge features, networkx graph). It lets ordinary
preprocessing sit in front of a :class:`crflearn.CRF` in a ``Pipeline``::

    Pipeline([("scale", NodeTransformer(StandardScaler())), ("crf", CRF())])

It also owns the vectorisation of per-token feature dicts (:func:`dict_vectorizer`,
:func:`dict_vectorizer_from_names`, :func:`is_dict_input`) that :class:`crflearn.CRF` applies
inside ``fit`` when it is given feature dicts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._validation import structured_input_tags

__all__ = ["NodeTransformer", "dict_vectorizer", "dict_vectorizer_from_names", "is_dict_input"]


def _is_dict_rows(value) -> bool:
    """Whether ``value`` is a list/tuple of per-node dicts (e.g. token features)."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, dict) for v in value)


class _Example:
    """One example split into its node rows and the structure to rebuild it around new rows."""

    __slots__ = ("kind", "rows", "rest", "graph", "nodes")

    def __init__(self, kind, rows, rest=(), graph=None, nodes=None):
        self.kind, self.rows, self.rest, self.graph, self.nodes = kind, rows, rest, graph, nodes

    @property
    def n_nodes(self) -> int:
        return len(self.rows) if isinstance(self.rows, list) else int(self.rows.shape[0])


def _split_example(item, i: int) -> _Example:
    import networkx as nx

    if isinstance(item, nx.Graph):
        nodes = list(item.nodes)
        if not nodes:
            raise ValueError(f"X[{i}] is a networkx graph without nodes")
        values = []
        for node in nodes:
            if "x" not in item.nodes[node]:
                raise ValueError(f"X[{i}]: node {node!r} has no feature attribute 'x'")
            values.append(item.nodes[node]["x"])
        if all(isinstance(v, dict) for v in values):
            rows = list(values)
        elif any(sp.issparse(v) for v in values):
            rows = sp.vstack([sp.csr_matrix(v).reshape(1, -1) for v in values], format="csr")
        else:
            try:
                rows = np.vstack([np.asarray(v, dtype=np.float64).ravel() for v in values])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"X[{i}]: node features 'x' must be numeric vectors of equal length "
                                 f"or dicts ({exc})") from None
        return _Example("graph", rows, graph=item, nodes=nodes)
    if isinstance(item, tuple) and len(item) in (2, 3) and not _is_dict_rows(item):
        return _Example("tuple", _node_rows(item[0], i), rest=item[1:])
    return _Example("nodes", _node_rows(item, i))


def _node_rows(value, i: int):
    if _is_dict_rows(value):
        return list(value)
    if sp.issparse(value):
        if value.ndim != 2:
            raise ValueError(f"X[{i}] features must be 2-D (n_nodes, n_features), got shape {value.shape}")
        return sp.csr_matrix(value)
    if value is None or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"X[{i}] must be an array (n_nodes, n_features), a list of per-node dicts, a "
                        f"(features, edges[, edge_features]) tuple or a networkx graph, got {value!r:.80}")
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"X[{i}] features must be 2-D (n_nodes, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"X[{i}] has no nodes")
    return arr


def _examples(X) -> list[_Example]:
    from .graphs import check_instances

    return [_split_example(item, i) for i, item in enumerate(check_instances(X))]


def _stack(examples: list[_Example]):
    rows = [ex.rows for ex in examples]
    dict_kind = [isinstance(r, list) for r in rows]
    if any(dict_kind):
        if not all(dict_kind):
            raise ValueError("X mixes examples given as per-node dicts and as arrays; use one form")
        return [d for r in rows for d in r]
    if any(sp.issparse(r) for r in rows):
        return sp.vstack([sp.csr_matrix(r) for r in rows], format="csr")
    widths = {r.shape[1] for r in rows}
    if len(widths) > 1:
        raise ValueError(f"examples have different numbers of node features: {sorted(widths)}")
    return np.vstack(rows)


class NodeTransformer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Fit a scikit-learn transformer on all nodes and apply it per example.

    Parameters
    ----------
    transformer : estimator
        Any object with ``fit`` and ``transform`` working on a 2-D array of
        node features (``StandardScaler``, ``PCA``, ``Normalizer``...) or on a
        list of per-node dicts (``DictVectorizer``, ``FeatureHasher``). It is
        cloned in :meth:`fit`; the fitted copy is ``transformer_``.

    Attributes
    ----------
    transformer_ : estimator
        The fitted clone of ``transformer``.
    n_features_in_ : int
        Node features seen in ``fit`` (when the inner transformer reports it).

    Notes
    -----
    Each example of ``X`` is transformed into the same kind of example:

    * an array / sparse matrix ``(n_nodes, n_features)``, or a list of per-node
      dicts, becomes the transformed ``(n_nodes, n_out)`` array (or sparse matrix);
    * a tuple ``(features, edges[, edge_features])`` keeps its edges and edge features;
    * a networkx graph is copied with its node attribute ``"x"`` replaced (edges,
      labels ``"y"`` and other attributes are kept; the input is not modified).

    When ``y`` is given to :meth:`fit`, the flattened node labels are passed
    to the inner transformer (for supervised ones such as ``SelectKBest``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import StandardScaler
    >>> from crflearn import NodeTransformer
    >>> X = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 5.0]])]
    >>> Xt = NodeTransformer(StandardScaler()).fit_transform(X)
    >>> [x.shape for x in Xt]
    [(2, 2), (1, 2)]
    """

    def __init__(self, transformer):
        self.transformer = transformer

    def __sklearn_tags__(self):
        return structured_input_tags(super().__sklearn_tags__())

    def _check_transformer(self) -> None:
        if isinstance(self.transformer, type):
            raise TypeError(f"transformer must be an instance, got the class {self.transformer.__name__}; "
                            f"use {self.transformer.__name__}()")
        for method in ("fit", "transform"):
            if not callable(getattr(self.transformer, method, None)):
                raise TypeError(f"transformer must have fit and transform methods, got "
                                f"{type(self.transformer).__name__}")

    def fit(self, X: Sequence, y: Sequence | None = None) -> "NodeTransformer":
        """Fit the inner transformer on the nodes of all examples.

        Parameters
        ----------
        X : list of examples
        y : list of array-like of shape (n_nodes_i,), optional
            Node labels; flattened and passed to the inner transformer.

        Returns
        -------
        self : NodeTransformer
        """
        self._check_transformer()
        examples = _examples(X)
        stacked = _stack(examples)
        y_flat = None
        if y is not None:
            y_items = list(y)
            if len(y_items) != len(examples):
                raise ValueError(f"X has {len(examples)} examples but y has {len(y_items)}")
            for i, (ex, lab) in enumerate(zip(examples, y_items)):
                if np.ndim(lab) != 1 or len(lab) != ex.n_nodes:
                    raise ValueError(f"y[{i}] must hold one label per node of X[{i}] ({ex.n_nodes})")
            y_flat = np.concatenate([np.asarray(lab) for lab in y_items])
        transformer = clone(self.transformer)
        transformer.fit(stacked, y_flat)
        self.transformer_ = transformer
        n_in = getattr(transformer, "n_features_in_", None)
        if n_in is not None:
            self.n_features_in_ = int(n_in)
        return self

    def transform(self, X: Sequence) -> list:
        """Transform every example node by node, keeping its structure.

        Parameters
        ----------
        X : list of examples

        Returns
        -------
        list
            The transformed examples, in the same formats as the input.
        """
        check_is_fitted(self, "transformer_")
        examples = _examples(X)
        out = self.transformer_.transform(_stack(examples))
        if not sp.issparse(out):
            out = np.asarray(out)
            if out.ndim != 2:
                raise ValueError(f"the inner transformer returned shape {out.shape}; a 2-D array is needed")
        lengths = [ex.n_nodes for ex in examples]
        if out.shape[0] != sum(lengths):
            raise ValueError(f"the inner transformer returned {out.shape[0]} rows for {sum(lengths)} nodes")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        if sp.issparse(out):
            out = sp.csr_matrix(out)
        return [self._rebuild(ex, out[offsets[i]:offsets[i + 1]]) for i, ex in enumerate(examples)]

    @staticmethod
    def _rebuild(ex: _Example, rows):
        if ex.kind == "nodes":
            return rows
        if ex.kind == "tuple":
            return (rows, *ex.rest)
        graph = ex.graph.copy()
        for j, node in enumerate(ex.nodes):
            graph.nodes[node]["x"] = rows[j] if sp.issparse(rows) else np.array(rows[j])
        return graph

    def get_feature_names_out(self, input_features=None):
        """Output feature names of the inner transformer.

        Parameters
        ----------
        input_features : array-like of str, optional

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self, "transformer_")
        if not hasattr(self.transformer_, "get_feature_names_out"):
            raise AttributeError(f"{type(self.transformer_).__name__} has no get_feature_names_out")
        return self.transformer_.get_feature_names_out(input_features)


def is_dict_input(X) -> bool:
    """Whether the first example of ``X`` gives its node features as per-node dicts.

    True for a list of token dicts, a ``(list of dicts, edges[, edge_features])`` tuple or a
    networkx graph whose node attribute ``"x"`` holds dicts.

    Parameters
    ----------
    X : list of examples

    Returns
    -------
    bool
    """
    import networkx as nx

    try:
        first = next(iter(X))
    except (TypeError, StopIteration):
        return False
    if isinstance(first, nx.Graph):
        return any(isinstance(data.get("x"), dict) for _, data in first.nodes(data=True))
    if isinstance(first, tuple) and len(first) in (2, 3) and not _is_dict_rows(first):
        first = first[0]
    return _is_dict_rows(first)


def dict_vectorizer() -> NodeTransformer:
    """An unfitted :class:`NodeTransformer` turning per-node feature dicts into sparse rows.

    The inner :class:`~sklearn.feature_extraction.DictVectorizer` follows the CRFsuite
    conventions: a numeric (or boolean, as 0/1) value is the feature's value, a string
    value ``v`` of feature ``name`` becomes the indicator feature ``"name=v"``; feature
    names are sorted and features unseen in ``fit`` are ignored by ``transform``.

    Returns
    -------
    NodeTransformer
    """
    from sklearn.feature_extraction import DictVectorizer

    return NodeTransformer(DictVectorizer(separator="=", sparse=True, sort=True))


def dict_vectorizer_from_names(names: Sequence[str]) -> NodeTransformer:
    """A fitted :func:`dict_vectorizer` whose vocabulary is exactly ``names`` (sorted, unique).

    Rebuilds the vectoriser of a saved model from its feature names (no pickle).

    Parameters
    ----------
    names : sequence of str
        ``get_feature_names_out()`` of a fitted :func:`dict_vectorizer`.

    Returns
    -------
    NodeTransformer

    Raises
    ------
    ValueError
        If ``names`` are not unique sorted strings.
    """
    names = [str(n) for n in names]
    if not names or names != sorted(set(names)):
        raise ValueError("feature names must be a non-empty sorted list of unique strings")
    vectorizer = dict_vectorizer().fit([[dict.fromkeys(names, 1.0)]])
    if list(vectorizer.get_feature_names_out()) != names:  # pragma: no cover - DictVectorizer contract
        raise ValueError("the feature names could not be restored")
    return vectorizer
