"""``medcl pretrain`` and ``medcl augment-preview``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pretrain`` and ``augment-preview``."""
    p = sub.add_parser(
        "pretrain",
        help="SSCL pretraining (SimCLR/MoCo/BYOL/SimSiam/DINO/VICReg + SupCon) from a split "
        "manifest",
        description="Pretrain an encoder. The config is validated before any work; KEY=VALUE "
        "overrides (e.g. optim.epochs=5 method.name=moco) are applied after the file. Running the "
        "same command again resumes an interrupted run from its last checkpoint.",
    )
    p.add_argument("--config", type=Path, help="YAML config (configs/pretrain/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--restart", action="store_true", help="discard checkpoints in the run folder")
    p.set_defaults(handler=_pretrain)

    p = sub.add_parser(
        "augment-preview",
        help="PNG grid of original + augmented views for a few manifest images",
        description="Write a PNG grid: one row per image, the original then its views.",
    )
    p.add_argument("manifest", type=Path, help="manifest CSV (with cached images)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--preset", choices=("auto", "ct", "mr", "xr"), default="auto")
    p.add_argument("--images", type=int, default=4, help="number of images (default 4)")
    p.add_argument("--views", type=int, default=4, help="views per image (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="preset option override (repeatable), e.g. flip_lr=true",
    )
    p.set_defaults(handler=_preview)


def _pretrain(args: argparse.Namespace) -> int:
    from medcl.config import load_config
    from medcl.train.pretrain import pretrain

    cfg = load_config(args.config, args.overrides)
    r = pretrain(cfg, restart=args.restart)
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in sorted(r.metrics.items()) if "epoch" in k or k.startswith("val/")
    )
    print(
        f"pretraining {'resumed and ' if r.resumed else ''}complete: {r.steps} steps in "
        f"{r.seconds:.0f} s; {shown}"
    )
    print(f"run folder: {r.out_dir}\nencoder:    {r.encoder_path}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    import numpy as np

    from medcl.config import parse_overrides
    from medcl.data.cache import load_cached
    from medcl.data.manifest import read_manifest
    from medcl.errors import MedclError
    from medcl.transforms import build_preset, preview_grid
    from medcl.transforms.presets import preset_for_modality

    m = read_manifest(args.manifest)
    df = m.df[m.df["cache_path"] != ""]
    if df.empty:
        raise MedclError(f"{args.manifest}: no cached images; run `medcl ingest` first")
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(len(df), size=min(args.images, len(df)), replace=False)
    images = [load_cached(df["cache_path"].iloc[int(i)]) for i in rows]
    dims = int(df["dims"].iloc[0]) if str(df["dims"].iloc[0]) not in ("", "<NA>") else 2
    name = args.preset if args.preset != "auto" else preset_for_modality(df["modality"].iloc[0])
    preset = build_preset(name, parse_overrides(args.option), dims=dims)
    out = preview_grid(images, preset, args.views, args.out, seed=args.seed)
    print(f"wrote {out} ({len(images)} images × {args.views} views, preset {name})")
    return 0
