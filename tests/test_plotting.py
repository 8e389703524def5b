"""plot_convergence: one line per run, log-scale gap, labels and errors."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from crflearn.plotting import plot_convergence  # noqa: E402


def _history(n=6, scale=1.0):
    it = np.arange(1, n + 1)
    primal = 2.0 + scale / it
    gap = scale * 0.5 ** it
    return {"iteration": it, "time": 0.1 * it, "primal": primal, "dual": primal - gap, "gap": gap,
            "residual": np.zeros(n), "oracle_calls": 10 * it}


class _Fitted:
    def __init__(self, solver, history):
        self.solver = solver
        self.history_ = history


def test_lines_labels_and_log_scale():
    import matplotlib.pyplot as plt

    fig = plot_convergence([_Fitted("idal", _history()), _Fitted("bcfw", _history(scale=2.0))])
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["idal", "bcfw"]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel().startswith("time") and ax.get_ylabel() == "gap" and ax.get_title()
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), _history(scale=2.0)["gap"])
    plt.close(fig)


def test_dict_of_histories_relative_and_existing_axes():
    import matplotlib.pyplot as plt

    fig0, ax0 = plt.subplots()
    hists = {"a": _history(), "b": _history(4), "c": _history(3, 3.0)}
    fig = plot_convergence(hists, x="iteration", y="gap", relative=True, ax=ax0)
    assert fig is fig0 and len(ax0.get_lines()) == 3
    h = hists["a"]
    np.testing.assert_allclose(ax0.get_lines()[0].get_ydata(), h["gap"] / h["primal"])
    assert ax0.get_ylabel() == "relative gap"
    plt.close(fig)
    fig = plot_convergence(_history(), y="primal", labels=["mine"])
    assert fig.axes[0].get_yscale() == "linear"
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "mine"
    plt.close(fig)


def test_zero_gap_is_drawable():
    import matplotlib.pyplot as plt

    h = _history()
    h["gap"] = np.array([1.0, 0.1, 0.0, 0.0, 0.0, 0.0])
    fig = plot_convergence(h)
    assert np.all(fig.axes[0].get_lines()[0].get_ydata() > 0)
    plt.close(fig)


def test_bad_input():
    with pytest.raises(ValueError, match="column"):
        plot_convergence(_history(), y="nope")
    with pytest.raises(ValueError, match="labels"):
        plot_convergence([_history(), _history()], labels=["one"])
    with pytest.raises(TypeError, match="estimator"):
        plot_convergence([object()])
    with pytest.raises(ValueError, match="empty"):
        plot_convergence([])
