"""Pre-activation residual up-sampling blocks for generator decoders, 2D and (2+1)D.

`UpBlock2d` is the BigGAN-style generator block (Brock et al., "Large Scale GAN Training for High
Fidelity Natural Image Synthesis", ICLR 2019): norm, ReLU, x2 upsampling, 3x3 conv, norm, ReLU, 3x3 conv,
plus an upsampled (1x1-projected where the width changes) shortcut. Deviation: the main path upsamples
bilinearly (BigGAN: nearest), because `vidyn.nn.upsample.UpsampleConv` computes bilinear x2 + 3x3 conv
exactly at about half the cost of nearest upsampling followed by the conv (measured on CPU, fwd+bwd); the
shortcut projects at the low resolution, then repeats pixels (nearest), which is exactly the same as
projecting after nearest upsampling.

`UpBlock3d` is its video counterpart with a factorised "(2+1)D" convolution (Tran et al., "A Closer Look at
Spatiotemporal Convolutions for Action Recognition", CVPR 2018): a temporal convolution (kernel `kt`, 1x1
spatially) applied at the input resolution, then upsampling and the two spatial 3x3 convolutions. The
temporal convolution is *valid* (no padding): a stack of J time taps becomes J - kt + 1, and the shortcut
keeps the centre taps. This suits decoders that evaluate each output time on its own small stack of
taps (see `vidyn.models.ode_gan`), where padding would invent content at the ends; running the temporal
convolution before upsampling keeps its cost at the low resolution.

GroupNorm instead of BatchNorm: each output depends on its own sample only, so a generated clip does
not change with the batch it is sampled in, nor between train and eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.nn.upsample import UpsampleConv


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `max_groups` that divides `channels`."""
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class _Nearest2x(torch.autograd.Function):
    """Forward: a broadcast view and one copy (faster on CPU than `F.interpolate(mode="nearest")`).
    Backward: the sum over each 2 x 2 block as the sum of the even and odd rows, then of adjacent pairs,
    instead of autograd's backward of the view, one slower reduction over its strided dims 3 and 5
    (docs/speed.md, session 21)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        n, c, h2, w2 = grad.shape
        rows = grad.contiguous().view(n, c, h2 // 2, 2, w2)  # (N, C, H, 2, 2W): even and odd rows
        return (rows[:, :, :, 0] + rows[:, :, :, 1]).view(n, c, h2 // 2, w2 // 2, 2).sum(-1)


def upsample_nearest2x(x: Tensor) -> Tensor:
    """Nearest x2 upsampling `(N, C, H, W) -> (N, C, 2H, 2W)`."""
    return _Nearest2x.apply(x)


def _conv3x3(in_channels: int, out_channels: int, upsample: bool) -> nn.Module:
    if upsample:
        return UpsampleConv(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class UpBlock2d(nn.Module):
    """`(N, C_in, H, W) -> (N, C_out, 2H, 2W)` (or same size with `upsample=False`)."""

    def __init__(self, in_channels: int, out_channels: int, *, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.norm1 = group_norm(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, upsample)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.upsample:
            skip = upsample_nearest2x(skip)
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return skip + h


class UpBlock3d(nn.Module):
    """`(N, C_in, J, H, W) -> (N, C_out, J - kt + 1, 2H, 2W)`: valid temporal conv, then spatial convs.

    GroupNorm normalises each tap of each sample on its own, like `UpBlock2d` does per frame.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, temporal_kernel: int = 3, upsample: bool = True
    ) -> None:
        super().__init__()
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and positive; got {temporal_kernel}")
        self.kt, self.upsample = temporal_kernel, upsample
        self.norm1 = group_norm(in_channels)
        self.temporal = nn.Conv3d(in_channels, out_channels, (temporal_kernel, 1, 1))
        self.norm2 = group_norm(out_channels)
        self.conv1 = _conv3x3(out_channels, out_channels, upsample)
        self.norm3 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _norm_taps(self, norm: nn.GroupNorm, x: Tensor) -> Tensor:
        # (N, C, J, H, W) -> (N*J, C, H, W) so every tap is normalised on its own, then back
        n, c, j, h, w = x.shape
        y = norm(x.transpose(1, 2).reshape(n * j, c, h, w))
        return y.reshape(n, j, c, h, w).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        n, _, j, _, _ = x.shape
        if j < self.kt:
            raise ValueError(f"UpBlock3d needs at least {self.kt} time taps; got {j}")
        crop = self.kt // 2
        jo = j - 2 * crop
        # shortcut: the centre taps, (N, C_in, J_out, H, W) -> (N*J_out, C_in, H, W)
        skip = x[:, :, crop : j - crop].transpose(1, 2).flatten(0, 1)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        if self.upsample:
            skip = upsample_nearest2x(skip)
        h = self.temporal(F.relu(self._norm_taps(self.norm1, x)))  # (N, C_out, J_out, H, W)
        h = F.relu(self._norm_taps(self.norm2, h))
        h = h.transpose(1, 2).flatten(0, 1)  # (N, C_out, J_out, H, W) -> (N*J_out, C_out, H, W)
        h = self.conv1(h)
        h = self.conv2(F.relu(self.norm3(h)))
        out = skip + h  # (N*J_out, C_out, H', W')
        return out.unflatten(0, (n, jo)).transpose(1, 2)  # -> (N, C_out, J_out, H', W')
