"""Datasets over a manifest's cache: the arrays that pretraining, fine-tuning and evaluation read.

One API, two ways of holding the images (:func:`open_images` picks one):

* :class:`CachedImages` holds the decoded, intensity-normalised arrays of a set of manifest rows
  (``cache_path``, written by ``medcl ingest``) in memory as one tensor, resized once to the run's
  image size. Fastest per item, but memory grows with the number of rows
  (N × s² × 4 bytes: 10⁶ images at 64² are 16 GB).
* :class:`StreamedImages` reads each item from disk when it is asked for (inside the DataLoader
  workers): the rows are resized once into one packed array file per row list and size
  (``name.cache/packed/<size>/<digest>.npy``, :mod:`medcl.data.packed`), built on first use and
  reused while the rows are unchanged; an item is one ``pread`` of its row. The resident memory of
  training then does not depend on the number of images.

``open_images(..., in_memory="auto")`` holds the images in memory when the resized set is smaller
than ``memory_budget_mb`` and streams them otherwise; the choice and its reason are logged (one
INFO line on the ``medcl.data.dataset`` logger, also printed to stderr with ``progress=True``, as
for the training set of ``medcl pretrain``).

``image_size=None`` means no resize: items are the cached arrays as stored (their shapes may
differ between rows, e.g. native-resolution volumes for patch sampling); the streamed set then
reads every row from its cache file (no packed file), and the in-memory set keeps a list when the
shapes differ (``.images`` then refuses).

Items are ``(image, label, group, index)`` for every set. :func:`manifest_geometry` reads the
spatial dimensions and modality of a manifest's rows. Nothing is decoded from DICOM during
training.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medcl.data.cache import array_file, load_cached, load_many
from medcl.data.manifest import Manifest
from medcl.data.packed import ArrayFile, pack_digest, packed_path, write_packed
from medcl.data.resize import resize_to
from medcl.data.split import patient_order
from medcl.errors import MedclError

log = logging.getLogger(__name__)

IN_MEMORY_CHOICES = ("auto", "true", "false")
_CHUNK = 4096  # rows read and resized together when loading or packing


class ImageSet(Dataset):
    """What every dataset over manifest rows carries: labels, patient groups, ids, modality.

    A subclass says how it holds the images in :meth:`_load` (called once, at the end of
    ``__init__``) and :meth:`image`.

    Args:
        manifest: The manifest (rows must have ``cache_path``).
        image_size: Target size of every spatial axis, or None to keep the cached size.
        dims: 2 or 3.
        progress: Show a progress bar while loading or packing.

    Attributes:
        labels: Class index per row (−1 = unlabelled), shape ``(N,)``; in a multi-label
            manifest the finding states, shape ``(N, K)`` (1 present, 0 absent, −1 unknown).
        multilabel: Whether :attr:`labels` holds findings.
        groups: Patient number per row (patients in their secret-free content order).
        image_ids: The rows' ``image_id``.
        modality: Common modality of the rows (``OT`` when mixed).
        transform: Optional callable image → tensor applied to each item (e.g.
            ``preset.sample_views``).
    """

    def __init__(
        self, manifest: Manifest, image_size: int | None, dims: int = 2, progress: bool = False
    ) -> None:
        df = manifest.df
        missing = df.index[df["cache_path"] == ""]
        if len(missing):
            raise MedclError(
                f"{len(missing)} manifest row(s) have no cache_path (first: "
                f"{df.loc[missing[0], 'image_id']}); re-run `medcl ingest`"
            )
        self.image_size = image_size
        self.dims = dims
        self.paths: list[str] = list(df["cache_path"])
        self.multilabel = manifest.multilabel
        if self.multilabel:
            self.labels = torch.from_numpy(manifest.findings().astype(np.int64))
        else:
            self.labels = torch.tensor(manifest.class_index().to_numpy().copy(), dtype=torch.long)
        # Patients numbered in their secret-free content order (not by pseudonymous key): the
        # patient-grouped batches and the patient bootstrap then do not depend on the secret.
        rank = {p: i for i, p in enumerate(patient_order(df))}
        self.groups = torch.tensor(df["patient_key"].map(rank).to_numpy(dtype="int64"))
        self.image_ids = list(df["image_id"])
        self.modality = manifest_geometry(manifest)[1] if len(df) else "OT"
        self.transform: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._load(manifest, progress)

    def _load(self, manifest: Manifest, progress: bool) -> None:
        """Read (or prepare to read) the rows' images; :attr:`paths` and the sizes are set."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> torch.Tensor:
        """Row ``i``'s image, resized, before ``transform``."""
        raise NotImplementedError

    @property
    def labelled(self) -> torch.Tensor:
        """``(N,)`` bool: the rows with a label (multi-label: at least one known finding)."""
        return labelled_rows(self.labels)

    def label(self, i: int) -> int | torch.Tensor:
        """Row ``i``'s label as an item carries it: an int, or the ``(K,)`` finding states."""
        return self.labels[i].clone() if self.multilabel else int(self.labels[i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor, int, int]:
        x = self.image(i)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.label(i), int(self.groups[i]), i

    def batch(self, index: Sequence[int] | None = None) -> torch.Tensor:
        """The images of ``index`` (default: all rows) as one tensor ``(n, 1, …)``.

        Raises:
            MedclError: When the images differ in shape (``image_size=None``).
        """
        idx = range(len(self)) if index is None else index
        items = [self.image(int(i)) for i in idx]
        return _stack(items, self.image_size, self.dims)

    @property
    def images(self) -> torch.Tensor:
        """All images as one tensor (:meth:`batch` of every row)."""
        return self.batch()


class CachedImages(ImageSet):
    """Images of some manifest rows held in memory, with their class index and patient group.

    Args:
        manifest: The manifest (rows must have ``cache_path``).
        image_size: Target size; images are resized once on load (None: as cached).
        dims: 2 or 3.
        progress: Show a progress bar while loading.

    Items are ``(image, label, group, index)`` with label −1 for unlabelled rows.
    """

    def _load(self, manifest: Manifest, progress: bool) -> None:
        image_size, dims = self.image_size, self.dims
        self._list: list[torch.Tensor] | None = None
        self._images: torch.Tensor | None = None
        chunks = _resized_chunks(self.paths, image_size, dims, progress, "loading")
        if image_size is not None:  # one tensor filled chunk by chunk (no second copy)
            self._images = torch.empty((len(self.paths), 1) + (image_size,) * dims)
            for start, block in chunks:
                self._images[start : start + len(block)] = torch.stack(block)
            return
        items = [t for _start, block in chunks for t in block]
        if len({tuple(t.shape) for t in items}) > 1:
            self._list = items
        else:
            self._images = _stack(items, image_size, dims)

    def image(self, i: int) -> torch.Tensor:
        return self._list[i] if self._list is not None else self.images[i]

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            raise MedclError(
                "these images differ in shape (image_size=None); read them one at a time"
            )
        return self._images


class StreamedImages(ImageSet):
    """Images of some manifest rows read from disk one item at a time (bounded memory).

    With an ``image_size`` the rows are first resized into one packed array file under the cache
    folder (:mod:`medcl.data.packed`; built once, reused while the rows are unchanged), then each
    item is one read of its row. Without one (``None``), each item is read from its cache file as
    stored. When the packed file cannot be written (read-only cache), rows are read and resized
    one at a time.

    Args:
        manifest: The manifest (rows must have ``cache_path``).
        image_size: Target size of every spatial axis, or None.
        dims: 2 or 3.
        progress: Show a progress bar while packing.

    Attributes:
        packed: The packed array file, or None.
        built: Whether this open wrote the packed file (False: reused or none).
    """

    def _load(self, manifest: Manifest, progress: bool) -> None:
        image_size, dims = self.image_size, self.dims
        self.packed: Path | None = None
        self.built = False
        self._array: ArrayFile | None = None
        if image_size is None or not self.paths:
            return
        keys = [_key(p) for p in self.paths]
        settings = manifest.extra.get("ingest", {})
        settings = [settings.get("size"), settings.get("rules_version")]
        root = array_file(self.paths[0]).parent.parent
        target = packed_path(root, image_size, pack_digest(keys, image_size, dims, settings))
        if not target.is_file():
            try:
                write_packed(
                    target,
                    len(self.paths),
                    (1,) + (image_size,) * dims,
                    (
                        (s, torch.stack(b).numpy())
                        for s, b in _resized_chunks(
                            self.paths, image_size, dims, progress, "packing"
                        )
                    ),
                    {"image_size": image_size, "dims": dims},
                )
                self.built = True
            except OSError:
                log.info("packed cache not writable under %s; reading rows one by one", root)
                return
        self.packed = target
        self._array = ArrayFile(target)
        if len(self._array) != len(self.paths):
            raise MedclError(f"{target}: packed array has the wrong number of rows; delete it")

    def image(self, i: int) -> torch.Tensor:
        if self._array is not None:
            return torch.from_numpy(self._array.row(i))
        x = torch.from_numpy(load_cached(self.paths[i]))
        return x if self.image_size is None else resize_to(x, self.image_size, self.dims)

    def __getitems__(self, index: Sequence[int]) -> list[tuple[torch.Tensor, int, int, int]]:
        """A DataLoader batch: the rows read together (runs of consecutive rows in one read)."""
        if self._array is None:
            return [self[int(i)] for i in index]
        idx = [int(i) for i in index]
        block = torch.from_numpy(self._array.rows(idx))
        groups = self.groups.numpy()
        out = []
        for x, i in zip(block, idx, strict=True):
            if self.transform is not None:
                x = self.transform(x)
            out.append((x, self.label(i), int(groups[i]), i))
        return out

    @property
    def images(self) -> LazyStack:  # type: ignore[override]
        """A read-on-demand stack of the rows (:class:`LazyStack`; :meth:`batch` for a tensor)."""
        return LazyStack(self)

    def batch(self, index: Sequence[int] | None = None) -> torch.Tensor:
        """The images of ``index`` (default: all) as one tensor, read in chunks.

        This holds them all in memory: use it for the sets that fit (evaluation, embedding).
        """
        if self._array is None:
            return super().batch(index)
        idx = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        out = torch.empty((len(idx), *self._array.row_shape), dtype=torch.float32)
        for s in range(0, len(idx), _CHUNK):
            out[s : s + _CHUNK] = torch.from_numpy(self._array.rows(idx[s : s + _CHUNK]))
        return out


class LazyStack:
    """The images of a :class:`StreamedImages` as a stack that reads rows when indexed.

    ``stack[i]`` is one image, ``stack[a:b]`` (or a list of indices) one tensor of those rows;
    ``len`` and ``shape`` describe the whole stack without reading it. Code written for the
    in-memory ``.images`` tensor that walks it in slices (``Classifier.embed``/``predict_proba``)
    then reads one batch at a time; :meth:`materialise` reads everything.
    """

    dtype = torch.float32

    def __init__(self, ds: StreamedImages) -> None:
        self._ds = ds

    def __len__(self) -> int:
        return len(self._ds)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, 1, s, …)``.

        Raises:
            MedclError: Rows of different shapes (``image_size=None``).
        """
        ds = self._ds
        if ds.image_size is None:
            raise MedclError("these images differ in shape (image_size=None); no common shape")
        return (len(ds), 1) + (ds.image_size,) * ds.dims

    def __getitem__(self, key: int | slice | Sequence[int]) -> torch.Tensor:
        if isinstance(key, slice):
            return self._ds.batch(range(*key.indices(len(self))))
        if isinstance(key, int | np.integer):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} outside {len(self)} rows")
            return self._ds.image(i)
        return self._ds.batch([int(i) for i in key])

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self._ds.image(i) for i in range(len(self)))

    def materialise(self) -> torch.Tensor:
        """Every row as one tensor (memory: N × the image size)."""
        return self._ds.batch()


def labelled_rows(labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(N,)`` bool: rows with a label, from ``(N,)`` class indices (≥ 0) or ``(N, K)`` finding
    states (at least one finding known)."""
    t = torch.as_tensor(labels)
    return t >= 0 if t.ndim == 1 else (t >= 0).any(dim=1)


def resized_bytes(manifest: Manifest, image_size: int | None, dims: int) -> int:
    """Bytes the rows take as float32 tensors at ``image_size`` (None: their cached size)."""
    n = len(manifest.df)
    if image_size is not None:
        return 4 * n * image_size**dims
    df = manifest.df
    per = df["rows"].fillna(1).astype("int64") * df["cols"].fillna(1).astype("int64")
    if dims == 3:
        per = per * df["slices"].fillna(1).astype("int64")
    return 4 * int(per.sum())


def open_images(
    manifest: Manifest,
    image_size: int | None,
    dims: int = 2,
    *,
    in_memory: str | bool = "auto",
    memory_budget_mb: float = 1024,
    progress: bool = False,
) -> ImageSet:
    """The dataset of ``manifest``'s rows, in memory or streamed (module docstring).

    Args:
        manifest: The rows (must have ``cache_path``).
        image_size: Target size of every spatial axis; None keeps the cached arrays as stored
            (shapes may differ between rows; no packed file).
        dims: 2 or 3.
        in_memory: ``"auto"`` (in memory when the resized set is under ``memory_budget_mb``),
            ``True``/``"true"`` or ``False``/``"false"``.
        memory_budget_mb: The ``auto`` threshold in MiB.
        progress: Progress bar while loading or packing, and the choice line also on stderr.

    Returns:
        A :class:`CachedImages` or a :class:`StreamedImages`; both have ``labels``, ``groups``,
        ``image_ids``, ``modality``, ``transform``, ``batch()`` and ``images`` (a tensor in
        memory, a :class:`LazyStack` read slice by slice when streamed).

    Raises:
        MedclError: A bad ``in_memory`` value or rows without cache.
    """
    choice = str(in_memory).lower()
    if choice not in IN_MEMORY_CHOICES:
        raise MedclError(f"in_memory must be auto, true or false, not {in_memory!r}")
    mb = resized_bytes(manifest, image_size, dims) / 2**20
    n = len(manifest.df)
    if choice == "auto":
        hold = mb < memory_budget_mb
        why = f"auto: {mb:.0f} MB {'under' if hold else 'over'} the {memory_budget_mb:g} MB budget"
    else:
        hold = choice == "true"
        why = f"in_memory={choice}"
    if hold:
        _say(f"images: {n} rows ({mb:.0f} MB) held in memory ({why})", progress)
        return CachedImages(manifest, image_size, dims, progress)
    ds = StreamedImages(manifest, image_size, dims, progress)
    how = (
        f"streamed from {'a new' if ds.built else 'the'} packed cache file {ds.packed.name}"
        if ds.packed is not None
        else "streamed from the cache files"
    )
    _say(f"images: {n} rows ({mb:.0f} MB) {how} ({why})", progress)
    return ds


def _say(line: str, console: bool) -> None:
    """The choice line: INFO on this module's logger, and on stderr for console runs."""
    log.info(line)
    if console:
        print(line, file=sys.stderr)


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


def _key(path: str) -> str:
    """A row's cache reference without its folder (``<key>.npy`` or ``<shard>.npy#<row>``)."""
    return path.rsplit("/", 1)[-1]


def _resized_chunks(
    paths: list[str], image_size: int | None, dims: int, progress: bool, what: str
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """``(start, images)`` per chunk of rows: read together, each resized like one item."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc=f"{what} cache", unit="img", leave=False)
    for start in range(0, len(paths), _CHUNK):
        arrays = load_many(paths[start : start + _CHUNK])
        out = [torch.from_numpy(a) for a in arrays]
        if image_size is not None:
            out = _resize_all(out, image_size, dims)
        if bar is not None:
            bar.update(len(out))
        yield start, out
    if bar is not None:
        bar.close()


def _resize_all(items: list[torch.Tensor], size: int, dims: int) -> list[torch.Tensor]:
    """Each image resized to ``size`` as :func:`resize_to` does it alone; equal shapes batched."""
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) == 1:
        return list(resize_to(torch.stack(items), size, dims).unbind(0))
    return [resize_to(t, size, dims) for t in items]


def _stack(items: list[torch.Tensor], image_size: int | None, dims: int) -> torch.Tensor:
    if not items:
        return torch.zeros((0, 1) + ((image_size or 1),) * dims)
    if len({tuple(t.shape) for t in items}) > 1:
        raise MedclError("these images differ in shape (image_size=None); read them one at a time")
    return torch.stack(items)
