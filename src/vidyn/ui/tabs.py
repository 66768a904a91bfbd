"""The tabs of the web UI: components and their wiring (what each button calls lives in handlers)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from vidyn import api
from vidyn.ui import handlers
from vidyn.ui.app import guard, require_gradio
from vidyn.ui.limits import Limits, check_clip


def _clip_input(tab: str, samples: list[tuple[str, str]], status: Any, limits: Limits) -> Any:
    """An upload box with a sample-clip picker beneath it; both fill the same video component."""
    gr = require_gradio()
    video = gr.Video(label="input clip: upload one, or pick a sample below", sources=["upload"],
                     elem_id=f"{tab}-video")  # fmt: skip
    with gr.Accordion("sample clips", open=True):
        with gr.Row():
            choice = gr.Dropdown(samples, value=handlers.SHAPES, label="sample", elem_id=f"{tab}-sample")
            seed = gr.Number(0, precision=0, label="seed", minimum=0)
            size = gr.Slider(32, 256, value=128, step=16, label="size (pixels)")
            frames = gr.Slider(8, 120, value=30, step=1, label="frames (shapes)")
        use = gr.Button("Use this sample", elem_id=f"{tab}-use-sample")

    def pick(choice: str, seed: float, size: float, frames: float) -> tuple[str, str]:
        path = handlers.pick_sample(choice, seed, size, frames)
        return path, f"sample clip: {Path(path).name}"

    def uploaded(path: str | None) -> tuple[None, str]:
        check_clip(path, limits)  # say at once when a file cannot be used
        return None, f"uploaded {Path(path).name}" if path else ""

    use.click(guard(pick, 2), [choice, seed, size, frames], [video, status])
    video.upload(guard(uploaded, 2), video, [gr.State(), status])
    return video


def _missing(what: str, root: str | Path, command: str) -> str:
    return f"⚠️ No {what} found under `{root}`. Train one with `{command}`, then restart the UI."


def predict_tab(models: list[dict[str, Any]], samples: list[tuple[str, str]], limits: Limits) -> None:
    gr = require_gradio()
    predictors = [handlers.model_choice(m) for m in models if m["family"] == "predictor"]
    with gr.Tab("Predict", id="predict"):
        status = gr.Markdown(render=False, elem_id="predict-status")
        with gr.Row():
            with gr.Column():
                video = _clip_input("predict", samples, status, limits)
            with gr.Column():
                chosen = gr.CheckboxGroup(predictors, value=[p[1] for p in predictors],
                                          label="predictors (name · size it runs at · folder)",
                                          elem_id="predict-models")  # fmt: skip
                steps = gr.Slider(1, 60, value=10, step=1, label="frames to predict")
                truth = gr.Checkbox(
                    True, label="hold back the clip's last frames as truth (if it is long enough)"
                )
                repeats = gr.Slider(
                    1, 10, value=3, step=1, label="timed runs per model (median, after a warm-up)"
                )
                with gr.Row():
                    go = gr.Button("Predict", variant="primary", elem_id="predict-run")
                    stop = gr.Button("Cancel", elem_id="predict-cancel")
                status.render()
        grid = gr.Image(label="context | truth | each model (animated GIF; labels give each model's size)",
                        type="filepath", elem_id="predict-grid", height=420)  # fmt: skip
        table = gr.Dataframe(headers=handlers.PREDICT_HEADERS, label="runtime", elem_id="predict-runtime")
        run = functools.partial(handlers.run_predict, limits=limits)
        functools.update_wrapper(run, handlers.run_predict)
        event = go.click(guard(run, 3), [video, chosen, steps, truth, repeats], [grid, table, status])
        stop.click(None, cancels=[event])


def interpolate_tab(models: list[dict], samples: list, limits: Limits, root: str | Path) -> None:
    gr = require_gradio()
    choices = [handlers.model_choice(m) for m in models if m.get("interpolates")]
    with gr.Tab("Interpolate", id="interpolate"):
        if not choices:
            gr.Markdown(
                _missing("continuous-time model", root, "vidyn train -c interpolate/vid_ode_shapes_quick")
            )
        status = gr.Markdown(render=False, elem_id="interpolate-status")
        with gr.Row():
            with gr.Column():
                video = _clip_input("interpolate", samples, status, limits)
            with gr.Column():
                model = gr.Dropdown(choices, value=choices[0][1] if choices else None,
                                    label="continuous-time model")  # fmt: skip
                factor = gr.Slider(2, 8, value=2, step=1, label="frame-rate factor K")
                with gr.Row():
                    go = gr.Button("Interpolate", variant="primary", interactive=bool(choices))
                    stop = gr.Button("Cancel")
                status.render()
        with gr.Row():
            beside = gr.Video(label="your clip | the model's output at K times the frame rate")
            raw = gr.File(label="the model's output at its own resolution")
        run = functools.partial(handlers.run_interpolate, limits=limits)
        event = go.click(guard(run, 3), [video, model, factor], [beside, raw, status])
        stop.click(None, cancels=[event])


def classify_tab(models: list[dict], samples: list, limits: Limits, root: str | Path) -> None:
    gr = require_gradio()
    choices = [handlers.model_choice(m) for m in models if m["family"] == "classifier"]
    with gr.Tab("Classify", id="classify"):
        if not choices:
            gr.Markdown(_missing("classifier", root, "vidyn train -c recognize/cnn_rnn_shapes_quick"))
        status = gr.Markdown(render=False, elem_id="classify-status")
        with gr.Row():
            with gr.Column():
                video = _clip_input("classify", samples, status, limits)
            with gr.Column():
                model = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="classifier")
                top = gr.Slider(1, 10, value=5, step=1, label="top classes")
                go = gr.Button("Classify", variant="primary", interactive=bool(choices))
                status.render()
        with gr.Row():
            bars = gr.Image(label="top classes", type="filepath")
            attention = gr.Image(label="temporal attention over the window's frames", type="filepath")
        run = functools.partial(handlers.run_classify, limits=limits)
        go.click(guard(run, 3), [video, model, top], [bars, attention, status])


def generate_tab(models: list[dict], limits: Limits, root: str | Path) -> None:
    gr = require_gradio()
    generators = [m for m in models if m["family"] == "generator"]
    choices = [handlers.model_choice(m) for m in generators]
    prompts = sorted({c for m in generators for c in m.get("class_names", [])})
    with gr.Tab("Generate", id="generate"):
        if not choices:
            gr.Markdown(_missing("generator", root, "vidyn train -c generate/sde_video_shapes_quick"))
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="generator")
                prompt = gr.Dropdown(
                    ["", *prompts], value="", label="prompt (a class the model knows; empty: none)"
                )
                initial = gr.Video(label="initial frames (optional)", sources=["upload"])
            with gr.Column():
                count = gr.Slider(1, 16, value=4, step=1, label="samples")
                seed = gr.Number(0, precision=0, label="seed", minimum=0)
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", interactive=bool(choices))
                    stop = gr.Button("Cancel")
                status = gr.Markdown(elem_id="generate-status")
        grid = gr.Image(label="samples: one row each, columns labelled with their times", type="filepath")
        run = functools.partial(handlers.run_generate, limits=limits)
        event = go.click(guard(run, 2), [model, prompt, initial, count, seed], [grid, status])
        stop.click(None, cancels=[event])


def compare_tab(root: str | Path) -> None:
    gr = require_gradio()
    found = sorted(
        str(p.parent) for p in Path(root).rglob("report.json") if (p.parent / "samples.gif").is_file()
    )
    with gr.Tab("Compare", id="compare"):
        gr.Markdown(
            "Open a folder written by `vidyn compare --out DIR`: its table, per-step curves and grid."
        )
        with gr.Row():
            label = "report folder (one found under the models folder, or type a path)"
            folder = gr.Dropdown(
                found, value=found[0] if found else None, allow_custom_value=True, label=label
            )
            go = gr.Button("Open", variant="primary")
        status = gr.Markdown(elem_id="compare-status")
        headers = ["model"] + [c.header for c in api.COMPARE_COLUMNS]
        table = gr.Dataframe(headers=headers, label="scores and costs")
        with gr.Row():
            curves = gr.Image(label="quality per prediction step", type="filepath")
            samples = gr.Image(label="context | truth | each model", type="filepath")
        go.click(guard(handlers.open_compare, 4), [folder], [table, curves, samples, status])
