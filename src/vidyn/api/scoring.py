"""`vidyn score REAL FAKE`: generation metrics between two clip sets, every number with its protocol.

REAL and FAKE are read by `vidyn.api.clip_sources.ClipSource` (folders of videos or `.npy`/`.pt` clips, one
tensor file of clips, or a prepared store). Both are read once, batch by batch; every requested network
sees each batch (a tqdm bar with ETA counts clips through feature extraction). Each metric resizes and cuts
clips as its protocol says:

- `fvd`: `vidyn.metrics.FrechetVideoDistance` (I3D, first 16 frames, 224x224); `fid` / `kid`:
  `VideoFID` / `VideoKID` (Inception, every frame of every clip unless `fid_frames_per_clip`, 299x299; KID's
  subset size is min(1000, N real images, N fake images), stated in its protocol);
- `fd_judge` and `motion_law`: the shipped motion judge (`vidyn.metrics.judge`; first 16 frames at 32x32
  gray). `motion_law`'s value is KL(fake || real) of the judge's class histograms; where every FAKE clip
  sits under a folder named after a `shapes` law, its `accuracy` is the fraction judged to be that law;
- `ssim` / `psnr`: vidyn's conventions (docs/metrics.md: SSIM Gaussian 11 / 1.5, valid; PSNR per frame), clips
  **paired by order** (sorted paths, or store order), the first min(N real, N fake) pairs and the first
  min(T real, T fake) frames of each; paired clips must share C, H and W.

FVD/FID/KID need `vidyn weights install fvd|fid`: without the files the metric core raises a one-line
`VidynError` naming that command before any clip is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from vidyn.api.clip_sources import ClipSource
from vidyn.errors import VidynError
from vidyn.fileio import atomic_write_json
from vidyn.metrics.frechet import protocol_line
from vidyn.metrics.generation import FrechetVideoDistance, VideoFID, VideoKID, metric_result
from vidyn.metrics.inception import InceptionFeatures
from vidyn.metrics.judge import FrechetJudgeDistance, MotionLawScores, load_judge, motion_law_protocol
from vidyn.metrics.streaming import FrameMetrics

SCORE_METRICS = ("fvd", "fid", "kid", "fd_judge", "motion_law", "ssim", "psnr")
DEFAULT_METRICS = ("fvd", "fid", "kid", "fd_judge", "ssim", "psnr")
PAIR_METRICS = ("ssim", "psnr")
PAIR_CONVENTION = {
    "ssim": "Wang et al. 2004, Gaussian window 11, sigma 1.5, valid, per channel and frame then mean",
    "psnr": "10 log10(1 / MSE) per frame (MSE over C*H*W), then mean",
}


class _SharedFeatures(nn.Module):
    """Inception features computed once for FID and KID: repeats the last output for the same images."""

    def __init__(self, network: InceptionFeatures) -> None:
        super().__init__()
        self.network, self.num_features = network, network.num_features
        self._last: tuple[Tensor, Tensor] | None = None

    def forward(self, images: Tensor) -> Tensor:
        if self._last is not None:
            seen, out = self._last
            same = seen.shape == images.shape and seen.dtype == images.dtype
            if same and (seen.data_ptr() == images.data_ptr() or torch.equal(seen, images)):
                return out
        out = self.network(images)
        self._last = (images, out)
        return out


def _check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics))
    unknown = [m for m in names if m not in SCORE_METRICS]
    if unknown or not names:
        raise VidynError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from {SCORE_METRICS}")
    return tuple(dict.fromkeys(names))


def _build(names: tuple[str, ...], real_split: str, fid_frames: int | None, stride: int) -> dict[str, Any]:
    """The feature metrics; networks load here, so missing weights fail before any clip is read."""
    built: dict[str, Any] = {}
    if "fvd" in names:
        built["fvd"] = FrechetVideoDistance(real_split=real_split)
    if "fid" in names or "kid" in names:
        feature = _SharedFeatures(InceptionFeatures())
        if "fid" in names:
            built["fid"] = VideoFID(feature, frames_per_clip=fid_frames, real_split=real_split)
        if "kid" in names:
            built["kid"] = VideoKID(feature, frames_per_clip=fid_frames, real_split=real_split)
    if "fd_judge" in names or "motion_law" in names:
        judge = load_judge(frame_stride=stride)
        built["judge"] = judge
        if "fd_judge" in names:
            built["fd_judge"] = FrechetJudgeDistance(judge, real_split=real_split)
        if "motion_law" in names:
            built["motion_law"] = MotionLawScores(judge.num_classes, judge.class_names)
    return built


def _update(built: dict[str, Any], clips: Tensor, real: bool, labels: Tensor | None) -> None:
    for name in ("fvd", "fid", "kid"):
        if name in built:
            built[name].update(clips, real)
    if "judge" in built:
        features, logits = built["judge"].features_and_logits(clips)
        if "fd_judge" in built:
            built["fd_judge"].update_features(features, real)
        if "motion_law" in built:
            built["motion_law"].update(logits, real, None if real else labels)


def _pair(frames: FrameMetrics, real: Tensor, fake: Tensor) -> None:
    t = min(real.shape[1], fake.shape[1])
    if real.shape[2:] != fake.shape[2:]:
        raise VidynError(
            f"ssim/psnr pair clips by order and need equal (C, H, W); got real {tuple(real.shape[2:])} and "
            f"fake {tuple(fake.shape[2:])}: drop ssim,psnr from --metrics or resize one side"
        )
    frames.update(fake[:, :t], real[:, :t])


def _extract(
    sources: tuple[ClipSource, ClipSource], built: dict[str, Any], frames: FrameMetrics | None, progress: bool
) -> None:
    """One pass over both sources, batch by batch: features for every metric, pairs for ssim/psnr."""
    real_src, fake_src = sources
    fake_labels = fake_src.labels
    batch = 16
    bar = tqdm(total=len(real_src) + len(fake_src), desc="score", unit="clip", disable=not progress)
    real_it, fake_it = real_src.batches(batch), fake_src.batches(batch)
    offset = 0
    with bar:
        while True:
            real, fake = next(real_it, None), next(fake_it, None)
            if real is None and fake is None:
                break
            if real is not None:
                _update(built, real, True, None)
            if fake is not None:
                labels = None if fake_labels is None else fake_labels[offset : offset + fake.shape[0]]
                _update(built, fake, False, labels)
                offset += fake.shape[0]
            if frames is not None and real is not None and fake is not None:
                n = min(real.shape[0], fake.shape[0])
                _pair(frames, real[:n], fake[:n])
            bar.update(sum(x.shape[0] for x in (real, fake) if x is not None))


def _pair_results(frames: FrameMetrics, names: tuple[str, ...], n_pairs: int, real: str) -> dict[str, Any]:
    values = frames.compute()
    out = {}
    for name in names:
        protocol = {
            "metric": name,
            "network": PAIR_CONVENTION[name],
            "n_real": n_pairs,
            "n_fake": n_pairs,
            "preprocess": "clips paired by order, first min(T) frames, frames at their own size in [0, 1]",
            "real_split": real,
        }
        out[name] = {"metric": name, "value": values[name], "protocol": protocol}
        out[name]["protocol_line"] = protocol_line(protocol)
    return out


def _motion_law_result(built: dict[str, Any], real: str) -> dict[str, Any]:
    scores = built["motion_law"].compute()
    protocol = motion_law_protocol(built["judge"], scores["n_real"], scores["n_fake"], real)
    line = protocol_line(protocol) + " | value: KL(fake || real) of judged-law histograms"
    return {"metric": "motion_law", "value": scores["kl_fake_real"], **scores, "protocol": protocol,
            "protocol_line": line}  # fmt: skip


def score(
    real: str | Path,
    fake: str | Path,
    *,
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    num: int | None = None,
    json_path: str | Path | None = None,
    progress: bool = True,
    fid_frames_per_clip: int | None = None,
    judge_frame_stride: int = 1,
) -> dict[str, Any]:
    """Score FAKE against REAL on `metrics`; every value comes with its protocol.

    `num`: the first `num` clips of each side (None: all). `fid_frames_per_clip`: FID/KID on that many
    evenly spaced frames per clip (None: all frames). `judge_frame_stride`: keep every k-th frame before
    the judge (2 for clips at 0.05 s). Returns `{"real", "fake", "metrics": {name: {"value", "protocol",
    "protocol_line", ...}}, "protocol_lines": [...]}` and writes it to `json_path` when given.
    """
    names = _check_metrics(metrics)
    real_src, fake_src = ClipSource(real, num=num), ClipSource(fake, num=num)
    built = _build(names, real_src.describe(), fid_frames_per_clip, judge_frame_stride)
    pair_names = tuple(n for n in names if n in PAIR_METRICS)
    frames = FrameMetrics(names=pair_names, conventions=False) if pair_names else None
    _extract((real_src, fake_src), built, frames, progress)
    results: dict[str, Any] = {}
    for name in names:
        if name in ("fvd", "fid", "fd_judge"):
            results[name] = metric_result(built[name])
        elif name == "kid":
            kid = built["kid"]
            counts = kid.protocol()
            kid.subset_size = min(kid.subset_size, counts["n_real"], counts["n_fake"])
            kid.info["subset_size"] = kid.subset_size
            results[name] = metric_result(kid)
        elif name == "motion_law":
            results[name] = _motion_law_result(built, real_src.describe())
    if frames is not None:
        n_pairs = min(len(real_src), len(fake_src))
        results.update(_pair_results(frames, pair_names, n_pairs, real_src.describe()))
    ordered = {name: results[name] for name in names}
    out = {
        "real": real_src.describe(),
        "fake": fake_src.describe(),
        "metrics": ordered,
        "protocol_lines": [r["protocol_line"] for r in ordered.values()],
    }
    if json_path is not None:
        atomic_write_json(Path(json_path), out)
    return out


def format_score_table(result: dict[str, Any]) -> str:
    """The score as a text table (metric, value, protocol line), for the CLI."""
    rows = [f"real: {result['real']}", f"fake: {result['fake']}"]
    width = max(len(name) for name in result["metrics"])
    for name, r in result["metrics"].items():
        value = "n/a" if r["value"] is None else f"{r['value']:.6g}"
        if r.get("std") is not None:
            value += f" +- {r['std']:.3g}"
        if r.get("accuracy") is not None:
            value += f" (law accuracy {r['accuracy']:.3f})"
        rows.append(f"{name:<{width}}  {value}")
        rows.append(f"{'':<{width}}  {r['protocol_line']}")
    return "\n".join(rows)
