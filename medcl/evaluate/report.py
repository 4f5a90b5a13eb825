"""The label-efficiency report: ``report.md`` (tables) and ``efficiency.png`` (figures).

For each arm and label budget (:mod:`medcl.evaluate.label_budget`) the first table shows the test
metric's mean over seeds and a 95 % interval: with two or more seeds,
``mean ± t₀.₉₇₅(n−1)·s/√n`` over seeds; with one seed, the patient-bootstrap interval of that run.
Then medcl's pick per budget (:mod:`medcl.evaluate.pick`), every seed's value, the **paired**
differences between arms with their seeds × patient bootstrap interval
(:mod:`medcl.evaluate.paired`), and each arm's optimiser steps and wall time per stage with the
budget rule. The figure shows the means per budget and, beside them, each arm's paired difference
from supervised-from-scratch with its interval: over a few seeds the marginal intervals are wide
and overlap, while the paired ones answer the question asked.

A multi-label task (headline ``macro_auroc``) also gets a table of each finding's test AUROC per
arm and budget (mean over seeds; one seed: with its patient-bootstrap interval), and the arms the
task refused (records with ``refused``) are listed with their one line instead of a score.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medcl.evaluate.arms import arm_of, report_order, title
from medcl.evaluate.label_budget import LabelBudget
from medcl.evaluate.pick import VAL_KEY, describe, picks_at
from medcl.io import atomic_path, write_text

# two-sided 97.5 % quantiles of Student's t for n-1 = 1..10 degrees of freedom
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]

PICK = "pick"
"""The ``a`` of a paired record comparing medcl's pick with another arm."""


def metric_name(metric: str) -> str:
    """A metric's name in prose: ``balanced accuracy``, ``AUROC``, ``macro AUROC``."""
    return metric.replace("_", " ").replace("auroc", "AUROC")


def summarise(
    records: list[dict[str, Any]], metric: str
) -> dict[str, dict[LabelBudget, dict[str, Any]]]:
    """``{method: {budget: {"mean", "low", "high", "n"}}}`` of ``metric``."""
    groups: dict[str, dict[LabelBudget, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in scored(records):
        groups[r["method"]][LabelBudget.of_record(r)].append(r)
    out: dict[str, dict[LabelBudget, dict[str, Any]]] = {}
    for method, by_budget in groups.items():
        out[method] = {}
        for budget, runs in sorted(by_budget.items(), key=lambda kv: kv[0].sort_key()):
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
            out[method][budget] = {"mean": mean, "low": low, "high": high, "n": len(vals)}
    return out


def scored(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that ran (not those of an arm the task refused, ``refused``)."""
    return [r for r in records if not r.get("refused")]


def _budget(b: LabelBudget | float) -> LabelBudget:
    return b if isinstance(b, LabelBudget) else LabelBudget(fraction=float(b))


def _paired_at(
    paired: list[dict[str, Any]], budget: LabelBudget, a: str, b: str
) -> dict[str, Any] | None:
    for d in paired:
        if d["a"] == a and d["b"] == b and LabelBudget.of_record(d) == budget:
            return d
    return None


def headline(
    records: list[dict[str, Any]],
    paired: list[dict[str, Any]],
    metric: str,
    budget: LabelBudget | float,
    picks: list[dict[str, Any]] | None = None,
) -> str:
    """One line: medcl's pick against supervised, then each arm's mean and its paired
    difference from supervised, at one label budget.

    e.g. ``balanced accuracy at 5 % labels (3 seeds): medcl's pick (fixmatch) vs supervised:
    +3.1 [+0.4, +5.9] points; supervised 0.70, FixMatch 0.73 (+3.1 [+0.4, +5.9]), SSCL 0.69
    (-1.0 [-4.2, +2.6])``.

    Args:
        records: The run records.
        paired: The paired differences (:func:`medcl.evaluate.efficiency.paired_comparisons`).
        metric: The headline metric.
        budget: The label budget (a float is a fraction).
        picks: medcl's picks (:func:`medcl.evaluate.pick.choose_picks`), if any.
    """
    budget = _budget(budget)
    summary = summarise(records, metric)
    parts = []
    seeds = 0
    for m in report_order(set(summary)):
        s = summary[m].get(budget)
        arm = arm_of(m)
        if not s or (arm is not None and not arm.headline):
            continue
        seeds = max(seeds, s["n"])
        d = _paired_at(paired, budget, m, "supervised")
        parts.append(f"{title(m)} {s['mean']:.2f}" + (f" ({_points(d, False)})" if d else ""))
    text = (
        f"{metric_name(metric)} at {budget.text} labels ({seeds} seed{'s' if seeds != 1 else ''}): "
    )
    chosen = picks_at(picks or [], budget)
    d = _paired_at(paired, budget, PICK, "supervised")
    if chosen and d:
        text += f"medcl's pick ({describe(chosen)}) vs supervised: {_points(d)}; "
    return text + ", ".join(parts)


def _points(d: dict[str, Any], unit: bool = True) -> str:
    """``+17.0 [+11.2, +23.1] points`` of a paired difference."""
    iv = "" if d.get("low") is None else f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    return f"{100 * d['mean']:+.1f}{iv}" + (" points" if unit else "")


def write_report(
    records: list[dict[str, Any]],
    metric: str,
    out_dir: str | Path,
    title_text: str = "Label efficiency",
    paired: list[dict[str, Any]] | None = None,
    picks: list[dict[str, Any]] | None = None,
    budget_rule: str | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``efficiency.png`` into ``out_dir``.

    Args:
        records: The run records.
        metric: The test metric reported.
        out_dir: Where the two files go.
        title_text: The report's title.
        paired: The paired differences, if computed.
        picks: medcl's picks, if chosen.
        budget_rule: A sentence stating how each arm's stages were budgeted.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paired = paired or []
    refused = [r for r in records if r.get("refused")]
    records = scored(records)
    summary = summarise(records, metric)
    budgets = sorted({b for m in summary.values() for b in m}, key=LabelBudget.sort_key)
    order = report_order(set(summary))
    lines = [
        f"# {title_text}",
        "",
        f"Test {metric_name(metric)} by label budget (mean over seeds, 95 % interval; "
        "one seed: patient-bootstrap interval). Every choice (recipe, epoch, medcl's pick) was "
        "made on the validation split; each arm's test split was read once.",
        "",
    ]
    lines += _pick_lines(records, paired, picks or [], budgets, metric)
    lines += [
        "| method | " + " | ".join(b.text for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for m in order:
        cells = []
        for b in budgets:
            s = summary[m].get(b)
            cells.append(
                "–"
                if s is None
                else f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] (n={s['n']})"
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += _per_seed_lines(records, metric, order, budgets)
    lines += _finding_lines(records, order, budgets)
    lines += _refused_lines(refused)
    if paired:
        lines += [
            "",
            "Paired differences (points of the metric; same seeds, label subsets and test "
            "patients; 95 % interval from resampling seeds and test patients):",
            "",
            "| labels | comparison | mean | 95 % interval | per seed |",
            "|---|---|---|---|---|",
        ]
        for d in paired:
            iv = "–" if d.get("low") is None else f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            per = ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"])
            name = "medcl's pick" if d["a"] == PICK else d["a"]
            lines.append(
                f"| {LabelBudget.of_record(d).text} | {name} − {d['b']} | "
                f"{100 * d['mean']:+.1f} | {iv} | {per} |"
            )
    lines += _budget_lines(records, order, budgets, budget_rule)
    lines += ["", f"Runs: {len(records)}. Raw records: results.json.", ""]
    report = out / "report.md"
    write_text("\n".join(lines), report)
    png = out / "efficiency.png"
    _plot(summary, paired, order, budgets, metric, png, title_text)
    return report, png


def _pick_lines(
    records: list[dict[str, Any]],
    paired: list[dict[str, Any]],
    picks: list[dict[str, Any]],
    budgets: list[LabelBudget],
    metric: str,
) -> list[str]:
    """medcl's pick at each budget: the arm each seed chose on validation, its test score and the
    paired difference from supervised."""
    if not picks:
        return []
    test = {r["run"]: r["metrics"].get(metric) for r in records}
    lines = [
        "## medcl's pick",
        "",
        "For each label budget and seed, the arm with the best validation "
        f"{_val_name(picks)} (ties: the simpler arm, earlier in the arm table); its test score "
        "was not looked at to choose it.",
        "",
        "| labels | seed | pick | val | test | vs supervised (paired, all seeds) |",
        "|---|---|---|---|---|---|",
    ]
    for b in budgets:
        d = _paired_at(paired, b, PICK, "supervised")
        for p in picks_at(picks, b):
            t = test.get(p["run"])
            lines.append(
                f"| {b.text} | {p['seed']} | {p['method']} | "
                f"{float(p.get('val_score', p[VAL_KEY]) or 0):.3f} | "
                f"{'–' if t is None else f'{t:.3f}'} | {_points(d) if d else '–'} |"
            )
    return [*lines, ""]


def _val_name(picks: list[dict[str, Any]]) -> str:
    """What the picks were chosen by, in words (``AUROC`` in a binary task)."""
    keys = {p.get("val_metric", VAL_KEY) for p in picks}
    names = {"val_auroc": "AUROC", "val_macro_auroc": "macro AUROC", VAL_KEY: "balanced accuracy"}
    return " or ".join(names.get(k, k) for k in sorted(keys, reverse=True))


def _per_seed_lines(
    records: list[dict[str, Any]], metric: str, order: list[str], budgets: list[LabelBudget]
) -> list[str]:
    """A per-seed table for every budget that ran more than one seed."""
    lines: list[str] = []
    for b in budgets:
        runs = [r for r in records if LabelBudget.of_record(r) == b]
        seeds = sorted({int(r["seed"]) for r in runs})
        if len(seeds) < 2:
            continue
        value = {(r["method"], int(r["seed"])): r["metrics"].get(metric) for r in runs}
        lines += [
            "",
            f"Per seed at {b.text} labels:",
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


def finding_summary(
    records: list[dict[str, Any]],
) -> dict[tuple[str, LabelBudget], dict[str, dict[str, Any]]]:
    """Each finding's test AUROC per arm and budget of a multi-label experiment:
    ``{(method, budget): {finding: {"mean", "low", "high", "n"}}}``, the mean over the seeds
    where it is defined; with one seed, ``low``/``high`` are that run's patient-bootstrap
    interval (``None`` without one); with more, ``None`` (the seeds are in the per-seed tables)."""
    groups: dict[tuple[str, LabelBudget], list[dict[str, Any]]] = defaultdict(list)
    for r in scored(records):
        if (r.get("metrics") or {}).get("findings"):
            groups[(r["method"], LabelBudget.of_record(r))].append(r["metrics"]["findings"])
    out: dict[tuple[str, LabelBudget], dict[str, dict[str, Any]]] = {}
    for key, runs in groups.items():
        out[key] = {}
        for name in runs[0]:
            vals = [f[name]["auroc"] for f in runs if f.get(name, {}).get("auroc") is not None]
            ci = runs[0][name].get("auroc_ci") if len(runs) == 1 else None
            out[key][name] = {
                "mean": float(np.mean(vals)) if vals else None,
                "low": ci[0] if ci else None,
                "high": ci[1] if ci else None,
                "n": len(vals),
            }
    return out


def _finding_lines(
    records: list[dict[str, Any]], order: list[str], budgets: list[LabelBudget]
) -> list[str]:
    """A multi-label experiment's per-finding test AUROC table (none for other tasks)."""
    summary = finding_summary(records)
    if not summary:
        return []
    names = list(dict.fromkeys(n for per in summary.values() for n in per))
    lines = [
        "",
        "Test AUROC per finding (mean over seeds; one seed: patient-bootstrap interval; each "
        "finding scored on the images where it is known):",
        "",
        "| method | labels | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for m in order:
        for b in budgets:
            per = summary.get((m, b))
            if per is None:
                continue
            cells = []
            for n in names:
                f = per.get(n) or {}
                if f.get("mean") is None:
                    cells.append("–")
                elif f.get("low") is None:
                    cells.append(f"{f['mean']:.3f}")
                else:
                    cells.append(f"{f['mean']:.3f} [{f['low']:.3f}, {f['high']:.3f}]")
            lines.append(f"| {m} | {b.text} | " + " | ".join(cells) + " |")
    return lines


def _refused_lines(refused: list[dict[str, Any]]) -> list[str]:
    """The arms the task refused, one line each (the first seed and budget's reason)."""
    if not refused:
        return []
    reasons: dict[str, str] = {}
    for r in refused:
        reasons.setdefault(r["method"], str(r["refused"]))
    lines = ["", "Arms not run (refused for this task):", ""]
    return lines + [f"- {m}: {why}" for m, why in reasons.items()]


def _budget_lines(
    records: list[dict[str, Any]],
    order: list[str],
    budgets: list[LabelBudget],
    rule: str | None,
) -> list[str]:
    """Each arm's optimiser steps and wall time per stage, mean over seeds, and the rule."""
    lines = [
        "",
        "Budget per arm and stage (mean over seeds; a pretraining shared by several arms, e.g. "
        "SSCL's by SSCL and SSCL+FixMatch, is counted in each):",
        "",
    ]
    if rule:
        lines += [rule, ""]
    lines += [
        "| method | labels | pretraining steps | pretraining (s) | fitting steps | fitting (s) "
        "| run total (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in order:
        for b in budgets:
            runs = [r for r in records if r["method"] == m and LabelBudget.of_record(r) == b]
            if not runs:
                continue

            def mean(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return float(np.mean([r.get(key) or 0 for r in runs]))

            lines.append(
                f"| {m} | {b.text} | {mean('pretrain_steps'):.0f} | {mean('pretrain_seconds'):.0f} "
                f"| {mean('finetune_steps'):.0f} | {mean('finetune_seconds'):.0f} "
                f"| {mean('seconds'):.0f} |"
            )
    return lines


def _plot(
    summary: dict[str, dict[LabelBudget, dict[str, Any]]],
    paired: list[dict[str, Any]],
    order: list[str],
    budgets: list[LabelBudget],
    metric: str,
    png: Path,
    title_text: str,
) -> None:
    """Left: each arm's mean per budget. Right: each arm's (and the pick's) paired difference
    from supervised with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = {b: i for i, b in enumerate(budgets)}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for m in order:
        bs = [b for b in budgets if b in summary[m]]
        style = "--" if m.endswith("+linear") else "-"
        ax.plot([x[b] for b in bs], [summary[m][b]["mean"] for b in bs], style, marker="o", label=m)
    ax.set_ylabel(f"test {metric_name(metric)} (mean over seeds)")
    ax.set_title(title_text)
    rivals = [m for m in [PICK, *order] if m != "supervised"]
    width = 0.8 / max(1, len(rivals))
    for j, m in enumerate(rivals):
        pts = [(b, _paired_at(paired, b, m, "supervised")) for b in budgets]
        pts = [(b, d) for b, d in pts if d is not None]
        if not pts:
            continue
        xs = [x[b] - 0.4 + width * (j + 0.5) for b, _ in pts]
        mean = np.array([100 * d["mean"] for _, d in pts])
        low = np.array(
            [100 * (d["low"] if d.get("low") is not None else d["mean"]) for _, d in pts]
        )
        high = np.array(
            [100 * (d["high"] if d.get("high") is not None else d["mean"]) for _, d in pts]
        )
        bx.errorbar(
            xs,
            mean,
            yerr=[mean - low, high - mean],
            fmt="s" if m == PICK else "o",
            capsize=3,
            label="medcl's pick" if m == PICK else m,
        )
    bx.axhline(0.0, color="grey", lw=1)
    bx.set_ylabel("paired difference from supervised (points, 95 % interval)")
    bx.set_title("Gain over supervised from scratch")
    for a in (ax, bx):
        a.set_xticks(range(len(budgets)), [b.text for b in budgets])
        a.set_xlabel("training labels")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
