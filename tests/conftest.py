"""A tiny split manifest with cached arrays, independent of DICOM ingestion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcl.config.hardware import this_machine
from medcl.data.findings import encode_states
from medcl.data.manifest import Manifest, new_frame, write_manifest

# config overrides for a run of a few seconds on a CPU
TINY_OVERRIDES = [
    "model.encoder=resnet10",
    "model.width=0.125",
    "model.proj_dim=16",
    "model.proj_hidden=32",
    "data.image_size=16",
    "data.batch_size=8",
    "trainer.threads=1",
    "data.num_workers=0",
    "method.options.moco.queue_size=32",
    "finetune.epochs=2",
    "finetune.batch_size=8",
]


@pytest.fixture(autouse=True)
def fresh_machine_probe():
    """Each test probes the machine afresh, so that one may pretend to be another machine
    (monkeypatched ``torch.cuda`` or ``os.cpu_count``) although a process probes only once."""
    this_machine.cache_clear()
    yield
    this_machine.cache_clear()


def _row(p: int, k: int, f: Path, size: int, split: str, label: str) -> dict:
    """The manifest row of patient ``p``'s ``k``-th 2-D MR image, cached at ``f``."""
    return {
        "image_id": f"p{p}i{k}",
        "path": str(f),
        "patient_key": f"pk{p:02d}",
        "study_key": f"s{p}",
        "modality": "MR",
        "label": label,
        "split": split,
        "sha256": f"{p:032x}{k:032x}",
        "dims": 2,
        "rows": size,
        "cols": size,
        "slices": 1,
        "cache_path": str(f),
        "intensity": "unit",
    }


def _split_of(p: int, n_patients: int, test_patients: int) -> str:
    """Train for the first patients, then 3 validation patients, then ``test_patients``."""
    first_held_out = n_patients - 3 - test_patients
    return "train" if p < first_held_out else "val" if p < first_held_out + 3 else "test"


def make_manifest(
    root: Path,
    n_patients: int = 12,
    per_patient: int = 3,
    size: int = 24,
    labelled_patients: int = 4,
    seed: int = 0,
    test_patients: int = 0,
    held_out_unlabelled: int = 0,
    n_classes: int = 3,
) -> Path:
    """Class = number of bright squares (0, 1, 2; patient ``p`` has class ``p % n_classes``,
    ``n_classes = 2``: a binary task c0 / c1); the last 3 + ``test_patients`` patients are
    val (3) and test, the others train (the first ``labelled_patients`` of them labelled). The
    first ``held_out_unlabelled`` images of every val and test patient carry no label."""
    rng = np.random.default_rng(seed)
    rows = []
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for p in range(n_patients):
        cls = p % n_classes
        split = _split_of(p, n_patients, test_patients)
        for k in range(per_patient):
            img = rng.normal(0.3, 0.05, (1, size, size)).astype(np.float32)
            for _ in range(cls):
                y, x = rng.integers(2, size - 6, 2)
                img[0, y : y + 4, x : x + 4] += 0.5
            f = cache / f"p{p}_{k}.npy"
            np.save(f, np.clip(img, 0, 1))
            labelled = (split != "train" and k >= held_out_unlabelled) or (
                split == "train" and p < labelled_patients
            )
            rows.append(_row(p, k, f, size, split, f"c{cls}" if labelled else ""))
    classes = [f"c{k}" for k in range(n_classes)]
    return write_manifest(Manifest(new_frame(rows), classes), root / "split.csv")


FINDINGS = ("bright", "dark", "bar")
"""The findings of :func:`make_multilabel_manifest`."""


def make_multilabel_manifest(
    root: Path,
    n_patients: int = 16,
    per_patient: int = 3,
    size: int = 24,
    labelled_patients: int = 8,
    seed: int = 0,
    test_patients: int = 0,
    unknown_every: int = 5,
) -> Path:
    """A multi-label manifest (sidecar task ``multilabel``, findings :data:`FINDINGS`): patient
    ``p``'s findings are the bits of ``p % 8`` (bit 0 a bright 4×4 square, bit 1 a dark square, bit
    2 a bright 1×8 bar), every image of a patient shows them. Splits as :func:`make_manifest`
    (last 3 + ``test_patients`` patients val and test). In every ``unknown_every``-th labelled image
    (by row) one finding, ``row % 3``, is written unknown (``?name``)."""
    rng = np.random.default_rng(seed)
    rows = []
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    n_row = 0
    for p in range(n_patients):
        states = [(p % 8 >> b) & 1 for b in range(3)]
        split = _split_of(p, n_patients, test_patients)
        for k in range(per_patient):
            img = rng.normal(0.4, 0.05, (1, size, size)).astype(np.float32)
            y, x = rng.integers(2, size - 10, 2)
            if states[0]:
                img[0, y : y + 4, x : x + 4] += 0.5
            if states[1]:
                img[0, y + 5 : y + 9, x + 5 : x + 9] -= 0.35
            if states[2]:
                img[0, size - 3, 1:9] += 0.5
            f = cache / f"p{p}_{k}.npy"
            np.save(f, np.clip(img, 0, 1))
            labelled = split != "train" or p < labelled_patients
            row_states = list(states)
            if labelled and unknown_every and n_row % unknown_every == unknown_every - 1:
                row_states[n_row % 3] = -1
            n_row += 1
            label = encode_states(row_states, FINDINGS) if labelled else ""
            rows.append(_row(p, k, f, size, split, label))
    m = Manifest(new_frame(rows), list(FINDINGS), {"task": "multilabel"})
    return write_manifest(m, root / "split.csv")


@pytest.fixture
def tiny_multilabel_manifest(tmp_path: Path) -> Path:
    return make_multilabel_manifest(tmp_path / "data")


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Path:
    return make_manifest(tmp_path / "data")
