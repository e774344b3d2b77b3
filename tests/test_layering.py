"""The import graph runs one way: runtime at the bottom, eval above it, quantize/train on eval (not on bench).

Every import counts, including the lazy ones inside functions: a lazy import still makes the lower layer depend on
the upper one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "edgekit"


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the edgekit modules a file imports."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}  # `from . import x` names a module
    return {n for n in out if n == "edgekit" or n.startswith("edgekit.")}


def _room(name: str) -> str:
    """edgekit.runtime.backends.onnxruntime -> runtime; edgekit.sweep.pipeline -> sweep."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    """room -> rooms it imports (edgekit's top-level packages and modules)."""
    g: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        room = _room(_module(f))
        g.setdefault(room, set()).update(r for r in map(_room, _imports(f)) if r and r != room)
    return g


# room -> rooms it must never import
FORBIDDEN = {
    "runtime": {"data", "bench", "quantize", "train", "eval", "export", "advise", "sweep", "cli"},
    "eval": {"bench", "quantize", "train", "export", "advise", "sweep", "cli"},
    "data": {"bench", "quantize", "train", "eval", "export", "advise", "sweep", "cli"},
    "quantize": {"bench", "train", "sweep", "cli"},
    "train": {"bench", "quantize", "sweep", "cli"},
    "export": {"bench", "quantize", "train", "sweep", "cli"},
    "advise": {"bench", "quantize", "train", "sweep", "cli"},
    "bench": {"quantize", "train", "sweep", "cli"},
    "target": {"runtime", "bench", "quantize", "train", "eval", "export", "advise", "cli", "sweep"},
}


def test_graph_sees_the_imports_it_checks():
    g = graph()
    assert "eval" in g["quantize"] and "eval" in g["train"] and "runtime" in g["eval"]  # lazy imports included
    assert {"runtime", "data", "eval", "quantize", "train", "bench", "advise", "export", "cli"} <= set(g)


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_no_import_runs_back_up(room):
    bad = graph().get(room, set()) & FORBIDDEN[room]
    assert not bad, f"edgekit.{room} imports {sorted(bad)}"


def test_quantize_and_train_evaluate_through_eval_not_bench():
    g = graph()
    for room in ("quantize", "train"):
        assert "eval" in g[room] and "bench" not in g[room], (room, sorted(g[room]))
