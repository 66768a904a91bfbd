"""Training steps of every vidyn model through `vidyn train`'s own path, in fp32 and bf16-mixed.

    python benchmarks/bench_train_steps.py [--device cuda|cpu] [--scales quick seed] [--steps 30]
        [--precisions 32-true bf16-mixed] [--models convlstm ode_gan ...] [--json out.json] [--set KEY=VALUE]

Each run is `vidyn.api.train` on a shipped config (the task, the Trainer, its callbacks and the data
loader exactly as `vidyn train` runs them), cut to `--warmup + --steps` optimiser steps with validation
and the final evaluation off, once per precision. A callback times every training batch (CUDA:
synchronised before and after) and the table gives, after the warm-up steps:
- `step ms`: the median time of one training step (forward, backward, optimiser; a GAN step is its
  discriminator and generator updates), data already loaded;
- `interval ms`: the median time from one step's end to the next's (the step plus waiting for data and
  Lightning's own work between batches), i.e. what a training run achieves;
- `peak MiB` (CUDA): the most memory allocated during the run; `loss`: the last logged `train/loss`,
  finite in every row (a bf16 run that diverged at once would show here).

Scales: `quick` = the shipped `*_shapes_quick` configs (and `predict/demo` for the prediction models);
`seed` = the seeds' own UCF101 configs with their data swapped for synthetic `shapes` clips of the same
size, channels and length (so they run anywhere, with the seeds' model and batch sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from vidyn.api.training import train
from vidyn.config import parse_override, read_yaml, shipped_config_path
from vidyn.models.profile import synchronize
from vidyn.tasks.engine import precision_for_device

TRANSFORMER = {  # as in compare/seed003_shapes
    "name": "transformer",
    "args": {"in_channels": 1, "image_size": 64, "patch_size": 8, "embed_dim": 128, "depth": 4,
             "num_heads": 4, "max_frames": 64},
}  # fmt: skip
QUICK = {  # model: (shipped config, changes to it)
    "convlstm": ("predict/demo", {}),
    "predrnn": ("predict/demo", {"model.name": "predrnn"}),
    "predrnn_v2": ("predict/demo", {"model.name": "predrnn_v2"}),
    "transformer": ("predict/demo", {"model": TRANSFORMER}),
    "vid_ode": ("interpolate/vid_ode_shapes_quick", {}),
    "cnn_rnn": ("recognize/cnn_rnn_shapes_quick", {}),
    "ode_gan": ("generate/ode_gan_shapes_quick", {}),
    "sde_video": ("generate/sde_video_shapes_quick", {}),
}
SEED = {  # the seeds' UCF101 configs; their data becomes synthetic clips of the same shape
    "convlstm": ("predict/seed003_ucf101", {}),
    "cnn_rnn": ("recognize/cnn_rnn_ucf101", {"task.args.freeze_backbone_until_epoch": 0}),
    "ode_gan": ("generate/ode_gan_ucf101", {}),
    "sde_video": ("generate/sde_video_ucf101", {}),
}


class StepTimer(Callback):
    """Wall time of each training batch and between consecutive batch ends (CUDA: synchronised)."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.intervals: list[float] = []
        self.last_loss = float("nan")
        self._start = self._end = 0.0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        synchronize(module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        synchronize(module.device)
        end = time.perf_counter()
        self.steps.append(end - self._start)
        if self._end:
            self.intervals.append(end - self._end)
        self._end = end
        loss = trainer.callback_metrics.get("train/loss")  # every task logs it
        if loss is not None:
            self.last_loss = float(loss)


def _changed(raw: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`raw` with each dotted key of `changes` set to its value (a whole section replaced where named)."""
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(json.dumps(value))
    return raw


def _as_synthetic(raw: dict[str, Any]) -> dict[str, Any]:
    """The config with its UCF101 data swapped for `shapes` clips of the same size, channels and length
    (the label count follows the synthetic data's 7 motion laws)."""
    data, model = raw["data"], raw["model"]["args"]
    channels = 1 if data["args"].get("grayscale") else model.get("in_channels", 3)
    raw["data"] = {
        "name": "shapes",
        "args": {
            "size": data["args"]["size"],
            "channels": channels,
            "num_frames": data["args"]["num_frames"],
            "frame_interval": 0.04,
            "max_objects": 2,
        },  # fmt: skip
        "splits": {"train": {"num_samples": 100000}, "val": {"num_samples": 16}, "test": {"num_samples": 16}},
        "batch_size": data["batch_size"],
        "num_workers": data.get("num_workers", 0),
    }
    if "num_classes" in model:
        model["num_classes"] = 7
    return raw


def run_config(name: str, scale: str, precision: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config, changes = (QUICK if scale == "quick" else SEED)[name]
    raw = _changed(read_yaml(shipped_config_path(config)), changes)
    raw = _changed(raw, {".".join(keys): value for keys, value in map(parse_override, args.set)})
    if scale == "seed":
        raw = _as_synthetic(raw)
    raw["trainer"].update(
        max_steps=args.warmup + args.steps, max_time=None, limit_val_batches=0, progress_bar=False,
        precision=precision, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
        checkpoint_every_n_steps=10**9,
    )  # fmt: skip
    if args.device == "cpu":
        raw["trainer"]["num_threads"] = args.threads
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ran = precision_for_device(precision, raw["trainer"]["accelerator"])  # what train() will run
        train(raw, run_dir=out / f"{name}-{scale}-{precision}", evaluate_after=False, callbacks=[timer])
    steps, intervals = timer.steps[args.warmup :], timer.intervals[args.warmup :]
    return {
        "model": name,
        "scale": scale,
        "config": config,
        "precision": precision if ran == precision else f"{precision}->{ran}",  # e.g. bf16 emulated: fp32
        "batch": raw["data"]["batch_size"],
        "step_ms": 1000 * statistics.median(steps),
        "interval_ms": 1000 * statistics.median(intervals or steps),
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else float("nan"),
        "loss": timer.last_loss,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'model':<12}{'scale':<7}{'precision':<21}{'batch':>6}{'step ms':>9}{'interval ms':>12}"
          f"{'peak MiB':>10}{'loss':>11}  config")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<12}{r['scale']:<7}{r['precision']:<21}  FAILED: {r['error']}")
            continue
        print(f"{r['model']:<12}{r['scale']:<7}{r['precision']:<21}{r['batch']:>6}{r['step_ms']:>9.1f}"
              f"{r['interval_ms']:>12.1f}{r['peak_mib']:>10.0f}{r['loss']:>11.4g}  "
              f"{r['config']}")  # fmt: skip
    fp32 = {(r["model"], r["scale"]): r for r in rows if "error" not in r and r["precision"] == "32-true"}
    ratios = [
        f"{r['model']} {r['scale']}: {fp32[(r['model'], r['scale'])]['step_ms'] / r['step_ms']:.2f}x"
        for r in rows
        if "error" not in r and r["precision"] == "bf16-mixed" and (r["model"], r["scale"]) in fp32
    ]
    if ratios:
        print("bf16-mixed step speed-up over 32-true: " + ", ".join(ratios))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scales", nargs="+", choices=["quick", "seed"], default=["quick", "seed"])
    parser.add_argument("--models", nargs="*", help="default: every model of each scale")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every run, e.g. task.args.compile_rollout=reduce-overhead",
    )
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    changes = f"; with {', '.join(args.set)}" if args.set else ""
    steps = f"{args.steps} timed steps after {args.warmup} warm-up"
    print(f"=== torch {torch.__version__}, {where}; {steps}{changes}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            for name in QUICK if scale == "quick" else SEED:
                if args.models and name not in args.models:
                    continue
                for precision in args.precisions:
                    try:
                        rows.append(run_config(name, scale, precision, args, Path(tmp)))
                    except Exception as exc:  # noqa: BLE001  (report it in the table, go on to the next run)
                        traceback.print_exc()
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                        rows.append({"model": name, "scale": scale, "precision": precision, "error": first})
                    r = rows[-1]
                    print(json.dumps(r), flush=True)
                    if args.json:
                        args.json.write_text(json.dumps(rows, indent=1))
    print_table(rows)
    return int(any("error" in r or not math.isfinite(r["loss"]) for r in rows))


if __name__ == "__main__":
    sys.exit(main())
