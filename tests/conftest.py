"""Shared fixtures: tiny configs that train in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_flush_denormal(True)


def tiny_prediction_config(model: str = "convlstm_tiny", **model_args) -> dict:
    return {
        "name": "tiny",
        "model": {"name": model, "args": {"in_channels": 1, "image_size": 16, **model_args}},
        "data": {
            "name": "shapes",
            "args": {"size": 16, "channels": 1, "num_frames": 8, "frame_interval": 0.1, "max_objects": 1},
            "splits": {"train": {"num_samples": 16}, "val": {"num_samples": 4}, "test": {"num_samples": 6}},
            "batch_size": 4,
        },
        "task": {"num_context": 4, "num_future": 4},
        "optim": {"lr": 0.003},
        "trainer": {"max_steps": 4, "val_check_interval": 2, "log_every_n_steps": 1, "progress_bar": False},
        "eval": {"num_visual_clips": 2},
    }


@pytest.fixture
def tiny_config() -> dict:
    return tiny_prediction_config()


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_config: dict) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text("# vidyn train -c tiny.yaml\n" + yaml.safe_dump(tiny_config))
    return path
