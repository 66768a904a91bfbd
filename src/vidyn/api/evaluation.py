"""`evaluate`: score an exported model on its own dataset's split with its family's evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vidyn.api._common import _write_json, config_of, default_device
from vidyn.data.datamodule import build_dataset
from vidyn.errors import VidynError
from vidyn.evaluation import evaluate_model, evaluate_predictors  # noqa: F401  (re-exported by vidyn.api)
from vidyn.export import load_model, read_model_meta


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
    """Evaluate an exported model on its own dataset's split (`vidyn.evaluation`).

    Returns (and writes to json_path) `{"models": {name: {...}}, "protocol": {...}}`; with report_dir the
    evaluator also writes its figures there. A predictor is scored beside the configured baselines and,
    for a continuous-time one on a dataset that renders any time (shapes), on in-between, beyond and
    irregular timestamps (`"continuous"`). `others`: more exported predictors (e.g. a trained convlstm
    beside a continuous-time one, or beside a generator's futures) scored on the same clips; a model that
    cannot predict the split (a discrete-time one on irregular clips) is reported with a reason instead of
    numbers.
    """
    meta = read_model_meta(model_path)
    cfg = config_of(meta, overrides)
    model = load_model(model_path)
    dataset = build_dataset(cfg.data.name, split, cfg.data.args, cfg.data.splits)
    if others and meta.get("family") not in ("predictor", "generator"):
        raise VidynError(
            f"{meta['name']!r} is a {meta.get('family')}; only frame predictors and generators that "
            "continue initial frames take other models"
        )
    extra = _other_predictors(others, taken={meta["name"], *cfg.eval.baselines}) if others else None
    out = evaluate_model(
        model,
        meta,
        cfg,
        dataset,
        split=split,
        report_dir=report_dir,
        max_clips=max_clips,
        others=extra,
        device=default_device(),
    )
    if json_path is not None:
        _write_json(Path(json_path), out)
    return out
