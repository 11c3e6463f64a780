"""The package graph points one way: built with `ast` from the sources, it has no cycle, and every
import goes down the layers below (a stage never imports cross-validation, inference or the CLI).

A node is a package (any folder with an `__init__.py`, e.g. `data` and `data.synthetic`) or a
top-level module; a module belongs to its innermost package. Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spinegrade"

#: Lowest first. A node may import nodes of lower layers only (and itself).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("constants", "errors", "io", "timing", "__init__"),
    ("config",),
    ("dicom",),
    ("data",),
    ("metrics",),
    ("data.synthetic", "report"),
    ("training",),
    ("localize", "grade"),
    ("cv",),
    ("slices",),  # the stages on 2D PNG images: above cv (it uses the run folder), below inference
    ("inference",),
    ("demo",),
    ("cli",),
    ("__main__",),
)
RANK = {node: i for i, layer in enumerate(LAYERS) for node in layer}


def _node(module: str) -> str:
    """`spinegrade.data.synthetic.labels` -> `data.synthetic`; `spinegrade.metrics` -> `metrics`."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    package = SRC.joinpath(*parts)
    while parts and not (SRC.joinpath(*parts) / "__init__.py").is_file():
        parts = parts[:-1]
    return ".".join(parts) if parts else package.name


def import_graph() -> dict[str, dict[str, set[str]]]:
    """`{node: {imported node: {importing module, ...}}}` over every source file."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        here = _node(module) if path.name != "__init__.py" else _node(module + ".__init__")
        graph.setdefault(here, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name == "spinegrade" or name.startswith("spinegrade."):
                    target = _node(name) if name != "spinegrade" else "__init__"
                    if target != here:
                        graph[here].setdefault(target, set()).add(module)
    return graph


def _cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_graph_has_no_cycle() -> None:
    assert _cycles(import_graph()) == []


def test_every_package_has_a_layer() -> None:
    assert sorted(set(import_graph()) - set(RANK)) == []


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{a} -> {b} (in {', '.join(sorted(mods))})"
        for a, targets in sorted(import_graph().items())
        for b, mods in sorted(targets.items())
        if RANK.get(b, 99) >= RANK.get(a, -1)
    ]
    assert wrong == []


@pytest.mark.parametrize("stage", ["localize", "grade", "training"])
def test_stages_never_import_cross_validation_inference_or_the_cli(stage: str) -> None:
    above = {"cv", "inference", "cli", "demo", "__main__"}
    assert set(import_graph()[stage]) & above == set()


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    """The checks above can fail: on a graph with a cycle and an upward edge they do."""
    graph = {"grade": {"cv": {"spinegrade.grade.x"}}, "cv": {"grade": {"spinegrade.cv.y"}}}
    assert _cycles(graph) == [["cv", "grade"]]
    assert RANK["cv"] > RANK["grade"]
    assert _node("spinegrade.data.synthetic.labels") == "data.synthetic"
    assert _node("spinegrade.metrics") == "metrics"
