"""`latent_sde`: trains latent-SDE generators (`sde_video`) on their negative ELBO.

The objective is Li et al.'s ("Scalable Gradients for Stochastic Differential Equations", AISTATS
2020; torchsde's `examples/latent_sde_lorenz.py`): -log p(x | z) + beta * (KL(z0) + path KL), computed
by the model's `elbo(frames, times, num_context=..., labels=..., kl_weight=..., drop_condition=...)`.
beta is annealed linearly as the reference's `LinearScheduler` does: beta = kl_max * min(1, (step + 1) /
kl_anneal_steps) (the reference: 500 of 5,000 iterations, max 1). The prior sees the first `num_context`
frames and the label; each is dropped per clip with probability `drop_condition`, so one model serves
unconditional, frame-, class- and frame+class-conditioned sampling.

Logged separately (the torchsde users' most common failure is a diffusion that collapses to zero):
`train/nll`, `train/kl_z0`, `train/kl_path`, `train/consistency`, `train/diffusion` (mean g along the
posterior path), `train/recon_mse`, `train/kl_weight` and `train/kl_path_weight`, solver counts; with
`class_weight`, `train/class_real` and `train/class_prior` (the class-consistency term,
`vidyn.tasks.prompt_consistency`).
Validation: the negative ELBO at beta = 1 with the condition kept (`val/loss`), and its terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.motion_classifier import build_motion_classifier
from vidyn.registry import TASKS
from vidyn.tasks import optim as optim_lib
from vidyn.tasks.base import TaskRun, VidynTask
from vidyn.tasks.gan_setup import class_names_for
from vidyn.tasks.generator_progress import GeneratorProgress
from vidyn.tasks.prompt_consistency import class_consistency
from vidyn.tasks.z0_refit import check_refit, refit_z0

TERMS = ("nll", "kl_z0", "kl_path", "consistency", "diffusion", "recon_mse", "z0_sampler", "z0_reader")


def kl_weight_at(step: int, *, anneal_steps: int, kl_max: float = 1.0) -> float:
    """beta at optimiser step `step` (0-based): kl_max * min(1, (step + 1) / anneal_steps); kl_max when
    anneal_steps is 0."""
    if anneal_steps <= 0:
        return kl_max
    return kl_max * min(1.0, (step + 1) / anneal_steps)


def kl_path_weight_at(step: int, *, early: float, kl_max: float, hold: int, release: int) -> float:
    """The path KL's weight at optimiser step `step` (0-based) under `kl_path_early`: `early` for the
    first `hold` steps, then linear to `kl_max` over `release` steps, `kl_max` after."""
    if step < hold:
        return early
    if step >= hold + release:
        return kl_max
    return early + (kl_max - early) * (step - hold + 1) / release


def _check_args(
    model: nn.Module, num_context: int, num_frames: int | None, kl_anneal_steps: int, kl_max: float,
    drop_condition: float,
) -> None:  # fmt: skip
    if not callable(getattr(model, "elbo", None)):
        raise VidynError(
            f"task latent_sde trains models with an elbo(...) method (e.g. sde_video); "
            f"{type(model).__name__} has none: use task.name=gan for ode_gan"
        )
    if num_context < 0 or (num_frames is not None and num_frames <= num_context):
        raise VidynError(f"task.args: need num_context >= 0 and num_frames > num_context; got {num_context}")
    if kl_anneal_steps < 0 or kl_max < 0 or not 0 <= drop_condition <= 1:
        raise VidynError("task.args: need kl_anneal_steps >= 0, kl_max >= 0 and drop_condition in [0, 1]")


def _check_path_early(early: float | None, steps: Any) -> None:
    ok = isinstance(steps, list | tuple) and len(steps) == 2 and all(isinstance(n, int) for n in steps)
    if not ok or min(steps) < 0 or (early is not None and not early >= 0):
        raise VidynError(
            "task.args: need kl_path_early >= 0 (or null) and kl_path_early_steps [hold, release], two "
            f"integers >= 0; got {early!r} and {steps!r}"
        )


def _check_class_args(model: nn.Module, class_weight: float, class_start_step: int, class_fake: bool) -> None:
    if class_start_step < 0:
        raise VidynError(f"task.args: class_start_step must be >= 0; got {class_start_step}")
    if class_weight < 0 or (class_weight > 0 and int(getattr(model, "num_classes", 0) or 0) < 2):
        raise VidynError("task.args: class_weight must be >= 0, and > 0 only for a class-conditional model")
    if class_fake and not class_weight > 0:
        raise VidynError("task.args: class_fake trains the class term's classifier; set class_weight > 0")


@TASKS.register("latent_sde", family="generator")
class LatentSdeTask(VidynTask):
    """Trains a generator with `elbo(...)` (see the module docstring).

    num_context: frames the prior is conditioned on; num_frames: frames per training clip (None = the
    data's); kl_anneal_steps: steps of the linear KL warm-up (0 = none); kl_max: its final weight;
    drop_condition: per-clip probability of dropping the frames and (independently) the label;
    class_weight: weight of the class-consistency term of prompted prior samples
    (`vidyn.tasks.prompt_consistency`; 0 = off, the plain ELBO); classifier_lr: its classifier's learning
    rate (None = optim.lr; same schedule, never clipped with the generator); classifier_args: the
    `MotionClassifier`'s arguments (e.g. `{reader: mlp}`; None = its defaults); class_start_step: the
    step from which the generator pays the term (before it only the classifier learns, on real clips);
    class_fake: the classifier also learns the prompted samples as an extra class (semi-supervised GAN),
    so the generator cannot pass it with cues it has only seen on real clips; kl_path_anneal: False
    weights the path KL by kl_max from the first step (only KL(z0) is warmed up), so the posterior's drift
    correction is never cheap (whether the prior drift then carries the dynamics: docs/generation.md,
    session 14); kl_path_early: with it, the path KL is weighted by this from the first step, held for
    `kl_path_early_steps[0]` steps and then brought linearly to kl_max over `kl_path_early_steps[1]`
    steps (`kl_path_weight_at`; overrides kl_path_anneal): which drift carries the motion is decided in
    the first few hundred steps (docs/generation.md, sessions 14 and 28), and a weight that is high then
    keeps it in the prior drift, while the lower weight after lets the posterior's correction refine the
    frames; refit_steps: after training, on the weights to be exported, refit the model's ex-post
    fits (z0 sampler, law reader) for this many Adam steps of `refit_batch_size` on `refit_clips`
    training clips encoded once, learning rate `refit_lr` on a cosine to 0, stopped after
    `refit_max_time` seconds if given (`vidyn.tasks.z0_refit`; 0 = off).
    """

    def __init__(
        self,
        model: nn.Module,
        run: TaskRun,
        *,
        num_context: int = 1,
        num_frames: int | None = None,
        kl_anneal_steps: int = 500,
        kl_max: float = 1.0,
        drop_condition: float = 0.1,
        class_weight: float = 0.0,
        classifier_lr: float | None = None,
        classifier_args: dict[str, Any] | None = None,
        class_start_step: int = 0,
        class_fake: bool = False,
        kl_path_anneal: bool = True,
        kl_path_early: float | None = None,
        kl_path_early_steps: tuple[int, int] = (400, 300),
        refit_steps: int = 0,
        refit_clips: int = 4096,
        refit_batch_size: int = 64,
        refit_lr: float = 1e-3,
        refit_max_time: float | None = None,
    ) -> None:
        super().__init__()
        _check_args(model, num_context, num_frames, kl_anneal_steps, kl_max, drop_condition)
        _check_class_args(model, class_weight, class_start_step, class_fake)
        _check_path_early(kl_path_early, kl_path_early_steps)
        check_refit(model, refit_steps, refit_clips, refit_batch_size, refit_lr, refit_max_time)
        self.model = model
        self.refit = dict(steps=refit_steps, clips=refit_clips, batch_size=refit_batch_size, lr=refit_lr,
                          max_time=refit_max_time)  # fmt: skip
        self.refit_done: dict[str, Any] | None = None
        self.class_weight, self.classifier_lr = float(class_weight), classifier_lr
        self.class_start_step, self.class_fake = class_start_step, bool(class_fake)
        self.classifier = (
            build_motion_classifier(
                in_channels=model.in_channels,
                image_size=model.image_size,
                num_classes=model.num_classes + int(class_fake),  # + the generated clips' class
                args=classifier_args,
                where="task.args.classifier_args",
            )  # fmt: skip
            if class_weight > 0
            else None
        )
        self.class_names = class_names_for(model, run)
        self.num_context, self.num_frames = num_context, num_frames
        self.kl_anneal_steps, self.kl_max = kl_anneal_steps, float(kl_max)
        self.drop_condition, self.kl_path_anneal = drop_condition, bool(kl_path_anneal)
        self.kl_path_early = None if kl_path_early is None else float(kl_path_early)
        self.kl_path_early_steps = (int(kl_path_early_steps[0]), int(kl_path_early_steps[1]))
        self.optim_cfg, self.total_steps, self.warmup_steps = run.optim, run.total_steps, run.warmup_steps

    @property
    def progress_sampler(self) -> nn.Module:
        """What `GeneratorProgress` scores after each validation round: the model (no EMA here)."""
        return self.model

    def extra_callbacks(self) -> list[Any]:
        return [GeneratorProgress(num_frames=self.num_frames, class_names=list(self.class_names))]

    def kl_weight(self) -> float:
        return kl_weight_at(self.global_step, anneal_steps=self.kl_anneal_steps, kl_max=self.kl_max)

    def kl_path_weight(self) -> float | None:
        """The path KL's own weight at this step; None when it shares the KL weight (`kl_path_anneal`)."""
        if self.kl_path_early is not None:
            hold, release = self.kl_path_early_steps
            return kl_path_weight_at(
                self.global_step, early=self.kl_path_early, kl_max=self.kl_max, hold=hold, release=release
            )
        return None if self.kl_path_anneal else self.kl_max

    def _clips(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        frames, times = batch["frames"], batch["times"]
        if self.num_frames is not None:
            frames, times = frames[:, : self.num_frames], times[:, : self.num_frames]
        return frames, times

    def _elbo(
        self,
        batch: dict[str, Tensor],
        *,
        kl_weight: float,
        drop: float,
        gen: Any = None,
        path: float | None = None,
    ) -> dict:
        frames, times = self._clips(batch)
        if frames.shape[1] <= self.num_context:
            raise VidynError(
                f"clips of {frames.shape[1]} frames leave nothing to generate after num_context="
                f"{self.num_context}; raise data.args.num_frames"
            )
        labels = batch["label"].long() if self.class_names else None
        return self.model.elbo(
            frames,
            times,
            num_context=self.num_context,
            labels=labels,
            kl_weight=kl_weight,
            drop_condition=drop,
            generator=gen,
            kl_path_weight=path,
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        beta = self.kl_weight()
        path = self.kl_path_weight()  # None: the path KL shares beta
        out = self._elbo(batch, kl_weight=beta, drop=self.drop_condition, path=path)
        bs = batch["frames"].shape[0]
        self.log_dict({f"train/{k}": out[k].detach() for k in TERMS}, batch_size=bs)
        self.log("train/kl_weight", beta, batch_size=bs)
        self.log("train/kl_path_weight", beta if path is None else path, batch_size=bs)
        for key, value in getattr(self.model, "last_nfe", {}).items():
            self.log(f"train/nfe_{key}", float(value), batch_size=bs)
        loss = out["loss"]
        if self.classifier is not None:
            frames, times = self._clips(batch)
            asked = self.global_step >= self.class_start_step  # before it, only the classifier learns
            terms = class_consistency(
                self.model, self.classifier, frames, times, batch["label"].long(), self.num_context,
                with_prior=asked, fake_class=self.model.num_classes if self.class_fake else None,
            )  # fmt: skip
            self.log("train/class_real", terms.real.detach(), batch_size=bs)
            if asked:  # no prior term before class_start_step: nothing to log
                self.log("train/class_prior", terms.prior.detach(), batch_size=bs)
                if self.class_fake:
                    self.log("train/class_fake", terms.fake.detach(), batch_size=bs)
            loss = loss + terms.real + terms.fake + self.class_weight * terms.prior
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(batch_idx)  # the same noise each round: comparable values
        out = self._elbo(batch, kl_weight=1.0, drop=0.0, gen=gen)
        bs = batch["frames"].shape[0]
        self.log("val/loss", out["loss"], prog_bar=True, sync_dist=True, batch_size=bs)
        self.log_dict({f"val/{k}": out[k] for k in TERMS}, sync_dist=True, batch_size=bs)

    def configure_optimizers(self) -> dict:
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        if self.classifier is not None:
            lr = self.classifier_lr or self.optim_cfg["lr"]
            groups.append({"params": list(self.classifier.parameters()), "lr": lr})
        return optim_lib.configure(groups, self.optim_cfg, self.total_steps, self.warmup_steps)

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the ELBO's networks alone: clipped together, the ELBO's gradient norm (thousands of nats)
        would scale the classifier's gradients, and those of the model's ex-post fits (z0 sampler, law
        reader), towards zero, and their gradients would change the ELBO's clipping."""
        if not gradient_clip_val:
            return
        aside = {id(p) for p in getattr(self.model, "ex_post_parameters", list)()}
        params = [p for p in self.model.parameters() if id(p) not in aside]
        if gradient_clip_algorithm == "value":
            nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def after_fit(self, datamodule: Any, say: Callable[[str], None]) -> None:
        """With `refit_steps`, refit the model's ex-post fits on the loaded weights (`refit_z0`), on the
        device the run trained on (Lightning hands the model back on the CPU), then back where it was."""
        if not self.refit["steps"]:
            return
        home = next(self.model.parameters()).device
        trainer = self._trainer  # None outside a fit (e.g. a task built only to export)
        device = trainer.strategy.root_device if trainer is not None else home
        self.model.to(device)

        def batches() -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
            for batch in datamodule.train_dataloader():
                frames, times = self._clips(batch)
                labels = batch["label"].long().to(device) if self.class_names else None
                yield frames.to(device), times.to(device), labels

        self.refit_done = refit_z0(
            self.model, batches(), num_context=self.num_context, drop_condition=self.drop_condition,
            seed=torch.initial_seed() % 2**63, say=say, **self.refit,
        )  # fmt: skip
        self.model.to(home)

    def export_extra(self) -> dict[str, Any]:
        return {"class_names": self.class_names} | ({"z0_refit": self.refit_done} if self.refit_done else {})
