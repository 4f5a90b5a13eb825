"""Plotly figures of the dashboard: embedding scatter, confusion matrix, reliability diagram,
label-efficiency curves and class probabilities.

The embedding scatter uses WebGL (``go.Scattergl``) so that tens of thousands of points stay
interactive; every point carries its ``image_id`` as the first ``customdata`` field, which is how
a box or lasso selection is mapped back to images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: Colour-by choices of the embedding scatter: key -> title.
COLOUR_MODES = {
    "label": "True label",
    "prediction": "Prediction",
    "correct": "Correctness",
    "split": "Split",
    "labelled": "Labelled / unlabelled",
    "patient": "Patient",
}
UNLABELLED = "(unlabelled)"
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
_FIXED = {
    UNLABELLED: "#c7c7c7",
    "unlabelled": "#c7c7c7",
    "correct": "#2ca02c",
    "wrong": "#d62728",
    "labelled": "#1f77b4",
    "train": "#1f77b4",
    "val": "#ff7f0e",
    "test": "#2ca02c",
    "unassigned": "#c7c7c7",
}
_BACKGROUND = (UNLABELLED, "unlabelled", "unassigned")
#: Above this many categories the scatter uses one trace and a colour scale (no legend).
MAX_LEGEND = 24


def colour_values(df: pd.DataFrame, by: str) -> pd.Series:
    """The category of each row for colouring by ``by`` (a key of :data:`COLOUR_MODES`).

    Raises:
        ValueError: On an unknown ``by``.
    """
    if by == "label":
        return df["label"].where(df["label"] != "", UNLABELLED)
    if by == "prediction":
        return df["prediction"].astype(str)
    if by == "correct":
        c = df["correct"].astype("boolean")
        return pd.Series(
            np.where(c.isna(), "unlabelled", np.where(c.fillna(False), "correct", "wrong")),
            index=df.index,
        )
    if by == "split":
        return df["split"].where(df["split"] != "", "unassigned")
    if by == "labelled":
        return pd.Series(np.where(df["labelled"], "labelled", "unlabelled"), index=df.index)
    if by == "patient":
        return df["patient_key"].astype(str)
    raise ValueError(f"unknown colour mode {by!r}; expected one of {list(COLOUR_MODES)}")


def _category_order(values: pd.Series, classes: Sequence[str]) -> list[str]:
    """Trace order: grey background categories first (drawn underneath), then classes etc."""
    present = list(pd.unique(values))
    background = [c for c in _BACKGROUND if c in present]
    ordered = [
        c
        for c in [*classes, "correct", "wrong", "train", "val", "test", "labelled"]
        if c in present and c not in background
    ]
    rest = sorted(c for c in present if c not in ordered and c not in background)
    return background + ordered + rest


def embedding_figure(
    df: pd.DataFrame,
    projection: str,
    by: str,
    classes: Sequence[str] = (),
    title: str = "",
    height: int = 640,
    values: pd.Series | None = None,
    legend: str | None = None,
) -> go.Figure:
    """The 2-D embedding scatter (WebGL), coloured by ``by`` (or by given ``values``).

    Args:
        df: Rows to draw, with ``<projection>_x``/``_y``, ``image_id``, ``label``,
            ``prediction``, ``confidence`` and the columns ``by`` needs.
        projection: ``pca``, ``tsne`` or ``umap``.
        by: A key of :data:`COLOUR_MODES`.
        classes: Class names, to order the legend.
        title: Axis title prefix (e.g. ``"t-SNE"``).
        height: Figure height in pixels.
        values: Each row's category, in place of ``by``'s (e.g. a finding's state).
        legend: The legend's title with ``values`` (default: ``by``'s title).
    """
    values = colour_values(df, by) if values is None else values
    x = df[f"{projection}_x"].to_numpy(dtype=np.float32)
    y = df[f"{projection}_y"].to_numpy(dtype=np.float32)
    custom = np.stack(
        [
            df["image_id"].to_numpy(dtype=object),
            df["label"].where(df["label"] != "", UNLABELLED).to_numpy(dtype=object),
            df["prediction"].to_numpy(dtype=object),
            np.round(df["confidence"].to_numpy(dtype=np.float64), 3).astype(object),
            df["patient_key"].to_numpy(dtype=object),
        ],
        axis=1,
    )
    hover = (
        "image %{customdata[0]}<br>patient %{customdata[4]}<br>label %{customdata[1]}"
        "<br>predicted %{customdata[2]} (%{customdata[3]})<extra></extra>"
    )
    size = 7 if len(df) <= 2000 else (5 if len(df) <= 8000 else 4)
    fig = go.Figure()
    categories = _category_order(values, classes)
    if len(categories) > MAX_LEGEND:
        codes = pd.Categorical(values, categories=categories).codes
        fig.add_trace(
            go.Scattergl(
                x=x,
                y=y,
                mode="markers",
                customdata=custom,
                hovertemplate=hover,
                showlegend=False,
                name=legend or COLOUR_MODES.get(by, by),
                marker={
                    "size": size,
                    "color": codes,
                    "colorscale": "Turbo",
                    "showscale": False,
                    "opacity": 0.8,
                },
            )
        )
    else:
        arr = values.to_numpy()
        k = 0
        for rank, cat in enumerate(categories):
            m = arr == cat
            colour = _FIXED.get(cat)
            if colour is None:
                colour = _PALETTE[k % len(_PALETTE)]
                k += 1
            fig.add_trace(
                go.Scattergl(
                    x=x[m],
                    y=y[m],
                    mode="markers",
                    name=f"{cat} ({int(m.sum())})",
                    legendrank=1000 + rank if cat in _BACKGROUND else rank,
                    customdata=custom[m],
                    hovertemplate=hover,
                    marker={"size": size, "color": colour, "opacity": 0.8},
                )
            )
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        dragmode="lasso",
        legend={"title": legend or COLOUR_MODES.get(by, by), "itemsizing": "constant"},
        uirevision=f"{projection}",
        xaxis_title=f"{title} 1",
        yaxis_title=f"{title} 2",
    )
    return fig


def selected_ids(event: Any) -> list[str]:
    """Image ids of the points of a Plotly selection event (``st.plotly_chart`` state).

    Accepts the state object, a plain dict, or ``None``; unknown shapes give ``[]``.
    """
    if not event:
        return []
    try:
        selection = event["selection"] if "selection" in event else event
        points = selection.get("points", []) if hasattr(selection, "get") else []
    except (TypeError, KeyError, AttributeError):
        return []
    ids: list[str] = []
    for p in points or []:
        cd = p.get("customdata") if hasattr(p, "get") else None
        if isinstance(cd, (list, tuple)) and cd:
            ids.append(str(cd[0]))
        elif isinstance(cd, str):
            ids.append(cd)
    return list(dict.fromkeys(ids))


def confusion_figure(
    matrix: Sequence[Sequence[float]], classes: Sequence[str], normalise: bool = False
) -> go.Figure:
    """A confusion-matrix heat map (rows: true class, columns: predicted class)."""
    cm = np.asarray(matrix, dtype=np.float64)
    shown = cm
    if normalise:
        rows = cm.sum(axis=1, keepdims=True)
        shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    text = [[f"{v:.2f}" if normalise else f"{int(v)}" for v in row] for row in shown]
    fig = go.Figure(
        go.Heatmap(
            z=shown,
            x=list(classes),
            y=list(classes),
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        height=120 + 60 * len(classes),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis={"autorange": "reversed"},
    )
    return fig


def reliability_figure(curve: Mapping[str, Any]) -> go.Figure:
    """Reliability diagram (accuracy vs confidence per bin) over a histogram of bin counts.

    ``curve`` is :func:`medcl.evaluate.calibration.reliability_curve`'s result; empty bins
    (``None``) are left out.
    """
    centers = np.asarray(curve["bin_centers"], dtype=np.float64)
    edges = np.asarray(curve.get("bin_edges") or np.linspace(0, 1, len(centers) + 1))
    width = float(np.diff(edges).mean()) if len(edges) > 1 else 0.1
    acc = [np.nan if a is None else a for a in curve["accuracy"]]
    conf = [np.nan if c is None else c for c in curve["confidence"]]
    fig = make_subplots(
        rows=2, cols=1, row_heights=[0.75, 0.25], shared_xaxes=True, vertical_spacing=0.05
    )
    fig.add_trace(
        go.Bar(x=centers, y=acc, width=width * 0.95, name="accuracy", marker_color="#1f77b4"),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=centers,
            y=conf,
            mode="markers",
            name="mean confidence",
            marker={"color": "#d62728", "size": 9, "symbol": "diamond"},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfect calibration",
            line={"dash": "dash", "color": "#7f7f7f"},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=centers,
            y=curve["counts"],
            width=width * 0.95,
            name="images",
            marker_color="#9467bd",
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(range=[0, 1], title_text="confidence (top-label probability)", row=2, col=1)
    fig.update_yaxes(range=[0, 1], title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="images", row=2, col=1)
    fig.update_layout(
        height=480,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.08},
    )
    return fig


def efficiency_figure(table: pd.DataFrame, metric: str) -> go.Figure:
    """Metric vs label fraction, one line per method.

    With one seed per point the error bar is that run's bootstrap interval; with several seeds
    the point is their mean and the bar spans the seeds' minimum to maximum.
    """
    fig = go.Figure()
    t = table.dropna(subset=["value", "label_fraction"])
    for k, (method, part) in enumerate(t.groupby("method", sort=True)):
        g = part.groupby("label_fraction")
        mean = g["value"].mean()
        if (g.size() > 1).any():
            lo, hi = g["value"].min(), g["value"].max()
        else:
            lo, hi = g["low"].first().fillna(mean), g["high"].first().fillna(mean)
        fig.add_trace(
            go.Scatter(
                x=mean.index.to_numpy() * 100,
                y=mean.to_numpy(),
                mode="lines+markers",
                name=method,
                marker={"size": 9, "color": _PALETTE[k % len(_PALETTE)]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (hi - mean).to_numpy(),
                    "arrayminus": (mean - lo).to_numpy(),
                },
            )
        )
    many = t["label_fraction"].nunique() > 2
    fig.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"title": "labelled training images (%)", "type": "log" if many else "linear"},
        yaxis={"title": metric.replace("_", " ")},
    )
    return fig


def probability_figure(
    probs: Sequence[float],
    classes: Sequence[str],
    true_label: str = "",
    present: Sequence[str] = (),
) -> go.Figure:
    """Horizontal bars of class probabilities; the true class (a multi-label image: its
    ``present`` findings, each with its own sigmoid probability) is outlined."""
    colours = [_PALETTE[i % len(_PALETTE)] for i in range(len(classes))]
    lines = [2 if c == true_label or c in present else 0 for c in classes]
    fig = go.Figure(
        go.Bar(
            x=list(probs),
            y=list(classes),
            orientation="h",
            marker={"color": colours, "line": {"width": lines, "color": "black"}},
            text=[f"{p:.3f}" for p in probs],
            textposition="auto",
        )
    )
    fig.update_layout(
        height=80 + 40 * len(classes),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"range": [0, 1], "title": "probability"},
        yaxis={"autorange": "reversed"},
    )
    return fig


def finding_auroc_figure(table: pd.DataFrame) -> go.Figure:
    """Each finding's test AUROC with its 95 % patient-bootstrap interval (horizontal bars;
    ``table`` as :func:`medcl.app.findings.finding_table`), prevalence in the hover text; the
    chance line at 0.5."""
    t = table[table["auroc"].notna()]
    value = t["auroc"].to_numpy(dtype=np.float64)
    low = t["low"].to_numpy(dtype=np.float64)
    high = t["high"].to_numpy(dtype=np.float64)
    fig = go.Figure(
        go.Bar(
            x=value,
            y=t["finding"].tolist(),
            orientation="h",
            marker={"color": _PALETTE[0]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": np.nan_to_num(high - value),
                "arrayminus": np.nan_to_num(value - low),
            },
            customdata=np.stack([t["prevalence"].to_numpy(dtype=object)], axis=1),
            hovertemplate="%{y}: AUROC %{x:.3f}<br>prevalence %{customdata[0]:.3f}<extra></extra>",
        )
    )
    fig.add_vline(x=0.5, line_dash="dot", line_color="grey")
    fig.update_layout(
        height=100 + 36 * max(1, len(t)),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"range": [0, 1], "title": "test AUROC (95 % interval)"},
        yaxis={"autorange": "reversed"},
    )
    return fig


def finding_roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> go.Figure:
    """Each finding's ROC curve (``{finding: (fpr, tpr)}``) and the chance diagonal."""
    colour = {name: _PALETTE[k % len(_PALETTE)] for k, name in enumerate(curves)}
    line = {name: {"shape": "hv", "color": c} for name, c in colour.items()}
    fig = go.Figure([go.Scatter(x=f, y=t, name=n, line=line[n]) for n, (f, t) in curves.items()])
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance"
        )
    )
    fig.update_layout(
        height=420,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"range": [0, 1], "title": "1 − specificity"},
        yaxis={"range": [0, 1], "title": "sensitivity"},
    )
    return fig
