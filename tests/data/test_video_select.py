"""Reading only the frames a command needs (vidyn.data.video_select): the same frames and times as a full
`read_video`, with only those frames converted and no full-size frame kept."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidyn.data import video_io, video_select
from vidyn.data.video_io import read_video, write_video
from vidyn.data.video_select import count_packets, read_frames_at, read_last_frames
from vidyn.evaluation.classification import spread_windows

W, H, N, FPS = 640, 360, 240, 30  # 8 s; libx264 puts a keyframe every 250 frames by default, so one here


def write_long_video(path: Path, frames: int = N, keyint: int = 60) -> Path:
    """A 640x360 H.264 video of a square moving over a gradient, encoded one frame at a time."""
    background = np.broadcast_to(np.arange(W, dtype=np.uint8)[None, :, None] // 3, (H, W, 3)).copy()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS), options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = keyint
        for k in range(frames):
            image = background.copy()
            image[100:180, 4 * k % (W - 80) :][:, :80] = (255, 200, 50)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_long_video(tmp_path_factory.mktemp("long") / "long.mp4")


@pytest.fixture(scope="module")
def full(long_video: Path) -> video_io.Video:
    return read_video(long_video, size=24)


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shape of every decoded frame that was converted and resized (the costly part of decoding)."""
    seen: list[tuple[int, ...]] = []
    process = video_io._process

    def spy(rgb: np.ndarray, hw: tuple[int, int], grayscale: bool) -> np.ndarray:
        seen.append(rgb.shape)
        return process(rgb, hw, grayscale)

    monkeypatch.setattr(video_io, "_process", spy)
    return seen


def test_last_frames_equal_the_full_decode_and_convert_only_those_near_the_end(
    long_video: Path, full: video_io.Video, conversions: list
) -> None:
    last = read_last_frames(long_video, 5, size=24)
    np.testing.assert_array_equal(last.frames, full.frames[-5:])
    np.testing.assert_array_equal(last.times, full.times[-5:])
    assert last.fps == full.fps == FPS
    assert len(conversions) <= 5 + video_select._SEEK_MARGIN + 1  # not the 240 a full decode converts


def test_last_frames_start_over_when_the_seek_lands_too_late(
    long_video: Path, full: video_io.Video, monkeypatch: pytest.MonkeyPatch
) -> None:
    def too_late(container, stream, frames: int) -> float:  # as with a header claiming a longer video
        container.seek(int(7.9 / stream.time_base), stream=stream)
        return 7.95  # only one frame (7.967 s) lies after it

    monkeypatch.setattr(video_select, "_seek_before_end", too_late)
    last = read_last_frames(long_video, 5, size=24)
    np.testing.assert_array_equal(last.frames, full.frames[-5:])
    np.testing.assert_array_equal(last.times, full.times[-5:])


@pytest.mark.parametrize("ext", [".avi", ".gif"])
def test_last_frames_of_containers_not_seeked(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"clip{ext}"
    write_video(path, np.random.default_rng(0).integers(0, 255, (30, 16, 16, 3), dtype=np.uint8), fps=10)
    whole = read_video(path)
    last = read_last_frames(path, 4)
    np.testing.assert_array_equal(last.frames, whole.frames[-4:])
    np.testing.assert_array_equal(last.times, whole.times[-4:])
    assert len(read_last_frames(path, 100).times) == 30  # fewer frames than asked: all of them


def test_frames_at_windows_equal_the_full_decode_and_convert_only_those(
    long_video: Path, full: video_io.Video, conversions: list
) -> None:
    windows = spread_windows(N, 4, 3, 3)  # 3 windows of 4 frames, 3 apart, over the whole video
    kept, times, fps = read_frames_at(long_video, lambda n: spread_windows(n, 4, 3, 3), size=24)
    assert count_packets(long_video) == len(times) == N and fps == FPS
    np.testing.assert_array_equal(times, full.times)
    assert sorted(kept) == sorted(set(windows.ravel().tolist()))
    for i, frame in kept.items():
        np.testing.assert_array_equal(frame, full.frames[i])
    assert len(conversions) == windows.size == 12  # the other 228 frames were decoded, never converted


def test_frames_at_decode_again_what_a_wrong_packet_count_missed(
    long_video: Path, full: video_io.Video, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video_select, "count_packets", lambda path: N - 40)  # as packed B-frames can make
    kept, times, _ = read_frames_at(long_video, lambda n: np.array([0, n // 2, n - 1]), size=24)
    assert sorted(kept) == [0, N // 2, N - 1] and len(times) == N
    for i, frame in kept.items():
        np.testing.assert_array_equal(frame, full.frames[i])


def test_no_full_size_frame_is_kept_while_decoding(long_video: Path) -> None:
    """numpy reports its buffers to tracemalloc: the peak stays within a few full-size frames, although a
    read that kept them would hold 240 (166 MB)."""
    frame_bytes = W * H * 3
    tracemalloc.start()
    try:
        read_frames_at(long_video, lambda n: spread_windows(n, 8, 1, 10), size=24)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * frame_bytes


def test_load_frames_takes_the_same_parts_of_a_npy_array(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 255, (40, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "clip.npy", arr)
    frames, times = video_io.load_frames(tmp_path / "clip.npy", last=3)
    np.testing.assert_array_equal((frames * 255).round().byte().permute(0, 2, 3, 1).numpy(), arr[-3:])
    np.testing.assert_allclose(times.numpy(), [3.7, 3.8, 3.9], rtol=1e-6)  # k / npy_fps, k of the file
    frames, times = video_io.load_frames(tmp_path / "clip.npy", start_time=1.0, end_time=2.0, max_frames=5)
    assert frames.shape[0] == 5 and times[0].item() == pytest.approx(1.0)
    _, times = video_io.load_frames(tmp_path / "clip.npy", start_time=1.05, end_time=2.0)
    np.testing.assert_allclose(times.numpy(), np.arange(11, 21) / 10, rtol=1e-6)
