"""Embedding explorer page: the 2-D embedding; a box or lasso selection shows the images."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medcl.app import figures, formatting
from medcl.app.cases import present_splits
from medcl.app.findings import colour_by_finding
from medcl.app.pages.context import Ctx
from medcl.app.pages.widgets import open_case, thumbnails
from medcl.app.run import PROJECTIONS, PUBLIC_COLUMNS, available_projections
from medcl.app.sampling import downsample_indices

TITLE = "Embedding explorer"
#: Points drawn at most by default (every labelled and selected point is always drawn).
DEFAULT_CAP = 10_000
#: Thumbnails shown of a selection.
MAX_THUMBS = 30
#: The colour-by choice of a multi-label run that colours by one finding's state.
FINDING_MODE = "finding"


def render(ctx: Ctx) -> None:
    """Interactive 2-D embedding; a box or lasso selection shows the images."""
    st.header(TITLE)
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
    modes = {**figures.COLOUR_MODES, **({FINDING_MODE: "A finding"} if ctx.multilabel else {})}
    by = c2.selectbox(
        "Colour by",
        list(modes),
        format_func=modes.get,
        key="emb_color",
        persist_state="session",
    )
    finding = None
    if by == FINDING_MODE:
        finding = c2.selectbox("Finding", ctx.classes, key="emb_finding")
    splits = present_splits(t)
    chosen = c3.multiselect(
        "Splits",
        splits,
        default=splits,
        key="emb_splits",
        format_func=lambda s: s or formatting.UNASSIGNED,
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
    ids = _chart(ctx, view, proj, by, cap, finding)
    if not ids:
        st.info("Select points with the box or lasso tool to see their images and metadata.")
        return
    sel = view[view["image_id"].isin(ids)]
    if sel.empty:
        st.info("The selected points are not in the chosen splits.")
        return
    _selection(ctx, sel)


def _chart(
    ctx: Ctx, view: pd.DataFrame, proj: str, by: str, cap: int, finding: str | None = None
) -> list[str]:
    """Draw the (downsampled) scatter, coloured by ``by`` (or by the state of ``finding``);
    returns the image ids of the selected points."""
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
    values = None if finding is None else colour_by_finding(shown, finding, ctx.classes)
    fig = figures.embedding_figure(
        shown, proj, by, ctx.classes, PROJECTIONS[proj], values=values, legend=finding
    )
    event = st.plotly_chart(
        fig,
        key="emb_chart",
        on_select="rerun",
        selection_mode=("box", "lasso"),
        config={"displaylogo": False, "scrollZoom": True},
    )
    return figures.selected_ids(event)


def _selection(ctx: Ctx, sel: pd.DataFrame) -> None:
    """The selected images: table, label × prediction counts, thumbnails, open one."""
    st.subheader(f"{len(sel)} selected")
    counts = pd.crosstab(sel["label"].replace("", figures.UNLABELLED), sel["prediction"])
    a, b = st.columns([2, 1])
    with a:
        st.dataframe(sel[list(PUBLIC_COLUMNS)], hide_index=True, height=260)
    with b:
        st.caption("label (rows) × prediction (columns)")
        st.dataframe(counts)
    first = sel.head(MAX_THUMBS)
    thumbnails(
        ctx,
        list(first["image_id"]),
        [
            formatting.selection_caption(r.image_id, r.label, r.prediction)
            for r in first.itertuples()
        ],
    )
    if len(sel) > MAX_THUMBS:
        st.caption(f"First {MAX_THUMBS} of {len(sel)} images shown.")
    pick = st.selectbox("Open in the case viewer", list(sel["image_id"]), key="emb_open")
    st.button("Open case", on_click=open_case, args=(pick,), key="emb_open_btn")
