"""Scheduled-sampling schedules for recurrent frame predictors, as pure functions of the training step.

Scheduled sampling (Bengio et al., NeurIPS 2015) feeds a recurrent predictor the true frame with some
probability and its own previous prediction otherwise, moving from teacher forcing towards free running as
training proceeds. Two schedules, with OpenSTL's / the official PredRNN code's definitions and defaults:

- "standard" (`schedule_sampling`, used for ConvLSTM and PredRNN): context steps always see the truth;
  decoder steps see it with probability eta, which starts at 1 and falls by `changing_rate` per step,
  reaching 0 at `stop_iter`. OpenSTL decrements eta before its first use, so eta at step s (counted from
  0) is `start - changing_rate * (s + 1)`.
- "reverse" (`reserve_schedule_sampling_exp`, PredRNN-V2): encoder steps 1..num_context-1 see the truth
  with a probability rising from 0.5 towards 1 after `r_step_1` (exponentially, time constant
  `r_exp_alpha`; exactly 1 from `r_step_2`); decoder steps with a probability falling linearly from 0.5
  at `r_step_1` to 0 at `r_step_2`. Step 0 always sees the truth.
- "none": context True, decoder False (free running after the context; also the evaluation mask).

OpenSTL's defaults are for 50k-iteration GPU runs; short runs should pass scaled values (e.g. every
length divided by 100). Masks follow the rollout contract of CONTRIBUTING.md: `mask[:, t]` is about the
input at step t, which predicts frame t+1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vidyn.errors import VidynError

KINDS = ("standard", "reverse", "none")


def standard_truth_prob(
    step: int, *, stop_iter: int = 50000, changing_rate: float | None = 2e-5, start: float = 1.0
) -> float:
    """Probability that a decoder step sees the true frame at training step `step` (OpenSTL's eta).

    `changing_rate=None` uses `start / stop_iter`, so eta reaches 0 exactly at `stop_iter` whatever the
    run length (OpenSTL's defaults 1.0 / 50000 = 2e-5 are this case).
    """
    if stop_iter < 1:
        raise VidynError(f"stop_iter must be >= 1; got {stop_iter}")
    rate = start / stop_iter if changing_rate is None else changing_rate
    if step >= stop_iter:
        return 0.0
    return min(1.0, max(0.0, start - rate * (step + 1)))


def reverse_truth_probs(
    step: int, *, r_step_1: int = 25000, r_step_2: int = 50000, r_exp_alpha: float = 5000
) -> tuple[float, float]:
    """`(encoder_prob, decoder_prob)` of PredRNN-V2's reverse scheduled sampling at training step `step`."""
    if not 0 <= r_step_1 < r_step_2 or r_exp_alpha <= 0:
        raise VidynError(
            f"reverse schedule needs 0 <= r_step_1 < r_step_2 and r_exp_alpha > 0; "
            f"got {r_step_1}, {r_step_2}, {r_exp_alpha}"
        )
    if step < r_step_1:
        return 0.5, 0.5
    if step < r_step_2:
        encoder = 1.0 - 0.5 * math.exp(-float(step - r_step_1) / r_exp_alpha)
        decoder = 0.5 - 0.5 / (r_step_2 - r_step_1) * (step - r_step_1)
        return encoder, decoder
    return 1.0, 0.0


def sample_truth_mask(
    batch_size: int,
    num_frames: int,
    num_context: int,
    kind: str,
    step: int,
    generator: torch.Generator | None = None,
    **schedule_kwargs: Any,
) -> Tensor:
    """Draw a rollout truth mask `(batch_size, num_frames - 1)` bool for schedule `kind` at `step`.

    `schedule_kwargs` go to `standard_truth_prob` ("standard") or `reverse_truth_probs` ("reverse");
    "none" ignores them. Entries are independent Bernoulli draws per sample and step, as in OpenSTL.
    """
    if kind not in KINDS:
        raise VidynError(f"unknown scheduled-sampling kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if not 1 <= num_context < num_frames:
        raise VidynError(
            f"need 1 <= num_context < num_frames; got num_context={num_context}, num_frames={num_frames}"
        )
    mask = torch.zeros(batch_size, num_frames - 1, dtype=torch.bool)
    num_decoder = num_frames - 1 - num_context
    if kind == "none":
        mask[:, :num_context] = True
        return mask
    schedule = standard_truth_prob if kind == "standard" else reverse_truth_probs
    try:
        probs = schedule(step, **schedule_kwargs)
    except TypeError as err:
        raise VidynError(f"bad argument for the {kind!r} schedule: {err}") from err
    if kind == "standard":
        mask[:, :num_context] = True
        decoder_prob = float(probs)
    else:
        encoder_prob, decoder_prob = probs
        mask[:, 0] = True
        mask[:, 1:num_context] = torch.rand(batch_size, num_context - 1, generator=generator) < encoder_prob
    mask[:, num_context:] = torch.rand(batch_size, num_decoder, generator=generator) < decoder_prob
    return mask
