"""TensorBoard and MLflow logs of a tiny pretraining and fine-tuning: the event file and the MLflow
file store are read back with their own readers and hold the losses, lr, kNN monitor, throughput
and the augmentation grid; CSV values are the independent reference for the TensorBoard ones."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.errors import ConfigError
from medcl.evaluate.finetune import finetune
from medcl.train import callbacks as cb
from medcl.train.loggers import MLFLOW_EXPERIMENT, MLFLOW_RUN_FILE, build_loggers
from medcl.train.pretrain import pretrain
from medcl.transforms.preview import PAD_PX
from tests.conftest import TINY_OVERRIDES
from tests.train._stop import SimulatedKillError, StopAtEpoch

TINY = [*TINY_OVERRIDES, "optim.epochs=2"]
PRETRAIN_TAGS = (
    "train/loss_step",
    "train/loss_epoch",
    "train/sup",
    "train/ssl",
    "train/lr",
    "train/views_per_s",
    "val/knn_bacc",
)


def read_events(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list]]:
    """Scalars ``{tag: [(step, value)]}`` and images ``{tag: [Summary.Image]}`` of the TensorBoard
    event files in ``folder``, read record by record (TFRecord framing: u64 length, u32 crc,
    payload, u32 crc) with tensorboardX's ``Event`` protobuf."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for f in files:
        data, i = f.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("image"):
                    images.setdefault(v.tag, []).append(v.image)
                elif v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars, images


def _cfg(manifest: Path, out: Path, *extra: str):
    return load_config(None, [f"data.manifest={manifest}", f"out={out}", *TINY, *extra])


def test_tensorboard_by_default(tiny_manifest, tmp_path):
    """Default loggers: CSV and TensorBoard side by side in OUT/logs with the same values."""
    out = tmp_path / "run"
    r = pretrain(_cfg(tiny_manifest, out), progress=False)
    scalars, images = read_events(out / "logs")
    for tag in PRETRAIN_TAGS:
        assert scalars.get(tag), f"{tag} missing from the event file; has {sorted(scalars)}"
    assert len(scalars["train/loss_step"]) == r.steps
    assert all(v > 0 and np.isfinite(v) for _, v in scalars["train/views_per_s"])
    # the CSV logger is the independent reference: same steps, same values (float32 in TB)
    csv = pd.read_csv(out / "logs" / "metrics.csv")
    for tag in ("train/loss_step", "train/lr", "train/ssl"):
        rows = csv.dropna(subset=[tag])
        assert [s for s, _ in scalars[tag]] == rows["step"].astype(int).tolist()
        np.testing.assert_allclose([v for _, v in scalars[tag]], rows[tag], rtol=1e-6, atol=1e-7)
    # the augmentation grid: the PNG beside the logs, and the same pixels in TensorBoard
    png = np.asarray(Image.open(out / "logs" / "augment_grid.png"))
    views = load_config(None, TINY).augment.views
    assert png.shape[1] == PAD_PX + (views + 1) * (128 + PAD_PX)  # original + views, 128 px
    (img,) = images[cb.AugmentGridLogger.TAG]
    assert (img.height, img.width) == png.shape
    tb = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)).convert("L"))
    np.testing.assert_array_equal(tb, png)
    assert not (out / "mlruns").exists()


def test_mlflow_file_store(tiny_manifest, tmp_path):
    """trainer.logger with mlflow: a local file store OUT/mlruns read back by MlflowClient."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    cfg = _cfg(tiny_manifest, out, "trainer.logger=[csv,mlflow]", "optim.epochs=1")
    r = pretrain(cfg, progress=False)
    assert not list((out / "logs").glob("events.out.tfevents.*"))  # tensorboard not asked for
    client = MlflowClient((out / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    csv = pd.read_csv(out / "logs" / "metrics.csv")
    for tag in PRETRAIN_TAGS:
        hist = client.get_metric_history(run.info.run_id, tag)
        assert hist, f"{tag} missing from the MLflow run"
        if tag in ("train/loss_step", "train/lr"):
            assert len(hist) == r.steps
            rows = csv.dropna(subset=[tag])
            got = [m.value for m in sorted(hist, key=lambda m: m.step)]
            np.testing.assert_allclose(got, rows[tag], rtol=1e-6)
    arts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "augment_grid.png" in arts


def test_mlflow_run_continues_on_resume(tiny_manifest, tmp_path):
    """A pretraining killed after epoch 1 and resumed logs into the MLflow run it started."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    cfg = _cfg(tiny_manifest, out, "trainer.logger=[mlflow]")
    with pytest.raises(SimulatedKillError):
        pretrain(cfg, progress=False, callbacks=[StopAtEpoch(1)])
    r = pretrain(cfg, progress=False)
    assert r.resumed
    client = MlflowClient((out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id])
    assert run.info.run_id == (out / "logs" / MLFLOW_RUN_FILE).read_text()
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step"))
    assert steps == list(range(r.steps))  # both epochs' steps, each once


def test_finetune_logs(tiny_manifest, tmp_path):
    """Full fine-tuning with a run folder logs loss and val/bacc to OUT/logs/finetune."""
    out = tmp_path / "ft"
    cfg = load_config(
        None,
        [f"data.manifest={tiny_manifest}", f"out={out}", *TINY, "finetune.mode=full"],
    )
    finetune(cfg, read_manifest(tiny_manifest), out=out)
    scalars, _ = read_events(out / "logs" / "finetune")
    assert scalars.get("train/loss") and scalars.get("val/bacc")
    assert (out / "logs" / "finetune" / "metrics.csv").is_file()
    # without a run folder (as in `medcl efficiency`) nothing is written
    finetune(cfg, read_manifest(tiny_manifest), out=None)
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["finetune"]


def test_throughput_formula(monkeypatch):
    """views/s = batch · views · ranks / (time since the previous batch ended)."""
    clock = iter(np.arange(1, 100) * 0.25)
    monkeypatch.setattr(cb, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    logged: list[float] = []
    module = SimpleNamespace(log=lambda name, value, **kw: logged.append(value))
    trainer = SimpleNamespace(world_size=2)
    mon = cb.ThroughputMonitor(views=3)
    batch = (np.zeros((8, 1, 4, 4)),)
    mon.on_train_epoch_start(trainer, module)
    for i in range(3):
        mon.on_train_batch_start(trainer, module, batch, i)  # reads the clock at i = 0 only
        mon.on_train_batch_end(trainer, module, None, batch, i)
    # clock: start 0.25, ends 0.5, 0.75, 1.0 -> every Δt = 0.25 s
    assert logged == pytest.approx([8 * 3 * 2 / 0.25] * 3)


def test_logger_names_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer\.logger: "):
        load_config(None, ["trainer.logger=[csv,wandb]"])
    with pytest.raises(ConfigError, match=r"^trainer\.logger: "):
        load_config(None, ["trainer.logger=tensorboard"])
    cfg = load_config(None, ["trainer.logger=[]"])
    assert build_loggers(cfg, tmp_path) == []


def test_mlflow_missing_refused(tmp_path, monkeypatch):
    """Without MLflow installed, asking for it is a one-line ConfigError naming the key."""
    import builtins

    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("no mlflow")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    cfg = load_config(None, ["trainer.logger=[csv,mlflow]"])
    with pytest.raises(ConfigError, match=r"^trainer\.logger: mlflow is not installed"):
        build_loggers(cfg, tmp_path)


def test_grid_of_3d_patch_training(tmp_path):
    """3-D patch pretraining (a dataset of crops, no stacked images) still gets its grid: one crop
    of each of the first volumes, middle slice, then its views."""
    from tests.train.test_patch_pretrain import PATCH, make_volumes
    from tests.train.test_patch_pretrain import _cfg as patch_cfg

    out = tmp_path / "run"
    pretrain(patch_cfg(make_volumes(tmp_path / "data"), out, *PATCH, "optim.epochs=1"), False)
    png = np.asarray(Image.open(out / "logs" / "augment_grid.png"))
    _, images = read_events(out / "logs")
    (img,) = images[cb.AugmentGridLogger.TAG]
    assert (img.height, img.width) == png.shape
    assert png.shape[0] == PAD_PX + 4 * (128 + PAD_PX)  # four volumes, one row each
