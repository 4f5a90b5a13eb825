"""Manifest schema, round trip and the validator's refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.data.manifest import Manifest, new_frame, read_manifest, validate, write_manifest
from medcl.errors import ManifestError


def _rows(tmp_path: Path, n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        f = tmp_path / "img" / f"{i}.dcm"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
        rows.append(
            {
                "image_id": f"im{i}",
                "path": str(f),
                "patient_key": f"p{i // 2}",
                "study_key": f"s{i}",
                "modality": "MR",
                "label": ["a", "b", ""][i % 3],
                "split": "",
                "sha256": f"{i:064x}",
                "dims": 2,
                "rows": 8,
                "cols": 8,
                "slices": 1,
            }
        )
    return rows


def _manifest(tmp_path: Path, changes: dict | None = None) -> Manifest:
    rows = _rows(tmp_path)
    for (i, col), val in (changes or {}).items():
        rows[i][col] = val
    return Manifest(new_frame(rows), ["a", "b"])


def test_round_trip_relative_paths_and_classes(tmp_path):
    m = _manifest(tmp_path)
    out = write_manifest(m, tmp_path / "m.csv")
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert raw["path"].iloc[0] == "img/0.dcm"  # stored relative to the CSV
    back = read_manifest(out, validate_files=True)
    assert back.classes == ["a", "b"]
    assert back.df["path"].iloc[0] == str(tmp_path / "img" / "0.dcm")
    assert list(back.df["label"]) == ["a", "b", "", "a", "b", ""]
    assert list(back.class_index()) == [0, 1, -1, 0, 1, -1]
    assert int(back.df["rows"].iloc[0]) == 8


def test_moved_folder_still_resolves(tmp_path):
    write_manifest(_manifest(tmp_path), tmp_path / "m.csv")
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)
    back = read_manifest(moved / "m.csv", validate_files=True)
    assert Path(back.df["path"].iloc[0]).is_file()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({(1, "image_id"): "im0"}, "duplicate image_id 'im0' in rows 1, 2"),
        ({(2, "split"): "training"}, "unknown split value 'training' in row 3"),
        ({(0, "split"): "train", (1, "split"): "test"}, "patient(s) 'p0' in more than one split"),
        ({(4, "label"): "zebra"}, "label(s) 'zebra' not in declared classes"),
        ({(3, "patient_key"): ""}, "empty patient_key in row 4"),
    ],
)
def test_validator_refusals_name_rows(tmp_path, changes, message):
    m = _manifest(tmp_path, changes)
    with pytest.raises(ManifestError) as err:
        validate(m, check_files=False)
    assert message in str(err.value)


def test_missing_file_is_named(tmp_path):
    m = _manifest(tmp_path)
    Path(m.df["path"].iloc[5]).unlink()
    with pytest.raises(ManifestError, match=r"missing file\(s\) .*5\.dcm.*row 6"):
        validate(m, check_files=True)


def test_write_refuses_invalid(tmp_path):
    m = _manifest(tmp_path, {(1, "image_id"): "im0"})
    with pytest.raises(ManifestError):
        write_manifest(m, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_read_refuses_missing_column(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("image_id,path\nx,y\n")
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(f)


def test_read_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_paths_written_and_read_like_pathlib_does(tmp_path):
    # the column-wise fast path must agree with Path arithmetic on every kind of value
    inside = tmp_path / "data"
    inside.mkdir()
    outside = tmp_path.parent / "elsewhere.npy"
    values = [
        str(inside / "c" / "ab" / "k.npy"),
        str(inside / "c" / "ab" / "shard.npy#17"),
        str(inside / "c" / "." / "x.npy"),
        str(inside / "c" / ".." / "y.npy"),
        str(outside),
        "",
    ]
    rows = _rows(tmp_path, len(values))
    for r, v in zip(rows, values, strict=True):
        r["cache_path"] = v
    out = write_manifest(Manifest(new_frame(rows), ["a", "b"]), inside / "m.csv")
    raw = list(pd.read_csv(out, dtype=str, keep_default_na=False)["cache_path"])
    assert raw[:2] == ["c/ab/k.npy", "c/ab/shard.npy#17"]
    assert raw[4] == str(outside) and raw[5] == ""
    back = list(read_manifest(out).df["cache_path"])
    for got, want in zip(back, values, strict=True):
        assert (Path(got).resolve() if got else "") == (Path(want).resolve() if want else "")
    assert back[1] == str(inside / "c" / "ab" / "shard.npy#17")


def test_csv_text_is_what_pandas_writes(tmp_path):
    """The manifest's column-by-column CSV writer gives pandas' bytes, quoting included."""
    from medcl.data.manifest import csv_text

    df = pd.DataFrame(
        {
            "text": ["a", "", 'say "hi"', "x,y", "two\nlines", "é ü", " lead", "tab\t"],
            "n": pd.array([1, None, 3, 4, 5, 6, 7, -8], dtype="Int64"),
            "none": [np.nan] * 8,
            "f": [0.1, np.nan, 1e-05, 2.0, 1e16, -3.5, 1 / 3, 7.0],
            "i": np.arange(8),
            "b": [True, False] * 4,
            "ok": ["0", "1", "2", "3", "4", "5", "6", "7"],
        }
    )
    for frame in (df, df.iloc[:0], df[["ok", "n", "none"]], df[["i", "b", "f"]]):
        assert csv_text(frame) == frame.to_csv(index=False).encode(), list(frame.columns)
    assert csv_text(df[["ok"]]) is None  # one column: left to pandas
    assert csv_text(df.assign(o=[object()] * 8)) is None
    assert csv_text(df.assign(t=pd.Series(["a", None] * 4, dtype="str"))) is None
    assert csv_text(df.assign(t=["cr\r"] * 8)) is None  # quoted or not by Python version
