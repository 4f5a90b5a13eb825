"""Augmentations page: the augmented views the model was trained with, for chosen images."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
import streamlit as st

from medcl.app import images
from medcl.app.augment import augment_pool, default_images, training_preset
from medcl.app.pages.context import Ctx, cached_views
from medcl.errors import MedclError

TITLE = "Augmentations"
#: Display size of each view (pixels, longer side).
TILE = 128


def render(ctx: Ctx) -> None:
    """The preset's augmented views of chosen images."""
    st.header(TITLE)
    if not ctx.need("table", "description"):
        return
    assert ctx.description is not None  # need() said so
    aug_cfg = (ctx.config or {}).get("augment") or {}
    try:
        preset = training_preset(ctx.description, aug_cfg)
    except MedclError as exc:
        st.error(f"Cannot build the augmentation preset: {exc}")
        return
    st.markdown(
        f"Preset **{preset.name}** ({preset.dims}-D, views as in training at "
        f"{ctx.description.image_size} px). The model was taught that an image and these "
        "views are the same: whatever differs between them is what it learned to ignore."
    )
    with st.expander("Preset options"):
        opts = asdict(preset.options)
        st.dataframe(
            pd.DataFrame({"option": list(opts), "value": [str(v) for v in opts.values()]}),
            hide_index=True,
        )
    pool = augment_pool(ctx.table)
    if pool.empty:
        st.warning(ctx.problems.get("manifest", "no cached images in the manifest"))
        return
    c1, c2, c3 = st.columns([3, 1, 1])
    ids = c1.multiselect(
        "Images (training split)",
        list(pool["image_id"]),
        default=default_images(pool),
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
    grid = cached_views(
        tuple(paths[i] for i in ids),
        json.dumps(ctx.description.to_dict(), default=str),
        json.dumps(aug_cfg, default=str),
        n_views,
        seed,
    )
    for iid, row in zip(ids, grid, strict=True):
        st.markdown(f"`{iid}` · {labels[iid] or 'unlabelled'}")
        tiles = [images.scale_for_display(images.to_uint8(images.take_slice(v)), TILE) for v in row]
        st.image(tiles, caption=["original"] + [f"view {v}" for v in range(1, len(row))])
    if preset.dims == 3:
        st.caption("Volumes: the middle slice of each view.")
