"""The verbs of vidyn. The CLI and the web UI are thin layers over these functions.

train, evaluate, predict, render, demo (more verbs join as their model families land).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from vidyn.config import Config, build_config, save_config
from vidyn.data.datamodule import VideoDataModule, build_dataset
from vidyn.data.video_io import load_frames, write_video
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model, load_model, read_model_meta
from vidyn.metrics import FrameMetrics
from vidyn.report.media import write_comparison
from vidyn.report.plots import plot_per_step
from vidyn.tasks.engine import build_trainer, prepare_runtime
from vidyn.tasks.prediction import PredictionTask, split_clip

DEMO_CONFIG = "predict/demo"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    seconds: float


def _new_run_dir(cfg: Config) -> Path:
    base = Path(cfg.out_dir) / cfg.name
    run_dir, k = base, 1
    while (run_dir / "config.yaml").exists():
        k += 1
        run_dir = base.with_name(f"{base.name}-{k}")
    return run_dir


def _total_steps(cfg: Config, dm: VideoDataModule) -> tuple[int, int]:
    """(optimiser steps the run will take at most, warmup steps)."""
    batches = max(1, len(dm.dataset("train")) // cfg.data.batch_size)
    per_epoch = max(1, batches // cfg.trainer.accumulate_grad_batches)
    total = cfg.trainer.max_steps if cfg.trainer.max_steps else per_epoch * (cfg.trainer.max_epochs or 1)
    if cfg.trainer.max_steps and cfg.trainer.max_epochs:
        total = min(total, per_epoch * cfg.trainer.max_epochs)
    warmup = cfg.optim.warmup_steps or cfg.optim.warmup_epochs * per_epoch
    return total, warmup


def _build_task(cfg: Config, model: nn.Module, total: int, warmup: int) -> PredictionTask:
    if cfg.task.kind != "prediction":
        raise VidynError(f"unknown task kind {cfg.task.kind!r}; choose prediction")
    t = cfg.task
    return PredictionTask(
        model,
        num_context=t.num_context,
        num_future=t.num_future,
        mode=t.mode,
        loss=t.loss,
        optim=vars(cfg.optim),
        total_steps=total,
        warmup_steps=warmup,
        sampling_stop_fraction=t.sampling_stop_fraction,
    )


def train(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    evaluate_after: bool = True,
) -> TrainResult:
    """Train the configured model; export it and (by default) evaluate it beside the baselines.

    The run folder holds config.yaml, checkpoints/, tensorboard/, and after training the exported
    model (model.safetensors + model.json), metrics.json, per_step.png and samples.gif.
    """
    start = time.perf_counter()
    cfg = config if isinstance(config, Config) else build_config(config, overrides)
    if resume is not None:
        resume = Path(resume)
        ckpt = resume / "checkpoints" / "last.ckpt" if resume.is_dir() else resume
        if not ckpt.is_file():
            raise VidynError(
                f"nothing to resume at {str(resume)!r}: expected a run folder with checkpoints/last.ckpt"
            )
        run_dir = ckpt.parent.parent if resume.is_dir() or run_dir is None else run_dir
        resume = ckpt
    out = Path(run_dir) if run_dir is not None else _new_run_dir(cfg)
    prepare_runtime(cfg.trainer)
    model = build_model(cfg.model.name, **cfg.model.args)
    if not getattr(model, "trainable", True):
        raise VidynError(f"model {cfg.model.name!r} has nothing to train; evaluate it directly")
    dm = VideoDataModule(
        cfg.data.name,
        cfg.data.args,
        cfg.data.splits,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.trainer.seed,
    )
    total, warmup = _total_steps(cfg, dm)
    task = _build_task(cfg, model, total, warmup)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    trainer = build_trainer(cfg.trainer, out)
    trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best and Path(best).is_file():
        # The best validation checkpoint, not the last step, is what gets exported.
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state)
    model.eval()
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        export_model(model, out, config=cfg.to_dict())
        if evaluate_after:
            metrics = evaluate(out, split=cfg.eval.split, json_path=out / "metrics.json", report_dir=out)
    return TrainResult(out, metrics, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ evaluate


@torch.no_grad()
def evaluate_predictors(
    models: dict[str, nn.Module],
    dataset: torch.utils.data.Dataset,
    *,
    num_context: int,
    num_future: int,
    mode: str = "extrapolate",
    batch_size: int = 8,
    max_clips: int | None = None,
    num_visual_clips: int = 0,
    device: torch.device | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Tensor]]:
    """Score predictors on the same clips. Returns (metrics per model, tensors for visuals).

    Metrics follow vidyn's conventions (per-frame SSIM/PSNR, then averaged; DESIGN.md §5) plus the
    published conventions under their own names; `infer_clip_s` is the mean wall time per clip.
    """
    device = device or default_device()
    if max_clips is not None:
        dataset = Subset(dataset, range(min(max_clips, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    trackers: dict[str, FrameMetrics] = {}
    seconds = dict.fromkeys(models, 0.0)
    clips = 0
    visuals: dict[str, Tensor] = {}
    for m in models.values():
        m.to(device).eval()
    for batch in loader:
        frames = batch["frames"].to(device)
        times = batch["times"].to(device)
        ctx, ctx_t, tgt, tgt_t = split_clip(frames, times, num_context, num_future, mode)
        clips += frames.shape[0]
        preds = {}
        for name, model in models.items():
            t0 = time.perf_counter()
            pred = model(ctx, ctx_t, tgt_t).clamp(0, 1)
            seconds[name] += time.perf_counter() - t0
            if name not in trackers:
                trackers[name] = FrameMetrics(num_steps=tgt.shape[1]).to(device)
            trackers[name].update(pred, tgt)
            preds[name] = pred
        have = visuals["context"].shape[0] if visuals else 0
        if have < num_visual_clips:
            take = slice(0, num_visual_clips - have)
            new = {
                "context": ctx[take],
                "truth": tgt[take],
                "target_times": tgt_t[take],
                **{f"pred/{k}": v[take] for k, v in preds.items()},
            }
            visuals = {
                k: torch.cat([visuals[k], v.cpu()]) if k in visuals else v.cpu() for k, v in new.items()
            }
    if clips == 0:
        raise VidynError("the evaluation split has no clips; check the dataset arguments")
    results = {}
    for name, tracker in trackers.items():
        res = tracker.compute()
        res["infer_clip_s"] = seconds[name] / clips
        res["num_clips"] = clips
        results[name] = res
    return results, visuals


def _prediction_eval_models(model: nn.Module, name: str, baselines: list[str]) -> dict[str, nn.Module]:
    models = {name: model}
    for b in baselines:
        if b != name:
            models[b] = build_model(b)
    return models


def evaluate(
    model_path: str | Path,
    *,
    split: str = "test",
    json_path: str | Path | None = None,
    report_dir: str | Path | None = None,
    max_clips: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Evaluate an exported model on its own dataset's split, beside the configured baselines.

    Returns (and writes to json_path) `{"models": {name: {...}}, "protocol": {...}}`; with report_dir
    also writes per_step.png and samples.gif there.
    """
    meta = read_model_meta(model_path)
    cfg = build_config(meta.get("config") or {}, overrides)
    model = load_model(model_path)
    name = meta["name"]
    dataset = build_dataset(cfg.data.name, split, cfg.data.args, cfg.data.splits)
    models = _prediction_eval_models(model, name, cfg.eval.baselines)
    t = cfg.task
    results, visuals = evaluate_predictors(
        models,
        dataset,
        num_context=t.num_context,
        num_future=t.num_future,
        mode=t.mode,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        max_clips=max_clips if max_clips is not None else cfg.eval.max_clips,
        num_visual_clips=cfg.eval.num_visual_clips if report_dir else 0,
    )
    out: dict[str, Any] = {
        "models": results,
        "protocol": {
            "dataset": cfg.data.name,
            "split": split,
            "mode": t.mode,
            "num_context": t.num_context,
            "num_future": t.num_future,
            "num_clips": next(iter(results.values()))["num_clips"],
            "conventions": "ssim/psnr/mse/mae per frame then averaged (Wang 2004 SSIM, 11x11 "
            "Gaussian, valid); openstl_* = per-frame sums; vidode_psnr = PSNR of mean MSE",
        },
    }
    if report_dir is not None:
        report = Path(report_dir)
        report.mkdir(parents=True, exist_ok=True)
        plot_per_step(results, report / "per_step.png")
        if visuals:
            preds = {k.split("/", 1)[1]: v for k, v in visuals.items() if k.startswith("pred/")}
            write_comparison(report / "samples.gif", visuals["context"], visuals["truth"], preds)
    if json_path is not None:
        _write_json(Path(json_path), out)
    return out


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
) -> dict[str, Any]:
    """Continue a user's own video (or .npy array) with an exported predictor.

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
    if meta.get("family") != "predictor":
        raise VidynError(f"model {meta['name']!r} is a {meta.get('family')}, not a frame predictor")
    args = meta.get("args", {})
    cfg = build_config(meta.get("config") or {})
    size, channels = args.get("image_size", 64), args.get("in_channels", 1)
    n_ctx = context_frames or cfg.task.num_context
    frames, frame_times = load_frames(input_path, size=size, channels=channels)
    if frames.shape[0] < 2 and not getattr(model, "continuous_time", False):
        raise VidynError(f"{str(input_path)!r} has {frames.shape[0]} frame(s); give at least 2")
    context = frames[-n_ctx:].unsqueeze(0)  # (1, Tc, C, H, W)
    ctx_t = frame_times[-n_ctx:]
    # Rescale time so the context is on the model's training grid (e.g. 0.1 s per frame for shapes).
    train_dt = float(cfg.data.args.get("frame_interval", 0.1))
    dt_in = float(ctx_t.diff().median()) if ctx_t.numel() > 1 else train_dt
    scale = train_dt / dt_in if dt_in > 0 else 1.0
    ctx_model_t = (ctx_t - ctx_t[-1]) * scale
    if times is not None:
        if not getattr(model, "continuous_time", False):
            raise VidynError(f"model {meta['name']!r} is discrete-time: use --steps instead of --times")
        tgt_model_t = torch.tensor(times, dtype=torch.float32) * scale
    else:
        n = steps or cfg.task.num_future
        tgt_model_t = torch.arange(1, n + 1, dtype=torch.float32) * train_dt
    if tgt_model_t.numel() == 0:
        raise VidynError("nothing to predict: give --steps N (N >= 1) or --times")
    device = default_device()
    model.to(device)
    with torch.no_grad():
        pred = model(context.to(device), ctx_model_t.to(device), tgt_model_t.to(device)).clamp(0, 1).cpu()
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
    }


# -------------------------------------------------------------------------------------------- render


def render(
    dataset: str = "shapes",
    *,
    out: str | Path,
    frames: int = 20,
    size: int = 64,
    seed: int = 0,
    fps: float = 10.0,
    channels: int = 3,
    index: int = 0,
    split: str = "test",
) -> dict[str, Any]:
    """Render one clip of a procedural dataset to .mp4/.gif/.npy."""
    if dataset != "shapes":
        raise VidynError(f"only procedural datasets can be rendered; got {dataset!r} (try: shapes)")
    ds = build_dataset(
        "shapes",
        split,
        {
            "num_frames": frames,
            "size": size,
            "seed": seed,
            "channels": channels,
            "num_samples": index + 1,
            "frame_interval": 1.0 / fps,
        },
    )
    sample = ds[index]
    write_video(out, sample["frames"], fps=fps)
    label = int(sample["label"])
    return {"out": str(out), "frames": frames, "size": size, "label": label, "class": ds.class_names[label]}


# ---------------------------------------------------------------------------------------------- demo


def demo(out: str | Path = "vidyn-demo", overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Train convlstm on `shapes`, evaluate it beside copy_last and linear, write the report to `out`."""
    cfg = build_config(DEMO_CONFIG, overrides)
    result = train(cfg, run_dir=out)
    return {"out": str(result.run_dir), "seconds": result.seconds, "metrics": result.metrics}
