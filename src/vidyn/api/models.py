"""What an exported model takes and can do: its input spec, read from the model and its model.json.

Every verb that feeds a user's video to a model (predict, interpolate, classify, generate) and the UI ask
here, never a model name or a builder's defaults. `train` stores the spec in model.json under `"io"` at
export (`io_spec`); models exported before that get it derived from the loaded model and its run config.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from vidyn.api._common import config_of
from vidyn.config import Config
from vidyn.errors import VidynError
from vidyn.export import load_model, read_model_meta
from vidyn.registry import DATASETS, MODELS
from vidyn.tasks import resolved_task_args

DEFAULT_FRAME_INTERVAL = 0.1  # seconds per frame when the training data states none (shapes' default)


def _defaults(entry_defaults: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry_defaults.items() if v is not inspect.Parameter.empty}


def io_spec(cfg: Config, model: nn.Module, frame_interval: float | None = None) -> dict[str, Any]:
    """`{"io": {...}}` for model.json: frame size, channels, timing and capabilities of `model`.

    in_channels / image_size: what the model is fed (image_size None: any size); frame_interval: seconds
    between training frames (inputs are rescaled to it); num_context / num_future: the training split
    (predictors); num_frames / frame_stride: the training clip (classifiers); continuous_time: predicts
    at any timestamp; interpolates: can fill in frames between observations; size_multiple: the model
    runs on any frame size divisible by it (None: its training size only). `frame_interval` measured on
    the training clips is used where the dataset states none (real videos).
    """
    spec = getattr(model, "vidyn_spec", {})
    margs = {**_defaults(MODELS.get(spec["name"]).defaults()), **spec.get("args", {})} if spec else {}
    data = {**_defaults(DATASETS.get(cfg.data.name).defaults()), **cfg.data.args}
    data |= cfg.data.splits.get("train", {})
    task = resolved_task_args(cfg.task.name, cfg.task.args)
    channels = getattr(model, "in_channels", None) or margs.get("in_channels") or data.get("channels") or 3
    size = getattr(model, "image_size", None) or margs.get("image_size") or data.get("size")
    continuous = bool(getattr(model, "continuous_time", False))
    return {
        "io": {
            "in_channels": int(channels),
            "image_size": None if size is None else int(size),
            "frame_interval": float(data.get("frame_interval") or frame_interval or DEFAULT_FRAME_INTERVAL),
            "num_context": task.get("num_context"),
            "num_future": task.get("num_future"),
            "num_frames": data.get("num_frames"),
            "frame_stride": int(data.get("frame_stride", 1)),
            "continuous_time": continuous,
            "interpolates": continuous and spec.get("family") == "predictor",
            "size_multiple": getattr(model, "frame_size_multiple", None),
        }
    }


def describe_model(path: str | Path, model: nn.Module | None = None) -> dict[str, Any]:
    """An exported model's name, family, path, class names and input spec (`io_spec`'s fields, flat)."""
    meta = read_model_meta(path)
    io = meta.get("io") or {}
    if "size_multiple" not in io:  # exported before model.json carried (all of) it: derive the rest
        derived = io_spec(config_of(meta), model if model is not None else load_model(path))["io"]
        io = {**derived, **io}
    return {
        "name": meta["name"],
        "family": meta.get("family"),
        "path": str(path),
        "class_names": list(meta.get("class_names") or []),
        **io,
    }


def find_models(root: str | Path) -> list[dict[str, Any]]:
    """Exported models (folders with model.json + model.safetensors) under `root`, sorted by path.

    Follows symbolic links to folders. Each entry is `describe_model`'s; folders whose model.json is not
    readable are skipped.
    """
    root = Path(root)
    if not root.exists():
        raise VidynError(f"models folder {str(root)!r} does not exist")
    found = []
    for meta_path in sorted(_model_files(root)):
        if not (meta_path.parent / "model.safetensors").is_file():
            continue
        try:
            found.append(describe_model(meta_path.parent))
        except (json.JSONDecodeError, VidynError):
            continue
    return found


def _model_files(root: Path) -> list[Path]:
    out, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree: do not walk it twice
            dirs.clear()
            continue
        seen.add(real)
        if "model.json" in files:
            out.append(Path(folder) / "model.json")
    return out


def input_note(
    model_path: str | Path, input_path: str | Path, verb: str = "predict", size: int | None = None
) -> str | None:
    """What happens to a user's clip before `model_path` sees it, when that loses something (said up front).

    None when the clip already matches the model, or when the model cannot do `verb` ("predict",
    "interpolate", "classify") or the clip cannot be probed: the verb itself then reports the problem.
    The model runs at its training frame size and channels: a larger or colour clip is centre-cropped to
    a square, resized and, for a grayscale model, converted to luma (BT.601).
    """
    from vidyn.data.video_io import probe_video

    spec = describe_model(model_path)
    family = {"predict": "predictor", "interpolate": "predictor", "classify": "classifier"}.get(verb)
    if spec["family"] != family or (verb == "interpolate" and not spec["interpolates"]):
        return None
    size, gray = run_size(spec, size), spec.get("in_channels") == 1
    if size is None or Path(input_path).suffix.lower() == ".npy":
        return None
    try:
        info = probe_video(input_path)
    except VidynError:
        return None
    w, h = info["width"], info["height"]
    changes = [f"centre-cropped to a square and resized to {size}x{size}"] if (w, h) != (size, size) else []
    changes += ["converted to grayscale"] if gray else []  # decoded video is colour (YUV) before this
    if not changes:
        return None
    return (
        f"note: {spec['name']} works on {size}x{size} {'grayscale' if gray else 'colour'} frames; your "
        f"{w}x{h} clip is {' and '.join(changes)}"
        + (f" (for colour, train on your own videos: vidyn train -c {_OWN_VIDEOS[verb]})" if gray else "")
    )


# The shipped own-videos config of each verb's kind of model (configs/*/own_videos.yaml).
_OWN_VIDEOS = {
    "predict": "predict/own_videos",
    "interpolate": "interpolate/own_videos",
    "classify": "recognize/own_videos",
}


def run_size(spec: dict[str, Any], size: int | None) -> int | None:
    """The frame size to feed a model asked to run at `size` (None: its training size), or a one-line error.

    Fully convolutional models run at any multiple of `size_multiple`; `size` is rounded to the nearest.
    """
    if size is None or size == spec.get("image_size"):
        return spec.get("image_size")
    multiple = spec.get("size_multiple")
    if multiple is None:
        raise VidynError(
            f"{spec['name']} works at its training size {spec.get('image_size')} only; drop --size or use a "
            "fully convolutional model (convlstm, predrnn, vid_ode)"
        )
    if size < 1:
        raise VidynError(f"--size must be a positive number of pixels; got {size}")
    return max(multiple, round(size / multiple) * multiple)
