"""Multi-label findings in the label column; the manifest, split and dataset over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcl.data.dataset import CachedImages, labelled_rows
from medcl.data.findings import (
    check_finding_names,
    decode_labels,
    encode_matrix,
    encode_states,
    parse_label,
)
from medcl.data.manifest import read_manifest, write_manifest
from medcl.data.split import apply_labels_per_class
from medcl.errors import ManifestError, MedclError
from tests.conftest import FINDINGS, make_multilabel_manifest

F = ["lesion", "nodule", "vessel"]


@pytest.mark.parametrize(
    ("states", "text"),
    [
        ([1, 0, 0], "lesion"),
        ([1, 0, 1], "lesion|vessel"),
        ([0, 0, 0], "-"),
        ([-1, -1, -1], ""),
        ([1, -1, 0], "lesion|?nodule"),
        ([0, -1, -1], "?nodule|?vessel"),
    ],
)
def test_label_text_round_trips(states: list[int], text: str) -> None:
    assert encode_states(states, F) == text
    assert parse_label(text, F).tolist() == states


def test_every_state_matrix_round_trips() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(-1, 2, size=(200, 3))
    texts = encode_matrix(y, F)
    # reference: one row at a time
    assert texts == [encode_states(row, F) for row in y]
    assert np.array_equal(decode_labels(texts, F), y)


@pytest.mark.parametrize("text", ["tumour", "lesion|lesion", "?lesion|lesion", "lesion||vessel"])
def test_a_bad_label_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_label(text, F)


@pytest.mark.parametrize("name", ["", "-", "?x", "a|b", " pad"])
def test_a_finding_name_that_cannot_be_written_is_refused(name: str) -> None:
    with pytest.raises(MedclError, match="finding name"):
        check_finding_names(["ok", name])


def test_a_multilabel_manifest_reads_back_its_findings(tmp_path: Path) -> None:
    p = make_multilabel_manifest(tmp_path, unknown_every=4)
    meta = json.loads(p.with_name("split.meta.json").read_text())
    assert meta["task"] == "multilabel" and meta["classes"] == list(FINDINGS)
    m = read_manifest(p)
    assert m.multilabel
    y = m.findings()
    assert y.shape == (len(m), 3)
    for i, row in m.df.iterrows():  # reference: the patient's bits, unknowns aside
        p_idx = int(row["patient_key"][2:])
        bits = [(p_idx % 8 >> b) & 1 for b in range(3)]
        if row["label"] == "":
            assert (y[i] == -1).all()
        else:
            known = y[i] >= 0
            assert known.sum() >= 2
            assert y[i][known].tolist() == [b for b, k in zip(bits, known, strict=True) if k]
    with pytest.raises(MedclError, match="multi-label"):
        m.class_index()


def test_a_multilabel_manifest_with_a_bad_label_is_refused_by_row(tmp_path: Path) -> None:
    m = read_manifest(make_multilabel_manifest(tmp_path))
    m.df.loc[4, "label"] = "bright|tumour"
    with pytest.raises(ManifestError, match=r"'bright\|tumour'.*row 5"):
        write_manifest(m, tmp_path / "bad.csv")


def test_single_label_findings_are_one_hot(tiny_manifest: Path) -> None:
    m = read_manifest(tiny_manifest)
    y = m.findings()
    idx = m.class_index().to_numpy()
    for i in range(len(m)):
        if idx[i] < 0:
            assert (y[i] == -1).all()
        else:
            assert y[i].tolist() == [int(k == idx[i]) for k in range(len(m.classes))]


def test_the_dataset_carries_finding_vectors(tmp_path: Path) -> None:
    m = read_manifest(make_multilabel_manifest(tmp_path))
    ds = CachedImages(m, image_size=16)
    assert ds.multilabel and tuple(ds.labels.shape) == (len(m), 3)
    x, label, group, i = ds[0]
    assert label.shape == (3,)
    assert ds.labelled.tolist() == (m.df["label"] != "").tolist()
    assert labelled_rows(ds.labels).sum() == (m.df["label"] != "").sum()


def test_labels_per_class_takes_k_positives_of_each_finding(tmp_path: Path) -> None:
    m = read_manifest(make_multilabel_manifest(tmp_path, labelled_patients=13, unknown_every=0))
    out = apply_labels_per_class(m, 2, seed=0)
    train = out.df["split"] == "train"
    kept = out.subset(train & (out.df["label"] != ""))
    y = kept.findings()
    for j in range(3):  # at least k images where the finding is present
        assert (y[:, j] == 1).sum() >= 2
    assert ((y == 0).all(axis=1)).sum() >= 2  # and k images with none present
    assert len(kept) <= 2 * 4  # at most k per finding and k healthy
