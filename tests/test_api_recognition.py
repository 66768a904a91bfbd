"""Recognition end to end: api.train (task.name=recognition) -> evaluate -> classify, the CLI, prepare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidyn import api
from vidyn.cli import main
from vidyn.data.synthetic import SHAPES_CLASSES, shapes
from vidyn.data.video_io import load_frames, write_video
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model, load_model

sys.path.insert(0, str(Path(__file__).parent / "data"))
from ucf_tree import make_ucf_tree  # noqa: E402

SIZE, FRAMES = 16, 6


def tiny_recognition_config(**data_args) -> dict:
    return {
        "name": "tiny_rec",
        "model": {"name": "cnn_rnn_tiny", "args": {"num_classes": 7, "in_channels": 1}},
        "data": {
            "name": "shapes",
            "args": {"size": SIZE, "channels": 1, "num_frames": FRAMES, "max_objects": 1, **data_args},
            "splits": {"train": {"num_samples": 16}, "val": {"num_samples": 7}, "test": {"num_samples": 14}},
            "batch_size": 4,
        },
        "task": {"name": "recognition", "args": {"label_smoothing": 0.1, "freeze_backbone_until_epoch": 1}},
        "optim": {"lr": 0.003},
        "trainer": {"max_steps": 6, "log_every_n_steps": 1, "progress_bar": False, "monitor": "val/top1"},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rec") / "run"
    result = api.train(tiny_recognition_config(), run_dir=out)
    assert result.run_dir == out
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 25-frame 32x32 RGB shapes clip as .mp4 (the model was trained on 16x16 grayscale)."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    clip = shapes(split="test", num_samples=1, size=32, channels=3, num_frames=25)[0]["frames"]
    write_video(path, clip, fps=10)
    return path


def test_train_exports_a_classifier_with_its_class_names(run: Path) -> None:
    meta = json.loads((run / "model.json").read_text())
    assert meta["family"] == "classifier" and meta["class_names"] == SHAPES_CLASSES
    for name in ("confusion.png", "confusion.csv", "metrics.json", "model.safetensors"):
        assert (run / name).is_file(), name
    assert not (run / "per_step.png").exists()  # frame-prediction plots do not apply
    res = json.loads((run / "metrics.json").read_text())
    assert list(res["models"]) == ["cnn_rnn_tiny"]  # predictor baselines are skipped for classifiers
    m = res["models"]["cnn_rnn_tiny"]
    assert 0 <= m["top1"] <= m["top5"] <= 1 and m["num_clips"] == 14
    assert list(m["per_class_accuracy"]) == SHAPES_CLASSES
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 14 and (cm.sum(axis=1) == 2).all()  # labels are i % 7
    assert m["top1"] == pytest.approx(np.trace(cm) / 14)
    for cls, acc in m["per_class_accuracy"].items():
        i = SHAPES_CLASSES.index(cls)
        assert acc == pytest.approx(cm[i, i] / 2)
    assert sum(p["count"] for p in m["most_confused"]) == 14 - np.trace(cm)
    assert res["protocol"]["num_classes"] == 7 and res["protocol"]["split"] == "test"
    lines = (run / "confusion.csv").read_text().splitlines()
    assert lines[0].split(",")[1:] == SHAPES_CLASSES
    assert [[int(v) for v in line.split(",")[1:]] for line in lines[1:]] == cm.tolist()


def test_evaluate_again_matches_and_writes_json(run: Path, tmp_path: Path) -> None:
    out = api.evaluate(run, json_path=tmp_path / "m.json", report_dir=tmp_path)
    first = json.loads((run / "metrics.json").read_text())["models"]["cnn_rnn_tiny"]
    assert out["models"]["cnn_rnn_tiny"]["confusion_matrix"] == first["confusion_matrix"]
    assert json.loads((tmp_path / "m.json").read_text())["models"]["cnn_rnn_tiny"]["top1"] == first["top1"]
    assert (tmp_path / "confusion.png").is_file() and (tmp_path / "confusion.csv").is_file()


def test_classify_returns_sorted_topk_probabilities(run: Path, video: Path) -> None:
    res = api.classify(run, video, top=3)
    probs = [p["probability"] for p in res["predictions"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert {p["class"] for p in res["predictions"]} <= set(SHAPES_CLASSES)
    assert res["num_clips"] == 5  # 25 frames, windows of 6: ceil(25 / 6) = 5
    everything = api.classify(run, video, top=100)
    assert len(everything["predictions"]) == 7
    assert sum(p["probability"] for p in everything["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_classify_one_clip_equals_the_model_on_the_decoded_frames(run: Path, video: Path) -> None:
    res = api.classify(run, video, top=7, clips=1)
    model = load_model(run)
    frames, _ = load_frames(video, size=SIZE, channels=1)  # the same decoding: crop, resize, BT.601 luma
    with torch.no_grad():
        expected = model(frames[:FRAMES].unsqueeze(0)).softmax(-1)[0]
    got = {p["class"]: p["probability"] for p in res["predictions"]}
    for i, cls in enumerate(SHAPES_CLASSES):
        assert got[cls] == pytest.approx(float(expected[i]), abs=1e-5)


def test_classify_holds_the_last_frame_of_a_short_video(run: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    clip = shapes(split="test", num_samples=1, size=SIZE, channels=1, num_frames=3)[0]["frames"]
    write_video(short, clip, fps=10)
    res = api.classify(run, short, top=7)
    frames, _ = load_frames(short, size=SIZE, channels=1)
    held = torch.cat([frames, frames[-1:].expand(FRAMES - 3, -1, -1, -1)])  # (FRAMES, C, H, W)
    with torch.no_grad():
        expected = load_model(run)(held.unsqueeze(0)).softmax(-1)[0]
    got = {p["class"]: p["probability"] for p in res["predictions"]}
    assert res["num_clips"] == 1
    assert got[SHAPES_CLASSES[0]] == pytest.approx(float(expected[0]), abs=1e-5)


def test_the_note_on_a_colour_clip_names_the_classifiers_own_videos_config(run: Path, video: Path) -> None:
    note = api.input_note(run, video, "classify")
    assert note is not None and "grayscale" in note
    assert "vidyn train -c recognize/own_videos" in note  # not the predictors' config


def test_classify_bad_input_is_a_user_error(run: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VidynError, match="cannot read video"):
        api.classify(run, text)
    with pytest.raises(VidynError, match="not found"):
        api.classify(run, tmp_path / "missing.mp4")
    with pytest.raises(VidynError, match="top must be"):
        api.classify(run, text, top=0)
    predictor = tmp_path / "predictor"
    export_model(build_model("copy_last"), predictor)
    with pytest.raises(VidynError, match="not an action classifier"):
        api.classify(predictor, text)


def test_cli_classify_round_trip(run: Path, video: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["classify", str(run), str(video), "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "5 clip(s)" in out[0] and out[1].split() == ["rank", "class", "probability"]
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == ["1", "2"] and all(r[1] in SHAPES_CLASSES for r in rows)
    assert float(rows[0][2]) >= float(rows[1][2])
    assert main(["classify", str(run), str(video.with_name("nope.mp4"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidyn: error:") and "\n" not in err


def test_missing_ucf101_root_says_how_to_set_it() -> None:
    with pytest.raises(VidynError, match=r"--set data\.args\.root="):
        api.train("recognize/cnn_rnn_ucf101")


def test_prepare_cli_then_train_from_the_store(tmp_path: Path) -> None:
    root = tmp_path / "ucf"
    classes = ("Hammering", "HammerThrow", "JumpRope")
    make_ucf_tree(root, classes=classes, groups=(1, 8, 22), clips_per_group=1, frames=(12, 14))
    (root / "UCF-101" / "JumpRope" / "v_JumpRope_g08_c01.avi").write_bytes(b"truncated download")
    store = tmp_path / "store"
    args = ["--root", str(root), "--out", str(store), "--size", "16", "--frames", "4", "--stride", "2"]
    # --classes: without it a UCF101 store keeps all 101 classInd classes, labels fixed by classInd
    args += ["--classes", ",".join(classes), "--workers", "2"]
    cmd = [sys.executable, "-m", "vidyn", "prepare", "--dataset", "ucf101", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "9 videos, 8 clips, 1 skipped" in done.stdout and "clips/s" in done.stdout
    assert "skipped UCF-101/JumpRope/v_JumpRope_g08_c01.avi: cannot read video" in done.stdout
    cfg = {
        "name": "from_store",
        "model": {"name": "cnn_rnn_tiny", "args": {"num_classes": 3}},
        "data": {
            "name": "ucf101",
            "args": {"store": str(store), "size": 16, "num_frames": 4, "frame_stride": 2, "val_groups": [8]},
            "batch_size": 2,
        },
        "task": {"name": "recognition"},
        "trainer": {"max_steps": 2, "progress_bar": False, "monitor": "val/top1"},
    }
    result = api.train(cfg, run_dir=tmp_path / "run")
    m = result.metrics["models"]["cnn_rnn_tiny"]
    assert m["num_clips"] == 3 and list(m["per_class_accuracy"]) == list(classes)  # group 1: test, fold 1
    assert json.loads((tmp_path / "run" / "model.json").read_text())["class_names"] == list(classes)
