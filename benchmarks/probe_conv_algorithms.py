"""Could the recurrent predictors' convolutions run faster than oneDNN's direct convolution on this CPU?

Issue 16 asks ConvLSTM / PredRNN for 1.3x (small config) and 1.2x (Moving MNIST config) over OpenSTL,
whose convolutions are the same oneDNN calls as vidyn's and 86-88% of a training step (docs/speed.md).
Two ways of computing the same convolutions with less work, timed against the direct convolution at the
cells' shapes (one thread, process CPU time, median of interleaved repeats):

1. Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016):
   2.25x fewer multiplications for 3x3 kernels. Written with PyTorch ops (input transform as a strided
   depthwise convolution, the 16 element-wise products as one batched matrix product, output transform as
   a grouped transposed convolution), forward + backward through autograd. Its error against the direct
   convolution is printed (float32 rounding, ~1e-7 relative).
2. The weight gradient of all 19 steps of a rollout as one batched call instead of one call per step
   (the per-step data gradients are needed in sequence for backpropagation through time, the weight
   gradient is not).

    python benchmarks/probe_conv_algorithms.py [--repeats 3]

Prints one line per shape; the figures are in docs/speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float32)
_G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float32)
_AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float32)


def winograd_conv3x3(x: Tensor, weight: Tensor) -> Tensor:
    """`F.conv2d(x, weight, padding=1)` for even H, W by Winograd F(2x2, 3x3)."""
    n, c, h, w = x.shape
    k, th, tw = weight.shape[0], h // 2, w // 2
    # input transform B^T d B of every 4x4 tile (stride 2): (N, C*16, th, tw), channel-major
    v = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.kron(_BT, _BT).view(16, 1, 4, 4).repeat(c, 1, 1, 1),
                 stride=2, groups=c)  # fmt: skip
    u = torch.einsum("xi,kci->xkc", torch.kron(_G, _G), weight.flatten(2))  # G g G^T: (16, K, C)
    v = v.view(n, c, 16, th * tw).permute(2, 1, 0, 3).reshape(16, c, n * th * tw)  # (16, C, N*P)
    m = torch.bmm(u, v).view(16, k, n, th, tw).permute(2, 1, 0, 3, 4).reshape(n, k * 16, th, tw)
    a = torch.kron(_AT, _AT).t().reshape(16, 1, 2, 2).repeat(k, 1, 1, 1)  # A^T m A as a transposed conv
    return F.conv_transpose2d(m, a, stride=2, groups=k)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(median_ms(fn, 5))
    return {name: statistics.median(v) for name, v in runs.items()}


def probe_winograd(n: int, c: int, k: int, size: int, repeats: int) -> None:
    x = torch.randn(n, c, size, size, requires_grad=True)
    weight = (0.05 * torch.randn(k, c, 3, 3)).requires_grad_()
    ref = F.conv2d(x, weight, padding=1)
    err = ((winograd_conv3x3(x, weight) - ref).abs().max() / ref.abs().max()).item()
    grad = torch.randn_like(ref)
    ms = interleaved(
        {
            "direct": lambda: F.conv2d(x, weight, padding=1).backward(grad),
            "winograd": lambda: winograd_conv3x3(x, weight).backward(grad),
        },
        repeats,
    )
    ratio = ms["direct"] / ms["winograd"]
    print(f"winograd  x {tuple(x.shape)} -> {k}, k3, fwd+bwd: direct {ms['direct']:.1f} ms, "
          f"winograd {ms['winograd']:.1f} ms ({ratio:.2f}x), max rel err {err:.1e}")  # fmt: skip


def probe_batched_weight_grad(n: int, c: int, k: int, size: int, ks: int, steps: int, repeats: int) -> None:
    xs = [torch.randn(n, c, size, size) for _ in range(steps)]
    gs = [torch.randn(n, k, size, size) for _ in range(steps)]
    weight, pad = torch.randn(k, c, ks, ks), ks // 2

    def wgrad(g: Tensor, x: Tensor) -> object:
        return torch.ops.aten.convolution_backward(
            g, x, weight, [k], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [False, True, True]
        )

    ms = interleaved(
        {
            "per step": lambda: [wgrad(g, x) for x, g in zip(xs, gs, strict=True)],
            "batched": lambda: wgrad(torch.cat(gs), torch.cat(xs)),
        },
        repeats,
    )
    print(f"weight grad of {steps} steps, x ({n}, {c}, {size}, {size}) -> {k}, k{ks}: per step "
          f"{ms['per step']:.1f} ms, one batched call {ms['batched']:.1f} ms "
          f"({ms['per step'] / ms['batched']:.2f}x)")  # fmt: skip


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # ConvLSTM 2x64 k3 B4 (small config): fused [x, h] gate convolutions of layers 1 and 2
    for c in (80, 128):
        probe_winograd(4, c, 256, 16, args.repeats)
    for n, c, k, ks in [(4, 80, 256, 3), (4, 128, 256, 3), (1, 144, 512, 5), (1, 256, 512, 5)]:
        probe_batched_weight_grad(n, c, k, 16, ks, 19, args.repeats)


if __name__ == "__main__":
    main()
