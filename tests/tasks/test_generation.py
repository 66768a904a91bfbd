"""Generation tasks: `gan` (manual D/G steps, EMA export, frame strides) and `latent_sde` (KL annealing)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import safetensors.torch
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from vidyn import api
from vidyn.data.datamodule import build_dataset
from vidyn.errors import VidynError
from vidyn.export import build_model
from vidyn.models.motion_classifier import MotionClassifier
from vidyn.models.video_discriminators import (
    FrameDiscriminator,
    VideoDiscriminator,
    clip_input,
    minibatch_std,
)
from vidyn.tasks import TaskRun
from vidyn.tasks.gan_monitoring import DiscriminatorWatch, sample_grid
from vidyn.tasks.generation import GanTask
from vidyn.tasks.latent_sde import LatentSdeTask, kl_path_weight_at, kl_weight_at
from vidyn.tasks.prompt_consistency import class_consistency

OPTIM = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.5, 0.999], "min_lr_ratio": 1.0,
         "schedule": "constant"}  # fmt: skip
CLASSES = ("bounce", "orbit", "pendulum", "spring", "spin", "pulse", "gravity")


def generation_config(model: str, task: str, task_args: dict, *, frames: int = 8, **model_args) -> dict:
    """A tiny generation run (16x16 grayscale shapes, 3 steps) with the best checkpoint = the last."""
    return {
        "name": "tiny-gen",
        "model": {"name": model, "args": {"in_channels": 1, "image_size": 16, **model_args}},
        "data": {
            "name": "shapes",
            "args": {
                "size": 16,
                "channels": 1,
                "num_frames": frames,
                "frame_interval": 0.1,
                "max_objects": 1,
            },
            "splits": {"train": {"num_samples": 8}, "val": {"num_samples": 4}, "test": {"num_samples": 8}},
            "batch_size": 4,
        },
        "task": {"name": task, "args": task_args},
        "optim": {"optimizer": "adam", "lr": 1e-3, "betas": [0.5, 0.999], "schedule": "constant"},
        "trainer": {
            "max_steps": 3,
            "val_check_interval": 3,
            "log_every_n_steps": 1,
            "progress_bar": False,
            "monitor": "step",
            "num_threads": 1,
        },  # fmt: skip
        "eval": {"max_clips": 4},
    }


def _loader(frames: int = 8, n: int = 4) -> DataLoader:
    args = {"size": 16, "channels": 1, "num_frames": frames, "max_objects": 1, "num_samples": n}
    return DataLoader(build_dataset("shapes", "train", args), batch_size=n)


def _fit(task: L.LightningModule, steps: int) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0)  # fmt: skip
    trainer.fit(task, train_dataloaders=_loader())
    return trainer


def _gan(**kw) -> GanTask:
    torch.manual_seed(0)
    model = build_model("ode_gan_tiny", in_channels=1, num_classes=7)
    run = TaskRun(optim=OPTIM, total_steps=10, gradient_clip_val=1.0, class_names=CLASSES)
    return GanTask(model, run, **{"num_frames": 4, "sample_every_n_steps": 0, "d_base_channels": 8, **kw})


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_gan_steps_both_optimisers_and_counts_batches() -> None:
    task = _gan(frame_intervals=[1, 2], r1_gamma=1.0, instance_noise=0.1)
    g0, d0, f0 = _params(task.model), _params(task.video_discriminator), _params(task.frame_discriminator)
    trainer = _fit(task, steps=3)
    assert trainer.global_step == 3  # the discriminator's steps are not Lightning steps
    assert _changed(g0, task.model) and _changed(d0, task.video_discriminator)
    assert _changed(f0, task.frame_discriminator)
    logged = trainer.callback_metrics
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "nfe", "r1"):
        assert torch.isfinite(logged[f"train/{key}"]), key
    assert 0 < float(logged["train/d_real"]) < 1 and float(logged["train/nfe"]) > 0


def test_frame_discriminator_judges_d_frames_per_clip_frames_of_each_clip() -> None:
    task = _gan(d_frames_per_clip=3)
    seen: list[tuple[int, ...]] = []
    task.frame_discriminator.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    labels, times = torch.tensor([0, 3, -1, 5]), torch.arange(4) * 0.1
    clips = torch.rand(4, 4, 1, 16, 16)
    scores, _ = task._d_scores(clips, times, labels)
    assert seen == [(12, 1, 16, 16)] and scores[1].shape == (12,)  # 3 frames of each of the 4 clips
    assert _gan()._d_scores(clips, times, labels)[0][1].shape == (4,)  # MoCoGAN's default: one per clip
    with pytest.raises(VidynError, match="d_frames_per_clip must be in 1..num_frames"):
        _gan(d_frames_per_clip=5)


def test_flow_smoothness_penalises_the_generators_flow_roughness() -> None:
    """With warped frames ode_gan reports its flow roughness (mean |difference| of neighbouring pixels'
    flows); flow_smoothness adds it to the generator's loss, so training makes the flow smoother than
    the same run without it, and the module holds no graph tensor after a step (deep copies work)."""
    import copy

    model = build_model("ode_gan_tiny", in_channels=1, num_classes=7, warp_frames=True)
    times = torch.arange(4) * 0.1
    model(model.noise(2), times)
    rough = model.flow_roughness
    assert rough.dim() == 0 and rough > 0 and rough.requires_grad

    def roughness_after(weight: float) -> float:
        torch.manual_seed(0)
        model = build_model("ode_gan_tiny", in_channels=1, num_classes=7, warp_frames=True)
        run = TaskRun(optim=OPTIM, total_steps=10, gradient_clip_val=1.0, class_names=CLASSES)
        task = GanTask(model, run, num_frames=4, sample_every_n_steps=0, d_base_channels=8,
                       flow_smoothness=weight)  # fmt: skip
        trainer = _fit(task, steps=8)
        assert model.flow_roughness is None and copy.deepcopy(model) is not None
        assert torch.isfinite(trainer.callback_metrics["train/flow_roughness"])
        with torch.no_grad():
            model(model.noise(8, torch.Generator().manual_seed(1)), times)
        return float(model.flow_roughness)

    assert roughness_after(10.0) < 0.8 * roughness_after(0.0)  # 0.26 against 0.40 when written
    with pytest.raises(VidynError, match="flow_smoothness must be >= 0, and > 0 only for warped frames"):
        _gan(flow_smoothness=1.0)  # ode_gan_tiny without warp_frames


def test_lazy_r1_runs_every_k_steps_with_k_times_gamma(monkeypatch: pytest.MonkeyPatch) -> None:
    import vidyn.tasks.generation as generation

    calls: list[tuple[int, float]] = []
    penalty = generation.r1_penalty

    def spy(logits: torch.Tensor, inputs: torch.Tensor, *, gamma: float) -> torch.Tensor:
        calls.append((task.global_step, gamma))
        return penalty(logits, inputs, gamma=gamma)

    monkeypatch.setattr(generation, "r1_penalty", spy)
    task = _gan(r1_gamma=0.5, r1_every=2)
    _fit(task, steps=5)
    # steps 0, 2, 4 only; once per discriminator (video, frame); the penalty scaled by k = 2
    assert calls == [(s, 1.0) for s in (0, 0, 2, 2, 4, 4)]
    with pytest.raises(VidynError, match="r1_every must be an int >= 1"):
        _gan(r1_gamma=1.0, r1_every=0)


def test_gan_sub_samples_frames_at_the_configured_strides() -> None:
    task = _gan(frame_intervals=[1, 3])
    batch = next(iter(_loader(frames=10)))
    gaps = set()
    for step in range(20):
        clips, times = task.clip_of(batch, step)
        assert clips.shape == (4, 4, 1, 16, 16) and torch.all(times[:, 0] == 0)
        gaps.add(round(float(times[0, 1]), 3))
    assert gaps == {0.1, 0.3}
    with pytest.raises(VidynError, match="data.args.num_frames=10"):
        task.clip_of(next(iter(_loader(frames=6))), 0)


def test_gan_exports_the_ema_generator() -> None:
    task = _gan(ema_decay=0.5)
    _fit(task, steps=2)
    raw = {k: v.clone() for k, v in task.model.state_dict().items()}
    assert task.export_extra() == {"class_names": list(CLASSES)}
    ema = task.ema.module.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in task.model.state_dict().items())
    assert any(not torch.equal(v, raw[k]) for k, v in ema.items())


def test_gan_refuses_models_it_cannot_train() -> None:
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    with pytest.raises(VidynError, match="latent_sde"):
        GanTask(build_model("sde_video_tiny"), run)
    with pytest.raises(VidynError, match="num_classes=7"):
        GanTask(build_model("ode_gan_tiny", num_classes=3), run)


def test_aux_class_weight_adds_ac_gan_terms_that_reach_the_generator(tmp_path: Path) -> None:
    """With aux_class_weight the video discriminator has a class head: its cross-entropy against the asked
    labels (null rows ignored) is differentiable in the generator, whose class embedding it reaches."""
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    model = build_model("ode_gan_tiny", in_channels=1, num_classes=7)
    task = GanTask(model, run, num_frames=4, aux_class_weight=1.0, d_base_channels=8)
    labels, times = torch.tensor([0, 3, -1]), torch.arange(4) * 0.1
    fake = model(model.noise(3), times, labels)
    scores, ce = task._d_scores(fake, times, labels, labels)
    assert len(scores) == 2 and ce is not None and torch.isfinite(ce)
    ce.backward()
    assert model.class_embedding.weight.grad[[0, 3]].abs().sum() > 0
    assert model.class_embedding.weight.grad[[1, 2, 4, 5, 6]].abs().sum() == 0  # only the asked labels
    assert task._d_scores(fake.detach(), times, labels)[1] is None  # no target: no class term
    nulls = torch.full((3,), -1)
    assert task._d_scores(fake.detach(), times, nulls, nulls)[1] == 0  # only null labels: 0, not NaN
    task_args = {"num_frames": 4, "aux_class_weight": 0.5, "d_base_channels": 8, "d_frame_differences": True}
    cfg = generation_config("ode_gan_tiny", "gan", task_args, num_classes=7, warp_frames=True)
    result = api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False)
    assert result.steps == 3
    (events,) = (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")
    logged = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"train/class_ce_real", "train/class_ce_fake"} <= set(logged)
    plain = GanTask(build_model("ode_gan_tiny", in_channels=1, num_classes=7), run, num_frames=4)
    assert plain.video_discriminator.classifier is None
    with pytest.raises(VidynError, match="aux_class_weight"):
        GanTask(build_model("ode_gan_tiny"), TaskRun(optim=OPTIM, total_steps=10), aux_class_weight=1.0)


@pytest.mark.parametrize("reader", ["gru", "mlp", "trajectory"])
def test_separate_aux_classifier_is_trained_by_its_own_optimiser(reader: str) -> None:
    """aux_classifier=separate: no class head on the video discriminator; a MotionClassifier (either
    reader) reads the class, has its own optimiser at its own learning rate, is trained on real clips and
    gives the generator its class term."""
    task = _gan(
        aux_class_weight=1.0, aux_classifier="separate", aux_classifier_lr=0.01,
        aux_classifier_args={"reader": reader},
    )  # fmt: skip
    assert task.video_discriminator.classifier is None and task.classifier.reader_name == reader
    labels, times = torch.tensor([0, 3, -1, 5]), torch.arange(4) * 0.1
    fake = task.model(task.model.noise(4), times, labels)
    _, ce = task._d_scores(fake, times, labels, labels)
    ce.backward()
    assert task.model.class_embedding.weight.grad[[0, 3, 5]].abs().sum() > 0
    c0 = _params(task.classifier)
    trainer = _fit(task, steps=2)
    assert _changed(c0, task.classifier)
    opt_g, opt_d, opt_c = trainer.optimizers  # the classifier's own, not clipped with the discriminators
    assert {id(p) for g in opt_c.param_groups for p in g["params"]} == {
        id(p) for p in task.classifier.parameters()
    }
    assert [g["lr"] for g in opt_c.param_groups] == [0.01] and opt_d.param_groups[0]["lr"] == OPTIM["lr"]
    assert torch.isfinite(trainer.callback_metrics["train/class_ce_real"])
    with pytest.raises(VidynError, match="aux_classifier must be discriminator or separate"):
        _gan(aux_class_weight=1.0, aux_classifier="judge")
    with pytest.raises(VidynError, match="task.args.aux_classifier_args: unknown key"):
        _gan(aux_class_weight=1.0, aux_classifier="separate", aux_classifier_args={"layers": 2})


def test_adc_fake_classes_teach_the_classifier_what_generated_clips_of_each_class_are() -> None:
    """aux_fake_classes (ADC-GAN): the separate classifier has 2K classes; in the discriminators' step a
    generated clip asked for y is a K + y example (null labels ignored), so the classifier learns to tell a
    generated clip of a class from a real one of the same class, which plain AC-GAN cannot."""
    task = _gan(aux_class_weight=1.0, aux_classifier="separate", aux_fake_classes=True)
    assert task.classifier.reader.out.out_features == 14
    labels = torch.tensor([0, 3, -1, 5])
    assert task._fake_class_target(labels).tolist() == [7, 10, -1, 12]
    batch = next(iter(_loader()))
    real, times = batch["frames"][:, :4], batch["times"][:, :4] - batch["times"][:, :1]
    labels = batch["label"].long()
    with torch.no_grad():
        fake = task.model(task.model.noise(4), times, labels)  # untrained blobs, asked for the real labels
    opt = torch.optim.Adam(task.classifier.parameters(), lr=3e-3)
    for _ in range(60):  # the class terms of the discriminators' step, on a fixed batch
        _, ce_real = task._d_scores(real, times, labels, labels)
        _, ce_fake = task._d_scores(fake, times, labels, task._fake_class_target(labels))
        opt.zero_grad()
        (ce_real + ce_fake).backward()
        opt.step()
    with torch.no_grad():
        assert task.classifier(real, times).argmax(1).tolist() == labels.tolist()
        assert task.classifier(fake, times).argmax(1).tolist() == (labels + 7).tolist()
    trainer = _fit(_gan(aux_class_weight=1.0, aux_classifier="separate", aux_fake_classes=True), steps=2)
    assert torch.isfinite(trainer.callback_metrics["train/class_ce_fake_as_fake"])
    assert (
        "train/class_ce_fake_as_fake"
        not in _fit(_gan(aux_class_weight=1.0, aux_classifier="separate"), 1).callback_metrics
    )
    with pytest.raises(VidynError, match="aux_fake_classes needs aux_classifier: separate"):
        _gan(aux_class_weight=1.0, aux_fake_classes=True)


def test_sample_grid_lays_clips_out_in_rows() -> None:
    clips = torch.arange(2 * 3, dtype=torch.float32).view(2, 3, 1, 1, 1) / 10  # (B, T, C, H, W)
    grid = sample_grid(clips)
    assert grid.shape == (1, 2, 3) and torch.allclose(grid[0], torch.tensor([[0, 0.1, 0.2], [0.3, 0.4, 0.5]]))


def test_gan_trains_through_api_and_exports_only_the_generator(tmp_path: Path) -> None:
    cfg = generation_config("ode_gan_tiny", "gan", {"num_frames": 4, "frame_intervals": [1, 2],
                            "ema_decay": 0.9, "d_base_channels": 8}, num_classes=7)  # fmt: skip
    cfg["trainer"]["monitor"] = "val/nearest_real_ssim"  # a progress score picks the exported generator
    result = api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False)
    assert result.steps == 3
    keys = set(safetensors.torch.load_file(tmp_path / "run" / "model.safetensors"))
    assert keys == set(build_model("ode_gan_tiny", in_channels=1, num_classes=7).state_dict())
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["family"] == "generator" and meta["class_names"] == list(CLASSES)
    # quality through training: one row per validation round (one here, at step 3) and its plot
    progress = json.loads((tmp_path / "run" / "metrics_by_step.json").read_text())
    (row,) = progress["rows"]
    assert row["step"] == 3 and row["num_clips"] == progress["num_clips"] == 4
    assert 0 <= row["frame_change"] <= 1 and 0 <= row["nearest_real_ssim"] <= 1
    assert row["fd_judge"] is None and row["motion_law_accuracy"] is None  # 4 frames at 16 px: unjudgeable
    assert (tmp_path / "run" / "metrics_by_step.png").stat().st_size > 1000
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    monitor = next(v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert monitor["monitor"] == "val/nearest_real_ssim"
    assert float(monitor["best_model_score"]) == pytest.approx(row["nearest_real_ssim"], abs=1e-6)


def test_lower_is_better_metrics_are_monitored_for_their_minimum() -> None:
    from vidyn.tasks.engine import monitor_mode

    for name in ("val/loss", "val/fd_judge", "val/fvd", "val/mse", "val/lpips"):
        assert monitor_mode(name) == "min", name
    for name in ("val/ssim", "val/psnr", "val/motion_law_accuracy", "val/top1", "step"):
        assert monitor_mode(name) == "max", name


def test_discriminator_collapse_is_reported_once_after_its_patience() -> None:
    watch = DiscriminatorWatch(patience=3)
    healthy = [watch.update(s, 0.7, 0.3) for s in range(5)]
    streak = [watch.update(5 + s, 0.9, 0.001) for s in range(2)]  # two collapsed steps, then a recovery
    recovered = watch.update(7, 0.6, 0.4)
    reports = [watch.update(8 + s, 0.9, 0.001) for s in range(5)]
    assert healthy == [None] * 5 and streak == [None, None] and recovered is None
    assert reports[:2] == [None, None] and reports[3:] == [None, None]  # once, at the third collapsed step
    assert reports[2] is not None and reports[2].startswith("discriminator collapse at step 10")
    assert "r1_gamma" in reports[2] and "\n" not in reports[2]


def test_kl_weight_is_annealed_linearly() -> None:
    assert [kl_weight_at(s, anneal_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight_at(0, anneal_steps=0, kl_max=0.5) == 0.5
    assert kl_weight_at(1, anneal_steps=4, kl_max=2.0) == 1.0


def test_latent_sde_trains_with_annealed_kl_and_logs_its_terms() -> None:
    torch.manual_seed(0)
    run = TaskRun(optim=OPTIM, total_steps=10)
    task = LatentSdeTask(build_model("sde_video_tiny"), run, num_context=2, kl_anneal_steps=10)
    trainer = _fit(task, steps=3)
    logged = trainer.callback_metrics
    assert float(logged["train/kl_weight"]) == pytest.approx(0.3)  # logged at step 2: (2 + 1) / 10
    for key in ("nll", "kl_z0", "kl_path", "consistency", "diffusion", "nfe_drift"):
        assert torch.isfinite(logged[f"train/{key}"]), key
    assert float(logged["train/diffusion"]) > 0
    with pytest.raises(VidynError, match="task.name=gan"):
        LatentSdeTask(build_model("ode_gan_tiny"), run)


PATH_KL_MODES = {  # task arguments -> the path KL's weights at steps 0-2 (None: it shares beta)
    "annealed": ({}, [None, None, None]),
    "full": ({"kl_path_anneal": False}, [3.0, 3.0, 3.0]),
    "early": ({"kl_path_early": 10.0, "kl_path_early_steps": [1, 2]}, [10.0, 6.5, 3.0]),
}


@pytest.mark.parametrize("mode", list(PATH_KL_MODES))
def test_the_path_kl_weight_follows_kl_path_anneal_and_kl_path_early(mode: str) -> None:
    torch.manual_seed(0)
    run = TaskRun(optim=OPTIM, total_steps=10)
    model = build_model("sde_video_tiny")
    kwargs, paths = PATH_KL_MODES[mode]
    task = LatentSdeTask(model, run, num_context=2, kl_anneal_steps=10, kl_max=3.0, **kwargs)
    seen, elbo = [], model.elbo
    model.elbo = lambda *a, **kw: seen.append((kw["kl_weight"], kw["kl_path_weight"])) or elbo(*a, **kw)
    logged = _fit(task, steps=3).callback_metrics
    betas = [pytest.approx(0.3), pytest.approx(0.6), pytest.approx(0.9)]  # 3 * (step + 1) / 10
    assert seen == list(zip(betas, paths, strict=True))
    assert float(logged["train/kl_path_weight"]) == pytest.approx(paths[-1] or 0.9)


def test_kl_path_early_holds_then_releases_linearly_and_rejects_bad_arguments() -> None:
    weights = [kl_path_weight_at(s, early=10.0, kl_max=3.0, hold=2, release=4) for s in range(8)]
    assert weights == pytest.approx([10.0, 10.0, 8.25, 6.5, 4.75, 3.0, 3.0, 3.0])
    assert kl_path_weight_at(5, early=10.0, kl_max=3.0, hold=5, release=0) == 3.0
    run, model = TaskRun(optim=OPTIM, total_steps=10), build_model("sde_video_tiny")
    bad_args = [{"kl_path_early": -1.0}, {"kl_path_early_steps": [400]}, {"kl_path_early_steps": [400, -1]}]
    for bad in bad_args:
        with pytest.raises(VidynError, match="kl_path_early_steps"):
            LatentSdeTask(model, run, **bad)


def test_class_consistency_teaches_the_classifier_on_real_clips_and_charges_only_the_generator() -> None:
    torch.manual_seed(0)
    model = build_model("sde_video_tiny", num_classes=7)
    classifier = MotionClassifier(
        in_channels=1, image_size=16, num_classes=7, base_channels=4, max_channels=8
    )
    batch = next(iter(_loader(frames=6)))
    frames, times, labels = batch["frames"], batch["times"], batch["label"].clone()
    real, prior, fake = class_consistency(model, classifier, frames, times, labels, num_context=1)
    assert float(fake) == 0.0  # no fake class asked
    prior.backward(retain_graph=True)  # the prior-sample term: the generator's prior, not the classifier
    assert all(p.grad is None for p in classifier.parameters())
    assert (
        model.to_prior_z0[0].weight.grad.abs().sum() > 0 and model.label_embedding.weight.grad.abs().sum() > 0
    )
    model.zero_grad(set_to_none=True)
    real.backward()  # the real-clip term: the classifier only
    assert all(p.grad is None for p in model.parameters())
    assert sum(float(p.grad.abs().sum()) for p in classifier.parameters()) > 0
    labels[1:] = -1  # clips without a label are left out of both terms
    only_first = class_consistency(model, classifier, frames, times, labels, num_context=1)[0]
    expected = torch.nn.functional.cross_entropy(classifier(frames[:1], times[:1]), labels[:1])
    torch.testing.assert_close(only_first, expected)
    none = class_consistency(model, classifier, frames, times, torch.full_like(labels, -1), num_context=1)
    assert [float(v) for v in none] == [0.0, 0.0, 0.0]


def test_a_fake_class_teaches_the_classifier_the_samples_and_charges_the_generator_nothing_for_it() -> None:
    """class_fake: the classifier (one output more) learns the prompted samples as the extra class; that
    term reaches the classifier only, and the generator's term still asks for the prompted law."""
    torch.manual_seed(0)
    model = build_model("sde_video_tiny", num_classes=7)
    classifier = MotionClassifier(
        in_channels=1, image_size=16, num_classes=8, base_channels=4, max_channels=8
    )
    batch = next(iter(_loader(frames=6)))
    frames, times, labels = batch["frames"], batch["times"], batch["label"]
    torch.manual_seed(1)
    terms = class_consistency(model, classifier, frames, times, labels, num_context=1, fake_class=7)
    torch.manual_seed(1)
    plain = class_consistency(model, classifier, frames, times, labels, num_context=1)
    torch.testing.assert_close(terms.prior, plain.prior)  # the same samples, the same generator term
    assert float(terms.fake) > 0
    terms.fake.backward()
    assert all(p.grad is None for p in model.parameters())  # the samples are detached for it
    assert sum(float(p.grad.abs().sum()) for p in classifier.parameters()) > 0
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    task = LatentSdeTask(model, run, class_weight=1.0, class_fake=True)
    assert task.classifier(frames, times).shape == (frames.shape[0], 8)  # the 7 laws + generated
    with pytest.raises(VidynError, match="class_fake trains the class term's classifier"):
        LatentSdeTask(model, run, class_fake=True)


@pytest.mark.parametrize(
    "classifier_args", [None, {"reader": "mlp"}, {"reader": "trajectory", "keypoints": 0}]
)
def test_latent_sde_class_weight_trains_and_logs_the_class_terms(classifier_args: dict | None) -> None:
    torch.manual_seed(0)
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    model = build_model("sde_video_tiny", num_classes=7)
    task = LatentSdeTask(model, run, num_context=1, class_weight=10.0, classifier_args=classifier_args)
    assert task.classifier.reader_name == (classifier_args or {"reader": "gru"})["reader"]
    before = _params(task.classifier)
    logged = _fit(task, steps=2).callback_metrics
    assert torch.isfinite(logged["train/class_real"]) and torch.isfinite(logged["train/class_prior"])
    assert _changed(before, task.classifier)  # in the task's optimiser
    with pytest.raises(VidynError, match="class_weight"):
        LatentSdeTask(build_model("sde_video_tiny"), TaskRun(optim=OPTIM, total_steps=10), class_weight=1.0)
    with pytest.raises(VidynError, match="task.args.classifier_args: unknown key"):
        LatentSdeTask(model, run, class_weight=1.0, classifier_args={"readr": "gru"})


def test_latent_sde_class_start_step_holds_the_prior_term_back() -> None:
    """Before class_start_step the classifier learns on real clips and the generator is not charged: no
    prior sample is drawn for the term (its sampling would move the generator's RNG and parameters)."""
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    task = LatentSdeTask(
        build_model("sde_video_tiny", num_classes=7), run, class_weight=10.0, class_start_step=5
    )
    calls = []
    original = task.model.sample
    task.model.sample = lambda *a, **k: calls.append(1) or original(*a, **k)
    before = _params(task.classifier)
    logged = _fit(task, steps=2).callback_metrics
    assert calls == [] and "train/class_prior" not in logged and torch.isfinite(logged["train/class_real"])
    assert _changed(before, task.classifier)
    with pytest.raises(VidynError, match="class_start_step must be >= 0"):
        LatentSdeTask(
            build_model("sde_video_tiny", num_classes=7), run, class_weight=1.0, class_start_step=-1
        )


def test_latent_sde_classifier_has_its_own_lr_and_is_not_clipped_with_the_generator() -> None:
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    model = build_model("sde_video_tiny", num_classes=7)
    task = LatentSdeTask(model, run, class_weight=1.0, classifier_lr=3e-3)
    groups = task.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [1e-3, 3e-3]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in task.classifier.parameters()}
    for p in task.parameters():
        p.grad = torch.full_like(p, 100.0)
    task.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert norm == pytest.approx(1.0, rel=1e-3)  # the generator: clipped to 1
    assert all(
        bool((p.grad == 100.0).all()) for p in task.classifier.parameters()
    )  # the classifier: as it was


def test_latent_sde_leaves_the_models_ex_post_fits_out_of_the_elbos_clipping() -> None:
    """The z0 sampler and the law reader are fitted beside the ELBO: their gradients are neither clipped
    with the ELBO's networks nor counted in their norm."""
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    model = build_model("sde_video_tiny", num_classes=7, z0_sampler="imle", z0_select=4)
    task = LatentSdeTask(model, run)
    for p in task.parameters():
        p.grad = torch.full_like(p, 100.0)
    task.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    aside = {id(p) for p in model.ex_post_parameters()}
    fits = [*model.z0_reader.parameters(), *model.z0_imle.parameters()]
    assert aside == {id(p) for p in fits}
    norm = torch.cat([p.grad.flatten() for p in model.parameters() if id(p) not in aside]).norm()
    assert norm == pytest.approx(1.0, rel=1e-3)
    assert all(bool((p.grad == 100.0).all()) for p in model.ex_post_parameters())


def test_latent_sde_trains_through_api(tmp_path: Path) -> None:
    cfg = generation_config("sde_video_tiny", "latent_sde", {"num_context": 2, "kl_anneal_steps": 5},
                            frames=6, num_classes=7)  # fmt: skip
    cfg["trainer"]["monitor"] = "val/loss"
    result = api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False)
    assert result.steps == 3
    keys = set(safetensors.torch.load_file(tmp_path / "run" / "model.safetensors"))
    assert keys == set(build_model("sde_video_tiny", num_classes=7).state_dict())
    assert json.loads((tmp_path / "run" / "model.json").read_text())["class_names"] == list(CLASSES)


def test_minibatch_std_tells_a_batch_of_identical_samples_from_a_varied_one() -> None:
    """With minibatch_std both discriminators append the features' spread over the batch: it is 0 for a
    batch of copies of one sample and > 0 for a varied batch, so their scores of the same clip differ."""
    g = torch.Generator().manual_seed(0)
    clips, times = torch.rand(4, 4, 1, 16, 16, generator=g), torch.arange(4) * 0.1
    video = VideoDiscriminator(in_channels=1, image_size=16, base_channels=8, minibatch_std=True)
    frame = FrameDiscriminator(in_channels=1, image_size=16, base_channels=8, minibatch_std=True)
    assert video.head.linear.in_features == 17 and frame.head.linear.in_features == 17  # 16 + the spread
    copies = clips[:1].expand(4, -1, -1, -1, -1)
    phi = video.net(clip_input(copies, times, video.time_unit, frame_differences=False)).mean(dim=(2, 3, 4))
    varied = phi * torch.arange(4.0)[:, None]
    assert float(minibatch_std(phi)[:, -1].max()) < 1e-3 < float(minibatch_std(varied)[0, -1])
    with torch.no_grad():
        assert not torch.allclose(video(copies, times)[0], video(clips, times)[0])
        assert not torch.allclose(frame(copies[:, 0])[0], frame(clips[:, 0])[0])
    plain = VideoDiscriminator(in_channels=1, image_size=16, base_channels=8)
    assert plain.head.linear.in_features == 16  # off by default
