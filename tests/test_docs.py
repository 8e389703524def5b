"""The user guide's code blocks run as written (each page's blocks in order, in a scratch directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide"
#: optional packages a page needs (its test skips without them)
NEEDS = {"comparing_solvers.rst": ["matplotlib"], "neural.rst": ["torch"], "scaling.rst": ["distributed"]}
BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:(?: {4}.*)?\n)+)", re.MULTILINE)


def code_blocks(page: Path) -> list[str]:
    """The dedented ``.. code-block:: python`` bodies of an reST page, in order."""
    return [re.sub(r"^ {4}", "", body, flags=re.MULTILINE) for body in BLOCK.findall(page.read_text())]


def test_guide_pages_have_code():
    pages = sorted(GUIDE.glob("*.rst"))
    assert {p.name for p in pages} >= {"sequence_labelling.rst", "graphs.rst", "comparing_solvers.rst",
                                      "neural.rst", "scaling.rst"}
    for page in pages:
        assert code_blocks(page), f"{page.name} has no python code block"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sequence_labelling.rst", "graphs.rst", "comparing_solvers.rst", "neural.rst",
                                  "scaling.rst"])
def test_guide_page_runs(name, tmp_path, monkeypatch, capsys):
    for module in NEEDS.get(name, []):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)  # anything a block writes stays in the scratch directory
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__guide__"}
    for i, block in enumerate(code_blocks(GUIDE / name)):
        exec(compile(block, f"{name}[block {i}]", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert out.strip(), f"{name}: the blocks printed nothing"
    if "accuracy" in out:  # the pages that print a test accuracy learn something
        values = [float(v) for v in re.findall(r"accuracy:\s*([0-9.]+)", out)]
        assert values and min(values) > 0.5, out
