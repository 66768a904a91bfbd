"""Scoring classifiers: top-1/top-5, per-class accuracy, confusions; windows over a whole video.

The evaluator of the classifier family (`EVALUATORS["classifier"]`) scores an exported classifier on its
own dataset's split and writes confusion.png / confusion.csv; `evaluate_classifier` is the loop it runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vidyn.config import Config
from vidyn.data.datamodule import class_names_of
from vidyn.errors import VidynError
from vidyn.fileio import atomic_write_text
from vidyn.metrics import ClassificationMetrics, most_confused_pairs
from vidyn.models.profile import synchronize
from vidyn.registry import EVALUATORS
from vidyn.report.plots import plot_confusion


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    dataset: Dataset,
    class_names: Sequence[str],
    *,
    batch_size: int = 8,
    max_clips: int | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Score a classifier on every clip of `dataset` (one clip per item, as the dataset samples it).

    Returns `{"top1", "top5", "per_class_accuracy": {class: recall or None when the class has no clips},
    "most_confused": [{"true", "predicted", "count"}], "confusion_matrix": [[K ints] x K] (rows = true
    class), "num_clips", "infer_clip_s"}` (top-k micro-averaged, see `vidyn.metrics.classification`).
    """
    device = device or torch.device("cpu")
    if max_clips is not None:
        dataset = Subset(dataset, range(min(max_clips, len(dataset))))
    num_classes = len(class_names)
    # One process scores the whole split (rank 0 after a DDP fit): never wait for peers.
    metric = ClassificationMetrics(num_classes, top_k=(1, 5), sync_on_compute=False).to(device)
    model.to(device).eval()
    seconds, clips = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        frames, labels = batch["frames"].to(device), batch["label"].to(device)
        synchronize(device)  # CUDA runs asynchronously: time the forward alone, to its end
        t0 = time.perf_counter()
        logits = model(frames).float()
        synchronize(device)
        seconds += time.perf_counter() - t0
        metric.update(logits, labels)
        clips += labels.shape[0]
    if clips == 0:
        raise VidynError("the evaluation split has no clips; check the dataset arguments")
    res = metric.compute()
    recall = res["per_class_accuracy"]
    return {
        "top1": res["top1"],
        "top5": res["top5"],
        "per_class_accuracy": {
            name: (None if math.isnan(acc) else acc) for name, acc in zip(class_names, recall, strict=True)
        },
        "most_confused": most_confused_pairs(torch.tensor(res["confusion_matrix"]), list(class_names)),
        "confusion_matrix": res["confusion_matrix"],
        "num_clips": clips,
        "infer_clip_s": seconds / clips,
    }


def spread_windows(num_available: int, num_frames: int, stride: int, num_clips: int | None) -> np.ndarray:
    """Frame indices `(K, num_frames)` of K windows of `num_frames` frames `stride` apart, evenly spaced
    from the start to the end of a video of `num_available` frames (inference over a whole video).

    `num_clips=None` picks enough windows to cover the video (ceil(frames / window span)), at most 10.
    A video shorter than one window gives one window from frame 0 whose indices run past the end: the
    caller holds the last frame there (`vidyn.data.store.take_clip`), keeping the training frame rate
    rather than squeezing the stride.
    """
    if num_available < 1 or num_frames < 1 or stride < 1:
        raise VidynError("a video needs at least one frame, and num_frames and stride must be >= 1")
    span = (num_frames - 1) * stride + 1  # frames one window covers
    slack = num_available - span
    if num_clips is None:
        num_clips = min(10, max(1, math.ceil(num_available / span)))
    if num_clips < 1:
        raise VidynError(f"clips must be >= 1; got {num_clips}")
    if slack <= 0:
        num_clips = 1
    starts = np.round(np.linspace(0, max(0, slack), num_clips)).astype(np.int64)
    return starts[:, None] + stride * np.arange(num_frames, dtype=np.int64)[None, :]  # (K, T)


@EVALUATORS.register("classifier", family="classifier")
def classifier_report(
    model: nn.Module,
    meta: dict[str, Any],
    cfg: Config,
    dataset: Dataset,
    *,
    split: str = "test",
    report_dir: str | Path | None = None,
    max_clips: int | None = None,
    others: Sequence[nn.Module] = (),
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy and confusions of a classifier; confusion.png/.csv in report_dir.

    Baselines (`eval.baselines`) are frame predictors, so none apply here; so do no `others`.
    """
    if others:
        raise VidynError(f"{meta['name']!r} is a classifier; only frame predictors take other models")
    class_names = meta.get("class_names") or class_names_of(dataset, getattr(model, "num_classes", None))
    res = evaluate_classifier(
        model,
        dataset,
        class_names,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        max_clips=max_clips if max_clips is not None else cfg.eval.max_clips,
        device=device,
    )
    args = {**cfg.data.args, **cfg.data.splits.get(split, {})}
    protocol = {
        "dataset": cfg.data.name,
        "split": split,
        "num_clips": res["num_clips"],
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "clip_sampling": args.get("clip_sampling", "dataset default"),
        "conventions": "one clip per video as the dataset samples it; top-k micro-averaged over clips; "
        "per-class accuracy = recall (null for a class without clips); confusion rows = true class",
    }
    if report_dir is not None:
        report = Path(report_dir)
        report.mkdir(parents=True, exist_ok=True)
        plot_confusion(res["confusion_matrix"], list(class_names), report / "confusion.png")
        rows = [",".join(["true\\predicted", *class_names])]
        rows += [
            ",".join([c, *map(str, r)]) for c, r in zip(class_names, res["confusion_matrix"], strict=True)
        ]
        atomic_write_text(report / "confusion.csv", "\n".join(rows) + "\n")
    return {"models": {meta["name"]: res}, "protocol": protocol}
