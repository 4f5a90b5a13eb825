"""Self-training on findings: per-finding pooled pseudo-labels against an explicit loop, known
findings of a patient kept, unconfident findings left unknown (masked), τ < 0.5 refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import medcl.evaluate.selftrain as st
from medcl.data.findings import decode_labels
from medcl.data.manifest import Manifest, new_frame
from medcl.errors import ConfigError

FINDINGS = ["a", "b", "c"]


def _manifest() -> Manifest:
    """Patients p0-p5 in train, unlabelled but p0's first image (``a|?c``: a present, b absent,
    c unknown) and p1's first (``-``); p6-p7 in val, labelled."""
    rows = []
    for p in range(8):
        split = "train" if p < 6 else "val"
        for k in range(3):
            label = "" if split == "train" else ["a|b", "?a|c"][p % 2]
            if p == 0 and k == 0:
                label = "a|?c"
            if p == 1 and k == 0:
                label = "-"
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
    return Manifest(new_frame(rows), FINDINGS, {"task": "multilabel"})


@pytest.fixture
def table(monkeypatch) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    out = {i: list(rng.uniform(0, 1, 3)) for i in _manifest().df["image_id"]}

    def predict_rows(clf: Any, rows: Manifest) -> tuple[np.ndarray, None]:
        return np.array([out[i] for i in rows.df["image_id"]], dtype=float), None

    monkeypatch.setattr(st, "predict_rows", predict_rows)
    return out


@pytest.mark.parametrize("pool", ["patient", "image"])
@pytest.mark.parametrize("tau", [0.5, 0.6, 0.8])
def test_pseudo_labels_per_finding_match_a_loop(table, pool, tau):
    m = _manifest()
    out, stats = st.pseudo_label(None, m, tau, pool)  # type: ignore[arg-type]
    df = m.df
    truth = dict(zip(df["image_id"], df["label"], strict=True))
    patient = dict(zip(df["image_id"], df["patient_key"], strict=True))
    unl = [
        i
        for i in df["image_id"]
        if truth[i] == "" and i.startswith(("p0", "p1", "p2", "p3", "p4", "p5"))
    ]
    entries = 0
    for i in df["image_id"]:
        got = out.df.loc[out.df["image_id"] == i, "label"].item()
        if i not in unl:
            assert got == truth[i]  # a true label is never changed
            continue
        same = [j for j in unl if patient[j] == patient[i]] if pool == "patient" else [i]
        want = []
        for k in range(3):
            q = sum(table[j][k] for j in same) / len(same)
            s = 1 if q >= tau else 0 if q <= 1 - tau else -1
            if pool == "patient":  # the patient's known finding wins
                known = [
                    decode_labels([truth[j]], FINDINGS)[0][k]
                    for j in truth
                    if patient[j] == patient[i] and truth[j] != ""
                ]
                known = [v for v in known if v >= 0]
                if known and np.mean(known) != 0.5:
                    s = int(np.mean(known) > 0.5)
            want.append(s)
        entries += sum(v >= 0 for v in want)
        np.testing.assert_array_equal(decode_labels([got], FINDINGS)[0], want)
    assert stats["pseudo_entries"] == entries
    assert stats["pool_size"] == len(unl)
    # validation: known entries confident at τ, and right among those
    val = [i for i in df["image_id"] if i.startswith(("p6", "p7"))]
    sure = right = n = 0
    for i in val:
        y = decode_labels([truth[i]], FINDINGS)[0]
        same = [j for j in val if patient[j] == patient[i]] if pool == "patient" else [i]
        for k in range(3):
            if y[k] < 0:
                continue
            n += 1
            q = sum(table[j][k] for j in same) / len(same)
            if q >= tau or q <= 1 - tau:
                sure += 1
                right += int((q >= tau) == bool(y[k]))
    assert stats["pseudo_val_coverage"] == pytest.approx(sure / n)
    if sure:
        assert stats["pseudo_val_accuracy"] == pytest.approx(right / sure)


def test_threshold_below_one_half_is_refused(table):
    with pytest.raises(ConfigError, match="finetune.selftrain_threshold"):
        st.pseudo_label(None, _manifest(), 0.4, "patient")  # type: ignore[arg-type]
