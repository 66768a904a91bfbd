"""Vid-ODE through PredictionTask: its paper loss in every mode, the GAN path, NFE logging, splits."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import lightning as L
import pytest
import safetensors.torch
import torch
from torch.utils.data import DataLoader

from vidyn.data.datamodule import build_dataset
from vidyn.errors import VidynError
from vidyn.export import build_model, export_model
from vidyn.models.vid_ode_loss import bidirectional_warp_loss, pyramid_l1, vid_ode_reconstruction_loss
from vidyn.tasks import TaskRun
from vidyn.tasks.prediction import PredictionTask
from vidyn.tasks.splits import irregular_split, split_clip, split_indices

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
OPTIM = {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "min_lr_ratio": 0.1,
         "schedule": "cosine"}  # fmt: skip
STEPS = 12


def _data(irregular: bool, frames: int = 7, batch: int = 4) -> DataLoader:
    args = {"size": 16, "channels": 1, "num_frames": frames, "max_objects": 1, "irregular": irregular}
    ds = build_dataset("shapes", "train", {**args, "num_samples": batch})
    return DataLoader(ds, batch_size=batch)  # one batch: every step sees the same clips


def _task(mode: str, *, adversarial_weight: float = 0.0, clip: float | None = None) -> PredictionTask:
    torch.manual_seed(0)
    model = build_model("vid_ode_tiny", in_channels=1)
    num_future = 2 if mode == "interpolate" else 3
    run = TaskRun(optim=OPTIM, total_steps=STEPS, gradient_clip_val=clip)
    return PredictionTask(
        model,
        run,
        num_context=3,
        num_future=num_future,
        mode=mode,
        loss="model",
        adversarial_weight=adversarial_weight,
    )


def _fit(task: PredictionTask, loader: DataLoader, steps: int = STEPS) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        limit_val_batches=0,
        gradient_clip_val=task.gradient_clip_val if task.automatic_optimization else None,
    )
    trainer.fit(task, train_dataloaders=loader)
    return trainer


def _fixed_split_loss(task: PredictionTask, batch: dict) -> float:
    """The paper loss on the fixed (evaluation) split, in train mode as in training."""
    with torch.no_grad():
        s = task._split(batch, 0, train=False)
        parts = task.model.forward_components(s["context"], s["context_times"], s["target_times"])
        loss = vid_ode_reconstruction_loss(
            parts["frames"], s["target"], parts["start_frame"], parts["difference"], parts["chain_start"]
        )
    return float(loss)


@pytest.mark.parametrize("mode", ["extrapolate", "interpolate", "irregular"])
def test_vid_ode_trains_in_every_mode_and_logs_nfe(mode: str) -> None:
    loader = _data(irregular=mode == "irregular")
    batch = next(iter(loader))
    task = _task(mode)
    before = _fixed_split_loss(task, batch)
    trainer = _fit(task, loader)
    after = _fixed_split_loss(task, batch)
    assert after < 0.8 * before, (before, after)
    logged = trainer.logged_metrics
    # Hand count: the encoder takes one Euler step per gap between observations; the rk4 decoder takes 4
    # evaluations per step, stepping on the distinct target times from the first context time (none of
    # the targets is at it). Irregular clips are one solve each; NFE is reported per clip.
    ctx, _, tgt, _ = split_clip(batch["frames"], batch["times"], 3, task.num_future, mode)
    assert float(logged["train/nfe_encoder"]) == ctx.shape[1] - 1
    assert float(logged["train/nfe_decoder"]) == 4 * tgt.shape[1]
    expected = (ctx.shape[1] - 1 + 4 * tgt.shape[1]) / tgt.shape[1]
    assert float(logged["train/nfe_per_frame"]) == pytest.approx(expected)


def test_gan_path_steps_both_optimisers_and_exports_only_the_generator(tmp_path: Path) -> None:
    loader = _data(irregular=True)
    task = _task("irregular", adversarial_weight=0.5, clip=1.0)
    assert not task.automatic_optimization
    assert task.sequence_discriminator.num_frames == 6  # num_context + num_future frames in time order
    d_before = copy.deepcopy(task.image_discriminator.state_dict()) | {
        f"seq.{k}": v.clone() for k, v in task.sequence_discriminator.state_dict().items()
    }
    g_before = {k: v.clone() for k, v in task.model.state_dict().items()}
    clipped = []
    original = task.clip_gradients
    task.clip_gradients = lambda opt, **kw: (clipped.append(kw["gradient_clip_val"]), original(opt, **kw))[1]
    steps = 4
    trainer = _fit(task, loader, steps=steps)
    assert trainer.global_step == steps  # the discriminator's step is not counted as a trainer step
    opt_g, opt_d = (o.optimizer for o in task.optimizers())
    for opt in (opt_g, opt_d):
        assert all(int(opt.state[p]["step"]) == steps for g in opt.param_groups for p in g["params"])
    assert all(s.last_epoch == steps for s in task.lr_schedulers())  # stepped manually, once per batch
    assert clipped == [1.0] * (2 * steps)
    d_after = task.image_discriminator.state_dict() | {
        f"seq.{k}": v for k, v in task.sequence_discriminator.state_dict().items()
    }
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before)
    assert any(not torch.equal(g_before[k], v) for k, v in task.model.state_dict().items())
    logged = trainer.logged_metrics
    assert {"train/adv_d", "train/adv_g", "train/reconstruction", "train/nfe_per_frame"} <= set(logged)
    assert float(logged["train/loss"]) == pytest.approx(
        float(logged["train/reconstruction"]) + float(logged["train/adv_g"]), rel=1e-5
    )
    export_model(task.model, tmp_path)
    keys = set(safetensors.torch.load_file(str(tmp_path / "model.safetensors")))
    assert keys == set(task.model.state_dict()) and not any("discriminator" in k for k in keys)


def test_gan_sequences_match_the_official_arrangements() -> None:
    frames = torch.rand(2, 7, 1, 16, 16)
    times = torch.arange(7.0).expand(2, -1) / 10
    task = _task("extrapolate", adversarial_weight=0.003)
    s = task._split({"frames": frames, "times": times}, 0, train=False)
    seqs = task._sequences(s, s["target"])  # windows of 4 frames ending at each of the 3 targets
    assert seqs.shape == (6, 4, 1, 16, 16)
    torch.testing.assert_close(seqs[1], frames[0, 1:5])  # clip 0, window 1 = frames 1..4
    task = _task("interpolate", adversarial_weight=0.003)
    s = task._split({"frames": frames, "times": times}, 0, train=False)
    fake = torch.zeros_like(s["target"])
    seqs = task._sequences(s, fake)  # the 5-frame clip with one odd frame at a time replaced
    assert seqs.shape == (4, 5, 1, 16, 16)
    torch.testing.assert_close(seqs[1, 3], fake[0, 1])
    torch.testing.assert_close(seqs[1, 1], frames[0, 1])


def test_irregular_split_definition() -> None:
    seen_beyond = set()
    for seed in range(200):
        ctx, tgt = irregular_split(8, 4, torch.Generator().manual_seed(seed))
        assert ctx[0] == 0 and len(ctx) == 4 and len(tgt) == 4
        assert sorted(torch.cat([ctx, tgt]).tolist()) == list(range(8))
        assert bool((ctx.diff() > 0).all()) and bool((tgt.diff() > 0).all())
        seen_beyond.add(int((tgt > ctx[-1]).sum()))
    assert seen_beyond == set(range(5))  # 0 .. num_future extrapolation targets all occur
    fixed = [irregular_split(8, 4) for _ in range(2)]
    assert torch.equal(fixed[0][0], fixed[1][0])  # no generator: the fixed evaluation split
    assert irregular_split(5, 1)[0].tolist() == [0]
    with pytest.raises(VidynError, match="num_context"):
        split_indices(6, 4, 3, "irregular")


def test_modes_and_losses_are_checked() -> None:
    convlstm = build_model("convlstm_tiny", in_channels=1, image_size=16)
    run = TaskRun(optim=OPTIM, total_steps=1)
    for mode in ("interpolate", "irregular"):
        with pytest.raises(VidynError, match="continuous-time"):
            PredictionTask(convlstm, run, num_context=3, num_future=3, mode=mode)
    with pytest.raises(VidynError, match="no loss of its own"):
        PredictionTask(convlstm, run, num_context=3, num_future=3, loss="model")
    with pytest.raises(VidynError, match="unknown loss 'vid_ode'"):
        PredictionTask(convlstm, run, num_context=3, num_future=3, loss="vid_ode")
    with pytest.raises(VidynError, match="adversarial"):
        PredictionTask(convlstm, run, num_context=3, num_future=3, adversarial_weight=0.1)


def test_adversarial_training_refuses_gradient_accumulation(tmp_path: Path) -> None:
    from tiny_configs import tiny_prediction_config

    from vidyn import api

    cfg = tiny_prediction_config("vid_ode_tiny")
    cfg["task"] = {
        "name": "prediction",
        "args": {"num_context": 3, "num_future": 3, "loss": "model", "adversarial_weight": 0.003},
    }
    cfg["trainer"]["accumulate_grad_batches"] = 2
    with pytest.raises(VidynError, match="accumulate_grad_batches=1"):
        api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False)


def test_the_models_own_loss_is_the_papers_formula_plus_the_extra_terms() -> None:
    """Vid-ODE's paper loss, written out here from the paper: mean |x_hat - x| + mean |D_k - (x_k - x_{k-1})|
    with x_{k-1} the chain's previous frame (its start frame for the first target of a chain)."""
    torch.manual_seed(0)
    model = build_model("vid_ode_tiny", in_channels=1, interpolation="bidirectional")
    run = TaskRun(optim=OPTIM, total_steps=1)
    kwargs = {"num_context": 3, "num_future": 2, "mode": "interpolate", "loss": "model"}
    extra = {"warp_weight": 0.5, "pyramid_scales": [2, 4]}
    plain = PredictionTask(model, run, **kwargs)
    full = PredictionTask(model, run, **kwargs, loss_args=extra)
    for task in (plain, full):
        task.log = lambda *args, **kw: None  # no Trainer here to log to
    s = plain._split(next(iter(_data(irregular=False))), 0, train=False)
    with torch.no_grad():
        _, loss = plain._predict_and_loss(s, "train")
        _, loss_full = full._predict_and_loss(s, "train")
        parts = model.forward_components(s["context"], s["context_times"], s["target_times"])
    x, d = s["target"], parts["difference"]  # (B, K, C, H, W)
    start = parts["start_frame"]
    start = start.unsqueeze(1).expand_as(x) if start.dim() == 4 else start
    starts = parts["chain_start"].clone()
    starts[..., 0] = True  # the first target always follows its chain's start frame
    # the frame before each target: the chain's start frame, else the previous target
    previous = torch.where(starts.view(*starts.shape, 1, 1, 1), start, x.roll(1, dims=1))
    by_hand = (parts["frames"] - x).abs().mean() + (d - (x - previous)).abs().mean()
    torch.testing.assert_close(loss, by_hand)
    pooled = pyramid_l1(parts["frames"], x, [2, 4])
    warping = bidirectional_warp_loss(parts, x, [2, 4])
    assert float(pooled) > 0 and float(warping) > 0
    torch.testing.assert_close(loss_full, by_hand + pooled + 0.5 * warping)


def test_the_models_loss_arguments_are_checked_before_training() -> None:
    model = build_model("vid_ode_tiny", in_channels=1, interpolation="bidirectional")
    run = TaskRun(optim=OPTIM, total_steps=1)
    kwargs = {"num_context": 3, "num_future": 2, "mode": "interpolate", "loss": "model"}
    with pytest.raises(VidynError, match="interpolation=bidirectional"):
        chain = build_model("vid_ode_tiny", in_channels=1)
        PredictionTask(chain, run, **kwargs, loss_args={"warp_weight": 0.5})
    with pytest.raises(VidynError, match="integers >= 2"):
        PredictionTask(model, run, **kwargs, loss_args={"pyramid_scales": [1]})
    with pytest.raises(VidynError, match="unknown key.*warp_wieght; valid: warp_weight, pyramid_scales"):
        PredictionTask(model, run, **kwargs, loss_args={"warp_wieght": 1.0})
    with pytest.raises(VidynError, match="set task.args.loss=model"):
        PredictionTask(model, run, **{**kwargs, "loss": "l1"}, loss_args={"pyramid_scales": [2]})
