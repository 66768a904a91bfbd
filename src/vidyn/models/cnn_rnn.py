"""CNN-RNN action recognition (seed 002): a per-frame ResNet, a bidirectional LSTM, temporal attention.

The architecture of seed 002 (UCF101, 58.39% top-1 with ResNet-18 + BiLSTM + attention), in the CNN+LSTM
line of Donahue et al., "Long-term Recurrent Convolutional Networks", CVPR 2015:

    frames (B, T, C, H, W) -> ResNet-18/34/50 on every frame (He et al. 2016) -> (B, T, 512|2048)
      -> bidirectional LSTM (Hochreiter & Schmidhuber 1997) -> (B, T, 2 * hidden)
      -> temporal self-attention (scaled dot product, Vaswani et al. 2017) -> mean over time
      -> dropout -> linear classifier -> logits (B, num_classes)

`TemporalAttention` follows the seed's module: query/key projections to `attention_dim`, a value
projection to `feature_dim`, softmax over time, then `output_proj(attended + x)` (the seed's residual and
output projection). `attention=False` replaces attention by plain temporal averaging of the LSTM outputs and
`bidirectional=False` runs a forward-only LSTM: the seed's two ablations.

`single_frame` is the control: the same backbone on the centre frame only (index `T // 2`, the later of the
two middle frames when T is even), so it cannot use motion or order. If it matches `cnn_rnn`, the data set
does not need time.

Deviations from the seed: frames arrive in [0, 1] and are normalised with ImageNet statistics inside the
model (grayscale is repeated to three channels first), so callers never normalise; pretrained weights come
from a local torchvision state dict, never a download; frozen backbone parts keep their BatchNorm layers
in eval mode even while the model trains (the seed froze only `requires_grad`, so BN statistics drifted).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.nn.resnet import BasicBlock, ResNet, load_pretrained, resnet
from vidyn.registry import MODELS

__all__ = ["Backbone2D", "TemporalAttention", "TemporalHead", "CNNRNN", "SingleFrame", "BACKBONES"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet_tiny")
BACKBONE_PARTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build_resnet(name: str) -> ResNet:
    if name == "resnet_tiny":  # one BasicBlock per stage, widths 8/16/32/64: a test-sized backbone
        return ResNet(BasicBlock, (1, 1, 1, 1), widths=(8, 16, 32, 64))
    if name not in BACKBONES:
        raise VidynError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return resnet(int(name.removeprefix("resnet")))


class Backbone2D(nn.Module):
    """A ResNet applied to every frame independently, with ImageNet input normalisation and freezing.

    `freeze(parts)` stops gradients to the named parts (`conv1`, `bn1`, `layer1` ... `layer4`) and keeps
    their BatchNorm layers in eval mode: `train()` is overridden so that `model.train()` never switches a
    frozen part back to training, and its running statistics stay those of the pretrained weights.
    """

    def __init__(self, name: str = "resnet18", in_channels: int = 3, pretrained: str | None = None) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise VidynError(
                f"in_channels must be 1 (grayscale) or 3 (RGB) for a ResNet backbone; got {in_channels}"
            )
        self.in_channels = in_channels
        self.resnet = _build_resnet(name)
        if pretrained is not None:
            load_pretrained(self.resnet, pretrained)
        self.feature_dim = self.resnet.feature_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.frozen_parts: set[str] = set()

    def encode_images(self, images: Tensor) -> Tensor:
        """Images `(N, C, H, W)` in [0, 1] -> features `(N, feature_dim)`."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # (N, 1, H, W) -> (N, 3, H, W)
        return self.resnet.forward_features((images - self.mean) / self.std)

    def forward(self, frames: Tensor) -> Tensor:
        """Frames `(B, T, C, H, W)` in [0, 1] -> per-frame features `(B, T, feature_dim)`."""
        b, t = frames.shape[:2]
        features = self.encode_images(frames.flatten(0, 1))  # (B, T, C, H, W) -> (B*T, C, H, W) -> (B*T, F)
        return features.view(b, t, -1)  # (B*T, F) -> (B, T, F)

    @staticmethod
    def _check_parts(parts: Sequence[str] | None) -> tuple[str, ...]:
        if parts is None:
            return BACKBONE_PARTS
        if isinstance(parts, str):
            parts = (parts,)
        unknown = [p for p in parts if p not in BACKBONE_PARTS]
        if unknown:
            raise VidynError(f"unknown backbone part(s) {unknown}; choose from {', '.join(BACKBONE_PARTS)}")
        return tuple(parts)

    def freeze(self, parts: Sequence[str] | None = None) -> None:
        """Freeze the named parts (all when None): no gradients, BatchNorm statistics kept fixed."""
        for name in self._check_parts(parts):
            getattr(self.resnet, name).requires_grad_(False)
            self.frozen_parts.add(name)
        self.train(self.training)

    def unfreeze(self, parts: Sequence[str] | None = None) -> None:
        """Make the named parts (all when None) trainable again, BatchNorm included."""
        for name in self._check_parts(parts):
            getattr(self.resnet, name).requires_grad_(True)
            self.frozen_parts.discard(name)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone2D:
        super().train(mode)
        for name in self.frozen_parts:
            getattr(self.resnet, name).eval()  # frozen BatchNorm keeps its pretrained running statistics
        return self


class TemporalAttention(nn.Module):
    """Scaled dot-product self-attention over time (seed 002's module, residual + output projection).

    `x (B, T, F) -> (output (B, T, F), weights (B, T, T))`; `weights[b, i]` is a distribution over the
    T frames that frame i attends to.
    """

    def __init__(self, feature_dim: int, attention_dim: int = 256) -> None:
        super().__init__()
        self.query_proj = nn.Linear(feature_dim, attention_dim)
        self.key_proj = nn.Linear(feature_dim, attention_dim)
        self.value_proj = nn.Linear(feature_dim, feature_dim)
        self.output_proj = nn.Linear(feature_dim, feature_dim)
        self.scale = attention_dim**-0.5

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        queries, keys, values = self.query_proj(x), self.key_proj(x), self.value_proj(x)
        scores = torch.bmm(queries, keys.transpose(1, 2)) * self.scale  # (B, T, A) x (B, A, T) -> (B, T, T)
        weights = scores.softmax(dim=-1)
        attended = torch.bmm(weights, values)  # (B, T, T) x (B, T, F) -> (B, T, F)
        return self.output_proj(attended + x), weights


class TemporalHead(nn.Module):
    """LSTM over per-frame features, optional temporal attention, mean over time, dropout.

    `features (B, T, input_dim) -> (pooled (B, output_dim), attention weights (B, T, T) or None)` with
    `output_dim = hidden_dim * (2 if bidirectional else 1)`.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 1,
        bidirectional: bool = True,
        attention: bool = True,
        attention_dim: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size=input_dim,
            hidden_size=hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # nn.LSTM applies it between layers only
        )
        self.output_dim = hidden_dim * (2 if bidirectional else 1)
        self.attention = TemporalAttention(self.output_dim, attention_dim) if attention else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor | None]:
        sequence, _ = self.lstm(features)  # (B, T, output_dim)
        weights = None
        if self.attention is not None:
            sequence, weights = self.attention(sequence)
        return self.dropout(sequence.mean(dim=1)), weights  # (B, T, D) -> (B, D)


class _FineTunable:
    """Progressive fine-tuning helpers shared by the classifiers that own a `Backbone2D`."""

    backbone: Backbone2D

    def freeze_backbone(self) -> None:
        """Freeze the whole backbone (seed 002 trains only the head for its first epochs)."""
        self.backbone.freeze(None)

    def unfreeze_backbone(self, layers: Sequence[str] | None = ("layer3", "layer4")) -> None:
        """Unfreeze the named backbone parts (`conv1`, `bn1`, `layer1`..`layer4`; None = all)."""
        self.backbone.unfreeze(layers)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every backbone parameter, frozen or not, so an optimiser group set up once covers unfreezing."""
        return list(self.backbone.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the backbone (LSTM, attention, classifier)."""
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]  # type: ignore[attr-defined]


def _check_frames(frames: Tensor, in_channels: int) -> None:
    if frames.dim() != 5 or frames.shape[2] != in_channels or frames.shape[1] < 1:
        raise VidynError(
            f"expected frames of shape (B, T, {in_channels}, H, W) with T >= 1; got {tuple(frames.shape)} "
            "(check the data's channel count against the model's in_channels)"
        )


def _check_args(num_classes: int, dropout: float, **positive: int) -> None:
    if num_classes < 1:
        raise VidynError(f"num_classes must be >= 1; got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise VidynError(f"dropout must be in [0, 1); got {dropout}")
    for name, value in positive.items():
        if value < 1:
            raise VidynError(f"{name} must be >= 1; got {value}")


class CNNRNN(_FineTunable, nn.Module):
    """Seed 002's classifier: per-frame ResNet -> (Bi)LSTM -> temporal attention -> mean -> linear."""

    def __init__(
        self,
        *,
        num_classes: int = 101,
        in_channels: int = 3,
        backbone: str = "resnet18",
        pretrained: str | None = None,
        lstm_hidden: int = 256,
        lstm_layers: int = 1,
        bidirectional: bool = True,
        attention: bool = True,
        attention_dim: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        _check_args(
            num_classes,
            dropout,
            lstm_hidden=lstm_hidden,
            lstm_layers=lstm_layers,
            attention_dim=attention_dim,
        )
        self.num_classes = num_classes
        self.backbone = Backbone2D(backbone, in_channels, pretrained)
        self.temporal_head = TemporalHead(
            self.backbone.feature_dim,
            lstm_hidden,
            lstm_layers,
            bidirectional,
            attention,
            attention_dim,
            dropout,
        )
        self.classifier = nn.Linear(self.temporal_head.output_dim, num_classes)
        nn.init.xavier_uniform_(self.classifier.weight)  # the seed's classifier initialisation
        nn.init.zeros_(self.classifier.bias)

    def forward_with_attention(self, frames: Tensor) -> tuple[Tensor, Tensor | None]:
        """Frames `(B, T, C, H, W)` -> (logits `(B, num_classes)`, attention `(B, T, T)` or None)."""
        _check_frames(frames, self.backbone.in_channels)
        pooled, weights = self.temporal_head(self.backbone(frames))  # (B, T, F) -> (B, D)
        return self.classifier(pooled), weights

    def forward(self, frames: Tensor) -> Tensor:
        """Frames `(B, T, C, H, W)` in [0, 1] -> logits `(B, num_classes)`."""
        return self.forward_with_attention(frames)[0]


class SingleFrame(_FineTunable, nn.Module):
    """The control: the backbone on the centre frame `T // 2` only -> dropout -> linear."""

    def __init__(
        self,
        *,
        num_classes: int = 101,
        in_channels: int = 3,
        backbone: str = "resnet18",
        pretrained: str | None = None,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        _check_args(num_classes, dropout)
        self.num_classes = num_classes
        self.backbone = Backbone2D(backbone, in_channels, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.backbone.feature_dim, num_classes)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, frames: Tensor) -> Tensor:
        """Frames `(B, T, C, H, W)` in [0, 1] -> logits `(B, num_classes)` from frame `T // 2` alone."""
        _check_frames(frames, self.backbone.in_channels)
        centre = frames[:, frames.shape[1] // 2]  # (B, T, C, H, W) -> (B, C, H, W)
        return self.classifier(self.dropout(self.backbone.encode_images(centre)))


@MODELS.register("cnn_rnn", family="classifier")
def cnn_rnn(
    num_classes: int = 101,
    in_channels: int = 3,
    backbone: str = "resnet18",
    pretrained: str | None = None,
    lstm_hidden: int = 256,
    lstm_layers: int = 1,
    bidirectional: bool = True,
    attention: bool = True,
    attention_dim: int = 256,
    dropout: float = 0.3,
) -> CNNRNN:
    """CNN-RNN action recognizer (seed 002): ResNet per frame, BiLSTM, temporal attention.

    `backbone` is resnet18/34/50 (or resnet_tiny); `pretrained` is a local torchvision ResNet state dict
    (.pth or .safetensors) of the same depth. `attention=False` / `bidirectional=False` are the seed's
    ablations.
    """
    return CNNRNN(
        num_classes=num_classes,
        in_channels=in_channels,
        backbone=backbone,
        pretrained=pretrained,
        lstm_hidden=lstm_hidden,
        lstm_layers=lstm_layers,
        bidirectional=bidirectional,
        attention=attention,
        attention_dim=attention_dim,
        dropout=dropout,
    )


MODELS.variant(
    "cnn_rnn_tiny",
    of="cnn_rnn",
    description="Test-sized cnn_rnn: ResNet widths 8/16/32/64 (a block per stage), LSTM 16, attention 16.",
    num_classes=10,
    backbone="resnet_tiny",
    lstm_hidden=16,
    attention_dim=16,
)


@MODELS.register("single_frame", family="classifier")
def single_frame(
    num_classes: int = 101,
    in_channels: int = 3,
    backbone: str = "resnet18",
    pretrained: str | None = None,
    dropout: float = 0.3,
) -> SingleFrame:
    """Single-frame control: the cnn_rnn backbone on the centre frame only, then a linear classifier."""
    return SingleFrame(
        num_classes=num_classes,
        in_channels=in_channels,
        backbone=backbone,
        pretrained=pretrained,
        dropout=dropout,
    )


MODELS.variant(
    "single_frame_tiny",
    of="single_frame",
    description="Test-sized single-frame control on the resnet_tiny backbone.",
    num_classes=10,
    backbone="resnet_tiny",
)
