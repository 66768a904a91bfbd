"""Shared fixtures: tiny configs that train in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_configs import tiny_prediction_config

torch.set_flush_denormal(True)
# Tests check behaviour on tiny models, where a second intra-op thread buys nothing and, when another
# process holds the other core, OpenMP's barrier waits made one PredRNN overfit test take 230-415 s
# instead of seconds (measured on 2 cores beside a training run).
torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> dict:
    return tiny_prediction_config()


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_config: dict) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text("# vidyn train -c tiny.yaml\n" + yaml.safe_dump(tiny_config))
    return path
