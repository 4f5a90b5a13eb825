"""Overview page: test metrics with intervals, data, configuration, label efficiency."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from medcl.app import figures, formatting
from medcl.app import findings as fnd
from medcl.app import overview as summary
from medcl.app.pages.context import Ctx

TITLE = "Overview"


def render(ctx: Ctx) -> None:
    """Config summary, data summary, metrics with intervals, label efficiency."""
    st.header(TITLE)
    if ctx.run.summary.get("headline"):
        st.markdown(f"**{ctx.run.summary['headline']}**")
    _test_metrics(ctx)
    left, right = st.columns(2)
    with left:
        _data(ctx)
    with right:
        _configuration(ctx)
    _label_efficiency(ctx)


def _test_metrics(ctx: Ctx) -> None:
    st.subheader("Test metrics")
    if not ctx.need("metrics"):
        return
    mt = summary.metrics_table(ctx.metrics)
    cols = st.columns(max(1, len(mt)))
    for col, r in zip(cols, mt.itertuples(index=False), strict=False):
        col.metric(
            r.metric, formatting.number(r.value), help=formatting.interval_help(r.low, r.high)
        )
    shown = mt.assign(
        **{
            "95 % interval": [
                summary.interval_text(v, lo, hi)
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
    if ctx.multilabel:
        _findings(ctx)


def _findings(ctx: Ctx) -> None:
    """A multi-label run's per-finding test results: AUROC with its interval and prevalence."""
    st.subheader("Per finding (test)")
    table = fnd.finding_table(ctx.metrics or {})
    if table.empty:
        st.info("The test metrics hold no per-finding results.")
        return
    left, right = st.columns([3, 2])
    fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in fnd.FINDING_COLUMNS[1:9]}
    left.dataframe(table, hide_index=True, column_config=fmt)
    right.plotly_chart(figures.finding_auroc_figure(table), key="ov_findings")
    spec = (ctx.metrics or {}).get("fixed_specificity")
    st.caption(
        "Each finding is scored on the test images where it is known (unknown is not absent). "
        f"Sensitivity at specificity {spec}: read on the test ROC curve; threshold, "
        "sensitivity and specificity: at the threshold chosen on validation (Youden's J)."
    )


def _data(ctx: Ctx) -> None:
    st.subheader("Data")
    if not ctx.need("manifest"):
        return
    ds = summary.data_summary(ctx.manifest)
    ds["labelled_share"] = ds["labelled_share"] * 100
    st.dataframe(
        ds,
        hide_index=True,
        column_config={
            "labelled_share": st.column_config.NumberColumn("labelled %", format="%.1f %%")
        },
    )
    if ctx.classes and ctx.multilabel:
        st.caption("Labelled images per finding and split: present/absent/unknown")
        st.dataframe(fnd.finding_counts(ctx.manifest, ctx.classes))
    elif ctx.classes:
        st.caption("Labelled images per class and split")
        st.dataframe(summary.class_counts(ctx.manifest, ctx.classes))
    _leaks(ctx)


def _leaks(ctx: Ctx) -> None:
    """Suspected near-duplicate images across the splits (:mod:`medcl.data.leaks`)."""
    if ctx.leaks is None:
        if "leaks" in ctx.problems:
            st.caption(ctx.problems["leaks"])
        return
    if not len(ctx.leaks):
        st.caption("No suspected near-duplicate images across the splits (perceptual hash).")
        return
    st.warning(
        f"{len(ctx.leaks)} suspected near-duplicate image pair(s) across the splits (the same "
        "image under two patient ids, re-windowed or resized): check them before trusting a "
        "test score; `medcl split --drop-leaks` removes the later split's copies."
    )
    st.dataframe(ctx.leaks, hide_index=True)


def _configuration(ctx: Ctx) -> None:
    st.subheader("Configuration")
    if ctx.description is not None:
        label_fraction = ctx.run.summary.get("label_fraction")
        facts = formatting.model_facts(ctx.description, ctx.classes, label_fraction)
        st.dataframe(
            pd.DataFrame({"": list(facts), "value": list(facts.values())}), hide_index=True
        )
    if ctx.need("config"):
        with st.expander("All settings"):
            st.dataframe(summary.config_summary(ctx.config), hide_index=True)


def _label_efficiency(ctx: Ctx) -> None:
    st.subheader("Label efficiency")
    plot = ctx.run.existing("efficiency_plot") if "efficiency_plot" in ctx.run.summary else None
    if ctx.efficiency is not None:
        eff = summary.efficiency_table(ctx.efficiency)
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
