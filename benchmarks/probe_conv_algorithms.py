"""Are the recurrent predictors' convolutions faster by Winograd's algorithm than by oneDNN's direct one?

Issue 16 asks ConvLSTM / PredRNN for 1.3x (small config) and 1.2x (Moving MNIST config) over OpenSTL,
whose convolutions are the same oneDNN calls as vidyn's and 86-88% of a training step (docs/speed.md).
Two ways of computing the same convolutions with less work, timed against the direct convolution at the
cells' shapes (one thread, process CPU time, median of interleaved repeats):

1. Winograd F(m x m, r x r) (Lavin & Gray, CVPR 2016; `vidyn.nn.winograd`, compiled transforms; m = 4
   for 3x3 kernels on these 16x16 grids, 2 for 5x5): forward +
   backward of one step's convolution, the weight transform computed beforehand as a rollout does once
   for all steps (its gradient is still formed per call here). Session 6 tried a naive version (transforms
   as a depthwise and a transposed convolution) and found it 3-4x slower; the compiled transforms are
   single memory passes.
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

from vidyn.nn.winograd import winograd_conv2d, winograd_tile, winograd_weight


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


def probe_winograd(n: int, c: int, k: int, r: int, repeats: int) -> None:
    x = torch.randn(n, c, 16, 16, requires_grad=True)
    weight = (0.05 * torch.randn(k, c, r, r)).requires_grad_()
    u = winograd_weight(weight, winograd_tile(r, 16, 16)).detach().requires_grad_()  # once per rollout
    ref = F.conv2d(x, weight, padding=r // 2)
    err = ((winograd_conv2d(x, weight, transformed=u) - ref).abs().max() / ref.abs().max()).item()
    grad = torch.randn_like(ref)
    grad_cl = grad.contiguous(memory_format=torch.channels_last)  # the layout of the Winograd output
    ms = interleaved(
        {
            "direct": lambda: F.conv2d(x, weight, padding=r // 2).backward(grad),
            "winograd": lambda: winograd_conv2d(x, weight, transformed=u).backward(grad_cl),
        },
        repeats,
    )
    ratio = ms["direct"] / ms["winograd"]
    print(f"winograd  x {tuple(x.shape)} -> {k}, k{r}, fwd+bwd: direct {ms['direct']:.1f} ms, "
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
    # the gate convolutions of the small config (2x64 k3, batch 4) and of OpenSTL's Moving MNIST config
    # (4x128 k5, batch 1): ConvLSTM's fused [x, h], PredRNN's conv_x / conv_h / conv_m / conv_o
    shapes = [(4, 16, 448, 3), (4, 64, 448, 3), (4, 64, 256, 3), (4, 64, 192, 3), (4, 128, 64, 3),
              (4, 80, 256, 3), (4, 128, 256, 3), (1, 144, 512, 5), (1, 256, 512, 5), (1, 16, 896, 5),
              (1, 128, 896, 5), (1, 128, 512, 5), (1, 128, 384, 5), (1, 256, 128, 5)]  # fmt: skip
    for n, c, k, r in shapes:
        probe_winograd(n, c, k, r, args.repeats)
    for n, c, k, ks in [(4, 80, 256, 3), (4, 128, 256, 3), (1, 144, 512, 5), (1, 256, 512, 5)]:
        probe_batched_weight_grad(n, c, k, 16, ks, 19, args.repeats)


if __name__ == "__main__":
    main()
