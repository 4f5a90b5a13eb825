"""``efficiency.methods: [dino, vicreg]``: each arm is pretrained without labels by its own
objective (λ1 = 0, every training image unlabelled), then fine-tuned and linearly probed from that
run, and recorded under its name.

Spies on the experiment's calls to ``pretrain`` and ``finetune`` record what each call was given
and then call the real functions (one optimiser step of pretraining, one fine-tuning epoch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import medcl.evaluate.efficiency as eff
from medcl.config import load_config
from medcl.data.manifest import Manifest, read_manifest
from medcl.errors import ConfigError
from tests.conftest import TINY_OVERRIDES, make_manifest

METHODS = ("dino", "vicreg")


def test_dino_and_vicreg_arms_pretrain_label_free_with_their_objective(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "data", n_patients=12, labelled_patients=8, test_patients=3)
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            "optim.epochs=1",
            "optim.max_steps=1",
            "finetune.epochs=1",
            "efficiency.fractions=[0.5]",
            "efficiency.seeds=[0]",
            "efficiency.methods=[dino, vicreg]",
            "efficiency.linear_probe=true",
            "efficiency.n_boot=5",
            "method.lambda_sup=0.5",
            "method.options.dino.out_dim=16",
        ],
    )
    pre: dict[Path, tuple[str, float, int, int]] = {}
    tuned: list[Path | None] = []
    real_pretrain, real_finetune = eff.pretrain, eff.finetune

    def pretrain(c: Any, *args: Any, **kwargs: Any) -> Any:
        df = read_manifest(c.data.manifest).df
        train = df[df["split"] == "train"]
        labelled = int((train["label"] != "").sum())
        pre[Path(c.out).resolve()] = (c.method.name, c.method.lambda_sup, labelled, len(train))
        return real_pretrain(c, *args, **kwargs)

    def finetune(c: Any, m: Manifest, pretrained: Any = None, **kwargs: Any) -> Any:
        tuned.append(None if pretrained is None else Path(pretrained).resolve())
        return real_finetune(c, m, pretrained=pretrained, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eff, "pretrain", pretrain)
        mp.setattr(eff, "finetune", finetune)
        result = eff.run_efficiency(
            cfg, manifest, tmp_path / "out", log=lambda s: None, progress=False
        )

    n_train = int((read_manifest(manifest).df["split"] == "train").sum())
    arms = [r["method"] for r in result.records]
    assert sorted(arms) == sorted([*METHODS, *(f"{m}+linear" for m in METHODS)])
    for record, where in zip(result.records, tuned, strict=True):
        method = record["method"].split("+")[0]
        run = (tmp_path / "out" / "pretrain" / f"{method}_s0").resolve()
        assert where == run and Path(record["pretrain_dir"]).resolve() == run
        assert pre[run] == (method, 0.0, 0, n_train)  # its objective, λ1 = 0, no label, all images
    assert len(pre) == 2  # one pretraining per objective, shared by fine-tuning and probe


def test_an_unknown_efficiency_method_names_the_choices(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "data", n_patients=8, labelled_patients=4)
    cfg = load_config(None, ["efficiency.methods=[swav]"])
    with pytest.raises(ConfigError, match="^efficiency.methods: choose from .*dino, vicreg"):
        eff.run_efficiency(cfg, manifest, tmp_path / "out", log=lambda s: None, progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was written
