"""Tests for vidyn.nn.warp (flow warping) and vidyn.nn.ode (conv ODE function, solver, ODE-ConvGRU)."""

from __future__ import annotations

import math

import pytest
import torch

from vidyn.errors import VidynError
from vidyn.nn.ode import ConvGRUCell, ConvODEFunc, ODEConvGRU, full_fp32, odesolve
from vidyn.nn.warp import AffineRegionFlow, warp


def _image(b: int = 2, c: int = 3, h: int = 7, w: int = 9) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


def test_zero_flow_is_identity() -> None:
    img = _image()
    out = warp(img, torch.zeros(2, 2, 7, 9))
    torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


def test_integer_flow_translates_exactly() -> None:
    img = _image()
    flow = torch.zeros(2, 2, 7, 9)
    flow[:, 0] = 2.0  # sample 2 pixels to the right
    flow[:, 1] = -1.0  # and 1 pixel up
    out = warp(img, flow)
    # out[y, x] = img[y - 1, x + 2] wherever that is inside the image
    torch.testing.assert_close(out[:, :, 1:, :-2], img[:, :, :-1, 2:], atol=1e-6, rtol=0)
    # outside, the border pixel repeats (padding_mode="border")
    torch.testing.assert_close(out[:, :, 1:, -1], img[:, :, :-1, -1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :, 0, :-2], img[:, :, 0, 2:], atol=1e-6, rtol=0)


def test_half_pixel_flow_averages_neighbours() -> None:
    img = _image()
    flow = torch.zeros(2, 2, 7, 9)
    flow[:, 0] = 0.5
    out = warp(img, flow)
    torch.testing.assert_close(out[..., :-1], 0.5 * (img[..., :-1] + img[..., 1:]), atol=1e-6, rtol=0)


def test_warp_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        warp(_image(), torch.zeros(2, 2, 7, 8))


def _regions(params: list[float], logits: torch.Tensor) -> torch.Tensor:
    """AffineRegionFlow with one region whose (A - I, b) is `params` (b in pixels), on `logits`."""
    flow = AffineRegionFlow(3, 5, 1, pixel_scale=1.0)
    with torch.no_grad():
        flow.from_frame.bias.copy_(torch.tensor(params))
    p, _, h, w = logits.shape
    return flow(torch.rand(p, 3, h, w), torch.rand(p, 5, 2, 2), logits)


def test_affine_regions_start_still_and_translate_their_region_only() -> None:
    logits = torch.full((1, 2, 12, 12), -20.0)
    logits[:, 0] = 20.0  # background everywhere but a 4x4 square at rows 2-5, cols 6-9
    logits[:, 0, 2:6, 6:10], logits[:, 1, 2:6, 6:10] = -20.0, 20.0
    torch.testing.assert_close(
        AffineRegionFlow(3, 5, 1, pixel_scale=1.0)(torch.rand(1, 3, 12, 12), torch.rand(1, 5, 2, 2), logits),
        torch.zeros(1, 2, 12, 12),
    )
    flow = _regions([0.0, 0.0, 0.0, 0.0, -3.0, 2.0], logits)
    torch.testing.assert_close(flow[0, :, 2:6, 6:10], torch.tensor([-3.0, 2.0]).view(2, 1, 1).expand(2, 4, 4))
    assert flow[0, :, :2].abs().max() < 1e-6 and flow[0, :, 6:].abs().max() < 1e-6


def test_affine_region_turns_about_its_own_centroid_and_keeps_its_shape() -> None:
    """A quarter turn (A = R90) of a square region: the centroid's flow is b alone, and the warp carries
    the region's pixels as one rigid piece (a rotated square of the source, sampled exactly)."""
    logits = torch.full((1, 2, 11, 11), -20.0)
    logits[:, 0] = 20.0
    logits[:, 0, 3:8, 2:7], logits[:, 1, 3:8, 2:7] = -20.0, 20.0  # a 5x5 square centred at (x 4, y 5)
    turn = [-1.0, -1.0, 1.0, -1.0]  # A - I for A = [[0, -1], [1, 0]]
    flow = _regions([*turn, 1.0, 0.0], logits)
    torch.testing.assert_close(flow[0, :, 5, 4], torch.tensor([1.0, 0.0]))  # centroid: b only
    source = torch.rand(1, 1, 11, 11, generator=torch.Generator().manual_seed(3))
    out = warp(source, flow)[0, 0, 3:8, 2:7]  # (5, 5): out[y, x] = source[c + A (p - c) + b]
    dy, dx = torch.meshgrid(torch.arange(-2, 3), torch.arange(-2, 3), indexing="ij")
    expected = source[0, 0, 5 + dx, 5 - dy]  # x' = 4 + 1 - dy, y' = 5 + dx
    torch.testing.assert_close(out, expected)


def test_a_similarity_region_turns_and_scales_without_shear() -> None:
    """`transform="similarity"`: (u, theta) give A = s R(theta), s = 3 ** tanh(u); a quarter turn at
    scale 2 moves the pixel one step right of the centroid to two steps below it in the source; s stays
    in [1/3, 3]."""
    logits = torch.full((1, 2, 9, 9), 20.0)  # one region over the whole frame: centroid (4, 4)
    logits[:, 0] = -20.0
    flow = AffineRegionFlow(3, 5, 1, pixel_scale=1.0, transform="similarity")
    with torch.no_grad():
        flow.from_frame.bias.copy_(
            torch.tensor([math.atanh(math.log(2.0) / math.log(3.0)), math.pi / 2, 0, 0])
        )
    out = flow(torch.rand(1, 3, 9, 9), torch.rand(1, 5, 2, 2), logits)
    source = torch.tensor([5.0, 4.0]) + out[0, :, 4, 5]  # pixel (x 5, y 4) samples from here
    torch.testing.assert_close(source, torch.tensor([4.0, 6.0]), atol=1e-5, rtol=0)
    with torch.no_grad():
        flow.from_frame.bias.copy_(torch.tensor([-50.0, 0.0, 0.0, 0.0]))  # as small as the scale goes
    out = flow(torch.rand(1, 3, 9, 9), torch.rand(1, 5, 2, 2), logits)
    torch.testing.assert_close(out[0, :, 4, 7], torch.tensor([-2.0, 0.0]))  # 3 px right -> 1 px right
    with pytest.raises(ValueError, match="transform"):
        AffineRegionFlow(3, 5, 1, pixel_scale=1.0, transform="shear")


def _func(channels: int = 4, seed: int = 0) -> ConvODEFunc:
    torch.manual_seed(seed)
    return ConvODEFunc(channels, 6, num_layers=1)


def test_ode_func_counts_evaluations_per_method() -> None:
    func, y0 = _func(), torch.randn(2, 4, 5, 5)
    times = torch.tensor([0.0, 0.3, 1.0])
    for method, per_step in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
        func.nfe = 0
        out = odesolve(func, y0, times, method=method, rtol=1e-3, atol=1e-4)
        assert out.shape == (3, 2, 4, 5, 5)
        assert func.nfe == per_step * 2  # fixed-step methods step on the requested times
    func.nfe = 0
    odesolve(func, y0, times, method="rk4", rtol=1e-3, atol=1e-4, step_size=0.25)
    assert func.nfe == 4 * 4  # grid 0, .25, .5, .75, 1.0
    func.nfe = 0
    odesolve(func, y0, times, method="dopri5", rtol=1e-3, atol=1e-4)
    assert func.nfe >= 8  # initial-step selection plus at least one 6-stage step


def test_odesolve_single_time_and_bad_method() -> None:
    y0 = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(
        odesolve(_func(), y0, torch.tensor([0.5]), method="rk4", rtol=1e-3, atol=1e-4)[0], y0
    )
    with pytest.raises(VidynError, match="choose one of"):
        odesolve(_func(), y0, torch.tensor([0.0, 1.0]), method="rk45", rtol=1e-3, atol=1e-4)


def test_odesolve_constant_field_is_exact_at_requested_times() -> None:
    func = _func()
    last = func.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 0.5)  # dh/dt = 0.5 everywhere
    y0 = torch.randn(2, 4, 3, 3)
    times = torch.tensor([0.1, 0.35, 0.4, 1.3])
    for method in ("euler", "rk4", "dopri5"):
        out = odesolve(func, y0, times, method=method, rtol=1e-6, atol=1e-8)
        expected = y0 + 0.5 * (times - times[0]).view(-1, 1, 1, 1, 1)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_adjoint_gradients_match_direct_backpropagation() -> None:
    func, y0 = _func(), torch.randn(1, 4, 4, 4)
    times = torch.tensor([0.0, 0.5, 1.0])
    grads = []
    for adjoint in (False, True):
        func.zero_grad()
        odesolve(
            func, y0, times, method="dopri5", rtol=1e-7, atol=1e-9, adjoint=adjoint
        ).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in func.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


def test_gru_cell_projection_path_equals_forward() -> None:
    torch.manual_seed(0)
    cell = ConvGRUCell(5, 4).double()
    x, h = torch.randn(2, 5, 6, 6, dtype=torch.float64), torch.randn(2, 4, 6, 6, dtype=torch.float64)
    projected = cell.input_projection(x)
    torch.testing.assert_close(cell.step(projected, h), cell(x, h))
    torch.testing.assert_close(cell.step(projected, None), cell(x, torch.zeros_like(h)))


def test_ode_conv_gru_runs_backwards_with_euler_steps() -> None:
    torch.manual_seed(0)
    enc = ODEConvGRU(3, 4, ConvODEFunc(4, 6, num_layers=1), method="euler").double()
    x = torch.randn(2, 3, 3, 5, 5, dtype=torch.float64)
    times = torch.tensor([0.0, 0.2, 0.5], dtype=torch.float64)
    # Reference: h = 0 at the last time; GRU update; one Euler step back to each earlier time; GRU update.
    h = enc.cell(x[:, 2], torch.zeros(2, 4, 5, 5, dtype=torch.float64))
    h = enc.cell(x[:, 1], h + (0.2 - 0.5) * enc.ode_func(None, h))
    h = enc.cell(x[:, 0], h + (0.0 - 0.2) * enc.ode_func(None, h))
    torch.testing.assert_close(enc(x, times), h)
    enc.ode_func.nfe = 0
    moved = enc(x, torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64))
    assert enc.ode_func.nfe == 2
    assert not torch.allclose(moved, h)  # the observation times matter


def test_ode_conv_gru_adaptive_and_rk4_agree_closely() -> None:
    torch.manual_seed(0)
    func = ConvODEFunc(4, 6, num_layers=1)
    x = torch.randn(1, 3, 3, 4, 4)
    times = torch.tensor([0.0, 0.05, 0.1])
    outs = [ODEConvGRU(3, 4, func, method=m, rtol=1e-6, atol=1e-8) for m in ("rk4", "dopri5")]
    outs[1].cell.load_state_dict(outs[0].cell.state_dict())
    torch.testing.assert_close(outs[0](x, times), outs[1](x, times), atol=1e-5, rtol=1e-4)


def test_odesolve_keeps_times_and_state_in_fp32_under_bf16_autocast() -> None:
    # bf16 has 8 bits of mantissa: 1.0 and 1.004 are the same number, which made torchdiffeq refuse
    # the times of a bf16-mixed Vid-ODE run ("t must be strictly increasing").
    func = ConvODEFunc(4, 4, 1)
    times = torch.tensor([0.0, 1.0, 1.004, 1.3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y0 = torch.nn.functional.conv2d(torch.rand(1, 4, 4, 4), torch.rand(4, 4, 1, 1))  # bf16, as in a model
        assert y0.dtype == torch.bfloat16
        out = odesolve(func, y0, times, method="euler", rtol=1e-3, atol=1e-4)
    assert out.shape == (4, 1, 4, 4, 4) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())


class _PrecisionProbe(torch.nn.Module):
    """dy/dt = conv(y), recording the dtype of its convolution and the TF32 switches at each evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.seen: list[tuple[torch.dtype, str, str]] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(self.conv(y))
        switches = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
        self.seen.append((out.dtype, *switches))
        return out


@pytest.fixture
def tf32_on():
    """TF32 allowed for CUDA matmuls and cuDNN convolutions (torch's fp32_precision API), as a user may set
    it; the previous switches are restored after the test."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision, torch.get_float32_matmul_precision())
    matmul.fp32_precision = conv.fp32_precision = "tf32"
    yield
    matmul.fp32_precision, conv.fp32_precision = before[:2]
    torch.set_float32_matmul_precision(before[2])


def test_adaptive_solves_run_in_full_fp32_and_fixed_step_solves_in_the_ambient_precision(tf32_on) -> None:
    """bf16 or TF32 rounding in the function reads as error to an adaptive solver's step control (Vid-ODE's
    decoder took 20 evaluations instead of 14): adaptive solves switch autocast and TF32 off, so under
    bf16 autocast they compute exactly the fp32 solve, and the switches are restored after."""
    torch.manual_seed(0)
    func, y0 = _PrecisionProbe(), torch.rand(2, 4, 6, 6)
    times = torch.tensor([0.0, 0.5, 1.0])
    fp32 = odesolve(func, y0, times, method="dopri5", rtol=1e-3, atol=1e-4)
    assert func.seen and set(func.seen) == {(torch.float32, "ieee", "ieee")}
    func.seen = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = odesolve(func, y0, times, method="dopri5", rtol=1e-3, atol=1e-4)
        assert set(func.seen) == {(torch.float32, "ieee", "ieee")}
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == (
            "tf32",
            "tf32",
        )
        func.seen = []
        odesolve(func, y0, times, method="rk4", rtol=1e-3, atol=1e-4)
        assert set(func.seen) == {(torch.bfloat16, "tf32", "tf32")}  # fixed steps: the user's choice
    torch.testing.assert_close(mixed, fp32, rtol=0, atol=0)


def test_the_adjoint_backward_solve_runs_in_full_fp32_too(tf32_on) -> None:
    """The adjoint method solves its backward ODE after `odesolve` has returned: its evaluations of the
    function are in full fp32 as well (under bf16 autocast they were bf16: a dopri5 solve at rtol 1e-5 / atol
    1e-6 took 434 backward evaluations against 38)."""
    torch.manual_seed(0)
    func, y0 = _PrecisionProbe(), torch.rand(2, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = odesolve(
            func, y0, torch.tensor([0.0, 1.0]), method="dopri5", rtol=1e-3, atol=1e-4, adjoint=True
        )
        forward_evals, func.seen = len(func.seen), []
        out.square().sum().backward()
    assert forward_evals > 0 and func.seen  # the backward solve evaluated the function
    assert set(func.seen) == {(torch.float32, "ieee", "ieee")}
    assert func.conv.weight.grad is not None


def test_full_fp32_leaves_the_users_matmul_precision_as_it_was() -> None:
    before = torch.get_float32_matmul_precision()
    try:
        for precision in ("medium", "high", "highest"):
            torch.set_float32_matmul_precision(precision)
            with full_fp32(torch.device("cpu")):
                pass
            assert torch.get_float32_matmul_precision() == precision
    finally:
        torch.set_float32_matmul_precision(before)
