"""Classification charts for the web UI: top-k bars and the recognizer's temporal attention (PNG files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402


def top_k_chart(predictions: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars of the top classes' probabilities, most probable on top."""
    names = [p["class"] for p in predictions][::-1]
    probs = [p["probability"] for p in predictions][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2), dpi=100)
    bars = ax.barh(names, probs, color="#e8623a")
    ax.bar_label(bars, labels=[f"{p:.1%}" for p in probs], padding=3)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("probability (averaged over the clip's windows)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def attention_chart(attention: dict[str, Any], path: Path, title: str) -> Path:
    """The attention each frame of the window receives (bars) beside the full frame-to-frame matrix."""
    received, matrix = attention["received"], attention["matrix"]
    frames = list(range(1, len(received) + 1))
    fig, (bars, heat) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100, width_ratios=(1.4, 1))
    bars.bar(frames, received, color="#3a7be8")
    bars.axhline(1 / len(received), color="grey", linestyle="--", linewidth=1, label="uniform")
    bars.set_xlabel("frame of the window")
    bars.set_ylabel("attention received")
    bars.legend(loc="upper right", fontsize=8)
    image = heat.imshow(matrix, cmap="viridis", extent=(0.5, len(frames) + 0.5, len(frames) + 0.5, 0.5))
    heat.set_xlabel("attended frame")
    heat.set_ylabel("attending frame")
    fig.colorbar(image, ax=heat, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
