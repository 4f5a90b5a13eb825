"""benchmarks/gpu_check.py --dry-run: every section runs on the CPU at tiny sizes and prints its
figures (no typo waits for the GPU machine), and the JSON holds them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# each section and the figures it prints
FIGURES = {
    "sscl": [
        "sscl_img_per_s",
        "sscl_gpu_util",
        "sscl_pipeline_img_per_s",
        "sscl_pipeline_gpu_util",
    ],
    "loss_share": ["loss_share_4096"],
    "fixmatch": ["fixmatch_step_ms", "fixmatch_img_per_s"],
    "patches3d": ["patches3d_img_per_s", "patches3d_volumes_per_s"],
    "demo": ["demo_wall_s", "demo_headline"],
}


def test_dry_run_prints_every_figure_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    lines = proc.stdout.splitlines()
    failed = [s for s in lines if ": FAILED" in s]
    assert not failed, failed + proc.stderr.splitlines()[-20:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    for section, names in FIGURES.items():
        for name in names:
            found = [s for s in lines if s.startswith(f"{name}: ")]
            assert found, f"{section}: no line for {name}"
    assert any(s.startswith("sscl_gpu_util: n/a (no GPU)") for s in lines)

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["dry_run"] is True and doc["failed"] == {}
    expected = {name for names in FIGURES.values() for name in names}
    assert set(doc["figures"]) == expected
    for name in expected - {"sscl_gpu_util", "sscl_pipeline_gpu_util", "demo_headline"}:
        value = doc["figures"][name]["value"]
        assert isinstance(value, float) and value > 0, (name, value)
    assert doc["figures"]["sscl_gpu_util"]["value"] == "n/a (no GPU)"
    assert "labels" in doc["figures"]["demo_headline"]["value"]
    assert set(doc["section_seconds"]) == set(FIGURES)
    assert not list(tmp_path.glob(".gpu_check.json.*"))  # the atomic write left no temporary


def test_unknown_section_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--sections", "sscl,nope"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2 and "--sections: unknown nope" in proc.stderr


def test_building_a_preset_does_not_import_torchio() -> None:
    """The GPU machine has no SimpleITK (which torchio imports): a preset with artifacts enabled
    is built (fine-tuning does, for its intensity window) without importing torchio."""
    code = (
        "import sys; from medcl.transforms import build_preset; "
        "p = build_preset('mr', {}, dims=2); assert p.per_sample, p; "
        "print(sorted(m for m in ('torchio', 'SimpleITK') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
