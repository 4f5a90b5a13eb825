"""Lightning data module for pretraining: mixed batches from the train split, val for monitoring.

Only rows with ``split == "train"`` (labelled and unlabelled) are used for pretraining; validation
rows feed the online kNN monitor and are never trained on; test rows are never loaded.

With ``data.volume_mode: patches`` (3-D) the training set is
:class:`~medcl.train.patches.PatchViews` over the stored volumes (``k`` regions × ``V`` views per
volume, flattened by :func:`~medcl.train.patches.collate_patches`) and the monitor's sets are the
stored volumes, one per batch, embedded by grid aggregation in the module.
"""

from __future__ import annotations

import os

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from medcl.config import Config
from medcl.data.dataset import ImageSet, labelled_rows, open_images
from medcl.data.manifest import Manifest
from medcl.data.sampler import MixedBatchSampler, auto_labelled_share
from medcl.data.volumes import StoredVolumes
from medcl.errors import MedclError
from medcl.train.patches import PatchViews, collate_patches
from medcl.train.resume import ResumableLoader
from medcl.transforms import AugmentPreset


class LoaderViews:
    """The preset's loader-side views of one image (``AugmentPreset.sample_views``), as a
    picklable callable: DataLoader workers started by ``spawn`` or ``forkserver`` (the default
    inside a process started by ``spawn``, as ``medcl efficiency --workers`` does, and on macOS)
    pickle the dataset with its transform, which a lambda defeats.

    Args:
        preset: The modality preset.
        views: Views per image.
        single: Return the one view without its view axis (3-D patches).
    """

    def __init__(self, preset: AugmentPreset, views: int, single: bool = False) -> None:
        self.preset, self.views, self.single = preset, views, single

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.preset.sample_views(x, self.views)
        return out[0] if self.single else out


class PretrainData(L.LightningDataModule):
    """Train/val loaders for :class:`~medcl.train.module.PretrainModule`.

    Args:
        cfg: The run config (``data`` and ``augment`` sections are used).
        manifest: A split manifest.
        preset: The augmentation preset; its per-sample part runs in the loader.
        dims: Spatial dimensions of the images.
        progress: Show the training set's loading bar and its in-memory/streamed line on the
            console (the choice is logged either way).
    """

    def __init__(
        self,
        cfg: Config,
        manifest: Manifest,
        preset: AugmentPreset,
        dims: int,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.progress = progress
        self.manifest = manifest
        self.preset = preset
        self.dims = dims
        self.train_set: ImageSet | PatchViews | None = None
        self.val_set: ImageSet | StoredVolumes | None = None
        self.bank_set: ImageSet | StoredVolumes | None = None
        self.patches = cfg.data.volume_mode == "patches" and dims == 3
        self.labelled_share = 0.0
        self._train_loader: ResumableLoader | None = None
        self._loader_state: dict[str, int] | None = None

    def state_dict(self) -> dict[str, dict[str, int]]:
        """Saved in every checkpoint: the training loader's position in its epoch."""
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, dict[str, int]]) -> None:
        """Restored on resume, before the training loader is created (or into it)."""
        self._loader_state = state_dict.get("train_loader")
        if self._train_loader is not None and self._loader_state is not None:
            self._train_loader.load_state_dict(self._loader_state)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        df = self.manifest.df
        train = self.manifest.subset(df["split"] == "train")
        if len(train) == 0:
            raise MedclError("the manifest has no train rows; run `medcl split` first")
        views = self.cfg.augment.views
        preset = self.preset
        if self.patches:
            d = self.cfg.data
            self.train_set = PatchViews(
                StoredVolumes(train, d.in_memory, d.memory_budget_mb),
                d.patch_size,
                d.patches_per_volume,
                views,
                None if preset.per_sample is None else LoaderViews(preset, 1, single=True),
            )
        else:
            self.train_set = self._images(train, progress=self.progress)
            if self.preset.per_sample is not None:
                self.train_set.transform = LoaderViews(preset, views)
        val = self.manifest.subset((df["split"] == "val") & (df["label"] != ""))
        bank = train.subset(train.df["label"] != "")
        if len(val) and len(bank) and self.patches:
            d = self.cfg.data
            self.val_set = StoredVolumes(val, d.in_memory, d.memory_budget_mb)
            self.bank_set = StoredVolumes(bank, d.in_memory, d.memory_budget_mb)
        elif len(val) and len(bank):
            self.val_set = self._images(val)
            self.bank_set = self._images(bank)
        labelled = labelled_rows(self.train_set.labels).numpy()
        share = self.cfg.data.labelled_share
        n_lab, n_unl = int(labelled.sum()), int((~labelled).sum())
        self.labelled_share = auto_labelled_share(n_lab, n_unl) if share == "auto" else float(share)

    def _images(self, rows: Manifest, progress: bool = False) -> ImageSet:
        """``rows`` in memory or streamed, as ``data.in_memory`` and ``memory_budget_mb`` say."""
        d = self.cfg.data
        return open_images(
            rows,
            d.image_size,
            self.dims,
            in_memory=d.in_memory,
            memory_budget_mb=d.memory_budget_mb,
            progress=progress,
        )

    def train_dataloader(self) -> ResumableLoader:
        """Mixed batches of the training rows; its position in the epoch is saved in every
        checkpoint (:class:`~medcl.train.resume.ResumableLoader`)."""
        assert self.train_set is not None
        labelled = labelled_rows(self.train_set.labels).numpy()
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        sampler = MixedBatchSampler(
            np.flatnonzero(labelled),
            np.flatnonzero(~labelled),
            self.cfg.data.batch_size,
            self.labelled_share,
            num_replicas=world,
            rank=rank,
            seed=self.cfg.trainer.seed,
            groups=self.train_set.groups.numpy(),  # copied by the sampler
            images_per_patient=self.cfg.data.images_per_patient,
        )
        workers = self.cfg.data.num_workers
        if workers == "auto":
            workers = min(2, os.cpu_count() or 1) if self.preset.per_sample is not None else 0
        self._train_loader = ResumableLoader(
            self.train_set,
            sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=False,
            collate_fn=collate_patches if self.patches else None,
        )
        if self._loader_state is not None:
            self._train_loader.load_state_dict(self._loader_state)
        return self._train_loader

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(
            self.val_set,
            batch_size=1 if self.patches else 256,
            shuffle=False,
            generator=_private_generator(),
        )

    def bank_dataloader(self) -> DataLoader | None:
        """Labelled training rows, the reference set of the kNN monitor."""
        if self.bank_set is None:
            return None
        return DataLoader(
            self.bank_set,
            batch_size=1 if self.patches else 256,
            shuffle=False,
            generator=_private_generator(),
        )


def _private_generator() -> torch.Generator:
    """A generator of the monitor's own: every DataLoader iterator draws its base seed from its
    loader's generator (the global one when none is given), so without this the kNN monitor would
    shift the training's random stream and change what is learned."""
    return torch.Generator().manual_seed(0)
