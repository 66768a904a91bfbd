"""ResNet-18/34/50 image backbones (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

Parameter and buffer names match torchvision's `torchvision.models.resnet` exactly (`conv1`, `bn1`,
`layer1.0.conv1`, `layer2.0.downsample.0`, `fc`, ...), so a user's local torchvision ImageNet weights file
(a plain state dict) loads with `load_pretrained` or `model.load_state_dict`. torchvision itself is not a
dependency (its compiled ops break beside a CPU-only torch) and nothing is ever downloaded.

Deviations from the paper, all shared with torchvision:
- Bottleneck puts the stride on the 3x3 convolution ("ResNet v1.5"), not on the first 1x1 convolution.
- Projection shortcuts (option B: 1x1 conv + BatchNorm) only where the shape changes.
- `widths` generalises the stage widths (64, 128, 256, 512); narrow widths give tiny test backbones with the
  same names. `num_classes=None` builds a backbone without the `fc` classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError, unpickling_refusal

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet", "load_pretrained", "RESNET_DEPTHS"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4, with a shortcut; ResNet-50."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global average pool, optional `fc`.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        layers: number of blocks in each of the four stages, e.g. (2, 2, 2, 2) for ResNet-18.
        num_classes: size of the `fc` classifier; None leaves it out (a pure feature extractor).
        widths: base width of each stage (torchvision: 64, 128, 256, 512); the stem has `widths[0]`.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet needs four stages; got layers={layers}, widths={widths}")
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = widths[3] * block.expansion
        self.depth = sum(layers) * (3 if block is Bottleneck else 2) + 2  # convs + fc, as in "ResNet-50"
        self.num_classes = num_classes
        self.fc = nn.Linear(self.feature_dim, num_classes) if num_classes is not None else None
        # torchvision's initialisation (He normal, fan_out) so from-scratch training matches it.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.in_planes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * block.expansion
        stage += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images `(N, 3, H, W)` -> globally average-pooled features `(N, feature_dim)`."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # (N, feature_dim, 1, 1) -> (N, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Logits `(N, num_classes)`, or the pooled features when the model has no `fc`."""
        features = self.forward_features(x)
        return features if self.fc is None else self.fc(features)


RESNET_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


def resnet(
    depth: int, *, num_classes: int | None = None, widths: Sequence[int] = (64, 128, 256, 512)
) -> ResNet:
    """Build ResNet-18, -34 or -50 (torchvision layout); `num_classes=None` omits the classifier."""
    if depth not in RESNET_DEPTHS:
        raise VidynError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNET_DEPTHS)}")
    block, layers = RESNET_DEPTHS[depth]
    return ResNet(block, layers, num_classes=num_classes, widths=widths)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise VidynError(
            f"pretrained weights file {str(path)!r} does not exist; pass a local .pth or .safetensors"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif suffix in (".pth", ".pt", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise VidynError(
                f"cannot read {str(path)!r}: expected a .pth/.pt state dict or a .safetensors file"
            )
    except VidynError:
        raise
    except Exception as exc:  # corrupt file, pickle with objects weights_only refuses, ...
        first_line = unpickling_refusal(exc) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VidynError(
            f"could not read weights from {str(path)!r} ({first_line}); save a plain state dict "
            "(torch.save(model.state_dict(), path)) or a .safetensors file"
        ) from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # checkpoints that wrap the weights
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise VidynError(
            f"{str(path)!r} is not a state dict of tensors; save it with torch.save(model.state_dict(), path)"
        )
    return dict(state)


def _describe(keys: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def _guess_depth(state: Mapping[str, Tensor]) -> str:
    """Name the architecture a state dict was saved from, e.g. "ResNet-50", for error messages."""
    blocks = [
        1 + max((int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")), default=-1)
        for i in range(1, 5)
    ]
    if not all(blocks):
        return "not a torchvision-style ResNet"
    per_block = 3 if any(".conv3." in k for k in state) else 2
    return f"ResNet-{sum(blocks) * per_block + 2}"


def load_pretrained(model: ResNet, path: str | Path) -> None:
    """Load a local ResNet state dict (torchvision ImageNet weights, `.pth`/`.pt` or `.safetensors`).

    `fc.*` entries are skipped when the model has no classifier or a classifier of another size, and
    `num_batches_tracked` buffers missing from old torchvision files keep their current value. Any other
    missing, unexpected or wrongly shaped entry raises VidynError naming the keys (the usual cause is a
    file for another depth). Never downloads.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    fc_keys = [k for k in state if k.startswith("fc.")]
    if fc_keys and any(k not in own or own[k].shape != state[k].shape for k in fc_keys):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # The classifier is optional on both sides: it is only checked when the file's fc fits the model's.
    skip_fc = not any(k.startswith("fc.") for k in state)
    missing = [
        k
        for k in own
        if k not in state and not k.endswith("num_batches_tracked") and not (skip_fc and k.startswith("fc."))
    ]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes (file vs model): {_describe(wrong_shape)}")
        raise VidynError(
            f"{str(path)!r} ({_guess_depth(state)}) does not fit this ResNet-{model.depth} "
            f"({'; '.join(parts)}); pass weights saved from a ResNet of the same depth"
        )
    merged = {k: state.get(k, own[k]) for k in own}
    model.load_state_dict(merged, strict=True)
