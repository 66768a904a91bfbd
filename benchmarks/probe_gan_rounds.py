"""Does validation export the right round of a GAN run? Trains a generation config with a checkpoint at
every validation round (`RUN/rounds/`), then scores each round's EMA generator on the test split: FD-judge
of N samples (prompted by the laws of N reference clips) against N other real test clips, and the judge's
motion-law accuracy, beside the validation FD-judge the run logged for that round (from `RUN/train.log`).

    .venv/bin/python benchmarks/probe_gan_rounds.py RUN --seed 1 [--n 128] [--set KEY=VALUE ...]
    .venv/bin/python benchmarks/probe_gan_rounds.py RUN --score-only   # score the rounds of a finished run

Default config: `generate/ode_gan_shapes_quick` with one thread and `trainer.max_time=1600` (two runs side
by side on 2 cores reach its 2,400 steps). Results: docs/generation.md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path

import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

import vidyn.metrics as metrics
import vidyn.tasks.engine as engine
from vidyn.api.training import train
from vidyn.config import build_config, shipped_config_path
from vidyn.data.datamodule import build_dataset
from vidyn.export import build_model

LAWS = ["bounce", "orbit", "pendulum", "spring", "spin", "pulse", "gravity"]


def train_with_rounds(run: Path, seed: int, config: str, overrides: list[str]) -> None:
    sets = [f"trainer.seed={seed}", "trainer.num_threads=1", "trainer.max_time=1600", *overrides]
    every = int(build_config(shipped_config_path(config), sets).trainer.val_check_interval)
    original = engine._callbacks

    def callbacks(cfg, run_dir, *args, **kwargs):  # the engine's callbacks plus one checkpoint per round
        keep = ModelCheckpoint(run_dir / "rounds", "r{step}", every_n_train_steps=every, save_top_k=-1)
        return [*original(cfg, run_dir, *args, **kwargs), keep]

    engine._callbacks = callbacks
    log = (run.parent / f"{run.name}.log").open("w")
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        train(config, sets, run_dir=run)


@torch.no_grad()
def score_rounds(run: Path, n: int) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    args = dict(cfg["data"]["args"]) | {"num_samples": 2 * n}
    items = [build_dataset(cfg["data"]["name"], "test", args)[i] for i in range(2 * n)]
    real = torch.stack([it["frames"][:16] for it in items]).float()  # (2N, 16, C, H, W)
    laws = torch.tensor([int(it["label"]) for it in items])
    times = items[0]["times"][:16].float() - items[0]["times"][0]
    logged = (run.parent / f"{run.name}.log").read_text() if (run.parent / f"{run.name}.log").exists() else ""
    val = {
        int(s): float(v)
        for s, v in re.findall(r"validated at step (\d+)/\d+ .*?val/fd_judge ([\d.]+)", logged)
    }
    for path in sorted(
        (run / "rounds").glob("*.ckpt"), key=lambda p: int(re.search(r"step=(\d+)", p.name)[1])
    ):
        step = int(re.search(r"step=(\d+)", path.name)[1])
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        model = build_model(cfg["model"]["name"], **cfg["model"]["args"]).eval()
        model.load_state_dict(
            {k.removeprefix("ema.module."): v for k, v in state.items() if k.startswith("ema.module.")}
        )
        gen = torch.Generator().manual_seed(0)
        fake = torch.cat([model(model.noise(32, gen), times, laws[i : i + 32]) for i in range(0, n, 32)])
        fd = metrics.fd_judge(fake, real[n:], real_split="test")["value"]
        acc = metrics.motion_law_judge(fake, laws[:n], LAWS)["value"]
        print(f"step {step:5d}  val FD-judge {val.get(step, float('nan')):6.2f}  test FD-judge {fd:6.2f}  "
              f"accuracy {acc:.2f}", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="generate/ode_gan_shapes_quick")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--n", type=int, default=128, help="scored clips (and as many reference clips)")
    p.add_argument("--score-only", action="store_true")
    args = p.parse_args()
    if not args.score_only:
        train_with_rounds(args.run, args.seed, args.config, args.set)
    torch.set_num_threads(1)
    score_rounds(args.run, args.n)


if __name__ == "__main__":
    main()
