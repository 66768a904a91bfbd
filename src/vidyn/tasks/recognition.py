"""Action recognition task: trains any classifier (see `vidyn.models.interface.Classifier`).

Seed 002's training recipe (CNN-RNN on UCF101, in the CNN+LSTM line of Donahue et al., "Long-term
Recurrent Convolutional Networks", CVPR 2015), as a Lightning module plus one callback:

- loss: cross-entropy with label smoothing (Szegedy et al., "Rethinking the Inception Architecture",
  CVPR 2016; the seed uses epsilon = 0.1): the target puts 1 - epsilon on the true class and spreads
  epsilon uniformly over all K classes, exactly `torch.nn.functional.cross_entropy(label_smoothing=...)`;
- optimiser: `vidyn.tasks.optim.configure` (AdamW, linear warmup, cosine decay) over two parameter groups,
  "head" and "backbone". Every backbone parameter is in the optimiser from the first step, frozen or not:
  frozen parameters get no gradient, and torch optimisers skip parameters whose `.grad` is None (no
  update, no weight decay, no moment state), so unfreezing later needs no new optimiser and a resumed run
  restores the optimiser state as it was;
- progressive fine-tuning (`ProgressiveUnfreezing`): the backbone stays frozen for the first
  `until_epoch` epochs, then the named layers (seed 002: layer3, layer4) train too;
- mixed precision is the Trainer's `precision` (`16-mixed` or `bf16-mixed` on a GPU, the seed's
  `amp: true`); on CPU keep `32-true`: bf16 autocast is slower than fp32 on CPUs without AMX.

Logged: train/loss, train/acc (top-1 of the batch), val/loss, val/top1, val/top5 (micro-averaged over
clips: each batch's accuracy is weighted by its size; `sync_dist` averages across DDP processes).
Deviation from the seed: its training loop kept BatchNorm statistics updating in frozen layers; here the
model's `freeze_backbone()` keeps them fixed (see `vidyn.models.cnn_rnn.Backbone2D`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from vidyn.errors import VidynError
from vidyn.metrics import ClassificationMetrics, most_confused_pairs
from vidyn.tasks import optim as optim_lib

__all__ = [
    "ProgressiveUnfreezing",
    "RecognitionTask",
    "class_names_of",
    "evaluate_classifier",
    "parameter_groups",
    "spread_windows",
    "topk_hits",
]


def topk_hits(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Bool `(N,)`: is the true label among the k highest logits (k clamped to the number of classes)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (N, k)
    return (top == labels.unsqueeze(1)).any(dim=1)


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Optimiser groups: "head" and "backbone" when the model exposes them, else one "all" group.

    The backbone group holds every backbone parameter, frozen or not (see the module docstring).
    """
    if hasattr(model, "backbone_parameters") and hasattr(model, "head_parameters"):
        groups = [
            {"params": list(model.head_parameters()), "name": "head"},
            {"params": list(model.backbone_parameters()), "name": "backbone"},
        ]
        return [g for g in groups if g["params"]]
    return [{"params": list(model.parameters()), "name": "all"}]


class RecognitionTask(L.LightningModule):
    """Cross-entropy training of a classifier `frames (B, T, C, H, W) -> logits (B, num_classes)`."""

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        label_smoothing: float = 0.0,
        optim: dict[str, Any],
        total_steps: int,
        warmup_steps: int = 0,
        freeze_backbone_until_epoch: int = 0,
        unfreeze_layers: Sequence[str] | None = ("layer3", "layer4"),
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise VidynError(f"task.label_smoothing must be in [0, 1); got {label_smoothing}")
        if freeze_backbone_until_epoch < 0:
            raise VidynError(
                f"task.freeze_backbone_until_epoch must be >= 0 (0 = never frozen); got "
                f"{freeze_backbone_until_epoch}"
            )
        model_classes = getattr(model, "num_classes", num_classes)
        if model_classes != num_classes:
            raise VidynError(
                f"the model predicts {model_classes} classes but the data has {num_classes}; "
                f"add --set model.args.num_classes={num_classes}"
            )
        self.model = model
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.optim_cfg, self.total_steps, self.warmup_steps = optim, total_steps, warmup_steps
        self.freeze_backbone_until_epoch = freeze_backbone_until_epoch
        self.unfreeze_layers = None if unfreeze_layers is None else list(unfreeze_layers)

    def forward(self, frames: Tensor) -> Tensor:
        return self.model(frames)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy with label smoothing, computed in fp32 even under autocast."""
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.model(batch["frames"])
        labels = batch["label"]
        loss = self.loss(logits, labels)
        bs = labels.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        self.log("train/acc", topk_hits(logits.detach(), labels, 1).float().mean(), batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self.model(batch["frames"])
        labels = batch["label"]
        bs = labels.shape[0]
        self.log("val/loss", self.loss(logits, labels), prog_bar=True, sync_dist=True, batch_size=bs)
        for k in (1, 5):
            acc = topk_hits(logits, labels, k).float().mean()
            self.log(f"val/top{k}", acc, prog_bar=k == 1, sync_dist=True, batch_size=bs)

    def configure_optimizers(self) -> dict:
        return optim_lib.configure(
            parameter_groups(self.model), self.optim_cfg, self.total_steps, self.warmup_steps
        )

    def extra_callbacks(self) -> list[Callback]:
        """The callbacks this task needs beside the engine's: progressive unfreezing when configured."""
        if self.freeze_backbone_until_epoch <= 0:
            return []
        return [ProgressiveUnfreezing(self.freeze_backbone_until_epoch, self.unfreeze_layers)]


class ProgressiveUnfreezing(Callback):
    """Seed 002's progressive fine-tuning: backbone frozen for `until_epoch` epochs, then `layers` train.

    The state is a pure function of the epoch, re-applied at the start of every training epoch: epochs
    `< until_epoch` call `model.freeze_backbone()`; later epochs call `freeze_backbone()` and then
    `unfreeze_backbone(layers)` (`layers=None` unfreezes the whole backbone), so the parts not named stay
    frozen. Nothing is stored in the checkpoint: a resumed run derives the state from its restored
    `current_epoch` (Lightning restores the epoch only after `on_fit_start`, so `on_fit_start` freezes and
    `on_train_epoch_start` settles the real state). A model without `freeze_backbone` /
    `unfreeze_backbone` (e.g. a user's own model) is trained whole, with a warning.
    """

    def __init__(self, until_epoch: int, layers: Sequence[str] | None = ("layer3", "layer4")) -> None:
        super().__init__()
        if until_epoch < 0:
            raise VidynError(f"until_epoch must be >= 0; got {until_epoch}")
        self.until_epoch = until_epoch
        self.layers = None if layers is None else list(layers)
        self.active = True
        self.frozen: bool | None = None  # the state applied last (for logging and tests)

    @staticmethod
    def _model(pl_module: L.LightningModule) -> nn.Module:
        return getattr(pl_module, "model", pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = self._model(pl_module)
        self.active = hasattr(model, "freeze_backbone") and hasattr(model, "unfreeze_backbone")
        if not self.active:
            warnings.warn(
                f"{type(model).__name__} has no freeze_backbone()/unfreeze_backbone(); progressive "
                "unfreezing is skipped and the whole model trains from the first epoch",
                stacklevel=2,
            )
            return
        # Frozen parts keep BatchNorm in eval mode on purpose; Lightning's start-of-training warning about
        # modules in eval mode would only alarm the user.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        self.apply_epoch(model, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            self.apply_epoch(self._model(pl_module), trainer.current_epoch)
            pl_module.log("train/backbone_frozen", float(bool(self.frozen)), on_step=False, on_epoch=True)

    def apply_epoch(self, model: nn.Module, epoch: int) -> None:
        """Put `model` in the state of `epoch` (idempotent)."""
        model.freeze_backbone()
        self.frozen = epoch < self.until_epoch
        if not self.frozen:
            model.unfreeze_backbone(self.layers)


def class_names_of(dataset: Any, num_classes: int | None = None) -> list[str]:
    """A dataset's class names (`class_names` or `classes` attribute), else "0", "1", ... ."""
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    if names is None and hasattr(dataset, "dataset"):  # torch.utils.data.Subset
        return class_names_of(dataset.dataset, num_classes)
    if names is None:
        if num_classes is None:
            raise VidynError("the dataset names no classes (class_names/classes); cannot label predictions")
        return [str(i) for i in range(num_classes)]
    return [str(n) for n in names]


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
        t0 = time.perf_counter()
        logits = model(frames).float()
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
