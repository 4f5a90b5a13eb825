"""Data subcommands: ``synth``, ``ingest``, ``split``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from medcl.errors import MedclError

if TYPE_CHECKING:
    from medcl.data.manifest import Manifest


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    return value


def _choice(p: argparse.ArgumentParser, flag: str, choices: tuple[str, ...], help: str) -> None:
    """An option taking one of ``choices``; the first is the default."""
    p.add_argument(flag, choices=choices, default=choices[0], help=help)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``synth``, ``ingest`` and ``split``."""
    p = sub.add_parser(
        "synth",
        help="generate a DICOM cohort: the phantom (the embedded default data) or the brain cohort",
        description="Write a synthetic cohort of DICOM studies with fake PHI and DIR/labels.csv: "
        "the phantom (lesion counts, a small finding) or, with --cohort brain, grades of atrophy "
        "on the MNI152 template (a global question; MR 2-D only; needs nilearn).",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (new or empty)")
    p.add_argument(
        "--cohort",
        choices=("phantom", "brain"),
        default="phantom",
        help="phantom (default) or brain (atrophy grades; pip install 'medcl[brain]')",
    )
    p.add_argument("--patients", type=int, default=300, help="number of patients (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--modality", choices=("mr", "ct", "xr"), default="mr", help="default mr")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2-D images or 3-D series")
    _choice(
        p,
        "--task",
        ("multiclass", "multilabel"),
        "phantom: multiclass (default: lesion counts) or multilabel (findings lesion, "
        "nodule, vessel, each 0/1 per patient; labels.csv path,lesion,nodule,vessel)",
    )
    p.set_defaults(handler=_synth)

    p = sub.add_parser(
        "ingest",
        help="turn DICOM/NIfTI/PNG/MedMNIST files into a de-identified manifest + cache",
        description="Read every file under SOURCE; decodable images become manifest rows and "
        "cached arrays, the others are listed with a reason in <manifest stem>.rejects.csv.",
    )
    p.add_argument("source", type=Path, help="folder (walked recursively) or a single file")
    p.add_argument("--out", required=True, type=Path, help="manifest CSV to write")
    p.add_argument(
        "--labels",
        type=Path,
        help="CSV with a key column and a label column (multi-label: one 1/0/blank/-1 column "
        "per finding, or a |-separated label column with --task multilabel); the key is path "
        "(relative to SOURCE), AccessionNumber, StudyInstanceUID, SeriesInstanceUID or PatientID "
        "(matched against the DICOM headers; a study or patient label applies to all its images; "
        "key values are never written anywhere)",
    )
    _choice(
        p,
        "--task",
        ("auto", "multiclass", "multilabel"),
        "auto (default): a labels CSV with a label column is single-label, one without it "
        "and with two or more other columns has one column per finding; an .npz with N×K labels "
        "is multi-label. multilabel: the label column (if any) lists findings separated by | "
        "(No Finding = none)",
    )
    p.add_argument(
        "--findings",
        help="comma-separated findings of a multi-label task, in column order (default: the "
        "CSV's finding columns, the names used in a | label column sorted, or the .npz's names); "
        "implies --task multilabel for a labels CSV",
    )
    _choice(
        p,
        "--uncertain",
        ("unknown", "zero", "one"),
        "a -1 (uncertain, as in CheXpert) in a finding column becomes unknown (default: "
        "masked in losses and metrics), absent (zero) or present (one)",
    )
    p.add_argument(
        "--series-labels-may-differ",
        action="store_true",
        help="with SeriesInstanceUID keys: series of one study may carry different labels "
        "(a series-level task); by default they must agree",
    )
    p.add_argument("--classes", help="comma-separated class list in index order (default: sorted)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2-D slices or 3-D volumes")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument("--size", type=int, help="resize cached images in-plane to SIZE×SIZE")
    p.add_argument(
        "--secret", type=Path, help="pseudonymisation key file (default .medcl/secret.key)"
    )
    p.add_argument(
        "--paths",
        choices=("pseudonymise", "relative", "keep"),
        default="pseudonymise",
        help="source paths in the manifest and rejects: pseudonymise (default: source_id only; the "
        "real paths stay in the private map next to the secret), relative (paths that repeat "
        "none of the file's header PHI), keep (every path; the outputs then carry them)",
    )
    p.set_defaults(handler=_ingest)

    p = sub.add_parser(
        "split",
        help="patient-level train/val/test split and few-label subset",
        description="Assign splits by patient (stratified by label) and keep labels on about "
        "--label-fraction of the training images; the rest join the unlabelled pool.",
    )
    p.add_argument("manifest", type=Path, help="manifest CSV from `medcl ingest`")
    p.add_argument("--out", required=True, type=Path, help="split manifest CSV to write")
    p.add_argument("--val", type=_fraction, default=0.15, help="validation share of patients")
    p.add_argument("--test", type=_fraction, default=0.15, help="test share of patients")
    p.add_argument(
        "--label-fraction",
        type=_fraction,
        default=1.0,
        help="share of labelled training images that keep their label (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--no-leak-check",
        action="store_true",
        help="skip the check for near-duplicate images across the splits",
    )
    p.add_argument(
        "--leak-model",
        type=Path,
        help="model folder whose encoder embeddings confirm the hash pass and add close pairs",
    )
    p.add_argument(
        "--leak-max-bits",
        type=int,
        default=None,
        help="largest perceptual-hash distance of a suspected pair (bits of 255; default 12)",
    )
    p.add_argument(
        "--drop-leaks",
        action="store_true",
        help="remove each suspected pair's copy in the later split (train < val < test) from "
        "the split manifest; the sidecar lists what was removed",
    )
    p.set_defaults(handler=_split)


def _synth(args: argparse.Namespace) -> int:
    if args.cohort == "brain":
        from medcl.data.synth.brain import generate_brain_cohort

        if args.modality != "mr":
            raise MedclError("the brain cohort is MR only: drop --modality or use --modality mr")
        if args.dims != 2:
            raise MedclError("the brain cohort is 2-D (axial slices): drop --dims or use --dims 2")
        if args.task != "multiclass":
            raise MedclError("the brain cohort has one grade per patient: drop --task")
        s = generate_brain_cohort(args.out, patients=args.patients, seed=args.seed, size=args.size)
    else:
        from medcl.data.synth import generate_cohort

        s = generate_cohort(
            args.out,
            patients=args.patients,
            seed=args.seed,
            modality=args.modality,
            size=args.size,
            dims=args.dims,
            task=args.task,
        )
    counts = ", ".join(f"{k} {v}" for k, v in s.class_counts.items())
    print(
        f"wrote {s.files} DICOM files ({s.patients} patients, {s.images} images; {counts}) "
        f"to {s.out_dir}; labels in {Path(s.out_dir) / 'labels.csv'}"
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from medcl.data.ingest import ingest

    if not args.source.exists():
        raise MedclError(f"{args.source}: no such file or folder")
    if args.labels is not None and not args.labels.is_file():
        raise MedclError(f"{args.labels}: labels file not found")
    if args.workers < 1:
        raise MedclError(f"--workers must be at least 1, got {args.workers}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    findings = None
    if args.findings is not None:
        findings = [f.strip() for f in args.findings.split(",") if f.strip()]
    r = ingest(
        args.source,
        args.out,
        labels=args.labels,
        classes=classes,
        dims=args.dims,
        workers=args.workers,
        size=args.size,
        secret=args.secret,
        paths=args.paths,
        series_may_differ=args.series_labels_may_differ,
        task=args.task,
        findings=findings,
        uncertain=args.uncertain,
    )
    for line in r.label_warnings:
        print(f"warning: {line}")
    print(
        f"{r.files_seen} files seen: {r.rows} manifest rows, {r.rejected} rejected, "
        f"{r.skipped_unchanged} unchanged"
    )
    print(path_summary(r.phi_paths, r.paths))
    for reason, n in sorted(r.reasons.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {n:5d}  {reason}")
    print(f"manifest: {r.manifest}\nrejects:  {r.rejects}")
    return 0


def path_summary(phi_paths: int, mode: str) -> str:
    """The console line on source paths that repeat header PHI, for ``--paths mode``."""
    line = f"{phi_paths} path{'' if phi_paths == 1 else 's'} carried header PHI; "
    if mode == "keep":
        return line + (
            "warning: --paths keep wrote every source path into the manifest and rejects; "
            "do not share them outside your institution"
        )
    if mode == "relative":
        return line + "written pseudonymised (the other paths written as they are)"
    return line + "written pseudonymised (as every path; real paths only in the private map)"


def _split(args: argparse.Namespace) -> int:
    from medcl.data.manifest import read_manifest, write_manifest
    from medcl.data.split import split_manifest, split_summary

    if args.no_leak_check and (args.drop_leaks or args.leak_model):
        raise MedclError("--no-leak-check: not with --drop-leaks or --leak-model")
    m = read_manifest(args.manifest)
    out = split_manifest(
        m, val=args.val, test=args.test, label_fraction=args.label_fraction, seed=args.seed
    )
    if not args.no_leak_check:
        out = _leak_check(out, args)
    write_manifest(out, args.out)
    print(split_summary(out).to_string())
    print(f"split manifest: {args.out}")
    return 0


def _leak_check(manifest: Manifest, args: argparse.Namespace) -> Manifest:
    """Report suspected cross-split near-duplicates (and drop them with --drop-leaks)."""
    from medcl.data.leaks import MAX_BITS, drop_leaks, find_leaks, write_leak_report

    embed = None
    if args.leak_model is not None:
        from medcl.evaluate.model import load_model

        clf = load_model(args.leak_model)
        embed = lambda rows: clf.embed(clf.images(rows).images).numpy()  # noqa: E731
    bits = MAX_BITS if args.leak_max_bits is None else args.leak_max_bits
    if bits < 0:
        raise MedclError(f"--leak-max-bits: at least 0, got {bits}")
    report = find_leaks(manifest, max_bits=bits, embed=embed)
    print(report.summary())
    if len(report.pairs):
        shown = report.pairs.head(20)
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if len(report.pairs) > len(shown):
            print(f"... {len(report.pairs) - len(shown)} more")
    where = write_leak_report(report, args.out)
    print(f"leak report: {where}")
    if args.drop_leaks and len(report.pairs):
        manifest, dropped = drop_leaks(manifest, report)
        print(f"--drop-leaks: removed {len(dropped)} later-split copies from the split manifest")
    return manifest
