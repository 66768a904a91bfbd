"""One evaluator per model family, called alike by `evaluate`, `compare`, `demo`, `train` and the UI.

Evaluators are registered in `vidyn.registry.EVALUATORS` under the family they score and share one
signature: `(model, meta, cfg, dataset, *, split, report_dir, max_clips, others, device) -> {"models":
{name: {...}}, "protocol": {...}, ...}`. Adding a family means adding a module here that registers its
evaluator; nothing dispatches on family names.

- `prediction`: frame predictors beside the baselines, on the task's split (`evaluate_predictors`).
- `continuous`: the continuous-time protocols (unseen in-between, beyond and irregular timestamps).
- `classification`: top-1/top-5, per-class accuracy, confusions (`evaluate_classifier`).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import Dataset

from vidyn.config import Config
from vidyn.errors import VidynError
from vidyn.evaluation import classification, generation, prediction  # noqa: F401  (registers the evaluators)
from vidyn.evaluation.classification import evaluate_classifier, spread_windows
from vidyn.evaluation.continuous import evaluate_continuous
from vidyn.evaluation.prediction import (
    evaluate_predictors,
    evaluate_predictors_for,
    prediction_args,
    write_prediction_figures,
)
from vidyn.registry import EVALUATORS

__all__ = [
    "evaluate_classifier",
    "evaluate_continuous",
    "evaluate_model",
    "evaluate_predictors",
    "evaluate_predictors_for",
    "prediction_args",
    "spread_windows",
    "write_prediction_figures",
]


def evaluate_model(
    model: nn.Module, meta: dict[str, Any], cfg: Config, dataset: Dataset, **kwargs: Any
) -> dict[str, Any]:
    """Score an exported model with its family's evaluator (keywords: split, report_dir, max_clips, ...)."""
    family = meta.get("family")
    if family not in EVALUATORS:
        raise VidynError(
            f"vidyn cannot evaluate a {family!r} model yet (known: {', '.join(EVALUATORS.names())})"
        )
    return EVALUATORS.build(family, model, meta, cfg, dataset, **kwargs)
