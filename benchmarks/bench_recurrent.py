"""Training-step speed of the recurrent predictors (ConvLSTM, PredRNN, PredRNN-V2) on this CPU.

One step = rollout over 10 -> 10 frames of 64x64x1 (19 recurrent steps) + next-frame MSE (+ PredRNN-V2's
decoupling loss) + backward + Adam step. Two configurations:

- small:   2 layers x 64 channels, kernel 3, patch 4, batch 4 (the CPU default of the builders);
- openstl: OpenSTL's Moving MNIST configuration, 4 layers x 128 channels, kernel 5, patch 4, but batch 1
           instead of OpenSTL's 16 to keep the benchmark short (per-sample cost is what matters on CPU).

Prints, per model: median (and best) step time after warm-up, model FLOPs of one forward+backward
(counted with
torch.utils.flop_counter.FlopCounterMode, convolutions and matmuls only), the achieved GFLOP/s, this
machine's fp32 matmul GFLOP/s (2048^2 x 2048^2) and the ratio, with torch.get_num_threads().
Figures on a shared machine are noisy; compare models side by side within one run.

    python benchmarks/bench_recurrent.py [--config small|openstl|all] [--models convlstm,predrnn] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import vidyn.models  # noqa: F401  (registers the builders)
from vidyn.models.profile import synchronize
from vidyn.registry import MODELS
from vidyn.tasks.sampling import sample_truth_mask

CONFIGS = {
    "small": {"model": dict(hidden_channels=64, num_layers=2, kernel_size=3, patch_size=4), "batch": 4},
    "openstl": {"model": dict(hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4), "batch": 1},
}
NUM_CONTEXT, NUM_FRAMES, IMAGE_SIZE = 10, 20, 64


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timed calls after three warm-up ones (the first calls run at a fraction of
    the sustained rate while thread pools, clocks and cuDNN's algorithm choice settle, so a median of a
    few would understate the peak and flatter the models' ratios). CUDA: synchronised around each call."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int = 2048, repeats: int = 10, device: torch.device | str = "cpu") -> float:
    """Peak fp32 matrix-product throughput (n x n by n x n; on CUDA n 8192 without TF32, torch's default
    for matmuls)."""
    device = torch.device(device)
    n = 8192 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / _best_seconds(lambda: a @ b, device, repeats) / 1e9


def conv_gflops(repeats: int = 10, device: torch.device | str = "cpu") -> float:
    """Forward convolution throughput at a shape typical of these models (128 -> 512, k3, 16x16; batch 4 on
    a CPU, oneDNN; 256 on CUDA, cuDNN with torch's default TF32 for convolutions).

    On these AMD CPUs MKL's sgemm reaches well under what oneDNN's convolutions do, so a model can exceed
    100% of the matmul figure; this one is the more telling ceiling.
    """
    device = torch.device(device)
    batch = 256 if device.type == "cuda" else 4
    x = torch.randn(batch, 128, 16, 16, device=device)
    w = torch.randn(512, 128, 3, 3, device=device)
    seconds = _best_seconds(lambda: F.conv2d(x, w, padding=1), device, repeats)
    return 2 * 128 * 512 * 9 * 16 * 16 * batch / seconds / 1e9  # the peak, as for matmul


def training_step(
    model: torch.nn.Module, optimiser: torch.optim.Optimizer, frames: torch.Tensor, mask: torch.Tensor
):
    optimiser.zero_grad(set_to_none=True)
    next_frames, aux = model.rollout(frames, mask)
    loss = F.mse_loss(next_frames, frames[:, 1:]) + sum(aux.values(), torch.zeros(()))
    loss.backward()
    optimiser.step()


def bench_model(name: str, config: str, steps: int) -> dict[str, float]:
    cfg = CONFIGS[config]
    torch.manual_seed(0)
    model = MODELS.build(name, image_size=IMAGE_SIZE, **cfg["model"])
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-4)
    frames = torch.rand(cfg["batch"], NUM_FRAMES, 1, IMAGE_SIZE, IMAGE_SIZE)
    kwargs = (
        {"stop_iter": 100} if model.scheduled_sampling == "standard" else {"r_step_1": 0, "r_step_2": 100}
    )
    mask = sample_truth_mask(
        cfg["batch"],
        NUM_FRAMES,
        NUM_CONTEXT,
        model.scheduled_sampling,
        50,
        torch.Generator().manual_seed(0),
        **kwargs,
    )

    with FlopCounterMode(display=False) as counter:
        next_frames, aux = model.rollout(frames, mask)
        (F.mse_loss(next_frames, frames[:, 1:]) + sum(aux.values(), torch.zeros(()))).backward()
    flops = counter.get_total_flops()
    optimiser.zero_grad(set_to_none=True)

    training_step(model, optimiser, frames, mask)  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        training_step(model, optimiser, frames, mask)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    return {
        "seconds": seconds,
        "best": min(times),
        "gflop": flops / 1e9,
        "gflops": flops / seconds / 1e9,
        "params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--models", default="convlstm,predrnn,predrnn_v2")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (after one warm-up)")
    args = parser.parse_args()

    torch.set_flush_denormal(True)  # without it PredRNN's backward slows down as gradients turn denormal
    threads = torch.get_num_threads()
    peak = matmul_gflops()
    conv = conv_gflops()
    print(
        f"torch {torch.__version__}, threads {threads}, fp32 matmul 2048^2: {peak:.1f} GFLOP/s, "
        f"conv 128->512 k3 16x16 B4 forward: {conv:.1f} GFLOP/s"
    )
    configs = list(CONFIGS) if args.config == "all" else [args.config]
    for config in configs:
        cfg = CONFIGS[config]
        print(
            f"\n[{config}] {cfg['model']} batch {cfg['batch']}, {NUM_CONTEXT}->{NUM_FRAMES - NUM_CONTEXT}, "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}x1"
        )
        print(
            f"{'model':<12}{'params':>12}{'step s':>10}{'best s':>9}{'GFLOP':>9}{'GFLOP/s':>10}"
            f"{'of matmul':>11}{'of conv':>9}"
        )
        for name in args.models.split(","):
            r = bench_model(name, config, args.steps)
            print(
                f"{name:<12}{r['params']:>12,}{r['seconds']:>10.3f}{r['best']:>9.3f}{r['gflop']:>9.1f}"
                f"{r['gflops']:>10.1f}"
                f"{r['gflops'] / peak:>11.0%}{r['gflops'] / conv:>9.0%}"
            )
    print(f"\nre-measured at the end: matmul {matmul_gflops():.1f} GFLOP/s, conv {conv_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
    main()
