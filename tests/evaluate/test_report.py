"""Label-efficiency report: seed means with t-intervals, bootstrap interval for one seed, budgets
per class and per fraction, medcl's pick in the headline."""

from __future__ import annotations

import math

from medcl.evaluate.label_budget import LabelBudget
from medcl.evaluate.report import headline, summarise, write_report

F5 = LabelBudget(fraction=0.05)


def _rec(method, frac, seed, value, low=None, high=None, per_class=None):
    iv = {"balanced_accuracy": {"value": value, "low": low, "high": high}}
    rec = {
        "run": f"{method}_{frac}_{per_class}_s{seed}",
        "method": method,
        "label_fraction": frac,
        "seed": seed,
        "metrics": {"balanced_accuracy": value, "intervals": iv},
    }
    if per_class:
        rec["labels_per_class"] = per_class
    return rec


def test_seed_mean_and_t_interval():
    recs = [_rec("sscl", 0.05, s, v) for s, v in enumerate([0.5, 0.6, 0.7])]
    s = summarise(recs, "balanced_accuracy")["sscl"][F5]
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, 2) · sd / √n, sd of (0.5, 0.6, 0.7) = 0.1
    assert math.isclose(s["mean"], 0.6) and s["n"] == 3
    assert math.isclose(s["low"], 0.6 - half, rel_tol=1e-3)
    assert math.isclose(s["high"], 0.6 + half, rel_tol=1e-3)


def test_single_seed_uses_bootstrap_interval_and_none_is_tolerated():
    full = LabelBudget(fraction=1.0)
    s = summarise([_rec("supervised", 1.0, 0, 0.4, 0.3, 0.5)], "balanced_accuracy")
    assert s["supervised"][full] == {"mean": 0.4, "low": 0.3, "high": 0.5, "n": 1}
    s = summarise([_rec("supervised", 1.0, 0, 0.4)], "balanced_accuracy")
    assert s["supervised"][full]["low"] == 0.4


def test_per_class_budgets_are_their_own_columns_before_the_fractions():
    recs = [
        _rec("supervised", 0.013, 0, 0.5, per_class=2),
        _rec("supervised", 0.03, 1, 0.7, per_class=2),
    ]
    recs += [_rec("supervised", 0.05, 0, 0.8)]
    s = summarise(recs, "balanced_accuracy")["supervised"]
    assert list(s) == [LabelBudget(per_class=2), F5]  # the actual fractions do not split it
    assert math.isclose(s[LabelBudget(per_class=2)]["mean"], 0.6)


def test_write_report_tables_and_plot(tmp_path):
    recs = [_rec("supervised", 0.05, 0, 0.30, 0.2, 0.4), _rec("sscl", 0.05, 0, 0.45, 0.35, 0.55)]
    recs.append(_rec("sscl", 0.02, 0, 0.40, per_class=5))
    paired = [
        {
            "label_fraction": 0.05,
            "a": "sscl",
            "b": "supervised",
            "mean": 0.15,
            "low": 0.1,
            "high": 0.2,
            "per_seed": [0.15],
        },
    ]
    picks = [
        {
            "label_fraction": 0.05,
            "budget": "f0.05",
            "seed": 0,
            "method": "sscl",
            "run": recs[1]["run"],
            "val_balanced_accuracy": 0.5,
        }
    ]
    report, png = write_report(
        recs,
        "balanced_accuracy",
        tmp_path,
        paired=paired,
        picks=picks,
        budget_rule="Budget rule: x",
    )
    text = report.read_text()
    assert "| method | 5 per class | 5 % |" in text
    assert "| sscl | 0.400 [0.400, 0.400] (n=1) | 0.450 [0.350, 0.550] (n=1) |" in text
    assert "| 5 % | sscl − supervised | +15.0 | [+10.0, +20.0] | +15.0 |" in text
    assert "| 5 % | 0 | sscl | 0.500 | 0.450 |" in text and "Budget rule: x" in text
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def _paired(frac, a, mean, low, high):
    return {
        "label_fraction": frac,
        "a": a,
        "b": "supervised",
        "mean": mean,
        "low": low,
        "high": high,
    }


def test_headline_gives_the_pick_then_each_arm_with_its_paired_difference():
    recs = [_rec("supervised", 0.05, s, v) for s, v in enumerate([0.60, 0.62, 0.64])]
    recs += [_rec("sscl", 0.05, s, v) for s, v in enumerate([0.70, 0.75, 0.80])]
    recs += [_rec("fixmatch", 0.05, s, v) for s, v in enumerate([0.50, 0.60, 0.70])]
    recs += [_rec("sscl", 1.0, 0, 0.9)]  # another fraction: not in the line
    paired = [
        _paired(0.05, "sscl", 0.13, 0.081, 0.179),
        _paired(0.05, "pick", 0.11, 0.02, 0.2),
        _paired(1.0, "sscl", 0.5, 0.4, 0.6),
    ]
    picks = [
        {"label_fraction": 0.05, "seed": s, "method": m}
        for s, m in enumerate(["sscl", "sscl", "fixmatch"])
    ]
    assert headline(recs, paired, "balanced_accuracy", 0.05, picks) == (
        "balanced accuracy at 5 % labels (3 seeds): medcl's pick (sscl ×2, fixmatch ×1) vs "
        "supervised: +11.0 [+2.0, +20.0] points; supervised 0.62, FixMatch 0.60, "
        "SSCL 0.75 (+13.0 [+8.1, +17.9])"
    )
    # without replicates: no interval; without a paired record: no difference; no picks
    paired[0].update(low=None, high=None)
    assert headline(recs, paired, "balanced_accuracy", F5).endswith("SSCL 0.75 (+13.0)")
    assert headline(recs, [], "balanced_accuracy", 1.0) == (
        "balanced accuracy at 100 % labels (1 seed): SSCL 0.90"
    )
