"""ConvLSTM, PredRNN and PredRNN-V2: predictor contract, rollout semantics, memory zigzag, decoupling loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vidyn.models  # noqa: F401  (registers the builders)
from vidyn.errors import VidynError
from vidyn.models import predrnn
from vidyn.models.interface import Predictor
from vidyn.models.predrnn import decoupling_loss
from vidyn.nn.patch import patchify, unpatchify
from vidyn.nn.time_batched import TimeBatchedConv2d
from vidyn.registry import MODELS

RECURRENT = ("convlstm_tiny", "predrnn_tiny", "predrnn_v2_tiny")
SCHEDULES = {"convlstm": "standard", "predrnn": "standard", "predrnn_v2": "reverse"}


def _build(name: str, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS.build(name, **kwargs)


def _loss(model: torch.nn.Module, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    next_frames, aux = model.rollout(frames, mask)
    return F.mse_loss(next_frames, frames[:, 1:]) + sum(aux.values(), torch.zeros(()))


@pytest.mark.parametrize("base", sorted(SCHEDULES))
def test_registry_and_contract_attributes(base: str) -> None:
    for name in (base, f"{base}_tiny"):
        assert MODELS.get(name).family == "predictor"
    model = _build(f"{base}_tiny")
    assert isinstance(model, Predictor)
    assert model.continuous_time is False
    assert model.scheduled_sampling == SCHEDULES[base]


@pytest.mark.parametrize("name", RECURRENT)
@pytest.mark.parametrize("variant", [{}, {"layer_norm": True, "bias": True, "num_layers": 2}])
def test_every_parameter_receives_a_gradient(name: str, variant: dict) -> None:
    model = _build(name, **variant)
    frames = torch.rand(2, 5, 1, 16, 16)
    mask = torch.tensor([[True, True, False, True], [True, False, True, False]])
    _loss(model, frames, mask).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got no gradient"


@pytest.mark.parametrize("name", RECURRENT)
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_time_batched_weight_gradients_equal_the_per_step_ones(
    name: str, bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small steps (batch x grid <= TIME_BATCH_MAX_POSITIONS) batch the cells' weight gradients over the
    rollout: the gradients of every parameter equal the per-step computation's (float64)."""
    import vidyn.models.convlstm as convlstm_module

    model = _build(name, bias=bias).double()
    frames = torch.rand(2, 6, 1, 16, 16, dtype=torch.float64)  # 2 x 4 x 4 = 32 positions per step
    mask = torch.tensor([[True, True, False, True, False], [True, False, True, False, True]])
    calls = []
    original = convlstm_module.time_batched_weight_grads

    def spy(module: torch.nn.Module, enabled: bool = True):
        calls.append(enabled)
        return original(module, enabled)

    monkeypatch.setattr(convlstm_module, "time_batched_weight_grads", spy)
    batched = torch.autograd.grad(_loss(model, frames, mask), list(model.parameters()))
    monkeypatch.setattr(convlstm_module, "TIME_BATCH_MAX_POSITIONS", 31)  # below the 32 here
    per_step = torch.autograd.grad(_loss(model, frames, mask), list(model.parameters()))
    assert calls == [True, False]
    gate_convs = [
        m for m in model.cells.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
    ]
    assert gate_convs and all(isinstance(m, TimeBatchedConv2d) for m in gate_convs)
    for (pname, _), got, want in zip(model.named_parameters(), batched, per_step, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=pname)


def test_openstl_configs_have_no_unused_parameters() -> None:
    # OpenSTL's Moving MNIST ConvLSTM has 15.0M parameters of which 3.4M are never used; ours, 11.7M.
    big = dict(hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4)
    assert sum(p.numel() for p in MODELS.build("convlstm", **big).parameters()) == 11_675_648
    # PredRNN: 23.8M, as OpenSTL reports for the same configuration.
    assert sum(p.numel() for p in MODELS.build("predrnn", **big).parameters()) == 23_838_720


@pytest.mark.parametrize("name", RECURRENT)
def test_forward_equals_free_running_rollout(name: str) -> None:
    model = _build(name).eval()
    context, future = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 2, 1, 16, 16)
    times = torch.arange(5, dtype=torch.float32) * 0.04
    out = model(context, times[:3], times[3:])
    assert out.shape == (2, 2, 1, 16, 16)
    mask = torch.tensor([[True, True, True, False]] * 2)
    next_frames, _ = model.rollout(torch.cat([context, future], dim=1), mask)
    torch.testing.assert_close(out, next_frames[:, 2:].clamp(0, 1))
    assert out.min() >= 0 and out.max() <= 1
    # Per-sample timestamps on the same grid work too; one context frame takes its step from the targets.
    out_b = model(context, times[:3].expand(2, -1), times[3:].expand(2, -1))
    torch.testing.assert_close(out_b, out)
    assert model(context[:, -1:], times[2:3], times[3:]).shape == (2, 2, 1, 16, 16)


@pytest.mark.parametrize("name", RECURRENT)
def test_off_grid_and_bad_shapes_raise(name: str) -> None:
    model = _build(name)
    context = torch.rand(1, 3, 1, 16, 16)
    with pytest.raises(ValueError, match="discrete-time"):
        model(context, torch.arange(3.0), torch.tensor([3.0, 4.5]))
    with pytest.raises(ValueError, match="discrete-time"):
        model(context, torch.arange(3.0), torch.tensor([4.0, 5.0]))  # skips a step
    with pytest.raises(VidynError, match="channel"):
        model(torch.rand(1, 3, 3, 16, 16), torch.arange(3.0), torch.tensor([3.0]))
    with pytest.raises(VidynError, match="divisible"):
        model(torch.rand(1, 3, 1, 18, 16), torch.arange(3.0), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="truth_mask"):
        model.rollout(torch.rand(1, 4, 1, 16, 16), torch.ones(1, 4, dtype=torch.bool))
    normed = _build(name, layer_norm=True)
    with pytest.raises(VidynError, match="resize"):
        normed(torch.rand(1, 3, 1, 32, 32), torch.arange(3.0), torch.tensor([3.0]))
    with pytest.raises(VidynError, match="patch_size"):
        MODELS.build(name, image_size=18)


@pytest.mark.parametrize("name", RECURRENT)
def test_rollout_reads_truth_only_where_the_mask_says(name: str) -> None:
    model = _build(name)
    frames = torch.rand(2, 5, 1, 16, 16)
    mask = torch.tensor([[False, True, False, True], [True, False, True, True]])
    base, _ = model.rollout(frames, mask)
    for t in range(1, 4):
        for b in range(2):
            changed = frames.clone()
            changed[b, t] = torch.rand(1, 16, 16)
            out, _ = model.rollout(changed, mask)
            # The prediction for frame t+1 (index t) changes exactly when step t read the true frame.
            assert torch.equal(out[b, t], base[b, t]) != bool(mask[b, t])
            assert torch.equal(out[1 - b], base[1 - b])  # samples stay independent
    # Step 0 always reads the true frame; truth_mask[:, 0] is ignored.
    flipped = mask.clone()
    flipped[:, 0] = ~flipped[:, 0]
    torch.testing.assert_close(model.rollout(frames, flipped)[0], base, rtol=0, atol=0)
    # The last frame is only ever a target.
    changed = frames.clone()
    changed[:, 4] = 0.5
    torch.testing.assert_close(model.rollout(changed, mask)[0], base, rtol=0, atol=0)


@pytest.mark.parametrize("name", RECURRENT)
def test_rollout_is_the_same_with_host_decisions_and_with_a_where_per_step(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which input each step reads is decided on the host (no device sync per step); under torch.compile
    every step is a torch.where instead. Both give the same predictions and gradients, for steps that read
    all truth, all predictions, or a mix."""
    model = _build(name)
    frames = torch.rand(2, 6, 1, 16, 16)
    mask = torch.tensor([[False, True, False, True, False], [True, True, False, False, False]])

    def rollout_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out, aux = model.rollout(frames, mask)
        (out.square().mean() + sum(aux.values(), torch.zeros(()))).backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    host_out, host_grads = rollout_and_grads()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    where_out, where_grads = rollout_and_grads()
    torch.testing.assert_close(where_out, host_out, rtol=0, atol=0)
    for where_grad, host_grad in zip(where_grads, host_grads, strict=True):
        torch.testing.assert_close(where_grad, host_grad, rtol=1e-5, atol=1e-6)


def _reference_predrnn(model: torch.nn.Module, frames: torch.Tensor, zigzag: bool) -> torch.Tensor:
    """Teacher-forced PredRNN written out: M from layer l to l+1, and from the top layer to layer 1."""
    seq = patchify(frames, model.patch_size)  # (B, T, 16, 4, 4)
    zeros = seq.new_zeros(seq.shape[0], model.hidden_channels, *seq.shape[-2:])
    h, c, m = [zeros, zeros], [zeros, zeros], zeros
    outs = []
    for t in range(seq.shape[1] - 1):
        if not zigzag:
            m = zeros
        h[0], c[0], m, _, _ = model.cells[0](seq[:, t], h[0], c[0], m)
        h[1], c[1], m, _, _ = model.cells[1](h[0], h[1], c[1], m)
        outs.append(model.conv_last(h[1]))
    return unpatchify(torch.stack(outs, dim=1), model.patch_size)


def test_predrnn_memory_zigzags_across_layers_and_steps() -> None:
    model = _build("predrnn_tiny")
    frames = torch.rand(2, 4, 1, 16, 16)
    out, aux = model.rollout(frames, torch.ones(2, 3, dtype=torch.bool))
    assert aux == {}
    torch.testing.assert_close(out, _reference_predrnn(model, frames, zigzag=True))
    # The reference is sensitive to the memory path: restarting M every step gives different frames.
    assert not torch.allclose(out[:, 1:], _reference_predrnn(model, frames, zigzag=False)[:, 1:], atol=1e-4)


def test_decoupling_loss_on_hand_made_increments() -> None:
    identity = torch.nn.Identity()
    a = torch.randn(2, 3, 4, 4)
    assert float(decoupling_loss(a, a, identity)) == pytest.approx(1.0, abs=1e-6)
    assert float(decoupling_loss(a, -2 * a, identity)) == pytest.approx(1.0, abs=1e-6)  # |cos|
    ones = torch.ones(1, 2, 2, 2)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).expand(1, 2, 2, 2)  # orthogonal to ones per channel
    assert float(decoupling_loss(ones, checker, identity)) == pytest.approx(0.0, abs=1e-7)
    # Half the channels parallel, half orthogonal: mean over channels.
    mixed = torch.cat([ones[:, :1], checker[:, 1:]], dim=1)
    assert float(decoupling_loss(ones, mixed, identity)) == pytest.approx(0.5, abs=1e-6)


def test_predrnn_v2_aux_loss_is_beta_times_mean_over_layers_and_steps() -> None:
    model = _build("predrnn_v2_tiny", decouple_beta=0.3)
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [
        cell.register_forward_hook(lambda _m, _i, out: captured.append((out[3], out[4])))
        for cell in model.cells
    ]
    frames = torch.rand(2, 5, 1, 16, 16)
    _, aux = model.rollout(frames, torch.ones(2, 4, dtype=torch.bool))
    for hook in hooks:
        hook.remove()
    assert set(aux) == {"decouple"} and len(captured) == 4 * 2
    per_cell = torch.stack([decoupling_loss(dc, dm, model.adapter) for dc, dm in captured])
    torch.testing.assert_close(aux["decouple"], 0.3 * per_cell.mean())
    assert 0 < float(aux["decouple"].detach()) < 0.3
    with pytest.raises(VidynError, match="decouple_beta"):
        MODELS.build("predrnn_v2_tiny", decouple_beta=-1.0)


def test_rollout_decoupling_compiled_equals_the_per_step_definition() -> None:
    """The rollout-wide decoupling loss (channels-last increments, the 1x1 adapter as a matrix product),
    compiled and eager, equals the mean of the per-step official definition, value and gradients."""
    gen = torch.Generator().manual_seed(0)
    steps, n, c = 3, 4, 6
    adapter = torch.nn.Conv2d(c, c, 1, bias=False)
    delta_c = torch.randn(steps, n, c, 4, 4, generator=gen, requires_grad=True)
    delta_m = torch.randn(steps, n, c, 4, 4, generator=gen, requires_grad=True)
    want = torch.stack([decoupling_loss(delta_c[t], delta_m[t], adapter) for t in range(steps)]).mean()
    inputs = [delta_c, delta_m, adapter.weight]
    want_grads = torch.autograd.grad(want, inputs)
    # (T, N, C, H, W) x 2 -> (T, 2, N, H, W, C), as `PredRNNV2.aux_losses` stacks the steps' increments
    stacked = torch.stack([delta_c, delta_m], dim=1).permute(0, 1, 2, 4, 5, 3)
    for fn in (predrnn._rollout_decoupling, predrnn._rollout_decoupling_eager):
        got = fn(stacked, adapter.weight.flatten(1))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        for g_got, g_want in zip(torch.autograd.grad(got, inputs), want_grads, strict=True):
            torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-7)


def _moving_squares() -> torch.Tensor:
    """Two 8-frame 16x16 clips of a 4x4 square moving 1 pixel per frame (different directions)."""
    frames = torch.zeros(2, 8, 1, 16, 16)
    for t in range(8):
        frames[0, t, 0, 2 + t : 6 + t, 3:7] = 1.0
        frames[1, t, 0, 9:13, 10 - t : 14 - t] = 1.0
    return frames


@pytest.mark.parametrize("name", RECURRENT)
def test_overfits_a_tiny_batch(name: str) -> None:
    model = _build(name, seed=1)
    frames = _moving_squares()
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[:, :4] = True  # 4 context frames, then the model's own predictions: 4 -> 4
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        initial = float(_loss(model, frames, mask))
    for _ in range(100):
        optimiser.zero_grad()
        loss = _loss(model, frames, mask)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        final = float(_loss(model, frames, mask))
    assert final < initial / 5, f"{name}: loss {initial:.4f} -> {final:.4f}"
