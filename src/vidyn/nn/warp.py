"""Backward warping of images by a dense optical flow, as Vid-ODE's pixel-level composition uses it.

`warp(image, flow)[b, :, y, x]` samples `image[b, :, y + flow[b, 1, y, x], x + flow[b, 0, y, x]]`
bilinearly: flow is in pixels, channel 0 horizontal (x), channel 1 vertical (y). Sampling uses
`align_corners=True`, so normalised coordinate -1 / +1 is the centre of the first / last pixel and an
integer flow moves pixels by exactly that many pixels; positions outside the image take the nearest
border pixel (`padding_mode="border"`). This is the convention of the official Vid-ODE code, whose
`linspace(-1, 1, W)` grid and `flow / ((W - 1) / 2)` normalisation assume torch < 1.3's default
`align_corners=True`.

`AffineRegionFlow` builds such a flow from K soft regions that each move by one affine map (the local
affine motion model of Siarohin et al., "First Order Motion Model for Image Animation", NeurIPS 2019, in
the region form of "Motion Representations for Articulated Animation", CVPR 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class AffineRegionFlow(nn.Module):
    """Flow from K affine regions over a still background: flow(p) = sum_k m_k(p) [(A_k - I)(p - c_k) + b_k].

    `forward(x, mid, logits)`: region logits `(P, K + 1, H, W)` (channel 0 the background, softmax over
    all), features x `(P, C, H, W)` pooled over each region (its mask, normalised) and mid features `(P,
    C_mid, h, w)` pooled over the frame give each region's A_k - I and b_k (b in units of `pixel_scale`
    pixels); c_k is the region's centroid, so A_k turns and scales the region about its own centre. Both
    linear maps start at zero: every region starts still. Returns the flow `(P, 2, H, W)` in pixels.
    """

    def __init__(self, channels: int, mid_channels: int, regions: int, *, pixel_scale: float) -> None:
        super().__init__()
        self.num_regions, self.pixel_scale = regions, float(pixel_scale)
        self.from_region = nn.Linear(channels, 6)  # a region's pooled features -> its (A - I, b)
        self.from_frame = nn.Linear(mid_channels, 6 * regions)  # the frame's -> every region's
        for layer in (self.from_region, self.from_frame):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, mid: Tensor, logits: Tensor) -> Tensor:
        p, _, h, w = logits.shape
        k = self.num_regions
        regions = logits.softmax(dim=1)[:, 1:]  # (P, K, H, W)
        weights = regions / regions.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=x.device, dtype=x.dtype),
            torch.arange(w, device=x.device, dtype=x.dtype),
            indexing="ij",
        )
        grid = torch.stack((xs, ys))  # (2, H, W): pixel x, y
        centre = torch.einsum("pkhw,dhw->pkd", weights, grid)  # (P, K, 2)
        pooled = torch.einsum("pkhw,pchw->pkc", weights, x)  # (P, K, C)
        params = self.from_region(pooled) + self.from_frame(mid.mean(dim=(2, 3))).view(p, k, 6)
        linear = params[..., :4].reshape(p, k, 2, 2)  # A - I
        shift = params[..., 4:] * self.pixel_scale  # b, pixels
        offset = grid.view(1, 1, 2, h, w) - centre.view(p, k, 2, 1, 1)  # (P, K, 2, H, W): p - c_k
        flows = torch.einsum("pkij,pkjhw->pkihw", linear, offset) + shift.view(p, k, 2, 1, 1)
        return (regions.unsqueeze(2) * flows).sum(dim=1)  # (P, K, 2, H, W) -> (P, 2, H, W)
