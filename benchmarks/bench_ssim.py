"""Speed and agreement of `vidyn.metrics.ssim` against scikit-image's per-frame loop.

Run: `python benchmarks/bench_ssim.py [--frames 1024] [--size 64] [--channels 3] [--threads N] [--conv]`

Times `ssim` on a `(frames, 1, C, H, W)` batch and scikit-image's `structural_similarity` (Gaussian 11/1.5,
population covariance, data range 1: DESIGN.md §5) called once per frame, prints both, the speed-up (target
>= 3x at 1,024 RGB 64x64 frames), the torch thread count, and the largest absolute difference, both
against scikit-image on the same float32 frames (it then computes in float32) and on float64 copies of a
subset. `--conv` also times the same float64 filtering done with grouped `conv2d` instead of the banded
matmuls `ssim` uses, to show why it uses matmuls. Timings on shared machines drift by ~30%: compare
settings side by side within one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from vidyn.metrics import ssim


def skimage_loop(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """pred, target (N, H, W, C) -> (N,) scikit-image SSIM per frame."""
    return np.array(
        [
            structural_similarity(
                p,
                t,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1,
                channel_axis=-1,
            )  # fmt: skip
            for p, t in zip(pred, target, strict=True)
        ]
    )


def conv_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The same SSIM, its Gaussian as two grouped float64 conv2d passes: (N, C, H, W) -> (N,)."""
    n, c, h, w = pred.shape
    x = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / 1.5) ** 2)
    g = g / g.sum()
    x, y = pred.double(), target.double()
    maps = torch.cat([x, y, x * x + y * y, x * y], dim=1)  # (N, 4C, H, W)
    maps = F.conv2d(maps, g.view(1, 1, 1, 11).expand(4 * c, 1, 1, 11).contiguous(), groups=4 * c)
    maps = F.conv2d(maps, g.view(1, 1, 11, 1).expand(4 * c, 1, 11, 1).contiguous(), groups=4 * c)
    mu_x, mu_y, e_sq, e_xy = maps.split(c, dim=1)
    mu_xy, mu_sq = mu_x * mu_y, mu_x * mu_x + mu_y * mu_y
    s = (2 * mu_xy + 1e-4) * (2 * (e_xy - mu_xy) + 9e-4) / ((mu_sq + 1e-4) * (e_sq - mu_sq + 9e-4))
    return s.mean(dim=(1, 2, 3))


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--conv", action="store_true", help="also time grouped conv2d filtering")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    shape = (args.frames, 1, args.channels, args.size, args.size)
    target = torch.rand(shape, generator=gen)
    pred = (target + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    pred_np = pred[:, 0].permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    target_np = target[:, 0].permute(0, 2, 3, 1).numpy()

    ssim(pred[:8], target[:8])  # warm-up: builds the banded matrices
    t_ours, ours = best_of(lambda: ssim(pred, target)[:, 0].double().numpy(), args.repeats)
    t_ref, ref = best_of(lambda: skimage_loop(pred_np, target_np), max(1, args.repeats - 1))
    sub = min(64, args.frames)
    ref64 = skimage_loop(pred_np[:sub].astype(np.float64), target_np[:sub].astype(np.float64))
    ours64 = ssim(pred[:sub].double(), target[:sub].double())[:, 0].numpy()

    print(f"SSIM of {args.frames} frames {args.channels}x{args.size}x{args.size}, torch threads: "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"  vidyn.metrics.ssim (banded matmul, float64): {t_ours:.3f} s")
    if args.conv:
        t_conv, _ = best_of(lambda: conv_ssim(pred[:, 0], target[:, 0]), 1)
        print(f"  same maps with grouped conv2d (float64):     {t_conv:.3f} s")
    print(f"  scikit-image loop (float32 frames):          {t_ref:.3f} s")
    print(f"  speed-up: {t_ref / t_ours:.1f}x")
    print(f"  max |ours - skimage| on float32 frames (skimage computes in float32): "
          f"{np.abs(ours - ref).max():.2e}")  # fmt: skip
    print(f"  max |ours - skimage| on float64 frames ({sub} frames): {np.abs(ours64 - ref64).max():.2e}")


if __name__ == "__main__":
    main()
