"""The interfaces every model family follows, and the time-grid helpers they share.

Tensor layout at every public boundary: frames `(B, T, C, H, W)` float32 in [0, 1]; timestamps in
seconds, `(B, T)` or `(T,)` shared by the batch; labels int64.

These are Protocols, not base classes: a model is any `nn.Module` with the right methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from vidyn.errors import VidynError


@runtime_checkable
class Predictor(Protocol):
    """Frame predictor: `forward(context, context_times, target_times) -> frames at target_times`.

    context `(B, T_in, C, H, W)`, context_times `(B, T_in)` or `(T_in,)`, target_times `(B, T_out)` or
    `(T_out,)`; returns `(B, T_out, C, H, W)`. Discrete-time models accept only a regular grid that
    continues the context and raise ValueError otherwise; continuous-time models accept any times.
    """

    continuous_time: bool

    def forward(self, context: Tensor, context_times: Tensor, target_times: Tensor) -> Tensor: ...


@dataclass
class Condition:
    """What a generated clip is conditioned on; every field is optional (None = unconditional).

    frames `(B, T_c, C, H, W)` in [0, 1]: observed initial frames, at timestamps `times` `(B, T_c)` or
    `(T_c,)` in seconds; labels `(B,)` int64 class ids, where -1 means "no class" (the null label).
    B is 1 (shared by every sample) or `num_samples`.
    """

    frames: Tensor | None = None
    times: Tensor | None = None
    labels: Tensor | None = None


@runtime_checkable
class Generator(Protocol):
    """Video generator: `sample(num_samples, times, *, condition=None, generator=None) -> frames`.

    times `(T,)` or `(num_samples, T)` in seconds: the clip is produced at exactly these timestamps.
    Returns `(num_samples, T, C, H, W)` in [0, 1]; the same `generator` state gives the same samples.
    Attributes: `num_classes` (0 if the model takes no class), `in_channels`, `image_size`.
    """

    num_classes: int

    def sample(
        self,
        num_samples: int,
        times: Tensor,
        *,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """Video classifier: `forward(frames (B, T, C, H, W)) -> logits (B, num_classes)`."""

    num_classes: int

    def forward(self, frames: Tensor) -> Tensor: ...


def batch_times(times: Tensor, batch_size: int) -> Tensor:
    """Return timestamps as `(B, T)` float, expanding a shared `(T,)` vector over the batch."""
    if times.dim() == 1:
        times = times.unsqueeze(0).expand(batch_size, -1)
    if times.dim() != 2 or times.shape[0] != batch_size:
        raise ValueError(f"times must have shape (T,) or ({batch_size}, T); got {tuple(times.shape)}")
    return times.to(torch.float32)


def regular_continuation(
    context_times: Tensor, target_times: Tensor, rtol: float = 0.25
) -> tuple[float, int]:
    """Check that target times continue the context on its regular grid; return (step, num_future).

    Discrete-time predictors call this: they can only produce the next frames on the context's own
    grid. A context of one frame has no grid; its step is taken from the targets. The step is the median
    interval, and every interval may differ from it by `rtol`: real videos' presentation timestamps jitter
    (variable frame rate, rounding to the container's time base) while still being one frame apart, but
    a target half a frame off the grid is refused.
    """
    ctx = context_times if context_times.dim() == 2 else context_times.unsqueeze(0)
    tgt = target_times if target_times.dim() == 2 else target_times.unsqueeze(0)
    both = torch.cat([ctx.to(torch.float64), tgt.to(torch.float64).expand(ctx.shape[0], -1)], dim=1)
    diffs = both.diff(dim=1)
    step = float(diffs.median()) if diffs.numel() else 1.0
    if step <= 0 or not torch.allclose(diffs, torch.full_like(diffs, step), rtol=rtol, atol=1e-6 * abs(step)):
        raise ValueError(
            "this model is discrete-time: target_times must continue context_times on the same regular "
            "grid (e.g. context 0..9, targets 10..19); use a continuous-time model such as vid_ode for "
            "other timestamps"
        )
    return step, tgt.shape[1]


def check_predictor_inputs(
    context: Tensor, context_times: Tensor, target_times: Tensor, in_channels: int
) -> tuple[Tensor, Tensor]:
    """Validate a predictor's inputs; return the times as `(B, T)` float32 on the frames' device.

    context `(B, T_in, in_channels, H, W)` with T_in >= 1; times `(T,)` or `(B, T)`, finite, the context's
    strictly increasing. Raises VidynError (a ValueError) saying what is wrong.
    """
    if context.dim() != 5 or context.shape[2] != in_channels or context.shape[1] < 1:
        raise VidynError(f"context must be (B, T, {in_channels}, H, W) frames; got {tuple(context.shape)}")
    b, t_in = context.shape[:2]
    times = []
    for name, value, n in (("context_times", context_times, t_in), ("target_times", target_times, None)):
        value = value.unsqueeze(0).expand(b, -1) if value.dim() == 1 else value
        length_ok = value.dim() == 2 and value.shape[-1] >= 1 and value.shape[-1] == (n or value.shape[-1])
        if not length_ok or value.shape[0] != b:
            raise VidynError(
                f"{name} must have shape ({n or 'T'},) or ({b}, {n or 'T'}); got {tuple(value.shape)}"
            )
        value = value.to(device=context.device, dtype=torch.float32)
        if not bool(torch.isfinite(value).all()):
            raise VidynError(f"{name} contains NaN or infinite values; pass finite times in seconds")
        times.append(value)
    ctx_t, tgt_t = times
    if not bool((ctx_t.diff(dim=1) > 0).all()):
        raise VidynError("context_times must be strictly increasing in each clip; sort the context frames")
    return ctx_t, tgt_t
