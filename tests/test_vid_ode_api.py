"""Vid-ODE end to end: continuous-time evaluation, `vidyn evaluate`'s continuous block, `vidyn interpolate`
(variable frame rate), `vidyn predict --times`, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_configs import tiny_prediction_config

from vidyn import api
from vidyn.cli import main
from vidyn.data.video_io import load_frames, read_video, tensor_to_frames, write_video
from vidyn.errors import VidynError
from vidyn.evaluation.continuous import _key_gap, evaluate_continuous
from vidyn.export import build_model, export_model

VFR_TIMES = [0.0, 0.1, 0.3, 0.35]


class LinearScene:
    """Clips whose pixels are linear in time, `a + b t`, rendered at any time; records what it renders."""

    frame_interval = 0.1

    def __init__(self, *, irregular: bool = False, static: bool = False, clips: int = 3, frames: int = 6):
        gen = torch.Generator().manual_seed(0)
        self.a = 0.3 + 0.1 * torch.rand(clips, 1, 16, 16, generator=gen)
        slope = 0.2 * torch.rand(clips, 1, 16, 16, generator=gen) - 0.1
        self.b = torch.zeros_like(self.a) if static else slope
        self.irregular, self.frames, self.rendered = irregular, frames, []

    def __len__(self) -> int:
        return self.a.shape[0]

    def times(self, index: int) -> torch.Tensor:
        t = torch.arange(self.frames, dtype=torch.float32) * self.frame_interval
        return t + 0.04 * (torch.arange(self.frames) % 2) if self.irregular else t

    def render(self, index: int, times: torch.Tensor) -> torch.Tensor:
        self.rendered.append((index, times.clone()))
        return self.a[index] + self.b[index] * times.view(-1, 1, 1, 1)  # (T, 1, 16, 16)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        t = self.times(index)
        return {"frames": self.a[index] + self.b[index] * t.view(-1, 1, 1, 1), "times": t}


def _baselines() -> dict[str, torch.nn.Module]:
    return {"linear": build_model("linear"), "copy_last": build_model("copy_last")}


def test_continuous_truth_is_rendered_at_the_unseen_times() -> None:
    scene = LinearScene()
    out = evaluate_continuous(_baselines(), scene, num_context=3, num_future=2, batch_size=2)
    assert set(out) == {"interpolation", "extrapolation", "irregular", "protocol"}
    # Clip 0 observed at 0, .1, .2: the in-between truth is rendered at 1/4, 1/2, 3/4 of each gap.
    want = torch.tensor([0.025, 0.05, 0.075, 0.125, 0.15, 0.175])
    asked = [t for i, t in scene.rendered if i == 0 and t.numel() == want.numel()]
    torch.testing.assert_close(asked[0], want)
    lin, copy = out["interpolation"]["linear"], out["interpolation"]["copy_last"]
    assert set(lin["per_offset"]) == {"0.25", "0.5", "0.75"}
    assert lin["mse"] < 1e-12 and lin["ssim"] > 0.9999 and lin["psnr"] > 99  # pixels linear in time
    assert copy["mse"] > 1e-5 and copy["psnr"] < lin["psnr"]
    ext = out["extrapolation"]["linear"]
    assert list(ext["per_offset"]) == ["+0.5", "+1", "+1.5", "+2"] and ext["mse"] < 1e-12
    # copy_last's error grows with the offset: its per-offset MSE is (k dt)^2 mean(b^2)
    mse = [out["extrapolation"]["copy_last"]["per_offset"][k]["mse"] for k in ("+0.5", "+1", "+2")]
    b2 = float(scene.b.square().mean())
    assert mse == pytest.approx([(k * 0.1) ** 2 * b2 for k in (0.5, 1, 2)], rel=1e-3)
    irr = out["irregular"]["linear"]
    assert {"between", "beyond"} <= set(irr) and irr["mse"] < 1e-12
    assert out["protocol"]["num_clips"] == 3
    assert out["protocol"]["interpolation_fractions"] == [0.25, 0.5, 0.75]


def test_per_gap_groups_in_between_frames_by_gap_length() -> None:
    assert [_key_gap(g) for g in (0.1, 0.25, 0.7, 1.0, 1.99, 2.0, 5.0)] == [
        "<0.25", "0.25-0.5", "0.5-1", "1-2", "1-2", ">=2", ">=2"
    ]  # fmt: skip
    regular = evaluate_continuous(_baselines(), LinearScene(), num_context=3, num_future=2)
    copy = regular["interpolation"]["copy_last"]
    assert list(copy["per_gap"]) == ["1-2"] and copy["per_gap"]["1-2"]["frames"] == 3 * 2 * 3
    assert copy["per_gap"]["1-2"]["mse"] == pytest.approx(copy["mse"])  # one bucket: the same frames
    assert "per_gap" not in regular["extrapolation"]["copy_last"]
    # Observations 0.14 s and 0.06 s apart (1.4 and 0.6 frame intervals): two buckets of 3 clips x 3 frames.
    scene = LinearScene(irregular=True)
    out = evaluate_continuous(_baselines(), scene, num_context=3, num_future=2, batch_size=2)
    gaps = out["interpolation"]["copy_last"]["per_gap"]
    assert {k: v["frames"] for k, v in gaps.items()} == {"0.5-1": 9, "1-2": 9}
    assert gaps["0.5-1"]["mse"] < gaps["1-2"]["mse"]  # copying is worse across the longer gap
    assert sum(v["frames"] for v in out["irregular"]["linear"]["per_gap"].values()) == 3 * 2 * 3


def test_continuous_static_scene_is_perfect_for_both_baselines() -> None:
    out = evaluate_continuous(_baselines(), LinearScene(static=True), num_context=3, num_future=2)
    for protocol in ("interpolation", "extrapolation", "irregular"):
        for name in ("linear", "copy_last"):
            assert out[protocol][name]["mse"] == 0 and out[protocol][name]["ssim"] == pytest.approx(1.0)


def test_discrete_models_are_scored_only_where_their_grid_allows() -> None:
    models = {**_baselines(), "convlstm": build_model("convlstm_tiny", in_channels=1, image_size=16)}
    out = evaluate_continuous(models, LinearScene(), num_context=3, num_future=3)
    assert out["interpolation"]["convlstm"]["ssim"] is None
    assert "discrete-time" in out["interpolation"]["convlstm"]["reason"]
    assert out["irregular"]["convlstm"]["per_offset"] is None
    assert list(out["extrapolation"]["convlstm"]["per_offset"]) == ["+1", "+2", "+3"]
    assert "grid" in out["extrapolation"]["convlstm"]["note"]
    irregular = evaluate_continuous(models, LinearScene(irregular=True), num_context=3, num_future=3)
    assert irregular["extrapolation"]["convlstm"]["ssim"] is None
    assert "regular grid" in irregular["extrapolation"]["convlstm"]["reason"]


@pytest.fixture(scope="module")
def vid_ode_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_prediction_config("vid_ode_tiny")
    cfg["data"]["args"]["irregular"] = True
    cfg["task"] = {
        "name": "prediction",
        "args": {"num_context": 3, "num_future": 3, "mode": "irregular", "loss": "model"},
    }
    out = tmp_path_factory.mktemp("vid_ode") / "run"
    api.train(cfg, run_dir=out)
    return out


def test_evaluate_json_has_the_continuous_block(vid_ode_run: Path, tmp_path: Path, capsys) -> None:
    saved = json.loads((vid_ode_run / "metrics.json").read_text())  # written by train's evaluation
    names = {"vid_ode_tiny", "copy_last", "linear", "context_median"}
    assert set(saved["continuous"]["interpolation"]) == names
    path = tmp_path / "m.json"
    assert main(["evaluate", str(vid_ode_run), "--json", str(path)]) == 0
    assert "continuous time, interpolation" in capsys.readouterr().out
    res = json.loads(path.read_text())
    assert set(res["models"]) == names  # unchanged
    cont = res["continuous"]
    entry = cont["interpolation"]["vid_ode_tiny"]
    assert {"ssim", "psnr", "mse", "mae", "per_offset", "nfe_per_clip", "nfe_per_frame"} <= set(entry)
    offsets = {"+0.5", "+1", "+1.5", "+2", "+2.5", "+3"}
    assert set(cont["extrapolation"]["vid_ode_tiny"]["per_offset"]) == offsets
    assert cont["protocol"]["num_clips"] == 6 and cont["protocol"]["irregular_dataset"] is True


def test_evaluate_scores_other_models_where_they_can_predict(vid_ode_run: Path, tmp_path: Path) -> None:
    discrete = tmp_path / "convlstm"
    export_model(build_model("convlstm_tiny", in_channels=1, image_size=16), discrete)
    regular = ["data.args.irregular=false", "task.args.mode=extrapolate"]
    res = api.evaluate(vid_ode_run, others=[discrete, vid_ode_run], overrides=regular, max_clips=4)
    names = ["vid_ode_tiny", "copy_last", "linear", "context_median", "convlstm_tiny", "vid_ode_tiny@run"]
    assert list(res["models"]) == names
    assert res["models"]["convlstm_tiny"]["num_clips"] == 4  # extrapolating regular clips: its grid
    # The same model twice scores the same numbers.
    assert res["models"]["vid_ode_tiny@run"]["ssim"] == res["models"]["vid_ode_tiny"]["ssim"]
    ext = res["continuous"]["extrapolation"]["convlstm_tiny"]
    assert list(ext["per_offset"]) == ["+1", "+2", "+3"]  # integer offsets only
    assert res["continuous"]["interpolation"]["convlstm_tiny"]["ssim"] is None
    # On the run's own irregular splits the discrete model gets a reason, not a crash.
    irregular = api.evaluate(vid_ode_run, others=[discrete], max_clips=4)
    assert "extrapolate splits of regularly sampled clips" in irregular["models"]["convlstm_tiny"]["reason"]
    assert irregular["continuous"]["extrapolation"]["convlstm_tiny"]["ssim"] is None
    with pytest.raises(VidynError, match="not a frame predictor"):
        recognizer = tmp_path / "classifier"
        export_model(build_model("cnn_rnn_tiny", num_classes=3), recognizer)
        api.evaluate(vid_ode_run, others=[recognizer])


def _vfr_video(path: Path, times: list[float] = VFR_TIMES) -> None:
    gen = torch.Generator().manual_seed(1)
    write_video(path, torch.rand(len(times), 3, 24, 24, generator=gen), fps=10, times=times)


@pytest.mark.parametrize("factor", [2, 3])
def test_interpolate_keeps_variable_frame_rate_timestamps(
    vid_ode_run: Path, tmp_path: Path, factor: int
) -> None:
    video = tmp_path / "vfr.mp4"
    _vfr_video(video)
    res = api.interpolate(vid_ode_run, video, factor=factor, out=tmp_path / "out.mp4")
    n = len(VFR_TIMES)
    assert res["input_frames"] == n and res["output_frames"] == factor * (n - 1) + 1
    gaps = zip(VFR_TIMES[:-1], VFR_TIMES[1:], strict=True)
    want = [a + (b - a) * j / factor for a, b in gaps for j in range(factor)]
    got = read_video(tmp_path / "out.mp4").times
    np.testing.assert_allclose(got, [*want, VFR_TIMES[-1]], atol=2e-4)  # e.g. 0, .05, .1, .2, .3, .325, .35
    assert res["fps_out"] == pytest.approx(factor * res["fps_in"])
    assert res["nfe"]["decoder"] > 0


def test_interpolate_keeps_the_original_frames(vid_ode_run: Path, tmp_path: Path) -> None:
    video = tmp_path / "vfr.mp4"
    _vfr_video(video)
    assert main(["interpolate", str(vid_ode_run), "--input", str(video), "--factor", "2", "--out",
                 str(tmp_path / "o.npy")]) == 0  # fmt: skip
    out = np.load(tmp_path / "o.npy")
    frames, _ = load_frames(video, size=16, channels=1)
    assert out.shape == (7, 16, 16, 1)
    np.testing.assert_array_equal(out[0::2], tensor_to_frames(frames))


def test_interpolation_windows_cover_every_gap_once() -> None:
    assert api._interpolation_windows(10, 4) == [(0, [0, 1, 2]), (3, [3, 4, 5]), (6, [6, 7, 8])]
    assert api._interpolation_windows(9, 4) == [(0, [0, 1, 2]), (3, [3, 4, 5]), (5, [6, 7])]
    assert api._interpolation_windows(3, 8) == [(0, [0, 1])]


def test_interpolate_errors(vid_ode_run: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "vfr.mp4"
    _vfr_video(video)
    with pytest.raises(VidynError, match="factor"):
        api.interpolate(vid_ode_run, video, factor=1, out=tmp_path / "o.mp4")
    discrete = tmp_path / "convlstm"
    export_model(build_model("convlstm_tiny", in_channels=1, image_size=16), discrete)
    code = main(["interpolate", str(discrete), "--input", str(video), "--factor", "2", "--out",
                 str(tmp_path / "o.mp4")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vidyn: error:") and "discrete-time" in err and err.count("\n") == 1


def test_predict_with_vid_ode_at_any_times(vid_ode_run: Path, tmp_path: Path) -> None:
    video = tmp_path / "vfr.mp4"
    _vfr_video(video)
    res = api.predict(vid_ode_run, video, times=[0.02, 0.13, 0.4], out=tmp_path / "p.npy")
    assert res["predicted_frames"] == 3 and np.load(tmp_path / "p.npy").shape[0] == res["context_frames"] + 3
    assert main(["predict", str(vid_ode_run), "--input", str(video), "--times", "0.05,0.5", "--out",
                 str(tmp_path / "p.mp4")]) == 0  # fmt: skip
