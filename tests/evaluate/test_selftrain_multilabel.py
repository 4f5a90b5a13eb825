"""Self-training on findings: per-finding pooled pseudo-labels against an explicit loop, known
findings of a patient kept, unconfident findings left unknown (masked), τ < 0.5 refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import medcl.evaluate.selftrain as st
from medcl.data.findings import decode_labels
from medcl.data.manifest import Manifest
from medcl.errors import ConfigError
from tests.evaluate.test_selftrain import _manifest as single_label_manifest

FINDINGS = ["a", "b", "c"]


def _manifest() -> Manifest:
    """The patients of the single-label test (p0-p5 train, p6-p7 val), unlabelled in train but
    p0's first image (``a|?c``: a present, b absent, c unknown) and p1's first (``-``); val
    labelled ``a|b`` (even patients) or ``?a|c``."""
    df = single_label_manifest().df.copy()
    val = (df["split"] == "val").to_numpy()
    even = df["patient_key"].str[2:].astype(int).to_numpy() % 2 == 0
    df["label"] = np.where(val, np.where(even, "a|b", "?a|c"), "")
    df.loc[df["image_id"] == "p0i0", "label"] = "a|?c"
    df.loc[df["image_id"] == "p1i0", "label"] = "-"
    return Manifest(df, FINDINGS, {"task": "multilabel"})


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
