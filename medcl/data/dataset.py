"""Datasets over a manifest's cache: the arrays that pretraining, fine-tuning and evaluation read.

:class:`CachedImages` holds the decoded, intensity-normalised arrays of a set of manifest rows
(``cache_path``, written by ``medcl ingest``), resized once to the run's image size. Small cohorts
are kept in memory as one tensor; nothing is decoded from DICOM during training.
:func:`manifest_geometry` reads the spatial dimensions and modality of a manifest's rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset

from medcl.data.cache import load_cached
from medcl.data.manifest import Manifest
from medcl.data.resize import resize_to
from medcl.data.split import patient_order
from medcl.errors import MedclError


class CachedImages(Dataset):
    """Images of some manifest rows, with their class index and patient group.

    Args:
        manifest: The manifest (rows must have ``cache_path``).
        image_size: Target size; images are resized once on load.
        dims: 2 or 3.
        progress: Show a progress bar while loading.

    Items are ``(image, label, group, index)`` with label −1 for unlabelled rows.
    """

    def __init__(
        self, manifest: Manifest, image_size: int, dims: int = 2, progress: bool = False
    ) -> None:
        df = manifest.df
        missing = df.index[df["cache_path"] == ""]
        if len(missing):
            raise MedclError(
                f"{len(missing)} manifest row(s) have no cache_path (first: "
                f"{df.loc[missing[0], 'image_id']}); re-run `medcl ingest`"
            )
        paths = list(df["cache_path"])
        it: Sequence[str] | Iterator[str] = paths
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(paths, desc="loading cache", unit="img", leave=False)
        images = [resize_to(torch.from_numpy(load_cached(p)), image_size, dims) for p in it]
        self.images = torch.stack(images) if images else torch.zeros((0, 1) + (image_size,) * dims)
        self.labels = torch.tensor(manifest.class_index().to_numpy().copy(), dtype=torch.long)
        # Patients numbered in their secret-free content order (not by pseudonymous key): the
        # patient-grouped batches and the patient bootstrap then do not depend on the secret.
        rank = {p: i for i, p in enumerate(patient_order(df))}
        self.groups = torch.tensor(df["patient_key"].map(rank).to_numpy(dtype="int64"))
        self.image_ids = list(df["image_id"])
        self.modality = manifest_geometry(manifest)[1]
        self.transform = None  # optional callable image -> tensor (e.g. preset.sample_views)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i]), int(self.groups[i]), i


def manifest_geometry(m: Manifest, source: str = "manifest") -> tuple[int, str]:
    """The spatial dimensions and the modality of a manifest's rows.

    Returns:
        ``(dims, modality)``; modality is ``OT`` when rows mix modalities or carry none.

    Raises:
        MedclError: If 2-D and 3-D rows are mixed.
    """
    dims = sorted({int(d) for d in m.df["dims"].dropna()}) or [2]
    if len(dims) > 1:
        raise MedclError(f"{source}: mixes 2-D and 3-D rows; ingest them separately")
    mods = sorted(set(m.df["modality"]) - {""})
    return dims[0], mods[0] if len(mods) == 1 else "OT"
