"""Frame prediction task: trains any predictor (see `vidyn.models.interface.Predictor`).

Recurrent / autoregressive models that implement `rollout` are trained as OpenSTL trains them: on the
next-frame loss over all T_in + T_out - 1 steps, with (reverse) scheduled sampling deciding which
decoder inputs are ground truth. Every other predictor (continuous-time models such as Vid-ODE) is
trained on its `forward` from context to targets.

Vid-ODE (Park et al., AAAI 2021) is trained as its paper and official code train it: `loss: vid_ode` is
L1 on the frames plus L1 between the model's difference output D and the true frame differences
(`vid_ode_reconstruction_loss` on `forward_components`), and `adversarial_weight > 0` (the paper: 0.003)
adds LSGAN terms from an image and a sequence discriminator that this task owns (they are never part of
the exported model), trained by manual optimisation: one discriminator step, then one generator step
against the updated discriminators, per batch. The official code computes both losses before either step;
modern autograd refuses a generator backward through discriminator weights changed in place, so the
generator here sees the discriminators after their step. Two loss terms beyond the paper are options:
`pyramid_scales` adds the L1 on average-pooled frames (`pyramid_l1`) and `warp_weight` Super SloMo's
warping loss for `interpolation=bidirectional` (`bidirectional_warp_loss`). Solver statistics
(function evaluations per clip and per predicted frame) are logged for models that count them
(`last_nfe`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
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
from vidyn.models.vid_ode_loss import bidirectional_warp_loss, pyramid_l1, vid_ode_reconstruction_loss
from vidyn.tasks import optim as optim_lib
from vidyn.tasks.sampling import sample_truth_mask

MODES = ("extrapolate", "interpolate", "irregular")
CONTINUOUS_MODES = ("interpolate", "irregular")  # modes that need a continuous-time model
LOSSES = ("mse", "l1", "l1_diff", "vid_ode")
EVAL_SPLIT_SEED = 0  # the `irregular` split used when no generator is given (validation, evaluation)


def irregular_split(
    span: int, num_context: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Sorted (observed, target) indices of the `irregular` mode over the first `span` frames of a clip.

    Frame 0 is always observed (predictors answer at or after their first observation); the last observed
    frame L is drawn uniformly from `num_context - 1 .. span - 1` and the other `num_context - 2` observed
    frames uniformly without replacement between them. Every other frame is a target: those before L are
    interpolation targets, those after it (0 to `span - num_context` of them, uniformly) extrapolation
    targets. `generator=None` uses a fixed seed, so evaluation sees the same split every time.
    """
    if not 1 <= num_context < span:
        raise VidynError(
            f"irregular mode needs 1 <= num_context < num_context + num_future; got {num_context} of {span}"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(EVAL_SPLIT_SEED)
    observed = torch.zeros(span, dtype=torch.bool)
    observed[0] = True
    if num_context > 1:
        last = int(torch.randint(num_context - 1, span, (1,), generator=gen))
        observed[last] = True
        observed[torch.randperm(last - 1, generator=gen)[: num_context - 2] + 1] = True
    return observed.nonzero().squeeze(1), (~observed).nonzero().squeeze(1)


def split_indices(
    num_frames: int, num_context: int, num_future: int, mode: str, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Clip indices (context, targets) of a prediction mode; see `split_clip`."""
    if mode == "extrapolate":
        if num_context + num_future > num_frames:
            raise VidynError(
                f"clips have {num_frames} frames but num_context + num_future = {num_context + num_future}; "
                "lower them or raise the dataset's num_frames"
            )
        return torch.arange(num_context), torch.arange(num_context, num_context + num_future)
    if mode == "interpolate":
        span = 2 * num_context - 1
        if span > num_frames:
            raise VidynError(f"interpolation with {num_context} observed frames needs clips of {span} frames")
        return torch.arange(0, span, 2), torch.arange(1, span, 2)
    if mode == "irregular":
        if num_context + num_future > num_frames:
            raise VidynError(
                f"irregular mode draws from the first num_context + num_future = {num_context + num_future} "
                f"frames but clips have {num_frames}; lower them or raise the dataset's num_frames"
            )
        return irregular_split(num_context + num_future, num_context, generator)
    raise VidynError(f"unknown prediction mode {mode!r}; choose one of: {', '.join(MODES)}")


def split_clip(
    frames: Tensor,
    times: Tensor,
    num_context: int,
    num_future: int,
    mode: str,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut a clip `(B, T, C, H, W)` with times `(B, T)` into (context, context_times, target, target_times).

    extrapolate: the first num_context frames predict the next num_future.
    interpolate: Vid-ODE's protocol — observe the even frames of the first 2*num_context - 1 frames and
    predict the odd ones between them (num_future is then num_context - 1).
    irregular: Vid-ODE's irregular sampling — among the first num_context + num_future frames (at the
    clip's own, possibly irregular, timestamps) a random subset of num_context frames, always holding frame
    0, is observed and the other num_future frames are predicted, both between observations and after the
    last one (`irregular_split`; one subset per call, shared by the batch, drawn from `generator`, or a
    fixed one when it is None). Targets are in time order in every mode.
    """
    ctx, tgt = split_indices(frames.shape[1], num_context, num_future, mode, generator)
    return frames[:, ctx], times[:, ctx], frames[:, tgt], times[:, tgt]


def solver_stats(model: nn.Module, context_times: Tensor, target_times: Tensor) -> dict[str, float] | None:
    """ODE function evaluations of the model's last forward, per clip and per predicted frame.

    For models that count them in `last_nfe = {"encoder": n, "decoder": m}` (Vid-ODE), summed over the
    solves of one forward. Vid-ODE solves together the clips whose times relative to their first context
    time are equal (one solve for a regular grid, one per clip for irregular clips), so the NFE of one clip
    is the sum divided by the number of such groups. Returns `{"nfe_encoder", "nfe_decoder"}` per clip,
    `"nfe_per_frame"` = (encoder + decoder) per clip / predicted frames, and `"solves"`; None for models
    without `last_nfe`.
    """
    nfe = getattr(model, "last_nfe", None)
    if not isinstance(nfe, dict):
        return None
    ctx = context_times if context_times.dim() == 2 else context_times.unsqueeze(0)
    tgt = target_times if target_times.dim() == 2 else target_times.unsqueeze(0)
    tgt = tgt.expand(ctx.shape[0], -1)
    t0 = ctx[:, :1].double()
    rel = torch.cat([(ctx.double() - t0).float(), (tgt.double() - t0).float()], dim=1)  # as vid_ode groups
    solves = int(torch.unique(rel, dim=0).shape[0])
    enc, dec = nfe.get("encoder", 0) / solves, nfe.get("decoder", 0) / solves
    return {
        "nfe_encoder": enc,
        "nfe_decoder": dec,
        "nfe_per_frame": (enc + dec) / max(1, tgt.shape[1]),
        "solves": float(solves),
    }


def reconstruction_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l1_diff":  # any model: L1 on frames + on their differences (Vid-ODE's own is "vid_ode")
        loss = F.l1_loss(pred, target)
        if pred.shape[1] > 1:
            loss = loss + F.l1_loss(pred.diff(dim=1), target.diff(dim=1))
        return loss
    if kind == "vid_ode":
        raise VidynError("loss vid_ode is computed by PredictionTask from the model's forward_components")
    raise VidynError(f"unknown loss {kind!r}; choose one of: {', '.join(LOSSES)}")


class PredictionTask(L.LightningModule):
    """Trains a predictor on `mode` splits of its clips (see `split_clip`) with the `loss` of the config.

    `adversarial_weight > 0` switches to manual optimisation with Vid-ODE's discriminators (module
    docstring): generator and discriminator optimisers both follow `optim` and its LR schedule, stepped
    here; gradients are clipped here to `gradient_clip_val` (the Trainer must not clip, and gradient
    accumulation is not supported). Only the discriminator's step is not counted as a Trainer step, so
    `global_step` and `trainer.max_steps` count batches as in automatic optimisation.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_context: int,
        num_future: int,
        mode: str = "extrapolate",
        loss: str = "mse",
        optim: dict[str, Any],
        total_steps: int,
        warmup_steps: int = 0,
        sampling_stop_fraction: float = 0.5,
        adversarial_weight: float = 0.0,
        gradient_clip_val: float | None = None,
        warp_weight: float = 0.0,
        pyramid_scales: tuple[int, ...] | list[int] = (),
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise VidynError(f"unknown prediction mode {mode!r}; choose one of: {', '.join(MODES)}")
        if loss not in LOSSES:
            raise VidynError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
        if mode in CONTINUOUS_MODES and not getattr(model, "continuous_time", False):
            raise VidynError(
                f"mode {mode!r} needs a continuous-time model (e.g. vid_ode); {type(model).__name__} is "
                "discrete-time: use task.mode=extrapolate"
            )
        self.model = model
        self.num_context, self.num_future, self.mode, self.loss_kind = num_context, num_future, mode, loss
        self.optim_cfg, self.total_steps, self.warmup_steps = optim, total_steps, warmup_steps
        self.sampling_stop_step = max(1, int(sampling_stop_fraction * total_steps))
        self.uses_rollout = hasattr(model, "rollout") and mode == "extrapolate"
        if loss == "vid_ode" and (self.uses_rollout or not hasattr(model, "forward_components")):
            raise VidynError(
                f"loss vid_ode needs a model with forward_components (vid_ode), not {type(model).__name__}; "
                "use task.loss=l1_diff for other models"
            )
        if warp_weight < 0 or any(not isinstance(k, int) or k < 2 for k in pyramid_scales):
            raise VidynError(
                f"task.warp_weight must be >= 0 and task.pyramid_scales integers >= 2; got {warp_weight}, "
                f"{list(pyramid_scales)}"
            )
        if (warp_weight > 0 or pyramid_scales) and loss != "vid_ode":
            raise VidynError(
                "task.warp_weight and task.pyramid_scales extend loss vid_ode; set task.loss=vid_ode"
            )
        if warp_weight > 0 and getattr(model, "interpolation", None) != "bidirectional":
            raise VidynError(
                "task.warp_weight needs vid_ode with interpolation=bidirectional "
                "(set model.args.interpolation=bidirectional or task.warp_weight=0)"
            )
        self.warp_weight, self.pyramid_scales = float(warp_weight), tuple(pyramid_scales)
        if adversarial_weight < 0:
            raise VidynError(f"task.adversarial_weight must be >= 0; got {adversarial_weight}")
        self.adversarial_weight, self.gradient_clip_val = float(adversarial_weight), gradient_clip_val
        self.split_seed = int(torch.initial_seed()) % 2**31  # the run's seed: random splits differ per seed
        if adversarial_weight > 0:
            channels = getattr(model, "in_channels", None)
            if self.uses_rollout or not isinstance(channels, int):
                raise VidynError(
                    "adversarial training needs a predictor trained on forward with an in_channels attribute "
                    f"(e.g. vid_ode), not {type(model).__name__}; set task.adversarial_weight=0"
                )
            self.automatic_optimization = False
            self.image_discriminator = ImageDiscriminator(channels)
            length = {
                "extrapolate": num_context + 1,
                "interpolate": 2 * num_context - 1,
                "irregular": num_context + num_future,
            }[mode]
            self.sequence_discriminator = SequenceDiscriminator(channels, num_frames=length)

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
        frames, times = batch["frames"], batch["times"]
        gen = None
        if train and self.mode == "irregular":
            gen = torch.Generator().manual_seed(self.split_seed + 1_000_003 * self.global_step + batch_idx)
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
        """(predicted frames, reconstruction loss) from `forward` (or Vid-ODE's components); logs NFE."""
        if self.loss_kind == "vid_ode":
            parts = self.model.forward_components(s["context"], s["context_times"], s["target_times"])
            pred = parts["frames"]
            loss = vid_ode_reconstruction_loss(
                pred, s["target"], parts["start_frame"], parts["difference"], parts["chain_start"]
            ) + pyramid_l1(pred, s["target"], self.pyramid_scales)
            if self.warp_weight > 0:
                loss = loss + self.warp_weight * bidirectional_warp_loss(
                    parts, s["target"], self.pyramid_scales
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
                self.global_step,
                **self.schedule_kwargs(kind),
            ).to(clip.device)
            if getattr(self.model, "continuous_time", False):
                # Continuous-time autoregressive models (the Transformer) condition on real timestamps.
                next_frames, aux = self.model.rollout(clip, mask, times=times[:, : clip.shape[1]])
            else:
                next_frames, aux = self.model.rollout(clip, mask)
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
