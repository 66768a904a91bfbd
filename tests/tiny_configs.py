"""Tiny run configs that train in seconds, for tests (a plain module: test folders may have conftests
of their own, so `from conftest import ...` would be ambiguous)."""

from __future__ import annotations


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
        "task": {"name": "prediction", "args": {"num_context": 4, "num_future": 4}},
        "optim": {"lr": 0.003},
        "trainer": {"max_steps": 4, "val_check_interval": 2, "log_every_n_steps": 1, "progress_bar": False},
        "eval": {"num_visual_clips": 2},
    }
