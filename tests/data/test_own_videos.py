"""A user's own videos: flat folders, every window decoded once, splits checked before training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidyn import api
from vidyn.data.folder import FolderIndex
from vidyn.data.store import StoreDataset, sliding_windows
from vidyn.data.video_io import write_video
from vidyn.errors import VidynError

sys.path.insert(0, str(Path(__file__).parent))
from ucf_tree import tiny_frames  # noqa: E402


@pytest.fixture(scope="module")
def flat_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight short videos in a flat folder (MP4 and AVI, one in a subfolder): no labels anywhere."""
    root = tmp_path_factory.mktemp("myvids")
    (root / "holiday").mkdir()
    for k in range(8):
        name = f"holiday/clip{k}.avi" if k == 7 else f"clip{k}.{'mp4' if k % 2 else 'avi'}"
        write_video(root / name, tiny_frames(k, 30, (24, 24)), fps=25.0)
    return root


def test_sliding_windows_cover_the_video_at_the_window_stride() -> None:
    windows = sliding_windows(30, 4, 2, 3)  # span 7 frames: starts 0, 3, ..., 21
    assert [int(w[0]) for w in windows] == list(range(0, 24, 3))
    assert all(w.tolist() == list(range(int(w[0]), int(w[0]) + 7, 2)) for w in windows)
    assert [w.tolist() for w in sliding_windows(5, 4, 2, 3)] == [[0, 1, 2, 3]]  # short: stride fitted


def test_a_flat_folder_is_an_unlabelled_set_split_by_file(flat_root: Path) -> None:
    index = FolderIndex(flat_root, val_fraction=0.2, test_fraction=0.2)
    assert not index.labelled and index.classes == []
    entries = [e for s in ("train", "val", "test") for e in index.entries(s)]
    assert sorted(e.source for e in entries) == sorted(
        [f"clip{k}.{'mp4' if k % 2 else 'avi'}" for k in range(7)] + ["holiday/clip7.avi"]
    )
    assert {e.label for e in entries} == {-1}
    # folders of folders are classes unless labels=False says they are not
    assert FolderIndex(flat_root / "..", labels=False).labelled is False


def test_prepare_takes_every_window_and_reads_back_unlabelled(flat_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    res = api.prepare("folder", flat_root, out, size=16, frames=4, stride=2, clips_per_video=0,
                      window_stride=3, workers=0, progress=False)  # fmt: skip
    assert res["videos"] == 8 and res["clips"] == 8 * 8  # 30 frames: window starts 0, 3, ..., 21
    train = StoreDataset(out, "train")
    item = train[0]
    assert item["frames"].shape == (4, 3, 16, 16) and int(item["label"]) == -1
    sources = {s: {r["source"] for r in StoreDataset(out, s).records} for s in ("train", "val", "test")}
    assert not sources["train"] & (sources["val"] | sources["test"])  # a video's windows stay on one side


def _own_config(root: Path, out: Path) -> dict:
    return {
        "name": "own",
        "out_dir": str(out),
        "model": {"name": "convlstm_tiny", "args": {"in_channels": 3, "image_size": 16}},
        "data": {"name": "folder", "args": {"root": str(root), "num_frames": 8, "frame_stride": 2, "size": 16,
                                            "val_fraction": 0.25, "test_fraction": 0.25}, "batch_size": 4},
        "task": {"name": "prediction", "args": {"num_context": 4, "num_future": 4}},
        "trainer": {"max_steps": 2, "val_check_interval": 2, "progress_bar": False},
        "eval": {"num_visual_clips": 0},
    }  # fmt: skip


def test_train_on_a_raw_folder_decodes_once_into_a_shared_store(flat_root: Path, tmp_path: Path) -> None:
    cfg = _own_config(flat_root, tmp_path)
    first = api.train(cfg)
    stores = list((tmp_path / ".stores").iterdir())
    assert len(stores) == 1 and (stores[0] / "manifest.json").is_file()
    shards = {p: p.stat().st_mtime_ns for p in stores[0].glob("shard_*.npy")}
    manifest = (stores[0] / "manifest.json").read_bytes()
    second = api.train(cfg)  # same decoding settings: the store is reused, nothing decoded again
    assert shards and {p: p.stat().st_mtime_ns for p in stores[0].glob("shard_*.npy")} == shards
    assert (stores[0] / "manifest.json").read_bytes() == manifest
    assert first.metrics["models"]["convlstm_tiny"]["num_clips"] > 0 and second.run_dir != first.run_dir
    spec = api.describe_model(first.run_dir)
    assert spec["frame_interval"] == pytest.approx(2 / 25, abs=1e-6)  # every 2nd frame of 25 fps video


def test_a_folder_too_small_for_a_test_split_stops_before_training(tmp_path: Path) -> None:
    root = tmp_path / "two"
    root.mkdir()
    for k in range(2):
        write_video(root / f"v{k}.mp4", tiny_frames(k, 30, (24, 24)), fps=25.0)
    cfg = _own_config(root, tmp_path / "runs")
    cfg["data"]["prepare"] = False
    with pytest.raises(VidynError, match=r"no usable .* split \(train: .* clips; val: .*test: .*"):
        api.train(cfg)
    assert not (tmp_path / "runs" / "own").exists()  # nothing written


def test_store_items_match_decoded_windows(flat_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    api.prepare("folder", flat_root, out, size=16, frames=4, stride=2, clips_per_video=0, window_stride=3,
                workers=0, progress=False)  # fmt: skip
    ds = StoreDataset(out, "train")
    times = torch.stack([ds[i]["times"] for i in range(len(ds))])
    assert np.allclose(np.diff(times.numpy(), axis=1), 2 / 25, atol=1e-4)  # real timestamps, stride 2


def test_every_family_trains_from_a_folder_and_runs_on_a_held_out_clip(
    flat_root: Path, tmp_path: Path
) -> None:
    """The README's own-videos path, shrunk: interpolation (Vid-ODE) and recognition (class folders)
    train a few steps from folders of real-format videos, then run on a clip none of them saw."""
    held_out = tmp_path / "new.mp4"
    write_video(held_out, tiny_frames(99, 12, (24, 24)), fps=25.0)
    cfg = _own_config(flat_root, tmp_path)
    cfg["model"] = {"name": "vid_ode_tiny", "args": {"in_channels": 3, "image_size": 16}}
    cfg["task"] = {"name": "prediction", "args": {"mode": "irregular", "num_context": 2, "num_future": 4,
                                                  "loss": "model"}}  # fmt: skip
    cfg["data"]["args"]["num_frames"] = 6
    run = api.train(cfg).run_dir
    res = api.interpolate(run, held_out, factor=2, out=tmp_path / "smooth.mp4")
    assert res["output_frames"] == 2 * 12 - 1 and res["channels"] == 3
    classes = tmp_path / "classes"
    for k in range(8):  # two classes of four videos each: labels from the folder names
        (classes / f"law{k % 2}").mkdir(parents=True, exist_ok=True)
        write_video(classes / f"law{k % 2}" / f"v{k}.avi", tiny_frames(k, 20, (24, 24)), fps=25.0)
    cfg = _own_config(classes, tmp_path)
    cfg["model"] = {"name": "cnn_rnn_tiny", "args": {"num_classes": 2}}
    cfg["task"] = {"name": "recognition"}
    run = api.train(cfg).run_dir
    top = api.classify(run, held_out, top=2)["predictions"]
    assert sorted(p["class"] for p in top) == ["law0", "law1"]
