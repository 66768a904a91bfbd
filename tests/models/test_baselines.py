"""copy_last, linear and context_median baselines on hand-made clips with known answers."""

from __future__ import annotations

import pytest
import torch

import vidyn.models  # noqa: F401  (registers the builders)
from vidyn.errors import VidynError
from vidyn.registry import MODELS


def _ramp(times: torch.Tensor, offset: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """Frames whose every pixel is offset + slope * t: times (B, T), offset/slope (B, C, H, W)."""
    return offset.unsqueeze(1) + slope.unsqueeze(1) * times[:, :, None, None, None]


def test_registered_with_contract_attributes() -> None:
    for name in ("copy_last", "linear", "context_median"):
        entry = MODELS.get(name)
        assert entry.family == "predictor"
        model = MODELS.build(name)
        assert isinstance(model, torch.nn.Module)
        assert model.continuous_time is True and model.trainable is False
        assert list(model.parameters()) == []


def test_copy_last_repeats_last_frame() -> None:
    context = torch.rand(2, 3, 1, 4, 5)
    out = MODELS.build("copy_last")(context, torch.arange(3.0), torch.tensor([3.0, 7.5]))
    assert out.shape == (2, 2, 1, 4, 5)
    assert torch.equal(out[:, 0], context[:, -1]) and torch.equal(out[:, 1], context[:, -1])


def test_context_median_erases_a_moving_object_and_keeps_the_background() -> None:
    background = torch.rand(2, 1, 4, 4)
    context = background.unsqueeze(1).repeat(1, 3, 1, 1, 1)  # (2, 3, 1, 4, 4)
    for t in range(3):  # a bright pixel moving along the top row covers each position once
        context[:, t, :, 0, t] = 1.0
    out = MODELS.build("context_median")(context, torch.arange(3.0), torch.tensor([3.0, 4.5]))
    assert out.shape == (2, 2, 1, 4, 4)
    torch.testing.assert_close(out, background.unsqueeze(1).expand(2, 2, 1, 4, 4))
    two = torch.stack([torch.full((1, 2, 2), 0.3), torch.full((1, 2, 2), 0.7)]).unsqueeze(0)  # (1,2,1,2,2)
    low = MODELS.build("context_median")(two, torch.arange(2.0), torch.tensor([2.0]))
    assert torch.equal(low, torch.full_like(low, 0.3))  # an even count takes the lower middle value


def test_linear_reproduces_a_ramp_at_irregular_times_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    offset = 0.2 + 0.1 * torch.rand(2, 2, 3, 3, generator=gen)
    slope = 0.02 * (torch.rand(2, 2, 3, 3, generator=gen) - 0.5)
    ctx_times = torch.tensor([[0.0, 0.5, 1.5, 4.0], [1.0, 2.0, 2.2, 3.0]])
    # Before, inside (between frames and on a frame) and after the context span, per sample.
    tgt_times = torch.tensor([[-1.0, 0.25, 1.5, 3.0, 6.0], [0.0, 2.1, 2.6, 3.0, 8.0]])
    context = _ramp(ctx_times, offset, slope)
    out = MODELS.build("linear")(context, ctx_times, tgt_times)
    torch.testing.assert_close(out, _ramp(tgt_times, offset, slope), atol=1e-6, rtol=0)


def test_linear_uses_nearest_segment_not_a_global_fit() -> None:
    # One pixel: values 0, 0.2, 0.8 at t = 0, 1, 2. Extrapolating to t = 2.5 uses the last two frames only.
    context = torch.tensor([0.0, 0.2, 0.8]).view(1, 3, 1, 1, 1)
    out = MODELS.build("linear")(context, torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.5, 2.5, -0.5]))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.1, 1.0, 0.0]))  # 1.1 and -0.1 are clamped


def test_linear_clamps_and_single_frame_equals_copy_last() -> None:
    context = torch.rand(3, 1, 2, 4, 4)
    times = torch.tensor([0.0]), torch.tensor([1.0, 2.0])
    torch.testing.assert_close(
        MODELS.build("linear")(context, *times), MODELS.build("copy_last")(context, *times)
    )
    steep = torch.stack([torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)], dim=1)  # (1, 2, 1, 2, 2)
    out = MODELS.build("linear")(steep, torch.tensor([0.0, 1.0]), torch.tensor([3.0]))
    assert torch.equal(out, torch.ones_like(out))


def test_bad_inputs_raise_vidyn_error() -> None:
    model = MODELS.build("linear")
    with pytest.raises(VidynError, match="strictly increasing"):
        model(torch.rand(1, 2, 1, 2, 2), torch.tensor([1.0, 0.0]), torch.tensor([2.0]))
    with pytest.raises(VidynError, match="context_times"):
        model(torch.rand(1, 3, 1, 2, 2), torch.tensor([0.0, 1.0]), torch.tensor([2.0]))
    with pytest.raises(VidynError, match="shape"):
        MODELS.build("copy_last")(torch.rand(3, 1, 2, 2), torch.tensor([0.0]), torch.tensor([1.0]))
