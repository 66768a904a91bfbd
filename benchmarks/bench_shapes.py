"""Rendering speed of the procedural `shapes` dataset on one CPU thread.

Run: `python benchmarks/bench_shapes.py [--samples 300] [--size 64] [--frames 20]`

Prints frames per second of `ShapesDataset.__getitem__` (which renders all of a sample's frames in one
vectorised call) for grayscale and RGB, plain and textured scenes with and without a background. The
target is >= 5,000 frames/s at 64x64 on one core. Timings on shared machines drift by ~30%: compare
settings side by side within one run.
"""

from __future__ import annotations

import argparse
import time

import torch

from vidyn.data.synthetic import shapes

SETTINGS = [
    # (label, channels, textured, background, max_objects)
    ("gray, textured objects", 1, True, False, 2),
    ("RGB, textured objects", 3, True, False, 2),
    ("gray, textured + background", 1, True, True, 2),
    ("RGB, textured + background", 3, True, True, 2),
    ("RGB, textured + background, 3 objects", 3, True, True, 3),
]


def frames_per_second(
    channels: int, textured: bool, background: bool, max_objects: int, args: argparse.Namespace
) -> float:
    ds = shapes(
        num_samples=args.samples,
        size=args.size,
        channels=channels,
        num_frames=args.frames,
        textured=textured,
        background=background,
        max_objects=max_objects,
    )
    for i in range(min(10, len(ds))):  # warm-up: allocator and kernel dispatch caches
        ds[i]
    best = 0.0
    for _ in range(args.repeats):  # best of repeats: the least disturbed by other processes
        start = time.perf_counter()
        frames = sum(ds[i]["frames"].shape[0] for i in range(len(ds)))
        best = max(best, frames / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=300, help="samples rendered per setting")
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    parser.add_argument("--frames", type=int, default=20, help="frames per sample")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per setting (best is kept)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()}")
    print(
        f"shapes {args.size}x{args.size}, {args.frames} frames per sample, {args.samples} samples per setting"
    )
    for label, channels, textured, background, max_objects in SETTINGS:
        fps = frames_per_second(channels, textured, background, max_objects, args)
        print(f"  {label:<40s} {fps:>9,.0f} frames/s")


if __name__ == "__main__":
    main()
