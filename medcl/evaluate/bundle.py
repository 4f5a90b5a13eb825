"""A medcl model as a MONAI bundle (``medcl export MODEL --format bundle --out DIR``).

Layout (MONAI Bundle Specification: ``configs/metadata.json`` and ``models/model.pt`` required,
the rest optional with these names)::

    DIR/configs/metadata.json        MONAI metadata: versions, task, network_data_format, ...
    DIR/configs/inference.json       `python -m monai.bundle run` on a folder of images
    DIR/configs/medcl_metadata.json  medcl's own metadata.json of the model (architecture, head)
    DIR/models/model.pt              state dict of the classifier (encoder.* and head.*)
    DIR/models/model.safetensors     the same tensors as safetensors (no pickle)
    DIR/models/model.ts              TorchScript: stored image -> logits, normalisation included
    DIR/models/model.onnx            the same network as ONNX (extra ``medcl[onnx]``; else absent)
    DIR/models/train_embeddings.npy  the training-distribution bank of `medcl predict`, if any
    DIR/docs/README.md               the model card and how to run the bundle

Network input (``network_data_format.inputs.image``): one channel, ``image_size`` pixels per side,
float32 in medcl's stored convention: CT in Hounsfield units, every other modality clipped at its
0.5th/99.5th percentiles and scaled to [0, 1] (what ``medcl ingest`` writes). The TorchScript and
ONNX networks apply the model's own normalisation first, ``x' = clamp((x − lo)/w, 0, 1)`` with
``lo = level − width/2, w = width`` of the CT window (``lo = 0, w = 1`` otherwise, a clamp), then
the encoder and the head. Output ``pred``: ``C`` logits; ``softmax`` gives the class
probabilities (``channel_def`` names the classes); for a multi-label model (``task:
multilabel`` in ``medcl_metadata.json``) ``K`` logits, one per finding, a sigmoid of each giving
that finding's probability. ``inference.json`` reads the images with medcl's
readers (DICOM, NIfTI, PNG, ...; :func:`medcl.evaluate.predict.predict_source`) and writes
``OUTPUT_DIR/predictions.csv``.

Nothing in the bundle comes from patient data: the metadata is built from the model's metadata
alone (which holds no names, identifiers, dates or source paths).
"""

from __future__ import annotations

import json
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcl.errors import MedclError
from medcl.evaluate.card import model_card
from medcl.evaluate.classifier import Classifier, KNNHead
from medcl.evaluate.model import BUNDLE_HEAD, MEDCL_META, load_bundle, load_model, model_folder
from medcl.evaluate.ood import save_bank
from medcl.evaluate.predict import predict_source
from medcl.io import atomic_dir, write_json, write_text
from medcl.models.description import ModelDescription

SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20220324.json"
)
"""The MONAI bundle metadata schema the metadata declares (``monai.bundle verify_metadata``)."""

MONAI_FORMAT = {"ct": "hounsfield"}
"""``network_data_format`` input format per preset (others: ``magnitude``)."""

MONAI_MODALITY = {"ct": "CT", "mr": "MR", "xr": "XR"}


class BundleNetwork(nn.Module):
    """Stored image → logits: the model's intensity normalisation, encoder and head.

    ``forward(x) = head(encoder(clamp((x − lo) / w, 0, 1)))`` for ``x`` of shape
    ``(B, 1, *spatial)`` in medcl's stored convention (see the module docstring); the same
    function as ``Classifier(Classifier.normalize(x))``.
    """

    def __init__(self, clf: Classifier) -> None:
        super().__init__()
        lo, width = intensity_affine(clf.description)
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("width", torch.tensor(width, dtype=torch.float32))
        self.encoder = clf.encoder
        self.head = clf.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)``."""
        return self.head(self.encoder(((x - self.lo) / self.width).clamp(0.0, 1.0)))


def intensity_affine(description: ModelDescription) -> tuple[float, float]:
    """``(lo, w)`` of the model's normalisation: the CT window's lower edge and width in HU, or
    ``(0, 1)`` (a clamp to [0, 1]) for other presets
    (:func:`medcl.transforms.to_model_intensity`)."""
    if description.preset.lower() == "ct":
        level, width = description.window
        return level - width / 2.0, width
    return 0.0, 1.0


def _versions() -> dict[str, str]:
    import monai

    return {"monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__}


def _optional_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("medcl", "pydicom", "nibabel", "safetensors", "onnx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _spatial(description: ModelDescription) -> list[int]:
    vol = description.volume
    side = vol.patch_size if vol is not None else description.image_size
    return [side] * description.spatial_dims


def bundle_metadata(
    description: ModelDescription,
    version: str = "0.1.0",
    authors: str = "the model's authors",
    copyright_: str = "Copyright (c) the model's authors",
) -> dict[str, Any]:
    """MONAI bundle metadata (``configs/metadata.json``) built from a model's description only.

    Mandatory keys of the MONAI Bundle Specification: ``version``, ``monai_version``,
    ``pytorch_version``, ``numpy_version``, ``optional_packages_version``, ``task``,
    ``description``, ``authors``, ``copyright``, ``network_data_format``; plus ``schema``,
    ``changelog``, ``intended_use``, ``data_type``, ``image_classes``, ``pred_classes``,
    ``eval_metrics`` (test metrics, when the model was evaluated) and ``intensity_convention``.
    """
    d = description
    classes = [str(c) for c in d.classes]
    preset = d.preset.lower()
    dims = d.spatial_dims
    patches = d.volume is not None
    lo, width = intensity_affine(d)
    v = _versions()
    pre, ft = d.pretraining, d.finetune
    convention = (
        f"input in Hounsfield units; the network windows it to [0, 1] with level "
        f"{lo + width / 2:g} and width {width:g} HU"
        if preset == "ct"
        else "input scaled to [0, 1] between the image's 0.5th and 99.5th percentiles "
        "(medcl ingest); the network clamps it to [0, 1]"
    )
    text = (
        f"{dims}-D {d.modality} image classifier trained with medcl: MONAI "
        f"{d.spec.encoder} encoder"
        + (
            f" pretrained with {pre.method} (lambda_sup={pre.lambda_sup}, "
            f"lambda_ssl={pre.lambda_ssl})"
            if pre is not None
            else " trained from scratch"
        )
        + f", {d.head or 'linear'} head"
        + (
            f", validation balanced accuracy {ft.val_balanced_accuracy:.3f}"
            if ft is not None and isinstance(ft.val_balanced_accuracy, float)
            else ""
        )
        + (
            ". Volumes are scored on a grid of patches (medcl predict averages them)"
            if patches
            else ""
        )
        + "."
    )
    test = d.test_metrics or {}
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: f"exported by medcl {_optional_versions().get('medcl', '?')}"},
        "monai_version": v["monai"],
        "pytorch_version": v["torch"].split("+")[0],
        "numpy_version": v["numpy"],
        "optional_packages_version": _optional_versions(),  # the schema's name
        "required_packages_version": _optional_versions(),  # MONAI >= 1.4's name for it
        "name": d.name if d.name is not None else "medcl classifier",
        "task": (
            f"multi-label classification of {len(classes)} findings in {dims}-D "
            if d.multilabel
            else f"{len(classes)}-class classification of {dims}-D "
        )
        + f"{MONAI_MODALITY.get(preset, d.modality)} images: {', '.join(classes)}",
        "description": text,
        "authors": authors,
        "copyright": copyright_,
        "intended_use": "Research use only; not a medical device, not for clinical decisions.",
        "data_type": "dicom, nifti, png, tiff, jpeg (read by medcl's readers)",
        "image_classes": f"single channel, {convention}",
        "pred_classes": f"{len(classes)} logits, "
        + ("a sigmoid of each gives the probability of " if d.multilabel else "softmax gives ")
        + ("" if d.multilabel else "the probabilities of ")
        + ", ".join(f"{i}: {c}" for i, c in enumerate(classes)),
        "intensity_convention": convention,
        "eval_metrics": {k: float(x) for k, x in test.items() if isinstance(x, (int, float))},
        "python_version": platform.python_version(),
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": MONAI_FORMAT.get(preset, "magnitude"),
                    "modality": MONAI_MODALITY.get(preset, "n/a"),
                    "num_channels": 1,
                    "spatial_shape": _spatial(d),
                    "dtype": "float32",
                    "value_range": [] if preset == "ct" else [0, 1],
                    "is_patch_data": bool(patches),
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classes",
                    "modality": "n/a",
                    "num_channels": len(classes),
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": bool(patches),
                    "channel_def": {str(i): c for i, c in enumerate(classes)},
                }
            },
        },
    }


def inference_config() -> dict[str, Any]:
    """``configs/inference.json``: MONAI's ConfigParser syntax, one ``run`` expression.

    ``python -m monai.bundle run --config_file DIR/configs/inference.json --bundle_root DIR
    --dataset_dir IMAGES --output_dir OUT`` overrides the three ids below. ``network_def`` is the
    network of ``network_data_format`` (:class:`BundleNetwork`), for MONAI tools such as
    ``python -m monai.bundle verify_net_in_out network_def --meta_file ... --config_file ...``.
    """
    return {
        "imports": ["$import medcl.evaluate.bundle"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/eval'",
        "predictions": "$@output_dir + '/predictions.csv'",
        "network_def": {
            "_target_": "medcl.evaluate.bundle.bundle_network",
            "bundle_root": "@bundle_root",
        },
        "inferer": {
            "_target_": "medcl.evaluate.bundle.BundleInference",
            "bundle_root": "@bundle_root",
            "dataset_dir": "@dataset_dir",
            "output_file": "@predictions",
        },
        "run": ["$@inferer.run()"],
    }


def bundle_network(bundle_root: str) -> BundleNetwork:
    """The :class:`BundleNetwork` of a bundle folder, in eval mode (``network_def``)."""
    return BundleNetwork(load_bundle(bundle_root)).eval()


class BundleInference:
    """What ``inference.json`` runs: the bundle over a folder (or file) of images.

    Args:
        bundle_root: The bundle folder.
        dataset_dir: Images in any format ``medcl ingest`` reads (DICOM at least).
        output_file: The CSV of predictions to write (columns of ``medcl predict``).
    """

    def __init__(self, bundle_root: str, dataset_dir: str, output_file: str) -> None:
        self.bundle_root = Path(bundle_root)
        self.dataset_dir = Path(dataset_dir)
        self.output_file = Path(output_file)

    def run(self) -> int:
        """Predict every image; returns the number of rows written."""
        n = predict_source(self.bundle_root, self.dataset_dir, self.output_file, log=print)
        print(f"wrote {n} predictions to {self.output_file}")
        return n


def _state_dict(clf: Classifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in clf.state_dict().items()}


def _head_meta(clf: Classifier) -> dict[str, Any]:
    if isinstance(clf.head, KNNHead):
        return {"type": "knn", "k": int(clf.head.k), "bank_rows": int(clf.head.bank.shape[0])}
    return {"type": "linear", "in_features": int(clf.head.in_features)}


def _example(description: ModelDescription, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 1, *_spatial(description)), generator=g)
    lo, width = intensity_affine(description)
    return lo + x * width  # spans the model's input range


def _torchscript(net: BundleNetwork, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(net, example, check_trace=False)


def _onnx(net: BundleNetwork, example: torch.Tensor, path: Path) -> bool:
    try:
        import onnx
    except ImportError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)))
    return True


@dataclass
class BundleResult:
    """What :func:`export_bundle` wrote."""

    out_dir: Path
    files: list[str]
    onnx: bool


def export_bundle(
    model: str | Path,
    out: str | Path,
    version: str = "0.1.0",
    authors: str = "the model's authors",
    copyright_: str = "Copyright (c) the model's authors",
    onnx: bool = True,
) -> BundleResult:
    """Write the model folder (or run folder holding ``model/``) ``model`` as a bundle ``out``.

    The folder is written whole or not at all (:func:`medcl.io.atomic_dir`).

    Args:
        model: A ``model/`` folder (``medcl finetune``) or a run folder that holds one.
        out: The bundle folder to write (replaced if it exists).
        version: The bundle's ``version``.
        authors: ``authors`` of the metadata.
        copyright_: ``copyright`` of the metadata.
        onnx: Also write ``models/model.onnx`` when the ``onnx`` package is installed.

    Returns:
        The folder, the files written (relative) and whether ONNX was written.

    Raises:
        MedclError: ``model`` is not a model folder, or ``out`` is that folder.
    """
    from safetensors.torch import save_file

    src = Path(model)
    clf = load_model(src)
    model_dir = model_folder(src)
    if Path(out).resolve() in (src.resolve(), model_dir.resolve()):
        raise MedclError(f"{out}: the bundle would replace the model it is made from; choose --out")
    desc = clf.description
    meta = json.loads(json.dumps(desc.to_dict(), default=str))
    meta[BUNDLE_HEAD] = _head_meta(clf)
    net = BundleNetwork(clf).eval()
    example = _example(desc)
    card_file = model_dir / "model_card.md"
    card = card_file.read_text() if card_file.is_file() else model_card(desc)
    files = []
    with atomic_dir(out) as d:
        (d / "configs").mkdir()
        (d / "models").mkdir()
        (d / "docs").mkdir()
        write_json(bundle_metadata(desc, version, authors, copyright_), d / "configs/metadata.json")
        write_json(inference_config(), d / "configs" / "inference.json")
        write_json(meta, d / "configs" / MEDCL_META)
        state = _state_dict(clf)
        torch.save(state, d / "models" / "model.pt")
        save_file(state, str(d / "models" / "model.safetensors"), metadata={"format": "pt"})
        with torch.no_grad():
            _torchscript(net, example).save(str(d / "models" / "model.ts"))
            wrote_onnx = onnx and _onnx(net, example, d / "models" / "model.onnx")
        if clf.ood_bank is not None:
            save_bank(d / "models", clf.ood_bank)
        write_text(card + "\n" + _usage(desc, wrote_onnx), d / "docs" / "README.md")
        files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    return BundleResult(Path(out), files, bool(wrote_onnx))


def _usage(description: ModelDescription, onnx: bool) -> str:
    lo, width = intensity_affine(description)
    shape = "×".join(str(s) for s in _spatial(description))
    classes = description.classes
    return "\n".join(
        [
            "## Using this bundle",
            "",
            "Predict a folder of images (DICOM, NIfTI, PNG, ...) with MONAI:",
            "",
            "```",
            "python -m monai.bundle run --config_file BUNDLE/configs/inference.json \\",
            "    --bundle_root BUNDLE --dataset_dir IMAGES --output_dir OUT",
            "```",
            "",
            "or with medcl: `medcl predict BUNDLE IMAGES --out preds.csv`.",
            "",
            f"`models/model.ts`{' and `models/model.onnx`' if onnx else ''} map a float32 "
            f"batch (B, 1, {shape}) in the stored convention to {len(classes)} logits: "
            f"`clamp((x - {lo:g}) / {width:g}, 0, 1)`, encoder, head; "
            + (
                "a sigmoid of each gives the probability of the finding "
                if description.multilabel
                else "softmax gives the probabilities of "
            )
            + f"{', '.join(map(str, classes))}. "
            "`models/model.pt` and `models/model.safetensors` hold the same weights as a state "
            "dict (`encoder.*`, `head.*`); `configs/medcl_metadata.json` describes the network.",
            "",
        ]
    )
