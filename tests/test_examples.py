"""The examples run end to end (quick mode, small subsets) and write their figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["plot_synthetic_chain.py", "plot_networkx_graphs.py", "plot_snakes_grid.py", "plot_ocr_chain.py",
           "plot_neural_ocr.py", "plot_neural_snakes.py"]
#: examples that need torch (the ``neural`` extra)
NEEDS_TORCH = {"plot_neural_ocr.py", "plot_neural_snakes.py"}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    if not (EXAMPLES / script).is_file():
        pytest.skip(f"{script} not present")
    if script in NEEDS_TORCH:
        pytest.importorskip("torch")
    env = dict(os.environ, CRFLEARN_EXAMPLES_OUT=str(tmp_path), CRFLEARN_EXAMPLES_QUICK="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if "skipping" in proc.stdout:  # real data absent: polite exit, no figure
        assert not list(tmp_path.glob("*.png"))
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    figure = tmp_path / script.replace(".py", ".png")
    assert figure.is_file() and figure.read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in proc.stdout
