"""Helpers the verbs share: the default device, an exported model's run config, atomic JSON writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vidyn.config import Config, build_config, upgrade_legacy
from vidyn.fileio import atomic_write_json


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def config_of(meta: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The run config stored in an exported model's model.json (older layouts upgraded), plus overrides."""
    return build_config(upgrade_legacy(meta.get("config") or {}), overrides)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data)
