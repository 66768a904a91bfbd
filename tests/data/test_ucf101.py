from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ucf_tree import (
    CLIPS_PER_GROUP,
    FPS,
    SHARED_CLASSIND,
    TREE_CLASSES,
    TREE_GROUPS,
    TREE_VIDEOS,
    UCF101_CLASSES,
    clone_lists,
    make_ucf_tree,
    official_test_groups,
    write_lists,
)

from vidyn.data.ucf101 import UCF101Dataset, UCF101Index
from vidyn.data.video_io import frames_to_tensor, read_video
from vidyn.errors import VidynError
from vidyn.registry import DATASETS


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ucf101")
    make_ucf_tree(root)
    return root


def test_embedded_class_list_is_the_official_classind() -> None:
    if not SHARED_CLASSIND.exists():
        pytest.skip("the shared official classInd.txt is not on this machine")
    raw = SHARED_CLASSIND.read_bytes()
    assert raw.count(b"\r\n") == 101
    assert [line.split()[1] for line in raw.decode().splitlines()] == UCF101_CLASSES


def test_labels_are_classind_minus_one_not_sorted_folder_names(ucf_root: Path) -> None:
    index = UCF101Index(ucf_root, val_groups=0.0)
    labels = {e.class_name: e.label for e in index.train + index.test}
    assert labels == {
        "Hammering": 34,
        "HammerThrow": 35,
        "HandstandPushups": 36,
        "JumpingJack": 46,
        "JumpRope": 47,
    }
    by_sorting = {name: i for i, name in enumerate(sorted(TREE_CLASSES))}  # the trap: both pairs swap
    assert (
        by_sorting["HammerThrow"] < by_sorting["Hammering"]
        and by_sorting["JumpRope"] < by_sorting["JumpingJack"]
    )
    assert (
        index.num_classes == 101 and index.classes[34] == "Hammering" and index.classes[35] == "HammerThrow"
    )


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_folds_follow_the_official_group_rule(ucf_root: Path, fold: int) -> None:
    index = UCF101Index(ucf_root, fold=fold, val_groups=0.0)
    tested = set(official_test_groups(fold))
    assert {e.group for e in index.test} == tested & set(TREE_GROUPS)
    assert {e.group for e in index.train} == set(TREE_GROUPS) - tested  # 22 always trains
    assert len(index.train) + len(index.test) == len(TREE_VIDEOS) and not index.val
    assert {e.split for e in index.test} == {"test"} and {e.split for e in index.train} == {"train"}
    assert all(e.path.is_file() for e in index.train + index.test)


def test_validation_is_carved_from_the_train_list_by_group(ucf_root: Path) -> None:
    index = UCF101Index(ucf_root, fold=1, val_groups=0.34, seed=0)  # train groups 8, 15, 22: hold out one
    train_groups, val_groups = {e.group for e in index.train}, {e.group for e in index.val}
    assert len(val_groups) == 1 and not train_groups & val_groups and train_groups | val_groups == {8, 15, 22}
    assert index.val_groups == sorted(val_groups) and {e.split for e in index.val} == {"val"}
    assert len(index.val) == len(TREE_CLASSES) * CLIPS_PER_GROUP  # the group is held out in every class
    assert UCF101Index(ucf_root, fold=1, val_groups=0.34, seed=0).val_groups == index.val_groups
    assert len({tuple(UCF101Index(ucf_root, val_groups=0.34, seed=s).val_groups) for s in range(8)}) > 1
    assert {e.group for e in UCF101Index(ucf_root, fold=1, val_groups=[22]).val} == {22}
    with pytest.raises(VidynError, match="not in this fold's train list"):
        UCF101Index(ucf_root, fold=1, val_groups=[1])  # a test group of fold 1
    with pytest.raises(VidynError, match="every train group"):
        UCF101Index(ucf_root, fold=1, val_groups=[8, 15, 22])


def test_handstand_pushups_resolve_to_the_real_file_spelling(ucf_root: Path, tmp_path: Path) -> None:
    index = UCF101Index(ucf_root, val_groups=0.0)
    found = sorted(e.path.name for e in index.train + index.test if e.class_name == "HandstandPushups")
    assert len(found) == len(TREE_GROUPS) * CLIPS_PER_GROUP
    assert all(name.startswith("v_HandStandPushups_g") for name in found)
    # a list spelling the file like its folder names a path that does not exist on a case-sensitive disk...
    root = clone_lists(ucf_root, tmp_path / "root")
    write_lists(root, TREE_VIDEOS, spelling={"HandstandPushups": "HandstandPushups"})
    assert not (ucf_root / "UCF-101/HandstandPushups/v_HandstandPushups_g01_c01.avi").exists()
    # ...and is still resolved to the real file
    respelled = UCF101Index(root, val_groups=0.0)
    hs = [e for e in respelled.train + respelled.test if e.class_name == "HandstandPushups"]
    assert sorted(e.path.name for e in hs) == found and all(e.path.is_file() for e in hs)
    assert {e.group for e in hs} == set(TREE_GROUPS) and {e.label for e in hs} == {36}


def test_class_subset_is_reindexed_in_classind_order(ucf_root: Path) -> None:
    index = UCF101Index(ucf_root, classes=["JumpRope", "HammerThrow", "Hammering"], val_groups=0.0)
    assert index.classes == ["Hammering", "HammerThrow", "JumpRope"]
    assert {e.class_name: e.label for e in index.train + index.test} == {
        "Hammering": 0,
        "HammerThrow": 1,
        "JumpRope": 2,
    }
    with pytest.raises(VidynError, match="unknown UCF101 classes.*Hammerthrow"):
        UCF101Index(ucf_root, classes=["Hammerthrow"])


def test_a_folder_without_the_official_layout_says_what_it_must_hold(tmp_path: Path) -> None:
    with pytest.raises(VidynError, match=r"must hold UCF-101/ and ucfTrainTestlist/ as the two official"):
        UCF101Index(tmp_path)
    (tmp_path / "UCF-101").mkdir()
    with pytest.raises(VidynError, match=r"missing ucfTrainTestlist/"):
        UCF101Index(tmp_path)


def test_missing_split_file_and_bad_fold(ucf_root: Path, tmp_path: Path) -> None:
    root = clone_lists(ucf_root, tmp_path / "root")
    (root / "ucfTrainTestlist/testlist02.txt").unlink()
    UCF101Index(root, fold=1)
    with pytest.raises(VidynError, match="testlist02.txt is missing"):
        UCF101Index(root, fold=2)
    with pytest.raises(VidynError, match="folds 1, 2 and 3"):
        UCF101Index(root, fold=4)


def test_train_list_labels_must_agree_with_classind(ucf_root: Path, tmp_path: Path) -> None:
    root = clone_lists(ucf_root, tmp_path / "root")
    path = root / "ucfTrainTestlist/trainlist01.txt"
    text = path.read_bytes().decode()
    assert "Hammering/v_Hammering_g08_c01.avi 35\r\n" in text
    path.write_bytes(text.replace("v_Hammering_g08_c01.avi 35", "v_Hammering_g08_c01.avi 36").encode())
    with pytest.raises(
        VidynError, match="labels Hammering/v_Hammering_g08_c01.avi as 36 but classInd.txt gives 35"
    ):
        UCF101Index(root)


def test_listed_videos_missing_on_disk_are_an_error_unless_their_class_is_left_out(
    ucf_root: Path, tmp_path: Path
) -> None:
    root = clone_lists(ucf_root, tmp_path / "root")
    with open(root / "ucfTrainTestlist/trainlist01.txt", "ab") as f:
        f.write(b"Archery/v_Archery_g08_c01.avi 3\r\n")
    with pytest.raises(
        VidynError, match=r"1 videos listed in trainlist01.txt are missing .*v_Archery_g08_c01"
    ):
        UCF101Index(root)
    assert len(UCF101Index(root, classes=list(TREE_CLASSES), val_groups=0.0).train) == 30


def _expected_clip(path: Path, idx: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    video = read_video(path, size=size)
    return frames_to_tensor(video.frames[np.minimum(idx, len(video.times) - 1)]), video.times


def test_dataset_returns_the_contract_with_real_timestamps(ucf_root: Path) -> None:
    ds = UCF101Dataset(ucf_root, "test", num_frames=4, frame_stride=2, size=16, clip_sampling="center")
    assert len(ds) == len(TREE_CLASSES) * CLIPS_PER_GROUP  # fold 1 tests group 01 only
    for i in (0, 3):
        item, entry = ds[i], ds.entries[i]
        assert item["frames"].shape == (4, 3, 16, 16) and item["frames"].dtype == torch.float32
        assert item["times"].shape == (4,) and item["times"].dtype == torch.float32
        assert (
            item["label"].dtype == torch.int64
            and item["label"].ndim == 0
            and int(item["label"]) == entry.label
        )
        n = len(read_video(entry.path).times)
        idx = (n - 7) // 2 + 2 * np.arange(4)  # the centred window of 4 frames 2 apart
        frames, _ = _expected_clip(entry.path, idx, 16)
        assert torch.equal(item["frames"], frames)
        np.testing.assert_allclose(item["times"].numpy(), idx / FPS, atol=1e-6)  # pts of those frames


def test_uniform_random_and_grayscale_sampling(ucf_root: Path) -> None:
    uniform = UCF101Dataset(ucf_root, "test", num_frames=5, size=16, clip_sampling="uniform")
    n = len(read_video(uniform.entries[1].path).times)
    expected = np.round(np.linspace(0, n - 1, 5)) / FPS
    np.testing.assert_allclose(uniform[1]["times"].numpy(), expected, atol=1e-6)
    rand = UCF101Dataset(ucf_root, "test", num_frames=4, frame_stride=3, size=16, clip_sampling="random")
    starts = set()
    for seed in range(6):
        torch.manual_seed(seed)
        t = rand[2]["times"].numpy() * FPS
        np.testing.assert_allclose(np.diff(t), 3.0, atol=1e-4)
        assert 0 <= t[0] and t[-1] <= len(read_video(rand.entries[2].path).times) - 1 + 1e-4
        starts.add(round(float(t[0])))
    assert len(starts) > 1
    torch.manual_seed(0)
    a = rand[2]
    torch.manual_seed(0)
    assert torch.equal(a["frames"], rand[2]["frames"])
    gray = UCF101Dataset(ucf_root, "test", num_frames=4, size=16, grayscale=True, clip_sampling="center")[0]
    assert gray["frames"].shape == (4, 1, 16, 16)


def test_short_videos_lower_the_stride_then_hold_the_last_frame(ucf_root: Path) -> None:
    ds = UCF101Dataset(ucf_root, "test", num_frames=8, frame_stride=3, size=16, clip_sampling="center")
    entry = ds.entries[0]
    n = len(read_video(entry.path).times)  # 12..20 frames: 8 frames 3 apart (22) never fit, 2 apart may
    step = 2 if n >= 15 else 1
    start = (n - (7 * step + 1)) // 2
    np.testing.assert_allclose(ds[0]["times"].numpy(), (start + step * np.arange(8)) / FPS, atol=1e-6)
    long = UCF101Dataset(ucf_root, "test", num_frames=24, size=16, clip_sampling="center")[0]
    np.testing.assert_allclose(long["times"].numpy(), np.arange(24) / FPS, atol=1e-5)  # times go on
    assert torch.equal(long["frames"][n - 1 :], long["frames"][n - 1 :][:1].expand(24 - n + 1, -1, -1, -1))


def test_registered_builder(ucf_root: Path) -> None:
    ds = DATASETS.build(
        "ucf101", split="val", root=str(ucf_root), classes=["JumpRope"], val_groups=[22], size=16
    )
    assert isinstance(ds, UCF101Dataset) and ds.classes == ["JumpRope"] and len(ds) == CLIPS_PER_GROUP
    with pytest.raises(VidynError, match="needs root="):
        DATASETS.build("ucf101", split="train")
