"""``medcl export``: a model folder as a MONAI bundle (:mod:`medcl.evaluate.bundle`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``medcl export``."""
    p = sub.add_parser(
        "export",
        help="export a model folder as a MONAI bundle (TorchScript, safetensors, ONNX)",
        description="Write MODEL (a model/ folder from `medcl finetune`, or a run folder holding "
        "one) as a MONAI bundle: configs/metadata.json, configs/inference.json (runs under "
        "`python -m monai.bundle run`), models/model.pt, model.safetensors, model.ts (TorchScript "
        "with the intensity normalisation), model.onnx (when onnx is installed), docs/README.md. "
        "`medcl predict DIR ...` reads the bundle too.",
    )
    p.add_argument("model", type=Path, help="model folder or run folder holding model/")
    p.add_argument("--format", choices=("bundle",), default="bundle", help="only 'bundle'")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (replaced)")
    p.add_argument("--version", dest="bundle_version", default="0.1.0", help="bundle version")
    p.add_argument("--authors", default="the model's authors", help="metadata 'authors'")
    p.add_argument(
        "--copyright", default="Copyright (c) the model's authors", help="metadata 'copyright'"
    )
    p.add_argument("--no-onnx", action="store_true", help="do not write models/model.onnx")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from medcl.evaluate.bundle import export_bundle

    r = export_bundle(
        args.model,
        args.out,
        version=args.bundle_version,
        authors=args.authors,
        copyright_=args.copyright,
        onnx=not args.no_onnx,
    )
    onnx = "" if r.onnx or args.no_onnx else " (no ONNX: pip install 'medcl[onnx]')"
    print(f"bundle: {r.out_dir} ({len(r.files)} files){onnx}")
    print(
        f"run:    python -m monai.bundle run --config_file {r.out_dir}/configs/inference.json "
        f"--bundle_root {r.out_dir} --dataset_dir IMAGES --output_dir OUT"
    )
    return 0
