"""Vid-ODE's frame encoder and decoder (Park et al., "Vid-ODE: Continuous-Time Video Generation with
Neural Ordinary Differential Equation", AAAI 2021), with the official code's layers; `vidyn.models.vid_ode`
builds its model from them (its ODE blocks are in `vidyn.nn.ode`).

- `frame_encoder`: a 3x3 conv, then `downsample` stride-2 4x4 convs doubling the channels, each followed by
  BatchNorm and ReLU.
- `frame_decoder`: per level a bilinear x2 upsampling + 3x3 conv halving the channels (computed exactly in
  a cheaper order by `vidyn.nn.upsample.UpsampleConv`), BatchNorm and ReLU; then a 3x3 conv with no
  activation.
"""

from __future__ import annotations

from torch import nn

from vidyn.nn.upsample import UpsampleConv


def _conv_bn_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU()]


def frame_encoder(in_channels: int, hidden_channels: int, downsample: int) -> nn.Sequential:
    """`(N, in_channels, H, W) -> (N, hidden_channels, H / 2**downsample, W / 2**downsample)`."""
    ch = hidden_channels // 2**downsample
    layers: list[nn.Module] = _conv_bn_relu(nn.Conv2d(in_channels, ch, 3, 1, 1), ch)
    for _ in range(downsample):
        layers += _conv_bn_relu(nn.Conv2d(ch, 2 * ch, 4, 2, 1), 2 * ch)
        ch *= 2
    return nn.Sequential(*layers)


def frame_decoder(hidden_channels: int, downsample: int, out_channels: int) -> nn.Sequential:
    """`(N, 2 * hidden_channels, h, w) -> (N, out_channels, h * 2**downsample, w * 2**downsample)`: a latent
    with the previous one (or the start frame's embedding) to the output channels at full size."""
    layers: list[nn.Module] = []
    ch = 2 * hidden_channels
    for _ in range(downsample):
        layers += _conv_bn_relu(UpsampleConv(ch, ch // 2), ch // 2)
        ch //= 2
    layers.append(nn.Conv2d(ch, out_channels, 3, 1, 1))
    return nn.Sequential(*layers)
