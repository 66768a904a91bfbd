"""`UpsampleConv` equals conv(bilinear x2 upsampling) exactly, gradients included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidyn.nn.upsample import UpsampleConv, _UpShiftSum


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 3, 1, 1), (2, 3, 1, 5)])
def test_upsample_conv_factorisation_is_exact(shape: tuple[int, ...]) -> None:
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
