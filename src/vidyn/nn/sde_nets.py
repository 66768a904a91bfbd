"""Convolutional networks of the spatial latent SDE (`vidyn.models.sde_video`): a frame encoder to a
latent-resolution feature map, a decoder back to frames, the drift networks, a per-channel bounded
diagonal diffusion, the flat <-> map bookkeeping torchsde needs, and `run_conv_gru` (a ConvGRU over
frame embeddings, forwards or backwards in time).

The latent is a feature map `(C_z, S, S)` rather than a vector, as the ODE-ConvGRU latents of Vid-ODE
(Park et al., AAAI 2021) and the ConvLSTM states of the prediction models: the drift is a small conv net,
so moving an object is local transport in the map (a few cells per second), which a 3x3 convolution
learns quickly, instead of a global vector the decoder must learn to turn into positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.nn.ode import ConvGRUCell


def latent_levels(image_size: int, latent_size: int) -> int:
    """Stride-2 levels between `image_size` and `latent_size` (both powers of two, latent <= image / 2)."""
    levels = int(round(math.log2(image_size / latent_size))) if latent_size >= 1 else -1
    if levels < 1 or latent_size * 2**levels != image_size:
        raise VidynError(
            f"image_size / latent_size must be a power of two >= 2; got {image_size} / {latent_size} "
            "(e.g. image_size 32 with latent_size 8)"
        )
    return levels


def _norm(channels: int) -> nn.BatchNorm2d:
    # BatchNorm, as the DCGAN-style encoders and decoders of SVG: measured on `shapes` (32 px, one small
    # object), a frame autoencoder of these blocks left the blank mean image within 300 steps with
    # BatchNorm and not at all with GroupNorm or without normalisation.
    return nn.BatchNorm2d(channels)


def per_frame_layout(x: Tensor) -> Tensor:
    """The layout the per-frame encoder and decoder run in: channels-last on CPU, where oneDNN's strided,
    transposed and few-channel convolutions and BatchNorm are faster in it (docs/speed.md, session 21);
    their outputs go back to the default layout. Other devices keep it (not measured)."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class MapEncoder(nn.Module):
    """`(N, C, H, W) -> (N, out_channels, S, S)`: a 3x3 conv, stride-2 4x4 convs down to S doubling the
    channels (at most 4x `base_channels`) with BatchNorm and SiLU, then a 3x3 conv."""

    def __init__(self, in_channels: int, image_size: int, latent_size: int, base: int, out_channels: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base, 3, 1, 1), nn.SiLU()]
        ch = base
        for i in range(latent_levels(image_size, latent_size)):
            nxt = base * 2 ** min(i + 1, 2)
            layers += [nn.Conv2d(ch, nxt, 4, 2, 1), _norm(nxt), nn.SiLU()]
            ch = nxt
        layers.append(nn.Conv2d(ch, out_channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(per_frame_layout(x)).contiguous()


class MapDecoder(nn.Module):
    """Mirror of `MapEncoder`: `(N, in_channels, S, S) -> (N, out_channels, H, W)` logits."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, latent_size: int, base: int):
        super().__init__()
        levels = latent_levels(image_size, latent_size)
        ch = base * 2 ** min(levels, 2)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, 1, 1), _norm(ch), nn.SiLU()]
        for i in range(levels, 0, -1):
            nxt = base * 2 ** min(i - 1, 2)
            layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1), _norm(nxt), nn.SiLU()]
            ch = nxt
        layers.append(nn.Conv2d(ch, out_channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, v: Tensor) -> Tensor:
        return self.net(per_frame_layout(v)).contiguous()


def conv_net(
    in_channels: int, hidden: int, out_channels: int, *, layers: int = 2, last_scale: float = 1.0
) -> nn.Sequential:
    """`layers` 3x3 conv + SiLU blocks, then a 3x3 conv whose initial weights are scaled by
    `last_scale` (0.01 for the posterior's drift correction: the path KL starts near 0)."""
    mods: list[nn.Module] = []
    ch = in_channels
    for _ in range(layers):
        mods += [nn.Conv2d(ch, hidden, 3, 1, 1), nn.SiLU()]
        ch = hidden
    last = nn.Conv2d(ch, out_channels, 3, 1, 1)
    with torch.no_grad():
        last.weight.mul_(last_scale)
        last.bias.mul_(last_scale)
    return nn.Sequential(*mods, last)


def coordinates(size: int, like: Tensor) -> Tensor:
    """`(1, 2, S, S)` x and y in [-1, 1] (CoordConv, Liu et al. 2018): drifts that depend on where an
    object is (walls, a pivot, an orbit's centre) need not infer it from zero padding."""
    axis = torch.linspace(-1, 1, size, dtype=like.dtype, device=like.device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y]).unsqueeze(0)


class ChannelDiffusion(nn.Module):
    """Bounded diagonal diffusion on maps `(N, C, S, S)`: g = lo + (hi - lo) * sigmoid(MLP_c(z)), one
    1 -> hidden -> 1 MLP per channel applied to every element of that channel (the reference example's
    per-dimension `g_nets`, shared across positions), so g_i depends on z_i only, as Milstein's and
    SRK's diagonal-noise formulas assume. The floor `lo` keeps sampling stochastic if training drives
    the sigmoid to zero (torchsde issues #2, #113)."""

    def __init__(self, channels: int, hidden: int, min_value: float, max_value: float) -> None:
        super().__init__()
        if not 0 <= min_value < max_value:
            raise VidynError(f"need 0 <= min_diffusion < max_diffusion; got {min_value}, {max_value}")
        self.min_value, self.max_value = float(min_value), float(max_value)
        bound2 = 1 / math.sqrt(hidden)
        self.w1 = nn.Parameter(torch.empty(channels, hidden).uniform_(-1, 1))
        self.b1 = nn.Parameter(torch.empty(channels, hidden).uniform_(-1, 1))
        self.w2 = nn.Parameter(torch.empty(channels, hidden).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.empty(channels).uniform_(-bound2, bound2))

    def forward(self, z: Tensor) -> Tensor:
        zc = z.movedim(1, -1).unsqueeze(-1)  # (N, C, S, S) -> (N, S, S, C, 1)
        hidden = nn.functional.softplus(zc * self.w1 + self.b1)  # (N, S, S, C, hidden)
        logits = (hidden * self.w2).sum(-1) + self.b2  # (N, S, S, C)
        g = self.min_value + (self.max_value - self.min_value) * torch.sigmoid(logits)
        return g.movedim(-1, 1)  # (N, C, S, S)


def run_conv_gru(cell: ConvGRUCell, emb: Tensor, gaps: Tensor, *, backwards: bool) -> Tensor:
    """Run `cell` over embeddings `(N, T, E, S, S)` with the time gaps `(T,)` as a constant channel;
    returns every state `(N, T, E, S, S)` (in the input's order)."""
    n, t, _, s, _ = emb.shape
    gap_maps = gaps.to(emb).view(1, t, 1, 1, 1).expand(n, t, 1, s, s)
    projected = cell.input_projection(torch.cat([emb, gap_maps], dim=2).flatten(0, 1)).unflatten(0, (n, t))
    order = range(t - 1, -1, -1) if backwards else range(t)
    h, states = None, [emb.new_zeros(0)] * t
    for i in order:
        h = cell.step(projected[:, i], h)
        states[i] = h
    return torch.stack(states, dim=1)
