"""Optimisers and the warmup + cosine learning-rate schedule shared by every task."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

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
    step: int, *, warmup_steps: int, total_steps: int, min_ratio: float, schedule: str = "cosine"
) -> float:
    """LR multiplier: linear warmup from ~0 to 1 over warmup_steps, then cosine down to min_ratio.

    `step` counts optimiser steps (after gradient accumulation), as Lightning's "step" interval does.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise VidynError(f"unknown lr schedule {schedule!r}; choose cosine or constant")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
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

    def factor(step: int) -> float:
        return warmup_cosine(
            step,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            min_ratio=optim["min_lr_ratio"],
            schedule=optim["schedule"],
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
