"""vidyn's Dormand-Prince solver takes torchdiffeq's dopri5 steps: the same function evaluations, the same
states up to float rounding, gradients up to the step-size term it leaves out, the same failures."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint

from vidyn.nn.dopri5 import _initial_step, _Reversed, dopri5
from vidyn.nn.ode import ConvODEFunc, ODESolverError, odesolve

GRIDS = {
    "regular": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
    "irregular": [0.0, 0.05, 0.7, 1.5],
    "decreasing": [0.5, 0.2, 0.0],  # the ODE-ConvGRU encoder runs backwards in time
}


def _func(scale: float) -> ConvODEFunc:
    torch.manual_seed(0)
    func = ConvODEFunc(4, 8, num_layers=1)
    with torch.no_grad():  # larger weights: faster dynamics, more (and rejected) steps
        for p in func.parameters():
            p.mul_(scale)
    return func


@pytest.mark.parametrize("grid", GRIDS.values(), ids=list(GRIDS))
@pytest.mark.parametrize("scale, tol", [(1.0, 1e-3), (4.0, 1e-5)], ids=["slow", "fast"])
def test_it_takes_torchdiffeqs_steps(grid: list[float], scale: float, tol: float) -> None:
    # float64: float32 rounding differs between CPU kernels (AVX2 / AVX-512) and can flip an accept/reject
    # decision of the tight-tolerance solve, after which the two solvers' steps part (seen: 32 against 44)
    func = _func(scale).double()
    y0 = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y0.requires_grad_(True)
    times = torch.tensor(grid, dtype=torch.float64)
    forward = func if grid[1] > grid[0] else _Reversed(func)  # torchdiffeq solves in -t then
    with torch.no_grad():  # our first step, for torchdiffeq to take without differentiating its size
        t0 = times[0].double() * (1 if forward is func else -1)
        first = _initial_step(forward, t0, y0, forward(t0, y0), tol, tol / 10).item()
    results = []
    for solve in (
        lambda: odeint(func, y0, times, rtol=tol, atol=tol / 10, method="dopri5"),
        lambda: dopri5(func, y0, times, rtol=tol, atol=tol / 10),
        lambda: odeint(
            func, y0, times, rtol=tol, atol=tol / 10, method="dopri5", options={"first_step": first}
        ),
    ):
        func.nfe = 0
        ys = solve()
        grads = torch.autograd.grad(ys.square().sum(), [y0, *func.parameters()])
        results.append((ys, func.nfe, grads))
    (ref, ref_nfe, ref_grads), (ours, nfe, grads), (_, fixed_nfe, fixed_grads) = results
    assert nfe == ref_nfe == fixed_nfe + 1 and (scale == 1.0 or nfe > 20)  # (+1: the initial-step probe)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours[0], y0)
    for got, fixed, want in zip(grads, fixed_grads, ref_grads, strict=True):
        assert _rel(got, fixed) < 2e-5  # the same steps, their sizes held fixed: float rounding
        # torchdiffeq also differentiates the first step's size: a term of the solver error's order
        assert _rel(got, want) < 2e-3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_odesolve_takes_it_for_dopri5_and_keeps_torchdiffeqs_errors() -> None:
    func = _func(4.0)
    y0 = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    times = torch.tensor([0.0, 2.0])
    want = dopri5(func, y0, times, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(odesolve(func, y0, times, method="dopri5", rtol=1e-5, atol=1e-6), want)
    with pytest.raises(ODESolverError, match="max_num_steps exceeded"):
        odesolve(func, y0, times, method="dopri5", rtol=1e-5, atol=1e-6, max_num_steps=2)
    with pytest.raises(ODESolverError, match="underflow in dt"):  # diverged dynamics: a NaN step size
        odesolve(func, torch.full_like(y0, float("nan")), times, method="dopri5", rtol=1e-5, atol=1e-6)


def test_a_channels_last_function_keeps_the_solve_in_its_layout() -> None:
    # A Winograd ODE function returns channels-last: the state, the stage combinations and the gradients
    # flowing back into the evaluations then share that layout (mixed layouts are slow), same values
    # (float64: the layouts sum in different orders).
    func = _func(1.0).double()
    channels_last = torch.channels_last
    states, grads = [], []

    def recording(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        states.append(y.is_contiguous(memory_format=channels_last))
        out = func(t, y).contiguous(memory_format=channels_last)
        if out.requires_grad:
            out.register_hook(lambda g: grads.append(g.is_contiguous(memory_format=channels_last)))
        return out

    gen = torch.Generator().manual_seed(3)
    y0 = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    times = torch.tensor(GRIDS["regular"], dtype=torch.float64)
    solved = []
    for f in (recording, func):
        ys = dopri5(f, y0, times, rtol=1e-3, atol=1e-4)
        solved.append((ys, torch.autograd.grad(ys.square().sum(), [y0, *func.parameters()])))
    (ours, our_grads), (plain, plain_grads) = solved
    assert not states[0] and all(states[1:]) and len(states) > 10  # all but the caller's y0
    assert len(grads) == len(states) - 1 and all(grads)  # (the initial-step probe has no gradient)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(our_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
