"""Decode speed of vidyn.data.video_io against bare PyAV, in frames per second.

    python benchmarks/bench_video_io.py [video ...]

Without arguments it writes a synthetic 320x240, 25 fps, 100-frame UCF101-like AVI (MPEG-4 Part 2) and an
H.264 MP4 to a temporary folder. For each file it reports: bare PyAV decode to RGB (the floor), read_video
at full size, read_video with size=64 (crop + antialiased resize per frame), and iter_video with
size=64 plus grayscale. Figures are wall-clock, best of `--repeats`, and noisy on shared machines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from vidyn.data.video_io import iter_video, probe_video, read_video, write_video


def synthetic(folder: Path) -> list[Path]:
    t, h, w = 100, 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for k in range(t):  # a textured blob moving over a gradient, roughly camera-like to encode
        blob = (
            255 * np.exp(-((xx - 40 - 2.4 * k) ** 2 + (yy - 120) ** 2) / 800) * (0.5 + 0.5 * np.sin(xx / 3))
        )
        frames[k, ..., 0] = np.clip(blob + xx * 0.3, 0, 255)
        frames[k, ..., 1] = np.clip(yy + 8 * np.sin((xx + k) / 9), 0, 255)
        frames[k, ..., 2] = 90
    paths = [folder / "synthetic_ucf_like.avi", folder / "synthetic.mp4"]
    for path in paths:
        write_video(path, frames, fps=25)
    return paths


def best_rate(fn, repeats: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return count / best, count


def bare_pyav(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, PyAV {av.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        videos = args.videos or synthetic(Path(tmp))
        cases = {
            "bare PyAV -> rgb24": bare_pyav,
            "read_video full size": lambda p: len(read_video(p).frames),
            "read_video size=64": lambda p: len(read_video(p, size=64).frames),
            "iter_video size=64 gray": lambda p: sum(1 for _ in iter_video(p, size=64, grayscale=True)),
        }
        for path in videos:
            info = probe_video(path)
            print(f"\n{path.name}: {info['width']}x{info['height']} {info['codec']} fps={info['fps']:.3f}")
            for name, fn in cases.items():
                rate, count = best_rate(lambda fn=fn, path=path: fn(path), args.repeats)
                print(f"  {name:26s} {rate:8.0f} frames/s  ({count} frames)")


if __name__ == "__main__":
    main()
