"""Long videos (issue #17): `predict` and `classify` convert only the frames they use, `interpolate`
refuses, in one line and before decoding it all, a part too large to hold, and `--start`/`--duration`
pick a part. (benchmarks/bench_huge_input.py measures the peak memory on 2 minutes of 1080p.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vidyn import api
from vidyn.api import inference
from vidyn.cli import main
from vidyn.data import video_io
from vidyn.data.video_io import read_video
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model

sys.path.insert(0, str(Path(__file__).parent / "data"))
from test_video_select import N, write_long_video  # noqa: E402


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_long_video(tmp_path_factory.mktemp("long") / "long.mp4")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained tiny models: memory and frame counts do not depend on the weights."""
    root = tmp_path_factory.mktemp("models")
    made = {
        "convlstm": build_model("convlstm_tiny", in_channels=1, image_size=16),
        "vid_ode": build_model("vid_ode_tiny", in_channels=1, image_size=16),
        "cnn_rnn": build_model("cnn_rnn_tiny", num_classes=3, in_channels=1),
    }
    return {name: export_model(model, root / name) for name, model in made.items()}


@pytest.fixture
def converted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per decoded frame converted and resized."""
    seen: list[int] = []
    process = video_io._process
    monkeypatch.setattr(video_io, "_process", lambda rgb, *a: seen.append(1) or process(rgb, *a))
    return seen


def test_predict_converts_only_its_context(
    models: dict[str, Path], long_video: Path, tmp_path: Path, converted: list
) -> None:
    res = api.predict(models["convlstm"], long_video, steps=3, context_frames=4, out=tmp_path / "p.npy")
    assert res["context_frames"] == 4 and res["predicted_frames"] == 3
    assert 4 <= len(converted) <= 40  # of 240 frames
    out = np.load(tmp_path / "p.npy")
    np.testing.assert_array_equal(out[:4], read_video(long_video, size=16, grayscale=True).frames[-4:])


def test_classify_converts_only_its_windows(
    models: dict[str, Path], long_video: Path, converted: list
) -> None:
    res = api.classify(models["cnn_rnn"], long_video, clips=2)  # 2 windows of 20 frames (the tiny default)
    assert res["num_clips"] == 2 and len(res["predictions"]) == 3
    assert len(converted) == 40


def limit_interpolation(monkeypatch: pytest.MonkeyPatch, frames: int) -> None:
    """Set interpolate's memory limit to `frames` 16x16 gray frames at 2x: float input, two output frames
    and one RGB frame being encoded, 16 * 16 * (4 + 2 + 3) bytes each."""
    monkeypatch.setattr(inference, "MAX_INTERPOLATE_BYTES", frames * 16 * 16 * 9)


@pytest.fixture
def interpolate(models: dict[str, Path], long_video: Path, tmp_path: Path):
    """`api.interpolate` on the long video at 2x into tmp_path/o.mp4, with any further keywords."""
    return lambda **kw: api.interpolate(models["vid_ode"], long_video, factor=2, out=tmp_path / "o.mp4", **kw)


def test_interpolate_refuses_a_long_video_from_its_header(
    interpolate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converted: list
) -> None:
    limit_interpolation(monkeypatch, 100)  # of 240 frames
    with pytest.raises(VidynError, match="at most 100 frames") as err:
        interpolate()
    assert "\n" not in str(err.value) and "--start" in str(err.value) and "--duration" in str(err.value)
    assert converted == [] and not (tmp_path / "o.mp4").exists()
    res = interpolate(start=2, duration=1)
    assert res["input_frames"] == 31 and res["output_frames"] == 61 and len(converted) == 31
    times = read_video(tmp_path / "o.mp4").times  # counted from --start
    np.testing.assert_allclose(times[[0, 1, -1]], [0, 1 / 60, 1], atol=2e-4)


def test_interpolate_stops_decoding_at_the_limit_when_the_header_says_nothing(
    interpolate, monkeypatch: pytest.MonkeyPatch, converted: list
) -> None:
    limit_interpolation(monkeypatch, 50)
    monkeypatch.setattr(inference, "_header_frames", lambda *a: 0.0)
    with pytest.raises(VidynError, match="too long to interpolate"):
        interpolate()
    assert len(converted) == 51 < N  # one past the limit, then stopped


def test_cli_interpolate_too_long_is_one_line_and_exit_2(
    models: dict[str, Path], long_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    limit_interpolation(monkeypatch, 100)
    args = ["interpolate", str(models["vid_ode"]), "--input", str(long_video), "--factor", "2"]
    assert main([*args, "--out", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("vidyn: error: ") and "--duration" in err[-1] and "Traceback" not in "".join(err)
    )
    assert main([*args, "--out", str(tmp_path / "o.mp4"), "--start", "1", "--duration", "0.5"]) == 0
    assert main([*args, "--out", str(tmp_path / "o.mp4"), "--duration", "0"]) == 2
    assert "--duration > 0" in capsys.readouterr().err
