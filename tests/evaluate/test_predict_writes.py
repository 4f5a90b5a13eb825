"""`medcl predict` writes its outputs atomically: a run interrupted while writing the rejects CSV
leaves the previous file whole, never a truncated one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from medcl.evaluate.predict import predict_source
from tests.evaluate.test_model_io import _parts, _write_folder_as_before


def test_interrupted_rejects_write_keeps_the_previous_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_SECRET_FILE", str(tmp_path / "private" / "secret.key"))
    _write_folder_as_before(tmp_path / "model", *_parts(False))
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "mr.dcm")
    (src / "junk.dcm").write_bytes(b"not a dicom file")
    out = tmp_path / "preds.csv"
    predict_source(tmp_path / "model", src, out)
    rejects = tmp_path / "preds.rejects.csv"
    before = rejects.read_bytes()
    assert len(pd.read_csv(rejects)) == 1

    real_to_csv = pd.DataFrame.to_csv

    def killed_half_way(self, path=None, *args, **kwargs):  # csv_text calls it with no path
        if path is not None and Path(path).parent == tmp_path and "rejects" in Path(path).name:
            text = real_to_csv(self, None, *args, **kwargs)
            with open(path, "w") as fh:
                fh.write(text[: len(text) // 2])
            raise KeyboardInterrupt
        return real_to_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        predict_source(tmp_path / "model", src, out)
    assert rejects.read_bytes() == before
    assert not list(tmp_path.glob(".preds.rejects.csv.*.tmp"))
