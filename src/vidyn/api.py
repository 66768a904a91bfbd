"""The verbs of vidyn. The CLI and the web UI are thin layers over these functions.

train, evaluate, predict, classify, prepare, render, demo (more verbs join as their model families land).
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from vidyn.config import Config, TaskConfig, build_config, save_config
from vidyn.data.datamodule import VideoDataModule, build_dataset
from vidyn.data.prepare import prepare_store
from vidyn.data.store import take_clip
from vidyn.data.video_io import frames_to_tensor, load_frames, read_video, write_video
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model, load_model, read_model_meta
from vidyn.metrics import FrameMetrics
from vidyn.models.profile import (
    count_parameters,
    flops_per_clip,
    parameter_bytes,
    peak_memory_mb,
    time_inference,
    time_train_step,
    train_step,
)
from vidyn.registry import DATASETS, MODELS
from vidyn.report.html import Column, write_html_report
from vidyn.report.media import write_comparison
from vidyn.report.plots import plot_confusion, plot_per_step
from vidyn.tasks.continuous import evaluate_continuous
from vidyn.tasks.engine import build_trainer, prepare_runtime
from vidyn.tasks.prediction import PredictionTask, split_clip
from vidyn.tasks.recognition import RecognitionTask, class_names_of, evaluate_classifier, spread_windows

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
    steps: int = 0  # optimiser steps taken (a max_time budget may stop short of max_steps)


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


def _check_data_source(cfg: Config) -> None:
    """Datasets read from disk (ucf101, folder) need a root or a prepared store: say how to give one."""
    args = cfg.data.args
    if cfg.data.name in ("ucf101", "folder") and not args.get("root") and not args.get("store"):
        raise VidynError(
            f"dataset {cfg.data.name} needs its folder: add --set data.args.root=/path/to/data "
            "(or --set data.args.store=/path/to/store made by `vidyn prepare`)"
        )


def _build_task(
    cfg: Config, model: nn.Module, total: int, warmup: int, num_classes: int | None = None
) -> PredictionTask | RecognitionTask:
    if cfg.task.kind == "recognition":
        t = cfg.task
        return RecognitionTask(
            model,
            num_classes=num_classes if num_classes is not None else int(getattr(model, "num_classes", 0)),
            label_smoothing=t.label_smoothing,
            optim=vars(cfg.optim),
            total_steps=total,
            warmup_steps=warmup,
            freeze_backbone_until_epoch=t.freeze_backbone_until_epoch,
            unfreeze_layers=t.unfreeze_layers,
        )
    if cfg.task.kind != "prediction":
        raise VidynError(f"unknown task kind {cfg.task.kind!r}; choose prediction or recognition")
    t = cfg.task
    if t.adversarial_weight > 0 and cfg.trainer.accumulate_grad_batches != 1:
        raise VidynError(
            "adversarial training (task.adversarial_weight > 0) does not support gradient accumulation; set "
            "trainer.accumulate_grad_batches=1 (raise data.batch_size instead)"
        )
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
        adversarial_weight=t.adversarial_weight,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
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
    _check_data_source(cfg)
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
    extra: dict[str, Any] = {}
    if cfg.task.kind == "recognition":  # exported with the model so `classify` can name its classes
        extra["class_names"] = class_names_of(dm.dataset("train"), getattr(model, "num_classes", None))
    task = _build_task(cfg, model, total, warmup, len(extra.get("class_names", ())) or None)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    callbacks = task.extra_callbacks() if isinstance(task, RecognitionTask) else []  # progressive unfreezing
    trainer_cfg = cfg.trainer
    if not task.automatic_optimization:  # the task clips its own gradients (GAN training)
        trainer_cfg = copy.copy(cfg.trainer)
        trainer_cfg.gradient_clip_val = None
    trainer = build_trainer(trainer_cfg, out, extra_callbacks=callbacks)
    trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best and Path(best).is_file():
        # The best validation checkpoint, not the last step, is what gets exported.
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state)
    model.eval()
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        export_model(model, out, config=cfg.to_dict(), extra=extra)
        if evaluate_after:
            metrics = evaluate(out, split=cfg.eval.split, json_path=out / "metrics.json", report_dir=out)
    return TrainResult(out, metrics, time.perf_counter() - start, steps=int(trainer.global_step))


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
                # One process scores the whole split (rank 0 after a DDP fit): never wait for peers.
                trackers[name] = FrameMetrics(num_steps=tgt.shape[1], sync_on_compute=False).to(device)
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


def _evaluate_classifier_report(
    model: nn.Module,
    name: str,
    meta: dict[str, Any],
    cfg: Config,
    dataset: torch.utils.data.Dataset,
    split: str,
    report_dir: str | Path | None,
    max_clips: int | None,
) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy and confusions of a classifier; confusion.png/.csv in report_dir."""
    class_names = meta.get("class_names") or class_names_of(dataset, getattr(model, "num_classes", None))
    res = evaluate_classifier(
        model,
        dataset,
        class_names,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        max_clips=max_clips if max_clips is not None else cfg.eval.max_clips,
        device=default_device(),
    )
    args = {**cfg.data.args, **cfg.data.splits.get(split, {})}
    protocol = {
        "dataset": cfg.data.name,
        "split": split,
        "num_clips": res["num_clips"],
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "clip_sampling": args.get("clip_sampling", "dataset default"),
        "conventions": "one clip per video as the dataset samples it; top-k micro-averaged over clips; "
        "per-class accuracy = recall (null for a class without clips); confusion rows = true class",
    }
    if report_dir is not None:
        report = Path(report_dir)
        report.mkdir(parents=True, exist_ok=True)
        plot_confusion(res["confusion_matrix"], list(class_names), report / "confusion.png")
        rows = [",".join(["true\\predicted", *class_names])]
        rows += [
            ",".join([c, *map(str, r)]) for c, r in zip(class_names, res["confusion_matrix"], strict=True)
        ]
        tmp = report / ".confusion.csv.tmp"
        tmp.write_text("\n".join(rows) + "\n")
        os.replace(tmp, report / "confusion.csv")
    return {"models": {name: res}, "protocol": protocol}


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
    also writes per_step.png and samples.gif there. For a continuous-time predictor on a dataset that
    renders any time (shapes) it adds `"continuous"`: in-between, beyond and irregular timestamps scored
    beside the baselines (`vidyn.tasks.continuous.evaluate_continuous`).
    """
    meta = read_model_meta(model_path)
    cfg = build_config(meta.get("config") or {}, overrides)
    model = load_model(model_path)
    name = meta["name"]
    dataset = build_dataset(cfg.data.name, split, cfg.data.args, cfg.data.splits)
    if meta.get("family") == "classifier":  # cfg.eval.baselines are frame predictors: none apply here
        out = _evaluate_classifier_report(model, name, meta, cfg, dataset, split, report_dir, max_clips)
        if json_path is not None:
            _write_json(Path(json_path), out)
        return out
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
    if getattr(model, "continuous_time", False) and hasattr(dataset, "render"):
        # shapes renders ground truth at any time: score in-between, beyond and irregular timestamps too
        out["continuous"] = evaluate_continuous(
            models,
            dataset,
            num_context=t.num_context,
            num_future=t.num_future,
            batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
            max_clips=max_clips if max_clips is not None else cfg.eval.max_clips,
            seed=cfg.trainer.seed,
            device=default_device(),
        )
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
    context, ctx_t, tgt_t, dt_in = _predict_inputs(model, meta, input_path, steps, times, context_frames)
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
    model: nn.Module,
    meta: dict[str, Any],
    input_path: str | Path,
    steps: int | None,
    times: list[float] | None,
    context_frames: int | None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Load a user's clip for a predictor: (context (1,Tc,C,H,W), context times, target times, input dt).

    Times are rescaled so the context sits on the model's training grid (e.g. 0.1 s per frame for
    shapes), whatever the input's frame rate; `times` are seconds after the last context frame.
    """
    if meta.get("family") != "predictor":
        raise VidynError(f"model {meta['name']!r} is a {meta.get('family')}, not a frame predictor")
    # The builder's defaults fill arguments the model was built without (vid_ode defaults to 3 channels).
    args = {**MODELS.get(meta["name"]).defaults(), **meta.get("args", {})}
    cfg = build_config(meta.get("config") or {})
    size, channels = args.get("image_size", 64), args.get("in_channels", 1)
    n_ctx = context_frames or cfg.task.num_context
    frames, frame_times = load_frames(input_path, size=size, channels=channels)
    if frames.shape[0] < 2 and not getattr(model, "continuous_time", False):
        raise VidynError(f"{str(input_path)!r} has {frames.shape[0]} frame(s); give at least 2")
    context = frames[-n_ctx:].unsqueeze(0)  # (1, Tc, C, H, W)
    ctx_t = frame_times[-n_ctx:]
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
    return context, ctx_model_t, tgt_model_t, dt_in


def _run_predictor(model: nn.Module, context: Tensor, ctx_t: Tensor, tgt_t: Tensor) -> tuple[Tensor, float]:
    """Predict on the default device; returns (frames (1, Tf, C, H, W) on CPU, seconds)."""
    device = default_device()
    model.to(device)
    with torch.no_grad():
        start = time.perf_counter()
        pred = model(context.to(device), ctx_t.to(device), tgt_t.to(device)).clamp(0, 1).cpu()
    return pred, time.perf_counter() - start


def predict_many(
    model_paths: list[str | Path],
    input_path: str | Path,
    *,
    steps: int | None = None,
    out: str | Path,
    context_frames: int | None = None,
    fps: float = 4.0,
) -> dict[str, Any]:
    """Continue one clip with several predictors and write an animated grid: context | each model.

    All models must share a frame size and channel count (they see the same context). Returns
    `{"out", "models": {name: {"predicted_frames", "infer_s"}}}`; infer_s is the wall time of the
    model's forward pass alone.
    """
    if not model_paths:
        raise VidynError("give at least one exported predictor")
    preds: dict[str, Tensor] = {}
    results: dict[str, dict[str, Any]] = {}
    context: Tensor | None = None
    for path in model_paths:
        meta = read_model_meta(path)
        model = load_model(path)
        ctx, ctx_t, tgt_t, _ = _predict_inputs(model, meta, input_path, steps, None, context_frames)
        if context is not None and ctx.shape[2:] != context.shape[2:]:
            raise VidynError("models to compare must share frame size and channels; train them alike")
        context = ctx if context is None or ctx.shape[1] > context.shape[1] else context
        name = meta["name"] if meta["name"] not in preds else f"{meta['name']} ({path})"
        pred, seconds = _run_predictor(model, ctx, ctx_t, tgt_t)
        preds[name] = pred
        results[name] = {"predicted_frames": int(pred.shape[1]), "infer_s": seconds, "path": str(path)}
    if len({p.shape[1] for p in preds.values()}) > 1:
        raise VidynError("the models predicted different numbers of frames; pass --steps")
    assert context is not None
    write_comparison(out, context, None, preds, fps=fps)
    return {"out": str(out), "models": results}


def find_models(root: str | Path) -> list[dict[str, Any]]:
    """Exported models (folders with model.json + model.safetensors) under `root`, sorted by path."""
    root = Path(root)
    if not root.exists():
        raise VidynError(f"models folder {str(root)!r} does not exist")
    found = []
    for meta_path in sorted(root.rglob("model.json")):
        if not (meta_path.parent / "model.safetensors").is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            continue
        found.append({"path": str(meta_path.parent), "name": meta.get("name"), "family": meta.get("family")})
    return found


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


def interpolate(
    model_path: str | Path,
    input_path: str | Path,
    *,
    factor: int,
    out: str | Path,
    context_frames: int | None = None,
) -> dict[str, Any]:
    """Raise a video's frame rate `factor`-fold with a continuous-time predictor (e.g. vid_ode).

    The video is read with its real presentation timestamps (variable frame rate included) and resized
    to the model's frame size and channels. Windows of `context_frames` consecutive frames (default: the
    model's training context) slide over it; each predicts, for every gap between consecutive frames
    t_g < t_{g+1} it covers, the `factor - 1` frames at `t_g + j (t_{g+1} - t_g) / factor`, with times
    rescaled so the video's median frame interval matches the training data's (as `predict` does). All
    frames, the originals (resized) and the new ones, are written with their timestamps, so `out` holds
    `factor * (N - 1) + 1` frames and plays at `factor` times the rate. Returns `{"out", "input_frames",
    "output_frames", "factor", "fps_in", "fps_out", "duration", "size", "channels", "windows", "nfe",
    "infer_s"}`, `nfe` holding the ODE function evaluations (encoder, decoder, per new frame) when the
    model counts them.
    """
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        raise VidynError(f"factor must be an integer >= 2 (2 doubles the frame rate); got {factor!r}")
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif", ".npy", ".avi"):
        raise VidynError(f"output {str(out)!r} must end in .mp4, .gif, .avi or .npy")
    meta = read_model_meta(model_path)
    if meta.get("family") != "predictor":
        raise VidynError(f"model {meta['name']!r} is a {meta.get('family')}, not a frame predictor")
    model = load_model(model_path)
    if not getattr(model, "continuous_time", False):
        raise VidynError(
            f"model {meta['name']!r} is discrete-time and cannot predict between frames; interpolate with a "
            "continuous-time model such as vid_ode"
        )
    cfg = build_config(meta.get("config") or {})
    args = {**MODELS.get(meta["name"]).defaults(), **meta.get("args", {})}
    size, channels = int(args.get("image_size", 64)), int(args.get("in_channels", 1))
    frames, times = load_frames(input_path, size=size, channels=channels)  # (N, C, H, W), (N,) seconds
    n = frames.shape[0]
    if n < 2:
        raise VidynError(f"{str(input_path)!r} has {n} frame(s); interpolation needs at least 2")
    t64 = times.to(torch.float64)
    train_dt = float(cfg.data.args.get("frame_interval", 0.1))
    scale = train_dt / float(t64.diff().median())
    device = default_device()
    model.to(device).eval()
    fractions = torch.arange(1, factor, dtype=torch.float64) / factor  # (K - 1,)
    new_frames: dict[int, Tensor] = {}  # gap -> (K - 1, C, H, W)
    nfe = {"encoder": 0, "decoder": 0}
    length = max(2, min(context_frames or cfg.task.num_context, n))
    windows = _interpolation_windows(n, length)
    start = time.perf_counter()
    with torch.no_grad():
        for first, gaps in windows:
            ctx_t = t64[first : first + length]
            lo, hi = t64[gaps], t64[[g + 1 for g in gaps]]
            tgt_t = (lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * fractions).flatten()  # gap-major order
            # Model time: window-relative, on the training data's frame interval.
            ctx_m, tgt_m = (((t - ctx_t[0]) * scale).float().to(device) for t in (ctx_t, tgt_t))
            pred = model(frames[first : first + length].unsqueeze(0).to(device), ctx_m, tgt_m)
            for i, g in enumerate(gaps):
                new_frames[g] = pred[0, i * (factor - 1) : (i + 1) * (factor - 1)].clamp(0, 1).cpu()
            for key in nfe:
                nfe[key] += int(getattr(model, "last_nfe", {}).get(key, 0))
    seconds = time.perf_counter() - start
    video, new_times = [], []
    for g in range(n):
        video.append(frames[g : g + 1])
        new_times.append(t64[g : g + 1])
        if g < n - 1:
            video.append(new_frames[g])
            new_times.append(t64[g] + (t64[g + 1] - t64[g]) * fractions)
    video_t, out_times = torch.cat(video), torch.cat(new_times)  # (K (N - 1) + 1, C, H, W), (same,)
    duration = float(t64[-1] - t64[0])
    fps_in = (n - 1) / duration
    write_video(out, video_t, fps=fps_in * factor, times=out_times.tolist())
    per_new_frame = (nfe["encoder"] + nfe["decoder"]) / ((n - 1) * (factor - 1))
    return {
        "out": str(out),
        "input_frames": n,
        "output_frames": int(video_t.shape[0]),
        "factor": factor,
        "fps_in": fps_in,
        "fps_out": (video_t.shape[0] - 1) / duration,
        "duration": duration,
        "size": size,
        "channels": channels,
        "windows": len(windows),
        "nfe": {**nfe, "per_new_frame": per_new_frame} if any(nfe.values()) else None,
        "infer_s": seconds,
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
    "probability"}] (the `top` most probable classes, most probable first), "num_clips"}`.
    """
    if top < 1:
        raise VidynError(f"top must be >= 1; got {top}")
    meta = read_model_meta(model_path)
    if meta.get("family") != "classifier":
        raise VidynError(
            f"model {meta.get('name')!r} is a {meta.get('family')}, not an action classifier; pass a model "
            "trained with task.kind=recognition"
        )
    model = load_model(model_path)
    cfg = build_config(meta.get("config") or {})
    data = {**DATASETS.get(cfg.data.name).defaults(), **cfg.data.args, **cfg.data.splits.get("train", {})}
    in_channels = {**MODELS.get(meta["name"]).defaults(), **meta.get("args", {})}.get("in_channels", 3)
    num_frames, stride = int(data.get("num_frames", 16)), int(data.get("frame_stride", 1))
    decoded = read_video(video, size=data.get("size"), grayscale=in_channels == 1)
    windows = spread_windows(len(decoded.times), num_frames, stride, clips)
    batch = torch.stack(
        [frames_to_tensor(take_clip(decoded.frames, decoded.times, idx, decoded.fps)[0]) for idx in windows]
    )  # (K, T, C, H, W)
    device = default_device()
    model.to(device)
    with torch.no_grad():
        probs = torch.cat(
            [model(batch[i : i + 8].to(device)).float().softmax(-1).cpu() for i in range(0, len(batch), 8)]
        )
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
    }


# ------------------------------------------------------------------------------------------- prepare


def prepare(
    dataset: str,
    root: str | Path,
    out: str | Path,
    *,
    fold: int = 1,
    size: int = 64,
    frames: int = 16,
    stride: int = 2,
    clips_per_video: int = 1,
    grayscale: bool = False,
    classes: list[str] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode a video dataset ("ucf101" or "folder") once into a prepared-clip store at `out`.

    Train from it with `--set data.args.store=OUT` (and the same size/frames/stride). Re-running the same
    command resumes an interrupted run. Worker processes are spawned: from a script, call this under
    `if __name__ == "__main__":` (the CLI does), or pass workers=0. Returns prepare_store's summary
    (`videos`, `clips`, `skipped` [{file, reason}], `seconds`, `store`, `resumed_videos`) plus
    `clips_per_second` over the videos decoded in this run.
    """
    summary = prepare_store(
        dataset,
        root,
        out,
        fold=fold,
        size=size,
        frames=frames,
        stride=stride,
        clips_per_video=clips_per_video,
        grayscale=grayscale,
        classes=classes,
        workers=workers,
        progress=progress,
    )
    fresh = summary["videos"] - summary["resumed_videos"]
    new_clips = summary["clips"] * fresh / max(1, summary["videos"])
    summary["clips_per_second"] = new_clips / summary["seconds"] if summary["seconds"] > 0 else 0.0
    return summary


# ------------------------------------------------------------------------------------------- compare

COMPARE_KEYS = (
    "ssim", "psnr", "mse", "mae", "lpips", "params", "flops_per_clip", "train_step_s", "infer_clip_s",
    "peak_mem_mb", "per_step",
)  # fmt: skip
_COMPARE_ENTRY_KEYS = ("name", "args", "optim", "label")
_COMPARE_NOTES = {
    "flops_per_clip": "torch.utils.flop_counter.FlopCounterMode on one inference forward of one clip: "
    "matmul/conv/attention at 2 FLOPs per multiply-add; element-wise ops not counted (baselines: 0)",
    "train_step_s": "median wall time of PredictionTask.training_step + backward + grad clipping + "
    "optimiser step at profile_batch clips, scheduled sampling pinned at its end state (the model feeds "
    "back its own predictions), after one warm-up step; null for parameter-free baselines",
    "infer_clip_s": "median wall time of one forward on a batch of one clip (latency), no grad",
    "peak_mem_mb": "MiB: parameters + buffers, plus the peak of tensor memory allocated during one "
    "training step from a fresh optimiser (activations, gradients, optimiser state) for learned models, "
    "or during one forward at profile_batch clips for baselines. CPU: running sum of the allocator events "
    "torch.profiler records (profile_memory=True), not process RSS; CUDA: torch.cuda.max_memory_allocated",
    "quality": "ssim/psnr/mse/mae per frame then averaged (Wang 2004 SSIM, 11x11 Gaussian, valid); the "
    "same clips in the same order for every model",
}

COMPARE_COLUMNS = (
    Column("ssim", "SSIM", "metric", "max"),
    Column("psnr", "PSNR (dB)", "db", "max"),
    Column("mse", "MSE", "metric", "min"),
    Column("mae", "MAE", "metric", "min"),
    Column("lpips", "LPIPS", "metric", "min"),
    Column("params", "params", "count"),
    Column("flops_per_clip", "FLOPs/clip", "flops", "min"),
    Column("train_step_s", "train step", "seconds", "min"),
    Column("infer_clip_s", "latency/clip", "seconds", "min"),
    Column("peak_mem_mb", "peak mem", "mb", "min"),
)


class _PinnedStepTask(PredictionTask):
    """A PredictionTask whose `global_step` is fixed, to time training at a chosen point of its schedule."""

    pinned_step = 0

    @property
    def global_step(self) -> int:
        return self.pinned_step


def _lpips_scorer() -> tuple[Any, str]:
    """Hook for LPIPS in comparisons: returns (scorer or None, the protocol's note).

    vidyn has no LPIPS metric yet: its AlexNet backbone weights cannot be downloaded here and need a local
    file (DESIGN.md §5). When `vidyn.metrics` gains one, return it here and score it on the same clips in
    `evaluate_predictors`; until then every model reports `"lpips": null` and the protocol says why.
    """
    return None, "LPIPS weights not installed (vidyn has no local AlexNet LPIPS weights): lpips is null"


def _compare_entries(cfg: Config) -> list[dict[str, Any]]:
    """Validate `compare.models`; return entries `{label, name, args, optim}` in the listed order."""
    if not cfg.compare.models:
        raise VidynError("compare.models is empty; list learned models, e.g. [{name: convlstm, args: {}}]")
    entries: list[dict[str, Any]] = []
    for i, raw in enumerate(cfg.compare.models):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise VidynError(f"compare.models[{i}] must be a mapping with a name, e.g. {{name: convlstm}}")
        unknown = sorted(set(raw) - set(_COMPARE_ENTRY_KEYS))
        if unknown:
            raise VidynError(
                f"compare.models[{i}] has unknown key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(_COMPARE_ENTRY_KEYS)}"
            )
        entry = {
            "name": raw["name"],
            "args": dict(raw.get("args") or {}),
            "optim": dict(raw.get("optim") or {}),
            "label": str(raw.get("label") or raw["name"]),
        }
        model = build_model(entry["name"], **entry["args"])  # checks the name and arguments up front
        if MODELS.get(entry["name"]).family != "predictor" or not getattr(model, "trainable", True):
            raise VidynError(
                f"compare.models[{i}] {entry['name']!r} is not a learned frame predictor; list baselines "
                "under eval.baselines"
            )
        taken = [e["label"] for e in entries] + list(cfg.eval.baselines)
        if entry["label"] in taken:
            raise VidynError(f"compare.models[{i}]: label {entry['label']!r} is used twice; give it a label")
        entries.append(entry)
    return entries


def _compare_run_config(cfg: Config, entry: dict[str, Any]) -> Config:
    """The training config of one compared model: the shared config, its model, optim overrides, budget."""
    raw = cfg.to_dict()
    raw.pop("compare")
    raw["name"] = entry["label"]
    raw["model"] = {"name": entry["name"], "args": entry["args"]}
    raw["optim"].update(entry["optim"])
    if cfg.compare.budget_steps is not None:
        raw["trainer"]["max_steps"] = cfg.compare.budget_steps
    if cfg.compare.budget_seconds is not None:
        raw["trainer"]["max_time"] = cfg.compare.budget_seconds
    return build_config(raw)


def _profile_predictor(
    model: nn.Module,
    task_cfg: TaskConfig,
    run_cfg: Config | None,
    batch: dict[str, Tensor],
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    """params, flops_per_clip, infer_clip_s, train_step_s and peak_mem_mb of one predictor (see notes).

    `run_cfg` is the model's training config, or None for a parameter-free baseline.
    """
    frames, times = batch["frames"].to(device), batch["times"].to(device)  # (B, T, C, H, W), (B, T)
    t = task_cfg
    ctx, ctx_t, _, tgt_t = split_clip(frames, times, t.num_context, t.num_future, t.mode)
    model = model.to(device).eval()
    res: dict[str, Any] = {
        "params": count_parameters(model),
        "flops_per_clip": flops_per_clip(model, ctx[:1], ctx_t[:1], tgt_t[:1]),
        "infer_clip_s": time_inference(model, ctx[:1], ctx_t[:1], tgt_t[:1], repeats=repeats),
        "train_step_s": None,
    }
    if run_cfg is None:  # a parameter-free baseline: its footprint is one forward at the profile batch
        with torch.no_grad():
            extra = peak_memory_mb(lambda: model(ctx, ctx_t, tgt_t), device=device)
        res["peak_mem_mb"] = parameter_bytes(model) / 2**20 + extra
        return res
    work = copy.deepcopy(model).train()  # the timed steps update weights: never touch the evaluated model
    total = run_cfg.trainer.max_steps or 1
    task = _build_task(run_cfg, work, total, run_cfg.optim.warmup_steps)
    task.__class__ = _PinnedStepTask  # same state, global_step fixed at the end of scheduled sampling
    task.pinned_step = task.sampling_stop_step
    optimizer = task.configure_optimizers()["optimizer"]
    clip = run_cfg.trainer.gradient_clip_val
    train_batch = {"frames": frames, "times": times}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer attached: logging is off
        extra = peak_memory_mb(
            lambda: train_step(lambda: task.training_step(train_batch, 0), optimizer, clip_grad_norm=clip),
            device=device,
        )
        res["train_step_s"] = time_train_step(
            lambda: task.training_step(train_batch, 0),
            optimizer,
            clip_grad_norm=clip,
            repeats=repeats,
            device=device,
        )
    res["peak_mem_mb"] = parameter_bytes(work) / 2**20 + extra
    return res


def _compare_report_files(out: Path, results: dict[str, dict[str, Any]], visuals: dict[str, Tensor]) -> None:
    plot_per_step(results, out / "per_step.png")
    preds = {k.split("/", 1)[1]: v for k, v in visuals.items() if k.startswith("pred/")}
    write_comparison(out / "samples.gif", visuals["context"], visuals["truth"], preds)


def compare(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    out: str | Path,
) -> dict[str, Any]:
    """Train each of `compare.models` under one budget; score and profile them beside the baselines.

    Each learned model trains on the same data with the same budget into `out/runs/<label>`; then all of
    them and `eval.baselines` are evaluated on the same clips in one pass and profiled. Writes
    `out/report.json` (`{"models": {label: {COMPARE_KEYS...}}, "protocol": {...}}`), `out/report.html`,
    `out/per_step.png` and `out/samples.gif`, and returns the report.
    """
    start = time.perf_counter()
    cfg = config if isinstance(config, Config) else build_config(config, overrides)
    if cfg.task.kind != "prediction":
        raise VidynError(f"compare needs task.kind prediction, got {cfg.task.kind!r}")
    entries = _compare_entries(cfg)
    run_cfgs = {e["label"]: _compare_run_config(cfg, e) for e in entries}  # all checked before training
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    trained: dict[str, dict[str, Any]] = {}
    models: dict[str, nn.Module] = {b: build_model(b) for b in cfg.eval.baselines}
    for label, run_cfg in run_cfgs.items():
        result = train(run_cfg, run_dir=out / "runs" / label, evaluate_after=False)
        models[label] = load_model(result.run_dir)
        trained[label] = {
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "run_dir": str(Path("runs") / label),
        }
    prepare_runtime(cfg.trainer)
    device = default_device()
    dataset = build_dataset(cfg.data.name, cfg.eval.split, cfg.data.args, cfg.data.splits)
    t = cfg.task
    results, visuals = evaluate_predictors(
        models,
        dataset,
        num_context=t.num_context,
        num_future=t.num_future,
        mode=t.mode,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        max_clips=cfg.eval.max_clips,
        num_visual_clips=max(1, cfg.eval.num_visual_clips),
        device=device,
    )
    profile_batch = cfg.compare.profile_batch or cfg.data.batch_size
    train_set = build_dataset(cfg.data.name, "train", cfg.data.args, cfg.data.splits)
    batch = next(iter(DataLoader(train_set, batch_size=min(profile_batch, len(train_set)), shuffle=False)))
    lpips, lpips_note = _lpips_scorer()
    report_models: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        prof = _profile_predictor(model, t, run_cfgs.get(name), batch, cfg.compare.profile_repeats, device)
        res = results[name]
        report_models[name] = {
            **{k: res[k] for k in ("ssim", "psnr", "mse", "mae")},
            "lpips": None if lpips is None else res.get("lpips"),
            **prof,
            "per_step": {k: res["per_step"][k] for k in ("ssim", "psnr", "mse", "mae")},
        }
    sample = dataset[0]["frames"]
    report = {
        "models": report_models,
        "protocol": {
            "dataset": cfg.data.name,
            "dataset_args": cfg.data.args,
            "split": cfg.eval.split,
            "clips": next(iter(results.values()))["num_clips"],
            "frame_shape": list(sample.shape[1:]),
            "mode": t.mode,
            "num_context": t.num_context,
            "num_future": t.num_future,
            "budget_steps": run_cfgs[entries[0]["label"]].trainer.max_steps,
            "budget_seconds": run_cfgs[entries[0]["label"]].trainer.max_time,
            "batch_size": cfg.data.batch_size,
            "trained": trained,
            "profile_batch": int(batch["frames"].shape[0]),
            "threads": torch.get_num_threads(),
            "device": str(device),
            "torch": torch.__version__,
            **_COMPARE_NOTES,
            "lpips": lpips_note,
        },
    }
    _compare_report_files(out, results, visuals)
    report["protocol"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    _write_json(out / "report.json", report)
    write_html_report(
        out / "report.html",
        title=f"vidyn compare: {cfg.data.name}, {t.num_context} -> {t.num_future} frames",
        columns=COMPARE_COLUMNS,
        rows=report_models,
        figures=[
            ("Quality per prediction step (same clips for every model)", out / "per_step.png"),
            (
                "Context (blue) then truth and each model's prediction (red), one row per clip; columns: "
                f"truth, {', '.join(report_models)}",
                out / "samples.gif",
            ),
        ],
        notes=report["protocol"],
        intro="Learned models trained under one budget on the same data, scored beside parameter-free "
        "baselines on the same test clips.",
    )
    return report


# ---------------------------------------------------------------------------------------------- demo


def demo(out: str | Path = "vidyn-demo", overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Train convlstm on `shapes`, evaluate it beside copy_last and linear, write the report to `out`."""
    cfg = build_config(DEMO_CONFIG, overrides)
    result = train(cfg, run_dir=out)
    return {"out": str(result.run_dir), "seconds": result.seconds, "metrics": result.metrics}
