"""How much of `sde_video`'s best-of-N SSIM is lost to faint haze over the black background of `shapes`?

Samples N futures of each of `--clips` test clips from its first frame (no law: issue 13's SSIM target,
scored as `vidyn evaluate` scores them) and prints best-of-N SSIM as is and with sample pixels below a
threshold set to 0 (a diagnostic, not a fix: the thresholded samples are not the model's). Then, on 16
clips, the mean value on truly black pixels per frame and the objects' mean brightness in the ELBO's
posterior reconstructions and in prior samples from the first frame + the law.

    .venv/bin/python benchmarks/probe_sde_haze.py RUN [--clips 32] [--samples 20]
"""

from __future__ import annotations

import argparse

import torch
import yaml
from diagnose_sde_prompt import posterior_paths, test_clips
from torch import Tensor

import vidyn.data.synthetic  # noqa: F401  (registers shapes)
import vidyn.models  # noqa: F401  (registers sde_video)
from vidyn.evaluation.futures import future_scores, sample_clips
from vidyn.export import load_model
from vidyn.models.interface import Condition


def thresholded_ssim(model, clips: dict, k: int, thresholds: list[float]) -> dict[float, float]:
    x, t = clips["x"], clips["t"]
    best: dict[float, list[Tensor]] = {th: [] for th in thresholds}
    for i in range(x.shape[0]):
        s = sample_clips(model, k, t[1:], Condition(frames=x[i : i + 1, :1], times=t[:1]), seed=1000 + i)
        for th in thresholds:
            kept = torch.where(s < th, torch.zeros_like(s), s)
            best[th].append(future_scores(kept, x[i, 1:])["ssim"].mean(1).max())  # best of k by mean SSIM
    return {th: float(torch.stack(v).mean()) for th, v in best.items()}


@torch.no_grad()
def haze_by_frame(model, clips: dict) -> None:
    x, t, y = clips["x"], clips["t"], clips["y"]
    black = x == 0
    recon = posterior_paths(model, x, t, y, 0)[0]
    cond = Condition(frames=x[:, :1], times=t[:1], labels=y)
    prior = model.sample(x.shape[0], t, condition=cond, generator=torch.Generator().manual_seed(0))
    for name, v in (("posterior reconstruction", recon), ("prior, first frame + law", prior)):
        v = v.clamp(0, 1)
        per_frame = [round(float(v[:, i][black[:, i]].mean()), 4) for i in range(0, x.shape[1], 3)]
        bright, true = float(v[~black].mean()), float(x[~black].mean())
        print(f"{name}: mean on black pixels {float(v[black].mean()):.4f} (frames 0, 3, ..: {per_frame}); "
              f"objects' mean {bright:.3f} (true {true:.3f})")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--samples", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.run).eval()
    data_args = yaml.safe_load(open(f"{args.run}/config.yaml"))["data"]["args"]
    clips = test_clips(data_args, args.clips)
    black = float((clips["x"][:, 1:] == 0).float().mean())
    print(f"{args.clips} clips, {args.samples} samples each; {black:.1%} of the true future pixels are black")
    for th, value in thresholded_ssim(model, clips, args.samples, [0.0, 0.02, 0.05, 0.1]).items():
        print(f"best-of-{args.samples} SSIM with sample pixels < {th} set to 0: {value:.3f}")
    haze_by_frame(model, test_clips(data_args, 16))


if __name__ == "__main__":
    main()
