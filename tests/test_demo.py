"""The demo's data preparation (medcl.demo.build_demo_data) for both cohorts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medcl.data.manifest import read_manifest
from medcl.demo import build_demo_data
from medcl.errors import MedclError


def test_brain_cohort_data_and_no_mixing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nilearn")
    from medcl.data.synth import brain

    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # synth and ingest in this process

    lines: list[str] = []
    split = build_demo_data(tmp_path, patients=10, size=16, cohort="brain", log=lines.append)
    m = read_manifest(split)
    assert list(m.classes) == list(brain.CLASSES)
    assert set(m.df["split"]) == {"train", "val", "test"}
    assert m.df["patient_key"].nunique() == 10 and (m.df["label"] != "").all()
    assert lines[0].startswith("[1/6] brain cohort")
    again = build_demo_data(tmp_path, patients=10, size=16, cohort="brain", log=lines.append)
    assert again == split  # every step reused
    with pytest.raises(MedclError, match="not the phantom cohort"):
        build_demo_data(tmp_path, patients=10, size=16, cohort="phantom", log=lines.append)
    with pytest.raises(MedclError, match="cohort must be one of"):
        build_demo_data(tmp_path / "x", patients=10, size=16, cohort="knee", log=lines.append)


def test_multilabel_demo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medcl.data.synth import FINDINGS

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    lines: list[str] = []
    split = build_demo_data(tmp_path, patients=12, size=16, task="multilabel", log=lines.append)
    m = read_manifest(split)
    assert m.multilabel and list(m.classes) == list(FINDINGS)
    y = m.findings()
    assert (y >= 0).all()  # the phantom knows every finding of every image
    # the labels agree with the generator's sheet, patient by patient (every image of a patient
    # shows the same findings)
    per_patient = m.df.assign(t=m.df["label"]).groupby("patient_key")["t"].nunique()
    assert (per_patient == 1).all()
    assert lines[0].startswith("[1/6] phantom cohort, multi-label findings")
    with pytest.raises(MedclError, match="not the phantom cohort's multiclass task"):
        build_demo_data(tmp_path, patients=12, size=16, log=lines.append)
    with pytest.raises(MedclError, match="use cohort phantom"):
        build_demo_data(tmp_path / "b", patients=4, cohort="brain", task="multilabel")
