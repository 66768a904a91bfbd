from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from ucf_tree import TREE_VIDEOS, UCF101_CLASSES, make_ucf_tree, official_test_groups

from vidyn.data.folder import FolderDataset
from vidyn.data.prepare import prepare_store
from vidyn.data.store import (
    StoreDataset,
    StoreWriter,
    carve_val_groups,
    clip_indices,
    take_clip,
    window_indices,
)
from vidyn.data.ucf101 import UCF101Dataset, UCF101Index
from vidyn.data.video_io import read_video
from vidyn.errors import VidynError
from vidyn.registry import DATASETS

ARGS = {"size": 16, "frames": 4, "stride": 2, "shard_size": 8, "progress": False}  # 40 videos -> 5 shards


def _prepare(root: Path, out: Path, workers: int = 0, **kw) -> dict:
    return prepare_store("ucf101", root, out, workers=workers, **{**ARGS, **kw})


def _files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.iterdir()) if p.name != ".lock"}


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ucf101")
    make_ucf_tree(root)
    return root


@pytest.fixture(scope="module")
def store(ucf_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference run, through the process pool."""
    out = tmp_path_factory.mktemp("stores") / "reference"
    summary = _prepare(ucf_root, out, workers=2)
    assert summary["videos"] == summary["clips"] == len(TREE_VIDEOS) and summary["skipped"] == []
    assert summary["store"] == str(out) and summary["resumed_videos"] == 0 and summary["seconds"] > 0
    return out


def test_clip_selection_helpers_by_hand() -> None:
    assert clip_indices(20, 4, 2, "center").tolist() == [6, 8, 10, 12]  # slack 13, start 6
    assert clip_indices(6, 4, 2, "center").tolist() == [1, 2, 3, 4]  # stride lowered to fit
    assert clip_indices(3, 5, 2, "center").tolist() == [0, 1, 2, 3, 4]  # past the end: padded later
    assert clip_indices(11, 3, 9, "uniform").tolist() == [0, 5, 10]
    assert [w.tolist() for w in window_indices(20, 4, 2, 2)] == [[3, 5, 7, 9], [9, 11, 13, 15]]
    frames, times = np.arange(3)[:, None], np.array([0.5, 0.6, 0.7])
    clip, clip_times = take_clip(frames, times, np.arange(5), fps=25.0)
    assert clip[:, 0].tolist() == [0, 1, 2, 2, 2]
    np.testing.assert_allclose(clip_times, [0.5, 0.6, 0.7, 0.8, 0.9])
    with pytest.raises(VidynError, match="clip_sampling"):
        clip_indices(10, 2, 1, "middle")
    assert carve_val_groups([8, 9, 10, 11], 0.0, seed=0) == set()
    assert len(carve_val_groups(range(8, 26), 0.15, seed=3)) == 3
    with pytest.raises(VidynError, match=r"in \[0, 1\)"):
        carve_val_groups([1, 2], 1.5, seed=0)


def test_manifest_labels_follow_classind_and_shards_hold_the_clips(store: Path) -> None:
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["complete"] and manifest["classes"] == UCF101_CLASSES and manifest["num_shards"] == 5
    assert manifest["params"]["fold"] == 1 and manifest["params"]["frames"] == 4
    clips = manifest["clips"]
    assert [c["index"] for c in clips] == list(range(len(TREE_VIDEOS)))
    assert [c["source"] for c in clips] == sorted(c["source"] for c in clips)  # order = the sorted video list
    for c in clips:
        assert c["label"] == UCF101_CLASSES.index(c["class"])  # classInd index - 1
        assert c["source"].startswith(f"UCF-101/{c['class']}/v_")
        assert c["split"] == ("test" if c["group"] in official_test_groups(1) else "train")
    labels = {c["class"]: c["label"] for c in clips}
    assert labels["Hammering"] == 34 and labels["HammerThrow"] == 35 and labels["JumpingJack"] == 46
    total = 0
    for shard in manifest["shards"]:
        data = np.load(store / shard["file"])
        assert data.dtype == np.uint8 and data.shape == (shard["clips"], 4, 16, 16, 3)
        mine = [c for c in clips if c["shard"] == shard["index"]]
        assert [c["offset"] for c in mine] == list(range(shard["clips"])) and shard["first_clip"] == total
        total += shard["clips"]
    assert total == len(clips)


def test_store_items_equal_the_decoded_center_clips(ucf_root: Path, store: Path) -> None:
    decoded = UCF101Dataset(ucf_root, "test", num_frames=4, frame_stride=2, size=16, clip_sampling="center")
    stored = StoreDataset(store, "test")
    assert len(stored) == len(decoded) and stored.num_classes == 101
    position = {r["source"]: i for i, r in enumerate(stored.records)}
    for i in range(0, len(decoded), 3):
        a, b = decoded[i], stored[position[decoded.entries[i].source]]
        assert b["frames"].dtype == torch.float32 and b["frames"].shape == (4, 3, 16, 16)
        assert b["label"].dtype == torch.int64 and b["label"].ndim == 0
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["label"], b["label"])
        assert torch.equal(a["times"], b["times"])


def test_store_splits_subsets_and_grayscale(ucf_root: Path, store: Path) -> None:
    index = UCF101Index(ucf_root, val_groups=0.34, seed=5)
    for split in ("train", "val", "test"):
        ds = StoreDataset(store, split, val_groups=0.34, seed=5)
        assert sorted(r["source"] for r in ds.records) == sorted(e.source for e in index.entries(split))
    sub = StoreDataset(store, "train", classes=["JumpRope", "Hammering"], val_groups=0.0)
    assert sub.classes == ["Hammering", "JumpRope"] and set(sub.labels.tolist()) == {0, 1}
    assert all(sub.classes[int(sub[i]["label"])] == sub.records[i]["class"] for i in range(len(sub)))
    rgb, gray = (
        StoreDataset(store, "test")[0]["frames"],
        StoreDataset(store, "test", grayscale=True)[0]["frames"],
    )
    luma = (rgb * 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert gray.shape == (4, 1, 16, 16) and (gray * 255 - luma).abs().max() <= 0.5 + 1e-3
    with pytest.raises(VidynError, match="not in store"):
        StoreDataset(store, "train", classes=["Archery0"])


def test_store_dataset_pickles_without_its_memory_maps(store: Path) -> None:
    ds = StoreDataset(store, "train")
    first = ds[0]
    blob = pickle.dumps(ds)  # what a spawn-started DataLoader worker receives
    assert len(blob) < 50_000 and ds._maps  # the maps (whole shards) are not copied
    assert torch.equal(pickle.loads(blob)[0]["frames"], first["frames"])


def test_builder_reads_a_store_only_with_matching_parameters(store: Path) -> None:
    ds = DATASETS.build("ucf101", split="test", store=str(store), size=16, num_frames=4, frame_stride=2)
    assert isinstance(ds, StoreDataset) and len(ds) == 10
    with pytest.raises(VidynError, match=r"frames=4 \(config: 8\)"):
        DATASETS.build("ucf101", split="test", store=str(store), size=16, num_frames=8, frame_stride=2)


_KILLER = """
import os, signal, sys
import vidyn.fileio as fileio
from vidyn.data.prepare import prepare_store
calls, real = 0, fileio._rename
def replace_then_die(tmp, path):
    global calls
    calls += 1
    if calls == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    real(tmp, path)
fileio._rename = replace_then_die
prepare_store("ucf101", sys.argv[1], sys.argv[2], workers=0, **{ARGS})
"""


@pytest.mark.parametrize("kill_at", [4, 5])  # 4: shard 1 written to its temp name; 5: renamed, not listed
def test_resume_after_kill_gives_the_uninterrupted_store(
    ucf_root: Path, store: Path, tmp_path: Path, kill_at: int
) -> None:
    out = tmp_path / "store"
    script = textwrap.dedent(_KILLER).replace("{ARGS}", repr(ARGS))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(ucf_root), str(out), str(kill_at)], env=env)
    assert proc.returncode == -9
    killed = json.loads((out / "manifest.json").read_text())
    assert not killed["complete"] and [s["index"] for s in killed["shards"]] == [0]
    assert bool(list(out.glob(".shard_00001.npy.*.tmp.npy"))) == (kill_at == 4)
    assert (out / "shard_00001.npy").exists() == (kill_at == 5)
    with pytest.raises(VidynError, match="incomplete.*re-run the same"):
        StoreDataset(out, "train")
    summary = _prepare(ucf_root, out)
    assert summary["resumed_videos"] == 8 and summary["clips"] == len(TREE_VIDEOS)
    assert _files(out) == _files(store)  # manifest and every shard, byte for byte


def test_the_number_of_workers_does_not_change_the_store(ucf_root: Path, store: Path, tmp_path: Path) -> None:
    """`--workers 0` (decoding in the command's process) writes the 2-worker reference byte for byte."""
    summary = _prepare(ucf_root, tmp_path / "zero", workers=0)
    assert summary["clips"] == len(TREE_VIDEOS) and summary["resumed_videos"] == 0
    assert _files(tmp_path / "zero") == _files(store)  # manifest and every shard


def test_rerun_is_a_no_op_and_other_parameters_are_refused(
    ucf_root: Path, store: Path, tmp_path: Path
) -> None:
    before = _files(store)
    assert _prepare(ucf_root, store)["resumed_videos"] == len(TREE_VIDEOS)
    assert _files(store) == before
    with pytest.raises(VidynError, match=r"different parameters \(frames\); pick a new --out or delete"):
        _prepare(ucf_root, store, frames=5)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(VidynError, match="not empty and holds no prepared store"):
        _prepare(ucf_root, foreign)


def test_a_second_writer_is_locked_out(tmp_path: Path) -> None:
    first = StoreWriter(tmp_path, {"dataset": "folder"}, ["a"], 1, 1, (1, 2, 2, 3), root="x")
    with pytest.raises(VidynError, match="another `vidyn prepare` is writing"):
        StoreWriter(tmp_path, {"dataset": "folder"}, ["a"], 1, 1, (1, 2, 2, 3), root="x")
    first.close()
    StoreWriter(tmp_path, {"dataset": "folder"}, ["a"], 1, 1, (1, 2, 2, 3), root="x").close()


def test_corrupt_videos_are_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "ucf"
    make_ucf_tree(root, classes=("Hammering", "JumpRope"), groups=(1, 22), clips_per_group=1)
    bad = root / "UCF-101/JumpRope/v_JumpRope_g22_c01.avi"
    bad.write_bytes(os.urandom(3000))
    summary = _prepare(root, tmp_path / "store", clips_per_video=2)
    assert summary["videos"] == 4 and summary["clips"] == 6
    assert [s["file"] for s in summary["skipped"]] == ["UCF-101/JumpRope/v_JumpRope_g22_c01.avi"]
    assert "cannot read video" in summary["skipped"][0]["reason"]
    manifest = json.loads((tmp_path / "store/manifest.json").read_text())
    assert manifest["skipped"][0]["file"] == summary["skipped"][0]["file"]
    first = [c for c in manifest["clips"] if c["video"] == 0]  # two windows centred in halves of the video
    n = len(read_video(root / "UCF-101" / first[0]["source"].removeprefix("UCF-101/")).times)
    starts = [int((w + 0.5) * (n - 7) / 2) for w in (0, 1)]
    assert [c["window"] for c in first] == [0, 1]
    np.testing.assert_allclose([c["times"][0] for c in first], np.array(starts) / 25.0, atol=1e-9)


def test_folder_store_of_pt_clips_matches_the_folder_dataset(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    for cls in ("walk", "run"):
        for k in range(6):
            path = tmp_path / "clips" / cls / f"{k}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(torch.rand(6, 3, 8, 8, generator=gen), path)
    kw = {"size": 8, "frames": 4, "stride": 1, "shard_size": 5, "progress": False, "workers": 0}
    summary = prepare_store("folder", tmp_path / "clips", tmp_path / "store", **kw)
    assert summary["clips"] == 12 and not summary["skipped"]
    for split in ("train", "val", "test"):
        try:
            decoded = FolderDataset(tmp_path / "clips", split, num_frames=4, frame_stride=1, size=8,
                                    clip_sampling="center")  # fmt: skip
        except VidynError:  # that split drew no file
            assert len(StoreDataset(tmp_path / "store", split)) == 0
            continue
        stored = StoreDataset(tmp_path / "store", split)
        assert stored.classes == ["run", "walk"] and len(stored) == len(decoded)
        position = {r["source"]: i for i, r in enumerate(stored.records)}
        for i, entry in enumerate(decoded.entries):
            a, b = decoded[i], stored[position[entry.source]]
            assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["times"], b["times"])
            assert int(a["label"]) == int(b["label"]) == ["run", "walk"].index(entry.class_name)
