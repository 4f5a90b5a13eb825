"""benchmarks/experiment_profile.py: the timing callback's parts on a stand-in trainer (against
sleeps of known length), and the tiny experiment end to end (its parts add up to the wall time)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_profile():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location(
        "experiment_profile", ROOT / "benchmarks" / "experiment_profile.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["experiment_profile"] = module
    spec.loader.exec_module(module)
    return module


def test_the_clock_splits_an_epoch_into_steps_loading_and_validation() -> None:
    """One epoch: 3 steps of 20 ms, 10 ms waits before each, a 30 ms validation inside the epoch.
    Steps 60 ms, validation 30 ms, data loading 30 ms (not the validation's)."""
    prof = load_profile()
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    clock = prof.Clock(totals, counts)
    clock.on_train_epoch_start(None, None)
    for _ in range(3):
        time.sleep(0.01)
        clock.on_train_batch_start()
        time.sleep(0.02)
        clock.on_train_batch_end()
    clock.on_validation_start(None, None)
    time.sleep(0.03)
    clock.on_validation_end(None, None)
    clock.on_train_epoch_end(None, None)
    assert counts["optimiser steps"] == 3 and counts["validation"] == 1
    assert 0.06 <= totals["optimiser steps"] < 0.09
    assert 0.03 <= totals["validation"] < 0.05
    assert 0.03 <= totals["data loading"] < 0.05  # the validation is not counted as loading
    parts = prof.split({**totals, "fits": 0.2}, wall=0.25)
    assert parts["trainer set-up and teardown"] == pytest.approx(
        0.2 - sum(totals[k] for k in ("optimiser steps", "data loading", "validation"))
    )
    assert parts["outside the fits"] == pytest.approx(0.05)
    assert sum(parts.values()) == pytest.approx(0.25)


def test_the_tiny_experiment_is_profiled_end_to_end(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    prof = load_profile()
    out = tmp_path / "profile.json"
    prof.main(
        ["--tiny", "--work", str(tmp_path), "--methods", "supervised", "sscl", "--json", str(out)]
    )
    printed = capsys.readouterr().out
    assert "target (>= 90 % of the wall time in optimiser steps)" in printed
    figures = json.loads(out.read_text())
    parts = figures["parts_s"]
    assert figures["counts"]["fits"] >= 2  # a pretraining and the fine-tunings
    assert figures["counts"]["optimiser steps"] > 0 and parts["optimiser steps"] > 0
    assert parts["validation"] > 0
    assert sum(parts.values()) == pytest.approx(figures["wall_s"], rel=1e-6)
