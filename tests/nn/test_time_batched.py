"""Time-batched weight gradients give the per-step gradients of a recurrence, and only where they apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidyn.nn.time_batched import TimeBatchedConv2d, _SharedWeight, time_batched_weight_grads


def _pair(bias: bool) -> tuple[TimeBatchedConv2d, nn.Conv2d]:
    torch.manual_seed(0)
    batched = TimeBatchedConv2d(6, 8, 3, padding=1, bias=bias).double()
    plain = nn.Conv2d(6, 8, 3, padding=1, bias=bias).double()
    plain.load_state_dict(batched.state_dict())
    return batched, plain


def _rollout(conv: nn.Module, xs: list[torch.Tensor], enabled: bool) -> torch.Tensor:
    """A small recurrence: the conv reads [x_t, h] and feeds h, so gradients flow through time."""
    h = torch.zeros(2, 3, 5, 5, dtype=torch.float64)
    with time_batched_weight_grads(conv, enabled=enabled):
        outs = []
        for x in xs:
            y = conv(torch.cat([x, h], dim=1))  # (2, 8, 5, 5)
            h = torch.tanh(y[:, :3]) * torch.sigmoid(y[:, 3:6])
            outs.append(y[:, 6:])
    return torch.stack(outs).square().mean() + h.sum()


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_batched_weight_gradient_equals_the_per_step_sum(bias: bool) -> None:
    batched, plain = _pair(bias)
    xs = [torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True) for _ in range(5)]
    loss = _rollout(batched, xs, enabled=True)
    grads = torch.autograd.grad(loss, [*batched.parameters(), *xs])
    ref_loss = _rollout(plain, xs, enabled=True)  # a plain Conv2d ignores the context
    ref = torch.autograd.grad(ref_loss, [*plain.parameters(), *xs])
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)  # the forward is the same convolution
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_batched_path_runs_only_inside_the_context_with_gradients() -> None:
    """One shared weight node per rollout in training; none without the context, without gradients,
    or under autocast."""
    batched, _ = _pair(bias=False)
    xs = [torch.randn(2, 3, 5, 5, dtype=torch.float64) for _ in range(3)]

    def shared_nodes(loss: torch.Tensor) -> int:
        seen, stack, count = set(), [loss.grad_fn], 0
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            count += type(node).__name__ == f"{_SharedWeight.__name__}Backward"
            stack.extend(next_fn for next_fn, _ in node.next_functions)
        return count

    assert shared_nodes(_rollout(batched, xs, enabled=True)) == 1
    assert shared_nodes(_rollout(batched, xs, enabled=False)) == 0
    assert shared_nodes(batched(torch.randn(2, 6, 5, 5, dtype=torch.float64)).sum()) == 0  # outside
    with torch.no_grad():
        assert _rollout(batched, xs, enabled=True).grad_fn is None
    float_conv = TimeBatchedConv2d(6, 8, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16), time_batched_weight_grads(float_conv):
        out = float_conv(torch.randn(2, 6, 5, 5))
    assert out.dtype == torch.bfloat16 and shared_nodes(out.float().sum()) == 0
    assert batched._rollout is None and not batched._active  # the context leaves nothing behind


def test_two_rollouts_before_one_backward_each_get_their_own_gradient() -> None:
    batched, plain = _pair(bias=True)
    xs = [torch.randn(2, 3, 5, 5, dtype=torch.float64) for _ in range(3)]
    ys = [2 * x for x in xs]
    (_rollout(batched, xs, True) + 3 * _rollout(batched, ys, True)).backward()
    (_rollout(plain, xs, True) + 3 * _rollout(plain, ys, True)).backward()
    for got, want in zip(batched.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-12)
