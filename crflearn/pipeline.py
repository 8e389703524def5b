"""A scikit-learn ``Pipeline`` that also exposes the structured methods of its final CRF.

``sklearn.pipeline.Pipeline`` forwards ``predict``, ``score`` and the classifier methods, but
not :meth:`crflearn.CRF.predict_marginals`, :meth:`~crflearn.CRF.predict_top_k` or
:meth:`~crflearn.CRF.predict_log_partition`. :class:`CRFPipeline` adds them: each runs the
transformers on ``X`` and calls the final step's method, and exists only when the final step
has it (``hasattr(pipe, "predict_marginals")`` is False otherwise)::

    from sklearn.preprocessing import StandardScaler
    from crflearn import CRF, NodeTransformer
    from crflearn.pipeline import make_pipeline

    pipe = make_pipeline(NodeTransformer(StandardScaler()), CRF())
    pipe.fit(X, y).predict_marginals(X)
"""

from __future__ import annotations

from typing import Sequence

from sklearn.pipeline import Pipeline
from sklearn.pipeline import make_pipeline as _sk_make_pipeline
from sklearn.utils.metaestimators import available_if

__all__ = ["CRFPipeline", "make_pipeline"]


def _final_has(method: str):
    def check(pipe) -> bool:
        getattr(pipe._final_estimator, method)  # AttributeError -> the method is unavailable
        return True

    return check


class CRFPipeline(Pipeline):
    """``sklearn.pipeline.Pipeline`` with the structured prediction methods of a final CRF.

    Same parameters and behaviour as :class:`sklearn.pipeline.Pipeline`; see the module
    docstring. ``fit``, ``predict``, ``score``, ``get_params`` and ``set_params`` are the
    inherited ones.

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from crflearn import CRF, NodeTransformer
    >>> pipe = CRFPipeline([("scale", NodeTransformer(StandardScaler())), ("crf", CRF())])
    >>> hasattr(pipe, "predict_marginals")
    True
    """

    def _transform(self, X):
        Xt = X
        for _, _, transformer in self._iter(with_final=False):
            Xt = transformer.transform(Xt)
        return Xt

    @available_if(_final_has("predict_marginals"))
    def predict_marginals(self, X: Sequence, **params) -> list:
        """Transform ``X`` and return the final step's ``predict_marginals(Xt, **params)``.

        Parameters
        ----------
        X : list of examples
        **params
            Passed to the final step (e.g. ``method="relaxed"``).

        Returns
        -------
        list of ndarray of shape (n_nodes_i, n_classes)
        """
        return self.steps[-1][1].predict_marginals(self._transform(X), **params)

    @available_if(_final_has("predict_top_k"))
    def predict_top_k(self, X: Sequence, k: int = 5, **params) -> list:
        """Transform ``X`` and return the final step's ``predict_top_k(Xt, k, **params)``.

        Parameters
        ----------
        X : list of examples
        k : int, default=5
        **params
            Passed to the final step.

        Returns
        -------
        list of (list of ndarray, ndarray)
            Per example, the ``k`` best label sequences and their scores.
        """
        return self.steps[-1][1].predict_top_k(self._transform(X), k, **params)

    @available_if(_final_has("predict_log_partition"))
    def predict_log_partition(self, X: Sequence, **params):
        """Transform ``X`` and return the final step's ``predict_log_partition(Xt, **params)``.

        Parameters
        ----------
        X : list of examples
        **params
            Passed to the final step.

        Returns
        -------
        ndarray of shape (n_examples,)
        """
        return self.steps[-1][1].predict_log_partition(self._transform(X), **params)


def make_pipeline(*steps, memory=None, transform_input=None, verbose: bool = False) -> CRFPipeline:
    """:func:`sklearn.pipeline.make_pipeline` building a :class:`CRFPipeline`.

    Parameters
    ----------
    *steps : estimators
        The transformers, then the final estimator (usually a :class:`crflearn.CRF`); step
        names are the lower-cased class names.
    memory, transform_input, verbose
        As in :func:`sklearn.pipeline.make_pipeline`.

    Returns
    -------
    CRFPipeline
    """
    kwargs = {"memory": memory, "verbose": verbose}
    if transform_input is not None:
        kwargs["transform_input"] = transform_input
    named = _sk_make_pipeline(*steps, **kwargs)
    return CRFPipeline(named.steps, **kwargs)
