"""`train`: build the configured model, task and data, fit with Lightning, export, then evaluate."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidyn.api.evaluation import evaluate
from vidyn.api.models import io_spec
from vidyn.config import Config, build_config, save_config
from vidyn.data.datamodule import VideoDataModule, class_names_of
from vidyn.data.prepare import prepare_store
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model
from vidyn.registry import DATASETS
from vidyn.tasks import TaskRun, VidynTask, build_task
from vidyn.tasks.engine import build_trainer, prepare_runtime


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


def _prepared(cfg: Config) -> Config:
    """For a raw `folder` of videos, the config reading a store of every window, decoded once.

    The store lives in `<out_dir>/.stores/<hash of the decoding settings>`, so runs with the same settings
    share it; `prepare_store` resumes or reuses it. Other datasets are returned unchanged.
    """
    args = cfg.data.args
    if not cfg.data.prepare or cfg.data.name != "folder" or not args.get("root") or args.get("store"):
        return cfg
    defaults = {
        k: v for k, v in DATASETS.get("folder").defaults().items() if v is not inspect.Parameter.empty
    }
    a = {**defaults, **args}
    settings = {k: a[k] for k in ("root", "classes", "num_frames", "frame_stride", "size", "grayscale",
                                  "val_fraction", "test_fraction", "pt_fps", "labels")}  # fmt: skip
    settings["root"] = str(Path(settings["root"]).expanduser().resolve())
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    store = Path(cfg.out_dir) / ".stores" / f"folder-{key}"
    store.parent.mkdir(parents=True, exist_ok=True)
    decoding = {"size": a["size"], "frames": a["num_frames"], "stride": a["frame_stride"]}
    decoding |= {
        k: a[k] for k in ("grayscale", "classes", "val_fraction", "test_fraction", "pt_fps", "labels")
    }
    prepare_store("folder", settings["root"], store, clips_per_video=0, workers=0, **decoding)
    new = copy.deepcopy(cfg)
    new.data.args = {k: v for k, v in args.items() if k != "root"} | {"store": str(store)}
    new.data.args.pop("clip_sampling", None)
    return new


def _check_data_source(cfg: Config) -> None:
    """Datasets read from disk (ucf101, folder) need a root or a prepared store: say how to give one."""
    args = cfg.data.args
    if cfg.data.name in ("ucf101", "folder") and not args.get("root") and not args.get("store"):
        raise VidynError(
            f"dataset {cfg.data.name} needs its folder: add --set data.args.root=/path/to/data "
            "(or --set data.args.store=/path/to/store made by `vidyn prepare`)"
        )


def task_for(
    cfg: Config, model: nn.Module, total: int, warmup: int, class_names: tuple[str, ...] = ()
) -> VidynTask:
    """The configured task (`cfg.task`) for `model`, in a run of `total` optimiser steps."""
    run = TaskRun(
        optim=vars(cfg.optim),
        total_steps=total,
        warmup_steps=warmup,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        class_names=tuple(class_names),
    )
    return build_task(cfg.task.name, cfg.task.args, model, run)


def _frame_interval(dm: VideoDataModule) -> float | None:
    """Seconds between the frames of a training clip (median), as the model saw them."""
    times = dm.dataset("train")[0]["times"].double()
    return round(float(times.diff().median()), 6) if times.numel() > 1 else None


def _class_names(dataset: Any) -> tuple[str, ...]:
    """The training data's label vocabulary, or () when it names no classes."""
    try:
        return tuple(class_names_of(dataset))
    except VidynError:
        return ()


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
    cfg = _prepared(cfg)
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
    dm.check_splits(("train", "val", cfg.eval.split))  # before anything is trained or written
    total, warmup = _total_steps(cfg, dm)
    task = task_for(cfg, model, total, warmup, _class_names(dm.dataset("train")))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    trainer_cfg = cfg.trainer
    if not task.automatic_optimization:  # the task clips its own gradients (GAN training)
        trainer_cfg = copy.copy(cfg.trainer)
        trainer_cfg.gradient_clip_val = None
    trainer = build_trainer(trainer_cfg, out, extra_callbacks=task.extra_callbacks())
    trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best and Path(best).is_file():
        # The best validation checkpoint, not the last step, is what gets exported.
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state)
    model.eval()
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        export_model(
            model,
            out,
            config=cfg.to_dict(),
            extra=task.export_extra() | io_spec(cfg, model, _frame_interval(dm)),
        )
        if evaluate_after:
            metrics = evaluate(out, split=cfg.eval.split, json_path=out / "metrics.json", report_dir=out)
    return TrainResult(out, metrics, time.perf_counter() - start, steps=int(trainer.global_step))
