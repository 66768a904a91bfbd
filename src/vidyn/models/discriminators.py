"""Vid-ODE's image and sequence discriminators and LSGAN losses (Park et al., AAAI 2021).

Both discriminators are the official `Discriminator`: a PatchGAN-style stack of 4x4 convolutions
(64 -> 128 -> 256 channels with stride 2, 512 with stride 1, then a 64-channel score map), LeakyReLU 0.2
and InstanceNorm (no affine) after every convolution but the first and the last. The image discriminator
scores single frames; the sequence discriminator scores a short clip whose frames are stacked along the
channel axis (`T * C` input channels, as in the official code, not a 3D convolution).

The official code builds the sequences the sequence discriminator sees in two ways, kept here as pure
helpers: `extrapolation_sequences` slides a window of `T_in + 1` frames over `[context, prediction]` (the
official `rearrange_seq`); `interpolation_sequences` replaces one frame at a time of the real clip by its
prediction (the official `rearrange_seq_interp`). Losses are least-squares GAN losses (Mao et al. 2017)
with targets 1 (real) and 0 (fake), as in the official `netD_adv_loss` / `netG_adv_loss`; Vid-ODE weights
them by 0.003 in both the discriminator and the generator objective.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError


def _patch_net(in_channels: int, base_channels: int, out_channels: int) -> nn.Sequential:
    b = base_channels

    def block(cin: int, cout: int, stride: int, padding: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 4, stride, padding), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2)]

    return nn.Sequential(
        nn.Conv2d(in_channels, b, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2),
        *block(b, 2 * b, 2, 1),
        *block(2 * b, 4 * b, 2, 1),
        *block(4 * b, 8 * b, 1, 2),
        nn.Conv2d(8 * b, out_channels, 4, 1, 2, bias=False),
    )


class ImageDiscriminator(nn.Module):
    """Per-frame patch discriminator: frames `(N, C, H, W)` or `(B, T, C, H, W)` -> `(N | B*T, 64, h, w)`.

    For H = W = 64 the score map is 10 x 10 (the stride-1 layers pad by 2 and grow the map by one each).
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, out_channels: int = 64) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.net = _patch_net(in_channels, base_channels, out_channels)

    def forward(self, frames: Tensor) -> Tensor:
        if frames.dim() == 5:
            frames = frames.flatten(0, 1)  # (B, T, C, H, W) -> (B*T, C, H, W)
        if frames.dim() != 4 or frames.shape[1] != self.in_channels:
            raise VidynError(
                f"ImageDiscriminator expects frames with {self.in_channels} channels, (N, C, H, W) or "
                f"(B, T, C, H, W); got {tuple(frames.shape)}"
            )
        return self.net(frames)


class SequenceDiscriminator(nn.Module):
    """Clip discriminator: clips `(N, T, C, H, W)` with T = `num_frames`, stacked to `(N, T*C, H, W)`."""

    def __init__(
        self, in_channels: int = 3, num_frames: int = 6, base_channels: int = 64, out_channels: int = 64
    ) -> None:
        super().__init__()
        self.in_channels, self.num_frames = in_channels, num_frames
        self.net = _patch_net(in_channels * num_frames, base_channels, out_channels)

    def forward(self, clips: Tensor) -> Tensor:
        if clips.dim() != 5 or clips.shape[1:3] != (self.num_frames, self.in_channels):
            raise VidynError(
                f"SequenceDiscriminator expects clips (N, {self.num_frames}, {self.in_channels}, H, W); got "
                f"{tuple(clips.shape)}; build it with num_frames equal to the sequence length"
            )
        return self.net(clips.flatten(1, 2))  # (N, T, C, H, W) -> (N, T*C, H, W)


def extrapolation_sequences(context: Tensor, frames: Tensor) -> Tensor:
    """Windows of `T_in + 1` frames over `[context, frames]`, one ending at each of the T_out frames.

    context `(B, T_in, C, H, W)`, frames `(B, T_out, C, H, W)` -> `(B * T_out, T_in + 1, C, H, W)`. Window
    k is `context[:, k:]` followed by `frames[:, :k + 1]` while k < T_in (the official `rearrange_seq`).
    """
    t_in, t_out = context.shape[1], frames.shape[1]
    full = torch.cat([context, frames], dim=1)  # (B, T_in + T_out, C, H, W)
    windows = full.unfold(1, t_in + 1, 1)[:, :t_out]  # (B, T_out, C, H, W, T_in + 1)
    return windows.permute(0, 1, 5, 2, 3, 4).flatten(0, 1)


def interpolation_sequences(clip: Tensor, frames: Tensor, positions: Tensor | None = None) -> Tensor:
    """Copies of the real clip with one frame replaced by its prediction, one copy per predicted frame.

    clip `(B, T, C, H, W)`, frames `(B, K, C, H, W)` predicted at clip indices `positions (K,)` (default
    `0..T-1`, the official `rearrange_seq_interp`) -> `(B * K, T, C, H, W)`. Passing the real frames as
    `frames` gives the matching real sequences (the clip itself, K times).
    """
    b, t = clip.shape[:2]
    k = frames.shape[1]
    if positions is None:
        positions = torch.arange(t, device=clip.device)
    if positions.shape != (k,):
        raise VidynError(
            f"positions must have one clip index per predicted frame ({k}); got {positions.shape}"
        )
    onehot = torch.zeros(k, t, device=clip.device, dtype=clip.dtype)
    onehot[torch.arange(k, device=clip.device), positions.to(clip.device)] = 1
    onehot = onehot.view(1, k, t, 1, 1, 1)
    # (B, 1, T, ...) real and (B, K, 1, ...) fake mixed by the (1, K, T) one-hot -> (B, K, T, C, H, W)
    mixed = (1 - onehot) * clip.unsqueeze(1) + onehot * frames.unsqueeze(2)
    return mixed.flatten(0, 1)


def lsgan_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Least-squares discriminator loss `0.5 * (mean((real - 1)^2) + mean(fake^2))`."""
    return 0.5 * ((real_scores - 1).pow(2).mean() + fake_scores.pow(2).mean())


def lsgan_g_loss(fake_scores: Tensor) -> Tensor:
    """Least-squares generator loss `mean((fake - 1)^2)`."""
    return (fake_scores - 1).pow(2).mean()
