"""`medcl export` on the command line, and `medcl predict` on the bundle it writes."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from medcl.cli.main import main
from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.evaluate.finetune import finetune
from medcl.evaluate.model import save_model
from tests.conftest import TINY_OVERRIDES


def test_export_then_predict(tiny_manifest, tmp_path, capsys):
    cfg = load_config(None, [*TINY_OVERRIDES, "finetune.mode=linear"])
    save_model(tmp_path / "run" / "model", finetune(cfg, read_manifest(tiny_manifest)).model)
    bundle = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "run"), "--format", "bundle", "--out", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert f"bundle: {bundle}" in out and "python -m monai.bundle run --config_file" in out
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.1.0"
    dcm = tmp_path / "dicom"
    dcm.mkdir()
    shutil.copyfile(get_testdata_file("MR_small.dcm"), dcm / "MR_small.dcm")
    assert main(["predict", str(bundle), str(dcm), "--out", str(tmp_path / "p.csv")]) == 0
    rows = pd.read_csv(tmp_path / "p.csv")
    assert len(rows) == 1 and rows["prediction"].iloc[0] in ("c0", "c1", "c2")


def test_export_refuses_a_folder_that_is_no_model(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medcl export: error: ") and "not a medcl model folder" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "b").exists()


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0 and "MONAI bundle" in capsys.readouterr().out
