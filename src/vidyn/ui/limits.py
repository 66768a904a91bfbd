"""What the web UI accepts, and how it talks about a user's files.

Uploads are checked against configurable caps (file size, duration, resolution) before any model runs,
and every message names the user's own file, never the server's upload folder.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidyn.data.video_io import probe_video
from vidyn.errors import VidynError


@dataclass(frozen=True)
class Limits:
    """Upload caps: size in MiB, duration in seconds, longest side in pixels (`vidyn ui --max-*`)."""

    max_mb: float = 200.0
    max_seconds: float = 600.0
    max_side: int = 3840
    max_interpolated_frames: int = 1200  # what the Interpolate tab composes (K x the clip's frames)


DEFAULT_LIMITS = Limits()


def check_clip(path: str | None, limits: Limits) -> str:
    """`path` when it is a video within the caps, else a VidynError in the user's words."""
    if not path:
        raise VidynError("upload a video or pick a sample clip first")
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise VidynError(f"{name} is gone from the server (uploads expire); upload it again")
    mb = p.stat().st_size / 2**20
    if mb > limits.max_mb:
        raise VidynError(
            f"{name} is {mb:.0f} MiB; this server takes clips up to {limits.max_mb:g} MiB "
            "(vidyn ui --max-upload-mb)"
        )
    if p.suffix.lower() == ".npy":
        return path
    try:
        info = probe_video(p)
    except VidynError:
        raise VidynError(
            f"{name} is not a video vidyn can read (FFmpeg found no video stream in it); "
            "upload an MP4, WebM, AVI, MOV or GIF clip"
        ) from None
    if info["duration"] and info["duration"] > limits.max_seconds:
        raise VidynError(
            f"{name} lasts {info['duration']:.0f} s; this server takes clips up to {limits.max_seconds:g} s "
            "(cut it, or start the UI with a larger --max-seconds)"
        )
    side = max(info["width"] or 0, info["height"] or 0)
    if side > limits.max_side:
        raise VidynError(
            f"{name} is {info['width']}x{info['height']}; this server takes clips up to {limits.max_side} "
            "pixels on the longest side (--max-side)"
        )
    return path


_TEMP = re.escape(str(Path(tempfile.gettempdir())))


def scrub(message: str, args: tuple[Any, ...] = ()) -> str:
    """`message` with every server path of the user's files (`args`) and any temporary path shortened to
    the file's own name."""
    for arg in args:
        if isinstance(arg, str) and len(arg) > 1 and ("/" in arg or "\\" in arg):
            message = message.replace(arg, Path(arg).name)
    return re.sub(_TEMP + r"[/\\][^\s'\"]*[/\\]([^/\\\s'\"]+)", r"\1", message)


def check_interpolation(path: str, factor: int, limits: Limits) -> None:
    """A VidynError when `factor` x the clip's frames exceed what the page composes."""
    if Path(path).suffix.lower() == ".npy":
        return
    info = probe_video(path)
    frames = round((info["duration"] or 0) * (info["fps"] or 0)) or (info["header_frames"] or 0)
    if frames * factor > limits.max_interpolated_frames:
        raise VidynError(
            f"{Path(path).name} has about {frames} frames: x{factor} would make {frames * factor}, more than "
            f"the {limits.max_interpolated_frames} this page shows; cut the clip, lower K, or run "
            "vidyn interpolate on it"
        )
