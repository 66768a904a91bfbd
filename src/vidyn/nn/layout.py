"""Memory layouts on CPU: element-wise ops and oneDNN convolutions are fastest when their tensors agree.

PyTorch runs an element-wise op on tensors of different memory formats (one contiguous, one channels-last)
through its strided fallback: an `add` of two `(4, 128, 16, 16)` float tensors took 222 us against
36-42 us when both share a layout (one thread, this project's CPU; docs/speed.md, session 19).
Autograd hands each op its gradient in whatever layout the consumer produced, so the fix is at the
boundaries: `grad_channels_last` keeps a tensor as it is and returns its gradient channels-last.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def is_channels_last(x: Tensor) -> bool:
    """Whether `x` is a 4-D tensor in channels-last memory (and not also plain contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _GradChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def grad_channels_last(x: Tensor) -> Tensor:
    """`x` itself (a view) whose gradient flows back channels-last; a no-op without autograd."""
    if not (torch.is_grad_enabled() and x.requires_grad and x.dim() == 4):
        return x
    return _GradChannelsLast.apply(x)
