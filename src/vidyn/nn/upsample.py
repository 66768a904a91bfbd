"""`UpsampleConv`: a 3x3 convolution of a bilinear x2 upsampling, computed exactly at a quarter of the cost.

Vid-ODE's decoder (`vidyn.models.vid_ode`) upsamples its latent by 2 and convolves it at every level; this
module gives the same function and parameters in a cheaper order (see `UpsampleConv`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.nn.compiled import compiled_or_eager


class _UpShiftSum(torch.autograd.Function):
    """1-D `y[Y] = sum_d up(z_d)[Y + d - 1]` (zero outside) as even/odd phases along axis `tap_dim` (3 -> 2).

    `z_d` is `z` at index d of `tap_dim` (d = 0, 1, 2: conv tap -1, 0, +1), along spatial axis `dim` (n);
    bilinear x2 (align_corners=False) is `up(z)[2i] = .25 z[i-1] + .75 z[i]` and
    `up(z)[2i+1] = .75 z[i] + .25 z[i+1]` with clamped indices, so with `S-` / `S+` the clamped shifts
    `z[i-1]` / `z[i+1]`:
        even = .25 z0 + .75 (z1 + z2) + S-(.75 z0 + .25 z1) + .25 S+(z2) - [i = 0] z0
        odd  = .75 (z0 + z1) + .25 z2 + .25 S-(z0) + S+(.25 z1 + .75 z2) - [i = n-1] z2
    (the last terms remove the reads of the conv's zero padding). The op is linear; forward and its
    adjoint are written with in-place updates because autograd's slicing would allocate full-size zero
    gradients for every shifted read.
    """

    @staticmethod
    def forward(ctx, z: Tensor, tap_dim: int, dim: int) -> Tensor:  # type: ignore[override]
        tap_dim, dim = tap_dim % z.dim(), dim % z.dim()
        n = z.shape[dim]
        ctx.tap_dim, ctx.dim = tap_dim, dim
        dim = dim - 1 if dim > tap_dim else dim  # the spatial axis once the tap axis is unbound
        z0, z1, z2 = z.unbind(tap_dim)
        shape = list(z.shape)
        shape[tap_dim] = 2
        y = z.new_empty(shape)
        even, odd = y.unbind(tap_dim)

        def nar(t: Tensor, start: int, length: int) -> Tensor:
            return t.narrow(dim, start, length)

        torch.lerp(z0, z1, 0.75, out=even).add_(z2, alpha=0.75)  # .25 z0 + .75 z1 + .75 z2
        t = torch.lerp(z0, z1, 0.25)  # .75 z0 + .25 z1
        nar(even, 1, n - 1).add_(nar(t, 0, n - 1))
        nar(even, 0, 1).add_(nar(t, 0, 1)).sub_(nar(z0, 0, 1))
        nar(even, 0, n - 1).add_(nar(z2, 1, n - 1), alpha=0.25)
        nar(even, n - 1, 1).add_(nar(z2, n - 1, 1), alpha=0.25)
        torch.lerp(z2, z0, 0.75, out=odd).add_(z1, alpha=0.75)  # .75 z0 + .75 z1 + .25 z2
        nar(odd, 1, n - 1).add_(nar(z0, 0, n - 1), alpha=0.25)
        nar(odd, 0, 1).add_(nar(z0, 0, 1), alpha=0.25)
        t = torch.lerp(z1, z2, 0.75)  # .25 z1 + .75 z2
        nar(odd, 0, n - 1).add_(nar(t, 1, n - 1))
        nar(odd, n - 1, 1).add_(nar(t, n - 1, 1)).sub_(nar(z2, n - 1, 1))
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        tap_dim, dim = ctx.tap_dim, ctx.dim
        n = grad.shape[dim]
        dim = dim - 1 if dim > tap_dim else dim
        ge, go = grad.unbind(tap_dim)
        shape = list(grad.shape)
        shape[tap_dim] = 3
        gz = grad.new_empty(shape)
        g0, g1, g2 = gz.unbind(tap_dim)

        def nar(t: Tensor, start: int, length: int) -> Tensor:
            return t.narrow(dim, start, length)

        # Adjoints: S-^T(u)[j] = u[j+1] (+ u[0] at j = 0), S+^T(u)[j] = u[j-1] (+ u[n-1] at j = n-1).
        torch.lerp(ge, go, 0.75, out=g0)  # .25 ge + .75 go
        t = torch.lerp(ge, go, 0.25)  # .75 ge + .25 go, through S-
        nar(g0, 0, n - 1).add_(nar(t, 1, n - 1))
        nar(g0, 0, 1).add_(nar(t, 0, 1)).sub_(nar(ge, 0, 1))
        torch.add(ge, go, out=g1)
        g1.mul_(0.75)
        nar(g1, 0, n - 1).add_(nar(ge, 1, n - 1), alpha=0.25)
        nar(g1, 0, 1).add_(nar(ge, 0, 1), alpha=0.25)
        nar(g1, 1, n - 1).add_(nar(go, 0, n - 1), alpha=0.25)
        nar(g1, n - 1, 1).add_(nar(go, n - 1, 1), alpha=0.25)
        torch.lerp(go, ge, 0.75, out=g2)  # .75 ge + .25 go
        t = torch.lerp(ge, go, 0.75)  # .25 ge + .75 go, through S+
        nar(g2, 1, n - 1).add_(nar(t, 0, n - 1))
        nar(g2, n - 1, 1).add_(nar(t, n - 1, 1)).sub_(nar(go, n - 1, 1))
        return gz, None, None


def _shift_sum(z: Tensor, tap_dim: int, dim: int) -> Tensor:
    """`_UpShiftSum` written out of place, for TorchInductor to fuse into one pass (and to derive the
    adjoint itself): the same formula, with the clamped shifts as concatenations."""
    z0, z1, z2 = z.unbind(tap_dim)
    dim = dim - 1 if dim > tap_dim else dim
    n = z0.shape[dim]

    def prev(u: Tensor) -> Tensor:  # S-: u[i-1], clamped
        return torch.cat([u.narrow(dim, 0, 1), u.narrow(dim, 0, n - 1)], dim=dim)

    def next_(u: Tensor) -> Tensor:  # S+: u[i+1], clamped
        return torch.cat([u.narrow(dim, 1, n - 1), u.narrow(dim, n - 1, 1)], dim=dim)

    index = torch.arange(n, device=z.device).view([-1 if k == dim else 1 for k in range(z0.dim())])
    first, last = (index == 0).to(z.dtype), (index == n - 1).to(z.dtype)
    even = 0.25 * z0 + 0.75 * (z1 + z2) + prev(0.75 * z0 + 0.25 * z1) + 0.25 * next_(z2) - first * z0
    odd = 0.75 * (z0 + z1) + 0.25 * z2 + 0.25 * prev(z0) + next_(0.25 * z1 + 0.75 * z2) - last * z2
    return torch.stack([even, odd], dim=tap_dim)


def _interleave(cols: Tensor, bias: Tensor) -> Tensor:
    """(N, h, w, row phase, column phase, O) -> (N, h, row phase, w, column phase, O) = (N, 2h, 2w, O),
    returned as `(N, O, 2h, 2w)` (channels-last memory) plus the bias."""
    n, h, w, _, _, o = cols.shape
    out = cols.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, o).permute(0, 3, 1, 2)
    return out + bias.view(1, o, 1, 1)


def _phases_eager(z: Tensor, bias: Tensor) -> Tensor:
    rows = _UpShiftSum.apply(z, 3, 1)  # (N, h, w, row phase, dx, O)
    return _interleave(_UpShiftSum.apply(rows, 4, 2), bias)  # column phases, interleaved


def _phases_fused(z: Tensor, bias: Tensor) -> Tensor:
    return _interleave(_shift_sum(_shift_sum(z, 3, 1), 4, 2), bias)


# Compiled, the dozen passes of each shift-sum (and their adjoints) become one loop each; eager, the
# in-place custom Function is the faster form. Compiling takes seconds, so it is used where it pays back:
# in training (gradients on) on tensors of at least COMPILE_MIN_ELEMENTS (Vid-ODE's decoder at 64x64,
# batch 4: 6M and 12M); inference and small tensors stay eager. Measured: docs/prediction.md.
COMPILE_MIN_ELEMENTS = 1 << 20
_phases_compiled = compiled_or_eager(_phases_fused, _phases_eager)


def _phases(z: Tensor, bias: Tensor) -> Tensor:
    if torch.is_grad_enabled() and z.numel() >= COMPILE_MIN_ELEMENTS:
        return _phases_compiled(z, bias)
    return _phases_eager(z, bias)


class UpsampleConv(nn.Module):
    """`Conv2d(3x3, padding 1)` applied to a bilinear x2 upsampling (`align_corners=False`), computed exactly
    in a cheaper order (same parameters, `self.conv`).

    Upsampling acts on space and the conv's taps on channels, so they commute tap by tap:
    `conv(up(x))[p] = sum_tap up(W_tap . x)[p + tap]`. The nine 1x1 products `W_tap . x` run at the low
    resolution (a quarter of the multiply-adds of the high-resolution conv); upsampling and the shifted
    sum reduce to per-channel mixing of neighbours, done separably at the low resolution for each output
    phase (`_UpShiftSum`), and the phases are interleaved. Channels-last layout throughout: oneDNN's
    native layout on CPU, where this wide 1x1 conv runs twice as fast as in NCHW.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        o = self.conv.out_channels
        # (O, I, 3, 3) -> (3*3*O, I, 1, 1): row index (dy * 3 + dx) * O + o
        taps = self.conv.weight.permute(2, 3, 0, 1).reshape(9 * o, -1, 1, 1)
        z = F.conv2d(x.contiguous(memory_format=torch.channels_last), taps)
        z = z.permute(0, 2, 3, 1).view(n, h, w, 3, 3, o)  # memory order (N, h, w, dy, dx, O)
        return _phases(z, self.conv.bias)  # (N, O, 2h, 2w)
