"""Model I/O: a ``model/`` folder and a bundle rebuilt by one builder, including files written
before the typed description (their metadata as medcl wrote it then)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from medcl.errors import MedclError
from medcl.evaluate.classifier import Classifier, KNNHead
from medcl.evaluate.model import load_model, read_description, save_model
from medcl.models.description import ModelDescription
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.transforms import to_model_intensity
from tests.models.test_description import SPEC, WRITTEN_BEFORE


def _parts(knn: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    enc = build_encoder(SPEC).eval()
    if knn:
        g = torch.Generator().manual_seed(1)
        bank = torch.randn(9, enc.out_dim, generator=g)
        return enc, KNNHead(bank, torch.tensor([0, 1, 2] * 3), 3, 3)
    head = nn.Linear(enc.out_dim, 3)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return enc, head


def _expected(enc: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Probabilities computed step by step: the MR preset clamps to [0, 1]."""
    with torch.no_grad():
        return torch.softmax(head(enc(to_model_intensity(x, "mr"))).float(), dim=1)


def _write_folder_as_before(d, enc: nn.Module, head: nn.Module) -> None:
    """weights.pt and metadata.json in the layout medcl wrote before (the weights' layout has not
    changed; the metadata is the literal older file)."""
    d.mkdir(parents=True)
    if isinstance(head, KNNHead):
        blob = {"type": "knn", "bank": head.bank, "labels": head.labels, "k": head.k}
    else:
        blob = {"type": "linear", "weight": head.weight.detach(), "bias": head.bias.detach()}
    torch.save({"encoder": enc.state_dict(), "head": blob}, d / "weights.pt")
    (d / "metadata.json").write_text(json.dumps(WRITTEN_BEFORE))


def _write_bundle_as_before(d, enc: nn.Module, head: nn.Module) -> None:
    (d / "configs").mkdir(parents=True)
    (d / "models").mkdir()
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    torch.save(state, d / "models" / "model.pt")
    if isinstance(head, KNNHead):
        entry = {"type": "knn", "k": head.k, "bank_rows": int(head.bank.shape[0])}
    else:
        entry = {"type": "linear", "in_features": head.in_features}
    meta = {**WRITTEN_BEFORE, "bundle_head": entry}
    (d / "configs" / "medcl_metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("knn", [False, True], ids=["linear", "knn"])
@pytest.mark.parametrize("layout", ["folder", "run folder", "bundle"])
def test_files_written_before_load(tmp_path, knn, layout):
    enc, head = _parts(knn)
    if layout == "bundle":
        _write_bundle_as_before(tmp_path / "b", enc, head)
        path = tmp_path / "b"
    else:
        _write_folder_as_before(tmp_path / "run" / "model", enc, head)
        path = tmp_path / "run" / ("model" if layout == "folder" else "")
    clf = load_model(path)
    assert clf.description == ModelDescription.from_dict(WRITTEN_BEFORE)
    assert "bundle_head" not in clf.description.extra  # the loader's entry, not the model's
    assert isinstance(clf.head, KNNHead) is knn and clf.ood_bank is None
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    torch.testing.assert_close(clf.predict_proba(x), _expected(enc, head, x))


@pytest.mark.parametrize("knn", [False, True], ids=["linear", "knn"])
def test_save_then_load_keeps_weights_description_and_bank(tmp_path, knn):
    enc, head = _parts(knn)
    bank = np.random.default_rng(0).standard_normal((4, enc.out_dim)).astype(np.float32)
    clf = Classifier(enc, head, ModelDescription.from_dict(WRITTEN_BEFORE), ood_bank=bank)
    save_model(tmp_path / "model", clf)
    back = load_model(tmp_path / "model")
    assert back.description == clf.description == read_description(tmp_path / "model")
    assert np.array_equal(back.ood_bank, bank)
    same = clf.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in back.state_dict().items())


def test_damaged_metadata_is_one_line_naming_the_folder(tmp_path):
    enc, head = _parts(False)
    _write_folder_as_before(tmp_path / "model", enc, head)
    meta = {k: v for k, v in WRITTEN_BEFORE.items() if k != "classes"}
    (tmp_path / "model" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(MedclError) as err:
        load_model(tmp_path / "model")
    assert "damaged or incompatible medcl model" in str(err.value)
    assert "'classes': missing" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MedclError, match="not a medcl model's metadata"):
        read_description(tmp_path / "model")


def test_the_weights_must_fit_the_description(tmp_path):
    enc, head = _parts(False)
    _write_folder_as_before(tmp_path / "model", enc, head)
    other = {**WRITTEN_BEFORE, "architecture": {**SPEC.to_dict(), "width": 0.25}}
    (tmp_path / "model" / "metadata.json").write_text(json.dumps(other))
    with pytest.raises(MedclError, match="damaged or incompatible medcl model"):
        load_model(tmp_path / "model")
    assert EncoderSpec.from_meta(other) != SPEC
