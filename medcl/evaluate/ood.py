"""Out-of-distribution flags: inputs unlike the model's training data are marked, never silently.

At export, :func:`describe_training` records what the model was trained on in ``metadata.json``
under ``training_distribution`` and returns an embedding bank saved as
``model/train_embeddings.npy``:

- ``modality``: the training rows' modalities (manifest column ``modality``);
- ``spatial_dims``: 2 or 3; ``volume_sources``: whether any training source file held a volume
  (several CT/MR/PET/NM rows from one file: a NIfTI's slices, a multi-frame DICOM; or a header
  probe saying so);
- ``intensity``: the cached-value conventions (``hu`` for CT, ``unit`` otherwise);
- ``pixel_spacing_mm``: the in-plane pixel spacing range at the model's input size, i.e.
  ``spacing × cols / image_size`` (images are resized to ``image_size`` before the encoder, so this
  is the millimetres one model pixel covers); a relative tolerance of
  :data:`SPACING_TOLERANCE` is allowed on either side;
- ``slice_spacing_mm`` (3-D models only): the same for the slice axis, ``spacing_z × slices /
  image_size`` (volumes are resized to ``image_size`` along every axis), with the same tolerance;
  a volume sampled much more coarsely or finely along z than the training volumes is flagged;
- ``colour``: whether any training source was colour (RGB, YBR, palette; medcl feeds luma), from
  the sources' headers when their paths are known, else ``false`` for modalities whose DICOM IODs
  allow only monochrome (CT, MR, PET, CR, DX, MG), else unknown (``null``, check skipped);
- ``embedding``: ``k`` (:data:`K`), the cosine distance ``1 − cos`` of an image's L2-normalised
  encoder embedding to its ``k``-th nearest neighbour in the bank (at most :data:`BANK_CAP`
  training images, drawn with a fixed seed), and the threshold: the :data:`QUANTILE` quantile of
  that distance over the validation split. By construction about 1 % of validation images exceed
  it; an input above it is farther from the training images than nearly all validation images.
  The 5th neighbour (not the 1st) keeps a single near-duplicate training image from hiding an
  outlier.

At prediction, :func:`check_rows` compares every input row with that record and returns
``in_distribution`` and a ``;``-joined ``reason``. A model folder written before this record
exists is still checked on what its metadata holds (modality, dimensionality, intensity); the
reason then says which checks could not run.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medcl.data.manifest import Manifest
from medcl.evaluate.classifier import Classifier
from medcl.models.description import ModelDescription

KEY = "training_distribution"
"""The record's key in ``metadata.json`` (:attr:`ModelDescription.training_distribution`)."""
BANK_FILE = "train_embeddings.npy"
K = 5
QUANTILE = 0.99
BANK_CAP = 2000
VAL_CAP = 2000
SPACING_TOLERANCE = 0.1
PROBE_CAP = 500
_VOLUME_MODALITIES = {"CT", "MR", "PT", "NM"}
# DICOM IODs of these modalities allow only MONOCHROME1/2 (PS3.3 C.8): never colour
_MONOCHROME_MODALITIES = {"CT", "MR", "PT", "CR", "DX", "MG", "XR"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


@dataclass(frozen=True)
class SourceInfo:
    """What a source file's header says about colour and dimensionality (``None``: unknown)."""

    colour: bool | None = None
    volume: bool | None = None


def probe_source(path: str | Path) -> SourceInfo:
    """Read only the header of ``path`` (DICOM, NIfTI, PNG/JPEG/TIFF …) for colour and volume.

    Never raises: an unreadable or unknown file gives ``SourceInfo()``.
    """
    p = Path(path)
    if not p.is_file():
        return SourceInfo()
    name = p.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            shape = nib.load(str(p)).shape
            return SourceInfo(colour=False, volume=len(shape) >= 3 and shape[2] > 1)
        if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
            from PIL import Image

            with Image.open(p) as im:
                return SourceInfo(colour=im.mode not in _GREY_MODES, volume=False)
        if name.endswith(".npz"):
            return SourceInfo()
        import pydicom

        with warnings.catch_warnings():  # the decode already reported on this file
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        if "PhotometricInterpretation" not in ds and "SamplesPerPixel" not in ds:
            return SourceInfo()
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        pi = str(ds.get("PhotometricInterpretation", "")).upper()
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        modality = str(ds.get("Modality", "")).upper()
        return SourceInfo(
            colour=samples > 1 or pi == "PALETTE COLOR",
            volume=frames > 1 and modality in _VOLUME_MODALITIES,
        )
    except Exception:  # noqa: BLE001 - a probe: unknown is a valid answer
        return SourceInfo()


def probe_sources(paths: Iterable[str]) -> dict[str, SourceInfo]:
    """:func:`probe_source` of each distinct path."""
    return {p: probe_source(p) for p in dict.fromkeys(str(x) for x in paths)}


def input_spacing(df: pd.DataFrame, image_size: int) -> np.ndarray:
    """In-plane pixel spacing (mm) at the model's input size, ``(N, 2)``; NaN where unknown."""
    sx = pd.to_numeric(df["spacing_x"], errors="coerce").to_numpy(dtype=float)
    sy = pd.to_numeric(df["spacing_y"], errors="coerce").to_numpy(dtype=float)
    cols = pd.to_numeric(df["cols"], errors="coerce").to_numpy(dtype=float)
    rows = pd.to_numeric(df["rows"], errors="coerce").to_numpy(dtype=float)
    return np.stack([sx * cols / image_size, sy * rows / image_size], axis=1)


def normalised(emb: torch.Tensor | np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows."""
    t = torch.as_tensor(np.asarray(emb), dtype=torch.float32)
    return F.normalize(t, dim=1).numpy()


def slice_spacing(df: pd.DataFrame, image_size: int) -> np.ndarray:
    """Slice spacing (mm) at the model's input size, ``spacing_z × slices / image_size``, ``(N,)``;
    NaN where unknown or for single-slice rows."""
    nan = pd.Series(np.nan, index=df.index)
    sz = pd.to_numeric(df.get("spacing_z", nan), errors="coerce").to_numpy(dtype=float)
    slices = pd.to_numeric(df.get("slices", nan), errors="coerce").to_numpy(dtype=float)
    out = sz * slices / image_size
    out[~(slices > 1) | ~(sz > 0)] = np.nan
    return out


def _spacing_range(values: np.ndarray, image_size: int) -> dict[str, Any] | None:
    """The record of a spacing range (``min``, ``max``, ``at_image_size``, ``tolerance``), or
    ``None`` when no value is known."""
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "at_image_size": image_size,
        "tolerance": SPACING_TOLERANCE,
    }


def knn_distance(emb: np.ndarray, bank: np.ndarray, k: int = K) -> np.ndarray:
    """``1 − cos`` of each (normalised) row of ``emb`` to its ``k``-th nearest bank row."""
    if len(emb) == 0 or len(bank) == 0:
        return np.full(len(emb), np.nan)
    sim = torch.as_tensor(emb) @ torch.as_tensor(bank).T
    kk = min(k, sim.shape[1])
    return (1.0 - sim.topk(kk, dim=1).values[:, -1]).numpy().astype(float)


def _sample(m: Manifest, cap: int, seed: int) -> Manifest:
    if len(m) <= cap:
        return m
    idx = np.sort(np.random.default_rng(seed).choice(len(m), cap, replace=False))
    mask = np.zeros(len(m), dtype=bool)
    mask[idx] = True
    return m.subset(mask)


def _any(values: Iterable[bool | None]) -> bool | None:
    known = [v for v in values if v is not None]
    return any(known) if known else None


def source_paths(df: pd.DataFrame, path_map: dict[str, str] | None = None) -> list[str]:
    """Per row, its real source file: the ``path`` column, else ``source_id`` looked up in the
    private path map (:class:`medcl.data.pseudonym.PathMap`), else ``""``. In memory only."""
    mapping = path_map or {}
    paths = df["path"].astype(str) if "path" in df.columns else pd.Series([""] * len(df))
    sids = df["source_id"].astype(str) if "source_id" in df.columns else pd.Series([""] * len(df))
    return [p or mapping.get(s, "") for p, s in zip(paths, sids, strict=True)]


def _multi_row_volumes(df: pd.DataFrame) -> np.ndarray:
    """Rows of a cross-sectional modality whose source file gave several rows (a volume's slices or
    a multi-frame CT/MR), by ``source_id`` (else ``path``)."""
    if len(df) == 0:
        return np.zeros(0, dtype=bool)
    sid = df["source_id"].astype(str) if "source_id" in df.columns else df["path"].astype(str)
    key = sid.where(sid != "", df["path"].astype(str))
    counts = key.map(key.value_counts())
    multi = (key != "") & (counts > 1)
    return (multi & df["modality"].astype(str).isin(_VOLUME_MODALITIES)).to_numpy()


def describe_training(
    clf: Classifier, manifest: Manifest, seed: int = 0, path_map: dict[str, str] | None = None
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The training-distribution record and the embedding bank of a fitted classifier.

    Args:
        clf: The :class:`~medcl.evaluate.classifier.Classifier` (its final weights).
        manifest: The split manifest it was trained on (``train`` rows describe the distribution,
            ``val`` rows calibrate the embedding threshold).
        seed: Seed of the bank's sample when there are more than :data:`BANK_CAP` training rows.
        path_map: ``source_id`` → real path, to read the sources' headers (colour, volume) when
            the manifest carries no paths; without it colour is known for the monochrome-only
            modalities only.

    Returns:
        ``(record, bank)``: the record for ``metadata.json`` and the ``(n, F)`` float32 bank, or
        ``None`` when there are no training rows.
    """
    size, dims = clf.description.image_size, clf.description.spatial_dims
    df = manifest.df
    train = manifest.subset(df["split"] == "train")
    val = manifest.subset(df["split"] == "val")
    record: dict[str, Any] = {
        "modality": sorted({str(v) for v in train.df["modality"] if str(v)}),
        "spatial_dims": dims,
        "intensity": sorted({str(v) for v in train.df["intensity"] if str(v)}),
        "pixel_spacing_mm": _spacing_range(input_spacing(train.df, size), size),
        "colour": None,
        "volume_sources": None,
        "embedding": None,
    }
    if dims == 3:
        record["slice_spacing_mm"] = _spacing_range(slice_spacing(train.df, size), size)
    paths = [p for p in dict.fromkeys(source_paths(train.df, path_map)) if p]
    if len(paths) > PROBE_CAP:
        keep = np.random.default_rng(seed).choice(len(paths), PROBE_CAP, replace=False)
        paths = [paths[i] for i in sorted(keep)]
    infos = list(probe_sources(paths).values())
    colour = _any(i.colour for i in infos)
    if colour is None and record["modality"] and set(record["modality"]) <= _MONOCHROME_MODALITIES:
        colour = False
    record["colour"] = colour
    record["volume_sources"] = bool(_multi_row_volumes(train.df).any()) or bool(
        _any(i.volume for i in infos)
    )
    if len(train) == 0:
        return record, None
    bank_rows = _sample(train, BANK_CAP, seed)
    bank = normalised(clf.embed(clf.images(bank_rows).images))
    threshold = None
    if len(val):
        val_rows = _sample(val, VAL_CAP, seed)
        dist = knn_distance(normalised(clf.embed(clf.images(val_rows).images)), bank)
        threshold = float(np.quantile(dist, QUANTILE))
    record["embedding"] = {
        "file": BANK_FILE,
        "rows": int(len(bank)),
        "k": K,
        "distance": "1 - cosine similarity to the k-th nearest training embedding",
        "threshold": threshold,
        "calibration": f"{QUANTILE:g} quantile over {len(val)} validation images",
    }
    return record, bank


def save_bank(model_dir: str | Path, bank: np.ndarray) -> Path:
    """Write the embedding bank next to the weights."""
    from medcl.io import atomic_path

    target = Path(model_dir) / BANK_FILE
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(bank, dtype=np.float32), allow_pickle=False)
    return target


def load_bank(model_dir: str | Path) -> np.ndarray | None:
    """The bank saved by :func:`save_bank`, or ``None`` (an older model folder)."""
    p = Path(model_dir) / BANK_FILE
    return np.load(p, allow_pickle=False) if p.is_file() else None


def _fmt(v: float) -> str:
    return f"{v:.3g}"


@dataclass
class Flags:
    """Per-row results of :func:`check_rows`.

    Attributes:
        in_distribution: ``(N,)`` bools.
        reason: ``(N,)`` strings, ``""`` for rows in distribution.
        kinds: Per row, the short names of the checks that flagged it (for the summary).
        unchecked: Checks that could not run for this model (an older model folder).
    """

    in_distribution: np.ndarray
    reason: list[str]
    kinds: list[list[str]]
    unchecked: list[str]

    def summary(self) -> str:
        """One console line: how many rows were flagged, by reason."""
        n, flagged = len(self.reason), int((~self.in_distribution).sum())
        counts = Counter(k for ks in self.kinds for k in ks)
        line = f"out-of-distribution check: {flagged} of {n} inputs flagged"
        if counts:
            line += " (" + ", ".join(f"{k}: {c}" for k, c in sorted(counts.items())) + ")"
        if self.unchecked:
            line += "; not checked (model folder has no training-distribution record): " + (
                ", ".join(self.unchecked)
            )
        return line


def _legacy_record(description: ModelDescription) -> dict[str, Any]:
    modality = description.modality
    return {
        "modality": [modality] if modality else [],
        "spatial_dims": description.spatial_dims,
        "intensity": ["hu"] if modality == "CT" else ["unit"] if modality else [],
    }


def check_rows(
    description: ModelDescription,
    df: pd.DataFrame,
    embeddings: torch.Tensor | np.ndarray | None,
    bank: np.ndarray | None,
    sources: dict[str, SourceInfo] | None = None,
    source_paths: Iterable[str] | None = None,
) -> Flags:
    """Compare every input row with the model's training distribution.

    Args:
        description: The model's description (its ``training_distribution`` when present).
        df: The input rows (manifest columns ``modality``, ``intensity``, ``dims``, ``slices``,
            ``rows``, ``cols``, ``spacing_x``, ``spacing_y``, ``spacing_z``).
        embeddings: Encoder features of the rows, ``(N, F)``.
        bank: The training embedding bank (:func:`load_bank`).
        sources: :func:`probe_sources` of the rows' source files.
        source_paths: Per row, its source file (the key into ``sources``).

    Returns:
        The :class:`Flags`.
    """
    rec = description.training_distribution
    unchecked: list[str] = []
    if rec is None:
        rec = _legacy_record(description)
        unchecked = ["pixel spacing", "colour", "embedding distance"]
    n = len(df)
    reasons: list[list[str]] = [[] for _ in range(n)]
    kinds: list[list[str]] = [[] for _ in range(n)]

    def flag(i: int, kind: str, text: str) -> None:
        reasons[i].append(text)
        kinds[i].append(kind)

    mods = [str(m) for m in rec.get("modality") or []]
    shown_mod = "/".join(mods)
    intens = [str(v) for v in rec.get("intensity") or []]
    model_dims = int(rec.get("spatial_dims", description.spatial_dims))
    pairs = zip(df["modality"].astype(str), df["intensity"].astype(str), strict=True)
    for i, (mod, inten) in enumerate(pairs):
        if mods and mod not in mods:
            flag(i, f"modality {mod or '?'} ≠ {shown_mod}", f"modality {mod or '?'} ≠ {shown_mod}")
        if intens and inten and inten not in intens:
            text = f"intensity {inten} ≠ {'/'.join(intens)}"
            flag(i, text, text)
    paths = [str(p) for p in source_paths] if source_paths is not None else [""] * n
    info = [(sources or {}).get(p, SourceInfo()) for p in paths]
    multi = _multi_row_volumes(df) if n else np.zeros(0, dtype=bool)
    slices = pd.to_numeric(df["slices"], errors="coerce").fillna(1).to_numpy()
    for i in range(n):
        if model_dims == 3 and slices[i] <= 1:
            flag(i, "2-D input, model is 3-D", "2-D input, model is 3-D")
        elif (
            model_dims == 2 and (info[i].volume or multi[i]) and rec.get("volume_sources") is False
        ):
            flag(i, "3-D input, model is 2-D", "3-D input, model is 2-D")
        if info[i].colour and rec.get("colour") is False:
            flag(i, "colour input", "colour input")
    checks = [("pixel_spacing_mm", "pixel spacing", input_spacing)]
    if model_dims == 3:
        checks.append(("slice_spacing_mm", "slice spacing", slice_spacing))
    for key, what, measure in checks:
        sp_rec = rec.get(key)
        if not sp_rec:
            continue
        size = int(sp_rec.get("at_image_size") or description.image_size)
        tol = float(sp_rec.get("tolerance", SPACING_TOLERANCE))
        lo, hi = float(sp_rec["min"]) * (1 - tol), float(sp_rec["max"]) * (1 + tol)
        sp = measure(df, size).reshape(n, -1)
        for i in range(n):
            vals = sp[i][np.isfinite(sp[i])]
            out = [v for v in vals if v < lo or v > hi]
            if out:
                worst = max(out, key=lambda v: max(lo - v, v - hi))
                flag(
                    i,
                    f"{what} outside the training range",
                    f"{what} {_fmt(worst)} mm outside [{_fmt(lo)}, {_fmt(hi)}] mm (at {size} px)",
                )
    emb_rec = rec.get("embedding") or {}
    threshold = emb_rec.get("threshold")
    if threshold is not None and bank is not None and embeddings is not None and n:
        dist = knn_distance(normalised(embeddings), bank, int(emb_rec.get("k", K)))
        for i in range(n):
            if dist[i] > threshold:
                flag(
                    i,
                    "embedding distance above threshold",
                    f"embedding distance {_fmt(dist[i])} > {_fmt(threshold)}",
                )
    elif description.training_distribution is not None and (threshold is None or bank is None):
        unchecked.append("embedding distance")
    flagged = np.array([bool(r) for r in reasons], dtype=bool)
    note = f"not checked: {', '.join(unchecked)}" if unchecked else ""
    text = ["; ".join(r + ([note] if note else [])) for r in reasons]
    return Flags(~flagged, text, kinds, unchecked)


def check_inputs(
    clf: Classifier, df: pd.DataFrame, images: torch.Tensor, path_map: dict[str, str] | None = None
) -> Flags:
    """:func:`check_rows` of prediction inputs: embeds ``images`` and probes the files in ``path``.

    Args:
        clf: The loaded :class:`~medcl.evaluate.classifier.Classifier` (``ood_bank`` may be
            ``None``).
        df: The rows' manifest columns.
        images: The rows' images in cache units, as the model reads them.
        path_map: ``source_id`` → real path (the private path map), for the header probes.
    """
    paths = source_paths(df, path_map)
    return check_rows(
        clf.description,
        df,
        clf.embed(images),
        clf.ood_bank,
        probe_sources(paths),
        paths,
    )


def refuse_flagged(table: pd.DataFrame, rejects: Path) -> pd.DataFrame:
    """``--strict``: move the rows with ``in_distribution`` False from ``table`` to ``rejects``.

    The rejects CSV (made by ingest, or new) gains one row per refused input with the reason
    ``out of distribution: …``; its columns are kept (those of ``table`` it lacks are left out).

    Returns:
        The rows that stay (in distribution).
    """
    keep = table["in_distribution"].astype(bool).to_numpy()
    refused = table[~keep]
    if len(refused):
        old = pd.read_csv(rejects, dtype=str, keep_default_na=False) if rejects.is_file() else None
        ident = [c for c in ("path", "source_id", "image_id") if c in table.columns]
        cols = list(old.columns) if old is not None else [*ident, "reason"]
        new = pd.DataFrame({c: refused[c].astype(str) for c in cols if c in table.columns})
        new["reason"] = "out of distribution: " + refused["reason"].astype(str)
        merged = pd.concat([old, new[[c for c in cols if c in new.columns]]], ignore_index=True)
        from medcl.io import atomic_path

        with atomic_path(rejects) as tmp:
            merged.to_csv(tmp, index=False)
    return table[keep].reset_index(drop=True)
