"""``medcl finetune``, ``evaluate``, ``embed``, ``predict`` and ``efficiency``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the evaluation subcommands."""
    p = sub.add_parser(
        "finetune",
        help="few-label fine-tuning (linear probe, kNN or full) into a model/ folder",
        description="Fit a classifier on the labelled training rows of data.manifest, selecting "
        "on validation. Without --pretrained the encoder is trained from scratch (the supervised "
        "baseline). Writes OUT/model/ (weights, metadata.json, model_card.md).",
    )
    p.add_argument("--config", type=Path, help="YAML config")
    p.add_argument("--pretrained", type=Path, help="`medcl pretrain` run folder")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(handler=_finetune)

    p = sub.add_parser(
        "evaluate",
        help="test metrics with patient-level bootstrap intervals → metrics.json",
        description="Evaluate MODEL_DIR on the labelled rows of a split of MANIFEST; writes "
        "metrics.json and refreshes the model card.",
    )
    p.add_argument("model", type=Path, help="model folder (from finetune)")
    p.add_argument("--manifest", type=Path, required=True, help="split manifest")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, help="metrics JSON (default: next to the model folder)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser(
        "embed",
        help="embeddings, predictions and 2-D projections of every row → embeddings.parquet",
    )
    p.add_argument("model", type=Path, help="model folder")
    p.add_argument("--manifest", type=Path, required=True, help="split manifest")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_embed)

    p = sub.add_parser(
        "predict",
        help="run a model on new images (any source ingest accepts) → CSV",
        description="Ingest SOURCE into a temporary manifest with the model's image size, then "
        "write image_id, source_id (pseudonymous), predicted class and class probabilities per "
        "image. Inputs unlike the model's training data (modality, dimensionality, intensity "
        "convention, colour, pixel spacing, embedding distance to the training images) get "
        "in_distribution=False and a reason; the console counts them.",
    )
    p.add_argument("model", type=Path, help="model folder")
    p.add_argument("source", type=Path, help="folder or file")
    p.add_argument("--out", type=Path, required=True, help="CSV to write")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--strict",
        action="store_true",
        help="do not score flagged inputs: list them in the rejects file instead (exit status 2 "
        "when every input is flagged)",
    )
    p.add_argument(
        "--with-source-paths",
        action="store_true",
        help="add the real source path of every row (column path; for your own systems: the CSV "
        "then holds source paths, which may carry patient names)",
    )
    p.set_defaults(handler=_predict)

    p = sub.add_parser(
        "efficiency",
        help="label-efficiency experiment: which arm wins with few labels, chosen on validation",
        description="Runs efficiency.methods × label budgets (efficiency.fractions, "
        "efficiency.labels_per_class) × efficiency.seeds on data.manifest (a split manifest with "
        "all training labels); writes results.json (records, medcl's pick per budget and seed, "
        "paired differences over seeds × test patients), report.md and efficiency.png into "
        "`out`. Re-running resumes; adding arms, seeds or budgets runs only what is new.",
    )
    p.add_argument("--config", type=Path, help="YAML config (configs/efficiency.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="run only the K-th (0-based) of N disjoint shares of the runs (e.g. one SLURM array "
        "task each: --shard $SLURM_ARRAY_TASK_ID/N); then --collect",
    )
    p.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: merge the shards' records into results.json and write the report",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run as this many shards in parallel processes on this machine (set "
        "trainer.threads to each one's share of the CPU cores)",
    )
    p.set_defaults(handler=_efficiency)


def _finetune(args: argparse.Namespace) -> int:
    from medcl.config import load_config, save_config
    from medcl.data.manifest import read_manifest
    from medcl.errors import ConfigError
    from medcl.evaluate.card import model_card
    from medcl.evaluate.finetune import finetune
    from medcl.evaluate.model import save_model

    cfg = load_config(args.config, args.overrides, base={"out": "runs/finetune"})
    if not cfg.data.manifest:
        raise ConfigError("data.manifest: required (a split manifest from `medcl split`)")
    manifest = read_manifest(cfg.data.manifest)
    out = Path(cfg.out)
    res = finetune(cfg, manifest, pretrained=args.pretrained, progress=True, out=out)
    save_config(cfg, out / "config.yaml")
    res.model.description.name = f"{cfg.finetune.mode} on {Path(cfg.data.manifest).name}"
    save_model(out / "model", res.model, card=model_card(res.model.description))
    op = res.model.description.operating_point
    if op is not None:  # a binary task
        auroc = "n/a" if op["val_auroc"] is None else f"{op['val_auroc']:.3f}"
        print(
            f"validation AUROC of {op['positive_class']} {auroc}; threshold "
            f"{op['threshold']:.3f} ({op['rule']})"
        )
    score = (
        f"validation balanced accuracy {res.val_balanced_accuracy:.3f}"
        if res.val_macro_auroc is None
        else f"validation macro AUROC {res.val_macro_auroc:.3f}"
    )
    print(
        f"fine-tuned ({res.mode}): {score}\nmodel: {out / 'model'}\n"
        f"next: medcl evaluate {out / 'model'} --manifest {cfg.data.manifest}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medcl.data.manifest import read_manifest
    from medcl.evaluate.card import model_card
    from medcl.evaluate.evaluation import evaluate_model
    from medcl.evaluate.model import load_model, read_description
    from medcl.io import write_json, write_text

    clf = load_model(args.model)
    m = read_manifest(args.manifest)
    metrics = evaluate_model(clf, m, args.split, n_boot=args.n_boot, seed=args.seed)
    model_dir = args.model if (args.model / "weights.pt").exists() else args.model / "model"
    out = args.out or model_dir.parent / "metrics.json"
    write_json(metrics, out)
    if args.split == "test":
        description = read_description(model_dir)
        description.record_test(metrics)
        write_json(description.to_dict(), model_dir / "metadata.json")
        write_text(model_card(description, metrics), model_dir / "model_card.md")
    if metrics.get("task") == "multilabel":  # per finding: no single class per image
        from medcl.evaluate.evaluation import multilabel_summary

        print("\n".join([*multilabel_summary(metrics, args.split), f"metrics: {out}"]))
        return 0
    iv = metrics.get("intervals", {}).get("balanced_accuracy", {})

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(
        f"{args.split}: balanced accuracy {fmt(metrics['balanced_accuracy'])} "
        f"(95 % CI {fmt(iv.get('low'))}–{fmt(iv.get('high'))}), "
        f"accuracy {fmt(metrics['accuracy'])}, macro AUROC {fmt(metrics.get('macro_auroc'))}"
    )

    def ci_text(ci: list[float] | None) -> str:
        return "" if not ci else f"(95 % CI {fmt(ci[0])}–{fmt(ci[1])})"

    if "auroc" in metrics:  # a binary task
        ci = metrics.get("auroc_ci") or [None, None]
        op = metrics["operating_point"]
        print(
            f"{args.split}: AUROC of {op['positive_class']} {fmt(metrics['auroc'])} "
            f"(95 % CI {fmt(ci[0])}–{fmt(ci[1])}); at the validation threshold "
            f"{metrics['threshold']:.3f} ({op['rule']}): sensitivity "
            f"{fmt(metrics['sensitivity'])} {ci_text(metrics.get('sensitivity_ci'))}, "
            f"specificity {fmt(metrics['specificity'])} {ci_text(metrics.get('specificity_ci'))}"
        )
    print(f"metrics: {out}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from medcl.data.manifest import read_manifest
    from medcl.evaluate.embed import embed_manifest, write_embeddings
    from medcl.evaluate.model import load_model

    table = embed_manifest(load_model(args.model), read_manifest(args.manifest), seed=args.seed)
    write_embeddings(table, args.out)
    print(f"wrote {len(table)} rows to {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medcl.evaluate.predict import predict_source

    n = predict_source(
        args.model,
        args.source,
        args.out,
        workers=args.workers,
        strict=args.strict,
        log=print,
        with_source_paths=args.with_source_paths,
    )
    if args.with_source_paths:
        print(
            f"warning: {args.out} holds the real source paths (--with-source-paths); "
            "do not share it"
        )
    print(f"wrote {n} predictions to {args.out}")
    return 0


def _efficiency(args: argparse.Namespace) -> int:
    from medcl.config import load_config
    from medcl.errors import ConfigError
    from medcl.evaluate.efficiency import Shard, run_efficiency, run_parallel
    from medcl.evaluate.label_budget import budgets
    from medcl.evaluate.report import headline
    from medcl.models.init import check_init

    cfg = load_config(args.config, args.overrides, base={"out": "runs/efficiency"})
    check_init(cfg)  # model.init names weights on disk, before any run
    if not cfg.data.manifest:
        raise ConfigError("data.manifest: required (a split manifest with all training labels)")
    if args.shard and (args.collect or args.workers > 1):
        raise ConfigError("--shard: not with --collect or --workers")
    if args.workers < 1:
        raise ConfigError(f"--workers: at least 1, got {args.workers}")
    if args.shard:
        shard = Shard.parse(args.shard)
        r = run_efficiency(cfg, cfg.data.manifest, cfg.out, shard=shard)
        print(f"shard {args.shard}: {r.results} (then: medcl efficiency ... --collect)")
        return 0
    if args.workers > 1 and not args.collect:
        r = run_parallel(cfg, cfg.data.manifest, cfg.out, args.workers)
    else:
        r = run_efficiency(cfg, cfg.data.manifest, cfg.out, collect=args.collect)
    eff = cfg.efficiency
    for b in budgets(list(eff.fractions), list(eff.labels_per_class)):
        print(headline(r.records, r.paired, r.metric, b, r.picks))
    print(f"results: {r.results}\nreport:  {r.report}\nplot:    {r.plot}")
    return 0
