"""Tests for the causal space-time Transformer predictor and its attention blocks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vidyn.models.transformer  # noqa: F401  (registers transformer, transformer_tiny)
from vidyn.errors import VidynError
from vidyn.models.interface import Predictor
from vidyn.models.transformer import VideoTransformerPredictor
from vidyn.nn.attention import MultiHeadSelfAttention, sinusoidal_encoding
from vidyn.registry import MODELS

T_GRID = torch.arange(8, dtype=torch.float32) * 0.1


def tiny(**kwargs) -> VideoTransformerPredictor:
    """A tiny model with a random pixel head (it is built zero, which would hide every dependency)."""
    torch.manual_seed(0)
    model = MODELS.build("transformer_tiny", **kwargs).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    return model


def clips(batch: int = 2, length: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, length, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def step_by_step(model: VideoTransformerPredictor, frames: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Reference: feed true frames one at a time through the cache; (B, T-1, C, H, W)."""
    state = model.new_state()
    times = times.expand(frames.shape[0], -1)
    outs = [
        model.step(frames[:, t : t + 1], times[:, t : t + 1], times[:, t + 1 : t + 2], state)
        for t in range(frames.shape[1] - 1)
    ]
    return torch.cat(outs, dim=1)


def test_registered_with_predictor_contract() -> None:
    assert MODELS.get("transformer").family == "predictor"
    assert MODELS.get("transformer_tiny").family == "predictor"
    model = tiny()
    assert isinstance(model, Predictor)
    assert model.continuous_time is True and model.scheduled_sampling == "standard"
    full = MODELS.build("transformer")
    assert (full.image_size, full.patch_size, full.embed_dim, len(full.blocks)) == (64, 8, 128, 4)


def test_sinusoidal_encoding_matches_vaswani_formula() -> None:
    dim = 8
    enc = sinusoidal_encoding(torch.tensor([0.0, 3.0]), dim)
    for i in range(dim // 2):
        angle = 3.0 / 10000 ** (2 * i / dim)
        assert enc[1, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert enc[1, dim // 2 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(enc[0], torch.cat([torch.zeros(4), torch.ones(4)]))
    # seconds * scale: 0.3 s at scale 10 is position 3
    assert torch.allclose(sinusoidal_encoding(torch.tensor([0.3]), dim, scale=10.0)[0], enc[1], atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_torch_multihead_attention(causal: bool) -> None:
    torch.manual_seed(0)
    ours = MultiHeadSelfAttention(16, 4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, 5, 16)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1) if causal else None  # True = blocked
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    assert torch.allclose(ours(x, causal=causal), expected, atol=1e-5)


def test_teacher_forced_pass_is_causal() -> None:
    model = tiny()
    frames = clips()
    mask = torch.ones(2, 7, dtype=torch.bool)
    base, aux = model.rollout(frames, mask)
    assert base.shape == (2, 7, 1, 16, 16) and aux == {}
    for t in (0, 3, 5):
        changed = frames.clone()
        changed[:, t + 1 :] = torch.rand_like(changed[:, t + 1 :])
        out, _ = model.rollout(changed, mask)
        # next_frames[:, s] predicts frame s+1 from frames 0..s: outputs 0..t see only unchanged frames
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6)
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-4)


def test_parallel_rollout_equals_step_by_step_run_fed_with_truth() -> None:
    model = tiny()
    frames = clips()
    parallel, _ = model.rollout(frames, torch.ones(2, 7, dtype=torch.bool), times=T_GRID)
    assert torch.allclose(parallel, step_by_step(model, frames, T_GRID), atol=1e-5)


def test_sliding_window_parallel_equals_cached_and_forgets_old_frames() -> None:
    model = tiny(max_frames=3)  # each frame attends to itself and the two before it (one block)
    frames = clips()
    parallel, _ = model.rollout(frames, torch.ones(2, 7, dtype=torch.bool), times=T_GRID)
    assert torch.allclose(parallel, step_by_step(model, frames, T_GRID), atol=1e-5)
    changed = frames.clone()
    changed[:, 0] = 1.0 - changed[:, 0]
    out, _ = model.rollout(changed, torch.ones(2, 7, dtype=torch.bool), times=T_GRID)
    assert torch.allclose(out[:, 3:], parallel[:, 3:], atol=1e-6)  # frame 0 is out of every window
    assert not torch.allclose(out[:, :3], parallel[:, :3], atol=1e-4)


def test_forward_equals_rollout_fed_with_own_predictions() -> None:
    model = tiny()
    frames = clips()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 4:] = False  # truth for inputs 0..3 (the context), predictions afterwards
    rolled, _ = model.rollout(frames, mask, times=T_GRID)
    predicted = model(frames[:, :4], T_GRID[:4], T_GRID[4:])
    assert predicted.shape == (2, 4, 1, 16, 16)
    assert torch.allclose(predicted, rolled[:, 3:].clamp(0, 1), atol=1e-5)  # forward clamps, rollout does not


def test_rollout_mask_is_applied_per_sample() -> None:
    model = tiny()
    frames = clips()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[0, 0] = False  # step 0 is always the true frame whatever the mask says
    mixed, _ = model.rollout(frames, mask)
    teacher, _ = model.rollout(frames[:1], torch.ones(1, 7, dtype=torch.bool))
    free = model(frames[1:, :4], T_GRID[:4], T_GRID[4:])
    assert torch.allclose(mixed[0], teacher[0], atol=1e-5)
    assert torch.allclose(mixed[1, 3:].clamp(0, 1), free[0], atol=1e-5)


def test_irregular_times_shapes_and_target_time_matters() -> None:
    model = tiny()
    context = clips(length=3)
    context_times = torch.tensor([[0.0, 0.1, 0.25], [1.0, 1.3, 1.4]])
    target_times = torch.tensor([[0.3, 0.7, 0.75, 2.0, 2.1], [1.5, 1.6, 2.6, 2.7, 3.0]])
    out = model(context, context_times, target_times)
    assert out.shape == (2, 5, 1, 16, 16)
    assert out.min() >= 0 and out.max() <= 1
    near = model(context, context_times, torch.tensor([0.3, 0.4]).expand(2, -1) + context_times[:, -1:])
    far = model(context, context_times, torch.tensor([1.0, 1.1]).expand(2, -1) + context_times[:, -1:])
    assert not torch.allclose(near[:, 0], far[:, 0], atol=1e-4)


def test_only_relative_times_matter() -> None:
    model = tiny()
    context = clips(length=3)
    ctx, tgt = torch.tensor([0.0, 0.1, 0.3]), torch.tensor([0.35, 0.5])
    assert torch.allclose(model(context, ctx, tgt), model(context, ctx + 7.0, tgt + 7.0), atol=1e-4)


@pytest.mark.parametrize(
    ("context_times", "target_times"),
    [
        ([0.0, 0.1, 0.2], [0.2, 0.3]),  # first target not after the context
        ([0.0, 0.1, 0.2], [0.1, 0.3]),  # target inside the context
        ([0.0, 0.1, 0.2], [0.5, 0.4]),  # targets decreasing
        ([0.0, 0.1, 0.2], [0.3, 0.3]),  # targets repeated
        ([0.0, 0.2, 0.1], [0.3, 0.4]),  # context not increasing
        ([0.0, 0.1, 0.2], [0.3, float("nan")]),
    ],
)
def test_bad_times_raise_value_error(context_times: list[float], target_times: list[float]) -> None:
    with pytest.raises(ValueError):
        tiny()(clips(length=3), torch.tensor(context_times), torch.tensor(target_times))


def test_bad_inputs_raise_vidyn_error() -> None:
    model = tiny()
    with pytest.raises(VidynError, match="image_size"):
        model(torch.rand(1, 3, 1, 32, 32), T_GRID[:3], T_GRID[3:5])
    with pytest.raises(VidynError, match="truth_mask"):
        model.rollout(clips(), torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(VidynError, match="context_times"):
        model(clips(length=3), T_GRID[:4], T_GRID[4:5])
    with pytest.raises(VidynError, match="multiple of patch_size"):
        MODELS.build("transformer_tiny", image_size=18)


def test_every_parameter_gets_a_gradient() -> None:
    model = tiny()
    model.train()
    frames = clips()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 3:] = torch.tensor([[True, False, True, False], [False, False, True, True]])
    next_frames, _ = model.rollout(frames, mask, times=T_GRID)
    ((next_frames - frames[:, 1:]) ** 2).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_overfits_two_clips() -> None:
    model = tiny()
    model.train()
    data = torch.zeros(2, 8, 1, 16, 16)  # a 4x4 square moving right in clip 0, down in clip 1
    for t in range(8):
        data[0, t, 0, 6:10, 1 + t : 5 + t] = 1.0
        data[1, t, 0, 1 + t : 5 + t, 3:7] = 1.0
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mask = torch.ones(2, 7, dtype=torch.bool)
    losses = []
    for _ in range(150):
        next_frames, _ = model.rollout(data, mask, times=T_GRID)
        loss = ((next_frames - data[:, 1:]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    background_mse = (data[:, 1:] ** 2).mean().item()  # predicting an empty frame scores this
    assert losses[-1] < losses[0] / 5
    assert losses[-1] < background_mse / 2


def test_fresh_model_predicts_black_or_the_input_frame_with_residual() -> None:
    frames = clips(length=3)
    times = torch.tensor([0.0, 0.1, 0.2])
    plain = MODELS.build("transformer_tiny").eval()
    with torch.no_grad():
        assert torch.equal(plain(frames, times, torch.tensor([0.3, 0.4])), torch.zeros(2, 2, 1, 16, 16))
        residual = MODELS.build("transformer_tiny", residual=True).eval()
        out = residual(frames, times, torch.tensor([0.3, 0.4]))
    torch.testing.assert_close(out, frames[:, -1:].expand(2, 2, 1, 16, 16))  # copy_last until trained
