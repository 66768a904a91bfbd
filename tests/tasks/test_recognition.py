"""RecognitionTask (loss, label smoothing, optimiser groups), progressive unfreezing, evaluation helpers."""

from __future__ import annotations

import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from vidyn.data.datamodule import class_names_of
from vidyn.data.synthetic import SHAPES_CLASSES, shapes
from vidyn.errors import VidynError
from vidyn.evaluation import evaluate_classifier, spread_windows
from vidyn.export import build_model
from vidyn.tasks import TaskRun
from vidyn.tasks.recognition import ProgressiveUnfreezing, RecognitionTask, parameter_groups

OPTIM = {
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 0.1,
    "betas": [0.9, 0.999],
    "schedule": "constant",
    "min_lr_ratio": 0.01,
}
PARTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def tiny_model(num_classes: int = 3, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn_rnn_tiny", num_classes=num_classes, in_channels=1, dropout=dropout)


def tiny_items(n: int = 8, num_classes: int = 3) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        {"frames": torch.rand(4, 1, 16, 16, generator=g), "label": torch.tensor(i % num_classes)}
        for i in range(n)
    ]


def make_task(model: nn.Module, num_classes: int = 3, **kw) -> RecognitionTask:
    run = TaskRun(optim=OPTIM, total_steps=100, class_names=tuple("abcdefgh"[:num_classes]))
    return RecognitionTask(model, run, **{"label_smoothing": 0.1, **kw})


def trainable_parts(model: nn.Module) -> set[str]:
    resnet = model.backbone.resnet
    return {p for p in PARTS if all(q.requires_grad for q in getattr(resnet, p).parameters())}


# ------------------------------------------------------------------------------------------ the loss


def test_label_smoothing_matches_the_reference_formula() -> None:
    task = make_task(tiny_model(), label_smoothing=0.2)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 1])
    logp = logits.log_softmax(dim=1)
    # (1 - eps) * NLL of the true class + eps * mean over all K classes of -log p
    expected = (0.8 * -logp[torch.arange(2), labels] + 0.2 * -logp.mean(dim=1)).mean()
    assert task.loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    plain = make_task(tiny_model(), label_smoothing=0.0).loss(logits, labels)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert task.loss(logits, labels).item() != pytest.approx(plain.item(), rel=1e-3)


def test_training_step_uses_the_configured_smoothing() -> None:
    model = tiny_model().eval()  # eval: BatchNorm statistics fixed, no dropout, so logits are repeatable
    task = make_task(model, label_smoothing=0.3)
    batch = {k: torch.stack([it[k] for it in tiny_items(6)]) for k in ("frames", "label")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss = task.training_step(batch, 0)
    logp = model(batch["frames"]).log_softmax(dim=1)
    labels = batch["label"]
    expected = (0.7 * -logp[torch.arange(6), labels] + 0.3 * -logp.mean(dim=1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(VidynError, match="label_smoothing"):
        make_task(tiny_model(), label_smoothing=1.0)
    with pytest.raises(VidynError, match="model.args.num_classes=5"):
        make_task(tiny_model(num_classes=3), num_classes=5)


def test_training_decreases_the_loss() -> None:
    task = make_task(tiny_model(), label_smoothing=0.1)
    batch = {k: torch.stack([it[k] for it in tiny_items(6)]) for k in ("frames", "label")}
    opt = task.configure_optimizers()["optimizer"]
    task.train()
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(25):
            loss = task.training_step(batch, step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    # label smoothing keeps the loss above the entropy floor of the smoothed target (eps = 0.1, K = 3)
    p = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    assert min(losses) > -(p * np.log(p)).sum() - 1e-3


# --------------------------------------------------------------------------------- optimiser groups


def test_parameter_groups_cover_every_parameter_once() -> None:
    model = tiny_model()
    groups = parameter_groups(model)
    assert [g["name"] for g in groups] == ["head", "backbone"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    plain = nn.Linear(3, 2)
    assert [g["name"] for g in parameter_groups(plain)] == ["all"]


def test_frozen_backbone_is_in_the_optimiser_but_never_moves() -> None:
    model = tiny_model()
    task = make_task(model)
    opt = task.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert {id(p) for p in model.backbone.parameters()} <= in_opt
    model.freeze_backbone()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.classifier.weight.clone()
    batch = {k: torch.stack([it[k] for it in tiny_items(6)]) for k in ("frames", "label")}
    task.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(3):
            opt.zero_grad()
            task.training_step(batch, step).backward()
            opt.step()
    # weight decay 0.1 would shrink a frozen weight if the optimiser touched it; BN statistics stay too
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.classifier.weight, head_before)


# ---------------------------------------------------------------------------- progressive unfreezing


class Recorder(Callback):
    """Records which backbone parts are trainable at the start of every training epoch."""

    def __init__(self) -> None:
        self.states: dict[int, set[str]] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.states[trainer.current_epoch] = trainable_parts(pl_module.model)


def fit(task: RecognitionTask, epochs: int, callbacks: list[Callback], ckpt: str | None = None) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, DataLoader(tiny_items(8), batch_size=4), ckpt_path=ckpt)
    return trainer


def test_unfreezes_the_named_layers_at_the_right_epoch() -> None:
    model = tiny_model()
    task = make_task(model, freeze_backbone_until_epoch=2, unfreeze_layers=["layer4"])
    (callback,) = task.extra_callbacks()
    assert isinstance(callback, ProgressiveUnfreezing)
    recorder = Recorder()
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    fit(task, 2, [callback, recorder])
    assert recorder.states == {0: set(), 1: set()}
    for k, v in model.backbone.state_dict().items():  # frozen: weights and BN statistics untouched
        assert torch.equal(v, start[k]), k
    fit(task, 3, [callback, recorder], ckpt=None)  # a new fit from scratch is frozen again at epoch 0
    assert recorder.states[0] == set() and recorder.states[2] == {"layer4"}
    changed = {
        k.split(".")[1] for k, v in model.backbone.state_dict().items() if not torch.equal(v, start[k])
    }
    assert changed == {"layer4"}


def test_state_is_reapplied_on_resume(tmp_path) -> None:
    task = make_task(tiny_model(), freeze_backbone_until_epoch=1, unfreeze_layers=["layer3", "layer4"])
    trainer = fit(task, 2, task.extra_callbacks())
    ckpt = str(tmp_path / "two_epochs.ckpt")
    trainer.save_checkpoint(ckpt)
    # A fresh process: a newly built model, every part trainable, resumed at epoch 2 (past the freeze).
    fresh = make_task(tiny_model(), freeze_backbone_until_epoch=1, unfreeze_layers=["layer3", "layer4"])
    assert trainable_parts(fresh.model) == set(PARTS)
    recorder = Recorder()
    fit(fresh, 3, [*fresh.extra_callbacks(), recorder], ckpt=ckpt)
    assert recorder.states == {2: {"layer3", "layer4"}}
    # Resumed inside the frozen phase, the backbone is frozen again.
    frozen = make_task(tiny_model(), freeze_backbone_until_epoch=5)
    recorder = Recorder()
    fit(frozen, 3, [*frozen.extra_callbacks(), recorder], ckpt=ckpt)
    assert recorder.states == {2: set()}


def test_zero_epochs_means_no_callback_and_user_models_are_skipped_with_a_warning() -> None:
    assert make_task(tiny_model(), freeze_backbone_until_epoch=0).extra_callbacks() == []

    class Plain(nn.Module):
        num_classes = 3

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16 * 16, 3)

        def forward(self, frames: Tensor) -> Tensor:
            return self.fc(frames.mean(dim=(1, 2)).flatten(1))  # (B, T, C, H, W) -> (B, H*W)

    task = make_task(Plain(), freeze_backbone_until_epoch=1)
    callback = task.extra_callbacks()[0]
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.warns(UserWarning, match="progressive unfreezing is skipped"):
        callback.on_fit_start(trainer, task)
    assert callback.active is False


# ------------------------------------------------------------------------------ evaluation helpers


class LabelData(torch.utils.data.Dataset):
    """Clip i has label i % 3 and frames filled with its label / 10, so an oracle can read the label."""

    classes = ["a", "b", "c"]

    def __len__(self) -> int:
        return 9

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"frames": torch.full((2, 1, 4, 4), (i % 3) / 10), "label": torch.tensor(i % 3)}


class Confuser(nn.Module):
    """Reads the label, but calls class "c" (2) "b" (1); its second choice is always the truth."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, frames: Tensor) -> Tensor:
        label = (frames.mean(dim=(1, 2, 3, 4)) * 10).round().long()  # (B,)
        logits = F.one_hot(label, 3).float() * 2.0
        wrong = label == 2
        logits[wrong, 1] = 3.0
        return logits


def test_evaluate_classifier_counts_by_hand() -> None:
    res = evaluate_classifier(Confuser(), LabelData(), ["a", "b", "c"], batch_size=4)
    assert res["num_clips"] == 9
    assert res["top1"] == pytest.approx(6 / 9) and res["top5"] == 1.0
    assert res["confusion_matrix"] == [[3, 0, 0], [0, 3, 0], [0, 3, 0]]
    assert res["per_class_accuracy"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert res["most_confused"] == [{"true": "c", "predicted": "b", "count": 3}]
    partial = evaluate_classifier(Confuser(), LabelData(), ["a", "b", "c"], max_clips=2)
    assert partial["num_clips"] == 2 and partial["per_class_accuracy"]["c"] is None  # no clip of c


def test_class_names_of() -> None:
    ds = shapes(split="test", num_samples=3, size=16)
    assert class_names_of(ds) == SHAPES_CLASSES
    assert class_names_of(Subset(LabelData(), [0])) == ["a", "b", "c"]
    assert class_names_of(object(), 2) == ["0", "1"]


def test_spread_windows_cover_the_video_evenly() -> None:
    w = spread_windows(100, 4, 2, 3)  # span 7 frames, slack 93
    assert w.tolist() == [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]
    assert len(spread_windows(100, 4, 2, None)) == 10  # ceil(100 / 7) = 15, capped at 10
    assert len(spread_windows(30, 4, 2, None)) == math.ceil(30 / 7)
    # shorter than one window: one window at the training stride, running past the end (held there)
    assert spread_windows(5, 4, 2, 4).tolist() == [[0, 2, 4, 6]]
    with pytest.raises(VidynError):
        spread_windows(10, 4, 2, 0)
