"""`vidyn.nn.resnet3d`: the nearest x2 upsampling of the decoder blocks' shortcuts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidyn.nn.resnet3d import upsample_nearest2x


def test_nearest_upsampling_and_its_gradient_match_interpolate() -> None:
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    y = upsample_nearest2x(x)
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=2, mode="nearest"), rtol=0, atol=0)
    grad = torch.randn_like(y)
    (mine,) = torch.autograd.grad(y, x, grad)
    (ref,) = torch.autograd.grad(F.interpolate(x, scale_factor=2, mode="nearest"), x, grad)
    torch.testing.assert_close(mine, ref, rtol=1e-14, atol=1e-14)
    # a non-contiguous incoming gradient (e.g. from a transpose downstream)
    (mine_t,) = torch.autograd.grad(y, x, grad.transpose(2, 3).contiguous().transpose(2, 3))
    torch.testing.assert_close(mine_t, ref, rtol=1e-14, atol=1e-14)
    assert torch.autograd.gradcheck(upsample_nearest2x, (x[:1, :2].detach().requires_grad_(),))
