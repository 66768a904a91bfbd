"""Classification metrics on hand-computed examples, and against torchmetrics' functional versions."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy

from vidyn.errors import VidynError
from vidyn.metrics import (
    ClassificationMetrics,
    confusion_matrix,
    most_confused_pairs,
    per_class_accuracy,
    topk_accuracy,
)

# 5 clips, 4 classes. Rank of the true label: clip0 1st, clip1 2nd, clip2 3rd, clip3 1st, clip4 4th.
LOGITS = torch.tensor(
    [
        [4.0, 1.0, 0.0, 2.0],  # label 0 -> top-1
        [3.0, 2.0, 0.5, 0.0],  # label 1 -> rank 2
        [0.1, 0.9, 0.2, 0.8],  # label 2 -> rank 3 (0.9, 0.8, 0.2, 0.1)
        [0.0, 0.0, 1.0, 3.0],  # label 3 -> top-1
        [0.3, 0.2, 0.1, 0.0],  # label 3 -> rank 4
    ]
)
LABELS = torch.tensor([0, 1, 2, 3, 3])


def test_topk_accuracy_by_hand() -> None:
    assert topk_accuracy(LOGITS, LABELS, 1) == pytest.approx(2 / 5)
    assert topk_accuracy(LOGITS, LABELS, 2) == pytest.approx(3 / 5)
    assert topk_accuracy(LOGITS, LABELS, 3) == pytest.approx(4 / 5)
    assert topk_accuracy(LOGITS, LABELS, 4) == 1.0
    assert topk_accuracy(LOGITS, LABELS, 5) == 1.0  # k > num_classes clamps to num_classes


def test_confusion_matrix_rows_are_true_classes() -> None:
    preds = LOGITS.argmax(dim=1)  # [0, 0, 1, 3, 0]
    cm = confusion_matrix(preds, LABELS, 4)
    expected = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1]])
    assert cm.dtype == torch.int64
    assert torch.equal(cm, expected)


def test_per_class_accuracy_and_empty_class() -> None:
    cm = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    acc = per_class_accuracy(cm)
    assert acc[0] == pytest.approx(0.75) and acc[2] == pytest.approx(0.5)
    assert math.isnan(float(acc[1]))  # class 1 never appears: undefined, not 0


def test_most_confused_pairs_order_and_names() -> None:
    cm = torch.tensor([[9, 2, 5], [2, 7, 0], [1, 0, 4]])
    pairs = most_confused_pairs(cm, ["run", "walk", "jump"], n=3)
    assert pairs == [
        {"true": "run", "predicted": "jump", "count": 5},
        {"true": "run", "predicted": "walk", "count": 2},  # ties ordered by (true, predicted) index
        {"true": "walk", "predicted": "run", "count": 2},
    ]
    assert len(most_confused_pairs(cm, ["run", "walk", "jump"], n=10)) == 4  # zeros are left out
    with pytest.raises(VidynError, match="class names"):
        most_confused_pairs(cm, ["run", "walk"])


def test_agrees_with_torchmetrics_functional() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 7, generator=gen)  # continuous values: no ties
    labels = torch.randint(0, 7, (64,), generator=gen)
    for k in (1, 3, 7):
        ref = multiclass_accuracy(logits, labels, num_classes=7, top_k=k, average="micro")
        assert topk_accuracy(logits, labels, k) == pytest.approx(float(ref))
    cm = confusion_matrix(logits.argmax(1), labels, 7)
    assert int(cm.sum()) == 64
    assert int(cm.diagonal().sum()) == round(topk_accuracy(logits, labels, 1) * 64)
    for true_class in range(7):
        assert int(cm[true_class].sum()) == int((labels == true_class).sum())


def test_streaming_metric_accumulates_like_the_whole_set() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(23, 6, generator=gen)
    labels = torch.randint(0, 6, (23,), generator=gen)
    metric = ClassificationMetrics(num_classes=6, top_k=(1, 5, 10))
    for sl in (slice(0, 5), slice(5, 6), slice(6, 23)):
        metric.update(logits[sl], labels[sl])
    out = metric.compute()
    assert out["top1"] == pytest.approx(topk_accuracy(logits, labels, 1))
    assert out["top5"] == pytest.approx(topk_accuracy(logits, labels, 5))
    assert out["top10"] == 1.0  # clamped to 6 classes
    cm = confusion_matrix(logits.argmax(1), labels, 6)
    assert out["confusion_matrix"] == cm.tolist()
    expected_acc = per_class_accuracy(cm).tolist()
    assert out["per_class_accuracy"] == pytest.approx(expected_acc, nan_ok=True)


def test_streaming_metric_by_hand_and_merge() -> None:
    first = ClassificationMetrics(num_classes=4)
    first.update(LOGITS[:2], LABELS[:2])
    second = ClassificationMetrics(num_classes=4)  # a second DDP rank's share
    second.update(LOGITS[2:], LABELS[2:])
    first.merge_state(second)
    out = first.compute()
    assert out["top1"] == pytest.approx(2 / 5) and out["top5"] == 1.0
    assert out["per_class_accuracy"] == pytest.approx([1.0, 0.0, 0.0, 0.5])


def test_bad_inputs_raise_vidyn_error() -> None:
    with pytest.raises(VidynError, match=r"\[0, 3\]"):
        topk_accuracy(LOGITS, torch.tensor([0, 1, 2, 3, 4]), 1)
    with pytest.raises(VidynError, match=r"\(N, num_classes\)"):
        topk_accuracy(LOGITS, LABELS[:3], 1)
    with pytest.raises(VidynError, match="k >= 1"):
        topk_accuracy(LOGITS, LABELS, 0)
    with pytest.raises(VidynError, match="integer"):
        confusion_matrix(LOGITS.argmax(1), LABELS.float(), 4)
    with pytest.raises(VidynError, match="num_classes=4"):
        ClassificationMetrics(num_classes=5).update(LOGITS, LABELS)
    with pytest.raises(VidynError, match="top_k"):
        ClassificationMetrics(num_classes=5, top_k=(0,))
