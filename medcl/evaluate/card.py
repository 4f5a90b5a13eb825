"""Model card (Mitchell et al. 2019, "Model Cards for Model Reporting") for an exported model."""

from __future__ import annotations

from typing import Any

from medcl.models.description import FinetuneSummary, ModelDescription


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _interval(metrics: dict[str, Any], name: str) -> str:
    iv = (metrics.get("intervals") or {}).get(name)
    value = metrics.get(name)
    if iv and iv.get("low") is not None:
        return f"{_fmt(value)} (95 % CI {_fmt(iv['low'])}–{_fmt(iv['high'])})"
    return _fmt(value)


def _known(value: Any, default: Any) -> Any:
    return default if value is None else value


def model_card(description: ModelDescription, metrics: dict[str, Any] | None = None) -> str:
    """Markdown model card from the model's description and (optional) test metrics."""
    d = description
    classes = ", ".join(d.classes)
    spec, pre, ft = d.spec, d.pretraining, d.finetune or FinetuneSummary()
    lines = [
        f"# Model card: {_known(d.name, 'medcl classifier')}",
        "",
        "## Intended use",
        f"Research use only: classifies {d.spatial_dims}-D "
        f"{d.modality} images into {classes}. Not a medical device; not validated "
        "for clinical decisions. Outputs must be reviewed by a qualified reader.",
        "",
        "## Model",
        f"- Encoder: MONAI {spec.encoder} (width ×{spec.width}, "
        f"{spec.stem} stem), input {d.image_size} px, one channel.",
        "- Pretraining: "
        + (
            f"none; the encoder started from the weights in {d.init} (model.init)"
            if pre is None and d.init
            else "none (trained from scratch)"
            if pre is None
            else f"{pre.method} with λ_sup={pre.lambda_sup}, λ_ssl={pre.lambda_ssl}"
        ),
        f"- Head: {_known(d.head, 'linear')}; selected on validation balanced accuracy "
        f"{_fmt(ft.val_balanced_accuracy)}.",
        f"- Input normalisation: preset `{d.preset}`, {d.intensity}.",
        "",
        "## Data",
        f"- Training: {_known(ft.train_labelled_images, '?')} labelled images from "
        f"{_known(ft.train_labelled_patients, '?')} patients; class counts "
        f"{_known(ft.class_counts, {})}.",
    ]
    for k, v in (d.training_data or {}).items():
        lines.append(f"- {k}: {v}")
    ood = d.training_distribution
    if ood:
        sp = ood.get("pixel_spacing_mm") or {}
        emb = ood.get("embedding") or {}
        lines.append(
            "- Inputs checked by `medcl predict` against the training data: modality "
            f"{'/'.join(ood.get('modality') or []) or '?'}, {ood.get('spatial_dims')}-D, "
            f"intensity {'/'.join(ood.get('intensity') or []) or '?'}, colour "
            f"{ood.get('colour')}, pixel spacing "
            + (f"{sp['min']:.3g}–{sp['max']:.3g} mm at {sp['at_image_size']} px" if sp else "?")
            + (
                f", slice spacing {zs['min']:.3g}–{zs['max']:.3g} mm"
                if (zs := ood.get("slice_spacing_mm"))
                else ""
            )
            + ", embedding distance threshold "
            + _fmt(emb.get("threshold"))
            + "; inputs outside are flagged (`in_distribution`, `reason`)."
        )
    lines += ["", "## Test metrics"]
    if metrics and metrics.get("task") == "multilabel":
        lines += _finding_lines(metrics)
    elif metrics:
        lines += [
            f"Test split: {metrics.get('n', '?')} images, {metrics.get('n_patients', '?')} "
            "patients; intervals from a patient-level bootstrap.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        for name in ("accuracy", "balanced_accuracy", "macro_auroc", "macro_f1", "ece"):
            lines.append(f"| {name} | {_interval(metrics, name)} |")
        op = metrics.get("operating_point")
        if "auroc" in metrics and op:  # a binary task: its AUROC and validation operating point
            lines += [
                f"| auroc ({op['positive_class']}) | {_interval(metrics, 'auroc')} |",
                f"| sensitivity at threshold {_fmt(metrics.get('threshold'))} ({op['rule']}, "
                f"chosen on validation) | {_interval(metrics, 'sensitivity')} |",
                f"| specificity at that threshold | {_interval(metrics, 'specificity')} |",
            ]
        lines += ["", "| class | sensitivity | specificity | support |", "|---|---|---|---|"]
        for c, pc in (metrics.get("per_class") or {}).items():
            lines.append(
                f"| {c} | {_fmt(pc.get('sensitivity'))} | "
                f"{_fmt(pc.get('specificity'))} | {pc.get('support')} |"
            )
    else:
        lines.append("Not evaluated yet (run `medcl evaluate`).")
    lines += [
        "",
        "## Limitations",
        "- Trained on the data above only; performance on other scanners, protocols, sites or "
        "populations is unknown and must be measured before any use.",
        "- Few labels: intervals are wide; small classes are the least reliable.",
        "- Calibration (ECE above) may drift on new data; re-check before thresholding.",
        "- Images are resized to the input size; findings smaller than a few pixels after "
        "resizing can be missed.",
        "",
        f"Versions: {_known(d.versions, {})}",
        "",
    ]
    return "\n".join(lines)


def _finding_lines(metrics: dict[str, Any]) -> list[str]:
    """The test metrics of a multi-label model: macro AUROC and a table per finding."""
    spec = metrics.get("fixed_specificity")
    lines = [
        f"Test split: {metrics.get('n', '?')} images, {metrics.get('n_patients', '?')} "
        "patients; intervals from a patient-level bootstrap; each finding scored on the images "
        "where it is known.",
        "",
        f"macro AUROC: {_interval(metrics, 'macro_auroc')}",
        "",
        f"| finding | AUROC (95 % CI) | sensitivity at specificity {_fmt(spec)} | prevalence "
        "| threshold (validation) | sensitivity | specificity |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in (metrics.get("findings") or {}).items():
        ci = f.get("auroc_ci")
        auroc = _fmt(f.get("auroc")) + ("" if not ci else f" ({_fmt(ci[0])}–{_fmt(ci[1])})")
        lines.append(
            f"| {name} | {auroc} | {_fmt(f.get('sensitivity_at_specificity'))} | "
            f"{_fmt(f.get('prevalence'))} | {_fmt(f.get('threshold'))} | "
            f"{_fmt(f.get('sensitivity'))} | {_fmt(f.get('specificity'))} |"
        )
    return lines
