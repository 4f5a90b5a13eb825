"""medcl review dashboard: look at a run in the browser.

Start it with ``medcl dashboard RUN_DIR`` or ``streamlit run apps/dashboard.py -- RUN_DIR``.
Without an argument it uses ``$MEDCL_RUN_DIR``, then offers the run folders under ``./runs``.

Pages (sidebar; each can be opened directly with ``?page=<key>``):

- ``overview`` — configuration, data, test metrics with intervals, label efficiency;
- ``embedding`` — interactive 2-D embedding (box/lasso selection shows the images);
- ``case`` — one image: prediction, probabilities, Grad-CAM, nearest neighbours;
- ``errors`` — confusion matrix, per-class metrics, reliability diagram, cases to review;
- ``augment`` — the augmented views the model was trained with;
- ``label`` — which unlabelled images to label next, as a CSV sheet for annotation.

Only files inside the run folder and the manifest it names are read; only pseudonymous keys
(``image_id``, ``patient_key``) are shown. All logic lives in :mod:`medcl.app`; this file is the
Streamlit layout and caching.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from medcl.app import acquisition, figures, images, overview
from medcl.app.augment import augmentation_views, training_preset
from medcl.app.cases import review_cases
from medcl.app.labelling import labelling_sheet
from medcl.app.neighbours import nearest_neighbours
from medcl.app.run import (
    PROJECTIONS,
    RunFolder,
    available_projections,
    class_names,
    find_runs,
    open_run,
    probabilities,
    read_config,
    read_embeddings,
    read_json,
    run_dir_argument,
)
from medcl.app.sampling import downsample_indices
from medcl.errors import MedclError

PAGES = {
    "overview": "Overview",
    "embedding": "Embedding explorer",
    "case": "Case viewer",
    "errors": "Errors and calibration",
    "augment": "Augmentations",
    "label": "Label next",
}
#: Manifest columns the app uses (never ``path``: source folder names can identify patients).
MANIFEST_COLUMNS = ("image_id", "modality", "dims", "rows", "cols", "slices", "cache_path")
#: Columns of the embeddings table shown in tables.
PUBLIC_COLUMNS = (
    "image_id",
    "patient_key",
    "split",
    "label",
    "prediction",
    "confidence",
    "correct",
)
DEFAULT_CAP = 10_000
THUMB = 112
SPLIT_ORDER = {"test": 0, "val": 1, "train": 2, "": 3}


# --------------------------------------------------------------------------- loading (cached)


def _stamp(p: Path | None) -> int:
    """Modification time of a file or folder (cache key part), 0 when absent."""
    try:
        return p.stat().st_mtime_ns if p is not None else 0
    except OSError:
        return 0


@st.cache_data(show_spinner=False, max_entries=32)
def _json(path: str, stamp: int) -> dict[str, Any]:
    return read_json(path)


@st.cache_data(show_spinner=False, max_entries=8)
def _yaml(path: str, stamp: int) -> dict[str, Any]:
    return read_config(path)


@st.cache_resource(show_spinner="Reading the manifest…", max_entries=4)
def _manifest(path: str, stamp: int) -> tuple[pd.DataFrame, list[str]]:
    from medcl.data.manifest import read_manifest

    m = read_manifest(path)
    cols = ["patient_key", "label", "split", *MANIFEST_COLUMNS]
    return m.df[list(dict.fromkeys(cols))].copy(), list(m.classes)


@st.cache_resource(show_spinner="Reading the embeddings…", max_entries=4)
def _table(
    emb_path: str, emb_stamp: int, man_path: str, man_stamp: int
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The embeddings table joined with the manifest's image columns (read-only, shared)."""
    df, vectors = read_embeddings(emb_path)
    if man_path:
        extra = _manifest(man_path, man_stamp)[0][list(MANIFEST_COLUMNS)]
        df = df.merge(extra.drop_duplicates("image_id"), on="image_id", how="left")
    if "cache_path" not in df.columns:
        df["cache_path"] = ""
    df["cache_path"] = df["cache_path"].fillna("").astype(str)
    return df, vectors


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _gradcam(model_dir: str, stamp: int) -> Any:
    from medcl.app.gradcam import GradCamExplainer
    from medcl.evaluate.model import load_model

    return GradCamExplainer(load_model(model_dir))


# full images and Grad-CAM maps can be volumes (tens of MB): few entries; thumbnails are small
@st.cache_data(show_spinner=False, max_entries=32)
def _display(cache_path: str, preset: str, window: tuple[float, float]) -> np.ndarray:
    return images.load_display(cache_path, preset, window)


@st.cache_data(show_spinner=False, max_entries=8192)
def _thumbnail(cache_path: str, preset: str, window: tuple[float, float], size: int) -> np.ndarray:
    return images.thumbnail(images.load_display(cache_path, preset, window), size)


@st.cache_data(show_spinner="Computing Grad-CAM…", max_entries=32)
def _cam(model_dir: str, stamp: int, cache_path: str, class_idx: int) -> np.ndarray:
    from medcl.data.cache import load_cached

    return _gradcam(model_dir, stamp)(load_cached(cache_path), class_idx)


@st.cache_data(show_spinner="Augmenting…", max_entries=64)
def _views(
    paths: tuple[str, ...], meta_json: str, augment_json: str, n_views: int, seed: int
) -> np.ndarray:
    from medcl.data.cache import load_cached

    meta = json.loads(meta_json)
    preset = training_preset(meta, json.loads(augment_json))
    return augmentation_views(
        [load_cached(p) for p in paths], preset, n_views, int(meta["image_size"]), seed
    )


# --------------------------------------------------------------------------- run context


@dataclass
class Ctx:
    """Everything a page needs; ``problems[part]`` says why a part is missing."""

    run: RunFolder
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    efficiency: dict[str, Any] | None = None
    manifest: pd.DataFrame | None = None
    table: pd.DataFrame | None = None
    vectors: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def preset(self) -> str:
        return str(self.meta.get("preset", "xr"))

    @property
    def window(self) -> tuple[float, float]:
        w = self.meta.get("window") or (40.0, 400.0)
        return (float(w[0]), float(w[1]))

    def need(self, *parts: str) -> bool:
        """Show a warning for each missing part; ``True`` when all are there."""
        ok = True
        for part in parts:
            if getattr(self, part) is None or (part == "meta" and not self.meta):
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

    model_meta = attempt(
        "meta", "model", lambda p: _json(str(p / "metadata.json"), _stamp(p / "metadata.json"))
    )
    ctx.meta = model_meta or {}
    ctx.metrics = attempt("metrics", "metrics", lambda p: _json(str(p), _stamp(p)))
    ctx.config = attempt("config", "config", lambda p: _yaml(str(p), _stamp(p)))
    ctx.efficiency = attempt("efficiency", "efficiency", lambda p: _json(str(p), _stamp(p)))
    man = attempt("manifest", "manifest", lambda p: (str(p), _stamp(p)))
    man_path, man_stamp = man if man is not None else ("", 0)
    man_classes: list[str] = []
    if man_path:
        try:
            ctx.manifest, man_classes = _manifest(man_path, man_stamp)
        except MedclError as exc:
            ctx.problems["manifest"] = str(exc)
            man_path, man_stamp = "", 0
    emb = attempt("table", "embeddings", lambda p: _table(str(p), _stamp(p), man_path, man_stamp))
    if emb is not None:
        ctx.table, ctx.vectors = emb
        if ctx.vectors is None:
            ctx.problems["vectors"] = "the embeddings table has no embedding vectors"
    else:
        ctx.problems.setdefault("vectors", ctx.problems.get("table", "no embeddings"))
    if ctx.table is not None:
        ctx.classes = class_names(ctx.table, ctx.meta)
    else:
        ctx.classes = [str(c) for c in ctx.meta.get("classes", [])] or man_classes
    return ctx


def _row(ctx: Ctx, image_id: str) -> pd.Series | None:
    t = ctx.table
    if t is None:
        return None
    hit = t.index[t["image_id"] == image_id]
    return t.loc[hit[0]] if len(hit) else None


def _image(ctx: Ctx, cache_path: str) -> np.ndarray | None:
    if not cache_path:
        return None
    try:
        return _display(cache_path, ctx.preset, ctx.window)
    except MedclError:
        return None


def _thumbs(ctx: Ctx, ids: list[str], captions: list[str], n_cols: int = 6) -> None:
    """A grid of thumbnails (``no image`` where the cached array is missing)."""
    if not ids:
        return
    paths = {}
    if ctx.table is not None:
        sub = ctx.table[ctx.table["image_id"].isin(ids)]
        paths = dict(zip(sub["image_id"], sub["cache_path"], strict=True))
    cols = st.columns(n_cols)
    missing = 0
    for k, (iid, cap) in enumerate(zip(ids, captions, strict=True)):
        with cols[k % n_cols]:
            try:
                img = _thumbnail(paths.get(iid, ""), ctx.preset, ctx.window, THUMB)
            except (MedclError, OSError, ValueError):
                img = None
            if img is None:
                missing += 1
                st.caption(f"{cap}\n\n(no image)")
            else:
                st.image(img, caption=cap)
    if missing:
        st.caption(f"{missing} image(s) have no readable cached array in the manifest.")


def _open_case(image_id: str) -> None:
    """Callback: show ``image_id`` in the case viewer."""
    st.session_state["current_case"] = image_id
    st.session_state["case_id"] = image_id
    st.session_state["page"] = "case"


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if np.isnan(f) else f"{f:.{digits}f}"


# --------------------------------------------------------------------------- pages


def page_overview(ctx: Ctx) -> None:
    """Config summary, data summary, metrics with intervals, label efficiency."""
    st.header("Overview")
    if ctx.run.summary.get("headline"):
        st.markdown(f"**{ctx.run.summary['headline']}**")

    st.subheader("Test metrics")
    if ctx.need("metrics"):
        mt = overview.metrics_table(ctx.metrics)
        cols = st.columns(max(1, len(mt)))
        for col, r in zip(cols, mt.itertuples(index=False), strict=False):
            iv = (
                "95 % interval n/a"
                if r.low is None or pd.isna(r.low)
                else f"95 % interval [{r.low:.3f}, {r.high:.3f}]"
            )
            col.metric(r.metric, _fmt(r.value), help=iv)
        shown = mt.assign(
            **{
                "95 % interval": [
                    overview.interval_text(v, lo, hi)
                    for v, lo, hi in zip(mt["value"], mt["low"], mt["high"], strict=True)
                ]
            }
        )
        st.dataframe(shown[["metric", "95 % interval", "n_boot_valid"]], hide_index=True)
        n, n_pat = ctx.metrics.get("n"), ctx.metrics.get("n_patients")
        st.caption(
            f"Test split: {n} images from {n_pat} patients; intervals are 95 % "
            "patient-level bootstrap intervals."
        )

    left, right = st.columns(2)
    with left:
        st.subheader("Data")
        if ctx.need("manifest"):
            ds = overview.data_summary(ctx.manifest)
            ds["labelled_share"] = ds["labelled_share"] * 100
            st.dataframe(
                ds,
                hide_index=True,
                column_config={
                    "labelled_share": st.column_config.NumberColumn("labelled %", format="%.1f %%")
                },
            )
            if ctx.classes:
                st.caption("Labelled images per class and split")
                st.dataframe(overview.class_counts(ctx.manifest, ctx.classes))
    with right:
        st.subheader("Configuration")
        m = ctx.meta
        if m:
            arch = m.get("architecture", {})
            facts = {
                "model": m.get("name", "?"),
                "encoder": f"{arch.get('encoder', '?')} (width {arch.get('width', '?')})",
                "pretraining": (m.get("pretraining") or {}).get("method", "?"),
                "head": m.get("head", "?"),
                "input": f"{m.get('spatial_dims', '?')}-D, {m.get('image_size', '?')} px, "
                f"{m.get('modality', '?')} (preset {m.get('preset', '?')})",
                "classes": ", ".join(ctx.classes),
                "label fraction": f"{100 * float(ctx.run.summary.get('label_fraction', 0)):g} %"
                if ctx.run.summary.get("label_fraction") is not None
                else "?",
            }
            st.dataframe(
                pd.DataFrame({"": list(facts), "value": list(facts.values())}), hide_index=True
            )
        if ctx.need("config"):
            with st.expander("All settings"):
                st.dataframe(overview.config_summary(ctx.config), hide_index=True)

    st.subheader("Label efficiency")
    plot = ctx.run.existing("efficiency_plot") if "efficiency_plot" in ctx.run.summary else None
    if ctx.efficiency is not None:
        eff = overview.efficiency_table(ctx.efficiency)
        metric = str(ctx.efficiency.get("metric", "balanced_accuracy"))
        if len(eff):
            st.plotly_chart(figures.efficiency_figure(eff, metric), key="eff_chart")
            st.dataframe(
                eff,
                hide_index=True,
                column_config={
                    "label_fraction": st.column_config.NumberColumn(
                        "label fraction", format="%.3g"
                    ),
                    "value": st.column_config.NumberColumn(metric, format="%.3f"),
                    "low": st.column_config.NumberColumn(format="%.3f"),
                    "high": st.column_config.NumberColumn(format="%.3f"),
                },
            )
        else:
            st.info("The label-efficiency results hold no runs.")
    elif plot is not None:
        st.image(str(plot))
    else:
        st.info("No label-efficiency results in this run.")


def page_embedding(ctx: Ctx) -> None:
    """Interactive 2-D embedding; a box or lasso selection shows the images."""
    st.header("Embedding explorer")
    if not ctx.need("table"):
        return
    t = ctx.table
    projs = available_projections(t)
    if not projs:
        st.warning("The embeddings table has no 2-D projection (pca_x/pca_y).")
        return
    c1, c2, c3, c4 = st.columns([1, 1, 2, 1])
    proj = c1.selectbox(
        "Projection", projs, format_func=PROJECTIONS.get, key="emb_proj", persist_state="session"
    )
    by = c2.selectbox(
        "Colour by",
        list(figures.COLOUR_MODES),
        format_func=figures.COLOUR_MODES.get,
        key="emb_color",
        persist_state="session",
    )
    splits = [s for s in SPLIT_ORDER if (t["split"] == s).any()]
    chosen = c3.multiselect(
        "Splits",
        splits,
        default=splits,
        key="emb_splits",
        format_func=lambda s: s or "unassigned",
        persist_state="session",
    )
    cap = int(
        c4.number_input(
            "Max points drawn",
            min_value=500,
            max_value=200_000,
            value=DEFAULT_CAP,
            step=500,
            key="emb_cap",
            persist_state="session",
        )
    )
    view = t[t["split"].isin(chosen)].reset_index(drop=True)
    if view.empty:
        st.info("No points in the chosen splits.")
        return
    before = set(figures.selected_ids(st.session_state.get("emb_chart")))
    before.add(str(st.session_state.get("current_case", "")))
    keep = view["labelled"].to_numpy() | view["image_id"].isin(before).to_numpy()
    idx = downsample_indices(len(view), cap, keep)
    shown = view.iloc[idx]
    if len(idx) < len(view):
        st.caption(
            f"Showing {len(idx):,} of {len(view):,} points: every labelled and selected "
            "point, and a fixed random sample of the others (raise 'Max points drawn' to "
            "see more)."
        )
    else:
        st.caption(f"{len(view):,} points. Drag a box or lasso (toolbar) to select.")
    fig = figures.embedding_figure(shown, proj, by, ctx.classes, PROJECTIONS[proj])
    event = st.plotly_chart(
        fig,
        key="emb_chart",
        on_select="rerun",
        selection_mode=("box", "lasso"),
        config={"displaylogo": False, "scrollZoom": True},
    )
    ids = figures.selected_ids(event)
    if not ids:
        st.info("Select points with the box or lasso tool to see their images and metadata.")
        return
    sel = view[view["image_id"].isin(ids)]
    if sel.empty:
        st.info("The selected points are not in the chosen splits.")
        return
    st.subheader(f"{len(sel)} selected")
    counts = pd.crosstab(sel["label"].replace("", figures.UNLABELLED), sel["prediction"])
    a, b = st.columns([2, 1])
    with a:
        st.dataframe(sel[list(PUBLIC_COLUMNS)], hide_index=True, height=260)
    with b:
        st.caption("label (rows) × prediction (columns)")
        st.dataframe(counts)
    first = sel.head(30)
    _thumbs(
        ctx,
        list(first["image_id"]),
        [
            f"{r.image_id[:10]} · {r.label or 'unlabelled'} → {r.prediction}"
            for r in first.itertuples()
        ],
    )
    if len(sel) > 30:
        st.caption(f"First 30 of {len(sel)} images shown.")
    pick = st.selectbox("Open in the case viewer", list(sel["image_id"]), key="emb_open")
    st.button("Open case", on_click=_open_case, args=(pick,), key="emb_open_btn")


def page_case(ctx: Ctx) -> None:
    """One image: prediction, probabilities, Grad-CAM overlay, nearest neighbours."""
    st.header("Case viewer")
    if not ctx.need("table"):
        return
    t = ctx.table
    order = t.assign(_o=t["split"].map(SPLIT_ORDER).fillna(9)).sort_values(["_o", "image_id"])
    options = list(order["image_id"])
    text = {
        r.image_id: f"{r.image_id} · {r.split or 'unassigned'} · {r.label or 'unlabelled'}"
        f" → {r.prediction}"
        for r in order.itertuples()
    }
    if st.session_state.get("case_id") not in text:  # back on this page, or a new run
        current = st.session_state.get("current_case")
        st.session_state["case_id"] = current if current in text else options[0]
    image_id = st.selectbox("Image (type to search)", options, format_func=text.get, key="case_id")
    st.session_state["current_case"] = image_id
    row = _row(ctx, image_id)
    if row is None:
        st.error(f"{image_id}: not in the embeddings table")
        return
    probs = [float(row.get(f"prob_{c}", np.nan)) for c in ctx.classes]
    left, right = st.columns([3, 2])
    with right:
        st.subheader("Prediction")
        verdict = (
            ""
            if not row["label"]
            else (" (correct)" if row["label"] == row["prediction"] else " (wrong)")
        )
        st.markdown(f"**{row['prediction']}** (confidence {_fmt(row['confidence'])}){verdict}")
        st.plotly_chart(
            figures.probability_figure(probs, ctx.classes, row["label"]), key="case_probs"
        )
        meta = {
            "image_id": row["image_id"],
            "patient_key": row["patient_key"],
            "split": row["split"] or "unassigned",
            "label": row["label"] or "(unlabelled)",
            "modality": row.get("modality", ""),
            "size": "×".join(
                str(int(v))
                for v in (row.get("slices"), row.get("rows"), row.get("cols"))
                if v is not None and not pd.isna(v) and int(v) > 1
            ),
        }
        st.dataframe(
            pd.DataFrame({"": list(meta), "value": [str(v) for v in meta.values()]}),
            hide_index=True,
        )
    with left:
        img = _image(ctx, row["cache_path"])
        if img is None:
            st.warning("No readable cached image for this case (is the manifest missing?).")
        else:
            _case_image(ctx, row, img)
    _neighbours(ctx, row)


def _case_image(ctx: Ctx, row: pd.Series, img: np.ndarray) -> None:
    """The image (slice slider for volumes) beside its Grad-CAM overlay."""
    depth = images.n_slices(img)
    model = ctx.run.existing("model")
    explainer, note = None, ""
    if model is None or not ctx.meta:
        note = ctx.problems.get("meta", "this run has no model: no Grad-CAM")
    else:
        explainer = _gradcam(str(model), _stamp(model / "weights.pt"))
        if not explainer.available:
            note, explainer = f"Grad-CAM unavailable: {explainer.reason}.", None
    cols = st.columns(3 if depth > 1 else 2)
    c1, c2 = cols[-2], cols[-1]
    z = None
    if depth > 1:
        z = cols[0].slider("Slice", 0, depth - 1, depth // 2, key=f"case_slice_{row['image_id']}")
    if explainer is not None:
        pred = ctx.classes.index(row["prediction"]) if row["prediction"] in ctx.classes else 0
        cls = c1.selectbox(
            "Grad-CAM for class", ctx.classes, index=pred, key=f"cam_class_{row['image_id']}"
        )
        alpha = c2.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="cam_alpha")
    grey = images.take_slice(img, z)
    left, right = st.columns(2)
    left.image(images.scale_for_display(images.to_uint8(grey), 384), caption="image")
    if explainer is None:
        right.warning(note)
        return
    heat = _cam(str(model), _stamp(model / "weights.pt"), row["cache_path"], ctx.classes.index(cls))
    rgb = images.overlay(grey, images.take_slice(heat, z), alpha)
    right.image(
        images.scale_for_display(rgb, 384),
        caption=f"Grad-CAM for {cls} (encoder.layer4): warm regions drive this class",
    )


def _neighbours(ctx: Ctx, row: pd.Series) -> None:
    st.subheader("Nearest neighbours in embedding space")
    if ctx.vectors is None:
        st.warning(ctx.problems.get("vectors", "no embedding vectors"))
        return
    t = ctx.table
    c1, c2 = st.columns(2)
    k = c1.slider("Neighbours", 1, 24, 8, key="case_k")
    pool = c2.selectbox(
        "Among", ["all images", "labelled images", "labelled training images"], key="case_pool"
    )
    cand = np.ones(len(t), dtype=bool)
    if pool != "all images":
        cand = t["labelled"].to_numpy().copy()
    if pool == "labelled training images":
        cand &= (t["split"] == "train").to_numpy()
    index = int(np.flatnonzero((t["image_id"] == row["image_id"]).to_numpy())[0])
    idx, sim = nearest_neighbours(ctx.vectors, index, k, cand)
    if idx.size == 0:
        st.info("No candidate neighbours.")
        return
    nn = t.iloc[idx][["image_id", "patient_key", "split", "label", "prediction"]].copy()
    nn.insert(0, "similarity", np.round(sim, 4))
    nn["label"] = nn["label"].replace("", figures.UNLABELLED)
    lab = nn.loc[nn["label"] != figures.UNLABELLED, "label"]
    if len(lab):
        vote = lab.value_counts()
        st.caption("Labels among the neighbours: " + ", ".join(f"{c} {n}" for c, n in vote.items()))
    _thumbs(
        ctx,
        list(nn["image_id"]),
        [f"{s:.3f} · {lab}" for s, lab in zip(nn["similarity"], nn["label"], strict=True)],
        n_cols=8,
    )
    st.dataframe(nn, hide_index=True)
    pick = st.selectbox("Open a neighbour", list(nn["image_id"]), key="case_nn_pick")
    st.button("Open neighbour", on_click=_open_case, args=(pick,), key="case_nn_btn")


def page_errors(ctx: Ctx) -> None:
    """Confusion matrix, per-class metrics, reliability diagram, cases to review."""
    from medcl.evaluate.calibration import reliability_curve

    st.header("Errors and calibration")
    if ctx.metrics is not None:
        c1, c2 = st.columns([1, 1])
        with c1:
            st.subheader("Confusion matrix (test)")
            norm = st.toggle("Normalise rows (sensitivity per class)", key="err_norm")
            cm = ctx.metrics.get("confusion_matrix")
            if cm:
                st.plotly_chart(figures.confusion_figure(cm, ctx.classes, norm), key="err_cm")
        with c2:
            st.subheader("Per-class metrics")
            pc = overview.per_class_table(ctx.metrics)
            fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in pc.columns[1:-1]}
            st.dataframe(pc, hide_index=True, column_config=fmt)
    else:
        st.warning(ctx.problems.get("metrics", "no metrics"))
    if not ctx.need("table"):
        return
    t = ctx.table
    split = str((ctx.metrics or {}).get("split") or "test")
    part = t[(t["split"] == split) & (t["label"] != "") & t["label"].isin(ctx.classes)]
    st.subheader(f"Reliability diagram ({split})")
    if part.empty:
        st.info(f"No labelled {split} images to calibrate on.")
    else:
        proba = probabilities(part, ctx.classes)
        proba = proba / proba.sum(axis=1, keepdims=True)
        y = part["label"].map({c: i for i, c in enumerate(ctx.classes)}).to_numpy()
        curve = reliability_curve(y, proba, n_bins=10)
        st.plotly_chart(figures.reliability_figure(curve), key="err_rel")
        st.caption(
            f"ECE with 10 bins: {curve['ece']:.3f} over {curve['n']} images. Bars below "
            "the diagonal: over-confident."
        )

    st.subheader("Cases to review")
    splits = [s for s in SPLIT_ORDER if s and (t["split"] == s).any()]
    c1, c2, c3 = st.columns(3)
    chosen = c1.multiselect(
        "Splits",
        splits,
        default=[s for s in splits if s == split] or splits,
        key="err_splits",
        persist_state="session",
    )
    wrong = c2.checkbox("Misclassified", value=True, key="err_wrong", persist_state="session")
    below = c3.slider(
        "Low confidence: below", 0.0, 1.0, 0.6, 0.01, key="err_below", persist_state="session"
    )
    c4, c5 = st.columns(2)
    true_cls = c4.multiselect("True class", ctx.classes, key="err_true")
    pred_cls = c5.multiselect("Predicted class", ctx.classes, key="err_pred")
    cases = review_cases(
        t,
        chosen,
        misclassified=wrong,
        below=below,
        true_classes=true_cls or None,
        predicted_classes=pred_cls or None,
    )
    st.caption(f"{len(cases)} case(s). Select a row to open it in the case viewer.")
    event = st.dataframe(
        cases,
        hide_index=True,
        key="err_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "confidence": st.column_config.NumberColumn(format="%.3f"),
            "p_true": st.column_config.NumberColumn("p(true)", format="%.3f"),
        },
    )
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if rows and rows[0] < len(cases):
        pick = str(cases.iloc[rows[0]]["image_id"])
        st.button(
            f"Open {pick} in the case viewer",
            on_click=_open_case,
            args=(pick,),
            key="err_open",
            type="primary",
        )


def page_augment(ctx: Ctx) -> None:
    """The preset's augmented views of chosen images."""
    st.header("Augmentations")
    if not ctx.need("table", "meta"):
        return
    t = ctx.table
    aug_cfg = (ctx.config or {}).get("augment") or {}
    try:
        preset = training_preset(ctx.meta, aug_cfg)
    except MedclError as exc:
        st.error(f"Cannot build the augmentation preset: {exc}")
        return
    st.markdown(
        f"Preset **{preset.name}** ({preset.dims}-D, views as in training at "
        f"{ctx.meta.get('image_size')} px). The model was taught that an image and these "
        "views are the same: whatever differs between them is what it learned to ignore."
    )
    with st.expander("Preset options"):
        from dataclasses import asdict

        opts = asdict(preset.options)
        st.dataframe(
            pd.DataFrame({"option": list(opts), "value": [str(v) for v in opts.values()]}),
            hide_index=True,
        )
    have = t[t["cache_path"] != ""]
    if have.empty:
        st.warning(ctx.problems.get("manifest", "no cached images in the manifest"))
        return
    train = have[have["split"] == "train"]
    pool = train if len(train) else have
    default = list(pool[pool["labelled"]].drop_duplicates("label")["image_id"])[:3]
    default = default or list(pool["image_id"][:3])
    c1, c2, c3 = st.columns([3, 1, 1])
    ids = c1.multiselect(
        "Images (training split)",
        list(pool["image_id"]),
        default=default,
        key="aug_ids",
        max_selections=6,
    )
    n_views = c2.slider("Views", 1, 8, 4, key="aug_views")
    seed = int(c3.number_input("Seed", 0, 10_000, 0, key="aug_seed"))
    if not ids:
        st.info("Choose images to augment.")
        return
    paths = dict(zip(pool["image_id"], pool["cache_path"], strict=True))
    labels = dict(zip(pool["image_id"], pool["label"], strict=True))
    grid = _views(
        tuple(paths[i] for i in ids),
        json.dumps(ctx.meta, default=str),
        json.dumps(aug_cfg, default=str),
        n_views,
        seed,
    )
    for iid, row in zip(ids, grid, strict=True):
        st.markdown(f"`{iid}` · {labels[iid] or 'unlabelled'}")
        tiles = [images.scale_for_display(images.to_uint8(images.take_slice(v)), 128) for v in row]
        st.image(tiles, caption=["original"] + [f"view {v}" for v in range(1, len(row))])
    if preset.dims == 3:
        st.caption("Volumes: the middle slice of each view.")


def page_label(ctx: Ctx) -> None:
    """Unlabelled training images ranked for annotation; CSV export."""
    st.header("Label next")
    if not ctx.need("table"):
        return
    if ctx.vectors is None:
        st.warning(ctx.problems.get("vectors", "no embedding vectors"))
        return
    t = ctx.table
    cand = ((t["split"] == "train") & ~t["labelled"]).to_numpy()
    ref = ((t["split"] == "train") & t["labelled"]).to_numpy()
    n = int(cand.sum())
    st.markdown(
        "Unlabelled training images ranked by **uncertainty** combined with **diversity** in "
        "embedding space:\n\n"
        "- uncertainty $u_i$: normalised predictive entropy $-\\sum_k p_{ik}\\log p_{ik}/\\log C$ "
        "or margin $1-(p_{i(1)}-p_{i(2)})$, in [0, 1];\n"
        "- diversity $\\delta_i=\\min(1, D_i/D^*)$ with $D_i$ the cosine distance to the nearest "
        "labelled-or-already-chosen image and $D^*$ the largest $D_i$ at the start;\n"
        "- score $s_i=(1-\\beta)\\,u_i+\\beta\\,\\delta_i$, picked greedily (k-center): take the "
        "best, add it to the chosen set, update $D$, repeat. The score shown is $s_i$ when "
        "picked."
    )
    if n == 0:
        st.info("Every training image is labelled: nothing to rank.")
        return
    c1, c2, c3 = st.columns(3)
    kind = c1.selectbox(
        "Uncertainty", list(acquisition.UNCERTAINTIES), key="lab_unc", persist_state="session"
    )
    beta = c2.slider(
        "Diversity weight β", 0.0, 1.0, 0.5, 0.05, key="lab_beta", persist_state="session"
    )
    budget = int(
        c3.number_input(
            "Images to rank", 1, min(n, 500), min(n, 50), key="lab_budget", persist_state="session"
        )
    )
    emb = ctx.run.existing("embeddings")
    ranked = _ranking(str(emb), _stamp(emb), kind, float(beta), budget, ctx, cand, ref)
    st.caption(f"{n} unlabelled training images, {int(ref.sum())} labelled; top {len(ranked)}.")
    st.dataframe(
        ranked,
        hide_index=True,
        column_config={
            "score": st.column_config.NumberColumn(format="%.4f"),
            "uncertainty": st.column_config.NumberColumn(format="%.3f"),
            "diversity": st.column_config.NumberColumn(format="%.3f"),
            "confidence": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    sheet = labelling_sheet(
        list(ranked["image_id"]),
        list(ranked["patient_key"]),
        list(ranked["score"]),
        list(ranked["predicted"]),
    )
    st.download_button(
        "Download annotation sheet (CSV)",
        sheet.to_csv(index=False).encode(),
        file_name="labels_to_annotate.csv",
        mime="text/csv",
        key="lab_download",
        type="primary",
    )
    manifest = ctx.run.summary.get("manifest", "data/split.csv")
    st.markdown(
        "Fill the `label` column with class names "
        f"({', '.join(ctx.classes)}), leave rows blank to skip them, then write the "
        "manifest of the next run (val/test images and unknown ids are refused):"
    )
    st.code(
        f"medcl import-labels {ctx.run.name}/{manifest} labels_to_annotate.csv "
        f"--out {ctx.run.name}/data/split_next.csv",
        language="bash",
    )
    top = ranked.head(12)
    _thumbs(
        ctx,
        list(top["image_id"]),
        [f"#{r.rank} · {r.score:.3f} · {r.predicted}" for r in top.itertuples()],
    )


@st.cache_data(show_spinner="Ranking…", max_entries=32)
def _ranking(
    emb_key: str,
    stamp: int,
    kind: str,
    beta: float,
    budget: int,
    _ctx: Ctx,
    _cand: np.ndarray,
    _ref: np.ndarray,
) -> pd.DataFrame:
    """The acquisition ranking (cached by embeddings file and settings; ``_`` args not hashed)."""
    t = _ctx.table.loc[_cand].reset_index(drop=True)
    res = acquisition.rank_for_labelling(
        probabilities(t, _ctx.classes), _ctx.vectors[_cand], _ctx.vectors[_ref], budget, beta, kind
    )
    chosen = t.iloc[res.order]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(res.order) + 1),
            "image_id": chosen["image_id"].to_numpy(),
            "patient_key": chosen["patient_key"].to_numpy(),
            "score": res.score,
            "uncertainty": res.uncertainty,
            "diversity": res.diversity,
            "predicted": chosen["prediction"].to_numpy(),
            "confidence": chosen["confidence"].to_numpy(dtype=np.float64),
        }
    )


RENDER = {
    "overview": page_overview,
    "embedding": page_embedding,
    "case": page_case,
    "errors": page_errors,
    "augment": page_augment,
    "label": page_label,
}


# --------------------------------------------------------------------------- main


def choose_run() -> Path | None:
    """The run folder: the argument, ``$MEDCL_RUN_DIR``, or a choice among ``./runs``."""
    arg = run_dir_argument(sys.argv, __file__)
    if arg:
        return Path(arg)
    runs = find_runs("runs")
    if not runs:
        st.title("medcl review")
        st.warning(
            "No run folder given and none found under ./runs. Start the app with "
            "`medcl dashboard RUN_DIR` (make a run with `medcl demo`), or set "
            "MEDCL_RUN_DIR."
        )
        return None
    return st.sidebar.selectbox("Run", runs, format_func=lambda p: str(p), key="run_choice")


def _page_from_url() -> str:
    """The page named by ``?page=<key>`` (or its title), ``overview`` otherwise."""
    value = str(st.query_params.get("page", "")).strip()
    titles = {v.lower(): k for k, v in PAGES.items()}
    return value if value in PAGES else titles.get(value.lower(), "overview")


def main() -> None:
    """Lay out the app for the chosen run and page."""
    st.set_page_config(page_title="medcl review", layout="wide")
    run_dir = choose_run()
    if run_dir is None:
        return
    try:
        run = open_run(run_dir)
    except MedclError as exc:
        st.title("medcl review")
        st.error(str(exc))
        return
    ctx = load_context(run)
    with st.sidebar:
        st.title("medcl review")
        st.caption(f"run **{run.name}**")
        if "page" not in st.session_state:  # first run of this session: the URL decides
            st.session_state["page"] = _page_from_url()
        page = st.radio("Page", list(PAGES), format_func=PAGES.get, key="page")
        if st.query_params.get("page") != page:
            st.query_params["page"] = page
        st.caption("Only pseudonymous keys (image_id, patient_key) are shown.")
    try:
        RENDER[page or "overview"](ctx)
    except MedclError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a page failure is shown, not a stack trace
        st.error(f"{PAGES.get(page, page)} failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
