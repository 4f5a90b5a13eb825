"""What every page reads: the run's files through Streamlit's caches, gathered in a :class:`Ctx`.

Cached readers are keyed by path and modification time (:func:`medcl.app.run.file_stamp`), so an
updated file is read again. Full images and Grad-CAM maps can be volumes (tens of MB) and keep few
entries; thumbnails are small and keep many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from medcl.app import images
from medcl.app.augment import augmentation_views
from medcl.app.findings import is_multilabel
from medcl.app.run import (
    MANIFEST_COLUMNS,
    RunFolder,
    class_names,
    file_stamp,
    read_config,
    read_embeddings,
    read_json,
    with_manifest_columns,
)
from medcl.errors import MedclError
from medcl.evaluate.model import read_description
from medcl.models.description import ModelDescription


@st.cache_data(show_spinner=False, max_entries=32)
def cached_json(path: str, stamp: int) -> dict[str, Any]:
    """:func:`medcl.app.run.read_json`, cached."""
    return read_json(path)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_description(model_dir: str, stamp: int) -> ModelDescription:
    """:func:`medcl.evaluate.model.read_description` of a model folder, cached."""
    return read_description(model_dir)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_config(path: str, stamp: int) -> dict[str, Any]:
    """:func:`medcl.app.run.read_config`, cached."""
    return read_config(path)


@st.cache_resource(show_spinner="Reading the manifest…", max_entries=4)
def cached_manifest(path: str, stamp: int) -> tuple[pd.DataFrame, list[str], str]:
    """The manifest's columns the app uses (never ``path``), its classes (a multi-label
    manifest: its findings) and its task (``multiclass`` or ``multilabel``)."""
    from medcl.data.manifest import read_manifest

    m = read_manifest(path)
    cols = ["patient_key", "label", "split", *MANIFEST_COLUMNS]
    return m.df[list(dict.fromkeys(cols))].copy(), list(m.classes), m.task


LEAK_CHECK_CAP = 5000
"""Largest manifest the dashboard checks for near-duplicates itself (without a leak report)."""


@st.cache_resource(show_spinner="Checking the splits for near-duplicates…", max_entries=4)
def cached_leaks(path: str, stamp: int) -> pd.DataFrame:
    """Suspected cross-split near-duplicates of a split manifest: the report ``medcl split``
    wrote beside it, else a perceptual-hash check run here (:mod:`medcl.data.leaks`)."""
    from medcl.data.leaks import find_leaks, read_leak_report
    from medcl.data.manifest import read_manifest

    written = read_leak_report(path)
    if written is not None:
        return written
    m = read_manifest(path)
    if len(m) > LEAK_CHECK_CAP:
        raise MedclError(
            f"no leak report beside the manifest, and {len(m)} images are too many to check "
            "here; `medcl split` writes one"
        )
    return find_leaks(m).pairs


@st.cache_resource(show_spinner="Reading the embeddings…", max_entries=4)
def cached_table(
    emb_path: str, emb_stamp: int, man_path: str, man_stamp: int
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The embeddings table joined with the manifest's image columns (read-only, shared)."""
    df, vectors = read_embeddings(emb_path)
    manifest = cached_manifest(man_path, man_stamp)[0] if man_path else None
    return with_manifest_columns(df, manifest), vectors


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def cached_gradcam(model_dir: str, stamp: int) -> Any:
    """A Grad-CAM explainer of the run's model (one per model)."""
    from medcl.app.gradcam import GradCamExplainer
    from medcl.evaluate.model import load_model

    return GradCamExplainer(load_model(model_dir))


@st.cache_data(show_spinner=False, max_entries=32)
def cached_display(cache_path: str, preset: str, window: tuple[float, float]) -> np.ndarray:
    """:func:`medcl.app.images.load_display`, cached."""
    return images.load_display(cache_path, preset, window)


@st.cache_data(show_spinner=False, max_entries=8192)
def cached_thumbnail(
    cache_path: str, preset: str, window: tuple[float, float], size: int
) -> np.ndarray:
    """An 8-bit thumbnail of a cached image, cached."""
    return images.thumbnail(images.load_display(cache_path, preset, window), size)


@st.cache_data(show_spinner="Computing Grad-CAM…", max_entries=32)
def cached_cam(model_dir: str, stamp: int, cache_path: str, class_idx: int) -> np.ndarray:
    """The Grad-CAM map of a cached image for one class, cached."""
    from medcl.data.cache import load_cached

    return cached_gradcam(model_dir, stamp)(load_cached(cache_path), class_idx)


@st.cache_data(show_spinner="Augmenting…", max_entries=64)
def cached_views(
    paths: tuple[str, ...], meta_json: str, augment_json: str, n_views: int, seed: int
) -> np.ndarray:
    """The training views of cached images (arguments as JSON text, so that they hash)."""
    from medcl.data.cache import load_cached

    description = ModelDescription.from_dict(json.loads(meta_json))
    return augmentation_views(
        [load_cached(p) for p in paths], description, json.loads(augment_json), n_views, seed
    )


@dataclass
class Ctx:
    """Everything a page needs; ``problems[part]`` says why a part is missing."""

    run: RunFolder
    description: ModelDescription | None = None
    metrics: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    efficiency: dict[str, Any] | None = None
    manifest: pd.DataFrame | None = None
    leaks: pd.DataFrame | None = None
    table: pd.DataFrame | None = None
    vectors: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    multilabel: bool = False
    """Whether the run is multi-label: ``classes`` are then its findings, each with its own
    probability (:mod:`medcl.app.findings`)."""

    @property
    def preset(self) -> str:
        """The model's intensity preset (``xr`` when unknown)."""
        return self.description.preset if self.description is not None else "xr"

    @property
    def window(self) -> tuple[float, float]:
        """The model's CT window ``(level, width)``."""
        return self.description.window if self.description is not None else (40.0, 400.0)

    def need(self, *parts: str) -> bool:
        """Show a warning for each missing part; ``True`` when all are there."""
        ok = True
        for part in parts:
            if getattr(self, part) is None:
                st.warning(self.problems.get(part, f"this run has no {part}"))
                ok = False
        return ok


def load_context(run: RunFolder) -> Ctx:
    """Read what the run has; missing or broken parts are recorded, not raised."""
    ctx = Ctx(run=run)

    def attempt(part: str, key: str, reader: Any) -> Any:
        try:
            p = run.existing(key)
            if p is None:
                named = run.summary.get(key)
                ctx.problems[part] = (
                    f"{named}: not found in the run folder"
                    if named
                    else f"run_summary.json names no {key!r} file"
                )
                return None
            return reader(p)
        except MedclError as exc:
            ctx.problems[part] = str(exc)
            return None

    ctx.description = attempt(
        "description",
        "model",
        lambda p: cached_description(str(p), file_stamp(p / "metadata.json")),
    )
    ctx.metrics = attempt("metrics", "metrics", lambda p: cached_json(str(p), file_stamp(p)))
    ctx.config = attempt("config", "config", lambda p: cached_config(str(p), file_stamp(p)))
    ctx.efficiency = attempt(
        "efficiency", "efficiency", lambda p: cached_json(str(p), file_stamp(p))
    )
    man = attempt("manifest", "manifest", lambda p: (str(p), file_stamp(p)))
    man_path, man_stamp = man if man is not None else ("", 0)
    man_classes: list[str] = []
    man_task = ""
    if man_path:
        try:
            ctx.manifest, man_classes, man_task = cached_manifest(man_path, man_stamp)
        except MedclError as exc:
            ctx.problems["manifest"] = str(exc)
            man_path, man_stamp = "", 0
    if man_path:
        try:
            ctx.leaks = cached_leaks(man_path, man_stamp)
        except (MedclError, OSError, ValueError) as exc:
            ctx.problems["leaks"] = f"near-duplicates across splits not checked: {exc}"
    emb = attempt(
        "table",
        "embeddings",
        lambda p: cached_table(str(p), file_stamp(p), man_path, man_stamp),
    )
    if emb is not None:
        ctx.table, ctx.vectors = emb
        if ctx.vectors is None:
            ctx.problems["vectors"] = "the embeddings table has no embedding vectors"
    else:
        ctx.problems.setdefault("vectors", ctx.problems.get("table", "no embeddings"))
    model_classes = ctx.description.classes if ctx.description is not None else []
    if ctx.table is not None:
        ctx.classes = class_names(ctx.table, model_classes)
    else:
        ctx.classes = list(model_classes) or man_classes
    model_task = str(getattr(ctx.description, "task", "") or "")
    ctx.multilabel = is_multilabel(ctx.metrics, man_task, model_task)
    return ctx
