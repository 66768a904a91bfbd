"""`UpsampleConv` equals conv(bilinear x2 upsampling) exactly, gradients included, compiled or eager."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidyn.nn import compiled, upsample
from vidyn.nn.upsample import UpsampleConv, _shift_cat, _shift_sum, _shift_sum_adjoint, _UpShiftSum


@pytest.mark.parametrize("compile_on", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 3, 1, 1), (2, 3, 1, 5)])
def test_upsample_conv_factorisation_is_exact(shape: tuple[int, ...], compile_on: bool, monkeypatch) -> None:
    monkeypatch.setitem(compiled._state, "enabled", compile_on)
    monkeypatch.setattr(upsample, "COMPILE_MIN_ELEMENTS", 0)  # compile even these small tensors
    torch.manual_seed(0)
    up = UpsampleConv(shape[1], 4).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    reference = up.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    grads_ref = torch.autograd.grad(reference.square().sum(), (x, up.conv.weight, up.conv.bias))
    out = up(x)
    torch.testing.assert_close(out, reference)
    grads = torch.autograd.grad(out.square().sum(), (x, up.conv.weight, up.conv.bias))
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref)


def test_up_shift_sum_gradcheck() -> None:
    z = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: _UpShiftSum.apply(z, 1, -1), (z,))
    assert torch.autograd.gradcheck(lambda z: _UpShiftSum.apply(z, 1, 2), (z,))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_out_of_place_shift_sum_is_the_custom_function(n: int) -> None:
    """The form TorchInductor compiles and the in-place eager Function compute the same map."""
    z = torch.randn(2, n, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(_shift_sum(z, 2, 1), _UpShiftSum.apply(z, 2, 1))
    torch.testing.assert_close(_shift_sum(z, 2, 3), _UpShiftSum.apply(z, 2, 3))
    torch.testing.assert_close(_shift_sum(z, 2, 1, _shift_cat), _UpShiftSum.apply(z, 2, 1))
    torch.testing.assert_close(_shift_sum(z, 2, 3, _shift_cat), _UpShiftSum.apply(z, 2, 3))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_shift_sum_adjoint_is_the_transpose(n: int) -> None:
    """<S(z), g> = <z, S^T(g)> for the compiled path's hand-written adjoint, on both axes."""
    torch.manual_seed(n)
    for tap_dim, dim in ((2, 1), (2, 3)):
        z = torch.randn(2, n, 3, 4, dtype=torch.float64)
        g = torch.randn_like(_shift_sum(z, tap_dim, dim))
        lhs = (_shift_sum(z, tap_dim, dim) * g).sum()
        rhs = (z * _shift_sum_adjoint(g, tap_dim, dim)).sum()
        torch.testing.assert_close(lhs, rhs)
        (vjp,) = torch.autograd.grad(_UpShiftSum.apply(z.requires_grad_(), tap_dim, dim), z, g)
        torch.testing.assert_close(_shift_sum_adjoint(g, tap_dim, dim), vjp)


@pytest.mark.parametrize("chunk", [1, 80, 10**9], ids=["one-sample", "partial-last", "whole-batch"])
def test_fused_path_in_batch_chunks_equals_the_reference(chunk: int, monkeypatch) -> None:
    """The CPU training path (matrix products and compiled mixing, chunk by chunk) against the reference
    conv of the upsampled input, for chunks of one sample, of two with a partial last chunk, and of all."""
    monkeypatch.setitem(compiled._state, "enabled", True)
    monkeypatch.setattr(upsample, "COMPILE_MIN_ELEMENTS", 0)
    monkeypatch.setattr(upsample, "FUSED_MIN_CHANNELS", 1)
    monkeypatch.setattr(upsample, "CHUNK_ELEMENTS", chunk)  # 80 = 2 samples of 1 x 2 x 9 x 2 = 36 taps
    torch.manual_seed(0)
    up = UpsampleConv(3, 2).double()
    x = torch.randn(5, 3, 1, 2, dtype=torch.float64, requires_grad=True)
    assert upsample._fused(x, 2)
    reference = up.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    weights = torch.randn_like(reference)
    grads_ref = torch.autograd.grad((reference * weights).sum(), (x, up.conv.weight, up.conv.bias))
    out = up(x)
    torch.testing.assert_close(out, reference)
    grads = torch.autograd.grad((out * weights).sum(), (x, up.conv.weight, up.conv.bias))
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref)
