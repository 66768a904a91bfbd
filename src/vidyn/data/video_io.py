"""Video reading and writing with PyAV: the only place frames live as uint8 `(T, H, W, C)`.

Reading decodes each file sequentially once (header frame counts lie and seeking is unreliable outside
AVI) and keeps every frame's presentation timestamp in seconds, as the container states it (not shifted
to start at 0). Resizing and grayscale conversion happen frame by frame while decoding, so a long video
never holds full-resolution frames. Anything that cannot be decoded into at least one frame raises
`VideoReadError` naming the file and the problem; a truncated file that still yields frames returns them
with a warning, as players do.

Resizing, everywhere in this module: the frame is first center-cropped to the target aspect ratio (so
nothing is stretched), then resized with `torch.nn.functional.interpolate(mode="bilinear",
antialias=True)`, which averages over the source area when downscaling. An int size means a square.
Pixel aspect ratio and rotation metadata are ignored: frames are the stored pixels. Grayscale is ITU-R
BT.601 luma, 0.299 R + 0.587 G + 0.114 B. The helpers for both live in `vidyn.data.video_resize`.

Writing (`write_video`, `tensor_to_frames`) lives in `vidyn.data.video_write` and is re-exported here.
"""

from __future__ import annotations

import ctypes
import heapq
import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from vidyn.data.video_resize import _crop_resize, _process, _size_hw, _to_luma
from vidyn.data.video_write import WRITE_FORMATS, tensor_to_frames, write_video  # noqa: F401 (re-exported)
from vidyn.errors import VideoReadError, VidynError

# FFmpeg happily "decodes" text files as ANSI art (tty demuxer); these are never camera video.
_TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
_DEFAULT_FPS = 10.0
_REORDER_WINDOW = 16  # frames; more than any B-frame reorder depth in practice
# Frames above 8192x8192 are refused before they are converted: a 4 KB GIF can claim 16000x16000 frames
# (768 MB each in RGB; measured: 8 frames took 74 s and 15 GB to read whole), and 8K video is 7680x4320.
MAX_FRAME_PIXELS = 8192 * 8192
# Decoding frames above ~1 megapixel hands freed heap memory back every 16 frames (see `_trim_heap`).
_TRIM_PIXELS, _TRIM_EVERY = 3 * 1024 * 1024, 16
try:  # glibc's malloc_trim; macOS, Windows and musl have none, and nothing to trim then
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):
    _LIBC = None


@dataclass
class Video:
    frames: np.ndarray  # uint8 (T, H, W, C), C = 3 (RGB) or 1
    times: np.ndarray  # float64 (T,) presentation timestamps in seconds, as stored in the container
    fps: float  # the stream's average rate, or derived from `times` when the container has none
    path: str


def _fail(path: str | os.PathLike, problem: str) -> VideoReadError:
    return VideoReadError(f"cannot read video {str(path)!r}: {problem}")


def _open_video(
    path: str | os.PathLike, *, check_size: bool = True
) -> tuple[av.container.InputContainer, av.VideoStream]:
    p = Path(path)
    if not p.exists():
        raise _fail(path, "file not found (check the path)")
    if p.is_dir():
        raise _fail(path, "it is a folder, not a file")
    if p.stat().st_size == 0:
        raise _fail(path, "the file is empty")
    if p.suffix.lower() == ".npy":
        raise _fail(path, "it is a NumPy array; load it with vidyn.data.video_io.load_frames")
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise _fail(path, f"not a video FFmpeg can open, or corrupt ({e.strerror or e})") from e
    except (OSError, ValueError) as e:
        raise _fail(path, f"{type(e).__name__}: {e}") from e
    streams = container.streams.video
    codec = streams[0].codec_context if streams else None  # None: a stream whose codec FFmpeg cannot open
    if codec is None or codec.name in _TEXT_ART_CODECS:
        container.close()
        if streams and codec is None:
            raise _fail(path, "its video stream has no codec FFmpeg can open (file truncated or damaged?)")
        raise _fail(path, "no video stream (is it a video file?)")
    if check_size and codec.width * codec.height > MAX_FRAME_PIXELS:
        container.close()
        raise _too_large(path, codec.width, codec.height)
    return container, streams[0]


def _too_large(path: str | os.PathLike, width: int, height: int) -> VideoReadError:
    return _fail(
        path,
        f"its frames are {width}x{height} pixels, above vidyn's limit of 8192x8192; scale it down first "
        "(e.g. ffmpeg -i IN -vf scale=1920:-2 OUT)",
    )


def _stream_fps(stream: av.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _decode(
    path: str | os.PathLike, hw: tuple[int, int] | None, grayscale: bool, start_time: float = 0.0
) -> tuple[float | None, Iterator[tuple[np.ndarray, float]]]:
    """Open `path` now (so a bad file fails at once); return the stream's fps and a frame generator."""
    container, stream = _open_video(path)
    fps = _stream_fps(stream)
    return fps, _frames(str(path), container, stream, fps, hw, grayscale, start_time)


def _decoded(container: av.container.InputContainer, stream: av.VideoStream, stats: dict) -> Iterator:
    """Decoded `av.VideoFrame`s in output order; skips damaged packets and stops where the file breaks."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.error.FFmpegError, EOFError) as e:  # truncated or garbled container: stop here
            stats["stopped"] = str(e)
            return
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:  # one damaged packet: skip it, as players do
            stats["bad_packets"] += 1
            continue
        yield from decoded


def _reordered(frames: Iterator, fps: float | None) -> Iterator[tuple[av.VideoFrame, float]]:
    """Pair frames with their timestamps, sorted within a window of `_REORDER_WINDOW` frames.

    Decoders emit frames in presentation order, but AVI files with (packed) B-frames carry no real pts,
    and the pts FFmpeg guesses arrive attached to the wrong frames (1, 2, 3, 5, 4, 6, ...). The set of
    times is right; sorting it restores the pairing. Monotone timestamps pass through unchanged.
    """
    heap: list[float] = []
    pending: deque = deque()
    last = None
    for frame in frames:
        if frame.time is not None:
            last = float(frame.time)
        else:  # no pts at all (some raw streams): continue the grid
            last = 0.0 if last is None else last + 1.0 / (fps or _DEFAULT_FPS)
        heapq.heappush(heap, last)
        pending.append(frame)
        if len(pending) > _REORDER_WINDOW:
            yield pending.popleft(), heapq.heappop(heap)
    while pending:
        yield pending.popleft(), heapq.heappop(heap)


def _frames(
    path: str,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    fps: float | None,
    hw: tuple[int, int] | None,
    grayscale: bool,
    start_time: float,
    wanted: Callable[[int, float], bool] | None = None,
) -> Iterator[tuple[np.ndarray | None, float]]:
    """Yield `(frame, time)` in presentation order; raise VideoReadError if no frame decodes.

    `wanted(i, time)` False for the i-th frame yielded (from `start_time` on) gives `(None, time)`: the frame
    is decoded (later frames may need it) but never converted or resized, which is most of the cost.
    """
    stats = {"bad_packets": 0, "stopped": None}
    count = 0
    try:
        for frame, t in _reordered(_decoded(container, stream, stats), fps):
            if t < start_time - 1e-9:
                continue
            if frame.width * frame.height > MAX_FRAME_PIXELS:  # the header may have claimed less
                raise _too_large(path, frame.width, frame.height)
            count += 1
            if wanted is not None and not wanted(count - 1, t):
                yield None, t
                continue
            rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            hw = hw or rgb.shape[:2]  # should the stream change size, keep that of the first frame
            if rgb.size > _TRIM_PIXELS and count % _TRIM_EVERY == 0:
                _trim_heap()
            yield _process(rgb, hw, grayscale), t
    except av.error.FFmpegError as e:
        raise _fail(path, f"decoding failed ({e})") from e
    finally:
        container.close()
    problems = [f"{stats['bad_packets']} undecodable packets"] if stats["bad_packets"] else []
    problems += [f"the data ends in error ({stats['stopped']})"] if stats["stopped"] else []
    if count == 0:
        when = f" at or after start_time={start_time}s" if start_time > 0 else ""
        raise _fail(
            path, f"decoded 0 frames{when} (file truncated or corrupt?) {'; '.join(problems)}".strip()
        )
    if problems:
        warnings.warn(f"{path!r}: kept {count} frames; {'; '.join(problems)}", stacklevel=2)


def _trim_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc; elsewhere nothing to do).

    Each full-size frame passes through a few short-lived buffers of megabytes, and the small resized
    frames kept between them pin the heap, so glibc never returns the freed space: reading all of a
    2-minute 1080p video at 64x64 peaked at 1.8 GB for 15 MB of kept frames (docs/faults.md, Huge inputs).
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def read_video(
    path: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    max_frames: int | None = None,
    start_time: float = 0.0,
    end_time: float | None = None,
) -> Video:
    """Decode a whole video, or the frames from `start_time` up to `end_time` (seconds, in the container's
    clock; decoding stops past it), at most `max_frames` of them.

    `size` is an int (square) or `(height, width)`; frames are center-cropped to that aspect and resized
    while decoding. Returns uint8 `(T, H, W, C)` frames with C = 1 if `grayscale` else 3.
    """
    hw = _size_hw(size)
    if max_frames is not None and max_frames < 1:
        raise VidynError(f"max_frames must be >= 1 or None; got {max_frames}")
    frames: list[np.ndarray] = []
    times: list[float] = []
    container, stream = _open_video(path)
    fps = _stream_fps(stream)
    before_end = None if end_time is None else lambda _, t: t <= end_time + 1e-9  # later: not converted
    decoder = _frames(str(path), container, stream, fps, hw, grayscale, start_time, before_end)
    for frame, t in decoder:
        if frame is None:  # past end_time
            decoder.close()  # type: ignore[attr-defined]  # runs the generator's finally: closes the file
            break
        frames.append(frame)
        times.append(t)
        if max_frames is not None and len(frames) >= max_frames:
            decoder.close()  # type: ignore[attr-defined]
            break
    if not frames:
        raise _fail(path, f"no frame between start_time={start_time}s and end_time={end_time}s")
    return make_video(frames, times, fps, path)


def make_video(
    frames: list[np.ndarray], times: list[float], fps: float | None, path: str | os.PathLike
) -> Video:
    """A `Video` of decoded frames and their times (fps from the times when the container states none)."""
    times_arr = np.asarray(times, dtype=np.float64)
    return Video(frames=np.stack(frames), times=times_arr, fps=video_fps(times_arr, fps), path=str(path))


def video_fps(times: np.ndarray, fps: float | None) -> float:
    """The stream's stated `fps`, else the rate of the frame times `(T,)`, else the default."""
    if fps is not None:
        return float(fps)
    span = times[-1] - times[0] if len(times) else 0.0
    return float((len(times) - 1) / span) if len(times) > 1 and span > 0 else _DEFAULT_FPS


def iter_video(
    path: str | os.PathLike, *, size: int | tuple[int, int] | None = None, grayscale: bool = False
) -> Iterator[tuple[np.ndarray, float]]:
    """Stream `(frame uint8 (H, W, C), time in seconds)` pairs, decoding sequentially (for long videos).

    The file is opened at the call, so a missing or non-video file raises here, not at the first frame.
    """
    return _decode(path, _size_hw(size), grayscale)[1]


def probe_video(path: str | os.PathLike) -> dict:
    """Header facts without decoding: width, height, fps, duration (s), codec, container, header_frames.

    `header_frames` is what the header claims (None if absent) and is often wrong; `read_video` and
    `iter_video` never rely on it. `fps` and `duration` are None when the container does not state them.
    """
    container, stream = _open_video(path, check_size=False)  # facts only: nothing is decoded
    try:
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        return {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": _stream_fps(stream),
            "duration": duration,
            "codec": stream.codec_context.name,
            "container": container.format.name,
            "header_frames": stream.frames or None,
        }
    finally:
        container.close()


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 `(T, H, W, C)` -> float32 `(T, C, H, W)` in [0, 1]."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4:
        got = f"{getattr(frames, 'dtype', type(frames))} {tuple(getattr(frames, 'shape', ()))}"
        raise VidynError(f"frames_to_tensor expects a uint8 (T, H, W, C) array; got {got}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def load_frames(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    channels: int | None = None,
    max_frames: int | None = None,
    npy_fps: float = _DEFAULT_FPS,
    last: int | None = None,
    start_time: float = 0.0,
    end_time: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load user input as float32 frames `(T, C, H, W)` in [0, 1] and times `(T,)` in seconds.

    Accepts any video PyAV decodes (times from the container, not shifted) or a `.npy` array shaped
    `(T, H, W)`, `(T, H, W, C)` (uint8, or float in [0, 1]) or `(T, C, H, W)` float with C in {1, 3};
    a `.npy` carries no times, so they are `k / npy_fps`. When a shape fits both 4-D layouts, uint8 is read
    as `(T, H, W, C)` and float as `(T, C, H, W)`. `size` center-crops to a square and resizes to
    `size x size` (antialiased); `channels=1` converts to BT.601 luma, `channels=3` repeats gray.
    Only some frames are read with `last` (the last ones; `vidyn.data.video_select.read_last_frames`) or
    with `start_time` / `end_time` (seconds) and `max_frames` (the first ones from `start_time` on).
    """
    if channels not in (None, 1, 3):
        raise VidynError(f"channels must be 1, 3 or None; got {channels}")
    for name, value in (("max_frames", max_frames), ("last", last)):
        if value is not None and value < 1:
            raise VidynError(f"{name} must be >= 1 or None; got {value}")
    from vidyn.data.video_select import load_npy, read_last_frames  # they build on this module

    if Path(path).suffix.lower() != ".npy":
        gray = channels == 1
        if last is not None:
            video = read_last_frames(path, last, size=size, grayscale=gray)
        else:
            video = read_video(path, size=size, grayscale=gray, max_frames=max_frames, start_time=start_time,
                               end_time=end_time)  # fmt: skip
        frames = frames_to_tensor(video.frames)
        times = torch.from_numpy(video.times).float()
    else:
        first = max(0, math.ceil(start_time * npy_fps - 1e-6))
        stop = None if end_time is None else math.floor(end_time * npy_fps + 1e-6) + 1
        if max_frames is not None:
            stop = first + max_frames if stop is None else min(stop, first + max_frames)
        rows = slice(-last, None) if last is not None else slice(first, stop)
        frames, first = load_npy(path, rows)
        times = (first + torch.arange(frames.shape[0], dtype=torch.float32)) / npy_fps
        hw = _size_hw(size)
        if hw is not None:
            frames = _crop_resize(frames, hw).clamp_(0.0, 1.0)
        if channels == 1 and frames.shape[1] == 3:
            frames = _to_luma(frames)
    if channels == 3 and frames.shape[1] == 1:
        frames = frames.expand(-1, 3, -1, -1).contiguous()
    return frames, times
