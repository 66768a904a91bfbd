"""`UpsampleConv`: a 3x3 convolution of a bilinear x2 upsampling, computed exactly at a quarter of the cost.

Vid-ODE's decoder (`vidyn.models.vid_ode`) upsamples its latent by 2 and convolves it at every level; this
module gives the same function and parameters in a cheaper order (see `UpsampleConv`). Three forms of the
phase mixing, one function: `_UpShiftSum` (eager, in place, its adjoint by hand), and `_shift_sum` /
`_shift_sum_adjoint` (out of place, for TorchInductor to fuse into one loop each), which the CPU training
path `_FusedUpsampleConv` runs batch chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode

from vidyn.nn.compiled import SMALL_KERNEL_STATIC_SHAPES, compile_enabled, compiled_or_eager


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


def _shift(u: Tensor, dim: int, offset: int) -> Tensor:
    """`u[clamp(i + offset)]` along `dim`: a gather TorchInductor turns into clamped loads inside one loop."""
    n = u.shape[dim]
    index = (torch.arange(n, device=u.device) + offset).clamp(0, n - 1)
    return u.index_select(dim, index)


def _edges(u: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Indicators of the first and last index along `dim`, broadcastable against `u`."""
    n = u.shape[dim]
    index = torch.arange(n, device=u.device).view([-1 if k == dim else 1 for k in range(u.dim())])
    return (index == 0).to(u.dtype), (index == n - 1).to(u.dtype)


def _shift_cat(u: Tensor, dim: int, offset: int) -> Tensor:
    """`_shift` by +-1 as a concatenation: the form whose adjoint TorchInductor derives well itself."""
    n = u.shape[dim]
    if offset < 0:
        return torch.cat([u.narrow(dim, 0, 1), u.narrow(dim, 0, n - 1)], dim=dim)
    return torch.cat([u.narrow(dim, 1, n - 1), u.narrow(dim, n - 1, 1)], dim=dim)


def _shift_sum(z: Tensor, tap_dim: int, dim: int, shift: Callable[..., Tensor] = _shift) -> Tensor:
    """`_UpShiftSum` written out of place for TorchInductor, which fuses it into one pass: the same formula,
    with the clamped shifts as gathers (`_shift`, for `_FusedUpsampleConv`'s one loop) or concatenations
    (`_shift_cat`, for `_phases_compiled`, whose adjoint Inductor derives)."""
    z0, z1, z2 = z.unbind(tap_dim)
    dim = dim - 1 if dim > tap_dim else dim
    first, last = _edges(z0, dim)
    even = (0.25 * z0 + 0.75 * (z1 + z2) + shift(0.75 * z0 + 0.25 * z1, dim, -1) + 0.25 * shift(z2, dim, 1)
            - first * z0)  # fmt: skip
    odd = (0.75 * (z0 + z1) + 0.25 * z2 + 0.25 * shift(z0, dim, -1) + shift(0.25 * z1 + 0.75 * z2, dim, 1)
           - last * z2)  # fmt: skip
    return torch.stack([even, odd], dim=tap_dim)


def _shift_sum_adjoint(grad: Tensor, tap_dim: int, dim: int) -> Tensor:
    """The adjoint of `_shift_sum` (2 -> 3 along `tap_dim`), out of place, as `_UpShiftSum.backward`:
    S-^T(u)[j] = u[j+1] (0 at j = n-1) + [j = 0] u[0], S+^T(u)[j] = u[j-1] (0 at j = 0) + [j = n-1] u[n-1]."""
    ge, go = grad.unbind(tap_dim)
    dim = dim - 1 if dim > tap_dim else dim
    first, last = _edges(ge, dim)
    n = ge.shape[dim]

    def prev_t(u: Tensor) -> Tensor:  # S-^T
        return (1 - last) * _shift(u, dim, 1) + first * u.narrow(dim, 0, 1)

    def next_t(u: Tensor) -> Tensor:  # S+^T
        return (1 - first) * _shift(u, dim, -1) + last * u.narrow(dim, n - 1, 1)

    g0 = 0.25 * ge + 0.75 * go + prev_t(0.75 * ge + 0.25 * go) - first * ge
    g1 = 0.75 * (ge + go) + 0.25 * prev_t(ge) + 0.25 * next_t(go)
    g2 = 0.75 * ge + 0.25 * go + next_t(0.25 * ge + 0.75 * go) - last * go
    return torch.stack([g0, g1, g2], dim=tap_dim)


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
    return _interleave(_shift_sum(_shift_sum(z, 3, 1, _shift_cat), 4, 2, _shift_cat), bias)


def _mix(z: Tensor, bias: Tensor) -> Tensor:
    """Taps `(N, h, w, 3, 3, O)` -> `(N, 2h, 2w, O)` + bias: the phase mixing, as one compiled function."""
    return _interleave(_shift_sum(_shift_sum(z, 3, 1), 4, 2), bias).permute(0, 2, 3, 1)


def _mix_adjoint(grad: Tensor) -> Tensor:
    """`(N, 2h, 2w, O)` -> `(N, h, w, 3, 3, O)`: the adjoint of `_mix` without its bias."""
    n, hh, ww, o = grad.shape
    g = grad.reshape(n, hh // 2, 2, ww // 2, 2, o).permute(0, 1, 3, 2, 4, 5)  # (N, h, w, row, column, O)
    return _shift_sum_adjoint(_shift_sum_adjoint(g, 4, 2), 3, 1)


# Compiling takes seconds, so it is used where it pays back: CPU training (gradients on) on layers whose
# 9-tap intermediate has at least COMPILE_MIN_ELEMENTS (Vid-ODE's decoder at 64x64, batch 4: 6M and 12M).
# Layers with at least FUSED_MIN_CHANNELS outputs take `_FusedUpsampleConv`, whose intermediate of one batch
# chunk (at most CHUNK_ELEMENTS, at least one sample) stays in cache and is reused from chunk to chunk;
# narrower ones (ode_gan's decoder: 8-16), where its small matrix products were slower, and autocast keep
# the full-batch form with the mixing compiled (`_phases_compiled`). Inference, small layers and GPUs (where
# eager measured faster on an H200) stay eager. Measured: docs/speed.md, session 15.
COMPILE_MIN_ELEMENTS = 1 << 20
CHUNK_ELEMENTS = 1 << 20
FUSED_MIN_CHANNELS = 32
_phases_compiled = compiled_or_eager(_phases_fused, _phases_eager, static_shapes=SMALL_KERNEL_STATIC_SHAPES)
_mix_compiled = compiled_or_eager(_mix, _mix, static_shapes=SMALL_KERNEL_STATIC_SHAPES)
_mix_adjoint_compiled = compiled_or_eager(
    _mix_adjoint, _mix_adjoint, static_shapes=SMALL_KERNEL_STATIC_SHAPES
)


class _FusedUpsampleConv(torch.autograd.Function):
    """`UpsampleConv` on CPU in training: the nine 1x1 products as one matrix product and the phase mixing
    compiled, batch chunk by chunk (`CHUNK_ELEMENTS`), forward and backward. A full-batch intermediate of
    9 x O channels (and its gradient) would be allocated afresh at every step; above glibc's mmap threshold
    (32 MB at most) every allocation costs page faults (measured: 26 ms to allocate and fill 47 MB against
    5 ms to fill it again), more than the mixing itself."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        n, i, h, w = x.shape
        o = weight.shape[0]
        taps = weight.permute(2, 3, 0, 1).reshape(9 * o, i)  # row (dy * 3 + dx) * O + o
        rows = x.permute(0, 2, 3, 1).contiguous()  # (N, h, w, I): a view if x is channels-last
        out = x.new_empty(n, 2 * h, 2 * w, o)
        step = max(1, CHUNK_ELEMENTS // (h * w * 9 * o))
        for s in range(0, n, step):
            z = F.linear(rows[s : s + step], taps)  # (c, h, w, 9 O)
            out[s : s + step] = _mix_compiled(z.view(-1, h, w, 3, 3, o), bias)
        ctx.save_for_backward(rows, taps)
        ctx.step = step
        return out.permute(0, 3, 1, 2)  # (N, O, 2h, 2w), channels-last memory

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        rows, taps = ctx.saved_tensors
        n, h, w, i = rows.shape
        o = taps.shape[0] // 9
        g = grad.permute(0, 2, 3, 1)  # (N, 2h, 2w, O)
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_rows = rows.new_empty(n * h * w, i) if need_x else None
        grad_taps = taps.new_zeros(9 * o, i) if need_w else None
        for s in range(0, n, ctx.step):
            gz = _mix_adjoint_compiled(g[s : s + ctx.step]).reshape(-1, 9 * o)  # (c h w, 9 O)
            part = slice(s * h * w, (s + ctx.step) * h * w)
            if grad_rows is not None:
                torch.mm(gz, taps, out=grad_rows[part])
            if grad_taps is not None:
                grad_taps.addmm_(gz.t(), rows.view(-1, i)[part])
        grad_x = grad_w = None
        if grad_rows is not None:
            grad_x = grad_rows.view(n, h, w, i).permute(0, 3, 1, 2)  # (N, I, h, w), channels-last memory
        if grad_taps is not None:
            grad_w = grad_taps.view(3, 3, o, i).permute(2, 3, 0, 1).contiguous()  # (O, I, 3, 3)
        return grad_x, grad_w, grad.sum((0, 2, 3)) if need_b else None


def _phases(z: Tensor, bias: Tensor) -> Tensor:
    if z.device.type == "cpu" and torch.is_grad_enabled() and z.numel() >= COMPILE_MIN_ELEMENTS:
        return _phases_compiled(z, bias)
    return _phases_eager(z, bias)


def _fused(x: Tensor, out_channels: int) -> bool:
    """Whether `UpsampleConv` takes `_FusedUpsampleConv` (see COMPILE_MIN_ELEMENTS): not under autocast
    (bf16-mixed keeps the convolution's precision), inside a caller's `torch.compile` or a dispatch mode
    such as `FlopCounterMode` (which then count the ordinary convolution)."""
    big = x.numel() // max(1, x.shape[1]) * 9 * out_channels >= COMPILE_MIN_ELEMENTS
    big = big and out_channels >= FUSED_MIN_CHANNELS
    return (x.device.type == "cpu" and big and torch.is_grad_enabled() and compile_enabled()
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and _get_current_dispatch_mode() is None)  # fmt: skip


class UpsampleConv(nn.Module):
    """`Conv2d(3x3, padding 1)` applied to a bilinear x2 upsampling (`align_corners=False`), computed exactly
    in a cheaper order (same parameters, `self.conv`).

    Upsampling acts on space and the conv's taps on channels, so they commute tap by tap:
    `conv(up(x))[p] = sum_tap up(W_tap . x)[p + tap]`. The nine 1x1 products `W_tap . x` run at the low
    resolution (a quarter of the multiply-adds of the high-resolution conv); upsampling and the shifted
    sum reduce to per-channel mixing of neighbours, done separably at the low resolution for each output
    phase (`_UpShiftSum`), and the phases are interleaved. Channels-last layout throughout: oneDNN's
    native layout on CPU, where this wide 1x1 conv runs twice as fast as in NCHW. In CPU training on
    large layers (`_fused`) the products are matrix products and the mixing is compiled, batch chunk by
    batch chunk (`_FusedUpsampleConv`); `VIDYN_COMPILE=0` keeps the eager form.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        o = self.conv.out_channels
        if _fused(x, o):
            return _FusedUpsampleConv.apply(x, self.conv.weight, self.conv.bias)
        # (O, I, 3, 3) -> (3*3*O, I, 1, 1): row index (dy * 3 + dx) * O + o
        taps = self.conv.weight.permute(2, 3, 0, 1).reshape(9 * o, -1, 1, 1)
        z = F.conv2d(x.contiguous(memory_format=torch.channels_last), taps)
        z = z.permute(0, 2, 3, 1).view(n, h, w, 3, 3, o)  # memory order (N, h, w, dy, dx, O)
        return _phases(z, self.conv.bias)  # (N, O, 2h, 2w)
