from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from ucf_tree import tiny_frames

from vidyn.data.folder import FolderDataset, FolderIndex, hash_split, load_pt_clip, ranked_splits
from vidyn.data.video_io import read_video, write_video
from vidyn.errors import VidynError
from vidyn.registry import DATASETS


class Opaque:  # an arbitrary object: weights_only unpickling must refuse it
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _save(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for c, cls in enumerate(("b_walk", "a_run", "c_jump")):
        for k in range(10):
            path = root / cls / f"clip{k}.avi" if k % 2 else root / cls / "sub" / f"clip{k}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, tiny_frames(10 * c + k, 12), fps=20.0)
    (root / "a_run" / "notes.txt").write_text("not a clip")
    (root / ".cache").mkdir()
    return root


def test_labels_are_sorted_folder_names_unless_classes_are_given(video_root: Path) -> None:
    index = FolderIndex(video_root)
    assert index.classes == ["a_run", "b_walk", "c_jump"] and index.layout == "hashed"
    everything = [e for s in ("train", "val", "test") for e in index.entries(s)]
    assert len(everything) == 30 and all(e.label == index.classes.index(e.class_name) for e in everything)
    assert all(e.path.suffix in (".avi", ".mp4") for e in everything)  # notes.txt ignored, sub/ included
    chosen = FolderIndex(video_root, classes=["c_jump", "a_run"])
    assert chosen.classes == ["c_jump", "a_run"]
    assert {e.class_name: e.label for s in ("train", "val", "test") for e in chosen.entries(s)} == {
        "c_jump": 0,
        "a_run": 1,
    }
    with pytest.raises(VidynError, match=r"classes \['z'\] not found"):
        FolderIndex(video_root, classes=["z"])


def test_hash_split_is_deterministic_and_follows_the_fractions(video_root: Path) -> None:
    counts = Counter(hash_split(f"cls/video_{i:05d}.avi", 0.1, 0.2) for i in range(5000))
    assert abs(counts["val"] / 5000 - 0.1) < 0.02 and abs(counts["test"] / 5000 - 0.2) < 0.02
    assert hash_split("a/b.avi", 0.1, 0.1) == hash_split("a/b.avi", 0.1, 0.1)
    a, b = FolderIndex(video_root), FolderIndex(video_root)
    for split in ("train", "val", "test"):
        assert [e.source for e in a.entries(split)] == [e.source for e in b.entries(split)]
    with pytest.raises(VidynError, match="sum to less than 1"):
        FolderIndex(video_root, val_fraction=0.5, test_fraction=0.5)


def test_ranked_splits_give_exact_proportions_even_for_a_few_files() -> None:
    many = ranked_splits([f"v{i:04d}.mp4" for i in range(1000)], 0.1, 0.2)
    assert Counter(many.values()) == {"train": 700, "val": 100, "test": 200}
    five = ranked_splits([f"clip{i}.mp4" for i in range(5)], 0.15, 0.15)
    assert Counter(five.values()) == {"train": 3, "val": 1, "test": 1}  # 0.75 rounds to 1
    assert Counter(ranked_splits(["a.mp4", "b.mp4"], 0.15, 0.15).values()) == {"train": 2}  # too few
    assert ranked_splits(["x.mp4", "y.mp4", "z.mp4"], 0.0, 0.2) == ranked_splits(
        ["z.mp4", "y.mp4", "x.mp4"], 0.0, 0.2
    )
    # a file's rank depends only on its own path: adding files moves at most the rank boundaries
    grown = ranked_splits([f"v{i:04d}.mp4" for i in range(1010)], 0.1, 0.2)
    moved = sum(many[s] != grown[s] for s in many)
    assert moved <= 30


def test_explicit_split_folders(tmp_path: Path) -> None:
    for split, cls, name in [("train", "a", "x"), ("train", "b", "y"), ("val", "a", "z"), ("test", "b", "w")]:
        _save(tmp_path / split / cls / f"{name}.pt", torch.rand(3, 1, 4, 4))
    index = FolderIndex(tmp_path)
    assert index.layout == "split folders" and index.classes == ["a", "b"]
    assert [e.source for e in index.entries("val")] == ["val/a/z.pt"]
    assert [(e.source, e.label) for e in index.entries("test")] == [("test/b/w.pt", 1)]
    assert len(index.entries("train")) == 2


def test_video_items_follow_the_contract(video_root: Path) -> None:
    ds = FolderDataset(video_root, "train", num_frames=4, frame_stride=2, size=8, clip_sampling="center")
    item, entry = ds[0], ds.entries[0]
    assert item["frames"].shape == (4, 3, 8, 8) and item["frames"].dtype == torch.float32
    assert 0 <= item["frames"].min() and item["frames"].max() <= 1
    assert int(item["label"]) == entry.label and item["label"].dtype == torch.int64
    np.testing.assert_allclose(item["times"].numpy(), (2 + 2 * np.arange(4)) / 20.0, atol=1e-6)  # 12 frames
    gray = FolderDataset(video_root, "train", num_frames=4, size=None, grayscale=True)[0]["frames"]
    assert gray.shape == (4, 1, 24, 32) and len(read_video(entry.path).times) == 12


def test_pt_clips_float_and_uint8_layouts(tmp_path: Path) -> None:
    clip = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # seed 000's layout, smaller
    as_uint8 = (clip * 255).round().to(torch.uint8)
    _save(tmp_path / "root/x/float.pt", clip)
    _save(tmp_path / "root/x/uint8_thwc.pt", as_uint8.permute(0, 2, 3, 1).contiguous())
    _save(tmp_path / "root/y/gray.pt", as_uint8[:, :1])
    for name in ("float", "uint8_thwc"):
        assert np.array_equal(
            load_pt_clip(tmp_path / f"root/x/{name}.pt"), as_uint8.permute(0, 2, 3, 1).numpy()
        )
    ds = FolderDataset(tmp_path / "root", "train", num_frames=16, size=8, clip_sampling="center",
                       val_fraction=0.0, test_fraction=0.0, pt_fps=8.0)  # fmt: skip
    for i, entry in enumerate(ds.entries):
        item = ds[i]
        np.testing.assert_allclose(item["times"].numpy(), np.arange(16) / 8.0)  # k / pt_fps
        if entry.source != "y/gray.pt":
            assert torch.equal(item["frames"], as_uint8.float() / 255)  # all 16 frames: the stride gave way
        else:
            assert item["frames"].shape == (16, 3, 8, 8)  # 1 channel repeated for an RGB dataset
            assert torch.equal(item["frames"][:, 0], item["frames"][:, 2])
    small = FolderDataset(
        tmp_path / "root", "train", num_frames=2, size=4, val_fraction=0.0, test_fraction=0.0
    )
    assert small[0]["frames"].shape == (2, 3, 4, 4)


def test_pt_files_that_are_not_plain_clip_tensors_are_refused(tmp_path: Path) -> None:
    cases = {
        "dict.pt": ({"frames": torch.rand(4, 3, 8, 8)}, "holds a dict, not a tensor"),
        "object.pt": (Opaque(), r"torch.load\(weights_only=True\) can read"),
        "range.pt": (torch.rand(4, 3, 8, 8) * 2 - 1, r"must lie in \[0, 1\]"),
        "shape.pt": (torch.rand(5, 7), "is not a .T, C, H, W. clip"),
        "int.pt": (torch.zeros(4, 3, 8, 8, dtype=torch.int32), "dtype torch.int32 unsupported"),
    }
    for name, (obj, message) in cases.items():
        path = _save(tmp_path / name, obj)
        with pytest.raises(VidynError, match=message) as err:
            load_pt_clip(path)
        assert name in str(err.value)  # the message names the file
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a zip")
    with pytest.raises(VidynError, match="garbage.pt"):
        load_pt_clip(tmp_path / "garbage.pt")


def test_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(VidynError, match="is not a folder"):
        FolderIndex(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("not a clip")
    with pytest.raises(VidynError, match="holds no clip files"):
        FolderIndex(tmp_path)  # neither clip files nor class folders
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(VidynError, match="'empty_class' .* holds no clip files"):
        FolderIndex(tmp_path)
    _save(tmp_path / "empty_class/a.pt", torch.rand(2, 3, 4, 4))
    with pytest.raises(VidynError, match="split 'test' .* is empty"):
        FolderDataset(tmp_path, "test", test_fraction=0.0)


def test_registered_builder(video_root: Path) -> None:
    ds = DATASETS.build("folder", split="train", root=str(video_root), size=8, num_frames=4)
    assert isinstance(ds, FolderDataset) and ds.num_classes == 3
    with pytest.raises(VidynError, match="needs root="):
        DATASETS.build("folder", split="train")
