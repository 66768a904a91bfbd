"""The web UI without a browser: handlers call the API and return what the components show; user errors
become a message in the page naming the user's file; the app offers each model where it fits."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidyn import api
from vidyn.data.video_io import read_video, write_video
from vidyn.errors import VidynError
from vidyn.ui import app as ui
from vidyn.ui import handlers
from vidyn.ui.limits import Limits, check_clip, scrub


def _train(cfg: dict, where: Path) -> Path:
    cfg["trainer"]["max_steps"] = 2
    api.train(cfg, run_dir=where, evaluate_after=False)
    return where


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Under one folder: a 16x16 gray convlstm, a 24x24 colour one reached by a symlink, a classifier with
    attention and a continuous-time Vid-ODE."""
    from tiny_configs import tiny_prediction_config

    root, elsewhere = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("elsewhere")
    _train(tiny_prediction_config(), root / "convlstm")
    colour = tiny_prediction_config(in_channels=3, image_size=24)
    colour["data"]["args"].update(size=24, channels=3)
    (root / "linked").symlink_to(_train(colour, elsewhere / "colour"), target_is_directory=True)
    rec = tiny_prediction_config("cnn_rnn_tiny", num_classes=7)
    rec["model"]["args"].pop("image_size")
    rec["task"] = {"name": "recognition", "args": {}}
    _train(rec, root / "classifier")
    ode = tiny_prediction_config("vid_ode_tiny")
    ode["task"]["args"]["loss"] = "model"
    _train(ode, root / "vid_ode")
    gan = tiny_prediction_config("ode_gan_tiny", num_classes=7)
    gan["task"] = {"name": "gan", "args": {"num_frames": 4, "d_base_channels": 8}}
    gan["optim"] = {"optimizer": "adam", "lr": 1e-3, "betas": [0.5, 0.999], "schedule": "constant"}
    gan["trainer"]["monitor"] = "step"
    _train(gan, root / "generator")
    return root


@pytest.fixture
def clip(tmp_path: Path) -> str:
    frames = (np.random.default_rng(0).random((20, 32, 40, 3)) * 255).astype(np.uint8)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=10)
    return str(path)


def _paths(root: Path, family: str) -> list[str]:
    return [m["path"] for m in api.find_models(root) if m["family"] == family]


def test_predict_runs_models_of_different_sizes_side_by_side(exported: Path, clip: str) -> None:
    paths = _paths(exported, "predictor")
    gif, rows, summary = handlers.run_predict(clip, paths, 3, True, 2)
    grid = read_video(gif).frames  # (T, H, W, 3)
    cell = handlers.DISPLAY_CELL + 4
    assert grid.shape[0] == 4 + 3  # the longest context, then the predicted frames
    assert grid.shape[2] == 5 * cell  # context | truth | three predictors (the symlinked one included)
    by_name = {r[0]: r for r in rows}
    assert by_name["convlstm_tiny (linked)"][1] == "24x24 colour"
    assert by_name["convlstm_tiny (convlstm)"][1] == "16x16 gray"
    for row in rows:
        assert row[3] > 0 and row[4] > 0 and row[5] > 0  # median ms, frames/s, parameters
    assert "Total wall time" in summary and "truth" in summary


def test_a_short_clip_has_no_truth_column(exported: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    write_video(short, np.zeros((5, 16, 16, 3), np.uint8), fps=10)
    gif, _, summary = handlers.run_predict(str(short), _paths(exported, "predictor")[:1], 3, True, 1)
    assert read_video(gif).frames.shape[2] == 2 * (handlers.DISPLAY_CELL + 4)  # context | the model
    assert "no truth" in summary


def test_interpolate_shows_the_input_beside_the_output_and_names_the_resolution(
    exported: Path, clip: str
) -> None:
    (model,) = [m["path"] for m in api.find_models(exported) if m["interpolates"]]
    beside, raw, note = handlers.run_interpolate(clip, model, 2)
    both, alone = read_video(beside).frames, read_video(raw).frames
    assert both.shape[0] == alone.shape[0] == 2 * 19 + 1
    assert alone.shape[1:3] == (16, 16) and both.shape[2] == 2 * 192
    assert "16x16 grayscale" in note
    with pytest.raises(
        VidynError, match=r"clip.mp4 has about 20 frames: x8 would make 160, more than the 100"
    ):
        handlers.run_interpolate(clip, model, 8, limits=Limits(max_interpolated_frames=100))


def test_classify_draws_top_k_and_attention(exported: Path, clip: str) -> None:
    (model,) = _paths(exported, "classifier")
    bars, attention, note = handlers.run_classify(clip, model, 3)
    assert Image.open(bars).size[0] > 300 and Image.open(attention).size[0] > 300
    res = api.classify(model, clip, top=3)
    received = res["attention"]["received"]
    assert len(received) == len(res["attention"]["matrix"]) and abs(sum(received) - 1) < 1e-4
    assert res["predictions"][0]["class"] in note


def test_user_errors_name_the_users_file_and_respect_the_caps(tmp_path: Path, clip: str) -> None:
    upload = tmp_path / "gradio" / "0123abcd" / "holiday.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_text("not a video")
    with pytest.raises(VidynError, match=r"^holiday.mp4 is not a video") as err:
        check_clip(str(upload), Limits())
    assert str(tmp_path) not in str(err.value)
    with pytest.raises(VidynError, match="up to 1 s"):
        check_clip(clip, Limits(max_seconds=1))
    with pytest.raises(VidynError, match="up to 20 pixels"):
        check_clip(clip, Limits(max_side=20))
    with pytest.raises(VidynError, match="up to 0.0001 MiB"):
        check_clip(clip, Limits(max_mb=0.0001))
    with pytest.raises(VidynError, match="upload a video or pick a sample"):
        check_clip(None, Limits())
    message = scrub(f"cannot read video '{upload}': bad", (str(upload),))
    assert message == "cannot read video 'holiday.mp4': bad"


def test_guard_shows_user_errors_in_the_page_without_a_traceback(caplog, tmp_path: Path) -> None:
    upload = tmp_path / "up" / "mine.mp4"

    def fails(video: str) -> tuple[str, str]:
        raise VidynError(f"cannot read video {str(video)!r}: broken")

    caplog.set_level(logging.INFO, logger="vidyn.ui")
    out = ui.guard(fails, 2)(str(upload))
    assert out == (None, "⚠️ cannot read video 'mine.mp4': broken")
    assert "mine.mp4" in caplog.text and "Traceback" not in caplog.text and str(upload) not in caplog.text


def test_samples_render_shapes_or_list_a_folder(tmp_path: Path, clip: str) -> None:
    folder = tmp_path / "samples"
    (folder / "outdoor").mkdir(parents=True)
    shutil.copy(clip, folder / "outdoor" / "walk.mp4")
    (folder / "notes.txt").write_text("not offered")
    choices = handlers.sample_choices(folder)
    assert choices[1:] == [("outdoor/walk.mp4", str(folder / "outdoor" / "walk.mp4"))]
    rendered = handlers.pick_sample(handlers.SHAPES, 3, 48, 12)
    assert read_video(rendered).frames.shape == (12, 48, 48, 3) and "seed3" in rendered
    assert handlers.pick_sample(choices[1][1], 0, 0, 0) == choices[1][1]


def test_compare_tab_reads_a_report_folder(tmp_path: Path, clip: str) -> None:
    models = {"convlstm": {"ssim": 0.81234, "params": 12345, "infer_clip_s": 0.0123}}
    (tmp_path / "report.json").write_text(json.dumps({"models": models, "protocol": {"wall_seconds": 42}}))
    Image.new("RGB", (8, 8)).save(tmp_path / "per_step.png")
    shutil.copy(clip, tmp_path / "samples.gif")
    rows, curves, grid, note = handlers.open_compare(str(tmp_path))
    assert rows[0][:3] == ["convlstm", "0.8123", "-"] and "12.35 k" in rows[0]
    assert Path(curves).is_file() and Path(grid).is_file() and "42 s" in note
    with pytest.raises(VidynError, match="holds no report.json"):
        handlers.open_compare(str(tmp_path / "nowhere"))


def test_app_offers_each_model_where_its_capabilities_fit(exported: Path) -> None:
    app = ui.build_app(exported)
    choices = {
        c["props"]["label"]: [path for _, path in c["props"]["choices"]]
        for c in app.config["components"]
        if c.get("props", {}).get("choices") and c["props"].get("label") != "sample"
    }
    predictors = [str(exported / p) for p in ("convlstm", "linked", "vid_ode")]
    assert sorted(choices["predictors (name · size it runs at · folder)"]) == predictors
    assert choices["continuous-time model"] == [str(exported / "vid_ode")]
    assert choices["classifier"] == [str(exported / "classifier")]
    assert choices["generator"] == [str(exported / "generator")]
    texts = " ".join(str(c.get("props", {}).get("value")) for c in app.config["components"])
    assert "No generator found" not in texts and "No classifier found" not in texts
    alone = ui.build_app(exported / "convlstm").config["components"]
    assert "No generator found" in " ".join(str(c.get("props", {}).get("value")) for c in alone)


def test_generate_draws_a_grid_labelled_with_times(exported: Path) -> None:
    grid, note = handlers.run_generate(str(exported / "generator"), "orbit", None, 2, 5)
    image = Image.open(grid)
    assert image.size[0] == 4 * 64 and image.size[1] > 2 * 64  # 4 frames of 16 px shown at 64, a label band
    assert "prompt **orbit**" in note and "seed 5" in note


def test_a_model_folder_that_fails_to_load_gets_a_row_and_the_others_run(
    exported: Path, clip: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(exported / "convlstm", broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    gif, rows, _ = handlers.run_predict(clip, [str(exported / "convlstm"), str(broken)], 3, True, 1)
    by_name = {r[0]: r for r in rows}
    assert by_name["convlstm_tiny"][3] > 0
    assert "safetensors" in by_name["broken (not loaded)"][-1]
    assert read_video(gif).frames.shape[2] == 3 * (handlers.DISPLAY_CELL + 4)  # context | truth | one model
