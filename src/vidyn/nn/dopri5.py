"""Dormand-Prince 5(4) with torchdiffeq's step-size control and dense output, for training solves.

The method is torchdiffeq's `dopri5` (Dormand & Prince, 1980, with Shampine's midpoint for the 4th-order
dense output): the initial step of Hairer, Norsett & Wanner (Solving ODEs I, II.4), the RMS error norm
against `atol + rtol * max(|y0|, |y1|)`, the step factor `0.9 * ratio^(-1/5)` bounded to [0.2, 10]
(never below 1 after an accepted step), first-same-as-last stages, and at most `max_num_steps` steps
per output time. So it takes the same steps and function evaluations and returns the same states up to
float rounding (tests/nn/test_dopri5.py compares it with torchdiffeq).

Why it exists: torchdiffeq keeps a step's seven stages in one `(*y.shape, 7)` scratch tensor and forms
every stage input, the solution, the error estimate and the midpoint as a product with a slice of it
summed over the last axis. On a CPU that bookkeeping, forward and backward, cost about a third as much as
the ODE function itself in Vid-ODE's decoder solve (docs/speed.md, session 18). Here the stages are
separate tensors and every combination is a chain of `add(..., alpha=c)`, whose backward is one scaled
copy per stage.

Deviation: step sizes are chosen without gradients. torchdiffeq differentiates through the size of the
first step (its initial-step estimate is built from the state and one probe evaluation), so its gradient
has an extra term of the order of the solver's error; here the probe evaluation stays out of the graph.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vidyn.nn.layout import grad_channels_last, is_channels_last

ODEFunc = Callable[[Tensor, Tensor], Tensor]  # an nn.Module or any function of (t, y)

# Butcher tableau of Dormand-Prince 5(4): stage times, stage weights, 5th-order solution (= the last
# stage's weights: FSAL), error weights (5th minus 4th order), and Shampine's midpoint weights.
ALPHA = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
BETA = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
C_ERROR = (
    35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
    -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60,
)  # fmt: skip
C_MID = (
    6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
    187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2,
)  # fmt: skip
SAFETY, IFACTOR, DFACTOR, ORDER = 0.9, 10.0, 0.2, 5


def _combine(y0: Tensor, ks: list[Tensor], weights: tuple[float, ...], dt: Tensor) -> Tensor:
    """`y0 + sum_j (weights_j * dt) k_j` in y's dtype, the coefficients rounded as torchdiffeq's."""
    coeffs = (torch.tensor(weights[: len(ks)], dtype=y0.dtype) * dt.to("cpu", y0.dtype)).tolist()
    out = y0
    for c, k in zip(coeffs, ks, strict=True):
        if c != 0.0:
            out = out.add(k, alpha=c)
    return out


def _rms(x: Tensor) -> Tensor:
    return x.abs().pow(2).mean().sqrt()


@torch.no_grad()
def _initial_step(func: ODEFunc, t0: Tensor, y0: Tensor, f0: Tensor, rtol: float, atol: float) -> Tensor:
    """Hairer's starting step for an order-4 error estimate (one probe evaluation of `func`)."""
    scale = atol + y0.abs() * rtol
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = y0.new_tensor(1e-6) if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = func(t0 + h0, y0 + h0 * f0)
    d2 = (_rms((f1 - f0) / scale) / h0).abs()
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = torch.max(y0.new_tensor(1e-6), h0 * 1e-3)
    else:
        h1 = (0.01 / torch.max(d1, d2)) ** (1.0 / ORDER)
    return torch.min(100 * h0, h1).to(t0.dtype)


def _step(func: ODEFunc, y0: Tensor, f0: Tensor, t0: Tensor, dt: Tensor) -> tuple[Tensor, list[Tensor]]:
    """One Dormand-Prince step: (the 5th-order solution at t0 + dt, the seven stages)."""
    ks = [f0]
    y1 = y0
    for alpha, beta in zip(ALPHA, BETA, strict=True):
        y1 = _combine(y0, ks, beta, dt)
        ks.append(func(t0 + dt if alpha == 1.0 else t0 + alpha * dt, y1))
    return y1, ks


@torch.no_grad()
def _next_dt(
    dt: Tensor, y0: Tensor, y1: Tensor, ks: list[Tensor], rtol: float, atol: float
) -> tuple[bool, Tensor]:
    """(accept the step, the size of the next one) from the embedded error estimate."""
    error = _combine(torch.zeros_like(y0), ks, C_ERROR, dt)
    ratio = _rms(error / (atol + rtol * torch.max(y0.abs(), y1.abs()))).to(dt.dtype)
    if ratio == 0:
        return True, dt * IFACTOR
    low = 1.0 if ratio < 1 else DFACTOR
    factor = min(IFACTOR, max(float(SAFETY / ratio ** (1.0 / ORDER)), low))
    return bool(ratio <= 1), dt * factor


def dopri5(
    func: ODEFunc, y0: Tensor, times: Tensor, *, rtol: float, atol: float, max_num_steps: int = 2**31 - 1
) -> Tensor:
    """`y` at every time `(len(times), *y0.shape)` for `dy/dt = func(t, y)`, `y(times[0]) = y0`; times
    strictly increasing or decreasing. Raises AssertionError with torchdiffeq's messages ("underflow in
    dt", "max_num_steps exceeded") where torchdiffeq would."""
    t = times.to(torch.float64)
    if len(t) > 1 and t[1] < t[0]:  # decreasing: solve ds = -dt forwards, as torchdiffeq does
        return dopri5(_Reversed(func), y0, -t, rtol=rtol, atol=atol, max_num_steps=max_num_steps)
    f0 = func(t[0], y0)
    y0 = _in_layout_of(y0, f0)
    dt = _initial_step(func, t[0], y0, f0, rtol, atol)
    out, t0, t1, y, coeffs = [y0], t[0], t[0], y0, None
    for target in t[1:]:
        steps = 0
        while target > t1:
            assert steps < max_num_steps, f"max_num_steps exceeded ({steps}>={max_num_steps})"
            dt = dt if torch.isfinite(dt) else dt.new_zeros(())
            assert t1 + dt > t1, f"underflow in dt {dt.item()}"
            assert torch.isfinite(y).all(), "non-finite values in state `y`"
            y_new, ks = _step(func, y, f0, t1, dt)
            accept, dt_next = _next_dt(dt, y, y_new, ks, rtol, atol)
            if accept:
                coeffs = _fit(y, y_new, _combine(y, ks, C_MID, dt), ks[0], ks[-1], dt)
                t0, t1, y, f0 = t1, t1 + dt, y_new, ks[-1]
            dt = dt_next
            steps += 1
        assert coeffs is not None
        out.append(_evaluate(coeffs, ((target - t0) / (t1 - t0)).to(y0.dtype)))
    if is_channels_last(y0):  # the gradients of the outputs flow back in the stages' layout too
        out = [grad_channels_last(y) for y in out]
    return torch.stack(out)


def _in_layout_of(y0: Tensor, f0: Tensor) -> Tensor:
    """`y0` channels-last where `f0` is (a function computed by `vidyn.nn.winograd` returns channels-last):
    every stage combination then adds tensors of one layout, forward and backward (the outputs' gradients
    are turned channels-last too). Mixed layouts take PyTorch's slow element-wise path (`vidyn.nn.layout`)."""
    return y0.contiguous(memory_format=torch.channels_last) if is_channels_last(f0) else y0


def _fit(y0: Tensor, y1: Tensor, y_mid: Tensor, f0: Tensor, f1: Tensor, dt: Tensor) -> list[Tensor]:
    """Coefficients (constant first) of the quartic through y0, y_mid, y1 with slopes f0, f1 on [0, 1]."""
    h = dt.to(y0.dtype)
    a = 2 * h * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
    b = h * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
    c = h * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
    return [y0, h * f0, c, b, a]


def _evaluate(coeffs: list[Tensor], x: Tensor) -> Tensor:
    total, power = coeffs[0] + x * coeffs[1], x
    for c in coeffs[2:]:
        power = power * x
        total = total + power * c
    return total


class _Reversed(nn.Module):
    """`g(s, y) = -f(-s, y)`: the ODE in reversed time."""

    def __init__(self, func: ODEFunc) -> None:
        super().__init__()
        self.func = func

    def forward(self, s: Tensor, y: Tensor) -> Tensor:
        return -self.func(-s, y)
