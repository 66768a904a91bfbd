"""Kinetics (Kay et al., 2017, arXiv:1705.06950; also 600 and 700): the official annotation CSVs and
the clips as the common download scripts save them.

    ROOT/train.csv, validate.csv, test.csv     one CSV per split, official header
                                               `label,youtube_id,time_start,time_end,split` (extra columns
                                               such as the 2017 release's `is_cc` are ignored)
    ROOT/<split>/<label>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4   ActivityNet Crawler's
                                               download.py and most scripts derived from it
    ROOT/<split>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4           the cvdfoundation tarballs

Variants handled: the CSVs may also sit in `ROOT/annotations/` or `ROOT/kinetics*/` (how the release
archives unpack) and be named `kinetics_train.csv`, `kinetics-400_val.csv`, `kinetics700_2020/validate.csv`
...; a CSV's `split` column decides each row's split (`train`, `val`/`validate`, `test`), else its file
name does. Test CSVs without labels (Kinetics-600/700 withheld them) are read and their clips left out,
counted as unlabelled. Clip files are found anywhere under ROOT by their name (any video extension, any
label-folder spelling: `passing American football (in game)` or `passing_American_football_in_game`),
with or without the zero padding; where one clip exists twice, the copy under its own split's folder wins.

Labels: the sorted set of labels in all CSVs (the order of the official class lists), so label ids do
not depend on which clips were downloaded. A large share of Kinetics is gone from YouTube: a listed clip
that is not on disk is counted and listed (`missing`), never an error.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from vidyn.data.clips import DecodedClips
from vidyn.data.folder import VIDEO_EXTENSIONS
from vidyn.data.store import (
    StoreDataset,
    VideoEntry,
    check_store,
)
from vidyn.errors import VidynError
from vidyn.registry import DATASETS

COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")  # the official header
_REQUIRED = ("youtube_id", "time_start", "time_end")
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
           "validation": "val", "test": "test", "testing": "test"}  # fmt: skip
_CLIP_NAME = re.compile(r"^(?P<id>.+)_(?P<start>\d+)_(?P<end>\d+)$")
_HOW = "put the official Kinetics CSVs (train.csv, validate.csv, test.csv) in ROOT or ROOT/annotations/"


@dataclass(frozen=True)
class KineticsClip:
    """One row of an annotation CSV."""

    label: str | None  # None: the CSV gives no label (withheld test labels)
    youtube_id: str
    time_start: int
    time_end: int
    split: str  # train | val | test

    @property
    def key(self) -> tuple[str, int, int]:
        return self.youtube_id, self.time_start, self.time_end

    @property
    def file_stem(self) -> str:
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


def _split_of_name(path: Path) -> str | None:
    tokens = [t for t in re.split(r"[^a-z]+", path.stem.lower()) if t]
    found = {_SPLITS[t] for t in tokens if t in _SPLITS}
    return found.pop() if len(found) == 1 else None


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            return [c.strip().lower() for c in next(csv.reader(f), [])]
    except (OSError, csv.Error) as e:
        raise VidynError(f"cannot read {path}: {e}; {_HOW}") from None


def find_csvs(root: Path) -> list[Path]:
    """The Kinetics annotation CSVs (those whose header names `youtube_id`) in ROOT, ROOT/annotations/
    and ROOT/kinetics*/; one-line error when there are none."""
    folders = [root] + sorted(
        p for p in root.iterdir() if p.is_dir() and (p.name == "annotations" or p.name.startswith("kinetics"))
    )
    candidates = sorted(p for d in folders for p in d.glob("*.csv") if p.is_file())
    kinetics = [p for p in candidates if "youtube_id" in _header(p)]
    if kinetics:
        return kinetics
    if candidates:
        seen = ", ".join(f"{p.name} ({','.join(_header(p)[:5]) or 'empty'})" for p in candidates[:3])
        raise VidynError(
            f"no Kinetics annotation CSV under {root}: {seen} lack the column youtube_id; a Kinetics CSV "
            f"has the header {','.join(COLUMNS)}; {_HOW}"
        )
    raise VidynError(f"no annotation CSVs under {root}; {_HOW}")


def _seconds(value: str, column: str, where: str) -> int:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0 or seconds > 1e9:
        raise VidynError(f"{where}: {column} {value!r} is not a time in seconds; restore the official CSV")
    return int(seconds)  # as the download scripts' `%06d` formats it


def read_csv(path: Path) -> list[KineticsClip]:
    """The rows of one annotation CSV; wrong columns or values are one-line errors naming the file."""
    header = _header(path)
    lacking = [c for c in _REQUIRED if c not in header]
    file_split = _split_of_name(path)
    if lacking:
        raise _wrong_columns(path, lacking, header)
    if "split" not in header and file_split is None:
        raise VidynError(
            f"{path} has no split column and its name says no split; name it train.csv, validate.csv or "
            "test.csv"
        )
    rows: list[KineticsClip] = []
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.reader(f)
            next(reader)
            for n, fields in enumerate(reader, 2):
                if any(v.strip() for v in fields):
                    values = dict(zip(header, (v.strip() for v in fields), strict=False))  # short rows too
                    rows.append(_row(values, file_split, f"{path}:{n}"))
    except csv.Error as e:
        raise VidynError(f"{path} is not a readable CSV ({e}); restore the official file") from None
    if "label" not in header and any(r.split != "test" for r in rows):  # only test labels were withheld
        raise _wrong_columns(path, ["label"], header)
    return rows


def _wrong_columns(path: Path, lacking: list[str], header: list[str]) -> VidynError:
    return VidynError(
        f"{path} lacks the column(s) {', '.join(lacking)} (it has {','.join(header)}); a Kinetics CSV has "
        f"the header {','.join(COLUMNS)}"
    )


def _row(row: dict[str, str], file_split: str | None, where: str) -> KineticsClip:
    if any(not row.get(c) for c in _REQUIRED):
        raise VidynError(f"{where}: the row lacks {', '.join(c for c in _REQUIRED if not row.get(c))}")
    given = row.get("split", "").lower()
    split = _SPLITS.get(given) if given else file_split
    if split is None:
        raise VidynError(f"{where}: split {given!r} is not train, val/validate or test")
    return KineticsClip(
        label=row.get("label") or None,
        youtube_id=row["youtube_id"],
        time_start=_seconds(row["time_start"], "time_start", where),
        time_end=_seconds(row["time_end"], "time_end", where),
        split=split,
    )


def index_clip_files(root: Path) -> dict[tuple[str, int, int], list[Path]]:
    """Every video file under `root` named `<youtube_id>_<start>_<end>.<ext>`, by (id, start, end).

    Walks symlinked folders too (datasets are often linked in), each real folder once.
    """
    found: dict[tuple[str, int, int], list[Path]] = {}
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            match = _CLIP_NAME.match(stem)
            if match and ext.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                key = (match["id"], int(match["start"]), int(match["end"]))
                found.setdefault(key, []).append(Path(folder) / name)
    return found


def _pick(paths: list[Path], root: Path, split: str) -> Path:
    """Of several copies of one clip, the one under a folder named for its split (else the first)."""
    for path in paths:
        if any(_SPLITS.get(part.lower()) == split for part in path.relative_to(root).parts[:-1]):
            return path
    return paths[0]


def _unique(rows: Iterable[KineticsClip]) -> tuple[list[KineticsClip], int]:
    """Rows with duplicates (one clip listed twice, e.g. by two copies of a CSV) dropped: the first stays."""
    first: dict[tuple[str, int, int], KineticsClip] = {}
    total = 0
    for row in rows:
        total += 1
        first.setdefault(row.key, row)
    return list(first.values()), total - len(first)


class KineticsIndex:
    """The labelled clips the CSVs list: found on disk (`entries(split)`) or `missing`.

    `classes` keeps a subset of the CSVs' labels, re-indexed 0..K-1 in vocabulary (sorted) order;
    `self.classes` names them, `self.all_classes` is the whole vocabulary.
    """

    def __init__(self, root: str | os.PathLike, *, classes: Sequence[str] | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise VidynError(
                f"{self.root} is not a folder; point root at the folder holding the Kinetics CSVs"
            )
        self.csvs = find_csvs(self.root)
        rows, self.duplicates = _unique(r for path in self.csvs for r in read_csv(path))
        self.all_classes = sorted({r.label for r in rows if r.label is not None})
        if classes is None:
            self.classes = list(self.all_classes)
        else:
            unknown = sorted(set(classes) - set(self.all_classes))
            if unknown or not classes:
                raise VidynError(
                    f"unknown Kinetics classes {unknown[:5]}; name them as spelled in the CSVs' label column"
                )
            self.classes = [c for c in self.all_classes if c in set(classes)]
        self.unlabelled = sum(r.label is None for r in rows)
        self.listed = [r for r in rows if r.label in set(self.classes)]
        self.missing: list[KineticsClip] = []
        self._entries = self._find(self.listed)

    def _find(self, listed: list[KineticsClip]) -> list[VideoEntry]:
        files = index_clip_files(self.root)
        label_of = {name: i for i, name in enumerate(self.classes)}
        entries = []
        for row in listed:
            paths = files.get(row.key)
            if not paths:
                self.missing.append(row)
                continue
            path = _pick(paths, self.root, row.split)
            source = path.relative_to(self.root).as_posix()
            entries.append(VideoEntry(path, source, label_of[row.label], row.label, row.split))
        if listed and not entries:
            example = listed[0]
            raise VidynError(
                f"none of the {len(listed)} clips the CSVs list is under {self.root}; save them as "
                f"<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4, e.g. "
                f"{example.split}/{example.label}/{example.file_stem}.mp4"
            )
        return sorted(entries, key=lambda e: e.source)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def entries(self, split: str | None = None) -> list[VideoEntry]:
        """The clips found on disk, of one split ("train", "val", "test") or of all (None)."""
        if split not in (None, "train", "val", "test"):
            raise VidynError(f"split must be train, val or test; got {split!r}")
        return [e for e in self._entries if split is None or e.split == split]


def missing_csv(rows: Sequence[KineticsClip]) -> str:
    """Missing clips in the official CSV format, so the download scripts can take the file as it is."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows((r.label or "", r.youtube_id, r.time_start, r.time_end, r.split) for r in rows)
    return out.getvalue()


class KineticsDataset(DecodedClips):
    """Kinetics clips decoded on the fly: `{"frames" (T, C, H, W), "times" (T,), "label"}`.

    Decodes the whole (10 s) clip per item and selects `num_frames` frames `frame_stride` apart
    (`clip_sampling`, see `vidyn.data.store.clip_indices`); for training prepare a store
    (`vidyn prepare --dataset kinetics`) and pass `store=`.
    """

    def __init__(
        self,
        index: KineticsIndex,
        split: str,
        *,
        num_frames: int = 16,
        frame_stride: int = 2,
        size: int = 64,
        grayscale: bool = False,
        clip_sampling: str = "random",
    ) -> None:
        self.index = index
        sampling = dict(num_frames=num_frames, frame_stride=frame_stride, size=size, grayscale=grayscale)
        super().__init__(index.entries(split), index.classes, clip_sampling=clip_sampling, **sampling)


@DATASETS.register("kinetics", family="video")
def kinetics(
    split: str,
    root: str | None = None,
    classes: list[str] | None = None,
    num_frames: int = 16,
    frame_stride: int = 2,
    size: int = 64,
    grayscale: bool = False,
    clip_sampling: str = "random",
    store: str | None = None,
) -> Dataset:
    """Kinetics action clips (official CSVs: splits train / val / test, labels from the CSVs).

    With `store` (a folder made by `vidyn prepare --dataset kinetics`) clips are read from the store; its
    size, frames and stride must match these arguments. Clips missing on disk are left out.
    """
    if store is not None:
        expected = {"dataset": "kinetics", "size": size, "frames": num_frames, "stride": frame_stride}
        check_store(store, expected)
        return StoreDataset(store, split, classes=classes, grayscale=grayscale)
    if root is None:
        raise VidynError("kinetics needs root= (the folder holding the CSVs and clips) or store=")
    index = KineticsIndex(root, classes=classes)
    return KineticsDataset(
        index,
        split,
        num_frames=num_frames,
        frame_stride=frame_stride,
        size=size,
        grayscale=grayscale,
        clip_sampling=clip_sampling,
    )
