"""Lightning data module for pretraining: mixed batches from the train split, val for monitoring.

Only rows with ``split == "train"`` (labelled and unlabelled) are used for pretraining; validation
rows feed the online kNN monitor and are never trained on; test rows are never loaded.
"""

from __future__ import annotations

import os

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from medcl.config import Config
from medcl.data.dataset import CachedImages
from medcl.data.manifest import Manifest
from medcl.data.sampler import MixedBatchSampler, auto_labelled_share
from medcl.errors import MedclError
from medcl.transforms import AugmentPreset


class PretrainData(L.LightningDataModule):
    """Train/val loaders for :class:`~medcl.train.module.PretrainModule`.

    Args:
        cfg: The run config (``data`` and ``augment`` sections are used).
        manifest: A split manifest.
        preset: The augmentation preset; its per-sample part runs in the loader.
        dims: Spatial dimensions of the images.
    """

    def __init__(self, cfg: Config, manifest: Manifest, preset: AugmentPreset, dims: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.manifest = manifest
        self.preset = preset
        self.dims = dims
        self.train_set: CachedImages | None = None
        self.val_set: CachedImages | None = None
        self.bank_set: CachedImages | None = None
        self.labelled_share = 0.0

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        df = self.manifest.df
        train = self.manifest.subset(df["split"] == "train")
        if len(train) == 0:
            raise MedclError("the manifest has no train rows; run `medcl split` first")
        size = self.cfg.data.image_size
        self.train_set = CachedImages(train, size, self.dims, progress=True)
        views = self.cfg.augment.views
        if self.preset.per_sample is not None:
            preset = self.preset
            self.train_set.transform = lambda x: preset.sample_views(x, views)
        val = self.manifest.subset((df["split"] == "val") & (df["label"] != ""))
        bank = train.subset(train.df["label"] != "")
        if len(val) and len(bank):
            self.val_set = CachedImages(val, size, self.dims)
            self.bank_set = CachedImages(bank, size, self.dims)
        labels = self.train_set.labels.numpy()
        share = self.cfg.data.labelled_share
        n_lab, n_unl = int((labels >= 0).sum()), int((labels < 0).sum())
        self.labelled_share = auto_labelled_share(n_lab, n_unl) if share == "auto" else float(share)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        labels = self.train_set.labels.numpy()
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        sampler = MixedBatchSampler(
            np.flatnonzero(labels >= 0),
            np.flatnonzero(labels < 0),
            self.cfg.data.batch_size,
            self.labelled_share,
            num_replicas=world,
            rank=rank,
            seed=self.cfg.trainer.seed,
            groups=self.train_set.groups.numpy(),
            images_per_patient=self.cfg.data.images_per_patient,
        )
        workers = self.cfg.data.num_workers
        if workers == "auto":
            workers = min(2, os.cpu_count() or 1) if self.preset.per_sample is not None else 0
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=False,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=256, shuffle=False)

    def bank_dataloader(self) -> DataLoader | None:
        """Labelled training rows, the reference set of the kNN monitor."""
        if self.bank_set is None:
            return None
        return DataLoader(self.bank_set, batch_size=256, shuffle=False)
