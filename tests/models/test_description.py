"""The typed model descriptions: ``metadata.json`` and ``encoder.pt``'s meta read into typed fields
and written back with the same keys, files of earlier versions included."""

from __future__ import annotations

import copy
import json

import pytest

from medcl.models.description import (
    EncoderDescription,
    EncoderPretraining,
    FinetuneSummary,
    ModelDescription,
    VolumeGeometry,
)
from medcl.models.encoders import EncoderSpec

SPEC = EncoderSpec("resnet10", 2, 16, in_channels=1, stem="auto", width=0.125, pool="avg")

# metadata.json as medcl wrote it before the typed description (a fine-tuned linear probe)
WRITTEN_BEFORE = {
    "classes": ["c0", "c1", "c2"],
    "architecture": SPEC.to_dict(),
    "spatial_dims": 2,
    "image_size": 16,
    "modality": "MR",
    "preset": "mr",
    "window": [40.0, 400.0],
    "intensity": "CT: Hounsfield units windowed to [0, 1] (level/width in 'window'); other "
    "modalities: 0.5/99.5 percentiles scaled to [0, 1]",
    "pretraining": {"method": "simclr", "lambda_sup": 1.0, "lambda_ssl": 1.0},
    "head": "linear",
    "finetune": {
        "mode": "linear",
        "val_balanced_accuracy": 0.5555555555555555,
        "C": 0.01,
        "train_labelled_images": 12,
        "train_labelled_patients": 4,
        "class_counts": {"c0": 6, "c1": 3, "c2": 3},
    },
    "training_distribution": {"modality": ["MR"], "spatial_dims": 2, "embedding": None},
    "name": "linear on split.csv",
    "test_metrics": {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_auroc": None},
    "versions": {"medcl": "0.1.0", "torch": "2.13.0+cpu"},
}


def test_a_metadata_json_written_before_reads_into_typed_fields():
    d = ModelDescription.from_dict(json.loads(json.dumps(WRITTEN_BEFORE)))
    assert d.spec == SPEC and (d.spatial_dims, d.image_size) == (2, 16)
    assert d.classes == ["c0", "c1", "c2"] and d.window == (40.0, 400.0)
    assert d.pretraining == EncoderPretraining("simclr", 1.0, 1.0)
    assert d.finetune == FinetuneSummary(
        mode="linear",
        val_balanced_accuracy=0.5555555555555555,
        details={"C": 0.01},
        train_labelled_images=12,
        train_labelled_patients=4,
        class_counts={"c0": 6, "c1": 3, "c2": 3},
    )
    assert d.training_distribution == WRITTEN_BEFORE["training_distribution"]
    assert d.name == "linear on split.csv" and d.head == "linear" and d.volume is None
    assert d.extra == {}


def test_written_back_with_the_same_keys_in_the_same_order():
    d = ModelDescription.from_dict(WRITTEN_BEFORE)
    out = d.to_dict()
    assert json.dumps(out) == json.dumps(WRITTEN_BEFORE)  # text: key order included


def test_an_older_file_missing_entries_loads_with_defaults():
    old = {
        "classes": ["a", "b"],
        # the previous layout: geometry at the top level, no pool
        "architecture": {"encoder": "resnet10", "width": 0.125, "stem": "auto"},
        "spatial_dims": 3,
        "image_size": 16,
        "preset": "ct",
        "window": [40, 400],
    }
    d = ModelDescription.from_dict(old)
    assert d.spec == EncoderSpec("resnet10", 3, 16, 1, "auto", 0.125, "avg")
    assert d.window == (40.0, 400.0) and d.modality == "" and d.intensity == ""
    assert (d.pretraining, d.finetune, d.head, d.name, d.versions) == (None,) * 5
    assert d.training_distribution is None and d.volume is None


def test_keys_this_version_does_not_know_are_kept():
    newer = {**WRITTEN_BEFORE, "calibration": {"temperature": 1.3}, "owner": "lab"}
    newer["finetune"] = {**newer["finetune"], "swa": True}
    d = ModelDescription.from_dict(newer)
    assert d.extra == {"calibration": {"temperature": 1.3}, "owner": "lab"}
    assert d.finetune is not None and d.finetune.details == {"C": 0.01, "swa": True}
    assert d.to_dict() == newer


@pytest.mark.parametrize("key", ["classes", "preset", "window"])
def test_a_missing_required_entry_is_one_line_naming_it(key):
    bad = {k: v for k, v in WRITTEN_BEFORE.items() if k != key}
    with pytest.raises(ValueError) as err:
        ModelDescription.from_dict(bad)
    assert str(err.value) == f"model metadata field {key!r}: missing"


def test_a_bad_window_or_architecture_is_refused_naming_it():
    with pytest.raises(ValueError, match="'window': expected"):
        ModelDescription.from_dict({**WRITTEN_BEFORE, "window": 40})
    arch = {k: v for k, v in SPEC.to_dict().items() if k != "stem"}
    with pytest.raises(ValueError, match="'stem': missing"):
        ModelDescription.from_dict({**WRITTEN_BEFORE, "architecture": arch})


def test_a_description_is_changed_in_place_and_written_as_set():
    d = ModelDescription.from_dict(WRITTEN_BEFORE)
    before = copy.deepcopy(d)
    d.record_test({"accuracy": 0.9, "balanced_accuracy": 0.8, "n": 30, "ece": 0.05})
    assert d.test_metrics == {
        "accuracy": 0.9,
        "balanced_accuracy": 0.8,
        "macro_auroc": None,
        "macro_f1": None,
        "ece": 0.05,
        "intervals": None,
    }
    assert before.test_metrics != d.test_metrics  # the copy is independent
    d.volume = VolumeGeometry(8, 0.5, 2, 16)
    out = d.to_dict()
    assert out["volume"] == {
        "mode": "patches",
        "patch_size": 8,
        "overlap": 0.5,
        "patches_per_volume": 2,
        "in_plane_size": 16,
    }
    assert ModelDescription.from_dict(out) == d


def test_volume_entries():
    assert VolumeGeometry.from_dict({"mode": "resize"}) is None
    assert VolumeGeometry.from_dict(None) is None
    short = VolumeGeometry.from_dict({"mode": "patches", "patch_size": 8, "overlap": 0.5})
    assert short == VolumeGeometry(8, 0.5, None, None)
    # in_plane_size: the common square in-plane edge of the stored training volumes, else None
    assert VolumeGeometry.for_training(8, 0.25, 3, [(9, 16, 16), (20, 16, 16)]).in_plane_size == 16
    assert VolumeGeometry.for_training(8, 0.25, 3, [(9, 16, 16), (9, 12, 12)]).in_plane_size is None
    assert VolumeGeometry.for_training(8, 0.25, 3, [(9, 16, 12)]).in_plane_size is None


def test_encoder_description_keeps_the_encoder_pt_keys():
    # encoder.pt's meta as `medcl pretrain` wrote it before the typed description
    meta = {
        **SPEC.to_meta(),
        "modality": "MR",
        "preset": "mr",
        "window": [40.0, 400.0],
        "method": "simclr",
        "lambda_sup": 0.5,
        "lambda_ssl": 1.0,
        "classes": ["c0", "c1"],
    }
    d = EncoderDescription.from_meta(meta)
    assert d.spec == SPEC and d.pretraining == EncoderPretraining("simclr", 0.5, 1.0)
    assert d.window == (40.0, 400.0) and d.classes == ["c0", "c1"] and d.volume is None
    assert json.dumps(d.to_meta()) == json.dumps(meta)
    # an encoder file that says nothing but its architecture
    bare = EncoderDescription.from_meta({"architecture": SPEC.to_dict()})
    assert bare.preset is None and bare.pretraining == EncoderPretraining()
