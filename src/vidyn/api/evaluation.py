"""`evaluate` an exported model, and `evaluate_predictors`: several predictors scored on the same clips."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from vidyn.api._common import _write_json, default_device
from vidyn.config import Config, build_config
from vidyn.data.datamodule import build_dataset
from vidyn.errors import VidynError
from vidyn.export import build_model, load_model, read_model_meta
from vidyn.metrics import FrameMetrics
from vidyn.report.media import write_comparison
from vidyn.report.plots import plot_confusion, plot_per_step
from vidyn.tasks.continuous import evaluate_continuous
from vidyn.tasks.prediction import split_clip
from vidyn.tasks.recognition import class_names_of, evaluate_classifier


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
) -> tuple[dict[str, dict[str, Any]], dict[str, Tensor]]:
    """Score predictors on the same clips. Returns (metrics per model, tensors for visuals).

    Metrics follow vidyn's conventions (per-frame SSIM/PSNR, then averaged; DESIGN.md §5) plus the
    published conventions under their own names; `infer_clip_s` is the mean wall time per clip.
    """
    device = device or default_device()
    if max_clips is not None:
        dataset = Subset(dataset, range(min(max_clips, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    trackers: dict[str, FrameMetrics] = {}
    seconds = dict.fromkeys(models, 0.0)
    clips = 0
    visuals: dict[str, Tensor] = {}
    for m in models.values():
        m.to(device).eval()
    for batch in loader:
        frames = batch["frames"].to(device)
        times = batch["times"].to(device)
        ctx, ctx_t, tgt, tgt_t = split_clip(frames, times, num_context, num_future, mode)
        clips += frames.shape[0]
        preds = {}
        for name, model in models.items():
            t0 = time.perf_counter()
            pred = model(ctx, ctx_t, tgt_t).clamp(0, 1)
            seconds[name] += time.perf_counter() - t0
            if name not in trackers:
                # One process scores the whole split (rank 0 after a DDP fit): never wait for peers.
                trackers[name] = FrameMetrics(num_steps=tgt.shape[1], sync_on_compute=False).to(device)
            trackers[name].update(pred, tgt)
            preds[name] = pred
        have = visuals["context"].shape[0] if visuals else 0
        if have < num_visual_clips:
            take = slice(0, num_visual_clips - have)
            new = {
                "context": ctx[take],
                "truth": tgt[take],
                "target_times": tgt_t[take],
                **{f"pred/{k}": v[take] for k, v in preds.items()},
            }
            visuals = {
                k: torch.cat([visuals[k], v.cpu()]) if k in visuals else v.cpu() for k, v in new.items()
            }
    if clips == 0:
        raise VidynError("the evaluation split has no clips; check the dataset arguments")
    results = {}
    for name, tracker in trackers.items():
        res = tracker.compute()
        res["infer_clip_s"] = seconds[name] / clips
        res["num_clips"] = clips
        results[name] = res
    return results, visuals


def _evaluate_predictors_for(
    models: dict[str, nn.Module],
    dataset: torch.utils.data.Dataset,
    cfg: Config,
    *,
    max_clips: int | None,
    num_visual_clips: int,
    device: torch.device | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Tensor]]:
    """`evaluate_predictors` with the context/future split, mode and evaluation batch size of `cfg`."""
    t = cfg.task
    return evaluate_predictors(
        models,
        dataset,
        num_context=t.num_context,
        num_future=t.num_future,
        mode=t.mode,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        max_clips=max_clips,
        num_visual_clips=num_visual_clips,
        device=device,
    )


def _write_prediction_figures(
    report_dir: Path, results: dict[str, dict[str, Any]], visuals: dict[str, Tensor]
) -> None:
    """per_step.png (quality per prediction step) and, given visuals, samples.gif into report_dir."""
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_per_step(results, report_dir / "per_step.png")
    if visuals:
        preds = {k.split("/", 1)[1]: v for k, v in visuals.items() if k.startswith("pred/")}
        write_comparison(report_dir / "samples.gif", visuals["context"], visuals["truth"], preds)


def _prediction_eval_models(model: nn.Module, name: str, baselines: list[str]) -> dict[str, nn.Module]:
    models = {name: model}
    for b in baselines:
        if b != name:
            models[b] = build_model(b)
    return models


def _other_predictors(
    paths: list[str | Path] | tuple[str | Path, ...], taken: set[str]
) -> dict[str, nn.Module]:
    """Exported predictors by name (`name@folder` where the name is taken)."""
    out: dict[str, nn.Module] = {}
    for path in paths:
        meta = read_model_meta(path)
        if meta.get("family") != "predictor":
            raise VidynError(f"{str(path)!r} holds a {meta.get('family')}, not a frame predictor; drop it")
        key = meta["name"] if meta["name"] not in taken | out.keys() else f"{meta['name']}@{Path(path).name}"
        out[key] = load_model(path)
    return out


def _runs_on_split(model: nn.Module, cfg: Config) -> bool:
    """Whether `model` can predict the `cfg.task.mode` splits of the dataset's clips."""
    if getattr(model, "continuous_time", False):
        return True
    return cfg.task.mode == "extrapolate" and not cfg.data.args.get("irregular", False)


def _evaluate_classifier_report(
    model: nn.Module,
    name: str,
    meta: dict[str, Any],
    cfg: Config,
    dataset: torch.utils.data.Dataset,
    split: str,
    report_dir: str | Path | None,
    max_clips: int | None,
) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy and confusions of a classifier; confusion.png/.csv in report_dir."""
    class_names = meta.get("class_names") or class_names_of(dataset, getattr(model, "num_classes", None))
    res = evaluate_classifier(
        model,
        dataset,
        class_names,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        max_clips=max_clips if max_clips is not None else cfg.eval.max_clips,
        device=default_device(),
    )
    args = {**cfg.data.args, **cfg.data.splits.get(split, {})}
    protocol = {
        "dataset": cfg.data.name,
        "split": split,
        "num_clips": res["num_clips"],
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "clip_sampling": args.get("clip_sampling", "dataset default"),
        "conventions": "one clip per video as the dataset samples it; top-k micro-averaged over clips; "
        "per-class accuracy = recall (null for a class without clips); confusion rows = true class",
    }
    if report_dir is not None:
        report = Path(report_dir)
        report.mkdir(parents=True, exist_ok=True)
        plot_confusion(res["confusion_matrix"], list(class_names), report / "confusion.png")
        rows = [",".join(["true\\predicted", *class_names])]
        rows += [
            ",".join([c, *map(str, r)]) for c, r in zip(class_names, res["confusion_matrix"], strict=True)
        ]
        tmp = report / ".confusion.csv.tmp"
        tmp.write_text("\n".join(rows) + "\n")
        os.replace(tmp, report / "confusion.csv")
    return {"models": {name: res}, "protocol": protocol}


def evaluate(
    model_path: str | Path,
    *,
    split: str = "test",
    json_path: str | Path | None = None,
    report_dir: str | Path | None = None,
    max_clips: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    others: list[str | Path] | tuple[str | Path, ...] = (),
) -> dict[str, Any]:
    """Evaluate an exported model on its own dataset's split, beside the configured baselines.

    Returns (and writes to json_path) `{"models": {name: {...}}, "protocol": {...}}`; with report_dir
    also writes per_step.png and samples.gif there. For a continuous-time predictor on a dataset that
    renders any time (shapes) it adds `"continuous"`: in-between, beyond and irregular timestamps scored
    beside the baselines (`vidyn.tasks.continuous.evaluate_continuous`). `others`: more exported
    predictors (e.g. a trained convlstm beside vid_ode) scored on the same clips; a discrete-time one is
    scored where its frame grid allows and reported with a reason elsewhere.
    """
    meta = read_model_meta(model_path)
    cfg = build_config(meta.get("config") or {}, overrides)
    model = load_model(model_path)
    name = meta["name"]
    dataset = build_dataset(cfg.data.name, split, cfg.data.args, cfg.data.splits)
    if meta.get("family") == "classifier":  # cfg.eval.baselines are frame predictors: none apply here
        out = _evaluate_classifier_report(model, name, meta, cfg, dataset, split, report_dir, max_clips)
        if json_path is not None:
            _write_json(Path(json_path), out)
        return out
    if others and meta.get("family") != "predictor":
        raise VidynError(f"{name!r} is a {meta.get('family')}; only frame predictors take other models")
    models = _prediction_eval_models(model, name, cfg.eval.baselines)
    models |= _other_predictors(others, taken=set(models))
    t = cfg.task
    on_split = {k: m for k, m in models.items() if _runs_on_split(m, cfg)}
    results, visuals = _evaluate_predictors_for(
        on_split,
        dataset,
        cfg,
        max_clips=max_clips if max_clips is not None else cfg.eval.max_clips,
        num_visual_clips=cfg.eval.num_visual_clips if report_dir else 0,
    )
    reason = (
        "discrete-time model: it predicts extrapolate splits of regularly sampled clips only (here "
        f"task.mode={t.mode}, data.args.irregular={bool(cfg.data.args.get('irregular', False))})"
    )
    results = {k: results[k] if k in on_split else {"reason": reason} for k in models}  # in models' order
    out: dict[str, Any] = {
        "models": results,
        "protocol": {
            "dataset": cfg.data.name,
            "split": split,
            "mode": t.mode,
            "num_context": t.num_context,
            "num_future": t.num_future,
            "num_clips": results[name]["num_clips"],
            "conventions": "ssim/psnr/mse/mae per frame then averaged (Wang 2004 SSIM, 11x11 "
            "Gaussian, valid); openstl_* = per-frame sums; vidode_psnr = PSNR of mean MSE",
        },
    }
    if getattr(model, "continuous_time", False) and hasattr(dataset, "render"):
        # shapes renders ground truth at any time: score in-between, beyond and irregular timestamps too
        out["continuous"] = evaluate_continuous(
            models,
            dataset,
            num_context=t.num_context,
            num_future=t.num_future,
            batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
            max_clips=max_clips if max_clips is not None else cfg.eval.max_clips,
            seed=cfg.trainer.seed,
            device=default_device(),
        )
    if report_dir is not None:
        _write_prediction_figures(Path(report_dir), results, visuals)
    if json_path is not None:
        _write_json(Path(json_path), out)
    return out
