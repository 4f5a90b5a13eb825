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
            if target == "medcl":  # `from medcl import data`: a name is a module or an attribute
                out += [(node.lineno, _submodule(root, a.name)) for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def _submodule(root: Path, name: str) -> str:
    """``medcl.<name>`` when the package has such a module, else ``medcl`` (an attribute)."""
    exists = (root / name).is_dir() or (root / f"{name}.py").is_file()
    return f"medcl.{name}" if exists else "medcl"


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


def test_every_stage_has_a_layer():
    stages = {stage_of(module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    missing = sorted(stages - set(LAYERS))
    assert not missing, f"give these medcl modules a layer in {Path(__file__).name}: {missing}"


def test_imports_flow_one_way():
    found = violations(PACKAGE)
    assert not found, "reverse imports:\n" + "\n".join(map(str, found))


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
