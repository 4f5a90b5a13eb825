"""The annotation round trip: export sheet, import_labels and its refusals, the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medcl.app.labelling import SHEET_COLUMNS, import_labels, labelling_sheet
from medcl.cli.main import main
from medcl.data.manifest import read_manifest
from medcl.errors import MedclError

# tiny_manifest (tests/conftest.py): patients 0-8 train (0-3 labelled), 9-11 val; classes c0-c2;
# image ids p{patient}i{k}, class = patient % 3.


def _sheet(path: Path, rows: list[tuple[str, str]]) -> Path:
    sheet = labelling_sheet(
        [r[0] for r in rows], ["pk"] * len(rows), [0.5] * len(rows), ["c0"] * len(rows)
    )
    sheet["label"] = [r[1] for r in rows]
    sheet.to_csv(path, index=False)
    return path


def test_sheet_columns() -> None:
    s = labelling_sheet(["a", "b"], ["p1", "p2"], [0.9, 0.1], ["c0", "c1"])
    assert tuple(s.columns) == SHEET_COLUMNS
    assert s["label"].tolist() == ["", ""]
    assert s["image_id"].tolist() == ["a", "b"]


def test_import_fills_labels_and_writes_new_manifest(tiny_manifest: Path, tmp_path: Path) -> None:
    sheet = _sheet(
        tmp_path / "labels.csv", [("p4i0", "c1"), ("p5i1", " c2 "), ("p6i0", ""), ("p0i0", "c0")]
    )
    out = tmp_path / "next" / "split.csv"
    r = import_labels(tiny_manifest, sheet, out)
    assert (r.added, r.unchanged, r.blank) == (2, 1, 1)
    new = read_manifest(out).df.set_index("image_id")["label"]
    old = read_manifest(tiny_manifest).df.set_index("image_id")["label"]
    assert new["p4i0"] == "c1" and new["p5i1"] == "c2" and new["p6i0"] == ""
    changed = sorted(new.index[new != old])
    assert changed == ["p4i0", "p5i1"]
    assert read_manifest(out).classes == ["c0", "c1", "c2"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("p4i0", "tumour")], "unknown class(es) 'tumour'"),
        ([("nope", "c0"), ("p4i0", "c0")], "unknown image id(s) 'nope'"),
        ([("p9i0", "c0"), ("p10i1", "c1")], "val/test split"),
        ([("p4i0", "c0"), ("p4i0", "c1")], "two different labels: 'p4i0'"),
        ([("p0i0", "c2")], "already labelled differently: 'p0i0'"),
    ],
)
def test_import_refusals_are_one_line(
    tiny_manifest: Path, tmp_path: Path, rows: list[tuple[str, str]], message: str
) -> None:
    sheet = _sheet(tmp_path / "labels.csv", rows)
    out = tmp_path / "out.csv"
    with pytest.raises(MedclError) as exc:
        import_labels(tiny_manifest, sheet, out)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not out.exists()


def test_import_names_every_offender(tiny_manifest: Path, tmp_path: Path) -> None:
    sheet = _sheet(tmp_path / "labels.csv", [("ghost", "c0"), ("p9i0", "c0"), ("p4i0", "x")])
    with pytest.raises(MedclError) as exc:
        import_labels(tiny_manifest, sheet, tmp_path / "out.csv")
    msg = str(exc.value)
    assert "'ghost'" in msg and "'p9i0'" in msg and "'x'" in msg


def test_import_refuses_bad_files(tiny_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(MedclError, match="not found"):
        import_labels(tiny_manifest, tmp_path / "missing.csv", tmp_path / "o.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"image_id": ["p4i0"], "class": ["c0"]}).to_csv(bad, index=False)
    with pytest.raises(MedclError, match="missing column"):
        import_labels(tiny_manifest, bad, tmp_path / "o.csv")
    sheet = _sheet(tmp_path / "labels.csv", [("p4i0", "c0")])
    with pytest.raises(MedclError, match="overwrite the input"):
        import_labels(tiny_manifest, sheet, tiny_manifest)


def test_cli_import_labels(
    tiny_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = _sheet(tmp_path / "labels.csv", [("p7i2", "c1")])
    out = tmp_path / "new.csv"
    assert main(["import-labels", str(tiny_manifest), str(sheet), "--out", str(out)]) == 0
    assert "1 image(s) newly labelled" in capsys.readouterr().out
    assert read_manifest(out).df.set_index("image_id").loc["p7i2", "label"] == "c1"
    bad = _sheet(tmp_path / "bad.csv", [("p10i0", "c1")])
    assert main(["import-labels", str(tiny_manifest), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medcl import-labels: error:") and "'p10i0'" in err
    assert len(err.splitlines()) == 1
