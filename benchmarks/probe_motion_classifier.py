"""How fast does a motion classifier learn the `shapes` laws from real clips? (the generation tasks'
separate AC-GAN classifier and `latent_sde`'s class_weight depend on it leaving chance early).

Trains each variant alone on real clips of the quick configs' data (32x32 grayscale, 16 frames at 0.1 s,
one untextured object), batch 16, Adam, interleaving seeds, and prints the moving-average cross-entropy
every 50 steps, the first step it falls below 1.6 nats (chance: ln 7 = 1.95), held-out accuracy at the end
and the median step time.

    python benchmarks/probe_motion_classifier.py --variants gru,mlp,trajectory,trajectory0 --seeds 0,1,2

Results: docs/generation.md, "Session 11".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vidyn.data.synthetic import shapes
from vidyn.models.motion_classifier import MotionClassifier


def _clips(split: str, num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = shapes(split=split, num_samples=num, size=32, channels=1, num_frames=16, max_objects=1,
                textured=False, seed=seed)  # fmt: skip
    items = [ds[i] for i in range(num)]
    frames = torch.stack([it["frames"] for it in items])  # (N, T, C, H, W)
    return frames, items[0]["times"], torch.stack([it["label"] for it in items])


def _build(variant: str) -> torch.nn.Module:
    """A reader name ("gru", "mlp", "trajectory": 8 learned keypoints) or "trajectoryK" (K keypoints)."""
    reader, keypoints = variant.rstrip("0123456789"), variant.lstrip("abcdefghijklmnopqrstuvwxyz")
    extra = {"keypoints": int(keypoints)} if keypoints else {}
    return MotionClassifier(in_channels=1, image_size=32, num_classes=7, reader=reader, **extra)


def _run(variant: str, seed: int, data, test, steps: int, lr: float) -> dict:
    torch.manual_seed(seed)
    model = _build(variant)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    frames, times, labels = data
    order = torch.randperm(frames.shape[0], generator=torch.Generator().manual_seed(seed))
    ema, curve, left, step_times = None, {}, None, []
    for step in range(1, steps + 1):
        idx = order[(step - 1) * 16 % len(order) :][:16]
        t0 = time.process_time()
        loss = F.cross_entropy(model(frames[idx], times), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_times.append(time.process_time() - t0)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if left is None and step > 20 and ema < 1.6:
            left = step
        if step % 50 == 0:
            curve[step] = round(ema, 2)
    model.eval()
    with torch.no_grad():
        acc = (model(test[0], test[1]).argmax(1) == test[2]).float().mean().item()
    return {"curve": curve, "left": left, "acc": acc, "step_s": statistics.median(step_times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="gru,mlp,trajectory,trajectory0")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = _clips("train", a.steps * 16, 0)
    test = _clips("test", 448, 0)
    for seed in [int(s) for s in a.seeds.split(",")]:
        for v in a.variants.split(","):
            r = _run(v, seed, data, test, a.steps, a.lr)
            print(f"{v:>12} seed {seed}: below 1.6 at step {r['left']}, test acc {r['acc']:.2f}, "
                  f"{r['step_s'] * 1000:.0f} ms/step, CE {r['curve']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
