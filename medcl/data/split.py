"""Patient-level train/val/test splits and few-label subsets.

Image-level splits put slices of one patient on both sides and inflate accuracy by tens of points
(Yagis et al., 2021), so every split here assigns *patients*, never images:

1. Each patient gets a stratum: the most frequent label among their images (``"?"`` if none).
2. Patients without a split are divided into train / val / test by a stratified shuffle over the
   patient table (scikit-learn ``train_test_split`` with ``stratify``; strata too small to stratify
   are pooled). Rows that already carry a split (e.g. MedMNIST's own) keep it.
3. ``label_fraction`` F keeps labels on a stratified, patient-level subset of the training patients
   holding about F of the labelled training images (at least one patient per class when F > 0) and
   blanks the other training labels: those images join the unlabelled pretraining pool. Validation
   and test keep every label, so the pool never contains a val/test patient. Alternatively,
   ``labels_per_class`` K keeps K labelled images of each class, from K different patients where
   the class has that many (:func:`apply_labels_per_class`): the number of images a clinician has
   to label, which a fraction hides.

The result is a deterministic function of the data and ``seed`` only, never of the project secret:
before the seeded splitter, patients are ordered by a secret-free *content key* (the SHA-256 of
their images' sorted ``sha256`` digests, see :func:`patient_order`), not by their pseudonymous
``patient_key`` (an HMAC of the secret). Two projects with different secrets that ingest the same
files get the same split for the same seed, and the order of the manifest's rows does not matter.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from medcl.data.findings import decode_labels
from medcl.data.manifest import Manifest, validate
from medcl.errors import MedclError

_UNLABELLED = "?"


def patient_order(df: pd.DataFrame) -> pd.Index:
    """The patients of ``df`` in a secret-free, row-order-free order.

    Each patient's content key is ``sha256("\n".join(sorted(image sha256)))``; patients are sorted
    by it, ties (patients whose images carry no or identical digests) broken by ``patient_key``.
    The key depends on the image bytes only, so a split seeded on this order is reproducible from
    the same files under any project secret.
    """
    digests = df.groupby("patient_key")["sha256"].agg(
        lambda s: hashlib.sha256("\n".join(sorted(map(str, s))).encode()).hexdigest()
    )
    order = sorted(digests.index, key=lambda p: (digests[p], p))
    return pd.Index(order, name="patient_key")


def patient_strata(df: pd.DataFrame) -> pd.Series:
    """Per patient the most frequent label (ties broken by name), in :func:`patient_order`."""
    labelled = df[df["label"] != ""]
    counts = labelled.groupby(["patient_key", "label"]).size().reset_index(name="n")
    counts = counts.sort_values(["patient_key", "n", "label"], ascending=[True, False, True])
    top = counts.drop_duplicates("patient_key").set_index("patient_key")["label"]
    return top.reindex(patient_order(df)).fillna(_UNLABELLED).astype(str)


def _stratify_or_none(strata: pd.Series, n_pick: int) -> pd.Series | None:
    """Strata usable by ``train_test_split``: rare strata pooled, or None if still impossible."""
    s = strata.copy()
    counts = s.value_counts()
    rare = counts.index[counts < 2]
    if len(rare):
        s[s.isin(rare)] = "__rare__"
    counts = s.value_counts()
    n = len(s)
    if counts.min() < 2 or n_pick < len(counts) or n - n_pick < len(counts):
        return None
    return s


def _pick(patients: pd.Series, n_pick: int, seed: int) -> list[str]:
    """Choose ``n_pick`` patients (index) stratified by the series values."""
    if n_pick <= 0:
        return []
    if n_pick >= len(patients):
        return list(patients.index)
    strat = _stratify_or_none(patients, n_pick)
    chosen, _ = train_test_split(
        list(patients.index),
        train_size=n_pick,
        random_state=seed,
        stratify=None if strat is None else list(strat),
    )
    return list(chosen)


def assign_splits(m: Manifest, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Manifest:
    """Assign ``split`` to every row by patient; rows that already have one keep it.

    Args:
        m: The manifest.
        val: Fraction of (unassigned) patients for validation.
        test: Fraction of (unassigned) patients for test.
        seed: Random seed.

    Raises:
        MedclError: On fractions outside [0, 1) or summing to 1 or more.
    """
    for name, f in (("val", val), ("test", test)):
        if not 0.0 <= f < 1.0:
            raise MedclError(f"--{name} must be in [0, 1), got {f}")
    if val + test >= 1.0:
        raise MedclError(f"--val + --test must be below 1, got {val + test:.3f}")
    df = m.df.copy()
    preset = df[df["split"] != ""].groupby("patient_key")["split"].first()
    # a patient with some rows pre-assigned takes that split for all of its rows
    df.loc[df["split"] == "", "split"] = df["patient_key"].map(preset).fillna("")
    free = df[df["split"] == ""]
    strata = patient_strata(free) if len(free) else pd.Series(dtype=str)
    n = len(strata)
    n_test = int(round(test * n))
    n_val = int(round(val * n))
    if n and test > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if n and val > 0 and n_val == 0 and n >= 3:
        n_val = 1
    test_p = set(_pick(strata, n_test, seed))
    rest = strata.drop(index=list(test_p))
    val_p = set(_pick(rest, n_val, seed + 1))
    target = {
        p: ("test" if p in test_p else "val" if p in val_p else "train") for p in strata.index
    }
    mask = df["split"] == ""
    df.loc[mask, "split"] = df.loc[mask, "patient_key"].map(target)
    out = Manifest(df, list(m.classes), dict(m.extra))
    validate(out, check_files=False)
    return out


def apply_label_fraction(m: Manifest, fraction: float, seed: int = 0) -> Manifest:
    """Keep labels on about ``fraction`` of the labelled training images, chosen by patient.

    Patients are drawn stratified by their label until their images reach ``fraction`` of the
    labelled training images; when ``fraction > 0`` every class present in training keeps at least
    one patient. Val/test rows are untouched.

    Raises:
        MedclError: If ``fraction`` is outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise MedclError(f"--label-fraction must be in [0, 1], got {fraction}")
    df = m.df.copy()
    train_lab = df[(df["split"] == "train") & (df["label"] != "")]
    if fraction >= 1.0 or train_lab.empty:
        return Manifest(df, list(m.classes), dict(m.extra))
    strata = patient_strata(train_lab)
    sizes = train_lab.groupby("patient_key").size().reindex(strata.index)
    target = fraction * len(train_lab)
    rng = np.random.default_rng(seed)
    keep: list[str] = []
    if fraction > 0:
        # a random order within each class, then interleave classes in proportion to their size
        order: list[tuple[float, str]] = []
        for _cls, members in strata.groupby(strata):
            perm = rng.permutation(list(members.index))  # content order, not the key
            k = len(perm)
            order += [((j + rng.random()) / k, p) for j, p in enumerate(perm)]
        order.sort()
        seen: set[str] = set()
        count = 0
        for _, p in order:  # first patient of each class guarantees class coverage
            cls = strata[p]
            if cls not in seen:
                seen.add(cls)
                keep.append(p)
                count += int(sizes[p])
        for _, p in order:
            if count >= target:
                break
            if p not in keep and count + int(sizes[p]) <= max(target, 1) * 1.5:
                keep.append(p)
                count += int(sizes[p])
    blank = (df["split"] == "train") & (df["label"] != "") & ~df["patient_key"].isin(keep)
    df.loc[blank, "label"] = ""
    extra = dict(m.extra)
    extra["label_fraction"] = fraction
    return Manifest(df, list(m.classes), extra)


def apply_labels_per_class(m: Manifest, k: int, seed: int = 0) -> Manifest:
    """Keep labels on ``k`` training images of each class, blank the other training labels.

    For each class, its labelled training patients are taken in a seeded random order (of the
    secret-free :func:`patient_order`) and one image of each is kept in turn, so the ``k`` images
    come from ``k`` different patients when the class has that many; otherwise further rounds take
    a second image of each patient, and so on. A class with fewer than ``k`` labelled training
    images keeps them all. Val/test rows are untouched.

    In a multi-label manifest a "class" is a finding and its images are those where it is present
    (an image kept for one finding keeps its whole label); the images whose findings are all absent
    count as one more class, so the healthy images are not left to chance.

    Args:
        m: A split manifest.
        k: Labelled images per class (≥ 1).
        seed: Random seed.

    Raises:
        MedclError: If ``k < 1``.
    """
    if k < 1:
        raise MedclError(f"labels per class must be at least 1, got {k}")
    df = m.df.copy()
    train_lab = df[(df["split"] == "train") & (df["label"] != "")]
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for rows in _class_rows(m, train_lab):
        patients = patient_order(rows)
        queues = []
        for p in rng.permutation(np.asarray(patients, dtype=object)):
            mine = rows[rows["patient_key"] == p].sort_values(["sha256", "image_id"])
            queues.append(list(mine.index[rng.permutation(len(mine))]))
        taken: list[int] = []
        while len(taken) < k and any(queues):
            for q in queues:
                if q and len(taken) < k:
                    taken.append(q.pop(0))
        keep += [i for i in taken if i not in keep]
    blank = (df["split"] == "train") & (df["label"] != "") & ~df.index.isin(keep)
    df.loc[blank, "label"] = ""
    extra = dict(m.extra)
    extra["labels_per_class"] = int(k)
    n_all = len(train_lab)
    extra["label_fraction"] = len(keep) / n_all if n_all else 0.0
    return Manifest(df, list(m.classes), extra)


def split_manifest(
    m: Manifest, val: float = 0.15, test: float = 0.15, label_fraction: float = 1.0, seed: int = 0
) -> Manifest:
    """:func:`assign_splits` then :func:`apply_label_fraction` (see the module docstring)."""
    out = apply_label_fraction(assign_splits(m, val, test, seed), label_fraction, seed)
    out.extra.update({"split_seed": seed, "val": val, "test": test})
    return out


def split_summary(m: Manifest) -> pd.DataFrame:
    """Patients, images and labelled images per split."""
    df = m.df
    g = df.groupby("split")
    out = pd.DataFrame(
        {
            "patients": g["patient_key"].nunique(),
            "images": g.size(),
            "labelled": g["label"].apply(lambda s: int((s != "").sum())),
        }
    )
    return out.reindex([s for s in ("train", "val", "test", "") if s in out.index])


def _class_rows(m: Manifest, train_lab: pd.DataFrame) -> list[pd.DataFrame]:
    """The labelled training rows of each class (of each finding, plus "no finding present", in a
    multi-label manifest), classes in name (declared) order."""
    if not m.multilabel:
        return [train_lab[train_lab["label"] == c] for c in sorted(train_lab["label"].unique())]
    states = decode_labels(train_lab["label"], m.classes)
    groups = [train_lab[states[:, j] == 1] for j in range(len(m.classes))]
    groups.append(train_lab[(states == 0).all(axis=1)])
    return [g for g in groups if len(g)]
