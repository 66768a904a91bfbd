"""Frame prediction task: trains any predictor (see `vidyn.models.interface.Predictor`).

Recurrent / autoregressive models that implement `rollout` are trained as OpenSTL trains them: on the
next-frame loss over all T_in + T_out - 1 steps, with (reverse) scheduled sampling deciding which
decoder inputs are ground truth. Every other predictor (continuous-time models) is trained on its
`forward` from context to targets, in the `mode` splits of `vidyn.tasks.splits`.

Losses: `mse`, `l1`, `l1_diff` (L1 on frames and on frame differences) for any model, or `model`: the
model's own (paper) loss, for predictors that define `training_loss(context, context_times, target,
target_times, **loss_args) -> (prediction, loss)` (Vid-ODE: L1 on frames plus L1 between its difference
output and the frame differences, with its optional extra terms as `loss_args`). A model may also define
`check_loss_args(**loss_args)`, called here at construction so a bad value fails before training starts.

`adversarial_weight > 0` (Vid-ODE's paper: 0.003) adds LSGAN terms from an image and a sequence
discriminator (`vidyn.models.discriminators`) that this task owns (they are never part of the exported
model), trained by manual optimisation: one discriminator step, then one generator step against the
updated discriminators, per batch. The official Vid-ODE code computes both losses before either step;
modern autograd refuses a generator backward through discriminator weights changed in place, so the
generator here sees the discriminators after their step. Solver statistics (function evaluations per
clip and per predicted frame) are logged for models that count them (`last_nfe`).

`compile_rollout` (off by default) trains through `torch.compile(model.rollout, mode=...)`: Inductor fuses
each step's gate arithmetic, and `reduce-overhead` replays the whole recurrence as CUDA graphs. Measured
in `benchmarks/bench_side_by_side.py` (docs/speed.md): 6-10x faster steps on an H200 with
`reduce-overhead`; on a CPU 1.10-1.14x at the small configuration but 0.76-0.81x at OpenSTL's 4x128 k5
one, and the first step compiles for up to 140 s, so CPU runs stay eager. The outputs are the same
(tested). The Transformer's rollout compiles in pieces (its time checks and its teacher-forced prefix
read values on the host) and recompiles when that prefix changes; CUDA-graph modes refuse gradient
accumulation.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.metrics import frame_metrics
from vidyn.models.discriminators import (
    ImageDiscriminator,
    SequenceDiscriminator,
    extrapolation_sequences,
    interpolation_sequences,
    lsgan_d_loss,
    lsgan_g_loss,
)
from vidyn.nn.compiled import compile_enabled, compiled_or_eager
from vidyn.registry import TASKS
from vidyn.tasks import optim as optim_lib
from vidyn.tasks.base import TaskRun, VidynTask
from vidyn.tasks.sampling import sample_truth_mask
from vidyn.tasks.splits import CONTINUOUS_MODES, MODES, solver_stats, split_indices, times_for

LOSSES = ("mse", "l1", "l1_diff", "model")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile


def _checked_compile_mode(mode: str | None, uses_rollout: bool, accumulate: int) -> str | None:
    if mode is None:
        return None
    if mode not in COMPILE_MODES:
        raise VidynError(
            f"task.args.compile_rollout={mode!r}: choose one of {', '.join(COMPILE_MODES)} or leave it unset"
        )
    if not uses_rollout:
        raise VidynError(
            "task.args.compile_rollout compiles a recurrent rollout; this model and mode train without one: "
            "leave it unset"
        )
    if mode in ("reduce-overhead", "max-autotune") and accumulate > 1:
        # CUDA graphs replay into the memory of the previous micro-batch's gradients (an open PyTorch issue)
        raise VidynError(
            f"task.args.compile_rollout={mode!r} uses CUDA graphs, which cannot accumulate gradients over "
            f"micro-batches (trainer.accumulate_grad_batches={accumulate}): use 'default' or "
            "'max-autotune-no-cudagraphs', or accumulate 1"
        )
    return mode


def _checked_loss_args(
    model: nn.Module, loss: str, loss_args: dict[str, Any] | None, uses_rollout: bool
) -> dict[str, Any]:
    """Validate `loss` / `loss_args` for `model` before training starts; returns the loss arguments."""
    if loss not in LOSSES:
        raise VidynError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    args = dict(loss_args or {})
    if loss != "model":
        if args:
            raise VidynError("task.args.loss_args configure a model's own loss; set task.args.loss=model")
        return args
    own = getattr(model, "training_loss", None)
    if own is None or uses_rollout:
        raise VidynError(
            f"{type(model).__name__} has no loss of its own (training_loss) for this mode; use "
            "task.args.loss=l1_diff (or mse, l1)"
        )
    valid = [p for p in inspect.signature(own).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(args) - {p.name for p in valid})
    if unknown:
        names = ", ".join(p.name for p in valid) or "(none)"
        raise VidynError(f"task.args.loss_args has unknown key(s) {', '.join(unknown)}; valid: {names}")
    if hasattr(model, "check_loss_args"):
        model.check_loss_args(**args)
    return args


def reconstruction_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l1_diff":  # any model: L1 on frames + on their differences (a model's own is "model")
        loss = F.l1_loss(pred, target)
        if pred.shape[1] > 1:
            loss = loss + F.l1_loss(pred.diff(dim=1), target.diff(dim=1))
        return loss
    raise VidynError(f"unknown loss {kind!r}; choose one of: {', '.join(LOSSES)}")


@TASKS.register("prediction", family="predictor")
class PredictionTask(VidynTask):
    """Trains a predictor on `mode` splits of its clips (`vidyn.tasks.splits.split_clip`) with `loss`.

    num_context / num_future: frames observed and predicted; mode: extrapolate | interpolate | irregular
    (the latter two need a continuous-time model); loss: mse | l1 | l1_diff | model (the model's own loss,
    module docstring) with `loss_args` for it; sampling_stop_fraction: the fraction of the run's steps at
    which scheduled sampling reaches its end state; adversarial_weight: Vid-ODE's LSGAN terms (paper
    0.003; 0 = off). With `adversarial_weight > 0` optimisation is manual: generator and discriminator
    optimisers both follow `run.optim` and its LR schedule, stepped here; gradients are clipped here to
    `run.gradient_clip_val` (the Trainer must not clip, and gradient accumulation is not supported). Only
    the discriminator's step is not counted as a Trainer step, so `global_step` and `trainer.max_steps`
    count batches as in automatic optimisation.
    """

    def __init__(
        self,
        model: nn.Module,
        run: TaskRun,
        *,
        num_context: int = 10,
        num_future: int = 10,
        mode: str = "extrapolate",
        loss: str = "mse",
        loss_args: dict[str, Any] | None = None,
        sampling_stop_fraction: float = 0.5,
        adversarial_weight: float = 0.0,
        compile_rollout: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise VidynError(f"unknown prediction mode {mode!r}; choose one of: {', '.join(MODES)}")
        if mode in CONTINUOUS_MODES and not getattr(model, "continuous_time", False):
            raise VidynError(
                f"mode {mode!r} needs a continuous-time model; {type(model).__name__} is discrete-time: "
                "use task.args.mode=extrapolate"
            )
        self.model = model
        self.num_context, self.num_future, self.mode = num_context, num_future, mode
        self.optim_cfg, self.total_steps, self.warmup_steps = run.optim, run.total_steps, run.warmup_steps
        self.sampling_stop_step = max(1, int(sampling_stop_fraction * run.total_steps))
        self.uses_rollout = hasattr(model, "rollout") and mode == "extrapolate"
        self.loss_kind, self.loss_args = loss, _checked_loss_args(model, loss, loss_args, self.uses_rollout)
        if adversarial_weight < 0:
            raise VidynError(f"task.args.adversarial_weight must be >= 0; got {adversarial_weight}")
        self.adversarial_weight, self.gradient_clip_val = float(adversarial_weight), run.gradient_clip_val
        self.split_seed = int(torch.initial_seed()) % 2**31  # the run's seed: random splits differ per seed
        self.pinned_step: int | None = None  # set to time a training step at a chosen point of the schedule
        self.compile_rollout = _checked_compile_mode(
            compile_rollout, self.uses_rollout, run.accumulate_grad_batches
        )
        if adversarial_weight > 0:
            self._add_discriminators(run)

    def _rollout(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The model's `rollout`, or it under `torch.compile(mode=compile_rollout)` (falls back to eager,
        with a warning, where compiling fails; `VIDYN_COMPILE=0` turns it off)."""
        if not self.compile_rollout:
            return self.model.rollout(*args, **kwargs)
        made = self.__dict__.get("_compiled_rollout")  # (id of the model, its compiled rollout)
        if made is None or made[0] != id(self.model):  # (a deep copy of the task gets its own)
            rollout = self.model.rollout
            made = (id(self.model), compiled_or_eager(rollout, rollout, mode=self.compile_rollout))
            self.__dict__["_compiled_rollout"] = made
        return made[1](*args, **kwargs)

    def _add_discriminators(self, run: TaskRun) -> None:
        channels = getattr(self.model, "in_channels", None)
        if self.uses_rollout or not isinstance(channels, int):
            raise VidynError(
                "adversarial training needs a predictor trained on forward with an in_channels attribute "
                f"(e.g. a continuous-time model), not {type(self.model).__name__}; set "
                "task.args.adversarial_weight=0"
            )
        if run.accumulate_grad_batches != 1:
            raise VidynError(
                "adversarial training (task.args.adversarial_weight > 0) does not support gradient "
                "accumulation; set trainer.accumulate_grad_batches=1 (raise data.batch_size instead)"
            )
        self.automatic_optimization = False
        self.image_discriminator = ImageDiscriminator(channels)
        c, f = self.num_context, self.num_future
        length = {"extrapolate": c + 1, "interpolate": 2 * c - 1, "irregular": c + f}[self.mode]
        self.sequence_discriminator = SequenceDiscriminator(channels, num_frames=length)

    @property
    def schedule_step(self) -> int:
        """The step that drives scheduled sampling and the training splits (`pinned_step` when set)."""
        return self.global_step if self.pinned_step is None else self.pinned_step

    def schedule_kwargs(self, kind: str) -> dict[str, Any]:
        """OpenSTL's schedules, rescaled from its 50k-step runs to this run's length.

        OpenSTL: standard sampling ends at 50k steps; reverse sampling turns at 25k and ends at 50k with
        an exponential time constant of 5k. Here `sampling_stop_step` plays the part of 50k.
        """
        stop = self.sampling_stop_step
        if kind == "standard":
            return {"stop_iter": stop, "changing_rate": None}
        if kind == "reverse":
            return {
                "r_step_1": stop // 2,
                "r_step_2": max(stop // 2 + 1, stop),
                "r_exp_alpha": max(1.0, stop / 10),
            }
        return {}

    def _split(self, batch: dict[str, Tensor], batch_idx: int, train: bool) -> dict[str, Tensor]:
        """context/context_times/target/target_times and the clip indices of the targets (`positions`).

        Training draws a fresh `irregular` split per batch (seeded by run seed, step and batch index, so a
        resumed run repeats it); validation always uses the fixed one.
        """
        frames, times = batch["frames"], times_for(self.model, batch["times"])
        gen = None
        if train and self.mode == "irregular":
            gen = torch.Generator().manual_seed(self.split_seed + 1_000_003 * self.schedule_step + batch_idx)
        ctx, tgt = split_indices(frames.shape[1], self.num_context, self.num_future, self.mode, gen)
        ctx, tgt = ctx.to(frames.device), tgt.to(frames.device)
        return {
            "context": frames[:, ctx],
            "context_times": times[:, ctx],
            "target": frames[:, tgt],
            "target_times": times[:, tgt],
            "positions": tgt,
            "clip": frames[:, : int(max(ctx.max(), tgt.max())) + 1],
        }

    def _predict_and_loss(self, s: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        """(predicted frames, reconstruction loss) from `forward` (or the model's own loss); logs NFE."""
        if self.loss_kind == "model":
            pred, loss = self.model.training_loss(
                s["context"], s["context_times"], s["target"], s["target_times"], **self.loss_args
            )
        else:
            pred = self.model(s["context"], s["context_times"], s["target_times"])
            loss = reconstruction_loss(pred, s["target"], self.loss_kind)
        stats = solver_stats(self.model, s["context_times"], s["target_times"])
        for key in ("nfe_encoder", "nfe_decoder", "nfe_per_frame") if stats else ():
            self.log(f"{stage}/{key}", stats[key], batch_size=pred.shape[0])
        return pred, loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.adversarial_weight > 0:
            return self._adversarial_step(batch, batch_idx)
        frames, times = batch["frames"], batch["times"]
        if self.uses_rollout:
            clip = frames[:, : self.num_context + self.num_future]
            kind = getattr(self.model, "scheduled_sampling", "standard")
            mask = sample_truth_mask(
                clip.shape[0],
                clip.shape[1],
                self.num_context,
                kind,
                self.schedule_step,
                **self.schedule_kwargs(kind),
            )  # on the host: the models read which steps see truth from it without a device sync
            if self.compile_rollout and compile_enabled():
                mask = mask.to(clip.device)  # a compiled rollout reads it on the device (CUDA graphs)
                torch.compiler.cudagraph_mark_step_begin()  # a new step for CUDA graphs' buffers
            if getattr(self.model, "continuous_time", False):
                # Continuous-time autoregressive models (the Transformer) condition on real timestamps.
                next_frames, aux = self._rollout(clip, mask, times=times[:, : clip.shape[1]])
            else:
                next_frames, aux = self._rollout(clip, mask)
            rec = reconstruction_loss(next_frames, clip[:, 1:], self.loss_kind)
            for name, value in aux.items():
                self.log(f"train/{name}", value.detach())
            loss = rec + sum(aux.values()) if aux else rec
            self.log("train/truth_fraction", mask[:, self.num_context :].float().mean(), prog_bar=False)
        else:
            _, loss = self._predict_and_loss(self._split(batch, batch_idx, train=True), "train")
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def _sequences(self, s: dict[str, Tensor], frames: Tensor) -> Tensor:
        """Clips for the sequence discriminator with `frames` (truth or prediction) at the targets.

        extrapolate: windows of num_context + 1 frames ending at each target (official `rearrange_seq`).
        interpolate / irregular: the clip's span in time order with one target at a time replaced by
        `frames` (the official `rearrange_seq_interp` replaces one of the observed frames instead, which
        needs as many targets as observations; this form is defined for any split).
        """
        if self.mode == "extrapolate":
            return extrapolation_sequences(s["context"], frames)
        return interpolation_sequences(s["clip"], frames, s["positions"])

    def _adversarial_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One discriminator step, then one generator step (reconstruction + weighted LSGAN terms)."""
        opt_g, opt_d = self.optimizers()  # type: ignore[misc]
        s = self._split(batch, batch_idx, train=True)
        pred, rec = self._predict_and_loss(s, "train")
        real, fake = s["target"], pred.detach()
        d_img, d_seq, w = self.image_discriminator, self.sequence_discriminator, self.adversarial_weight
        d_loss = w * (
            lsgan_d_loss(d_img(real), d_img(fake))
            + lsgan_d_loss(d_seq(self._sequences(s, real)), d_seq(self._sequences(s, fake)))
        )
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        self.clip_gradients(opt_d, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        # Through the strategy (precision plugin included) but not `opt_d.step()`: Lightning counts every
        # LightningOptimizer step as a global step, which would halve trainer.max_steps in batches.
        self.trainer.strategy.optimizer_step(opt_d.optimizer, lambda: None)
        self.toggle_optimizer(opt_g)  # the discriminators need no gradients in the generator's backward
        g_adv = w * (lsgan_g_loss(d_img(pred)) + lsgan_g_loss(d_seq(self._sequences(s, pred))))
        loss = rec + g_adv
        opt_g.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(opt_g, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        for scheduler in self.lr_schedulers():  # type: ignore[union-attr]
            scheduler.step()
        parts = {"reconstruction": rec, "adv_g": g_adv, "adv_d": d_loss}
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()})
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss.detach()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        s = self._split(batch, batch_idx, train=False)
        pred = self.model(s["context"], s["context_times"], s["target_times"]).clamp(0, 1)
        per_frame = frame_metrics(pred, s["target"], names=("mse", "psnr", "ssim"))
        bs = pred.shape[0]
        stats = solver_stats(self.model, s["context_times"], s["target_times"])
        if stats:
            self.log("val/nfe_per_frame", stats["nfe_per_frame"], sync_dist=True, batch_size=bs)
        self.log("val/loss", per_frame["mse"].mean(), prog_bar=True, sync_dist=True, batch_size=bs)
        self.log("val/psnr", per_frame["psnr"].mean(), sync_dist=True, batch_size=bs)
        self.log("val/ssim", per_frame["ssim"].mean(), prog_bar=True, sync_dist=True, batch_size=bs)

    def configure_optimizers(self) -> dict | tuple[dict, dict]:
        generator = optim_lib.configure(
            self.model.parameters(), self.optim_cfg, self.total_steps, self.warmup_steps
        )
        if self.adversarial_weight <= 0:
            return generator
        discriminators = [*self.image_discriminator.parameters(), *self.sequence_discriminator.parameters()]
        return generator, optim_lib.configure(
            discriminators, self.optim_cfg, self.total_steps, self.warmup_steps
        )
