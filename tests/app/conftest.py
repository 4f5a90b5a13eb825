"""Run folders for the dashboard tests.

- ``demo_run``: a real run made once per session by ``medcl.demo.run_demo(quick=True)`` (about a
  minute on 2 CPU cores). Set ``MEDCL_TEST_DEMO_RUN`` to an existing quick-demo run folder to reuse
  it while developing.
- ``big_run``: a copy of the demo run whose manifest and embeddings table are replaced by a
  synthetic 20,000-image cohort (reusing the demo's cached arrays), to measure the app at scale.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.data.manifest import Manifest, new_frame, read_manifest, write_manifest

BIG_N = 20_000


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick demo run folder (shared by the session; tests must not modify it)."""
    reuse = os.environ.get("MEDCL_TEST_DEMO_RUN")
    if reuse and (Path(reuse) / "run_summary.json").is_file():
        return Path(reuse)
    from medcl.demo import run_demo

    out = tmp_path_factory.mktemp("dashboard") / "run"
    run_demo(out, quick=True, log=lambda _msg: None)
    return out


def synthesise_big_run(src: Path, dst: Path, n: int = BIG_N, seed: int = 0) -> Path:
    """Copy run ``src`` to ``dst`` with an ``n``-image manifest and embeddings table.

    Images reuse ``src``'s cached arrays in turn; 4 images per patient; patients split 70/15/15;
    10 % of the training patients labelled, val/test labelled; embeddings are Gaussian clusters
    around one centre per class; there is no t-SNE (as for real runs above 5,000 images).
    """
    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True)
    for name in ("run_summary.json", "metrics.json", "config.yaml"):
        shutil.copy2(src / name, dst / name)
    shutil.copytree(src / "model", dst / "model")
    (dst / "efficiency").mkdir()
    for name in ("results.json", "report.md", "efficiency.png"):
        if (src / "efficiency" / name).is_file():
            shutil.copy2(src / "efficiency" / name, dst / "efficiency" / name)
    base = read_manifest(src / "data" / "split.csv")
    classes = list(base.classes)
    caches = base.df["cache_path"].tolist()
    per_patient = 4
    n_pat = n // per_patient
    patient = np.arange(n) // per_patient
    u = rng.random(n_pat)
    split_of = np.where(u < 0.7, "train", np.where(u < 0.85, "val", "test"))
    labelled_patient = (split_of != "train") | (rng.random(n_pat) < 0.1)
    cls = rng.integers(0, len(classes), n_pat)[patient]
    split = split_of[patient]
    labelled = labelled_patient[patient]
    ids = [f"big{i:06d}" for i in range(n)]
    rows = [
        {
            "image_id": ids[i],
            "path": caches[i % len(caches)],
            "patient_key": f"pk{patient[i]:05d}",
            "study_key": f"st{patient[i]:05d}",
            "modality": "MR",
            "label": classes[cls[i]] if labelled[i] else "",
            "split": split[i],
            "sha256": f"{i:064x}",
            "dims": 2,
            "rows": 32,
            "cols": 32,
            "slices": 1,
            "cache_path": caches[i % len(caches)],
            "intensity": "unit",
        }
        for i in range(n)
    ]
    write_manifest(Manifest(new_frame(rows), classes), dst / "data" / "split.csv")

    dim = 64
    centres = rng.normal(0, 1.0, (len(classes), dim))
    emb = np.maximum(centres[cls] + rng.normal(0, 0.9, (n, dim)), 0).astype(np.float32)
    logits = emb @ centres.T * 0.3 + rng.normal(0, 0.5, (n, len(classes)))
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    pred = proba.argmax(1)
    label = np.where(labelled, np.asarray(classes)[cls], "")
    table = pd.DataFrame(
        {
            "image_id": ids,
            "patient_key": [r["patient_key"] for r in rows],
            "split": split,
            "label": label,
            "labelled": labelled,
            "prediction": np.asarray(classes)[pred],
            "confidence": proba.max(1).astype(np.float32),
        }
    )
    table["correct"] = pd.array(
        np.where(labelled, label == table["prediction"], None), dtype="boolean"
    )
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = proba[:, k].astype(np.float32)
    table["embedding"] = list(emb)
    centred = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(centred[:2000], full_matrices=False)
    xy = centred @ vt[:2].T
    table["pca_x"], table["pca_y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    from medcl.evaluate.embed import write_embeddings

    write_embeddings(table, dst / "embeddings.parquet")
    return dst


@pytest.fixture(scope="session")
def big_run(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with 20,000 images (synthetic embeddings, the demo's model)."""
    return synthesise_big_run(demo_run, tmp_path_factory.mktemp("dashboard_big") / "run")


def make_volume_run(root: Path, n_patients: int = 8, size: int = 16, depth: int = 8) -> Path:
    """A small 3-D CT run folder: untrained model, cached volumes (HU), embeddings, summary."""
    import json

    import torch
    from torch import nn

    from medcl.evaluate.classifier import Classifier
    from medcl.evaluate.embed import embed_manifest, write_embeddings
    from medcl.evaluate.model import save_model
    from medcl.models.description import ModelDescription
    from medcl.models.encoders import EncoderSpec, build_encoder, encoder_dim

    rng = np.random.default_rng(0)
    classes = ["clear", "nodule"]
    cache = root / "data" / "split.cache"
    cache.mkdir(parents=True)
    rows = []
    for p in range(n_patients):
        split = "train" if p < n_patients - 2 else "test"
        for k in range(2):
            vol = rng.normal(-700, 40, (1, depth, size, size)).astype(np.float32)
            if (p + k) % 2:
                vol[0, depth // 2 - 1 : depth // 2 + 2, 5:9, 5:9] = 60.0
            f = cache / f"v{p}_{k}.npy"
            np.save(f, vol)
            labelled = split == "test" or p < 2
            rows.append(
                {
                    "image_id": f"vol{p}{k}",
                    "path": str(f),
                    "patient_key": f"pk{p}",
                    "study_key": f"s{p}",
                    "modality": "CT",
                    "label": classes[(p + k) % 2] if labelled else "",
                    "split": split,
                    "sha256": f"{p:032x}{k:032x}",
                    "dims": 3,
                    "rows": size,
                    "cols": size,
                    "slices": depth,
                    "cache_path": str(f),
                    "intensity": "hu",
                }
            )
    manifest = Manifest(new_frame(rows), classes)
    write_manifest(manifest, root / "data" / "split.csv")
    torch.manual_seed(0)
    enc = build_encoder(EncoderSpec("resnet10", 3, size, width=0.125))
    meta = {
        "classes": classes,
        # the previous metadata format (no pool, the geometry outside): must still load
        "architecture": {"encoder": "resnet10", "width": 0.125, "stem": "auto"},
        "spatial_dims": 3,
        "image_size": size,
        "modality": "CT",
        "preset": "ct",
        "window": [40.0, 400.0],
        "name": "3-D test model",
    }
    head = nn.Linear(encoder_dim("resnet10", 0.125), 2)
    clf = Classifier(enc, head, ModelDescription.from_dict(meta)).eval()
    save_model(root / "model", clf)
    (root / "model" / "metadata.json").write_text(json.dumps(meta))  # the file in that format
    write_embeddings(
        embed_manifest(clf, read_manifest(root / "data" / "split.csv")), root / "embeddings.parquet"
    )
    return write_summary(root, "3-D test run")


def write_summary(root: Path, headline: str, **entries: str) -> Path:
    """A minimal ``config.yaml`` and the ``run_summary.json`` naming the run's files (the
    manifest, embeddings, model and config at their usual places, plus ``entries``)."""
    import json

    (root / "config.yaml").write_text("augment:\n  preset: auto\n  views: 2\n  options: {}\n")
    summary = {
        "kind": "medcl-run",
        "headline": headline,
        "manifest": "data/split.csv",
        "embeddings": "embeddings.parquet",
        "model": "model",
        "config": "config.yaml",
        **entries,
    }
    (root / "run_summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture(scope="session")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 3-D run folder (no metrics, no label-efficiency results)."""
    return make_volume_run(tmp_path_factory.mktemp("dashboard_3d") / "run")


def make_multilabel_run(root: Path) -> Path:
    """A small multi-label 2-D run folder: the multi-label test manifest (findings ``bright``,
    ``dark``, ``bar``), an untrained 2-D model with one output per finding, an embeddings table
    with stand-in per-finding sigmoid probabilities that track the findings, the test metrics of
    :func:`medcl.evaluate.evaluation.evaluate_findings` on them, and label-efficiency results in
    macro AUROC with one refused arm."""
    import json

    import torch
    from torch import nn

    from medcl.data.findings import encode_states
    from medcl.evaluate.classifier import Classifier
    from medcl.evaluate.embed import project_2d, write_embeddings
    from medcl.evaluate.evaluation import evaluate_findings
    from medcl.evaluate.model import save_model
    from medcl.evaluate.report import write_report
    from medcl.models.description import ModelDescription
    from medcl.models.encoders import EncoderSpec, build_encoder, encoder_dim
    from tests.conftest import FINDINGS, make_multilabel_manifest

    path = make_multilabel_manifest(
        root / "data", n_patients=24, labelled_patients=10, test_patients=5
    )
    manifest = read_manifest(path)
    names = list(FINDINGS)
    torch.manual_seed(0)
    size = 24
    arch = {"encoder": "resnet10", "width": 0.125, "stem": "auto"}
    meta = dict(classes=names, task="multilabel", architecture=arch, spatial_dims=2)
    meta |= dict(image_size=size, modality="MR", preset="mr", window=[40.0, 400.0])
    meta["name"] = "multi-label test model"
    enc = build_encoder(EncoderSpec("resnet10", 2, size, width=0.125))
    head = nn.Linear(encoder_dim("resnet10", 0.125), len(names))
    clf = Classifier(enc, head, ModelDescription.from_dict(meta)).eval()
    save_model(root / "model", clf)

    rng = np.random.default_rng(0)
    df = manifest.df
    truth = np.array([[(int(k[2:]) % 8 >> b) & 1 for b in range(3)] for k in df["patient_key"]])
    proba = 1 / (1 + np.exp(-(2.5 * truth - 1.2 + rng.normal(0, 0.9, truth.shape))))
    by_id = dict(zip(df["image_id"], proba, strict=True))
    emb = (truth[:, :, None] * rng.normal(1, 0.1, (1, 3, 8))).reshape(len(df), -1)
    emb = (emb + rng.normal(0, 0.3, emb.shape)).astype(np.float32)
    called = (proba >= 0.5).astype(int)
    table = pd.DataFrame(
        {
            "image_id": df["image_id"],
            "patient_key": df["patient_key"],
            "split": df["split"],
            "label": df["label"],
            "labelled": df["label"] != "",
            "prediction": [encode_states(c, names) for c in called],
            "confidence": np.abs(proba - 0.5).mean(1) + 0.5,
        }
    )
    table["correct"] = np.where(table["labelled"], table["label"] == table["prediction"], None)
    for k, n in enumerate(names):
        table[f"prob_{n}"] = proba[:, k]
    table["embedding"] = list(emb)
    for name, xy in project_2d(emb).items():
        table[f"{name}_x"], table[f"{name}_y"] = xy[:, 0], xy[:, 1]
    write_embeddings(table, root / "embeddings.parquet")

    def predict(m: Manifest) -> np.ndarray:
        return np.stack([by_id[i] for i in m.df["image_id"]])

    metrics, _ = evaluate_findings(predict, manifest, split="test", n_boot=100, seed=0)
    (root / "metrics.json").write_text(json.dumps(metrics))
    per = metrics["findings"]
    records = [
        {
            "run": f"{m}_f1.0_s0",
            "method": m,
            "label_fraction": 1.0,
            "budget": "f1.0",
            "seed": 0,
            "metrics": {
                "macro_auroc": metrics["macro_auroc"] - d,
                "intervals": {"macro_auroc": metrics["intervals"]["macro_auroc"]},
                "findings": per,
            },
        }
        for m, d in (("supervised", 0.1), ("sscl", 0.0))
    ]
    records.append(
        {
            "run": "fixmatch_f1.0_s0",
            "method": "fixmatch",
            "label_fraction": 1.0,
            "budget": "f1.0",
            "seed": 0,
            "refused": "FixMatch takes one class per image",
        }
    )
    (root / "efficiency").mkdir()
    results = {"metric": "macro_auroc", "records": records, "picks": [], "paired": []}
    (root / "efficiency" / "results.json").write_text(json.dumps(results))
    write_report(records, "macro_auroc", root / "efficiency")
    return write_summary(
        root,
        "multi-label test run",
        metrics="metrics.json",
        efficiency="efficiency/results.json",
        efficiency_report="efficiency/report.md",
        efficiency_plot="efficiency/efficiency.png",
    )


@pytest.fixture(scope="session")
def multilabel_demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of ``medcl demo --task multilabel --quick`` (about 15 s; shared)."""
    from medcl.demo import run_demo

    out = tmp_path_factory.mktemp("dashboard_ml_demo") / "run"
    run_demo(out, quick=True, task="multilabel", log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def multilabel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small multi-label run folder (:func:`make_multilabel_run`)."""
    return make_multilabel_run(tmp_path_factory.mktemp("dashboard_ml") / "run")
