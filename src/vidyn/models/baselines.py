"""Parameter-free frame-prediction baselines: copy the last frame, extrapolate each pixel linearly, or
predict the static scene.

Every learned predictor should beat these; they set the floor of the comparison tables (the "zero
motion" baseline of the video-prediction literature, and its first-order extension). `context_median`
is a sanity check of the metric itself: it predicts the per-pixel median of the context, i.e. the static
background with the moving objects erased. On sparse scenes (small objects over a black background) a
frame without the objects can beat copy_last, whose every wrong object position is paid twice; a model
that does not beat `context_median` has not learned motion, whatever its margin over copy_last. All are
continuous-time: they accept any target timestamps. They have no parameters, so `trainable = False`
tells the training engine to skip fitting them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.models.interface import batch_times
from vidyn.registry import MODELS


def _check_inputs(context: Tensor, context_times: Tensor, target_times: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes; return `(B, T_in)` and `(B, T_out)` float timestamps."""
    if context.dim() != 5 or context.shape[1] < 1:
        raise VidynError(f"context must have shape (B, T, C, H, W) with T >= 1; got {tuple(context.shape)}")
    batch, num_context = context.shape[:2]
    ctx_times = batch_times(context_times, batch)
    tgt_times = batch_times(target_times, batch)
    if ctx_times.shape[1] != num_context:
        raise VidynError(f"context has {num_context} frames but context_times has {ctx_times.shape[1]}")
    return ctx_times.to(context.device), tgt_times.to(context.device)


class CopyLast(nn.Module):
    """Predict the last context frame at every target time."""

    continuous_time = True
    trainable = False

    def forward(self, context: Tensor, context_times: Tensor, target_times: Tensor) -> Tensor:
        _, tgt_times = _check_inputs(context, context_times, target_times)
        batch, num_targets = tgt_times.shape
        # (B, 1, C, H, W) -> (B, T_out, C, H, W), materialised so callers may write into it.
        return context[:, -1:].expand(batch, num_targets, *context.shape[2:]).clone()


class LinearExtrapolation(nn.Module):
    """Per-pixel linear model in time, fitted to the two context frames nearest each target time.

    A target time inside the context span is interpolated between its two bracketing context frames;
    beyond the last (or before the first) context frame it is extrapolated along the line through the
    last (or first) two. Actual timestamps are used, per batch element, and the result is clamped to
    [0, 1]. With a single context frame it is `CopyLast`.
    """

    continuous_time = True
    trainable = False

    def forward(self, context: Tensor, context_times: Tensor, target_times: Tensor) -> Tensor:
        ctx_times, tgt_times = _check_inputs(context, context_times, target_times)
        batch, num_context = ctx_times.shape
        num_targets = tgt_times.shape[1]
        if num_context == 1:
            return context.expand(batch, num_targets, *context.shape[2:]).clone()
        if not bool((ctx_times.diff(dim=1) > 0).all()):
            raise VidynError("context_times must be strictly increasing; sort the context frames by time")
        times = ctx_times.to(torch.float64).contiguous()
        targets = tgt_times.to(torch.float64).contiguous()
        # Index of the first context time >= target; its left neighbour starts the segment used, clamped so
        # that targets outside the span use the first / last segment.
        upper = torch.searchsorted(times, targets)  # (B, T_out)
        lo = (upper - 1).clamp(0, num_context - 2)
        hi = lo + 1
        t_lo, t_hi = times.gather(1, lo), times.gather(1, hi)
        weight = ((targets - t_lo) / (t_hi - t_lo)).to(context.dtype)  # (B, T_out)
        rows = torch.arange(batch, device=context.device).unsqueeze(1)  # (B, 1) broadcasts against lo
        x_lo, x_hi = context[rows, lo], context[rows, hi]  # (B, T_out, C, H, W)
        out = x_lo + weight.view(batch, num_targets, 1, 1, 1) * (x_hi - x_lo)
        return out.clamp(0.0, 1.0)


class ContextMedian(nn.Module):
    """Predict the per-pixel median of the context frames at every target time (the static scene).

    For an even number of frames the lower of the two middle values is used (`torch.median`), so two
    frames give their per-pixel minimum.
    """

    continuous_time = True
    trainable = False

    def forward(self, context: Tensor, context_times: Tensor, target_times: Tensor) -> Tensor:
        _, tgt_times = _check_inputs(context, context_times, target_times)
        batch, num_targets = tgt_times.shape
        median = context.median(dim=1, keepdim=True).values  # (B, 1, C, H, W)
        return median.expand(batch, num_targets, *context.shape[2:]).clone()


@MODELS.register("copy_last", family="predictor")
def copy_last() -> CopyLast:
    """Baseline: repeat the last context frame at every target time (no parameters)."""
    return CopyLast()


@MODELS.register("linear", family="predictor")
def linear() -> LinearExtrapolation:
    """Baseline: per-pixel linear inter/extrapolation in time from the nearest two context frames."""
    return LinearExtrapolation()


@MODELS.register("context_median", family="predictor")
def context_median() -> ContextMedian:
    """Sanity baseline: the per-pixel median of the context frames (the static background) at every time."""
    return ContextMedian()
