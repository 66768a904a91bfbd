"""Conditional futures of a generator (SVG/SRVP's protocol): N samples from each clip's first frames,
scored against the truth per predicted step as best-, mean- and worst-of-N, with diversity and coverage;
deterministic predictors (`vidyn evaluate RUN --with PREDICTOR`) scored on the same futures."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vidyn.metrics import frame_metrics, ssim
from vidyn.models.interface import Condition


def sample_clips(model: nn.Module, n: int, times: Tensor, condition: Condition | None, seed: int) -> Tensor:
    device = next(model.parameters()).device
    if condition is not None and condition.frames is not None:
        condition = Condition(
            frames=condition.frames.to(device), times=condition.times, labels=condition.labels
        )
    with torch.no_grad():
        out = model.sample(
            n, times.to(device), condition=condition, generator=torch.Generator().manual_seed(seed)
        )
    return out.float().clamp(0, 1).cpu()


def future_scores(samples: Tensor, truth: Tensor) -> dict[str, Any]:
    """N samples `(K, T, C, H, W)` of one future against its truth `(T, C, H, W)`.

    Per-sample per-step "ssim"/"psnr" `(K, T)`, "diversity_std" (per-pixel std over the K samples),
    "pairwise_ssim" (mean SSIM over sample pairs; 1 = identical samples), "coverage" (fraction of true
    pixels inside the samples' per-pixel 5-95% quantile band).
    """
    k = samples.shape[0]
    per = frame_metrics(samples, truth.unsqueeze(0).expand_as(samples).contiguous(), names=("ssim", "psnr"))
    low, high = torch.quantile(samples.double(), torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
    covered = ((truth.double() >= low) & (truth.double() <= high)).float().mean()
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    pair_ssim = (
        torch.stack([ssim(samples[i : i + 1], samples[j : j + 1]).mean() for i, j in pairs])
        if pairs
        else None
    )
    return {
        "ssim": per["ssim"].float(),
        "psnr": per["psnr"].float().clamp(max=100.0),  # identical frames: inf dB capped at 100
        "diversity_std": float(samples.std(dim=0, correction=0).mean()),
        "pairwise_ssim": None if pairs is None or pair_ssim is None else float(pair_ssim.mean()),
        "coverage": float(covered),
    }


def best_mean_worst(per_clip: list[Tensor]) -> dict[str, list[float]]:
    """Per-step curves from per-clip `(K, T)` values: the best / worst sample chosen per clip by its mean
    over the steps (higher is better), and the mean over samples; then averaged over clips."""
    stack = torch.stack(per_clip)  # (clips, K, T)
    order = stack.mean(dim=2)  # (clips, K)
    rows = torch.arange(stack.shape[0])
    return {
        "best": stack[rows, order.argmax(1)].mean(0).tolist(),
        "mean": stack.mean(1).mean(0).tolist(),
        "worst": stack[rows, order.argmin(1)].mean(0).tolist(),
    }


def sample_futures(
    model: nn.Module, clips: Tensor, times: Tensor, num_context: int, k: int
) -> dict[str, Any]:
    """Best/mean/worst-of-k futures of each clip from its first `num_context` frames, with copy_last."""
    ctx_t, tgt_t = times[:num_context], times[num_context:]
    ssims, psnrs, div, pair, cover, copy = [], [], [], [], [], []
    for i, clip in enumerate(clips):
        cond = Condition(frames=clip[None, :num_context], times=ctx_t)
        samples = sample_clips(model, k, tgt_t, cond, seed=1000 + i)  # (k, T_f, C, H, W)
        s = future_scores(samples, clip[num_context:])
        ssims.append(s["ssim"])
        psnrs.append(s["psnr"])
        div.append(s["diversity_std"])
        pair.append(s["pairwise_ssim"] if s["pairwise_ssim"] is not None else float("nan"))
        cover.append(s["coverage"])
        held = clip[num_context - 1 : num_context].expand_as(clip[num_context:]).unsqueeze(0)  # (1, T_f, ...)
        copy.append(frame_metrics(held, clip[None, num_context:], names=("ssim", "psnr")))
    copy_ssim = torch.cat([c["ssim"] for c in copy]).mean(0).tolist()
    copy_psnr = torch.cat([c["psnr"] for c in copy]).clamp(max=100.0).mean(0).tolist()
    mean = lambda xs: float(torch.tensor(xs, dtype=torch.float64).nanmean())  # noqa: E731
    return {
        "num_clips": int(clips.shape[0]),
        "num_samples": k,
        "num_context": num_context,
        "target_times": [round(float(t), 6) for t in tgt_t],
        "ssim_per_step": best_mean_worst(ssims),
        "psnr_per_step": best_mean_worst(psnrs),
        "ssim": {key: mean(v) for key, v in best_mean_worst(ssims).items()},
        "psnr": {key: mean(v) for key, v in best_mean_worst(psnrs).items()},
        "diversity_std": mean(div),
        "pairwise_ssim": mean(pair),
        "coverage_5_95": mean(cover),
        "copy_last": {"ssim_per_step": copy_ssim, "psnr_per_step": copy_psnr, "ssim": mean(copy_ssim),
                      "psnr": mean(copy_psnr)},
        "conventions": "best/worst sample chosen per clip and per metric by its mean over the predicted "
        "frames (SVG/SRVP), then averaged over clips per step; PSNR capped at 100 dB",
    }  # fmt: skip


def predictor_futures(
    others: dict[str, nn.Module], clips: Tensor, times: Tensor, num_context: int
) -> dict[str, Any]:
    """Deterministic predictors (`--with`) on the same futures: `forward(context, times, target times)`,
    scored per step as the samples are (their one prediction is best, mean and worst alike)."""
    ctx_t, tgt_t = times[:num_context], times[num_context:]
    out: dict[str, Any] = {}
    for name, predictor in others.items():
        device = next(predictor.parameters(), torch.empty(0)).device
        predictor.eval()
        preds = []
        with torch.no_grad():
            for chunk in clips.split(8):
                b = chunk.shape[0]
                pred = predictor(
                    chunk[:, :num_context].to(device),
                    ctx_t.expand(b, -1).to(device),
                    tgt_t.expand(b, -1).to(device),
                )
                preds.append(pred.float().clamp(0, 1).cpu())
        scores = frame_metrics(torch.cat(preds), clips[:, num_context:].contiguous(), names=("ssim", "psnr"))
        ssim_steps = scores["ssim"].float().mean(0).tolist()
        psnr_steps = scores["psnr"].float().clamp(max=100.0).mean(0).tolist()
        out[name] = {
            "ssim_per_step": ssim_steps,
            "psnr_per_step": psnr_steps,
            "ssim": sum(ssim_steps) / len(ssim_steps),
            "psnr": sum(psnr_steps) / len(psnr_steps),
        }
    return out
