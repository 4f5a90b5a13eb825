"""A run folder as the dashboard sees it: which files it has, and reading them safely.

A run folder holds ``run_summary.json`` (written by ``medcl demo``), whose entries name the run's
files relative to the folder::

    {"kind": "medcl-run", "manifest": "data/split.csv", "metrics": "metrics.json",
     "embeddings": "embeddings.parquet", "model": "model", "efficiency": "efficiency/results.json",
     "efficiency_report": "efficiency/report.md", "efficiency_plot": "efficiency/efficiency.png",
     "config": "config.yaml", ...}

The dashboard reads only files inside the run folder, plus the manifest the summary names (and the
cached arrays that manifest lists). An entry that resolves outside the folder (``..``, an absolute
path, a symbolic link leading out) is refused, except for ``manifest``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcl.errors import MedclError

SUMMARY_FILE = "run_summary.json"
ENV_VAR = "MEDCL_RUN_DIR"
#: Summary entries that may point outside the run folder.
OUTSIDE_ALLOWED = ("manifest",)
#: Columns ``embeddings.parquet`` must have.
EMBEDDING_COLUMNS = (
    "image_id",
    "patient_key",
    "split",
    "label",
    "labelled",
    "prediction",
    "confidence",
)
#: 2-D projections the embedding table may carry, in display order: key -> title.
PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
#: Manifest columns joined to the embeddings table (never ``path``: source folder names can
#: identify patients).
MANIFEST_COLUMNS = ("image_id", "modality", "dims", "rows", "cols", "slices", "cache_path")
#: An image and its prediction, first in every table of images (never ``path``).
PREDICTION_COLUMNS = ("image_id", "patient_key", "split", "label", "prediction", "confidence")
#: Columns of the embeddings table shown in tables.
PUBLIC_COLUMNS = (*PREDICTION_COLUMNS, "correct")


@dataclass(frozen=True)
class RunFolder:
    """An opened run folder.

    Attributes:
        root: The folder (absolute, resolved).
        summary: The parsed ``run_summary.json``.
    """

    root: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The folder's name, for titles."""
        return self.root.name

    def path(self, key: str) -> Path | None:
        """The file the summary names under ``key``, or ``None`` when it names none.

        Raises:
            MedclError: If the entry points outside the run folder (``manifest`` excepted).
        """
        value = self.summary.get(key)
        if not value or not isinstance(value, str):
            return None
        p = Path(value)
        p = (p if p.is_absolute() else self.root / p).resolve()
        if key not in OUTSIDE_ALLOWED and not _is_within(p, self.root):
            raise MedclError(f"run_summary.json: {key!r} points outside the run folder; refused")
        return p

    def existing(self, key: str) -> Path | None:
        """Like :meth:`path`, but ``None`` when the file does not exist either."""
        p = self.path(key)
        return p if p is not None and p.exists() else None


def _is_within(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
    except ValueError:
        return False
    return True


def open_run(run_dir: str | os.PathLike[str]) -> RunFolder:
    """Open a run folder.

    Raises:
        MedclError: If the folder or its ``run_summary.json`` is missing or unreadable.
    """
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise MedclError(f"{root}: run folder not found")
    f = root / SUMMARY_FILE
    if not f.is_file():
        raise MedclError(
            f"{root}: not a medcl run folder (no {SUMMARY_FILE}; make one with `medcl demo`)"
        )
    summary = read_json(f)
    if summary.get("kind", "medcl-run") != "medcl-run":
        raise MedclError(f"{f}: kind is {summary.get('kind')!r}, expected 'medcl-run'")
    return RunFolder(root.resolve(), summary)


def find_runs(base: str | os.PathLike[str] = "runs", max_depth: int = 3) -> list[Path]:
    """Run folders (those holding ``run_summary.json``) below ``base``, sorted; [] if none."""
    base = Path(base)
    if not base.is_dir():
        return []
    found: list[Path] = []
    for depth in range(max_depth):
        pattern = "/".join(["*"] * depth + [SUMMARY_FILE])
        found.extend(p.parent for p in base.glob(pattern) if p.is_file())
    return sorted(set(found))


def run_dir_argument(
    argv: Sequence[str], script: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> str | None:
    """The run folder the app was started for, or ``None``.

    ``streamlit run apps/dashboard.py -- RUN_DIR`` gives ``sys.argv == [script, RUN_DIR]``; the
    argument is used only when ``argv[0]`` is the app itself (under a test runner ``sys.argv``
    belongs to the runner). Otherwise the ``MEDCL_RUN_DIR`` environment variable is used.
    """
    env = os.environ if environ is None else environ
    if len(argv) > 1 and argv[0] and _same_file(argv[0], script) and argv[1].strip():
        return argv[1]
    value = env.get(ENV_VAR, "").strip()
    return value or None


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object from a file.

    Raises:
        MedclError: If the file is missing or not a JSON object.
    """
    errors = (UnicodeDecodeError, json.JSONDecodeError)
    return _read_mapping(path, json.loads, errors, "JSON", "a JSON object")


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The resolved ``config.yaml`` of a run as nested dicts.

    Raises:
        MedclError: If the file is missing or not a YAML mapping.
    """
    import yaml

    return _read_mapping(path, yaml.safe_load, (yaml.YAMLError,), "YAML", "a mapping")


def _read_mapping(
    path: str | os.PathLike[str],
    parse: Callable[[str], Any],
    errors: tuple[type[Exception], ...],
    language: str,
    expected: str,
) -> dict[str, Any]:
    """The dict ``parse`` makes of a text file; ``errors`` are its parse errors."""
    p = Path(path)
    try:
        data = parse(p.read_text())
    except FileNotFoundError as exc:
        raise MedclError(f"{p.name}: file not found") from exc
    except (OSError, *errors) as exc:
        raise MedclError(f"{p.name}: not readable {language} ({exc})") from exc
    if not isinstance(data, dict):
        raise MedclError(f"{p.name}: expected {expected}")
    return data


def read_embeddings(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The embeddings table without its vector column, and the vectors as an ``(N, F)`` array.

    Returns:
        ``(table, vectors)``; ``vectors`` is ``None`` when the table has no ``embedding`` column.
        ``correct`` is a nullable boolean; ``label`` is ``""`` for unlabelled rows.

    Raises:
        MedclError: If the file is missing, unreadable or lacks required columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise MedclError(f"{p.name}: embeddings not found (run `medcl embed`)")
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as exc:
        raise MedclError(f"{p.name}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in EMBEDDING_COLUMNS if c not in table.column_names]
    if missing:
        raise MedclError(f"{p.name}: missing column(s) {', '.join(missing)}")
    vectors = None
    if "embedding" in table.column_names:
        col = table.column("embedding").combine_chunks()
        n = len(col)
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if n and flat.size % n == 0:
            vectors = flat.reshape(n, flat.size // n)
        table = table.drop(["embedding"])
    df = table.to_pandas()
    for c in ("image_id", "patient_key", "split", "label", "prediction"):
        df[c] = df[c].fillna("").astype(str)
    df["labelled"] = df["labelled"].astype(bool)
    if "correct" in df.columns:
        df["correct"] = df["correct"].astype("boolean")
    else:
        df["correct"] = pd.array(
            np.where(df["labelled"], df["label"] == df["prediction"], None), dtype="boolean"
        )
    return df, vectors


def available_projections(df: pd.DataFrame) -> list[str]:
    """Keys of :data:`PROJECTIONS` whose ``<key>_x``/``<key>_y`` columns are present."""
    return [k for k in PROJECTIONS if f"{k}_x" in df.columns and f"{k}_y" in df.columns]


def class_names(df: pd.DataFrame, model_classes: Sequence[str] | None = None) -> list[str]:
    """The class list: the model's when known, else from the ``prob_<class>`` columns."""
    if model_classes:
        return [str(c) for c in model_classes]
    return [c[len("prob_") :] for c in df.columns if c.startswith("prob_")]


def probabilities(df: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """The ``(N, C)`` matrix of ``prob_<class>`` columns (float64).

    Raises:
        MedclError: If a class has no probability column.
    """
    cols = [f"prob_{c}" for c in classes]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise MedclError(f"embeddings: missing column(s) {', '.join(missing)}")
    return df[cols].to_numpy(dtype=np.float64)


def with_manifest_columns(table: pd.DataFrame, manifest: pd.DataFrame | None) -> pd.DataFrame:
    """The embeddings table with the manifest's :data:`MANIFEST_COLUMNS` joined by ``image_id``.

    ``cache_path`` is always there afterwards: ``""`` where the manifest has no cached array (or
    there is no manifest).
    """
    df = table
    if manifest is not None:
        extra = manifest[list(MANIFEST_COLUMNS)]
        df = df.merge(extra.drop_duplicates("image_id"), on="image_id", how="left")
    if "cache_path" not in df.columns:
        df["cache_path"] = ""
    df["cache_path"] = df["cache_path"].fillna("").astype(str)
    return df


def find_row(table: pd.DataFrame, image_id: str) -> pd.Series | None:
    """The first row of ``table`` with this ``image_id``, or None."""
    hit = table.index[table["image_id"] == image_id]
    return table.loc[hit[0]] if len(hit) else None


def file_stamp(path: str | os.PathLike[str] | None) -> int:
    """Modification time (ns) of a file or folder, 0 when absent: a cache key that changes when
    the file does."""
    try:
        return Path(path).stat().st_mtime_ns if path is not None else 0
    except OSError:
        return 0
