"""UCF101 (Soomro, Zamir and Shah, 2012, arXiv:1212.0402): the official file lists, folds and labels.

Expected layout, as the two official archives unpack (UCF101.rar and the recognition split zip):

    ROOT/UCF-101/<Class>/v_<Class>_gGG_cCC.avi
    ROOT/ucfTrainTestlist/classInd.txt        "<1-based index> <Class>"
    ROOT/ucfTrainTestlist/trainlist0k.txt     "<Class>/<file>.avi <1-based label>", k = 1, 2, 3
    ROOT/ucfTrainTestlist/testlist0k.txt      "<Class>/<file>.avi"

Traps handled here: labels are classInd index - 1, never sorted folder names (sorting puts HammerThrow
before Hammering and JumpRope before JumpingJack); the lists have `\\r\\n` line ends; folder
`HandstandPushups` holds `v_HandStandPushups_*` files, so paths are resolved case-insensitively to their
real spelling; the train list's labels are checked against classInd. UCF101 has no validation split: it
is carved from the train list by group (clips of one group share actor and scene), see
`vidyn.data.store.carve_val_groups`.

`UCF101Dataset` decodes on the fly (a decoder per `__getitem__`, whole video decoded sequentially, clip
selected in memory); for training speed prepare a store once (`vidyn prepare ucf101`) and pass `store=`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from vidyn.data.clips import DecodedClips
from vidyn.data.store import (
    StoreDataset,
    VideoEntry,
    carve_val_groups,
    check_store,
)
from vidyn.errors import VidynError
from vidyn.registry import DATASETS

FOLDS = (1, 2, 3)
_NAME = re.compile(r"^v_(?P<cls>\w+?)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$", re.IGNORECASE)
_LAYOUT = "as the two official archives unpack (UCF101.rar, UCF101TrainTestSplits-RecognitionTask.zip)"


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines of a split file as (line number, fields); tolerates \\r\\n and trailing spaces."""
    if not path.is_file():
        raise VidynError(f"{path} is missing: {path.parent.parent} must hold ucfTrainTestlist/ {_LAYOUT}")
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_class_ind(path: Path) -> list[str]:
    names: list[str] = []
    for n, fields in _lines(path):
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) != len(names) + 1:
            raise VidynError(
                f"{path} line {n} should read '{len(names) + 1} <Class>'; restore the official file"
            )
        names.append(fields[1])
    return names


class _CaseResolver:
    """Finds `Class/file.avi` under a folder whatever the case of each part (listing each folder once)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._listings: dict[Path, dict[str, str]] = {}

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._listings:
            self._listings[folder] = {n.lower(): n for n in os.listdir(folder)} if folder.is_dir() else {}
        return self._listings[folder]

    def resolve(self, relative: str) -> Path | None:
        path = self.base
        for part in relative.split("/"):
            real = self._listing(path).get(part.lower())
            if real is None:
                return None
            path = path / real
        return path


class UCF101Index:
    """The videos of one fold, split into train / val / test, with labels from classInd.

    `classes` keeps a subset, re-indexed 0..K-1 in classInd order (`self.classes` names them);
    `val_groups` and `seed` choose the validation groups (a fraction of the train list's groups, or a list
    of group numbers; 0 keeps the whole train list for training).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fold: int = 1,
        classes: Sequence[str] | None = None,
        val_groups: float | Sequence[int] = 0.15,
        seed: int = 0,
    ) -> None:
        self.root = Path(root).expanduser()
        videos, lists = self.root / "UCF-101", self.root / "ucfTrainTestlist"
        missing = [f"{d.name}/" for d in (videos, lists) if not d.is_dir()]
        if missing:
            raise VidynError(
                f"{self.root} must hold UCF-101/ and ucfTrainTestlist/ {_LAYOUT}; "
                f"missing {', '.join(missing)}"
            )
        if fold not in FOLDS:
            raise VidynError(f"UCF101 has folds 1, 2 and 3; got fold={fold}")
        self.fold = fold
        self.all_classes = _read_class_ind(lists / "classInd.txt")
        if classes is None:
            self.classes = list(self.all_classes)
        else:
            unknown = sorted(set(classes) - set(self.all_classes))
            if unknown or not classes:
                raise VidynError(f"unknown UCF101 classes {unknown}; name classes as spelled in classInd.txt")
            self.classes = [c for c in self.all_classes if c in set(classes)]
        self._official = {name.lower(): i for i, name in enumerate(self.all_classes)}
        self._resolver = _CaseResolver(videos)
        train = self._read_list(lists / f"trainlist0{fold}.txt", "train")
        self.test = self._read_list(lists / f"testlist0{fold}.txt", "test")
        self.val_groups = sorted(
            carve_val_groups((e.group for e in train), val_groups, seed) if train else ()
        )
        held = set(self.val_groups)
        self.train = [e for e in train if e.group not in held]
        self.val = [_with_split(e, "val") for e in train if e.group in held]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def entries(self, split: str) -> list[VideoEntry]:
        if split not in ("train", "val", "test"):
            raise VidynError(f"split must be train, val or test; got {split!r}")
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def _read_list(self, path: Path, split: str) -> list[VideoEntry]:
        label_of = {name: i for i, name in enumerate(self.classes)}
        entries, absent = [], []
        for n, fields in _lines(path):
            relative = fields[0].replace("\\", "/")
            folder, _, filename = relative.rpartition("/")
            official = self._official.get(folder.lower())
            match = _NAME.match(filename)
            if official is None or match is None or match["cls"].lower() != folder.lower():
                raise VidynError(
                    f"{path.name} line {n}: {relative!r} is not '<Class>/v_<Class>_gGG_cCC.avi' for a "
                    "class of classInd.txt; restore the official split files"
                )
            if len(fields) > 1 and fields[1] != str(official + 1):
                raise VidynError(
                    f"{path.name} line {n} labels {relative} as {fields[1]} but classInd.txt gives "
                    f"{official + 1}; classInd and the split lists come from different releases, "
                    "restore the official ucfTrainTestlist/"
                )
            name = self.all_classes[official]
            if name not in label_of:
                continue
            real = self._resolver.resolve(relative)
            if real is None:
                absent.append(relative)
                continue
            entries.append(
                VideoEntry(
                    path=real,
                    source=real.relative_to(self.root).as_posix(),
                    label=label_of[name],
                    class_name=name,
                    split=split,
                    group=int(match["group"]),
                    clip=int(match["clip"]),
                )
            )
        if absent:
            raise VidynError(
                f"{len(absent)} videos listed in {path.name} are missing under {self.root / 'UCF-101'} "
                f"(first: {absent[0]}); extract all of UCF101.rar there, "
                "or pass classes=[...] for the classes you have"
            )
        return entries


def _with_split(entry: VideoEntry, split: str) -> VideoEntry:
    return VideoEntry(entry.path, entry.source, entry.label, entry.class_name, split, entry.group, entry.clip)


class UCF101Dataset(DecodedClips):
    """UCF101 clips decoded on the fly: `{"frames" (T, C, H, W), "times" (T,), "label"}`.

    Each item decodes its whole video once (PyAV, `size`: centre square crop then resize; `grayscale`:
    BT.601 luma) and selects `num_frames` frames `frame_stride` apart (`clip_sampling`: "random", "center"
    or "uniform", see `vidyn.data.store.clip_indices`). `times` are the selected frames' real presentation
    timestamps in the file (not shifted to start at 0; subtract `times[0]` for clip-relative time).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        fold: int = 1,
        classes: Sequence[str] | None = None,
        num_frames: int = 16,
        frame_stride: int = 2,
        size: int = 64,
        grayscale: bool = False,
        clip_sampling: str = "random",
        val_groups: float | Sequence[int] = 0.15,
        seed: int = 0,
    ) -> None:
        self.index = UCF101Index(root, fold=fold, classes=classes, val_groups=val_groups, seed=seed)
        self.split = split
        sampling = dict(num_frames=num_frames, frame_stride=frame_stride, size=size, grayscale=grayscale)
        entries = self.index.entries(split)
        super().__init__(entries, self.index.classes, clip_sampling=clip_sampling, **sampling)


@DATASETS.register("ucf101", family="video")
def ucf101(
    split: str,
    root: str | None = None,
    fold: int = 1,
    classes: list[str] | None = None,
    num_frames: int = 16,
    frame_stride: int = 2,
    size: int = 64,
    grayscale: bool = False,
    clip_sampling: str = "random",
    val_groups: float | list[int] = 0.15,
    seed: int = 0,
    store: str | None = None,
) -> Dataset:
    """UCF101 action clips (official folds, classInd labels, group-wise validation split).

    With `store` (a folder made by `vidyn prepare ucf101`) clips are read from the store instead of decoded;
    its fold, size, frames, stride and grayscale must match these arguments; `clip_sampling` then does not
    apply (the store holds fixed, evenly spaced windows).
    """
    if store is not None:
        expected = {
            "dataset": "ucf101",
            "fold": fold,
            "size": size,
            "frames": num_frames,
            "stride": frame_stride,
        }
        check_store(store, expected)
        return StoreDataset(
            store, split, classes=classes, grayscale=grayscale, val_groups=val_groups, seed=seed
        )
    if root is None:
        raise VidynError("ucf101 needs root= (the folder holding UCF-101/ and ucfTrainTestlist/) or store=")
    return UCF101Dataset(
        root,
        split,
        fold=fold,
        classes=classes,
        num_frames=num_frames,
        frame_stride=frame_stride,
        size=size,
        grayscale=grayscale,
        clip_sampling=clip_sampling,
        val_groups=val_groups,
        seed=seed,
    )
