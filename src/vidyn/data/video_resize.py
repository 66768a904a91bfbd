"""Frame resizing and grayscale conversion for the video readers in `vidyn.data.video_io`.

Resizing: the frame is first center-cropped to the target aspect ratio (so nothing is stretched), then
resized with `torch.nn.functional.interpolate(mode="bilinear", antialias=True)`, which averages over the
source area when downscaling. An int size means a square. Grayscale is ITU-R BT.601 luma,
0.299 R + 0.587 G + 0.114 B.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidyn.errors import VidynError

_LUMA = (0.299, 0.587, 0.114)


def _size_hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
        raise VidynError(f"size must be a positive int or a (height, width) pair of ints; got {size!r}")
    return hw  # type: ignore[return-value]


def _crop_resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Center-crop `(N, C, H, W)` to the aspect ratio of `hw`, then antialiased bilinear resize.

    uint8 input stays uint8 (torch's fast channels-last path, about 4x the float one, rounding once).
    """
    h, w = x.shape[-2:]
    th, tw = hw
    if w * th > h * tw:  # too wide: crop columns
        cw = max(1, round(h * tw / th))
        x = x[..., :, (w - cw) // 2 : (w - cw) // 2 + cw]
    elif w * th < h * tw:  # too tall: crop rows
        ch = max(1, round(w * th / tw))
        x = x[..., (h - ch) // 2 : (h - ch) // 2 + ch, :]
    if tuple(x.shape[-2:]) == hw:
        return x
    if x.dtype == torch.uint8:
        x = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)


def _to_luma(x: torch.Tensor) -> torch.Tensor:
    """`(N, 3, H, W)` RGB -> `(N, 1, H, W)` BT.601 luma (same value range)."""
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _process(rgb: np.ndarray, hw: tuple[int, int], grayscale: bool) -> np.ndarray:
    """One decoded `(H, W, 3)` uint8 frame -> resized and/or gray `(h, w, C)` uint8, owning its memory."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8 view
    x = _crop_resize(x, hw)
    if grayscale:
        x = _to_luma(x.float()).round_().clamp_(0, 255).to(torch.uint8)
    # a copy, so no frame keeps PyAV's (or the full-size) buffer alive
    return np.array(x[0].permute(1, 2, 0).numpy(), order="C", copy=True)  # (h, w, C)
