"""`medcl export --format bundle`: a MONAI bundle whose metadata follows the MONAI Bundle
Specification, whose TorchScript/ONNX networks give the eager model's logits, whose safetensors
hold the saved weights, and which `python -m monai.bundle run` and `medcl predict` both run on a
folder of DICOM files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydicom.data import get_testdata_file

from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.errors import MedclError
from medcl.evaluate.bundle import export_bundle
from medcl.evaluate.card import model_card
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.finetune import finetune
from medcl.evaluate.model import is_bundle, load_bundle, load_model, save_model
from medcl.evaluate.predict import predict_source
from medcl.models.description import ModelDescription
from medcl.models.encoders import EncoderSpec, build_encoder
from tests.conftest import TINY_OVERRIDES, make_manifest

REPO = Path(__file__).resolve().parents[2]

# The MONAI Bundle Specification's metadata.json, written out as a JSON schema: the mandatory
# keys, and the keys every tensor format specifier of network_data_format must have.
TENSOR_SPEC = {
    "type": "object",
    "required": [
        "type",
        "format",
        "modality",
        "num_channels",
        "spatial_shape",
        "dtype",
        "value_range",
        "is_patch_data",
        "channel_def",
    ],
    "properties": {
        "type": {"enum": ["image", "series", "tuples", "probabilities"]},
        "format": {"type": "string"},
        "modality": {"type": "string"},
        "num_channels": {"type": "integer", "minimum": 1},
        "spatial_shape": {"type": "array", "items": {"type": ["integer", "string"]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
STRING_KEYS = ["version", "monai_version", "pytorch_version", "numpy_version", "task"]
STRING_KEYS += ["description", "authors", "copyright"]
SPEC_SCHEMA = {
    "type": "object",
    "required": [*STRING_KEYS, "optional_packages_version", "network_data_format"],
    "properties": {
        **{k: {"type": "string", "minLength": 1} for k in STRING_KEYS},
        "changelog": {"type": "object", "additionalProperties": {"type": "string"}},
        "optional_packages_version": {"type": "object"},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": TENSOR_SPEC,
                },
                "outputs": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": TENSOR_SPEC,
                },
            },
        },
    },
}


def _fit(manifest: Path, mode: str) -> Classifier:
    cfg = load_config(None, [*TINY_OVERRIDES, f"finetune.mode={mode}", "finetune.knn_k=3"])
    return finetune(cfg, read_manifest(manifest)).model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A linear and a kNN model folder on the tiny MR manifest, and their bundles."""
    root = tmp_path_factory.mktemp("bundle")
    manifest = make_manifest(root / "data")
    out = {}
    for mode in ("linear", "knn"):
        clf = _fit(manifest, mode)
        clf.description.name = f"{mode} on split.csv"
        save_model(root / mode / "model", clf, card=model_card(clf.description))
        # MODEL may be the run folder that holds model/
        r = export_bundle(root / mode, root / f"{mode}_bundle")
        out[mode] = (root / mode / "model", r)
    return root, out


def _dicoms(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copyfile(get_testdata_file(name), folder / name)
    return folder


def test_layout_and_metadata(exported):
    import jsonschema

    root, out = exported
    model_dir, r = out["linear"]
    d = r.out_dir
    for f in (
        "configs/metadata.json",
        "configs/inference.json",
        "models/model.pt",
        "models/model.ts",
        "models/model.safetensors",
        "docs/README.md",
    ):
        assert (d / f).is_file(), f
    meta = json.loads((d / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, SPEC_SCHEMA)
    # MONAI's own verifier, on every run: it validates against the schema file it is given (it
    # downloads the one named in the metadata only when that file is missing, and nothing can be
    # downloaded here), so it gets the specification's schema above, or the published schema
    # where one is at hand (MONAI_BUNDLE_SCHEMA)
    from monai.bundle import verify_metadata

    schema_file = os.environ.get("MONAI_BUNDLE_SCHEMA") or str(root / "spec_schema.json")
    if not os.environ.get("MONAI_BUNDLE_SCHEMA"):
        Path(schema_file).write_text(json.dumps(SPEC_SCHEMA))
    verify_metadata(meta_file=str(d / "configs" / "metadata.json"), filepath=schema_file)
    broken = {k: v for k, v in meta.items() if k != "network_data_format"}
    (root / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(root / "broken.json"), filepath=schema_file)
    src = json.loads((model_dir / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["spatial_shape"] == [src["image_size"]] * src["spatial_dims"] == [16, 16]
    assert (image["format"], image["modality"], image["value_range"]) == ("magnitude", "MR", [0, 1])
    assert pred["channel_def"] == {str(i): c for i, c in enumerate(src["classes"])}
    assert pred["num_channels"] == 3 and image["is_patch_data"] is False
    assert "percentiles" in meta["intensity_convention"]
    import monai

    assert meta["monai_version"] == monai.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    # the model card travels as docs/README.md, with the commands to run the bundle
    readme = (d / "docs" / "README.md").read_text()
    assert readme.startswith((model_dir / "model_card.md").read_text())
    assert "python -m monai.bundle run --config_file" in readme
    # nothing from the data: no path, patient key, study key or image id of the manifest
    text = "".join(p.read_text() for p in (d / "configs").glob("*.json")) + readme
    df = read_manifest(root / "data" / "split.csv").df
    for token in [str(root), *df["patient_key"], *df["study_key"], *df["image_id"]]:
        assert token not in text, token


@pytest.mark.parametrize("mode", ["linear", "knn"])
def test_torchscript_safetensors_onnx(exported, mode):
    from safetensors.torch import load_file

    _, out = exported
    model_dir, r = out[mode]
    clf = load_model(model_dir)
    x = torch.rand(5, 1, 16, 16) * 1.2 - 0.1  # batch unlike the trace's; values beyond [0, 1]
    with torch.no_grad():
        eager = clf(clf.normalize(x))
        ts = torch.jit.load(str(r.out_dir / "models" / "model.ts"))(x)
    torch.testing.assert_close(ts, eager, atol=1e-5, rtol=0)
    # the state dict and the safetensors file hold the model folder's weights
    blob = torch.load(model_dir / "weights.pt", weights_only=True)
    state = torch.load(r.out_dir / "models" / "model.pt", weights_only=True)
    safe = load_file(str(r.out_dir / "models" / "model.safetensors"))
    assert set(safe) == set(state)
    for k, v in blob["encoder"].items():
        assert torch.equal(state[f"encoder.{k}"], v) and torch.equal(safe[f"encoder.{k}"], v)
    head_keys = ("bank", "labels") if mode == "knn" else ("weight", "bias")
    for k in head_keys:
        assert torch.equal(safe[f"head.{k}"], blob["head"][k])
    # load_model reads the bundle back as the same classifier
    back = load_model(r.out_dir)
    with torch.no_grad():
        torch.testing.assert_close(back(back.normalize(x)), eager, atol=0, rtol=0)
    assert np.array_equal(back.ood_bank, clf.ood_bank)
    # the ONNX network gives the same logits (onnx and onnxruntime are in the dev extra)
    import onnx
    import onnxruntime

    assert r.onnx
    graph = onnx.load(str(r.out_dir / "models" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["pred"]
    sess = onnxruntime.InferenceSession(str(r.out_dir / "models" / "model.onnx"))
    got = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, eager.numpy(), atol=1e-4, rtol=0)
    assert got.shape == (5, 3)


def test_ct_window_inside_the_network(tmp_path):
    """A CT model: the TorchScript network windows Hounsfield units as Classifier.normalize."""
    spec = EncoderSpec.from_meta(
        {
            "architecture": {"encoder": "resnet10", "width": 0.125, "stem": "small"},
            "spatial_dims": 2,
            "image_size": 16,
        }
    )
    torch.manual_seed(0)
    enc = build_encoder(spec)
    meta = {
        **spec.to_meta(),
        "classes": ["a", "b"],
        "modality": "CT",
        "preset": "ct",
        "window": [40.0, 400.0],
    }
    clf = Classifier(enc, torch.nn.Linear(enc.out_dim, 2), ModelDescription.from_dict(meta)).eval()
    save_model(tmp_path / "model", clf)
    r = export_bundle(tmp_path / "model", tmp_path / "bundle", onnx=False)
    x = torch.empty(3, 1, 16, 16).uniform_(-1000.0, 1500.0)
    with torch.no_grad():
        ts = torch.jit.load(str(r.out_dir / "models" / "model.ts"))(x)
        eager = clf(clf.normalize(x))
    torch.testing.assert_close(ts, eager, atol=1e-5, rtol=0)
    meta = json.loads((r.out_dir / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert (image["format"], image["modality"], image["value_range"]) == ("hounsfield", "CT", [])
    assert "level 40 and width 400 HU" in meta["intensity_convention"]
    assert not (r.out_dir / "models" / "model.onnx").exists()


@pytest.mark.parametrize("patches", [False, True], ids=["resize", "patches"])
def test_volume_models(tmp_path, patches):
    """3-D models: the network takes the whole resized volume, or (a patch model) one patch, marked
    is_patch_data; the bundle's classifier still averages a volume's grid patches."""
    spec = EncoderSpec.from_meta(
        {
            "architecture": {"encoder": "resnet10", "width": 0.125, "stem": "small"},
            "spatial_dims": 3,
            "image_size": 16,
        }
    )
    torch.manual_seed(1)
    enc = build_encoder(spec)
    meta = {**spec.to_meta(), "classes": ["a", "b"], "modality": "MR", "preset": "mr"}
    meta["window"] = [0.0, 1.0]
    if patches:
        meta["volume"] = {"mode": "patches", "patch_size": 8, "overlap": 0.5}
    clf = Classifier(enc, torch.nn.Linear(enc.out_dim, 2), ModelDescription.from_dict(meta)).eval()
    save_model(tmp_path / "model", clf)
    r = export_bundle(tmp_path / "model", tmp_path / "bundle", onnx=False)
    image = json.loads((r.out_dir / "configs" / "metadata.json").read_text())[
        "network_data_format"
    ]["inputs"]["image"]
    side = 8 if patches else 16
    assert image["spatial_shape"] == [side] * 3 and image["is_patch_data"] is patches
    x = torch.rand(2, 1, side, side, side)
    with torch.no_grad():
        ts = torch.jit.load(str(r.out_dir / "models" / "model.ts"))(x)
        torch.testing.assert_close(ts, clf(clf.normalize(x)), atol=1e-5, rtol=0)
    if patches:  # stored volumes of any size, larger than a patch
        vols = [torch.rand(1, 12, 14, 10), torch.rand(1, 9, 9, 16)]
        back = load_model(r.out_dir)
        torch.testing.assert_close(back.predict_proba(vols), clf.predict_proba(vols))


def _monai_cli(bundle: Path, dcm: Path, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "monai.bundle", "run"]
    argv += ["--config_file", str(bundle / "configs" / "inference.json")]
    argv += ["--bundle_root", str(bundle), "--dataset_dir", str(dcm), "--output_dir", str(out)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=out.parent, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _monai_in_process(bundle: Path, dcm: Path, out: Path) -> None:
    from monai.bundle import run

    run(
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        dataset_dir=str(dcm),
        output_dir=str(out),
    )


@pytest.mark.parametrize(
    "runner",
    [_monai_in_process, pytest.param(_monai_cli, marks=pytest.mark.slow, id="cli")],
)
def test_monai_bundle_run_and_medcl_predict(exported, tmp_path, runner):
    """MONAI's bundle runner (`python -m monai.bundle run ...`: the command line, slow, or the
    same `monai.bundle.run` in this process) on a folder of DICOM files writes the predictions that
    `medcl predict` gives with the original model folder; `medcl predict BUNDLE` gives them too."""
    _, out = exported
    model_dir, r = out["linear"]
    dcm = _dicoms(tmp_path / "dicom")
    runner(r.out_dir, dcm, tmp_path / "eval")
    monai_rows = pd.read_csv(tmp_path / "eval" / "predictions.csv", keep_default_na=False)
    assert len(monai_rows) == 2
    probs = [c for c in monai_rows.columns if c.startswith("prob_")]
    np.testing.assert_allclose(monai_rows[probs].sum(axis=1), 1.0, atol=1e-5)
    predict_source(model_dir, dcm, tmp_path / "folder.csv")
    predict_source(r.out_dir, dcm, tmp_path / "bundle.csv")
    ref = pd.read_csv(tmp_path / "folder.csv", keep_default_na=False)
    got = pd.read_csv(tmp_path / "bundle.csv", keep_default_na=False)
    for table in (monai_rows, got):  # rows in ingest order (image ids: throw-away pseudonyms)
        assert table["prediction"].tolist() == ref["prediction"].tolist()
        np.testing.assert_allclose(table[probs], ref[probs], atol=1e-6)
        assert table["reason"].tolist() == ref["reason"].tolist()  # OOD checks kept
    assert "modality CT" in " ".join(ref["reason"])  # the CT file is flagged for this MR model


def test_monai_verifies_network_shape(exported):
    """MONAI's own verify_net_in_out builds network_def from inference.json and runs it on an
    input of the declared shape: the output has the declared channels and dtype."""
    from monai.bundle import verify_net_in_out

    _, out = exported
    d = out["knn"][1].out_dir
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(d / "configs" / "metadata.json"),
        config_file=str(d / "configs" / "inference.json"),
        bundle_root=str(d),
        device="cpu",
    )


def test_refusals(tmp_path, exported):
    with pytest.raises(MedclError, match="not a medcl model folder"):
        export_bundle(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _, out = exported
    model_dir = out["linear"][0]
    for target in (model_dir, model_dir.parent):
        with pytest.raises(MedclError, match="would replace the model"):
            export_bundle(model_dir.parent, target)
    assert (model_dir / "weights.pt").is_file()
    bad = tmp_path / "bad"
    shutil.copytree(out["linear"][1].out_dir, bad)
    assert is_bundle(bad)
    torch.save({"encoder.nothing": torch.zeros(1)}, bad / "models" / "model.pt")
    with pytest.raises(MedclError, match="damaged or incompatible medcl bundle"):
        load_bundle(bad)
