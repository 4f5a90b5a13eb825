"""Patient-level splits: no leakage, stratification, label fraction, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from medcl.data.manifest import Manifest, new_frame, validate
from medcl.data.split import (
    apply_label_fraction,
    apply_labels_per_class,
    assign_splits,
    split_manifest,
)
from medcl.errors import MedclError

CLASSES = ["normal", "single", "multiple"]


def cohort(n_patients: int = 60, seed: int = 0, unlabelled_share: float = 0.0) -> Manifest:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = CLASSES[int(rng.choice(3, p=[0.55, 0.3, 0.15]))]
        for k in range(int(rng.integers(2, 6))):
            lab = "" if rng.random() < unlabelled_share else label
            rows.append(
                {
                    "image_id": f"p{p}i{k}",
                    "path": f"/x/p{p}/{k}.dcm",
                    "patient_key": f"pk{p:03d}",
                    "study_key": f"s{p}{k}",
                    "modality": "MR",
                    "label": lab,
                    "split": "",
                    "sha256": f"{p:04d}{k}",
                }
            )
    return Manifest(new_frame(rows), list(CLASSES))


def _patients_by_split(m: Manifest) -> dict[str, set[str]]:
    return {s: set(m.df.loc[m.df["split"] == s, "patient_key"]) for s in ("train", "val", "test")}


def test_no_patient_in_two_splits_and_fractions():
    m = assign_splits(cohort(200), val=0.15, test=0.15, seed=3)
    by = _patients_by_split(m)
    assert not (by["train"] & by["val"]) and not (by["train"] & by["test"])
    assert not (by["val"] & by["test"])
    assert sum(len(v) for v in by.values()) == 200
    assert len(by["test"]) == 30 and len(by["val"]) == 30
    assert (m.df["split"] != "").all()
    validate(m, check_files=False)


def test_stratified_by_patient_label():
    m = assign_splits(cohort(400, seed=1), val=0.2, test=0.2, seed=0)
    pat = m.df.drop_duplicates("patient_key")
    overall = pat["label"].value_counts(normalize=True)
    for split in ("val", "test"):
        share = pat[pat["split"] == split]["label"].value_counts(normalize=True)
        assert np.allclose(share.reindex(overall.index).fillna(0), overall, atol=0.03)


def test_same_seed_same_split_other_seed_differs():
    a = split_manifest(cohort(), label_fraction=0.2, seed=7)
    b = split_manifest(cohort(), label_fraction=0.2, seed=7)
    c = split_manifest(cohort(), label_fraction=0.2, seed=8)
    assert a.df.equals(b.df)
    assert not a.df["split"].equals(c.df["split"])


def test_existing_splits_are_kept():
    m = cohort(30)
    m.df.loc[m.df["patient_key"] == "pk000", "split"] = "test"
    out = assign_splits(m, seed=0)
    assert set(out.df.loc[out.df["patient_key"] == "pk000", "split"]) == {"test"}


def test_patient_with_some_rows_preassigned_gets_that_split_for_all_rows():
    m = cohort(30)
    rows = m.df.index[m.df["patient_key"] == "pk004"]
    assert len(rows) >= 2
    m.df.loc[rows[0], "split"] = "val"  # only the first row of that patient carries a split
    out = assign_splits(m, val=0.0, test=0.0, seed=0)  # nobody else would go to val
    assert set(out.df.loc[rows, "split"]) == {"val"}
    assert set(out.df.loc[out.df["patient_key"] != "pk004", "split"]) == {"train"}


def _by_image(m: Manifest) -> dict[str, tuple[str, str]]:
    """sha256 → (split, label): what a split means, whatever the pseudonyms are."""
    return {r.sha256: (r.split, r.label) for r in m.df.itertuples()}


def test_split_does_not_depend_on_the_secret_or_row_order():
    a = split_manifest(cohort(120, seed=5), label_fraction=0.1, seed=3)
    # another project secret: every pseudonym changes (a random renaming of patient_key),
    # and the rows come in another order; the images (sha256) are the same.
    other = cohort(120, seed=5)
    rng = np.random.default_rng(0)
    keys = sorted(other.df["patient_key"].unique())
    rename = dict(zip(keys, (f"zz{i:03d}" for i in rng.permutation(len(keys))), strict=True))
    other.df["patient_key"] = other.df["patient_key"].map(rename)
    other.df = other.df.iloc[rng.permutation(len(other.df))].reset_index(drop=True)
    b = split_manifest(other, label_fraction=0.1, seed=3)
    assert _by_image(a) == _by_image(b)
    c = split_manifest(cohort(120, seed=5), label_fraction=0.1, seed=4)
    assert _by_image(a) != _by_image(c)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.5])
def test_label_fraction_patient_level_and_val_test_untouched(fraction):
    full = assign_splits(cohort(300, seed=2), seed=1)
    out = apply_label_fraction(full, fraction, seed=4)
    train_full = full.df[full.df["split"] == "train"]
    train_out = out.df[out.df["split"] == "train"]
    kept = (train_out["label"] != "").sum()
    # whole patients of 2-5 images are drawn, so the share can miss by about one patient
    assert abs(kept / len(train_full) - fraction) < max(0.02, 0.15 * fraction)
    # labels are kept or blanked for whole patients
    per_patient = train_out.groupby("patient_key")["label"].apply(lambda s: (s != "").mean())
    assert set(per_patient.unique()) <= {0.0, 1.0}
    # every class keeps a labelled patient
    assert set(train_out.loc[train_out["label"] != "", "label"]) == set(CLASSES)
    # val/test keep every label; the unlabelled pool has only train patients
    vt = out.df["split"].isin(["val", "test"])
    assert out.df.loc[vt, "label"].equals(full.df.loc[vt, "label"])
    pool = set(out.df.loc[out.df["label"] == "", "patient_key"])
    assert pool <= set(train_out["patient_key"])


def test_label_fraction_one_keeps_all_and_zero_blanks_train():
    full = assign_splits(cohort(50), seed=0)
    assert apply_label_fraction(full, 1.0).df.equals(full.df)
    zero = apply_label_fraction(full, 0.0)
    assert (zero.df.loc[zero.df["split"] == "train", "label"] == "").all()


def test_already_unlabelled_rows_stay_in_train_pool():
    src = cohort(80, unlabelled_share=0.3)
    m = split_manifest(src, label_fraction=0.1, seed=0)
    validate(m, check_files=False)
    assert (m.df["split"] != "").all()
    was_unlabelled = set(src.df.loc[src.df["label"] == "", "image_id"])
    assert was_unlabelled
    after = m.df.set_index("image_id").loc[sorted(was_unlabelled)]
    # they stay unlabelled (no label invented) and the training ones are in the unlabelled pool
    assert (after["label"] == "").all()
    train_unl = after[after["split"] == "train"]
    assert len(train_unl) > 0
    pool = set(m.df.loc[(m.df["split"] == "train") & (m.df["label"] == ""), "image_id"])
    assert set(train_unl.index) <= pool


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"val": 1.2}, "--val"),
        ({"test": -0.1}, "--test"),
        ({"val": 0.6, "test": 0.5}, "below 1"),
        ({"label_fraction": 1.5}, "--label-fraction"),
    ],
)
def test_bad_fractions_refused(kw, msg):
    with pytest.raises(MedclError, match=msg):
        split_manifest(cohort(10), **kw)


def test_two_fresh_secrets_give_the_same_split_of_a_real_ingest(tmp_path):
    """End to end: the same DICOM files ingested under two project secrets split identically."""
    from medcl.data.ingest import ingest
    from medcl.data.manifest import read_manifest
    from medcl.data.synth import generate_cohort

    cohort_dir = tmp_path / "cohort"
    generate_cohort(cohort_dir, patients=24, seed=1, modality="mr", size=16, dims=2)
    splits = []
    for name in ("a", "b"):
        ingest(
            cohort_dir,
            tmp_path / name / "m.csv",
            labels=cohort_dir / "labels.csv",
            secret=tmp_path / name / "secret.key",
            progress=False,
        )
        m = read_manifest(tmp_path / name / "m.csv")
        splits.append(split_manifest(m, val=0.2, test=0.2, label_fraction=0.3, seed=2))
    a, b = splits
    assert set(a.df["patient_key"]).isdisjoint(set(b.df["patient_key"]))  # the secrets differ
    assert _by_image(a) == _by_image(b)


def _train_labels(m: Manifest) -> dict[str, str]:
    rows = m.df[(m.df["split"] == "train") & (m.df["label"] != "")]
    return dict(zip(rows["image_id"], rows["label"], strict=True))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_labels_per_class_keeps_k_images_of_each_class_from_k_patients(k):
    m = assign_splits(cohort(120, seed=2), val=0.2, test=0.2, seed=0)
    out = apply_labels_per_class(m, k, seed=4)
    kept = out.df[(out.df["split"] == "train") & (out.df["label"] != "")]
    for cls in CLASSES:
        mine = kept[kept["label"] == cls]
        assert len(mine) == k  # every class has more than k patients here
        assert mine["patient_key"].nunique() == k  # one image per patient
    # labels are kept, never changed; val and test untouched
    before = m.df.set_index("image_id")["label"]
    assert (kept.set_index("image_id")["label"] == before.loc[kept["image_id"]]).all()
    held = m.df["split"] != "train"
    assert out.df.loc[held, "label"].tolist() == m.df.loc[held, "label"].tolist()
    assert out.extra["labels_per_class"] == k
    n_train_lab = int(((m.df["split"] == "train") & (m.df["label"] != "")).sum())
    assert out.extra["label_fraction"] == pytest.approx(3 * k / n_train_lab)


def test_labels_per_class_takes_more_images_of_a_patient_only_when_it_must():
    m = assign_splits(cohort(120, seed=2), val=0.2, test=0.2, seed=0)
    train = m.df[m.df["split"] == "train"]
    rare = train[train["label"] == "multiple"]
    n_pat, n_img = rare["patient_key"].nunique(), len(rare)
    k = n_pat + 2  # more than the class has patients, fewer than it has images
    assert k <= n_img
    kept = apply_labels_per_class(m, k, seed=0).df
    mine = kept[(kept["split"] == "train") & (kept["label"] == "multiple")]
    assert len(mine) == k and mine["patient_key"].nunique() == n_pat
    everything = apply_labels_per_class(m, n_img + 10, seed=0).df
    all_rare = everything[(everything["split"] == "train") & (everything["label"] == "multiple")]
    assert len(all_rare) == n_img  # a class with fewer than k labelled images keeps them all


def test_labels_per_class_is_seeded_and_independent_of_row_order_and_keys():
    m = assign_splits(cohort(120, seed=2), val=0.2, test=0.2, seed=0)
    a = _train_labels(apply_labels_per_class(m, 3, seed=7))
    shuffled = Manifest(m.df.sample(frac=1.0, random_state=1).reset_index(drop=True), CLASSES)
    assert _train_labels(apply_labels_per_class(shuffled, 3, seed=7)) == a
    renamed = m.df.copy()  # another project secret: other pseudonyms, same images
    renamed["patient_key"] = "x" + renamed["patient_key"].str[::-1]
    assert _train_labels(apply_labels_per_class(Manifest(renamed, CLASSES), 3, seed=7)) == a
    assert _train_labels(apply_labels_per_class(m, 3, seed=8)) != a


def test_labels_per_class_below_one_is_refused():
    with pytest.raises(MedclError, match="at least 1"):
        apply_labels_per_class(cohort(10), 0)
