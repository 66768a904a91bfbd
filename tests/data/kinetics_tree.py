"""Builds small Kinetics-format trees for the data tests: official CSVs and tiny MP4 clips saved as the
download scripts save them (`<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`)."""

from __future__ import annotations

import csv
from pathlib import Path

from ucf_tree import tiny_frames

from vidyn.data.video_io import write_video

HEADER = ("label", "youtube_id", "time_start", "time_end", "split")
# Real Kinetics-400 label spellings: spaces, parentheses, an apostrophe; the vocabulary is sorted.
LABELS = ("abseiling", "massaging person's head", "passing American football (in game)")
# (label, youtube_id (11 characters, '-' and '_' included), start, end, CSV split value)
ROWS = (
    ("abseiling", "-0Ab_cd-Ef1", 14, 24, "train"),
    ("abseiling", "xY_z0123456", 0, 10, "train"),
    ("abseiling", "Qq1-2_3w4e5", 120, 130, "val"),
    ("massaging person's head", "m4ss_ag-3d0", 7, 17, "train"),
    ("massaging person's head", "Zz9_8-7yY6x", 31, 41, "val"),
    ("passing American football (in game)", "p4ss-ing_a0", 3, 13, "train"),
    ("passing American football (in game)", "P4SS_1NG-b1", 215, 225, "test"),
    ("abseiling", "t3st_-_abs1", 1, 11, "test"),
)
MISSING = ("xY_z0123456", "p4ss-ing_a0")  # listed in the CSVs, never downloaded (gone from YouTube)
CSV_NAMES = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}  # kinetics_400's names
HW = (18, 24)


def clip_stem(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def write_csvs(folder: Path, rows=ROWS, names=CSV_NAMES, header=HEADER) -> None:
    """One CSV per split, `\\r\\n` line ends and quoting as Python's csv module (and pandas) write them."""
    folder.mkdir(parents=True, exist_ok=True)
    by_split = {split: [r for r in rows if r[4] == split] for split in names}
    for split, name in names.items():
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([dict(zip(HEADER, r, strict=True))[c] for c in header] for r in by_split[split])


def make_kinetics_tree(root: Path, frames: int = 10) -> list[tuple]:
    """CSVs in ROOT and clips under ROOT/<split>/<label>/ (all but MISSING); returns the rows on disk."""
    write_csvs(root)
    present = [r for r in ROWS if r[1] not in MISSING]
    for i, (label, youtube_id, start, end, split) in enumerate(present):
        path = root / split / label / f"{clip_stem(youtube_id, start, end)}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, tiny_frames(i, frames + i, HW), fps=25.0)
    return present
