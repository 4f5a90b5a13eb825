"""benchmarks/fault_injection.py end to end with a few kills (slow: several minutes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_fault_injection_reruns_match(tmp_path, capsys):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fault_injection.py"
    spec = importlib.util.spec_from_file_location("fault_injection", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--kills", "4", "--work", str(tmp_path / "work")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "4 kills, 4 resumed, 0 differences"
