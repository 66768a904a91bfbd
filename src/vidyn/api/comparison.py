"""`compare`: train several predictors under one budget, score and profile them beside the baselines,
and write report.json / report.html."""

from __future__ import annotations

import copy
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vidyn.api._common import _write_json, default_device
from vidyn.api.training import task_for, train
from vidyn.config import Config, build_config
from vidyn.data.datamodule import build_dataset
from vidyn.errors import VidynError
from vidyn.evaluation import evaluate_predictors_for, prediction_args, write_prediction_figures
from vidyn.evaluation.prediction import lpips_for
from vidyn.export import build_model, load_model
from vidyn.fileio import atomic_path
from vidyn.models.profile import (
    count_parameters,
    flops_per_clip,
    parameter_bytes,
    peak_memory_mb,
    time_inference,
    time_train_step,
    train_step,
)
from vidyn.registry import MODELS
from vidyn.report.html import Column, format_value, write_html_report
from vidyn.tasks.engine import prepare_runtime
from vidyn.tasks.splits import split_clip

COMPARE_FIGURES = ("per_step.png", "samples.gif")
COMPARE_KEYS = (
    "ssim", "psnr", "mse", "mae", "lpips", "params", "flops_per_clip", "train_step_s", "infer_clip_s",
    "peak_mem_mb", "per_step",
)  # fmt: skip
_COMPARE_ENTRY_KEYS = ("name", "args", "optim", "label")
_COMPARE_NOTES = {
    "flops_per_clip": "torch.utils.flop_counter.FlopCounterMode on one inference forward of one clip: "
    "matmul/conv/attention at 2 FLOPs per multiply-add; element-wise ops not counted (baselines: 0)",
    "train_step_s": "median wall time of PredictionTask.training_step + backward + grad clipping + "
    "optimiser step at profile_batch clips, scheduled sampling pinned at its end state (the model feeds "
    "back its own predictions), after one warm-up step; null for parameter-free baselines",
    "infer_clip_s": "median wall time of one forward on a batch of one clip (latency), no grad",
    "peak_mem_mb": "MiB: parameters + buffers, plus the peak of tensor memory allocated during one "
    "training step from a fresh optimiser (activations, gradients, optimiser state) for learned models, "
    "or during one forward at profile_batch clips for baselines. CPU: running sum of the allocator events "
    "torch.profiler records (profile_memory=True), not process RSS; CUDA: torch.cuda.max_memory_allocated",
    "quality": "ssim/psnr/mse/mae per frame then averaged (Wang 2004 SSIM, 11x11 Gaussian, valid); the "
    "same clips in the same order for every model",
}

COMPARE_COLUMNS = (
    Column("ssim", "SSIM", "metric", "max"),
    Column("psnr", "PSNR (dB)", "db", "max"),
    Column("mse", "MSE", "metric", "min"),
    Column("mae", "MAE", "metric", "min"),
    Column("lpips", "LPIPS", "metric", "min"),
    Column("params", "params", "count"),
    Column("flops_per_clip", "FLOPs/clip", "flops", "min"),
    Column("train_step_s", "train step", "seconds", "min"),
    Column("infer_clip_s", "latency/clip", "seconds", "min"),
    Column("peak_mem_mb", "peak mem", "mb", "min"),
)


def _compare_entries(cfg: Config) -> list[dict[str, Any]]:
    """Validate `compare.models`; return entries `{label, name, args, optim}` in the listed order."""
    if not cfg.compare.models:
        raise VidynError("compare.models is empty; list learned models, e.g. [{name: convlstm, args: {}}]")
    entries: list[dict[str, Any]] = []
    for i, raw in enumerate(cfg.compare.models):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise VidynError(f"compare.models[{i}] must be a mapping with a name, e.g. {{name: convlstm}}")
        unknown = sorted(set(raw) - set(_COMPARE_ENTRY_KEYS))
        if unknown:
            raise VidynError(
                f"compare.models[{i}] has unknown key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(_COMPARE_ENTRY_KEYS)}"
            )
        entry = {
            "name": raw["name"],
            "args": dict(raw.get("args") or {}),
            "optim": dict(raw.get("optim") or {}),
            "label": str(raw.get("label") or raw["name"]),
        }
        model = build_model(entry["name"], **entry["args"])  # checks the name and arguments up front
        if MODELS.get(entry["name"]).family != "predictor" or not getattr(model, "trainable", True):
            raise VidynError(
                f"compare.models[{i}] {entry['name']!r} is not a learned frame predictor; list baselines "
                "under eval.baselines"
            )
        taken = [e["label"] for e in entries] + list(cfg.eval.baselines)
        if entry["label"] in taken:
            raise VidynError(f"compare.models[{i}]: label {entry['label']!r} is used twice; give it a label")
        entries.append(entry)
    return entries


def _compare_run_config(cfg: Config, entry: dict[str, Any]) -> Config:
    """The training config of one compared model: the shared config, its model, optim overrides, budget."""
    raw = cfg.to_dict()
    raw.pop("compare")
    raw["name"] = entry["label"]
    raw["model"] = {"name": entry["name"], "args": entry["args"]}
    raw["optim"].update(entry["optim"])
    if cfg.compare.budget_steps is not None:
        raw["trainer"]["max_steps"] = cfg.compare.budget_steps
    if cfg.compare.budget_seconds is not None:
        raw["trainer"]["max_time"] = cfg.compare.budget_seconds
    return build_config(raw)


def _profile_predictor(
    model: nn.Module,
    task_args: dict[str, Any],
    run_cfg: Config | None,
    batch: dict[str, Tensor],
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    """params, flops_per_clip, infer_clip_s, train_step_s and peak_mem_mb of one predictor (see notes).

    `run_cfg` is the model's training config, or None for a parameter-free baseline.
    """
    frames, times = batch["frames"].to(device), batch["times"].to(device)  # (B, T, C, H, W), (B, T)
    t = task_args
    ctx, ctx_t, _, tgt_t = split_clip(frames, times, t["num_context"], t["num_future"], t["mode"])
    model = model.to(device).eval()
    res: dict[str, Any] = {
        "params": count_parameters(model),
        "flops_per_clip": flops_per_clip(model, ctx[:1], ctx_t[:1], tgt_t[:1]),
        "infer_clip_s": time_inference(model, ctx[:1], ctx_t[:1], tgt_t[:1], repeats=repeats),
        "train_step_s": None,
    }
    if run_cfg is None:  # a parameter-free baseline: its footprint is one forward at the profile batch
        with torch.no_grad():
            extra = peak_memory_mb(lambda: model(ctx, ctx_t, tgt_t), device=device)
        res["peak_mem_mb"] = parameter_bytes(model) / 2**20 + extra
        return res
    work = copy.deepcopy(model).train()  # the timed steps update weights: never touch the evaluated model
    total = run_cfg.trainer.max_steps or 1
    # `.to(device)` although `work` is there already: a LightningModule's `device` follows only its own
    # `.to()`, and a task left at "cpu" copied every value it logs back to the host, a sync per timed step.
    task = task_for(run_cfg, work, total, run_cfg.optim.warmup_steps).to(device)
    task.pinned_step = task.sampling_stop_step  # time the end state of scheduled sampling
    optimizer = task.configure_optimizers()["optimizer"]
    clip = run_cfg.trainer.gradient_clip_val
    train_batch = {"frames": frames, "times": times}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer attached: logging is off
        extra = peak_memory_mb(
            lambda: train_step(lambda: task.training_step(train_batch, 0), optimizer, clip_grad_norm=clip),
            device=device,
        )
        res["train_step_s"] = time_train_step(
            lambda: task.training_step(train_batch, 0),
            optimizer,
            clip_grad_norm=clip,
            repeats=repeats,
            device=device,
        )
    res["peak_mem_mb"] = parameter_bytes(work) / 2**20 + extra
    return res


TRAINED = "compare_trained.json"  # written into a run folder once its training has finished


def _config_record(run_cfg: Config) -> Any:
    return json.loads(json.dumps(run_cfg.to_dict(), default=str))  # as it reads back from the JSON file


def _finished(run_dir: Path, run_cfg: Config) -> dict[str, Any] | None:
    """The training facts of an earlier compare run in `run_dir` that finished with this same config."""
    try:
        done = json.loads((run_dir / TRAINED).read_text())
    except (OSError, ValueError):
        return None
    same = isinstance(done, dict) and done.get("config") == _config_record(run_cfg)
    return done.get("facts") if same and (run_dir / "model.json").is_file() else None


def _train_each(
    cfg: Config, run_cfgs: dict[str, Config], out: Path, retrain: bool = False
) -> tuple[dict[str, nn.Module], dict[str, dict[str, Any]]]:
    """The baselines and every compared model trained into out/runs/<label>; (models, training facts).

    A model whose run folder holds a finished training of the same config is loaded, not retrained
    (its facts say `"reused": true`), unless `retrain`; an interrupted one is trained again."""
    trained: dict[str, dict[str, Any]] = {}
    models: dict[str, nn.Module] = {b: build_model(b) for b in cfg.eval.baselines}
    for i, (label, run_cfg) in enumerate(run_cfgs.items(), 1):
        run_dir = out / "runs" / label
        facts = None if retrain else _finished(run_dir, run_cfg)
        if facts is not None:
            print(f"{label}: already trained in {run_dir} with this config; reusing it (--retrain to redo)")
            models[label], trained[label] = load_model(run_dir), facts | {"reused": True}
            continue
        print(f"compare: training {label} ({i} of {len(run_cfgs)}) in {run_dir}", flush=True)
        if (run_dir / "checkpoints").is_dir():  # an interrupted or --retrain run: start it afresh
            print(f"{label}: replacing the checkpoints of its earlier run", flush=True)
            shutil.rmtree(run_dir / "checkpoints")
        result = train(run_cfg, run_dir=run_dir, evaluate_after=False)
        print(f"{label}: stopped because {result.stop_reason}; {result.seconds:.0f} s", flush=True)
        models[label] = load_model(result.run_dir)
        trained[label] = {
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "run_dir": str(Path("runs") / label),
        }
        with atomic_path(run_dir / TRAINED) as tmp:
            Path(tmp).write_text(json.dumps({"config": _config_record(run_cfg), "facts": trained[label]}))
    return models, trained


def _report_rows(
    models: dict[str, nn.Module], results: dict[str, Any], cfg: Config, run_cfgs: dict[str, Config],
    batch: dict[str, Tensor], device: torch.device,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Quality (from `results`) and profile of every model: the report's rows."""
    t = prediction_args(cfg)
    rows: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        prof = _profile_predictor(model, t, run_cfgs.get(name), batch, cfg.compare.profile_repeats, device)
        res = results[name]
        rows[name] = {
            **{k: res[k] for k in ("ssim", "psnr", "mse", "mae")},
            "lpips": res.get("lpips"),
            **prof,
            "per_step": {k: res["per_step"][k] for k in ("ssim", "psnr", "mse", "mae")},
        }
    return rows


def _protocol(
    cfg: Config, run_cfg: Config, clips: int, frame_shape: list[int], trained: dict[str, Any],
    profile_batch: int, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    t = prediction_args(cfg)
    return {
        "dataset": cfg.data.name,
        "dataset_args": cfg.data.args,
        "split": cfg.eval.split,
        "clips": clips,
        "frame_shape": frame_shape,
        "mode": t["mode"],
        "num_context": t["num_context"],
        "num_future": t["num_future"],
        "budget_steps": run_cfg.trainer.max_steps,
        "budget_seconds": run_cfg.trainer.max_time,
        "batch_size": cfg.data.batch_size,
        "trained": trained,
        "profile_batch": profile_batch,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
        **_COMPARE_NOTES,
    }


def _write_report(out: Path, cfg: Config, report: dict[str, Any]) -> None:
    t = prediction_args(cfg)
    _write_json(out / "report.json", report)
    write_html_report(
        out / "report.html",
        title=f"vidyn compare: {cfg.data.name}, {t['num_context']} -> {t['num_future']} frames",
        columns=COMPARE_COLUMNS,
        rows=report["models"],
        figures=[
            ("Quality per prediction step (same clips for every model)", out / "per_step.png"),
            (
                "Labelled columns, one row per clip: the context (blue, then holding its last frame), the "
                f"truth (green) and each model's prediction (red): {', '.join(report['models'])}",
                out / "samples.gif",
            ),
        ],
        notes=report["protocol"],
        intro="Learned models trained under one budget on the same data, scored beside parameter-free "
        "baselines on the same test clips.",
    )


def compare(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    out: str | Path,
    retrain: bool = False,
) -> dict[str, Any]:
    """Train each of `compare.models` under one budget; score and profile them beside the baselines.

    Each learned model trains on the same data with the same budget into `out/runs/<label>` (a rerun
    reuses the models whose training finished there with the same config, unless `retrain`); then all of
    them and `eval.baselines` are evaluated on the same clips in one pass and profiled. Writes
    `out/report.json` (`{"models": {label: {COMPARE_KEYS...}}, "protocol": {...}}`), `out/report.html`,
    `out/per_step.png` and `out/samples.gif`, and returns the report.
    """
    start = time.perf_counter()
    cfg = config if isinstance(config, Config) else build_config(config, overrides)
    if cfg.task.name != "prediction":
        raise VidynError(f"compare trains frame predictors: set task.name=prediction, not {cfg.task.name!r}")
    entries = _compare_entries(cfg)
    run_cfgs = {e["label"]: _compare_run_config(cfg, e) for e in entries}  # all checked before training
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    models, trained = _train_each(cfg, run_cfgs, out, retrain)
    prepare_runtime(cfg.trainer)
    device = default_device()
    dataset = build_dataset(cfg.data.name, cfg.eval.split, cfg.data.args, cfg.data.splits)
    print(f"compare: scoring and profiling {len(models)} models on the {cfg.eval.split} split", flush=True)
    lpips, lpips_line = lpips_for(dataset)
    results, visuals = evaluate_predictors_for(
        models,
        dataset,
        cfg,
        max_clips=cfg.eval.max_clips,
        num_visual_clips=max(1, cfg.eval.num_visual_clips),
        device=device,
        lpips=lpips,
    )
    profile_batch = cfg.compare.profile_batch or cfg.data.batch_size
    train_set = build_dataset(cfg.data.name, "train", cfg.data.args, cfg.data.splits)
    batch = next(iter(DataLoader(train_set, batch_size=min(profile_batch, len(train_set)), shuffle=False)))
    rows = _report_rows(models, results, cfg, run_cfgs, batch, device)
    clips = next(iter(results.values()))["num_clips"]
    shape = list(dataset[0]["frames"].shape[1:])
    batch_size = int(batch["frames"].shape[0])
    protocol = _protocol(cfg, run_cfgs[entries[0]["label"]], clips, shape, trained, batch_size, device)
    protocol["lpips"] = lpips_line
    report = {"models": rows, "protocol": protocol}
    write_prediction_figures(out, results, visuals)
    report["protocol"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    _write_report(out, cfg, report)
    return report


def compare_table(models: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of formatted cells, one row per model: what the CLI, the UI and the HTML show."""
    rows = [
        [name] + [format_value(row.get(c.key), c.kind) for c in COMPARE_COLUMNS]
        for name, row in models.items()
    ]
    return ["model"] + [c.header for c in COMPARE_COLUMNS], rows


def read_compare_report(folder: str | Path) -> dict[str, Any]:
    """A `vidyn compare` report folder, ready to show: `{"headers", "rows"` (formatted table cells, one
    row per model), `"figures"` ({file name: path} of per_step.png and samples.gif where present),
    `"protocol"`}; a one-line error when the folder holds no compare report."""
    folder = Path(folder).expanduser()
    report_file = folder / "report.json"
    if not report_file.is_file():
        raise VidynError(f"{str(folder)!r} holds no report.json; give a folder `vidyn compare --out` wrote")
    try:
        report = json.loads(report_file.read_text())
        models = report["models"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise VidynError(f"{report_file} is not a vidyn compare report ({type(e).__name__})") from None
    headers, rows = compare_table(models)
    return {
        "headers": headers,
        "rows": rows,
        "figures": {f: str(folder / f) for f in COMPARE_FIGURES if (folder / f).is_file()},
        "protocol": report.get("protocol", {}),
    }
