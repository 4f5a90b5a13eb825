"""A checkpoint written before the objective classes (heads, targets and queue on the module:
``projector.``, ``target_encoder.``, ``moco.queue`` …) resumes: its keys are renamed on load."""

from __future__ import annotations

import pytest
import torch

from medcl.models.export import load_encoder
from medcl.train.migrate import is_legacy, migrate_state_dict
from medcl.train.pretrain import pretrain
from tests.train._stop import SimulatedKillError, StopAtEpoch
from tests.train.test_pretrain import _cfg

# keys as the module wrote them before the objective classes (git history of
# medcl/train/module.py: self.projector, self.target_encoder, self.target_projector, self.moco,
# self.predictor), and where each lives now
OLD_TO_NEW = {
    "encoder.conv1.weight": "encoder.conv1.weight",
    "projector.net.0.weight": "method.projector.net.0.weight",
    "predictor.net.3.bias": "method.predictor.net.3.bias",
    "target_encoder.layer1.0.bn1.running_mean": "method.target_encoder.layer1.0.bn1.running_mean",
    "target_projector.net.3.weight": "method.target_projector.net.3.weight",
    "moco.queue": "method.moco_loss.queue",
    "moco.queue_labels": "method.moco_loss.queue_labels",
    "moco.queue_groups": "method.moco_loss.queue_groups",
    "moco.queue_ptr": "method.moco_loss.queue_ptr",
    "moco.queue_len": "method.moco_loss.queue_len",
}


def _to_old_layout(state_dict: dict) -> dict:
    new_to_old = [
        ("method.moco_loss.", "moco."),
        ("method.", ""),  # projector, predictor, target_encoder, target_projector
    ]
    out = {}
    for key, value in state_dict.items():
        for new, old in new_to_old:
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        out[key] = value
    return out


def test_old_keys_are_renamed_values_kept():
    old = {k: torch.tensor([float(i)]) for i, k in enumerate(OLD_TO_NEW)}
    assert is_legacy(old)
    new = migrate_state_dict(old)
    assert list(new) == list(OLD_TO_NEW.values())
    assert all(torch.equal(new[OLD_TO_NEW[k]], v) for k, v in old.items())
    assert not is_legacy(new) and migrate_state_dict(new) == new  # the current layout: as is


def test_a_moco_checkpoint_in_the_old_layout_resumes_exactly(tiny_manifest, tmp_path):
    """Kill a MoCo run after its first epoch, rewrite its checkpoint in the old layout, resume:
    the encoder equals an uninterrupted run's."""
    extra = ("method.name=moco", "optim.epochs=2")
    straight = pretrain(_cfg(tiny_manifest, tmp_path / "a", *extra), progress=False)
    run = tmp_path / "b"
    with pytest.raises(SimulatedKillError):
        pretrain(_cfg(tiny_manifest, run, *extra), progress=False, callbacks=[StopAtEpoch(1)])
    for ckpt_path in (run / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        ckpt["state_dict"] = _to_old_layout(ckpt["state_dict"])
        assert "moco.queue" in ckpt["state_dict"] and is_legacy(ckpt["state_dict"])
        torch.save(ckpt, ckpt_path)
    resumed = pretrain(_cfg(tiny_manifest, run, *extra), progress=False)
    assert resumed.resumed and resumed.steps == straight.steps
    a, _ = load_encoder(tmp_path / "a")
    b, _ = load_encoder(run)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
