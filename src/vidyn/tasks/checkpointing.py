"""Checkpoints that a kill -9 cannot break and that resume to the exact state: `last.ckpt` and its writer.

`AtomicCheckpointIO` writes every checkpoint through `vidyn.fileio.atomic_path` (temporary file, fsync,
rename), so a process killed while writing leaves the previous checkpoint intact; Lightning's own writer
opens the destination in place.

`LatestCheckpoint` keeps `last.ckpt` the latest state of the run: after every `every_n_steps` optimiser
steps, after every validation, at the last step of every epoch and at the step where training stops
(max_steps, max_time, early stopping, a signal). It saves only where Lightning's loops restart exactly:
at the end of a training batch or of a validation, never in the middle of gradient accumulation, and
after a due validation rather than before it (a checkpoint taken before would resume past it). Not in
`on_train_epoch_end`: resumed from there, Lightning 2.6 trains one more batch in the finished epoch.
The engine makes the best checkpoint and early stopping act at validation end for the same reason. Beside
Lightning's state it stores what Lightning does not: the global random states (torch, numpy, random;
restored at the first step after resuming) and the training sampler's position
(`vidyn.data.datamodule.ResumableRandomSampler`), so a resumed run sees the same batches in the same
order and draws the same random numbers as a run that was never interrupted.
"""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vidyn.fileio import atomic_path
from vidyn.tasks import faults
from vidyn.tasks.guards import NonFiniteError

RESUME_KEY = "vidyn_resume"  # the checkpoint entry holding the random states and the sampler position


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, writing to a temporary file renamed over the destination."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            # A test hook: a test kills the process here, with half a checkpoint written.
            faults.point("checkpoint", int(checkpoint.get("global_step", -1)))
            f.write(data[half:])


def _rng_states() -> dict[str, Any]:
    """The global random states, in types `torch.load(weights_only=True)` reads (no numpy arrays)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _update_optim_states(checkpoint: dict[str, Any], update: dict[str, Any]) -> None:
    scale = update.get("lr_scale", 1.0)
    for opt in checkpoint.get("optimizer_states", []) if update else []:
        for group in opt.get("param_groups", []):
            for key in ("lr", "initial_lr"):
                if key in group:
                    group[key] *= scale
            group.update({k: update[k] for k in ("weight_decay", "betas") if k in update and k in group})
    for sched in checkpoint.get("lr_schedulers", []) if update else []:
        for key in ("base_lrs", "_last_lr"):
            if key in sched:
                sched[key] = [v * scale for v in sched[key]]


class LatestCheckpoint(Checkpoint):
    """Saves `<dirpath>/last.ckpt` at every point a run can resume from exactly (see the module docstring).

    stop_requested: a callable polled after each save point; when it returns a reason (e.g. "SIGTERM"),
    the callback saves the state there and raises `StopRequested` to end the run. optim_update: optimiser
    settings changed on resume (`lr_scale`, `weight_decay`, `betas`), written into the checkpoint's
    optimiser and schedule states before Lightning restores them.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int = 100,
        stop_requested: Any = None,
        optim_update: dict[str, Any] | None = None,
    ) -> None:
        self.dirpath, self.every_n_steps = Path(dirpath), max(0, int(every_n_steps))
        self.stop_requested = stop_requested or (lambda: None)
        self.optim_update = optim_update or {}
        self.path = self.dirpath / "last.ckpt"
        self.saved_step: int | None = None  # global step of the last save (by this process)
        self._pending_rng: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------- save points
    def _save(self, trainer: L.Trainer) -> None:
        # A finite loss and gradient can still step into inf weights (a huge learning rate): never let such
        # a state replace the last good checkpoint.
        for name, param in trainer.lightning_module.named_parameters():
            if not bool(torch.isfinite(param).all()):
                raise NonFiniteError(trainer.global_step, f"non-finite weights after the update ({name})")
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step

    def _stop_if_requested(self, trainer: L.Trainer) -> None:
        reason = self.stop_requested()
        if reason:
            if self.saved_step != trainer.global_step:
                self._save(trainer)
            raise StopRequested(reason, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        loop = trainer.fit_loop.epoch_loop
        if loop._should_accumulate():
            return  # mid-accumulation: not a step
        if loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            return  # a validation follows: on_validation_end saves after it
        step = trainer.global_step
        last = trainer.should_stop or (trainer.max_steps > 0 and step >= trainer.max_steps)
        if (
            last
            or loop.batch_progress.is_last_batch
            or (self.every_n_steps and step % self.every_n_steps == 0)
        ):
            self._save(trainer)
        self._stop_if_requested(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._save(trainer)
            self._stop_if_requested(trainer)

    # ---------------------------------------------------------------------------- resume state
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        sampler = getattr(trainer.datamodule, "train_sampler", None)
        checkpoint[RESUME_KEY] = {
            "rng": _rng_states(),
            "sampler": None
            if sampler is None
            else sampler.position(progress.current.processed, epoch_over=progress.is_last_batch),
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(RESUME_KEY) or {}
        self._pending_rng = state.get("rng")
        _update_optim_states(checkpoint, self.optim_update)
        if state.get("sampler") is not None and hasattr(trainer.datamodule, "resume_sampler"):
            trainer.datamodule.resume_sampler(state["sampler"])
            # Lightning cannot see that this loader resumes mid-epoch and would warn that it does not.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Restored here, not when the checkpoint is read: building the loaders and the first fetch must not
        # move the random streams away from where the interrupted run left them.
        if self._pending_rng is not None:
            _set_rng_states(self._pending_rng)
            self._pending_rng = None

    @property
    def state_key(self) -> str:
        return "LatestCheckpoint"


class StopRequested(Exception):
    """Raised by `LatestCheckpoint` to end a run that was asked to stop, after its state was saved."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped by {reason} at step {step}")
        self.reason, self.step = reason, step
