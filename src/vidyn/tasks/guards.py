"""What stops a training run cleanly: a signal (SIGTERM, Ctrl-C) and a non-finite loss or gradient.

`SignalStop` turns the first SIGTERM or SIGINT into a request that `LatestCheckpoint` honours at the next
point the run can resume from exactly (it saves `last.ckpt` there and ends the run); a second Ctrl-C
interrupts at once. Lightning's own SIGTERM handling ends a single-process run wherever it is and exits
with status 0, so in a single process these handlers replace it for the duration of `fit` (Lightning
restores the previous handlers when fit ends); under DDP Lightning's handling, which tells every rank,
stays in charge.

`FiniteCheck` stops training at the first step whose logged loss terms (`train/...`, recorded by
`VidynTask.log`) or gradients are NaN or infinite, before the optimiser applies them, naming the step
and the term.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from vidyn.errors import VidynError
from vidyn.tasks import faults


class SignalStop(Callback):
    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> str | None:
        return self.reason

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.reason = signal.Signals(signum).name

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        faults._stop_requested = self
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        faults._stop_requested = lambda: None


class NonFiniteError(VidynError):
    """Training produced NaN or inf; `step` is the optimiser step that would have applied it."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"training stopped at step {step}: {what}")
        self.step, self.what = step, what


def _bad_terms(terms: dict[str, torch.Tensor]) -> list[str]:
    return [f"{name} is {float(v):g}" for name, v in terms.items() if not torch.isfinite(v).all()]


class FiniteCheck(Callback):
    """Raises `NonFiniteError` at the first non-finite loss term or gradient of a training step."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        pl_module.__dict__["_vidyn_train_terms"] = {}

    def _check_terms(self, pl_module: L.LightningModule, step: int) -> None:
        terms = pl_module.__dict__.get("_vidyn_train_terms") or {}
        if terms and not bool(torch.isfinite(torch.stack([v.float() for v in terms.values()])).all()):
            raise NonFiniteError(step, "non-finite loss: " + ", ".join(_bad_terms(terms)))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._check_terms(pl_module, trainer.global_step + 1)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            return
        names = {id(p): n for n, p in pl_module.named_parameters()}
        bad = [
            names.get(id(p), "?")
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        terms = pl_module.__dict__.get("_vidyn_train_terms") or {}
        told = ", ".join(f"{n}={float(v):.4g}" for n, v in terms.items()) or "no loss terms logged yet"
        raise NonFiniteError(
            trainer.global_step + 1,
            f"non-finite gradient in {len(bad)} tensor(s), first {bad[0]} (loss terms: {told})",
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Tasks with manual optimisation may log their terms after their optimiser steps.
        self._check_terms(pl_module, trainer.global_step)
