"""Kinetics: the official CSVs, clips as the download scripts save them, missing clips counted and listed,
and the same prepared store as UCF101's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kinetics_tree import HEADER, LABELS, MISSING, ROWS, clip_stem, make_kinetics_tree, write_csvs

from vidyn.cli import main
from vidyn.data.kinetics import KineticsIndex
from vidyn.data.prepare import prepare_store
from vidyn.errors import VidynError
from vidyn.registry import DATASETS

ARGS = {"size": 16, "frames": 4, "stride": 2, "shard_size": 4, "progress": False}
SPLIT_OF = {"train": "train", "val": "val", "test": "test"}


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kinetics400")
    make_kinetics_tree(root)
    return root


@pytest.fixture(scope="module")
def store(kinetics_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "k400"
    summary = prepare_store("kinetics", kinetics_root, out, workers=0, **ARGS)
    assert summary["videos"] == summary["clips"] == len(ROWS) - len(MISSING)
    assert summary["missing"] == len(MISSING) and summary["skipped"] == []
    return out


def test_store_holds_the_clips_on_disk_with_the_csv_vocabulary(store: Path) -> None:
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["classes"] == sorted(LABELS) and manifest["params"]["dataset"] == "kinetics"
    expected = {clip_stem(i, s, e): (label, split) for label, i, s, e, split in ROWS if i not in MISSING}
    got = {Path(c["source"]).stem: (c["class"], c["split"]) for c in manifest["clips"]}
    assert got == expected
    for clip in manifest["clips"]:  # labels index the sorted vocabulary; paths are <split>/<label>/<stem>
        assert clip["label"] == sorted(LABELS).index(clip["class"])
        assert Path(clip["source"]).parts[:2] == (clip["split"], clip["class"])


def test_missing_clips_are_listed_in_the_official_csv_format(store: Path) -> None:
    with open(store / "missing.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HEADER
    listed = {
        (r["label"], r["youtube_id"], int(r["time_start"]), int(r["time_end"]), r["split"]) for r in rows
    }
    assert listed == {r for r in ROWS if r[1] in MISSING}


def test_builder_reads_the_store_and_decodes_the_same_clips_live(kinetics_root: Path, store: Path) -> None:
    common = {"num_frames": 4, "frame_stride": 2, "size": 16}
    for split, n in (("train", 2), ("val", 2), ("test", 2)):
        from_store = DATASETS.build("kinetics", split=split, store=str(store), **common)
        live = DATASETS.build(
            "kinetics", split=split, root=str(kinetics_root), clip_sampling="center", **common
        )
        assert len(from_store) == len(live) == n and from_store.classes == live.classes == sorted(LABELS)
        a, b = from_store[0], live[0]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["label"], b["label"])
        np.testing.assert_allclose(a["times"].numpy(), b["times"].numpy(), atol=1e-6)
    subset = DATASETS.build(
        "kinetics", split="val", store=str(store), classes=[LABELS[1], LABELS[0]], **common
    )
    assert subset.classes == [LABELS[0], LABELS[1]]  # vocabulary order, as the CSVs fix it
    with pytest.raises(VidynError, match="prepared with frames=4"):
        DATASETS.build("kinetics", split="train", store=str(store), num_frames=8, frame_stride=2, size=16)


def test_cli_prepares_reports_missing_and_resumes(
    kinetics_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "store"
    argv = ["prepare", "--dataset", "kinetics", "--root", str(kinetics_root), "--out", str(out)]
    argv += ["--size", "16", "--frames", "4", "--workers", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "6 videos, 6 clips, 0 skipped" in printed
    assert f"2 of 8 listed clips are missing on disk: {out}/missing.csv" in printed
    assert f"--set data.name=kinetics --set data.args.store={out}" in printed
    assert main(argv) == 0  # the same command again: nothing to decode
    assert "resumed after 6 videos" in capsys.readouterr().out


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the index never decodes: names are all it reads


def test_layout_variants_people_have(tmp_path: Path) -> None:
    """cvdfoundation tarballs (annotations/, flat split folders, val.csv, an extra is_cc column), a
    Kinetics-700 test CSV without labels, renamed label folders, unpadded names, .webm, a duplicate copy."""
    rows = [r for r in ROWS if r[4] != "test"]
    header = ("youtube_id", "label", "time_start", "time_end", "split", "is_cc")  # another column order
    names = {"train": "train.csv", "val": "val.csv"}
    write_csvs(tmp_path / "annotations", [(*r[:4], r[4]) for r in rows], names, header[:5])
    with open(tmp_path / "annotations/test.csv", "w", newline="") as f:  # Kinetics-700-2020: no labels
        csv.writer(f).writerows(
            [("youtube_id", "time_start", "time_end", "split"), ("n0_l4b3l_000", 5, 15, "test")]
        )
    label, youtube_id, start, end, _ = rows[0]
    _touch(tmp_path / "train" / f"{clip_stem(youtube_id, start, end)}.mp4")  # flat split folder
    _touch(tmp_path / "val" / f"{clip_stem(youtube_id, start, end)}.mp4")  # a stray copy: train's wins
    label, youtube_id, start, end, _ = rows[3]
    _touch(tmp_path / "train" / label.replace(" ", "_").replace("'", "") / f"{youtube_id}_{start}_{end}.webm")
    _touch(tmp_path / "train" / "partial" / f"{clip_stem(*rows[5][1:4])}.mp4.part")  # an unfinished download
    index = KineticsIndex(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in index.csvs] == [
        "annotations/test.csv",
        "annotations/train.csv",
        "annotations/val.csv",
    ]
    assert index.classes == sorted(LABELS) and index.unlabelled == 1
    found = {e.source: (e.class_name, e.split) for e in index.entries()}
    assert found == {
        f"train/{clip_stem(*rows[0][1:4])}.mp4": (rows[0][0], "train"),
        f"train/massaging_persons_head/{rows[3][1]}_7_17.webm": (rows[3][0], "train"),
    }
    assert len(index.missing) == len(rows) - 2 and index.entries("val") == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({}, "no annotation CSVs under"),
        ({"labels.csv": "id,name\n0,abseiling\n"}, "lack the column youtube_id"),
        ({"train.csv": "label,youtube_id,start,end\nabseiling,abc,1,2\n"}, "lacks the column.s. time_start"),
        ({"train.csv": "youtube_id,time_start,time_end\nabc,1,2\n"}, "lacks the column.s. label"),
        ({"kinetics.csv": "label,youtube_id,time_start,time_end\na,b,1,2\n"}, "name it train.csv"),
        (
            {"train.csv": "label,youtube_id,time_start,time_end\na,b,one,2\n"},
            r"train.csv:2: time_start 'one'",
        ),
        ({"val.csv": "label,youtube_id,time_start,time_end,split\na,b,1,2,dev\n"}, "split 'dev' is not"),
        ({"test.csv": "label,youtube_id,time_start,time_end,split\na,b,1,2,test\n"}, "none of the 1 clips"),
    ],
)
def test_bad_input_is_one_line_saying_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, setup: dict, message: str
) -> None:
    for name, text in setup.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(VidynError, match=message):
        KineticsIndex(tmp_path)
    argv = ["prepare", "--dataset", "kinetics", "--root", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidyn: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing is written before the input is known good


def test_unknown_classes_are_refused(kinetics_root: Path) -> None:
    with pytest.raises(VidynError, match=r"unknown Kinetics classes \['Abseiling'\]"):
        KineticsIndex(kinetics_root, classes=["Abseiling"])
    assert KineticsIndex(kinetics_root, classes=[LABELS[2]]).classes == [LABELS[2]]
