"""Frame prediction task: trains any predictor (see `vidyn.models.interface.Predictor`).

Recurrent / autoregressive models that implement `rollout` are trained as OpenSTL trains them: on the
next-frame loss over all T_in + T_out - 1 steps, with (reverse) scheduled sampling deciding which
decoder inputs are ground truth. Every other predictor (continuous-time models such as Vid-ODE) is
trained on its `forward` from context to targets.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.metrics import frame_metrics
from vidyn.tasks import optim as optim_lib
from vidyn.tasks.sampling import sample_truth_mask

MODES = ("extrapolate", "interpolate")
LOSSES = ("mse", "l1", "l1_diff")


def split_clip(
    frames: Tensor, times: Tensor, num_context: int, num_future: int, mode: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut a clip `(B, T, C, H, W)` with times `(B, T)` into (context, context_times, target, target_times).

    extrapolate: the first num_context frames predict the next num_future.
    interpolate: Vid-ODE's protocol — observe the even frames of the first 2*num_context - 1 frames and
    predict the odd ones between them (num_future is then num_context - 1).
    """
    T = frames.shape[1]
    if mode == "extrapolate":
        if num_context + num_future > T:
            raise VidynError(
                f"clips have {T} frames but num_context + num_future = {num_context + num_future}; "
                "lower them or raise the dataset's num_frames"
            )
        ctx, tgt = slice(0, num_context), slice(num_context, num_context + num_future)
        return frames[:, ctx], times[:, ctx], frames[:, tgt], times[:, tgt]
    if mode == "interpolate":
        span = 2 * num_context - 1
        if span > T:
            raise VidynError(f"interpolation with {num_context} observed frames needs clips of {span} frames")
        return frames[:, 0:span:2], times[:, 0:span:2], frames[:, 1:span:2], times[:, 1:span:2]
    raise VidynError(f"unknown prediction mode {mode!r}; choose one of: {', '.join(MODES)}")


def reconstruction_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l1_diff":  # Vid-ODE: L1 on frames + L1 on temporal differences
        loss = F.l1_loss(pred, target)
        if pred.shape[1] > 1:
            loss = loss + F.l1_loss(pred.diff(dim=1), target.diff(dim=1))
        return loss
    raise VidynError(f"unknown loss {kind!r}; choose one of: {', '.join(LOSSES)}")


class PredictionTask(L.LightningModule):
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
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise VidynError(f"unknown prediction mode {mode!r}; choose one of: {', '.join(MODES)}")
        if loss not in LOSSES:
            raise VidynError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
        if mode == "interpolate" and not getattr(model, "continuous_time", False):
            raise VidynError("interpolation needs a continuous-time model (e.g. vid_ode or linear)")
        self.model = model
        self.num_context, self.num_future, self.mode, self.loss_kind = num_context, num_future, mode, loss
        self.optim_cfg, self.total_steps, self.warmup_steps = optim, total_steps, warmup_steps
        self.sampling_stop_step = max(1, int(sampling_stop_fraction * total_steps))
        self.uses_rollout = hasattr(model, "rollout") and mode == "extrapolate"

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

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
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
            ctx, ctx_t, tgt, tgt_t = split_clip(frames, times, self.num_context, self.num_future, self.mode)
            pred = self.model(ctx, ctx_t, tgt_t)
            loss = reconstruction_loss(pred, tgt, self.loss_kind)
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        ctx, ctx_t, tgt, tgt_t = split_clip(
            batch["frames"], batch["times"], self.num_context, self.num_future, self.mode
        )
        pred = self.model(ctx, ctx_t, tgt_t).clamp(0, 1)
        per_frame = frame_metrics(pred, tgt, names=("mse", "psnr", "ssim"))
        bs = pred.shape[0]
        self.log("val/loss", per_frame["mse"].mean(), prog_bar=True, sync_dist=True, batch_size=bs)
        self.log("val/psnr", per_frame["psnr"].mean(), sync_dist=True, batch_size=bs)
        self.log("val/ssim", per_frame["ssim"].mean(), prog_bar=True, sync_dist=True, batch_size=bs)

    def configure_optimizers(self) -> dict:
        return optim_lib.configure(
            self.model.parameters(), self.optim_cfg, self.total_steps, self.warmup_steps
        )
