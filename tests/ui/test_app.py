"""The web UI: handlers call the API and return what the components show; the app builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidyn import api
from vidyn.data.video_io import read_video, write_video
from vidyn.errors import VidynError
from vidyn.ui import app as ui


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_configs import tiny_prediction_config

    root = tmp_path_factory.mktemp("models")
    cfg = tiny_prediction_config()
    cfg["trainer"]["max_steps"] = 2
    api.train(cfg, run_dir=root / "convlstm", evaluate_after=False)
    return root


@pytest.fixture
def clip(tmp_path: Path) -> str:
    frames = (np.random.default_rng(0).random((12, 32, 32, 3)) * 255).astype(np.uint8)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=10)
    return str(path)


def test_predict_handler_returns_grid_and_runtime_rows(exported: Path, clip: str) -> None:
    models = api.find_models(exported)
    assert [m["name"] for m in models] == ["convlstm_tiny"]
    gif, rows = ui.run_predict(clip, [models[0]["path"]], 3)
    video = read_video(gif)
    assert video.frames.shape[0] == 4 + 3  # context as trained + predicted
    assert rows[0][0] == "convlstm_tiny" and rows[0][1] == 3 and rows[0][2] > 0


def test_handlers_turn_missing_input_into_user_errors(exported: Path, clip: str) -> None:
    with pytest.raises(VidynError, match="upload a video"):
        ui.run_predict(None, ["x"], 3)
    with pytest.raises(VidynError, match="select at least one"):
        ui.run_predict(clip, [], 3)
    with pytest.raises(VidynError, match="select a classifier"):
        ui.run_classify(clip, None, 5)


def test_render_handler_writes_a_clip() -> None:
    out = ui.run_render(3, 9)
    assert read_video(out).frames.shape[0] == 9


def test_app_offers_each_model_where_its_capabilities_fit(exported: Path) -> None:
    app = ui.build_app(exported)
    choices = {
        c["props"]["label"]: [path for _, path in c["props"]["choices"]]
        for c in app.config["components"]
        if "choices" in c.get("props", {})
    }
    path = str(exported / "convlstm")
    # A discrete-time predictor: offered for prediction (and ticked), never for interpolation.
    assert choices == {"predictors": [path], "continuous-time model": [], "classifier": []}
