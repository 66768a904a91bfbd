"""`train --resume RUN`: the run's own config, overrides checked against its checkpoint before anything
is written, and a record of every resume.

A run folder holds the config it trained under (`config.yaml`). Resuming reads that config, not the one
named by `-c` (which is not read: the README's `vidyn train -c predict/demo --resume runs/demo` resumes
the run with the settings it started with), and applies the resume command's `--set` overrides on top.
The result must fit `checkpoints/last.ckpt`: the same parameter names and shapes and the same optimiser;
otherwise the resume stops with one line naming the override and the first mismatching tensor, and the
run folder is left exactly as it was. Only then is config.yaml rewritten (it describes the run from here
on) and the resume appended to `resumes.json` (step, overrides, time).

Optimiser settings changed on resume (optim.lr, optim.weight_decay, optim.betas) are written into the
restored optimiser and schedule; without this the checkpoint's saved values would silently win.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidyn.config import Config, build_config, save_config
from vidyn.errors import VidynError
from vidyn.fileio import TEMP_GLOB, atomic_write_json


@dataclass
class ResumePlan:
    run_dir: Path
    checkpoint: Path
    cfg: Config
    saved: Config | None  # the run's config.yaml as it was (None for a bare checkpoint)
    overrides: list[str]
    config_ignored: str | None = None  # the -c given but not read
    step: int = 0
    optim_update: dict[str, Any] = field(default_factory=dict)


def resume_command(run_dir: str | Path) -> str:
    return f"vidyn train --resume {run_dir}"


def plan_resume(
    config: Any, overrides: list[str] | tuple[str, ...], resume: str | Path, run_dir: str | Path | None
) -> ResumePlan:
    """Where to resume from and with which config; reads files only."""
    resume = Path(resume)
    ckpt = resume / "checkpoints" / "last.ckpt" if resume.is_dir() else resume
    if not ckpt.is_file():
        raise VidynError(
            f"nothing to resume at {str(resume)!r}: expected a run folder with checkpoints/last.ckpt "
            "(the folder `vidyn train` printed as its run folder) or a .ckpt file"
        )
    out = Path(run_dir) if run_dir is not None and not resume.is_dir() else ckpt.parent.parent
    saved_path = out / "config.yaml"
    if saved_path.is_file():
        saved = build_config(saved_path)
        cfg = build_config(saved_path, overrides)
        ignored = None if config is None or isinstance(config, Config) else str(config)
    elif config is not None:
        saved, ignored = None, None
        cfg = config if isinstance(config, Config) else build_config(config, overrides)
    else:
        raise VidynError(
            f"{out} has no config.yaml; give the config the checkpoint was trained with: -c CONFIG"
        )
    plan = ResumePlan(out, ckpt, cfg, saved, list(overrides), ignored)
    plan.optim_update = _optim_update(saved, cfg)
    return plan


def _optim_update(saved: Config | None, cfg: Config) -> dict[str, Any]:
    if saved is None:
        return {}
    old, new = saved.optim, cfg.optim
    if old.optimizer != new.optimizer:
        raise VidynError(
            f"optim.optimizer={new.optimizer} does not fit the checkpoint (trained with {old.optimizer}): "
            "resume without that override, or start a new run"
        )
    update: dict[str, Any] = {}
    if new.lr != old.lr:
        update["lr_scale"] = new.lr / old.lr
    if new.weight_decay != old.weight_decay:
        update["weight_decay"] = new.weight_decay
    if list(new.betas) != list(old.betas):
        update["betas"] = tuple(new.betas)
    return update


def _changes(saved: Config | None, cfg: Config) -> str:
    """`a.b: old -> new` for every setting the overrides changed."""
    if saved is None:
        return "the given config"

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v}
        return out

    a, b = flat(saved.to_dict()), flat(cfg.to_dict())
    diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diff) or "no setting"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint read without running code (`weights_only`); one-line error otherwise."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001  (any failure to read is the user's file, not our bug)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VidynError(
            f"cannot resume from {path}: it is not a readable vidyn checkpoint ({first}); resume from "
            "another checkpoint or start a new run"
        ) from None


def check_fits(plan: ResumePlan, task: torch.nn.Module) -> None:
    """Refuse, before anything is written, a config whose task does not fit the checkpoint."""
    ckpt = load_checkpoint(plan.checkpoint)
    plan.step = int(ckpt.get("global_step", 0))
    theirs: dict[str, torch.Tensor] = ckpt.get("state_dict") or {}
    ours = task.state_dict()
    old_gates = next(
        (
            k
            for k in theirs
            if k.endswith(".conv_x.weight") and k.removesuffix("conv_x.weight") + "conv_xh.weight" in ours
        ),
        None,
    )
    if old_gates is not None:  # written before vidyn fused the ST-LSTM's gate convolutions (conv_rnn.py)
        raise VidynError(
            f"cannot resume {plan.run_dir}: {plan.checkpoint.name} holds PredRNN's gates as three "
            f"convolutions ({old_gates}), the layout before vidyn fused them into two, and its optimiser "
            "state does not carry over; the model the run exported still loads (evaluate, predict, ui): "
            "start a new run to train further"
        )
    problem = None
    for key in list(ours) + [k for k in theirs if k not in ours]:
        if key not in theirs:
            problem = f"these settings add {key}, which the checkpoint lacks"
        elif key not in ours:
            problem = f"the checkpoint holds {key}, which these settings lack"
        elif tuple(ours[key].shape) != tuple(theirs[key].shape):
            problem = (
                f"{key} is {list(theirs[key].shape)} there but {list(ours[key].shape)} with these settings"
            )
        if problem:
            raise VidynError(
                f"cannot resume {plan.run_dir}: the settings ({_changes(plan.saved, plan.cfg)}) do not fit "
                f"{plan.checkpoint.name}: {problem}; resume without the override that changes the model, or "
                "start a new run with -c"
            )


def record(plan: ResumePlan) -> None:
    """Rewrite config.yaml with the config resumed under, log the resume, drop half-written temporaries."""
    save_config(plan.cfg, plan.run_dir / "config.yaml")
    log_path = plan.run_dir / "resumes.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else []
    log.append(
        {
            "from_step": plan.step,
            "checkpoint": str(plan.checkpoint),
            "overrides": plan.overrides,
            "time": datetime.datetime.now().isoformat(timespec="seconds"),
        }
    )
    atomic_write_json(log_path, log)
    for tmp in (plan.run_dir / "checkpoints").glob(TEMP_GLOB):  # left by a process killed mid-write
        tmp.unlink(missing_ok=True)
