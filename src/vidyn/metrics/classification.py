"""Classification metrics for action recognition: top-k accuracy, confusion matrix, per-class accuracy.

Conventions (those of the UCF101 literature, e.g. seed 002's 58.39% top-1 / 79.64% top-5):
- top-k accuracy is micro-averaged: the fraction of clips whose true label is among the k highest logits.
  k larger than the number of classes is clamped to it (top-5 of a 3-class problem is then 1.0).
  Ties between logits are broken by `torch.topk`'s order.
- the confusion matrix is `(K, K)` int64 with rows = true class and columns = predicted class (argmax),
  the layout of scikit-learn and torchmetrics' `multiclass_confusion_matrix`.
- per-class accuracy is the recall of each class (diagonal / row sum); a class with no clips gets NaN
  rather than a made-up 0 or 1.

The confusion matrix is torchmetrics' `multiclass_confusion_matrix` (same definition, after our own
checks). Top-k hits are plain `torch.topk`: the streaming metric needs integer hit counts to sum exactly
across batches and processes, and torchmetrics' `multiclass_accuracy` refuses k > num_classes; the tests
check the two agree with `multiclass_accuracy(top_k=k, average="micro")`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from vidyn.errors import VidynError


def _check_logits(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise VidynError(
            f"classification metrics need logits (N, num_classes) and labels (N,); got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    _check_labels(labels, logits.shape[1], "labels")


def _check_labels(values: Tensor, num_classes: int, what: str) -> None:
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise VidynError(f"{what} must be integer class indices (int64); got dtype {values.dtype}")
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise VidynError(
            f"{what} must lie in [0, {num_classes - 1}] for {num_classes} classes; got values in "
            f"[{int(values.min())}, {int(values.max())}]"
        )


def _topk_hits(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Bool `(N,)`: is the true label among the top-k logits (k clamped to the number of classes)."""
    if k < 1:
        raise VidynError(f"top-k accuracy needs k >= 1; got k={k}")
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (N, k)
    return (top == labels.unsqueeze(1)).any(dim=1)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of clips whose label is among the k highest logits: logits `(N, K)`, labels `(N,)`."""
    _check_logits(logits, labels)
    if labels.numel() == 0:
        raise VidynError("top-k accuracy of an empty batch is undefined; pass at least one clip")
    return float(_topk_hits(logits, labels, k).double().mean())


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """`(K, K)` int64 counts, rows = true class, columns = predicted class; preds and labels `(N,)`."""
    if preds.shape != labels.shape or preds.dim() != 1:
        raise VidynError(
            f"confusion_matrix needs preds and labels of one shape (N,); got {tuple(preds.shape)} and "
            f"{tuple(labels.shape)} (take logits.argmax(1) for preds)"
        )
    _check_labels(preds, num_classes, "preds")
    _check_labels(labels, num_classes, "labels")
    cm = multiclass_confusion_matrix(preds.long(), labels.long(), num_classes, validate_args=False)
    return cm.to(torch.int64)


def per_class_accuracy(cm: Tensor) -> Tensor:
    """Recall of each class, `diag / row sum`, `(K,)` float64; NaN for a class with no clips."""
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise VidynError(f"per_class_accuracy needs a square (K, K) confusion matrix; got {tuple(cm.shape)}")
    cm = cm.to(torch.float64)
    return cm.diagonal() / cm.sum(dim=1)  # 0 / 0 -> NaN for empty rows


def most_confused_pairs(cm: Tensor, class_names: Sequence[str], n: int = 10) -> list[dict[str, Any]]:
    """The n largest off-diagonal counts as `{"true", "predicted", "count"}`, most frequent first.

    Pairs with a zero count are left out; equal counts are ordered by true then predicted class index.
    """
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise VidynError(f"most_confused_pairs needs a square (K, K) confusion matrix; got {tuple(cm.shape)}")
    if len(class_names) != cm.shape[0]:
        raise VidynError(
            f"most_confused_pairs got {len(class_names)} class names for a {cm.shape[0]}-class matrix; "
            "pass one name per class, in label order"
        )
    off = cm.to(torch.int64).clone()
    off.fill_diagonal_(0)
    k = cm.shape[0]
    flat = off.flatten().tolist()
    order = sorted((i for i, c in enumerate(flat) if c > 0), key=lambda i: (-flat[i], i))
    return [
        {"true": class_names[i // k], "predicted": class_names[i % k], "count": flat[i]} for i in order[:n]
    ]


class ClassificationMetrics(Metric):
    """Top-k accuracies and the confusion matrix, accumulated across batches and DDP processes.

    Args:
        num_classes: number of classes K.
        top_k: the k values to report, each as "top{k}" (k above K is clamped to K but keeps its name).

    `update(logits (N, K), labels (N,))`; `compute()` returns `{"top1": float, "top5": float, ...,
    "per_class_accuracy": [K floats, NaN for unseen classes], "confusion_matrix": [[K ints] x K]}`
    with rows of the matrix = true class and predictions = argmax of the logits.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, top_k: Iterable[int] = (1, 5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise VidynError(f"num_classes must be at least 1; got {num_classes}")
        top_k = tuple(int(k) for k in top_k)
        if not top_k or min(top_k) < 1:
            raise VidynError(f"top_k must be one or more k >= 1, e.g. (1, 5); got {top_k}")
        self.num_classes = num_classes
        self.top_k = top_k
        self.add_state("correct", torch.zeros(len(top_k), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state(
            "confmat", torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: logits `(N, num_classes)`, labels `(N,)` int64."""
        _check_logits(logits, labels)
        if logits.shape[1] != self.num_classes:
            raise VidynError(
                f"ClassificationMetrics was built for {self.num_classes} classes but got logits with "
                f"{logits.shape[1]}; construct it with num_classes={logits.shape[1]}"
            )
        logits = logits.detach()
        hits = torch.stack([_topk_hits(logits, labels, k).sum() for k in self.top_k])
        self.correct = self.correct + hits.to(self.correct)
        self.total = self.total + labels.shape[0]
        cm = confusion_matrix(logits.argmax(dim=1), labels, self.num_classes)
        self.confmat = self.confmat + cm.to(self.confmat)

    def compute(self) -> dict[str, Any]:
        total = int(self.total)
        if total == 0:
            raise VidynError("ClassificationMetrics has seen no clips; call update(logits, labels) first")
        result: dict[str, Any] = {
            f"top{k}": int(c) / total for k, c in zip(self.top_k, self.correct, strict=True)
        }
        result["per_class_accuracy"] = per_class_accuracy(self.confmat).tolist()
        result["confusion_matrix"] = self.confmat.tolist()
        return result
