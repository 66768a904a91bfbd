"""Fréchet distance, the streaming metric, FVD/FID/KID wiring and their protocols."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from vidyn.errors import VidynError
from vidyn.metrics.frechet import FrechetFeatureDistance, frechet_distance, protocol_line
from vidyn.metrics.generation import FrechetVideoDistance, VideoFID, VideoKID, metric_result, select_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's sqrtm (pytorch-fid's way), as the reference."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _features(seed: int, n: int, d: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + shift


@pytest.mark.parametrize("d,n", [(8, 50), (64, 300), (64, 40)])
def test_frechet_distance_matches_scipy_sqrtm(d, n):
    a, b = _features(0, n, d), _features(1, n, d, shift=0.3)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = (
        torch.from_numpy(np.cov(a.numpy(), rowvar=False)),
        torch.from_numpy(np.cov(b.numpy(), rowvar=False)),
    )
    ours = frechet_distance(mu1, s1, mu2, s2).item()
    ref = _scipy_fd(a.numpy(), b.numpy())
    assert ours == pytest.approx(ref, rel=1e-4)


class _Projection(nn.Module):
    """A fixed random feature map standing in for a network (images or clips -> (N, d))."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.num_features = d
        self.register_buffer("w", torch.randn(3 * 8 * 8, d, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().reshape(x.shape[0], -1)[:, : self.w.shape[0]] @ self.w


def test_streaming_batches_and_ranks_equal_one_shot():
    a, b = _features(0, 120, 16), _features(1, 90, 16, shift=0.5)
    whole = FrechetFeatureDistance(num_features=16)
    whole.update_features(a, real=True)
    whole.update_features(b, real=False)
    # two "ranks", each seeing part of the data in several batches, merged as DDP's sum-reduction would
    rank0, rank1 = FrechetFeatureDistance(num_features=16), FrechetFeatureDistance(num_features=16)
    for chunk in a[:50].split(7):
        rank0.update_features(chunk, real=True)
    rank1.update_features(a[50:], real=True)
    for i, chunk in enumerate(b.split(30)):
        (rank0 if i % 2 else rank1).update_features(chunk, real=False)
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(whole.compute().item(), rel=1e-9)
    assert whole.compute().item() == pytest.approx(_scipy_fd(a.numpy(), b.numpy()), rel=1e-4)


def test_set_against_itself_is_zero_and_small_n_warns():
    a = _features(0, 40, 64)
    metric = FrechetFeatureDistance(num_features=64, name="fd_test")
    metric.update_features(a, real=True)
    metric.update_features(a, real=False)
    with pytest.warns(UserWarning, match="below the feature dimension"):
        value = metric.compute().item()
    # zero up to float64 rounding in the square roots of the ~24 null eigenvalues (N < d)
    assert abs(value) < 1e-7 * a.var(0).sum().item()


def test_fid_and_kid_equal_torchmetrics_on_the_same_features():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 3, 8, 8, generator=g), torch.rand(30, 3, 8, 8, generator=g) * 0.8
    ours, theirs = VideoFID(_Projection()), FrechetInceptionDistance(feature=_Projection())
    kid_ours, kid_theirs = (
        VideoKID(_Projection(), subset_size=20),
        KernelInceptionDistance(_Projection(), subset_size=20),
    )
    for metric in (ours, theirs, kid_ours, kid_theirs):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    assert ours.compute().item() == theirs.compute().item()
    torch.manual_seed(5)
    mean_ours, std_ours = kid_ours.compute()
    torch.manual_seed(5)
    mean_theirs, std_theirs = kid_theirs.compute()
    assert (mean_ours.item(), std_ours.item()) == (mean_theirs.item(), std_theirs.item())
    # and our generic Fréchet distance agrees with torchmetrics' FID on the same features
    generic = FrechetFeatureDistance(_Projection())
    generic.update(real, real=True)
    generic.update(fake, real=False)
    assert generic.compute().item() == pytest.approx(theirs.compute().item(), rel=1e-4)
    assert ours.protocol()["n_real"] == 40 and kid_ours.protocol()["n_fake"] == 30
    torch.manual_seed(5)
    kid_result = metric_result(kid_ours)
    assert kid_result["value"] == mean_theirs.item() and kid_result["std"] == std_theirs.item()
    fid_result = metric_result(ours)
    assert fid_result["value"] == theirs.compute().item() and fid_result["protocol"]["n_fake"] == 30
    assert fid_result["protocol_line"].startswith("fid | InceptionV3 2015-12-05")
    too_big = VideoKID(_Projection(), subset_size=50, subsets=2)
    too_big.update(real, real=True)
    too_big.update(fake, real=False)
    with pytest.raises(VidynError, match="smaller subset_size"):
        too_big.compute()


def test_video_fid_counts_frames_of_clips():
    clips = torch.rand(3, 8, 3, 8, 8)
    assert select_frames(clips, None).shape == (24, 3, 8, 8)
    picked = select_frames(clips, 3)  # frames 0, 4 (3.5 rounded to even), 7 of every clip
    assert picked.shape == (9, 3, 8, 8)
    assert torch.equal(picked[2], clips[0, 7])
    fid = VideoFID(_Projection(), frames_per_clip=2, real_split="shapes/test")
    fid.update(clips, real=True)
    assert fid.protocol()["n_real"] == 6 and fid.protocol()["frames_per_clip"] == "2 evenly spaced"


def test_fvd_of_a_set_against_itself_is_zero(i3d_net):
    from vidyn.metrics.i3d import I3DFeatures

    clips = torch.rand(2, 16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    fvd = FrechetVideoDistance(I3DFeatures(i3d_net), real_split="test clips")
    fvd.update(clips, real=True)
    fvd.update(clips, real=False)
    with pytest.warns(UserWarning, match="below the feature dimension"):
        value = fvd.compute().item()
    assert abs(value) < 1e-6 * fvd.real_outer.trace().item() / 2
    protocol = fvd.protocol()
    assert protocol["weights_sha256"] == "af5c50f0df57" and protocol["clip_length"] == 16
    assert (protocol["n_real"], protocol["n_fake"], protocol["real_split"]) == (2, 2, "test clips")
    line = protocol_line(protocol)
    assert line.startswith("fvd | I3D Kinetics-400") and "N real 2 / fake 2" in line and "224x224" in line


def test_fid_of_a_set_against_itself_is_zero(inception_net):
    from vidyn.metrics.inception import InceptionFeatures

    clips = torch.rand(3, 4, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    fid = VideoFID(InceptionFeatures(inception_net), frames_per_clip=2, real_split="test clips")
    fid.update(clips, real=True)
    fid.update(clips, real=False)
    with pytest.warns(UserWarning, match="below the feature dimension"):
        value = fid.compute().item()
    n = int(fid.real_features_num_samples)
    total_variance = (fid.real_features_cov_sum.trace() - fid.real_features_sum.pow(2).sum() / n) / (n - 1)
    # torchmetrics' eigenvalues of the non-symmetric S1 S2 carry float64 rounding on ~2,040 null directions
    assert abs(value) < 1e-4 * total_variance.item()  # measured 2e-6
    assert fid.protocol()["n_real"] == 6
