"""latent_sde's refit of sde_video's ex-post fits (z0 sampler, law reader) on the final networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from test_generation import CLASSES, OPTIM, generation_config

from vidyn import api
from vidyn.errors import VidynError
from vidyn.export import build_model
from vidyn.tasks.base import TaskRun
from vidyn.tasks.latent_sde import LatentSdeTask
from vidyn.tasks.z0_refit import refit_z0


def _batches(n: int, seed: int = 0):
    """`n` batches of 4 random 5-frame 16x16 clips with labels of 3 classes, for a tiny model."""
    gen = torch.Generator().manual_seed(seed)
    times = (torch.arange(5) * 0.1).expand(4, 5)
    for _ in range(n):
        yield torch.rand(4, 5, 1, 16, 16, generator=gen), times, torch.randint(0, 3, (4,), generator=gen)


def _fit_losses(model) -> torch.Tensor:
    """The (IMLE sampler, law reader) losses on the first 16 clips of `_batches`, encoded as the refit
    encodes them (the reader's: on posterior draws)."""
    model.eval()
    gen = torch.Generator().manual_seed(5)
    out = []
    with torch.no_grad():
        for frames, times, labels in _batches(4):
            cond, mean, std = model.z0_fit_targets(
                frames, times[0], num_context=1, labels=labels, drop_condition=0.0, generator=gen
            )
            z0 = mean + std * torch.randn(mean.shape, generator=gen)
            out.append(torch.stack(model._fit_z0(cond, mean, std, z0, labels, gen)))
    return torch.stack(out).mean(0)


def test_refit_trains_the_ex_post_fits_alone_on_the_frozen_encoders() -> None:
    """Only the sampler and the reader change, their loss on the pooled clips falls, the encoders are read
    in evaluation mode (BatchNorm's running statistics stay), and the model's mode is restored."""
    torch.manual_seed(0)
    model = build_model("sde_video_tiny", num_classes=3, z0_sampler="imle_prompted", z0_select=4).train()
    aside = {id(p) for p in model.ex_post_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses_before = _fit_losses(model)
    model.train()
    done = refit_z0(model, _batches(10), clips=16, steps=60, batch_size=8, lr=3e-3, num_context=1,
                    drop_condition=0.0)  # fmt: skip
    assert model.training
    names = {id(p): n for n, p in model.named_parameters()}
    for key, value in model.state_dict().items():
        fitted = any(names.get(i) == key for i in aside)
        assert torch.equal(value, before[key]) != fitted, key
    imle, reader = _fit_losses(model)
    assert imle < 0.1 * losses_before[0] and reader < losses_before[1]
    assert done["clips"] == 16 and done["steps"] == 60 and done["loss_last"] < done["loss_first"]


def test_refit_needs_ex_post_fits_and_enough_clips() -> None:
    run = TaskRun(optim=OPTIM, total_steps=10, class_names=CLASSES)
    with pytest.raises(VidynError, match="this model has neither"):
        LatentSdeTask(build_model("sde_video_tiny", num_classes=7), run, refit_steps=10)
    with pytest.raises(VidynError, match="refit_batch_size >= 1"):
        LatentSdeTask(build_model("sde_video_tiny", num_classes=7, z0_select=2), run, refit_batch_size=0)
    model = build_model("sde_video_tiny", num_classes=3, z0_sampler="imle_prompted")
    with pytest.raises(VidynError, match="refit_clips=64, but the training data gave only 8 clips"):
        refit_z0(model, _batches(2), clips=64, steps=1, batch_size=4, lr=1e-3, num_context=1,
                 drop_condition=0.0)  # fmt: skip


def test_train_refits_the_exported_weights_and_records_it(tmp_path: Path) -> None:
    """`vidyn train` refits on the best checkpoint's weights: the export equals that checkpoint except for
    the sampler and reader, and model.json records the refit."""
    args = {"num_context": 1, "kl_anneal_steps": 5, "refit_steps": 5, "refit_clips": 8, "refit_batch_size": 4}
    cfg = generation_config("sde_video_tiny", "latent_sde", args, frames=6, num_classes=7,
                            z0_sampler="imle_prompted", z0_select=2)  # fmt: skip
    cfg["trainer"]["monitor"] = "val/loss"
    lines: list[str] = []
    api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False, echo=lines.append)
    exported = safetensors.torch.load_file(tmp_path / "run" / "model.safetensors")
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    best = {k.removeprefix("model."): v for k, v in best.items() if k.startswith("model.")}
    assert set(exported) == set(best)
    for key, value in exported.items():
        fitted = key.startswith(("z0_imle.", "z0_reader."))
        assert torch.equal(value, best[key]) != fitted, key
    assert any(not torch.equal(exported[k], best[k]) for k in exported if k.startswith("z0_imle."))
    record = json.loads((tmp_path / "run" / "model.json").read_text())["z0_refit"]
    assert record["steps"] == 5 and record["clips"] == 8
    assert any("refitted the z0 sampler and law reader" in line for line in lines)


def test_refit_stops_at_its_time_budget() -> None:
    """`max_time` counts the pool's encoding: a budget it alone exceeds leaves no time for a step."""
    torch.manual_seed(0)
    model = build_model("sde_video_tiny", num_classes=3, z0_sampler="imle_prompted")
    before = [p.clone() for p in model.ex_post_parameters()]
    done = refit_z0(model, _batches(4), clips=16, steps=50, batch_size=8, lr=1e-3, num_context=1,
                    drop_condition=0.0, max_time=1e-6)  # fmt: skip
    assert done["steps"] == 0 and done["loss_last"] is None
    assert all(torch.equal(a, b) for a, b in zip(before, model.ex_post_parameters(), strict=True))
    with pytest.raises(VidynError, match="refit_max_time > 0"):
        refit_z0(model, _batches(4), clips=16, steps=5, batch_size=8, lr=1e-3, num_context=1,
                 drop_condition=0.0, max_time=0)  # fmt: skip
