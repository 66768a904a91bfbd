"""`generate`: sample clips from an exported generator (`vidyn generate`).

Timestamps: `frames` at `fps` (default: the training frame rate) or explicit `times` in seconds. A
`prompt` is a class name from the model's label vocabulary (`describe_model(...)["class_names"]`).
`initial_frames` (a video file, a `.npy` array or a folder of images) conditions models that take
frames (`sde_video`): they are resized to the model's frame size and channels, put on the training
frame grid (the last `num_context` frames the model was trained with), and the clip continues them at
`frames` further steps (or at `times` seconds after the last initial frame). Writes one MP4 per sample
(GIF where MP4 cannot be written), `grid.png` (a row per sample, columns labelled with their times) and
`generate.json` recording what was asked and what was written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidyn.api._common import _write_json, default_device
from vidyn.api.models import describe_model
from vidyn.data.video_io import load_frames
from vidyn.data.video_write import write_video
from vidyn.errors import VidynError
from vidyn.evaluation.generation import takes_initial_frames
from vidyn.export import load_model, read_model_meta
from vidyn.models.interface import Condition
from vidyn.report.media import write_labelled_grid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_FRAMES = 16


def _timestamps(
    frames: int | None, fps: float | None, times: list[float] | None, io: dict, task: dict
) -> Tensor:
    """Sample times `(T,)` in seconds from `frames` + `fps`, or explicit `times` (strictly increasing)."""
    if times is not None:
        if frames is not None or fps is not None:
            raise VidynError("give either --times or --frames/--fps, not both")
        t = torch.tensor([float(x) for x in times], dtype=torch.float32)
        if t.numel() < 1 or not bool(torch.isfinite(t).all()) or not bool((t.diff() > 0).all()):
            raise VidynError(f"--times must be finite, strictly increasing seconds; got {list(times)}")
        return t
    n = (
        frames
        if frames is not None
        else int(task.get("num_frames") or io.get("num_frames") or DEFAULT_FRAMES)
    )
    rate = fps if fps is not None else 1.0 / io["frame_interval"]
    if n < 1 or not rate > 0:
        raise VidynError(f"--frames must be >= 1 and --fps > 0; got {n} and {rate}")
    return torch.arange(n, dtype=torch.float32) / rate


def _label(prompt: str | None, name: str, class_names: list[str], num_classes: int) -> int | None:
    if prompt is None:
        return None
    if not num_classes or not class_names:
        raise VidynError(
            f"model {name!r} takes no class prompt (it was trained without classes); drop --prompt"
        )
    if prompt not in class_names:
        raise VidynError(f"unknown prompt {prompt!r}; model {name!r} knows: {', '.join(class_names)}")
    return class_names.index(prompt)


def _read_image_folder(folder: Path, size: int, channels: int) -> Tensor:
    """Images of a folder in name order, centre-cropped and resized -> `(T, C, H, W)` in [0, 1]."""
    from PIL import Image, ImageOps

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise VidynError(f"folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    out = []
    for path in paths:
        with Image.open(path) as img:
            img = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
            img = img.convert("L") if channels == 1 else img  # "L": Rec. 601 luma, as vidyn's video reader
            arr = np.asarray(img, dtype=np.uint8).reshape(size, size, channels)  # (H, W, C)
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0)  # -> (C, H, W)
    return torch.stack(out)


def _initial_frames(path: str | Path, io: dict, num_context: int | None) -> Tensor:
    """The last `num_context` frames of a video / .npy / image folder as `(1, T_c, C, H, W)`."""
    p = Path(path)
    size, channels = io["image_size"], io["in_channels"]
    if p.is_dir():
        frames = _read_image_folder(p, size, channels)
    elif p.is_file():
        frames, _ = load_frames(p, size=size, channels=channels)
    else:
        raise VidynError(f"--initial-frames {str(p)!r} is neither a video file nor a folder of images")
    return frames[-(num_context or frames.shape[0]) :].unsqueeze(0)  # (T, C, H, W) -> (1, T_c, C, H, W)


def _condition(
    model: nn.Module, meta: dict, io: dict, label: int | None, initial: Any, task: dict
) -> Condition:
    labels = None if label is None else torch.tensor([label])
    if initial is None:
        return Condition(labels=labels)
    if not takes_initial_frames(model):
        raise VidynError(
            f"model {meta['name']!r} generates from noise (and a class) only; drop --initial-frames"
        )
    frames = _initial_frames(initial, io, task.get("num_context"))
    times = torch.arange(frames.shape[1], dtype=torch.float32) * io["frame_interval"]  # on the training grid
    return Condition(frames=frames, times=times, labels=labels)


def _write_clip(out: Path, index: int, clip: Tensor, times: Tensor) -> str:
    """`sample_XXX.mp4` (or `.gif` where MP4 cannot be written) with each frame at its own time."""
    t = (times - times[0]).tolist()
    kwargs: dict[str, Any] = {"times": t} if len(t) > 1 else {}
    try:
        path = out / f"sample_{index:03d}.mp4"
        write_video(path, clip, **kwargs)
    except VidynError:
        path = out / f"sample_{index:03d}.gif"
        write_video(path, clip, **kwargs)
    return path.name


def _sample(
    model: torch.nn.Module, num_samples: int, times: torch.Tensor, condition: Condition, seed: int
) -> tuple[torch.Tensor, torch.device, float]:
    """(clips `(N, T, C, H, W)` in [0, 1] on the CPU, the device they were sampled on, seconds)."""
    device = default_device()
    model.to(device)
    if condition.frames is not None:
        condition = Condition(
            frames=condition.frames.to(device), times=condition.times, labels=condition.labels
        )
    start = time.perf_counter()
    with torch.no_grad():
        clips = model.sample(
            num_samples, times.to(device), condition=condition, generator=torch.Generator().manual_seed(seed)
        )
    return clips.float().clamp(0, 1).cpu(), device, time.perf_counter() - start


def generate(
    model_path: str | Path,
    *,
    num_samples: int,
    out: str | Path,
    prompt: str | None = None,
    frames: int | None = None,
    fps: float | None = None,
    times: list[float] | None = None,
    initial_frames: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Sample `num_samples` clips from an exported generator into folder `out` (see the module docstring).

    Returns what `generate.json` holds: the request (model, num_samples, prompt, frames, fps, times,
    initial_frames, seed), the resolved label, the sample times, the files written (`videos`, `grid`),
    the device and the sampling time in seconds.
    """
    meta = read_model_meta(model_path)
    if meta.get("family") != "generator":
        raise VidynError(
            f"model {meta['name']!r} is a {meta.get('family')}, not a generator; pass a generator"
        )
    if not isinstance(num_samples, int) or num_samples < 1:
        raise VidynError(f"--num-samples must be a positive integer; got {num_samples!r}")
    model = load_model(model_path)
    io = describe_model(model_path, model)
    task = dict((meta.get("config") or {}).get("task", {}).get("args") or {})
    label = _label(prompt, meta["name"], io["class_names"], int(getattr(model, "num_classes", 0) or 0))
    condition = _condition(model, meta, io, label, initial_frames, task)
    sample_t = _timestamps(frames, fps, times, io, task)
    if condition.frames is not None:  # continue the initial frames: times count from the last one
        step = 0.0 if times is not None else 1.0 / (fps if fps is not None else 1.0 / io["frame_interval"])
        sample_t = sample_t + float(condition.times[-1]) + step
    clips, device, seconds = _sample(model, num_samples, sample_t, condition, seed)
    clip_t = sample_t
    if condition.frames is not None:  # the videos show the initial frames, then the continuation
        ctx = condition.frames.cpu().expand(num_samples, -1, -1, -1, -1)
        clips, clip_t = torch.cat([ctx, clips], dim=1), torch.cat([condition.times, sample_t])
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    videos = [_write_clip(folder, i, clip, clip_t) for i, clip in enumerate(clips)]
    write_labelled_grid(clips, clip_t, folder / "grid.png")
    record = {
        "model": str(model_path),
        "model_name": meta["name"],
        "request": {"num_samples": num_samples, "prompt": prompt, "frames": frames, "fps": fps,
                    "times": None if times is None else [float(x) for x in times],
                    "initial_frames": None if initial_frames is None else str(initial_frames), "seed": seed},
        "label": label,
        "sample_times": [round(float(x), 6) for x in sample_t],
        "initial_frame_count": 0 if condition.frames is None else int(condition.frames.shape[1]),
        "video_times": [round(float(x), 6) for x in clip_t],
        "videos": videos,
        "grid": "grid.png",
        "size": [int(clips.shape[2]), int(clips.shape[3]), int(clips.shape[4])],
        "device": str(device),
        "sample_s": round(seconds, 4),
    }  # fmt: skip
    _write_json(folder / "generate.json", record)
    return record
