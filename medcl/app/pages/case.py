"""Case viewer page: one image, its prediction, Grad-CAM overlay and nearest neighbours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from medcl.app import figures, formatting, images
from medcl.app.cases import case_order
from medcl.app.findings import case_findings, thresholds
from medcl.app.neighbours import (
    NEIGHBOUR_POOLS,
    label_votes,
    nearest_neighbours,
    neighbour_candidates,
    neighbour_table,
)
from medcl.app.pages.context import Ctx, cached_cam, cached_gradcam
from medcl.app.pages.widgets import case_image, open_case, thumbnails
from medcl.app.run import file_stamp, find_row

TITLE = "Case viewer"
#: Display size of the image and its overlay (pixels, longer side).
VIEW_SIZE = 384


def render(ctx: Ctx) -> None:
    """One image: prediction, probabilities, Grad-CAM overlay, nearest neighbours."""
    st.header(TITLE)
    if not ctx.need("table"):
        return
    image_id = _choose_case(ctx.table)
    row = find_row(ctx.table, image_id)
    if row is None:
        st.error(f"{image_id}: not in the embeddings table")
        return
    left, right = st.columns([3, 2])
    with right:
        _prediction(ctx, row)
    with left:
        img = case_image(ctx, row["cache_path"])
        if img is None:
            st.warning("No readable cached image for this case (is the manifest missing?).")
        else:
            _image_and_cam(ctx, row, img)
    _neighbours(ctx, row)


def _choose_case(t: pd.DataFrame) -> str:
    """The case chooser (test split first); keeps the current case across pages."""
    order = case_order(t)
    options = list(order["image_id"])
    text = {
        r.image_id: formatting.case_option(r.image_id, r.split, r.label, r.prediction)
        for r in order.itertuples()
    }
    if st.session_state.get("case_id") not in text:  # back on this page, or a new run
        current = st.session_state.get("current_case")
        st.session_state["case_id"] = current if current in text else options[0]
    image_id = st.selectbox("Image (type to search)", options, format_func=text.get, key="case_id")
    st.session_state["current_case"] = image_id
    return image_id


def _prediction(ctx: Ctx, row: pd.Series) -> None:
    """Prediction, confidence and verdict, the class probabilities, the image's facts."""
    st.subheader("Prediction")
    confidence = formatting.number(row["confidence"])
    verdict = formatting.verdict(row["label"], row["prediction"])
    st.markdown(f"**{row['prediction']}** (confidence {confidence}){verdict}")
    if ctx.multilabel:
        _findings(ctx, row)
    else:
        probs = [float(row.get(f"prob_{c}", np.nan)) for c in ctx.classes]
        fig = figures.probability_figure(probs, ctx.classes, row["label"])
        st.plotly_chart(fig, key="case_probs")
    facts = formatting.case_facts(row)
    st.dataframe(pd.DataFrame({"": list(facts), "value": list(facts.values())}), hide_index=True)


def _findings(ctx: Ctx, row: pd.Series) -> None:
    """A multi-label image: each finding's probability (present findings outlined), the
    threshold chosen on validation, the call and the truth."""
    table = case_findings(row, ctx.classes, thresholds(ctx.metrics, ctx.classes))
    present = list(table.loc[table["truth"] == "present", "finding"])
    fig = figures.probability_figure(list(table["probability"]), ctx.classes, present=present)
    st.plotly_chart(fig, key="case_probs")
    st.caption("One probability per finding (they need not sum to 1); outlined: present.")
    fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in ("probability", "threshold")}
    st.dataframe(table, hide_index=True, column_config=fmt)


def _image_and_cam(ctx: Ctx, row: pd.Series, img: np.ndarray) -> None:
    """The image (slice slider for volumes) beside its Grad-CAM overlay."""
    depth = images.n_slices(img)
    model = ctx.run.existing("model")
    explainer, note = None, ""
    if model is None or ctx.description is None:
        note = ctx.problems.get("description", "this run has no model: no Grad-CAM")
    else:
        explainer = cached_gradcam(str(model), file_stamp(model / "weights.pt"))
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
            "Grad-CAM for finding" if ctx.multilabel else "Grad-CAM for class",
            ctx.classes,
            index=pred,
            key=f"cam_class_{row['image_id']}",
        )
        alpha = c2.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="cam_alpha")
    grey = images.take_slice(img, z)
    left, right = st.columns(2)
    left.image(images.scale_for_display(images.to_uint8(grey), VIEW_SIZE), caption="image")
    if explainer is None:
        right.warning(note)
        return
    heat = cached_cam(
        str(model), file_stamp(model / "weights.pt"), row["cache_path"], ctx.classes.index(cls)
    )
    rgb = images.overlay(grey, images.take_slice(heat, z), alpha)
    right.image(
        images.scale_for_display(rgb, VIEW_SIZE),
        caption=f"Grad-CAM for {cls} (encoder.layer4): warm regions drive this class",
    )


def _neighbours(ctx: Ctx, row: pd.Series) -> None:
    """The nearest images in embedding space, with their labels and thumbnails."""
    st.subheader("Nearest neighbours in embedding space")
    if ctx.vectors is None:
        st.warning(ctx.problems.get("vectors", "no embedding vectors"))
        return
    t = ctx.table
    c1, c2 = st.columns(2)
    k = c1.slider("Neighbours", 1, 24, 8, key="case_k")
    pool = c2.selectbox("Among", list(NEIGHBOUR_POOLS), key="case_pool")
    index = int(np.flatnonzero((t["image_id"] == row["image_id"]).to_numpy())[0])
    idx, sim = nearest_neighbours(ctx.vectors, index, k, neighbour_candidates(t, pool))
    if idx.size == 0:
        st.info("No candidate neighbours.")
        return
    nn = neighbour_table(t, idx, sim, figures.UNLABELLED)
    votes = label_votes(nn["label"], figures.UNLABELLED)
    if votes:
        st.caption(votes)
    thumbnails(
        ctx,
        list(nn["image_id"]),
        [f"{s:.3f} · {lab}" for s, lab in zip(nn["similarity"], nn["label"], strict=True)],
        n_cols=8,
    )
    st.dataframe(nn, hide_index=True)
    pick = st.selectbox("Open a neighbour", list(nn["image_id"]), key="case_nn_pick")
    st.button("Open neighbour", on_click=open_case, args=(pick,), key="case_nn_btn")
