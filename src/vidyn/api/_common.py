"""Helpers the verbs share: the default device and atomic JSON writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vidyn.fileio import atomic_write_json


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data)
