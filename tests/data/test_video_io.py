"""Tests for vidyn.data.video_io on tiny videos made in tmp_path (with write_video and directly with PyAV)."""

from __future__ import annotations

import types
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidyn.data import video_io
from vidyn.data.video_io import (
    frames_to_tensor,
    iter_video,
    load_frames,
    probe_video,
    read_video,
    tensor_to_frames,
    write_video,
)
from vidyn.errors import VideoReadError, VidynError


def smooth_video(t: int = 8, h: int = 32, w: int = 48) -> np.ndarray:
    """uint8 (T, H, W, 3): smooth colour gradients drifting right, easy for lossy codecs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for k in range(t):
        r = 128 + 100 * np.sin(2 * np.pi * (xx + 2 * k) / w)
        g = 128 + 100 * np.cos(2 * np.pi * yy / h)
        b = np.full_like(xx, 60.0 + 10 * k)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def write_lossless(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    """FFV1 in Matroska, written directly with PyAV: decodes back bit-exactly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "bgr0"
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".gif"])
def test_round_trip_codecs(tmp_path: Path, ext: str) -> None:
    frames = smooth_video()
    path = tmp_path / f"clip{ext}"
    write_video(path, frames, fps=10)
    video = read_video(path)
    assert video.frames.shape == frames.shape and video.frames.dtype == np.uint8
    assert mae(video.frames, frames) < 0.05
    np.testing.assert_allclose(video.times, np.arange(8) / 10, atol=1e-3)
    assert video.times.dtype == np.float64 and np.all(np.diff(video.times) > 0)
    assert video.fps == pytest.approx(10, rel=0.02)
    assert video.path == str(path)
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no temporary files left


def test_round_trip_npy_is_exact(tmp_path: Path) -> None:
    frames = smooth_video()
    write_video(tmp_path / "clip.npy", frames)
    stored = np.load(tmp_path / "clip.npy")
    assert stored.dtype == np.uint8 and np.array_equal(stored, frames)
    x, times = load_frames(tmp_path / "clip.npy")
    assert torch.equal(x, frames_to_tensor(frames))
    assert torch.allclose(times, torch.arange(8) / 10.0)


@pytest.mark.parametrize(
    ("ext", "codec", "container_format"),
    [
        (".mpg", "mpeg1video", "mpeg"),
        (".webm", "libvpx", "webm"),
        (".mov", "mjpeg", "mov"),
        (".ts", "mpeg2video", "mpegts"),
    ],
)
def test_reads_other_containers_written_with_pyav(
    tmp_path: Path, ext: str, codec: str, container_format: str
) -> None:
    frames = smooth_video(10)
    path = tmp_path / f"clip{ext}"
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=25)  # MPEG-1/2 allow only standard frame rates
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    video = read_video(path)
    assert video.frames.shape == frames.shape and mae(video.frames, frames) < 0.05
    # MPEG program/transport streams start later than 0 (mux delay); times are kept as stored
    assert video.times[0] >= 0
    np.testing.assert_allclose(np.diff(video.times), 0.04, atol=1e-3)
    assert video.fps == pytest.approx(25)


def test_float_tchw_and_gray_input(tmp_path: Path) -> None:
    frames = smooth_video()
    write_video(tmp_path / "f.mp4", frames_to_tensor(frames), fps=10)
    assert mae(read_video(tmp_path / "f.mp4").frames, frames) < 0.05
    gray = frames[..., :1]
    write_video(tmp_path / "g.avi", gray)
    back = read_video(tmp_path / "g.avi").frames
    assert back.shape == frames.shape  # gray is written as gray RGB
    assert mae(back, np.repeat(gray, 3, axis=-1)) < 0.05
    assert np.abs(back[..., 0].astype(int) - back[..., 2].astype(int)).mean() < 3


def test_odd_size_padded_to_even_for_mp4(tmp_path: Path) -> None:
    frames = smooth_video(4, 15, 21)
    write_video(tmp_path / "odd.mp4", frames)
    back = read_video(tmp_path / "odd.mp4").frames
    assert back.shape == (4, 16, 22, 3)
    assert mae(back[:, :15, :21], frames) < 0.05


@pytest.mark.parametrize(("ext", "atol"), [(".mp4", 1e-4), (".avi", 1e-6), (".gif", 0.006)])
def test_variable_frame_rate_round_trip(tmp_path: Path, ext: str, atol: float) -> None:
    times = [0.0, 0.05, 0.15, 0.4, 0.45, 1.0, 1.35]
    write_video(tmp_path / f"vfr{ext}", smooth_video(len(times)), times=times)
    video = read_video(tmp_path / f"vfr{ext}")
    np.testing.assert_allclose(video.times, times, atol=atol)


def test_vfr_mp4_keeps_offset_and_irregular_times(tmp_path: Path) -> None:
    times = [0.5, 0.5123, 0.61, 0.987654]
    write_video(tmp_path / "off.mp4", smooth_video(4), times=times)
    np.testing.assert_allclose(read_video(tmp_path / "off.mp4").times, times, atol=2e-5)


@pytest.mark.parametrize(
    ("ext", "times", "fps"),
    [
        (".mp4", [0.0, 0.2, 0.1, 0.3], 10.0),  # not increasing
        (".mp4", [0.0, 0.1, 0.2], 10.0),  # wrong length
        (".mp4", [-0.1, 0.0, 0.1, 0.2], 10.0),  # negative
        (".gif", None, 100.0),  # GIF cannot hold 10 ms delays
        (".mp4", None, 0.0),
    ],
)
def test_bad_times_or_fps_raise_before_writing(
    tmp_path: Path, ext: str, times: list | None, fps: float
) -> None:
    with pytest.raises(VidynError):
        write_video(tmp_path / f"x{ext}", smooth_video(4), fps=fps, times=times)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_bad_input_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with pytest.raises(VidynError):
        write_video(target, np.zeros((8, 8, 3), dtype=np.uint8))  # one frame, no T axis
    with pytest.raises(VidynError, match=r"\.mp4.*\.avi.*\.gif.*\.npy"):
        write_video(tmp_path / "out.mov", smooth_video(2))
    with pytest.raises(VidynError):
        write_video(target, np.zeros((2, 8, 8, 3), dtype=np.int32))
    with pytest.raises(VidynError):
        write_video(target, torch.full((2, 3, 8, 8), float("nan")))
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_keeps_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old content")
    calls = {"n": 0}
    real = av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(video_io.av, "VideoFrame", types.SimpleNamespace(from_ndarray=failing))
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(target, smooth_video(6))
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_resize_center_crops_then_resizes(tmp_path: Path) -> None:
    frames = np.zeros((3, 32, 96, 3), dtype=np.uint8)
    frames[:, :, 32:64] = 255  # white centre third, black sides
    write_lossless(tmp_path / "wide.mkv", frames)
    square = read_video(tmp_path / "wide.mkv", size=16).frames
    assert square.shape == (3, 16, 16, 3) and np.all(square == 255)  # the square crop is the white third
    wide = read_video(tmp_path / "wide.mkv", size=(8, 24)).frames  # same aspect: no crop, only resize
    assert wide.shape == (3, 8, 24, 3)
    assert np.all(wide[:, :, 10:14] == 255) and np.all(wide[:, :, :6] == 0) and np.all(wide[:, :, -6:] == 0)


def test_grayscale_is_bt601_luma(tmp_path: Path) -> None:
    frames = np.empty((2, 16, 16, 3), dtype=np.uint8)
    frames[...] = (200, 100, 50)
    write_lossless(tmp_path / "c.mkv", frames)
    gray = read_video(tmp_path / "c.mkv", grayscale=True).frames
    assert gray.shape == (2, 16, 16, 1)
    assert np.all(gray == 124)  # 0.299 * 200 + 0.587 * 100 + 0.114 * 50 = 124.2


def test_streaming_and_npy_paths_resize_identically(tmp_path: Path) -> None:
    frames = smooth_video(5, 40, 60)
    write_lossless(tmp_path / "s.mkv", frames)
    np.save(tmp_path / "s.npy", frames)
    from_video, _ = load_frames(tmp_path / "s.mkv", size=24, channels=1)
    from_npy, _ = load_frames(tmp_path / "s.npy", size=24, channels=1)
    assert from_video.shape == (5, 1, 24, 24)
    # the video path resizes in uint8 and rounds again after luma; the npy path stays float
    assert (from_video - from_npy).abs().max() <= 1.5 / 255


def test_iter_video_max_frames_start_time(tmp_path: Path) -> None:
    frames = smooth_video(10)
    write_lossless(tmp_path / "v.mkv", frames)
    streamed = list(iter_video(tmp_path / "v.mkv", size=16))
    whole = read_video(tmp_path / "v.mkv", size=16)
    assert np.array_equal(np.stack([f for f, _ in streamed]), whole.frames)
    assert [t for _, t in streamed] == pytest.approx(list(whole.times))
    part = read_video(tmp_path / "v.mkv", max_frames=3, start_time=0.4)
    assert np.array_equal(part.frames, frames[4:7])
    np.testing.assert_allclose(part.times, [0.4, 0.5, 0.6])
    with pytest.raises(VideoReadError, match="0 frames"):
        read_video(tmp_path / "v.mkv", start_time=5.0)


def test_probe_video(tmp_path: Path) -> None:
    write_video(tmp_path / "p.mp4", smooth_video(12), fps=24)
    info = probe_video(tmp_path / "p.mp4")
    assert (info["width"], info["height"], info["codec"], info["header_frames"]) == (48, 32, "h264", 12)
    assert info["fps"] == pytest.approx(24)
    assert info["duration"] == pytest.approx(0.5, abs=0.05)


class _FakeFrame:
    def __init__(self, time: float | None) -> None:
        self.time = time


def test_reordered_restores_presentation_order_of_timestamps() -> None:
    # AVI with packed B-frames: frames leave the decoder in display order but carry neighbours' pts
    frames = [_FakeFrame(t) for t in [1, 2, 3, 5, 4, 6, 8, 7, 9]]
    out = list(video_io._reordered(iter(frames), fps=10.0))
    assert [f for f, _ in out] == frames
    assert [t for _, t in out] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    no_pts = [t for _, t in video_io._reordered(iter([_FakeFrame(None)] * 3), fps=4.0)]
    assert no_pts == [0.0, 0.25, 0.5]


@pytest.mark.parametrize(
    "layout",
    ["thw_u8", "thwc_u8", "thwc1_float", "thwc_float", "tchw_float", "tchw1_float"],
)
def test_load_frames_npy_layouts(tmp_path: Path, layout: str) -> None:
    rgb = smooth_video(4, 6, 10)  # W = 10 so the 4-D layouts are unambiguous
    gray = rgb[..., :1]
    arrays = {
        "thw_u8": (gray[..., 0], gray),
        "thwc_u8": (rgb, rgb),
        "thwc1_float": (gray / 255.0, gray),
        "thwc_float": (rgb.astype(np.float32) / 255, rgb),
        "tchw_float": (rgb.transpose(0, 3, 1, 2) / 255.0, rgb),
        "tchw1_float": (gray.transpose(0, 3, 1, 2).astype(np.float32) / 255, gray),
    }
    stored, expected = arrays[layout]
    np.save(tmp_path / "a.npy", stored)
    x, times = load_frames(tmp_path / "a.npy", npy_fps=4.0)
    assert x.dtype == torch.float32 and times.dtype == torch.float32
    assert torch.allclose(x, frames_to_tensor(expected), atol=1e-6)
    assert torch.allclose(times, torch.tensor([0.0, 0.25, 0.5, 0.75]))
    x3, _ = load_frames(tmp_path / "a.npy", channels=3, max_frames=2)
    assert x3.shape == (2, 3, 6, 10)
    if expected.shape[-1] == 1:
        assert torch.equal(x3[:, 0], x3[:, 2])


def test_load_frames_npy_channels_and_size(tmp_path: Path) -> None:
    frames = np.empty((2, 8, 12, 3), dtype=np.uint8)
    frames[...] = (200, 100, 50)
    np.save(tmp_path / "c.npy", frames)
    x, _ = load_frames(tmp_path / "c.npy", channels=1, size=4)
    assert x.shape == (2, 1, 4, 4)
    assert torch.allclose(x, torch.full_like(x, 124.2 / 255), atol=1e-5)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 4, 4, 4, 3), dtype=np.uint8),  # 5-D
        np.zeros((2, 5, 4, 4), dtype=np.float32),  # no channel axis of size 1 or 3
        np.full((2, 4, 4, 3), 255.0),  # float in 0..255
        np.zeros((2, 4, 4, 3), dtype=np.int64),
        np.zeros((0, 4, 4, 3), dtype=np.uint8),
    ],
)
def test_load_frames_npy_rejects(tmp_path: Path, array: np.ndarray) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(VidynError, match="bad.npy"):
        load_frames(tmp_path / "bad.npy")


def test_tensor_frame_conversions() -> None:
    frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 3, 4) and x.dtype == torch.float32
    assert x[1, 2, 0, 3].item() == pytest.approx(frames[1, 0, 3, 2] / 255)
    assert np.array_equal(tensor_to_frames(x), frames)
    t = torch.tensor([-0.5, 0.0, 0.5 / 255 + 1e-4, 0.4, 1.0, 7.0]).view(1, 1, 1, 6)
    assert tensor_to_frames(t).ravel().tolist() == [0, 0, 1, 102, 255, 255]
    with pytest.raises(VidynError):
        frames_to_tensor(x.numpy())


def _reads_or_fails_cleanly(path: Path) -> int:
    """Frames decoded from a damaged file, or 0 if it raised VideoReadError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            video = read_video(path)
    except VideoReadError as e:
        assert path.name in str(e)
        return 0
    assert len(video.frames) == len(video.times) > 0
    return len(video.frames)


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".gif"])
def test_truncated_and_corrupted_files(tmp_path: Path, ext: str) -> None:
    full = tmp_path / f"full{ext}"
    write_video(full, smooth_video(20))
    data = full.read_bytes()
    for name, blob in [("cut30", data[: int(0.3 * len(data))]), ("cut200", data[:200])]:
        (tmp_path / f"{name}{ext}").write_bytes(blob)
        assert _reads_or_fails_cleanly(tmp_path / f"{name}{ext}") < 20
    with pytest.raises(VideoReadError, match="cut200"):
        read_video(tmp_path / f"cut200{ext}")
    (tmp_path / f"cut80{ext}").write_bytes(data[: int(0.8 * len(data))])
    assert 0 < _reads_or_fails_cleanly(tmp_path / f"cut80{ext}") < 20  # players show what is there
    garbled = bytearray(data)
    rng = np.random.default_rng(0)
    garbled[len(data) // 3 :: 7] = rng.integers(
        0, 256, len(garbled[len(data) // 3 :: 7]), dtype=np.uint8
    ).tobytes()
    (tmp_path / f"garbled{ext}").write_bytes(bytes(garbled))
    assert _reads_or_fails_cleanly(tmp_path / f"garbled{ext}") <= 20


def test_unreadable_inputs_raise_video_read_error(tmp_path: Path) -> None:
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    (tmp_path / "notes.txt").write_text("hello, this is not a video\n" * 40)  # FFmpeg's tty demuxer takes it
    (tmp_path / "notes.mp4").write_text("hello, this is not a video\n" * 40)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "folder.avi").mkdir()
    np.save(tmp_path / "array.npy", smooth_video(2))
    cases = {
        "garbage.mp4": "not a video",
        "notes.txt": "no video stream",
        "notes.mp4": "not a video",
        "empty.mp4": "empty",
        "missing.mp4": "not found",
        "folder.avi": "folder",
        "array.npy": "load_frames",
    }
    for name, why in cases.items():
        for fn in (read_video, probe_video, iter_video):
            with pytest.raises(VideoReadError, match=why) as info:
                fn(tmp_path / name)
            assert f"cannot read video '{tmp_path / name}'" in str(info.value)
    with pytest.raises(VideoReadError, match="missing"):
        load_frames(tmp_path / "missing.npy")
