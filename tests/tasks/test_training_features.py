"""Training features every task relies on: the LR schedule, the step budget, scheduled-sampling
arguments, the l1_diff loss, exporting the best checkpoint, early stopping, and the task registry."""

from __future__ import annotations

import copy
import datetime
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch
from lightning.pytorch.callbacks import Timer
from tiny_configs import tiny_prediction_config

from vidyn import api
from vidyn.api.training import _total_steps
from vidyn.config import build_config
from vidyn.errors import VidynError, VidynWarning
from vidyn.export import build_model
from vidyn.registry import TASKS
from vidyn.tasks import TaskRun, build_task
from vidyn.tasks.optim import BudgetClock, WarmupCosineLR, warmup_cosine
from vidyn.tasks.prediction import PredictionTask, reconstruction_loss

OPTIM = vars(build_config().optim)


def test_warmup_then_cosine_down_to_the_floor() -> None:
    kw = {"warmup_steps": 4, "total_steps": 14, "min_ratio": 0.1}
    assert [warmup_cosine(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # cosine over the 10 steps after warm-up: 0.1 + 0.9 * (1 + cos(pi * p)) / 2
    for step, progress in ((4, 0.0), (9, 0.5), (14, 1.0), (40, 1.0)):
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        assert warmup_cosine(step, **kw) == pytest.approx(expected)
    assert warmup_cosine(9, **kw, schedule="constant") == 1.0
    with pytest.raises(VidynError, match="cosine or constant"):
        warmup_cosine(9, **kw, schedule="step")


def test_the_cosine_follows_whichever_budget_is_used_more() -> None:
    kw = {"warmup_steps": 4, "total_steps": 14, "min_ratio": 0.1}
    assert warmup_cosine(9, **kw, budget_used=0.2) == pytest.approx(warmup_cosine(9, **kw))  # steps ahead
    expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(0.9 * math.pi))
    assert warmup_cosine(9, **kw, budget_used=0.9) == pytest.approx(expected)  # time ahead
    assert warmup_cosine(5, **kw, budget_used=1.5) == pytest.approx(0.1)  # the floor, not past it
    assert warmup_cosine(2, **kw, budget_used=0.9) == 0.75  # the warmup stays in steps


@pytest.mark.parametrize("follow", [False, True])
def test_budget_schedule_anneals_by_the_time_budget(tmp_path: Path, follow: bool) -> None:
    cfg = tiny_prediction_config()
    cfg["optim"].update(budget_schedule=follow, min_lr_ratio=0.01)
    cfg["trainer"].update(max_steps=100_000, max_time=3, val_check_interval=100_000)
    result = api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False)
    last = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = last["lr_schedulers"]
    assert 0 < result.steps < 100_000 and "follow_budget" not in state
    assert state["budget_used"] > 0.9 if follow else state["budget_used"] == 0.0
    lr = state["_last_lr"][0] / 0.003
    assert lr < 0.05 if follow else lr > 0.99  # by steps the cosine has barely started


def test_budget_clock_gives_every_rank_rank_0s_fraction() -> None:
    sched = WarmupCosineLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), warmup_steps=0, total_steps=100,
        min_ratio=0.0, schedule="cosine", follow_budget=True,
    )  # fmt: skip
    timer = Timer(duration=datetime.timedelta(seconds=100))
    timer.time_elapsed = lambda *a: 30.0  # this rank's clock
    sent = []
    strategy = SimpleNamespace(broadcast=lambda value, src: sent.append((value, src)) or 0.5)  # rank 0's
    trainer = SimpleNamespace(
        lr_scheduler_configs=[SimpleNamespace(scheduler=sched)], callbacks=[timer], world_size=2,
        strategy=strategy,
    )  # fmt: skip
    BudgetClock().on_train_batch_end(trainer)
    assert sent == [(0.3, 0)] and sched.budget_used == 0.5
    trainer.world_size = 1
    BudgetClock().on_train_batch_end(trainer)
    assert sched.budget_used == pytest.approx(0.3)


def test_total_steps_is_the_smaller_budget_in_optimiser_steps() -> None:
    dm = SimpleNamespace(dataset=lambda split: range(100))  # 100 clips
    cfg = build_config(None, ["data.batch_size=10", "trainer.max_steps=0", "trainer.max_epochs=3"])
    assert _total_steps(cfg, dm) == (30, 0)  # 10 batches per epoch
    cfg = build_config(None, ["data.batch_size=10", "trainer.max_steps=25", "trainer.max_epochs=3"])
    assert _total_steps(cfg, dm) == (25, 0)
    cfg = build_config(
        None, ["data.batch_size=10", "trainer.accumulate_grad_batches=2", "trainer.max_steps=0",
               "trainer.max_epochs=4", "optim.warmup_epochs=1"],
    )  # fmt: skip
    assert _total_steps(cfg, dm) == (20, 5)  # 5 optimiser steps per epoch


def test_scheduled_sampling_follows_openstl_rescaled_to_the_run() -> None:
    model = build_model("convlstm_tiny")
    task = PredictionTask(model, TaskRun(optim=OPTIM, total_steps=1000), sampling_stop_fraction=0.5)
    assert task.schedule_kwargs("standard") == {"stop_iter": 500, "changing_rate": None}
    assert task.schedule_kwargs("reverse") == {"r_step_1": 250, "r_step_2": 500, "r_exp_alpha": 50.0}
    assert task.schedule_kwargs("none") == {}
    assert task.schedule_step == 0
    task.pinned_step = 321  # what compare's profiler uses to time the schedule's end state
    assert task.schedule_step == 321


def test_l1_diff_adds_the_l1_of_frame_differences() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 1, 4, 4, generator=g), torch.rand(2, 3, 1, 4, 4, generator=g)
    by_hand = (pred - target).abs().mean() + (
        (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
    ).abs().mean()
    torch.testing.assert_close(reconstruction_loss(pred, target, "l1_diff"), by_hand)
    torch.testing.assert_close(
        reconstruction_loss(pred[:, :1], target[:, :1], "l1_diff"), (pred - target)[:, :1].abs().mean()
    )


def _rising_val_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation loss that grows with the step: the first validation is the best one."""

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN202
        self.log("val/loss", float(self.global_step), batch_size=batch["frames"].shape[0])

    monkeypatch.setattr(PredictionTask, "validation_step", validation_step)


def test_the_best_checkpoint_is_exported_not_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rising_val_loss(monkeypatch)
    cfg = tiny_prediction_config()
    cfg["trainer"].update(max_steps=6, val_check_interval=2)
    run = api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False).run_dir
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (best["global_step"], last["global_step"]) == (2, 6)
    exported = safetensors.torch.load_file(str(run / "model.safetensors"))
    for key, value in exported.items():
        assert torch.equal(value, best["state_dict"][f"model.{key}"]), key
    assert any(not torch.equal(v, last["state_dict"][f"model.{k}"]) for k, v in exported.items())


def test_early_stopping_ends_the_run_when_validation_stops_improving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rising_val_loss(monkeypatch)
    cfg = tiny_prediction_config()
    cfg["trainer"].update(max_steps=40, val_check_interval=2, early_stopping_patience=2)
    result = api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False)
    assert result.steps == 6  # best at step 2, two worse validations (4, 6), then stop


def test_tasks_are_registered_by_the_family_they_train() -> None:
    assert TASKS.get("prediction").family == "predictor" and TASKS.get("recognition").family == "classifier"
    assert "model" not in TASKS.get("prediction").defaults()  # provided by the engine, not task.args
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=("a", "b"))
    with pytest.raises(VidynError, match="no argument.*num_contxt; valid arguments: num_context"):
        build_task("prediction", {"num_contxt": 3}, build_model("convlstm_tiny"), run)
    with pytest.raises(
        VidynError, match="task 'recognition' trains classifiers but the model is a predictor"
    ):
        build_task("recognition", {}, build_model("convlstm_tiny"), run)
    task = build_task("recognition", {}, build_model("cnn_rnn_tiny", num_classes=2), run)
    assert task.export_extra() == {"class_names": ["a", "b"]}


def test_discrete_models_get_the_frame_grid_of_jittery_real_timestamps() -> None:
    from vidyn.tasks.splits import frame_grid, times_for

    jitter = torch.tensor([[0.0, 0.8, 1.9, 2.6, 3.2, 4.0]])  # a time-lapse video's frames: median 0.8 s
    torch.testing.assert_close(frame_grid(jitter), torch.tensor([[0.0, 0.8, 1.6, 2.4, 3.2, 4.0]]))
    regular = torch.arange(6.0).unsqueeze(0) * 0.1
    torch.testing.assert_close(frame_grid(regular), regular)
    convlstm, vid_ode = build_model("convlstm_tiny"), build_model("vid_ode_tiny")
    assert torch.equal(times_for(vid_ode, jitter), jitter)  # continuous-time models get the real times
    with torch.no_grad():  # the grid passes the discrete model's check where the raw times fail
        convlstm(
            torch.rand(1, 3, 1, 16, 16),
            times_for(convlstm, jitter)[:, :3],
            times_for(convlstm, jitter)[:, 3:],
        )
        with pytest.raises(ValueError, match="discrete-time"):
            convlstm(torch.rand(1, 3, 1, 16, 16), jitter[:, :3], jitter[:, 3:])


def test_a_logged_host_tensor_moves_to_the_tasks_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, Lightning failed the second step of any task that logged a host tensor (the prediction
    task's truth fraction, the gan task's NFE): every logged tensor now reaches Lightning on the task's
    device. Here the task's device is `meta` (no GPU on CI), which a host tensor never is."""
    import lightning as L  # noqa: PLC0415

    task = build_task("prediction", {}, build_model("convlstm_tiny"), TaskRun(optim=OPTIM, total_steps=10))
    seen: dict[str, torch.Tensor | float] = {}
    monkeypatch.setattr(L.LightningModule, "log", lambda _s, key, value, *_a, **_k: seen.update({key: value}))
    task._device = torch.device("meta")
    task.log("train/truth_fraction", torch.tensor(0.5))
    task.log_dict({"train/nfe": torch.tensor(4.0)})
    task.log("train/kl_weight", 0.25)
    assert seen["train/truth_fraction"].device.type == "meta"
    assert seen["train/nfe"].device.type == "meta"
    assert seen["train/kl_weight"] == 0.25  # numbers pass as they are (Lightning puts them on the device)


def test_compiled_rollout_trains_the_same_function() -> None:
    """task.args.compile_rollout runs the model's rollout under torch.compile: the same predictions and
    gradients as eager, for the mixed truth/prediction steps of scheduled sampling."""
    model = build_model("convlstm_tiny")
    run = TaskRun(optim=OPTIM, total_steps=10)
    compiled = build_task("prediction", {"compile_rollout": "default"}, model, run)
    eager = build_task("prediction", {}, model, run)
    frames = torch.rand(2, 6, 1, *([model.image_size] * 2), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[False, True, False, True, False], [True, True, False, False, True]])
    results = []
    for task in (eager, compiled):
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", VidynWarning)  # compile's eager fallback warns: fail on it
            out, _ = task._rollout(frames, mask)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for got, want in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert compiled.__dict__["_compiled_rollout"][0] == id(model)
    twin = copy.deepcopy(compiled)  # a copy compiles its own model's rollout, not the original's
    twin.model.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    twin._rollout(frames, mask)[0].square().mean().backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in twin.model.parameters())


def test_compile_rollout_refuses_unknown_modes_and_models_without_a_rollout() -> None:
    run = TaskRun(optim=OPTIM, total_steps=10)
    with pytest.raises(VidynError, match="choose one of default, reduce-overhead"):
        build_task("prediction", {"compile_rollout": "fast"}, build_model("convlstm_tiny"), run)
    accumulating = TaskRun(optim=OPTIM, total_steps=10, accumulate_grad_batches=2)
    with pytest.raises(VidynError, match="cannot accumulate gradients"):
        build_task(
            "prediction", {"compile_rollout": "reduce-overhead"}, build_model("convlstm_tiny"), accumulating
        )
    build_task("prediction", {"compile_rollout": "default"}, build_model("convlstm_tiny"), accumulating)
    with pytest.raises(VidynError, match="compiles a recurrent rollout"):
        build_task(
            "prediction",
            {"compile_rollout": "default", "mode": "irregular"},
            build_model("vid_ode_tiny"),
            run,
        )
