"""Test hooks that stop a training run at a chosen moment, for the fault tests (tests/engine/).

Inert unless the environment sets `VIDYN_TEST_FAULT=<where>@<step>[:<action>]`, where `where` is one of
`step` (inside an optimiser step: after the backward pass, before the weights change), `validation`
(after the first validation batch) or `checkpoint` (half-way through writing a checkpoint file), and
`step` the trainer's global step at that moment. Actions:

- `pause` (default): write the file named by `VIDYN_TEST_FAULT_MARKER` and wait, so a test can kill the
  process exactly there (a kill -9 needs no co-operation; the wait also ends when a stop was requested,
  so a SIGTERM sent while paused is handled like one sent during training);
- `sigterm`: send SIGTERM to this process and carry on.

A run without the variable pays one dictionary look-up per hook.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

ENV, MARKER_ENV = "VIDYN_TEST_FAULT", "VIDYN_TEST_FAULT_MARKER"
_stop_requested: Any = lambda: None  # noqa: E731  (set by vidyn.tasks.stopping while a run trains)


def _spec() -> tuple[str, int, str] | None:
    text = os.environ.get(ENV)
    if not text:
        return None
    where, _, rest = text.partition("@")
    step, _, action = rest.partition(":")
    return where, int(step), action or "pause"


def point(where: str, step: int) -> None:
    """The hook: act if the environment asks for a fault at (`where`, `step`)."""
    spec = _spec()
    if spec is None or spec[:2] != (where, step):
        return
    if spec[2] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        # Written beside it and renamed: a test polling for the file never reads it empty (the pid: a test
        # may kill it).
        part = Path(f"{marker}.part")
        part.write_text(f"{where}@{step} pid {os.getpid()}\n")
        os.replace(part, marker)
    while not _stop_requested():
        time.sleep(0.01)


def active() -> bool:
    return _spec() is not None


class FaultPoints(Callback):
    """Calls `point` inside a step and during validation (added by the engine only when `active()`)."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        point("step", trainer.global_step)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.sanity_checking:
            point("validation", trainer.global_step)
