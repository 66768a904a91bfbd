"""What the API reads from an exported model (its input spec), and `vidyn evaluate` on a split the model
cannot predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_configs import tiny_prediction_config

from vidyn import api


@pytest.fixture(scope="module")
def convlstm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_prediction_config()
    cfg["trainer"]["max_steps"] = 2
    return api.train(cfg, run_dir=tmp_path_factory.mktemp("runs") / "convlstm", evaluate_after=False).run_dir


def test_export_stores_the_input_spec_and_old_exports_get_the_same(
    convlstm_run: Path, tmp_path: Path
) -> None:
    meta = json.loads((convlstm_run / "model.json").read_text())
    assert meta["io"] == {
        "in_channels": 1, "image_size": 16, "frame_interval": 0.1, "num_context": 4, "num_future": 4,
        "num_frames": 8, "frame_stride": 1, "continuous_time": False, "interpolates": False,
        "size_multiple": 4,
    }  # fmt: skip
    spec = api.describe_model(convlstm_run)
    assert spec["family"] == "predictor" and spec["in_channels"] == 1 and not spec["interpolates"]
    # A model exported before model.json carried "io" (and with the old flat task section): derived.
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes((convlstm_run / "model.safetensors").read_bytes())
    legacy = {k: v for k, v in meta.items() if k != "io"}
    legacy["config"]["task"] = {"kind": "prediction", "num_context": 4, "num_future": 4, "loss": "mse"}
    (old / "model.json").write_text(json.dumps(legacy))
    assert {k: v for k, v in api.describe_model(old).items() if k != "path"} == {
        k: v for k, v in spec.items() if k != "path"
    }


def test_find_models_follows_links(convlstm_run: Path, tmp_path: Path) -> None:
    (tmp_path / "linked").symlink_to(convlstm_run.parent, target_is_directory=True)
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)  # a cycle is walked once
    found = api.find_models(tmp_path)
    assert [m["name"] for m in found] == ["convlstm_tiny"]


def test_evaluate_marks_a_discrete_model_not_applicable_on_irregular_clips(convlstm_run: Path) -> None:
    # This used to end in a KeyError traceback: the protocol read num_clips from the model's own entry.
    cmd = [sys.executable, "-m", "vidyn", "evaluate", str(convlstm_run), "--set", "data.args.irregular=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.startswith("convlstm_tiny"))
    assert "n/a" in row and "0." not in row
    assert any(line.startswith("copy_last") and "0." in line for line in lines)  # baselines still scored
    assert any("n/a convlstm_tiny: discrete-time model" in line for line in lines)
    res = api.evaluate(convlstm_run, overrides=["data.args.irregular=true"])
    assert set(res["models"]["convlstm_tiny"]) == {"reason"}
    assert res["protocol"]["num_clips"] == res["models"]["copy_last"]["num_clips"] == 6


def test_the_cli_says_up_front_what_a_large_colour_clip_loses(convlstm_run: Path, tmp_path: Path) -> None:
    import numpy as np

    from vidyn.data.video_io import write_video

    clip = tmp_path / "wide.mp4"
    write_video(clip, np.zeros((12, 72, 128, 3), np.uint8), fps=25.0)
    note = api.input_note(convlstm_run, clip)
    assert note is not None and "16x16 grayscale" in note and "128x72" in note and "grayscale" in note
    assert "vidyn train -c predict/own_videos" in note  # the config that trains a colour predictor
    out = tmp_path / "out.mp4"
    cmd = [
        sys.executable,
        "-m",
        "vidyn",
        "predict",
        str(convlstm_run),
        "--input",
        str(clip),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[0] == note  # the first thing said, before the prediction runs
    small = tmp_path / "small.mp4"
    write_video(small, np.zeros((12, 16, 16, 3), np.uint8), fps=25.0)
    assert "resized" not in api.input_note(convlstm_run, small)  # right size: only the colour goes


def test_evaluate_fills_the_lpips_column_when_a_backbone_is_given(
    convlstm_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIDYN_ALEXNET", raising=False)
    small = api.evaluate(convlstm_run, max_clips=2)  # 16x16 frames: below AlexNet's minimum
    assert small["models"]["convlstm_tiny"]["lpips"] is None and "minimum" in small["protocol"]["lpips"]
    cfg = tiny_prediction_config(image_size=32)
    cfg["data"]["args"]["size"] = 32
    cfg["trainer"]["max_steps"] = 1
    run = api.train(cfg, run_dir=tmp_path / "run32", evaluate_after=False).run_dir
    res = api.evaluate(run, max_clips=2)
    assert res["models"]["convlstm_tiny"]["lpips"] is None and "VIDYN_ALEXNET" in res["protocol"]["lpips"]
    sys.path.insert(0, str(Path(__file__).parent / "metrics"))
    from test_lpips import _fake_alexnet  # a random backbone in torchvision's names

    _fake_alexnet(tmp_path / "alexnet.pth")
    monkeypatch.setenv("VIDYN_ALEXNET", str(tmp_path / "alexnet.pth"))
    res = api.evaluate(run, max_clips=2)
    values = {k: m["lpips"] for k, m in res["models"].items()}
    assert all(isinstance(v, float) and v >= 0 for v in values.values()) and len(set(values.values())) > 1
    assert res["protocol"]["lpips"].startswith("LPIPS v0.1")


def test_fully_convolutional_models_run_at_the_size_asked_for(convlstm_run: Path, tmp_path: Path) -> None:
    import numpy as np

    from vidyn.data.video_io import read_video, write_video
    from vidyn.errors import VidynError

    clip = tmp_path / "wide.mp4"
    write_video(clip, (np.random.default_rng(0).random((12, 72, 128, 3)) * 255).astype(np.uint8), fps=25.0)
    assert api.describe_model(convlstm_run)["size_multiple"] == 4  # patch 4: any multiple of 4 pixels
    res = api.predict(convlstm_run, clip, steps=3, out=tmp_path / "big.mp4", size=35)  # rounds to 36
    assert res["size"] == 36 and read_video(tmp_path / "big.mp4").frames.shape[1:3] == (36, 36)
    assert "36x36" in api.input_note(convlstm_run, clip, "predict", 35)
    import vidyn

    fixed = tmp_path / "transformer"
    vidyn.export_model(vidyn.build_model("transformer_tiny"), fixed)
    with pytest.raises(VidynError, match="training size 16 only"):
        api.predict(fixed, clip, steps=2, out=tmp_path / "t.mp4", size=32)
