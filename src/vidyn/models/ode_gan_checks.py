"""Argument checks of `ode_gan` (`vidyn.models.ode_gan`): one-line errors that say how to fix the call."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vidyn.errors import VidynError
from vidyn.nn.ode import check_method

# Times are resolved to 0.1 ms ticks, so taps shared by neighbouring frames match exactly, and float32 ODE
# times stay distinct for clips up to ~800 s.
TICKS = 10_000


def up_levels(image_size: int, latent_size: int, temporal_blocks: int) -> int:
    """Decoder up-blocks from latent_size to image_size; refuses sizes and temporal_blocks that do not fit."""
    num_up = round(math.log2(image_size / latent_size))
    if image_size != latent_size * 2**num_up or num_up < 1:
        raise VidynError(
            f"image_size must be latent_size * 2**k with k >= 1 (e.g. 32 with latent_size 8); "
            f"got {image_size} and {latent_size}"
        )
    if not 0 <= temporal_blocks <= num_up:
        raise VidynError(
            f"temporal_blocks must be in 0..{num_up} for image_size {image_size} and latent_size "
            f"{latent_size}"
        )
    return num_up


def check_solver_and_classes(
    method: str, step_size: float | None, tap_interval: float, num_classes: int, class_dim: int
) -> None:
    check_method(method, "ODE method")
    if (step_size is not None and not step_size > 0) or not tap_interval >= 1 / TICKS:
        raise VidynError(
            f"step_size (or None) must be > 0 and tap_interval >= 0.1 ms; got {step_size}, {tap_interval}"
        )
    if num_classes < 0 or (num_classes > 0 and class_dim < 1):
        raise VidynError(f"num_classes must be >= 0 and class_dim >= 1; got {num_classes}, {class_dim}")


def check_sizes(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise VidynError(f"{name} must be a positive integer; got {value!r}")


def check_times(times: Tensor, b: int) -> Tensor:
    """Times as `(B, T)` float; `(T,)` is shared by the batch."""
    if not isinstance(times, Tensor):
        raise VidynError(f"times must be a tensor of seconds, (T,) or ({b}, T); got {type(times).__name__}")
    if times.dim() == 1:
        times = times.unsqueeze(0).expand(b, -1)  # (T,) -> (B, T)
    if times.dim() != 2 or times.shape[0] != b or times.shape[1] < 1:
        raise VidynError(f"times must have shape (T,) or ({b}, T) with T >= 1; got {tuple(times.shape)}")
    times = times.to(torch.float32)
    if not bool(torch.isfinite(times).all()):
        raise VidynError("times contains NaN or infinite values; pass finite times in seconds")
    return times
