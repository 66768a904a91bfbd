"""Winograd convolution F(m x m, r x r): a "same" r x r convolution with fewer multiplications (CPU training).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016. A stride-1 convolution is
computed tile by tile: every m x m block of outputs reads an a x a block of the padded input (a = m + r - 1),
and

    Y = A^T [ (G g G^T) . (B^T d B) ] A

gives the block exactly with a^2 multiplications per input and output channel pair instead of m^2 r^2:
F(2x2, 3x3) 2.25x fewer, F(4x4, 3x3) 4x fewer, F(2x2, 5x5) 2.78x fewer. 3x3 kernels take m = 4 where the
sides are divisible by 4 (`winograd_tile`), else m = 2; 5x5 kernels m = 2. Summed over input channels,
the a^2 element-wise products become a^2 matrix products `(tiles, C) @ (C, K)`, so the convolution is one
batched matrix product between three cheap linear maps: the input transform (B^T d B of every tile), the
weight transform (G g G^T) and the output transform (A^T m A). Autograd runs the same three maps
transposed, so the backward pass (the input gradient and the weight gradient) gets the same saving.

The matrices come from the Toom-Cook construction with the interpolation points (0, 1, -1) for F(2, 3)
(the classical one) and (0, 1, -1, 2, -2) for F(2, 5) and F(4, 3), plus the point at infinity
(`winograd_matrices`): A^T and G are Vandermonde forms of the points and B^T is solved for exactly in
float64. The result equals the direct convolution up to float32 rounding (relative error ~4e-7 for F(2, 3),
~6e-6 for F(4, 3) and F(2, 5) here; tests compare values and gradients in float64).

Why: where MKL's matrix product runs near oneDNN's direct convolution rate, fewer multiplications are
fewer seconds, provided the transforms are single memory passes: they are written as sums of strided
slices that TorchInductor compiles into one loop each (`vidyn.nn.compiled`), and the output transform's
adjoint is written by hand (Inductor's own was 9 ms where the forward takes 1). `docs/speed.md` has the
measurements. Whether this CPU is such a machine is measured once per process, not read off its
instruction set (`vidyn.nn.winograd_switch`); `VIDYN_WINOGRAD=1` / `set_winograd(True)` forces Winograd,
`VIDYN_WINOGRAD=0` turns it off. Only training on CPU (gradients enabled) takes it: inference, GPUs and
autocast stay direct.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from vidyn.nn.compiled import SMALL_KERNEL_STATIC_SHAPES, compiled_or_eager

# re-exported: callers switch Winograd where they use it
from vidyn.nn.winograd_switch import product_speedup, set_winograd, winograd_enabled  # noqa: F401

# Below these, the transforms cost more than the saved multiplications (docs/speed.md: a 16-channel input
# was 0.69x at F(2, 3) and 0.94x at F(4, 3); 128 -> 64 channels 1.02x at F(2, 3), 1.30x at F(4, 3))
MIN_IN_CHANNELS = 32
MIN_OUT_CHANNELS = {2: 128, 4: 64}  # by tile m
# `same_conv2d` (convolutions outside a module: the ConvGRU's) also needs tiles x C_in x C_out >= MIN_WORK
# and 64 input channels: Vid-ODE's quick config (batch-1 ConvGRU steps on an 8x8 grid) and sde_video's
# 33-channel ConvGRUs were slower by Winograd (docs/speed.md, session 18)
MIN_WORK = 1 << 20
SAME_CONV_MIN_IN_CHANNELS = 64
KERNELS = (3, 5)
POINTS = {3: (0.0, 1.0, -1.0), 5: (0.0, 1.0, -1.0, 2.0, -2.0)}  # by count: m + r - 2 finite points
Algo = tuple[int, int]  # (m, r) of F(m x m, r x r)


def _toom_cook(m: int, r: int) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """`(A^T, G, B^T)` of F(2, r) as nested tuples of floats: `(2, a)`, `(a, r)`, `(a, a)`, a = r + 1.

    Toom-Cook: A^T[i, k] = p_k^i and G[k, j] = p_k^j / prod_{l != k} (p_k - p_l) for the finite points,
    the point at infinity in the last column / row; B^T is then the unique matrix with
    sum_k A^T[i, k] G[k, j] B^T[k, l] = [l = i + j] (correlation), solved in float64.
    """
    pts = POINTS[m + r - 2]
    a = m + r - 1
    at = torch.zeros(m, a, dtype=torch.float64)
    g = torch.zeros(a, r, dtype=torch.float64)
    for k, p in enumerate(pts):
        scale = torch.tensor([p - q for q in pts if q != p], dtype=torch.float64).prod()
        at[:, k] = torch.tensor([p**i for i in range(m)], dtype=torch.float64)
        g[k] = torch.tensor([p**j for j in range(r)], dtype=torch.float64) / scale
    at[m - 1, a - 1] = g[a - 1, r - 1] = 1.0
    # equations (i, j) x unknowns k for every column l of B^T: coef[(i, j), k] = A^T[i, k] G[k, j]
    coef = (at[:, None, :] * g.t()[None, :, :]).reshape(m * r, a)
    target = torch.zeros(m * r, a, dtype=torch.float64)
    for i in range(m):
        for j in range(r):
            target[i * r + j, i + j] = 1.0
    bt = torch.linalg.lstsq(coef, target).solution  # (a, a): column l solves for B^T[:, l]
    if not torch.allclose(coef @ bt, target, atol=1e-12):
        raise AssertionError(f"no exact Winograd F(2, {r}) for points {pts}")
    bt = bt.round(decimals=9) + 0.0  # B^T is integral for these points: exact zeros are skipped taps

    def rows(mat: Tensor) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(v) for v in row) for row in mat)

    return rows(at), rows(g), rows(bt)


_MATRICES = {(m, r): _toom_cook(m, r) for m, r in ((2, 3), (2, 5), (4, 3))}


def winograd_matrices(algo: Algo) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """`(A^T, G, B^T)` of F(m, r) (see `_toom_cook`) for `algo = (m, r)` in (2, 3), (2, 5), (4, 3)."""
    if algo not in _MATRICES:
        raise ValueError(f"Winograd algorithms (m, r): {sorted(_MATRICES)}; got {algo}")
    return _MATRICES[algo]


def winograd_tile(kernel_size: int, height: int, width: int) -> int:
    """m of the F(m x m, r x r) to use: 4 for 3x3 kernels on sides divisible by 4 (1.78x fewer
    multiplications than m = 2 again; docs/speed.md), else 2."""
    return 4 if kernel_size == 3 and height % 4 == 0 and width % 4 == 0 else 2


def _combine(parts: list[Tensor], row: tuple[float, ...]) -> Tensor:
    """`sum_j row[j] * parts[j]`, skipping zero coefficients (constants, so Inductor folds them)."""
    terms = [p if c == 1.0 else (-p if c == -1.0 else c * p) for c, p in zip(row, parts, strict=True) if c]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _tiles_1d(x: Tensor, dim: int, bt: tuple[tuple[float, ...], ...], m: int) -> Tensor:
    """B^T along `dim` of every a-long window at stride m: `(..., mT + a - 1, ...)` -> `(a, ..., T, ...)`."""
    a = len(bt)
    n = (x.shape[dim] - a + 1) // m
    reads = [x.narrow(dim, j, m * n).unflatten(dim, (n, m)).select(dim + 1, 0) for j in range(a)]
    return torch.stack([_combine(reads, row) for row in bt])


def _input_transform(x: Tensor, algo: Algo) -> Tensor:
    """`(N, C, H, W)` -> `(a*a, N*H/m*W/m, C)`: B^T d B of every tile of the "same"-padded input."""
    bt = winograd_matrices(algo)[2]
    m, pad = algo[0], algo[1] // 2
    # channels last, zero padding, and m - 1 more zero rows / columns so every tap's strided read fits
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, pad, pad + m - 1, pad, pad + m - 1))  # (N, H+m+r-2, ..., C)
    v = _tiles_1d(_tiles_1d(xp, 2, bt, m), 2, bt, m)  # (a_h, a_w, N, H/m, W/m, C)
    return v.reshape(len(bt) ** 2, -1, x.shape[1])


def _tiles_1d_adjoint(v: Tensor, dim: int, bt: tuple[tuple[float, ...], ...], m: int) -> Tensor:
    """The transpose of `_tiles_1d`: `(a, ..., T, ...)` (T at `dim` of the trailing dims) ->
    `(..., m (T + (a - 1) // m), ...)`. Tap j of tile t lands on position m t + j: phase j % m, shifted
    by j // m within it; then the m phases interleave."""
    a = len(bt)
    parts = list(v.unbind(0))
    taps = [_combine(parts, tuple(row[j] for row in bt)) for j in range(a)]  # c_j = sum_i B^T[i, j] v_i
    after = [0, 0] * (taps[0].dim() - 1 - dim)
    extra = (a - 1) // m

    def placed(j: int) -> Tensor:  # c_j shifted by j // m within its phase (length T + extra)
        return F.pad(taps[j], [*after, j // m, extra - j // m])

    phases = [_combine([placed(j) for j in range(p, a, m)], (1.0,) * len(range(p, a, m))) for p in range(m)]
    return torch.stack(phases, dim + 1).flatten(dim, dim + 1)


def _input_transform_adjoint(v: Tensor, shape: tuple[int, int, int, int], algo: Algo) -> Tensor:
    """The transpose of `_input_transform`: `(a*a, P, C)` -> `(N, C, H, W)` (channels-last)."""
    bt = winograd_matrices(algo)[2]
    n, c, h, w = shape
    a, m, pad = len(bt), algo[0], algo[1] // 2
    v = v.view(a, a, n, h // m, w // m, c)
    x = _tiles_1d_adjoint(_tiles_1d_adjoint(v, 2, bt, m), 2, bt, m)  # (N, >= H + r - 1, ..., C)
    # a fresh channels-last tensor, not a view into the padded one: the gradients it is added to downstream
    # are channels-last, and element-wise ops on mixed layouts are several times slower
    x = x[:, pad : pad + h, pad : pad + w].permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


def _output_transform(prod: Tensor, shape: tuple[int, int, int, int], algo: Algo) -> Tensor:
    """`(a*a, N*H/m*W/m, K)` -> `(N, K, H, W)`: A^T M A of every tile, the m x m blocks put in place."""
    at = winograd_matrices(algo)[0]
    n, k, h, w = shape
    a, m = len(at[0]), algo[0]
    prod = prod.view(a, a, n, h // m, w // m, k)
    y = torch.stack([_combine(list(prod.unbind(0)), row) for row in at])  # (m, a, N, H/m, W/m, K)
    y = torch.stack([_combine(list(y.unbind(1)), row) for row in at], 1)  # (m_h, m_w, N, H/m, W/m, K)
    # (N, H/m, m_h, W/m, m_w, K) -> (N, H, W, K), returned as the channels-last view (N, K, H, W): every
    # write is a contiguous run of K, and the layout flows through the cell's element-wise ops unchanged
    return y.permute(2, 3, 0, 4, 1, 5).reshape(n, h, w, k).permute(0, 3, 1, 2)


def _output_transform_adjoint(grad: Tensor, algo: Algo) -> Tensor:
    """The transpose of `_output_transform`: `(N, K, H, W)` -> `(a*a, N*H/m*W/m, K)`."""
    at = winograd_matrices(algo)[0]
    a, m = len(at[0]), algo[0]
    cols = tuple(tuple(row[i] for row in at) for i in range(a))  # A, row by row
    n, k, h, w = grad.shape
    g = grad.permute(0, 2, 3, 1).reshape(n, h // m, m, w // m, m, k)  # (N, H/m, m_h, W/m, m_w, K)
    g = g.permute(2, 4, 0, 1, 3, 5)  # (m_h, m_w, N, H/m, W/m, K)
    g = torch.stack([_combine(list(g.unbind(0)), col) for col in cols])  # (a, m_w, ...)
    g = torch.stack([_combine(list(g.unbind(1)), col) for col in cols], 1)  # (a_h, a_w, ...)
    return g.reshape(a * a, -1, k)


# the four transforms, each one compiled loop; `winograd_conv2d` (below) and the rollouts of
# `vidyn.nn.time_batched` pair each with its adjoint in their own autograd Functions.
# The first few input signatures are each compiled for their exact shapes (Inductor's dynamic-shape code of
# these transforms measured slower), then Dynamo's dynamic shapes: a process that trains several models
# (`vidyn compare`) would otherwise run past Dynamo's 8 recompiles per function and fall back to eager.
winograd_input_transform = compiled_or_eager(
    _input_transform, _input_transform, static_shapes=SMALL_KERNEL_STATIC_SHAPES
)
winograd_output_transform = compiled_or_eager(
    _output_transform, _output_transform, static_shapes=SMALL_KERNEL_STATIC_SHAPES
)
winograd_output_adjoint = compiled_or_eager(
    _output_transform_adjoint, _output_transform_adjoint, static_shapes=SMALL_KERNEL_STATIC_SHAPES
)
winograd_input_adjoint = compiled_or_eager(
    _input_transform_adjoint, _input_transform_adjoint, static_shapes=SMALL_KERNEL_STATIC_SHAPES
)


def _output_act(prod: Tensor, shape: tuple[int, int, int, int], algo: Algo, bias: Tensor | None,
                tanh: bool) -> Tensor:  # fmt: skip
    """`_output_transform`, then the bias and (if `tanh`) tanh, in the same loop. tanh as 2 sigmoid(2y) - 1,
    equal to float rounding: ATen's and Inductor's tanh took 1.6-2x as long as this form (docs/speed.md)."""
    y = _output_transform(prod, shape, algo)
    y = y if bias is None else y + bias.view(1, -1, 1, 1)
    return 2 * torch.sigmoid(2 * y) - 1 if tanh else y


def _output_act_adjoint(grad: Tensor, y: Tensor, algo: Algo, tanh: bool) -> tuple[Tensor, Tensor]:
    """The adjoint of `_output_act` given its output `y`: the product's gradient and the bias's."""
    g = grad * (1 - y * y) if tanh else grad
    return _output_transform_adjoint(g, algo), g.sum((0, 2, 3))


winograd_output_act = compiled_or_eager(_output_act, _output_act, static_shapes=SMALL_KERNEL_STATIC_SHAPES)
winograd_output_act_adjoint = compiled_or_eager(
    _output_act_adjoint, _output_act_adjoint, static_shapes=SMALL_KERNEL_STATIC_SHAPES
)


class _WinogradConv(torch.autograd.Function):
    """`x` -> [tanh](conv(x) + bias) from the transformed weight `u`, as one autograd node: the transforms
    are compiled loops with their adjoints written out (Inductor's own adjoint of the compiled input
    transform was several times slower, docs/speed.md "Session 17"), and the bias and tanh ride in the
    output transform's loop, forward and backward (one node instead of five, docs/speed.md "Session 20")."""

    @staticmethod
    def forward(ctx, x: Tensor, u: Tensor, bias: Tensor | None, algo: Algo, tanh: bool) -> Tensor:  # type: ignore[override]
        v = winograd_input_transform(x, algo)  # (a*a, P, C)
        y = winograd_output_act(torch.bmm(v, u), (x.shape[0], u.shape[-1], *x.shape[2:]), algo, bias, tanh)
        ctx.save_for_backward(v, u, y if tanh else None)
        ctx.shape, ctx.algo, ctx.tanh = tuple(x.shape), algo, tanh
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        v, u, y = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)  # as the forward's output (a no-op then)
        # (without tanh, y is unused; without a bias, db is: its reduction rides in the same loop)
        dm, db = winograd_output_act_adjoint(grad, grad if y is None else y, ctx.algo, ctx.tanh)
        need_x, need_u, need_b = ctx.needs_input_grad[:3]
        du = torch.bmm(v.transpose(1, 2), dm) if need_u else None  # (a*a, C, K)
        dx = winograd_input_adjoint(torch.bmm(dm, u.transpose(1, 2)), ctx.shape, ctx.algo) if need_x else None
        return dx, du, db if need_b else None, None, None


def winograd_weight(weight: Tensor, tile: int) -> Tensor:
    """`(K, C, r, r)` -> `(a*a, C, K)`: G g G^T of every filter for F(tile, r), as one matrix product. A
    recurrence computes it once per rollout and passes it to `winograd_conv2d` at every step."""
    k, c, r, _ = weight.shape
    g = torch.tensor(winograd_matrices((tile, r))[1], dtype=weight.dtype, device=weight.device)
    taps = weight.permute(2, 3, 1, 0).reshape(r * r, c * k)  # (r*r, C*K)
    return (torch.kron(g, g) @ taps).view(-1, c, k)  # (a*a, r*r) @ (r*r, C*K)


def winograd_weight_adjoint(grad: Tensor, algo: Algo) -> Tensor:
    """The transpose of `winograd_weight`: `(a*a, C, K)` -> `(K, C, r, r)`."""
    r = algo[1]
    g = torch.tensor(winograd_matrices(algo)[1], dtype=grad.dtype, device=grad.device)
    c, k = grad.shape[1:]
    taps = torch.kron(g, g).t() @ grad.reshape(-1, c * k)  # (r*r, C*K)
    return taps.view(r, r, c, k).permute(3, 2, 0, 1)


def winograd_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    transformed: Tensor | None = None,
    tile: int | None = None,
    tanh: bool = False,
) -> Tensor:
    """`F.conv2d(x, weight, bias, padding=r // 2)` by Winograd F(m x m, r x r), m = `tile` (default
    `winograd_tile`); r in (3, 5), H and W divisible by m. `transformed`: `winograd_weight(weight, m)` if
    already computed. `tanh`: tanh of that instead (fused). The output is channels-last."""
    h, w = x.shape[-2:]
    r = weight.shape[-1]
    if tile is None:  # the tile `transformed` was made for ((m + r - 1)^2 rows), else the default
        tile = winograd_tile(r, h, w) if transformed is None else round(transformed.shape[0] ** 0.5) - r + 1
    m = tile
    if h % m or w % m or weight.shape[-2] != r or (m, r) not in _MATRICES:
        raise ValueError(f"winograd_conv2d: no F({m}, {r}) for input {tuple(x.shape)} and weight "
                         f"{tuple(weight.shape)}")  # fmt: skip
    u = winograd_weight(weight, m) if transformed is None else transformed
    return _WinogradConv.apply(x, u, bias, (m, r), tanh)


def winograd_applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether `conv(x)` takes the Winograd path: CPU training in float32/64 without autocast (and not
    inside `torch.compile`), a square 3x3 or 5x5 kernel with "same" zero padding, stride and dilation 1,
    one group, at least `MIN_IN_CHANNELS` in and `MIN_OUT_CHANNELS[m]` out, even H and W."""
    k = conv.kernel_size[0]
    return (
        conv.kernel_size == (k, k)
        and conv.padding == (k // 2, k // 2)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and winograd_fits(x, conv.weight)
    )


def winograd_fits(x: Tensor, weight: Tensor) -> bool:
    """`winograd_applies` for `F.conv2d(x, weight, padding=r // 2)` (stride 1, one group): the conditions
    on the tensors and the run (CPU training, no autocast, not compiling, Winograd enabled)."""
    k = weight.shape[-1]
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and x.shape[-2] % 2 == 0
        and x.shape[-1] % 2 == 0
        and weight.dim() == 4
        and weight.shape[-2] == k
        and k in KERNELS
        and weight.shape[1] == x.shape[1] >= MIN_IN_CHANNELS
        and weight.shape[0] >= MIN_OUT_CHANNELS[winograd_tile(k, x.shape[-2], x.shape[-1])]
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # a compiled rollout leaves its convolutions to Inductor
        and winograd_enabled()
    )


def winograd_work(x: Tensor, out_channels: int, kernel_size: int) -> int:
    """Tiles x C_in x C_out of a Winograd convolution of `x` `(N, C_in, H, W)`: the size of its batched
    matrix product, which the transforms' fixed costs must be small beside."""
    n, c, h, w = x.shape
    m = winograd_tile(kernel_size, h, w)
    return n * (h // m) * (w // m) * c * out_channels


def same_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.conv2d(x, weight, bias, padding=r // 2)` (r the odd kernel size), by Winograd where
    `winograd_fits` and the work (tiles x C_in x C_out) is at least `MIN_WORK` (then the output is
    channels-last), else direct."""
    if winograd_fits(x, weight) and x.shape[1] >= SAME_CONV_MIN_IN_CHANNELS:
        if winograd_work(x, weight.shape[0], weight.shape[-1]) >= MIN_WORK:
            return winograd_conv2d(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
