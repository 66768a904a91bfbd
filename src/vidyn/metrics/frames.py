"""Per-frame image metrics for predicted video: MSE, MAE, PSNR, SSIM, and the published conventions.

Every function takes `pred` and `target` of shape `(B, T, C, H, W)` with values in [0, 1] (float32 or
float64) and returns one value per frame, `(B, T)`, in the input dtype; averaging is left to the caller
(`summarize`, or `vidyn.metrics.streaming.FrameMetrics` across batches and processes). Reductions run in
float64 so float32 inputs lose nothing to accumulation.

Our conventions (docs/metrics.md):
- MSE / MAE: mean over the C·H·W values of a frame.
- PSNR: `10 log10(1 / MSE)` per frame with peak 1. Identical frames would give +inf, which poisons every
  average, so the MSE is clamped at 1e-10: PSNR is capped at 100 dB.
- SSIM: Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to structural
  similarity", IEEE TIP 2004: 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 1,
  population (co)variances, statistics only where the window fits inside the frame (valid filtering),
  SSIM map averaged per channel and then over channels. This equals scikit-image's
  `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
  channel_axis=-1)`, which filters with reflect padding and then crops `(11 - 1) // 2 = 5` pixels from
  every side, leaving exactly the valid region. Frames must be at least 11x11.

Published conventions, reported beside ours under their own names because they give different numbers:
- `openstl_mse` / `openstl_mae` (OpenSTL, Tan et al. 2023, `openstl/core/metrics.py`): per-frame SUMS over
  C·H·W; their mean over frames is the number in OpenSTL's tables (Moving MNIST MSE ~20-30).
- `psnr_of_mean_mse` (Vid-ODE, Park et al. AAAI 2021, official `evaluate.py`): PSNR of the MSE averaged over
  all evaluated frames, not the average of per-frame PSNRs (it is never higher, by Jensen's inequality).
- `psnr_uint8` (PredRNN, Wang et al. NeurIPS 2017 / TPAMI 2022, `core/trainer.py` + `batch_psnr`): frames
  quantised to uint8 first, then PSNR with peak 255 per frame.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from vidyn.errors import VidynError

MSE_FLOOR = 1e-10  # PSNR cap: 10 * log10(1 / 1e-10) = 100 dB
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# Frames (one channel) filtered per matmul batch: 4 float64 maps of 8 frames at 64x64 stay ~1 MB, in cache.
_SSIM_CHUNK_PIXELS = 8 * 64 * 64
# Output columns per banded GEMM block: 16-32 measured equally fast from 64 to 256 px frames.
_SSIM_BLOCK = 24


def check_frame_pair(pred: Tensor, target: Tensor) -> None:
    """Raise VidynError unless pred and target are float tensors of one `(B, T, C, H, W)` shape."""
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise VidynError("frame metrics take torch tensors; convert arrays with torch.as_tensor first")
    if pred.dim() != 5 or pred.shape != target.shape:
        raise VidynError(
            f"frame metrics need pred and target of the same shape (B, T, C, H, W); got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise VidynError("frame metrics need float frames in [0, 1]; divide uint8 frames by 255 first")


def _out_dtype(pred: Tensor) -> torch.dtype:
    return torch.float64 if pred.dtype == torch.float64 else torch.float32


def _per_frame_mse(pred: Tensor, target: Tensor) -> Tensor:
    """(B, T) float64 mean squared error over C·H·W."""
    diff = pred.to(torch.float64) - target.to(torch.float64)
    return diff.square().mean(dim=(2, 3, 4))


def _per_frame_mae(pred: Tensor, target: Tensor) -> Tensor:
    diff = pred.to(torch.float64) - target.to(torch.float64)
    return diff.abs().mean(dim=(2, 3, 4))


def psnr_from_mse(mse: Tensor, peak: float = 1.0) -> Tensor:
    """`10 log10(peak^2 / MSE)`, with the MSE floored at `1e-10 * peak^2` (a 100 dB cap)."""
    return 10.0 * torch.log10(peak**2 / mse.clamp_min(MSE_FLOOR * peak**2))


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per frame (mean over C·H·W): `(B, T, C, H, W)` x2 -> `(B, T)`."""
    check_frame_pair(pred, target)
    return _per_frame_mse(pred, target).to(_out_dtype(pred))


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error per frame (mean over C·H·W): `(B, T, C, H, W)` x2 -> `(B, T)`."""
    check_frame_pair(pred, target)
    return _per_frame_mae(pred, target).to(_out_dtype(pred))


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per frame, `10 log10(1 / MSE)` with MSE over C·H·W, capped at 100 dB (MSE >= 1e-10)."""
    check_frame_pair(pred, target)
    return psnr_from_mse(_per_frame_mse(pred, target)).to(_out_dtype(pred))


@functools.lru_cache(maxsize=32)
def _banded_gaussian(n: int, device: torch.device) -> Tensor:
    """`(n, n - 10)` float64 matrix M with `(x @ M)[j] = sum_k g[k] x[j + k]`: valid 11-tap filtering.

    The taps are scipy's `gaussian_filter1d` kernel at sigma 1.5, truncate 3.5 (radius 5), which is what
    scikit-image uses, normalised to sum 1.
    """
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    taps = taps / taps.sum()
    n_out = n - SSIM_WINDOW + 1
    band = torch.zeros(n, n_out, dtype=torch.float64)
    cols = torch.arange(n_out)
    for k in range(SSIM_WINDOW):
        band[cols + k, cols] = taps[k]
    return band.to(device)


def _filter_last(x: Tensor, band: Tensor) -> Tensor:
    """Valid 11-tap filtering along the last axis: `(R, n) @ band (n, n')` -> `(R, n')`.

    A full banded matrix would spend n multiply-adds per output where 11 are needed, which loses to
    scikit-image's direct filtering on large frames; so the outputs are taken in blocks of
    `_SSIM_BLOCK` columns, each a GEMM with `_SSIM_BLOCK + 10` inputs.
    """
    n_out = band.shape[1]
    if n_out <= _SSIM_BLOCK:
        return x @ band
    out = x.new_empty(x.shape[0], n_out)
    for j in range(0, n_out, _SSIM_BLOCK):
        stop = min(j + _SSIM_BLOCK, n_out)
        out[:, j:stop] = x[:, j : stop + SSIM_WINDOW - 1] @ band[j : stop + SSIM_WINDOW - 1, j:stop]
    return out


def _filter_first(x: Tensor, band: Tensor) -> Tensor:
    """Valid 11-tap filtering along the first axis: `band.T (n', n) @ (n, M)` -> `(n', M)`, blocked."""
    n_out = band.shape[1]
    band_t = band.T  # (n', n)
    if n_out <= _SSIM_BLOCK:
        return band_t @ x
    out = x.new_empty(n_out, x.shape[1])
    for i in range(0, n_out, _SSIM_BLOCK):
        stop = min(i + _SSIM_BLOCK, n_out)
        torch.mm(band_t[i:stop, i : stop + SSIM_WINDOW - 1], x[i : stop + SSIM_WINDOW - 1], out=out[i:stop])
    return out


def _ssim_planes(x: Tensor, y: Tensor) -> Tensor:
    """Mean SSIM of each plane: x, y `(N, H, W)` float64 -> `(N,)` float64.

    The separable Gaussian is applied as banded matmuls, one batch of GEMMs per direction over all planes.
    Measured on these 2-core machines that is ~40x faster than grouped `conv2d` in float64, where PyTorch's
    convolutions have no fast CPU kernel. Float64 is what keeps `E[x^2] - E[x]^2` from cancelling: float32
    drifts up to ~5e-5 from the reference on flat frames (~4e-6 even with per-plane centring).
    """
    n, h, w = x.shape
    band_w = _banded_gaussian(w, x.device)  # (W, W')
    band_h = _banded_gaussian(h, x.device)  # (H, H')
    # H-major layout (H, 4, N, W): after the W pass the H pass is a plain left matmul, with no transpose.
    # Only var_x + var_y enters the formula, so x^2 + y^2 is filtered as one map: 4 maps, not 5.
    maps = x.new_empty(h, 4, n, w)
    xt, yt = x.transpose(0, 1), y.transpose(0, 1)  # (H, N, W) views
    maps[:, 0] = xt
    maps[:, 1] = yt
    torch.addcmul(xt * xt, yt, yt, out=maps[:, 2])
    torch.mul(xt, yt, out=maps[:, 3])
    filt = _filter_last(maps.view(-1, w), band_w)  # (H*4*N, W')
    filt = _filter_first(filt.view(h, -1), band_h)  # (H', 4*N*W')
    mu_x, mu_y, e_sq, e_xy = filt.view(-1, 4, n, w - SSIM_WINDOW + 1).unbind(1)  # each (H', N, W')
    mu_xy = mu_x * mu_y
    mu_sq = mu_x * mu_x + mu_y * mu_y
    c1 = SSIM_K1**2  # (K1 * data_range)^2 with data_range 1
    c2 = SSIM_K2**2
    num = (2.0 * mu_xy + c1) * (2.0 * (e_xy - mu_xy) + c2)
    den = (mu_sq + c1) * (e_sq - mu_sq + c2)  # e_sq - mu_sq = var_x + var_y
    return (num / den).mean(dim=(0, 2))


def _ssim64(pred: Tensor, target: Tensor) -> Tensor:
    """(B, T) float64 SSIM of checked frames (see `ssim`)."""
    b, t, c, h, w = pred.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise VidynError(f"SSIM needs frames of at least 11x11 pixels (its Gaussian window); got {h}x{w}")
    # MPS has no float64; everything else computes where the data already is.
    device = torch.device("cpu") if pred.device.type == "mps" else pred.device
    x = pred.reshape(-1, h, w)  # (B*T*C, H, W)
    y = target.reshape(-1, h, w)
    out = torch.empty(x.shape[0], dtype=torch.float64, device=device)
    chunk = max(1, _SSIM_CHUNK_PIXELS // (h * w))
    for start in range(0, x.shape[0], chunk):
        xs = x[start : start + chunk].to(device=device, dtype=torch.float64)
        ys = y[start : start + chunk].to(device=device, dtype=torch.float64)
        out[start : start + xs.shape[0]] = _ssim_planes(xs, ys)
    per_frame = out.reshape(b, t, c).mean(dim=2)  # (B, T): channel mean, as skimage with channel_axis
    return per_frame.to(pred.device)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """SSIM per frame (Wang et al. 2004, Gaussian 11/1.5, valid region, channel mean): -> `(B, T)`.

    Matches scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)` run on float64 frames to ~1e-12.
    """
    check_frame_pair(pred, target)
    return _ssim64(pred, target).to(_out_dtype(pred))


def openstl_mse(pred: Tensor, target: Tensor) -> Tensor:
    """OpenSTL's MSE: per-frame SUM of squared errors over C·H·W, `(B, T)`.

    OpenSTL (`openstl/core/metrics.py`, `MSE(spatial_norm=False)`) reports
    `np.mean((pred - true) ** 2, axis=(0, 1)).sum()`, i.e. the mean over frames of these sums.
    """
    check_frame_pair(pred, target)
    _, _, c, h, w = pred.shape
    return (_per_frame_mse(pred, target) * (c * h * w)).to(_out_dtype(pred))


def openstl_mae(pred: Tensor, target: Tensor) -> Tensor:
    """OpenSTL's MAE: per-frame SUM of absolute errors over C·H·W, `(B, T)` (see `openstl_mse`)."""
    check_frame_pair(pred, target)
    _, _, c, h, w = pred.shape
    return (_per_frame_mae(pred, target) * (c * h * w)).to(_out_dtype(pred))


def psnr_of_mean_mse(pred: Tensor, target: Tensor, per_step: bool = True) -> Tensor:
    """Vid-ODE's PSNR: `10 log10(1 / mean MSE)`, the MSE averaged over frames before the log.

    The official Vid-ODE `evaluate.py` averages per-image MSEs over every evaluated frame and takes one PSNR
    of that mean (`per_step=False`, returns a 0-dim tensor). `per_step=True` pools over the batch only,
    one value per prediction step: `(T,)`. Same 100 dB cap as `psnr`.
    """
    check_frame_pair(pred, target)
    per_frame = _per_frame_mse(pred, target)  # (B, T)
    pooled = per_frame.mean(dim=0) if per_step else per_frame.mean()
    return psnr_from_mse(pooled).to(_out_dtype(pred))


def psnr_uint8(pred: Tensor, target: Tensor, rounding: str = "floor") -> Tensor:
    """PredRNN's PSNR: quantise both frames to uint8 in [0, 255], then PSNR with peak 255 per frame, `(B, T)`.

    PredRNN's `core/trainer.py` clips predictions to [0, 1] and quantises with `np.uint8(x * 255)`, which
    truncates; `rounding="floor"` (default) reproduces that, `rounding="round"` rounds to nearest instead
    (what most image writers do). `batch_psnr` then computes
    `20 log10(255) - 10 log10(MSE)` with the MSE over C·H·W; identical frames are capped at 100 dB here.
    """
    check_frame_pair(pred, target)
    return _psnr_uint8_64(pred, target, rounding).to(_out_dtype(pred))


def _psnr_uint8_64(pred: Tensor, target: Tensor, rounding: str = "floor") -> Tensor:
    if rounding not in ("floor", "round"):
        raise VidynError(f"psnr_uint8 rounding must be 'floor' (PredRNN) or 'round'; got {rounding!r}")
    quantise = torch.floor if rounding == "floor" else torch.round
    # x * 255 in the input dtype, as PredRNN multiplies its float32 frames before the uint8 cast.
    p = quantise(pred.clamp(0, 1) * 255).to(torch.float64)
    q = quantise(target.clamp(0, 1) * 255).to(torch.float64)
    mse_255 = (p - q).square().mean(dim=(2, 3, 4))  # (B, T), in units of grey levels^2
    return psnr_from_mse(mse_255, peak=255.0)


PER_FRAME_METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": mse,
    "mae": mae,
    "psnr": psnr,
    "ssim": ssim,
    "openstl_mse": openstl_mse,
    "openstl_mae": openstl_mae,
    "predrnn_psnr": psnr_uint8,  # PredRNN's uint8 PSNR, named by its convention
}
# The published conventions FrameMetrics accumulates beside ours (vidode_psnr derives from "mse").
CONVENTIONS = ("openstl_mse", "openstl_mae", "predrnn_psnr")


def frame_metrics(
    pred: Tensor,
    target: Tensor,
    names: Iterable[str] = ("mse", "mae", "psnr", "ssim"),
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Several per-frame metrics at once: `{name: (B, T)}`.

    Names: "mse", "mae", "psnr", "ssim" (ours) and "openstl_mse", "openstl_mae", "predrnn_psnr" (the
    published conventions; "predrnn_psnr" is `psnr_uint8` with PredRNN's truncation). Values come out in
    `dtype` (default: float64 for float64 frames, else float32); pass float64 to accumulate without loss.
    """
    names = tuple(names)
    unknown = [n for n in names if n not in PER_FRAME_METRICS]
    if unknown:
        raise VidynError(
            f"unknown frame metric(s) {', '.join(unknown)}; choose from: {', '.join(PER_FRAME_METRICS)}"
        )
    check_frame_pair(pred, target)
    dtype = dtype or _out_dtype(pred)
    numel = pred.shape[2] * pred.shape[3] * pred.shape[4]  # C*H*W
    cache: dict[str, Tensor] = {}

    def sq() -> Tensor:  # one float64 pass shared by mse, psnr and openstl_mse
        if "sq" not in cache:
            cache["sq"] = _per_frame_mse(pred, target)
        return cache["sq"]

    def ab() -> Tensor:  # shared by mae and openstl_mae
        if "ab" not in cache:
            cache["ab"] = _per_frame_mae(pred, target)
        return cache["ab"]

    compute: dict[str, Callable[[], Tensor]] = {
        "mse": sq,
        "mae": ab,
        "psnr": lambda: psnr_from_mse(sq()),
        "ssim": lambda: _ssim64(pred, target),
        "openstl_mse": lambda: sq() * numel,
        "openstl_mae": lambda: ab() * numel,
        "predrnn_psnr": lambda: _psnr_uint8_64(pred, target),
    }
    return {name: compute[name]().to(dtype) for name in names}


def summarize(per_frame: dict[str, Tensor]) -> dict:
    """Average per-frame values `{name: (N, T)}` over clips.

    Returns `{name: float, ..., "per_step": {name: [T floats]}}`: the overall value is the mean over all
    N·T frames, the per-step values the mean over the N clips at each step. When "mse" is present the
    Vid-ODE convention `vidode_psnr` (PSNR of the pooled MSE, see `psnr_of_mean_mse`) is added too.
    """
    if not per_frame:
        raise VidynError("summarize needs at least one metric; pass the dict returned by frame_metrics")
    shapes = {tuple(v.shape) for v in per_frame.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] == 0:
        raise VidynError(
            f"summarize needs non-empty per-frame tensors of one shape (N, T); got shapes {sorted(shapes)}"
        )
    result: dict = {"per_step": {}}
    for name, values in per_frame.items():
        v = values.detach().to(torch.float64)
        result[name] = float(v.mean())
        result["per_step"][name] = v.mean(dim=0).tolist()
    if "mse" in per_frame:
        m = per_frame["mse"].detach().to(torch.float64)
        result["vidode_psnr"] = float(psnr_from_mse(m.mean()))
        result["per_step"]["vidode_psnr"] = psnr_from_mse(m.mean(dim=0)).tolist()
    return result
