"""Label-efficiency summary: seed means with t-intervals, bootstrap interval for one seed."""

from __future__ import annotations

import math

from medcl.evaluate.report import headline, summarise, write_report


def _rec(method, frac, seed, value, low=None, high=None):
    iv = {"balanced_accuracy": {"value": value, "low": low, "high": high}}
    return {
        "method": method,
        "label_fraction": frac,
        "seed": seed,
        "metrics": {"balanced_accuracy": value, "intervals": iv},
    }


def test_seed_mean_and_t_interval():
    recs = [_rec("sscl", 0.05, s, v) for s, v in enumerate([0.5, 0.6, 0.7])]
    s = summarise(recs, "balanced_accuracy")["sscl"][0.05]
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, 2) · sd / √n, sd of (0.5, 0.6, 0.7) = 0.1
    assert math.isclose(s["mean"], 0.6) and s["n"] == 3
    assert math.isclose(s["low"], 0.6 - half, rel_tol=1e-3)
    assert math.isclose(s["high"], 0.6 + half, rel_tol=1e-3)


def test_single_seed_uses_bootstrap_interval_and_none_is_tolerated():
    s = summarise([_rec("supervised", 1.0, 0, 0.4, 0.3, 0.5)], "balanced_accuracy")
    assert s["supervised"][1.0] == {"mean": 0.4, "low": 0.3, "high": 0.5, "n": 1}
    s = summarise([_rec("supervised", 1.0, 0, 0.4)], "balanced_accuracy")
    assert s["supervised"][1.0]["low"] == 0.4


def test_write_report_table_gain_and_plot(tmp_path):
    recs = [_rec("supervised", 0.05, 0, 0.30, 0.2, 0.4), _rec("sscl", 0.05, 0, 0.45, 0.35, 0.55)]
    report, png = write_report(recs, "balanced_accuracy", tmp_path)
    text = report.read_text()
    assert "| sscl | 0.450 [0.350, 0.550] (n=1) |" in text
    assert "- sscl: 5 % +15.0" in text
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_headline_gives_seed_means_and_the_paired_difference():
    recs = [_rec("supervised", 0.05, s, v) for s, v in enumerate([0.60, 0.62, 0.64])]
    recs += [_rec("sscl", 0.05, s, v) for s, v in enumerate([0.70, 0.75, 0.80])]
    recs += [_rec("sscl", 1.0, 0, 0.9)]  # another fraction: not in the line
    paired = [
        {
            "label_fraction": 0.05,
            "a": "sscl",
            "b": "supervised",
            "mean": 0.13,
            "low": 0.081,
            "high": 0.179,
        },
        {
            "label_fraction": 1.0,
            "a": "sscl",
            "b": "supervised",
            "mean": 0.5,
            "low": 0.4,
            "high": 0.6,
        },
    ]
    assert headline(recs, paired, "balanced_accuracy", 0.05) == (
        "balanced accuracy at 5 % labels (3 seeds): supervised 0.62, SSCL 0.75; "
        "SSCL − supervised +13.0 [+8.1, +17.9] points"
    )
    # without replicates: no interval; without a paired record: no difference
    paired[0].update(low=None, high=None)
    assert headline(recs, paired, "balanced_accuracy", 0.05).endswith("+13.0 points")
    assert headline(recs, [], "balanced_accuracy", 1.0) == (
        "balanced accuracy at 100 % labels (1 seed): SSCL 0.90"
    )
