"""The Lightning Trainer every task runs on: callbacks, logging, budgets, devices.

Checkpoints (`best.ckpt`, `last.ckpt`) are for resuming one's own runs; the product of a run is the
exported model (`vidyn.export`). On a laptop this is a single CPU process; on GPUs and several
machines the same code runs under Lightning's DDP (`trainer.strategy=ddp`, `trainer.num_nodes=N`,
launched with torchrun or a cluster launcher).
"""

from __future__ import annotations

import datetime
import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import TensorBoardLogger

from vidyn.allocator import keep_freed_memory
from vidyn.config import TrainerConfig
from vidyn.console import is_terminal
from vidyn.errors import VidynError, VidynWarning
from vidyn.tasks import faults
from vidyn.tasks.checkpointing import AtomicCheckpointIO, LatestCheckpoint
from vidyn.tasks.distributed import launch_settings
from vidyn.tasks.guards import FiniteCheck, SignalStop
from vidyn.tasks.optim import BudgetClock
from vidyn.tasks.progress import PlainProgress

# Lightning logs its console messages through this logger (set in lightning.pytorch.utilities.rank_zero).
_LIGHTNING_CONSOLE_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropLightningTips(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing [litlogger]/[litmodels]" lines: advertisements for
    its cloud products, not about the user's run; and its "`Trainer.fit` stopped: ..." and "Time limit
    reached ..." lines, which vidyn's own "stopped because ..." line replaces (`vidyn.tasks.progress`,
    which also names early stopping, where Lightning says nothing). Its other console messages pass."""

    _DROPPED = ("💡 Tip:", "`Trainer.fit` stopped:", "Time limit reached.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._DROPPED)


_DROP_LIGHTNING_TIPS = _DropLightningTips()


def _quiet_resume() -> None:
    """On resume the checkpoint folder is expected to hold checkpoints: drop Lightning's warning about it."""
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def _quiet_lightning() -> None:
    """Silence the messages every run printed that say nothing about it; idempotent.

    Lightning has no switch for its tips (it prints one whenever no LitLogger is attached), so a logging
    filter drops exactly those lines (and its stop lines, which vidyn words itself). Lightning's
    `_tree_flatten` still builds `LeafSpec()`, which torch deprecates: that FutureWarning is ignored from
    that module only; every other warning stays visible. The warning filter is process-wide because the
    warning fires later, inside `Trainer.fit`.
    """
    logging.getLogger(_LIGHTNING_CONSOLE_LOGGER).addFilter(_DROP_LIGHTNING_TIPS)  # no-op when present
    warnings.filterwarnings(  # replaces an identical filter rather than adding another
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


def prepare_runtime(cfg: TrainerConfig) -> None:
    """Process-wide settings that must precede model building."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.keep_freed_memory_mb is not None:  # no page faults for memory freed and reused every step
        if cfg.keep_freed_memory_mb < 0:
            raise VidynError(f"trainer.keep_freed_memory_mb must be >= 0 (or null for the C library's "
                             f"defaults), got {cfg.keep_freed_memory_mb}")  # fmt: skip
        keep_freed_memory(cfg.keep_freed_memory_mb)
    # Without this, PredRNN's backward slows down step after step on CPU as gradients turn denormal
    # (measured 13 s -> 64 s per step over five steps).
    torch.set_flush_denormal(True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)


LOWER_IS_BETTER = ("loss", "fd_judge", "fid", "fvd", "kid", "mse", "mae", "lpips")


def monitor_mode(metric: str) -> str:
    """ "min" for metrics where lower is better (losses, Frechet distances, errors), else "max"."""
    return "min" if any(key in metric for key in LOWER_IS_BETTER) else "max"


def _callbacks(
    cfg: TrainerConfig, run_dir: Path, optim_update: dict[str, Any] | None, bar: bool
) -> list[Callback]:
    # Two checkpoints: best.ckpt (by cfg.monitor; what gets exported) and last.ckpt (the latest, to
    # resume; `LatestCheckpoint`). Lightning's own `save_last=True` refreshes last.ckpt only when a new best
    # is saved, so a run whose validation got worse would resume from its best step and repeat the steps
    # since; a ModelCheckpoint without a monitor misses the step where max_steps ends mid-epoch.
    stop = SignalStop()
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=cfg.monitor,
            mode=monitor_mode(cfg.monitor),
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=False,  # at validation end, before last.ckpt records its state
        ),
        LatestCheckpoint(
            run_dir / "checkpoints",
            cfg.checkpoint_every_n_steps,
            stop_requested=stop,
            optim_update=optim_update,
        ),
        stop,
        FiniteCheck(),
        LearningRateMonitor(logging_interval="step"),
    ]
    if cfg.max_time:  # the schedules that follow the time budget (optim.budget_schedule) read it here
        callbacks.append(BudgetClock())
    if faults.active():  # test hooks (tests/engine/test_kill_resume.py)
        callbacks.append(faults.FaultPoints())
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every_n_steps)))
    elif cfg.progress_bar:
        callbacks.append(PlainProgress())
    if cfg.early_stopping_patience > 0:
        callbacks.append(
            EarlyStopping(
                monitor=cfg.monitor,
                mode=monitor_mode(cfg.monitor),
                patience=cfg.early_stopping_patience,
                check_on_train_epoch_end=False,  # at validation end, before last.ckpt records its state
            )
        )
    return callbacks


def _validation_settings(cfg: TrainerConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if not (isinstance(cfg.limit_val_batches, float) and cfg.limit_val_batches == 1.0):
        # Lightning's default is every batch; passing 1.0 explicitly makes it print that it will do so.
        kwargs["limit_val_batches"] = cfg.limit_val_batches
    val_interval = cfg.val_check_interval
    if isinstance(val_interval, int):
        # Validate every N optimiser steps regardless of epoch length (check_val_every_n_epoch=None).
        kwargs.update(
            val_check_interval=val_interval * cfg.accumulate_grad_batches, check_val_every_n_epoch=None
        )
    elif isinstance(val_interval, float):
        kwargs.update(val_check_interval=val_interval)
    return kwargs


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): without it oneDNN emulates bf16, and
    bf16 convolutions ran 1.3-1.5x slower than fp32 with AVX-512 and 15-18x slower with AVX2 only
    (docs/speed.md)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume no native bf16
        return False


def precision_for_device(precision: str, accelerator: str) -> str:
    """`trainer.precision` as run here: mixed precision where the device supports it, else 32-true with a
    one-line warning (fp16 autocast without a CUDA GPU; bf16 on a CPU that emulates it)."""
    on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
    if precision == "16-mixed" and not torch.cuda.is_available():
        reason = "trainer.precision=16-mixed needs a CUDA GPU"
    elif precision == "bf16-mixed" and on_cpu and not native_cpu_bf16():
        reason = "trainer.precision=bf16-mixed: this CPU has no native bf16 (AVX512-BF16 or AMX)"
    else:
        return precision
    warnings.warn(f"{reason}; training in 32-true on this machine", VidynWarning, stacklevel=3)
    return "32-true"


def build_trainer(
    cfg: TrainerConfig,
    run_dir: Path,
    extra_callbacks: list[Callback] | None = None,
    optim_update: dict[str, Any] | None = None,
    resuming: bool = False,
) -> L.Trainer:
    """The run's Lightning Trainer. On a terminal with `cfg.progress_bar` it shows Lightning's bar; in a
    file or a pipe, where each redraw of a bar would stay as a junk line, plain progress lines instead."""
    bar = cfg.progress_bar and is_terminal()
    callbacks = _callbacks(cfg, run_dir, optim_update, bar) + list(extra_callbacks or [])
    max_time: Any = None
    if cfg.max_time:
        max_time = datetime.timedelta(seconds=float(cfg.max_time))
    precision = precision_for_device(cfg.precision, cfg.accelerator)
    if resuming:
        _quiet_resume()
    _quiet_lightning()  # before L.Trainer: it prints the litlogger tip while configuring its loggers
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_steps=cfg.max_steps if cfg.max_steps else -1,
        max_epochs=cfg.max_epochs if cfg.max_epochs is not None else (-1 if cfg.max_steps else None),
        max_time=max_time,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        precision=precision,
        accelerator=cfg.accelerator,
        **launch_settings(cfg.devices, cfg.num_nodes, cfg.strategy, cfg.dist_timeout, cfg.accelerator),
        callbacks=callbacks,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=cfg.deterministic or None,
        plugins=[AtomicCheckpointIO()],
        **_validation_settings(cfg),
    )
