"""Speed of the `transformer` predictor on Moving-MNIST-sized clips (64x64x1, 10 -> 10).

    python benchmarks/bench_transformer.py [--batch 4] [--repeats 3] [--threads N]

Reports, best of `--repeats` wall-clock runs:
- training step (rollout + MSE + backward + Adam) with the teacher-forced parallel pass (all-True mask)
  and with a scheduled-sampling mask (truth for the 10 context steps, predictions after them);
- 10 -> 10 inference with the key/value cache (`forward`) against re-encoding the whole sequence
  for every new frame (what a cache-less implementation does), and the largest difference between them.
Figures are noisy on shared machines; compare them side by side within one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import vidyn.models.transformer  # noqa: F401  (registration)
from vidyn.models.transformer import VideoTransformerPredictor
from vidyn.registry import MODELS


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def reencode(model: VideoTransformerPredictor, context: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Autoregressive prediction without a cache: one full causal pass per predicted frame."""
    frames, t_in = context, context.shape[1]
    for k in range(t_in, times.shape[0]):
        out = model.step(frames, times[:k], times[1 : k + 1], model.new_state())[:, -1:]
        frames = torch.cat([frames, out], dim=1)
    return frames[:, t_in:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model: VideoTransformerPredictor = MODELS.build("transformer")
    params = sum(p.numel() for p in model.parameters())
    print(f"transformer (defaults): {params / 1e6:.2f}M parameters, threads={torch.get_num_threads()}")

    batch = args.batch
    clip = torch.rand(batch, 20, 1, 64, 64)
    times = torch.arange(20, dtype=torch.float32) * 0.1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    masks = {"teacher-forced": torch.ones(batch, 19, dtype=torch.bool)}
    masks["scheduled (10 true, 9 own)"] = masks["teacher-forced"].clone()
    masks["scheduled (10 true, 9 own)"][:, 10:] = False

    for name, mask in masks.items():

        def train_step(mask: torch.Tensor = mask) -> None:
            next_frames, _ = model.rollout(clip, mask, times=times)
            loss = ((next_frames - clip[:, 1:]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        train_step()  # warm-up
        print(f"train step B{batch} 10->10, {name}: {best_of(args.repeats, train_step):.3f} s")

    model.eval()
    with torch.no_grad():
        cached = model(clip[:, :10], times[:10], times[10:])
        plain = reencode(model, clip[:, :10], times)
        t_cached = best_of(args.repeats, lambda: model(clip[:, :10], times[:10], times[10:]))
        t_plain = best_of(args.repeats, lambda: reencode(model, clip[:, :10], times))
    diff = (cached - plain).abs().max().item()
    print(f"inference B{batch} 10->10: kv-cache {t_cached:.3f} s, re-encode {t_plain:.3f} s")
    print(f"largest |kv-cache - re-encode| difference: {diff:.1e}")


if __name__ == "__main__":
    main()
