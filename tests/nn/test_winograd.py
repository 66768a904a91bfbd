"""Winograd F(2x2, r x r) convolutions equal the direct convolution, forward and backward, and run only
where they apply; the recurrences' time-batched Winograd path gives the per-step gradients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidyn.nn import compiled, winograd_switch
from vidyn.nn import winograd as wg
from vidyn.nn.time_batched import TimeBatchedConv2d, time_batched_weight_grads


@pytest.fixture(autouse=True)
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transforms' eager forms (the same functions; compiling every shape and dtype would take
    minutes): `test_compiled_transforms_equal_the_eager_ones` covers the compiled ones."""
    monkeypatch.setitem(compiled._state, "enabled", False)


@pytest.fixture
def winograd_on() -> Iterator[None]:
    wg.set_winograd(True)
    yield
    wg.set_winograd(None)


ALGOS = [(2, 3), (2, 5), (4, 3)]  # (m, r) of F(m x m, r x r)


@pytest.mark.parametrize("m, r", ALGOS)
def test_the_matrices_compute_a_1d_correlation(m: int, r: int) -> None:
    """Y = A^T [(G g) . (B^T d)] gives y[i] = sum_j g[j] d[i + j] for random d, g (float64)."""
    a = m + r - 1
    at, g_mat, bt = (torch.tensor(x, dtype=torch.float64) for x in wg.winograd_matrices((m, r)))
    assert at.shape == (m, a) and g_mat.shape == (a, r) and bt.shape == (a, a)
    gen = torch.Generator().manual_seed(r)
    for _ in range(5):
        d = torch.randn(a, dtype=torch.float64, generator=gen)
        g = torch.randn(r, dtype=torch.float64, generator=gen)
        want = torch.stack([sum(g[j] * d[i + j] for j in range(r)) for i in range(m)])
        torch.testing.assert_close(at @ ((g_mat @ g) * (bt @ d)), want, rtol=1e-12, atol=1e-12)
    assert all(float(v).is_integer() for row in wg.winograd_matrices((m, r))[2] for v in row)


@pytest.mark.parametrize("m, r", ALGOS)
@pytest.mark.parametrize("bias, tanh", [(False, False), (True, False), (True, True), (False, True)],
                         ids=["no_bias", "bias", "bias_tanh", "tanh"])  # fmt: skip
def test_values_and_gradients_equal_the_direct_convolution(m: int, r: int, bias: bool, tanh: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4 * m, 6 * m, dtype=torch.float64, generator=gen).requires_grad_()
    w = torch.randn(7, 5, r, r, dtype=torch.float64, generator=gen).requires_grad_()
    b = torch.randn(7, dtype=torch.float64, generator=gen).requires_grad_() if bias else None
    got = wg.winograd_conv2d(x, 0.2 * w, b, tile=m, tanh=tanh)  # (0.2: tanh away from saturation)
    want = F.conv2d(x, 0.2 * w, b, padding=r // 2)
    want = torch.tanh(want) if tanh else want
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    inputs = [t for t in (x, w, b) if t is not None]
    got_grads = torch.autograd.grad(got, inputs, grad)
    for g_got, g_want in zip(got_grads, torch.autograd.grad(want, inputs, grad), strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-11)
    # output and input gradient channels-last, so the element-wise ops around them see one layout
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert got_grads[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("m, r, tol", [(2, 3, 2e-6), (2, 5, 2e-5), (4, 3, 2e-5)])
def test_float32_error_is_float_rounding(m: int, r: int, tol: float) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, 16, 16, generator=gen)
    w = 0.05 * torch.randn(128, 64, r, r, generator=gen)
    want = F.conv2d(x.double(), w.double(), padding=r // 2)
    err = (wg.winograd_conv2d(x, w, tile=m).double() - want).abs().max() / want.abs().max()
    assert err < tol


def test_compiled_transforms_equal_the_eager_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transforms as TorchInductor compiles them (the training path) against their eager forms."""
    monkeypatch.setitem(compiled._state, "enabled", True)
    gen = torch.Generator().manual_seed(3)
    shape, out_shape = (2, 32, 8, 6), (2, 128, 8, 6)
    x = torch.randn(shape, generator=gen)
    m = torch.randn(16, 24, 128, generator=gen)
    dy = torch.randn(out_shape, generator=gen).contiguous(memory_format=torch.channels_last)
    v = m[..., :32]
    algo = (2, 3)
    pairs = [
        (wg.winograd_input_transform(x, algo), wg._input_transform(x, algo)),
        (wg.winograd_input_adjoint(v, shape, algo), wg._input_transform_adjoint(v, shape, algo)),
        (wg.winograd_output_transform(m, out_shape, algo), wg._output_transform(m, out_shape, algo)),
        (wg.winograd_output_adjoint(dy, algo), wg._output_transform_adjoint(dy, algo)),
    ]
    # the output transform with the bias and tanh in its loop, and its adjoint, against ATen's tanh
    b = torch.randn(128, generator=gen)
    y = torch.tanh(wg._output_transform(m, out_shape, algo) + b.view(1, -1, 1, 1))
    g_pre = dy * (1 - y * y)
    pairs.append((wg.winograd_output_act(m, out_shape, algo, b, True), y))
    got_adjoint = wg.winograd_output_act_adjoint(dy, y, algo, True)
    pairs += zip(got_adjoint, (wg._output_transform_adjoint(g_pre, algo), g_pre.sum((0, 2, 3))), strict=True)
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("m, r", ALGOS)
def test_the_hand_written_adjoints_are_the_transposes(m: int, r: int) -> None:
    """<T x, y> = <x, T^T y> for the input, output and weight transforms (float64)."""
    gen = torch.Generator().manual_seed(2)
    algo, shape = (m, r), (2, 3, 2 * m, 3 * m)
    x = torch.randn(shape, dtype=torch.float64, generator=gen)
    v = wg.winograd_input_transform(x, algo)
    dv = torch.randn(v.shape, dtype=torch.float64, generator=gen)
    rhs = (x * wg.winograd_input_adjoint(dv, shape, algo)).sum()
    torch.testing.assert_close((v * dv).sum(), rhs, rtol=1e-12, atol=0)
    prod = torch.randn(v.shape[0], v.shape[1], 4, dtype=torch.float64, generator=gen)
    y = wg.winograd_output_transform(prod, (2, 4, 2 * m, 3 * m), algo)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    rhs = (prod * wg.winograd_output_adjoint(dy, algo)).sum()
    torch.testing.assert_close((y * dy).sum(), rhs, rtol=1e-12, atol=0)
    w = torch.randn(4, 3, r, r, dtype=torch.float64, generator=gen)
    u = wg.winograd_weight(w, m)
    du = torch.randn(u.shape, dtype=torch.float64, generator=gen)
    rhs = (w * wg.winograd_weight_adjoint(du, algo)).sum()
    torch.testing.assert_close((u * du).sum(), rhs, rtol=1e-12, atol=0)


def test_it_applies_only_to_cpu_training_of_large_same_convolutions(winograd_on: None) -> None:
    conv = nn.Conv2d(32, 128, 3, padding=1)
    x = torch.randn(1, 32, 6, 6)  # F(2, 3): sides not divisible by 4
    assert wg.winograd_applies(conv, x)
    narrow = nn.Conv2d(32, 64, 3, padding=1)  # F(4, 3) pays from 64 outputs, F(2, 3) from 128
    assert wg.winograd_applies(narrow, torch.randn(1, 32, 8, 8)) and not wg.winograd_applies(narrow, x)
    assert not wg.winograd_applies(conv, torch.randn(1, 32, 7, 8))  # odd height
    with torch.no_grad():
        assert not wg.winograd_applies(conv, x)  # inference stays direct
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not wg.winograd_applies(conv, x)
    for other in (
        nn.Conv2d(16, 128, 3, padding=1),  # too few input channels (slower, docs/speed.md)
        nn.Conv2d(32, 32, 3, padding=1),  # too few output channels
        nn.Conv2d(32, 128, 3, padding=1, stride=2),
        nn.Conv2d(32, 128, 3, padding=0),
        nn.Conv2d(32, 128, 7, padding=3),
        nn.Conv2d(32, 128, 3, padding=1, groups=2),
        nn.Conv2d(32, 128, 3, padding=1, padding_mode="reflect"),
    ):
        assert not wg.winograd_applies(other, x)
    wg.set_winograd(False)
    assert not wg.winograd_applies(conv, x)


@pytest.mark.parametrize(
    "env, speedup, want",
    [("", 1.8, False), ("", 3.2, True), ("auto", 2.5, True), ("0", 4.0, False), ("1", 1.0, True)],
)
def test_the_default_is_measured_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, env: str, speedup: float, want: bool
) -> None:
    """Without `VIDYN_WINOGRAD` the process measures once whether this CPU's matrix products are fast
    enough beside its direct convolution (1.8x: session 6's AVX-512 CPU; 3.1-4.3x: this project's AVX2 and
    Zen 4 machines), and keeps the answer; the environment variable overrides the measurement."""
    calls = []
    monkeypatch.setattr(winograd_switch, "product_speedup", lambda: calls.append(1) or speedup)
    monkeypatch.setitem(winograd_switch._state, "default", None)
    monkeypatch.setitem(winograd_switch._state, "enabled", None)
    monkeypatch.setenv("VIDYN_WINOGRAD", env)
    assert wg.winograd_enabled() is want and wg.winograd_enabled() is want
    assert len(calls) == (1 if env in ("", "auto") else 0)


def test_product_speedup_measures_without_touching_the_global_random_stream() -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    speedup = wg.product_speedup(repeats=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert 0.1 < speedup < 100  # 4x a rate ratio: 1.8-4.3 on the CPUs measured (docs/speed.md)


def test_same_conv2d_takes_winograd_only_for_enough_work(winograd_on: None) -> None:
    """`same_conv2d` equals the direct convolution (float64, values and gradients) and takes the Winograd
    path (a channels-last output) only from `MIN_WORK` tiles x C_in x C_out and 64 input channels."""
    torch.manual_seed(0)
    w = torch.randn(128, 64, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(128, dtype=torch.float64, requires_grad=True)
    big = torch.randn(8, 64, 16, 16, dtype=torch.float64, requires_grad=True)  # 128 tiles: 1M of work
    y = wg.same_conv2d(big, w, b)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    ref = F.conv2d(big, w, b, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    got, want = torch.autograd.grad(y, [big, w, b], g), torch.autograd.grad(ref, [big, w, b], g)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)
    small = torch.randn(4, 64, 16, 16, dtype=torch.float64)  # 64 tiles: half the work
    assert wg.same_conv2d(small, w, b).is_contiguous()
    narrow = torch.randn(64, 33, 16, 16, dtype=torch.float64)  # enough work, too few input channels
    assert wg.same_conv2d(narrow, torch.randn(128, 33, 3, 3, dtype=torch.float64)).is_contiguous()
    wg.set_winograd(False)
    assert wg.same_conv2d(big, w, b).is_contiguous()


def test_conv_gru_winograd_path_equals_the_direct_one() -> None:
    """Vid-ODE's ConvGRU (input projection over all frames, then the state convolutions) gives the same
    values and gradients with Winograd on and off (float64)."""
    from vidyn.nn.ode import ConvGRUCell

    torch.manual_seed(0)
    cell = ConvGRUCell(128, 128).double()
    xs = torch.randn(20, 128, 16, 16, dtype=torch.float64, requires_grad=True)  # 5 frames of 4 clips

    def run(enabled: bool) -> tuple[torch.Tensor, ...]:
        wg.set_winograd(enabled)
        try:
            flat = cell.input_projection(xs)
            layout = flat.is_contiguous(memory_format=torch.channels_last) and not flat.is_contiguous()
            projected = flat.unflatten(0, (4, 5))  # (B*T, 3H, h, w) -> (B, T, 3H, h, w)
            h = None
            for t in range(5):
                h = cell.step(projected[:, t], h)
            assert h is not None
            loss = h.square().sum()
            return (torch.tensor(layout), loss, *torch.autograd.grad(loss, [xs, *cell.parameters()]))
        finally:
            wg.set_winograd(None)

    fast, direct = run(True), run(False)
    assert bool(fast[0]) and not bool(direct[0])  # the Winograd path ran, and only when enabled
    for got, want in zip(fast[1:], direct[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _rollout(conv: nn.Module, xs: list[torch.Tensor], enabled: bool) -> torch.Tensor:
    """A recurrence through the conv: h feeds back, so gradients flow through time."""
    h = torch.zeros(xs[0].shape[0], 32, *xs[0].shape[2:], dtype=torch.float64)
    with time_batched_weight_grads(conv, enabled=enabled):
        outs = []
        for x in xs:
            y = conv(torch.cat([x, h], dim=1))  # (B, 128, H, W)
            h = torch.tanh(y[:, :32]) * torch.sigmoid(y[:, 32:64])
            outs.append(y[:, 64:])
    return torch.stack(outs).square().mean() + h.sum()


@pytest.mark.parametrize("r, side", [(3, 6), (3, 8), (5, 6)], ids=["F(2,3)", "F(4,3)", "F(2,5)"])
@pytest.mark.parametrize("batched", [True, False], ids=["time_batched", "per_step"])
def test_recurrent_winograd_gradients_equal_the_direct_ones(
    winograd_on: None, r: int, side: int, batched: bool
) -> None:
    """The weight transform computed once per rollout, the time-batched Winograd weight gradient, and the
    per-step path all equal a plain `nn.Conv2d` rollout (float64)."""
    torch.manual_seed(0)
    conv = TimeBatchedConv2d(40, 128, r, padding=r // 2, bias=True).double()
    plain = nn.Conv2d(40, 128, r, padding=r // 2, bias=True).double()
    plain.load_state_dict(conv.state_dict())
    xs = [torch.randn(2, 8, side, 4, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    seen = []
    channels_last = torch.channels_last
    conv.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=channels_last)))
    loss = _rollout(conv, xs, batched)
    assert all(seen) and len(seen) == 4  # the Winograd path ran (its output is channels-last)
    grads = torch.autograd.grad(loss, [*conv.parameters(), *xs])
    ref_loss = _rollout(plain, xs, batched)
    ref = torch.autograd.grad(ref_loss, [*plain.parameters(), *xs])
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)
    assert conv._winograd_weight is None and conv._winograd_rollout is None  # nothing left behind


@pytest.mark.parametrize("method", ["dopri5", "euler"])
def test_ode_function_winograd_solve_equals_the_direct_one(method: str) -> None:
    """Vid-ODE's ODE function in a training solve: Winograd with the weight transformed once per solve
    gives the direct convolutions' states and gradients (float64), above `ODE_MIN_WORK` only."""
    from vidyn.nn.ode import ConvODEFunc, odesolve

    torch.manual_seed(0)
    func = ConvODEFunc(64, 64, num_layers=1).double()  # 2 x 16 x 16: 32 tiles x 64 x 64 = ODE_MIN_WORK
    y0 = torch.randn(2, 64, 16, 16, dtype=torch.float64, requires_grad=True) * 0.3
    times = torch.tensor([0.0, 0.1, 0.3], dtype=torch.float64)
    seen: list[tuple[bool, bool]] = []  # (gradients on, output contiguous) per evaluation
    func.net[0].register_forward_hook(
        lambda m, i, o: seen.append((torch.is_grad_enabled(), o.is_contiguous()))
    )

    def run(enabled: bool) -> tuple[torch.Tensor, ...]:
        wg.set_winograd(enabled)
        try:
            ys = odesolve(func, y0, times, method=method, rtol=1e-6, atol=1e-8)
            return (ys, *torch.autograd.grad(ys.square().sum(), [y0, *func.parameters()]))
        finally:
            wg.set_winograd(None)

    fast, direct = run(True), run(False)
    n = len(seen) // 2  # training evaluations take Winograd (channels-last) only when enabled; the
    # initial-step probe of dopri5 runs without gradients, so directly
    assert all(not contiguous for grad, contiguous in seen[:n] if grad) and all(c for _, c in seen[n:])
    for got, want in zip(fast, direct, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    small_func = ConvODEFunc(64, 32, num_layers=1).double()  # the quick config's: at most 32 tiles x 32 x 64
    layouts: list[bool] = []
    for conv in small_func.net[::2]:
        conv.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous()))
    wg.set_winograd(True)
    try:
        odesolve(
            small_func,
            torch.randn(8, 64, 8, 8, dtype=torch.float64),
            times,
            method="euler",
            rtol=1e-3,
            atol=1e-4,
        )
    finally:
        wg.set_winograd(None)
    assert layouts and all(layouts)  # all direct
