"""The motion judge: a small `shapes` recognizer shipped with vidyn, used to score generated dynamics.

`shapes` (`vidyn.data.synthetic`) is labelled by motion law (7 classes) and its frame 0 does not reveal the
law, so a recognizer that tells the laws apart has to read motion. The judge is seed 002's CNN-RNN
(`vidyn.models.cnn_rnn`: per-frame ResNet, BiLSTM, temporal attention, mean over time, linear) with the
test-sized `resnet_tiny` backbone, trained by `vidyn train -c judge/shapes_judge` and shipped as an exported
model (`model.safetensors` + `model.json`, no pickles) in `vidyn/weights/shapes_judge`. Three scores use it
(none of them is a published metric; they are vidyn's own):

- **FD-judge**: the Fréchet distance (`vidyn.metrics.frechet`) between Gaussians fitted to the judge's
  penultimate features, the 128-d time-pooled BiLSTM/attention output that feeds the classifier, of real and
  generated clips. Like FVD, but with a network that was trained on the dynamics being judged and cheap
  enough for thousands of clips on a CPU.
- **Motion-law accuracy** (conditional generation): the fraction of generated clips the judge assigns to
  the law that was asked for.
- **Class histogram and KL** (unconditional generation): the judge's histogram of predicted laws on the
  generated clips and `KL(fake || real)` to its histogram on real clips (both smoothed by half a count per
  class, so a law missing on either side gives a large, finite number); `KL(real || fake)`, which punishes
  dropped laws (mode collapse) more, is reported beside it.

Judge input (`JudgeFeatures.prepare`, stated in every protocol): clips `(B, T, C, H, W)` in [0, 1] (uint8 is
divided by 255); RGB becomes Rec. 601 luminance (0.299 R + 0.587 G + 0.114 B, how `shapes` renders
grayscale, so an RGB `shapes` clip and its grayscale rendering give the same input); every `frame_stride`-th
frame is kept (2 for clips rendered at 0.05 s, so the judge sees its 0.1 s grid); then the first 16 frames
(shorter clips are refused, as FVD refuses them); frames that are not 32x32 are centre-cropped to a square
and resized bilinearly with antialiasing (as `vidyn.data.video_io` resizes videos).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from vidyn.errors import VidynError
from vidyn.metrics.frechet import FrechetFeatureDistance, protocol_line

JUDGE_DIR = Path(__file__).resolve().parent.parent / "weights" / "shapes_judge"
JUDGE_SIZE = 32
JUDGE_FRAMES = 16
JUDGE_INTERVAL = 0.1  # seconds between the frames the judge was trained on
JUDGE_NAME = "vidyn shapes judge (cnn_rnn resnet_tiny, 16x32x32 gray), time-pooled 128-d features"
_LUMA = (0.299, 0.587, 0.114)


def judge_preprocess(frame_stride: int = 1) -> str:
    """The judge's input rule as one string, for protocols."""
    stride = f"every {frame_stride}th frame, " if frame_stride > 1 else ""
    return (
        f"RGB -> Rec. 601 luma, {stride}first {JUDGE_FRAMES} frames, centre square crop and bilinear "
        f"antialiased resize to {JUDGE_SIZE}x{JUDGE_SIZE}, [0, 1]"
    )


@cache
def _file_hash(path: str, size: int, mtime: float) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def judge_sha256(folder: str | Path = JUDGE_DIR) -> str:
    """SHA-256 of the judge's `model.safetensors` (hashed once per process while the file is unchanged)."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise VidynError(f"no judge weights at {path}: reinstall vidyn (the judge ships inside the package)")
    stat = path.stat()
    return _file_hash(str(path), stat.st_size, stat.st_mtime)


def prepare_clips(clips: Tensor, frame_stride: int = 1) -> Tensor:
    """Any clips `(B, T, 1|3, H, W)` -> the judge's input `(B, 16, 1, 32, 32)` float in [0, 1] (see above)."""
    if clips.dim() != 5 or clips.shape[2] not in (1, 3):
        raise VidynError(f"the motion judge needs clips (B, T, 1 or 3, H, W), got {tuple(clips.shape)}")
    if frame_stride < 1:
        raise VidynError(f"frame_stride must be >= 1, got {frame_stride}")
    x = clips[:, ::frame_stride]
    if x.shape[1] < JUDGE_FRAMES:
        raise VidynError(
            f"the motion judge needs clips of at least {JUDGE_FRAMES} frames after frame_stride "
            f"{frame_stride}, got {x.shape[1]}: use longer clips"
        )
    x = x[:, :JUDGE_FRAMES]
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    b, t, c, h, w = x.shape
    frames = x.reshape(b * t, c, h, w)  # (B, T, C, H, W) -> (B*T, C, H, W)
    if c == 3:
        weights = torch.tensor(_LUMA, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
        frames = (frames * weights).sum(dim=1, keepdim=True)  # (B*T, 3, H, W) -> (B*T, 1, H, W)
    if (h, w) != (JUDGE_SIZE, JUDGE_SIZE):
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frames = frames[..., top : top + side, left : left + side]
        frames = F.interpolate(
            frames, (JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
    return frames.reshape(b, t, 1, JUDGE_SIZE, JUDGE_SIZE)


class JudgeFeatures(nn.Module):
    """The judge as a feature extractor: clips -> `(B, 128)` penultimate features (`forward`), or both
    features and class logits (`features_and_logits`), in chunks of `chunk` clips."""

    def __init__(self, model: nn.Module, *, frame_stride: int = 1, chunk: int = 64) -> None:
        super().__init__()
        for part in ("backbone", "temporal_head", "classifier"):
            if not hasattr(model, part):
                raise VidynError("the motion judge must be a cnn_rnn classifier (backbone, temporal head)")
        self.model = model.eval().requires_grad_(False)
        self.num_features: int = model.temporal_head.output_dim
        self.num_classes: int = model.num_classes
        meta = getattr(model, "vidyn_meta", {})
        self.class_names: list[str] = list(meta.get("class_names") or range(self.num_classes))
        self.frame_stride, self.chunk = frame_stride, chunk

    def train(self, mode: bool = True) -> JudgeFeatures:
        return super().train(False)  # always eval: BatchNorm statistics and dropout stay fixed

    @torch.no_grad()
    def features_and_logits(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        feats, logits = [], []
        for part in clips.split(self.chunk):
            x = prepare_clips(part, self.frame_stride)
            pooled, _ = self.model.temporal_head(self.model.backbone(x))  # (B, T, F) -> (B, D)
            feats.append(pooled)
            logits.append(self.model.classifier(pooled))
        if not feats:
            return clips.new_zeros(0, self.num_features).float(), clips.new_zeros(0, self.num_classes).float()
        return torch.cat(feats), torch.cat(logits)

    def forward(self, clips: Tensor) -> Tensor:
        return self.features_and_logits(clips)[0]


def load_judge(folder: str | Path = JUDGE_DIR, *, frame_stride: int = 1) -> JudgeFeatures:
    """The shipped motion judge (or an exported cnn_rnn in `folder`) as `JudgeFeatures`, eval mode."""
    from vidyn.export import load_model  # metrics is a leaf layer: the model registry is imported lazily

    path = Path(folder)
    if not (path / "model.safetensors").is_file():
        raise VidynError(f"no judge weights at {path}: reinstall vidyn (the judge ships inside the package)")
    judge = JudgeFeatures(load_model(path), frame_stride=frame_stride)
    judge.sha256 = judge_sha256(path)  # type: ignore[assignment]
    return judge


def ship_judge(run_dir: str | Path, out_dir: str | Path = JUDGE_DIR) -> Path:
    """Re-export a trained judge run (`vidyn train -c judge/shapes_judge`) into the package folder, with the
    run's test-split top-1 from its `metrics.json` in `model.json`'s metrics. Tensors only (safetensors)."""
    import json

    from vidyn.export import export_model, load_model, read_model_meta

    meta = read_model_meta(run_dir)
    scores = json.loads((Path(run_dir) / "metrics.json").read_text())["models"]
    test = next(iter(scores.values()))
    metrics = {"test_top1": test["top1"], "test_per_class_accuracy": test["per_class_accuracy"]}
    extra = {k: meta[k] for k in ("class_names", "io") if k in meta}
    return export_model(load_model(run_dir), out_dir, config=meta.get("config"), metrics=metrics, extra=extra)


class FrechetJudgeDistance(FrechetFeatureDistance):
    """FD-judge: `update(clips (B, T, C, H, W) in [0, 1], real)` or `update_features`; `protocol()`."""

    def __init__(self, judge: JudgeFeatures | None = None, *, real_split: str | None = None, **kwargs: Any):
        judge = judge if judge is not None else load_judge()
        super().__init__(
            judge,
            network=JUDGE_NAME,
            weights_sha256=getattr(judge, "sha256", "")[:12],
            preprocess=judge_preprocess(judge.frame_stride),
            real_split=real_split,
            name="fd_judge",
            **kwargs,
        )
        self.info.update(
            {"clip_length": JUDGE_FRAMES, "longer_clips": "first 16 frames", "shorter_clips": "error"}
        )
        self.info["frame_stride"] = judge.frame_stride


def histogram_kl(p_counts: Tensor, q_counts: Tensor, smoothing: float = 0.5) -> float:
    """KL(p || q) in nats between two class histograms, each smoothed by `smoothing` counts per class."""
    p = p_counts.double() + smoothing
    q = q_counts.double() + smoothing
    p, q = p / p.sum(), q / q.sum()
    return float((p * (p / q).log()).sum())


class MotionLawScores(Metric):
    """The judge's verdicts, accumulated over batches and DDP processes (count states reduced by sum).

    `update_logits(logits, real, labels=None)`: argmax class per clip into the real or fake histogram;
    with `labels` (the law asked for, fake side) also the number assigned to it. `compute()` returns
    `{"accuracy" (None without labels), "histogram_fake", "histogram_real" (fractions, None if no clips),
    "kl_fake_real", "kl_real_fake" (None unless both sides have clips), "n_real", "n_fake"}`.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_classes: int, class_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.class_names = [str(c) for c in (class_names or range(num_classes))]
        for side in ("real", "fake"):
            self.add_state(f"{side}_counts", torch.zeros(num_classes, dtype=torch.float64), "sum")
        self.add_state("correct", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("labelled", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, real: bool, labels: Tensor | None = None) -> None:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise VidynError(f"expected logits (N, {self.num_classes}), got {tuple(logits.shape)}")
        pred = logits.argmax(dim=1)
        side = "real" if real else "fake"
        counts = torch.bincount(pred, minlength=self.num_classes).to(torch.float64)
        setattr(self, f"{side}_counts", getattr(self, f"{side}_counts") + counts)
        if labels is not None:
            if labels.shape != pred.shape:
                raise VidynError(f"labels {tuple(labels.shape)} do not match {pred.shape[0]} clips")
            self.correct = self.correct + (pred == labels.to(pred.device)).sum().to(torch.float64)
            self.labelled = self.labelled + pred.shape[0]

    update_logits = update

    def compute(self) -> dict[str, Any]:
        n_real, n_fake = int(self.real_counts.sum()), int(self.fake_counts.sum())

        def fractions(counts: Tensor, n: int) -> dict[str, float] | None:
            pairs = zip(self.class_names, counts.tolist(), strict=True)
            return None if n == 0 else {name: v / n for name, v in pairs}

        both = n_real > 0 and n_fake > 0
        return {
            "accuracy": float(self.correct / self.labelled) if self.labelled > 0 else None,
            "histogram_fake": fractions(self.fake_counts, n_fake),
            "histogram_real": fractions(self.real_counts, n_real),
            "kl_fake_real": histogram_kl(self.fake_counts, self.real_counts) if both else None,
            "kl_real_fake": histogram_kl(self.real_counts, self.fake_counts) if both else None,
            "n_real": n_real,
            "n_fake": n_fake,
            "n_labelled": int(self.labelled),
        }


def motion_law_accuracy(judge: JudgeFeatures, clips: Tensor, labels: Tensor) -> float:
    """Fraction of `clips` the judge assigns to `labels` (the laws asked for); one call, no streaming."""
    _, logits = judge.features_and_logits(clips)
    return float((logits.argmax(dim=1) == labels.to(logits.device)).double().mean())


def motion_law_protocol(
    judge: JudgeFeatures, n_real: int, n_fake: int, real_split: str | None = None
) -> dict[str, Any]:
    """Protocol of the judge's accuracy / histogram scores (same fields as the Fréchet metrics')."""
    return {
        "metric": "motion_law",
        "network": JUDGE_NAME,
        "weights_sha256": getattr(judge, "sha256", "")[:12],
        "n_real": n_real,
        "n_fake": n_fake,
        "clip_length": JUDGE_FRAMES,
        "longer_clips": "first 16 frames",
        "preprocess": judge_preprocess(judge.frame_stride),
        "real_split": real_split,
        "classes": judge.class_names,
        "kl": "KL(fake || real) of argmax histograms, +0.5 count per class; KL(real || fake) beside it",
        "chance": 1.0 / judge.num_classes if judge.num_classes else math.nan,
    }


@cache
def _shipped_judge(frame_stride: int) -> JudgeFeatures:
    return load_judge(frame_stride=frame_stride)


def motion_law_judge(
    samples: Tensor, labels: Tensor, class_names: Sequence[str], *, frame_stride: int = 1
) -> dict[str, Any]:
    """Motion-law accuracy of tensors with the shipped judge, for evaluators: `labels` index `class_names`
    (the generator's classes, mapped to the judge's laws by name). `{"value", "protocol", "protocol_line",
    "histogram_fake"}`, or `{"value": None, "reason"}` when the judge cannot score these clips."""
    judge = _shipped_judge(frame_stride)
    unknown = [c for c in class_names if c not in judge.class_names]
    if unknown:
        return {"value": None, "reason": f"the shapes judge knows no law {', '.join(map(str, unknown))}"}
    if samples.dim() != 5 or samples.shape[1] < JUDGE_FRAMES * frame_stride - (frame_stride - 1):
        return {
            "value": None,
            "reason": f"the judge needs {JUDGE_FRAMES} frames after frame_stride {frame_stride}",
        }
    to_judge = torch.tensor([judge.class_names.index(c) for c in class_names])
    scores = MotionLawScores(judge.num_classes, judge.class_names)
    scores.update(judge.features_and_logits(samples)[1], real=False, labels=to_judge[labels.cpu()])
    out = scores.compute()
    protocol = motion_law_protocol(judge, 0, out["n_fake"])
    line = protocol_line(protocol) + " | value: fraction judged to follow the law asked for"
    return {"value": out["accuracy"], "protocol": protocol, "protocol_line": line,
            "histogram_fake": out["histogram_fake"]}  # fmt: skip


def fd_judge(fake: Tensor, real: Tensor, *, real_split: str | None = None, frame_stride: int = 1) -> dict:
    """FD-judge of two clip tensors with the shipped judge, as `metric_result` gives it (value + protocol)."""
    from vidyn.metrics.generation import metric_result

    metric = FrechetJudgeDistance(_shipped_judge(frame_stride), real_split=real_split)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return metric_result(metric)


if __name__ == "__main__":  # python -m vidyn.metrics.judge RUN_DIR: ship a retrained judge
    import sys

    print(ship_judge(sys.argv[1]))
