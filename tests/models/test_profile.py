"""Profiling helpers: exact parameter and FLOP counts, memory peaks of known allocations, timing plumbing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidyn.export import build_model
from vidyn.models.profile import (
    count_parameters,
    flops_per_clip,
    median_seconds,
    parameter_bytes,
    peak_memory_mb,
    time_inference,
    time_train_step,
    train_step,
)


class OneConv(nn.Module):
    """A 'predictor' made of one 3x3 convolution applied to every context frame."""

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)

    def forward(self, context: torch.Tensor, context_times: torch.Tensor, target_times: torch.Tensor):
        b, t = context.shape[:2]
        return self.conv(context.flatten(0, 1)).unflatten(0, (b, t))  # (B, T, Cout, H, W)


def test_count_parameters_is_exact_and_counts_shared_tensors_once() -> None:
    conv = OneConv(3, 5)
    assert count_parameters(conv) == 5 * 3 * 3 * 3 + 5
    assert count_parameters(OneConv(3, 5, bias=False)) == 135
    shared = nn.Linear(4, 4)
    tied = nn.Sequential(shared, shared)
    assert count_parameters(tied) == 4 * 4 + 4
    conv.conv.bias.requires_grad_(False)
    assert count_parameters(conv, trainable_only=True) == 135
    assert parameter_bytes(OneConv(3, 5)) == (135 + 5) * 4


def test_baselines_have_no_parameters() -> None:
    assert count_parameters(build_model("copy_last")) == 0
    assert count_parameters(build_model("linear")) == 0


@pytest.mark.parametrize("batch", [1, 3])
def test_flops_of_one_conv_match_the_analytic_count(batch: int) -> None:
    cin, cout, frames, h, w = 2, 4, 5, 6, 7
    model = OneConv(cin, cout)
    context = torch.rand(batch, frames, cin, h, w)
    times = torch.arange(frames, dtype=torch.float32)
    # 2 FLOPs per multiply-add; one output value needs cin * 3 * 3 of them (bias not counted).
    expected = 2 * cout * h * w * cin * 3 * 3 * frames
    assert flops_per_clip(model, context, times, times + frames) == expected


def test_flops_of_a_recurrent_predictor_are_linear_in_the_horizon() -> None:
    model = build_model("convlstm_tiny")
    ctx = torch.rand(1, 4, 1, 16, 16)
    t = torch.arange(12, dtype=torch.float32) * 0.1
    f2, f4, f8 = (flops_per_clip(model, ctx, t[:4], t[4 : 4 + n]) for n in (2, 4, 8))
    # Each predicted frame costs one more cell step: equal increments per frame.
    assert 0 < f2 < f4 < f8
    assert f8 - f4 == 2 * (f4 - f2)


def test_peak_memory_of_known_allocations() -> None:
    n = 256 * 1024  # float32: 1 MiB per tensor

    def fn() -> None:
        a = torch.ones(n)
        b = torch.ones(n)  # 2 MiB held
        del a
        c = torch.ones(2 * n)  # 1 + 2 = 3 MiB held: the peak
        del b, c
        d = torch.ones(n)  # back to 1 MiB
        del d

    assert peak_memory_mb(fn) == pytest.approx(3.0, abs=0.01)


def test_peak_memory_excludes_what_was_held_before() -> None:
    held = torch.ones(1024 * 1024)  # noqa: F841  (4 MiB alive before the call)
    assert peak_memory_mb(lambda: torch.ones(256 * 1024)) == pytest.approx(1.0, abs=0.01)


def test_train_step_updates_parameters_and_time_train_step_runs() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.rand(16, 3), torch.rand(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()

    def loss_fn() -> torch.Tensor:
        return ((model(x) - y) ** 2).mean()

    first = train_step(loss_fn, opt, clip_grad_norm=1.0)
    assert not torch.equal(before, model.weight)
    assert time_train_step(loss_fn, opt, repeats=2) > 0
    with torch.no_grad():
        assert float(loss_fn()) < first  # three SGD steps on a convex loss lower it


def test_time_inference_leaves_eval_mode_and_is_positive() -> None:
    model = build_model("convlstm_tiny")
    ctx = torch.rand(1, 4, 1, 16, 16)
    t = torch.arange(8, dtype=torch.float32) * 0.1
    model.train()
    assert time_inference(model, ctx, t[:4], t[4:], repeats=2) > 0
    assert not model.training


def test_median_seconds_calls_warmup_plus_repeats() -> None:
    calls = []
    median_seconds(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    with pytest.raises(ValueError):
        median_seconds(lambda: None, repeats=0)


def test_synchronize_takes_a_device_name_too() -> None:
    from vidyn.models.profile import synchronize  # noqa: PLC0415

    synchronize("cpu")  # a no-op off CUDA, whether given a name or a torch.device (raised AttributeError)
    synchronize(torch.device("cpu"))
    synchronize(None)
