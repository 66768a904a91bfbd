"""Frame metrics against scikit-image, hand computations and the published codebases' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from vidyn.errors import VidynError
from vidyn.metrics import (
    frame_metrics,
    mae,
    mse,
    openstl_mae,
    openstl_mse,
    psnr,
    psnr_of_mean_mse,
    psnr_uint8,
    ssim,
    summarize,
)


def skimage_ssim(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Reference: scikit-image per frame, in float64, with the Wang et al. settings of DESIGN.md §5."""
    b, t = pred.shape[:2]
    p = pred.double().permute(0, 1, 3, 4, 2).numpy()  # (B, T, H, W, C)
    q = target.double().permute(0, 1, 3, 4, 2).numpy()
    out = np.empty((b, t))
    for i in range(b):
        for j in range(t):
            out[i, j] = structural_similarity(
                p[i, j], q[i, j], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                data_range=1, channel_axis=-1,
            )  # fmt: skip
    return out


def smooth_frames(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Natural-looking frames: low-resolution noise upsampled bicubically, plus a gradient."""
    b, t, c, h, w = shape
    low = torch.rand(b * t, c, max(2, h // 4), max(2, w // 4), generator=gen)
    up = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    ramp = torch.linspace(0, 1, w).view(1, 1, 1, w) * torch.linspace(0.2, 0.8, h).view(1, 1, h, 1)
    return (0.6 * up + 0.4 * ramp).clamp(0, 1).reshape(shape)


@pytest.mark.parametrize("size", [(11, 11), (17, 23), (64, 64), (23, 12)])
@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage_on_random_and_smooth_frames(size: tuple[int, int], channels: int) -> None:
    gen = torch.Generator().manual_seed(sum(size) * channels)
    shape = (2, 2, channels, *size)
    noise = torch.rand(shape, generator=gen)
    noise_pred = (noise + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
    smooth = smooth_frames(shape, gen)
    smooth_pred = (smooth + 0.03 * torch.randn(shape, generator=gen)).clamp(0, 1).roll(1, dims=-1)
    for target, pred in ((noise, noise_pred), (smooth, smooth_pred)):
        ref = skimage_ssim(pred, target)
        got32 = ssim(pred, target)
        assert got32.shape == (2, 2) and got32.dtype == torch.float32
        assert np.abs(got32.double().numpy() - ref).max() < 1e-5
        got64 = ssim(pred.double(), target.double())
        assert got64.dtype == torch.float64
        assert np.abs(got64.numpy() - ref).max() < 1e-10


def test_ssim_is_float64_accurate_on_flat_and_binary_frames() -> None:
    # Flat regions make E[x^2] - E[x]^2 cancel catastrophically in float32 (~5e-5 off); float64 must not.
    flat = torch.full((1, 2, 1, 32, 32), 0.8, dtype=torch.float64)
    flat[..., 16:] = 0.2
    binary = torch.zeros(1, 2, 1, 32, 32, dtype=torch.float64)
    binary[..., 8:20, 5:25] = 1.0
    for target, pred in ((flat, flat * 0.97 + 0.01), (binary, binary.roll(2, dims=-1))):
        ref = skimage_ssim(pred, target)
        assert np.abs(ssim(pred.float(), target.float()).double().numpy() - ref).max() < 1e-5
        assert np.abs(ssim(pred, target).numpy() - ref).max() < 1e-10


def test_identical_frames_give_ssim_one_and_psnr_cap() -> None:
    frames = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(frames, frames), torch.ones(2, 3), atol=1e-6)
    assert torch.equal(psnr(frames, frames), torch.full((2, 3), 100.0))
    assert torch.equal(mse(frames, frames), torch.zeros(2, 3))


def test_ssim_is_symmetric_and_decreases_with_noise() -> None:
    gen = torch.Generator().manual_seed(1)
    target = smooth_frames((1, 1, 1, 32, 32), gen)
    noise = torch.randn(target.shape, generator=gen)
    scores = [float(ssim((target + s * noise).clamp(0, 1), target)) for s in (0.01, 0.05, 0.2)]
    assert scores[0] > scores[1] > scores[2]
    other = (target + 0.1 * noise).clamp(0, 1)
    assert torch.allclose(ssim(other, target), ssim(target, other), atol=1e-7)


def test_mse_mae_psnr_by_hand() -> None:
    target = torch.zeros(1, 2, 2, 3, 4)
    pred = torch.zeros(1, 2, 2, 3, 4)
    pred[0, 0] = 0.1  # frame 0: every error 0.1 -> MSE 0.01, MAE 0.1, PSNR 20 dB
    pred[0, 1, 0, 0, 0] = 0.6  # frame 1: one error of 0.6 among 24 values -> MSE 0.36/24, MAE 0.6/24
    assert torch.allclose(mse(pred, target), torch.tensor([[0.01, 0.36 / 24]]))
    assert torch.allclose(mae(pred, target), torch.tensor([[0.1, 0.6 / 24]]))
    assert torch.allclose(psnr(pred, target), torch.tensor([[20.0, 10 * math.log10(24 / 0.36)]]))


def test_openstl_conventions_are_per_frame_sums() -> None:
    gen = torch.Generator().manual_seed(2)
    pred, target = torch.rand(3, 4, 2, 8, 8, generator=gen), torch.rand(3, 4, 2, 8, 8, generator=gen)
    p, t = pred.double().numpy(), target.double().numpy()
    assert np.allclose(openstl_mse(pred, target).numpy(), ((p - t) ** 2).sum(axis=(2, 3, 4)), rtol=1e-6)
    assert np.allclose(openstl_mae(pred, target).numpy(), np.abs(p - t).sum(axis=(2, 3, 4)), rtol=1e-6)
    # OpenSTL's table number: np.mean((pred - true) ** 2, axis=(0, 1)).sum()
    table = float(np.mean((p - t) ** 2, axis=(0, 1)).sum())
    assert math.isclose(float(openstl_mse(pred, target).double().mean()), table, rel_tol=1e-6)


def test_psnr_per_frame_differs_from_psnr_of_pooled_mse() -> None:
    target = torch.zeros(2, 1, 1, 10, 10)
    pred = torch.zeros(2, 1, 1, 10, 10)
    pred[0] = 0.01  # MSE 1e-4 -> 40 dB
    pred[1] = 0.1  # MSE 1e-2 -> 20 dB
    assert math.isclose(float(psnr(pred, target).mean()), 30.0, rel_tol=1e-5)
    pooled = 10 * math.log10(1 / ((1e-4 + 1e-2) / 2))  # Vid-ODE: ~22.97 dB
    assert math.isclose(float(psnr_of_mean_mse(pred, target, per_step=False)), pooled, rel_tol=1e-5)
    assert torch.allclose(psnr_of_mean_mse(pred, target), torch.tensor([pooled]))
    assert pooled < 29.0


def predrnn_batch_psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PredRNN's trainer.py + metrics.batch_psnr for one step: (B, H, W, C) float frames in [0, 1]."""
    real = np.uint8(target * 255)
    gen = np.uint8(np.minimum(np.maximum(pred, 0), 1) * 255)
    x, y = np.int32(gen), np.int32(real)
    err = np.sum((x - y) ** 2, axis=(1, 2, 3), dtype=np.float32) / float(np.size(gen[0]))
    return float(np.mean(20 * np.log10(255) - 10 * np.log10(err)))


def test_psnr_uint8_matches_predrnn() -> None:
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(4, 3, 1, 16, 16, generator=gen)
    pred = target + 0.05 * torch.randn(target.shape, generator=gen)  # partly outside [0, 1]: clipped
    got = psnr_uint8(pred, target)
    assert got.shape == (4, 3)
    p = pred.permute(0, 1, 3, 4, 2).numpy()
    t = target.permute(0, 1, 3, 4, 2).numpy()
    for step in range(3):
        ref = predrnn_batch_psnr(p[:, step], t[:, step])
        assert math.isclose(float(got[:, step].mean()), ref, rel_tol=1e-5)


def test_psnr_uint8_floor_versus_round_by_hand() -> None:
    target = torch.full((1, 1, 1, 4, 4), 0.5)  # 127.5 grey levels: floor 127, round 128
    pred = torch.full((1, 1, 1, 4, 4), 128.4 / 255)  # floor 128, round 128
    assert math.isclose(float(psnr_uint8(pred, target)), 20 * math.log10(255), rel_tol=1e-6)  # MSE 1
    assert float(psnr_uint8(pred, target, rounding="round")) == 100.0
    with pytest.raises(VidynError, match="rounding"):
        psnr_uint8(pred, target, rounding="ceil")


def test_frame_metrics_and_summarize() -> None:
    gen = torch.Generator().manual_seed(4)
    pred, target = torch.rand(3, 2, 1, 12, 12, generator=gen), torch.rand(3, 2, 1, 12, 12, generator=gen)
    names = ("mse", "mae", "psnr", "ssim", "openstl_mse", "openstl_mae", "predrnn_psnr")
    out = frame_metrics(pred, target, names=names)
    assert list(out) == list(names)
    assert torch.equal(out["mse"], mse(pred, target))
    assert torch.equal(out["ssim"], ssim(pred, target))
    assert torch.equal(out["predrnn_psnr"], psnr_uint8(pred, target))
    per_frame = {
        "ssim": torch.tensor([[0.5, 0.7], [0.9, 0.3]]),
        "mse": torch.tensor([[0.01, 0.03], [0.01, 0.03]]),
    }
    s = summarize(per_frame)
    assert s["ssim"] == pytest.approx(0.6) and s["mse"] == pytest.approx(0.02)
    assert s["per_step"]["ssim"] == pytest.approx([0.7, 0.5])
    assert s["vidode_psnr"] == pytest.approx(10 * math.log10(1 / 0.02))
    assert s["per_step"]["vidode_psnr"] == pytest.approx([20.0, 10 * math.log10(1 / 0.03)])


def test_bad_inputs_raise_vidyn_error() -> None:
    a = torch.rand(1, 2, 1, 16, 16)
    with pytest.raises(VidynError, match="same shape"):
        mse(a, torch.rand(1, 3, 1, 16, 16))
    with pytest.raises(VidynError, match=r"\(B, T, C, H, W\)"):
        psnr(a[0], a[0])
    with pytest.raises(VidynError, match="11x11"):
        ssim(a[..., :10, :], a[..., :10, :])
    with pytest.raises(VidynError, match="float"):
        mae((a * 255).to(torch.uint8), (a * 255).to(torch.uint8))
    with pytest.raises(VidynError, match="unknown frame metric"):
        frame_metrics(a, a, names=("ssim", "lpips"))
    with pytest.raises(VidynError, match="one shape"):
        summarize({"mse": torch.zeros(2, 3), "ssim": torch.zeros(2, 4)})
