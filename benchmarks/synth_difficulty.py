"""How hard is the phantom cohort? A supervised baseline with 1 % and 100 % of the labels.

Generates a 2D phantom cohort (:func:`medcl.data.synth.generate_cohort`) into a temporary folder,
reads the pixels back from the DICOM files with pydicom (modality LUT, then per-image 0.5 / 99.5
percentile normalisation), splits by patient (about 70 / 15 / 15, stratified by class), and trains
a small plain-torch CNN from scratch: on patient-level subsets holding about 1 % of the training
images' labels (three independent draws by default), and on all of them. Prints test accuracy and
balanced accuracy for each.

The phantom is meant to be learnable but not trivial: with all labels a small CNN should reach a
balanced accuracy of roughly 0.85-0.97, with 1 % it should stay far below (near chance, which is
0.33 for three classes). That gap is the room semi-supervised methods are meant to close.

Usage::

    python benchmarks/synth_difficulty.py [--patients 300] [--epochs 60] [--seed 0]

Runs on CPU in about two minutes (one thread), most of it the 100 % run.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

try:
    from medcl.data.synth import CLASSES, generate_cohort
except ModuleNotFoundError:  # run from a source checkout without installing medcl
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from medcl.data.synth import CLASSES, generate_cohort


def load_cohort(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) float32 in about [0, 1], labels (N,), patient groups (N,)."""
    images, labels, groups = [], [], []
    with open(root / "labels.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            ds = pydicom.dcmread(root / row["path"])
            a = ds.pixel_array.astype(np.float32)
            a = a * float(getattr(ds, "RescaleSlope", 1.0)) + float(
                getattr(ds, "RescaleIntercept", 0.0)
            )
            lo, hi = np.percentile(a, [0.5, 99.5])
            images.append(np.clip((a - lo) / max(hi - lo, 1e-6), -0.5, 1.5))
            labels.append(CLASSES.index(row["label"]))
            groups.append(row["path"].split("/")[0])
    return np.stack(images)[:, None].astype(np.float32), np.array(labels), np.array(groups)


def patient_split(
    y: np.ndarray, groups: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train / val / test images, about 70 / 15 / 15 by patient, stratified by class."""
    idx = np.arange(len(y))
    rest, test = next(
        StratifiedGroupKFold(7, shuffle=True, random_state=seed).split(idx, y, groups)
    )
    inner = StratifiedGroupKFold(6, shuffle=True, random_state=seed + 1)
    tr, va = next(inner.split(rest, y[rest], groups[rest]))
    return rest[tr], rest[va], test


def few_label_subset(
    train: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Whole patients, one class at a time in turn, until ``fraction`` of the images is labelled.

    Every class gets at least one patient when the training set has one.
    """
    rng = np.random.default_rng(seed)
    target = max(1, math.ceil(fraction * len(train)))
    by_class: dict[int, list[str]] = {}
    for c in range(len(CLASSES)):
        pats = sorted(set(groups[train][y[train] == c]))
        by_class[c] = [pats[i] for i in rng.permutation(len(pats))]
    chosen: list[str] = []
    count = 0
    first_round = True
    while any(by_class.values()) and (first_round or count < target):
        for c in range(len(CLASSES)):
            if by_class[c] and (first_round or count < target):
                p = by_class[c].pop()
                chosen.append(p)
                count += int(np.sum(groups[train] == p))
        first_round = False
    return train[np.isin(groups[train], chosen)]


class SmallCNN(nn.Module):
    """Four 3x3 conv layers (the first with stride 2) with batch norm, global avg + max pooling."""

    def __init__(self, n_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        w = width
        self.features = nn.Sequential(
            *block(1, w, stride=2),
            *block(w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            nn.MaxPool2d(2),
            *block(4 * w, 4 * w),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * w, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1))


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 4) -> torch.Tensor:
    """Label-preserving augmentation: lesion counts survive flips, 90-degree rotations, shifts of
    up to ``shift`` pixels and a random gamma."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(2)
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    x = torch.rot90(x, k, (2, 3))
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen).tolist()
    x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    gamma = torch.exp(0.2 * torch.randn(n, 1, 1, 1, generator=gen))
    return x.clamp(min=0) ** gamma


def train_and_test(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    steps: int,
    seed: int,
    batch: int = 32,
) -> tuple[float, float]:
    """Train from scratch on ``train`` for ``steps`` optimiser steps; test accuracy and BA."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SmallCNN(len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    counts = np.bincount(y[train], minlength=len(CLASSES)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(CLASSES), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    xt = torch.from_numpy(X[train])
    yt = torch.from_numpy(y[train])
    bs = min(batch, len(train))
    model.train()
    order = torch.randperm(len(train), generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + bs > len(train):
            order, pos = torch.randperm(len(train), generator=gen), 0
        sel = order[pos : pos + bs]
        pos += bs
        loss = loss_fn(model(augment(xt[sel], gen)), yt[sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [
                model(torch.from_numpy(X[test[i : i + 256]])).argmax(1)
                for i in range(0, len(test), 256)
            ]
        ).numpy()
    return accuracy_score(y[test], pred), balanced_accuracy_score(y[test], pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--few-steps", type=int, default=150, help="optimiser steps for the 1 %% run (default 150)"
    )
    parser.add_argument(
        "--few-draws",
        type=int,
        default=3,
        help="independent 1 %% label subsets to train on (default 3)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modality", default="mr", choices=["mr", "ct", "xr"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest on a shared 2-core machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="medcl-synth-") as tmp:
        t0 = time.perf_counter()
        summary = generate_cohort(
            Path(tmp) / "cohort",
            patients=args.patients,
            seed=args.seed,
            modality=args.modality,
            size=args.size,
            progress=False,
        )
        t1 = time.perf_counter()
        X, y, groups = load_cohort(summary.out_dir)
        t2 = time.perf_counter()
    print(
        f"cohort: {summary.patients} patients, {summary.images} images, {args.modality} "
        f"{args.size}px, classes {summary.class_counts}; generated in {t1 - t0:.1f}s, "
        f"read back in {t2 - t1:.1f}s"
    )

    train, val, test = patient_split(y, groups, args.seed)
    print(
        f"split (patients): train {len(set(groups[train]))} / val {len(set(groups[val]))} / "
        f"test {len(set(groups[test]))}; images train {len(train)} / test {len(test)}; "
        f"test classes {np.bincount(y[test], minlength=len(CLASSES)).tolist()}"
    )
    full_steps = args.epochs * math.ceil(len(train) / 32)
    # A few labelled images are memorised long before full_steps; more steps change nothing.
    few_steps = min(full_steps, args.few_steps)
    runs = [
        (f"1% #{k + 1}", few_label_subset(train, y, groups, 0.01, args.seed + k), few_steps)
        for k in range(args.few_draws)
    ]
    runs.append(("100%", train, full_steps))
    few_scores = []
    for name, subset, steps in runs:
        t = time.perf_counter()
        acc, bal = train_and_test(X, y, subset, test, steps, args.seed)
        if name.startswith("1%"):
            few_scores.append((acc, bal))
        print(
            f"{name:>5} labels: {len(subset):4d} images / {len(set(groups[subset])):3d} patients "
            f"(classes {np.bincount(y[subset], minlength=len(CLASSES)).tolist()}): "
            f"test accuracy {acc:.3f}, balanced accuracy {bal:.3f} [{time.perf_counter() - t:.0f}s]"
        )
        if name == f"1% #{args.few_draws}":
            mean = np.mean(few_scores, axis=0)
            print(
                f"   1% labels, mean of {args.few_draws} draws: test accuracy {mean[0]:.3f}, "
                f"balanced accuracy {mean[1]:.3f}"
            )
    print(f"chance balanced accuracy: {1 / len(CLASSES):.3f}")


if __name__ == "__main__":
    main()
