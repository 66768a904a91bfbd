"""Reading only the frames a command needs from a long video, in one decoding pass.

`read_video` keeps every frame it decodes, and a two-minute 1080p video at 30 fps holds 3600. `vidyn
predict` needs only the last few (`read_last_frames`) and `vidyn classify` a few windows spread over the
whole video (`read_frames_at`). Both give exactly the frames and timestamps `read_video` would at those
positions; only the frames kept are converted and resized, the others are decoded and dropped.

`read_last_frames` seeks close to the end in MP4/MOV and Matroska/WebM, whose indexes and timestamps are
reliable, then decodes forward from the keyframe before that point; a seek that lands too late or fails
falls back to decoding from the start. `read_frames_at` needs the frame count before it decodes: it
counts the video packets (reading the file without decoding it) and, should the decoder produce a
different number of frames than there were packets, decodes a second time for the frames it missed.
`load_npy` reads only the rows asked for from a memory-mapped `.npy` video.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from vidyn.data.video_io import (
    _REORDER_WINDOW,
    Video,
    _fail,
    _frames,
    _open_video,
    _size_hw,
    _stream_fps,
    make_video,
    video_fps,
)
from vidyn.errors import VideoReadError, VidynError

_SEEKABLE = ("mov", "mp4", "matroska", "webm")  # container format names whose seeks are trusted
_SEEK_MARGIN = 2 * _REORDER_WINDOW  # frames decoded before the last ones asked for, beyond the keyframe


def _seek_before_end(
    container: av.container.InputContainer, stream: av.VideoStream, frames: int
) -> float | None:
    """Seek to the keyframe before the last `frames` + margin frames; the time of that point, or None
    where seeking is not trusted or not worth it (nothing moved then)."""
    fps = _stream_fps(stream)
    names = set(container.format.name.split(","))
    if stream.duration is None or stream.time_base is None or not fps or not names & set(_SEEKABLE):
        return None
    first = float(stream.start_time or 0) * stream.time_base
    target = first + float(stream.duration * stream.time_base) - (frames + _SEEK_MARGIN) / fps
    if target <= first:
        return None  # a short video: decode it all
    try:
        container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OSError):
        return None
    return target


def read_last_frames(
    path: str | os.PathLike,
    frames: int,
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
) -> Video:
    """The last `frames` frames of a video (all of them if it has fewer), as `read_video` gives them."""
    if frames < 1:
        raise VidynError(f"frames must be >= 1; got {frames}")
    hw = _size_hw(size)
    container, stream = _open_video(path)
    fps = _stream_fps(stream)
    target = _seek_before_end(container, stream, frames)
    kept: deque = deque(maxlen=frames)
    if target is not None:  # frames before the target are decoded but not converted
        decoder = _frames(str(path), container, stream, fps, hw, grayscale, 0.0, lambda _, t: t >= target)
        try:
            kept.extend(item for item in decoder if item[0] is not None)
        except VideoReadError:
            kept.clear()  # nothing decodes after the seek point: the whole file decides
        if len(kept) == frames:
            return make_video([f for f, _ in kept], [t for _, t in kept], fps, path)
        container, stream = _open_video(path)  # the seek landed too late (a lying duration): start over
    kept.extend(_frames(str(path), container, stream, fps, hw, grayscale, 0.0))
    return make_video([f for f, _ in kept], [t for _, t in kept], fps, path)


def count_packets(path: str | os.PathLike) -> int:
    """Video packets holding data, read without decoding: the frame count of nearly every file."""
    container, stream = _open_video(path)
    count = 0
    try:
        for packet in container.demux(stream):
            count += packet.size > 0
    except (av.error.FFmpegError, EOFError):
        pass  # a damaged tail: decoding stops there too
    finally:
        container.close()
    return count


def _decode_at(
    path: str | os.PathLike, wanted: set[int], hw: tuple[int, int] | None, grayscale: bool
) -> tuple[dict[int, np.ndarray], np.ndarray, float | None]:
    """One pass: the frames at `wanted` indices, every frame's time `(N,)`, and the stream's fps."""
    container, stream = _open_video(path)
    fps = _stream_fps(stream)
    kept, times = {}, []
    decoder = _frames(str(path), container, stream, fps, hw, grayscale, 0.0, lambda i, _: i in wanted)
    for i, (frame, t) in enumerate(decoder):
        times.append(t)
        if frame is not None:
            kept[i] = frame
    return kept, np.asarray(times, dtype=np.float64), fps


def read_frames_at(
    path: str | os.PathLike,
    indices_for: Callable[[int], np.ndarray],
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
) -> tuple[dict[int, np.ndarray], np.ndarray, float]:
    """Decode once, keeping only the frames at `indices_for(number of frames)` (an int array of any shape;
    indices past the last frame are left out). Returns `{index: uint8 (H, W, C) frame}` for those frames,
    every frame's time `(N,)` in seconds, and the frame rate (as `read_video`'s)."""
    hw = _size_hw(size)
    counted = max(1, count_packets(path))
    kept, times, fps = _decode_at(path, set(indices_for(counted).ravel().tolist()), hw, grayscale)
    wanted = {i for i in indices_for(len(times)).ravel().tolist() if i < len(times)}
    if not wanted <= kept.keys():  # packets and frames differ in number: fetch what the first pass missed
        more, _, _ = _decode_at(path, wanted - kept.keys(), hw, grayscale)
        kept.update(more)
    return {i: kept[i] for i in sorted(wanted)}, times, video_fps(times, fps)


def load_npy(path: str | os.PathLike, rows: slice) -> tuple[torch.Tensor, int]:
    """The `rows` of a `.npy` video in any accepted layout -> (float32 `(T, C, H, W)` in [0, 1], index of
    its first row)."""
    if not Path(path).is_file():
        raise _fail(path, "file not found (check the path)")
    try:
        whole = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _fail(path, f"not a readable .npy array ({e})") from e
    layouts = "(T, H, W), (T, H, W, C) or (T, C, H, W) with C = 1 or 3"
    if whole.ndim == 0:
        raise VidynError(f"{str(path)!r}: a single number is not a video; expected {layouts}")
    arr, first = whole[rows], rows.indices(len(whole))[0]  # the memory map reads only those rows
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise VidynError(f"{str(path)!r}: dtype {arr.dtype} unsupported; save uint8 or float in [0, 1]")
    if arr.ndim == 3:
        arr = arr[:, None]  # (T, H, W) -> (T, 1, H, W)
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and (arr.dtype == np.uint8 or arr.shape[1] not in (1, 3)):
        arr = arr.transpose(0, 3, 1, 2)  # (T, H, W, C) -> (T, C, H, W)
    elif arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise VidynError(f"{str(path)!r}: shape {arr.shape} is not a video; expected {layouts}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise _fail(path, f"the array holds no frames (shape {arr.shape})")
    x = torch.from_numpy(np.array(arr, order="C"))  # a copy: the memory map is read-only
    if arr.dtype == np.uint8:
        return x.float().div_(255.0), first
    x = x.float()
    if not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise VidynError(f"{str(path)!r}: float frames must lie in [0, 1] (divide 0..255 values by 255)")
    return x.clamp_(0.0, 1.0), first
