"""No header PHI in any output when the source folders are named after the patient.

A phantom cohort's patient folders are renamed from each file's own header, the way PACS and CD
exports name them (``<FAMILY>_<GIVEN>_<PatientID>/…``, with ``^``, spaces, birth and study dates as
``19750214`` and ``1975-02-14``, accession numbers); a NIfTI and a PNG file sit in a folder named
after a fake patient. Ingest (2-D and 3-D), split, pretrain, finetune, evaluate, embed, efficiency
and predict run with their default flags (tiny sizes); then every byte of every file they wrote is
searched for the names, IDs and dates in all their spellings, and so is every file and folder
name they made (MLflow's, TensorBoard's and the CSV logger's outputs included). The private
path map (next to the secret) is the only place the real paths may appear.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image

from medcl.cli.main import main
from medcl.data.ingest import ingest
from medcl.data.ingest.phi import date_spellings, header_values, path_hits, tokens
from medcl.data.pseudonym import PATH_MAP_NAME
from medcl.data.synth import generate_cohort
from medcl.errors import MedclError
from tests.conftest import TINY_OVERRIDES

FAKE = ("ZQXDOE", "ZQXJANE", "MRN70331", "19630517")  # the NIfTI/PNG folder's "patient"


def _folders(ds: pydicom.Dataset, variant: int) -> list[str]:
    """Patient folder (and study folder) names built from the file's own header."""
    name = str(ds.PatientName)
    family, _, given = name.partition("^")
    given = given.split("^")[0]
    birth, study = str(ds.PatientBirthDate), str(ds.StudyDate)
    iso = f"{study[:4]}-{study[4:6]}-{study[6:]}"
    pid, acc = str(ds.PatientID), str(ds.AccessionNumber)
    return [
        [f"{family}_{given}_{pid}", f"ST_{study}"],
        [name, birth],
        [f"{family.title()} {given.title()}", iso],
        [pid, f"ACC{acc}"],
        [f"{given} {family} {birth[6:]}.{birth[4:6]}.{birth[:4]}", "x"],
    ][variant % 5]


def _needles(ds: pydicom.Dataset) -> set[str]:
    """The header values a path may repeat, in the spellings the folders above use."""
    out: set[str] = set()
    name = str(ds.PatientName)
    for part in name.replace("^", " ").split():
        if len(part) >= 3:
            out |= {part, part.title(), part.lower()}
    out |= {str(ds.PatientID), str(ds.AccessionNumber)}
    for d in (str(ds.PatientBirthDate), str(ds.StudyDate)):
        out |= set(date_spellings(d))
    return {n for n in out if n}


def _relocate(src: Path, dst: Path, dims: int, start: int) -> tuple[set[str], dict[str, str]]:
    """Move the cohort at ``src`` into PHI-named folders under ``dst``; needles, new labels."""
    labels = pd.read_csv(src / "labels.csv", dtype=str)
    needles: set[str] = set()
    new_labels: dict[str, str] = {}
    patients: dict[str, int] = {}
    for row in labels.itertuples():
        f = src / row.path
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        variant = patients.setdefault(row.path.split("/")[0], start + len(patients))
        parts = _folders(ds, variant)
        rel = Path(*parts, *Path(row.path).parts[1:])
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, dst / rel)
        needles |= _needles(ds)
        new_labels[rel.as_posix()] = row.label
    return needles, new_labels


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("phi_paths")
    src2, src3 = root / "src2", root / "src3"
    generate_cohort(root / "c2", patients=6, size=16, dims=2, progress=False)
    generate_cohort(root / "c3", patients=1, size=16, dims=3, progress=False)
    needles, labels2 = _relocate(root / "c2", src2, 2, 0)
    more, _ = _relocate(root / "c3", src3, 3, 1)
    needles |= more
    fake = src2 / f"{FAKE[0]}_{FAKE[1]}_{FAKE[2]}" / FAKE[3]
    fake.mkdir(parents=True)
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((16, 16)).astype(np.float32), np.eye(4)), fake / "a.nii")
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(fake / "b.png")
    needles |= set(FAKE)
    first = next(iter(labels2.values()))
    for name in ("a.nii", "b.png"):
        labels2[(fake / name).relative_to(src2).as_posix()] = first
    pd.DataFrame({"path": list(labels2), "label": list(labels2.values())}).to_csv(
        src2 / "labels.csv", index=False
    )
    return root, src2, src3, needles


def _hits(folder: Path, needles: set[str]) -> dict[str, int]:
    """Needle occurrences per file or folder under ``folder``: in every byte of every file and
    in every file and folder name (the path below ``folder``)."""
    blobs = [n.encode() for n in needles]
    out: dict[str, int] = defaultdict(int)
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        named = sum(rel.count(n) for n in needles)
        if named:
            out[f"name: {rel}"] = named
        if p.is_file():
            data = p.read_bytes()
            n = sum(data.count(b) for b in blobs)
            if n:
                out[rel] = n
    return dict(out)


def test_phi_named_folders_leave_no_trace(cohort, monkeypatch, capsys):
    root, src2, src3, needles = cohort
    out = root / "out"
    out.mkdir()
    secret_dir = root / "private"
    monkeypatch.setenv("MEDCL_SECRET_FILE", str(secret_dir / "secret.key"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tiny = [*TINY_OVERRIDES, "trainer.accelerator=cpu", "optim.epochs=1"]
    m, s = out / "m.csv", out / "s.csv"
    assert main(["ingest", str(src2), "--out", str(m), "--labels", str(src2 / "labels.csv")]) == 0
    console = capsys.readouterr().out
    assert "paths carried header PHI; written pseudonymised" in console
    assert main(["ingest", str(src3), "--out", str(out / "m3.csv"), "--dims", "3"]) == 0
    assert main(["split", str(m), "--out", str(s), "--val", "0.3", "--test", "0.3"]) == 0
    pre = out / "pre"
    logged = [*tiny, "trainer.logger=[csv,tensorboard,mlflow]"]  # every logger's files
    assert main(["pretrain", *logged, f"data.manifest={s}", f"out={pre}"]) == 0
    ft = out / "ft"
    assert (
        main(["finetune", "--pretrained", str(pre), *logged, f"data.manifest={s}", f"out={ft}"])
        == 0
    )
    assert any((pre / "mlruns").rglob("meta.yaml")) and any((ft / "mlruns").rglob("meta.yaml"))
    model = ft / "model"
    assert main(["evaluate", str(model), "--manifest", str(s), "--n-boot", "10"]) == 0
    assert main(["embed", str(model), "--manifest", str(s), "--out", str(out / "e.parquet")]) == 0
    eff = [f"out={out / 'eff'}", "efficiency.methods=[supervised]", "efficiency.fractions=[1.0]"]
    eff += ["efficiency.seeds=[0]", "efficiency.n_boot=10"]
    assert main(["efficiency", *tiny, f"data.manifest={s}", *eff]) == 0
    preds = out / "preds.csv"
    assert main(["predict", str(model), str(src2), "--out", str(preds)]) == 0
    console += capsys.readouterr().out + capsys.readouterr().err

    hits = _hits(out, needles)
    print("PHI hits per output file:", hits)
    assert hits == {}
    assert not [n for n in needles if n in console]

    # the dashboard's served pages, on a run folder made of these outputs: nothing identifying
    from tests.app.test_pages import assert_clean, open_app, shown_text

    metrics = next(ft.rglob("metrics.json"))
    summary = {
        "kind": "medcl-run",
        "manifest": "s.csv",
        "metrics": str(metrics.relative_to(out)),
        "embeddings": "e.parquet",
        "model": "ft/model",
    }
    (out / "run_summary.json").write_text(json.dumps(summary))
    for page in ("overview", "embedding", "case", "errors", "augment", "label"):
        at = open_app(monkeypatch, out, page)
        assert_clean(at)
        text = shown_text(at)
        # whole tokens: a given name such as "Mary" is also inside the word "summary"
        shown = [
            n for n in needles if re.search(rf"(?<![0-9A-Za-z]){re.escape(n)}(?![0-9A-Za-z])", text)
        ]
        assert not shown, (page, shown)
    table = pd.read_csv(preds, dtype=str)
    assert {"image_id", "source_id"} <= set(table.columns) and "path" not in table.columns

    # the private map: owner-only, outside the run folders, holds the real paths
    pmap = secret_dir / PATH_MAP_NAME
    assert stat.S_IMODE(os.stat(pmap).st_mode) == 0o600
    text = pmap.read_text()
    assert str(src2 / f"{FAKE[0]}_{FAKE[1]}_{FAKE[2]}" / FAKE[3] / "b.png") in text
    assert any(n in text for n in needles)

    with_paths = out / "preds_paths.csv"
    assert (
        main(["predict", str(model), str(src2), "--out", str(with_paths), "--with-source-paths"])
        == 0
    )
    assert "source paths" in capsys.readouterr().out
    real = pd.read_csv(with_paths, dtype=str)
    assert real["path"].map(lambda p: Path(p).is_file() and Path(p).is_relative_to(src2)).all()


def test_path_check_spellings():
    ds = pydicom.Dataset()
    ds.PatientName = "van der BERG^Anna Maria"
    ds.PatientID = "MRN5309188"
    ds.PatientBirthDate = "19750214"
    ds.StudyDate = "20200301"
    ds.InstitutionName = "St Elsewhere"
    toks = tokens(header_values(ds))
    for rel in (
        "BERG_ANNA_x/a.dcm",
        "van der berg/a.dcm",
        "x/mrn5309188/a.dcm",
        "x/1975-02-14/a.dcm",
        "x/14.02.1975/a.dcm",
        "x/02_14_1975/a.dcm",
        "x/study 2020.03.01/a.dcm",
        "elsewhere/a.dcm",
        "x/Maria.dcm",
    ):
        assert path_hits(rel, toks), rel
    assert not path_hits("P0001/ST01/SE01/IM0001.dcm", toks)


def test_relative_mode_and_incremental_state(cohort, tmp_path):
    _, src2, _, needles = cohort
    secret = tmp_path / "private" / "secret.key"
    out = tmp_path / "r" / "m.csv"
    first = ingest(src2, out, paths="relative", secret=secret, progress=False)
    assert first.phi_paths == 22 and first.paths == "relative"
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    dicom = df["modality"] != "OT"
    assert (df.loc[dicom, "path"] == "").all()  # every DICOM folder repeats its header
    assert (df.loc[~dicom, "path"] != "").all()  # no header to compare: written as they are
    assert df["source_id"].str.fullmatch("[0-9a-f]{16}").all()
    assert not _hits(out.parent / "m.cache", needles)
    again = ingest(src2, out, paths="relative", secret=secret, progress=False)
    assert again.skipped_unchanged == again.files_seen  # state keyed by source_id still matches
    assert pd.read_csv(out, dtype=str, keep_default_na=False).equals(df)
    kept = ingest(src2, tmp_path / "k" / "m.csv", paths="keep", secret=secret, progress=False)
    assert (pd.read_csv(kept.manifest, dtype=str)["path"] != "").all()
    with pytest.raises(MedclError, match="--paths must be one of"):
        ingest(src2, out, paths="none", secret=secret, progress=False)
