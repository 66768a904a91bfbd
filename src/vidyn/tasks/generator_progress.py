"""Generator quality through training: seed 000 reports SSIM and FID "at epochs 10/100/200/300" as a table
and a plot; here every validation round scores the task's sampler on the first validation clips.

Per round (`metrics_by_step.json` in the run folder, rewritten atomically each round; `metrics_by_step.png`
at the end of fitting): frame change (mean |x(t+1) - x(t)|), temporal SSIM, nearest-real SSIM against the
validation clips, FD-judge against them and, for a class-conditional generator, the motion-law accuracy of
samples drawn for the clips' own labels (both with the shapes judge, `vidyn.evaluation.generation`; None
where it cannot score). The samples use fixed noise (seed 0) so the rows differ only by training. N is
small (`max_clips`, default 32): the FD-judge rows compare steps of one run, not runs of different N.
The scores are also logged as `val/fd_judge`, `val/motion_law_accuracy` and `val/nearest_real_ssim`, so
`trainer.monitor` can keep (and export) the generator of the best round: GAN losses do not rank
generators, and a GAN can get worse with more steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from vidyn.fileio import atomic_path
from vidyn.models.interface import Condition

FILE = "metrics_by_step.json"
PLOTTED = ("frame_change", "nearest_real_ssim", "fd_judge", "motion_law_accuracy")


class GeneratorProgress(Callback):
    """Scores `task.progress_sampler` (a Generator) after every validation round; see the module docstring."""

    def __init__(self, *, num_frames: int | None, class_names: list[str], max_clips: int = 32) -> None:
        """`num_frames`: frames of each validation clip scored (None = all)."""
        self.num_frames, self.class_names, self.max_clips = num_frames, list(class_names), max_clips
        self.rows: list[dict[str, Any]] = []
        self._real: tuple[Tensor, Tensor, Tensor] | None = None

    def _validation_clips(self, trainer: L.Trainer) -> tuple[Tensor, Tensor, Tensor]:
        if self._real is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
            clips, labels, times = [], [], None
            for batch in loader:
                clips.append(batch["frames"][:, : self.num_frames])
                labels.append(batch["label"].long())
                times = batch["times"][0, : self.num_frames] if times is None else times
                if sum(c.shape[0] for c in clips) >= self.max_clips:
                    break
            assert times is not None, "no validation clips"
            self._real = (
                torch.cat(clips)[: self.max_clips],
                torch.cat(labels)[: self.max_clips],
                times - times[0],
            )
        return self._real

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        from vidyn.evaluation.generation import clip_scores, fd_judge, motion_law_accuracy

        real, labels, times = self._validation_clips(trainer)
        sampler = task.progress_sampler
        conditional = bool(self.class_names) and bool(getattr(sampler, "num_classes", 0))
        device = next(sampler.parameters()).device
        cond = Condition(labels=labels.to(device)) if conditional else None
        with torch.random.fork_rng(devices=[]):
            fake = sampler.sample(
                real.shape[0], times.to(device), condition=cond, generator=torch.Generator().manual_seed(0)
            )
        fake = fake.float().clamp(0, 1).cpu()
        row: dict[str, Any] = {"step": int(trainer.global_step), "epoch": int(trainer.current_epoch)}
        row |= {k: v for k, v in clip_scores(fake, real).items() if k != "num_reference"}
        row["fd_judge"] = fd_judge(fake, real, real_split="validation clips")["value"]
        judged = motion_law_accuracy(fake, labels if conditional else None, self.class_names)
        row["motion_law_accuracy"] = judged.get("value") if conditional else None
        self.rows.append(row)
        for key in ("fd_judge", "motion_law_accuracy", "nearest_real_ssim"):  # monitorable: trainer.monitor
            if row[key] is not None:
                task.log(f"val/{key}", float(row[key]), batch_size=int(real.shape[0]))
        path = Path(trainer.default_root_dir) / FILE
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"rows": self.rows, "num_clips": int(real.shape[0])}, indent=1))

    def on_fit_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        if self.rows and trainer.is_global_zero:
            from vidyn.report.plots import plot_progress

            plot_progress(self.rows, Path(trainer.default_root_dir) / "metrics_by_step.png", PLOTTED)
