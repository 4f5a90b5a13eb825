"""FixMatch's unlabelled pool, built by ``medcl finetune`` (mode fixmatch) from a manifest whose
val and test splits hold unlabelled rows: only unlabelled train rows enter it."""

from __future__ import annotations

import pytest

import medcl.evaluate.fixmatch as fixmatch
from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.evaluate.finetune import finetune
from tests.conftest import TINY_OVERRIDES, make_manifest


class _CapturedError(Exception):
    """Stops the fit once its inputs are seen."""


def test_unlabelled_val_and_test_rows_stay_out_of_the_fixmatch_pool(tmp_path, monkeypatch):
    path = make_manifest(tmp_path, test_patients=2, held_out_unlabelled=1)
    m = read_manifest(path)
    df = m.df
    seen = {}

    def capture(clf, labelled, unlabelled, val, *args, **kwargs):
        seen.update(labelled=labelled.image_ids, unlabelled=unlabelled.image_ids, val=val)
        raise _CapturedError

    monkeypatch.setattr(fixmatch, "fit_fixmatch", capture)
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={path}", "finetune.mode=fixmatch"])
    with pytest.raises(_CapturedError):
        finetune(cfg, m)
    train = df[df["split"] == "train"]
    assert seen["unlabelled"] == list(train[train["label"] == ""]["image_id"])
    assert seen["labelled"] == list(train[train["label"] != ""]["image_id"])
    held_out = set(df[df["split"] != "train"]["image_id"])
    assert not held_out & set(seen["unlabelled"]) and not held_out & set(seen["labelled"])
    assert (df[df["split"] != "train"]["label"] == "").any()  # the case under test exists
