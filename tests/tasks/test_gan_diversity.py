"""Against look-alike samples: MSGAN's mode-seeking term (`mode_seeking_loss`, the gan task's `mode_seeking`)
and the discriminators' per-class and spatial batch std (`class_std`, `spatial_std`: `d_minibatch_std`)."""

from __future__ import annotations

import pytest
import torch
from test_generation import _fit, _gan

from vidyn.errors import VidynError
from vidyn.export import build_model
from vidyn.models.video_discriminators import (
    FrameDiscriminator,
    class_std,
    minibatch_std,
    mode_seeking_loss,
    spatial_std,
)


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


def test_class_std_reads_the_spread_within_each_class_where_the_batch_spread_cannot() -> None:
    """A batch of two classes, each one clip twice: the batch-wide std is large (the classes differ), the
    per-class std is ~0; one varied class reads its own spread, a clip alone in its class reads 0."""
    phi = torch.tensor([[0.0, 0.0], [0.0, 0.0], [4.0, 4.0], [4.0, 4.0]])
    two_looks = torch.tensor([0, 0, 1, 1])
    assert float(minibatch_std(phi)[0, -1]) == pytest.approx(2.0)
    assert float(class_std(phi, two_looks)[:, -1].max()) < 1e-3
    varied = torch.tensor([[0.0, 0.0], [2.0, 2.0], [4.0, 4.0], [5.0, 5.0]])
    per_row = class_std(varied, torch.tensor([0, 0, 1, -1]))[:, -1]
    assert per_row[:2].tolist() == pytest.approx([1.0, 1.0], abs=1e-3) and float(per_row[2:].max()) < 1e-3
    assert torch.equal(class_std(varied, None), minibatch_std(varied))


def test_d_minibatch_std_picks_the_discriminators_batch_statistics() -> None:
    both = _gan(d_minibatch_std="both")
    assert both.video_discriminator.head.linear.in_features == 16 + 2  # 16 features + both columns
    assert both.frame_discriminator.class_std and both.frame_discriminator.minibatch_std
    per_class = _gan(d_minibatch_std="class").video_discriminator
    assert per_class.class_std and not per_class.minibatch_std
    clips, times = torch.rand(4, 4, 1, 16, 16), torch.arange(4) * 0.1
    with torch.no_grad():  # the per-class column depends on which clips share a label
        a, b = (per_class(clips, times, torch.tensor(y)) for y in ([0, 0, 1, 1], [0, 1, 2, 3]))
    assert not torch.allclose(a, b)
    spatial = _gan(d_minibatch_std="spatial")
    for d in (spatial.video_discriminator, spatial.frame_discriminator):
        assert d.minibatch_std and d.spatial_std and not d.class_std
    assert spatial.video_discriminator.head.linear.in_features == 16 + 1
    with pytest.raises(VidynError, match="must be false, true, batch, class, both or spatial"):
        _gan(d_minibatch_std="per-class")


def test_spatial_std_sees_objects_at_one_place_where_the_pooled_std_cannot() -> None:
    """One bright cell per map: at the same place in every row (look-alike), or at a different place in
    each row (varied). Pooled over positions the two batches are identical, so the pooled std reads 0 for
    both; per position the varied batch has a spread and the look-alike one has none."""
    same, varied = torch.zeros(4, 2, 4, 4), torch.zeros(4, 2, 4, 4)
    same[:, :, 1, 1] = 1.0
    for i in range(4):
        varied[i, :, i, 3 - i] = 1.0
    for maps in (same, varied):
        assert float(minibatch_std(maps.mean(dim=(2, 3)))[0, -1]) < 1e-3
    assert float(spatial_std(same).max()) < 1e-3
    # each cell that holds the object in one row of 4 has std sqrt(1/4 * 3/4); 4 such cells of 16
    assert float(spatial_std(varied)[0, 0]) == pytest.approx((0.25 * 0.75) ** 0.5 * 4 / 16, rel=1e-3)
    assert spatial_std(varied).shape == (4, 1)
    frames = torch.zeros(4, 1, 16, 16)
    frames[:, :, 2:6, 2:6] = 1.0  # one square, at the same place in each frame
    moved = torch.stack([torch.roll(f, (3 * i, 2 * i), dims=(1, 2)) for i, f in enumerate(frames)])
    torch.manual_seed(0)
    d = FrameDiscriminator(in_channels=1, image_size=16, base_channels=8, minibatch_std=True,
                           spatial_std=True)  # fmt: skip
    with torch.no_grad():  # a head that reads the statistic only
        d.head.linear.weight.zero_()
        d.head.linear.weight[0, -1] = 1.0
        d.head.linear.bias.zero_()
        assert float(d(frames).abs().max()) < 1e-3 < float(d(moved).min())
    with pytest.raises(VidynError, match="spatial_std"):
        FrameDiscriminator(in_channels=1, image_size=16, spatial_std=True)
