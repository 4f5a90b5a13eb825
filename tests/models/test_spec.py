"""EncoderSpec: one typed description of the encoder, saved with its weights and rebuilt from
``encoder.pt`` or ``metadata.json``, in today's format or the previous one."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medcl.config import load_config
from medcl.errors import MedclError
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.model import load_model, save_model
from medcl.models import EncoderSpec, build_encoder
from medcl.models.description import EncoderDescription, EncoderPretraining, ModelDescription
from medcl.models.export import load_encoder, save_encoder

SPEC = EncoderSpec("resnet10", 2, 32, in_channels=1, stem="small", width=0.125, pool="avgmax")


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_spec_round_trips_through_encoder_pt(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(SPEC)
    assert enc.spec == SPEC
    description = EncoderDescription(SPEC, preset="mr", pretraining=EncoderPretraining("simclr"))
    path = save_encoder(tmp_path / "encoder.pt", enc, description)
    raw = torch.load(path, weights_only=True)["meta"]
    assert raw["architecture"] == SPEC.to_dict() and raw["preset"] == "mr"
    assert raw["method"] == "simclr"
    again, back = load_encoder(tmp_path)
    assert back == description and EncoderSpec.from_meta(raw) == SPEC == again.spec
    assert _same_weights(enc, again)


def test_spec_round_trips_through_metadata_json(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(SPEC)
    meta = {"classes": ["a", "b"], "preset": "mr", "window": [0.0, 1.0], **SPEC.to_meta()}
    description = ModelDescription.from_dict(meta)
    save_model(tmp_path / "model", Classifier(enc, nn.Linear(enc.out_dim, 2), description))
    saved = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert EncoderSpec.from_dict(saved["architecture"]) == SPEC
    assert saved["spatial_dims"] == 2 and saved["image_size"] == 32
    clf = load_model(tmp_path / "model")
    assert clf.encoder.spec == SPEC and _same_weights(enc, clf.encoder)


def test_to_dict_from_dict_and_from_config():
    assert EncoderSpec.from_dict(SPEC.to_dict()) == SPEC
    assert json.loads(json.dumps(SPEC.to_dict())) == SPEC.to_dict()
    cfg = load_config(None, ["model.encoder=resnet34", "model.width=0.5", "data.image_size=48"])
    spec = EncoderSpec.from_config(cfg, 3)
    assert spec == EncoderSpec("resnet34", 3, 48, 1, "auto", 0.5, "avg")


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (  # encoder.pt, flat
            {"encoder": "resnet10", "width": 0.125, "pool": "avgmax", "stem": "small",
             "spatial_dims": 2, "image_size": 32, "preset": "mr", "method": "sscl"},
            SPEC,
        ),
        (  # encoder.pt, flat, before width and pool were recorded
            {"encoder": "resnet18", "stem": "auto", "spatial_dims": 3, "image_size": 16},
            EncoderSpec("resnet18", 3, 16, 1, "auto", 1.0, "avg"),
        ),
        (  # metadata.json: architecture without the geometry, which sat at the top level
            {"architecture": {"encoder": "resnet10", "width": 0.125, "stem": "auto"},
             "spatial_dims": 3, "image_size": 16, "classes": ["a"]},
            EncoderSpec("resnet10", 3, 16, 1, "auto", 0.125, "avg"),
        ),
    ],
)  # fmt: skip
def test_previous_format_reads(meta, expected):
    assert EncoderSpec.from_meta(meta) == expected


def test_a_previous_format_encoder_file_loads(tmp_path):
    """An ``encoder.pt`` written before the spec: rebuilt, its meta returned in today's shape."""
    torch.manual_seed(0)
    enc = build_encoder(SPEC)
    flat = {"encoder": "resnet10", "width": 0.125, "pool": "avgmax", "stem": "small",
            "spatial_dims": 2, "image_size": 32, "modality": "MR", "preset": "mr"}  # fmt: skip
    torch.save({"state_dict": enc.state_dict(), "meta": flat}, tmp_path / "encoder.pt")
    again, description = load_encoder(tmp_path / "encoder.pt")
    assert _same_weights(enc, again) and again.spec == SPEC
    assert description.spec == SPEC and description.extra == {}  # flat keys read, not kept
    assert description.preset == "mr" and description.modality == "MR"
    assert description.to_meta()["architecture"] == SPEC.to_dict()


@pytest.mark.parametrize("field", ["encoder", "spatial_dims", "image_size", "stem", "pool"])
def test_a_missing_field_is_one_line_naming_it(field):
    data = SPEC.to_dict()
    del data[field]
    with pytest.raises(ValueError) as err:
        EncoderSpec.from_dict(data)
    assert str(err.value) == f"encoder spec field {field!r}: missing"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("encoder", "vgg", "unknown encoder 'vgg'"),
        ("spatial_dims", 4, "must be 2 or 3"),
        ("image_size", 0, "must be a positive integer"),
        ("in_channels", 1.5, "must be a positive integer"),
        ("stem", "big", "one of auto, small, standard"),
        ("width", 5.0, "must be in (0, 4]"),
        ("pool", "max", "one of avg, avgmax"),
        ("depth", 3, "unknown; the fields are"),
    ],
)
def test_a_bad_field_is_one_line_naming_it(field, value, problem):
    with pytest.raises(ValueError) as err:
        EncoderSpec.from_dict({**SPEC.to_dict(), field: value})
    message = str(err.value)
    assert message.startswith(f"encoder spec field {field!r}: ") and problem in message
    assert "\n" not in message


def test_an_encoder_file_missing_a_field_is_refused_naming_it(tmp_path):
    enc = build_encoder(SPEC)
    meta = {"architecture": {k: v for k, v in SPEC.to_dict().items() if k != "stem"}}
    torch.save({"state_dict": enc.state_dict(), "meta": meta}, tmp_path / "encoder.pt")
    with pytest.raises(MedclError) as err:
        load_encoder(tmp_path)
    assert "'stem': missing" in str(err.value) and "\n" not in str(err.value)
