"""The text the dashboard pages show (``medcl.app.formatting``), against hand-written strings."""

from __future__ import annotations

import math

import pandas as pd

from medcl.app import formatting
from medcl.models.description import ModelDescription


def test_number_and_interval_help() -> None:
    assert formatting.number(0.12345) == "0.123"
    assert formatting.number(2, digits=1) == "2.0"
    for missing in (None, math.nan, "x", pd.NA):
        assert formatting.number(missing) == "n/a"
    assert formatting.interval_help(0.1, 0.25) == "95 % interval [0.100, 0.250]"
    assert formatting.interval_help(None, None) == "95 % interval n/a"
    assert formatting.interval_help(math.nan, 0.3) == "95 % interval n/a"


def test_model_facts() -> None:
    meta = {
        "name": "sscl resnet",
        "architecture": {"encoder": "resnet18", "width": 0.5, "stem": "auto"},
        "pretraining": {"method": "simclr"},
        "head": "linear",
        "spatial_dims": 2,
        "image_size": 64,
        "modality": "MR",
        "preset": "mr",
        "window": [40.0, 400.0],
        "classes": ["a", "b"],
    }
    facts = formatting.model_facts(ModelDescription.from_dict(meta), ["a", "b"], 0.05)
    assert facts == {
        "model": "sscl resnet",
        "encoder": "resnet18 (width 0.5)",
        "pretraining": "simclr",
        "head": "linear",
        "input": "2-D, 64 px, MR (preset mr)",
        "classes": "a, b",
        "label fraction": "5 %",
    }
    # an older metadata.json: no name, head, pretraining or modality
    old = {k: v for k, v in meta.items() if k not in ("name", "head", "pretraining", "modality")}
    bare = formatting.model_facts(ModelDescription.from_dict(old), [], None)
    assert bare["model"] == bare["head"] == bare["pretraining"] == "?"
    assert bare["input"] == "2-D, 64 px, ? (preset mr)" and bare["label fraction"] == "?"


def test_case_texts() -> None:
    assert formatting.case_option("abc", "test", "a", "b") == "abc · test · a → b"
    assert formatting.case_option("abc", "", "", "b") == "abc · unassigned · unlabelled → b"
    assert formatting.selection_caption("0123456789abc", "", "b") == "0123456789 · unlabelled → b"
    assert formatting.verdict("a", "a") == " (correct)"
    assert formatting.verdict("a", "b") == " (wrong)"
    assert formatting.verdict("", "b") == ""


def test_image_size_and_case_facts() -> None:
    assert formatting.image_size(1, 64, 48) == "64×48"
    assert formatting.image_size(12.0, 32, 32) == "12×32×32"
    assert formatting.image_size(math.nan, 32, None) == "32"
    row = pd.Series(
        {
            "image_id": "i1",
            "patient_key": "p1",
            "split": "",
            "label": "",
            "modality": "CT",
            "slices": 8,
            "rows": 16,
            "cols": 16,
            "cache_path": "/secret/path.npy",
        }
    )
    assert formatting.case_facts(row) == {
        "image_id": "i1",
        "patient_key": "p1",
        "split": "unassigned",
        "label": "(unlabelled)",
        "modality": "CT",
        "size": "8×16×16",
    }


def test_import_labels_command() -> None:
    assert formatting.import_labels_command("run1", "data/split.csv") == (
        "medcl import-labels run1/data/split.csv labels_to_annotate.csv "
        "--out run1/data/split_next.csv"
    )
