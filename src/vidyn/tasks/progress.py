"""What a training run tells the person watching it: progress as plain lines, and why it stopped.

A progress bar redraws itself with carriage returns and escape codes; in a log file or a pipe each redraw
stays as junk. So when stdout is not a terminal the engine drops Lightning's bar for `PlainProgress`:
one line at the first step, after every validation, at least every `every_s` seconds between them, and
at the end (step, the latest losses and metrics, time elapsed). `stop_reason` names what ended a run
that finished by itself: max steps, max epochs, early stopping or the time budget. A signal or a
non-finite loss ends it with an error of its own (`vidyn.api.training`).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

_SHOWN_METRICS = 4  # validation metrics per line beside the training loss


def _elapsed(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else (f"{m}m{s:02d}s" if m else f"{s}s")


def _value(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


class PlainProgress(Callback):
    """Training progress as plain lines on `stream` (default stdout), for logs and pipes; rank 0 only."""

    def __init__(self, every_s: float = 30.0, stream: Any = None) -> None:
        self.every_s = every_s
        self.stream = stream
        self._start = self._last = 0.0
        self._printed = False
        self._of_total = ""  # "/500" when the run's length is known

    @staticmethod
    def _total(trainer: L.Trainer) -> str:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if total is None:  # an epoch budget: Lightning's estimate from the loader's length
            estimate = trainer.estimated_stepping_batches
            total = int(estimate) if math.isfinite(estimate) else None
        return f"/{total}" if total else ""

    def _line(self, trainer: L.Trainer, what: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = [k for k in metrics if k == "train/loss"]
        shown += [k for k in metrics if k.startswith("val/")][:_SHOWN_METRICS]
        now = time.monotonic()
        self._last, self._printed = now, True
        parts = [f"{what} step {trainer.global_step}{self._of_total}"]
        parts += [f"{k} {_value(metrics[k])}" for k in shown] + [f"elapsed {_elapsed(now - self._start)}"]
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._printed = False
        self._of_total = self._total(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # The first step's line says training has started (a resumed run starts past step 1).
        if not self._printed or time.monotonic() - self._last >= self.every_s:
            self._line(trainer, "train")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._line(trainer, "validated at")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._line(trainer, "finished at")


def _early_stop(trainer: L.Trainer, step: int) -> str | None:
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if not isinstance(cb, EarlyStopping) or cb.stopping_reason == EarlyStoppingReason.NOT_STOPPED:
            continue
        if cb.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            return (
                f"early stopping at step {step}: {cb.monitor} did not improve for {cb.wait_count} "
                f"validation(s) (best {_value(cb.best_score)}; trainer.early_stopping_patience={cb.patience})"
            )
        return f"early stopping at step {step}: {cb.stopping_reason_message}"
    return None


def _time_budget(trainer: L.Trainer, step: int) -> str | None:
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        remaining = cb.time_remaining() if isinstance(cb, Timer) else None
        if remaining is not None and remaining <= 0:
            budget = round(cb.time_elapsed() + remaining, 6)  # trainer.max_time, in seconds
            return f"the time budget trainer.max_time={budget:g} s ran out at step {step}"
    return None


def stop_reason(trainer: L.Trainer) -> str:
    """Why a `fit` that returned normally ended, in Lightning's order of checks (max steps, then max
    epochs, then a callback's stop request), e.g. "it reached trainer.max_steps=500 (step 500)"."""
    step = trainer.global_step
    if trainer.max_steps and trainer.max_steps > 0 and step >= trainer.max_steps:
        return f"it reached trainer.max_steps={trainer.max_steps} (step {step})"
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs > 0 and trainer.current_epoch >= max_epochs:
        return f"it reached trainer.max_epochs={max_epochs} (step {step})"
    reason = _early_stop(trainer, step) or _time_budget(trainer, step)
    return reason or f"training ended at step {step} before any limit"
