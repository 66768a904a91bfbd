"""Scoring frame predictors: every predictor on the same clips, beside the baselines.

The evaluator of the predictor family (`EVALUATORS["predictor"]`) scores an exported predictor on its
dataset's split in its task's mode (`vidyn.tasks.splits`), beside `eval.baselines` and any other exported
predictors, each where it can run: a discrete-time model on a split it cannot predict (irregular clips,
in-between targets) is reported with a reason instead of numbers. For a continuous-time predictor on a
dataset that renders any time (`shapes`) it adds the continuous-time protocols
(`vidyn.evaluation.continuous`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from vidyn.config import Config
from vidyn.errors import VidynError
from vidyn.evaluation.continuous import evaluate_continuous
from vidyn.metrics import FrameMetrics, try_load_lpips
from vidyn.models.profile import synchronize
from vidyn.registry import EVALUATORS, MODELS
from vidyn.report.media import write_comparison
from vidyn.report.plots import plot_per_step
from vidyn.tasks.base import resolved_task_args
from vidyn.tasks.splits import split_clip, times_for

CONVENTIONS = (
    "ssim/psnr/mse/mae per frame then averaged (Wang 2004 SSIM, 11x11 Gaussian, valid); openstl_* = "
    "per-frame sums; vidode_psnr = PSNR of mean MSE"
)


@torch.no_grad()
def evaluate_predictors(
    models: dict[str, nn.Module],
    dataset: torch.utils.data.Dataset,
    *,
    num_context: int,
    num_future: int,
    mode: str = "extrapolate",
    batch_size: int = 8,
    max_clips: int | None = None,
    num_visual_clips: int = 0,
    device: torch.device | None = None,
    lpips: nn.Module | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Tensor]]:
    """Score predictors on the same clips. Returns (metrics per model, tensors for visuals).

    Metrics follow vidyn's conventions (per-frame SSIM/PSNR, then averaged; docs/metrics.md) plus the
    published conventions under their own names; `infer_clip_s` is the mean wall time per clip. With an
    `lpips` network (`vidyn.metrics.try_load_lpips`) each result also holds `lpips`, the mean per-frame
    LPIPS; without one `lpips` is None.
    """
    device = device or torch.device("cpu")
    if max_clips is not None:
        dataset = Subset(dataset, range(min(max_clips, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    trackers: dict[str, FrameMetrics] = {}
    seconds = dict.fromkeys(models, 0.0)
    lpips_sums = dict.fromkeys(models, 0.0)
    if lpips is not None:
        lpips.to(device)
    clips = 0
    visuals: dict[str, Tensor] = {}
    for m in models.values():
        m.to(device).eval()
    for batch in loader:
        frames = batch["frames"].to(device)
        times = batch["times"].to(device)
        ctx, _, tgt, tgt_t = split_clip(frames, times, num_context, num_future, mode)
        clips += frames.shape[0]
        preds = {}
        for name, model in models.items():
            _, ctx_m, _, tgt_m = split_clip(frames, times_for(model, times), num_context, num_future, mode)
            pred, took = _timed_prediction(model, ctx, ctx_m, tgt_m, device)
            seconds[name] += took
            if name not in trackers:
                # One process scores the whole split (rank 0 after a DDP fit): never wait for peers.
                trackers[name] = FrameMetrics(num_steps=tgt.shape[1], sync_on_compute=False).to(device)
            trackers[name].update(pred, tgt)
            if lpips is not None:
                lpips_sums[name] += float(lpips.clips(pred, tgt).double().sum())
            preds[name] = pred
        shown = {"context": ctx, "truth": tgt, "target_times": tgt_t}
        visuals = _add_visuals(visuals, shown | {f"pred/{k}": v for k, v in preds.items()}, num_visual_clips)
    if clips == 0:
        raise VidynError("the evaluation split has no clips; check the dataset arguments")
    return _results(trackers, seconds, lpips_sums if lpips is not None else None, clips), visuals


def _timed_prediction(
    model: nn.Module, context: Tensor, context_times: Tensor, target_times: Tensor, device: torch.device
) -> tuple[Tensor, float]:
    """The model's prediction clamped to [0, 1], and the wall time of its forward (and clamp) alone."""
    synchronize(device)  # CUDA runs asynchronously: time the forward alone, to its end
    t0 = time.perf_counter()
    pred = model(context, context_times, target_times).clamp(0, 1)
    synchronize(device)
    return pred, time.perf_counter() - t0


def _results(
    trackers: dict[str, FrameMetrics],
    seconds: dict[str, float],
    lpips_sums: dict[str, float] | None,
    clips: int,
) -> dict[str, dict[str, Any]]:
    """Each model's metrics with its mean inference time per clip, the clip count and its mean per-frame
    LPIPS (`lpips_sums` over all frames; None without an LPIPS network)."""
    results = {name: tracker.compute() for name, tracker in trackers.items()}
    for name, res in results.items():
        lpips = None if lpips_sums is None else lpips_sums[name] / (clips * trackers[name].num_steps)
        res |= {"infer_clip_s": seconds[name] / clips, "num_clips": clips, "lpips": lpips}
    return results


def _add_visuals(visuals: dict[str, Tensor], batch: dict[str, Tensor], limit: int) -> dict[str, Tensor]:
    """The first `limit` clips of the batches seen so far, on the CPU, for the comparison media."""
    have = visuals["context"].shape[0] if visuals else 0
    if have >= limit:
        return visuals
    new = {k: v[: limit - have].cpu() for k, v in batch.items()}
    return {k: torch.cat([visuals[k], v]) if k in visuals else v for k, v in new.items()}


def prediction_args(cfg: Config) -> dict[str, Any]:
    """num_context, num_future and mode of a run's prediction task (its builder's defaults filled in)."""
    args = resolved_task_args(cfg.task.name, cfg.task.args)
    missing = [k for k in ("num_context", "num_future", "mode") if k not in args]
    if missing:
        raise VidynError(f"task {cfg.task.name!r} sets no {', '.join(missing)}: it does not predict frames")
    return args


def evaluate_predictors_for(
    models: dict[str, nn.Module],
    dataset: Dataset,
    cfg: Config,
    *,
    max_clips: int | None,
    num_visual_clips: int,
    device: torch.device | None = None,
    lpips: nn.Module | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Tensor]]:
    """`evaluate_predictors` with the context/future split, mode and evaluation batch size of `cfg`."""
    t = prediction_args(cfg)
    return evaluate_predictors(
        models,
        dataset,
        num_context=t["num_context"],
        num_future=t["num_future"],
        mode=t["mode"],
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        max_clips=max_clips,
        num_visual_clips=num_visual_clips,
        device=device,
        lpips=lpips,
    )


def write_prediction_figures(
    report_dir: Path, results: dict[str, dict[str, Any]], visuals: dict[str, Tensor]
) -> None:
    """per_step.png (quality per prediction step) and, given visuals, samples.gif into report_dir."""
    report_dir.mkdir(parents=True, exist_ok=True)
    scored = {k: v for k, v in results.items() if "per_step" in v}
    plot_per_step(scored, report_dir / "per_step.png")
    if visuals:
        preds = {k.split("/", 1)[1]: v for k, v in visuals.items() if k.startswith("pred/")}
        write_comparison(report_dir / "samples.gif", visuals["context"], visuals["truth"], preds)


def runs_on_split(model: nn.Module, cfg: Config) -> bool:
    """Whether `model` can predict the task-mode splits of the dataset's clips."""
    if getattr(model, "continuous_time", False):
        return True
    return prediction_args(cfg)["mode"] == "extrapolate" and not cfg.data.args.get("irregular", False)


def _with_baselines(model: nn.Module, name: str, baselines: Sequence[str]) -> dict[str, nn.Module]:
    models = {name: model}
    for b in baselines:
        if b != name:
            models[b] = MODELS.build(b)
    return models


@EVALUATORS.register("predictor", family="predictor")
def predictor_report(
    model: nn.Module,
    meta: dict[str, Any],
    cfg: Config,
    dataset: Dataset,
    *,
    split: str = "test",
    report_dir: str | Path | None = None,
    max_clips: int | None = None,
    others: dict[str, nn.Module] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Score `model` beside `cfg.eval.baselines` and `others` (exported predictors by name) on `split`.

    Returns `{"models": {name: {...} or {"reason": ...}}, "protocol": {...}}` (plus `"continuous"` for a
    continuous-time model on a dataset that renders any time); with report_dir also writes per_step.png
    and samples.gif there.
    """
    name = meta["name"]
    models = _with_baselines(model, name, cfg.eval.baselines) | dict(others or {})
    t = prediction_args(cfg)
    max_clips = max_clips if max_clips is not None else cfg.eval.max_clips
    on_split = {k: m for k, m in models.items() if runs_on_split(m, cfg)}
    lpips, lpips_line = lpips_for(dataset)
    results, visuals = evaluate_predictors_for(
        on_split,
        dataset,
        cfg,
        max_clips=max_clips,
        num_visual_clips=cfg.eval.num_visual_clips if report_dir else 0,
        device=device,
        lpips=lpips,
    )
    reason = (
        "discrete-time model: it predicts extrapolate splits of regularly sampled clips only (here "
        f"task.args.mode={t['mode']}, data.args.irregular={bool(cfg.data.args.get('irregular', False))})"
    )
    results = {k: results.get(k, {"reason": reason}) for k in models}  # in the models' order
    out: dict[str, Any] = {"models": results, "protocol": _protocol(cfg, split, t, results)}
    out["protocol"]["lpips"] = lpips_line
    if getattr(model, "continuous_time", False) and hasattr(dataset, "render"):
        # shapes renders ground truth at any time: score in-between, beyond and irregular timestamps too
        out["continuous"] = evaluate_continuous(
            models,
            dataset,
            num_context=t["num_context"],
            num_future=t["num_future"],
            batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
            max_clips=max_clips,
            seed=cfg.trainer.seed,
            device=device,
        )
    if report_dir is not None:
        write_prediction_figures(Path(report_dir), results, visuals)
    return out


LPIPS_MIN_SIZE = 31  # AlexNet's two stride-2 max-pools leave nothing of a smaller frame


def lpips_for(dataset: Dataset) -> tuple[nn.Module | None, str]:
    """(LPIPS network or None, the protocol line of the LPIPS column) for the frames of `dataset`."""
    h, w = dataset[0]["frames"].shape[-2:]
    if min(h, w) < LPIPS_MIN_SIZE:
        return None, lpips_note(
            f"{h}x{w} frames are smaller than AlexNet LPIPS's {LPIPS_MIN_SIZE}-pixel minimum"
        )
    lpips, reason = try_load_lpips()
    return lpips, lpips_note(reason)


def lpips_note(reason: str | None) -> str:
    """The protocol line of the LPIPS column: what was run, or why it is null."""
    if reason is None:
        return "LPIPS v0.1 (AlexNet, heads from the lpips wheel), inputs in [-1, 1], gray -> 3 channels"
    return f"null: {reason}"


def _protocol(cfg: Config, split: str, t: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    # Every scored model saw the same clips; none scored (all discrete-time on an irregular split) -> 0.
    clips = next((r["num_clips"] for r in results.values() if "num_clips" in r), 0)
    return {
        "dataset": cfg.data.name,
        "split": split,
        "mode": t["mode"],
        "num_context": t["num_context"],
        "num_future": t["num_future"],
        "num_clips": clips,
        "conventions": CONVENTIONS,
    }
