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

import math

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
    C_mid, h, w)` pooled over the frame give each region's transform (b in units of `pixel_scale`
    pixels); c_k is the region's centroid, so A_k turns and scales the region about its own centre.
    `transform`: "affine" (A_k any 2x2 matrix, FOMM's local affine map) or "similarity" (A_k = s R(theta),
    a rotation and a uniform scale s in [1/3, 3]: the region keeps its shape and cannot fold to a line or
    shrink to a point).
    Both linear maps start at zero: every region starts still. Returns the flow `(P, 2, H, W)` in pixels.
    """

    TRANSFORMS = {"affine": 6, "similarity": 4}  # parameters per region
    MAX_SCALE = 3.0  # a similarity scales a region by 1/3 to 3 (a free scale shrank to 0.03)

    def __init__(
        self, channels: int, mid_channels: int, regions: int, *, pixel_scale: float, transform: str = "affine"
    ) -> None:
        super().__init__()
        if transform not in self.TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(self.TRANSFORMS)}; got {transform!r}")
        self.num_regions, self.pixel_scale, self.transform = regions, float(pixel_scale), transform
        n = self.TRANSFORMS[transform]
        self.from_region = nn.Linear(channels, n)  # a region's pooled features -> its transform
        self.from_frame = nn.Linear(mid_channels, n * regions)  # the frame's -> every region's
        for layer in (self.from_region, self.from_frame):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, mid: Tensor, logits: Tensor) -> Tensor:
        p, _, h, w = logits.shape
        k, n = self.num_regions, self.TRANSFORMS[self.transform]
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
        params = self.from_region(pooled) + self.from_frame(mid.mean(dim=(2, 3))).view(p, k, n)
        linear = self._linear(params[..., : n - 2])  # (P, K, 2, 2): A - I
        shift = params[..., n - 2 :] * self.pixel_scale  # b, pixels
        offset = grid.view(1, 1, 2, h, w) - centre.view(p, k, 2, 1, 1)  # (P, K, 2, H, W): p - c_k
        flows = torch.einsum("pkij,pkjhw->pkihw", linear, offset) + shift.view(p, k, 2, 1, 1)
        return (regions.unsqueeze(2) * flows).sum(dim=1)  # (P, K, 2, H, W) -> (P, 2, H, W)

    def _linear(self, params: Tensor) -> Tensor:
        """A - I `(P, K, 2, 2)` from the linear parameters `(P, K, 4)` (affine) or `(P, K, 2)` (similarity:
        u and the angle theta in radians, s = MAX_SCALE ** tanh(u))."""
        if self.transform == "affine":
            return params.reshape(*params.shape[:-1], 2, 2)
        scale, angle = (math.log(self.MAX_SCALE) * params[..., 0].tanh()).exp(), params[..., 1]
        cos, sin = scale * angle.cos() - 1, scale * angle.sin()
        return torch.stack((cos, -sin, sin, cos), dim=-1).reshape(*params.shape[:-1], 2, 2)
