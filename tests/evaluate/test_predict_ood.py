"""`medcl predict` flags inputs the model was not trained for (modality, colour, spacing,
embedding distance) and `--strict` refuses them; an old model folder still predicts."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from medcl.config import load_config
from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest, write_manifest
from medcl.data.split import split_manifest
from medcl.data.synth import CLASSES, generate_cohort
from medcl.errors import MedclError
from medcl.evaluate import ood
from medcl.evaluate.card import model_card
from medcl.evaluate.finetune import finetune
from medcl.evaluate.model import load_model, save_model
from medcl.evaluate.predict import predict_source
from medcl.models.description import ModelDescription
from tests.conftest import TINY_OVERRIDES


@pytest.fixture(scope="module")
def mr_model(tmp_path_factory):
    """A linear probe on a tiny MR phantom cohort (the demo's kind of model), and its data."""
    root = tmp_path_factory.mktemp("ood")
    cohort = root / "cohort"
    generate_cohort(cohort, patients=12, seed=3, modality="mr", size=32, progress=False)
    manifest = root / "manifest.csv"
    ingest(
        cohort,
        manifest,
        labels=cohort / "labels.csv",
        classes=list(CLASSES),
        secret=root / "secret.key",
        progress=False,
    )
    split = write_manifest(
        split_manifest(read_manifest(manifest), val=0.25, test=0.25, seed=0), root / "split.csv"
    )
    cfg = load_config(
        None, [*TINY_OVERRIDES, "data.image_size=32", "finetune.mode=linear", "trainer.seed=0"]
    )
    res = finetune(cfg, read_manifest(split))
    save_model(root / "model", res.model)
    return root, read_manifest(split)


def _predict(model, source, out, **kw):
    lines: list[str] = []
    n = predict_source(model, source, out, log=lines.append, **kw)
    return n, pd.read_csv(out, keep_default_na=False), lines


def test_export_records_training_distribution(mr_model):
    root, split = mr_model
    meta = json.loads((root / "model" / "metadata.json").read_text())
    rec = meta[ood.KEY]
    assert rec["modality"] == ["MR"] and rec["intensity"] == ["unit"]
    assert rec["spatial_dims"] == 2 and rec["colour"] is False and rec["volume_sources"] is False
    sp = rec["pixel_spacing_mm"]
    assert 0 < sp["min"] <= sp["max"] and sp["at_image_size"] == 32
    bank = np.load(root / "model" / ood.BANK_FILE)
    n_train = int((split.df["split"] == "train").sum())
    assert bank.shape[0] == rec["embedding"]["rows"] == n_train
    assert np.allclose(np.linalg.norm(bank, axis=1), 1, atol=1e-5)
    assert rec["embedding"]["k"] == 5 and rec["embedding"]["threshold"] > 0
    assert "Inputs checked by `medcl predict` against the training data: modality MR" in (
        model_card(ModelDescription.from_dict(meta))
    )


def test_ct_colour_us_and_phantom(mr_model, tmp_path):
    root, split = mr_model
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(get_testdata_file("examples_rgb_color.dcm"), src / "us.dcm")
    held_out = set(split.df.loc[split.df["split"] == "test", "sha256"])
    phantom = next(  # a held-out (test-split) phantom image, found by its digest
        f
        for f in sorted((root / "cohort").rglob("*.dcm"))
        if hashlib.sha256(f.read_bytes()).hexdigest() in held_out
    )
    shutil.copy(phantom, src / "phantom.dcm")
    n, preds, lines = _predict(root / "model", src, tmp_path / "preds.csv")
    assert n == 3
    rows = preds.to_dict("records")  # one row per input file; found by what each one is
    (ct,) = [r for r in rows if "modality CT ≠ MR" in r["reason"]]
    (us,) = [r for r in rows if "modality US ≠ MR" in r["reason"]]
    (ph,) = [r for r in rows if r["reason"] == ""]
    assert ct["in_distribution"] is False and "intensity hu ≠ unit" in ct["reason"]
    assert "colour input" not in ct["reason"]
    assert us["in_distribution"] is False and "colour input" in us["reason"]
    assert ph["in_distribution"] is True
    assert ph["prediction"] in CLASSES
    (summary,) = [s for s in lines if s.startswith("out-of-distribution check")]
    assert "2 of 3 inputs flagged" in summary and "modality CT ≠ MR: 1" in summary
    assert "colour input: 1" in summary

    # --strict: flagged rows are refused (rejects file), the phantom is still scored
    n, strict, _ = _predict(root / "model", src, tmp_path / "strict.csv", strict=True)
    assert n == 1 and list(strict["reason"]) == [""]
    assert strict["confidence"].iloc[0] == pytest.approx(ph["confidence"])  # the phantom's row
    rejects = pd.read_csv(tmp_path / "strict.rejects.csv", keep_default_na=False)
    refused = rejects[rejects["reason"].str.startswith("out of distribution: ")]
    assert sorted(r.split(": ", 1)[1] for r in refused["reason"]) == sorted(
        [ct["reason"], us["reason"]]
    )

    # --strict with nothing in distribution: an error, nothing scored
    (src / "phantom.dcm").unlink()
    with pytest.raises(MedclError, match="all 2 inputs were flagged"):
        predict_source(root / "model", src, tmp_path / "none.csv", strict=True)
    assert len(pd.read_csv(tmp_path / "none.csv")) == 0


def test_spacing_and_embedding_checks(mr_model):
    root, split = mr_model
    clf = load_model(root / "model")
    rec = clf.description.training_distribution
    row = split.df[split.df["split"] == "test"].iloc[[0]].copy()
    row["spacing_x"] = row["spacing_y"] = rec["pixel_spacing_mm"]["max"] * 3 * 32 / row["cols"]
    far = -np.asarray(clf.ood_bank[:1])  # the opposite direction of a training embedding
    flags = ood.check_rows(clf.description, row, far, clf.ood_bank)
    assert not flags.in_distribution[0]
    assert "pixel spacing" in flags.reason[0] and "outside" in flags.reason[0]
    assert "embedding distance" in flags.reason[0]
    near = np.asarray(clf.ood_bank[:1])
    row["spacing_x"] = row["spacing_y"] = np.nan
    assert ood.check_rows(clf.description, row, near, clf.ood_bank).in_distribution[0]


def test_old_model_folder_still_predicts(mr_model, tmp_path):
    root, _ = mr_model
    old = tmp_path / "old"
    shutil.copytree(root / "model", old)
    (old / ood.BANK_FILE).unlink()
    meta = json.loads((old / "metadata.json").read_text())
    del meta[ood.KEY]
    (old / "metadata.json").write_text(json.dumps(meta))
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    n, preds, lines = _predict(old, src, tmp_path / "p.csv")
    assert n == 1 and not preds["in_distribution"].iloc[0]
    reason = preds["reason"].iloc[0]
    assert "modality CT ≠ MR" in reason and "not checked: pixel spacing, colour" in reason
    assert "not checked (model folder has no training-distribution record)" in lines[-1]


def _loop_knn(emb: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """``1 − cos`` to the k-th nearest bank row, one explicit loop per row (the reference)."""
    out = []
    for e in np.asarray(emb, dtype=np.float64):
        e = e / np.linalg.norm(e)
        sims = sorted((float(e @ (b / np.linalg.norm(b))) for b in bank), reverse=True)
        out.append(1.0 - sims[min(k, len(sims)) - 1])
    return np.array(out)


def _loop_quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics (numpy's default)."""
    v = sorted(float(x) for x in values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def test_threshold_is_the_99th_percentile_of_the_5th_neighbour_distance(mr_model):
    """The exported threshold against an independent computation: the embeddings of the val
    split, their 5th-nearest-neighbour cosine distance to the bank by a loop, its 0.99 quantile."""
    root, split = mr_model
    clf = load_model(root / "model")
    rec = clf.description.training_distribution["embedding"]
    val = split.subset(split.df["split"] == "val")
    emb = clf.embed(clf.images(val).images).numpy()
    dist = _loop_knn(emb, clf.ood_bank, 5)
    assert rec["threshold"] == pytest.approx(_loop_quantile(dist, 0.99), rel=1e-5, abs=1e-6)
    # k and the quantile matter here: another choice gives another threshold
    assert abs(_loop_quantile(_loop_knn(emb, clf.ood_bank, 1), 0.99) - rec["threshold"]) > 1e-4
    assert abs(_loop_quantile(dist, 0.9) - rec["threshold"]) > 1e-4
