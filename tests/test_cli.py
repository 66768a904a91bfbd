"""CLI round trips in a temp dir: train -> evaluate -> predict, render, and the error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidyn.cli import main
from vidyn.data.video_io import read_video, write_video


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidyn", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml
    from tiny_configs import tiny_prediction_config

    tmp = tmp_path_factory.mktemp("run")
    cfg = tmp / "tiny.yaml"
    cfg.write_text("# vidyn train -c tiny.yaml\n" + yaml.safe_dump(tiny_prediction_config()))
    out = tmp / "run"
    assert main(["train", "-c", str(cfg), "--out", str(out)]) == 0
    return out


def test_train_writes_a_complete_run_folder(trained_run: Path) -> None:
    for name in (
        "config.yaml",
        "model.safetensors",
        "model.json",
        "metrics.json",
        "per_step.png",
        "samples.gif",
    ):
        assert (trained_run / name).is_file(), name
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"convlstm_tiny", "copy_last", "linear", "context_median"}
    for res in metrics["models"].values():
        assert len(res["per_step"]["ssim"]) == 4
        assert 0 <= res["ssim"] <= 1 and res["psnr"] > 0 and res["num_clips"] == 6
    meta = json.loads((trained_run / "model.json").read_text())
    assert meta["name"] == "convlstm_tiny" and meta["config"]["trainer"]["max_steps"] == 4


def test_evaluate_writes_json_matching_training_metrics(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    assert main(["evaluate", str(trained_run), "--json", str(out)]) == 0
    again = json.loads(out.read_text())["models"]
    first = json.loads((trained_run / "metrics.json").read_text())["models"]
    assert again["convlstm_tiny"]["ssim"] == pytest.approx(first["convlstm_tiny"]["ssim"], abs=1e-6)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_predict_continues_a_video(trained_run: Path, tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "in.mp4"
    frames = np.repeat(np.linspace(0, 255, 12, dtype=np.uint8)[:, None, None, None], 3, axis=3)
    frames = np.broadcast_to(frames, (12, 40, 48, 3)).copy() + rng.integers(
        0, 5, (12, 40, 48, 3), dtype=np.uint8
    )
    write_video(src, frames, fps=10)
    out = tmp_path / f"out{suffix}"
    assert main(["predict", str(trained_run), "--input", str(src), "--steps", "5", "--out", str(out)]) == 0
    video = read_video(out)
    assert video.frames.shape[0] == 4 + 5  # context (as trained) + predictions
    assert video.frames.shape[1:3] == (16, 16)


def test_resume_continues_from_last_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    from vidyn import api

    res = api.train(
        trained_run / "config.yaml", ["trainer.max_steps=6"], resume=trained_run, evaluate_after=False
    )
    assert res.run_dir == trained_run
    import torch

    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6


def test_render_shapes(tmp_path: Path) -> None:
    out = tmp_path / "clip.npy"
    assert main(["render", "shapes", "--out", str(out), "--frames", "7", "--size", "24"]) == 0
    arr = np.load(out)
    assert arr.shape == (7, 24, 24, 3) and arr.dtype == np.uint8 and arr.max() > arr.min()


def test_errors_are_one_line_and_leave_nothing(trained_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    out = tmp_path / "never.mp4"
    cases = [
        (["predict", str(trained_run), "--input", str(bad), "--steps", "3", "--out", str(out)], "broken.mp4"),
        (
            [
                "predict",
                str(trained_run),
                "--input",
                str(tmp_path / "missing.mp4"),
                "--steps",
                "3",
                "--out",
                str(out),
            ],
            "missing.mp4",
        ),
        (["evaluate", str(tmp_path / "nowhere")], "does not exist"),
        (
            ["train", "-c", "predict/demo", "--set", "model.args.hidden=3", "--out", str(tmp_path / "r")],
            "valid arguments",
        ),
        (["train", "-c", "predict/demo", "--set", "trainer.max_stepz=3"], "unknown config key"),
        (["train", "-c", "predict/demo", "--set", "model.name=convlstmm"], "unknown model"),
    ]
    for args, needle in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vidyn: error:") and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_ddp_two_cpu_processes_train_export_and_evaluate(tmp_path: Path, tiny_config_file: Path) -> None:
    """Lightning's DDP (gloo, 2 processes) trains; rank 0 alone exports and evaluates without hanging."""
    out = tmp_path / "ddp"
    proc = run_cli(
        "train",
        "-c",
        str(tiny_config_file),
        "--out",
        str(out),
        "--set",
        "trainer.strategy=ddp",
        "--set",
        "trainer.devices=2",
        "--set",
        "trainer.accelerator=cpu",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["convlstm_tiny"]["num_clips"] == 6
    assert (out / "model.safetensors").is_file()
