"""Labelled grids (vidyn.report) and predict_many's one decode of a clip's tail (vidyn.api.side_by_side)."""

from __future__ import annotations

import numpy as np
import torch

from vidyn.api.side_by_side import decode_tail
from vidyn.data.video_io import load_frames, write_video
from vidyn.report.labels import BAND_BACKGROUND, band_height, label_band, with_column_labels
from vidyn.report.media import BORDER, WAIT_FILL, comparison_frames


def _ink(band: torch.Tensor) -> torch.Tensor:
    """Pixels of a label band that differ from its background: (h, w) bool."""
    background = torch.tensor(BAND_BACKGROUND, dtype=torch.float32).view(3, 1, 1) / 255
    return (band - background).abs().sum(dim=0) > 0.2


def test_every_column_gets_its_label_and_long_ones_are_shortened() -> None:
    band = label_band(["context", "", "a_very_long_model_name_indeed\n16x16 gray"], [60, 60, 60])
    ink = _ink(band)
    assert band.shape == (3, band_height([60, 60, 60], 2), 180)
    assert ink[:, 2:58].any() and ink[:, 122:178].any()  # text in the first and third columns
    assert not ink[:, 62:118].any()  # an empty label draws nothing
    frames = torch.rand(5, 1, 40, 120)  # grayscale in, RGB out, the band above every frame
    labelled = with_column_labels(frames, ["a", "b"])
    assert labelled.shape == (5, 3, 40 + band_height([60, 60], 1), 120)
    assert torch.equal(labelled[:, :, -40:], frames.expand(-1, 3, -1, -1))


def test_comparison_columns_differ_while_the_context_plays() -> None:
    context = torch.rand(1, 3, 1, 8, 8)
    truth = torch.rand(1, 2, 1, 8, 8)
    preds = {"big": torch.rand(1, 2, 3, 16, 16), "small": torch.rand(1, 2, 1, 4, 4)}  # any sizes
    grid = comparison_frames(context, truth, preds, cell=32)
    cell = 32 + 2 * BORDER
    top = grid.shape[2] - cell
    assert grid.shape == (3 + 2, 3, top + cell, 4 * cell)
    inner = grid[:, :, top + BORDER : top + cell - BORDER]  # (T, 3, 32, 4 cell): the clip row
    waiting = inner[:3, :, :, cell + BORDER : cell + BORDER + 32]  # truth column during the context
    assert torch.allclose(waiting, torch.full_like(waiting, WAIT_FILL))
    held = inner[3:, :, :, BORDER : BORDER + 32]  # context column after the context: its last frame
    assert torch.equal(held[0], held[1]) and torch.equal(held[0], inner[2, :, :, BORDER : BORDER + 32])


def test_decode_tail_returns_the_last_frames_as_a_full_decode_does(tmp_path) -> None:
    rng = np.random.default_rng(0)
    video = (rng.random((60, 24, 32, 3)) * 255).astype(np.uint8)
    path = tmp_path / "long.mp4"
    write_video(path, video, fps=10)
    frames, times, _ = decode_tail(path, 16, 7)
    full, full_times = load_frames(path, size=16, channels=3)
    assert frames.shape == (7, 3, 16, 16)
    assert torch.equal(frames, full[-7:]) and torch.allclose(times, full_times[-7:])
