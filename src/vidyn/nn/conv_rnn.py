"""Convolutional recurrent cells: ConvLSTM and PredRNN's spatiotemporal LSTM (ST-LSTM).

- `ConvLSTMCell`: Shi et al., "Convolutional LSTM Network: A Machine Learning Approach for Precipitation
  Nowcasting", NeurIPS 2015, in the form OpenSTL trains it (no peephole terms, no bias by default).
- `SpatioTemporalLSTMCell`: Wang et al., "PredRNN: Recurrent Neural Networks for Predictive Learning using
  Spatiotemporal LSTMs", NeurIPS 2017 (and the TPAMI 2022 PredRNN-V2 paper), exactly as the official
  code (thuml/predrnn-pytorch) and OpenSTL define it.

All tensors are `(B, C, H, W)`; every convolution is "same"-padded with stride 1, so states keep the
input's spatial size. With `layer_norm=True` each gate convolution is followed by a LayerNorm over
`(C, H, W)` as in OpenSTL, which ties the cell to one `height` x `width`. The convolutions are
`TimeBatchedConv2d`s: a rollout may compute their weight gradients once for all steps
(`vidyn.nn.time_batched`), and in CPU training the large ones run by Winograd's algorithm
(`vidyn.nn.winograd`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.nn.time_batched import TimeBatchedConv2d


def _same_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> nn.Conv2d:
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for 'same' padding; got {kernel_size}")
    return TimeBatchedConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def _layer_norm(channels: int, height: int | None, width: int | None) -> nn.LayerNorm:
    if height is None or width is None:
        raise ValueError("layer_norm=True needs the state's height and width")
    return nn.LayerNorm([channels, height, width])


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell: `(x, h, c) -> (h', c')`.

    [i, f, g, o] = W * [x, h] (+ b);  c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(g);
    h' = sigmoid(o) * tanh(c').

    One convolution over the concatenation `[x, h]` produces all four gates (order i, f, g, o as in
    OpenSTL). A convolution is linear in its input channels, so this equals OpenSTL's `conv_x(x) +
    conv_h(h)` with `conv_x.weight = weight[:, :in_channels]` and `conv_h.weight = weight[:, in_channels:]`,
    but runs as one larger matrix product. With `layer_norm=True` the two halves are convolved separately
    (same weight tensor) so each can be normalised before the sum, as OpenSTL does.

    Deviations from Shi et al.: no peephole terms (W_c . c), as in OpenSTL. OpenSTL declares a forget
    bias of 1 but never adds it; `forget_bias` defaults to 0 to match what it computes.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int,
        *,
        bias: bool = False,
        layer_norm: bool = False,
        height: int | None = None,
        width: int | None = None,
        forget_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.forget_bias = forget_bias
        self.conv = _same_conv(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, bias)
        self.norm_x = _layer_norm(4 * hidden_channels, height, width) if layer_norm else None
        self.norm_h = _layer_norm(4 * hidden_channels, height, width) if layer_norm else None

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        if self.norm_x is None or self.norm_h is None:
            gates = self.conv(torch.cat([x, h], dim=1))  # (B, 4*hid, H, W)
        else:
            w, pad = self.conv.weight, self.conv.padding
            gx = F.conv2d(x, w[:, : self.in_channels], self.conv.bias, padding=pad)
            gh = F.conv2d(h, w[:, self.in_channels :], None, padding=pad)
            gates = self.norm_x(gx) + self.norm_h(gh)
        i, f, g, o = gates.chunk(4, dim=1)
        if self.forget_bias:
            f = f + self.forget_bias
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new


class SpatioTemporalLSTMCell(nn.Module):
    """ST-LSTM cell of PredRNN: `(x, h, c, m) -> (h', c', m', delta_c, delta_m)`.

    Gates from three "same" convolutions, conv_x: x -> 7 hid, conv_h: h -> 4 hid, conv_m: m -> 3 hid:

        i  = sigmoid(i_x + i_h)             i' = sigmoid(i'_x + i_m)
        f  = sigmoid(f_x + f_h + 1)         f' = sigmoid(f'_x + f_m + 1)
        g  = tanh(g_x + g_h)                g' = tanh(g'_x + g_m)
        c' = f * c + i * g                  m' = f' * m + i' * g'
        o  = sigmoid(o_x + o_h + conv_o([c', m']))
        h' = o * tanh(conv_last([c', m']))  with conv_last a 1x1 convolution

    The channel order of conv_x's output is (i, f, g, i', f', g', o), of conv_h's (i, f, g, o) and of
    conv_m's (i', f', g'), as in the official code. The increments `delta_c = i * g` and
    `delta_m = i' * g'` are returned for PredRNN-V2's memory-decoupling loss. The forget bias (+1) is a
    constant added before the sigmoid, as in the official code, not a learned parameter. The official
    code's convolutions carry biases; OpenSTL's do not (`bias=False`, the default here).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int,
        *,
        bias: bool = False,
        layer_norm: bool = False,
        height: int | None = None,
        width: int | None = None,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        hid = hidden_channels
        self.hidden_channels = hid
        self.forget_bias = forget_bias
        self.conv_x = _same_conv(in_channels, 7 * hid, kernel_size, bias)
        self.conv_h = _same_conv(hid, 4 * hid, kernel_size, bias)
        self.conv_m = _same_conv(hid, 3 * hid, kernel_size, bias)
        self.conv_o = _same_conv(2 * hid, hid, kernel_size, bias)
        self.conv_last = nn.Conv2d(2 * hid, hid, kernel_size=1, bias=bias)
        self.norms = (
            nn.ModuleDict(
                {
                    name: _layer_norm(n * hid, height, width)
                    for name, n in (("x", 7), ("h", 4), ("m", 3), ("o", 1))
                }
            )
            if layer_norm
            else None
        )

    def _gate(self, name: str, conv: nn.Conv2d, inp: Tensor) -> Tensor:
        out = conv(inp)
        return out if self.norms is None else self.norms[name](out)

    def forward(
        self, x: Tensor, h: Tensor, c: Tensor, m: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        hid = self.hidden_channels
        gx = self._gate("x", self.conv_x, x)  # (B, 7*hid, H, W): i f g | i' f' g' | o
        gh = self._gate("h", self.conv_h, h)  # (B, 4*hid, H, W): i f g | o
        gm = self._gate("m", self.conv_m, m)  # (B, 3*hid, H, W): i' f' g'
        # split (not slicing) so that backward concatenates the pieces' gradients once instead of
        # zero-filling and accumulating a full-size gradient per slice (measurably slower on CPU).
        gx_c, gx_m, gx_o = gx.split([3 * hid, 3 * hid, hid], dim=1)
        gh_c, gh_o = gh.split([3 * hid, hid], dim=1)
        # The (i, f, g) blocks of x and h, and the (i', f', g') blocks of x and m, line up: one add each.
        i, f, g = (gx_c + gh_c).chunk(3, dim=1)
        i_m, f_m, g_m = (gx_m + gm).chunk(3, dim=1)

        delta_c = torch.sigmoid(i) * torch.tanh(g)
        c_new = torch.sigmoid(f + self.forget_bias) * c + delta_c
        delta_m = torch.sigmoid(i_m) * torch.tanh(g_m)
        m_new = torch.sigmoid(f_m + self.forget_bias) * m + delta_m

        mem = torch.cat([c_new, m_new], dim=1)  # (B, 2*hid, H, W)
        o = torch.sigmoid(gx_o + gh_o + self._gate("o", self.conv_o, mem))
        h_new = o * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m
