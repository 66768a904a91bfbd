"""Generation baselines on `shapes`: real A / real B (disjoint), still-frame and shuffled-frame clip sets.

`shapes_baseline_sets` renders `2 N` clips of one `shapes` split: indices `[0, N)` are real A (the
reference), `[N, 2N)` real B; still (`vidyn.metrics.baselines.still_frame`) and shuffled
(`shuffled_frames`) are made from real B, so every set but A is a transformation of the same clips and
their distances to A differ only by what the transformation breaks. Labels are balanced (`shapes` labels
are index mod 7).

`write_baseline_folders(out, num=N)` writes the four sets as folders of uint8 `.npy` clips
`(T, H, W, C)`, one subfolder per law (so `vidyn score` can measure motion-law accuracy); the module runs as
`python -m vidyn.api.baselines OUT --num N [--size 32] [--channels 1] [--frames 16] [--interval 0.1]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidyn.data.synthetic import SHAPES_CLASSES, shapes
from vidyn.errors import VidynError
from vidyn.fileio import atomic_path
from vidyn.metrics.baselines import shuffled_frames, still_frame

BASELINE_SETS = ("real_a", "real_b", "still", "shuffled")


def shapes_baseline_sets(
    num: int,
    *,
    split: str = "test",
    size: int = 32,
    channels: int = 1,
    num_frames: int = 16,
    frame_interval: float = 0.1,
    max_objects: int = 2,
    seed: int = 0,
) -> dict[str, Tensor]:
    """`{"real_a", "real_b", "still", "shuffled"}`: `(N, T, C, H, W)` float in [0, 1] each, plus
    `"labels_a"`, `"labels_b"` `(N,)` (still and shuffled share real B's labels)."""
    if num < 1:
        raise VidynError(f"num must be >= 1 clips per set, got {num}")
    data = shapes(
        split=split,
        num_samples=2 * num,
        size=size,
        channels=channels,
        num_frames=num_frames,
        frame_interval=frame_interval,
        max_objects=max_objects,
        seed=seed,
    )
    clips = torch.stack([data[i]["frames"] for i in range(2 * num)])  # (2N, T, C, H, W)
    real_a, real_b = clips[:num], clips[num:]
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([data.label(i) for i in range(2 * num)])
    return {
        "real_a": real_a,
        "real_b": real_b,
        "still": still_frame(real_b),
        "shuffled": shuffled_frames(real_b, gen),
        "labels_a": labels[:num],
        "labels_b": labels[num:],  # still and shuffled too
    }


def write_clip_folder(clips: Tensor, folder: str | Path, labels: Tensor | None = None) -> Path:
    """Write clips `(N, T, C, H, W)` in [0, 1] as uint8 `(T, H, W, C)` files `clip_00000.npy`, ...;
    with `labels` (`shapes` law indices) each goes to the subfolder of its law (`bounce/clip_00000.npy`),
    which `vidyn score` reads as the law asked for."""
    out = Path(folder)
    arrays = clips.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    for i, clip in enumerate(arrays):  # (T, H, W, C) each
        sub = out if labels is None else out / SHAPES_CLASSES[int(labels[i])]
        sub.mkdir(parents=True, exist_ok=True)
        with atomic_path(sub / f"clip_{i:05d}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(clip))
    return out


def write_baseline_folders(out_dir: str | Path, *, num: int, **kwargs: Any) -> dict[str, Path]:
    """Render `shapes_baseline_sets(num, **kwargs)` and write each set to `out_dir/<set>/<law>/`."""
    sets = shapes_baseline_sets(num, **kwargs)
    folders = {}
    for name in BASELINE_SETS:
        labels = sets["labels_a"] if name == "real_a" else sets["labels_b"]
        folders[name] = write_clip_folder(sets[name], Path(out_dir) / name, labels)
    return folders


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidyn.api.baselines", description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--num", type=int, required=True, help="clips per set")
    parser.add_argument("--split", default="test")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    try:
        folders = write_baseline_folders(
            a.out,
            num=a.num,
            split=a.split,
            size=a.size,
            channels=a.channels,
            num_frames=a.frames,
            frame_interval=a.interval,
            seed=a.seed,
        )
    except VidynError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, path in folders.items():
        print(f"{name:>9}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
