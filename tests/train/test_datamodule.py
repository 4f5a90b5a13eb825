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


def test_every_epoch_of_a_pretraining_draws_its_own_batches(tmp_path):
    """A real 3-epoch pretraining: the batch sampler gets each epoch, so the epochs' batches
    differ (the same images in the same batches every epoch was the behaviour before)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from medcl.train.pretrain import pretrain

    seen: dict[int, list[list[int]]] = {}

    class Record(Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module, batch, batch_idx) -> None:
            sampler = trainer.train_dataloader.batch_sampler
            seen.setdefault(trainer.current_epoch, [])
            seen[trainer.current_epoch].append(sampler.inner.epoch)

    path = make_manifest(tmp_path / "data", n_patients=12)
    cfg = load_config(
        None,
        [*TINY_OVERRIDES, f"data.manifest={path}", f"out={tmp_path / 'run'}", "optim.epochs=3"],
    )
    pretrain(cfg, progress=False, callbacks=[Record()])
    assert {e: set(v) for e, v in seen.items()} == {0: {0}, 1: {1}, 2: {2}}
    m = read_manifest(path)
    dm = PretrainData(cfg, m, build_preset("mr", {}, dims=2), 2, progress=False)
    dm.setup("fit")
    sampler = dm.train_dataloader().batch_sampler
    batches = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches.append([list(b) for b in sampler])
    assert batches[0] != batches[1]


def test_the_training_set_pickles_for_spawned_loader_workers(tmp_path):
    """DataLoader workers started by ``spawn``/``forkserver`` (inside ``medcl efficiency
    --workers``' processes, on macOS) pickle the dataset with its transform: the MR preset's
    loader-side views must survive the trip (a lambda did not: the demo's shards failed)."""
    import pickle

    path = make_manifest(tmp_path)
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={path}"])
    preset = build_preset("mr", {}, dims=2)
    assert preset.per_sample is not None  # the case under test: views made in the loader
    dm = PretrainData(cfg, read_manifest(path), preset, 2, progress=False)
    dm.setup("fit")
    copy = pickle.loads(pickle.dumps(dm.train_set))
    item, original = copy[0], dm.train_set[0]
    assert item[0].shape == original[0].shape == (cfg.augment.views, *original[0].shape[1:])
