"""Weight gradients of a recurrence's convolutions computed once per rollout instead of once per step.

A recurrent cell applies the same convolution at every step, so its weight gradient is a sum over steps:
`dW = sum_t corr(x_t, dy_t)`. Backpropagation through time needs each step's *input* gradient in turn
(it flows into the previous step), but not the weight gradient, which only has to be complete when the
backward pass ends. Computed per step, each of the T weight gradients is a thin matrix product (its
reduction runs over one step's `B * H * W` positions) and writes a full weight-sized tensor that autograd
then adds into the accumulated gradient. At OpenSTL's Moving MNIST configuration (batch 1, 16x16 grid,
128 channels, kernel 5) these are 3.3M-float weights reduced over only 256 positions each: memory traffic,
not arithmetic, bounds them. Stacking the steps' inputs and output gradients turns the T calls into one
matrix product over `T * B * H * W` positions and one write (`docs/speed.md` has the measurements).

`TimeBatchedConv2d` is an `nn.Conv2d` (same parameters and state dict) for the cells. Inside
`time_batched_weight_grads(module)`, each of its calls in a grad-enabled forward computes the usual
output; its backward returns the input gradient and keeps the step's input and output gradient; a node
shared by all of that rollout's steps (every step uses the weight through it) runs once all steps' backwards
have, and computes the weight (and bias) gradient from the stacked steps. Outside the context (inference,
another caller) it is a plain convolution. The result equals the per-step sum up to float rounding
(summation order). Only inputs of the weight's dtype without autocast take this path (under autocast the
convolution runs in the autocast dtype; the plain path handles that).

Where `vidyn.nn.winograd` applies (CPU training of large 3x3 / 5x5 convolutions), both paths compute the
convolution by Winograd's algorithm and transform the weight once per rollout: inside the context the
steps record their transformed inputs and output gradients, and the weight's gradient is one batched
product over all steps' tiles, mapped back through the transform's adjoint (`_SharedWinogradWeight`); with
`enabled=False` the steps share the transformed weight and autograd sums its gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.nn.winograd import (
    winograd_applies,
    winograd_conv2d,
    winograd_input_adjoint,
    winograd_input_transform,
    winograd_output_adjoint,
    winograd_output_transform,
    winograd_tile,
    winograd_weight,
    winograd_weight_adjoint,
    winograd_work,
)


class _Rollout:
    """One rollout's record for one convolution: the steps' inputs and output gradients."""

    def __init__(self, conv: nn.Conv2d) -> None:
        self.conv = conv
        self.inputs: list[Tensor] = []
        self.grads: list[Tensor] = []

    def backward_args(self, weight: Tensor) -> dict[str, Any]:
        conv = self.conv
        return dict(
            weight=weight,
            bias_sizes=None if conv.bias is None else [conv.out_channels],
            stride=list(conv.stride),
            padding=list(conv.padding),
            dilation=list(conv.dilation),
            transposed=False,
            output_padding=[0, 0],
            groups=conv.groups,
        )


class _SharedWeight(torch.autograd.Function):
    """Identity on (weight, bias) whose backward computes their gradients from the whole rollout."""

    @staticmethod
    def forward(
        ctx: Any, weight: Tensor, bias: Tensor | None, rollout: _Rollout
    ) -> tuple[Tensor, Tensor | None]:
        ctx.rollout = rollout
        ctx.set_materialize_grads(False)  # the steps return no weight gradient: None, not zeros
        return weight.view_as(weight), None if bias is None else bias.view_as(bias)

    @staticmethod
    def backward(
        ctx: Any, grad_w: Tensor | None, grad_b: Tensor | None
    ) -> tuple[Tensor, Tensor | None, None]:
        rollout = ctx.rollout
        grads, inputs = torch.cat(rollout.grads), torch.cat(rollout.inputs)  # (T*B, ...) each
        rollout.grads.clear()
        rollout.inputs.clear()
        args = rollout.backward_args(rollout.conv.weight.detach())
        has_bias = rollout.conv.bias is not None
        _, dw, db = torch.ops.aten.convolution_backward(
            grads, inputs, output_mask=[False, True, has_bias], **args
        )
        if grad_w is not None:  # a use of the weight outside the steps (none in vidyn's cells)
            dw = dw + grad_w
        if has_bias and grad_b is not None:
            db = db + grad_b
        return dw, (db if has_bias else None), None


class _Step(torch.autograd.Function):
    """One step's convolution: backward gives the input gradient and records the step for the weight's."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, rollout: _Rollout) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.rollout = rollout
        conv = rollout.conv
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        rollout = ctx.rollout
        rollout.inputs.append(x)
        rollout.grads.append(grad)
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        args = rollout.backward_args(weight)
        grad_x = torch.ops.aten.convolution_backward(grad, x, output_mask=[True, False, False], **args)[0]
        return grad_x, None, None, None


class _SharedWinogradWeight(torch.autograd.Function):
    """The weight's Winograd transform, once per rollout; its backward forms the transform's gradient from
    all steps in one batched product (reduction over every step's tiles) and maps it back to the weight."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, rollout: _Rollout, tile: int) -> Tensor:
        ctx.rollout, ctx.algo = rollout, (tile, weight.shape[-1])
        ctx.set_materialize_grads(False)
        return winograd_weight(weight, tile)

    @staticmethod
    def backward(ctx: Any, grad_u: Tensor | None) -> tuple[Tensor, None, None]:
        rollout = ctx.rollout
        tiles, grads = torch.cat(rollout.inputs, 1), torch.cat(rollout.grads, 1)  # (a*a, T*P, C | K)
        rollout.inputs.clear()
        rollout.grads.clear()
        du = torch.bmm(tiles.transpose(1, 2), grads)  # (a*a, C, K)
        if grad_u is not None:
            du = du + grad_u
        return winograd_weight_adjoint(du, ctx.algo), None, None


class _WinogradStep(torch.autograd.Function):
    """One step's Winograd convolution: backward gives the input gradient and records the step's
    transformed input and output gradient for the weight's."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, u: Tensor, rollout: _Rollout, algo: tuple[int, int]) -> Tensor:
        v = winograd_input_transform(x, algo)  # (a*a, P, C)
        ctx.save_for_backward(v, u)
        ctx.rollout, ctx.shape, ctx.algo = rollout, tuple(x.shape), algo
        return winograd_output_transform(torch.bmm(v, u), (x.shape[0], u.shape[-1], *x.shape[2:]), algo)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        v, u = ctx.saved_tensors
        rollout = ctx.rollout
        dm = winograd_output_adjoint(grad, ctx.algo)  # (a*a, P, K)
        rollout.inputs.append(v)
        rollout.grads.append(dm)
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        dx = winograd_input_adjoint(torch.bmm(dm, u.transpose(1, 2)), ctx.shape, ctx.algo)
        return dx, None, None, None


class TimeBatchedConv2d(nn.Conv2d):
    """`nn.Conv2d` whose weight gradient is batched over a rollout inside `time_batched_weight_grads`."""

    _rollout: tuple[_Rollout, Tensor, Tensor | None] | None = None
    _active = False
    _winograd_rollout: tuple[_Rollout, Tensor, tuple[int, int]] | None = None
    _in_rollout = False
    _winograd_weight: tuple[int, Tensor] | None = None  # (tile, transformed weight)
    min_work = 0  # Winograd only from this many tiles x C_in x C_out (vidyn.nn.ode's ODE function sets it)

    def _winograd(self, x: Tensor) -> bool:
        return (
            winograd_applies(self, x)
            and winograd_work(x, self.out_channels, self.kernel_size[0]) >= self.min_work
        )

    def _plain(self, x: Tensor, tanh: bool) -> Tensor:
        if not self._winograd(x):
            return _tanh_if(super().forward(x), tanh)
        tile = winograd_tile(self.kernel_size[0], x.shape[-2], x.shape[-1])
        if self._winograd_weight is not None and self._winograd_weight[0] == tile:
            u = self._winograd_weight[1]
        else:
            u = winograd_weight(self.weight, tile)
            if self._in_rollout:  # the weight is fixed within a rollout: transform it once for all steps
                self._winograd_weight = (tile, u)
        return winograd_conv2d(x, self.weight, self.bias, transformed=u, tile=tile, tanh=tanh)

    def forward(self, x: Tensor, tanh: bool = False) -> Tensor:
        """The convolution of `x`; `tanh`: its tanh (fused into the Winograd path's output loop)."""
        if not (self._active and torch.is_grad_enabled() and self.weight.requires_grad):
            return self._plain(x, tanh)
        plain_conv = self.padding_mode != "zeros" or isinstance(self.padding, str)
        if plain_conv or x.dtype != self.weight.dtype or torch.is_autocast_enabled(x.device.type):
            return self._plain(x, tanh)
        if self._winograd(x):
            if self._winograd_rollout is None:
                rollout = _Rollout(self)
                algo = (winograd_tile(self.kernel_size[0], x.shape[-2], x.shape[-1]), self.kernel_size[0])
                u = _SharedWinogradWeight.apply(self.weight, rollout, algo[0])
                self._winograd_rollout = (rollout, u, algo)
            rollout, u, algo = self._winograd_rollout
            y = _WinogradStep.apply(x, u, rollout, algo)
            return _tanh_if(y if self.bias is None else y + self.bias.view(1, -1, 1, 1), tanh)
        if self._rollout is None:
            rollout = _Rollout(self)
            self._rollout = (rollout, *_SharedWeight.apply(self.weight, self.bias, rollout))
        rollout, weight, bias = self._rollout
        return _tanh_if(_Step.apply(x, weight, bias, rollout), tanh)


def _tanh_if(y: Tensor, tanh: bool) -> Tensor:
    return torch.tanh(y) if tanh else y


@contextlib.contextmanager
def time_batched_weight_grads(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every `TimeBatchedConv2d` in `module` batches its weight gradient over the
    block's calls (one rollout); `enabled=False` leaves them plain convolutions."""
    if torch.compiler.is_compiling():  # a compiled rollout: plain convolutions (no module state to trace)
        yield
        return
    convs = [m for m in module.modules() if isinstance(m, TimeBatchedConv2d)]
    for conv in convs:
        conv._active, conv._in_rollout = enabled, True
        conv._rollout = conv._winograd_rollout = conv._winograd_weight = None
    try:
        yield
    finally:
        for conv in convs:
            conv._active, conv._in_rollout = False, False
            conv._rollout = conv._winograd_rollout = conv._winograd_weight = None
