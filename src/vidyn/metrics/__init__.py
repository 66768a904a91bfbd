"""vidyn.metrics: frame metrics (MSE, MAE, PSNR, SSIM and the published conventions) and classification.

Every number is published under a named convention (docs/metrics.md): ours are per-frame means (`mse`,
`mae`, `psnr`, `ssim`); OpenSTL's sums, Vid-ODE's pooled-MSE PSNR and PredRNN's uint8 PSNR keep their own
names (`openstl_mse`, `openstl_mae`, `vidode_psnr`, `predrnn_psnr`).

Generation metrics (FVD, FID, KID, any Fréchet feature distance) carry their protocol (`protocol()`,
`protocol_line`); their networks come from verified weight files (`vidyn.metrics.weights`, installed only by
`install_weights` / `vidyn weights install`).
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
from vidyn.metrics.frechet import FrechetFeatureDistance, frechet_distance, protocol_line
from vidyn.metrics.generation import FrechetVideoDistance, VideoFID, VideoKID, metric_result, select_frames
from vidyn.metrics.i3d import I3DFeatures, load_i3d
from vidyn.metrics.inception import InceptionFeatures, load_inception
from vidyn.metrics.judge import (
    FrechetJudgeDistance,
    MotionLawScores,
    fd_judge,
    load_judge,
    motion_law_judge,
)
from vidyn.metrics.lpips import LPIPS, load_lpips, try_load_lpips
from vidyn.metrics.streaming import FrameMetrics
from vidyn.metrics.weights import install_weights, list_weights

__all__ = [
    "PER_FRAME_METRICS",
    "ClassificationMetrics",
    "FrameMetrics",
    "FrechetFeatureDistance",
    "FrechetJudgeDistance",
    "FrechetVideoDistance",
    "I3DFeatures",
    "InceptionFeatures",
    "LPIPS",
    "MotionLawScores",
    "VideoFID",
    "VideoKID",
    "confusion_matrix",
    "fd_judge",
    "frame_metrics",
    "frechet_distance",
    "install_weights",
    "list_weights",
    "load_i3d",
    "load_inception",
    "load_judge",
    "load_lpips",
    "metric_result",
    "mae",
    "most_confused_pairs",
    "motion_law_judge",
    "mse",
    "openstl_mae",
    "openstl_mse",
    "per_class_accuracy",
    "protocol_line",
    "psnr",
    "psnr_of_mean_mse",
    "psnr_uint8",
    "select_frames",
    "ssim",
    "summarize",
    "topk_accuracy",
    "try_load_lpips",
]
