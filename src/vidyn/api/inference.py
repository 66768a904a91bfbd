"""Exported models on a user's own video: `predict`, `interpolate`, `classify` (`predict_many`, several
predictors side by side, lives in `vidyn.api.side_by_side`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidyn.api._common import default_device
from vidyn.api.models import describe_model, run_size
from vidyn.data.store import take_clip
from vidyn.data.video_io import frames_to_tensor, load_frames, probe_video, tensor_to_frames, write_video
from vidyn.data.video_select import read_frames_at
from vidyn.errors import VidynError
from vidyn.evaluation import spread_windows
from vidyn.export import load_model, read_model_meta

# Frames `interpolate` may hold (input, output and the frame being encoded): a longer part is refused
# with the flags that pick a shorter one.
MAX_INTERPOLATE_BYTES = 4 * 2**30

# ------------------------------------------------------------------------------------------- predict


def predict(
    model_path: str | Path,
    input_path: str | Path,
    *,
    steps: int | None = None,
    times: list[float] | None = None,
    out: str | Path,
    context_frames: int | None = None,
    fps: float | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Continue a user's own video (or .npy array) with an exported predictor.

    `size`: run a fully convolutional model (convlstm, predrnn, vid_ode) on frames of this size (rounded to
    what it accepts) instead of its training size.

    The input is resized to the model's frame size and converted to its channel count; the last
    `context_frames` frames (default: the model's training context length) are the context. Targets
    are `steps` frames continuing the context's grid, or explicit `times` (seconds after the last
    context frame; continuous-time models only). Writes context + predicted frames to `out`.
    """
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif", ".npy", ".avi"):
        raise VidynError(f"output {str(out)!r} must end in .mp4, .gif, .avi or .npy")
    meta = read_model_meta(model_path)
    model = load_model(model_path)
    context, ctx_t, tgt_t, dt_in = _predict_inputs(
        model_path, model, meta, input_path, steps, times, context_frames, size
    )
    pred, seconds = _run_predictor(model, context, ctx_t, tgt_t)
    size, channels = context.shape[-1], context.shape[2]
    video = torch.cat([context[0], pred[0]], dim=0)  # (Tc + Tf, C, H, W)
    rate = fps or (1.0 / dt_in if dt_in > 0 else 10.0)
    write_video(out, video, fps=rate)
    return {
        "out": str(out),
        "context_frames": int(context.shape[1]),
        "predicted_frames": int(pred.shape[1]),
        "size": size,
        "channels": channels,
        "fps": rate,
        "infer_s": seconds,
    }


def _predict_inputs(
    model_path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    input_path: str | Path,
    steps: int | None,
    times: list[float] | None,
    context_frames: int | None,
    size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Load a user's clip for a predictor: (context (1,Tc,C,H,W), context times, target times, input dt).

    Times are rescaled so the context sits on the model's training grid (e.g. 0.1 s per frame for
    shapes), whatever the input's frame rate; `times` are seconds after the last context frame.
    """
    if meta.get("family") != "predictor":
        raise VidynError(f"model {meta['name']!r} is a {meta.get('family')}, not a frame predictor")
    io = describe_model(model_path, model)
    n_ctx = context_frames or io["num_context"]
    last = max(2, n_ctx) if n_ctx else None  # only the context is decoded and kept, however long the video
    frames, frame_times = load_frames(
        input_path, size=run_size(io, size), channels=io["in_channels"], last=last
    )
    return context_and_targets(io, model, frames, frame_times, steps, times, context_frames, str(input_path))


def context_and_targets(
    io: dict[str, Any],
    model: nn.Module,
    frames: Tensor,
    frame_times: Tensor,
    steps: int | None,
    times: list[float] | None,
    context_frames: int | None,
    input_name: str,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """A predictor's inputs from decoded frames `(T, C, H, W)` at its size and their times `(T,)` seconds:
    (context (1,Tc,C,H,W), context times, target times, input dt) on the model's training time grid."""
    n_ctx = context_frames or io["num_context"]
    if frames.shape[0] < 2 and not getattr(model, "continuous_time", False):
        raise VidynError(f"{input_name!r} has {frames.shape[0]} frame(s); give at least 2")
    context = frames[-n_ctx:].unsqueeze(0)  # (1, Tc, C, H, W)
    ctx_t = frame_times[-n_ctx:]
    train_dt = io["frame_interval"]
    dt_in = float(ctx_t.diff().median()) if ctx_t.numel() > 1 else train_dt
    scale = train_dt / dt_in if dt_in > 0 else 1.0
    ctx_model_t = (ctx_t - ctx_t[-1]) * scale
    if times is not None:
        if not getattr(model, "continuous_time", False):
            raise VidynError(f"model {io['name']!r} is discrete-time: use --steps instead of --times")
        tgt_model_t = torch.tensor(times, dtype=torch.float32) * scale
    else:
        n = steps or io["num_future"]
        tgt_model_t = torch.arange(1, n + 1, dtype=torch.float32) * train_dt
    if tgt_model_t.numel() == 0:
        raise VidynError("nothing to predict: give --steps N (N >= 1) or --times")
    return context, ctx_model_t, tgt_model_t, dt_in


def _run_predictor(model: nn.Module, context: Tensor, ctx_t: Tensor, tgt_t: Tensor) -> tuple[Tensor, float]:
    """Predict on the default device; returns (frames (1, Tf, C, H, W) on CPU, seconds)."""
    device = default_device()
    model.to(device)
    with torch.no_grad():
        start = time.perf_counter()
        pred = model(context.to(device), ctx_t.to(device), tgt_t.to(device)).clamp(0, 1).cpu()
    return pred, time.perf_counter() - start


# --------------------------------------------------------------------------------------- interpolate


def _interpolation_windows(num_frames: int, length: int) -> list[tuple[int, list[int]]]:
    """(first frame, gaps it fills) of consecutive windows of `length` frames covering every gap once.

    Gap g lies between frames g and g + 1. Windows share their end frames; the last one is moved back to
    end at the last frame and fills only the gaps no earlier window filled.
    """
    length = max(2, min(length, num_frames))
    windows, start, done = [], 0, 0
    while done < num_frames - 1:
        first = min(start, num_frames - length)
        gaps = list(range(done, first + length - 1))
        windows.append((first, gaps))
        done = first + length - 1
        start = done
    return windows


@torch.no_grad()
def _fill_gaps(
    model: nn.Module, frames: Tensor, t64: Tensor, windows: list[tuple[int, list[int]]], length: int,
    factor: int, scale: float, video: np.ndarray,
) -> dict[str, int]:  # fmt: skip
    """Write the `factor - 1` new frames of every gap g into `video[g * factor + 1 : (g + 1) * factor]`
    (uint8 `(K (N - 1) + 1, H, W, C)`, the originals at every K-th row); returns the ODE evaluations spent."""
    device = default_device()
    model.to(device).eval()
    fractions = torch.arange(1, factor, dtype=torch.float64) / factor  # (K - 1,)
    nfe = {"encoder": 0, "decoder": 0}
    for first, gaps in windows:
        ctx_t = t64[first : first + length]
        lo, hi = t64[gaps], t64[[g + 1 for g in gaps]]
        tgt_t = (lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * fractions).flatten()  # gap-major order
        # Model time: window-relative, on the training data's frame interval.
        ctx_m, tgt_m = (((t - ctx_t[0]) * scale).float().to(device) for t in (ctx_t, tgt_t))
        pred = model(frames[first : first + length].unsqueeze(0).to(device), ctx_m, tgt_m)
        new = tensor_to_frames(pred[0]).reshape(
            len(gaps), factor - 1, *video.shape[1:]
        )  # (gaps, K-1, H, W, C)
        for i, g in enumerate(gaps):
            video[g * factor + 1 : (g + 1) * factor] = new[i]
        for key in nfe:
            nfe[key] += int(getattr(model, "last_nfe", {}).get(key, 0))
    return nfe


def _interpolated_times(t64: Tensor, factor: int) -> Tensor:
    """The times of the originals `(N,)` and of the `factor - 1` frames in each gap, in order."""
    fractions = torch.arange(factor, dtype=torch.float64) / factor  # 0 first: the original frame
    gaps = t64[:-1].unsqueeze(1) + (t64[1:] - t64[:-1]).unsqueeze(1) * fractions  # (N - 1, K)
    return torch.cat([gaps.flatten(), t64[-1:]])


def _interpolation_input(
    input_path: str | Path, size: int | None, channels: int, factor: int, start: float, duration: float | None
) -> tuple[Tensor, Tensor]:
    """The part of the video to interpolate, `(N, C, H, W)` at the model's size, and its times `(N,)`; a
    one-line error, from the header or once decoding passes the limit, when its frames in and out exceed
    `MAX_INTERPOLATE_BYTES`."""
    if start < 0 or (duration is not None and duration <= 0):
        raise VidynError(f"--start must be >= 0 and --duration > 0 seconds; got {start} and {duration}")
    # bytes per input frame: float32 input, uint8 output (K frames per gap), as RGB while it is encoded
    per_frame = (size or 0) ** 2 * (4 * channels + factor * channels + 3)
    limit = max(2, MAX_INTERPOLATE_BYTES // per_frame) if per_frame else None
    end = None if duration is None else start + duration
    if limit is not None and _header_frames(input_path, start, end) > 1.1 * limit:  # headers may lie a bit
        raise _too_long(input_path, size, factor, limit)
    frames, times = load_frames(
        input_path, size=size, channels=channels, start_time=start, end_time=end,
        max_frames=None if limit is None else limit + 1,
    )  # fmt: skip
    if limit is not None and frames.shape[0] > limit:
        raise _too_long(input_path, size, factor, limit)
    if frames.shape[0] < 2:
        raise VidynError(
            f"{str(input_path)!r} has {frames.shape[0]} frame(s); interpolation needs at least 2"
        )
    return frames, times


def _header_frames(path: str | Path, start: float, end: float | None) -> float:
    """How many frames the container's header says lie between `start` and `end` (0 when it does not say)."""
    if Path(path).suffix.lower() == ".npy":
        return 0.0
    info = probe_video(path)  # a file that is not a video fails here with its own one-line error
    if not info["duration"] or not info["fps"]:
        return 0.0
    return max(0.0, min(info["duration"], end if end is not None else math.inf) - start) * info["fps"]


def _too_long(path: str | Path, size: int | None, factor: int, limit: int) -> VidynError:
    return VidynError(
        f"{str(path)!r} is too long to interpolate at once: at {size}x{size} and {factor}x, at most {limit} "
        f"frames fit vidyn's {MAX_INTERPOLATE_BYTES / 2**30:g} GiB limit; pick a part with --start and "
        "--duration (seconds), or run at a smaller --size"
    )


def _interpolation_model(model_path: str | Path, factor: int, out: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Check `interpolate`'s factor and output name, then load the continuous-time predictor."""
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        raise VidynError(f"factor must be an integer >= 2 (2 doubles the frame rate); got {factor!r}")
    if out.suffix.lower() not in (".mp4", ".gif", ".npy", ".avi"):
        raise VidynError(f"output {str(out)!r} must end in .mp4, .gif, .avi or .npy")
    meta = read_model_meta(model_path)
    if meta.get("family") != "predictor":
        raise VidynError(f"model {meta['name']!r} is a {meta.get('family')}, not a frame predictor")
    model = load_model(model_path)
    io = describe_model(model_path, model)
    if not io["interpolates"]:
        raise VidynError(
            f"model {meta['name']!r} is discrete-time and cannot predict between frames; interpolate with a "
            "continuous-time predictor (one trained to predict at any timestamp)"
        )
    return model, io


def interpolate(
    model_path: str | Path,
    input_path: str | Path,
    *,
    factor: int,
    out: str | Path,
    context_frames: int | None = None,
    size: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
) -> dict[str, Any]:
    """Raise a video's frame rate `factor`-fold with a continuous-time predictor.

    The video is read with its real presentation timestamps (variable frame rate included) and resized
    to the model's frame size and channels while it is decoded; `start` and `duration` (seconds) pick a
    part of it, whose times then count from `start`. Windows of `context_frames` consecutive frames
    (default: the model's training context) slide over it; each predicts, for every gap between
    consecutive frames t_g < t_{g+1} it covers, the `factor - 1` frames at `t_g + j (t_{g+1} - t_g) /
    factor`, with times rescaled so the video's median frame interval matches the training data's (as
    `predict` does). All frames, the originals (resized) and the new ones, are written with their
    timestamps, so `out` holds `factor * (N - 1) + 1` frames and plays at `factor` times the rate. A part
    whose frames would take more than `MAX_INTERPOLATE_BYTES` in memory is refused before it is decoded
    further. Returns `{"out", "input_frames", "output_frames", "factor", "fps_in", "fps_out", "duration",
    "size", "channels", "windows", "nfe", "infer_s"}`, `nfe` holding the ODE function evaluations
    (encoder, decoder, per new frame) when the model counts them.
    """
    out = Path(out)
    model, io = _interpolation_model(model_path, factor, out)
    size, channels = run_size(io, size), io["in_channels"]
    frames, times = _interpolation_input(input_path, size, channels, factor, start, duration)
    n, t64 = frames.shape[0], times.to(torch.float64)
    scale = io["frame_interval"] / float(t64.diff().median())
    length = max(2, min(context_frames or io["num_context"] or 2, n))
    windows = _interpolation_windows(n, length)
    video = np.empty((factor * (n - 1) + 1, *frames.shape[2:], frames.shape[1]), dtype=np.uint8)
    for i in range(0, n, 256):  # the originals, (N, H, W, C), a chunk at a time (no float copy of all)
        video[::factor][i : i + 256] = tensor_to_frames(frames[i : i + 256])
    begin = time.perf_counter()
    nfe = _fill_gaps(model, frames, t64, windows, length, factor, scale, video)
    seconds = time.perf_counter() - begin
    duration_s = float(t64[-1] - t64[0])
    fps_in = (n - 1) / duration_s
    write_video(out, video, fps=fps_in * factor, times=(_interpolated_times(t64, factor) - start).tolist())
    per_new_frame = (nfe["encoder"] + nfe["decoder"]) / ((n - 1) * (factor - 1))
    return {"out": str(out), "input_frames": n, "output_frames": int(video.shape[0]), "factor": factor,
            "fps_in": fps_in, "fps_out": (video.shape[0] - 1) / duration_s, "duration": duration_s,
            "size": size, "channels": channels, "windows": len(windows),
            "nfe": {**nfe, "per_new_frame": per_new_frame} if any(nfe.values()) else None,
            "infer_s": seconds}  # fmt: skip


# ------------------------------------------------------------------------------------------ classify


def classify(
    model_path: str | Path, video: str | Path, *, top: int = 5, clips: int | None = None
) -> dict[str, Any]:
    """Name the action in a user's own video (any length) with an exported classifier.

    The video is decoded once at the model's training frame size and channel count (centre square crop,
    antialiased resize, BT.601 luma for grayscale models); `clips` windows of the training clip
    (`num_frames` frames `frame_stride` apart in the file's frames) are spread evenly from its start to its
    end (`clips=None`: enough to cover it, at most 10; a video shorter than one window holds its last
    frame), and their softmax probabilities are averaged. Returns `{"video", "predictions": [{"class",
    "probability"}] (the `top` most probable classes, most probable first), "num_clips", "attention"}`;
    `attention` is None unless the model has temporal attention (`forward_with_attention` returning
    weights), else `{"received": [T floats], "matrix": [T][T]}`: the `(T, T)` weights (row i: what frame
    i of the window attends to) averaged over the windows, and each frame's column mean (the attention it
    receives; sums to 1).
    """
    if top < 1:
        raise VidynError(f"top must be >= 1; got {top}")
    meta = read_model_meta(model_path)
    if meta.get("family") != "classifier":
        raise VidynError(
            f"model {meta.get('name')!r} is a {meta.get('family')}, not an action classifier; pass a model "
            "trained with task.name=recognition"
        )
    model = load_model(model_path)
    io = describe_model(model_path, model)
    num_frames, stride = int(io["num_frames"] or 16), int(io["frame_stride"])
    # One decoding pass keeps only the windows' frames: memory does not grow with the video's length.
    kept, times, fps = read_frames_at(
        video,
        lambda n: spread_windows(n, num_frames, stride, clips),
        size=io["image_size"],
        grayscale=io["in_channels"] == 1,
    )
    windows = spread_windows(len(times), num_frames, stride, clips)
    frames = np.stack(list(kept.values()))  # (kept, H, W, C), in frame order
    row = np.full(len(times), -1, dtype=np.int64)
    row[list(kept)] = np.arange(len(kept))  # frame index -> its row in `frames`
    batch = torch.stack(
        [frames_to_tensor(frames[take_clip(row, times, idx, fps)[0]]) for idx in windows]
    )  # (K, T, C, H, W)
    probs, attention = _window_probabilities(model, batch)
    mean = probs.mean(dim=0)  # (K, classes) -> (classes,)
    names = meta.get("class_names") or [str(i) for i in range(mean.numel())]
    values, indices = mean.topk(min(top, mean.numel()))
    return {
        "video": str(video),
        "predictions": [
            {"class": names[i], "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ],
        "num_clips": int(len(windows)),
        "attention": attention,
    }


@torch.no_grad()
def _window_probabilities(model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Any] | None]:
    """Softmax over classes for each window `(K, classes)`, and the temporal attention where the model has
    it (see `classify`)."""
    device = default_device()
    model.to(device).eval()
    with_attention = callable(getattr(model, "forward_with_attention", None))
    probs, weights = [], []
    for i in range(0, len(batch), 8):
        chunk = batch[i : i + 8].to(device)
        logits, w = model.forward_with_attention(chunk) if with_attention else (model(chunk), None)
        probs.append(logits.float().softmax(-1).cpu())
        if w is not None:
            weights.append(w.float().cpu())  # (k, T, T)
    if not weights:
        return torch.cat(probs), None
    matrix = torch.cat(weights).mean(dim=0)  # (K, T, T) -> (T, T)
    received = matrix.mean(dim=0)  # (T, T) -> (T,): column mean, the attention each frame receives
    return torch.cat(probs), {"received": received.tolist(), "matrix": matrix.tolist()}
