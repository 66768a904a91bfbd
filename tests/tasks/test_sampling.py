"""Scheduled-sampling schedules at their key steps, and the truth masks they draw."""

from __future__ import annotations

import math

import pytest
import torch

from vidyn.errors import VidynError
from vidyn.tasks.sampling import reverse_truth_probs, sample_truth_mask, standard_truth_prob


def test_standard_schedule_follows_openstl_eta() -> None:
    # OpenSTL: eta = 1.0, then "eta -= 2e-5" before every use while itr < 50000, 0 afterwards.
    eta = 1.0
    for step in range(3):
        eta -= 2e-5
        assert standard_truth_prob(step) == pytest.approx(eta)
    assert standard_truth_prob(0) == pytest.approx(1.0 - 2e-5)
    assert standard_truth_prob(24999) == pytest.approx(0.5)
    assert standard_truth_prob(49999) == pytest.approx(0.0, abs=1e-9)
    assert standard_truth_prob(50000) == 0.0
    assert standard_truth_prob(10**7) == 0.0


def test_standard_schedule_scaled_and_auto_rate() -> None:
    assert standard_truth_prob(49, stop_iter=100, changing_rate=None) == pytest.approx(0.5)
    assert standard_truth_prob(99, stop_iter=100, changing_rate=None) == pytest.approx(0.0, abs=1e-12)
    # A rate too small for the run keeps eta high until stop_iter, then drops to 0, as in OpenSTL.
    assert standard_truth_prob(98, stop_iter=100) == pytest.approx(1.0 - 99 * 2e-5)
    assert standard_truth_prob(100, stop_iter=100) == 0.0
    # A rate too large never goes below 0.
    assert standard_truth_prob(50, stop_iter=100, changing_rate=0.1) == 0.0


def test_reverse_schedule_key_steps() -> None:
    assert reverse_truth_probs(0) == (0.5, 0.5)
    assert reverse_truth_probs(24999) == (0.5, 0.5)
    assert reverse_truth_probs(25000) == pytest.approx((0.5, 0.5))
    enc, dec = reverse_truth_probs(30000)
    assert enc == pytest.approx(1.0 - 0.5 * math.exp(-1.0))
    assert dec == pytest.approx(0.5 - 0.5 * 5000 / 25000)
    enc, dec = reverse_truth_probs(37500)
    assert dec == pytest.approx(0.25)
    assert enc == pytest.approx(1.0 - 0.5 * math.exp(-2.5))
    assert reverse_truth_probs(50000) == (1.0, 0.0)
    assert reverse_truth_probs(10**6) == (1.0, 0.0)


def test_reverse_schedule_scaled_values() -> None:
    enc, dec = reverse_truth_probs(150, r_step_1=100, r_step_2=200, r_exp_alpha=50)
    assert enc == pytest.approx(1.0 - 0.5 * math.exp(-1.0))
    assert dec == pytest.approx(0.25)
    with pytest.raises(VidynError):
        reverse_truth_probs(0, r_step_1=200, r_step_2=100)


def test_standard_mask_context_true_and_decoder_rate() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = sample_truth_mask(4000, 8, 3, "standard", 24999, generator=gen)
    assert mask.shape == (4000, 7) and mask.dtype == torch.bool
    assert bool(mask[:, :3].all())
    assert float(mask[:, 3:].float().mean()) == pytest.approx(0.5, abs=0.02)
    late = sample_truth_mask(5, 8, 3, "standard", 50000)
    assert bool(late[:, :3].all()) and not bool(late[:, 3:].any())
    early = sample_truth_mask(5, 8, 3, "standard", 0, stop_iter=10**9, changing_rate=0.0)
    assert bool(early.all())


def test_reverse_mask_encoder_and_decoder_rates() -> None:
    gen = torch.Generator().manual_seed(1)
    kwargs = {"r_step_1": 100, "r_step_2": 200, "r_exp_alpha": 50}
    mask = sample_truth_mask(4000, 10, 5, "reverse", 150, generator=gen, **kwargs)
    assert bool(mask[:, 0].all())
    enc, dec = reverse_truth_probs(150, **kwargs)
    assert float(mask[:, 1:5].float().mean()) == pytest.approx(enc, abs=0.02)
    assert float(mask[:, 5:].float().mean()) == pytest.approx(dec, abs=0.02)
    final = sample_truth_mask(3, 10, 5, "reverse", 200, **kwargs)
    assert bool(final[:, :5].all()) and not bool(final[:, 5:].any())


def test_none_mask_and_errors() -> None:
    mask = sample_truth_mask(2, 6, 2, "none", 0)
    assert mask.tolist() == [[True, True, False, False, False]] * 2
    with pytest.raises(VidynError, match="choose one of"):
        sample_truth_mask(2, 6, 2, "bogus", 0)
    with pytest.raises(VidynError, match="num_context"):
        sample_truth_mask(2, 6, 6, "standard", 0)
    with pytest.raises(VidynError, match="schedule"):
        sample_truth_mask(2, 6, 2, "standard", 0, r_step_1=3)


def test_mask_is_reproducible_with_generator() -> None:
    a = sample_truth_mask(8, 10, 4, "reverse", 0, generator=torch.Generator().manual_seed(5))
    b = sample_truth_mask(8, 10, 4, "reverse", 0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
