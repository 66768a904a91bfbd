"""Refit a latent-SDE generator's ex-post fits on its final, frozen networks (`latent_sde`'s
`refit_steps`).

`sde_video`'s IMLE sampler of z0 and its law reader (`vidyn.models.sde_video_z0`) are fitted beside the
ELBO on detached inputs. There they chase a posterior q(z0 | x) that moves at every step, their learning
rate follows the ELBO's schedule down to ~0 at the end, and they read the encoders in training mode
(BatchNorm's batch statistics) while samples are drawn in evaluation mode. After training, once the
weights that will be exported are loaded, this phase fits them again to exactly the posterior they will
serve: `clips` training clips are encoded once by the frozen networks in evaluation mode (the prior's
condition map with the ELBO's per-clip condition drops, and q(z0 | x)'s mean and std), then `steps` Adam
steps of `batch_size` clips drawn from that pool (at most `max_time` seconds in all), learning rate `lr`
on a cosine down to 0; each step draws fresh IMLE noise and a fresh posterior z0 for the reader. Only the
ex-post parameters change, so everything else the model does is as trained. This is the two-stage recipe
of ex-post density estimation (Ghosh et al., ICLR 2020) with the second stage run to convergence on the
first stage's final encoder. Measured: docs/generation.md, session 26.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError


def check_refit(
    model: nn.Module, steps: int, clips: int, batch_size: int, lr: float, max_time: float | None = None
) -> None:
    """One-line errors for refit arguments that cannot work (`latent_sde`'s `refit_*`)."""
    if steps < 0 or clips < 1 or batch_size < 1 or not lr > 0 or (max_time is not None and not max_time > 0):
        raise VidynError(
            "task.args: need refit_steps >= 0, refit_clips >= 1, refit_batch_size >= 1, refit_lr > 0 and "
            "refit_max_time > 0 (or null)"
        )
    if steps and not list(getattr(model, "ex_post_parameters", list)()):
        raise VidynError(
            "task.args.refit_steps refits a z0 sampler or law reader; this model has neither "
            "(set model.args.z0_sampler=imle_prompted or z0_select > 1, or refit_steps=0)"
        )


def _pool(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor, Tensor | None]], clips: int, num_context: int,
    drop_condition: float, generator: torch.Generator,
) -> dict[str, Tensor]:  # fmt: skip
    """The first `clips` clips of `batches` ((frames, times, labels) on the model's device) encoded by the
    frozen model: condition maps, posterior means and stds, labels (-1 where there are none)."""
    parts: dict[str, list[Tensor]] = {"cond": [], "mean": [], "std": [], "labels": []}
    have = 0
    for frames, times, labels in batches:
        cond, mean, std = model.z0_fit_targets(
            frames, times[0], num_context=num_context, labels=labels, drop_condition=drop_condition,
            generator=generator,
        )  # fmt: skip
        labels = labels if labels is not None else torch.full((frames.shape[0],), -1, device=mean.device)
        for key, value in zip(parts, (cond, mean, std, labels), strict=True):
            parts[key].append(value)
        have += frames.shape[0]
        if have >= clips:
            break
    if have < clips:
        raise VidynError(f"task.args.refit_clips={clips}, but the training data gave only {have} clips")
    return {key: torch.cat(values)[:clips] for key, values in parts.items()}


def _fit(
    model: nn.Module, pool: dict[str, Tensor], steps: int, batch_size: int, lr: float, start: float,
    max_time: float | None, generator: torch.Generator,
) -> list[float]:  # fmt: skip
    """Adam on the ex-post parameters over batches of `pool`; the losses of the steps taken."""
    optimizer = torch.optim.Adam(model.ex_post_parameters(), lr=lr)
    losses: list[float] = []
    clips = pool["mean"].shape[0]
    while len(losses) < steps:
        progress = len(losses) / steps
        if max_time is not None:
            progress = max(progress, (time.perf_counter() - start) / max_time)
        if progress >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
        idx = torch.randint(0, clips, (batch_size,), generator=generator, device=generator.device)
        batch = [pool[key][idx.to(pool[key].device)] for key in ("cond", "mean", "std", "labels")]
        loss = model.z0_fit_loss(*batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def refit_z0(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor | None]],
    *,
    clips: int,
    steps: int,
    batch_size: int,
    lr: float,
    num_context: int,
    drop_condition: float,
    max_time: float | None = None,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Refit `model.ex_post_parameters()` (module docstring); with `max_time` (seconds, the encoding
    included) it stops there if the steps take longer, the cosine following whichever of the two budgets
    is nearer its end. Returns what was done: clips, steps taken, seconds, the mean loss of the first and
    last tenth of the steps."""
    check_refit(model, steps, clips, batch_size, lr, max_time)
    start, was_training = time.perf_counter(), model.training
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    model.eval()  # encoders with BatchNorm's running statistics, as when sampling
    pool = _pool(model, batches, clips, num_context, drop_condition, generator)
    encoded = time.perf_counter() - start
    losses = _fit(model, pool, steps, batch_size, lr, start, max_time, generator)
    model.train(was_training)
    tenth = max(1, len(losses) // 10)
    done = dict(clips=clips, steps=len(losses), batch_size=batch_size, lr=lr, max_time=max_time,
                encode_seconds=round(encoded, 1), seconds=round(time.perf_counter() - start, 1),
                loss_first=round(sum(losses[:tenth]) / tenth, 4) if losses else None,
                loss_last=round(sum(losses[-tenth:]) / tenth, 4) if losses else None)  # fmt: skip
    if say is not None:
        say(
            f"refitted the z0 sampler and law reader on the final networks: {len(losses)} steps on "
            f"{clips} clips in {done['seconds']:.0f} s, loss {done['loss_first']} -> {done['loss_last']}"
        )
    return done
