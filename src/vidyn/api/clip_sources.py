"""What `vidyn score` reads as REAL and FAKE: folders of clips, one tensor file of clips, or a prepared store.

- **A folder**: every video (any container PyAV decodes), `.npy` and `.pt` file under it, recursively,
  sorted by its path relative to the folder (that order pairs clips for SSIM/PSNR and picks the first
  `num`). Each file holds one clip `(T, ...)`, or a batch of clips `(N, T, ...)` (`.npy`/`.pt`).
  Files under a folder named after a `shapes` law (`bounce/`, `orbit/`, ...) are labelled with that law,
  which motion-law accuracy uses.
- **One `.npy`/`.pt` file** of clips `(N, T, ...)` (or one clip `(T, ...)`), or one video file.
- **A prepared store** (a folder holding `manifest.json`, `vidyn.data.store`): its `test` split, or
  another split as `STORE:train` / `STORE:val`.

Tensor layouts follow `vidyn.data.video_io.load_frames`: per clip `(T, H, W)`, `(T, H, W, C)` or
`(T, C, H, W)` with C in {1, 3}; uint8 (0..255) or float in [0, 1]; where a shape fits both 4-D layouts
uint8 is read as channels-last and float as channels-first. Frames are returned at their own size, as
float32 `(T, C, H, W)` in [0, 1]: each metric resizes and cuts clips as its protocol says. Nothing is
decoded before it is needed (clips are read batch by batch); `.npy` files are memory-mapped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vidyn.data.folder import VIDEO_EXTENSIONS
from vidyn.data.store import MANIFEST, StoreDataset
from vidyn.data.synthetic import SHAPES_CLASSES
from vidyn.data.video_io import load_frames
from vidyn.errors import VidynError

TENSOR_EXTENSIONS = (".npy", ".pt")


def _to_float(x: Tensor, what: str) -> Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise VidynError(f"{what}: dtype {x.dtype} unsupported; save uint8 or float frames in [0, 1]")
    x = x.float()
    if x.numel() and (not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise VidynError(f"{what}: float frames must lie in [0, 1] (divide 0..255 values by 255)")
    return x.clamp_(0.0, 1.0)


def as_clips(x: Tensor, what: str) -> Tensor:
    """A tensor holding one clip or a batch of clips, any accepted layout -> `(N, T, C, H, W)` float."""
    if x.dim() == 3 or (x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[-1] not in (1, 3)):
        x = x.unsqueeze(-3)  # (..., T, H, W) -> (..., T, 1, H, W): grayscale without a channel axis
    if x.dim() == 4:
        x = x.unsqueeze(0)  # one clip -> a batch of one
    if x.dim() != 5:
        raise VidynError(f"{what}: shape {tuple(x.shape)} is neither a clip (T, ...) nor clips (N, T, ...)")
    last, second = x.shape[-1] in (1, 3), x.shape[2] in (1, 3)
    if last and (x.dtype == torch.uint8 or not second):
        x = x.permute(0, 1, 4, 2, 3)  # (N, T, H, W, C) -> (N, T, C, H, W)
    elif not second:
        raise VidynError(f"{what}: shape {tuple(x.shape)} has no channel axis of size 1 or 3")
    if x.shape[1] < 1:
        raise VidynError(f"{what}: holds no frames")
    return _to_float(x, what)


def _num_clips(shape: tuple[int, ...]) -> int:
    """How many clips `as_clips` makes of a tensor of this shape (1 for a video file: shape ())."""
    if len(shape) == 5:
        return shape[0]
    gray_batch = len(shape) == 4 and shape[1] not in (1, 3) and shape[-1] not in (1, 3)
    return shape[0] if gray_batch else 1


def _read_tensor_file(path: Path) -> Tensor:
    if path.suffix.lower() == ".pt":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses arbitrary objects; truncated files fail in many ways
            raise VidynError(f"{path}: not a tensor file torch.load(weights_only=True) can read") from e
        if not isinstance(obj, Tensor):
            raise VidynError(f"{path} holds a {type(obj).__name__}; save clips as a plain tensor")
        return obj.detach()
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise VidynError(f"{path}: not a readable .npy array ({e})") from e
    return torch.from_numpy(np.array(arr))


class ClipSource:
    """REAL or FAKE for `score`: `len()`, `batches(size)` of `(B, T, C, H, W)` clips, `labels`, `describe`.

    `num`: use the first `num` clips (in the order described in the module docstring).
    """

    def __init__(self, path: str | Path, *, num: int | None = None) -> None:
        self.path, self.store, self.files = str(path), None, []
        self.counts: list[int] = []  # clips per file
        self.file_labels: list[int | None] = []
        p, split = Path(path), "test"
        if not p.exists() and ":" in str(path):
            head, tail = str(path).rsplit(":", 1)
            if tail in ("train", "val", "test") and (Path(head) / MANIFEST).is_file():
                p, split = Path(head), tail
        if not p.exists():
            raise VidynError(f"{self.path!r} does not exist; pass a folder of clips, a clip file or a store")
        if (p / MANIFEST).is_file():
            self.store = StoreDataset(p, split)
            self.kind, total = f"store {p} split {split}", len(self.store)
        else:
            self._index_files(p)
            total = sum(self.counts)
        if total == 0:
            raise VidynError(f"{self.path!r} holds no clips (videos, .npy or .pt files)")
        if num is not None and num < 1:
            raise VidynError(f"num must be >= 1 clips, got {num}")
        self.total = min(total, num) if num is not None else total

    def _index_files(self, p: Path) -> None:
        suffixes = (*VIDEO_EXTENSIONS, *TENSOR_EXTENSIONS)
        if p.is_file():
            self.files, self.kind = [p], f"file {p}"
        else:
            found = (f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            self.files = sorted(found, key=lambda f: f.relative_to(p).as_posix())
            self.kind = f"folder {p}"
        for f in self.files:
            shape: tuple[int, ...] = ()
            if f.suffix.lower() == ".npy":
                try:
                    shape = np.load(f, mmap_mode="r", allow_pickle=False).shape
                except (ValueError, OSError, EOFError) as e:
                    raise VidynError(f"{f}: not a readable .npy array ({e})") from e
            elif f.suffix.lower() == ".pt":
                shape = tuple(_read_tensor_file(f).shape)
            self.counts.append(_num_clips(shape))
            law = f.parent.name if f.parent != p else None
            self.file_labels.append(SHAPES_CLASSES.index(law) if law in SHAPES_CLASSES else None)

    def __len__(self) -> int:
        return self.total

    def describe(self) -> str:
        return f"{self.kind} ({self.total} clips)"

    @property
    def labels(self) -> Tensor | None:
        """The `shapes` law of every clip when each one's folder names a law, else None."""
        if self.store is not None:
            return None
        per_clip = [lab for lab, n in zip(self.file_labels, self.counts, strict=True) for _ in range(n)]
        per_clip = per_clip[: self.total]
        if not per_clip or any(lab is None for lab in per_clip):
            return None
        return torch.tensor(per_clip, dtype=torch.int64)

    def _clips(self) -> Iterator[Tensor]:
        """Every clip `(T, C, H, W)`, in order, the first `total` only."""
        emitted = 0
        if self.store is not None:
            for i in range(self.total):
                yield self.store[i]["frames"]
            return
        for f in self.files:
            if f.suffix.lower() in TENSOR_EXTENSIONS:
                clips = as_clips(_read_tensor_file(f), str(f))
            else:
                clips = load_frames(f)[0].unsqueeze(0)  # a video: (1, T, C, H, W)
            for clip in clips:
                if emitted == self.total:
                    return
                emitted += 1
                yield clip

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """Clips in order as `(B, T, C, H, W)` batches; every clip of a source must share one shape."""
        batch: list[Tensor] = []
        first: tuple[int, ...] | None = None
        for clip in self._clips():
            first = first or tuple(clip.shape)
            if tuple(clip.shape) != first:
                raise VidynError(
                    f"{self.path}: clips differ in shape (T, C, H, W) {first} vs {tuple(clip.shape)}; "
                    "score takes clips of one shape per side (cut and resize them first)"
                )
            batch.append(clip)
            if len(batch) == batch_size:
                yield torch.stack(batch)
                batch = []
        if batch:
            yield torch.stack(batch)
