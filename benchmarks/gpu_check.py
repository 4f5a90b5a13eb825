"""The GPU figures of medcl in one command (one GPU, a few minutes), each against its anchor.

Sections (``--sections``, all by default), each printing ``name: value unit | anchor ...`` lines:

sscl       SSCL pretraining throughput of ResNet-50 at 224², 2 views, bf16 autocast, channels-last:
           PretrainModule.objective (on-device batched augmentation + encoder + projection head +
           SSCL loss) + backward + AdamW on a device-resident batch (``sscl_img_per_s``: encoded
           views/s, the unit of NVIDIA's ~2,470 img/s for supervised ResNet-50 training on an A100
           with mixed precision), then the same step fed by medcl's DataLoader from a cache of
           .npy files (``sscl_pipeline_img_per_s``); GPU utilisation sampled every 100 ms
           (pynvml, else nvidia-smi) during the timed steps of each.
loss_share The SSCL loss (SupCon + NT-Xent, patient ids, half the images labelled) forward +
           backward on 4,096 × 128 projections, against the step time of 4,096 views at the
           ``sscl`` rate (one GPU encoding them in 512-view steps).
fixmatch   One FixMatch optimiser step (FixMatchModule.training_step: weak + strong views,
           μ = finetune.fixmatch_mu, τ = fixmatch_threshold, one forward pass) + backward +
           AdamW, on the same ResNet-50, bf16 autocast, as fine-tuning runs it.
patches3d  3-D patch pretraining (configs/pretrain/patches3d.yaml at ``--patch``³ voxels):
           batch volumes × patches_per_volume regions × 2 views through PretrainModule.objective
           + backward + AdamW; patches/s and volumes/s.
demo       The phantom cohort (medcl.demo.build_demo_data) then ``medcl efficiency`` with
           configs/efficiency_gpu.yaml on the GPU, shortened to fit (epochs, one seed, one
           budget): wall time and the headline line.

    python benchmarks/gpu_check.py --out gpu_check.json         # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run                    # every section on the CPU, tiny
    bash benchmarks/gpu_check.sh                                # bare machine: wheels from .whl/

A failing section prints ``section: FAILED <error>`` and the others still run; the figures are
written to ``--out`` as JSON (atomically) after every section. Without SimpleITK (a ~50 MB wheel
that torchio needs) the MR preset's per-sample torchio artifacts are switched off in the
sections that load data (``sscl`` pipeline, ``demo``) and the JSON says so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("sscl", "loss_share", "fixmatch", "patches3d", "demo")
NO_GPU = "n/a (no GPU)"
ANCHORS = {
    "sscl": "NVIDIA's supervised ResNet-50 ~2,470 img/s on an A100 with mixed precision; "
    "target >= 2,000 img/s",
    "util": "target >= 80 %",
    "loss_share": "the loss should be a small share of the step at a global batch of 4,096 views",
    "fixmatch": "one FixMatch step of B labelled + 2·μB unlabelled views on the SSCL network",
    "patches3d": "3-D patch pretraining step, configs/pretrain/patches3d.yaml",
    "demo": "the label-efficiency recipe end to end on the GPU profile, shortened",
}
ARTIFACTS_OFF = "augment.options={p_motion: 0, p_ghosting: 0, p_spike: 0, p_anisotropy: 0}"


def artifacts_available() -> bool:
    """Whether the MR preset's per-sample artifacts can run here (torchio imports SimpleITK)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torchio", "SimpleITK"))


class Run:
    """The sizes, device and shared state of one check."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.dry = bool(args.dry_run)
        self.cuda = torch.cuda.is_available() and not self.dry
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.seconds = args.seconds if args.seconds is not None else (0.0 if self.dry else 10.0)
        self.warmup = 1 if self.dry else 3
        self.min_steps = 2 if self.dry else 5
        self.artifacts = artifacts_available()
        self.started = time.perf_counter()
        self.figures: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self.section_seconds: dict[str, float] = {}
        self.state: dict[str, Any] = {}
        if self.dry:
            self.encoder, self.width, self.size, self.batch = "resnet10", 0.125, 32, 4
            self.patch, self.volumes, self.demo_patients, self.demo_size = 16, 2, 24, 32
        else:
            self.encoder, self.width, self.size, self.batch = args.encoder, 1.0, 224, args.batch
            self.patch, self.volumes = args.patch, args.volumes
            self.demo_patients, self.demo_size = args.demo_patients, 224

    def amp(self) -> Any:
        import torch

        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def remaining(self) -> float:
        """Seconds left of ``--budget``."""
        return self.args.budget - (time.perf_counter() - self.started)

    def figure(self, name: str, value: Any, unit: str, anchor: str = "", **detail: Any) -> None:
        """Record and print one figure."""
        self.figures[name] = {"value": value, "unit": unit, "anchor": anchor, **detail}
        text = f"{value:,.1f}" if isinstance(value, float) else str(value)
        line = f"{name}: {text} {unit}".rstrip()
        if anchor:
            line += f"  | {anchor}"
        print(line, flush=True)

    def timed(
        self,
        step: Callable[[], None],
        seconds: float | None = None,
        util: Utilisation | None = None,
    ) -> tuple[int, float]:
        """Warm-up steps, then steps until ``seconds`` have passed (at least ``min_steps``),
        with ``util`` sampling them; returns ``(steps, seconds)`` between two device
        synchronisations."""
        seconds = self.seconds if seconds is None else seconds
        for _ in range(self.warmup):
            step()
        self.sync()
        with util if util is not None else Utilisation(False):
            n, t0 = 0, time.perf_counter()
            while n < self.min_steps or time.perf_counter() - t0 < seconds:
                step()
                n += 1
            self.sync()
            t = time.perf_counter() - t0
        return n, t

    def with_smaller_batch(self, fn: Callable[[int], Any], batch: int, floor: int = 1) -> Any:
        """``fn(batch)``, retried at half the batch when CUDA runs out of memory."""
        import torch

        while True:
            try:
                return fn(batch)
            except torch.cuda.OutOfMemoryError:
                if batch // 2 < floor:
                    raise
            # outside the handler: the traceback's frames (and their tensors) are gone
            print(f"      out of memory at batch {batch}; retrying at {batch // 2}", flush=True)
            self.free()
            batch //= 2

    def free(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def write(self) -> None:
        """The JSON of everything so far, written atomically."""
        import torch

        doc = {
            "kind": "medcl-gpu-check",
            "dry_run": self.dry,
            "device": torch.cuda.get_device_name(0) if self.cuda else "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "torchio_artifacts": self.artifacts,
            "seconds_per_timing": self.seconds,
            "figures": self.figures,
            "failed": self.failed,
            "section_seconds": self.section_seconds,
            "wall_seconds": round(time.perf_counter() - self.started, 1),
        }
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2, default=str)
                f.write("\n")
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class Utilisation:
    """GPU utilisation (%) sampled every ``period`` s by a background thread: pynvml
    (nvidia-ml-py), else ``nvidia-smi -lms``. ``summary()`` is ``n/a (no GPU)`` on the CPU."""

    def __init__(self, enabled: bool, period: float = 0.1) -> None:
        self.enabled, self.period = enabled, period
        self.samples: list[float] = []
        self.source = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Utilisation:
        if not self.enabled:
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = self._handle(pynvml)
            self.source = "pynvml"
            self._thread = threading.Thread(target=self._poll_nvml, args=(pynvml, handle))
        except Exception:  # no pynvml or no driver access: nvidia-smi
            self.source = "nvidia-smi"
            self._thread = threading.Thread(target=self._poll_smi)
        self._thread.daemon = True
        self._thread.start()
        return self

    @staticmethod
    def _handle(pynvml: Any) -> Any:
        """NVML's handle of torch's device 0 (by PCI address; index 0 if that fails)."""
        import torch

        try:
            p = torch.cuda.get_device_properties(0)
            address = f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
            return pynvml.nvmlDeviceGetHandleByPciBusId(address)
        except Exception:
            return pynvml.nvmlDeviceGetHandleByIndex(0)

    def _poll_nvml(self, pynvml: Any, handle: Any) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            except Exception:
                pass
            self._stop.wait(self.period)

    def _poll_smi(self) -> None:
        cmd = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            f"-lms={int(self.period * 1000)}",
            "-i=0",
        ]
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        except OSError:
            return
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self) -> tuple[Any, dict[str, Any]]:
        """``(mean %, detail)``, or ``(n/a (no GPU), {})``."""
        if not self.enabled:
            return NO_GPU, {}
        if not self.samples:
            return "n/a (no samples)", {"source": self.source}
        return round(statistics.fmean(self.samples), 1), {
            "median": statistics.median(self.samples),
            "min": min(self.samples),
            "samples": len(self.samples),
            "source": self.source,
        }


def report_util(run: Run, name: str, util: Utilisation) -> None:
    value, detail = util.summary()
    run.figure(name, value, "%" if isinstance(value, float) else "", ANCHORS["util"], **detail)


# ----------------------------------------------------------------------------- sections
def _pretrain_config(run: Run, batch: int) -> Any:
    """configs/efficiency_gpu.yaml (the GPU profile) with ResNet-50 as its header says, at
    ``batch`` images per step; tiny on the CPU in a dry run."""
    from medcl.config import load_config

    over = [f"data.batch_size={batch}", f"data.image_size={run.size}"]
    if run.dry:
        over += [
            f"model.encoder={run.encoder}",
            f"model.width={run.width}",
            "model.proj_hidden=32",
            "model.proj_dim=16",
            "data.num_workers=0",
            "finetune.batch_size=4",
        ]
    else:
        over += [f"model.encoder={run.encoder}", "model.proj_hidden=2048"]
    if not run.artifacts:
        over.append(ARTIFACTS_OFF)
    return load_config(ROOT / "configs" / "efficiency_gpu.yaml", over)


def _batch_inputs(run: Run, n: int, shape: tuple[int, ...], per_patient: int) -> tuple[Any, ...]:
    """Images in cache units (MR: [0, 1]), half of them labelled (3 classes), ``per_patient``
    images per patient."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand((n, *shape), generator=g).to(run.device)
    idx = torch.arange(n)
    labels = torch.where(idx % 2 == 0, idx % 3, torch.full_like(idx, -1)).to(run.device)
    groups = (idx // per_patient).to(run.device)
    return x, labels, groups


def _pretrain_step(run: Run, module: Any, opt: Any, batch: tuple[Any, ...]) -> Callable[[], None]:
    import torch

    x, labels, groups = batch
    gen = torch.Generator(device=run.device)
    count = [0]

    def step() -> None:
        gen.manual_seed(count[0])
        count[0] += 1
        with run.amp():
            loss, _ = module.objective(x, labels, groups, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _sscl_module(run: Run, cfg: Any) -> tuple[Any, Any, Any]:
    import torch

    from medcl.train.module import PretrainModule
    from medcl.train.objectives import to_channels_last
    from medcl.transforms import build_preset

    preset = build_preset("mr", cfg.augment.options, dims=2)
    module = PretrainModule(cfg, preset, 2, 3).to(run.device)
    for net in (module.encoder, module.method):  # as PretrainModule.on_fit_start does
        to_channels_last(net, run.device, 2)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.optim.lr)
    return module, opt, preset


def sscl_step_rate(run: Run, seconds: float | None = None, util: Utilisation | None = None) -> dict:
    """Views/s of the SSCL step on a device-resident batch (cached in ``run.state``)."""
    if "sscl_step" in run.state and util is None:
        return run.state["sscl_step"]

    def measure(batch: int) -> dict:
        cfg = _pretrain_config(run, batch)
        module, opt, _ = _sscl_module(run, cfg)
        inputs = _batch_inputs(run, batch, (1, run.size, run.size), cfg.data.images_per_patient)
        step = _pretrain_step(run, module, opt, inputs)
        n, t = run.timed(step, seconds, util)
        views = cfg.augment.views
        return {
            "batch": batch,
            "views": views,
            "steps": n,
            "seconds": t,
            "views_per_s": n * batch * views / t,
            "images_per_s": n * batch / t,
            "step_ms": 1000 * t / n,
            "config": f"{cfg.model.encoder} {run.size}px",
        }

    out = run.with_smaller_batch(measure, run.batch, floor=2)
    run.free()
    run.state["sscl_step"] = out
    return out


def section_sscl(run: Run) -> None:
    util = Utilisation(run.cuda)
    r = sscl_step_rate(run, util=util)
    run.figure(
        "sscl_img_per_s",
        r["views_per_s"],
        "img/s",
        ANCHORS["sscl"],
        images_per_s=r["images_per_s"],
        step_ms=r["step_ms"],
        batch=r["batch"],
        views=r["views"],
        steps=r["steps"],
        what=f"{r['config']}, {r['batch']} images x {r['views']} views per step, bf16, "
        "channels-last; device-resident batch; encoded views/s",
    )
    report_util(run, "sscl_gpu_util", util)
    sscl_pipeline(run, r["batch"])


def sscl_pipeline(run: Run, batch: int) -> None:
    """The same step fed by PretrainData's DataLoader (cache of .npy files, loader-side
    views, pinned memory) as ``medcl pretrain`` feeds it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pretrain_bench import fake_cache

    from medcl.data.manifest import read_manifest

    cfg = _pretrain_config(run, batch)
    util = Utilisation(run.cuda)
    with tempfile.TemporaryDirectory(prefix="gpu_check_cache_") as tmp:
        manifest = fake_cache(Path(tmp), max(4 * batch, 32), run.size)
        n, t = _pipeline_steps(run, cfg, read_manifest(manifest), util)
    run.free()
    views = cfg.augment.views
    run.figure(
        "sscl_pipeline_img_per_s",
        n * batch * views / t,
        "img/s",
        ANCHORS["sscl"],
        images_per_s=n * batch / t,
        step_ms=1000 * t / n,
        batch=batch,
        steps=n,
        workers=cfg.data.num_workers,
        torchio_artifacts=run.artifacts,
        what="the sscl step fed by medcl's DataLoader (PretrainData, .npy cache)",
    )
    report_util(run, "sscl_pipeline_gpu_util", util)


def _pipeline_steps(run: Run, cfg: Any, manifest: Any, util: Utilisation) -> tuple[int, float]:
    import torch

    from medcl.train.datamodule import PretrainData

    module, opt, preset = _sscl_module(run, cfg)
    dm = PretrainData(cfg, manifest, preset, 2, progress=False)
    dm.setup()
    loader = dm.train_dataloader()
    it = iter(loader)
    gen = torch.Generator(device=run.device)

    def step() -> None:
        nonlocal it
        try:
            x, y, g, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, y, g, _ = next(it)
        x = x.to(run.device, non_blocking=True)
        y, g = y.to(run.device, non_blocking=True), g.to(run.device, non_blocking=True)
        with run.amp():
            loss, _ = module.objective(x, y, g, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run.timed(step, util=util)


def section_loss_share(run: Run) -> None:
    import torch

    from medcl.losses.sscl import SSCLLoss

    n_views = 64 if run.dry else 4096
    views, dim = 2, 16 if run.dry else 128
    n = n_views // views
    g = torch.Generator(device="cpu").manual_seed(0)
    feats = torch.randn(n, views, dim, generator=g).to(run.device).requires_grad_(True)
    idx = torch.arange(n)
    labels = torch.where(idx % 2 == 0, idx % 3, torch.full_like(idx, -1)).to(run.device)
    groups = (idx // 2).to(run.device)
    loss_fn = SSCLLoss(temperature=0.2, group_positives=True)

    def step() -> None:
        parts = loss_fn(feats, labels, groups)
        (2.0 * parts.sup + parts.ssl).backward()
        feats.grad = None

    steps, t = run.timed(step, seconds=min(run.seconds, 3.0))
    loss_ms = 1000 * t / steps
    rate = sscl_step_rate(run, seconds=None if "sscl_step" in run.state else run.seconds / 2)
    step_ms = 1000 * n_views / rate["views_per_s"]
    run.figure(
        "loss_share_4096",
        100 * loss_ms / step_ms,
        "%",
        ANCHORS["loss_share"],
        views=n_views,
        dim=dim,
        loss_fwd_bwd_ms=loss_ms,
        step_ms_at_views=step_ms,
        what=f"SSCLLoss (SupCon + NT-Xent, patient ids, half labelled) fwd+bwd on {n_views} x "
        f"{dim} vs {n_views} views at the sscl step rate ({rate['views_per_s']:.0f} views/s)",
    )
    print(f"      loss fwd+bwd {loss_ms:.2f} ms; step of {n_views} views {step_ms:.1f} ms")


def section_fixmatch(run: Run) -> None:
    import torch
    from torch import nn

    from medcl.evaluate.classifier import Classifier
    from medcl.evaluate.fixmatch import FixMatchModule
    from medcl.models import EncoderSpec, build_encoder
    from medcl.models.description import ModelDescription
    from medcl.transforms import build_preset

    def measure(batch: int) -> dict:
        cfg = _pretrain_config(run, run.batch)
        from medcl.config import derive

        cfg = derive(cfg, **{"finetune.batch_size": batch})
        ft = cfg.finetune
        spec = EncoderSpec.from_config(cfg, 2)
        preset = build_preset("mr", cfg.augment.options, dims=2)
        encoder = build_encoder(spec)
        desc = ModelDescription(
            spec=spec, classes=["c0", "c1", "c2"], preset=preset.name, window=preset.window
        )
        clf = Classifier(encoder, nn.Linear(encoder.out_dim, 3), desc)
        module = FixMatchModule(clf, cfg, None, pretrained=True).to(run.device)
        opt = torch.optim.AdamW(module.parameters(), lr=ft.lr)
        n_unl = ft.fixmatch_mu * batch
        x_lab, y, _ = _batch_inputs(run, batch, (1, run.size, run.size), 2)
        y = y.clamp_min(0)
        x_unl, _, groups = _batch_inputs(run, n_unl, (1, run.size, run.size), 2)

        def step() -> None:
            with run.amp():
                loss = module.training_step((x_lab, y, x_unl, groups), 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            module.mask_rates.clear()

        n, t = run.timed(step)
        return {
            "batch": batch,
            "mu": ft.fixmatch_mu,
            "tau": ft.fixmatch_threshold,
            "steps": n,
            "seconds": t,
            "images": batch + 2 * n_unl,
        }

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        r = run.with_smaller_batch(measure, 4 if run.dry else 64)
    run.free()
    step_ms = 1000 * r["seconds"] / r["steps"]
    run.figure(
        "fixmatch_step_ms",
        step_ms,
        "ms",
        ANCHORS["fixmatch"],
        img_per_s=r["images"] * r["steps"] / r["seconds"],
        batch=r["batch"],
        mu=r["mu"],
        threshold=r["tau"],
        images_per_step=r["images"],
        steps=r["steps"],
        what=f"FixMatchModule.training_step + backward + AdamW, {run.encoder} {run.size}px, "
        f"B={r['batch']} labelled (weak) + mu*B={r['mu'] * r['batch']} unlabelled (weak + "
        "strong), one forward pass, bf16",
    )
    run.figure(
        "fixmatch_img_per_s", r["images"] * r["steps"] / r["seconds"], "img/s", ANCHORS["fixmatch"]
    )


def section_patches3d(run: Run) -> None:
    from medcl.config import load_config
    from medcl.transforms import build_preset

    def measure(volumes: int) -> dict:
        import torch

        from medcl.train.module import PretrainModule

        over = [f"data.patch_size={run.patch}", f"data.batch_size={volumes}"]
        if run.dry:
            over += [
                "model.encoder=resnet10",
                "model.width=0.125",
                "model.proj_hidden=32",
                "model.proj_dim=16",
                "data.patches_per_volume=2",
            ]
        if not run.artifacts:
            over.append(ARTIFACTS_OFF)
        cfg = load_config(ROOT / "configs" / "pretrain" / "patches3d.yaml", over)
        d = cfg.data
        preset = build_preset("mr", cfg.augment.options, dims=3)
        module = PretrainModule(cfg, preset, 3, 3).to(run.device)
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.optim.lr)
        n = volumes * d.patches_per_volume
        v = cfg.augment.views
        # loader-side views (B·k, V, 1, P, P, P) as collate_patches gives them
        x, labels, groups = _batch_inputs(
            run, n, (v, 1, d.patch_size, d.patch_size, d.patch_size), d.patches_per_volume
        )
        step = _pretrain_step(run, module, opt, (x, labels, groups))
        steps, t = run.timed(step)
        return {
            "volumes": volumes,
            "k": d.patches_per_volume,
            "views": v,
            "steps": steps,
            "seconds": t,
            "encoder": f"{cfg.model.encoder} width {cfg.model.width}",
        }

    r = run.with_smaller_batch(measure, run.volumes)
    run.free()
    patches = r["volumes"] * r["k"] * r["views"]
    run.figure(
        "patches3d_img_per_s",
        patches * r["steps"] / r["seconds"],
        "patches/s",
        ANCHORS["patches3d"],
        volumes_per_s=r["volumes"] * r["steps"] / r["seconds"],
        step_ms=1000 * r["seconds"] / r["steps"],
        patch=run.patch,
        volumes=r["volumes"],
        patches_per_volume=r["k"],
        views=r["views"],
        what=f"{r['encoder']}, {run.patch}^3 patches, {r['volumes']} volumes x {r['k']} regions "
        f"x {r['views']} views per step, bf16 (3-D stays contiguous)",
    )
    run.figure("patches3d_volumes_per_s", r["volumes"] * r["steps"] / r["seconds"], "volumes/s")


def demo_overrides(run: Run, manifest: Path, out: Path) -> list[str]:
    """``medcl efficiency`` overrides over configs/efficiency_gpu.yaml: the GPU profile's
    network, image size and precision, shortened to one seed and one budget."""
    a = run.args
    over = [
        f"data.manifest={manifest}",
        f"out={out}",
        "efficiency.fractions=[0.1]",
        "efficiency.seeds=[0]",
        "efficiency.linear_probe=false",
        "finetune.epoch_steps=8",
    ]
    if run.dry:
        over += [
            "trainer.accelerator=cpu",
            "trainer.threads=1",
            "data.image_size=32",
            "data.batch_size=16",
            "data.num_workers=0",
            "model.encoder=resnet10",
            "model.width=0.125",
            "model.proj_dim=16",
            "model.proj_hidden=32",
            "optim.epochs=1",
            "finetune.epochs=1",
            "finetune.batch_size=8",
            "finetune.epoch_steps=2",
            "efficiency.fractions=[0.5]",
            "efficiency.methods=[supervised, sscl]",
            "efficiency.share_simclr=false",
            "efficiency.n_boot=20",
        ]
    else:
        over += [
            "trainer.accelerator=gpu",
            f"data.batch_size={a.demo_batch}",
            f"optim.epochs={a.demo_epochs}",
            f"finetune.epochs={a.demo_epochs}",
            f"efficiency.methods=[{a.demo_methods}]",
            "efficiency.n_boot=200",
        ]
    if not run.artifacts:
        over.append(ARTIFACTS_OFF)
    return over


def section_demo(run: Run) -> None:
    from medcl.demo import build_demo_data

    out_dir = Path(run.args.out).resolve().parent
    log_path = out_dir / "gpu_check_demo.log"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_demo_") as tmp:
        work = Path(tmp)
        with open(log_path, "w", encoding="utf-8") as bars, contextlib.redirect_stderr(bars):
            split = build_demo_data(
                work,
                run.demo_patients,
                run.demo_size,
                log=lambda s: print("      " + s, flush=True),
            )
        t_data = time.perf_counter() - t0
        cmd = [
            sys.executable,
            "-m",
            "medcl.cli.main",
            "efficiency",
            "--config",
            str(ROOT / "configs" / "efficiency_gpu.yaml"),
            *demo_overrides(run, split, work / "efficiency"),
        ]
        timeout = max(30.0, run.remaining() - 15.0)
        print(
            f"      medcl efficiency (time limit {timeout:.0f} s; log {log_path.name})", flush=True
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        t1 = time.perf_counter()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write("\n" + " ".join(cmd) + "\n\n")
            log.flush()
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    timeout=timeout,
                    env=env,
                    cwd=str(ROOT),
                )
            except subprocess.TimeoutExpired as exc:
                log.write(
                    (exc.stdout or b"").decode()
                    if isinstance(exc.stdout, bytes)
                    else (exc.stdout or "")
                )
                raise RuntimeError(f"medcl efficiency did not finish in {timeout:.0f} s") from None
            log.write(proc.stdout)
        t_eff = time.perf_counter() - t1
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0:
            logged = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            tail = (logged or ["(no output)"])[-1]
            raise RuntimeError(
                f"medcl efficiency exited {proc.returncode}: {tail} (see {log_path})"
            )
        at = next((i for i, s in enumerate(lines) if s.startswith("results:")), None)
        headline = lines[at - 1] if at else "(no headline found)"
    wall = time.perf_counter() - t0
    run.figure(
        "demo_wall_s",
        wall,
        "s",
        ANCHORS["demo"],
        data_s=t_data,
        efficiency_s=t_eff,
        patients=run.demo_patients,
        image_px=run.demo_size,
        headline=headline,
        overrides=demo_overrides(run, Path("SPLIT"), Path("OUT"))[2:],
        torchio_artifacts=run.artifacts,
    )
    run.figure("demo_headline", headline, "")


RUNNERS: dict[str, Callable[[Run], None]] = {
    "sscl": section_sscl,
    "loss_share": section_loss_share,
    "fixmatch": section_fixmatch,
    "patches3d": section_patches3d,
    "demo": section_demo,
}


def summary(run: Run) -> None:
    print("\n=== summary " + "=" * 60)
    width = max(len(k) for k in run.figures) if run.figures else 10
    for name, f in run.figures.items():
        v = f["value"]
        text = f"{v:,.1f}" if isinstance(v, float) else str(v)
        if len(text) > 70:
            text = text[:67] + "..."
        print(f"{name:<{width}}  {text:>12} {f['unit']}")
    for name, err in run.failed.items():
        print(f"{name:<{width}}  FAILED {err}")
    print(f"wall {time.perf_counter() - run.started:.0f} s; JSON: {run.args.out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="JSON of all figures")
    ap.add_argument("--dry-run", action="store_true", help="every section on the CPU, tiny")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=", ".join(SECTIONS))
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per figure (10)")
    ap.add_argument("--budget", type=float, default=400.0, help="seconds for the whole check")
    ap.add_argument("--encoder", default="resnet50")
    ap.add_argument("--batch", type=int, default=256, help="sscl images per step (× 2 views)")
    ap.add_argument("--patch", type=int, default=96, help="3-D patch edge (voxels)")
    ap.add_argument("--volumes", type=int, default=8, help="3-D volumes per step")
    ap.add_argument("--demo-patients", type=int, default=200)
    ap.add_argument("--demo-batch", type=int, default=64)
    ap.add_argument("--demo-epochs", type=int, default=3)
    ap.add_argument("--demo-methods", default="supervised, fixmatch, sscl")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        ap.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = wanted
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from medcl._quiet import quiet_third_party

    quiet_third_party()
    if args.dry_run:
        torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    run = Run(args)
    if not run.dry and not run.cuda:
        print("no CUDA device: run with --dry-run for the CPU check", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(0) if run.cuda else "cpu (dry run)"
    print(
        f"medcl GPU check on {where}; torch {torch.__version__}; "
        f"sections {', '.join(args.sections)}; "
        f"torchio artifacts {'on' if run.artifacts else 'off (no SimpleITK)'}",
        flush=True,
    )
    for name in args.sections:
        print(f"--- {name}", flush=True)
        t = time.perf_counter()
        try:
            RUNNERS[name](run)
        except Exception as exc:  # one failing section never loses the others
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            run.failed[name] = msg
            print(f"{name}: FAILED {msg}", flush=True)
            traceback.print_exc(limit=4, file=sys.stderr)
            run.free()
        run.section_seconds[name] = round(time.perf_counter() - t, 1)
        run.write()
    summary(run)
    run.write()
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
