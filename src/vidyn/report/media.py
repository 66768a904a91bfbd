"""Animated comparison grids: context | truth | each model, one row per clip."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vidyn.data.video_io import write_video

CONTEXT_BORDER = (0.2, 0.5, 1.0)  # blue frame: observed input
PREDICT_BORDER = (1.0, 0.35, 0.2)  # red frame: model output


def _bordered(frames: Tensor, colour: tuple[float, float, float], width: int = 2) -> Tensor:
    """(T, C, H, W) -> (T, 3, H + 2w, W + 2w) with a coloured border."""
    rgb = frames.expand(-1, 3, -1, -1) if frames.shape[1] == 1 else frames
    T, _, H, W = rgb.shape
    out = torch.tensor(colour, dtype=rgb.dtype).view(1, 3, 1, 1).repeat(T, 1, H + 2 * width, W + 2 * width)
    out[:, :, width : width + H, width : width + W] = rgb
    return out


def comparison_frames(context: Tensor, truth: Tensor | None, preds: dict[str, Tensor]) -> Tensor:
    """Build the animation for a batch of clips.

    context `(N, Tc, C, H, W)`, truth `(N, Tf, C, H, W)`, preds name -> `(N, Tf, C, H, W)`.
    Returns `(Tc + Tf, 3, N*(H+4), K*(W+4))`: columns truth (when given), then each model; during the
    context frames every column shows the observed frame (blue border), then predictions (red border).
    """
    columns = []
    for frames in ([truth] if truth is not None else []) + list(preds.values()):
        clips = []
        for i in range(context.shape[0]):
            head = _bordered(context[i].clamp(0, 1), CONTEXT_BORDER)
            tail = _bordered(frames[i].clamp(0, 1), PREDICT_BORDER)
            clips.append(torch.cat([head, tail], dim=0))  # (T, 3, H', W')
        columns.append(torch.cat(clips, dim=2))  # stack clips vertically: (T, 3, N*H', W')
    return torch.cat(columns, dim=3)  # side by side: (T, 3, N*H', K*W')


def write_comparison(
    path: str | Path,
    context: Tensor,
    truth: Tensor,
    preds: dict[str, Tensor],
    fps: float = 4.0,
    scale: int = 2,
) -> Path:
    grid = comparison_frames(context, truth, preds)
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    write_video(path, grid, fps=fps)
    return Path(path)
