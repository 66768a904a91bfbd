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

import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from vidyn.errors import VidynError, VidynWarning
from vidyn.registry import TASKS
from vidyn.tasks import optim as optim_lib
from vidyn.tasks.base import TaskRun, VidynTask

__all__ = ["ProgressiveUnfreezing", "RecognitionTask", "parameter_groups", "topk_hits"]


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


@TASKS.register("recognition", family="classifier")
class RecognitionTask(VidynTask):
    """Cross-entropy training of a classifier `frames (B, T, C, H, W) -> logits (B, num_classes)`.

    The classes are the training data's (`run.class_names`; the model's `num_classes` when the data
    names none) and are exported with the model so `classify` can name them. label_smoothing: epsilon
    of the smoothed target; freeze_backbone_until_epoch / unfreeze_layers: progressive fine-tuning
    (`ProgressiveUnfreezing`; 0 = never frozen; None unfreezes the whole backbone).
    """

    def __init__(
        self,
        model: nn.Module,
        run: TaskRun,
        *,
        label_smoothing: float = 0.0,
        freeze_backbone_until_epoch: int = 0,
        unfreeze_layers: Sequence[str] | None = ("layer3", "layer4"),
    ) -> None:
        super().__init__()
        num_classes = len(run.class_names) or int(getattr(model, "num_classes", 0))
        self.class_names = list(run.class_names) or [str(i) for i in range(num_classes)]
        if not 0.0 <= label_smoothing < 1.0:
            raise VidynError(f"task.args.label_smoothing must be in [0, 1); got {label_smoothing}")
        if freeze_backbone_until_epoch < 0:
            raise VidynError(
                f"task.args.freeze_backbone_until_epoch must be >= 0 (0 = never frozen); got "
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
        self.optim_cfg, self.total_steps, self.warmup_steps = run.optim, run.total_steps, run.warmup_steps
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

    def export_extra(self) -> dict[str, Any]:
        return {"class_names": self.class_names}

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
                VidynWarning,
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
