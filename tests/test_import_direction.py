"""Imports flow one way: data → transforms → models/losses → train/evaluate → app/cli.

Every module of ``medcl/`` is parsed with :mod:`ast`; every ``import`` / ``from … import`` in it
(at module level, inside functions, under ``TYPE_CHECKING``, relative or absolute) that names a
``medcl`` module is checked against the layer of the importing module. A module may import from its
own layer and from the layers below it, never from a layer above.

Layers, bottom to top:

0. ``medcl`` itself (the package ``__init__``), ``errors``, ``config``, ``io`` (atomic writes),
   ``seeding`` (seed mixing), ``_quiet`` (console quieting): used by every stage, import no stage.
1. ``data``: phantom cohort, ingestion, manifests, splits, datasets and samplers.
2. ``transforms``: augmentation presets.
3. ``models``, ``losses``, ``optim``: encoders, heads, EMA, kNN; objectives' losses; schedules.
4. ``train`` and ``evaluate``: one level. Within it evaluation builds on training (the
   label-efficiency experiment runs pretraining through :mod:`medcl.train.pretrain`), so
   ``evaluate`` may import ``train``; ``train`` never imports ``evaluate``.
5. ``app``, ``cli`` and ``demo`` (which orchestrates the whole pipeline).

A new top-level module or sub-package fails the test until it is given a layer here.

Inside a stage, imports must not go round in a circle either: module A importing B while B imports
A, directly or through a chain, again counting imports inside functions (a circle that works only
because one side imports late is still one concept split over two files). ``from pkg import name``
counts as an import of the module ``pkg.name`` when there is one, else of ``pkg`` (its
``__init__``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medcl"

LAYERS: dict[str, int] = {
    "": 0,  # medcl/__init__.py
    "errors": 0,
    "config": 0,
    "io": 0,
    "seeding": 0,
    "_quiet": 0,
    "data": 1,
    "transforms": 2,
    "models": 3,
    "losses": 3,
    "optim": 3,
    "train": 4,
    "evaluate": 4,
    "app": 5,
    "cli": 5,
    "demo": 5,
}

# (importer, imported) pairs of the same layer that are also refused
SAME_LAYER_FORBIDDEN: set[tuple[str, str]] = {("train", "evaluate")}


@dataclass(frozen=True)
class Violation:
    """One import that goes against the flow."""

    file: str
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        a, b = self.importer, self.imported
        return (
            f"{self.file}:{self.line}: {a} (layer {layer_of(a)}) imports {b} "
            f"(layer {layer_of(b)}); imports must flow "
            "data → transforms → models/losses → train/evaluate → app/cli"
        )


def stage_of(module: str) -> str:
    """The top-level part of a dotted ``medcl`` module name (``""`` for ``medcl`` itself)."""
    parts = module.split(".")
    assert parts[0] == "medcl", module
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int:
    """The layer of a ``medcl`` module (KeyError for a stage without one)."""
    return LAYERS[stage_of(module)]


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a file below ``root`` (the package folder)."""
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(
    tree: ast.AST, importer: str, is_package: bool, root: Path
) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``medcl`` module an AST imports (nested imports included)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "medcl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importer's package
                base = importer.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "medcl":
                continue
            # `from medcl.x import y`: y is a module or an attribute of medcl.x
            out += sorted({(node.lineno, _submodule(root, target, a.name)) for a in node.names})
    return out


def _submodule(root: Path, package: str, name: str) -> str:
    """``<package>.<name>`` when that is a module below ``root``, else ``package``."""
    base = root.joinpath(*package.split(".")[1:], name)
    exists = base.is_dir() or base.with_suffix(".py").is_file()
    return f"{package}.{name}" if exists else package


def violations(root: Path) -> list[Violation]:
    """Every import below ``root`` that goes from a lower layer to a higher one.

    Raises:
        KeyError: A module (importer or imported) of a stage without a layer.
    """
    found: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in imported_modules(tree, importer, path.name == "__init__.py", root):
            a, b = stage_of(importer), stage_of(imported)
            if LAYERS[b] > LAYERS[a] or (a, b) in SAME_LAYER_FORBIDDEN:
                rel = path.relative_to(root.parent).as_posix()
                found.append(Violation(rel, line, importer, imported))
    return found


@dataclass(frozen=True)
class Edge:
    """One import: ``importer`` imports ``imported`` at ``file:line``."""

    file: str
    line: int
    importer: str
    imported: str


def stage_graph(root: Path) -> dict[str, list[Edge]]:
    """Every module below ``root`` → its imports of modules of the same stage (nested ones too),
    each resolved to a module of the tree (a package means its ``__init__``)."""
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, list[Edge]] = {}
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(root.parent).as_posix()
        found = imported_modules(tree, importer, path.name == "__init__.py", root)
        graph[importer] = [
            Edge(rel, line, importer, imported)
            for line, imported in found
            if imported in modules
            and imported != importer
            and stage_of(imported) == stage_of(importer)
        ]
    return graph


def circles(root: Path) -> list[list[Edge]]:
    """The import circles inside the stages below ``root``: one circle (its imports in order)
    for every group of modules that reach each other (a strongly connected component of
    :func:`stage_graph`, Tarjan's algorithm), starting at the group's first module by name."""
    graph = stage_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for e in graph[v]:
            w = e.imported
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, group) for group in sorted(groups, key=min)]


def _circle(graph: dict[str, list[Edge]], group: set[str]) -> list[Edge]:
    """A shortest chain of imports inside ``group`` from its first module back to itself."""
    start = min(group)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:  # breadth first: the shortest way round
        nxt = []
        for v in frontier:
            for e in graph[v]:
                if e.imported == start:
                    return [*paths[v], e]
                if e.imported in group and e.imported not in paths:
                    paths[e.imported] = [*paths[v], e]
                    nxt.append(e.imported)
        frontier = nxt
    raise AssertionError(f"no way back to {start} inside {sorted(group)}")


def describe(circle: list[Edge]) -> str:
    """``a → b → a`` with where each import is."""
    chain = " → ".join([circle[0].importer, *(e.imported for e in circle)])
    where = "; ".join(f"{e.file}:{e.line} imports {e.imported}" for e in circle)
    return f"{chain} ({where})"


def test_every_stage_has_a_layer():
    stages = {stage_of(module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    missing = sorted(stages - set(LAYERS))
    assert not missing, f"give these medcl modules a layer in {Path(__file__).name}: {missing}"


def test_imports_flow_one_way():
    found = violations(PACKAGE)
    assert not found, "reverse imports:\n" + "\n".join(map(str, found))


def test_no_import_circles_inside_a_stage():
    found = circles(PACKAGE)
    assert not found, "import circles (move what both sides need into a module of its own):\n" + (
        "\n".join(map(describe, found))
    )


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "medcl"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_the_checker_finds_nested_relative_and_same_level_reverse_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "data/__init__.py": "from medcl import errors\n",
            "data/split.py": "def f():\n    from medcl.train.module import X\n",
            "transforms/views.py": "from ..models import heads\nfrom . import presets\n",
            "train/pretrain.py": "import medcl.evaluate.metrics\nfrom medcl.models import knn\n",
            "evaluate/efficiency.py": "from medcl.train.pretrain import pretrain\n",
            "cli/main.py": "from medcl import demo, data\n",
            "demo.py": "",
            "errors.py": "from medcl import __version__\n",
        },
    )
    got = {(v.file, v.line, v.importer, v.imported) for v in violations(root)}
    assert got == {
        ("medcl/data/split.py", 2, "medcl.data.split", "medcl.train.module"),
        ("medcl/transforms/views.py", 1, "medcl.transforms.views", "medcl.models"),
        ("medcl/train/pretrain.py", 1, "medcl.train.pretrain", "medcl.evaluate.metrics"),
    }
    message = str(next(v for v in violations(root) if v.importer == "medcl.data.split"))
    assert message.startswith("medcl/data/split.py:2: medcl.data.split (layer 1) imports")


def test_a_stage_without_a_layer_is_refused(tmp_path):
    root = _tree(tmp_path, {"data/x.py": "from medcl.plugins import y\n"})
    with pytest.raises(KeyError, match="plugins"):
        violations(root)


def test_the_checker_finds_circles_direct_nested_through_a_chain_and_a_package(tmp_path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            # a ↔ b, b's side imported inside a function
            "evaluate/__init__.py": "",
            "evaluate/a.py": "from medcl.evaluate.b import f\n",
            "evaluate/b.py": "def f():\n    from medcl.evaluate import a\n",
            # x → y → z → x
            "data/__init__.py": "",
            "data/x.py": "import medcl.data.y\n",
            "data/y.py": "from . import z\n",
            "data/z.py": "from medcl.data.x import X\n",
            # a package whose __init__ imports a module that imports a name of the package
            "models/__init__.py": "from medcl.models.heads import Head\n",
            "models/heads.py": "from medcl.models import SIZE\n",
            # one way only, and a circle across stages (the layer check's business): none
            "train/__init__.py": "",
            "train/p.py": "from medcl.train import q\nfrom medcl.evaluate import a\n",
            "train/q.py": "from medcl.models.heads import Head\n",
        },
    )
    found = [describe(c) for c in circles(root)]
    assert found == [
        "medcl.data.x → medcl.data.y → medcl.data.z → medcl.data.x (medcl/data/x.py:1 imports "
        "medcl.data.y; medcl/data/y.py:1 imports medcl.data.z; medcl/data/z.py:1 imports "
        "medcl.data.x)",
        "medcl.evaluate.a → medcl.evaluate.b → medcl.evaluate.a (medcl/evaluate/a.py:1 imports "
        "medcl.evaluate.b; medcl/evaluate/b.py:2 imports medcl.evaluate.a)",
        "medcl.models → medcl.models.heads → medcl.models (medcl/models/__init__.py:1 imports "
        "medcl.models.heads; medcl/models/heads.py:1 imports medcl.models)",
    ]
