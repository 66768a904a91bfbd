"""Writing videos with PyAV: `write_video` (MP4, AVI, GIF, NPY) and `tensor_to_frames`.

Writing goes to a temporary file in the target folder that is renamed into place, so an interrupted or
failed write never leaves a half-written file. Formats: `.mp4` (H.264 via libx264, else MPEG-4 Part 2;
yuv420p, odd sizes padded to even by repeating the last row/column), `.avi` (MPEG-4 Part 2, like UCF101),
`.gif` (per-frame adaptive 256-colour palette from Pillow, encoded by FFmpeg's gif encoder, loops
forever; delays are stored in 1/100 s and players need at least 20 ms between frames), `.npy` (uint8).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from vidyn.errors import VidynError
from vidyn.fileio import atomic_path

WRITE_FORMATS = (".mp4", ".avi", ".gif", ".npy")
_MPEG4_QUALITY = {"flags": "qscale", "global_quality": "354"}  # quantiser 3 (x FF_QP2LAMBDA = 118)
# format -> (codec, pixel format, codec options, container options)
_CODECS = {
    "mp4": ("libx264", "yuv420p", {"crf": "18"}, {"movflags": "+faststart"}),  # faststart: moov first
    "avi": ("mpeg4", "yuv420p", _MPEG4_QUALITY, {}),
    "gif": ("gif", "pal8", {}, {"loop": "0"}),
}


def tensor_to_frames(t: torch.Tensor) -> np.ndarray:
    """float `(T, C, H, W)` in [0, 1] (clamped) -> uint8 `(T, H, W, C)`."""
    t = torch.as_tensor(t)
    if t.ndim != 4 or not t.is_floating_point():
        raise VidynError(
            f"tensor_to_frames expects a float (T, C, H, W) tensor; got {t.dtype} {tuple(t.shape)}"
        )
    if torch.isnan(t).any():
        raise VidynError("frames contain NaN; check the model output before saving it")
    x = t.detach().cpu().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _as_uint8_video(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 `(T, H, W, C)` or float `(T, C, H, W)` in [0, 1] -> uint8 `(T, H, W, C)`, C in {1, 3}."""
    expected = "frames must be uint8 (T, H, W, C) or float (T, C, H, W) in [0, 1]"
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.asarray(frames))
    if x.ndim != 4:
        raise VidynError(f"{expected}; got {x.ndim} dimensions, shape {tuple(x.shape)}")
    if x.is_floating_point():
        out = tensor_to_frames(x)
    elif x.dtype == torch.uint8:
        out = x.detach().cpu().numpy()
    else:
        raise VidynError(f"{expected}; got dtype {x.dtype}")
    if out.shape[0] < 1 or out.shape[-1] not in (1, 3) or min(out.shape[1:3]) < 1:
        raise VidynError(f"frames need T >= 1 and 1 or 3 channels; got (T, H, W, C) = {out.shape}")
    return out


def _check_times(times: Sequence[float], n: int) -> np.ndarray:
    arr = np.asarray(times, dtype=np.float64)
    if arr.shape != (n,) or not np.isfinite(arr).all() or (arr < 0).any() or (np.diff(arr) <= 0).any():
        raise VidynError(f"times must be {n} finite, non-negative, strictly increasing seconds; got {arr}")
    return arr


def _tick_rate(times: np.ndarray, max_rate: int = 1000) -> int:
    """The smallest N <= max_rate such that every time is a multiple of 1/N (else max_rate)."""
    for n in range(1, max_rate + 1):
        if np.abs(times * n - np.round(times * n)).max() < 1e-6 * n:
            return n
    return max_rate


def _encode(
    tmp: str, fmt: str, video: np.ndarray, pts: np.ndarray, time_base: Fraction, rate: Fraction
) -> None:
    """Encode uint8 `(T, H, W, C)` frames (C = 1: gray, written as gray RGB) with integer `pts` in
    `time_base` units into `tmp`. Frames are padded and expanded one at a time: no copy of the video."""
    codec, pix_fmt, options, container_options = _CODECS[fmt]
    if fmt == "mp4" and "libx264" not in av.codecs_available:
        codec, options = "mpeg4", _MPEG4_QUALITY
    pad = (video.shape[1] % 2, video.shape[2] % 2) if pix_fmt == "yuv420p" else (0, 0)  # 4:2:0: even sizes
    with av.open(tmp, mode="w", format=fmt, options=container_options) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.height, stream.width = video.shape[1] + pad[0], video.shape[2] + pad[1]
        stream.pix_fmt = pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if fmt == "gif":
            from PIL import Image  # Pillow's median cut gives each frame an adaptive palette
        for image, p in zip(video, pts, strict=True):
            image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image  # (H, W, 3)
            if any(pad):
                image = np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
            if fmt == "gif":
                quantized = Image.fromarray(image).quantize(colors=256)
                rgb = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
                argb = np.zeros((256, 4), dtype=np.uint8)  # PyAV takes pal8 palettes as ARGB rows
                argb[:, 0] = 255
                argb[: len(rgb), 1:] = rgb
                frame = av.VideoFrame.from_ndarray((np.asarray(quantized), argb), format="pal8")
            else:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = int(p), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | torch.Tensor,
    fps: float = 10.0,
    *,
    times: Sequence[float] | None = None,
) -> None:
    """Write uint8 `(T, H, W, C)` or float `(T, C, H, W)` [0, 1] frames to .mp4, .avi, .gif or .npy.

    Without `times` frames are spaced 1/fps apart from 0. With `times` (seconds, strictly increasing)
    each frame keeps its own timestamp (variable frame rate): to 1/90000 s in H.264 .mp4, on the coarsest
    exact 1/N s grid (N <= 1000, else rounded to ms) in .avi, rounded to 1/100 s in .gif; .npy stores
    no times.
    Grayscale frames are written as gray RGB (except .npy, which keeps C = 1).
    """
    out = Path(path)
    ext = out.suffix.lower()
    if ext not in WRITE_FORMATS:
        raise VidynError(
            f"cannot write {str(path)!r}: unknown extension; use one of {', '.join(WRITE_FORMATS)}"
        )
    video = _as_uint8_video(frames)
    n = video.shape[0]
    if not (np.isfinite(fps) and fps > 0):
        raise VidynError(f"fps must be a positive number; got {fps}")
    if times is not None:
        t = _check_times(times, n)
        rate = Fraction((n - 1) / (t[-1] - t[0])).limit_denominator(100000) if n > 1 else Fraction(fps)
        # MPEG-4 Part 2 (AVI, and MP4 without libx264) allows time-base denominators up to 65535 only
        h264 = ext == ".mp4" and "libx264" in av.codecs_available
        tick = Fraction(1, 100 if ext == ".gif" else 90000 if h264 else _tick_rate(t))
    else:
        t = np.arange(n) / fps
        rate = Fraction(fps).limit_denominator(100000)
        tick = Fraction(1, 100) if ext == ".gif" else 1 / rate  # GIF delays are in 1/100 s
    pts = np.round(t / float(tick)).astype(np.int64)
    if ext == ".gif" and (np.diff(pts) < 2).any():
        raise VidynError("GIF frames must be at least 20 ms apart (fps <= 50); write .mp4 for faster video")
    if (np.diff(pts) <= 0).any():
        raise VidynError(f"times are closer than the {ext} timestamp resolution of {tick} s; space them out")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:
            if ext == ".npy":
                with open(tmp, "wb") as f:
                    np.save(f, video)
            else:
                _encode(str(tmp), ext[1:], video, pts, tick, rate)
    except av.error.FFmpegError as e:
        raise VidynError(f"could not write video {str(path)!r}: {e}") from e
