"""MSGAN's mode-seeking term (`mode_seeking_loss`) and the gan task's `mode_seeking` weight."""

from __future__ import annotations

import pytest
import torch
from test_generation import _fit, _gan

from vidyn.errors import VidynError
from vidyn.export import build_model
from vidyn.models.video_discriminators import mode_seeking_loss


def test_mode_seeking_loss_pairs_only_clips_asked_for_the_same_class() -> None:
    """Pairs are the clips with equal labels: 1 / (mean|dG| / mean|dz| + eps) over them; clips of other
    classes never count; None where no two clips share a label; without labels every pair counts."""
    fake = torch.stack([torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)])
    z = torch.stack([torch.zeros(8), torch.ones(8), torch.zeros(8)])  # |dz| 1 between clips 0-1 and 1-2
    assert float(mode_seeking_loss(fake, z, torch.tensor([0, 1, 1]))) == pytest.approx(1 / (0.5 + 1e-5))
    assert float(mode_seeking_loss(fake, z, torch.tensor([0, 0, 1]))) == pytest.approx(1e5)  # alike
    assert mode_seeking_loss(fake, z, torch.tensor([0, 1, 2])) is None
    assert float(mode_seeking_loss(fake[1:], z[1:], None)) == pytest.approx(2.0, rel=1e-4)


def test_mode_seeking_loss_moves_a_generators_samples_of_one_class_apart() -> None:
    """Descending the term alone on ode_gan makes the samples it draws for one class differ more."""
    torch.manual_seed(0)
    model = build_model("ode_gan_tiny", in_channels=1, num_classes=3)
    times, labels = torch.arange(4) * 0.1, torch.zeros(6, dtype=torch.long)
    z = model.noise(6, torch.Generator().manual_seed(0))

    def spread() -> float:
        with torch.no_grad():
            return float(model(z, times, labels).std(dim=0).mean())

    before, opt = spread(), torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(10):
        opt.zero_grad()
        mode_seeking_loss(model(z, times, labels), z, labels).backward()
        opt.step()
    assert spread() > 1.5 * before


def test_gan_task_adds_and_logs_the_weighted_mode_seeking_term() -> None:
    trainer = _fit(_gan(mode_seeking=0.01, label_drop=1.0), steps=2)  # null labels only: every pair counts
    assert float(trainer.callback_metrics["train/mode_seeking"]) > 0
    assert "train/mode_seeking" not in _fit(_gan(), steps=1).callback_metrics  # off by default
    with pytest.raises(VidynError, match="mode_seeking must be >= 0"):
        _gan(mode_seeking=-1.0)
