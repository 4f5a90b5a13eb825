"""medcl's pick: the best validation score per label budget and seed, ties to the simpler arm."""

from __future__ import annotations

from medcl.evaluate.pick import choose_picks, describe


def _rec(method, seed, val, frac=0.05, per_class=None):
    r = {
        "run": f"{method}_{frac}_s{seed}",
        "method": method,
        "label_fraction": frac,
        "seed": seed,
        "val_balanced_accuracy": val,
        "model_dir": f"/m/{method}/{seed}",
    }
    if per_class:
        r["labels_per_class"] = per_class
    return r


def test_best_validation_per_budget_and_seed_ties_to_the_earlier_arm():
    recs = [
        _rec("sscl", 0, 0.7),
        _rec("supervised", 0, 0.6),
        _rec("fixmatch", 0, 0.7),  # tied with sscl: FixMatch comes first in the arm table
        _rec("sscl", 1, 0.5),
        _rec("supervised", 1, 0.55),
        _rec("sscl", 0, 0.9, frac=0.012, per_class=2),
        _rec("supervised", 0, 0.3, frac=0.012, per_class=2),
    ]
    picks = choose_picks(recs)
    got = [(p["budget"], p["seed"], p["method"], p["val_balanced_accuracy"]) for p in picks]
    assert got == [
        ("k2", 0, "sscl", 0.9),  # per-class budgets first
        ("f0.05", 0, "fixmatch", 0.7),
        ("f0.05", 1, "supervised", 0.55),
    ]
    assert picks[1]["model_dir"] == "/m/fixmatch/0"
    assert picks[1]["candidates"] == ["supervised", "fixmatch", "sscl"]
    assert picks[0]["labels_per_class"] == 2


def test_describe_names_one_arm_or_counts():
    assert describe([{"method": "sscl"}, {"method": "sscl"}]) == "sscl"
    assert describe([{"method": "a"}, {"method": "b"}, {"method": "b"}]) == "b ×2, a ×1"
