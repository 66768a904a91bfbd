"""Convolution + bias + ReLU in one oneDNN call on CPU (inference only), used by the metric networks.

`torch.ops.mkldnn._convolution_pointwise` is the fused kernel torch's own inductor emits for conv+ReLU on
CPU; it saves one pass over every activation. Where the build lacks it (or off CPU / float32) this falls
back to `F.conv*` and an in-place ReLU, with the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_FUSED = (
    getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if torch.backends.mkldnn.is_available()
    else None
)


def conv_relu(
    x: Tensor, w: Tensor, b: Tensor | None, stride: list[int], padding: list[int], relu: bool = True
) -> Tensor:
    """`relu(conv(x, w) + b)` for 2-D (w 4-D) or 3-D (w 5-D) convolutions; `relu=False` skips the ReLU."""
    if relu and _FUSED is not None and x.device.type == "cpu" and x.dtype == torch.float32:
        dilation = [1] * (w.dim() - 2)
        return _FUSED(x, w, b, padding, stride, dilation, 1, "relu", [None], "")
    conv = F.conv3d if w.dim() == 5 else F.conv2d
    y = conv(x, w, b, stride, padding)
    return F.relu_(y) if relu else y
