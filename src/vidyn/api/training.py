"""`train`: build the configured model, task and data, fit with Lightning, export, then evaluate."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from vidyn.api.evaluation import evaluate
from vidyn.api.models import io_spec
from vidyn.api.resume import ResumePlan, check_fits, load_checkpoint, plan_resume, record, resume_command
from vidyn.config import Config, build_config, save_config
from vidyn.console import cap_loader_workers
from vidyn.data.datamodule import VideoDataModule, class_names_of
from vidyn.data.prepare import prepare_store
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model
from vidyn.nn.ode import ODESolverError
from vidyn.registry import DATASETS
from vidyn.tasks import TaskRun, VidynTask, build_task
from vidyn.tasks.checkpointing import StopRequested
from vidyn.tasks.distributed import (
    is_rank_zero,
    peer_lost,
    peer_lost_error,
    planned_world_size,
)
from vidyn.tasks.engine import build_trainer, prepare_runtime
from vidyn.tasks.guards import NonFiniteError
from vidyn.tasks.progress import stop_reason


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    seconds: float
    steps: int = 0  # optimiser steps taken (a max_time budget may stop short of max_steps)
    stop_reason: str = ""  # why training ended, e.g. "it reached trainer.max_steps=500 (step 500)"


def _new_run_dir(cfg: Config) -> Path:
    base = Path(cfg.out_dir) / cfg.name
    run_dir, k = base, 1
    while (run_dir / "config.yaml").exists():
        k += 1
        run_dir = base.with_name(f"{base.name}-{k}")
    return run_dir


def _total_steps(cfg: Config, dm: VideoDataModule) -> tuple[int, int]:
    """(optimiser steps the run will take at most, warmup steps); each of the launch's ranks takes its
    share of an epoch (`data.batch_size` is per rank)."""
    t = cfg.trainer
    ranks = planned_world_size(t.devices, t.num_nodes, t.accelerator)
    batches = max(1, len(dm.dataset("train")) // (cfg.data.batch_size * ranks))
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


class RunInterrupted(VidynError):
    """A run stopped by a signal after saving its state; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _start(
    config: Any, overrides: Any, run_dir: Any, resume: Any, say: Any
) -> tuple[Config, Path, ResumePlan | None]:
    """The config and run folder of a new run, or of a resumed one (nothing written yet)."""
    if resume is not None:
        plan = plan_resume(config, overrides, resume, run_dir)
        if plan.config_ignored:
            say(
                f"note: resuming {plan.run_dir} with its own config.yaml; -c {plan.config_ignored} is not "
                "read on --resume (change settings with --set)"
            )
        return plan.cfg, plan.run_dir, plan
    if config is None:
        raise VidynError("train needs a config (-c CONFIG) for a new run, or --resume RUN_FOLDER")
    cfg = config if isinstance(config, Config) else build_config(config, overrides)
    out = Path(run_dir) if run_dir is not None else _new_run_dir(cfg)
    return cfg, out, None


def _announce(out: Path, cfg: Config, plan: ResumePlan | None, named: bool, say: Any) -> None:
    """One line saying where the run writes (a second run of a config gets <name>-2: say so)."""
    if plan is not None:
        say(f"resuming {out} from step {plan.step} ({plan.checkpoint.name})")
        return
    first = Path(cfg.out_dir) / cfg.name
    earlier = f"; {first} holds an earlier run" if not named and out != first else ""
    say(f"run folder: {out}{earlier} (if interrupted: {resume_command(out)})")


def _write_run_start(out: Path, cfg: Config, plan: ResumePlan | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if plan is None:
        save_config(cfg, out / "config.yaml")
    else:
        record(plan)


def _export(
    task: VidynTask, model: nn.Module, out: Path, cfg: Config, dm: Any, ckpt: str | None, say: Any | None
) -> None:
    """Export the best checkpoint (else the model as it is); `say` given (a run that finished, not one
    stopped early), the task's `after_fit` works on those weights first."""
    if ckpt and Path(ckpt).is_file():
        # The best validation checkpoint, not the last step, is what gets exported.
        task.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    if say is not None:  # e.g. latent_sde's refit of the z0 sampler on exactly these weights
        task.after_fit(dm, say)
    model.eval()
    extra = task.export_extra() | io_spec(cfg, model, _frame_interval(dm))
    export_model(model, out, config=cfg.to_dict(), extra=extra)


def _fit(trainer: Any, task: VidynTask, dm: VideoDataModule, ckpt: Path | None) -> BaseException | None:
    """Run Lightning's fit; the stop request or non-finite failure that ended it early, if any."""
    try:
        trainer.fit(task, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    except (StopRequested, NonFiniteError) as exc:
        return exc
    except ODESolverError as exc:  # the step it failed in, for the message
        return NonFiniteError(int(trainer.global_step) + 1, str(exc))
    except SIGTERMException:  # under DDP Lightning handles SIGTERM itself (vidyn.tasks.guards)
        return StopRequested("SIGTERM", int(trainer.global_step))
    except RuntimeError as exc:  # a DDP collective that failed: a rank died or hung (bounded by dist_timeout)
        if not peer_lost(exc):
            raise
        raise peer_lost_error(exc, trainer) from None
    return None


def _build_and_fit(
    cfg: Config, task: VidynTask, dm: VideoDataModule, out: Path, plan: ResumePlan | None, callbacks: list
) -> tuple[Any, BaseException | None]:
    """The run's Trainer, and what ended its fit early (`_fit`), if anything."""
    trainer_cfg = cfg.trainer
    if not task.automatic_optimization:  # the task clips its own gradients (GAN training)
        trainer_cfg = copy.copy(cfg.trainer)
        trainer_cfg.gradient_clip_val = None
    update = plan.optim_update if plan else None
    deterministic = torch.are_deterministic_algorithms_enabled()  # Lightning sets it process-wide
    try:
        trainer = build_trainer(trainer_cfg, out, callbacks, optim_update=update, resuming=plan is not None)
        return trainer, _fit(trainer, task, dm, plan.checkpoint if plan else None)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _stopped_error(stop: BaseException, out: Path, best: str | None) -> VidynError:
    last = out / "checkpoints" / "last.ckpt"
    if isinstance(stop, StopRequested):
        code = 128 + int(getattr(signal.Signals, stop.reason, signal.SIGTERM))
        return RunInterrupted(f"{stop}; state saved in {last}; resume with: {resume_command(out)}", code)
    saved = f"{last} (step {load_checkpoint(last).get('global_step')})" if last.is_file() else "no checkpoint"
    exported = f"the best checkpoint exported to {out}" if best else "nothing exported"
    if "ODE solver" in str(stop):
        return VidynError(f"{stop}; kept {saved}, {exported}; resume with: {resume_command(out)} --set ...")
    return VidynError(
        f"{stop}; kept {saved}, {exported}; lower optim.lr or set trainer.gradient_clip_val, then resume "
        f"with: {resume_command(out)} --set optim.lr=..."
    )


def _datamodule(cfg: Config, say: Any) -> VideoDataModule:
    """The run's data, with at most as many loader processes as this process has CPUs (said once)."""
    workers, note = cap_loader_workers(cfg.data.num_workers)
    if note and is_rank_zero():
        say(note)
    return VideoDataModule(
        cfg.data.name,
        cfg.data.args,
        cfg.data.splits,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=workers,
        seed=cfg.trainer.seed,
    )


def train(
    config: str | Path | dict[str, Any] | Config | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    evaluate_after: bool = True,
    echo: Any = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train the configured model; export it and (by default) evaluate it beside the baselines.

    The run folder holds config.yaml, checkpoints/, tensorboard/, and after training the exported
    model (model.safetensors + model.json), metrics.json, per_step.png and samples.gif. `resume` (a run
    folder or a .ckpt) continues a run with its own config.yaml plus `overrides` (`vidyn.api.resume`);
    `config` is then not read. `echo` receives one-line notes (the run folder, a resume) for a front end.
    `callbacks` are Lightning callbacks added to the run's own (e.g. a step timer: benchmarks/).
    A run stopped by a signal raises `RunInterrupted` after saving last.ckpt; NaN/inf raises VidynError.
    """
    start = time.perf_counter()
    say = echo or (lambda _line: None)
    cfg, out, plan = _start(config, overrides, run_dir, resume, say)
    _check_data_source(cfg)
    cfg = _prepared(cfg)
    prepare_runtime(cfg.trainer)
    model = build_model(cfg.model.name, **cfg.model.args)
    if not getattr(model, "trainable", True):
        raise VidynError(f"model {cfg.model.name!r} has nothing to train; evaluate it directly")
    dm = _datamodule(cfg, say)
    dm.check_splits(("train", "val", cfg.eval.split))  # before anything is trained or written
    total, warmup = _total_steps(cfg, dm)
    task = task_for(cfg, model, total, warmup, _class_names(dm.dataset("train")))
    if plan is not None:
        check_fits(plan, task)  # before anything is written
    if is_rank_zero():  # under DDP only rank 0 writes (Lightning keeps checkpoints and logs to it too)
        _write_run_start(out, cfg, plan)
        _announce(out, cfg, plan, run_dir is not None, say)
    trainer, stop = _build_and_fit(cfg, task, dm, out, plan, task.extra_callbacks() + list(callbacks or []))
    # best.ckpt by name: in a run folder that was moved, Lightning's best_model_path names the old place.
    best = next((str(p) for p in (out / "checkpoints" / "best.ckpt",) if p.is_file()), None)
    if best is None and isinstance(stop, NonFiniteError) and (out / "checkpoints" / "last.ckpt").is_file():
        best = str(out / "checkpoints" / "last.ckpt")  # no validation yet: the last good state
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero and (stop is None or best):
        _export(task, model, out, cfg, dm, best, say if stop is None else None)
        if evaluate_after and stop is None:
            metrics = evaluate(out, split=cfg.eval.split, json_path=out / "metrics.json", report_dir=out)
    if stop is not None:
        raise _stopped_error(stop, out, best)
    seconds, steps = time.perf_counter() - start, int(trainer.global_step)
    return TrainResult(out, metrics, seconds, steps=steps, stop_reason=stop_reason(trainer))
