"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").

LPIPS v0.1 with the AlexNet backbone, as the `lpips` package computes it (`lpips.LPIPS(net="alex")`):
inputs in [-1, 1] (vidyn frames in [0, 1] are mapped by 2x - 1; one channel is repeated to three), a fixed
scaling layer `(x - shift) / scale`, the ReLU outputs of AlexNet's five conv layers, each unit-normalised
over channels (eps 1e-10), squared differences weighted by the learned non-negative 1x1 heads, averaged
over space and summed over layers. Distances are per image pair; for clips, per frame then averaged.

Weights: the five heads are data from the `lpips==0.1.4` wheel (`vidyn weights install lpips`, verified,
stored as safetensors); the AlexNet backbone (torchvision's ImageNet `alexnet`, e.g.
`alexnet-owt-7be5be79.pth`) cannot be fetched here, so it is read from a local file the user names
(argument, or `VIDYN_ALEXNET`), in torchvision's parameter names (`features.0.weight`, ...), `.pth`
(read with `torch.load(weights_only=True)`) or `.safetensors`. Without it `try_load_lpips` returns None and
the reason, and callers report LPIPS as null with that reason. Deviation: none in the function; the
backbone is written here (torchvision is not a vidyn dependency) with torchvision's layer numbering.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from vidyn.errors import VidynError, unpickling_refusal
from vidyn.metrics.weights import LPIPS_ALEX, weight_path

ALEXNET_ENV = "VIDYN_ALEXNET"
# torchvision alexnet().features: (index, in, out, kernel, stride, padding); max-pools (3, 2) after 0 and 3
ALEX_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1))
ALEX_CONVS += ((10, 256, 256, 3, 1, 1),)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class AlexNetFeatures(nn.Module):
    """torchvision's `alexnet().features` up to the fifth ReLU; returns the five ReLU outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.ModuleDict(
            {str(i): nn.Conv2d(cin, cout, k, s, p) for i, cin, cout, k, s, p in ALEX_CONVS}
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for index, *_ in ALEX_CONVS:
            if index in (3, 6):  # the max-pools after relu1 and relu2 (torchvision indices 2 and 5)
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(self.features[str(index)](x))
            outs.append(x)
        return outs


class LPIPS(nn.Module):
    """`forward(x0, x1)`: images `(N, C, H, W)` in [0, 1] -> `(N,)` LPIPS distances (v0.1, AlexNet)."""

    def __init__(self, backbone: AlexNetFeatures, heads: dict[str, Tensor]) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        for k in range(5):
            self.register_buffer(f"lin{k}", heads[f"lin{k}.weight"].float())  # (1, C_k, 1, 1)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def _features(self, x: Tensor) -> list[Tensor]:
        x = x.float().expand(-1, 3, -1, -1) * 2 - 1  # [0, 1] -> [-1, 1], gray -> RGB
        feats = self.backbone((x - self.shift) / self.scale)
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in feats]

    @torch.no_grad()
    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        if x0.shape != x1.shape or x0.dim() != 4 or x0.shape[1] not in (1, 3):
            raise VidynError(
                f"LPIPS needs two (N, 1 or 3, H, W) batches, got {tuple(x0.shape)} / {tuple(x1.shape)}"
            )
        total = x0.new_zeros(x0.shape[0], dtype=torch.float32)
        for k, (f0, f1) in enumerate(zip(self._features(x0), self._features(x1), strict=True)):
            weighted = F.conv2d((f0 - f1).pow(2), getattr(self, f"lin{k}"))  # (N, 1, h, w)
            total = total + weighted.mean(dim=(1, 2, 3))
        return total

    def clips(self, pred: Tensor, target: Tensor) -> Tensor:
        """Clips `(B, T, C, H, W)` -> `(B, T)` per-frame LPIPS."""
        b, t = pred.shape[:2]
        return self(pred.flatten(0, 1), target.flatten(0, 1)).view(b, t)  # (B*T,) -> (B, T)


def _read_state(path: Path) -> dict[str, Tensor]:
    """A state dict from .safetensors or a torch file (weights_only: never unpickles objects)."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # forged or damaged files fail in many ways; none may end the caller's run
        reason = unpickling_refusal(exc) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VidynError(
            f"cannot read AlexNet weights {path} ({reason}); point {ALEXNET_ENV} at torchvision's "
            "alexnet .pth"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise VidynError(
            f"{path} holds a {type(state).__name__}, not a state dict of tensors; point {ALEXNET_ENV} at "
            "torchvision's alexnet .pth"
        )
    return state


def load_alexnet(path: str | Path) -> AlexNetFeatures:
    """AlexNet conv layers from a torchvision-format state dict file (classifier weights are ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VidynError(
            f"AlexNet weights file {path} not found: point {ALEXNET_ENV} at torchvision's alexnet .pth"
        )
    state = _read_state(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = AlexNetFeatures()
    wanted = {f"features.{i}.{p}" for i, *_ in ALEX_CONVS for p in ("weight", "bias")}
    missing = sorted(wanted - set(state))
    if missing:
        raise VidynError(f"{path} is not a torchvision alexnet state dict (missing {', '.join(missing[:3])})")
    model.load_state_dict({k: state[k].float() for k in wanted}, strict=True)
    return model


def load_lpips(alexnet: str | Path | None = None) -> LPIPS:
    """LPIPS v0.1 (AlexNet): verified heads from the cache, backbone from `alexnet` or `$VIDYN_ALEXNET`."""
    alexnet = alexnet or os.environ.get(ALEXNET_ENV)
    if not alexnet:
        raise VidynError(
            f"LPIPS needs torchvision's AlexNet weights, which cannot be downloaded here: set {ALEXNET_ENV} "
            "to a local alexnet .pth/.safetensors file"
        )
    heads = load_file(str(weight_path(LPIPS_ALEX.name)))
    return LPIPS(load_alexnet(alexnet), heads).eval()


def try_load_lpips(alexnet: str | Path | None = None) -> tuple[LPIPS | None, str | None]:
    """(model, None) when LPIPS can run, else (None, the one-line reason to report beside a null value)."""
    try:
        return load_lpips(alexnet), None
    except VidynError as err:
        return None, str(err)
