"""Models trained on 3-D patches: grid-averaged embeddings and predictions, through fine-tuning,
the model folder, evaluation and the embeddings table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.data.volumes import StoredVolumes
from medcl.errors import ConfigError, MedclError
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.embed import embed_manifest
from medcl.evaluate.evaluation import predict_rows
from medcl.evaluate.finetune import finetune
from medcl.evaluate.model import load_model, save_model
from medcl.evaluate.predict import ingest_size
from medcl.models.description import EncoderDescription, ModelDescription, VolumeGeometry
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.models.export import save_encoder
from medcl.transforms import to_model_intensity
from tests.conftest import TINY_OVERRIDES
from tests.train.test_patch_pretrain import make_volumes

VOLUME = VolumeGeometry(patch_size=8, overlap=0.5, patches_per_volume=2, in_plane_size=16)


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    spec = EncoderSpec("resnet10", 3, 8, stem="small", width=0.125)
    return build_encoder(spec).eval()


def _meta() -> dict:
    spec = _encoder().spec
    return {
        **spec.to_meta(),
        "classes": ["c0", "c1", "c2"],
        "preset": "mr",
        "window": [40.0, 400.0],
        "volume": VOLUME.to_dict(),
    }


def _description(volume: bool = True) -> ModelDescription:
    meta = _meta()
    if not volume:
        del meta["volume"]
    return ModelDescription.from_dict(meta)


def _explicit_patch_inputs(vol: torch.Tensor) -> list[torch.Tensor]:
    """Grid patches of a (1, 16, 16, 12) volume, P = 8, overlap 0.5: stride 4, last flush."""
    starts = {16: [0, 4, 8], 12: [0, 4]}
    x = to_model_intensity(vol, "mr")
    return [
        x[:, z : z + 8, y : y + 8, w : w + 8]
        for z in starts[16]
        for y in starts[16]
        for w in starts[12]
    ]


def test_embed_and_predict_aggregate_over_the_grid():
    enc = _encoder()
    head = nn.Linear(enc.out_dim, 3)
    clf = Classifier(enc, head, _description()).eval()
    g = torch.Generator().manual_seed(0)
    vols = [torch.rand(1, 16, 16, 12, generator=g) * 1.4 - 0.2 for _ in range(2)]
    with torch.no_grad():
        feats, logits = [], []
        for v in vols:
            per_patch = [enc(p[None])[0] for p in _explicit_patch_inputs(v)]  # one at a time
            feats.append(torch.stack(per_patch).mean(0))
            logits.append(torch.stack([head(f) for f in per_patch]).mean(0))
    torch.testing.assert_close(
        clf.embed(vols, batch_size=5), torch.stack(feats), atol=1e-5, rtol=1e-4
    )
    # the head on the mean feature = the mean of the patch logits (linear head), then softmax
    ref = F.softmax(torch.stack(logits), dim=1)
    torch.testing.assert_close(clf.predict_proba(vols), ref, atol=1e-5, rtol=1e-4)


def test_whole_image_models_are_unchanged():
    enc = _encoder()
    whole = _description(volume=False)
    clf = Classifier(enc, nn.Linear(enc.out_dim, 3), whole).eval()
    x = torch.rand(3, 1, 8, 8, 8)
    with torch.no_grad():
        ref = F.softmax(clf.head(enc(to_model_intensity(x, "mr"))), dim=1)
    torch.testing.assert_close(clf.predict_proba(x), ref)
    assert ingest_size(whole) == 8 and ingest_size(_description()) == 16


@pytest.fixture
def patch_encoder(tmp_path):
    enc = _encoder()
    meta = {**_meta(), "modality": "MR", "method": "simclr", "lambda_sup": 1.0, "lambda_ssl": 1.0}
    return save_encoder(tmp_path / "encoder.pt", enc, EncoderDescription.from_meta(meta))


def test_finetune_probe_model_folder_evaluation_and_embeddings(tmp_path, patch_encoder):
    man = read_manifest(make_volumes(tmp_path / "data"))
    man.df.loc[man.df["split"] == "train", "label"] = [f"c{p % 3}" for p in range(6)]
    cfg = load_config(None, [*TINY_OVERRIDES, "finetune.mode=linear"])
    res = finetune(cfg, man, pretrained=patch_encoder)
    assert res.model.description.volume == VOLUME
    ds = res.model.images(man)
    assert isinstance(ds, StoredVolumes) and ds.images[0].shape == (1, 16, 16, 16)
    save_model(tmp_path / "model", res.model)
    clf = load_model(tmp_path / "model")
    assert clf.description.volume == VOLUME
    proba, _ = predict_rows(clf, man)
    assert proba.shape == (len(man), 3)
    torch.testing.assert_close(
        torch.from_numpy(proba), res.model.predict_proba(ds.images), atol=1e-5, rtol=1e-4
    )
    table = embed_manifest(clf, man, tsne_max=0)
    emb = torch.from_numpy(np.stack(table["embedding"].to_list()))
    torch.testing.assert_close(emb, clf.embed(ds.images), atol=1e-5, rtol=1e-4)


def test_full_finetuning_of_a_patch_encoder_is_refused(tmp_path, patch_encoder):
    man = read_manifest(make_volumes(tmp_path / "data"))
    cfg = load_config(None, [*TINY_OVERRIDES, "finetune.mode=full"])
    with pytest.raises(ConfigError, match=r"finetune\.mode=full: .* 3-D patches"):
        finetune(cfg, man, pretrained=patch_encoder)


def test_a_volume_smaller_than_the_models_patches_is_refused(tmp_path):
    man = read_manifest(make_volumes(tmp_path / "data", small=4))
    enc = _encoder()
    clf = Classifier(enc, nn.Linear(enc.out_dim, 3), _description())
    with pytest.raises(MedclError, match=r"volume\.patch_size=8 is larger than volume v4 \(stored"):
        predict_rows(clf, man)


def test_efficiency_refuses_patch_mode_before_work(tmp_path):
    from medcl.evaluate.efficiency import run_efficiency

    man = make_volumes(tmp_path / "data")
    cfg = load_config(None, [*TINY_OVERRIDES, "data.volume_mode=patches", "data.patch_size=8"])
    with pytest.raises(ConfigError, match=r"data\.volume_mode=patches: not supported"):
        run_efficiency(cfg, man, tmp_path / "eff", log=lambda s: None, progress=False)
    assert not (tmp_path / "eff").exists()


def test_from_scratch_probe_reads_patches_and_full_training_is_refused(tmp_path):
    man = read_manifest(make_volumes(tmp_path / "data"))
    man.df.loc[man.df["split"] == "train", "label"] = [f"c{p % 3}" for p in range(6)]
    patches = ["data.volume_mode=patches", "data.patch_size=8", "data.patch_overlap=0.5"]
    cfg = load_config(None, [*TINY_OVERRIDES, *patches, "finetune.mode=knn"])
    res = finetune(cfg, man)
    assert res.model.description.image_size == 8
    assert res.model.description.volume == dataclasses.replace(VOLUME, patches_per_volume=4)
    cfg = load_config(None, [*TINY_OVERRIDES, *patches, "finetune.mode=full"])
    with pytest.raises(ConfigError, match=r"finetune\.mode=full: the encoder reads 3-D patches"):
        finetune(cfg, man)
