"""Sphinx configuration: API reference (autodoc + numpydoc) and the user guide.

Build (warnings are errors)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import crflearn  # noqa: E402

project = "crflearn"
author = "the crflearn developers"
copyright = "crflearn developers, BSD-3-Clause"
version = release = crflearn.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "sphinx.ext.mathjax", "numpydoc"]

# only the user guide and the API reference: architecture.md / benchmarks.md are Markdown read on the forge
exclude_patterns = ["_build", "*.md", "img"]
root_doc = "index"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False  # :members: lists them; no autosummary stubs
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False  # cross-project type links need intersphinx inventories (no network)
autodoc_inherit_docstrings = False  # torch's forward/backward docstrings are not ours

intersphinx_mapping = {}  # no network at build time: plain names, no cross-project links

html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {"description": "Conditional random fields: IDAL, scikit-learn estimators, networkx graphs",
                      "page_width": "1100px"}

# numpydoc "name : type" lines such as ``coef_ : ndarray of shape (model_.size,)`` name fitted attributes
# (scikit-learn style): a word ending in "_" there is text, not a reST link reference, so escape the underscore.
_TYPE_LINE = re.compile(r"^(\s*[\w*, ]+ : )(.*)$")
_ATTRIBUTE_WORD = re.compile(r"\b([A-Za-z]\w*?)_(?=[\s.,)\]]|$)")


def _escape_attribute_names(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        m = _TYPE_LINE.match(line)
        if m and "`" not in m[2]:
            lines[i] = m[1] + _ATTRIBUTE_WORD.sub(r"\1\\_", m[2])


def setup(app):
    app.connect("autodoc-process-docstring", _escape_attribute_names, priority=100)  # before numpydoc (500)
