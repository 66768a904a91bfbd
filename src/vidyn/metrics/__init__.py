"""vidyn.metrics: frame metrics (MSE, MAE, PSNR, SSIM and the published conventions) and classification.

Every number is published under a named convention (DESIGN.md §5): ours are per-frame means (`mse`,
`mae`, `psnr`, `ssim`); OpenSTL's sums, Vid-ODE's pooled-MSE PSNR and PredRNN's uint8 PSNR keep their own
names (`openstl_mse`, `openstl_mae`, `vidode_psnr`, `predrnn_psnr`).
"""

from vidyn.metrics.classification import (
    ClassificationMetrics,
    confusion_matrix,
    most_confused_pairs,
    per_class_accuracy,
    topk_accuracy,
)
from vidyn.metrics.frames import (
    PER_FRAME_METRICS,
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
from vidyn.metrics.streaming import FrameMetrics

__all__ = [
    "PER_FRAME_METRICS",
    "ClassificationMetrics",
    "FrameMetrics",
    "confusion_matrix",
    "frame_metrics",
    "mae",
    "most_confused_pairs",
    "mse",
    "openstl_mae",
    "openstl_mse",
    "per_class_accuracy",
    "psnr",
    "psnr_of_mean_mse",
    "psnr_uint8",
    "ssim",
    "summarize",
    "topk_accuracy",
]
