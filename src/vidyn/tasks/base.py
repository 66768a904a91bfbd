"""What every task shares: the run facts the engine hands it, the hooks the engine calls, and the registry.

A task is a LightningModule that owns a model and its loss (Lightning's "the task is the system"). Task
kinds are registered in `vidyn.registry.TASKS` under the model family they train; a task's builder (its
class) takes `(model, run)` from the engine and the config's `task.args` as explicit typed keywords, so
`task: {name: prediction, args: {...}}` is checked against that signature exactly as `model` and `data`
are checked against theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from vidyn.errors import VidynError
from vidyn.registry import TASKS


@dataclass(frozen=True)
class TaskRun:
    """Facts about the run a task trains in, set by the engine (never by `task.args`).

    optim: the config's `optim` section as a dict (`vidyn.tasks.optim.configure`); total_steps and
    warmup_steps: optimiser steps of the whole run and of its warm-up; gradient_clip_val: the norm tasks
    with manual optimisation clip to themselves; class_names: the training data's label vocabulary (empty
    when it has none), for classifiers and class-conditional generators.
    """

    optim: dict[str, Any]
    total_steps: int
    warmup_steps: int = 0
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    class_names: tuple[str, ...] = field(default_factory=tuple)


class VidynTask(L.LightningModule):
    """Base of vidyn's tasks: the hooks `vidyn.api.train` calls beside Lightning's own."""

    model: nn.Module

    def extra_callbacks(self) -> list[Callback]:
        """Callbacks this task needs beside the engine's (e.g. progressive unfreezing)."""
        return []

    def after_fit(self, datamodule: Any, say: Callable[[str], None]) -> None:
        """Work on the weights to be exported, once they are loaded, before the export (default: none)."""

    def export_extra(self) -> dict[str, Any]:
        """Fields to store in the exported model's model.json beside name/args/config (e.g. class names)."""
        return {}

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's `log`; scalar training terms (`train/...`) are also kept for the step's finiteness
        check (`vidyn.tasks.guards.FiniteCheck`), so every task names the loss term that went NaN.

        A tensor on another device than the task's (a host-side statistic of a GPU run) is moved to the
        task's device first: Lightning keeps each logged key's running value on the device of its first
        value, then moves its results to the module's device, and the next step's host tensor failed
        with "Expected all tensors to be on the same device" (every GPU run of the prediction and gan
        tasks did, found on an H200: docs/speed.md)."""
        if isinstance(value, torch.Tensor) and value.device != self.device:
            value = value.to(self.device)
        if name.startswith("train/") and isinstance(value, torch.Tensor) and value.numel() == 1:
            terms = self.__dict__.get("_vidyn_train_terms")
            if terms is not None:
                terms[name] = value.detach()
        super().log(name, value, *args, **kwargs)


def resolved_task_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A task's arguments with its builder's defaults filled in (what a run used)."""
    TASKS.check_kwargs(name, args)
    return {**TASKS.get(name).defaults(), **args}


def build_task(name: str, args: dict[str, Any], model: nn.Module, run: TaskRun) -> VidynTask:
    """Build registered task `name` for `model`; refuses a model of another family than the task trains."""
    entry = TASKS.get(name)
    family = getattr(model, "vidyn_spec", {}).get("family")
    if family is not None and family != entry.family:
        choices = ", ".join(n for n in TASKS.names(family)) or "none"
        raise VidynError(
            f"task {name!r} trains {entry.family}s but the model is a {family}; set task.name to one of: "
            f"{choices}"
        )
    return TASKS.build(name, model, run, **args)
