"""Throughput of the ``mr`` preset: batched device path vs the same transforms one image at a time.

The batched path is :class:`medcl.transforms.BatchAugment` on a ``(B, 1, H, W)`` batch (one call per
batch, independent parameters per sample). The per-sample baseline is the usual torchio + MONAI
pipeline with the same transforms, probabilities and ranges, called once per image as a data-loader
worker would:

    clamp -> affine (rotate +-10 deg, scale 0.9-1.1, translate 5 %) -> resized crop (area 0.7-1)
    -> bias field -> gamma -> contrast -> blur -> Gaussian noise -> Rician noise -> clamp

The torchio k-space artifacts (motion, ghosting, spike, anisotropy) are per-sample in both designs
and are left out of both sides.

Run from the repository root (after ``make setup``)::

    python benchmarks/augment_bench.py            # 64x64, batch 256, 2 threads
    python benchmarks/augment_bench.py --size 128 --batch 128
    OMP_WAIT_POLICY=ACTIVE python benchmarks/augment_bench.py   # torch's default spinning

The two paths are timed in interleaved rounds (medians reported) so that load from other
processes hits both alike; the header prints the load average.
"""

from __future__ import annotations

import os

# Our machines are shared: with spinning OpenMP threads, a 2-thread batch op stalls whenever the
# other thread is descheduled. Passive waiting must be chosen before torch starts (override by
# exporting OMP_WAIT_POLICY yourself).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from medcl.transforms import build_preset  # noqa: E402
from medcl.transforms.options import MROptions  # noqa: E402


def per_sample_pipeline(o: MROptions, size: int, seed: int = 0) -> Callable[[torch.Tensor], object]:
    """torchio + MONAI pipeline equivalent to the batched ``mr`` preset, for one ``(1, H, W)``."""
    import monai.transforms as mt
    import torchio as tio

    shift = o.translate_frac * size  # pixels (torchio: mm with 1 mm spacing)
    crop_side = math.sqrt(o.crop_area_range[0])
    affine = tio.RandomAffine(
        scales=(*o.scale_range, *o.scale_range, 1, 1),
        degrees=(0, 0, 0, 0, -o.rotate_deg, o.rotate_deg),  # in-plane for (1, H, W, 1)
        translation=(-shift, shift, -shift, shift, 0, 0),
        default_pad_value=0,
        p=o.p_affine,
    )
    crop = mt.RandScaleCrop(roi_scale=crop_side, max_roi_scale=1.0, random_size=True)
    resize = mt.Resize((size, size), mode="bilinear")
    tio_intensity = tio.Compose(
        [
            tio.RandomBiasField(coefficients=o.bias_coef, order=o.bias_order, p=o.p_bias),
            tio.RandomGamma(log_gamma=o.log_gamma_range, p=o.p_gamma),
        ]
    )
    contrast = mt.RandScaleIntensityFixedMean(
        prob=o.p_contrast, factors=(o.contrast_range[0] - 1, o.contrast_range[1] - 1)
    )
    sigma = o.blur_sigma_px_range
    blur = tio.RandomBlur(std=(*sigma, *sigma, 0, 0), p=o.p_blur)
    noise = tio.RandomNoise(std=o.noise_std_range, p=o.p_noise)
    rician = mt.RandRicianNoise(prob=o.p_rician, std=o.rician_std_range[1], sample_std=True)
    for t in (contrast, rician):
        t.set_random_state(seed)
    coin = torch.Generator().manual_seed(seed)

    def apply(image: torch.Tensor) -> object:
        x = image.clamp(0, 1).unsqueeze(-1)  # (1, H, W, 1) for torchio
        x = affine(x)
        if torch.rand(1, generator=coin).item() < o.p_crop:
            x = resize(crop(x[..., 0])).as_tensor().unsqueeze(-1)
        x = tio_intensity(x)
        x = torch.as_tensor(contrast(x[..., 0]))
        x = blur(x.unsqueeze(-1))
        x = noise(x)[..., 0]
        x = torch.as_tensor(rician(x))
        return x.clamp(0, 1)

    return apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--per-sample-images", type=int, default=64, help="images per round")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    preset = build_preset("mr")
    images = torch.rand(args.batch, 1, args.size, args.size)
    gen = torch.Generator().manual_seed(0)
    pipeline = per_sample_pipeline(preset.options, args.size)

    def run_batched() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            preset.batched(images, gen)
        return args.batch / (time.perf_counter() - t0)

    def run_per_sample() -> float:
        t0 = time.perf_counter()
        for i in range(args.per_sample_images):
            pipeline(images[i % args.batch])
        return args.per_sample_images / (time.perf_counter() - t0)

    run_batched(), run_per_sample()  # warm-up (caches, allocator, lazy imports)
    # Interleave the two so that load from other processes hits both alike; report medians.
    batched, per_sample = [], []
    for _ in range(args.rounds):
        batched.append(run_batched())
        per_sample.append(run_per_sample())
    b_ips, p_ips = statistics.median(batched), statistics.median(per_sample)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"mr preset, {args.size}x{args.size}, batch {args.batch}, torch {torch.__version__}, "
        f"{args.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        f"CPU (1-min load average {load:.1f}); "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"batched    (medcl BatchAugment, one call per batch): {b_ips:10.0f} img/s")
    print(f"per-sample (torchio + MONAI, one image at a time):   {p_ips:10.0f} img/s")
    print(f"speed-up: {b_ips / p_ips:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
