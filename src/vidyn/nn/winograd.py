"""Winograd convolution F(2x2, r x r): a "same" r x r convolution with fewer multiplications (CPU training).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016. A stride-1 convolution is
computed tile by tile: every 2x2 block of outputs reads an a x a block of the padded input (a = r + 1), and

    Y = A^T [ (G g G^T) . (B^T d B) ] A

gives the block exactly with a^2 multiplications per input and output channel pair instead of 4 r^2: 2.25x
fewer for r = 3, 2.78x for r = 5. Summed over input channels, the a^2 element-wise products become a^2
matrix products `(tiles, C) @ (C, K)`, so the convolution is one batched matrix product between three
cheap linear maps: the input transform (B^T d B of every tile), the weight transform (G g G^T) and the
output transform (A^T m A). Autograd runs the same three maps transposed, so the backward pass (the input
gradient and the weight gradient) gets the same saving.

The matrices come from the Toom-Cook construction with the interpolation points (0, 1, -1) for r = 3 (the
classical F(2, 3)) and (0, 1, -1, 2, -2) for r = 5, plus the point at infinity (`winograd_matrices`):
A^T and G are Vandermonde forms of the points and B^T is solved for exactly in float64. The result
equals the direct convolution up to float32 rounding (relative error ~1e-6 here; tests compare values and
gradients in float64).

Why: on a CPU without AVX-512 (this project's 2-core AVX2 machines) oneDNN's direct convolution and MKL's
matrix product run at the same rate, so fewer multiplications are fewer seconds, provided the transforms
are single memory passes: they are written as sums of strided slices that TorchInductor compiles into one
loop each (`vidyn.nn.compiled`), and the output transform's adjoint is written by hand (Inductor's own was
9 ms where the forward takes 1). `docs/speed.md` has the measurements. On machines with AVX-512, where
earlier measurements put oneDNN's convolution at twice MKL's matrix-product rate, the direct convolution
stays the default; `VIDYN_WINOGRAD=1` / `set_winograd(True)` forces Winograd, `VIDYN_WINOGRAD=0` turns it
off. Only training on CPU (gradients enabled) takes it: inference, GPUs and autocast stay direct.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.nn.compiled import compiled_or_eager

OUTPUT_TILE = 2  # m of F(m x m, r x r)
# Below these, the transforms cost more than the saved multiplications (docs/speed.md: a 16-channel input
# was 0.69x at 3x3; 128 -> 64 channels 1.02x)
MIN_IN_CHANNELS, MIN_OUT_CHANNELS = 32, 128
POINTS = {3: (0.0, 1.0, -1.0), 5: (0.0, 1.0, -1.0, 2.0, -2.0)}


def _default_enabled() -> bool:
    env = os.environ.get("VIDYN_WINOGRAD", "auto").lower()
    if env in ("0", "false", "off", "no"):
        return False
    if env in ("1", "true", "on", "yes"):
        return True
    return torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX")


_state: dict[str, bool | None] = {"enabled": None, "default": None}


def set_winograd(enabled: bool | None) -> None:
    """Force Winograd convolutions on or off in CPU training for this process (`None`: the default, on for
    CPUs without AVX-512 unless `VIDYN_WINOGRAD` says otherwise)."""
    _state["enabled"] = enabled


def winograd_enabled() -> bool:
    """Whether CPU training may take the Winograd path (`set_winograd`, `VIDYN_WINOGRAD`, the CPU)."""
    if _state["enabled"] is not None:
        return bool(_state["enabled"])
    if _state["default"] is None:
        _state["default"] = _default_enabled()
    return bool(_state["default"])


def _toom_cook(kernel_size: int) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """`(A^T, G, B^T)` of F(2, r) as nested tuples of floats: `(2, a)`, `(a, r)`, `(a, a)`, a = r + 1.

    Toom-Cook: A^T[i, k] = p_k^i and G[k, j] = p_k^j / prod_{l != k} (p_k - p_l) for the finite points,
    the point at infinity in the last column / row; B^T is then the unique matrix with
    sum_k A^T[i, k] G[k, j] B^T[k, l] = [l = i + j] (correlation), solved in float64.
    """
    pts, m, r = POINTS[kernel_size], OUTPUT_TILE, kernel_size
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


_MATRICES = {r: _toom_cook(r) for r in POINTS}


def winograd_matrices(kernel_size: int) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """`(A^T, G, B^T)` of F(2, r) (see `_toom_cook`) for r in `POINTS`."""
    if kernel_size not in _MATRICES:
        raise ValueError(f"Winograd kernels: {sorted(_MATRICES)}; got {kernel_size}")
    return _MATRICES[kernel_size]


def _combine(parts: list[Tensor], row: tuple[float, ...]) -> Tensor:
    """`sum_j row[j] * parts[j]`, skipping zero coefficients (constants, so Inductor folds them)."""
    terms = [p if c == 1.0 else (-p if c == -1.0 else c * p) for c, p in zip(row, parts, strict=True) if c]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _tiles_1d(x: Tensor, dim: int, bt: tuple[tuple[float, ...], ...]) -> Tensor:
    """B^T along `dim` of every a-long window at stride 2: `(..., 2T + a - 1, ...)` -> `(a, ..., T, ...)`."""
    a = len(bt)
    n = (x.shape[dim] - a + 1) // 2
    reads = [x.narrow(dim, j, 2 * n).unflatten(dim, (n, 2)).select(dim + 1, 0) for j in range(a)]
    return torch.stack([_combine(reads, row) for row in bt])


def _input_transform(x: Tensor, kernel_size: int) -> Tensor:
    """`(N, C, H, W)` -> `(a*a, N*H/2*W/2, C)`: B^T d B of every tile of the "same"-padded input."""
    bt = winograd_matrices(kernel_size)[2]
    pad = kernel_size // 2
    # channels last, zero padding, and one more zero row / column so every tap's strided read fits
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, pad, pad + 1, pad, pad + 1))  # (N, H + r, W + r, C)
    v = _tiles_1d(_tiles_1d(xp, 2, bt), 2, bt)  # (a_h, a_w, N, H/2, W/2, C)
    return v.reshape(len(bt) ** 2, -1, x.shape[1])


def _tiles_1d_adjoint(v: Tensor, dim: int, bt: tuple[tuple[float, ...], ...]) -> Tensor:
    """The transpose of `_tiles_1d`: `(a, ..., T, ...)` (T at `dim` of the trailing dims) ->
    `(..., 2T + a - 2, ...)`. Tap j of tile t lands on position 2t + j: even taps 2q on the even positions
    shifted by q, odd taps 2q + 1 on the odd ones, then the two phases interleave."""
    a = len(bt)
    parts = list(v.unbind(0))
    taps = [_combine(parts, tuple(row[j] for row in bt)) for j in range(a)]  # c_j = sum_i B^T[i, j] v_i
    after = [0, 0] * (taps[0].dim() - 1 - dim)
    half = a // 2

    def placed(j: int) -> Tensor:  # c_j shifted by j // 2 within its phase (length T + a/2 - 1)
        return F.pad(taps[j], [*after, j // 2, half - 1 - j // 2])

    even = _combine([placed(j) for j in range(0, a, 2)], (1.0,) * half)
    odd = _combine([placed(j) for j in range(1, a, 2)], (1.0,) * half)
    return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)


def _input_transform_adjoint(v: Tensor, shape: tuple[int, int, int, int], kernel_size: int) -> Tensor:
    """The transpose of `_input_transform`: `(a*a, P, C)` -> `(N, C, H, W)` (channels-last)."""
    bt = winograd_matrices(kernel_size)[2]
    n, c, h, w = shape
    a, pad = len(bt), kernel_size // 2
    v = v.view(a, a, n, h // 2, w // 2, c)
    x = _tiles_1d_adjoint(_tiles_1d_adjoint(v, 2, bt), 2, bt)  # (N, H + r - 1, W + r - 1, C)
    return x[:, pad : pad + h, pad : pad + w].permute(0, 3, 1, 2)


def _output_transform(m: Tensor, shape: tuple[int, int, int, int], kernel_size: int) -> Tensor:
    """`(a*a, N*H/2*W/2, K)` -> `(N, K, H, W)`: A^T m A of every tile, the 2x2 blocks put in place."""
    at = winograd_matrices(kernel_size)[0]
    n, k, h, w = shape
    a = len(at[0])
    m = m.view(a, a, n, h // 2, w // 2, k)
    y = torch.stack([_combine(list(m.unbind(0)), row) for row in at])  # (2, a, N, H/2, W/2, K)
    y = torch.stack([_combine(list(y.unbind(1)), row) for row in at], 1)  # (2_h, 2_w, N, H/2, W/2, K)
    # (N, H/2, 2_h, W/2, 2_w, K) -> (N, H, W, K), returned as the channels-last view (N, K, H, W): every
    # write is a contiguous run of K, and the layout flows through the cell's element-wise ops unchanged
    return y.permute(2, 3, 0, 4, 1, 5).reshape(n, h, w, k).permute(0, 3, 1, 2)


def _output_transform_adjoint(grad: Tensor, kernel_size: int) -> Tensor:
    """The transpose of `_output_transform`: `(N, K, H, W)` -> `(a*a, N*H/2*W/2, K)`."""
    at = winograd_matrices(kernel_size)[0]
    a = len(at[0])
    cols = tuple(tuple(row[i] for row in at) for i in range(a))  # A, row by row
    n, k, h, w = grad.shape
    g = grad.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, k)  # (N, H/2, 2_h, W/2, 2_w, K)
    g = g.permute(2, 4, 0, 1, 3, 5)  # (2_h, 2_w, N, H/2, W/2, K)
    g = torch.stack([_combine(list(g.unbind(0)), col) for col in cols])  # (a, 2_w, ...)
    g = torch.stack([_combine(list(g.unbind(1)), col) for col in cols], 1)  # (a_h, a_w, ...)
    return g.reshape(a * a, -1, k)


# the four transforms, each one compiled loop (for callers that run their own backward: the rollouts of
# `vidyn.nn.time_batched`); `winograd_input_transform` is also differentiable through Inductor's adjoint
winograd_input_transform = compiled_or_eager(_input_transform, _input_transform, dynamic=False)
winograd_output_transform = compiled_or_eager(_output_transform, _output_transform, dynamic=False)
winograd_output_adjoint = compiled_or_eager(
    _output_transform_adjoint, _output_transform_adjoint, dynamic=False
)
winograd_input_adjoint = compiled_or_eager(_input_transform_adjoint, _input_transform_adjoint, dynamic=False)


class _OutputTransform(torch.autograd.Function):
    """`_output_transform` with its adjoint written out (one compiled loop each way)."""

    @staticmethod
    def forward(ctx, m: Tensor, shape: tuple[int, int, int, int], kernel_size: int) -> Tensor:  # type: ignore[override]
        ctx.kernel_size = kernel_size
        return winograd_output_transform(m, shape, kernel_size)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous(memory_format=torch.channels_last)  # as the forward's output (a no-op then)
        return winograd_output_adjoint(grad, ctx.kernel_size), None, None


def winograd_weight(weight: Tensor) -> Tensor:
    """`(K, C, r, r)` -> `(a*a, C, K)`: G g G^T of every filter, as one matrix product. A recurrence
    computes it once per rollout and passes it to `winograd_conv2d` at every step (`transformed`)."""
    k, c, r, _ = weight.shape
    g = torch.tensor(winograd_matrices(r)[1], dtype=weight.dtype, device=weight.device)
    taps = weight.permute(2, 3, 1, 0).reshape(r * r, c * k)  # (r*r, C*K)
    return (torch.kron(g, g) @ taps).view(-1, c, k)  # (a*a, r*r) @ (r*r, C*K)


def winograd_weight_adjoint(grad: Tensor, kernel_size: int) -> Tensor:
    """The transpose of `winograd_weight`: `(a*a, C, K)` -> `(K, C, r, r)`."""
    r = kernel_size
    g = torch.tensor(winograd_matrices(r)[1], dtype=grad.dtype, device=grad.device)
    c, k = grad.shape[1:]
    taps = torch.kron(g, g).t() @ grad.reshape(-1, c * k)  # (r*r, C*K)
    return taps.view(r, r, c, k).permute(3, 2, 0, 1)


def winograd_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, transformed: Tensor | None = None
) -> Tensor:
    """`F.conv2d(x, weight, bias, padding=r // 2)` by Winograd F(2x2, r x r); r in (3, 5), H and W even.
    `transformed`: `winograd_weight(weight)` if already computed. The output is channels-last."""
    n, _, h, w = x.shape
    r = weight.shape[-1]
    if h % 2 or w % 2 or weight.shape[-2] != r or r not in POINTS:
        raise ValueError(f"winograd_conv2d needs even H, W and a 3x3 or 5x5 kernel; got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)}")  # fmt: skip
    v = winograd_input_transform(x, r)  # (a*a, P, C)
    u = winograd_weight(weight) if transformed is None else transformed
    m = torch.bmm(v, u)  # (a*a, P, K)
    y = _OutputTransform.apply(m, (n, weight.shape[0], h, w), r)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def winograd_applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether `conv(x)` takes the Winograd path: CPU training in float32/64 without autocast (and not
    inside `torch.compile`), a square 3x3 or 5x5 kernel with "same" zero padding, stride and dilation 1,
    one group, at least `MIN_IN_CHANNELS` in and `MIN_OUT_CHANNELS` out, even H and W."""
    k = conv.kernel_size[0]
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and x.shape[-2] % 2 == 0
        and x.shape[-1] % 2 == 0
        and conv.kernel_size == (k, k)
        and k in POINTS
        and conv.in_channels >= MIN_IN_CHANNELS
        and conv.out_channels >= MIN_OUT_CHANNELS
        and conv.padding == (k // 2, k // 2)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # a compiled rollout leaves its convolutions to Inductor
        and winograd_enabled()
    )
