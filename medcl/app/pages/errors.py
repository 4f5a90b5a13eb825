"""Errors and calibration page: confusion matrix, per-class metrics, reliability, review list
(a multi-label run: per-finding metrics, ROC curves and the wrong calls per finding)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medcl.app import figures
from medcl.app import findings as fnd
from medcl.app import overview as summary
from medcl.app.cases import calibration_rows, present_splits, review_cases
from medcl.app.pages.context import Ctx
from medcl.app.pages.widgets import open_case
from medcl.app.run import probabilities

TITLE = "Errors and calibration"
#: Bins of the reliability diagram.
N_BINS = 10


def render(ctx: Ctx) -> None:
    """Confusion matrix, per-class metrics, reliability diagram, cases to review."""
    st.header(TITLE)
    split = str((ctx.metrics or {}).get("split") or "test")
    if ctx.multilabel:
        _findings(ctx, split)
        return
    _test_metrics(ctx)
    if not ctx.need("table"):
        return
    _reliability(ctx, split)
    _review(ctx, split)


def _findings(ctx: Ctx, split: str) -> None:
    """A multi-label run: per-finding metrics, ROC curves, and the wrong calls to review."""
    st.subheader("Per-finding metrics (test)")
    if ctx.metrics is None:
        st.warning(ctx.problems.get("metrics", "no metrics"))
    else:
        table = fnd.finding_table(ctx.metrics)
        fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in fnd.FINDING_COLUMNS[1:9]}
        st.dataframe(table, hide_index=True, column_config=fmt)
    if not ctx.need("table"):
        return
    st.subheader(f"ROC curve per finding ({split})")
    curves = fnd.roc_curves(ctx.table, ctx.classes, split)
    if curves:
        st.plotly_chart(figures.finding_roc_figure(curves), key="err_roc")
    else:
        st.info(f"No finding is both present and absent among the labelled {split} images.")
    st.subheader("Findings to review")
    t = ctx.table
    splits = present_splits(t, unassigned=False)
    c1, c2 = st.columns(2)
    chosen = c1.multiselect(
        "Splits", splits, default=[s for s in splits if s == split] or splits, key="err_splits"
    )
    only = c2.multiselect("Findings", ctx.classes, key="err_findings")
    cutoffs = fnd.thresholds(ctx.metrics, ctx.classes)
    cases = fnd.finding_errors(t, ctx.classes, cutoffs, chosen, only or None)
    st.caption(
        f"{len(cases)} wrong call(s) at the validation thresholds (missed: present below it; "
        "false alarm: absent at or above it), most confident first. Select a row to open it."
    )
    fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in ("probability", "threshold")}
    _cases_table(cases, fmt)


def _test_metrics(ctx: Ctx) -> None:
    if ctx.metrics is None:
        st.warning(ctx.problems.get("metrics", "no metrics"))
        return
    c1, c2 = st.columns([1, 1])
    with c1:
        st.subheader("Confusion matrix (test)")
        norm = st.toggle("Normalise rows (sensitivity per class)", key="err_norm")
        cm = ctx.metrics.get("confusion_matrix")
        if cm:
            st.plotly_chart(figures.confusion_figure(cm, ctx.classes, norm), key="err_cm")
    with c2:
        st.subheader("Per-class metrics")
        pc = summary.per_class_table(ctx.metrics)
        fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in pc.columns[1:-1]}
        st.dataframe(pc, hide_index=True, column_config=fmt)


def _reliability(ctx: Ctx, split: str) -> None:
    from medcl.evaluate.calibration import reliability_curve

    part = calibration_rows(ctx.table, ctx.classes, split)
    st.subheader(f"Reliability diagram ({split})")
    if part.empty:
        st.info(f"No labelled {split} images to calibrate on.")
        return
    proba = probabilities(part, ctx.classes)
    proba = proba / proba.sum(axis=1, keepdims=True)
    y = part["label"].map({c: i for i, c in enumerate(ctx.classes)}).to_numpy()
    curve = reliability_curve(y, proba, n_bins=N_BINS)
    st.plotly_chart(figures.reliability_figure(curve), key="err_rel")
    st.caption(
        f"ECE with {N_BINS} bins: {curve['ece']:.3f} over {curve['n']} images. Bars below "
        "the diagonal: over-confident."
    )


def _review(ctx: Ctx, split: str) -> None:
    st.subheader("Cases to review")
    t = ctx.table
    splits = present_splits(t, unassigned=False)
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
    _cases_table(
        cases,
        {
            "confidence": st.column_config.NumberColumn(format="%.3f"),
            "p_true": st.column_config.NumberColumn("p(true)", format="%.3f"),
        },
    )


def _cases_table(cases: pd.DataFrame, column_config: dict) -> None:
    """The cases as a table whose selected row can be opened in the case viewer."""
    event = st.dataframe(
        cases,
        hide_index=True,
        key="err_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config=column_config,
    )
    _open_selected(event, cases)


def _open_selected(event: object, cases: pd.DataFrame) -> None:
    """A button that opens the table's selected case in the case viewer."""
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if rows and rows[0] < len(cases):
        pick = str(cases.iloc[rows[0]]["image_id"])
        st.button(
            f"Open {pick} in the case viewer",
            on_click=open_case,
            args=(pick,),
            key="err_open",
            type="primary",
        )
