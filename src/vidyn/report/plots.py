"""Static figures: per-horizon quality curves, confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from vidyn.fileio import atomic_path

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_per_step(
    models: dict[str, dict[str, Any]],
    path: str | Path,
    metrics: tuple[str, ...] = ("ssim", "psnr"),
    times: list[float] | None = None,
) -> Path:
    """One panel per metric: the per-horizon curve of every model (`models[name]["per_step"][metric]`)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, res in models.items():
            values = res.get("per_step", {}).get(metric)
            if not values:
                continue
            xs = times if times and len(times) == len(values) else list(range(1, len(values) + 1))
            ax.plot(xs, values, marker="o", ms=3, label=name)
        ax.set_xlabel("target time offset (s)" if times else "prediction step")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Quality per prediction horizon")
    return _save(fig, Path(path))


def plot_confusion(cm: list[list[int]], class_names: list[str], path: str | Path) -> Path:
    n = len(class_names)
    size = max(4.0, min(24.0, 0.25 * n + 3))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    return _save(fig, Path(path))


def plot_progress(rows: list[dict[str, Any]], path: str | Path, metrics: tuple[str, ...]) -> Path:
    """One panel per metric against the training step (`rows[i]["step"]`, `rows[i][metric]`; None = not
    scored): a generator's quality through training (`vidyn.tasks.generator_progress`)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        points = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", ms=3)
        ax.set_xlabel("training step")
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("Generator quality through training (validation clips)")
    return _save(fig, Path(path))
