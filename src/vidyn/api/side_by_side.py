"""Several exported predictors on one clip, side by side: `predict_many`.

The clip is decoded once, and only its tail (the frames the models read, plus the true continuation
when the clip is long enough to show it). Each model then gets those frames at its own size and channel
count, so models trained at different sizes, in colour or grayscale, run together; the grid shows every
column at one display size and its label gives the size the model ran at.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.api._common import default_device
from vidyn.api.inference import context_and_targets, interpolate
from vidyn.api.models import describe_model
from vidyn.data.video_io import (
    frames_to_tensor,
    load_frames,
    probe_video,
    read_video,
    tensor_to_frames,
    write_video,
)
from vidyn.errors import VidynError
from vidyn.export import load_model, read_model_meta
from vidyn.report.labels import label_band
from vidyn.report.media import to_display, write_comparison

_LUMA = (0.299, 0.587, 0.114)  # BT.601, as vidyn.data.video_io converts to grayscale
Progress = Callable[[float, str], None]


def _quiet(fraction: float, what: str) -> None:
    return None


def size_label(io: dict[str, Any]) -> str:
    """`"32x32 gray"`: the frame size and colour a model runs at."""
    size = io.get("image_size")
    side = f"{size}x{size}" if size else "any size"
    return f"{side} {'gray' if io.get('in_channels') == 1 else 'colour'}"


def _at_model_size(frames: Tensor, io: dict[str, Any]) -> Tensor:
    """Decoded square RGB frames `(T, 3, D, D)` -> the model's `(T, C, s, s)` (antialiased, BT.601 luma)."""
    size = io.get("image_size") or frames.shape[-1]
    x = frames
    if size != frames.shape[-1]:
        x = F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if io.get("in_channels") == 1:
        x = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return x.clamp_(0, 1)


def decode_tail(path: str | Path, size: int, frames_needed: int) -> tuple[Tensor, Tensor, float]:
    """The last `frames_needed` frames of a video, square RGB at `size`: (frames, times, seconds spent).

    Starts decoding just before the tail where the header states a duration and frame rate (frames before
    it are demuxed, never converted or resized), and from the start where it does not or was wrong.
    """
    start = time.perf_counter()
    begin = 0.0
    if Path(path).suffix.lower() != ".npy":
        info = probe_video(path)
        if info["duration"] and info["fps"]:
            begin = max(0.0, info["duration"] - (frames_needed + 4) / info["fps"])
    frames, times = _load_from(path, size, begin)
    if frames.shape[0] < frames_needed and begin > 0:  # the header misled us: read it all
        frames, times = load_frames(path, size=size, channels=3)
    return frames[-frames_needed:], times[-frames_needed:], time.perf_counter() - start


def _load_from(path: str | Path, size: int, begin: float) -> tuple[Tensor, Tensor]:
    if begin <= 0:
        return load_frames(path, size=size, channels=3)
    try:
        video = read_video(path, size=size, start_time=begin)
    except VidynError:  # nothing at or after `begin` (a stream clock that does not start at 0)
        return load_frames(path, size=size, channels=3)
    return frames_to_tensor(video.frames), torch.from_numpy(video.times).float()


def timed_forward(
    model: nn.Module, context: Tensor, ctx_t: Tensor, tgt_t: Tensor, repeats: int
) -> tuple[Tensor, list[float]]:
    """One warm-up pass, then `repeats` timed passes: (frames `(1, Tf, C, H, W)` on CPU, seconds per pass)."""
    device = default_device()
    model.to(device).eval()
    args = (context.to(device), ctx_t.to(device), tgt_t.to(device))
    runs = []
    with torch.no_grad():
        pred = model(*args)  # warm-up: allocator, lazy initialisation, caches
        for _ in range(max(1, repeats)):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            pred = model(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            runs.append(time.perf_counter() - start)
    return pred.clamp(0, 1).cpu(), runs


def _load_all(
    model_paths: list[str | Path],
) -> tuple[list[tuple[dict[str, Any], nn.Module]], dict[str, dict]]:
    """The models that load, each with its spec (`key` names it in the results, its folder added where
    names repeat; `label` is its column label), and a row with the error for each folder that does not."""
    loaded, failed = [], {}
    for path in model_paths:
        try:
            meta = read_model_meta(path)
            if meta.get("family") != "predictor":
                family = meta.get("family")
                raise VidynError(f"model {meta['name']!r} ({path}) is a {family}, not a frame predictor")
            model = load_model(path)
            loaded.append((describe_model(path, model), model))
        except VidynError as exc:  # say which folder failed; the others still run
            failed[f"{Path(path).name} (not loaded)"] = {"path": str(path), "label": "-", "params": None,
                                                         "error": str(exc)}  # fmt: skip
    names = [io["name"] for io, _ in loaded]
    for io, _ in loaded:
        folder = Path(io["path"]).name
        repeated = names.count(io["name"]) > 1
        io["key"] = f"{io['name']} ({folder})" if repeated else io["name"]
        io["label"] = f"{io['name']}\n" + (f"{folder}\n" if repeated else "") + size_label(io)
    if len({io["key"] for io, _ in loaded}) < len(loaded):
        raise VidynError("the same model folder was given twice")
    if not loaded:
        raise VidynError("; ".join(r["error"] for r in failed.values()))
    return loaded, failed


def _plan(loaded: list, steps: int | None, context_frames: int | None) -> tuple[int, int]:
    """(context frames shown, frames to predict) for these models."""
    futures = {steps or io["num_future"] for io, _ in loaded}
    if len(futures) > 1:
        raise VidynError(
            f"the models were trained to predict different numbers of frames {sorted(futures)}; pass steps"
        )
    n_ctx = max(context_frames or io["num_context"] for io, _ in loaded)
    return n_ctx, futures.pop()


def _run_one(
    io: dict[str, Any],
    model: nn.Module,
    frames: Tensor,
    times: Tensor,
    steps: int,
    n_ctx: int | None,
    repeats: int,
) -> tuple[Tensor | None, dict[str, Any]]:
    """One model on the decoded context: (prediction or None, its row of the runtime table)."""
    row: dict[str, Any] = {
        "path": io["path"],
        "size": io.get("image_size") or frames.shape[-1],
        "channels": io["in_channels"],
        "label": size_label(io),
        "params": sum(p.numel() for p in model.parameters()),
    }
    try:
        context, ctx_t, tgt_t, _ = context_and_targets(
            io, model, _at_model_size(frames, io), times, steps, None, n_ctx or io["num_context"], io["name"]
        )
        pred, runs = timed_forward(model, context, ctx_t, tgt_t, repeats)
    except (VidynError, RuntimeError, ValueError) as exc:  # this model cannot run here: say so, go on
        return None, {**row, "error": f"{io['key']} could not run on this clip: {str(exc).splitlines()[0]}"}
    median = statistics.median(runs)
    row |= {
        "context_frames": int(context.shape[1]),
        "predicted_frames": int(pred.shape[1]),
        "infer_s": median,
        "infer_runs_s": runs,
        "fps": pred.shape[1] / median if median > 0 else float("inf"),
    }
    return pred, row


def predict_many(
    model_paths: list[str | Path],
    input_path: str | Path,
    *,
    steps: int | None = None,
    out: str | Path,
    context_frames: int | None = None,
    fps: float = 4.0,
    show_truth: bool = True,
    cell: int = 128,
    repeats: int = 3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Continue one clip with several predictors (any sizes and channels) and write a labelled grid.

    The clip is decoded once (its tail only). With `show_truth` and a clip long enough, the context ends
    `steps` frames before the clip does and the grid shows those frames as truth; otherwise the context
    is the clip's last frames. Each model reads its own number of context frames at its own size and
    channels; `infer_s` is the median of `repeats` forward passes after one warm-up pass. Grid columns:
    context | truth | each model, every frame shown at `cell` pixels, labels naming each model's size.

    Returns `{"out", "truth", "decode_s", "wall_s", "models": {name: {"path", "size", "channels", "label",
    "params", "context_frames", "predicted_frames", "infer_s", "infer_runs_s", "fps"} or {..., "error"}}}`.
    A model folder that does not load, or a model that fails on the clip, gets a row with an "error" and
    no column; all failing is an error.
    """
    if not model_paths:
        raise VidynError("give at least one exported predictor")
    start = time.perf_counter()
    say = progress or _quiet
    say(0.0, "loading models")
    loaded, failed = _load_all(model_paths)
    n_ctx, steps = _plan(loaded, steps, context_frames)
    display = max([cell] + [io["image_size"] or 0 for io, _ in loaded])
    say(0.1, "decoding the clip")
    frames, times, decode_s = decode_tail(input_path, display, n_ctx + (steps if show_truth else 0))
    truth = None
    if show_truth and frames.shape[0] >= n_ctx + steps and frames.shape[0] > steps:
        frames, times, truth = frames[:-steps], times[:-steps], frames[-steps:]
    preds, rows = {}, {}
    for i, (io, model) in enumerate(loaded):
        say(0.15 + 0.75 * i / len(loaded), f"running {io['key']} ({i + 1}/{len(loaded)})")
        pred, rows[io["key"]] = _run_one(io, model, frames, times, steps, context_frames, repeats)
        if pred is not None:
            preds[io["key"]] = pred
    if not preds:
        raise VidynError("; ".join(r["error"] for r in rows.values()))
    say(0.92, "drawing the grid")
    labels = {io["key"]: io["label"] for io, _ in loaded}
    context = frames[-n_ctx:].unsqueeze(0)  # (1, Tc, 3, D, D)
    tail = truth.unsqueeze(0) if truth is not None else None
    write_comparison(out, context, tail, {k: p for k, p in preds.items()}, fps=fps, labels=labels, cell=cell)
    return {
        "out": str(out),
        "truth": truth is not None,
        "decode_s": decode_s,
        "wall_s": time.perf_counter() - start,
        "models": rows | failed,
    }


def interpolate_side_by_side(
    model_path: str | Path, input_path: str | Path, *, factor: int, out: str | Path, cell: int = 192
) -> dict[str, Any]:
    """`interpolate`, then a labelled video of the input beside the result, both shown at `cell` pixels.

    The input column holds each original frame for the `factor` output frames that share its interval, so
    both columns play in step at the output rate. The model's own output (at its resolution) is kept as
    `<out stem>_model.mp4`. Returns interpolate's dict with `"out"` (the side-by-side) and `"model_out"`.
    Frames are composed in chunks and kept as uint8, so memory grows by `6 cell^2` bytes per output frame.
    """
    out = Path(out)
    res = interpolate(model_path, input_path, factor=factor, out=out.with_name(f"{out.stem}_model.mp4"))
    shown = read_video(input_path, size=cell).frames  # uint8 (N, cell, cell, 3)
    made, _ = load_frames(res["out"])  # (K (N - 1) + 1, C, s, s): originals at every factor-th frame
    io = describe_model(model_path)
    labels = [
        f"your clip\n{res['fps_in']:.1f} fps, {res['input_frames']} frames",
        f"{io['name']} x{factor}: {res['fps_out']:.1f} fps\nmodel resolution {size_label(io)}",
    ]
    band = label_band(labels, [cell, cell])  # (3, h, 2 cell)
    chunks = []
    for start in range(0, made.shape[0], 64):
        idx = torch.arange(start, min(start + 64, made.shape[0]))
        held = frames_to_tensor(shown[(idx // factor).numpy()])  # (k, 3, cell, cell): input frame j // K
        grid = torch.cat([held, to_display(made[idx], cell)], dim=3)  # side by side: (k, 3, cell, 2 cell)
        grid = torch.cat([band.expand(len(idx), -1, -1, -1), grid], dim=2)  # labels on top
        chunks.append(tensor_to_frames(grid))  # uint8 (k, h + cell, 2 cell, 3)
    write_video(out, np.concatenate(chunks), fps=res["fps_out"])
    return {**res, "out": str(out), "model_out": res["out"]}
