"""Clip selection every video dataset shares: which frames make a clip, and how a clip becomes a sample.

Used by the UCF101, Kinetics and folder datasets (decoding on the fly, `DecodedClips`), by `vidyn prepare`
(the store) and by inference over a user's whole video.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vidyn.data.video_io import frames_to_tensor, read_video
from vidyn.errors import VidynError

CLIP_SAMPLING = ("random", "center", "uniform")


@dataclass(frozen=True)
class VideoEntry:
    """One video (or `.pt` clip file) of a dataset's file list."""

    path: Path  # on disk, with its real spelling
    source: str  # relative to the dataset root, POSIX separators: the stable identity of the file
    label: int
    class_name: str
    split: str  # "train" | "val" | "test" (for a UCF101 store: the official "train" | "test")
    group: int | None = None  # UCF101 gGG
    clip: int | None = None  # UCF101 cCC


# ---------------------------------------------------------------- clip selection (shared by the datasets)


def fit_stride(num_available: int, num_frames: int, stride: int) -> int:
    """`stride`, lowered just enough that `num_frames` frames fit in `num_available` (never below 1)."""
    if num_frames <= 1 or (num_frames - 1) * stride + 1 <= num_available:
        return stride
    return max(1, (num_available - 1) // (num_frames - 1))


def clip_indices(
    num_available: int, num_frames: int, stride: int, mode: str, *, generator: torch.Generator | None = None
) -> np.ndarray:
    """Frame indices `(num_frames,)` of one clip; indices >= num_available mean "past the end".

    "random": a window of `num_frames` frames `stride` apart at a uniformly random start (torch's RNG, so
    DataLoader workers and `seed_everything` make it reproducible yet different every epoch); "center": the
    middle window; "uniform": `num_frames` frames spread evenly over the whole video (stride ignored).
    A video too short for the window gets a smaller stride; one shorter than `num_frames` frames is padded
    past its end (see `take_clip`).
    """
    if mode not in CLIP_SAMPLING:
        raise VidynError(f"clip_sampling must be one of {', '.join(CLIP_SAMPLING)}; got {mode!r}")
    if mode == "uniform" and num_available >= num_frames:
        return np.round(np.linspace(0, num_available - 1, num_frames)).astype(np.int64)
    step = fit_stride(num_available, num_frames, stride)
    slack = max(0, num_available - ((num_frames - 1) * step + 1))
    if mode == "random":
        start = int(torch.randint(slack + 1, (1,), generator=generator))
    else:
        start = slack // 2
    return start + step * np.arange(num_frames, dtype=np.int64)


def window_indices(num_available: int, num_frames: int, stride: int, num_windows: int) -> list[np.ndarray]:
    """`num_windows` clips centred in equal parts of the video (one window = the "center" clip)."""
    step = fit_stride(num_available, num_frames, stride)
    slack = max(0, num_available - ((num_frames - 1) * step + 1))
    starts = [math.floor((w + 0.5) * slack / num_windows) for w in range(num_windows)]
    return [s + step * np.arange(num_frames, dtype=np.int64) for s in starts]


def sliding_windows(num_available: int, num_frames: int, stride: int, window_stride: int) -> list[np.ndarray]:
    """Every window of `num_frames` frames `stride` apart whose starts are `window_stride` frames apart
    (from frame 0; at least one window, shortened in stride as `fit_stride` says for a short video)."""
    step = fit_stride(num_available, num_frames, stride)
    last_start = max(0, num_available - ((num_frames - 1) * step + 1))
    return [s + step * np.arange(num_frames, dtype=np.int64) for s in range(0, last_start + 1, window_stride)]


def take_clip(
    frames: np.ndarray | torch.Tensor, times: np.ndarray, indices: np.ndarray, fps: float
) -> tuple[Any, np.ndarray]:
    """Copy the frames at `indices` out of a decoded video, with their presentation times.

    Indices past the last frame repeat it (a video shorter than the clip is held still at its end) and get
    times continuing the video's frame period, so clip times always increase strictly.
    """
    last = len(times) - 1
    clipped = np.minimum(indices, last)
    period = float(np.median(np.diff(times))) if last > 0 else 1.0 / fps
    clip_times = times[clipped] + (indices - clipped) * period
    return frames[clipped], clip_times  # fancy indexing copies: nothing keeps the whole video alive


def clip_sample(frames: np.ndarray, times: np.ndarray, label: int) -> dict[str, torch.Tensor]:
    """uint8 `(T, H, W, C)` frames -> the sample contract (float32 `(T, C, H, W)` in [0, 1])."""
    return {
        "frames": frames_to_tensor(frames),
        "times": torch.as_tensor(times, dtype=torch.float32),
        "label": torch.tensor(label, dtype=torch.int64),
    }


def carve_val_groups(train_groups: Iterable[int], val_groups: float | Sequence[int], seed: int) -> set[int]:
    """Pick the UCF101 groups held out for validation from the groups of the train list.

    A float is a fraction of the train groups (at least one group when > 0), drawn with `random.Random(seed)`
    over the sorted group numbers; a list names the groups. Group numbers are held out across every class,
    as the official splits do, so a group's actor and scene never appear in both train and val.
    """
    groups = sorted(set(train_groups))
    if isinstance(val_groups, (int, float)) and not isinstance(val_groups, bool):
        if not 0.0 <= val_groups < 1.0:
            raise VidynError(f"val_groups as a fraction must be in [0, 1); got {val_groups}")
        k = max(1, round(val_groups * len(groups))) if val_groups > 0 else 0
        if k and k >= len(groups):
            raise VidynError(
                f"val_groups={val_groups} would hold out all {len(groups)} train groups; "
                "use a smaller fraction"
            )
        return set(random.Random(seed).sample(groups, k))
    chosen = {int(g) for g in val_groups}
    if not chosen <= set(groups):
        raise VidynError(
            f"val_groups {sorted(chosen - set(groups))} are not in this fold's train list; "
            f"choose among groups {groups}"
        )
    if chosen == set(groups):
        raise VidynError("val_groups lists every train group; leave at least one group for training")
    return chosen


class DecodedClips(Dataset):
    """Clips decoded on the fly from `entries` (each with `.path` and `.label`): items are `{"frames" (T, C,
    H, W), "times" (T,), "label"}`.

    Each item decodes its whole video once (`decode`: PyAV, `size` a centre square crop then resize,
    `grayscale` BT.601 luma) and selects `num_frames` frames `frame_stride` apart (`clip_sampling`:
    "random", "center" or "uniform", see `clip_indices`). `times` are the selected frames' presentation
    timestamps in the file (not shifted to start at 0). Datasets differ only in how they find `entries`.
    """

    def __init__(
        self,
        entries: Sequence[Any],
        classes: Sequence[str],
        *,
        num_frames: int,
        frame_stride: int,
        size: int | None,
        grayscale: bool,
        clip_sampling: str,
    ) -> None:
        if clip_sampling not in CLIP_SAMPLING:
            choices = ", ".join(CLIP_SAMPLING)
            raise VidynError(f"clip_sampling must be one of {choices}; got {clip_sampling!r}")
        if num_frames < 1 or frame_stride < 1 or (size is not None and size < 1):
            raise VidynError("num_frames, frame_stride and size must be positive integers")
        self.entries, self.classes = list(entries), list(classes)
        self.num_frames, self.frame_stride, self.size = num_frames, frame_stride, size
        self.grayscale, self.clip_sampling = grayscale, clip_sampling

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.entries)

    def decode(self, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
        """(frames `(T, H, W, C)` uint8, times `(T,)` seconds, fps) of the whole video at `path`."""
        video = read_video(path, size=self.size, grayscale=self.grayscale)  # the decoder is made here
        return video.frames, video.times, video.fps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        entry = self.entries[index]
        frames, times, fps = self.decode(entry.path)
        idx = clip_indices(len(times), self.num_frames, self.frame_stride, self.clip_sampling)
        clip, clip_times = take_clip(frames, times, idx, fps)
        return clip_sample(clip, clip_times, entry.label)
