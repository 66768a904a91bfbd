"""The shipped motion judge: accuracy on `shapes`, its input rules, FD-judge, law histograms, baselines."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vidyn.data.synthetic import SHAPES_CLASSES, shapes
from vidyn.errors import VidynError
from vidyn.metrics.baselines import shuffled_frames, still_frame
from vidyn.metrics.frechet import protocol_line
from vidyn.metrics.judge import (
    JUDGE_DIR,
    FrechetJudgeDistance,
    MotionLawScores,
    histogram_kl,
    judge_sha256,
    load_judge,
    motion_law_accuracy,
    prepare_clips,
)

N_TEST = 140  # 20 clips per law


@pytest.fixture(scope="module")
def judge():
    return load_judge()


@pytest.fixture(scope="module")
def test_clips():
    data = shapes(split="test", num_samples=N_TEST, size=32, channels=1, num_frames=16, frame_interval=0.1)
    clips = torch.stack([data[i]["frames"] for i in range(N_TEST)])  # (N, 16, 1, 32, 32)
    return clips, torch.tensor([data.label(i) for i in range(N_TEST)])


def test_shipped_judge_is_a_safetensors_export_with_its_accuracy():
    meta = json.loads((JUDGE_DIR / "model.json").read_text())
    assert meta["name"] == "cnn_rnn" and meta["class_names"] == SHAPES_CLASSES
    assert not list(JUDGE_DIR.glob("*.pt")) and not list(JUDGE_DIR.glob("*.ckpt"))
    assert (JUDGE_DIR / "model.safetensors").stat().st_size < 5_000_000
    assert len(judge_sha256()) == 64


def test_shipped_judge_scores_at_least_95_percent_on_the_test_split(judge, test_clips, one_thread):
    clips, labels = test_clips
    assert motion_law_accuracy(judge, clips, labels) >= 0.95


def test_rgb_clips_are_judged_on_their_luma_like_grayscale_shapes(test_clips):
    rgb = shapes(split="test", num_samples=4, size=32, channels=3, num_frames=16, frame_interval=0.1)
    rgb_clips = torch.stack([rgb[i]["frames"] for i in range(4)])
    assert torch.allclose(prepare_clips(rgb_clips), test_clips[0][:4], atol=1e-5)


def test_prepare_cuts_strides_resizes_and_refuses_short_clips():
    clips = torch.rand(2, 40, 3, 48, 64)
    x = prepare_clips(clips, frame_stride=2)
    assert x.shape == (2, 16, 1, 32, 32) and 0 <= x.min() and x.max() <= 1
    uint8 = (clips * 255).round().to(torch.uint8)
    assert torch.allclose(prepare_clips(uint8), prepare_clips(uint8.float() / 255), atol=1e-6)
    with pytest.raises(VidynError, match="at least 16 frames"):
        prepare_clips(clips[:, :30], frame_stride=2)  # 15 frames after the stride


def test_fd_judge_of_a_set_against_itself_is_zero_with_its_protocol(judge, test_clips, one_thread):
    clips = test_clips[0][:70]
    fd = FrechetJudgeDistance(judge, real_split="shapes/test")
    fd.update(clips, real=True)
    fd.update(clips, real=False)
    with pytest.warns(UserWarning, match="below the feature dimension"):
        value = fd.compute().item()
    assert abs(value) < 1e-6 * fd.real_outer.trace().item() / 70
    protocol = fd.protocol()
    assert protocol["weights_sha256"] == judge_sha256()[:12] and protocol["clip_length"] == 16
    assert (protocol["n_real"], protocol["n_fake"], protocol["feature_dim"]) == (70, 70, 128)
    line = protocol_line(protocol)
    assert line.startswith("fd_judge | vidyn shapes judge") and "32x32" in line and "shapes/test" in line


def test_law_histogram_kl_and_accuracy_by_hand():
    scores = MotionLawScores(3, ["a", "b", "c"])
    eye = torch.eye(3)
    scores.update(eye[[0, 1, 2, 2]], real=True)  # real histogram 1, 1, 2
    scores.update(eye[[0, 0, 1, 2]], real=False, labels=torch.tensor([0, 1, 1, 2]))  # fake 2, 1, 1
    out = scores.compute()
    assert out["accuracy"] == 0.75 and out["histogram_fake"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    p = torch.tensor([2.5, 1.5, 1.5], dtype=torch.float64) / 5.5  # fake, +0.5 per class
    q = torch.tensor([1.5, 1.5, 2.5], dtype=torch.float64) / 5.5
    assert out["kl_fake_real"] == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-9)
    assert out["kl_real_fake"] == pytest.approx(float((q * (q / p).log()).sum()), rel=1e-9)
    assert histogram_kl(torch.tensor([3.0, 0.0]), torch.tensor([3.0, 0.0])) == 0.0
    assert (out["n_real"], out["n_fake"], out["n_labelled"]) == (4, 4, 4)


def test_still_and_shuffled_baselines():
    clips = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1, 1, 1).expand(-1, -1, 1, 2, 2)
    still = still_frame(clips)
    assert torch.equal(still, clips[:, :1].expand_as(clips))
    shuffled = shuffled_frames(clips, torch.Generator().manual_seed(0))
    for b in range(2):
        order = shuffled[b, :, 0, 0, 0]
        assert sorted(order.tolist()) == clips[b, :, 0, 0, 0].tolist()
        assert not torch.equal(order, clips[b, :, 0, 0, 0])
    with pytest.raises(VidynError):
        still_frame(clips[:, :1])
    assert not math.isnan(float(shuffled.sum()))


def test_motion_law_judge_and_fd_judge_on_tensors_for_evaluators(test_clips, one_thread):
    from vidyn.metrics.judge import fd_judge, motion_law_judge

    clips, labels = test_clips
    out = motion_law_judge(clips, labels, SHAPES_CLASSES)
    assert out["value"] >= 0.95 and out["protocol"]["n_fake"] == N_TEST
    assert out["protocol_line"].startswith("motion_law")
    # a generator whose classes are ["bounce", "spin"]: its labels 0 / 1 are the judge's laws 0 / 4
    picked = torch.cat([clips[labels == 4][:10], clips[labels == 0][:10]])
    remapped = motion_law_judge(picked, torch.tensor([1] * 10 + [0] * 10), ["bounce", "spin"])
    assert remapped["value"] >= 0.9
    assert motion_law_judge(clips, labels, ["walk"])["value"] is None
    assert motion_law_judge(clips[:, :15], labels, SHAPES_CLASSES)["value"] is None
    # twice the frame rate over the same span (31 frames at 0.05 s) is judged on frames 0, 2, ..., 30
    dense = shapes(split="test", num_samples=14, size=32, num_frames=31, frame_interval=0.05)
    doubled = torch.stack([dense[i]["frames"] for i in range(14)])
    strided = motion_law_judge(doubled, labels[:14], SHAPES_CLASSES, frame_stride=2)
    assert strided["value"] == motion_law_judge(clips[:14], labels[:14], SHAPES_CLASSES)["value"]
    with pytest.warns(UserWarning, match="below the feature dimension"):
        self_fd = fd_judge(clips[:20], clips[:20], real_split="shapes/test")
    assert abs(self_fd["value"]) < 1e-4 and self_fd["protocol"]["real_split"] == "shapes/test"
