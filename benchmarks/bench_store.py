"""Prepared-clip store vs decoding: read throughput, and `prepare` throughput.

Generates a class-folder tree of short 320x240 MPEG-4 Part 2 AVIs (UCF101's codec and size), prepares a
64 px store of 16-frame clips (stride 2) from it, then measures on one core:
  - store reads: random-order `StoreDataset[i]` (memory-mapped uint8 -> float sample contract), clips/s;
  - decoding the same clips from the AVIs (`FolderDataset`, clip_sampling="center"), clips/s;
  - `prepare_store` throughput with the given number of worker processes, clips/s.

    OMP_NUM_THREADS=1 python benchmarks/bench_store.py [--videos 200] [--frames 48] [--workers 0 2]

Figures on a shared machine are noisy; compare numbers from one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidyn.data.folder import FolderDataset
from vidyn.data.prepare import prepare_store
from vidyn.data.store import StoreDataset
from vidyn.data.video_io import write_video


def camera_like(seed: int, num_frames: int, hw: tuple[int, int] = (240, 320)) -> np.ndarray:
    """uint8 (T, H, W, 3): a textured scene panning slowly with a moving bright object (codes like video)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    texture = rng.uniform(0, 255, (h // 8 + 2, (w + 4 * num_frames) // 8 + 2, 3)).astype(np.float32)
    texture = np.kron(texture, np.ones((8, 8, 1), np.float32))  # blocky texture, (8h', 8w', 3)
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        frame = texture[:h, 2 * t : 2 * t + w].copy()  # pan 2 px per frame
        y, x = (h // 2 + int(40 * np.sin(t / 5))), (w // 4 + 3 * t) % (w - 40)
        frame[y - 20 : y + 20, x : x + 40] = (255, 220, 40)
        frames[t] = frame.astype(np.uint8)
    return frames


def make_tree(root: Path, videos: int, frames: int, classes: int = 10) -> None:
    for i in range(videos):
        path = root / f"class_{i % classes:02d}" / f"video_{i:04d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, camera_like(i, frames), fps=25.0)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} clips/s ({n} clips in {seconds:.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--frames", type=int, default=48, help="frames per generated video (25 fps)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="prepare worker counts to time"
    )
    parser.add_argument("--decode-clips", type=int, default=60, help="clips decoded for the comparison")
    parser.add_argument("--passes", type=int, default=3, help="random-order passes over the store")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()}; {args.videos} AVIs 320x240 x {args.frames} frames")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (others share them)")
    work = Path(tempfile.mkdtemp(prefix="vidyn_bench_store_"))
    try:
        root, out = work / "videos", work / "store"
        start = time.perf_counter()
        make_tree(root, args.videos, args.frames)
        print(f"generated the tree in {time.perf_counter() - start:.1f} s")

        for workers in args.workers:  # 0 = in this process; > 0 includes spawning the workers
            shutil.rmtree(out, ignore_errors=True)
            summary = prepare_store("folder", root, out, size=64, frames=16, stride=2, workers=workers,
                                    val_fraction=0.0, test_fraction=0.0, progress=False)  # fmt: skip
            print(f"prepare ({workers} workers): {rate(summary['clips'], summary['seconds'])}")
        shard_bytes = sum(p.stat().st_size for p in out.glob("shard_*.npy"))
        per_clip = shard_bytes / summary["clips"] / 1024
        print(f"store size: {shard_bytes / 2**20:.1f} MiB ({per_clip:.0f} KiB/clip)")

        stored = StoreDataset(out, "train")
        gen = torch.Generator().manual_seed(0)
        stored[0]  # open the first map
        start, n = time.perf_counter(), 0
        for _ in range(args.passes):
            for i in torch.randperm(len(stored), generator=gen).tolist():
                item = stored[i]
                n += 1
        print(f"store read, random order, 1 core: {rate(n, time.perf_counter() - start)}")
        assert item["frames"].shape == (16, 3, 64, 64)

        decoded = FolderDataset(root, "train", num_frames=16, frame_stride=2, size=64, clip_sampling="center",
                                val_fraction=0.0, test_fraction=0.0)  # fmt: skip
        order = torch.randperm(len(decoded), generator=gen)[: args.decode_clips].tolist()
        start = time.perf_counter()
        for i in order:
            decoded[i]
        print(f"decode from AVI, 1 core:          {rate(len(order), time.perf_counter() - start)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
