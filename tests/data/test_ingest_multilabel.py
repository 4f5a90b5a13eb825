"""Multi-label labels at ingest (medcl.data.ingest.multilabel): a CSV with one column per finding
(by path or by a DICOM key), a ``|``-separated label column, and MedMNIST ``.npz`` files with N×K
labels; the multi-label phantom ingested with its own ``labels.csv``, split, and scanned for PHI.

Expected labels are computed here independently: from the CSV read with the ``csv`` module, from
the ``.npz`` arrays, or written out literally.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medcl.cli.main import main
from medcl.data.findings import decode_labels
from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest
from medcl.data.pseudonym import PathMap
from medcl.data.synth import FINDINGS, generate_cohort
from medcl.errors import MedclError
from tests.data.test_phi_paths import _hits
from tests.data.test_phi_paths import _needles as _header_needles


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """The multi-label phantom (MR, 2-D) and each file's path, keys and PHI, read with pydicom."""
    src = tmp_path_factory.mktemp("mlsrc") / "cohort"
    generate_cohort(src, patients=6, seed=2, size=24, task="multilabel", progress=False)
    records, needles = [], set()
    for p in sorted(src.rglob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        needles |= _header_needles(ds)
        records.append(
            {
                "path": p.relative_to(src).as_posix(),
                "AccessionNumber": str(ds.AccessionNumber),
                "PatientID": str(ds.PatientID),
            }
        )
    return src, pd.DataFrame(records), needles


def _csv_states(path: Path, findings=FINDINGS) -> dict[str, list[int]]:
    """``path`` → states per finding, read with the csv module (blank = −1)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return {
            r["path"]: [int(r[f]) if r[f].strip() else -1 for f in findings]
            for r in csv.DictReader(fh)
        }


def _by_path(manifest: Path, secret: Path, root: Path) -> dict[str, str]:
    """Manifest label per source path relative to ``root`` (through the private path map)."""
    real = PathMap.beside(secret).load()
    df = read_manifest(manifest).df
    return {
        Path(real[s]).relative_to(root).as_posix(): lab
        for s, lab in zip(df["source_id"], df["label"], strict=True)
    }


def test_the_phantom_ingests_to_its_labels_csv_splits_and_leaves_no_phi(phantom, tmp_path, capsys):
    src, files, needles = phantom
    out, secret = tmp_path / "out", tmp_path / "private" / "key"
    code = main(
        ["ingest", str(src), "--out", str(out / "m.csv"), "--labels", str(src / "labels.csv")]
        + ["--secret", str(secret)]
    )
    assert code == 0
    m = read_manifest(out / "m.csv")
    assert m.multilabel and m.extra["task"] == "multilabel" and m.classes == list(FINDINGS)
    expected = _csv_states(src / "labels.csv")
    real = PathMap.beside(secret).load()
    got = m.findings()
    assert len(m) == len(expected) == len(files)
    for i, sid in enumerate(m.df["source_id"]):
        rel = Path(real[sid]).relative_to(src).as_posix()
        assert got[i].tolist() == expected[rel], rel
    assert {tuple(v) for v in expected.values()} != {(0, 0, 0)}  # findings really vary
    # medcl split keeps the findings and the task, patients in one split each
    code = main(["split", str(out / "m.csv"), "--out", str(out / "s.csv"), "--val", "0.2"])
    assert code == 0
    s = read_manifest(out / "s.csv")
    assert s.multilabel and s.classes == list(FINDINGS)
    before = dict(zip(m.df["image_id"], m.df["label"], strict=True))
    assert dict(zip(s.df["image_id"], s.df["label"], strict=True)) == before
    assert s.df.groupby("patient_key")["split"].nunique().eq(1).all()
    assert set(s.df["split"]) == {"train", "val", "test"}
    # the PHI scans: no header value in any output's bytes or names, or on the console
    console = capsys.readouterr()
    assert _hits(out, needles) == {}
    assert not [n for n in needles if n in console.out + console.err]


def test_a_3d_series_takes_its_slices_findings(tmp_path):
    src = tmp_path / "ct3"
    generate_cohort(src, patients=2, seed=5, size=16, dims=3, modality="ct", task="multilabel")
    secret = tmp_path / "private" / "key"
    ingest(src, tmp_path / "m.csv", labels=src / "labels.csv", dims=3, secret=secret)
    expected = _csv_states(src / "labels.csv")
    for rel, label in _by_path(tmp_path / "m.csv", secret, src).items():  # series folders
        slices = {tuple(v) for k, v in expected.items() if k.startswith(rel + "/")}
        assert len(slices) == 1
        assert decode_labels([label], FINDINGS)[0].tolist() == list(slices.pop())


@pytest.mark.parametrize("key", ["AccessionNumber", "PatientID"])
def test_study_and_patient_keyed_finding_columns_equal_the_path_labels(phantom, tmp_path, key):
    src, files, needles = phantom
    labels = pd.read_csv(src / "labels.csv", dtype=str)
    keyed = files.merge(labels, on="path")
    sheet = keyed[[key, *FINDINGS]].drop_duplicates()
    assert len(sheet) == keyed[key].nunique()  # one row per study (patient)
    assert key == "AccessionNumber" or len(sheet) < len(keyed)
    extra = pd.DataFrame([{key: "A99999999", "lesion": "1", "nodule": "0", "vessel": "0"}])
    by_key = tmp_path / "key.csv"
    pd.concat([sheet, extra]).to_csv(by_key, index=False)
    secret = tmp_path / "private" / "key"
    ref = ingest(src, tmp_path / "a" / "m.csv", labels=src / "labels.csv", secret=secret)
    rep = ingest(src, tmp_path / "b" / "m.csv", labels=by_key, secret=secret)
    assert ref.label_warnings == []
    assert rep.label_warnings == [
        f"labels CSV: 1 row(s) match no ingested image by {key} (rows {len(sheet) + 2}); "
        "their labels are not used"
    ]
    a, b = (read_manifest(tmp_path / d / "m.csv").df for d in "ab")
    assert dict(zip(b["image_id"], b["label"], strict=True)) == dict(
        zip(a["image_id"], a["label"], strict=True)
    )
    keys = set(files[key]) | {"A99999999"}
    assert _hits(tmp_path / "b", keys | needles) == {}
    # one key with two different sets of findings is refused by row number, no value quoted
    first = sheet.iloc[:1]
    flipped = first.assign(**{f: "1" if first.iloc[0][f] == "0" else "0" for f in FINDINGS})
    pd.concat([first, flipped]).to_csv(tmp_path / "clash.csv", index=False)
    with pytest.raises(MedclError) as info:
        ingest(src, tmp_path / "c" / "m.csv", labels=tmp_path / "clash.csv", secret=secret)
    assert f"rows 2 and 3 give one {key} different labels" in str(info.value)
    assert not [v for v in keys if v in str(info.value)]


def _source(phantom, n: int) -> tuple[Path, list[str]]:
    src, files, _ = phantom
    return src, list(files["path"][:n])


def _manifest_labels(tmp_path, src, sheet_text, secret, **kw) -> tuple[dict[str, str], list[str]]:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(sheet_text)
    out = tmp_path / f"m{len(list(tmp_path.glob('m*.csv')))}.csv"
    ingest(src, out, labels=sheet, secret=secret, progress=False, **kw)
    return _by_path(out, secret, src), read_manifest(out).classes


CELLS = [("1", "0", "-1"), ("", "0", "0"), ("0", "0", "0"), ("", "", ""), ("1.0", "1", "0.0")]
EXPECTED = {  # literal: the label text of each row above, per --uncertain
    "unknown": ["a|?c", "?a", "-", "", "a|b"],
    "zero": ["a", "?a", "-", "", "a|b"],
    "one": ["a|c", "?a", "-", "", "a|b"],
}


@pytest.mark.parametrize("uncertain", ["unknown", "zero", "one"])
def test_finding_columns_blank_and_uncertain(phantom, tmp_path, uncertain, capsys):
    src, paths = _source(phantom, len(CELLS))
    text = "path,a,b,c\n" + "".join(
        f"{p},{','.join(c)}\n" for p, c in zip(paths, CELLS, strict=True)
    )
    secret = tmp_path / "private" / "key"
    got, classes = _manifest_labels(tmp_path, src, text, secret, uncertain=uncertain)
    assert classes == ["a", "b", "c"]
    assert [got[p] for p in paths] == EXPECTED[uncertain]
    assert all(got[p] == "" for p in got if p not in paths)  # not in the sheet: unlabelled
    # the same through the command line flags
    (tmp_path / "cli.csv").write_text(text)
    argv = ["ingest", str(src), "--out", str(tmp_path / "cli" / "m.csv")]
    argv += ["--labels", str(tmp_path / "cli.csv"), "--secret", str(secret)]
    assert main([*argv, "--uncertain", uncertain, "--findings", "c,a"]) == 0
    by = _by_path(tmp_path / "cli" / "m.csv", secret, src)
    assert read_manifest(tmp_path / "cli" / "m.csv").classes == ["c", "a"]  # b ignored
    reordered = {"a|?c": "?c|a", "a|c": "c|a", "a|b": "a"}
    assert [by[p] for p in paths] == [reordered.get(t, t) for t in EXPECTED[uncertain]]


def test_pipe_separated_label_column(phantom, tmp_path):
    src, paths = _source(phantom, 5)
    labels = ["b|a", "No Finding", "", "c", "?a|b"]
    text = "path,label\n" + "".join(f"{p},{t}\n" for p, t in zip(paths, labels, strict=True))
    secret = tmp_path / "private" / "key"
    got, classes = _manifest_labels(tmp_path, src, text, secret, task="multilabel")
    assert classes == ["a", "b", "c"]  # the names used, sorted
    assert [got[p] for p in paths] == ["a|b", "-", "", "c", "?a|b"]
    got, classes = _manifest_labels(tmp_path, src, text, secret, findings=["c", "b", "a", "d"])
    assert classes == ["c", "b", "a", "d"]
    assert [got[p] for p in paths] == ["b|a", "-", "", "c", "b|?a"]
    # without --task a label column is one class per image, as before
    got, classes = _manifest_labels(tmp_path, src, text, secret)
    assert "b|a" in classes and "No Finding" in classes


BAD = {
    "path,a,b\n{p},1,2\n": "column 'b', row 2: a finding column holds 1, 0, -1 or blank",
    "path,a,b\n{p},1,0\n{q},yes,0\n": "column 'a', row 3",
    "path,diagnosis\n{p},1\n": "needs a label column, or one 1/0/blank column per finding",
    "path,label\n{p},a|No Finding\n": "row 2: 'No Finding' beside a finding",
    "path,label\n{p},a|a\n": "row 2: finding 'a' named twice",
    "path,a,b\n{p},1,0\n": ("--findings", "no column for finding 'y' of --findings"),
    "path,label\n{p},a|z\n": ("--findings", "row 2: finding 'z' is not among --findings"),
    "path,a,b\n{p},1,0\n{q},0,0\n": ("--classes", "--classes: a multi-label task declares"),
}


def test_bad_multilabel_sheets_are_refused_in_one_line(phantom, tmp_path):
    src, (p, q) = _source(phantom, 2)
    secret = tmp_path / "private" / "key"
    for template, expected in BAD.items():
        flag, message = expected if isinstance(expected, tuple) else (None, expected)
        kw = {"task": "multilabel"} if "label\n" in template else {}
        if flag == "--findings":
            kw["findings"] = ["a", "y"]
        if flag == "--classes":
            kw["classes"] = ["a"]
        sheet = tmp_path / "bad.csv"
        sheet.write_text(template.format(p=p, q=q))
        with pytest.raises(MedclError) as info:
            ingest(src, tmp_path / "out" / "m.csv", labels=sheet, secret=secret, **kw)
        line = str(info.value)
        assert message in line and "\n" not in line, (template, line)
        if flag != "--classes":
            assert str(sheet) in line, line
    assert not (tmp_path / "out" / "m.csv").exists()


def _npz(path: Path, k: int, names: list[str] | None = None, unknown: bool = False) -> Path:
    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        y = rng.integers(0, 2, (n, k)).astype(np.uint8 if not unknown else np.int8)
        if unknown:
            y[0, 0] = -1
        arrays[f"{split}_labels"] = y
    if names is not None:
        arrays["label_names"] = np.array(names)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_npz_with_nxk_labels_is_multilabel(tmp_path, workers):
    f = _npz(tmp_path / "chest.npz", 4, ["atelectasis", "cardiomegaly", "effusion", "nodule"])
    secret = tmp_path / "private" / "key"
    ingest(f, tmp_path / "m.csv", secret=secret, workers=workers, progress=False)
    m = read_manifest(tmp_path / "m.csv")
    data = np.load(f)
    expected = np.concatenate([data[f"{s}_labels"] for s in ("train", "val", "test")])
    assert m.multilabel and m.classes == ["atelectasis", "cardiomegaly", "effusion", "nodule"]
    assert (m.findings() == expected).all()
    assert list(m.df["split"]) == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    # incremental: a rerun reads the rows back from the state and renames with --findings
    again = ingest(
        f, tmp_path / "m.csv", secret=secret, findings=["a", "b", "c", "d"], progress=False
    )
    assert again.skipped_unchanged == 1
    m2 = read_manifest(tmp_path / "m.csv")
    assert m2.classes == ["a", "b", "c", "d"] and (m2.findings() == expected).all()


def test_npz_without_names_and_with_unknowns(tmp_path):
    f = _npz(tmp_path / "x.npz", 3, unknown=True)
    secret = tmp_path / "private" / "key"
    ingest(f, tmp_path / "m.csv", secret=secret, progress=False)
    m = read_manifest(tmp_path / "m.csv")
    data = np.load(f)
    expected = np.concatenate([data[f"{s}_labels"] for s in ("train", "val", "test")])
    assert m.classes == ["finding_0", "finding_1", "finding_2"]
    assert (m.findings() == expected).all() and (expected == -1).sum() == 3
    with pytest.raises(MedclError, match="3 finding columns, but the findings are 2"):
        ingest(f, tmp_path / "n.csv", secret=secret, findings=["a", "b"], progress=False)
