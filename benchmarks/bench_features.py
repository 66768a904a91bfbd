"""Feature-extraction speed of the generation-metric networks on this machine's CPU.

Prints InceptionV3 images/s at 299x299 (FID/KID), I3D clips/s at 16x224x224 (FVD), the GFLOP/s each
achieves (convolution FLOPs counted as 2 x multiply-adds) and, beside them, the GFLOP/s of one large
convolution (2-D and 3-D, the best of both) as this machine's practical convolution peak. Best of
`--repeats` timed calls after a warm-up (the best is kept: on a shared machine it is the one least
disturbed by other jobs). Needs `vidyn weights install fid` and `... fvd`.

    .venv/bin/python benchmarks/bench_features.py [--threads N] [--repeats R]

Timings depend on the other load on the machine: the 1-minute load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vidyn.metrics import i3d as i3d_module
from vidyn.metrics import inception as inception_module

REPEATS = 4


def best_seconds(fn: Callable[[], object]) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def conv_peak() -> float:
    """GFLOP/s of large, well-shaped convolutions (channels_last), the practical peak for these nets."""
    x3 = torch.randn(1, 256, 8, 28, 28).contiguous(memory_format=torch.channels_last_3d)
    w3 = torch.randn(256, 256, 3, 3, 3).contiguous(memory_format=torch.channels_last_3d)
    x2 = torch.randn(16, 256, 35, 35).contiguous(memory_format=torch.channels_last)
    w2 = torch.randn(256, 256, 3, 3).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        gf3 = 2 * 256 * 8 * 28 * 28 * 256 * 27 / best_seconds(lambda: F.conv3d(x3, w3, padding=1)) / 1e9
        gf2 = 2 * 16 * 256 * 35 * 35 * 256 * 9 / best_seconds(lambda: F.conv2d(x2, w2, padding=1)) / 1e9
    print(f"conv peak: conv3d 256->256 3x3x3 {gf3:.0f} GFLOP/s, conv2d 256->256 3x3 {gf2:.0f} GFLOP/s")
    return max(gf2, gf3)


def count_gflop(module: object, run: Callable[[], object]) -> float:
    """Convolution GFLOP of one `run()`, counted by wrapping the module's fused conv call."""
    total = [0.0]
    original = module.conv_relu

    def counting(x, w, *args, **kwargs):
        y = original(x, w, *args, **kwargs)
        total[0] += 2.0 * y.numel() * w[0].numel()
        return y

    module.conv_relu = counting
    try:
        with torch.no_grad():
            run()
    finally:
        module.conv_relu = original
    return total[0] / 1e9


def bench_inception(peak: float, batch: int) -> None:
    net = inception_module.load_inception()
    x = torch.rand(batch, 3, 299, 299) * 2 - 1
    gflop = count_gflop(inception_module, lambda: net(x[:1]))
    with torch.no_grad():
        seconds = best_seconds(lambda: net(x))
    rate = batch / seconds
    print(
        f"InceptionV3 299x299, batch {batch}: {rate:.1f} images/s, {gflop:.2f} GFLOP/image, "
        f"{rate * gflop:.0f} GFLOP/s ({100 * rate * gflop / peak:.0f}% of the conv peak)"
    )


def bench_i3d(peak: float, batch: int) -> None:
    net = i3d_module.load_i3d()
    x = torch.rand(batch, 16, 224, 224, 3) * 2 - 1
    gflop = count_gflop(i3d_module, lambda: net(x[:1]))
    with torch.no_grad():
        seconds = best_seconds(lambda: net(x))
    rate = batch / seconds
    print(
        f"I3D 16x224x224, batch {batch}: {rate:.2f} clips/s, {gflop:.1f} GFLOP/clip, "
        f"{rate * gflop:.0f} GFLOP/s ({100 * rate * gflop / peak:.0f}% of the conv peak)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=4, help="timed calls per figure (best is kept)")
    args = parser.parse_args()
    global REPEATS
    REPEATS = args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, torch.get_num_threads() = {threads}, cpus {os.cpu_count()}")
    print(f"load average (1 min) before: {os.getloadavg()[0]:.2f}")
    peak = conv_peak()
    for batch in (8, 16):
        bench_inception(peak, batch)
    for batch in (1, 2):
        bench_i3d(peak, batch)
    print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
