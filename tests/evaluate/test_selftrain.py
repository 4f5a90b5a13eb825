"""Self-training: pooled pseudo-labels against an explicit loop, true labels kept, the student
starting where the teacher did, and the experiment's teacher hand-over changing nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import medcl.evaluate.efficiency as eff
import medcl.evaluate.selftrain as st
from medcl.config import load_config
from medcl.data.manifest import Manifest, new_frame
from tests.conftest import TINY_OVERRIDES, make_manifest

CLASSES = ["a", "b", "c"]


def _manifest() -> Manifest:
    """Patients p0-p5 in train (p0 labelled 'b' on one of its 3 images), p6-p7 in val."""
    rows = []
    for p in range(8):
        split = "train" if p < 6 else "val"
        for k in range(3):
            label = "" if split == "train" else CLASSES[p % 3]
            if p == 0 and k == 0:
                label = "b"
            rows.append(
                {
                    "image_id": f"p{p}i{k}",
                    "path": f"/x/{p}/{k}.npy",
                    "patient_key": f"pk{p}",
                    "study_key": f"s{p}{k}",
                    "modality": "MR",
                    "label": label,
                    "split": split,
                    "sha256": f"{p}{k}",
                }
            )
    return Manifest(new_frame(rows), CLASSES)


def _fake_teacher(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[float]]) -> None:
    def predict_rows(clf: Any, rows: Manifest) -> tuple[np.ndarray, None]:
        return np.array([table[i] for i in rows.df["image_id"]], dtype=float), None

    monkeypatch.setattr(st, "predict_rows", predict_rows)


def _table(seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    m = _manifest()
    return {i: list(rng.dirichlet([0.3, 0.3, 0.3])) for i in m.df["image_id"]}


def _reference(m: Manifest, table: dict[str, list[float]], tau: float, pool: str) -> dict[str, str]:
    """The pseudo-labels by an explicit loop over patients and images."""
    out = {}
    df = m.df
    for p in sorted(set(df["patient_key"])):
        rows = df[(df["patient_key"] == p) & (df["split"] == "train")]
        unl = rows[rows["label"] == ""]
        truth = [x for x in rows["label"] if x]
        for _, r in unl.iterrows():
            if pool == "patient":
                if truth:
                    q = np.eye(3)[CLASSES.index(max(set(truth), key=truth.count))]
                else:
                    q = np.mean([table[i] for i in unl["image_id"]], axis=0)
            else:
                q = np.asarray(table[r["image_id"]])
            if q.max() >= tau:
                out[r["image_id"]] = CLASSES[int(np.argmax(q))]
    return out


@pytest.mark.parametrize("pool", ["patient", "image"])
@pytest.mark.parametrize("tau", [0.0, 0.5, 0.7])
def test_pseudo_labels_match_an_explicit_loop_and_keep_true_labels(monkeypatch, pool, tau):
    m = _manifest()
    table = _table(1)
    _fake_teacher(monkeypatch, table)
    out, stats = st.pseudo_label(object(), m, tau, pool)  # type: ignore[arg-type]
    before = m.df.set_index("image_id")["label"]
    after = out.df.set_index("image_id")["label"]
    got = {i: after[i] for i in after.index if after[i] != before[i]}
    assert got == _reference(m, table, tau, pool)
    labelled = before != ""
    assert (after[labelled] == before[labelled]).all()  # a true label is never changed
    val = out.df["split"] == "val"
    assert out.df.loc[val, "label"].tolist() == m.df.loc[val, "label"].tolist()
    assert stats["pseudo_labelled"] == len(got) and stats["pool_size"] == 17
    # validation estimate: the same pooling on the val patients, accuracy where confident
    vq = {}
    for p in ("pk6", "pk7"):
        ids = [f"p{p[2:]}i{k}" for k in range(3)]
        for i in ids:
            q = np.mean([table[j] for j in ids], 0) if pool == "patient" else np.asarray(table[i])
            vq[i] = (q.max() >= tau, int(np.argmax(q)), CLASSES.index(CLASSES[int(p[2:]) % 3]))
    sure = [v for v in vq.values() if v[0]]
    assert stats["pseudo_val_coverage"] == pytest.approx(len(sure) / 6)
    if sure:
        acc = np.mean([v[1] == v[2] for v in sure])
        assert stats["pseudo_val_accuracy"] == pytest.approx(acc)


class _Clf(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

    def images(self, m: Manifest) -> list[str]:
        return list(m.df["image_id"])


def test_the_student_starts_where_the_teacher_did_and_learns_from_pseudo_labels(
    monkeypatch, caplog
):
    from medcl.evaluate.fitting import FitJob

    m = _manifest()
    table = {i: [0.9, 0.05, 0.05] for i in m.df["image_id"]}
    _fake_teacher(monkeypatch, table)
    clf = _Clf()
    cfg = load_config(None, ["finetune.selftrain_threshold=0.8"])
    seen: list[tuple[list[float], list[str]]] = []

    def fit(job: FitJob) -> tuple[float, dict[str, Any]]:
        seen.append((job.clf.w.detach().tolist(), list(job.train)))
        with torch.no_grad():
            job.clf.w += 1.0  # "training" moves the weights
        return 0.5 + 0.1 * len(seen), {"steps": 10 * len(seen)}

    job = FitJob(clf, cfg, m, ["p0i0"], [], False)  # type: ignore[arg-type]
    score, details = st.fit_selftrain(job, fit)
    assert seen[0][0] == seen[1][0] == [0.0, 0.0, 0.0]  # the student starts afresh
    assert seen[0][1] == ["p0i0"]  # the teacher learns from the true labels only
    student = seen[1][1]
    assert set(student) == set(m.df.loc[m.df["split"] == "train", "image_id"])  # all labelled now
    assert score == pytest.approx(0.7) and details["teacher_val_balanced_accuracy"] == 0.6
    assert details["steps"] == 30 and details["student_steps"] == 20
    # nothing confident (and no patient label to spread): the teacher is the result, said in a
    # warning, and no student is fitted (an experiment's other arms go on)
    _fake_teacher(monkeypatch, {i: [0.4, 0.3, 0.3] for i in m.df["image_id"]})
    per_image = load_config(
        None, ["finetune.selftrain_threshold=0.8", "finetune.selftrain_pool=image"]
    )
    seen.clear()
    clf = _Clf()
    with caplog.at_level(logging.WARNING, logger="medcl.evaluate.selftrain"):
        score, details = st.fit_selftrain(FitJob(clf, per_image, m, [], [], False), fit)  # type: ignore[arg-type]
    assert len(seen) == 1  # the teacher only
    assert score == pytest.approx(0.6) and details["pseudo_labelled"] == 0
    assert details["student"].startswith("none") and details["steps"] == 10
    assert [p.tolist() for p in clf.state_dict().values()] == [[1.0, 1.0, 1.0]]  # the teacher's
    assert "the teacher is the result" in caplog.text


def test_the_experiment_hands_the_supervised_model_over_as_the_teacher(tmp_path: Path):
    """Self-training beside supervised (its teacher handed over) and alone (the teacher fitted
    inside) give the same record."""
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=6, test_patients=3)
    common = [
        *TINY_OVERRIDES,
        "finetune.epochs=2",
        "finetune.selftrain_threshold=0.0",
        "efficiency.fractions=[0.5]",
        "efficiency.seeds=[0]",
        "efficiency.n_boot=10",
    ]
    recs = {}
    for name, methods in (("alone", "[selftrain]"), ("beside", "[supervised, selftrain]")):
        cfg = load_config(None, [*common, f"efficiency.methods={methods}"])
        res = eff.run_efficiency(cfg, manifest, tmp_path / name, log=lambda s: None, progress=False)
        recs[name] = next(r for r in res.records if r["method"] == "selftrain")
    drop = {"seconds", "pretrain_seconds", "finetune_seconds", "model_dir", "predictions"}
    same = [{k: v for k, v in r.items() if k not in drop} for r in recs.values()]
    assert same[0] == same[1]
    meta = json.loads((Path(recs["beside"]["model_dir"]) / "metadata.json").read_text())
    details = meta["finetune"]
    assert details["pseudo_labelled"] > 0 and details["teacher_steps"] > 0


def test_without_unlabelled_rows_the_teacher_is_the_result(monkeypatch):
    from medcl.evaluate.fitting import FitJob

    m = _manifest()
    m.df.loc[m.df["split"] == "train", "label"] = "a"  # every training label kept
    calls: list[int] = []

    def fit(job: FitJob) -> tuple[float, dict[str, Any]]:
        calls.append(1)
        with torch.no_grad():
            job.clf.w += 2.0
        return 0.9, {"steps": 7}

    _fake_teacher(monkeypatch, {i: [1.0, 0.0, 0.0] for i in m.df["image_id"]})
    clf = _Clf()
    score, details = st.fit_selftrain(FitJob(clf, load_config(None, []), m, [], [], False), fit)  # type: ignore[arg-type]
    assert calls == [1] and score == 0.9 and details["steps"] == 7
    assert clf.w.tolist() == [2.0, 2.0, 2.0] and not clf.training  # the teacher's weights
