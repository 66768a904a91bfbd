"""Backward warping of images by a dense optical flow, as Vid-ODE's pixel-level composition uses it.

`warp(image, flow)[b, :, y, x]` samples `image[b, :, y + flow[b, 1, y, x], x + flow[b, 0, y, x]]`
bilinearly: flow is in pixels, channel 0 horizontal (x), channel 1 vertical (y). Sampling uses
`align_corners=True`, so normalised coordinate -1 / +1 is the centre of the first / last pixel and an
integer flow moves pixels by exactly that many pixels; positions outside the image take the nearest
border pixel (`padding_mode="border"`). This is the convention of the official Vid-ODE code, whose
`linspace(-1, 1, W)` grid and `flow / ((W - 1) / 2)` normalisation assume torch < 1.3's default
`align_corners=True`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def identity_grid(height: int, width: int, *, like: Tensor) -> Tensor:
    """Sampling grid `(1, H, W, 2)` whose last axis is (x, y) in [-1, 1] that reproduces the image."""
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # each (H, W)
    return torch.stack((gx, gy), dim=-1).unsqueeze(0)


def flow_to_grid(flow: Tensor) -> Tensor:
    """Pixel flow `(B, 2, H, W)` -> `grid_sample` grid `(B, H, W, 2)` for `align_corners=True`."""
    _, _, h, w = flow.shape
    # One pixel is 2 / (size - 1) in normalised units; a size-1 axis has no extent (scale is irrelevant).
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=flow.device, dtype=flow.dtype)
    return identity_grid(h, w, like=flow) + flow.permute(0, 2, 3, 1) * scale


def warp(image: Tensor, flow: Tensor, padding_mode: str = "border") -> Tensor:
    """Warp `image (B, C, H, W)` backwards by the pixel `flow (B, 2, H, W)` (see the module docstring)."""
    if image.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"warp needs image (B, C, H, W) and flow (B, 2, H, W); got {image.shape}, {flow.shape}"
        )
    if image.shape[0] != flow.shape[0] or image.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)} and flow {tuple(flow.shape)} differ in batch or size")
    grid = flow_to_grid(flow.to(image.dtype))
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
