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


def _skip_init_conv(in_channels: int, out_channels: int, kernel_size: int) -> TimeBatchedConv2d:
    """A bias-free "same" `TimeBatchedConv2d` without random initialisation (its weight is set after)."""
    return nn.utils.skip_init(
        TimeBatchedConv2d, in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
    )


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

    **Two convolutions instead of three.** Each gate sums an x-term with either an h-term (i, f, g, o) or
    an m-term (i', f', g'), and a convolution is linear in its input channels, so the sums are two
    convolutions over concatenated inputs: `conv_xh` over `[x, h]` -> (i, f, g, o) and `conv_xm` over
    `[x, m]` -> (i', f', g'), whose weights are conv_x's rows beside conv_h's and conv_m's. The
    multiplications are the same as the three convolutions'; the gate sums happen inside the
    convolutions' reductions, and there are two convolution outputs to form instead of three. The
    parameters are held in that fused layout; `paper_weights()` gives conv_x / conv_h / conv_m, and a
    state dict in the three-convolution layout (OpenSTL's names, and vidyn's own until the fusion) loads
    unchanged. With `bias=True` the three biases stay separate parameters (`bias_x`, `bias_h`,
    `bias_m`), so the optimiser sees the paper's parameters. With `layer_norm=True` each convolution's
    output is normalised before the sum (as in OpenSTL), so the three are convolved separately from the
    same weights (and without the time-batched weight gradients).
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
        hid, cin = hidden_channels, in_channels
        self.in_channels, self.hidden_channels = cin, hid
        self.forget_bias = forget_bias
        # Initialised as the three convolutions of the paper (same random draws, same order), then fused.
        convs = [_same_conv(cin, 7 * hid, kernel_size, bias), _same_conv(hid, 4 * hid, kernel_size, bias)]
        convs.append(_same_conv(hid, 3 * hid, kernel_size, bias))
        self.conv_xh = _skip_init_conv(cin + hid, 4 * hid, kernel_size)
        self.conv_xm = _skip_init_conv(cin + hid, 3 * hid, kernel_size)
        w_xh, w_xm = fuse_gate_weights(*(c.weight.detach() for c in convs), cin)
        with torch.no_grad():
            self.conv_xh.weight.copy_(w_xh)
            self.conv_xm.weight.copy_(w_xm)
        for name, conv in zip(("bias_x", "bias_h", "bias_m"), convs, strict=True):
            self.register_parameter(name, None if conv.bias is None else nn.Parameter(conv.bias.detach()))
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

    def paper_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """The paper's conv_x `(7 hid, in, k, k)`, conv_h `(4 hid, hid, k, k)` and conv_m `(3 hid, hid, k, k)`
        weights, in the official code's row order, from the fused layout."""
        return split_gate_weights(self.conv_xh.weight, self.conv_xm.weight, self.in_channels)

    def _gate_biases(self) -> tuple[Tensor, Tensor] | None:
        """The fused convolutions' biases, (i, f, g, o) and (i', f', g'), or None without biases."""
        if self.bias_x is None or self.bias_h is None or self.bias_m is None:
            return None
        hid = self.hidden_channels
        b_c, b_m, b_o = self.bias_x.split([3 * hid, 3 * hid, hid])
        return torch.cat([b_c, b_o]) + self.bias_h, b_m + self.bias_m

    def _normed_gates(self, x: Tensor, h: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        """The layer-norm path: each of the paper's convolutions normalised on its own, then summed."""
        assert self.norms is not None
        hid, pad = self.hidden_channels, self.conv_xh.padding
        outs = []
        for name, inp, w, b in zip(
            "xhm", (x, h, m), self.paper_weights(), (self.bias_x, self.bias_h, self.bias_m), strict=True
        ):
            outs.append(self.norms[name](F.conv2d(inp, w, b, padding=pad)))
        gx, gh, gm = outs  # (B, 7 hid | 4 hid | 3 hid, H, W)
        gx_c, gx_m, gx_o = gx.split([3 * hid, 3 * hid, hid], dim=1)
        gh_c, gh_o = gh.split([3 * hid, hid], dim=1)
        return torch.cat([gx_c + gh_c, gx_o + gh_o], dim=1), gx_m + gm

    def forward(
        self, x: Tensor, h: Tensor, c: Tensor, m: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        if self.norms is None:
            gates_c = self.conv_xh(torch.cat([x, h], dim=1))  # (B, 4*hid, H, W): i f g o
            gates_m = self.conv_xm(torch.cat([x, m], dim=1))  # (B, 3*hid, H, W): i' f' g'
            biases = self._gate_biases()
            if biases is not None:
                gates_c = gates_c + biases[0].view(1, -1, 1, 1)
                gates_m = gates_m + biases[1].view(1, -1, 1, 1)
        else:
            gates_c, gates_m = self._normed_gates(x, h, m)
        # split/chunk (not slicing) so that backward concatenates the pieces' gradients once instead of
        # zero-filling and accumulating a full-size gradient per slice (measurably slower on CPU).
        i, f, g, o_xh = gates_c.chunk(4, dim=1)
        i_m, f_m, g_m = gates_m.chunk(3, dim=1)

        delta_c = torch.sigmoid(i) * torch.tanh(g)
        c_new = torch.sigmoid(f + self.forget_bias) * c + delta_c
        delta_m = torch.sigmoid(i_m) * torch.tanh(g_m)
        m_new = torch.sigmoid(f_m + self.forget_bias) * m + delta_m

        mem = torch.cat([c_new, m_new], dim=1)  # (B, 2*hid, H, W)
        conv_o = self.conv_o(mem)
        if self.norms is not None:
            conv_o = self.norms["o"](conv_o)
        o = torch.sigmoid(o_xh + conv_o)
        h_new = o * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # A state dict in the paper's three-convolution layout (conv_x / conv_h / conv_m): fuse it.
        names = [prefix + f"conv_{s}.weight" for s in "xhm"]
        if all(n in state_dict for n in names):
            w_x, w_h, w_m = (state_dict.pop(n) for n in names)
            w_xh, w_xm = fuse_gate_weights(w_x, w_h, w_m, self.in_channels)
            state_dict[prefix + "conv_xh.weight"], state_dict[prefix + "conv_xm.weight"] = w_xh, w_xm
            for s in "xhm":
                if prefix + f"conv_{s}.bias" in state_dict:
                    state_dict[prefix + f"bias_{s}"] = state_dict.pop(prefix + f"conv_{s}.bias")
        super()._load_from_state_dict(state_dict, prefix, *args)


def fuse_gate_weights(w_x: Tensor, w_h: Tensor, w_m: Tensor, in_channels: int) -> tuple[Tensor, Tensor]:
    """conv_x (i f g i' f' g' o), conv_h (i f g o), conv_m (i' f' g') weights -> conv_xh over `[x, h]`
    (rows i f g o) and conv_xm over `[x, m]` (rows i' f' g')."""
    hid = w_h.shape[1]
    wx_c, wx_m, wx_o = w_x.split([3 * hid, 3 * hid, hid])
    if w_x.shape[1] != in_channels:
        raise ValueError(f"conv_x has {w_x.shape[1]} input channels; the cell has {in_channels}")
    return torch.cat([torch.cat([wx_c, wx_o]), w_h], dim=1), torch.cat([wx_m, w_m], dim=1)


def split_gate_weights(w_xh: Tensor, w_xm: Tensor, in_channels: int) -> tuple[Tensor, Tensor, Tensor]:
    """The inverse of `fuse_gate_weights`: (conv_x, conv_h, conv_m) weights."""
    hid = w_xm.shape[0] // 3
    wx_c, wx_o = w_xh[:, :in_channels].split([3 * hid, hid])
    w_x = torch.cat([wx_c, w_xm[:, :in_channels], wx_o])
    return w_x, w_xh[:, in_channels:], w_xm[:, in_channels:]
