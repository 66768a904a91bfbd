"""The vidyn web UI (Gradio): run exported models on your own clips, side by side, with their runtimes.

Every handler is a thin call into `vidyn.api`; the UI adds no logic of its own, so whatever works
here works identically from the CLI and from Python. Start it with `vidyn ui --models DIR`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from vidyn import api
from vidyn.errors import VidynError


def _require_gradio() -> Any:
    # No telemetry: the UI must work offline and send nothing anywhere.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise VidynError("the web UI needs Gradio: pip install 'vidyn[ui]'") from None
    return gr


def _choices(models: list[dict[str, Any]], family: str) -> list[tuple[str, str]]:
    return [(f"{m['name']}  ({m['path']})", m["path"]) for m in models if m["family"] == family]


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="vidyn-ui-"))


# -------------------------------------------------------------------------------- handlers (tested)


def run_predict(video: str | None, model_paths: list[str], steps: int) -> tuple[str, list[list[Any]]]:
    """Continue the clip with every selected predictor; returns (comparison GIF, runtime table rows)."""
    if not video:
        raise VidynError("upload a video (or render a sample clip) first")
    if not model_paths:
        raise VidynError("select at least one predictor")
    res = api.predict_many(model_paths, video, steps=int(steps), out=_workdir() / "comparison.gif")
    rows = [[name, r["predicted_frames"], round(r["infer_s"] * 1000, 1)] for name, r in res["models"].items()]
    return res["out"], rows


def run_classify(video: str | None, model_path: str | None, top: int) -> dict[str, float]:
    if not video:
        raise VidynError("upload a video first")
    if not model_path:
        raise VidynError("select a classifier")
    res = api.classify(model_path, video, top=int(top))
    return {p["class"]: p["probability"] for p in res["predictions"]}


def run_interpolate(video: str | None, model_path: str | None, factor: int) -> str:
    if not video:
        raise VidynError("upload a video first")
    if not model_path:
        raise VidynError("select a continuous-time model")
    out = _workdir() / "interpolated.mp4"
    return api.interpolate(model_path, video, factor=int(factor), out=out)["out"]


def run_render(seed: int, frames: int) -> str:
    out = _workdir() / "shapes.mp4"
    return api.render("shapes", out=out, frames=int(frames), size=128, seed=int(seed), channels=3)["out"]


# ---------------------------------------------------------------------------------------------- app


def _guard(fn: Any) -> Any:
    """Show user errors in the page instead of a stack trace."""
    gr = _require_gradio()

    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except VidynError as exc:
            raise gr.Error(str(exc)) from None

    wrapped.__name__ = fn.__name__
    return wrapped


def build_app(models_root: str | Path = ".") -> Any:
    """The Gradio Blocks app over the exported models found under `models_root`."""
    gr = _require_gradio()
    models = api.find_models(models_root)
    predictors = _choices(models, "predictor")
    with gr.Blocks(title="vidyn") as app:
        gr.Markdown(
            "# vidyn\nRun exported models on your own clips. "
            f"Found {len(models)} model(s) under `{models_root}`."
        )
        with gr.Tab("Predict"):
            with gr.Row():
                video = gr.Video(label="input clip", sources=["upload"])
                with gr.Column():
                    chosen = gr.CheckboxGroup(
                        predictors, value=[p[1] for p in predictors], label="predictors"
                    )
                    steps = gr.Slider(1, 60, value=10, step=1, label="frames to predict")
                    go = gr.Button("Predict", variant="primary")
            grid = gr.Image(label="context | each model (animated)", type="filepath")
            table = gr.Dataframe(headers=["model", "frames", "inference ms"], label="runtime")
            go.click(_guard(run_predict), [video, chosen, steps], [grid, table])
        with gr.Tab("Interpolate"):
            with gr.Row():
                ivideo = gr.Video(label="input clip", sources=["upload"])
                with gr.Column():
                    imodel = gr.Dropdown(
                        [(f"{m['name']}  ({m['path']})", m["path"]) for m in models if m["interpolates"]],
                        label="continuous-time model",
                    )
                    factor = gr.Slider(2, 8, value=2, step=1, label="frame-rate factor")
                    igo = gr.Button("Interpolate", variant="primary")
            iout = gr.Video(label="output")
            igo.click(_guard(run_interpolate), [ivideo, imodel, factor], iout)
        with gr.Tab("Classify"):
            with gr.Row():
                cvideo = gr.Video(label="input clip", sources=["upload"])
                with gr.Column():
                    cmodel = gr.Dropdown(_choices(models, "classifier"), label="classifier")
                    top = gr.Slider(1, 10, value=5, step=1, label="top classes")
                    cgo = gr.Button("Classify", variant="primary")
            label = gr.Label(label="action")
            cgo.click(_guard(run_classify), [cvideo, cmodel, top], label)
        with gr.Tab("Sample clip"):
            seed = gr.Number(0, precision=0, label="seed")
            nframes = gr.Slider(8, 60, value=30, step=1, label="frames")
            rgo = gr.Button("Render a shapes clip")
            rout = gr.Video(label="clip (download it, then use it in the other tabs)")
            rgo.click(_guard(run_render), [seed, nframes], rout)
    return app


def launch(models_root: str | Path = ".", *, host: str = "127.0.0.1", port: int = 7860) -> None:
    build_app(models_root).launch(server_name=host, server_port=port)
