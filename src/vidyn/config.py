"""Run configuration: one dataclass schema, YAML files, and `--set a.b=value` overrides.

Defaults live in one place: the dataclass fields below, and the builder signatures of models and
datasets (whose free-form `args` dicts are checked against those signatures when they are built).
Precedence: dataclass defaults < YAML file < `--set` overrides. Unknown keys are errors that list the
valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from vidyn.errors import VidynError
from vidyn.fileio import atomic_write_text


@dataclass
class ModelConfig:
    name: str = "convlstm"
    args: dict[str, Any] = field(default_factory=dict)  # checked against the builder's signature


@dataclass
class DataConfig:
    name: str = "shapes"
    args: dict[str, Any] = field(default_factory=dict)  # dataset builder arguments shared by all splits
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-split overrides: {"train": {...}}
    batch_size: int = 8
    eval_batch_size: int | None = None
    num_workers: int = 0
    # A raw `folder` of videos is decoded once into a prepared store (every window) before training,
    # reused by later runs with the same decoding settings: <out_dir>/.stores/<hash>. False: decode live.
    prepare: bool = True


@dataclass
class TaskConfig:
    name: str = "prediction"  # a registered task (vidyn.registry.TASKS): prediction | recognition | ...
    args: dict[str, Any] = field(default_factory=dict)  # checked against the task builder's signature


_UNIONS = (Union, types.UnionType)

# The flat task section of vidyn <= 0.1 (before tasks were registered): refused with how to convert.
_LEGACY_TASK_KEYS = {
    "kind", "num_context", "num_future", "mode", "loss", "sampling_stop_fraction", "adversarial_weight",
    "warp_weight", "pyramid_scales", "label_smoothing", "freeze_backbone_until_epoch", "unfreeze_layers",
}  # fmt: skip
_LEGACY_ARGS = {
    "prediction": (
        "num_context",
        "num_future",
        "mode",
        "loss",
        "sampling_stop_fraction",
        "adversarial_weight",
    ),
    "recognition": ("label_smoothing", "freeze_backbone_until_epoch", "unfreeze_layers"),
}


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adam | adamw | adamax
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    warmup_epochs: int = 0  # alternative to warmup_steps for epoch-based recipes (seed 002)
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.01
    budget_schedule: bool = False  # the cosine ends at trainer.max_time if that comes before max_steps


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    max_epochs: int | None = None
    max_time: float | None = None  # wall-clock budget in seconds
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    early_stopping_patience: int = 0  # validation rounds without improvement; 0 = off
    monitor: str = "val/loss"
    val_check_interval: int | float | None = None  # steps (int) or fraction of an epoch; None = each epoch
    limit_val_batches: int | float = 1.0
    log_every_n_steps: int = 10
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    keep_freed_memory_mb: int | None = 1024  # glibc: freed heap kept for the next step (vidyn.allocator)
    dist_timeout: float = 600.0  # seconds a DDP collective waits for the other ranks before failing
    progress_bar: bool = True
    checkpoint_every_n_steps: int = 100  # last.ckpt also after every validation, epoch and at the stop
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-identical resume on GPUs)


@dataclass
class EvalConfig:
    split: str = "test"
    baselines: list[str] = field(default_factory=lambda: ["copy_last", "linear", "context_median"])
    num_visual_clips: int = 4
    max_clips: int | None = None


@dataclass
class CompareConfig:
    """`vidyn compare`: learned models trained under one budget, scored beside `eval.baselines`.

    Each entry of `models` is `{name, args, optim, label}`: a registered predictor, its builder
    arguments, optional per-model `optim` overrides (e.g. `{lr: 0.002}`) and an optional `label` (default:
    the name) naming its row and its run folder. Every learned model gets the same `budget_steps`
    (optimiser steps; None keeps `trainer.max_steps`) and `budget_seconds` (wall-clock safeguard; None
    keeps `trainer.max_time`).
    """

    models: list[dict[str, Any]] = field(default_factory=list)
    budget_steps: int | None = None
    budget_seconds: float | None = None
    profile_batch: int | None = None  # batch of the train-step timing and memory; None = data.batch_size
    profile_repeats: int = 5  # timed repeats (medians) after one warm-up run


@dataclass
class Config:
    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _merge(obj: Any, updates: dict[str, Any], where: str) -> None:
    """Recursively set dataclass fields from a dict, refusing unknown keys."""
    if not isinstance(updates, dict):
        raise VidynError(f"config section {where or 'root'} must be a mapping, got {updates!r}")
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise VidynError(f"unknown config key {path!r}; valid keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, path)
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Light type check for scalars: int where float is wanted is fine; a string where a number is not.

    Optional fields (`int | None`) are checked as their non-None type; unions of numbers (`int | float`)
    take either.
    """
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise VidynError(f"config key {path!r} cannot be null")
    args = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) in _UNIONS else []
    if args:  # a union: e.g. int | None, int | float | None, int | str
        if len(args) == 1:
            return _coerce(value, args[0], path)
        if set(args) <= {int, float} and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise VidynError(f"config key {path!r} must be a number, got {value!r}")
        return value
    if hint is float or text.startswith("float"):
        if isinstance(value, str):
            # PyYAML reads `1e-3` (no dot) as a string; accept it as the number the user meant.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VidynError(f"config key {path!r} must be a number, got {value!r}")
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise VidynError(f"config key {path!r} must be an integer, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise VidynError(f"config key {path!r} must be true or false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise VidynError(f"config key {path!r} must be a string, got {value!r}")
    return value


MAX_YAML_VALUES = 100_000  # values after expanding aliases; a real config holds a few hundred


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values `node` becomes once its aliases are expanded (capped; a cycle counts as too many)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_YAML_VALUES + 1  # reached again while being counted: a recursive alias
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_YAML_VALUES + 1)
    return memo[id(node)]


def load_yaml_text(text: str, what: str) -> Any:
    """`yaml.safe_load`, refusing in one line what it cannot or should not build: Python tags
    (`!!python/object/apply:...` is never constructed, let alone run), alias bombs ("billion laughs"),
    recursive aliases and nesting deeper than the parser's recursion limit."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise VidynError(
                f"{what} expands to more than {MAX_YAML_VALUES} values through YAML aliases (or refers to "
                "itself); write the values out"
            )
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VidynError(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise VidynError(f"{what} is nested too deeply to be a config") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML so numbers, bools and lists work)."""
    if "=" not in text:
        raise VidynError(f"override {text!r} must look like key.sub=value, e.g. trainer.max_steps=100")
    key, raw = text.split("=", 1)
    value = load_yaml_text(raw, f"the value in override {text!r}") if raw != "" else ""
    return key.strip().split("."), value


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {keys[-1]: value}
    for k in reversed(keys[:-1]):
        out = {k: out}
    return out


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def shipped_config_path(name: str) -> Path:
    """Resolve a shipped config such as `predict/convlstm_shapes` (with or without `.yaml`)."""
    rel = name if name.endswith(".yaml") else f"{name}.yaml"
    path = Path(str(importlib.resources.files("vidyn") / "configs" / rel))
    if not path.is_file():
        raise VidynError(f"no shipped config {name!r}; choose one of: {', '.join(list_shipped_configs())}")
    return path


def list_shipped_configs() -> list[str]:
    root = Path(str(importlib.resources.files("vidyn") / "configs"))
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        # Not a file: maybe the name of a shipped config (e.g. `predict/convlstm_shapes`).
        try:
            path = shipped_config_path(str(path))
        except VidynError:
            raise VidynError(
                f"config file {str(path)!r} not found; pass a YAML path or a shipped config "
                f"({', '.join(list_shipped_configs())})"
            ) from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise VidynError(
            f"config file {str(path)!r} is not UTF-8 text ({exc.reason}); save it as UTF-8"
        ) from None
    data = load_yaml_text(text, f"config file {str(path)!r}") or {}
    if not isinstance(data, dict):
        raise VidynError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def build_config(
    base: str | Path | dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Defaults < YAML file (or dict) < `key=value` overrides."""
    raw: dict[str, Any] = {}
    if isinstance(base, dict):
        raw = _deep_update({}, base)
    elif base is not None:
        raw = read_yaml(base)
    for text in overrides:
        keys, value = parse_override(text)
        _deep_update(raw, _nest(keys, value))
    _check_task_layout(raw.get("task"))
    cfg = Config()
    _merge(cfg, raw, "")
    return cfg


def _check_task_layout(task: Any) -> None:
    legacy = sorted(set(task) & _LEGACY_TASK_KEYS) if isinstance(task, dict) else []
    if legacy:
        raise VidynError(
            f"config section task uses the old flat layout ({', '.join(legacy)}); write it as "
            "task: {name: prediction, args: {num_context: 10, ...}} (kind: recognition becomes name: "
            "recognition; on the command line --set task.args.num_context=10)"
        )


def upgrade_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict of an older vidyn (flat task section) in today's layout; others are returned as is.

    Used for the configs stored inside exported models, which users cannot edit; YAML files and `--set`
    overrides in the old layout are refused with how to convert them (`build_config`).
    """
    task = raw.get("task")
    if not isinstance(task, dict) or not set(task) & _LEGACY_TASK_KEYS:
        return raw
    name = task.get("kind", "prediction")
    args = {k: v for k, v in task.items() if k in _LEGACY_ARGS.get(name, ())}
    if args.get("loss") == "vid_ode":  # Vid-ODE's paper loss is now the model's own: loss "model"
        args["loss"] = "model"
        extra = {k: task[k] for k in ("warp_weight", "pyramid_scales") if task.get(k)}
        if extra:
            args["loss_args"] = extra
    return {**raw, "task": {"name": name, "args": args}}


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
