"""What each button of the web UI does: a thin call into `vidyn.api`, shaped for the page's components.

Handlers raise VidynError for anything the user can fix; `vidyn.ui.app` shows it in the page. They take
plain values (paths, numbers), so they are tested without a browser.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidyn import api
from vidyn.data.folder import VIDEO_EXTENSIONS
from vidyn.errors import VidynError
from vidyn.ui.charts import attention_chart, top_k_chart
from vidyn.ui.limits import DEFAULT_LIMITS, Limits, check_clip, check_interpolation
from vidyn.ui.scratch import RequestFolders

SHAPES = "shapes"  # the sample choice that renders a clip instead of reading a file
PREDICT_HEADERS = ["model", "runs at", "frames in -> out", "inference ms", "frames/s", "parameters", "note"]
Progress = Callable[[float, str], None]
DISPLAY_CELL = 176  # pixels per grid cell: every model's frames are shown at this size, side by side
# Every request's outputs: the newest 32 folders are kept, all removed when the app stops (`close()`).
WORK = RequestFolders(keep=32)


def _workdir() -> Path:
    return WORK.new()


def model_choice(m: dict[str, Any]) -> tuple[str, str]:
    """(checkbox/dropdown label, value) for an exported model: name, the size it runs at, its folder."""
    size = f"{m['image_size']}x{m['image_size']}" if m.get("image_size") else "any size"
    colour = "gray" if m.get("in_channels") == 1 else "colour"
    return f"{m['name']} · {size} {colour} · {m['path']}", m["path"]


# ------------------------------------------------------------------------------------------- samples


def sample_choices(samples_dir: str | Path | None) -> list[tuple[str, str]]:
    """The sample clips on offer: a rendered `shapes` clip, then every video under `samples_dir`."""
    choices = [("shapes: a rendered clip (seed and size below)", SHAPES)]
    if samples_dir and Path(samples_dir).is_dir():
        root = Path(samples_dir)
        videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        choices += [(f"{p.relative_to(root)}", str(p)) for p in videos]
    return choices


def pick_sample(choice: str | None, seed: float, size: float, frames: float) -> str:
    """The clip for a sample choice: renders `shapes` at the seed and size asked for, else the file."""
    if not choice:
        raise VidynError("pick a sample clip from the list")
    if choice != SHAPES:
        if not Path(choice).is_file():
            raise VidynError(f"sample {Path(choice).name} is no longer in the samples folder")
        return choice
    seed, size, frames = int(seed or 0), int(size or 64), int(frames or 30)
    out = _workdir() / f"shapes_seed{seed}_{size}px.mp4"
    return api.render(SHAPES, out=out, frames=frames, size=size, seed=seed, channels=3)["out"]


# ------------------------------------------------------------------------------------------- predict


def _predict_row(name: str, r: dict[str, Any], repeats: int) -> list[Any]:
    if "error" in r:
        return [name, r["label"], "-", None, None, r["params"], r["error"]]
    return [
        name,
        r["label"],
        f"{r['context_frames']} -> {r['predicted_frames']}",
        round(r["infer_s"] * 1000, 2),
        round(r["fps"], 1),
        r["params"],
        f"median of {repeats} after a warm-up",
    ]


def run_predict(
    video: str | None,
    model_paths: list[str] | None,
    steps: float,
    show_truth: bool = True,
    repeats: float = 3,
    *,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> tuple[str, list[list[Any]], str]:
    """Continue the clip with every selected predictor: (labelled grid GIF, runtime rows, summary)."""
    video = check_clip(video, limits)
    if not model_paths:
        raise VidynError("select at least one predictor")
    repeats = int(repeats)
    res = api.predict_many(
        model_paths, video, steps=int(steps), out=_workdir() / "comparison.gif",
        show_truth=bool(show_truth), repeats=repeats, progress=progress, cell=DISPLAY_CELL,
    )  # fmt: skip
    rows = [_predict_row(name, r, repeats) for name, r in res["models"].items()]
    truth = (
        "then the frames that really followed (truth)" if res["truth"] else "no truth: the clip ends there"
    )
    summary = (
        f"**Total wall time {res['wall_s']:.2f} s** for {len(rows)} model(s): decoding the clip's tail once "
        f"{res['decode_s']:.2f} s, then each model loaded, warmed up and timed. Columns: the context, "
        f"{truth}, then each model at its own size, all shown at one display size."
    )
    return res["out"], rows, summary


# --------------------------------------------------------------------------------------- interpolate


def run_interpolate(
    video: str | None, model_path: str | None, factor: float, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, str, str]:
    """K-times the frame rate: (input beside output MP4, the model's own output MP4, note)."""
    video = check_clip(video, limits)
    if not model_path:
        raise VidynError("select a continuous-time model")
    check_interpolation(video, int(factor), limits)
    res = api.interpolate_side_by_side(model_path, video, factor=int(factor), out=_workdir() / "beside.mp4")
    spec = api.describe_model(model_path)
    size, gray = res["size"], res["channels"] == 1
    note = (
        f"**The model works at {size}x{size} {'grayscale' if gray else 'colour'}**: the right column is its "
        f"output at that resolution, enlarged to the display size beside your clip. "
        f"{res['input_frames']} frames at {res['fps_in']:.1f} fps -> {res['output_frames']} frames at "
        f"{res['fps_out']:.1f} fps ({res['windows']} window(s), {res['infer_s']:.2f} s inference). "
        f"{spec['name']} is continuous-time: it predicts at any timestamp."
    )
    return res["out"], res["model_out"], note


# ------------------------------------------------------------------------------------------ classify


def run_classify(
    video: str | None, model_path: str | None, top: float, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, str | None, str]:
    """Top-k chart PNG, attention chart PNG (None for a model without attention), note."""
    video = check_clip(video, limits)
    if not model_path:
        raise VidynError("select a classifier")
    res = api.classify(model_path, video, top=int(top))
    name, work = api.describe_model(model_path)["name"], _workdir()
    best = res["predictions"][0]
    bars = top_k_chart(res["predictions"], work / "top_k.png", f"{name} on {Path(video).name}")
    note = f"**{best['class']}** ({best['probability']:.1%}), averaged over {res['num_clips']} window(s)."
    attention = None
    if res["attention"] is not None:
        title = f"{name}: temporal attention, averaged over the {res['num_clips']} window(s)"
        attention = str(attention_chart(res["attention"], work / "attention.png", title))
    else:
        note += f" {name} has no temporal attention, so there are no attention weights to show."
    return str(bars), attention, note


# ------------------------------------------------------------------------------------ generate, compare


def run_generate(
    model_path: str | None, prompt: str | None, initial: str | None, num_samples: float, seed: float,
    *, limits: Limits = DEFAULT_LIMITS,
) -> tuple[str, str]:  # fmt: skip
    """Sample clips from a generator: (labelled grid PNG, note)."""
    if not model_path:
        raise VidynError("select a generator")
    if initial:
        initial = check_clip(initial, limits)
    work = _workdir()
    res = api.generate(
        model_path, num_samples=int(num_samples), out=work, prompt=prompt or None,
        initial_frames=initial or None, seed=int(seed),
    )  # fmt: skip
    what = f"prompt **{prompt}**" if prompt else "no prompt"
    note = f"{int(num_samples)} sample(s) of {res['model_name']}, {what}, seed {int(seed)}"
    note += f": sampled in {res['sample_s']:.2f} s"
    return str(work / res["grid"]), note


def open_compare(folder: str | None) -> tuple[list[list[Any]], str | None, str | None, str]:
    """A `vidyn compare` report: (table rows, per-step curves PNG, samples GIF, note)."""
    if not folder or not str(folder).strip():
        raise VidynError("give the folder `vidyn compare --out` wrote")
    report = api.read_compare_report(str(folder).strip())
    work = _workdir()  # copies: the page may only serve files from its own folders
    figures = {name: str(shutil.copy(path, work / name)) for name, path in report["figures"].items()}
    protocol = report["protocol"]
    note = f"{len(report['rows'])} model(s)" + (
        f", compared in {protocol['wall_seconds']:.0f} s" if "wall_seconds" in protocol else ""
    )
    return report["rows"], figures.get("per_step.png"), figures.get("samples.gif"), note
