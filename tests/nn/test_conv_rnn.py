"""Conv-RNN cells against the papers' equations written out gate by gate; patchify layout and round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidyn.nn.conv_rnn import ConvLSTMCell, SpatioTemporalLSTMCell
from vidyn.nn.patch import patchify, unpatchify


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter (LayerNorm affine included) random, non-trivial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    return F.conv2d(x, w, b, padding=w.shape[-1] // 2)


@pytest.mark.parametrize("bias", [False, True])
def test_convlstm_cell_matches_two_convolution_equations(bias: bool) -> None:
    cx, hid, k = 3, 4, 3
    cell = ConvLSTMCell(cx, hid, k, bias=bias)
    _randomise(cell, 0)
    x, h, c = torch.randn(2, cx, 5, 6), torch.randn(2, hid, 5, 6), torch.randn(2, hid, 5, 6)
    w = cell.conv.weight
    wx, wh = w[:, :cx], w[:, cx:]  # OpenSTL's conv_x and conv_h
    b = cell.conv.bias if bias else torch.zeros(4 * hid)

    def gate(j: int) -> torch.Tensor:
        rows = slice(j * hid, (j + 1) * hid)
        return _conv(x, wx[rows], b[rows]) + _conv(h, wh[rows])

    i, f, g, o = torch.sigmoid(gate(0)), torch.sigmoid(gate(1)), torch.tanh(gate(2)), torch.sigmoid(gate(3))
    c_ref = f * c + i * g
    h_ref = o * torch.tanh(c_ref)
    h_new, c_new = cell(x, h, c)
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


def test_convlstm_cell_layer_norm_normalises_each_half() -> None:
    cx, hid, k, size = 2, 3, 3, 4
    cell = ConvLSTMCell(cx, hid, k, layer_norm=True, height=size, width=size)
    _randomise(cell, 1)
    x, h, c = (torch.randn(2, n, size, size) for n in (cx, hid, hid))
    w = cell.conv.weight
    shape = [4 * hid, size, size]
    gx = F.layer_norm(_conv(x, w[:, :cx]), shape, cell.norm_x.weight, cell.norm_x.bias)
    gh = F.layer_norm(_conv(h, w[:, cx:]), shape, cell.norm_h.weight, cell.norm_h.bias)
    i, f, g, o = (gx + gh).chunk(4, dim=1)
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.tanh(c_ref)
    h_new, c_new = cell(x, h, c)
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_st_lstm_cell_matches_paper_equations(bias: bool) -> None:
    cx, hid, k = 3, 4, 3
    cell = SpatioTemporalLSTMCell(cx, hid, k, bias=bias)
    _randomise(cell, 2)
    x, h, c, m = torch.randn(2, cx, 5, 5), *(torch.randn(2, hid, 5, 5) for _ in range(3))

    w_x, w_h, w_m = cell.paper_weights()
    b_x, b_h, b_m = cell.bias_x, cell.bias_h, cell.bias_m

    def conv_rows(w: torch.Tensor, b: torch.Tensor | None, inp: torch.Tensor, j: int) -> torch.Tensor:
        rows = slice(j * hid, (j + 1) * hid)
        return _conv(inp, w[rows], b[rows] if bias else None)

    # conv_x rows: i f g i' f' g' o;  conv_h rows: i f g o;  conv_m rows: i' f' g'
    xs = [conv_rows(w_x, b_x, x, j) for j in range(7)]
    hs = [conv_rows(w_h, b_h, h, j) for j in range(4)]
    ms = [conv_rows(w_m, b_m, m, j) for j in range(3)]
    i = torch.sigmoid(xs[0] + hs[0])
    f = torch.sigmoid(xs[1] + hs[1] + 1.0)
    g = torch.tanh(xs[2] + hs[2])
    c_ref = f * c + i * g
    i2 = torch.sigmoid(xs[3] + ms[0])
    f2 = torch.sigmoid(xs[4] + ms[1] + 1.0)
    g2 = torch.tanh(xs[5] + ms[2])
    m_ref = f2 * m + i2 * g2
    mem = torch.cat([c_ref, m_ref], dim=1)
    o = torch.sigmoid(xs[6] + hs[3] + _conv(mem, cell.conv_o.weight, cell.conv_o.bias))
    h_ref = o * torch.tanh(F.conv2d(mem, cell.conv_last.weight, cell.conv_last.bias))

    h_new, c_new, m_new, delta_c, delta_m = cell(x, h, c, m)
    for got, want in ((h_new, h_ref), (c_new, c_ref), (m_new, m_ref), (delta_c, i * g), (delta_m, i2 * g2)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_st_lstm_layer_norm_follows_each_convolution() -> None:
    cx, hid, size = 2, 3, 4
    cell = SpatioTemporalLSTMCell(cx, hid, 3, layer_norm=True, height=size, width=size)
    _randomise(cell, 3)
    x, h, c, m = torch.randn(1, cx, size, size), *(torch.randn(1, hid, size, size) for _ in range(3))

    def normed(name: str, w: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        norm = cell.norms[name]
        return F.layer_norm(_conv(inp, w), list(norm.normalized_shape), norm.weight, norm.bias)

    w_x, w_h, w_m = cell.paper_weights()
    gx, gh, gm = normed("x", w_x, x), normed("h", w_h, h), normed("m", w_m, m)
    i, f, g, i2, f2, g2, ox = gx.chunk(7, dim=1)
    ih, fh, gh_, oh = gh.chunk(4, dim=1)
    im, fm, gm_ = gm.chunk(3, dim=1)
    c_ref = torch.sigmoid(f + fh + 1) * c + torch.sigmoid(i + ih) * torch.tanh(g + gh_)
    m_ref = torch.sigmoid(f2 + fm + 1) * m + torch.sigmoid(i2 + im) * torch.tanh(g2 + gm_)
    mem = torch.cat([c_ref, m_ref], dim=1)
    o = torch.sigmoid(ox + oh + normed("o", cell.conv_o.weight, mem))
    h_ref = o * torch.tanh(cell.conv_last(mem))
    h_new, c_new, m_new, _, _ = cell(x, h, c, m)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m_new, m_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_st_lstm_is_initialised_and_loaded_as_three_convolutions(bias: bool) -> None:
    # The fused cell draws its initial weights as the paper's conv_x, conv_h, conv_m, conv_o (same order),
    # and a state dict in that three-convolution layout loads into the fused one.
    cx, hid, k = 3, 4, 3
    torch.manual_seed(5)
    cell = SpatioTemporalLSTMCell(cx, hid, k, bias=bias)
    torch.manual_seed(5)
    convs = [
        torch.nn.Conv2d(i, o * hid, k, bias=bias) for i, o in ((cx, 7), (hid, 4), (hid, 3), (2 * hid, 1))
    ]
    for got, conv in zip((*cell.paper_weights(), cell.conv_o.weight), convs, strict=True):
        torch.testing.assert_close(got, conv.weight, rtol=0, atol=0)
    if bias:
        for got, conv in zip((cell.bias_x, cell.bias_h, cell.bias_m, cell.conv_o.bias), convs, strict=True):
            torch.testing.assert_close(got, conv.bias, rtol=0, atol=0)

    other = SpatioTemporalLSTMCell(cx, hid, k, bias=bias)
    _randomise(other, 4)
    fused = ("conv_xh.weight", "conv_xm.weight", "bias_x", "bias_h", "bias_m")
    old_layout = {key: v for key, v in other.state_dict().items() if key not in fused}
    for name, w in zip(("conv_x", "conv_h", "conv_m"), other.paper_weights(), strict=True):
        old_layout[f"{name}.weight"] = w.detach().clone()
        if bias:
            old_layout[f"{name}.bias"] = getattr(other, name.replace("conv_", "bias_")).detach().clone()
    cell.load_state_dict(old_layout)
    for key, value in other.state_dict().items():
        torch.testing.assert_close(cell.state_dict()[key], value, rtol=0, atol=0)


def test_st_lstm_forget_bias_is_plus_one() -> None:
    # With all weights zero: i = i' = sigmoid(0), g = g' = 0, f = f' = sigmoid(0 + 1), so c' = sigmoid(1) c.
    cell = SpatioTemporalLSTMCell(2, 3, 3)
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
    c, m = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    _, c_new, m_new, _, _ = cell(torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4), c, m)
    expected = torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(c_new, expected * c)
    torch.testing.assert_close(m_new, expected * m)


def test_convlstm_cell_has_no_forget_bias_like_openstl() -> None:
    cell = ConvLSTMCell(2, 3, 3)
    with torch.no_grad():
        cell.conv.weight.zero_()
    c = torch.randn(1, 3, 4, 4)
    _, c_new = cell(torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4), c)
    torch.testing.assert_close(c_new, 0.5 * c)


def test_even_kernel_is_rejected() -> None:
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(1, 2, 4)


def test_patchify_matches_predrnn_reshape_patch_and_round_trips() -> None:
    p, frames = 2, torch.randn(2, 3, 3, 4, 6)  # (B, T, C, H, W)
    patches = patchify(frames, p)
    assert patches.shape == (2, 3, p * p * 3, 2, 3)
    # PredRNN's reshape_patch on channels-last frames: (H/p, p, W/p, p, C) -> (H/p, W/p, p, p, C).
    hwc = (
        frames.permute(0, 1, 3, 4, 2)
        .reshape(2, 3, 2, p, 3, p, 3)
        .transpose(3, 4)
        .reshape(2, 3, 2, 3, p * p * 3)
    )
    torch.testing.assert_close(patches, hwc.permute(0, 1, 4, 2, 3), rtol=0, atol=0)
    torch.testing.assert_close(unpatchify(patches, p), frames, rtol=0, atol=0)
    assert patchify(frames, 1) is frames


def test_patchify_rejects_indivisible_size() -> None:
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.zeros(1, 1, 5, 4), 2)
