"""The label-efficiency report: ``report.md`` (table) and ``efficiency.png`` (curves).

For each method and label fraction the table shows the mean over seeds and a 95 % interval: with
two or more seeds, ``mean ± t₀.₉₇₅(n−1)·s/√n`` over seeds; with one seed, the patient-bootstrap
interval of that run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

# two-sided 97.5 % quantiles of Student's t for n-1 = 1..10 degrees of freedom
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def summarise(records: list[dict[str, Any]], metric: str) -> dict[str, dict[float, dict]]:
    """``{method: {fraction: {"mean", "low", "high", "n"}}}`` of ``metric``."""
    groups: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[r["method"]][float(r["label_fraction"])].append(r)
    out: dict[str, dict[float, dict]] = {}
    for method, by_frac in groups.items():
        out[method] = {}
        for frac, runs in sorted(by_frac.items()):
            vals = [r["metrics"].get(metric) for r in runs]
            vals = [float(v) for v in vals if v is not None]
            if not vals:
                continue
            mean = float(np.mean(vals))
            if len(vals) >= 2:
                t = _T975[min(len(vals) - 2, len(_T975) - 1)]
                half = t * float(np.std(vals, ddof=1)) / math.sqrt(len(vals))
                low, high = mean - half, mean + half
            else:
                iv = (runs[0]["metrics"].get("intervals") or {}).get(metric) or {}
                low = iv.get("low") if iv.get("low") is not None else mean
                high = iv.get("high") if iv.get("high") is not None else mean
            out[method][frac] = {"mean": mean, "low": low, "high": high, "n": len(vals)}
    return out


def _pct(f: float) -> str:
    return f"{100 * f:g} %"


def write_report(
    records: list[dict[str, Any]], metric: str, out_dir: str | Path, title: str = "Label efficiency"
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``efficiency.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(records, metric)
    fracs = sorted({f for m in summary.values() for f in m})
    order = [
        m for m in ("supervised", "simclr", "simclr+linear", "sscl", "sscl+linear") if m in summary
    ] + sorted(
        m
        for m in summary
        if m not in ("supervised", "simclr", "simclr+linear", "sscl", "sscl+linear")
    )
    lines = [
        f"# {title}",
        "",
        f"Test {metric.replace('_', ' ')} by label fraction (mean over seeds, 95 % interval; "
        "one seed: patient-bootstrap interval). Hyper-parameters chosen on validation only.",
        "",
        "| method | " + " | ".join(_pct(f) for f in fracs) + " |",
        "|---|" + "---|" * len(fracs),
    ]
    for m in order:
        cells = []
        for f in fracs:
            s = summary[m].get(f)
            cells.append(
                "–"
                if s is None
                else f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] (n={s['n']})"
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if "supervised" in summary:
        lines += ["", "Gain over supervised from scratch (points of the metric, mean):", ""]
        for m in order:
            if m == "supervised":
                continue
            gains = []
            for f in fracs:
                a, b = summary[m].get(f), summary["supervised"].get(f)
                gains.append("–" if not a or not b else f"{100 * (a['mean'] - b['mean']):+.1f}")
            lines.append(
                f"- {m}: " + ", ".join(f"{_pct(f)} {g}" for f, g in zip(fracs, gains, strict=True))
            )
    lines += ["", f"Runs: {len(records)}. Raw records: results.json.", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    png = out / "efficiency.png"
    _plot(summary, order, metric, png, title)
    return report, png


def _plot(summary: dict, order: list[str], metric: str, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for m in order:
        fr = sorted(summary[m])
        mean = np.array([summary[m][f]["mean"] for f in fr])
        low = np.array([summary[m][f]["low"] for f in fr])
        high = np.array([summary[m][f]["high"] for f in fr])
        style = "--" if m.endswith("+linear") else "-"
        ax.plot(fr, mean, style, marker="o", label=m)
        ax.fill_between(fr, low, high, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("label fraction of training images")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
