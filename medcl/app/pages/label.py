"""Label next page: unlabelled training images ranked for annotation, exported as a CSV sheet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from medcl.app import acquisition, formatting
from medcl.app.findings import SINGLE_LABEL_ONLY
from medcl.app.labelling import labelling_sheet
from medcl.app.pages.context import Ctx
from medcl.app.pages.widgets import thumbnails
from medcl.app.run import file_stamp

TITLE = "Label next"
#: Ranked images shown as thumbnails.
N_THUMBS = 12
METHOD = (
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


def render(ctx: Ctx) -> None:
    """Unlabelled training images ranked for annotation; CSV export."""
    st.header(TITLE)
    if ctx.multilabel:
        st.info(SINGLE_LABEL_ONLY.format(page="Label next"))
        return
    if not ctx.need("table"):
        return
    if ctx.vectors is None:
        st.warning(ctx.problems.get("vectors", "no embedding vectors"))
        return
    cand, ref = acquisition.labelling_pools(ctx.table)
    n = int(cand.sum())
    st.markdown(METHOD)
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
    ranked = _ranking(str(emb), file_stamp(emb), kind, float(beta), budget, ctx, cand, ref)
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
    _export(ctx, ranked)
    top = ranked.head(N_THUMBS)
    thumbnails(
        ctx,
        list(top["image_id"]),
        [f"#{r.rank} · {r.score:.3f} · {r.predicted}" for r in top.itertuples()],
    )


def _export(ctx: Ctx, ranked: pd.DataFrame) -> None:
    """The annotation sheet's download button and the command that imports it."""
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
    st.code(formatting.import_labels_command(ctx.run.name, manifest), language="bash")


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
    return acquisition.ranking_table(
        _ctx.table, _ctx.classes, _ctx.vectors, _cand, _ref, budget, beta, kind
    )
