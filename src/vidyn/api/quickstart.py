"""`demo`: the one-command tour (train convlstm on shapes, evaluate it beside the baselines, report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidyn.api.training import train
from vidyn.config import build_config

DEMO_CONFIG = "predict/demo"


def demo(out: str | Path = "vidyn-demo", overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Train convlstm on `shapes`, evaluate it beside copy_last and linear, write the report to `out`."""
    cfg = build_config(DEMO_CONFIG, overrides)
    result = train(cfg, run_dir=out)
    return {
        "out": str(result.run_dir),
        "seconds": result.seconds,
        "metrics": result.metrics,
        "stop_reason": result.stop_reason,
    }
