"""Convolutional neural-ODE blocks of Vid-ODE (Park et al., "Vid-ODE: Continuous-Time Video Generation
with Neural Ordinary Differential Equation", AAAI 2021).

- `ConvODEFunc`: the autonomous conv ODE function `dh/dt = f(h)` of the official code (`create_convnet`:
  3x3 convs C -> U, `num_layers` x (tanh, U -> U), tanh, U -> C), counting its evaluations (NFE).
- `odesolve`: one entry point over `torchdiffeq.odeint` / `odeint_adjoint` with method checking; dopri5
  without the adjoint runs `vidyn.nn.dopri5` (torchdiffeq's algorithm, the same steps and NFE, with
  cheaper bookkeeping of the stages).
- `ConvGRUCell`: the official ConvGRU cell (reset/update gates from one conv over `[x, h]`, candidate from
  a conv over `[x, r * h]`).
- `LatentODEFunc` / `with_condition`: ode_gan's latent dynamics, a conv net over a latent map, the
  clip's conditioning vector broadcast over it and the x/y coordinates (`vidyn.models.ode_gan`).
- `ODEConvGRU`: the ODE-ConvGRU encoder. The hidden state starts at zero at the last observation time
  and, running backwards in time, follows the conv ODE between consecutive observations and takes a
  ConvGRU update with each observation; the result is the state at the FIRST observation time.

Deviations from the official code: the official encoder always takes one Euler step between
observations; here `method` selects the solver ("euler" keeps that single step, another fixed-step
method takes one step of that method, an adaptive method such as "dopri5" integrates to `rtol`/`atol`).
The official loop also starts with an Euler step of length 0.01 from the zero state before the first
(last-in-time) observation, a left-over of the Latent-ODE code it derives from; the paper's ODE-ConvGRU
starts from h = 0 at that observation, which is what this module does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from vidyn.errors import VidynError
from vidyn.nn.dopri5 import dopri5
from vidyn.nn.time_batched import TimeBatchedConv2d, time_batched_weight_grads
from vidyn.nn.winograd import same_conv2d

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun", "dopri8")
# Work (tiles x C_in x C_out) from which the ODE function's convolutions take Winograd in CPU training:
# Vid-ODE's default model (batch 4, 16x16 latent grid, 64-128 channels: 2.6e5-5.2e5) gains, the quick
# config (batch 1-8 on an 8x8 grid, 32-64 channels: < 7e4) does not (docs/speed.md, session 18)
ODE_MIN_WORK = 1 << 17


def check_method(method: str, what: str) -> None:
    """Raise VidynError unless `method` is a torchdiffeq solver this package supports."""
    if method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
        valid = ", ".join(FIXED_STEP_METHODS + ADAPTIVE_METHODS)
        raise VidynError(f"unknown {what} {method!r}; choose one of: {valid}")


class ConvODEFunc(nn.Module):
    """Autonomous conv ODE function `dh/dt = f(h)` (time is ignored, as in the official code).

    `net` lists the layers in order (conv, tanh, ..., conv); `forward` runs each hidden convolution with its
    tanh in one call (`TimeBatchedConv2d.forward(x, tanh=True)`: fused into the Winograd output loop where
    that applies), so the `nn.Tanh` entries describe the function and are not called themselves.

    `nfe` counts calls; reset it with `nfe = 0` before a solve and read it after. With the adjoint method
    the backward pass adds its own evaluations to the count.
    """

    def __init__(
        self, channels: int, hidden_channels: int, num_layers: int = 2, kernel_size: int = 3
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        conv = TimeBatchedConv2d
        layers: list[nn.Module] = [conv(channels, hidden_channels, kernel_size, padding=pad)]
        for _ in range(num_layers):
            layers += [nn.Tanh(), conv(hidden_channels, hidden_channels, kernel_size, padding=pad)]
        layers += [nn.Tanh(), conv(hidden_channels, channels, kernel_size, padding=pad)]
        self.net = nn.Sequential(*layers)
        for layer in self.net:
            if isinstance(layer, TimeBatchedConv2d):
                layer.min_work = ODE_MIN_WORK
        self.nfe = 0

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        self.nfe += 1
        *hidden, last = self.net[::2]  # the convolutions; each but the last is followed by its nn.Tanh
        for conv in hidden:
            h = conv(h, tanh=True)  # conv + tanh in one (Winograd's output loop where it applies)
        return last(h)


class ODESolverError(VidynError):
    """An adaptive solve that could not finish: its step size underflowed (NaN or too small to advance
    time, usually diverged dynamics) or it took more than `max_num_steps` steps (stiff dynamics)."""

    FIX = "loosen rtol/atol, raise max_num_steps, or use a fixed-step method (rk4, euler)"

    def __init__(self, detail: str, fix: str = FIX) -> None:
        super().__init__(
            f"the ODE solver failed ({detail}): {fix}; a NaN step size means the dynamics diverged"
        )
        self.detail = detail


def odesolve(
    func: nn.Module,
    y0: Tensor,
    times: Tensor,
    *,
    method: str,
    rtol: float,
    atol: float,
    step_size: float | None = None,
    adjoint: bool = False,
    max_num_steps: int | None = None,
) -> Tensor:
    """Solve `dy/dt = func(t, y)`, `y(times[0]) = y0`; return `y` at every time, `(len(times), *y0.shape)`.

    `times` must be strictly monotonic (increasing or decreasing). Fixed-step methods step on `times`
    itself, or on a grid of `step_size` when it is given (torchdiffeq then interpolates linearly to
    `times`); adaptive methods choose their own steps to `rtol`/`atol` and interpolate to `times`.
    """
    check_method(method, "ODE method")
    if times.numel() == 1:  # nothing to integrate
        return y0.unsqueeze(0)
    options = {"step_size": step_size} if step_size is not None and method in FIXED_STEP_METHODS else None
    if max_num_steps is not None and method not in FIXED_STEP_METHODS:
        options = {"max_num_steps": int(max_num_steps)}
    if y0.dtype in (torch.float16, torch.bfloat16):
        # Under autocast (bf16-mixed) the state and the times stay fp32: in bf16, timestamps 1/128 s apart
        # collide (torchdiffeq refuses them) and the solver's sums lose all but 3 digits.
        y0 = y0.float()
    times = times.to(y0.dtype)
    try:
        with full_fp32(y0.device, enabled=method not in FIXED_STEP_METHODS):
            return _odeint(func, y0, times, method, rtol, atol, options, adjoint)
    except AssertionError as exc:  # torchdiffeq reports a failed solve with assert
        text = str(exc)
        if text.startswith(("underflow in dt", "max_num_steps exceeded")):
            raise ODESolverError(f"{method}, rtol {rtol:g}, atol {atol:g}: {text}") from None
        raise


def _tf32_switches() -> list[tuple[Any, str]]:
    """(object, attribute) of the switches that let CUDA run fp32 matmuls and cuDNN convolutions in TF32:
    torch's `fp32_precision` API where it exists (reading the legacy `allow_tf32` flags there raises once
    a user has set the new one), else the legacy flags."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return [(matmul, "fp32_precision"), (conv, "fp32_precision")]
    return [(matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]


@contextlib.contextmanager
def full_fp32(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Within the block: no autocast on `device`'s type and no TF32 (cuDNN convolutions, CUDA matmuls).

    Adaptive solves need it: their error control compares two estimates of each step to rtol/atol, and
    the rounding of bf16 (8 bits) or TF32 (11 bits) in the function's convolutions shows up in that
    difference as error. vidyn's Vid-ODE decoder took 20 evaluations instead of 14 under either (bf16
    autocast on a CPU; TF32, torch's default for cuDNN convolutions, on an H200 and in a CPU emulation of
    its rounding): docs/speed.md. The switches are process-wide and restored on exit.
    """
    if not enabled:
        yield
        return
    switches = _tf32_switches()
    saved = [getattr(obj, name) for obj, name in switches]
    for obj, name in switches:
        setattr(obj, name, "ieee" if name == "fp32_precision" else False)
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        for (obj, name), value in zip(switches, saved, strict=True):
            setattr(obj, name, value)


class _InFullFp32(nn.Module):
    """`func` evaluated in `full_fp32`: the adjoint method solves its backward ODE after the forward solve
    has returned, outside the block around it (the vector-Jacobian products stay in the ambient setting)."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        with full_fp32(y.device):
            return self.func(t, y)


def _odeint(
    func: nn.Module,
    y0: Tensor,
    times: Tensor,
    method: str,
    rtol: float,
    atol: float,
    options: Any,
    adjoint: bool,
) -> Tensor:
    if adjoint:
        if method not in FIXED_STEP_METHODS:
            func = _InFullFp32(func)  # (same parameters: adjoint_params below are the wrapped function's)
        return odeint_adjoint(
            func,
            y0,
            times,
            rtol=rtol,
            atol=atol,
            method=method,
            options=options,
            adjoint_params=tuple(func.parameters()),
        )
    # One solve shares each TimeBatchedConv2d's Winograd-transformed weight over its evaluations (their
    # weight gradients summed by autograd: batching them over the evaluations measured slower here).
    shared = time_batched_weight_grads(func, enabled=False) if isinstance(func, nn.Module) else None
    with shared or contextlib.nullcontext():
        if method == "dopri5":  # torchdiffeq's algorithm with cheaper stage bookkeeping (vidyn.nn.dopri5)
            steps = (options or {}).get("max_num_steps", 2**31 - 1)
            return dopri5(func, y0, times, rtol=rtol, atol=atol, max_num_steps=steps)
        return odeint(func, y0, times, rtol=rtol, atol=atol, method=method, options=options)


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell of the official Vid-ODE code.

    `r, u = sigmoid(conv_gates([x, h]))`, `c = tanh(conv_can([x, r * h]))`, `h' = (1 - u) * h + u * c`.
    For a sequence, `input_projection` computes the input halves of both convolutions for all steps in
    one batched call and `step` adds the state halves; a zero state (`h=None`) skips them (exactly
    equal: they are convolutions of zeros).
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.input_channels, self.hidden_channels, self.padding = input_channels, hidden_channels, pad
        both = input_channels + hidden_channels
        self.conv_gates = nn.Conv2d(both, 2 * hidden_channels, kernel_size, padding=pad)
        self.conv_can = nn.Conv2d(both, hidden_channels, kernel_size, padding=pad)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        reset, update = torch.sigmoid(self.conv_gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.conv_can(torch.cat([x, reset * h], dim=1)))
        return h + update * (candidate - h)

    def input_projection(self, x: Tensor) -> Tensor:
        """Input halves of both convolutions with their biases: `(N, C_in, h, w) -> (N, 3 * H, h, w)`."""
        ci = self.input_channels
        weight = torch.cat([self.conv_gates.weight[:, :ci], self.conv_can.weight[:, :ci]], dim=0)
        bias = torch.cat([self.conv_gates.bias, self.conv_can.bias])
        return same_conv2d(x, weight, bias)

    def step(self, projected: Tensor, h: Tensor | None) -> Tensor:
        """One update from `input_projection(x)` and the state (`None` for a zero state)."""
        hc, ci = self.hidden_channels, self.input_channels
        gates_x, cand_x = projected[:, : 2 * hc], projected[:, 2 * hc :]
        if h is None:
            return torch.sigmoid(gates_x[:, hc:]) * torch.tanh(cand_x)
        gates = gates_x + same_conv2d(h, self.conv_gates.weight[:, ci:])
        reset, update = torch.sigmoid(gates).chunk(2, dim=1)
        candidate = torch.tanh(cand_x + same_conv2d(reset * h, self.conv_can.weight[:, ci:]))
        return h + update * (candidate - h)


class ODEConvGRU(nn.Module):
    """ODE-ConvGRU encoder (see the module docstring): sequence `(B, T, C, h, w)` -> state `(B, H, h, w)`.

    `forward(inputs, times)` takes the observation times `(T,)` shared by the batch, strictly increasing.
    With `backwards=True` (Vid-ODE) the returned state refers to `times[0]`, else to `times[-1]`.
    """

    def __init__(
        self,
        input_channels: int,
        hidden_channels: int,
        ode_func: nn.Module,
        *,
        method: str = "euler",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        kernel_size: int = 3,
        backwards: bool = True,
    ) -> None:
        super().__init__()
        check_method(method, "encoder_method")
        self.cell = ConvGRUCell(input_channels, hidden_channels, kernel_size)
        self.ode_func = ode_func
        self.method, self.rtol, self.atol, self.backwards = method, rtol, atol, backwards

    def forward(self, inputs: Tensor, times: Tensor) -> Tensor:
        b, t, _, h, w = inputs.shape
        if times.shape != (t,):
            raise ValueError(f"times must have shape ({t},) to match the inputs; got {tuple(times.shape)}")
        order = range(t - 1, -1, -1) if self.backwards else range(t)
        # Input halves of the GRU convolutions for every step at once: (B*T, C, h, w) -> (B, T, 3H, h, w)
        projected = self.cell.input_projection(inputs.flatten(0, 1)).unflatten(0, (b, t))
        state: Tensor | None = None  # the zero state at the first observation processed
        prev = order[0]
        for i in order:
            if state is not None:
                # One solve per interval: a single step for fixed-step methods (the official Euler step).
                span = torch.stack([times[prev], times[i]])
                state = odesolve(
                    self.ode_func, state, span, method=self.method, rtol=self.rtol, atol=self.atol
                )[-1]
            state = self.cell.step(projected[:, i], state)
            prev = i
        assert state is not None
        return state


class LatentODEFunc(nn.Module):
    """`d[y, c]/dt = [f(y, c), 0]` on flat states `(B, C_y * S * S + cond_dim)`: y is a latent map
    `(C_y, S, S)`, c the conditioning vector broadcast over it with the x/y coordinates, and f a conv net
    with tanh hidden layers; `nfe` counts evaluations.

    The first convolution is linear in its input channels, and c and the coordinates do not change during
    a solve, so inside `constant_condition(c)` their part of it (with the bias) is computed once and each
    evaluation convolves only y's C_y channels (16 of 66 in the quick config): the same function, summed
    in another order. Not with the adjoint, whose gradients reach c only through the state."""

    def __init__(self, channels: int, size: int, cond_dim: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels + cond_dim + 2, hidden, 3, padding=1), nn.Tanh()]
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.Tanh()]
        layers.append(nn.Conv2d(hidden, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.shape = (channels, size, size)
        self.state_dim = channels * size * size
        self.nfe = 0
        self._constant: tuple[Tensor, Tensor] | None = None  # (y's weights, the rest's response + bias)

    @contextlib.contextmanager
    def constant_condition(self, cond: Tensor) -> Iterator[None]:
        """Inside the block, evaluations take their condition part from `cond` `(B, cond_dim)` (the class
        docstring); the states solved must carry the same cond."""
        first, c = self.net[0], self.shape[0]
        rest = with_condition(cond.new_zeros(cond.shape[0], 0, *self.shape[1:]), cond)  # (B, D + 2, S, S)
        response = F.conv2d(rest, first.weight[:, c:], first.bias, padding=first.padding)
        self._constant = (first.weight[:, :c].contiguous(), response)
        try:
            yield
        finally:
            self._constant = None

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        self.nfe += 1
        y, cond = state[:, : self.state_dim], state[:, self.state_dim :]
        maps = y.view(-1, *self.shape)
        if self._constant is None:
            dy = self.net(with_condition(maps, cond))  # (B, C_y, S, S)
        else:
            weight, response = self._constant
            dy = self.net[1:](F.conv2d(maps, weight, padding=self.net[0].padding) + response)
        return torch.cat([dy.flatten(1), torch.zeros_like(cond)], dim=1)


def with_condition(maps: Tensor, cond: Tensor) -> Tensor:
    """`(B, C, S, S)` maps with the vector `cond` `(B, D)` broadcast and the x/y coordinates in [-1, 1]
    appended (CoordConv): `(B, C + D + 2, S, S)`."""
    b, _, s, _ = maps.shape
    axis = torch.linspace(-1, 1, s, dtype=maps.dtype, device=maps.device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    coords = torch.stack([xx, yy]).expand(b, 2, s, s)
    return torch.cat([maps, cond[:, :, None, None].expand(-1, -1, s, s), coords], dim=1)
