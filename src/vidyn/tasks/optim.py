"""Optimisers and the warmup + cosine learning-rate schedule shared by every task.

The cosine runs over `total_steps` (trainer.max_steps). With `optim.budget_schedule` it ends at whichever
budget runs out first, the steps or trainer.max_time: `BudgetClock` (a callback the engine adds when there
is a time budget) tells each `WarmupCosineLR` the fraction of the time budget used, and the schedule's
progress is the larger of the two fractions. Under a time budget a step-based cosine is cut where it
happens to be when the time runs out (sde_video's quick config: at 17% of the peak rate), and how far it
got depends on the machine's speed; following the budget, every run anneals fully. The price is
reproducibility: the rate at a given step then depends on the wall clock, as the number of steps under
trainer.max_time already does. Off in the shipped configs: neither generator's quick config gained from
it (docs/generation.md, session 27).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Timer

from vidyn.errors import VidynError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax}


def build_optimizer(
    params: Iterable[Any],
    *,
    optimizer: str,
    lr: float,
    weight_decay: float,
    betas: list[float] | tuple[float, float],
) -> torch.optim.Optimizer:
    if optimizer not in OPTIMIZERS:
        raise VidynError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[optimizer](params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))


def warmup_cosine(
    step: int, *, warmup_steps: int, total_steps: int, min_ratio: float, schedule: str = "cosine",
    budget_used: float = 0.0,
) -> float:  # fmt: skip
    """LR multiplier: linear warmup from ~0 to 1 over warmup_steps, then cosine down to min_ratio.

    `step` counts optimiser steps (after gradient accumulation), as Lightning's "step" interval does.
    `budget_used`: the fraction of another budget (time) used; the cosine's progress is the larger of it
    and the steps' (the warmup stays in steps).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise VidynError(f"unknown lr schedule {schedule!r}; choose cosine or constant")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max((step - warmup_steps) / span, budget_used))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def configure(params: Iterable[Any], optim: dict[str, Any], total_steps: int, warmup_steps: int) -> dict:
    """Lightning's `configure_optimizers` answer for a parameter list and an `optim` config section."""
    opt = build_optimizer(
        params,
        optimizer=optim["optimizer"],
        lr=optim["lr"],
        weight_decay=optim["weight_decay"],
        betas=optim["betas"],
    )

    sched = WarmupCosineLR(
        opt, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=optim["min_lr_ratio"],
        schedule=optim["schedule"], follow_budget=bool(optim.get("budget_schedule", False)),
    )  # fmt: skip
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """`warmup_cosine` as a scheduler. With `follow_budget`, `budget_used` (set by `BudgetClock`, kept in
    the state dict so a resumed run continues where it was) also drives the cosine."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float,
        schedule: str, follow_budget: bool = False,
    ) -> None:  # fmt: skip
        self.follow_budget, self.budget_used = follow_budget, 0.0
        factor = functools.partial(
            warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio,
            schedule=schedule,
        )  # fmt: skip
        super().__init__(optimizer, lambda step: factor(step, budget_used=self._used()))

    def _used(self) -> float:
        return self.budget_used if self.follow_budget else 0.0

    def state_dict(self) -> dict:
        """LambdaLR's state without `follow_budget`: on resume the config decides it, the state keeps the
        budget used."""
        return {k: v for k, v in super().state_dict().items() if k != "follow_budget"}


class BudgetClock(Callback):
    """After each training batch, tells every `WarmupCosineLR` that follows the budget the fraction of
    trainer.max_time used (the Timer's training time, validation rounds included, as the budget counts it);
    automatic optimisation steps the schedulers after this hook, manual optimisation (GANs) at its next
    step. Under DDP rank 0's fraction is broadcast, so every rank steps at the same rate (as Lightning's
    Timer broadcasts its stop)."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: object, **kwargs: object) -> None:
        configs = trainer.lr_scheduler_configs
        scheds = [s for c in configs if isinstance(s := c.scheduler, WarmupCosineLR) and s.follow_budget]
        if not scheds:  # the shipped configs: nothing to do on this per-batch path
            return
        timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]  # type: ignore[attr-defined]
        remaining = timers[0].time_remaining() if timers else None  # None: no trainer.max_time
        if remaining is None:
            return
        elapsed = timers[0].time_elapsed()
        used = min(1.0, elapsed / max(elapsed + remaining, 1e-9))  # elapsed + remaining: the budget
        if trainer.world_size > 1:
            used = float(trainer.strategy.broadcast(used, src=0))
        for sched in scheds:
            sched.budget_used = used
