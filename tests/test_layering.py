"""The package's layering (docs/architecture.md): no import cycles, and lower layers never import higher ones.

The check reads module-level imports (``import`` / ``from ... import`` at the top level of each module, inside
top-level ``try``/``if`` blocks too); imports inside functions are lazy by design and not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "crflearn"

#: layer of each top-level part of the package (lower numbers are lower layers)
LAYERS = {
    "exceptions": 0, "_validation": 0, "_labels": 0,
    "graphs": 1, "models": 2, "_kernels": 3, "inference": 4, "solvers": 5, "persistence": 1,
    "_crf_archive": 6, "estimators": 6, "metrics": 6, "preprocessing": 6, "datasets": 1,
    "plotting": 7, "compare": 7, "cli": 8, "__main__": 8, "neural": 7, "__init__": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    body = ast.parse(path.read_text()).body
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Try, ast.If)):
            stack.extend(node.body)
            stack.extend(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                stack.extend(handler.body)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("crflearn"):
                out.add(target)
                out.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("crflearn"))
    return out


def _graph() -> nx.DiGraph:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for target in _top_level_imports(path, name):
            if target in modules and target != name:
                graph.add_edge(name, target)
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles():
    graph = _graph()
    # a package importing its own submodules (re-exports) is not a cycle between layers
    cycles = [c for c in nx.simple_cycles(graph)
              if not any(a != b and (a.startswith(b + ".") or b.startswith(a + ".")) for a in c for b in c)]
    assert cycles == []


def test_lower_layers_never_import_higher_layers():
    offending = []
    for source, target in _graph().edges:
        src, dst = _part(source), _part(target)
        if src == dst:
            continue
        assert src in LAYERS and dst in LAYERS, f"add {src!r} or {dst!r} to LAYERS"
        if LAYERS[dst] > LAYERS[src]:
            offending.append(f"{source} -> {target}")
    assert offending == []
