"""Labels CSV keyed by path or by a DICOM key (AccessionNumber, StudyInstanceUID,
SeriesInstanceUID, PatientID), on the phantom cohort.

The key CSVs are built here from the generated files' own headers (pydicom); the expected labels
come from a path-keyed CSV written from the same table. Every file an ingest writes (manifest,
sidecar, rejects, log, cache, state, the private map and the secret's folder), every file name
and the console are searched for every key value.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medcl.cli.main import main
from medcl.data.ingest import ingest, log_path
from medcl.data.manifest import read_manifest
from medcl.data.synth import generate_cohort
from medcl.errors import MedclError
from tests.data.test_phi_paths import _hits

KEYS = ("AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "PatientID")
UNKNOWN = "A99999999"  # an accession number no image has


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two phantom cohorts side by side, and each file's keys from its header: ``flat`` has 3-5
    one-image studies per patient, ``series`` one study of two 8-slice series per patient."""
    root = tmp_path_factory.mktemp("keyed")
    generate_cohort(root / "src" / "flat", patients=3, size=16, dims=2, progress=False)
    generate_cohort(root / "src" / "series", patients=2, size=16, dims=3, seed=1, progress=False)
    return root, root / "src", _headers(root / "src")


def _headers(src: Path) -> pd.DataFrame:
    """``path`` and the four keys of every DICOM file, read with pydicom."""
    records = []
    for p in sorted(src.rglob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        records.append(
            {"path": p.relative_to(src).as_posix(), **{k: str(ds[k].value) for k in KEYS}}
        )
    return pd.DataFrame(records)


def _study_labels(files: pd.DataFrame) -> dict[str, str]:
    """A label per study, alternating over the studies (so a patient's studies differ)."""
    studies = sorted(set(files["StudyInstanceUID"]))
    return {s: ("yes" if i % 2 else "no") for i, s in enumerate(studies)}


def _needles(files: pd.DataFrame) -> set[str]:
    return {v for k in KEYS for v in files[k]} | {UNKNOWN}


def _ingest(src: Path, out: Path, labels: Path, secret: Path, **kw):
    return ingest(src, out / "m.csv", labels=labels, secret=secret, progress=False, **kw)


def _labels_by_image(out: Path) -> dict[str, str]:
    df = read_manifest(out / "m.csv").df
    return dict(zip(df["image_id"], df["label"], strict=True))


def _no_key_anywhere(needles: set[str], *folders: Path, console: str = "") -> None:
    """No needle in any file's bytes, any file or folder name, or the console."""
    for folder in folders:
        assert _hits(folder, needles) == {}, folder
        names = [p.name for p in folder.rglob("*")]
        assert not [n for n in names for v in needles if v in n], folder
    assert not [v for v in needles if v in console]


def test_study_labels_by_accession_number_equal_the_path_labels(cohort, tmp_path, capsys):
    root, src, files = cohort
    study = _study_labels(files)
    files = files.assign(label=[study[s] for s in files["StudyInstanceUID"]])
    by_path = tmp_path / "by_path.csv"
    files[["path", "label"]].to_csv(by_path, index=False)
    by_acc = tmp_path / "by_accession.csv"
    sheet = files[["AccessionNumber", "label"]].drop_duplicates()  # one row per study
    extra = pd.DataFrame({"AccessionNumber": [UNKNOWN], "label": ["yes"]})
    pd.concat([sheet, extra]).to_csv(by_acc, index=False)
    assert len(sheet) == files["StudyInstanceUID"].nunique() < len(files) - 20
    secret = tmp_path / "private" / "key"
    expected = _ingest(src, tmp_path / "a", by_path, secret)
    assert expected.label_warnings == []
    report = _ingest(src, tmp_path / "b", by_acc, secret)
    assert _labels_by_image(tmp_path / "b") == _labels_by_image(tmp_path / "a")
    assert set(_labels_by_image(tmp_path / "b").values()) == {"yes", "no"}
    # the unknown accession number is reported by its row number (the last one), not its value
    unknown_row = len(sheet) + 2
    assert report.label_warnings == [
        f"labels CSV: 1 row(s) match no ingested image by AccessionNumber (rows {unknown_row}); "
        "their labels are not used"
    ]
    assert report.labels == (
        f"labels CSV keyed by AccessionNumber: {len(sheet)} of {len(sheet) + 1} rows matched an "
        "image"
    )
    log = log_path(tmp_path / "b" / "m.csv").read_text()
    assert f"rows {unknown_row}" in log and f"labelled rows: {len(files)} of {len(files)}" in log
    # the command line says the same, and nothing anywhere carries a key value
    assert (
        main(
            ["ingest", str(src), "--out", str(tmp_path / "c" / "m.csv")]
            + ["--labels", str(by_acc), "--secret", str(secret)]
        )
        == 0
    )
    console = capsys.readouterr()
    assert "warning: labels CSV: 1 row(s) match no ingested image" in console.out
    needles = _needles(files)
    _no_key_anywhere(
        needles, tmp_path / "b", tmp_path / "c", secret.parent, console=console.out + console.err
    )


@pytest.mark.parametrize("key", ["StudyInstanceUID", "SeriesInstanceUID", "PatientID"])
def test_every_key_gives_the_path_labels(cohort, tmp_path, key):
    root, src, files = cohort
    if key == "PatientID":  # a patient label: the patients' own alternate
        patients = sorted(set(files["PatientID"]))
        label = {p: ("yes" if i % 2 else "no") for i, p in enumerate(patients)}
    else:
        study = _study_labels(files)
        label = {v: study[s] for v, s in zip(files[key], files["StudyInstanceUID"], strict=True)}
    files = files.assign(label=[label[v] for v in files[key]])
    by_path, by_key = tmp_path / "path.csv", tmp_path / "key.csv"
    files[["path", "label"]].to_csv(by_path, index=False)
    files[[key, "label"]].drop_duplicates().to_csv(by_key, index=False)
    secret = tmp_path / "private" / "key"
    _ingest(src, tmp_path / "a", by_path, secret)
    report = _ingest(src, tmp_path / "b", by_key, secret)
    assert report.label_warnings == []
    assert _labels_by_image(tmp_path / "b") == _labels_by_image(tmp_path / "a")
    _no_key_anywhere(_needles(files), tmp_path / "b", secret.parent)


def test_reused_rows_take_a_new_key_sheet(cohort, tmp_path):
    """The key pseudonyms travel in the incremental state: a rerun with another sheet labels the
    unchanged files without reading them again."""
    root, src, files = cohort
    secret = tmp_path / "private" / "key"
    first = tmp_path / "first.csv"
    files[["path"]].assign(label="no").to_csv(first, index=False)
    _ingest(src, tmp_path / "a", first, secret)
    second = tmp_path / "second.csv"
    files[["PatientID"]].drop_duplicates().assign(label="yes").to_csv(second, index=False)
    report = _ingest(src, tmp_path / "a", second, secret)
    assert report.skipped_unchanged == len(files) + 4  # + each cohort's labels.csv, cohort.json
    assert set(_labels_by_image(tmp_path / "a").values()) == {"yes"}


def _sheet(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sheet.csv"
    p.write_text(text)
    return p


def test_bad_sheets_are_refused_by_row_number(cohort, tmp_path):
    root, src, files = cohort
    secret = tmp_path / "private" / "key"
    acc = list(files["AccessionNumber"])
    cases = {
        f"AccessionNumber,label\n{acc[0]},yes\n{acc[1]},no\n{acc[0]},no\n": (
            "rows 2 and 4 give one AccessionNumber different labels"
        ),
        f"AccessionNumber,PatientID,label\n{acc[0]},x,yes\n": "exactly one key column",
        "label\nyes\n": "key columns found: none",
        f"AccessionNumber,diagnosis\n{acc[0]},yes\n": "needs a label column",
        f"AccessionNumber,label,patient\n{acc[0]},yes,p1\n": "a patient column goes with path",
        f"AccessionNumber,label\n{acc[0]},yes\n ,no\n": "row 3 has an empty AccessionNumber",
        f"AccessionNumber,label\n{UNKNOWN},yes\n": "none of its 1 rows matches the AccessionNumber",
        "path,label\nP0001/nothing.dcm,yes\nP0001/none.dcm,no\nP0001/nothing.dcm,no\n": (
            "rows 2 and 4 give one path different labels"
        ),
    }
    for text, message in cases.items():
        with pytest.raises(MedclError) as info:
            _ingest(src, tmp_path / "out", _sheet(tmp_path, text), secret)
        line = str(info.value)
        assert message in line and "\n" not in line, line
        assert not [v for v in _needles(files) if v in line], line
    assert not (tmp_path / "out" / "m.csv").exists()


def test_series_labels_must_agree_within_a_study(cohort, tmp_path):
    root, src, files = cohort
    files = files[files["path"].str.startswith("series/")]
    series = sorted(set(files["SeriesInstanceUID"]))
    study_of = dict(zip(files["SeriesInstanceUID"], files["StudyInstanceUID"], strict=True))
    assert len(series) == 4 and len(set(study_of.values())) == 2  # two series per study
    # the two series of the first study disagree
    first_study = study_of[series[0]]
    labels = {s: ("yes" if study_of[s] == first_study and s != series[0] else "no") for s in series}
    sheet = _sheet(
        tmp_path, "SeriesInstanceUID,label\n" + "".join(f"{s},{labels[s]}\n" for s in series)
    )
    mine = [i + 2 for i, s in enumerate(series) if study_of[s] == first_study]
    secret = tmp_path / "private" / "key"
    with pytest.raises(MedclError) as info:
        _ingest(src / "series", tmp_path / "out", sheet, secret)
    assert f"rows {mine[0]} and {mine[1]} give different labels to series of one study" in str(
        info.value
    )
    assert "--series-labels-may-differ" in str(info.value)
    # a series-level task: allowed, and each series keeps its own label
    _ingest(src / "series", tmp_path / "out", sheet, secret, series_may_differ=True)
    by_series = files.assign(
        path=files["path"].str.removeprefix("series/"),
        label=[labels[s] for s in files["SeriesInstanceUID"]],
    )
    by_path = tmp_path / "path.csv"
    by_series[["path", "label"]].to_csv(by_path, index=False)
    _ingest(src / "series", tmp_path / "ref", by_path, secret)
    assert _labels_by_image(tmp_path / "out") == _labels_by_image(tmp_path / "ref")


def test_3d_series_rows_take_their_study_label(cohort, tmp_path):
    root, src, files = cohort
    files = files[files["path"].str.startswith("series/")]
    study = _study_labels(files)
    sheet = (
        files[["StudyInstanceUID"]]
        .drop_duplicates()
        .assign(label=lambda d: [study[s] for s in d["StudyInstanceUID"]])
    )
    by_key = tmp_path / "key.csv"
    sheet.to_csv(by_key, index=False)
    secret = tmp_path / "private" / "key"
    report = _ingest(src / "series", tmp_path / "out", by_key, secret, dims=3)
    assert report.rows == 4 and report.label_warnings == []
    df = read_manifest(tmp_path / "out" / "m.csv").df
    assert sorted(df["label"]) == ["no", "no", "yes", "yes"]
    assert df.groupby("study_key")["label"].nunique().eq(1).all()  # a study's two series agree
    _no_key_anywhere(_needles(files), tmp_path / "out", secret.parent)
