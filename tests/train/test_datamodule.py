"""The pretraining data module reads only the train split, even when val and test rows carry no
label (an unlabelled val/test image must never enter the unlabelled pool)."""

from __future__ import annotations

import numpy as np

from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.train.datamodule import PretrainData
from medcl.transforms import build_preset
from tests.conftest import TINY_OVERRIDES, make_manifest


def test_unlabelled_val_and_test_rows_stay_out_of_pretraining(tmp_path):
    path = make_manifest(tmp_path, test_patients=2, held_out_unlabelled=1)
    m = read_manifest(path)
    df = m.df
    held_out_unl = df[(df["split"] != "train") & (df["label"] == "")]
    assert set(held_out_unl["split"]) == {"val", "test"}  # the case under test exists
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={path}"])
    dm = PretrainData(cfg, m, build_preset("mr", {}, dims=2), 2, progress=False)
    dm.setup("fit")
    train = df[df["split"] == "train"]
    assert dm.train_set.image_ids == list(train["image_id"])
    # the monitor: labelled val rows as queries, labelled train rows as the bank
    assert dm.val_set.image_ids == list(df[(df["split"] == "val") & (df["label"] != "")].image_id)
    assert dm.bank_set.image_ids == list(train[train["label"] != ""]["image_id"])
    # every batch of an epoch draws from the training rows only (unlabelled ones included)
    seen = {
        dm.train_set.image_ids[i] for batch in dm.train_dataloader().batch_sampler for i in batch
    }
    assert seen <= set(train["image_id"])
    assert seen & set(train[train["label"] == ""]["image_id"])
    assert not seen & set(held_out_unl["image_id"])
    assert np.all(dm.train_set.labels.numpy()[train["label"].to_numpy() == ""] == -1)
