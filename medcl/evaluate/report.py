"""The label-efficiency report: ``report.md`` (tables) and ``efficiency.png`` (curves).

For each method and label fraction the first table shows the mean over seeds and a 95 % interval:
with two or more seeds, ``mean ± t₀.₉₇₅(n−1)·s/√n`` over seeds; with one seed, the
patient-bootstrap interval of that run. Then, per fraction with several seeds, every seed's value;
the **paired** differences between SSCL and each other method with their seeds × patient bootstrap
interval (:mod:`medcl.evaluate.paired`); and each arm's optimiser steps and wall time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medcl.evaluate.arms import arm_of, report_order, title
from medcl.io import atomic_path, write_text

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


def headline(
    records: list[dict[str, Any]],
    paired: list[dict[str, Any]],
    metric: str,
    fraction: float,
) -> str:
    """One line: each arm's mean at ``fraction`` and SSCL − supervised with its paired interval.

    e.g. ``balanced accuracy at 5 % labels (3 seeds): supervised 0.62, SimCLR 0.74, SSCL 0.79;
    SSCL − supervised +17.0 [+11.2, +23.1] points``.
    """
    summary = summarise(records, metric)
    parts = []
    seeds = 0
    for m in report_order(set(summary)):
        s = summary[m].get(float(fraction))
        arm = arm_of(m)
        if s and (arm is None or arm.headline):
            parts.append(f"{title(m)} {s['mean']:.2f}")
            seeds = max(seeds, s["n"])
    text = (
        f"{metric.replace('_', ' ')} at {_pct(fraction)} labels "
        f"({seeds} seed{'s' if seeds != 1 else ''}): " + ", ".join(parts)
    )
    for d in paired:
        if d["a"] == "sscl" and d["b"] == "supervised" and d["label_fraction"] == float(fraction):
            text += f"; SSCL − supervised {_points(d)}"
    return text


def _points(d: dict[str, Any]) -> str:
    """``+17.0 [+11.2, +23.1] points`` of a paired difference."""
    iv = "" if d.get("low") is None else f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    return f"{100 * d['mean']:+.1f}{iv} points"


def write_report(
    records: list[dict[str, Any]],
    metric: str,
    out_dir: str | Path,
    title: str = "Label efficiency",
    paired: list[dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``efficiency.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(records, metric)
    fracs = sorted({f for m in summary.values() for f in m})
    order = report_order(set(summary))
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
    lines += _per_seed_lines(records, metric, order, fracs)
    if paired:
        lines += [
            "",
            "Paired differences (points of the metric; same seeds, label subsets and test "
            "patients; 95 % interval from resampling seeds and test patients):",
            "",
            "| fraction | comparison | mean | 95 % interval | per seed |",
            "|---|---|---|---|---|",
        ]
        for d in paired:
            iv = "–" if d.get("low") is None else f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            per = ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"])
            lines.append(
                f"| {_pct(d['label_fraction'])} | {d['a']} − {d['b']} | "
                f"{100 * d['mean']:+.1f} | {iv} | {per} |"
            )
    lines += _budget_lines(records, order, fracs)
    lines += ["", f"Runs: {len(records)}. Raw records: results.json.", ""]
    report = out / "report.md"
    write_text("\n".join(lines), report)
    png = out / "efficiency.png"
    _plot(summary, order, metric, png, title)
    return report, png


def _per_seed_lines(
    records: list[dict[str, Any]], metric: str, order: list[str], fracs: list[float]
) -> list[str]:
    """A per-seed table for every fraction that ran more than one seed."""
    lines: list[str] = []
    for f in fracs:
        runs = [r for r in records if float(r["label_fraction"]) == f]
        seeds = sorted({int(r["seed"]) for r in runs})
        if len(seeds) < 2:
            continue
        value = {(r["method"], int(r["seed"])): r["metrics"].get(metric) for r in runs}
        lines += [
            "",
            f"Per seed at {_pct(f)} labels:",
            "",
            "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
            "|---|" + "---|" * (len(seeds) + 1),
        ]
        for m in order:
            vals = [value.get((m, s)) for s in seeds]
            if all(v is None for v in vals):
                continue
            got = [v for v in vals if v is not None]
            cells = ["–" if v is None else f"{v:.3f}" for v in vals]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean(got):.3f} |")
    return lines


def _budget_lines(records: list[dict[str, Any]], order: list[str], fracs: list[float]) -> list[str]:
    """Each arm's optimiser steps (pretraining + fine-tuning) and wall time, mean over seeds."""
    lines = [
        "",
        "Budget per arm (mean over seeds; pretraining steps are shared where the arm reuses one):",
        "",
        "| method | fraction | pretraining steps | fine-tuning steps | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    for m in order:
        for f in fracs:
            runs = [r for r in records if r["method"] == m and float(r["label_fraction"]) == f]
            if not runs:
                continue
            pre = np.mean([r.get("pretrain_steps", 0) for r in runs])
            fin = np.mean([r.get("finetune_steps", 0) for r in runs])
            sec = np.mean([r.get("seconds", 0.0) for r in runs])
            lines.append(f"| {m} | {_pct(f)} | {pre:.0f} | {fin:.0f} | {sec:.0f} |")
    return lines


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
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
