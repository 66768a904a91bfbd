"""A user's own videos, as folders of video files or of `.pt` clip tensors, labelled or not.

    ROOT/<class>/<any name>.<avi|mp4|mkv|mov|webm|...>   class folders: labelled (recognition, conditional
    ROOT/<class>/<any name>.pt                           generation); a (T, C, H, W) tensor, e.g.
                                                         [16, 3, 64, 64] float in [0, 1] or uint8
    ROOT/<any name>.mp4, ROOT/<any folders>/<name>.mp4   a flat folder: unlabelled (label -1; prediction,
                                                         interpolation, unconditional generation)

A root that holds clip files itself is flat (its subfolders are searched too); one that holds only folders
has class folders, unless `labels=False` says its folders are just how the user keeps the videos. Labels
are the class folder names sorted (for a user's folder that is the only information there is);
`classes=[...]` overrides the order and/or keeps a subset. Splits: if ROOT holds only `train/`, `val/`
and `test/` folders, each is laid out as above (`ROOT/train/<class>/...` or `ROOT/train/<name>.mp4`);
otherwise the files (of each class) are ranked by a hash of their paths relative to ROOT and the first
`test_fraction` of them go to test, the next `val_fraction` to val (`ranked_splits`: stable across
machines and runs, exact proportions, at least one file each from 3 files up). Splits are by file:
windows of one video never land on both sides.

`.pt` files are read with `torch.load(weights_only=True)` and must hold a plain tensor: a pickled dict or
object is refused. They carry no timestamps, so their frame k is at k / `pt_fps` seconds. Every clip goes
through uint8 (float `.pt` values are rounded to 1/255), so decoded items and prepared-store items agree.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vidyn.data.clips import DecodedClips
from vidyn.data.store import (
    CLIP_SAMPLING,
    StoreDataset,
    VideoEntry,
    check_store,
)
from vidyn.data.video_io import _crop_resize, _to_luma, read_video
from vidyn.errors import VidynError, unpickling_refusal
from vidyn.registry import DATASETS

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".ogv", ".3gp", ".gif", ".ts", ".mts")  # fmt: skip
CLIP_EXTENSIONS = (*VIDEO_EXTENSIONS, ".pt")
SPLITS = ("train", "val", "test")


def _hash_unit(source: str) -> float:
    return int.from_bytes(hashlib.sha1(source.encode("utf-8")).digest()[:8], "big") / 2.0**64  # in [0, 1)


def hash_split(source: str, val_fraction: float, test_fraction: float) -> str:
    """train / val / test for one file on its own, from the SHA-1 of its root-relative POSIX path."""
    u = _hash_unit(source)
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def ranked_splits(sources: list[str], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """train / val / test for a set of files: ranked by the hash of their paths, the first
    `round(n * test_fraction)` go to test and the next `round(n * val_fraction)` to val (at least one each
    when its fraction is > 0 and there are 3 files or more), the rest to train.

    Exact proportions even for the five videos of a small folder, where per-file hashing often leaves a
    split empty or takes most files for test; the order depends only on each path, so adding files moves
    at most the files at the boundaries of the ranks.
    """
    ranked = sorted(sources, key=_hash_unit)
    n = len(ranked)

    def count(fraction: float) -> int:
        k = round(n * fraction)
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_test = count(test_fraction)
    n_val = min(count(val_fraction), max(0, n - n_test - 1))
    return {
        s: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, s in enumerate(ranked)
    }


def load_pt_clip(path: str | os.PathLike) -> np.ndarray:
    """A `.pt` clip tensor -> uint8 `(T, H, W, C)`; refuses anything but a plain tensor of frames."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses arbitrary objects; truncated files fail in many ways
        why = unpickling_refusal(e) or type(e).__name__
        raise VidynError(
            f"{path}: not a tensor file torch.load(weights_only=True) can read ({why}); "
            "save each clip with torch.save(clip_tensor, path)"
        ) from e
    if not isinstance(obj, torch.Tensor):
        raise VidynError(
            f"{path} holds a {type(obj).__name__}, not a tensor; save each clip as a plain (T, C, H, W) "
            "tensor"
        )
    x = obj.detach()
    if x.ndim == 3:
        x = x[:, None]  # (T, H, W) -> (T, 1, H, W)
    if x.ndim != 4 or x.shape[0] < 1 or (x.shape[1] not in (1, 3) and x.shape[-1] not in (1, 3)):
        raise VidynError(
            f"{path}: tensor shape {tuple(obj.shape)} is not a (T, C, H, W) clip with C = 1 or 3"
        )
    if x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # (T, H, W, C) -> (T, C, H, W)
    if x.dtype == torch.uint8:
        pass
    elif x.is_floating_point():
        if not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3:
            lo, hi = float(x.min()), float(x.max())
            raise VidynError(
                f"{path}: float frames must lie in [0, 1] (found [{lo:.3g}, {hi:.3g}]); rescale them"
            )
        x = x.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    else:
        raise VidynError(f"{path}: dtype {x.dtype} unsupported; save uint8 or float frames in [0, 1]")
    return x.permute(0, 2, 3, 1).contiguous().numpy()  # (T, C, H, W) -> (T, H, W, C)


def _adapt(frames: np.ndarray, size: int | None, grayscale: bool) -> np.ndarray:
    """Resize (centre square crop, as video_io does) and set channels of uint8 `(T, H, W, C)` frames."""
    square = size is None or frames.shape[1:3] == (size, size)
    channels = 1 if grayscale else 3
    if square and frames.shape[-1] == channels:
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, H, W, C) -> (T, C, H, W)
    if not square:
        x = _crop_resize(x, (size, size))
    if grayscale and x.shape[1] == 3:
        x = _to_luma(x)
    elif not grayscale and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def read_clip_file(
    path: str | os.PathLike, *, size: int | None, grayscale: bool, pt_fps: float = 25.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """A video or `.pt` file -> (uint8 frames `(T, H, W, C)`, times in seconds `(T,)`, fps)."""
    if Path(path).suffix.lower() == ".pt":
        frames = _adapt(load_pt_clip(path), size, grayscale)
        return frames, np.arange(len(frames), dtype=np.float64) / pt_fps, pt_fps
    video = read_video(path, size=size, grayscale=grayscale)
    return video.frames, video.times, video.fps


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _clip_files_here(folder: Path) -> bool:
    """Whether `folder` itself (not its subfolders) holds clip files: then it is a flat folder."""
    return any(
        p.suffix.lower() in CLIP_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        for p in folder.iterdir()
    )


class FolderIndex:
    """The files of a class-folder tree with their labels and splits (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        classes: Sequence[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        labels: bool | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise VidynError(f"{self.root} is not a folder; point root at the folder holding your videos")
        if min(val_fraction, test_fraction) < 0 or val_fraction + test_fraction >= 1:
            raise VidynError("val_fraction and test_fraction must be >= 0 and sum to less than 1")
        names = {p.name for p in _visible_dirs(self.root)}
        self.layout = "split folders" if "train" in names and names <= set(SPLITS) else "hashed"
        bases = (
            [self.root / s for s in SPLITS if s in names] if self.layout == "split folders" else [self.root]
        )
        flat = any(_clip_files_here(base) for base in bases) or not any(_visible_dirs(b) for b in bases)
        self.labelled = not flat if labels is None else labels
        self._splits: dict[str, list[VideoEntry]] = {s: [] for s in SPLITS}
        if not self.labelled:
            if classes:
                raise VidynError(f"{self.root} has no class folders, so classes={list(classes)} cannot apply")
            self.classes = []
            self._add(bases, None, -1, "", val_fraction, test_fraction)
            if not any(self._splits.values()):
                raise VidynError(f"{self.root} holds no clip files ({', '.join(CLIP_EXTENSIONS)})")
            return
        found = sorted({d.name for base in bases for d in _visible_dirs(base)})
        if classes is not None:
            missing = sorted(set(classes) - set(found))
            if missing or not classes:
                raise VidynError(f"classes {missing or '[]'} not found in {self.root}; it holds {found}")
        self.classes = list(dict.fromkeys(classes)) if classes is not None else found
        for label, name in enumerate(self.classes):
            if self._add(bases, name, label, name, val_fraction, test_fraction) == 0:
                raise VidynError(
                    f"class folder {name!r} in {self.root} holds no clip files "
                    f"({', '.join(CLIP_EXTENSIONS)}); add some, remove it, or pass classes=[...]"
                )

    def _add(
        self, bases: list[Path], folder: str | None, label: int, name: str, val_fraction: float,
        test_fraction: float,
    ) -> int:  # fmt: skip
        """Add the clip files under each base (or its `folder`) with their splits; returns how many."""
        files = [(base, p) for base in bases for p in self._files(base if folder is None else base / folder)]
        sources = [p.relative_to(self.root).as_posix() for _, p in files]
        ranked = ranked_splits(sources, val_fraction, test_fraction)  # per class: stratified
        for (base, path), source in zip(files, sources, strict=True):
            split = base.name if self.layout == "split folders" else ranked[source]
            self._splits[split].append(VideoEntry(path, source, label, name, split))
        return len(files)

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        return sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in CLIP_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )  # fmt: skip

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def entries(self, split: str) -> list[VideoEntry]:
        if split not in SPLITS:
            raise VidynError(f"split must be train, val or test; got {split!r}")
        return self._splits[split]


class FolderDataset(DecodedClips):
    """Clips from a class-folder tree: `{"frames" (T, C, H, W), "times" (T,), "label"}`.

    Same clip selection as UCF101 (`clip_sampling` "random" | "center" | "uniform", `num_frames` frames
    `frame_stride` apart); `size=None` keeps each file's own size (then all files must share it to batch).
    Video times are the real presentation timestamps; `.pt` times are k / `pt_fps`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        classes: Sequence[str] | None = None,
        num_frames: int = 16,
        frame_stride: int = 2,
        size: int | None = 64,
        grayscale: bool = False,
        clip_sampling: str = "random",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        pt_fps: float = 25.0,
        labels: bool | None = None,
    ) -> None:
        if clip_sampling not in CLIP_SAMPLING:
            raise VidynError(
                f"clip_sampling must be one of {', '.join(CLIP_SAMPLING)}; got {clip_sampling!r}"
            )
        if num_frames < 1 or frame_stride < 1 or (size is not None and size < 1) or pt_fps <= 0:
            raise VidynError("num_frames, frame_stride, size and pt_fps must be positive")
        fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction}
        self.index = FolderIndex(root, classes=classes, labels=labels, **fractions)
        self.entries = self.index.entries(split)
        if not self.entries:
            counts = ", ".join(f"{s} {len(self.index.entries(s))}" for s in SPLITS)
            raise VidynError(
                f"split {split!r} of {self.index.root} is empty (videos per split: {counts}; "
                f"{self.index.layout} layout); add videos, change val_fraction/test_fraction, or add a "
                f"ROOT/{split}/ folder"
            )
        self.split, self.pt_fps = split, pt_fps
        sampling = dict(num_frames=num_frames, frame_stride=frame_stride, size=size, grayscale=grayscale)
        super().__init__(self.entries, self.index.classes, clip_sampling=clip_sampling, **sampling)

    def decode(self, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
        return read_clip_file(path, size=self.size, grayscale=self.grayscale, pt_fps=self.pt_fps)


@DATASETS.register("folder", family="video")
def folder(
    split: str,
    root: str | None = None,
    classes: list[str] | None = None,
    num_frames: int = 16,
    frame_stride: int = 2,
    size: int | None = 64,
    grayscale: bool = False,
    clip_sampling: str = "random",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    pt_fps: float = 25.0,
    store: str | None = None,
    labels: bool | None = None,
) -> Dataset:
    """Your own videos (or .pt clips): a flat folder (unlabelled) or one folder per class (labelled).

    With `store` (made by `vidyn prepare folder`) clips are read from the store; its size, frames, stride,
    split fractions and pt_fps must match these arguments. `labels=False`: folders are not classes.
    """
    if store is not None:
        expected = {
            "dataset": "folder",
            "size": size,
            "frames": num_frames,
            "stride": frame_stride,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "pt_fps": pt_fps,
        }
        check_store(store, expected)
        return StoreDataset(store, split, classes=classes, grayscale=grayscale)
    if root is None:
        raise VidynError("folder needs root= (the folder holding your videos) or store= (from vidyn prepare)")
    return FolderDataset(
        root,
        split,
        classes=classes,
        num_frames=num_frames,
        frame_stride=frame_stride,
        size=size,
        grayscale=grayscale,
        clip_sampling=clip_sampling,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        pt_fps=pt_fps,
        labels=labels,
    )
