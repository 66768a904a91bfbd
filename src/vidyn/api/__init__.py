"""The verbs of vidyn. The CLI and the web UI are thin layers over these functions.

train, evaluate, predict, classify, prepare, render, demo (more verbs join as their model families land).

Where each verb lives (every name below is importable from `vidyn.api`; patch a verb's collaborators on
the module that defines it, e.g. `vidyn.api.comparison.train`):

- `training`: `train`, `TrainResult`.
- `evaluation`: `evaluate` (an exported model with its family's evaluator from `vidyn.evaluation`),
  `evaluate_predictors` (several predictors scored on the same clips).
- `inference`: `predict`, `interpolate`, `classify`.
- `side_by_side`: `predict_many` (several predictors of any sizes on one clip, decoded once; runtimes),
  `interpolate_side_by_side` (the input beside the interpolated clip).
- `models`: `describe_model` (an exported model's input spec and capabilities), `find_models`,
  `input_note` (what a user's clip loses on the way into a model, said before running it).
- `data`: `prepare`, `render`.
- `comparison`: `compare`, `COMPARE_KEYS`, `COMPARE_COLUMNS`, `read_compare_report` (a report, for the UI).
- `quickstart`: `demo`, `DEMO_CONFIG`.
- `weights`: `install_weights`, `list_weights` (the verified FID/FVD/LPIPS networks).
- `generation`: `generate` (sample clips from an exported generator).
- `scoring`: `score`, `format_score_table` (generation metrics between two clip sets, with protocols).
- `_common`: `default_device` and the atomic JSON writer the verbs share.
"""

from __future__ import annotations

from vidyn.api._common import default_device
from vidyn.api.comparison import COMPARE_COLUMNS, COMPARE_KEYS, compare, read_compare_report
from vidyn.api.data import prepare, render
from vidyn.api.evaluation import evaluate, evaluate_predictors
from vidyn.api.generation import generate
from vidyn.api.inference import (
    _interpolation_windows as _interpolation_windows,  # tests check the window plan directly
)
from vidyn.api.inference import classify, interpolate, predict
from vidyn.api.models import describe_model, find_models, input_note
from vidyn.api.quickstart import DEMO_CONFIG, demo
from vidyn.api.scoring import format_score_table, score
from vidyn.api.side_by_side import interpolate_side_by_side, predict_many
from vidyn.api.training import TrainResult, train
from vidyn.api.weights import install_weights, list_weights

__all__ = [
    "COMPARE_COLUMNS",
    "COMPARE_KEYS",
    "DEMO_CONFIG",
    "TrainResult",
    "classify",
    "compare",
    "default_device",
    "demo",
    "describe_model",
    "evaluate",
    "evaluate_predictors",
    "find_models",
    "format_score_table",
    "generate",
    "input_note",
    "install_weights",
    "interpolate",
    "interpolate_side_by_side",
    "list_weights",
    "predict",
    "predict_many",
    "prepare",
    "read_compare_report",
    "render",
    "score",
    "train",
]
