"""Pieces several pages share: a thumbnail grid, a case's image, opening a case."""

from __future__ import annotations

import numpy as np
import streamlit as st

from medcl.app.pages.context import Ctx, cached_display, cached_thumbnail
from medcl.errors import MedclError

#: Thumbnail size in pixels (longer side).
THUMB = 112


def open_case(image_id: str) -> None:
    """Callback: show ``image_id`` in the case viewer."""
    st.session_state["current_case"] = image_id
    st.session_state["case_id"] = image_id
    st.session_state["page"] = "case"


def case_image(ctx: Ctx, cache_path: str) -> np.ndarray | None:
    """The display image of a cached array, or None when there is none or it is unreadable."""
    if not cache_path:
        return None
    try:
        return cached_display(cache_path, ctx.preset, ctx.window)
    except MedclError:
        return None


def thumbnails(ctx: Ctx, ids: list[str], captions: list[str], n_cols: int = 6) -> None:
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
                img = cached_thumbnail(paths.get(iid, ""), ctx.preset, ctx.window, THUMB)
            except (MedclError, OSError, ValueError):
                img = None
            if img is None:
                missing += 1
                st.caption(f"{cap}\n\n(no image)")
            else:
                st.image(img, caption=cap)
    if missing:
        st.caption(f"{missing} image(s) have no readable cached array in the manifest.")
